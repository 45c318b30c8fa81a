//! The broker's lease segments for its clients: free ones, or new ones
//! the pool grows by (within `grow_to`), and the status it reports.

use std::sync::atomic::Ordering;

use super::Server;
use crate::error::{Error, Result};
use crate::memory::SegmentReservation;
use crate::sys;

impl Server {
    /// The first `n` consecutive segments that hold no lease; when there
    /// are none, the pool grows by `n` segments first if `grow_to` allows.
    pub(super) fn reserve(&self, n: u16) -> Result<SegmentReservation> {
        match self.reserve_free(n) {
            Err(Error::SegmentsInUse { .. }) if self.may_grow(n) => {
                // In steps of an eighth of the starting pool at least (each
                // growth is one more memfd a handover carries: at most 63),
                // as far as grow_to and the table allow.
                let seg = self.table.memory().segment_size();
                let step = (n..=n.max(self.idle.base() / 8)).rev().find(|&k| self.may_grow(k)).unwrap_or(n);
                let report = self.table.grow(u64::from(step) * seg)?;
                self.counters.growths.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    segments = ?report.segments,
                    handed_rings = report.handed_rings,
                    "broker grew the pool for a client"
                );
                self.reserve_free(n)
            }
            r => r,
        }
    }

    /// Grows the pool by `n` segments and reserves exactly those.
    pub(super) fn grow_for(&self, n: u16) -> Result<SegmentReservation> {
        if !self.may_grow(n) {
            let mem = self.table.memory();
            return Err(Error::invalid(
                "growth",
                crate::types::Bytes(u64::from(n) * mem.segment_size()),
                format!(
                    "the pool ({}) may grow to {} within {} table slots",
                    crate::types::Bytes(mem.len()),
                    crate::types::Bytes(self.opts.grow_to),
                    self.table.capacity()
                ),
            ));
        }
        let report = self.table.grow(u64::from(n) * self.table.memory().segment_size())?;
        self.counters.growths.fetch_add(1, Ordering::Relaxed);
        tracing::info!(segments = ?report.segments, handed_rings = report.handed_rings, "broker grew the pool on request");
        self.table.memory().reserve_segments(report.segments)
    }

    /// Whether growing by `n` segments stays within `grow_to` and the
    /// table's room.
    fn may_grow(&self, n: u16) -> bool {
        let mem = self.table.memory();
        let more = u64::from(n) * mem.segment_size();
        let room = u32::from(self.table.capacity()) >= u32::from(self.table.template.entries()) + u32::from(n);
        room && mem.len().checked_add(more).is_some_and(|after| after <= self.opts.grow_to)
    }

    /// The broker's state.
    pub(super) fn status(&self) -> crate::stats::BrokerStatus {
        let t = &self.table.template;
        crate::stats::BrokerStatus {
            pid: sys::pid::current_pid(),
            pool_bytes: self.table.memory().len(),
            segments: t.entries(),
            capacity: self.table.capacity(),
            served: self.counters.served.load(Ordering::Relaxed),
            refused: self.counters.refused.load(Ordering::Relaxed),
            following_rings: u32::try_from(t.followers.len()).unwrap_or(u32::MAX),
            growths: self.counters.growths.load(Ordering::Relaxed),
            shrinks: self.counters.shrinks.load(Ordering::Relaxed),
            shrink_timeouts: self.counters.shrink_timeouts.load(Ordering::Relaxed),
            clients: self
                .clients
                .iter()
                .map(|c| crate::stats::BrokerClient {
                    pid: c.pid,
                    uid: c.uid,
                    rings: c.rings,
                    lease_segments: c.reservation.as_ref().map_or(0..0, SegmentReservation::segments),
                })
                .collect(),
        }
    }

    fn reserve_free(&self, n: u16) -> Result<SegmentReservation> {
        let mem = self.table.memory();
        // The segments the table holds (its rings reach no others).
        let count = self.table.template.entries();
        let mut start = 0u16;
        while u32::from(start) + u32::from(n) <= u32::from(count) {
            match mem.reserve_segments(start..start + n) {
                Ok(r) => return Ok(r),
                Err(Error::SegmentsInUse { segment, .. }) => start = segment + 1,
                Err(e) => return Err(e),
            }
        }
        Err(Error::SegmentsInUse { range: 0..n, segment: count.saturating_sub(1) })
    }
}
