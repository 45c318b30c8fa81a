//! The engine choice per file: a device without NOWAIT support (zram) gets
//! the inline engine at shallow depth, a file system that serves
//! non-blocking I/O gets io_uring, a forced choice is obeyed, and data is
//! right whichever engine moved it.

mod common;

use ringpool::types::{DirectIo, EngineKind, EnginePolicy, Nowait, PagePolicy};
use ringpool::{BufferTable, DirectFile, IoMemory, IoPool, MemoryOptions, RingOptions};

const MIB: u64 = 1 << 20;

fn mem() -> IoMemory {
    IoMemory::map_with(16 * MIB, &MemoryOptions::new().page(PagePolicy::Base).segment_size(4 * MIB)).unwrap()
}

fn open_rw(path: &std::path::Path) -> DirectFile {
    DirectFile::options().read(true).write(true).direct(DirectIo::Required).open(path).unwrap()
}

#[test]
fn a_device_without_nowait_gets_the_inline_engine_and_the_waiter_runs_it() {
    if !common::require_clone("a_device_without_nowait_gets_the_inline_engine") {
        return;
    }
    let Some(z) = common::Zram::setup("a_device_without_nowait_gets_the_inline_engine", 64 * MIB) else { return };
    let file = open_rw(&z.path);
    assert_eq!(file.nowait(), Nowait::Unsupported, "zram takes no RWF_NOWAIT");

    // A ring: inline at depth 1, data right.
    let m = mem();
    let table = BufferTable::register(&m).unwrap();
    let mut ring = table.ring().unwrap();
    assert_eq!(ring.engine_for(&file).0, EngineKind::Inline);
    let mut w = m.try_alloc(8192).unwrap();
    common::fill(&mut w, 5);
    let (r, _) = ring.write_at(&file, 8192, w).into_one();
    assert_eq!(r.unwrap(), 8192);
    let (r, b) = ring.read_at(&file, 8192, m.try_alloc(8192).unwrap()).into_one();
    assert_eq!(r.unwrap(), 8192);
    assert!(b[..] == common::pattern(8192, 5)[..]);
    let st = ring.stats();
    assert_eq!((st.ops, st.inline_ops), (2, 2), "{st:?}");
    drop(b);

    // A pool: the caller that waits runs the operation (no hand-off).
    let pool = IoPool::builder().existing_memory(mem()).workers(1, 1).build().unwrap();
    assert_eq!(pool.engine_for(&file).0, EngineKind::Inline);
    for i in 0..10u64 {
        let (r, b) = pool.read_at(&file, 8192, pool.memory().try_alloc(8192).unwrap()).wait().into_one();
        assert_eq!(r.unwrap(), 8192, "read {i}");
        assert!(b[..] == common::pattern(8192, 5)[..]);
    }
    let st = pool.stats();
    // A worker may take a request between its submission and the wait
    // (a race the pool allows: then the worker runs it inline); the
    // callers run the rest.
    let by_workers: u64 = st.per_worker.iter().map(|w| w.ops).sum();
    assert_eq!(st.helped_ops + by_workers, 10, "{st:?}");
    assert!(st.helped_ops >= 8, "the waiting callers ran only {} of 10: {st:?}", st.helped_ops);
    assert_eq!((st.completed, st.failed), (10, 0));
    assert_eq!(st.files.len(), 1);
    assert_eq!(st.files[0].engine, EngineKind::Inline);
    assert!(st.files[0].reason.contains("NOWAIT"), "{}", st.files[0].reason);

    // Handles nobody waits on still complete: a worker takes them.
    let handles: Vec<_> =
        (0..8u64).map(|i| pool.read_at(&file, i * 4096, pool.memory().try_alloc(4096).unwrap())).collect();
    drop(handles);
    let (r, _) = pool.read_at(&file, 0, pool.memory().try_alloc(4096).unwrap()).wait().into_one();
    r.unwrap();
    pool.shutdown();
    let st = pool.stats();
    assert_eq!((st.completed, st.failed), (19, 0), "{st:?}");
}

