//! Live shrink: the trailing segments released under verified I/O, leases
//! in them waited for (or the shrink called off at its deadline), slots
//! reused by a later growth, on every backend; typed errors for bad sizes.

mod common;

use std::time::{Duration, Instant};

use ringpool::types::EnginePolicy;
use ringpool::types::{PagePolicy, Refresh, Sharing};
use ringpool::{DirectFile, Error, IoMemory, IoPool, MemoryOptions};
use ringpool::{RingOptions, TableOptions};

const MIB: u64 = 1 << 20;
const SEG: u64 = 4 * MIB;
const K64: usize = 64 << 10;

fn pool(sharing: Sharing, refresh: Refresh, backend: EnginePolicy) -> IoPool {
    IoPool::builder()
        .size(4 * SEG)
        .memory(MemoryOptions::new().page(PagePolicy::Base).segment_size(SEG))
        .table(TableOptions::new().capacity(16 * SEG).sharing(sharing).refresh(refresh))
        .ring(RingOptions::new().engine(backend))
        .workers(2, 2)
        .build()
        .unwrap()
}

/// Writes a block from a lease in `segment` and reads it back into another
/// lease there: true when the bytes match.
fn roundtrip_in(pool: &IoPool, file: &DirectFile, segment: u16, offset: u64, seed: u64) -> bool {
    let mut w = pool.memory().try_alloc_in(segment, K64).unwrap();
    common::fill(&mut w, seed);
    let (r, w) = pool.write_at(file, offset, w).wait().into_one();
    if r.ok() != Some(K64) {
        return false;
    }
    drop(w);
    let (r, b) = pool.read_at(file, offset, pool.memory().try_alloc_in(segment, K64).unwrap()).wait().into_one();
    r.ok() == Some(K64) && b[..] == common::pattern(K64, seed)[..]
}

fn vmpin() -> u64 {
    common::vmpin_kb() * 1024
}

/// The tests of this binary measure the process's VmPin: one at a time.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

#[test]
fn a_shrink_waits_for_leases_in_its_segments_while_io_runs() {
    let _serial = serial();
    if !common::require_clone("a_shrink_waits_for_leases_in_its_segments_while_io_runs") {
        return;
    }
    let dir = common::disk_dir();
    let file = common::direct_file(dir.path(), "shrink");
    file.set_len(16 * MIB).unwrap();
    let p = pool(Sharing::Clone, Refresh::Auto, EnginePolicy::Auto);
    let pin0 = vmpin();
    let g = p.grow(2 * SEG).unwrap();
    assert_eq!(g.segments, 4..6);
    assert!(vmpin() >= pin0 + 2 * SEG, "the growth is pinned");
    // A lease in a segment the shrink releases, held by the test.
    let held = p.memory().try_alloc_in(5, K64).unwrap();
    assert!(roundtrip_in(&p, &file, 4, 0, 1));
    let shrink = std::thread::scope(|s| {
        let h = s.spawn(|| p.shrink(2 * SEG, Duration::from_secs(30)));
        // The shrink waits; segments 4 and 5 lease no more; I/O goes on.
        std::thread::sleep(Duration::from_millis(100));
        assert!(!h.is_finished(), "the shrink waits for the held lease");
        assert!(p.memory().try_alloc_in(4, 4096).is_err(), "a closing segment leases no more");
        for i in 0..8u64 {
            assert!(roundtrip_in(&p, &file, (i % 4) as u16, i * K64 as u64, 10 + i), "I/O during the shrink");
        }
        let t = Instant::now();
        drop(held);
        let r = h.join().unwrap();
        (r, t.elapsed())
    });
    let (report, after_release) = shrink;
    let report = report.unwrap();
    assert_eq!((report.segments.clone(), report.bytes), (4..6, 2 * SEG));
    assert!(after_release < Duration::from_secs(5), "the shrink finished soon after the lease came back");
    assert_eq!(p.memory().len(), 4 * SEG);
    assert_eq!(p.memory().segment_count(), 4);
    // Every worker ring dropped the entries: the pinned memory fell.
    assert!(vmpin() <= pin0 + MIB / 4, "VmPin {} after the shrink, {} before the growth", vmpin(), pin0);
    let st = p.stats();
    assert_eq!(st.segments.len(), 4);
    assert_eq!(st.pool_bytes, 4 * SEG);
    assert!(st.per_worker.iter().all(|w| w.table_generation == Some(report.generation)), "{:?}", st.per_worker);
    for i in 0..4u16 {
        assert!(roundtrip_in(&p, &file, i, 8 * MIB + u64::from(i) * K64 as u64, 20 + u64::from(i)));
    }
}

