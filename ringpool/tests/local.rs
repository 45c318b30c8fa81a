//! Every calling thread its own ring: a blocking call runs on the
//! thread's ring (made by clone at its first call), which goes away with
//! the thread or the pool, whichever is first; nothing leaks.

mod common;

use std::sync::Arc;
use std::time::Duration;

use ringpool::types::PagePolicy;
use ringpool::{DirectFile, Error, IoPool, MemoryOptions, Op};

const MIB: u64 = 1 << 20;
const K4: usize = 4096;

/// Tests that count this process's fds run one at a time.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn pool(workers: usize) -> IoPool {
    IoPool::builder()
        .size(16 * MIB)
        .memory(MemoryOptions::new().page(PagePolicy::Base).segment_size(4 * MIB))
        .workers(0, workers)
        .build()
        .unwrap()
}

fn data_file(dir: &std::path::Path, blocks: u64) -> DirectFile {
    let path = dir.join("data");
    let mut content = Vec::new();
    for b in 0..blocks {
        content.extend(common::pattern(K4, b));
    }
    std::fs::write(&path, &content).unwrap();
    common::direct_file(dir, "data")
}

#[test]
fn ten_thousand_short_lived_threads_leave_nothing_behind() {
    let _serial = serial();
    if !common::require_clone("ten_thousand_short_lived_threads_leave_nothing_behind") {
        return;
    }
    let dir = common::disk_dir();
    let file = data_file(dir.path(), 256);
    let pool = Arc::new(pool(1));
    // The pool's own state first (its table), then the baseline.
    let warm = pool.run(Op::read(&file, 0, pool.memory().try_alloc(K4).unwrap()));
    assert_eq!(warm.result.unwrap(), K4);
    let (fds0, pin0) = (common::open_fds(), common::vmpin_kb());
    const THREADS: u64 = 10_000;
    let mut failures = 0;
    for chunk in 0..THREADS / 100 {
        let handles: Vec<_> = (0..100u64)
            .map(|i| {
                let (pool, file) = (pool.clone(), file.clone());
                let k = chunk * 100 + i;
                std::thread::spawn(move || {
                    let block = k % 256;
                    let buf = pool.memory().alloc_timeout(K4, Duration::from_secs(10)).unwrap();
                    let (n, buf) = pool.run(Op::read(&file, block * K4 as u64, buf)).into_one();
                    n.is_ok_and(|n| n == K4) && buf[..] == common::pattern(K4, block)[..]
                })
            })
            .collect();
        for h in handles {
            if !h.join().unwrap() {
                failures += 1;
            }
        }
    }
    assert_eq!(failures, 0, "reads that came back wrong");
    let st = pool.stats();
    assert_eq!(st.local_rings, 1, "only this thread's ring is left: {st:?}");
    assert_eq!(st.local_rings_made, THREADS + 1, "one ring per thread");
    assert_eq!(st.workers_started, 0, "no worker was needed: {st:?}");
    assert_eq!(common::open_fds(), fds0, "every thread's ring fd was closed");
    assert_eq!(common::vmpin_kb(), pin0, "no ring pinned the pool again");
}

#[test]
fn a_threads_ring_goes_with_the_pool_when_the_pool_goes_first() {
    let _serial = serial();
    if !common::require_clone("a_threads_ring_goes_with_the_pool_when_the_pool_goes_first") {
        return;
    }
    let dir = common::disk_dir();
    let file = data_file(dir.path(), 16);
    let (fds0, pin0) = (common::open_fds(), common::vmpin_kb());
    let pool = Arc::new(pool(1));
    let (used_tx, used_rx) = std::sync::mpsc::channel();
    let (gone_tx, gone_rx) = std::sync::mpsc::channel::<()>();
    let p = pool.clone();
    let f = file.clone();
    // A thread that made its ring and stays alive past the pool.
    let t = std::thread::spawn(move || {
        let (n, _) = p.run(Op::read(&f, 0, p.memory().try_alloc(K4).unwrap())).into_one();
        n.unwrap();
        drop(p);
        used_tx.send(()).unwrap();
        gone_rx.recv().unwrap();
    });
    used_rx.recv().unwrap();
    assert_eq!(pool.stats().local_rings, 1);
    assert!(common::open_fds() > fds0);
    drop(pool);
    // The thread lives on; its ring and the pool's memory are gone.
    assert_eq!(common::open_fds(), fds0, "the thread's ring closed with the pool");
    assert_eq!(common::vmpin_kb(), pin0, "nothing pinned is left");
    gone_tx.send(()).unwrap();
    t.join().unwrap();
}

#[test]
fn a_thread_drives_its_own_ring_with_many_in_flight() {
    let _serial = serial();
    if !common::require_clone("a_thread_drives_its_own_ring_with_many_in_flight") {
        return;
    }
    let dir = common::disk_dir();
    let file = data_file(dir.path(), 64);
    let pool = pool(1);
    // Push 32 reads in one call, reap them in the next: the same ring.
    pool.with_ring(|ring| {
        for b in 0..32u64 {
            ring.push(Op::read(&file, b * K4 as u64, pool.memory().try_alloc(K4).unwrap()), b).unwrap();
        }
        ring.submit().unwrap();
    })
    .unwrap();
    let got = pool
        .with_ring(|ring| {
            let mut got = 0;
            while got < 32 {
                ring.wait(1).unwrap();
                for (tag, d) in ring.completions() {
                    let (n, b) = d.into_one();
                    assert_eq!(n.unwrap(), K4);
                    assert!(b[..] == common::pattern(K4, tag)[..], "block {tag}");
                    got += 1;
                }
            }
            got
        })
        .unwrap();
    assert_eq!(got, 32);
    // A call from inside a call would wait for itself: refused.
    let nested = pool.with_ring(|_| pool.with_ring(|_| ()));
    assert!(matches!(nested, Ok(Err(Error::InvalidArgument { .. }))), "{nested:?}");
    let inner = pool.with_ring(|_| pool.run(Op::read(&file, 0, pool.memory().try_alloc(K4).unwrap()))).unwrap();
    // run() inside with_ring cannot use the ring: it runs inline instead.
    assert_eq!(inner.result.unwrap(), K4);
    assert_eq!(pool.stats().workers_started, 0);
}

#[test]
fn blocking_calls_run_every_kind_on_the_callers_ring() {
    let _serial = serial();
    if !common::require_clone("blocking_calls_run_every_kind_on_the_callers_ring") {
        return;
    }
    let dir = common::disk_dir();
    let (file, path) = (common::direct_file(dir.path(), "kinds"), dir.path().join("kinds"));
    let pool = IoPool::builder()
        .size(16 * MIB)
        .memory(MemoryOptions::new().page(PagePolicy::Base).segment_size(MIB))
        .workers(0, 1)
        .build()
        .unwrap();
    let mem = pool.memory().clone();
    common::every_kind("pool.run", &mem, &file, &path, |op| pool.run(op));
    let st = pool.stats();
    assert_eq!((st.workers_started, st.local_rings, st.failed), (0, 1, 0), "{st:?}");
    assert_eq!(st.local_ops, st.completed, "every operation ran on this thread's ring");
}
