//! tokio without a hand-off (feature `tokio`): an operation awaited on a
//! runtime thread runs on that thread's own ring, its completion driven by
//! the runtime's reactor; no pool worker is needed, on the multi-thread and
//! the current-thread runtimes, with tasks that migrate, futures dropped
//! mid-flight and handles waited for off the runtime.
#![cfg(feature = "tokio")]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use ringpool::types::PagePolicy;
use ringpool::{DirectFile, IoPool, MemoryOptions, TableOptions};

const MIB: u64 = 1 << 20;
const K4: usize = 4096;
const BLOCKS: u64 = 1024;

fn pool(size: u64) -> IoPool {
    IoPool::builder()
        .size(size)
        .memory(MemoryOptions::new().page(PagePolicy::Base).segment_size(4 * MIB))
        .workers(0, 2)
        .build()
        .unwrap()
}

/// A file of `BLOCKS` 4 KiB blocks, each its own pattern, and its bytes as
/// std::fs reads them.
fn data_file(dir: &std::path::Path) -> (DirectFile, Vec<u8>) {
    let path = dir.join("data");
    let mut content = Vec::new();
    for b in 0..BLOCKS {
        content.extend(common::pattern(K4, b));
    }
    std::fs::write(&path, &content).unwrap();
    let file = common::direct_file(dir, "data");
    (file, std::fs::read(&path).unwrap())
}

fn multi_thread(workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(workers).enable_all().build().unwrap()
}

/// Waits (bounded) until every lease is back.
fn leases_back(pool: &IoPool) -> u64 {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let leases = pool.memory().stats().leases;
        if leases == 0 || Instant::now() > until {
            return leases;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn ten_thousand_concurrent_reads_from_eight_tasks_need_no_worker() {
    if !common::require_clone("ten_thousand_concurrent_reads_from_eight_tasks_need_no_worker") {
        return;
    }
    let dir = common::disk_dir();
    let (file, expect) = data_file(dir.path());
    let pool = Arc::new(pool(64 * MIB));
    let rt = multi_thread(4);
    const TASKS: u64 = 8;
    const PER_TASK: u64 = 1250;
    let wrong: u64 = rt.block_on(async {
        let tasks: Vec<_> = (0..TASKS)
            .map(|t| {
                let (pool, file, expect) = (pool.clone(), file.clone(), expect.clone());
                tokio::spawn(async move {
                    // All of this task's reads in flight at once, then
                    // awaited in order (yielding between them: the task
                    // may move to another thread).
                    let handles: Vec<_> = (0..PER_TASK)
                        .map(|i| {
                            let block = (t * PER_TASK + i) * 7 % BLOCKS;
                            let buf = pool.memory().try_alloc(K4).expect("the pool holds every read");
                            (block, pool.read_at(&file, block * K4 as u64, buf))
                        })
                        .collect();
                    let mut wrong = 0;
                    for (block, h) in handles {
                        let (n, buf) = h.await.into_one();
                        let at = (block as usize) * K4;
                        if n.ok() != Some(K4) || buf[..] != expect[at..at + K4] {
                            wrong += 1;
                        }
                        tokio::task::yield_now().await;
                    }
                    wrong
                })
            })
            .collect();
        let mut wrong = 0;
        for t in tasks {
            wrong += t.await.unwrap();
        }
        wrong
    });
    assert_eq!(wrong, 0, "reads that differ from std::fs");
    let st = pool.stats();
    assert_eq!(st.workers_started, 0, "no pool worker thread was started: {st:?}");
    assert_eq!(st.workers, 0);
    assert!(st.local_ops >= TASKS * PER_TASK, "the reads ran on the runtime threads' rings: {st:?}");
    assert!(st.local_rings_made >= 1 && st.local_rings_made <= 4, "one ring per runtime thread: {st:?}");
    drop(rt);
    assert_eq!(leases_back(&pool), 0, "every lease came back");
}

#[test]
fn the_current_thread_runtime_drives_its_ring_itself() {
    if !common::require_clone("the_current_thread_runtime_drives_its_ring_itself") {
        return;
    }
    let dir = common::disk_dir();
    let (file, expect) = data_file(dir.path());
    let pool = pool(16 * MIB);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        for round in 0..4u64 {
            let handles: Vec<_> =
                (0..256u64).map(|b| pool.read_at(&file, b * K4 as u64, pool.memory().try_alloc(K4).unwrap())).collect();
            for (b, h) in handles.into_iter().enumerate() {
                let (n, buf) = h.await.into_one();
                assert_eq!(n.unwrap(), K4, "round {round}");
                assert_eq!(buf[..], expect[b * K4..(b + 1) * K4]);
            }
        }
        // A write, read back.
        let data = common::pattern(K4, 99);
        let mut buf = pool.memory().try_alloc(K4).unwrap();
        buf.copy_from_slice(&data);
        let (n, _) = pool.write_at(&file, 5 * K4 as u64, buf).await.into_one();
        assert_eq!(n.unwrap(), K4);
        let (n, back) = pool.read_at(&file, 5 * K4 as u64, pool.memory().try_alloc(K4).unwrap()).await.into_one();
        assert_eq!(n.unwrap(), K4);
        assert_eq!(back[..], data[..]);
    });
    let st = pool.stats();
    assert_eq!(st.workers_started, 0, "{st:?}");
    assert_eq!(st.local_rings_made, 1, "the runtime's one thread made one ring: {st:?}");
}

