//! Sequences of alloc, alloc-in-segment, free, window and grow on a small
//! pool, checking the allocator's invariants after every step:
//! leases never overlap, never straddle a segment, sit at their segment's
//! buf_index, and the stats add up; after everything is freed the pool is
//! whole again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringpool::types::PagePolicy;
use ringpool::{IoBuf, IoMemory, MemoryOptions};

const SEG: u64 = 64 << 10;

fn check(mem: &IoMemory, live: &[IoBuf]) {
    let segs = mem.segments();
    let mut spans: Vec<(u64, u64)> = Vec::new();
    for b in live {
        let seg = segs[b.buf_index() as usize];
        let (start, end) = (b.pool_offset(), b.pool_offset() + b.capacity() as u64);
        assert!(start >= seg.offset && end <= seg.offset + seg.len, "{b:?} straddles {seg:?}");
        assert_eq!(b.capacity() % 4096, 0);
        spans.push((start, end));
    }
    spans.sort_unstable();
    for w in spans.windows(2) {
        assert!(w[0].1 <= w[1].0, "leases overlap: {:?}", w);
    }
    let st = mem.stats();
    assert_eq!(st.leases, live.len() as u64);
    assert_eq!(st.bytes_in_use, live.iter().map(|b| b.capacity() as u64).sum::<u64>());
}

fuzz_target!(|data: &[u8]| {
    let mem = IoMemory::map_with(4 * SEG, &MemoryOptions::new().page(PagePolicy::Base).segment_size(SEG)).unwrap();
    let mut live: Vec<IoBuf> = Vec::new();
    for step in data.chunks(3) {
        let (op, a, b) = (step[0] % 5, step.get(1).copied().unwrap_or(0) as u64, step.get(2).copied().unwrap_or(0) as u64);
        match op {
            0 => {
                if let Ok(buf) = mem.try_alloc(((a << 8 | b) % SEG + 1) as usize) {
                    live.push(buf);
                }
            }
            1 => {
                let seg = (a as u16) % mem.segment_count();
                if let Ok(buf) = mem.try_alloc_in(seg, ((b << 8) % SEG + 1) as usize) {
                    assert_eq!(buf.buf_index(), seg);
                    live.push(buf);
                }
            }
            2 => {
                if !live.is_empty() {
                    live.swap_remove(a as usize % live.len());
                }
            }
            3 => {
                if mem.segment_count() < 16 {
                    let range = mem.grow((a % 2 + 1) * SEG).unwrap();
                    assert_eq!(range.end, mem.segment_count());
                }
            }
            _ => {
                if let Some(buf) = live.last_mut() {
                    let cap = buf.capacity();
                    let start = a as usize % cap;
                    let _ = buf.set_window(start, b as usize % (cap - start + 1));
                    assert!(buf.window_start() + buf.len() <= cap);
                }
            }
        }
        check(&mem, &live);
    }
    live.clear();
    let st = mem.stats();
    assert_eq!((st.leases, st.bytes_in_use), (0, 0));
    assert_eq!(st.largest_free, SEG, "the pool is whole again");
});