#[test]
fn a_shrink_past_its_deadline_leaves_the_pool_as_it_was() {
    let _serial = serial();
    if !common::require_clone("a_shrink_past_its_deadline_leaves_the_pool_as_it_was") {
        return;
    }
    let dir = common::disk_dir();
    let file = common::direct_file(dir.path(), "deadline");
    file.set_len(16 * MIB).unwrap();
    let p = pool(Sharing::Clone, Refresh::Auto, EnginePolicy::Auto);
    p.grow(SEG).unwrap();
    let held = p.memory().try_alloc_in(4, K64).unwrap();
    let before = p.memory().stats();
    match p.shrink(SEG, Duration::from_millis(50)) {
        Err(Error::ShrinkTimeout { segments, leases, .. }) => assert_eq!((segments, leases), (4..5, 1)),
        other => panic!("expected ShrinkTimeout, got {other:?}"),
    }
    assert_eq!(p.memory().segment_count(), 5, "nothing released");
    assert_eq!(p.memory().stats().capacity, before.capacity, "segment 4 leases again");
    assert!(roundtrip_in(&p, &file, 4, 0, 3), "I/O with leases in segment 4 still works");
    drop(held);
    p.shrink(SEG, Duration::from_secs(10)).unwrap();
    assert_eq!(p.memory().segment_count(), 4);
}

#[test]
fn a_shrink_then_a_growth_reuses_the_slots_and_no_ring_keeps_stale_entries() {
    let _serial = serial();
    if !common::require_clone("a_shrink_then_a_growth_reuses_the_slots_and_no_ring_keeps_stale_entries") {
        return;
    }
    let dir = common::disk_dir();
    let file = common::direct_file(dir.path(), "reuse");
    file.set_len(16 * MIB).unwrap();
    for refresh in [Refresh::Auto, Refresh::Whole] {
        let p = pool(Sharing::Clone, refresh, EnginePolicy::Auto);
        let table = p.table().unwrap();
        p.grow(2 * SEG).unwrap();
        // A ring of the caller's own, made before the shrink and the growth.
        let mut ring = table.ring().unwrap();
        let (r, _) = ring.read_at(&file, 0, p.memory().try_alloc_in(5, K64).unwrap()).into_one();
        assert_eq!(r.unwrap(), K64);
        p.shrink(2 * SEG, Duration::from_secs(10)).unwrap();
        let g = p.grow(2 * SEG).unwrap();
        assert_eq!(g.segments, 4..6, "the freed slots are used again");
        for i in 0..6u16 {
            assert!(
                roundtrip_in(&p, &file, i, u64::from(i) * K64 as u64, 40 + u64::from(i)),
                "segment {i} ({refresh:?})"
            );
        }
        // The old ring catches up before using a slot that changed: the
        // bytes land in the new memory, not in the released one.
        let mut w = p.memory().try_alloc_in(5, K64).unwrap();
        common::fill(&mut w, 99);
        let (r, _) = ring.write_at(&file, MIB, w).into_one();
        assert_eq!(r.unwrap(), K64);
        let (r, b) = ring.read_at(&file, MIB, p.memory().try_alloc_in(4, K64).unwrap()).into_one();
        assert_eq!(r.unwrap(), K64);
        assert!(b[..] == common::pattern(K64, 99)[..], "{refresh:?}");
        assert_eq!(common::std_read(&dir.path().join("reuse"), MIB, K64), common::pattern(K64, 99));
    }
}

