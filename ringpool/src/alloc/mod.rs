//! The lease allocator: a buddy allocator over the pool's segments.
//!
//! Blocks are powers of two of the lease alignment (4 KiB unless told
//! otherwise), at most one segment. Every segment is the root of its own
//! buddy tree (a shorter last segment is split into power-of-two roots), so a
//! block never straddles two segments and two buddies never merge across a
//! segment boundary. Free blocks of each order sit in an ordered set and the
//! lowest address is taken first, which keeps the high addresses free for
//! large leases.
//!
//! The state lives behind one mutex; blocked [`alloc`](crate::IoMemory::alloc)
//! callers wait on a condition variable, futures register wakers under the
//! same lock, so a free can never be missed.

use crate::stats::AllocStats;
use crate::sync::{Condvar, Mutex, MutexGuard};
pub(crate) use crate::sys::buf::Grant;
use std::collections::BTreeSet;
use std::task::Waker;
use std::time::{Duration, Instant};

/// What is leased from one segment now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct SegmentUse {
    /// Bytes leased (each lease rounded up to the alignment).
    pub(crate) bytes: u64,
    /// Leases outstanding.
    pub(crate) leases: u64,
    /// Bytes of the buddy blocks backing them.
    pub(crate) blocks: u64,
}

/// A segment closed for a shrink: its free blocks (and the blocks freed
/// since) parked, to drop with the segment or to free again if the shrink
/// is called off.
#[derive(Debug, Default)]
struct Closed {
    parked: Vec<(u64, u32)>,
    /// The segment's bytes the buddy managed when it was closed.
    total: u64,
}

/// The pure buddy state: no locking, no memory, just offsets.
#[derive(Debug)]
pub(crate) struct Buddy {
    /// log2 of the smallest block (the alignment).
    min_shift: u32,
    /// log2 of the segment size.
    seg_shift: u32,
    /// Free block offsets, per order (block = 1 << (min_shift + order)).
    free: Vec<BTreeSet<u64>>,
    /// End of the highest range added (pool offset).
    high_water: u64,
    /// Segments this buddy leases from (added and not taken): raw regions
    /// (`IoMemory::region`) lie outside them.
    leasable: BTreeSet<u32>,
    /// Per segment: what is leased from it.
    per_segment: Vec<SegmentUse>,
    /// Segments closed for a shrink.
    closed: std::collections::BTreeMap<u32, Closed>,
    stats: AllocStats,
}

impl Buddy {
    /// A buddy over `len` bytes in segments of `1 << seg_shift`, smallest
    /// block `1 << min_shift`. Bytes past the last whole block are unused.
    pub(crate) fn new(len: u64, seg_shift: u32, min_shift: u32) -> Buddy {
        assert!(min_shift <= seg_shift, "alignment larger than a segment");
        let max_order = seg_shift - min_shift;
        let mut b = Buddy {
            min_shift,
            seg_shift,
            free: vec![BTreeSet::new(); max_order as usize + 1],
            high_water: 0,
            leasable: BTreeSet::new(),
            per_segment: Vec::new(),
            closed: std::collections::BTreeMap::new(),
            stats: AllocStats::default(),
        };
        b.add_range(0, len);
        b
    }

    /// A buddy with no memory yet (add it with [`Buddy::add_range`]).
    pub(crate) fn empty(seg_shift: u32, min_shift: u32) -> Buddy {
        Buddy::new(0, seg_shift, min_shift)
    }

    /// Adds `[start, start + len)` (rounded in to the alignment) as free
    /// blocks: each the largest that starts on a multiple of its size and
    /// fits, so whole segments where the range covers them, and never one
    /// that crosses a segment boundary.
    pub(crate) fn add_range(&mut self, start: u64, len: u64) {
        let align = 1u64 << self.min_shift;
        let mut at = start.div_ceil(align) * align;
        let end = start.saturating_add(len) & !(align - 1);
        self.high_water = self.high_water.max(end.div_ceil(1 << self.seg_shift) << self.seg_shift);
        if at < end {
            // Segment numbers: at most 16384 segments (the pool's limit).
            self.leasable.extend(((at >> self.seg_shift) as u32)..=(((end - 1) >> self.seg_shift) as u32));
        }
        while at < end {
            let mut order = self.max_order();
            while order > 0
                && (at & ((1u64 << (self.min_shift + order)) - 1) != 0 || at + (1 << (self.min_shift + order)) > end)
            {
                order -= 1;
            }
            self.free[order as usize].insert(at);
            self.stats.capacity += 1 << (self.min_shift + order);
            at += 1 << (self.min_shift + order);
        }
    }

