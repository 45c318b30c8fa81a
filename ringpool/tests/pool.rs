//! The IO thread pool issue's tests: integrity under elastic scaling on
//! every backend, typed errors, the allocator, dropped handles, the table
//! owner going away, tokio, and the seccomp-forced blocking fallback.

mod common;

use std::sync::{Arc, Barrier};
use std::time::Duration;

use ringpool::types::EngineKind;
use ringpool::types::EnginePolicy;
use ringpool::types::{DirectIo, PagePolicy, Sharing, TablePath};
use ringpool::{BufferTable, DirectFile, Error, IoMemory, IoPool, MemoryOptions};
use ringpool::{Op, RingOptions, TableOptions};

const MIB: u64 = 1 << 20;
const REGION: u64 = 8 * MIB;
const THREADS: u64 = 8;

/// 8 submitting threads write random blocks (4 KiB to 1 MiB at random
/// 4 KiB-aligned offsets, each thread in its own region) in three phases
/// separated by pauses longer than the idle timeout, so that workers scale
/// up under load and retire in the pauses. Then every byte is checked with
/// std::fs and through the pool.
fn integrity(table: TableOptions, engine: EnginePolicy) -> ringpool::stats::PoolStats {
    integrity_growing(table, engine, false)
}

/// With `grow`, a thread grows the pool 10 times by 4 MiB during the
/// workload, and right after each growth uses leases of the new memory;
/// then one more growth past the capacity must fail with its typed error.
fn integrity_growing(table: TableOptions, engine: EnginePolicy, grow: bool) -> ringpool::stats::PoolStats {
    let dir = common::disk_dir();
    let path = dir.path().join("integrity");
    let file =
        DirectFile::options().read(true).write(true).create(true).direct(DirectIo::Required).open(&path).unwrap();
    file.set_len(REGION * THREADS).unwrap();
    let pool = Arc::new(
        IoPool::builder()
            .size(64 * MIB)
            .memory(MemoryOptions::new().page(PagePolicy::Base).segment_size(16 * MIB))
            .table(table.capacity(if grow { 14 * 16 * MIB } else { 64 * MIB }))
            .ring(RingOptions::new().entries(17).engine(engine))
            .workers(1, 4)
            .idle_timeout(Duration::from_millis(20))
            .grow_threshold(4, Duration::from_micros(200))
            .build()
            .unwrap(),
    );
    let phases = 3;
    let growing = std::sync::atomic::AtomicBool::new(grow);
    let barrier = Arc::new(Barrier::new(THREADS as usize));
    let shadows: Vec<Vec<u8>> = std::thread::scope(|s| {
        if grow {
            let (pool, file, growing) = (pool.clone(), file.clone(), &growing);
            s.spawn(move || {
                for g in 0..10u64 {
                    std::thread::sleep(Duration::from_millis(30));
                    let report = pool.grow(4 * MIB).unwrap();
                    assert_eq!(report.segments.len(), 1);
                    // Leases of the new memory, at once, on whichever workers run them:
                    // reads of the file's first blocks (their content is checked at the end).
                    let hs: Vec<_> = (0..8u64)
                        .map(|i| {
                            // The submitters may be holding the new segment already: wait for room in it.
                            let deadline = std::time::Instant::now() + Duration::from_secs(20);
                            let b = loop {
                                match pool.memory().try_alloc_in(report.segments.start, 256 << 10) {
                                    Ok(b) => break b,
                                    Err(e) if std::time::Instant::now() < deadline => {
                                        let _ = e;
                                        std::thread::sleep(Duration::from_millis(1));
                                    }
                                    Err(e) => panic!("no room in the new segment: {e}"),
                                }
                            };
                            pool.read_at(&file, (g * 8 + i) * (256 << 10) % (REGION * THREADS), b)
                        })
                        .collect();
                    for h in hs {
                        let (n, _) = h.wait().into_one();
                        assert_eq!(n.unwrap(), 256 << 10, "an op on grown memory failed");
                    }
                }
                let e = pool.grow(4 * MIB).unwrap_err();
                assert!(matches!(e, Error::CapacityExhausted { capacity: 14, used: 14, .. }), "{e:?}");
                growing.store(false, std::sync::atomic::Ordering::Relaxed);
            });
        }
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let pool = pool.clone();
                let file = file.clone();
                let barrier = barrier.clone();
                s.spawn(move || {
                    let mut rng = fastrand::Rng::with_seed(t + 1);
                    let mut shadow = vec![0u8; REGION as usize];
                    let base = t * REGION;
                    for phase in 0..phases {
                        for _round in 0..6 {
                            // A batch of non-overlapping blocks, all in flight at once.
                            let mut blocks: Vec<(u64, u64)> = Vec::new();
                            for _ in 0..6 {
                                let len = rng.u64(1..257) * 4096;
                                let off = rng.u64(0..(REGION - len) / 4096 + 1) * 4096;
                                if blocks.iter().all(|&(o, l)| off + len <= o || off >= o + l) {
                                    blocks.push((off, len));
                                }
                            }
                            let mut handles = Vec::new();
                            for &(off, len) in &blocks {
                                let mut buf =
                                    pool.memory().alloc_timeout(len as usize, Duration::from_secs(30)).unwrap();
                                let seed = rng.u64(..);
                                common::fill(&mut buf, seed);
                                shadow[off as usize..(off + len) as usize].copy_from_slice(&buf);
                                handles.push((off, len, pool.write_at(&file, base + off, buf)));
                            }
                            for (off, len, h) in handles {
                                let (n, buf) = h.wait().into_one();
                                assert_eq!(n.unwrap(), len as usize, "write at {}", base + off);
                                drop(buf);
                            }
                            // Read one block back through the pool right away.
                            let &(off, len) = &blocks[0];
                            let buf = pool.memory().alloc_timeout(len as usize, Duration::from_secs(30)).unwrap();
                            let (n, buf) = pool.read_at(&file, base + off, buf).wait().into_one();
                            assert_eq!(n.unwrap(), len as usize);
                            assert!(
                                buf[..] == shadow[off as usize..(off + len) as usize],
                                "read-back at {}",
                                base + off
                            );
                        }
                        if phase + 1 < phases {
                            // Everyone pauses: workers idle past the timeout and retire.
                            barrier.wait();
                            std::thread::sleep(Duration::from_millis(120));
                            barrier.wait();
                        }
                    }
                    shadow
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });

    // Every byte, with std::fs (not through ringpool).
    let on_disk = std::fs::read(&path).unwrap();
    for (t, shadow) in shadows.iter().enumerate() {
        let region = &on_disk[t * REGION as usize..(t + 1) * REGION as usize];
        if region != &shadow[..] {
            let first = region.iter().zip(shadow.iter()).position(|(a, b)| a != b).unwrap();
            panic!("thread {t}: file differs from what was written at offset {}", t as u64 * REGION + first as u64);
        }
    }
    // And through the pool, 1 MiB at a time, all in flight.
    let handles: Vec<_> = (0..REGION * THREADS / MIB)
        .map(|i| {
            (
                i,
                pool.read_at(
                    &file,
                    i * MIB,
                    pool.memory().alloc_timeout(MIB as usize, Duration::from_secs(30)).unwrap(),
                ),
            )
        })
        .collect();
    for (i, h) in handles {
        let (n, buf) = h.wait().into_one();
        assert_eq!(n.unwrap(), MIB as usize);
        assert!(buf[..] == on_disk[(i * MIB) as usize..((i + 1) * MIB) as usize], "pool read of MiB {i} differs");
    }
    assert!(!growing.load(std::sync::atomic::Ordering::Relaxed), "the growth thread did not finish");
    if grow {
        assert_eq!(pool.memory().segment_count(), 14);
        assert_eq!(pool.table().map_or(0, |t| t.generation()), if pool.table().is_some() { 10 } else { 0 });
    }
    let stats = pool.stats();
    assert_eq!(stats.failed, 0);
    assert!(stats.workers_started > 1, "the pool never scaled up: {stats:?}");
    assert!(stats.workers_retired >= 1, "no worker retired in the pauses: {stats:?}");
    assert_eq!(stats.spinups.len() as u64, stats.workers_started);
    let memory = pool.memory().clone();
    drop(pool);
    assert_eq!(memory.stats().bytes_in_use, 0, "leases leaked");
    stats
}

#[test]
fn integrity_with_clone_while_workers_scale() {
    if !common::require_clone("integrity_with_clone_while_workers_scale") {
        return;
    }
    let st = integrity(TableOptions::new().sharing(Sharing::Clone), EnginePolicy::IoUring);
    assert_eq!((st.engine, st.path), (EngineKind::IoUring, Some(TablePath::Cloned)));
}

#[test]
fn integrity_while_the_pool_grows_ten_times() {
    if !common::require_clone("integrity_while_the_pool_grows_ten_times") {
        return;
    }
    let st = integrity_growing(TableOptions::new().sharing(Sharing::Clone), EnginePolicy::IoUring, true);
    assert_eq!(st.path, Some(TablePath::Cloned));
}

#[test]
fn integrity_while_the_pool_grows_with_whole_reclones_forced() {
    if !common::require_clone("integrity_while_the_pool_grows_with_whole_reclones_forced") {
        return;
    }
    let table = TableOptions::new().sharing(Sharing::Clone).refresh(ringpool::types::Refresh::Whole);
    integrity_growing(table, EnginePolicy::IoUring, true);
}

#[test]
fn integrity_while_the_pool_grows_with_register_each() {
    if !common::require_io_uring("integrity_while_the_pool_grows_with_register_each") {
        return;
    }
    integrity_growing(TableOptions::new().sharing(Sharing::RegisterEach), EnginePolicy::IoUring, true);
}

#[test]
fn integrity_while_the_blocking_pool_grows() {
    integrity_growing(TableOptions::new(), EnginePolicy::Blocking, true);
}

#[test]
fn integrity_with_register_each() {
    if !common::require_io_uring("integrity_with_register_each") {
        return;
    }
    let st = integrity(TableOptions::new().sharing(Sharing::RegisterEach), EnginePolicy::IoUring);
    assert_eq!((st.engine, st.path), (EngineKind::IoUring, Some(TablePath::Registered)));
}

#[test]
fn integrity_unregistered() {
    if !common::require_io_uring("integrity_unregistered") {
        return;
    }
    let st = integrity(TableOptions::new().sharing(Sharing::Unregistered), EnginePolicy::IoUring);
    assert_eq!((st.engine, st.path), (EngineKind::IoUring, Some(TablePath::Unregistered)));
}

#[test]
fn integrity_blocking_backend() {
    let st = integrity(TableOptions::new(), EnginePolicy::Blocking);
    assert_eq!((st.engine, st.path), (EngineKind::Blocking, None));
}

/// Child side of `seccomp_eperm_picks_the_blocking_backend`.
#[test]
#[ignore = "runs in a child process started by seccomp_eperm_picks_the_blocking_backend"]
fn seccomp_child() {
    assert_eq!(std::env::var("RINGPOOL_SECCOMP_CHILD").as_deref(), Ok("1"), "run only as a child");
    use seccompiler::{BpfProgram, SeccompAction, SeccompFilter};
    let filter = SeccompFilter::new(
        [(libc::SYS_io_uring_setup, vec![])].into_iter().collect(),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        std::env::consts::ARCH.try_into().unwrap(),
    )
    .unwrap();
    let prog: BpfProgram = filter.try_into().unwrap();
    seccompiler::apply_filter_all_threads(&prog).unwrap();
    let f = ringpool::probe::Features::detect();
    assert!(!f.io_uring.is_available(), "{f:?}");
    let st = integrity(TableOptions::new(), EnginePolicy::Auto);
    assert_eq!(st.engine, EngineKind::Blocking);
    assert!(st.fallbacks.iter().any(|n| n.contains("EPERM")), "{:?}", st.fallbacks);
    println!("fallbacks: {:?}", st.fallbacks);
}

#[test]
fn seccomp_eperm_picks_the_blocking_backend() {
    let (ok, out) = common::run_child("seccomp_child", &[("RINGPOOL_SECCOMP_CHILD", "1")]);
    assert!(ok, "child failed:\n{out}");
    assert!(out.contains("blocking engine"), "{out}");
}

#[test]
fn bad_requests_give_typed_errors_and_the_pool_keeps_serving() {
    if !common::require_io_uring("bad_requests_give_typed_errors_and_the_pool_keeps_serving") {
        return;
    }
    let dir = common::disk_dir();
    let path = dir.path().join("errors");
    let file = common::direct_file(dir.path(), "errors");
    file.set_len(MIB).unwrap();
    let pool = IoPool::builder()
        .size(8 * MIB)
        .memory(MemoryOptions::new().page(PagePolicy::Base))
        .workers(1, 2)
        .build()
        .unwrap();
    let mem = pool.memory().clone();
    let ok = |pool: &IoPool| {
        let (n, _) = pool.write_at(&file, 0, mem.try_alloc(4096).unwrap()).wait().into_one();
        assert_eq!(n.unwrap(), 4096, "the pool still serves");
    };
    let oa = file.offset_align() as u64;
    assert!(oa > 1, "O_DIRECT file has an alignment");

    let (r, _) = pool.read_at(&file, oa / 2, mem.try_alloc(4096).unwrap()).wait().into_one();
    assert!(matches!(r, Err(Error::Misaligned { what: ringpool::types::AlignmentOf::Offset, .. })), "{r:?}");
    assert!(r.unwrap_err().to_string().contains("file offset"));
    ok(&pool);

    let mut b = mem.try_alloc(4096).unwrap();
    b.set_len(oa as usize / 2).unwrap();
    let (r, _) = pool.write_at(&file, 0, b).wait().into_one();
    assert!(matches!(r, Err(Error::Misaligned { what: ringpool::types::AlignmentOf::Length, .. })), "{r:?}");
    ok(&pool);

    let ma = file.mem_align() as usize;
    if ma > 1 {
        let mut b = mem.try_alloc(8192).unwrap();
        b.set_window(ma / 2, 4096).unwrap();
        let (r, _) = pool.read_at(&file, 0, b).wait().into_one();
        match r {
            Err(Error::Misaligned { what: ringpool::types::AlignmentOf::Memory, align, .. }) => {
                assert_eq!(align as usize, ma)
            }
            other => panic!("expected memory misalignment, got {other:?}"),
        }
        ok(&pool);
    }

    let mut b = mem.try_alloc(4096).unwrap();
    b.set_len(0).unwrap();
    let (r, _) = pool.write_at(&file, 0, b).wait().into_one();
    assert!(matches!(r, Err(Error::ZeroLength { .. })), "{r:?}");
    ok(&pool);

    let (r, _) = pool.read_at(&file, 4 * MIB, mem.try_alloc(4096).unwrap()).wait().into_one();
    match r {
        Err(Error::PastEndOfFile { offset, size, .. }) => assert_eq!((offset, size), (4 * MIB, MIB)),
        other => panic!("expected PastEndOfFile, got {other:?}"),
    }
    // A read straddling the end is a short count, not an error.
    let (r, _) = pool.read_at(&file, MIB - 4096, mem.try_alloc(8192).unwrap()).wait().into_one();
    assert_eq!(r.unwrap(), 4096);
    ok(&pool);

    let closed = DirectFile::open(&path).unwrap();
    closed.close();
    let (r, _) = pool.read_at(&closed, 0, mem.try_alloc(4096).unwrap()).wait().into_one();
    assert!(matches!(r, Err(Error::FileClosed { .. })), "{r:?}");
    ok(&pool);

    let ro = DirectFile::options().read(true).open(&path).unwrap();
    let (r, _) = pool.write_at(&ro, 0, mem.try_alloc(4096).unwrap()).wait().into_one();
    assert!(matches!(r, Err(Error::NotPermitted { access: "write", .. })), "{r:?}");
    ok(&pool);

    let shm = tempfile::tempdir_in("/dev/shm").unwrap();
    let r =
        DirectFile::options().read(true).write(true).create(true).direct(DirectIo::Required).open(shm.path().join("x"));
    assert!(matches!(r, Err(Error::DirectIoUnsupported { .. })), "{r:?}");
    let buffered = DirectFile::options()
        .read(true)
        .write(true)
        .create(true)
        .direct(DirectIo::Optional)
        .open(shm.path().join("x"))
        .unwrap();
    assert!(!buffered.is_direct());
    let mut b = mem.try_alloc(100).unwrap();
    b.set_len(100).unwrap();
    let (r, _) = pool.write_at(&buffered, 3, b).wait().into_one();
    assert_eq!(r.unwrap(), 100, "buffered files take any offset and length");

    let other = IoMemory::map(MIB, PagePolicy::Base).unwrap();
    let (r, _) = pool.write_at(&file, 0, other.try_alloc(4096).unwrap()).wait().into_one();
    assert!(matches!(r, Err(Error::ForeignBuffer { .. })), "{r:?}");
    ok(&pool);
    // Refused ops never reach a worker; only the past-the-end read ran (the
    // kernel's zero count is turned into the error at completion).
    assert_eq!(pool.stats().failed, 1);
}

#[test]
fn builder_rejects_bad_settings() {
    let e = IoPool::builder().workers(3, 2).build().unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { what: "min workers", .. }), "{e:?}");
    assert!(e.to_string().contains('3') && e.to_string().contains('2'));
    let e = IoPool::builder().workers(0, 0).build().unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { what: "max workers", .. }), "{e:?}");
    for entries in [0, 1, 32769, 40000] {
        let e = IoPool::builder().ring(RingOptions::new().entries(entries)).build().unwrap_err();
        assert!(matches!(e, Error::InvalidArgument { what: "worker ring entries", .. }), "{e:?}");
    }
    let e = IoPool::builder().size(0).build().unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { what: "pool size", .. }), "{e:?}");
}