#[test]
fn every_backend_shrinks() {
    let _serial = serial();
    if !common::require_io_uring("every_backend_shrinks") {
        return;
    }
    let dir = common::disk_dir();
    let file = common::direct_file(dir.path(), "backends");
    file.set_len(16 * MIB).unwrap();
    let mut kinds = vec![(Sharing::RegisterEach, EnginePolicy::Auto), (Sharing::Auto, EnginePolicy::Blocking)];
    if ringpool::probe::Features::get().clone_buffers {
        kinds.push((Sharing::Clone, EnginePolicy::Auto));
    }
    for (sharing, backend) in kinds {
        let p = pool(sharing, Refresh::Auto, backend);
        // This thread's own ring first (with register-each, it pins the
        // pool once more).
        assert!(roundtrip_in(&p, &file, 0, 0, 1), "{sharing:?} {backend:?}");
        let pin0 = vmpin();
        p.grow(2 * SEG).unwrap();
        assert!(roundtrip_in(&p, &file, 5, 0, 1), "{sharing:?} {backend:?}");
        let r = p.shrink(SEG, Duration::from_secs(10)).unwrap();
        assert_eq!(r.segments, 5..6, "{sharing:?} {backend:?}");
        assert!(roundtrip_in(&p, &file, 4, K64 as u64, 2), "{sharing:?} {backend:?}");
        p.shrink(SEG, Duration::from_secs(10)).unwrap();
        assert!(vmpin() <= pin0 + MIB / 4, "{sharing:?} {backend:?}: VmPin {} vs {pin0}", vmpin());
        for i in 0..4u16 {
            assert!(roundtrip_in(&p, &file, i, u64::from(i) * K64 as u64, 3), "{sharing:?} {backend:?}");
        }
    }
}

#[test]
fn bad_shrinks_are_typed_errors() {
    let _serial = serial();
    let mem = IoMemory::map_with(4 * SEG, &MemoryOptions::new().page(PagePolicy::Base).segment_size(SEG)).unwrap();
    let invalid = |r: ringpool::Result<ringpool::stats::ShrinkReport>| matches!(r, Err(Error::InvalidArgument { .. }));
    assert!(invalid(mem.shrink(0, Duration::from_secs(1))), "zero bytes");
    assert!(invalid(mem.shrink(4 * SEG, Duration::from_secs(1))), "the whole pool");
    assert!(invalid(mem.shrink(u64::MAX, Duration::from_secs(1))), "more than the pool");
    // Below the leased bytes: three segments' worth leased, two to release.
    let leases: Vec<_> = (0..3).map(|s| mem.try_alloc_in(s, SEG as usize).unwrap()).collect();
    assert!(invalid(mem.shrink(2 * SEG, Duration::from_secs(1))), "below the leased bytes");
    drop(leases);
    // A reserved segment is not the shrink's.
    let r = mem.reserve_segments(3..4).unwrap();
    assert!(matches!(mem.shrink(SEG, Duration::from_secs(1)), Err(Error::SegmentsInUse { segment: 3, .. })));
    drop(r);
    // Rounded up to whole segments; the memory alone shrinks too.
    let report = mem.shrink(SEG / 2, Duration::from_secs(1)).unwrap();
    assert_eq!((report.segments, report.bytes), (3..4, SEG));
    assert_eq!(mem.len(), 3 * SEG);
    let _held = mem.try_alloc_in(2, 4096).unwrap();
    assert!(mem.shrink(SEG, Duration::from_millis(10)).is_err_and(|e| matches!(e, Error::ShrinkTimeout { .. })));
}
