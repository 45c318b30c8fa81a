//! Region I/O across segment edges (issue 20, 2): pool bytes an application
//! manages, spanning one, two or three segments, as one vectored operation
//! (one fixed op per segment on a ring, reported as one result), through
//! every engine, checked against std::fs.

mod common;

use ringpool::types::{EnginePolicy, PagePolicy};
use ringpool::{BufferTable, Done, Error, IoBuf, IoMemory, IoPool, MemoryOptions, Op, RingOptions};

const MIB: u64 = 1 << 20;
const SEG: u64 = 4 * MIB;

/// Six segments of 4 MiB; 1..5 reserved for regions, 0 and 5 leased from.
fn pool() -> (IoMemory, ringpool::SegmentReservation) {
    let m = IoMemory::map_with(6 * SEG, &MemoryOptions::new().page(PagePolicy::Base).segment_size(SEG)).unwrap();
    let r = m.reserve_segments(1..5).unwrap();
    (m, r)
}

/// The ranges: inside one segment, across one edge, across two edges
/// (three segments), each with edges that are 4 KiB- but not
/// segment-aligned, and one of exactly two whole segments.
fn ranges() -> Vec<(&'static str, u64, u64)> {
    vec![
        ("one segment", SEG + 12 * 4096, 64 * 4096),
        ("two segments", 2 * SEG - 3 * 4096, 7 * 4096),
        ("three segments", 2 * SEG - 5 * 4096, SEG + 9 * 4096),
        ("two whole segments", 3 * SEG, 2 * SEG),
    ]
}

fn span(m: &IoMemory, off: u64, len: u64) -> Vec<IoBuf> {
    // SAFETY: the range lies in reserved segments that nothing else in this
    // test touches while the pieces live.
    unsafe { m.region_span(off, len) }.unwrap()
}

/// Writes `len` bytes from pool offset `off` to the file at `file_off`
/// and reads them back into the same range, through `run`.
fn round_trip(engine: &str, m: &IoMemory, run: &mut dyn FnMut(Op) -> Done) {
    let dir = common::disk_dir();
    let path = dir.path().join("region");
    let file = {
        let f = common::direct_file(dir.path(), "region");
        f.set_len(16 * MIB).unwrap();
        f
    };
    for (i, (what, off, len)) in ranges().into_iter().enumerate() {
        let file_off = 4096 * (i as u64 + 1) * 3;
        let want = common::pattern(len as usize, 40 + i as u64);
        let mut pieces = span(m, off, len);
        let segs_touched = pieces.len();
        let expect_segs = (off + len - 1) / SEG - off / SEG + 1;
        assert_eq!(segs_touched as u64, expect_segs, "{engine}, {what}: one piece per segment");
        let mut at = 0;
        for p in pieces.iter_mut() {
            let n = p.len();
            p.copy_from_slice(&want[at..at + n]);
            at += n;
        }
        assert_eq!(at as u64, len);
        let (r, back) = run(Op::writev(&file, file_off, pieces)).into_vec();
        assert_eq!(r.unwrap(), len as usize, "{engine}, {what}: one result for the whole range");
        assert_eq!(back.len(), segs_touched, "{engine}, {what}: every piece back");
        assert!(common::std_read(&path, file_off, len as usize) == want, "{engine}, {what}: the file has the range");
        drop(back);

        // Zero the range, then read the file back into it.
        for p in span(m, off, len).iter_mut() {
            p.fill(0);
        }
        let (r, back) = run(Op::readv(&file, file_off, span(m, off, len))).into_vec();
        assert_eq!(r.unwrap(), len as usize, "{engine}, {what}");
        assert!(common::concat(&back) == want, "{engine}, {what}: the pool has the file's bytes");
    }
}

#[test]
fn a_region_across_one_two_and_three_segments_matches_std_fs_on_every_engine() {
    if !common::require_io_uring("a_region_across_one_two_and_three_segments_matches_std_fs_on_every_engine") {
        return;
    }
    let (m, _reserved) = pool();
    let table = BufferTable::register(&m).unwrap();
    for (name, policy) in [("io_uring", EnginePolicy::IoUring), ("inline", EnginePolicy::Inline)] {
        let mut ring = table.ring_with(&RingOptions::new().engine(policy)).unwrap();
        round_trip(name, &m, &mut |op| ring.run(op));
        if policy == EnginePolicy::IoUring {
            let st = ring.stats();
            assert!(st.inline_ops == 0, "{st:?}");
            assert!(st.split_ops > 0, "the ring split the ranges per segment: {st:?}");
        }
    }
    drop(table);
    for (name, policy) in [("pool, caller's ring", EnginePolicy::Auto), ("pool, blocking", EnginePolicy::Blocking)] {
        let pool =
            IoPool::builder().existing_memory(m.clone()).ring(RingOptions::new().engine(policy)).build().unwrap();
        round_trip(name, &m, &mut |op| pool.run(op));
        round_trip(&format!("{name}, submitted"), &m, &mut |op| pool.submit(op).wait());
    }
}

#[test]
fn bad_region_spans_are_refused_with_the_reason() {
    let (m, _reserved) = pool();
    // SAFETY: every call here fails before any buffer exists.
    let err = |off: u64, len: u64| match unsafe { m.region_span(off, len) } {
        Err(Error::BadRegion { reason, .. }) => reason,
        other => panic!("{off}+{len}: {other:?}"),
    };
    assert!(err(0, 0).contains("empty"));
    assert!(err(u64::MAX - 10, 4096).contains("overflowing"));
    assert!(err(6 * SEG, 4096).contains("past the pool"));
    assert!(err(5 * SEG - 4096, 8192).contains("leased from"), "into segment 5, which this process leases from");
    assert!(err(SEG - 4096, 8192).contains("leased from"), "from segment 0");
    assert!(err(4 * SEG, 3 * SEG).contains("leased from") || err(4 * SEG, 3 * SEG).contains("no segment"));
    assert!(err(5 * SEG + 4096, SEG - 8192).contains("leased from"), "inside segment 5");
    assert!(err(5 * SEG + 4096, SEG).contains("no segment"), "running past the pool");
    // And inside the reserved segments, any split works.
    assert_eq!(span(&m, SEG, 4 * SEG).len(), 4);
    assert_eq!(span(&m, SEG + 1, 1).len(), 1, "regions have no alignment of their own");
}