#[test]
fn exhaustion_and_waiting_allocations() {
    let mem = IoMemory::map_with(MIB, &MemoryOptions::new().page(PagePolicy::Base)).unwrap();
    let held: Vec<_> = (0..4).map(|_| mem.try_alloc(256 << 10).unwrap()).collect();
    let e = mem.try_alloc(4096).unwrap_err();
    assert!(matches!(e, Error::PoolExhausted { .. }), "{e:?}");
    let e = mem.alloc_timeout(4096, Duration::from_millis(20)).unwrap_err();
    assert!(matches!(e, Error::Timeout { .. }), "{e:?}");

    // A blocked alloc gets a lease once one is freed.
    let waiter = {
        let mem = mem.clone();
        std::thread::spawn(move || mem.alloc_timeout(200 << 10, Duration::from_secs(10)))
    };
    std::thread::sleep(Duration::from_millis(50));
    assert!(!waiter.is_finished());
    let mut held = held;
    drop(held.pop());
    let got = waiter.join().unwrap().unwrap();
    assert_eq!(got.capacity(), 200 << 10);

    // And so does a future.
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let mem2 = mem.clone();
    rt.block_on(async move {
        let fut = tokio::spawn(async move { mem2.alloc_async(256 << 10).await.map(|b| b.capacity()) });
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(!fut.is_finished());
        drop(held.pop());
        assert_eq!(fut.await.unwrap().unwrap(), 256 << 10);
        drop(held);
        drop(got);
    });
    assert_eq!(mem.stats().bytes_in_use, 0);
    assert_eq!(mem.stats().leases, 0);
    assert!(mem.stats().peak_bytes >= MIB);
}

