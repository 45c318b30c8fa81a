//! Shrinking the pool: its trailing segments released while I/O runs.
//!
//! Under the pool's growth lock: the segments stop leasing at once, the
//! shrink waits for their leases to come back (until a deadline, after
//! which it gives up and the pool is as before), lets the caller take them
//! out of every ring's table (the template's entries become holes, rings
//! follow), and unmaps the memory.

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::IoMemory;
use crate::error::{Error, Result};
use crate::link::TableLink;
use crate::stats::ShrinkReport;
use crate::types::Bytes;
use crate::types::PageKind;

impl IoMemory {
    /// Releases the pool's trailing segments that hold at least `bytes`
    /// (whole segments: see [`ShrinkReport::bytes`]), waiting up to
    /// `timeout` for leases in them to come back. For memory no table
    /// registers; with one, shrink through
    /// [`BufferTable::shrink`](crate::BufferTable::shrink) or
    /// [`IoPool::shrink`](crate::IoPool::shrink), which take the segments
    /// out of the rings' tables too.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for 0 bytes, for the whole pool (it keeps
    /// one segment at least), for more than what is not leased, while a
    /// table (or a ring made from one) over this memory lives, and for
    /// memory handed over by another process;
    /// [`Error::SegmentsInUse`] when a segment is reserved in a private
    /// pool ([`IoMemory::reserve_segments`]; a shared pool waits for
    /// segments other processes hold to come back);
    /// [`Error::ShrinkTimeout`] (nothing released).
    pub fn shrink(&self, bytes: u64, timeout: Duration) -> Result<ShrinkReport> {
        self.shrink_with(bytes, timeout, None, |_, _| Ok(0))
    }

    /// The shrink path: `unpublish` takes the drained segments out of every
    /// ring of the table `own` (by the deadline given) and returns the
    /// table generation. Refused while any other table, or a ring of one,
    /// may hold the segments.
    pub(crate) fn shrink_with(
        &self,
        bytes: u64,
        timeout: Duration,
        own: Option<&Arc<TableLink>>,
        unpublish: impl FnOnce(Range<u16>, Instant) -> Result<u64>,
    ) -> Result<ShrinkReport> {
        let start = Instant::now();
        // A timeout too long to add means no deadline worth the name.
        let deadline = start.checked_add(timeout).unwrap_or(start + Duration::from_secs(86_400 * 365));
        self.check_home()?;
        let sh = &self.inner;
        if sh.view.is_some() {
            return Err(Error::invalid(
                "shrink",
                Bytes(bytes),
                "this memory was handed over by the process that owns it",
            ));
        }
        if bytes == 0 {
            return Err(Error::invalid("shrink", 0, "it must release at least one segment"));
        }
        let _growing = self.growth_lock();
        let others = self.other_links(own);
        if others > 0 {
            return Err(Error::invalid(
                "shrink",
                Bytes(bytes),
                format!(
                    "{others} other table(s) over this memory, or rings made from them, may hold its segments: shrink \
                     through the one table over it (BufferTable::shrink or IoPool::shrink) once the others are gone"
                ),
            ));
        }
        let (range, released) = self.trailing_segments(bytes)?;
        let segs32 = u32::from(range.start)..u32::from(range.end);
        self.close_or_wait(range.clone(), deadline, start)?;
        let reopen = || {
            sh.lease.alloc.with_buddy(|b| segs32.clone().for_each(|s| b.reopen_segment(s)));
            sh.lease.alloc.notify_grown();
        };
        if !sh.lease.alloc.wait_drained(segs32.clone(), deadline) {
            let leases = sh.lease.alloc.with_buddy(|b| segs32.clone().map(|s| b.segment_leases(s)).sum());
            reopen();
            return Err(Error::ShrinkTimeout { segments: range, leases, held: 0, waited: start.elapsed() });
        }
        let drain_time = start.elapsed();
        let t = Instant::now();
        let generation = match unpublish(range.clone(), deadline) {
            Ok(g) => g,
            Err(e) => {
                reopen();
                return Err(e);
            }
        };
        let unpublish_time = t.elapsed();
        let t = Instant::now();
        self.release_segments(range.clone(), released);
        let unmap_time = t.elapsed();
        tracing::debug!(?range, bytes = released, generation, ?drain_time, ?unpublish_time, ?unmap_time, "pool shrank");
        Ok(ShrinkReport {
            segments: range,
            bytes: released,
            generation,
            drain_time,
            unpublish_time,
            unmap_time,
            total: start.elapsed(),
        })
    }

