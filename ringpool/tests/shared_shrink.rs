//! A shared pool that shrinks under I/O from 16 processes (issue 20, 1):
//! forked children drive rings handed with `follow_growth`, each doing
//! verified fixed I/O from its own lease segment without pause; the owner
//! first tries a shrink that a child's lease segment blocks (it times out
//! cleanly, the pool as before), then shrinks the segments no child holds
//! while its own lease there drains. VmPin drops by the shrunk bytes, no
//! child sees a wrong byte, a child's region over a shrunk segment fails
//! instead of reaching memory given back, and the children's views let the
//! segments go. Runs in a child test process (no other test thread exists
//! at the forks).

mod common;

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::time::Duration;

use common::{fill, fork_with, pattern, vmpin_kb, wait_child};
use ringpool::handover::HandoverOptions;
use ringpool::types::{EnginePolicy, PagePolicy};
use ringpool::{BufferTable, Error, IoMemory, MemoryOptions, Op, RingOptions, TableOptions};

const MIB: u64 = 1 << 20;
const SEG: u64 = 2 * MIB;
const CHILDREN: u16 = 16;
/// Segments 0..16 are the children's lease segments; 16..24 are the owner's.
const SEGS: u16 = 24;
/// Bytes each child writes and reads back per round.
const IO: usize = 64 << 10;

#[test]
fn a_shared_pool_shrinks_under_io_from_16_processes() {
    if !common::require_clone("a_shared_pool_shrinks_under_io_from_16_processes") {
        return;
    }
    let (ok, out) = common::run_child("shared_shrink_child", &[("RINGPOOL_SHARED_SHRINK_CHILD", "1")]);
    assert!(ok, "{out}");
}

/// Whether a byte is waiting on `fd` (without reading it).
fn ready(fd: &impl AsRawFd) -> bool {
    let mut p = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd, no timeout.
    unsafe { libc::poll(&mut p, 1, 0) == 1 }
}

fn unsafe_getppid() -> libc::pid_t {
    // SAFETY: getppid has no preconditions.
    unsafe { libc::getppid() }
}

/// One child: verified write + read rounds from its lease segment until the
/// owner says stop; child 0 also holds a region over segment 20 (one the
/// shrink takes) and checks that I/O through it fails after the shrink.
fn child(
    i: u16,
    handed: ringpool::handover::HandedRing,
    file: &ringpool::DirectFile,
    mut go: std::io::PipeReader,
    mut up: std::io::PipeWriter,
) -> i32 {
    let mut ring = handed.enable_with(&RingOptions::new().engine(EnginePolicy::IoUring)).expect("enable");
    let view = ring.memory().expect("a view").clone();
    assert_eq!(view.segment_count(), SEGS);
    // SAFETY: segment 20 is the owner's; it never touches these bytes
    // while the children run, and only child 0 makes this region.
    let mut region = (i == 0).then(|| unsafe { view.region(20 * SEG + 8192, 4096) }.expect("a region in segment 20"));
    let mut w = view.try_alloc(IO).expect("a lease from my segment");
    let mut r = view.try_alloc(IO).expect("a second lease");
    assert!(w.buf_index() == i && r.buf_index() == i, "leases come from the child's segment");
    up.write_all(b"r").unwrap();
    let at = u64::from(i) * IO as u64;
    let mut rounds = 0u64;
    let mut bad = 0u64;
    let owner = unsafe_getppid();
    let started = std::time::Instant::now();
    while !ready(&go) {
        if unsafe_getppid() != owner || started.elapsed() > Duration::from_secs(120) {
            // The owner is gone (its test failed) or never said stop.
            return 4;
        }
        let seed = u64::from(i) << 32 | rounds;
        fill(&mut w, seed);
        let (res, mut bufs) = ring.run(Op::write(file, at, w)).into_vec();
        assert_eq!(res.expect("write"), IO);
        w = bufs.pop().unwrap();
        let (res, mut bufs) = ring.run(Op::read(file, at, r)).into_vec();
        assert_eq!(res.expect("read"), IO);
        r = bufs.pop().unwrap();
        if r[..] != pattern(IO, seed)[..] {
            bad += 1;
        }
        rounds += 1;
    }
    let mut b = [0u8; 1];
    go.read_exact(&mut b).unwrap();
    if let Some(reg) = region.take() {
        // After the shrink: the ring no longer holds slot 20.
        assert_eq!(b[0], b's', "child 0 is told of the shrink");
        let done = ring.run(Op::read(file, 0, reg));
        assert!(done.result.is_err(), "I/O through a region over a shrunk segment must fail: {:?}", done.result);
        drop(done);
        assert_eq!(view.catch_up().expect("catch up"), SEGS - 8, "the view let the shrunk segments go");
    } else {
        assert_eq!(view.catch_up().expect("catch up"), SEGS - 8, "the view let the shrunk segments go");
    }
    up.write_all(&rounds.to_le_bytes()).unwrap();
    if bad > 0 {
        eprintln!("child {i}: {bad} of {rounds} rounds read wrong bytes");
        return 3;
    }
    0
}