#[test]
fn no_lease_straddles_a_segment_under_random_sizes() {
    let mem = IoMemory::map_with(8 * MIB, &MemoryOptions::new().page(PagePolicy::Base).segment_size(MIB)).unwrap();
    let mut rng = fastrand::Rng::with_seed(7);
    let mut live = Vec::new();
    for _ in 0..5000 {
        if rng.u32(0..3) == 0 && !live.is_empty() {
            let i = rng.usize(0..live.len());
            live.swap_remove(i);
            continue;
        }
        let len = rng.u64(1..MIB + 1) as usize;
        if let Ok(b) = mem.try_alloc(len) {
            let seg = mem.segments()[b.buf_index() as usize];
            assert!(
                b.pool_offset() >= seg.offset && b.pool_offset() + b.capacity() as u64 <= seg.offset + seg.len,
                "{b:?} straddles {seg:?}"
            );
            assert!(b.capacity() >= len && b.capacity() % 4096 == 0);
            assert_eq!(b.as_ptr() as usize - mem.addr(), b.pool_offset() as usize);
            live.push(b);
        }
    }
    drop(live);
    assert_eq!(mem.stats().bytes_in_use, 0);
    assert_eq!(mem.stats().largest_free, MIB);
}

#[test]
fn handles_dropped_mid_flight_return_their_buffers() {
    if !common::require_io_uring("handles_dropped_mid_flight_return_their_buffers") {
        return;
    }
    let dir = common::disk_dir();
    let file = common::direct_file(dir.path(), "dropped");
    file.set_len(16 * MIB).unwrap();
    let pool = IoPool::builder()
        .size(32 * MIB)
        .memory(MemoryOptions::new().page(PagePolicy::Base))
        .workers(2, 2)
        .build()
        .unwrap();
    let mem = pool.memory().clone();
    for i in 0..2000u64 {
        let buf = mem.alloc_timeout(16 << 10, Duration::from_secs(30)).unwrap();
        let h = if i % 2 == 0 {
            pool.read_at(&file, (i % 1024) * 16384, buf)
        } else {
            pool.write_at(&file, (i % 1024) * 16384, buf)
        };
        drop(h); // the worker keeps the buffer until its CQE is reaped
    }
    // Some are still in flight now; shutdown drains them.
    pool.shutdown();
    let st = pool.stats();
    assert_eq!(st.completed, 2000);
    assert_eq!(mem.stats().bytes_in_use, 0);
    assert_eq!(mem.stats().leases, 0);
    // After shutdown, new ops are refused with their buffer back.
    let (r, b) = pool.read_at(&file, 0, mem.try_alloc(4096).unwrap()).wait().into_one();
    assert!(matches!(r, Err(Error::ShutDown)), "{r:?}");
    drop(b);
    assert_eq!(mem.stats().bytes_in_use, 0);
}