    /// The pool's last segments that hold at least `bytes`, and their
    /// bytes; refused for the whole pool or more than is not leased.
    fn trailing_segments(&self, bytes: u64) -> Result<(Range<u16>, u64)> {
        let sh = &self.inner;
        let (range, released, len) = {
            let segs = sh.map.segs();
            let len: u64 = segs.iter().map(|s| s.seg.len).sum();
            let mut first = segs.len();
            let mut released = 0u64;
            while first > 0 && released < bytes {
                first -= 1;
                released += segs[first].seg.len;
            }
            if released < bytes || first == 0 {
                return Err(Error::invalid(
                    "shrink",
                    Bytes(bytes),
                    format!("the pool has {} in {} segments and keeps one at least", Bytes(len), segs.len()),
                ));
            }
            // At most 16384 segments.
            (first as u16..segs.len() as u16, released, len)
        };
        let leased = sh.lease.alloc.stats().bytes_in_use;
        if leased > len - released {
            return Err(Error::invalid(
                "shrink",
                Bytes(bytes),
                format!("{} are leased; the pool would keep {}", Bytes(leased), Bytes(len - released)),
            ));
        }
        Ok((range, released))
    }

    /// [`IoMemory::close_segments`]; in a shared pool, segments other
    /// processes hold as their lease segments are waited for (they come
    /// back as those processes finish) until `deadline`.
    fn close_or_wait(&self, range: Range<u16>, deadline: Instant, start: Instant) -> Result<()> {
        loop {
            match self.close_segments(range.clone()) {
                Err(Error::SegmentsInUse { .. }) if self.inner.shared => {}
                r => return r,
            }
            if self.reclaim_handed_segments() > 0 {
                continue;
            }
            if Instant::now() >= deadline {
                let held = self
                    .inner
                    .lease
                    .alloc
                    .with_buddy(|b| range.clone().filter(|&s| !b.leases_from(u32::from(s))).count());
                // At most 16384 segments.
                let held = held as u16;
                return Err(Error::ShrinkTimeout { segments: range, leases: 0, held, waited: start.elapsed() });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Stops leasing from segments `range`, all of them or none.
    fn close_segments(&self, range: Range<u16>) -> Result<()> {
        let segs32 = u32::from(range.start)..u32::from(range.end);
        let closed = self.inner.lease.alloc.with_buddy(|b| {
            for s in segs32.clone() {
                if !b.close_segment(s) {
                    for d in segs32.start..s {
                        b.reopen_segment(d);
                    }
                    return Err(s);
                }
            }
            Ok(())
        });
        // At most 16384 segments.
        closed.map_err(|segment| Error::SegmentsInUse { range, segment: segment as u16 })
    }

    /// Takes drained segments `range` out of the pool and gives their
    /// memory back: mappings of theirs alone are unmapped as their last
    /// segment goes; the tail of a mapping shared with the last kept
    /// segment is released.
    fn release_segments(&self, range: Range<u16>, released: u64) {
        let sh = &self.inner;
        let segs32 = u32::from(range.start)..u32::from(range.end);
        let removed = sh.map.segs.write().unwrap_or_else(|p| p.into_inner()).split_off(usize::from(range.start));
        sh.lease.alloc.with_buddy(|b| segs32.clone().rev().for_each(|s| b.retire_segment(s)));
        let kept_map = sh.map.segs().last().map(|s| s.map.clone());
        if let (Some(first), Some(kept)) = (removed.first(), kept_map) {
            if Arc::ptr_eq(&first.map, &kept) {
                // Segment offsets are multiples of the segment size, itself
                // a multiple of the page size.
                let page = match sh.map.kind {
                    PageKind::Huge2M | PageKind::Huge1G => usize::try_from(sh.map.kind.bytes()).unwrap_or(4096),
                    _ => 4096,
                };
                if let Err(e) = first.map.release_tail(first.map_off, page) {
                    tracing::warn!("shrink: could not give back {} of a mapping: {e}", Bytes(released));
                }
            }
        }
        drop(removed);
    }
}
