//! A broker that keeps its clients apart ([`BrokerOptions::isolate`](super::BrokerOptions::isolate)):
//! a client's rings hold only the table slots of its process's lease
//! segments, it gets only those segments' memfds, and a segment given to
//! a client of another user than the one before gets fresh memory first
//! (a memfd once sent cannot be taken back: whoever had it could still map
//! the old pages, never the new ones). When lease segments come back, the
//! broker takes their slots out of every ring it handed with them.
//!
//! Fresh memory is made on a thread of its own (faulting a segment in
//! takes milliseconds to a second): the request waits, with its segments
//! reserved, while the broker serves the others; the serving thread then
//! puts the memory in the segments' slots and hands the ring over.
//!
//! The unit is the user: processes of one user can reach each other's
//! memory through the kernel anyway (ptrace), so a segment passes between
//! them as it is.

use std::ops::Range;
use std::os::fd::OwnedFd;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Weak};

use super::super::isolated::IsolatedRing;
use super::Server;
use crate::error::{Error, Result};
use crate::memory::SegmentReservation;
use crate::sys;
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

/// A request waiting for fresh memory.
pub(super) struct Pending {
    pub(super) entries: u32,
    pub(super) reservation: SegmentReservation,
}

/// Fresh memory made for a client's request, off the serving thread.
struct Made {
    client: u64,
    /// The segments, and the pool's mapping of each when it was asked for.
    segments: Vec<(u16, Weak<Mapping>)>,
    maps: Result<Vec<Arc<Mapping>>>,
}

pub(super) struct Isolation {
    /// Per table slot: its fresh memory (none: the pool's own, which no
    /// client has seen).
    fresh: Vec<Option<Fresh>>,
    /// Rings handed to clients, with the slots they hold.
    rings: Vec<IsolatedRing>,
    /// The template's count of shrinks called off that put the pool's own
    /// memory back into slots, at the last look.
    restored: u64,
    made_tx: Sender<Made>,
    made_rx: Receiver<Made>,
    /// The serving thread's wake-up (signalled when memory is made).
    wake: Arc<OwnedFd>,
}

impl Isolation {
    pub(super) fn new(wake: Arc<OwnedFd>) -> Isolation {
        let (made_tx, made_rx) = channel();
        Isolation { fresh: Vec::new(), rings: Vec::new(), restored: 0, made_tx, made_rx, wake }
    }

    /// The segments of `range` that need fresh memory before user `uid`
    /// gets them (another user had them, or no one did), with the pool's
    /// mapping of each.
    fn stale(&self, table: &BufferTable, range: Range<u16>, uid: u32) -> Result<Vec<(u16, Weak<Mapping>)>> {
        let mut stale = Vec::new();
        for i in range {
            let pool = table.memory().segment_backing(i)?;
            let fresh = self.fresh.get(usize::from(i)).and_then(Option::as_ref);
            if !fresh.is_some_and(|f| f.uid == uid && Weak::ptr_eq(&f.pool, &pool)) {
                stale.push((i, pool));
            }
        }
        Ok(stale)
    }

    /// Puts fresh memory `maps` for user `uid` in the slots of `segments`.
    fn install(
        &mut self,
        table: &BufferTable,
        uid: u32,
        segments: Vec<(u16, Weak<Mapping>)>,
        maps: Vec<Arc<Mapping>>,
    ) -> Result<()> {
        // Not beside a shrink (which takes slots out).
        let _growing = table.memory().growth_lock();
        for ((i, pool), map) in segments.into_iter().zip(maps) {
            // Reserved since it was asked for: still the same segment.
            if !Weak::ptr_eq(&pool, &table.memory().segment_backing(i)?) {
                return Err(Error::Lost(format!("segment {i} changed while its fresh memory was made")));
            }
            table.template.replace_slot(i, &Iov::new(&map, 0, map.len()))?;
            let slot = usize::from(i);
            if self.fresh.len() <= slot {
                self.fresh.resize_with(slot + 1, || None);
            }
            // What the slot held before goes back to the system: the pool's
            // pages, or the fresh memory of the user before (punched: that
            // user's processes that still map it find zeros, charged to
            // them).
            let before = self.fresh[slot].replace(Fresh { uid, map, pool: pool.clone() });
            let pool_pages = before.as_ref().is_none_or(|f| !Weak::ptr_eq(&f.pool, &pool));
            if let Some(f) = before {
                discard(f);
            }
            if pool_pages {
                if let Err(e) = table.memory().punch_segment(i) {
                    tracing::warn!(
                        segment = i,
                        "isolation: the pool's pages of a segment given fresh memory stay: {e}"
                    );
                }
            }
        }
        Ok(())
    }

    /// The memory of segments `ranges` (all prepared for user `uid`).
    fn present(&self, ranges: &[Range<u16>], uid: u32) -> Result<Vec<(u16, Arc<Mapping>)>> {
        ranges
            .iter()
            .flat_map(|r| r.clone())
            .map(|i| match self.fresh.get(usize::from(i)) {
                Some(Some(f)) if f.uid == uid => Ok((i, f.map.clone())),
                _ => Err(Error::Lost(format!("segment {i} has no fresh memory for its client's user"))),
            })
            .collect()
    }

    /// Lease segments `range` came back: no ring handed with them reaches
    /// them any more.
    pub(super) fn release(&mut self, table: &BufferTable, range: &Range<u16>) {
        self.rings.retain_mut(|r| !r.revoke(table, range));
    }