#[test]
fn dropping_the_table_owner_while_workers_run_leaves_io_intact() {
    if !common::require_clone("dropping_the_table_owner_while_workers_run_leaves_io_intact") {
        return;
    }
    let dir = common::disk_dir();
    let mem = IoMemory::map_with(32 * MIB, &MemoryOptions::new().page(PagePolicy::Base).segment_size(8 * MIB)).unwrap();
    mem.prefault(|_| {}).unwrap();
    let table = Arc::new(BufferTable::register(&mem).unwrap());
    let ready = Arc::new(Barrier::new(5));
    let dropped = Arc::new(Barrier::new(5));
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let (table, ready, dropped, mem) = (Some(table.clone()), ready.clone(), dropped.clone(), mem.clone());
            let file = common::direct_file(dir.path(), &format!("t{t}"));
            s.spawn(move || {
                let mut ring = table.as_ref().unwrap().ring().unwrap();
                drop(table); // this thread no longer owns the table
                             // Queue 32 writes of 64 KiB, then let the owner drop the table.
                for i in 0..32u64 {
                    let mut b = mem.try_alloc(64 << 10).unwrap();
                    common::fill(&mut b, t * 1000 + i);
                    ring.push(Op::write(&file, i * 65536, b), i).unwrap();
                }
                ring.submit().unwrap();
                ready.wait();
                dropped.wait();
                ring.wait(32).unwrap();
                let mut n = 0;
                for (_, c) in ring.completions() {
                    assert_eq!(c.result.unwrap(), 65536);
                    n += 1;
                }
                assert_eq!(n, 32);
                // Read everything back through the same ring (its table outlived the owner).
                for i in 0..32u64 {
                    let (r, b) = ring.read_at(&file, i * 65536, mem.try_alloc(64 << 10).unwrap()).into_one();
                    assert_eq!(r.unwrap(), 65536);
                    assert!(b[..] == common::pattern(65536, t * 1000 + i)[..]);
                }
            });
        }
        ready.wait();
        let owner = Arc::into_inner(table.clone()).is_none();
        assert!(owner, "threads still hold the table");
        drop(table);
        dropped.wait();
    });
    assert_eq!(mem.stats().bytes_in_use, 0);
}

