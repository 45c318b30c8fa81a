//! Kernel semantics of registered buffers and IORING_REGISTER_CLONE_BUFFERS,
//! through ringpool's own calls (see ../shared/KERNEL.md).

mod common;

use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::mpsc;

use ringpool::probe::{DstReplace, Features};
use ringpool::types::{CloneRange, PagePolicy, Refresh};
use ringpool::Op;
use ringpool::{BufferTable, Error, IoMemory, MemoryOptions, Ring, RingOptions, TableOptions};

const MIB: u64 = 1 << 20;

/// 4 segments of 1 MiB, prefaulted.
fn pool() -> IoMemory {
    let mem = IoMemory::map_with(4 * MIB, &MemoryOptions::new().page(PagePolicy::Base).segment_size(MIB)).unwrap();
    mem.prefault(|_| {}).unwrap();
    mem
}

fn roundtrip(ring: &mut Ring, mem: &IoMemory, file: &ringpool::DirectFile, seg: u16, seed: u64) {
    let mut w = mem.try_alloc_in(seg, 8192).unwrap();
    common::fill(&mut w, seed);
    let (n, _) = ring.write_at(file, seed * 8192, w).into_one();
    assert_eq!(n.unwrap(), 8192);
    let (n, r) = ring.read_at(file, seed * 8192, mem.try_alloc_in(seg, 8192).unwrap()).into_one();
    assert_eq!(n.unwrap(), 8192);
    assert!(r[..] == common::pattern(8192, seed)[..], "segment {seg}");
}

#[test]
fn clone_into_a_ring_with_a_table_needs_dst_replace() {
    if !common::require_clone("clone_into_a_ring_with_a_table_needs_dst_replace") {
        return;
    }
    let mem = pool();
    let table = BufferTable::register(&mem).unwrap();
    let mut ring = table.ring().unwrap();
    let e = ring.clone_buffers_from(&table, CloneRange::all()).unwrap_err();
    assert!(matches!(e, Error::TableAlreadyPresent), "{e:?}");
    if common::require(
        Features::get().clone_ranges,
        "clone_into_a_ring_with_a_table_needs_dst_replace",
        "ranged clone needs 6.13",
    ) {
        ring.clone_buffers_from(&table, CloneRange::range(0, 0, 4).replace()).unwrap();
        assert_eq!(ring.table_len(), 4);
        let dir = common::disk_dir();
        let file = common::direct_file(dir.path(), "k");
        roundtrip(&mut ring, &mem, &file, 2, 1);
    }
}

#[test]
fn empty_source_and_ranges_out_of_bounds_have_their_errors() {
    if !common::require_clone("empty_source_and_ranges_out_of_bounds_have_their_errors") {
        return;
    }
    let mem = pool();
    let table = BufferTable::register(&mem).unwrap();
    let empty = Ring::new(&RingOptions::default()).unwrap();
    let mut dst = Ring::new(&RingOptions::default()).unwrap();
    assert!(matches!(dst.clone_buffers_from(&empty, CloneRange::all()), Err(Error::EmptySource)));
    if !common::require(Features::get().clone_ranges, "empty_source_and_ranges_out_of_bounds_have_their_errors", "6.13")
    {
        return;
    }
    // src_off + nr past the source (EOVERFLOW).
    let e = dst.clone_buffers_from(&table, CloneRange::range(3, 0, 2)).unwrap_err();
    assert!(matches!(e, Error::RangeOutOfBounds { src_off: 3, nr: 2, source_len: 4, .. }), "{e:?}");
    // nr larger than the source table (EINVAL for the range).
    let e = dst.clone_buffers_from(&table, CloneRange::range(0, 0, 5)).unwrap_err();
    assert!(matches!(e, Error::RangeOutOfBounds { nr: 5, .. }), "{e:?}");
    // dst_off + nr past 16384.
    let e = dst.clone_buffers_from(&table, CloneRange::range(0, 16383, 2)).unwrap_err();
    assert!(matches!(e, Error::RangeOutOfBounds { dst_off: 16383, .. }), "{e:?}");
    // After all that, the destination takes a valid clone.
    dst.clone_buffers_from(&table, CloneRange::all()).unwrap();
    assert_eq!(dst.table_len(), 4);
}