    /// Takes segment `seg` out of leasing, whole (a short last segment
    /// too): `false` when part of it is leased, or it is not leased from
    /// (taken already, closing for a shrink, or never added).
    pub(crate) fn take_segment(&mut self, seg: u32) -> bool {
        if self.segment_leases(seg) > 0 {
            return false;
        }
        self.close_segment(seg)
    }

    /// Whether segment `seg` is leased from (added and not taken).
    pub(crate) fn leases_from(&self, seg: u32) -> bool {
        self.leasable.contains(&seg)
    }

    /// Gives back a segment taken with [`Buddy::take_segment`].
    pub(crate) fn return_segment(&mut self, seg: u32) {
        self.reopen_segment(seg);
    }

    fn max_order(&self) -> u32 {
        self.seg_shift - self.min_shift
    }

    /// Bytes in the smallest block.
    pub(crate) fn alignment(&self) -> u64 {
        1 << self.min_shift
    }

    /// The order of the block that holds `len` bytes, if one can.
    fn order_for(&self, len: u64) -> Option<u32> {
        let blocks = len.max(1).div_ceil(1 << self.min_shift);
        let order = blocks.next_power_of_two().trailing_zeros();
        (order <= self.max_order()).then_some(order)
    }

    /// `len` rounded up to the alignment.
    pub(crate) fn round(&self, len: u64) -> u64 {
        len.max(1).div_ceil(self.alignment()) * self.alignment()
    }

    /// Takes a block for `len` bytes, anywhere, or in one segment.
    pub(crate) fn alloc(&mut self, len: usize, segment: Option<u32>) -> Option<Grant> {
        let rounded = self.round(len as u64);
        let want = self.order_for(rounded)?;
        let range = segment.map(|s| {
            let base = (s as u64) << self.seg_shift;
            base..base + (1 << self.seg_shift)
        });
        let (mut order, offset) = (want..=self.max_order()).find_map(|o| {
            let set = &self.free[o as usize];
            let first = match &range {
                Some(r) => set.range(r.clone()).next().copied(),
                None => set.first().copied(),
            };
            first.map(|off| (o, off))
        })?;
        self.free[order as usize].remove(&offset);
        // Split down, keeping the lower half and freeing the upper halves.
        while order > want {
            order -= 1;
            self.free[order as usize].insert(offset + (1 << (self.min_shift + order)));
        }
        let s = &mut self.stats;
        s.bytes_in_use += rounded;
        s.block_bytes += 1 << (self.min_shift + want);
        s.leases += 1;
        s.total_leases += 1;
        s.peak_bytes = s.peak_bytes.max(s.bytes_in_use);
        let seg = self.segment_of(offset);
        if self.per_segment.len() <= seg {
            self.per_segment.resize(seg + 1, SegmentUse::default());
        }
        let u = &mut self.per_segment[seg];
        u.bytes += rounded;
        u.blocks += 1 << (self.min_shift + want);
        u.leases += 1;
        Some(Grant::new(offset, want, rounded as usize))
    }

    /// Takes `count` blocks of `len` bytes, all inside one segment (the
    /// first segment that has room for all of them), or none.
    pub(crate) fn alloc_many(&mut self, count: usize, len: usize) -> Option<Vec<Grant>> {
        let segments = self.segment_span();
        for seg in segments {
            let mut got = Vec::with_capacity(count);
            for _ in 0..count {
                match self.alloc(len, Some(seg)) {
                    Some(g) => got.push(g),
                    None => break,
                }
            }
            if got.len() == count {
                return Some(got);
            }
            for g in got {
                self.free(g);
            }
        }
        None
    }

    /// The segments added so far: `0..n`.
    fn segment_span(&self) -> std::ops::Range<u32> {
        0..u32::try_from(self.high_water >> self.seg_shift).unwrap_or(u32::MAX)
    }

    /// The segment a pool offset lies in.
    fn segment_of(&self, offset: u64) -> usize {
        // At most 16384 segments.
        (offset >> self.seg_shift) as usize
    }

    /// Returns a block, merging it with its free buddies (or parking it, in
    /// a segment closed for a shrink).
    pub(crate) fn free(&mut self, grant: Grant) {
        let (offset, order, len) = (grant.offset(), grant.order(), grant.len());
        let s = &mut self.stats;
        s.bytes_in_use -= len as u64;
        s.block_bytes -= 1 << (self.min_shift + order);
        s.leases -= 1;
        let seg = self.segment_of(offset);
        if let Some(u) = self.per_segment.get_mut(seg) {
            u.bytes -= len as u64;
            u.blocks -= 1 << (self.min_shift + order);
            u.leases -= 1;
        }
        if let Some(c) = self.closed.get_mut(&(seg as u32)) {
            c.parked.push((offset, order));
            return;
        }
        self.insert_free(offset, order);
    }