#[test]
fn ten_thousand_concurrent_reads_under_tokio() {
    if !common::require_io_uring("ten_thousand_concurrent_reads_under_tokio") {
        return;
    }
    const BLOCKS: u64 = 2048;
    let dir = common::disk_dir();
    let path = dir.path().join("tokio");
    // Block i holds pattern(4096, i).
    let mut content = Vec::with_capacity((BLOCKS * 4096) as usize);
    for i in 0..BLOCKS {
        content.extend(common::pattern(4096, i));
    }
    std::fs::write(&path, &content).unwrap();
    let file = DirectFile::options().read(true).direct(DirectIo::Required).open(&path).unwrap();
    let pool = Arc::new(
        IoPool::builder()
            .size(16 * MIB)
            .memory(MemoryOptions::new().page(PagePolicy::Base))
            .ring(RingOptions::new().entries(64 + 1))
            .workers(1, 2)
            .build()
            .unwrap(),
    );
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().unwrap();
    let checked = rt.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for k in 0..10_000u64 {
            let (pool, file) = (pool.clone(), file.clone());
            set.spawn(async move {
                let block = (k * 7919) % BLOCKS;
                let buf = pool.memory().alloc_async(4096).await.unwrap();
                let (n, buf) = pool.read_at(&file, block * 4096, buf).await.into_one();
                assert_eq!(n.unwrap(), 4096);
                assert!(buf[..] == common::pattern(4096, block)[..], "block {block}");
            });
        }
        let mut done = 0;
        while let Some(r) = set.join_next().await {
            r.unwrap();
            done += 1;
        }
        done
    });
    assert_eq!(checked, 10_000);
    assert_eq!(pool.stats().completed, 10_000);
    assert_eq!(pool.memory().stats().bytes_in_use, 0);
}

