//! Growing the pool: the one growth path, shared by `IoMemory::grow`,
//! `BufferTable::grow` and `IoPool::grow` (with a table or without).
//!
//! Under the pool's growth lock: check the room, map the new memory as new
//! segments, prefault it, let the caller publish it to rings (register it
//! into the template), and only then make it leasable, so that no lease of
//! memory a ring cannot reach ever exists. A failure after the mapping
//! takes the new segments out again: the pool is as before.

use std::ops::Range;
use std::time::Instant;

use super::{pages, segments_of, IoMemory};
use crate::error::{Error, Result};
use crate::stats::GrowReport;
use crate::types::Bytes;
use crate::types::MAX_SEGMENTS;

impl IoMemory {
    /// Maps `bytes` more (rounded up to the page size) under the pool's page
    /// kind as new segments, prefaults them, and makes them leasable.
    /// Returns the new segment indexes.
    ///
    /// With a [`BufferTable`](crate::BufferTable) or an
    /// [`IoPool`](crate::IoPool) over this memory, grow through
    /// [`BufferTable::grow`](crate::BufferTable::grow) /
    /// [`IoPool::grow`](crate::IoPool::grow) instead: they register the new
    /// segments before any lease of them exists.
    ///
    /// # Errors
    /// As [`IoMemory::map_with`] for the new memory;
    /// [`Error::TooManySegments`] past 16384 segments.
    pub fn grow(&self, bytes: u64) -> Result<Range<u16>> {
        self.grow_with(bytes, MAX_SEGMENTS, |_| Ok(()), |_| Ok(0)).map(|r| r.segments)
    }

    /// The growth path. `slots` is the most segments the pool may have
    /// afterwards (a table's capacity); `check` runs first under the growth
    /// lock with the segment count (a table checks it registers them all);
    /// `publish` makes the new segments usable by rings and returns the
    /// table generation that has them.
    pub(crate) fn grow_with(
        &self,
        bytes: u64,
        slots: u64,
        check: impl FnOnce(u16) -> Result<()>,
        publish: impl FnOnce(Range<u16>) -> Result<u64>,
    ) -> Result<GrowReport> {
        self.check_home()?;
        if bytes == 0 {
            return Err(Error::invalid("growth", 0, "it must be at least one page"));
        }
        let sh = &self.inner;
        let _growing = self.growth_lock();
        check(sh.map.segment_count())?;
        let len = pages::round_to_pages("growth", bytes, sh.map.kind)?;
        let nseg = len.div_ceil(sh.map.segment_size);
        let first = u64::from(sh.map.segment_count());
        let total = first.saturating_add(nseg);
        if total > MAX_SEGMENTS {
            return Err(Error::TooManySegments {
                size: Bytes(self.len().saturating_add(len)),
                segment: Bytes(sh.map.segment_size),
                segments: total,
            });
        }
        if total > slots {
            return Err(Error::CapacityExhausted {
                // Both at most 16384 here.
                capacity: slots as u16,
                used: first as u16,
                needed: nseg,
                bytes: Bytes(bytes),
            });
        }
        let t = Instant::now();
        if sh.view.is_some() {
            return Err(Error::invalid(
                "growth",
                Bytes(bytes),
                "this memory was handed over by another process; the process that owns the pool grows it",
            ));
        }
        if sh.shared {
            // A shared pool travels as one memfd per mapping (a growth
            // each), beside the ring's other descriptors, in one message.
            let segs = sh.map.segs();
            let mut maps: Vec<&std::sync::Arc<crate::sys::mmap::Mapping>> = Vec::new();
            for s in segs.iter() {
                if !maps.iter().any(|m| std::sync::Arc::ptr_eq(m, &s.map)) {
                    maps.push(&s.map);
                }
            }
            let most = crate::sys::socket::MAX_FDS - 1;
            if maps.len() >= most {
                return Err(Error::invalid(
                    "growth",
                    Bytes(bytes),
                    format!(
                        "a shared pool is handed to other processes with one memfd per growth, at most {most}; it has \
                         {} (grow in larger steps, or shrink first)",
                        maps.len()
                    ),
                ));
            }
        }
        let map = pages::map(sh.map.kind, len, sh.map.align, sh.shared)?;
        sh.map.segs.write().unwrap_or_else(|p| p.into_inner()).extend(segments_of(
            &map,
            first,
            len,
            sh.map.segment_size,
        ));
        drop(map);
        let map_time = t.elapsed();
        // Both at most 16384 (checked above).
        let range = first as u16..total as u16;
        let published = self.prefault_segments(range.clone(), |_| {}).and_then(|prefault_time| {
            let register_started = Instant::now();
            let generation = publish(range.clone())?;
            Ok((prefault_time, register_started, generation))
        });
        let (prefault_time, register_started, generation) = match published {
            Ok(x) => x,
            Err(e) => {
                self.retract(range);
                return Err(e);
            }
        };
        let register_time = register_started.elapsed();
        // Only now can a lease of the new memory exist.
        self.make_leasable(range.clone());
        tracing::debug!(?range, bytes = len, generation, ?register_time, "pool grew");
        Ok(GrowReport {
            segments: range,
            bytes: len,
            generation,
            map_time,
            prefault_time,
            register_time,
            register_started,
            handed_rings: 0,
        })
    }

    /// Takes segments `range` (the last ones, never leasable) out again; the
    /// mapping goes with its last segment.
    fn retract(&self, range: Range<u16>) {
        let mut segs = self.inner.map.segs.write().unwrap_or_else(|p| p.into_inner());
        segs.truncate(range.start as usize);
        tracing::debug!(?range, "growth failed: new segments taken out again");
    }

    /// Hands segments `range` to the allocator.
    fn make_leasable(&self, range: Range<u16>) {
        let segs = self.inner.map.segs();
        let (Some(first), Some(last)) =
            (segs.get(range.start as usize), range.end.checked_sub(1).and_then(|l| segs.get(l as usize)))
        else {
            return;
        };
        let start = first.seg.offset;
        let len = last.seg.offset + last.seg.len - start;
        drop(segs);
        self.inner.lease.alloc.with_buddy(|b| b.add_range(start, len));
        self.inner.lease.alloc.notify_grown();
    }
}