    /// After a shrink: slots past the pool's end are gone (their fresh
    /// memory too); after a shrink called off that put the pool's own
    /// memory back into slots (the template's `restored` count moved), the
    /// segments no client holds get fresh memory again when next leased.
    pub(super) fn after_shrink(&mut self, entries: u16, restored: u64, held: &[Range<u16>]) {
        let past = usize::from(entries).min(self.fresh.len());
        for f in self.fresh.drain(past..).flatten() {
            discard(f);
        }
        if restored != self.restored {
            self.restored = restored;
            for (i, f) in self.fresh.iter_mut().enumerate() {
                if !held.iter().any(|r| r.contains(&(i as u16))) {
                    if let Some(f) = f.take() {
                        discard(f);
                    }
                }
            }
        }
    }
}

/// Fresh memory no slot holds any more: punched (whoever still maps it
/// finds zeros), then unmapped here.
fn discard(f: Fresh) {
    if let Err(e) = f.map.punch(0, f.map.len()) {
        tracing::warn!("isolation: fresh memory given back stays with its user's processes: {e}");
    }
}

impl Server {
    /// A ring for client `i` that reaches only its process's lease
    /// segments (`reservation`, new, and those its other connections
    /// hold). When the new ones need fresh memory, it is made on a thread
    /// of its own and the ring handed over once it is in place
    /// ([`Server::install_made`]); the request waits with its segments
    /// reserved.
    pub(super) fn hand_over_isolated(
        &mut self,
        i: usize,
        entries: u32,
        reservation: Option<SegmentReservation>,
    ) -> Result<()> {
        let held = self.held();
        let restored = self.table.template.restored.load(std::sync::atomic::Ordering::Acquire);
        let entries_now = self.table.template.entries();
        let uid = self.clients[i].uid;
        let Some(iso) = self.isolation.as_mut() else { return Err(Error::Lost("no isolation state".into())) };
        iso.after_shrink(entries_now, restored, &held);
        let stale = match &reservation {
            Some(r) => iso.stale(&self.table, r.segments(), uid)?,
            None => Vec::new(),
        };
        let (tx, wake) = (iso.made_tx.clone(), iso.wake.clone());
        let r = match reservation {
            Some(r) if !stale.is_empty() => r,
            reservation => return self.finish_isolated(i, entries, reservation),
        };
        let (client, memory) = (self.clients[i].id, self.table.memory().clone());
        let make = move || {
            let started = std::time::Instant::now();
            let maps = stale.iter().map(|&(seg, _)| memory.fresh_segment(seg)).collect();
            tracing::debug!(segments = stale.len(), took = ?started.elapsed(), "isolation: fresh memory made");
            // A broker gone meanwhile drops it.
            if tx.send(Made { client, segments: stale, maps }).is_ok() {
                sys::os::eventfd_signal(std::os::fd::AsFd::as_fd(&*wake));
            }
        };
        std::thread::Builder::new()
            .name("ringpool-fresh".into())
            .spawn(make)
            .map_err(|e| Error::os("spawn a thread for fresh memory", e))?;
        self.clients[i].pending = Some(Pending { entries, reservation: r });
        Ok(())
    }

    /// Puts the fresh memory made since in place and hands the rings that
    /// waited for it over (or tells their clients why not).
    pub(super) fn install_made(&mut self) {
        loop {
            let Some(Ok(made)) = self.isolation.as_ref().map(|iso| iso.made_rx.try_recv()) else { return };
            // A client gone meanwhile: its memory is dropped here.
            let Some(i) = self.clients.iter().position(|c| c.id == made.client) else { continue };
            let Some(p) = self.clients[i].pending.take() else { continue };
            let uid = self.clients[i].uid;
            let installed = match (made.maps, self.isolation.as_mut()) {
                (Ok(maps), Some(iso)) => iso.install(&self.table, uid, made.segments, maps),
                (Err(e), _) => Err(e),
                (_, None) => Err(Error::Lost("no isolation state".into())),
            };
            let done = installed.and_then(|()| self.finish_isolated(i, p.entries, Some(p.reservation)));
            if let Err(e) = done {
                let c = &self.clients[i];
                self.refuse(&c.stream, c.pid, &e.to_string());
            }
        }
    }

    /// Sets up client `i`'s ring over its process's segments (whose
    /// memory is in place) and hands it over.
    fn finish_isolated(&mut self, i: usize, entries: u32, reservation: Option<SegmentReservation>) -> Result<()> {
        let (id, pid, uid) = (self.clients[i].id, self.clients[i].pid, self.clients[i].uid);
        // Its process's connections: the same pid and user (a pid of 0, a
        // peer in a pid namespace this one cannot see, names nobody).
        let mut ranges: Vec<Range<u16>> = self
            .clients
            .iter()
            .filter(|c| c.id == id || (pid != 0 && c.pid == pid && c.uid == uid))
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
        let Some(iso) = self.isolation.as_ref() else { return Err(Error::Lost("no isolation state".into())) };
        let present = iso.present(&ranges, uid)?;
        let restrict = uid != sys::socket::euid();
        let (handed, ring) = self.table.handover_isolated(entries, &ranges, &present, reservation, restrict)?;
        tracing::trace!(pid, ranges = ?ring.ranges(), "isolated ring");
        self.deliver(i, handed, Some(ring))
    }

    /// Keeps the ring handed to an isolated client, to take its slots out
    /// when the segments come back.
    pub(super) fn keep_isolated(&mut self, ring: IsolatedRing) {
        if let Some(iso) = self.isolation.as_mut() {
            iso.rings.push(ring);
        }
    }
}
