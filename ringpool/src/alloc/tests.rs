//! The buddy allocator's unit and property tests.

use super::*;
use proptest::prelude::*;

const K4: u32 = 12;

#[test]
fn rounds_to_alignment_and_splits_lowest_first() {
    let mut b = Buddy::new(1 << 20, 20, K4);
    let a = b.alloc(1, None).unwrap();
    assert_eq!((a.offset(), a.len()), (0, 4096));
    let c = b.alloc(5000, None).unwrap();
    assert_eq!((c.offset(), c.len()), (8192, 8192));
    assert_eq!(b.stats().bytes_in_use, 4096 + 8192);
    b.free(a);
    b.free(c);
    assert_eq!(b.free_blocks(), vec![(0, 1 << 20)]);
    assert_eq!(b.stats().bytes_in_use, 0);
}

#[test]
fn exhaustion_then_reuse() {
    let mut b = Buddy::new(64 << 10, 16, K4);
    let all: Vec<_> = (0..16).map(|_| b.alloc(4096, None).unwrap()).collect();
    assert!(b.alloc(4096, None).is_none());
    for g in all {
        b.free(g);
    }
    assert!(b.alloc(64 << 10, None).is_some());
}

#[test]
fn never_merges_across_segments() {
    // Two segments of 64 KiB: no 128 KiB block exists.
    let mut b = Buddy::new(128 << 10, 16, K4);
    assert!(b.alloc(128 << 10, None).is_none());
    let g = b.alloc(64 << 10, Some(1)).unwrap();
    assert_eq!(g.offset(), 64 << 10);
}

#[test]
fn short_last_segment_uses_its_whole_tail() {
    // 1 segment of 64 KiB plus a 28 KiB tail: 16 + 4 + 2 + 1 blocks of 4 KiB.
    let mut b = Buddy::new((64 + 28) << 10, 16, K4);
    assert_eq!(b.stats().capacity, (64 + 28) << 10);
    let mut n = 0;
    while b.alloc(4096, None).is_some() {
        n += 1;
    }
    assert_eq!(n, 23);
}

#[test]
fn a_range_is_free_only_without_leases() {
    let mut b = Buddy::new(256 << 10, 16, K4);
    assert!(b.is_free(0, 256 << 10));
    let g = b.alloc(4096, Some(1)).unwrap();
    assert!(!b.is_free(64 << 10, 64 << 10));
    assert!(!b.is_free(g.offset(), 4096));
    assert!(b.is_free(0, 64 << 10) && b.is_free(128 << 10, 128 << 10));
    assert!(b.is_free(g.offset() + 4096, 4096));
    b.free(g);
    assert!(b.is_free(0, 256 << 10));
    assert!(b.is_free(1 << 30, 4096), "past the end: not leasable, free");
}

#[test]
fn an_unaligned_range_gets_aligned_blocks_and_segments_can_be_taken() {
    // Segments of 64 KiB; a range from 12 KiB to 140 KiB.
    let mut b = Buddy::empty(16, K4);
    b.add_range(12 << 10, 128 << 10);
    assert_eq!(b.stats().capacity, 128 << 10);
    for (off, size) in b.free_blocks() {
        assert_eq!(off % size, 0, "block at {off} of {size} is not aligned to its size");
        assert_eq!(off >> 16, (off + size - 1) >> 16, "block crosses a segment");
    }
    // Segment 1 (64..128 KiB) is whole: it can be taken and given back.
    assert!(b.take_segment(1));
    assert!(!b.take_segment(1));
    // Segment 0 holds only part of the range: taken whole all the same.
    assert!(b.take_segment(0), "a partial segment is taken too");
    assert!(!b.leases_from(0) && !b.leases_from(1) && b.leases_from(2) && !b.leases_from(3));
    b.return_segment(0);
    b.return_segment(1);
    assert!(b.leases_from(1));
    assert_eq!(b.stats().capacity, 128 << 10);
    let g = b.alloc(4096, Some(1)).unwrap();
    assert!(!b.take_segment(1), "a leased segment cannot be taken");
    b.free(g);
    assert!(b.take_segment(1));
}

#[test]
fn many_blocks_come_from_one_segment() {
    // Four segments of 64 KiB; fill most of segment 0 first.
    let mut b = Buddy::new(256 << 10, 16, K4);
    let big = b.alloc(32 << 10, Some(0)).unwrap();
    let _more = b.alloc(16 << 10, Some(0)).unwrap();
    // 5 blocks of 4 KiB do not fit in segment 0's 16 KiB: segment 1.
    let v = b.alloc_many(5, 4096).unwrap();
    assert!(v.iter().all(|g| g.offset() >> 16 == 1), "{v:?}");
    // 4 do fit in segment 0.
    let w = b.alloc_many(4, 4096).unwrap();
    assert!(w.iter().all(|g| g.offset() >> 16 == 0), "{w:?}");
    // More than one segment holds: none, and nothing leaked.
    let before = b.stats().bytes_in_use;
    assert!(b.alloc_many(17, 4096).is_none());
    assert_eq!(b.stats().bytes_in_use, before);
    b.free(big);
}

#[derive(Debug, Clone)]
enum Step {
    Alloc(usize, Option<u32>),
    Free(usize),
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec(
        prop_oneof![
            3 => (1usize..(300 << 10), prop::option::of(0u32..4)).prop_map(|(l, s)| Step::Alloc(l, s)),
            2 => any::<prop::sample::Index>().prop_map(|i| Step::Free(i.index(1 << 16))),
        ],
        1..200,
    )
}

proptest! {
    /// No lease straddles a segment, leases never overlap, the stats add
    /// up, and after every lease is returned the pool is whole again.
    #[test]
    fn leases_are_disjoint_and_stay_in_one_segment(len_kib in 1u64..1200, seg_shift in 14u32..19, ops in steps()) {
        let len = len_kib << 10;
        let mut b = Buddy::new(len, seg_shift, K4);
        let initial = b.free_blocks();
        let mut live: Vec<Grant> = Vec::new();
        for op in ops {
            match op {
                Step::Alloc(l, seg) => {
                    if let Some(g) = b.alloc(l, seg) {
                        prop_assert!(g.len() as u64 >= l as u64 && g.len() % 4096 == 0);
                        let start = g.offset();
                        let end = start + g.len() as u64;
                        prop_assert!(end <= len);
                        prop_assert_eq!(start >> seg_shift, (end - 1) >> seg_shift, "lease straddles a segment");
                        if let Some(s) = seg { prop_assert_eq!(start >> seg_shift, s as u64); }
                        for o in &live {
                            let (os, oe) = (o.offset(), o.offset() + (1u64 << (K4 + o.order())));
                            let be = start + (1u64 << (K4 + g.order()));
                            prop_assert!(be <= os || start >= oe, "overlap");
                        }
                        live.push(g);
                    }
                }
                Step::Free(i) => {
                    if !live.is_empty() {
                        let g = live.swap_remove(i % live.len());
                        b.free(g);
                    }
                }
            }
            let used: u64 = live.iter().map(|g| g.len() as u64).sum();
            prop_assert_eq!(b.stats().bytes_in_use, used);
            prop_assert_eq!(b.stats().leases, live.len() as u64);
        }
        for g in live.drain(..) { b.free(g); }
        prop_assert_eq!(b.free_blocks(), initial);
        prop_assert_eq!(b.stats().bytes_in_use, 0);
    }
}
