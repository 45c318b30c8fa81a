//! A broker that keeps its clients apart ([`BrokerOptions::isolate`](super::BrokerOptions::isolate)):
//! a client's rings hold only the table slots of its process's lease
//! segments, it gets only those segments' memfds, and a segment given to
//! a client of another user than the one before gets fresh memory first
//! (a memfd once sent cannot be taken back: whoever had it could still map
//! the old pages, never the new ones). When lease segments come back, the
//! broker takes their slots out of every ring it handed with them.
//!
//! The unit is the user: processes of one user can reach each other's
//! memory through the kernel anyway (ptrace), so a segment passes between
//! them as it is.

use std::ops::Range;
use std::sync::{Arc, Weak};

use super::super::isolated::IsolatedRing;
use super::super::HandedRing;
use super::Server;
use crate::error::{Error, Result};
use crate::memory::SegmentReservation;
use crate::sys::mmap::Mapping;
use crate::sys::uring::Iov;
use crate::table::BufferTable;

/// Fresh memory a table slot holds, and the user it went to.
struct Fresh {
    uid: u32,
    map: Arc<Mapping>,
    /// The pool's own mapping of the segment then: a segment shrunk away
    /// and grown again has another (and its slot the pool's pages).
    pool: Weak<Mapping>,
}

#[derive(Default)]
pub(super) struct Isolation {
    /// Per table slot: its fresh memory (none: the pool's own, which no
    /// client has seen).
    fresh: Vec<Option<Fresh>>,
    /// Rings handed to clients, with the slots they hold.
    rings: Vec<IsolatedRing>,
    /// Shrinks that failed, at the last look (a failed shrink may put the
    /// pool's own memory back into slots).
    failed_shrinks: u64,
}

impl Isolation {
    /// Gives segments `range` fresh memory unless user `uid` had it last.
    fn prepare(&mut self, table: &BufferTable, range: Range<u16>, uid: u32) -> Result<()> {
        // Not beside a shrink (which takes slots out).
        let _growing = table.memory().growth_lock();
        for i in range {
            let slot = usize::from(i);
            if self.fresh.len() <= slot {
                self.fresh.resize_with(slot + 1, || None);
            }
            let pool = table.memory().segment_backing(i)?;
            if self.fresh[slot].as_ref().is_some_and(|f| f.uid == uid && Weak::ptr_eq(&f.pool, &pool)) {
                continue;
            }
            let started = std::time::Instant::now();
            let map = table.memory().fresh_segment(i)?;
            table.template.replace_slot(i, &Iov::new(&map, 0, map.len()))?;
            // What the slot held before: the pool's pages, no longer
            // reachable here, go back to the system; fresh memory of the
            // user before is unmapped here (its pages go once that user's
            // processes let go of them).
            if self.fresh[slot]
                .replace(Fresh { uid, map, pool: pool.clone() })
                .is_none_or(|f| !Weak::ptr_eq(&f.pool, &pool))
            {
                if let Err(e) = table.memory().punch_segment(i) {
                    tracing::warn!(
                        segment = i,
                        "isolation: the pool's pages of a segment given fresh memory stay: {e}"
                    );
                }
            }
            tracing::debug!(segment = i, uid, took = ?started.elapsed(), "isolation: fresh memory for a segment");
        }
        Ok(())
    }

    /// The memory of segments `ranges` (all prepared).
    fn present(&self, ranges: &[Range<u16>]) -> Result<Vec<(u16, Arc<Mapping>)>> {
        ranges
            .iter()
            .flat_map(|r| r.clone())
            .map(|i| match self.fresh.get(usize::from(i)) {
                Some(Some(f)) => Ok((i, f.map.clone())),
                _ => Err(Error::Lost(format!("segment {i} has no fresh memory for its client"))),
            })
            .collect()
    }

    /// Lease segments `range` came back: no ring handed with them reaches
    /// them any more.
    pub(super) fn release(&mut self, table: &BufferTable, range: &Range<u16>) {
        self.rings.retain_mut(|r| !r.revoke(table, range));
    }

    /// After the idle shrink's look: slots past the pool's end are gone
    /// (their fresh memory too); after a failed shrink, the segments no
    /// client holds get fresh memory again when next leased.
    pub(super) fn after_shrink(&mut self, entries: u16, failed: u64, held: &[Range<u16>]) {
        self.fresh.truncate(usize::from(entries));
        if failed != self.failed_shrinks {
            self.failed_shrinks = failed;
            for (i, f) in self.fresh.iter_mut().enumerate() {
                if !held.iter().any(|r| r.contains(&(i as u16))) {
                    *f = None;
                }
            }
        }
    }
}

impl Server {
    /// A ring for client `i` that reaches only its process's lease
    /// segments (`reservation`, new, and those its other connections
    /// hold), the new ones given fresh memory if another user had them.
    pub(super) fn handover_isolated(
        &mut self,
        i: usize,
        entries: u32,
        reservation: Option<SegmentReservation>,
    ) -> Result<(HandedRing, Option<IsolatedRing>)> {
        let (pid, uid) = (self.clients[i].pid, self.clients[i].uid);
        let mut ranges: Vec<Range<u16>> = self
            .clients
            .iter()
            .filter(|c| c.pid == pid)
            .filter_map(|c| c.reservation.as_ref().map(SegmentReservation::segments))
            .chain(reservation.as_ref().map(SegmentReservation::segments))
            .collect();
        ranges.sort_by_key(|r| r.start);
        if ranges.is_empty() {
            return Err(Error::invalid(
                "lease segments",
                0,
                "at least one: this broker isolates its clients, whose rings reach only their own lease segments",
            ));
        }
        let held: Vec<Range<u16>> =
            self.clients.iter().filter_map(|c| c.reservation.as_ref().map(SegmentReservation::segments)).collect();
        let failed = self.counters.shrink_timeouts.load(std::sync::atomic::Ordering::Relaxed);
        let entries_now = self.table.template.entries();
        let Some(iso) = self.isolation.as_mut() else { return Err(Error::Lost("no isolation state".into())) };
        iso.after_shrink(entries_now, failed, &held);
        if let Some(r) = &reservation {
            iso.prepare(&self.table, r.segments(), uid)?;
        }
        let present = iso.present(&ranges)?;
        let restrict = uid != crate::sys::socket::euid();
        let (handed, ring) = self.table.handover_isolated(entries, &ranges, &present, reservation, restrict)?;
        tracing::trace!(pid, ranges = ?ring.ranges(), "isolated ring");
        Ok((handed, Some(ring)))
    }

    /// Keeps the ring handed to an isolated client, to take its slots out
    /// when the segments come back.
    pub(super) fn keep_isolated(&mut self, ring: IsolatedRing) {
        if let Some(iso) = self.isolation.as_mut() {
            iso.rings.push(ring);
        }
    }
}