#[test]
fn holes_clone_and_are_never_used_for_io() {
    if !common::require_clone("holes_clone_and_are_never_used_for_io") {
        return;
    }
    let mem = pool();
    // 4 segments in a table of 8 slots: slots 4..8 are holes.
    let table = BufferTable::register_with(&mem, &TableOptions::new().capacity(8 * MIB)).unwrap();
    assert_eq!((table.len(), table.capacity()), (4, 8));
    let mut ring = table.ring().unwrap();
    assert_eq!(ring.table_len(), 4, "only filled slots are usable");
    let dir = common::disk_dir();
    let file = common::direct_file(dir.path(), "holes");
    roundtrip(&mut ring, &mem, &file, 3, 2);
    if common::require(Features::get().clone_ranges, "holes_clone_and_are_never_used_for_io", "6.13") {
        // Cloning just the holes gives a table with no usable slot.
        let mut holes = Ring::new(&RingOptions::default()).unwrap();
        holes.clone_buffers_from(&table, CloneRange::range(4, 0, 4)).unwrap();
        assert_eq!(holes.table_len(), 0);
        // With no usable slot, the ring reads with plain READ (no hole is
        // ever named in an SQE), and gets the data.
        let (r, b) = holes.read_at(&file, 2 * 8192, mem.try_alloc_in(0, 8192).unwrap()).into_one();
        assert_eq!(r.unwrap(), 8192);
        assert!(b[..] == common::pattern(8192, 2)[..]);
        assert_eq!(holes.table_len(), 0);
    }
}

fn growing_table_is_picked_up(refresh: Refresh, test: &str) {
    if !common::require_clone(test) {
        return;
    }
    let mem = pool();
    let table = BufferTable::register_with(&mem, &TableOptions::new().capacity(12 * MIB).refresh(refresh)).unwrap();
    let mut before = table.ring().unwrap();
    let dir = common::disk_dir();
    let file = common::direct_file(dir.path(), "grow");
    let g = table.grow(3 * MIB).unwrap();
    assert_eq!(g.segments, 4..7);
    assert_eq!((table.len(), table.generation()), (7, 1));
    // A clone is a snapshot: the ring made before has not seen the growth...
    assert_eq!((before.table_len(), before.table_generation()), (4, 0));
    // ...until it needs it: a lease of new memory refreshes it first.
    roundtrip(&mut before, &mem, &file, 6, 3);
    assert_eq!((before.table_len(), before.table_generation()), (7, 1));
    assert!(!before.refresh_table().unwrap(), "nothing left to pick up");
    // Old slots still work after the refresh, and a ring made now has all.
    roundtrip(&mut before, &mem, &file, 0, 4);
    let mut after = table.ring().unwrap();
    assert_eq!(after.table_len(), 7);
    roundtrip(&mut after, &mem, &file, 5, 5);
    // Explicit refresh after another growth.
    table.grow(MIB).unwrap();
    assert!(before.refresh_table().unwrap());
    assert_eq!(before.table_len(), 8);
    // Past the capacity: a typed error naming the numbers.
    let e = table.grow(5 * MIB).unwrap_err();
    match &e {
        Error::CapacityExhausted { capacity: 12, used: 8, needed: 5, .. } => {}
        other => panic!("expected CapacityExhausted, got {other:?}"),
    }
    assert!(e.to_string().contains("12 slots"), "{e}");
}

#[test]
fn a_growing_table_is_picked_up_by_ranged_clone() {
    let test = "a_growing_table_is_picked_up_by_ranged_clone";
    if common::require(Features::get().clone_ranges, test, "ranged clone needs 6.13") {
        growing_table_is_picked_up(Refresh::Ranged, test);
    }
}

#[test]
fn a_growing_table_is_picked_up_by_whole_clone() {
    growing_table_is_picked_up(Refresh::Whole, "a_growing_table_is_picked_up_by_whole_clone");
}