/// Child side of `a_shared_pool_shrinks_under_io_from_16_processes`.
#[test]
#[ignore = "runs in a child process started by a_shared_pool_shrinks_under_io_from_16_processes"]
fn shared_shrink_child() {
    assert_eq!(std::env::var("RINGPOOL_SHARED_SHRINK_CHILD").as_deref(), Ok("1"), "run only as a child");
    let dir = common::disk_dir();
    let file = common::direct_file(dir.path(), "shrink");
    file.set_len((u64::from(CHILDREN) + 1) * IO as u64).unwrap();
    let opts = MemoryOptions::new().page(PagePolicy::Base).segment_size(SEG).shared();
    let mem = IoMemory::map_with(u64::from(SEGS) * SEG, &opts).expect("a shared pool");
    mem.prefault(|_| {}).unwrap();
    let table = BufferTable::register_with(&mem, &TableOptions::new().capacity(u64::from(SEGS) * SEG)).unwrap();
    let pin0 = vmpin_kb();

    let mut children = Vec::new();
    for i in 0..CHILDREN {
        let handed = table.handover(&HandoverOptions::new().entries(8).leases(i..i + 1).follow_growth()).unwrap();
        let for_child = handed.try_clone().unwrap();
        let (go_rx, go_tx) = std::io::pipe().unwrap();
        let (mut up_rx, up_tx) = std::io::pipe().unwrap();
        let file = &file;
        let pid = fork_with(move || {
            drop(handed);
            child(i, for_child, file, go_rx, up_tx)
        });
        let mut b = [0u8; 1];
        up_rx.read_exact(&mut b).unwrap_or_else(|e| panic!("child {i} failed to start: {e}"));
        children.push((pid, go_tx, up_rx));
    }

    // Segment 15 is child 15's: a shrink that takes it times out cleanly.
    let err = table.shrink(9 * SEG, Duration::from_millis(200)).unwrap_err();
    match err {
        Error::ShrinkTimeout { segments, held, .. } => assert_eq!((segments, held), (15..24, 1)),
        e => panic!("expected a shrink timeout, got {e:?}"),
    }
    assert_eq!(mem.segment_count(), SEGS, "the pool is as before");
    assert_eq!(vmpin_kb(), pin0, "nothing was released");

    // The owner's own fixed I/O from segment 16, its lease held 150 ms into
    // the shrink: the shrink waits for it.
    let mut ring = table.ring().unwrap();
    let mut own = mem.try_alloc(IO).unwrap();
    assert!(own.buf_index() >= CHILDREN, "the owner leases from its own segments");
    fill(&mut own, 7);
    let (res, mut bufs) = ring.run(Op::write(&file, u64::from(CHILDREN) * IO as u64, own)).into_vec();
    assert_eq!(res.unwrap(), IO);
    let own = bufs.pop().unwrap();
    let late = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(150));
        drop(own);
    });
    std::thread::sleep(Duration::from_millis(20));
    let report = table.shrink(8 * SEG, Duration::from_secs(10)).expect("the shrink of segments no child holds");
    late.join().unwrap();
    assert_eq!(report.segments, 16..24);
    assert!(report.drain_time >= Duration::from_millis(100), "it waited for the owner's lease: {report:?}");
    assert_eq!(mem.segment_count(), SEGS - 8);
    // The owner's own ring lets the slots go when it catches up (or goes).
    drop(ring);
    assert_eq!(vmpin_kb(), pin0 - 8 * SEG / 1024, "VmPin dropped by the shrunk bytes (before: {pin0} kB)");

    for (_, go, _) in &mut children {
        go.write_all(b"s").unwrap();
    }
    let mut total = 0;
    for (i, (pid, _, mut up)) in children.into_iter().enumerate() {
        let mut n = [0u8; 8];
        up.read_exact(&mut n).unwrap_or_else(|e| panic!("child {i} failed before its report: {e}"));
        let rounds = u64::from_le_bytes(n);
        assert!(rounds > 0, "child {i} did I/O");
        total += rounds;
        assert_eq!(wait_child(pid, Duration::from_secs(30)), Ok(0), "child {i}");
    }
    eprintln!("16 children: {total} verified write+read rounds across the shrinks");

    // A ring handed without follow_growth cannot lose slots from here: a
    // shared pool with one does not shrink.
    drop(table.handover(&HandoverOptions::new()).unwrap());
    let err = table.shrink(SEG, Duration::from_secs(1)).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }) && err.to_string().contains("follow_growth"), "{err}");
}

#[test]
fn a_shared_pool_refuses_a_growth_its_handovers_could_not_carry() {
    // One memfd per growth travels with every handed ring (at most 63 in
    // one message): the 63rd mapping is refused with the reason, and the
    // pool stays as it was and keeps growing once it shrank.
    let opts = MemoryOptions::new().page(PagePolicy::Base).segment_size(64 << 10).shared();
    let mem = IoMemory::map_with(64 << 10, &opts).expect("a shared pool");
    for i in 1..63 {
        mem.grow(64 << 10).unwrap_or_else(|e| panic!("growth {i}: {e}"));
    }
    let err = mem.grow(64 << 10).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }) && err.to_string().contains("one memfd per growth"), "{err}");
    assert_eq!(mem.segment_count(), 63);
    mem.shrink(64 << 10, Duration::from_secs(1)).expect("a shrink of the last growth");
    mem.grow(64 << 10).expect("room for one more mapping again");
}