#[test]
fn sync_goes_through_every_pool_engine() {
    let dir = common::disk_dir();
    let file = common::direct_file(dir.path(), "sync");
    for engine in [EnginePolicy::Blocking, EnginePolicy::Auto] {
        let pool = IoPool::builder()
            .size(MIB)
            .memory(MemoryOptions::new().page(PagePolicy::Base))
            .ring(RingOptions::new().engine(engine))
            .build()
            .unwrap();
        let mut w = pool.memory().try_alloc(4096).unwrap();
        common::fill(&mut w, 42);
        let want = w.to_vec();
        let (n, _) = pool.write_at(&file, 0, w).wait().into_one();
        assert_eq!(n.unwrap(), 4096, "{engine:?}");
        let before = pool.stats().completed;
        for datasync in [false, true] {
            let done = pool.sync(&file, datasync).wait();
            assert_eq!(done.result.unwrap(), 0, "{engine:?}: a sync moves no bytes");
            assert!(done.bufs.is_empty(), "{engine:?}: a sync holds no buffer");
        }
        assert_eq!(pool.stats().completed, before + 2, "{engine:?}: both syncs ran on the pool");
        assert_eq!(common::std_read(file.path(), 0, 4096), want, "{engine:?}: the write is in the file");
        // A sync of a closed file is refused with its typed error.
        let closed = common::direct_file(dir.path(), "sync-closed");
        closed.close();
        let e = pool.sync(&closed, false).wait().result.unwrap_err();
        assert!(matches!(e, Error::FileClosed { op: "fsync", .. }), "{engine:?}: {e}");
    }
}