#[test]
fn the_source_closes_while_the_destination_reads() {
    if !common::require_clone("the_source_closes_while_the_destination_reads") {
        return;
    }
    let mem = pool();
    let table = BufferTable::register(&mem).unwrap();
    let mut ring = table.ring().unwrap();
    let dir = common::disk_dir();
    let file = common::direct_file(dir.path(), "closing");
    let mut content = Vec::new();
    for i in 0..64u64 {
        content.extend(common::pattern(16384, i));
    }
    std::fs::write(file.path(), &content).unwrap();
    for i in 0..64u64 {
        ring.push(Op::read(&file, i * 16384, mem.try_alloc(16384).unwrap()), i).unwrap();
    }
    ring.submit().unwrap();
    drop(table); // the template ring closes with the reads in flight
    ring.wait(64).unwrap();
    let mut seen = 0;
    for (tag, c) in ring.completions() {
        assert_eq!(c.result.unwrap(), 16384);
        assert!(c.bufs.into_one().unwrap()[..] == common::pattern(16384, tag)[..]);
        seen += 1;
    }
    assert_eq!(seen, 64);
}

#[test]
fn a_single_issuer_source_of_another_thread_is_refused() {
    if !common::require_clone("a_single_issuer_source_of_another_thread_is_refused") {
        return;
    }
    let mem = pool();
    let table = BufferTable::register(&mem).unwrap();
    let (fd_tx, fd_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    std::thread::scope(|s| {
        let table = &table;
        s.spawn(move || {
            // This thread's ring is SINGLE_ISSUER: only this thread may clone from it.
            let ring = table.ring().unwrap();
            fd_tx.send(std::os::fd::AsFd::as_fd(&ring).as_raw_fd()).unwrap();
            done_rx.recv().unwrap();
            drop(ring);
        });
        let fd = fd_rx.recv().unwrap();
        let mut mine = Ring::new(&RingOptions::default()).unwrap();
        // SAFETY: the owning thread keeps the ring (and its fd) open until we
        // signal `done` below.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        let e = mine.clone_buffers_from_fd(borrowed, 4, CloneRange::all()).unwrap_err();
        assert!(matches!(e, Error::SingleIssuer { op: "clone" }), "{e:?}");
        assert!(e.to_string().contains("SINGLE_ISSUER"));
        done_tx.send(()).unwrap();
    });
}

/// Child side of `a_forked_child_cannot_clone_its_parents_table`.
#[test]
#[ignore = "runs in a child process started by a_forked_child_cannot_clone_its_parents_table"]
fn forked_child() {
    let fd: i32 = std::env::var("RINGPOOL_PARENT_TEMPLATE_FD").expect("run only as a child").parse().unwrap();
    let mut ring = Ring::new(&RingOptions::default()).unwrap();
    // SAFETY: the parent made `fd` an open, inherited io_uring fd of ours.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let e = ring.clone_buffers_from_fd(borrowed, 4, CloneRange::all()).unwrap_err();
    assert!(matches!(e, Error::CrossProcess), "{e:?}");
    println!("child: {e}");
}

#[test]
fn a_forked_child_cannot_clone_its_parents_table() {
    if !common::require_clone("a_forked_child_cannot_clone_its_parents_table") {
        return;
    }
    use std::os::unix::process::CommandExt;
    let mem = pool();
    let table = BufferTable::register(&mem).unwrap();
    let src = table.template_fd();
    const CHILD_FD: i32 = 77;
    let exe = std::env::current_exe().unwrap();
    let mut cmd = std::process::Command::new(exe);
    cmd.args(["--ignored", "--exact", "forked_child", "--nocapture", "--test-threads=1"])
        .env("RINGPOOL_PARENT_TEMPLATE_FD", CHILD_FD.to_string());
    // SAFETY: dup2 is async-signal-safe; it puts the template fd (without
    // close-on-exec) where the child looks for it.
    unsafe {
        cmd.pre_exec(move || if libc::dup2(src, CHILD_FD) < 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) });
    }
    let out = cmd.output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("1 passed"), "child failed:\n{text}");
    assert!(text.contains("another process"), "{text}");
}

#[test]
fn the_probe_reports_the_dst_replace_self_test() {
    let f = Features::get();
    if !f.clone_ranges {
        assert_eq!(f.dst_replace, DstReplace::Unsupported);
        let _ = common::require(false, "the_probe_reports_the_dst_replace_self_test", "ranged clone needs 6.13");
        return;
    }
    // 6.18.44 here is a fixed kernel: partial DST_REPLACE works.
    assert_eq!(f.dst_replace, DstReplace::Works, "kernel {}", f.kernel);
}