#[test]
fn dropped_futures_and_aborted_tasks_give_their_leases_back() {
    if !common::require_clone("dropped_futures_and_aborted_tasks_give_their_leases_back") {
        return;
    }
    let dir = common::disk_dir();
    let (file, _) = data_file(dir.path());
    let pool = Arc::new(pool(16 * MIB));
    let rt = multi_thread(2);
    rt.block_on(async {
        // Handles dropped without a poll, after one poll, and tasks
        // aborted while they await.
        for _ in 0..50 {
            let hs: Vec<_> =
                (0..32u64).map(|b| pool.read_at(&file, b * K4 as u64, pool.memory().try_alloc(K4).unwrap())).collect();
            drop(hs);
            let mut h = pool.read_at(&file, 0, pool.memory().try_alloc(K4).unwrap());
            let _ = tokio::time::timeout(Duration::from_nanos(1), &mut h).await;
            drop(h);
            let (p, f) = (pool.clone(), file.clone());
            let task = tokio::spawn(async move {
                let hs: Vec<_> =
                    (0..16u64).map(|b| p.read_at(&f, b * K4 as u64, p.memory().try_alloc(K4).unwrap())).collect();
                for h in hs {
                    let _ = h.await;
                    tokio::task::yield_now().await;
                }
            });
            tokio::task::yield_now().await;
            task.abort();
            let _ = task.await;
        }
    });
    assert_eq!(leases_back(&pool), 0, "a lease of a dropped future was lost");
    drop(rt);
    assert_eq!(pool.memory().stats().leases, 0);
    assert_eq!(pool.stats().workers_started, 0);
}

#[test]
fn a_handle_started_on_the_runtime_can_be_waited_for_anywhere() {
    if !common::require_clone("a_handle_started_on_the_runtime_can_be_waited_for_anywhere") {
        return;
    }
    let dir = common::disk_dir();
    let (file, expect) = data_file(dir.path());
    let pool = Arc::new(pool(16 * MIB));
    let rt = multi_thread(2);
    // Started on a runtime thread, waited for (blocking) on a plain thread
    // while that runtime thread sleeps.
    let handles = rt.block_on({
        let (pool, file) = (pool.clone(), file.clone());
        async move {
            tokio::spawn(async move {
                (0..64u64)
                    .map(|b| pool.read_at(&file, b * K4 as u64, pool.memory().try_alloc(K4).unwrap()))
                    .collect::<Vec<_>>()
            })
            .await
            .unwrap()
        }
    });
    let waiter = std::thread::spawn(move || {
        handles.into_iter().enumerate().all(|(b, h)| {
            let (n, buf) = h.wait().into_one();
            n.ok() == Some(K4) && buf[..] == expect[b * K4..(b + 1) * K4]
        })
    });
    assert!(waiter.join().unwrap(), "a read waited for off the runtime came back wrong");
    assert_eq!(pool.stats().workers_started, 0);
    drop(rt);
    assert_eq!(leases_back(&pool), 0);
}

#[test]
fn a_runtime_without_its_io_driver_falls_back_to_the_workers() {
    if !common::require_clone("a_runtime_without_its_io_driver_falls_back_to_the_workers") {
        return;
    }
    let dir = common::disk_dir();
    let (file, expect) = data_file(dir.path());
    let pool = pool(16 * MIB);
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    rt.block_on(async {
        for b in 0..32u64 {
            let (n, buf) = pool.read_at(&file, b * K4 as u64, pool.memory().try_alloc(K4).unwrap()).await.into_one();
            assert_eq!(n.unwrap(), K4);
            assert_eq!(buf[..], expect[b as usize * K4..(b as usize + 1) * K4]);
        }
    });
    assert!(pool.stats().workers_started >= 1, "the workers ran them");
}

#[test]
fn a_shrink_reaches_the_runtime_threads_rings() {
    if !common::require_clone("a_shrink_reaches_the_runtime_threads_rings") {
        return;
    }
    let dir = common::disk_dir();
    let (file, expect) = data_file(dir.path());
    let pool = Arc::new(
        IoPool::builder()
            .size(16 * MIB)
            .memory(MemoryOptions::new().page(PagePolicy::Base).segment_size(4 * MIB))
            .table(TableOptions::new().capacity(64 * MIB))
            .workers(0, 2)
            .build()
            .unwrap(),
    );
    pool.grow(16 * MIB).unwrap();
    let rt = multi_thread(2);
    let read = |pool: Arc<IoPool>, file: DirectFile| async move {
        let (n, buf) = pool.read_at(&file, 3 * K4 as u64, pool.memory().try_alloc(K4).unwrap()).await.into_one();
        assert_eq!(n.unwrap(), K4);
        buf[..].to_vec()
    };
    assert_eq!(rt.block_on(read(pool.clone(), file.clone()))[..], expect[3 * K4..4 * K4]);
    let pinned_before = common::vmpin_kb();
    pool.shrink(16 * MIB, Duration::from_secs(10)).unwrap();
    assert!(
        common::vmpin_kb() + 16 * 1024 <= pinned_before,
        "the released 16 MiB is unpinned when shrink returns ({} -> {} KiB)",
        pinned_before,
        common::vmpin_kb()
    );
    assert_eq!(rt.block_on(read(pool.clone(), file.clone()))[..], expect[3 * K4..4 * K4]);
}