    /// Puts a free block back, merged with its free buddies.
    fn insert_free(&mut self, mut offset: u64, mut order: u32) {
        while order < self.max_order() {
            // Segment bases are multiples of the segment size, so the buddy
            // is the XOR of the block size on the pool offset.
            let buddy = offset ^ (1 << (self.min_shift + order));
            if !self.free[order as usize].remove(&buddy) {
                break;
            }
            offset = offset.min(buddy);
            order += 1;
        }
        self.free[order as usize].insert(offset);
    }

    /// What is leased from each segment now.
    pub(crate) fn per_segment(&self) -> &[SegmentUse] {
        &self.per_segment
    }

    /// Leases outstanding in segment `seg`.
    pub(crate) fn segment_leases(&self, seg: u32) -> u64 {
        self.per_segment.get(seg as usize).map_or(0, |u| u.leases)
    }

    /// Closes segment `seg` for a shrink: no lease is granted there any
    /// more; its free blocks, and those freed from now on, are parked.
    /// `false` when the buddy does not lease from it (reserved, or never
    /// added).
    pub(crate) fn close_segment(&mut self, seg: u32) -> bool {
        if !self.leasable.remove(&seg) {
            return false;
        }
        let base = u64::from(seg) << self.seg_shift;
        let end = base + (1 << self.seg_shift);
        let mut parked = Vec::new();
        let mut free_bytes = 0;
        for (o, set) in self.free.iter_mut().enumerate() {
            let inside: Vec<u64> = set.range(base..end).copied().collect();
            for off in inside {
                set.remove(&off);
                parked.push((off, o as u32));
                free_bytes += 1u64 << (self.min_shift + o as u32);
            }
        }
        let used = self.per_segment.get(seg as usize).map_or(0, |u| u.blocks);
        let total = free_bytes + used;
        self.stats.capacity -= total;
        self.closed.insert(seg, Closed { parked, total });
        true
    }

    /// Calls a shrink off: segment `seg` leases again.
    pub(crate) fn reopen_segment(&mut self, seg: u32) {
        let Some(c) = self.closed.remove(&seg) else { return };
        self.stats.capacity += c.total;
        self.leasable.insert(seg);
        for (off, order) in c.parked {
            self.insert_free(off, order);
        }
    }

    /// Drops a closed, drained segment for good; the segments from `seg`
    /// on are gone (the pool's trailing segments are released).
    pub(crate) fn retire_segment(&mut self, seg: u32) {
        self.closed.remove(&seg);
        if let Some(u) = self.per_segment.get_mut(seg as usize) {
            *u = SegmentUse::default();
        }
        self.high_water = self.high_water.min(u64::from(seg) << self.seg_shift);
    }

    /// Whether `[start, start + len)` lies entirely in free blocks (no lease
    /// covers any of it). Bytes not yet added to the allocator count as free.
    pub(crate) fn is_free(&self, start: u64, len: u64) -> bool {
        let end = start.saturating_add(len);
        if start >= self.high_water {
            return true;
        }
        // Free blocks overlapping the range, by order; the range is free when
        // they cover it whole.
        let mut covered = 0u64;
        for (o, set) in self.free.iter().enumerate() {
            let size = 1u64 << (self.min_shift + o as u32);
            for &off in set.range(start.saturating_sub(size - 1)..end) {
                let (a, b) = (off.max(start), (off + size).min(end));
                covered += b.saturating_sub(a);
            }
        }
        covered >= end.min(self.high_water) - start
    }

    fn largest_free(&self) -> u64 {
        (0..=self.max_order())
            .rev()
            .find(|&o| !self.free[o as usize].is_empty())
            .map_or(0, |o| 1 << (self.min_shift + o))
    }

    pub(crate) fn stats(&self) -> AllocStats {
        AllocStats { largest_free: self.largest_free(), ..self.stats }
    }

    /// Every free block, as (offset, size), sorted: for invariant checks.
    #[cfg(test)]
    pub(crate) fn free_blocks(&self) -> Vec<(u64, u64)> {
        let mut v: Vec<(u64, u64)> = self
            .free
            .iter()
            .enumerate()
            .flat_map(|(o, set)| set.iter().map(move |&off| (off, 1u64 << (self.min_shift + o as u32))))
            .collect();
        v.sort_unstable();
        v
    }
}

