//! Growth that reaches rings handed to other processes (issue 20, 1): the
//! owner grows a shared pool while forked children drive rings it handed
//! them with `follow_growth`; each child then does verified fixed I/O with
//! regions of the new segments, across their edge, and pins nothing. Runs
//! in a child test process (no other test thread exists at the forks).

mod common;

use std::io::{Read, Write};

use common::{fork_with, vmpin_kb, wait_child};
use ringpool::handover::HandoverOptions;
use ringpool::types::{EnginePolicy, PagePolicy};
use ringpool::{BufferTable, IoMemory, MemoryOptions, Op, RingOptions, TableOptions};

const MIB: u64 = 1 << 20;
const SEG: u64 = 4 * MIB;
const CHILDREN: usize = 3;

/// The bytes the owner puts into the new memory, by pool offset.
fn byte(off: u64) -> u8 {
    (off.wrapping_mul(0x2545_F491) >> 13) as u8
}

#[test]
fn a_growth_reaches_every_forked_process_ring_without_a_second_pin() {
    if !common::require_clone("a_growth_reaches_every_forked_process_ring_without_a_second_pin") {
        return;
    }
    let (ok, out) = common::run_child("follow_growth_child", &[("RINGPOOL_FOLLOW_CHILD", "1")]);
    assert!(ok, "{out}");
}

/// Child side of `a_growth_reaches_every_forked_process_ring_without_a_second_pin`.
#[test]
#[ignore = "runs in a child process started by a_growth_reaches_every_forked_process_ring_without_a_second_pin"]
fn follow_growth_child() {
    assert_eq!(std::env::var("RINGPOOL_FOLLOW_CHILD").as_deref(), Ok("1"), "run only as a child");
    let dir = common::disk_dir();
    let path = dir.path().join("follow");
    let file = common::direct_file(dir.path(), "follow");
    file.set_len(CHILDREN as u64 * 2 * SEG).unwrap();
    // 4 segments of 4 MiB now, room for 8.
    let mem = IoMemory::map_with(4 * SEG, &MemoryOptions::new().page(PagePolicy::Base).segment_size(SEG).shared())
        .expect("a shared pool");
    mem.prefault(|_| {}).unwrap();
    let table = BufferTable::register_with(&mem, &TableOptions::new().capacity(8 * SEG)).unwrap();

    let pin0 = vmpin_kb();
    let mut children = Vec::new();
    for i in 0..CHILDREN {
        let handed = table.handover(&HandoverOptions::new().entries(32).follow_growth()).unwrap();
        let for_child = handed.try_clone().unwrap();
        let (mut go_rx, go_tx) = std::io::pipe().unwrap();
        let (mut up_rx, mut up_tx) = std::io::pipe().unwrap();
        let file = &file;
        let pid = fork_with(move || {
            drop(handed);
            let opts = RingOptions::new().engine(EnginePolicy::IoUring);
            let mut ring = for_child.enable_with(&opts).expect("enable");
            let view = ring.memory().expect("a view").clone();
            assert_eq!(view.segment_count(), 4);
            up_tx.write_all(b"r").unwrap();
            let mut b = [0u8; 1];
            go_rx.read_exact(&mut b).unwrap();
            // The owner grew the pool by two segments: a region across the
            // edge between them (and unaligned to the segments).
            let off = 4 * SEG + (i as u64 + 1) * 12288;
            let len = SEG + 8192;
            // SAFETY: the owner reserved segments 4 and 5 and wrote them
            // before the go; nothing writes them while this child reads.
            let pieces = unsafe { view.region_span(off, len) }.expect("a region of the new memory");
            assert_eq!(view.segment_count(), 6, "the view caught up");
            assert_eq!(pieces.len(), 2);
            let seen: Vec<u8> = pieces.iter().flat_map(|p| p.iter().copied()).collect();
            assert!(seen.iter().enumerate().all(|(k, &x)| x == byte(off + k as u64)), "the new memory's bytes");
            // WRITE_FIXED from the new slots, one per segment.
            let at = i as u64 * 2 * SEG;
            let (r, _) = ring.run(Op::writev(file, at, pieces)).into_vec();
            assert_eq!(r.expect("fixed write from the new segments"), len as usize);
            assert!(ring.stats().split_ops > 0 && ring.stats().inline_ops == 0, "{:?}", ring.stats());
            up_tx.write_all(b"d").unwrap();
            go_rx.read_exact(&mut b).unwrap();
            0
        });
        let mut b = [0u8; 1];
        up_rx.read_exact(&mut b).unwrap();
        children.push((pid, go_tx, up_rx));
    }
    assert_eq!(vmpin_kb(), pin0, "handing rings over pins nothing more");

    let report = table.grow(2 * SEG).unwrap();
    assert_eq!(report.segments, 4..6);
    assert_eq!(report.handed_rings, CHILDREN as u32, "every handed ring got the new slots");
    let _reserved = mem.reserve_segments(4..6).unwrap();
    // SAFETY: segments 4 and 5 are reserved; the children read them only
    // after the go below.
    for mut p in unsafe { mem.region_span(4 * SEG, 2 * SEG) }.unwrap() {
        let base = p.pool_offset();
        for (k, x) in p.iter_mut().enumerate() {
            *x = byte(base + k as u64);
        }
    }
    assert_eq!(vmpin_kb(), pin0 + 2 * SEG / 1024, "the growth is pinned once, by the owner");

    for (_, go, _) in &mut children {
        go.write_all(b"g").unwrap();
    }
    for (i, (pid, go, up)) in children.iter_mut().enumerate() {
        let mut b = [0u8; 1];
        up.read_exact(&mut b).unwrap_or_else(|e| panic!("child {i} failed before its write: {e}"));
        let pinned = ringpool_testkit::process::vm_pinned_kb(*pid as u32).unwrap_or(0);
        assert_eq!(pinned, 0, "child {i} pins nothing");
        go.write_all(b"x").unwrap();
    }
    for (i, (pid, _, _)) in children.into_iter().enumerate() {
        assert_eq!(wait_child(pid, std::time::Duration::from_secs(30)), Ok(0), "child {i}");
        let off = 4 * SEG + (i as u64 + 1) * 12288;
        let len = (SEG + 8192) as usize;
        let want: Vec<u8> = (0..len as u64).map(|k| byte(off + k)).collect();
        assert!(common::std_read(&path, i as u64 * 2 * SEG, len) == want, "child {i}'s write");
    }
    // The children are gone: the next growth drops their rings.
    let report = table.grow(SEG).unwrap();
    assert_eq!(report.handed_rings, 0);
}