#[test]
fn retire_worker_stops_exactly_one_and_reports_none_left() {
    let pool =
        IoPool::builder().size(MIB).memory(MemoryOptions::new().page(PagePolicy::Base)).workers(2, 3).build().unwrap();
    assert_eq!(pool.stats().workers, 2);
    assert!(pool.add_worker().unwrap().is_some());
    assert!(pool.add_worker().unwrap().is_none(), "at the maximum");
    assert!(pool.retire_worker());
    assert_eq!(pool.stats().workers, 2);
    assert!(pool.retire_worker());
    assert!(pool.retire_worker());
    assert_eq!(pool.stats().workers, 0);
    assert!(!pool.retire_worker(), "no worker left");
    // With no worker, the caller that waits runs the operation on its own
    // ring; a handle nobody waits for starts a worker.
    let dir = common::disk_dir();
    let file = common::direct_file(dir.path(), "r");
    let (n, _) = pool.write_at(&file, 0, pool.memory().try_alloc(4096).unwrap()).wait().into_one();
    assert_eq!(n.unwrap(), 4096);
    assert_eq!((pool.stats().workers, pool.stats().local_ops), (0, 1));
    drop(pool.write_at(&file, 4096, pool.memory().try_alloc(4096).unwrap()));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while pool.stats().completed < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let st = pool.stats();
    assert!(st.workers_started >= 4 && st.completed == 2, "{st:?}");
}