#[test]
fn a_file_system_with_nowait_gets_io_uring() {
    if !common::require_clone("a_file_system_with_nowait_gets_io_uring") {
        return;
    }
    let dir = common::disk_dir();
    let file = common::direct_file(dir.path(), "nowait");
    file.set_len(MIB).unwrap();
    assert_eq!(file.nowait(), Nowait::Supported, "ext4 takes RWF_NOWAIT");
    let m = mem();
    let table = BufferTable::register(&m).unwrap();
    // Forced: io_uring only.
    let mut ring = table.ring_with(&RingOptions::new().engine(EnginePolicy::IoUring)).unwrap();
    assert_eq!(ring.engine_for(&file).0, EngineKind::IoUring);
    let (r, _) = ring.read_at(&file, 0, m.try_alloc(4096).unwrap()).into_one();
    assert_eq!(r.unwrap(), 4096);
    assert_eq!(ring.stats().inline_ops, 0);
    // Auto: io_uring, and at depth 1 the engine this device's operations
    // measure faster; while learning, the two alternate, and each read is
    // a sample of one of them.
    let before = file.device_stats().reads;
    let mut ring = table.ring().unwrap();
    for i in 0..8u64 {
        let (r, _) = ring.read_at(&file, i * 4096, m.try_alloc(4096).unwrap()).into_one();
        assert_eq!(r.unwrap(), 4096);
    }
    let after = file.device_stats().reads;
    let samples = |s: ringpool::stats::ShallowStats| s.sync_samples + s.io_uring_samples;
    assert_eq!(samples(after) - samples(before), 8, "{after:?}");
    if after.verdict == "learning" {
        assert_eq!(ring.stats().inline_ops, 4, "alternating while learning");
        assert!(ring.engine_for(&file).1.contains("alternate"));
    }
    // A pool: the caller that waits runs the read on its own ring.
    let pool = IoPool::builder().existing_memory(mem()).workers(1, 1).build().unwrap();
    let (r, _) = pool.read_at(&file, 0, pool.memory().try_alloc(4096).unwrap()).wait().into_one();
    r.unwrap();
    let st = pool.stats();
    assert_eq!((st.helped_ops, st.local_ops, st.local_rings), (1, 1, 1), "{st:?}");
}

#[test]
fn a_forced_engine_is_obeyed() {
    if !common::require_clone("a_forced_engine_is_obeyed") {
        return;
    }
    let dir = common::disk_dir();
    let disk = common::direct_file(dir.path(), "forced");
    disk.set_len(MIB).unwrap();
    let m = mem();
    let table = BufferTable::register(&m).unwrap();

    // Inline on a file system that has NOWAIT.
    let mut ring = table.ring_with(&RingOptions::new().engine(EnginePolicy::Inline)).unwrap();
    assert_eq!(ring.engine_for(&disk).0, EngineKind::Inline);
    let mut w = m.try_alloc(4096).unwrap();
    common::fill(&mut w, 9);
    let (r, _) = ring.write_at(&disk, 4096, w).into_one();
    assert_eq!(r.unwrap(), 4096);
    assert_eq!(ring.stats().inline_ops, 1);
    // Read back through io_uring: the same bytes.
    let mut uring = table.ring_with(&RingOptions::new().engine(EnginePolicy::IoUring)).unwrap();
    let (r, b) = uring.read_at(&disk, 4096, m.try_alloc(4096).unwrap()).into_one();
    assert_eq!(r.unwrap(), 4096);
    assert!(b[..] == common::pattern(4096, 9)[..]);
    assert_eq!(uring.stats().inline_ops, 0);

    let pool = IoPool::builder()
        .existing_memory(mem())
        .ring(RingOptions::new().engine(EnginePolicy::Inline))
        .workers(1, 1)
        .build()
        .unwrap();
    // The reason is the forced policy's: nothing goes to io_uring, and the
    // device's NOWAIT support is not what decided.
    let (engine, why) = pool.engine_for(&disk);
    assert_eq!(engine, EngineKind::Inline);
    assert!(why.contains("as asked") && !why.contains("NOWAIT") && !why.contains("through io_uring"), "{why}");
    let (r, _) = pool.read_at(&disk, 4096, pool.memory().try_alloc(4096).unwrap()).wait().into_one();
    r.unwrap();

    // io_uring on zram, and a pool that never lets the caller run it.
    if let Some(z) = common::Zram::setup("a_forced_engine_is_obeyed", 16 * MIB) {
        let zf = open_rw(&z.path);
        let mut ring = table.ring_with(&RingOptions::new().engine(EnginePolicy::IoUring)).unwrap();
        assert_eq!(ring.engine_for(&zf).0, EngineKind::IoUring);
        let (r, _) = ring.read_at(&zf, 0, m.try_alloc(4096).unwrap()).into_one();
        assert_eq!(r.unwrap(), 4096);
        assert_eq!(ring.stats().inline_ops, 0);
        let pool = IoPool::builder()
            .existing_memory(mem())
            .ring(RingOptions::new().engine(EnginePolicy::IoUring))
            .workers(1, 1)
            .build()
            .unwrap();
        let (engine, why) = pool.engine_for(&zf);
        assert_eq!(engine, EngineKind::IoUring);
        assert!(why.contains("as asked") && !why.contains("serves non-blocking"), "{why}");
        // The waiter runs it on its own ring, which obeys the policy: io_uring.
        let (r, _) = pool.read_at(&zf, 0, pool.memory().try_alloc(4096).unwrap()).wait().into_one();
        r.unwrap();
        assert_eq!((pool.stats().helped_ops, pool.stats().inline_ops), (1, 0));
        let pool2 = IoPool::builder().existing_memory(mem()).help_while_waiting(false).workers(1, 1).build().unwrap();
        let (r, _) = pool2.read_at(&zf, 0, pool2.memory().try_alloc(4096).unwrap()).wait().into_one();
        r.unwrap();
        assert_eq!((pool2.stats().helped_ops, pool2.stats().local_ops), (0, 0), "a worker ran it");
    }
}