#[test]
fn a_growth_reaches_a_ring_served_by_the_broker() {
    if !common::require_clone("a_growth_reaches_a_ring_served_by_the_broker") {
        return;
    }
    let (ok, out) = common::run_child("follow_growth_broker_child", &[("RINGPOOL_FOLLOW_BROKER_CHILD", "1")]);
    assert!(ok, "{out}");
}

/// Child side of `a_growth_reaches_a_ring_served_by_the_broker`: the ring
/// and its growth channel travel over the broker's socket.
#[test]
#[ignore = "runs in a child process started by a_growth_reaches_a_ring_served_by_the_broker"]
fn follow_growth_broker_child() {
    use ringpool::handover::{BrokerOptions, RingBroker};
    assert_eq!(std::env::var("RINGPOOL_FOLLOW_BROKER_CHILD").as_deref(), Ok("1"), "run only as a child");
    let dir = common::disk_dir();
    let path = dir.path().join("follow-broker");
    let file = common::direct_file(dir.path(), "follow-broker");
    file.set_len(2 * SEG).unwrap();
    let mem = IoMemory::map_with(2 * SEG, &MemoryOptions::new().page(PagePolicy::Base).segment_size(SEG).shared())
        .expect("a shared pool");
    mem.prefault(|_| {}).unwrap();
    let table = BufferTable::register_with(&mem, &TableOptions::new().capacity(6 * SEG)).unwrap();
    let sock = dir.path().join("rings.sock");
    let opts = BrokerOptions { follow_growth: true, ..BrokerOptions::default() };
    let broker = RingBroker::serve(&table, &sock, &opts).unwrap();

    let (mut go_rx, mut go_tx) = std::io::pipe().unwrap();
    let (mut up_rx, mut up_tx) = std::io::pipe().unwrap();
    let file_ref = &file;
    let sock_ref = &sock;
    let pid = fork_with(move || {
        // One lease segment of its own, and the ring by the broker.
        let handed = RingBroker::request(sock_ref, 32, 1).expect("a ring from the broker");
        let mut ring = handed.enable_with(&RingOptions::new().engine(EnginePolicy::IoUring)).expect("enable");
        let view = ring.memory().expect("a view").clone();
        assert_eq!(view.segment_count(), 2);
        up_tx.write_all(b"r").unwrap();
        let mut b = [0u8; 1];
        go_rx.read_exact(&mut b).unwrap();
        assert_eq!(view.catch_up().expect("catch up"), 4, "two segments more");
        // SAFETY: the owner reserved segments 2 and 3 and wrote them before the go.
        let pieces = unsafe { view.region_span(2 * SEG + 4096, SEG) }.expect("a region of the new memory");
        let (r, _) = ring.run(Op::writev(file_ref, 0, pieces)).into_vec();
        assert_eq!(r.expect("fixed write from the new segments"), SEG as usize);
        up_tx.write_all(b"d").unwrap();
        0
    });
    let mut b = [0u8; 1];
    up_rx.read_exact(&mut b).unwrap();
    let report = table.grow(2 * SEG).unwrap();
    assert_eq!(report.handed_rings, 1, "the broker's ring got the new slots");
    let _reserved = mem.reserve_segments(2..4).unwrap();
    // SAFETY: segments 2 and 3 are reserved; the child reads them after the go.
    for mut p in unsafe { mem.region_span(2 * SEG, 2 * SEG) }.unwrap() {
        let base = p.pool_offset();
        for (k, x) in p.iter_mut().enumerate() {
            *x = byte(base + k as u64);
        }
    }
    go_tx.write_all(b"g").unwrap();
    up_rx.read_exact(&mut b).expect("the child's write");
    assert_eq!(wait_child(pid, std::time::Duration::from_secs(30)), Ok(0));
    let want: Vec<u8> = (0..SEG).map(|k| byte(2 * SEG + 4096 + k)).collect();
    assert!(common::std_read(&path, 0, SEG as usize) == want, "the child's write");
    drop(broker);
}