#[test]
fn a_panicking_user_waker_does_not_take_the_pool_down() {
    use std::future::Future;
    use std::task::{Context, Poll, Wake, Waker};
    struct PanicWaker;
    impl Wake for PanicWaker {
        fn wake(self: Arc<Self>) {
            panic!("a user waker panics on the worker thread");
        }
    }
    if !common::require_io_uring("a_panicking_user_waker_does_not_take_the_pool_down") {
        return;
    }
    let dir = common::disk_dir();
    let file = common::direct_file(dir.path(), "panic");
    let pool = IoPool::builder()
        .size(4 * MIB)
        .memory(MemoryOptions::new().page(PagePolicy::Base))
        .workers(1, 1)
        .build()
        .unwrap();
    let waker = Waker::from(Arc::new(PanicWaker));
    let mut cx = Context::from_waker(&waker);
    // Poll until one operation is seen in flight, so that its completion
    // runs the panicking waker on the worker.
    let mut caught = false;
    for _ in 0..100 {
        let mut h = pool.write_at(&file, 0, pool.memory().try_alloc(1 << 20).unwrap());
        match std::pin::Pin::new(&mut h).poll(&mut cx) {
            Poll::Ready(done) => {
                done.result.unwrap();
            }
            Poll::Pending => {
                let (r, buf) = h.wait().into_one();
                assert_eq!(r.unwrap(), 1 << 20, "the result is delivered before the waker runs");
                drop(buf);
                caught = true;
                break;
            }
        }
    }
    assert!(caught, "never saw an operation in flight");
    // The pool keeps serving: the panic was caught where the waker ran.
    for i in 0..20u64 {
        let (r, _) = pool.write_at(&file, i * 4096, pool.memory().try_alloc(4096).unwrap()).wait().into_one();
        assert_eq!(r.unwrap(), 4096);
    }
    // The worker counts the caught panic after it delivered the result.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while pool.stats().waker_panics == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let st = pool.stats();
    assert_eq!((st.waker_panics, st.worker_panics), (1, 0), "{st:?}");
    assert_eq!(st.failed, 0, "no operation was lost to the panic: {st:?}");
    let mem = pool.memory().clone();
    drop(pool);
    assert_eq!(mem.stats().leases, 0);
}