struct State {
    buddy: Buddy,
    wakers: Vec<Waker>,
    /// Threads blocked in `alloc_wait` (a notify is a system call: only
    /// then).
    blocked: usize,
}

/// The thread-safe allocator: the buddy plus the waiting machinery.
pub(crate) struct Allocator {
    state: Mutex<State>,
    freed: Condvar,
}

impl std::fmt::Debug for Allocator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Allocator").field("stats", &self.stats()).finish()
    }
}

impl Allocator {
    pub(crate) fn new(buddy: Buddy) -> Allocator {
        Allocator { state: Mutex::new(State { buddy, wakers: Vec::new(), blocked: 0 }), freed: Condvar::new() }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the buddy half-updated
        // in a way that matters more than losing the pool, so poison is ignored.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn try_alloc(&self, len: usize, segment: Option<u32>) -> Option<Grant> {
        let mut st = self.lock();
        let g = st.buddy.alloc(len, segment);
        if g.is_none() {
            st.buddy.stats.failed += 1;
        }
        g
    }

    /// `count` blocks of `len` bytes in one segment, or none.
    pub(crate) fn try_alloc_many(&self, count: usize, len: usize) -> Option<Vec<Grant>> {
        let mut st = self.lock();
        let g = st.buddy.alloc_many(count, len);
        if g.is_none() {
            st.buddy.stats.failed += 1;
        }
        g
    }

    /// Waits up to `timeout` (forever with `None`) for a block.
    pub(crate) fn alloc_wait(&self, len: usize, timeout: Option<Duration>) -> Option<Grant> {
        // A timeout past the end of time is no timeout.
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let mut st = self.lock();
        loop {
            if let Some(g) = st.buddy.alloc(len, None) {
                return Some(g);
            }
            let wait = match deadline {
                None => None,
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return None;
                    }
                    Some(d - now)
                }
            };
            st.blocked += 1;
            st = match wait {
                None => self.freed.wait(st).unwrap_or_else(|p| p.into_inner()),
                Some(t) => self.freed.wait_timeout(st, t).unwrap_or_else(|p| p.into_inner()).0,
            };
            st.blocked -= 1;
        }
    }

    /// One poll of an async allocation: a block, or the waker is kept.
    pub(crate) fn poll_alloc(&self, len: usize, waker: &Waker) -> Option<Grant> {
        let mut st = self.lock();
        if let Some(g) = st.buddy.alloc(len, None) {
            return Some(g);
        }
        if !st.wakers.iter().any(|w| w.will_wake(waker)) {
            st.wakers.push(waker.clone());
        }
        None
    }

    pub(crate) fn release(&self, grant: Grant) {
        let (wakers, blocked) = {
            let mut st = self.lock();
            st.buddy.free(grant);
            (std::mem::take(&mut st.wakers), st.blocked > 0)
        };
        if blocked {
            self.freed.notify_all();
        }
        for w in wakers {
            w.wake();
        }
    }

    pub(crate) fn stats(&self) -> AllocStats {
        self.lock().buddy.stats()
    }

    /// Wakes every waiter after memory was added.
    pub(crate) fn notify_grown(&self) {
        let (wakers, blocked) = {
            let mut st = self.lock();
            (std::mem::take(&mut st.wakers), st.blocked > 0)
        };
        if blocked {
            self.freed.notify_all();
        }
        for w in wakers {
            w.wake();
        }
    }

    pub(crate) fn with_buddy<R>(&self, f: impl FnOnce(&mut Buddy) -> R) -> R {
        f(&mut self.lock().buddy)
    }

    /// Waits until no lease is outstanding in segments `segs`, or until
    /// `deadline`: whether they drained.
    pub(crate) fn wait_drained(&self, segs: std::ops::Range<u32>, deadline: std::time::Instant) -> bool {
        let mut st = self.lock();
        loop {
            if segs.clone().all(|s| st.buddy.segment_leases(s) == 0) {
                return true;
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                return false;
            }
            st.blocked += 1;
            let (g, _) = self.freed.wait_timeout(st, deadline - now).unwrap_or_else(|p| p.into_inner());
            st = g;
            st.blocked -= 1;
        }
    }
}

#[cfg(test)]
mod tests;

/// Model checks of the allocator's locking (`RUSTFLAGS="--cfg ringpool_loom"
/// cargo test -p ringpool --lib --release loom`).
#[cfg(all(test, ringpool_loom))]
mod loom_models;
