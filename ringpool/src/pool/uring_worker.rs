//! The io_uring engine: each worker owns a [`Ring`] made on its own thread
//! with the pool's table (by clone, in microseconds), keeps up to a ring's
//! depth of operations in flight, and sleeps in `io_uring_enter` with a
//! read of its eventfd always in flight, so that a submitter's signal wakes
//! it whether it was idle or waiting for completions.

use std::collections::{HashMap, VecDeque};
use std::os::fd::OwnedFd;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use slab::Slab;

use super::engine::{Counters, Engine, EngineFactory, Setup, Wake};
use crate::buf::Buffers;
use crate::error::{Error, Result};
use crate::handle::OpState;
use crate::op::{Checked, Done};
use crate::ring::{Ring, RingOptions};
use crate::table::BufferTable;
use crate::types::EngineKind;

const WAKE_TAG: u64 = u64::MAX;

/// The table generation each ring worker has, and since when: for
/// [`IoPool::wait_rings_at`](crate::IoPool::wait_rings_at).
#[derive(Default)]
pub(crate) struct Generations {
    at: Mutex<HashMap<usize, (u64, Instant)>>,
    changed: Condvar,
}

impl Generations {
    /// Worker `id`'s ring now has generation `gen` (`None`: it left).
    fn set(&self, id: usize, gen: Option<u64>) {
        let mut g = self.at.lock().unwrap_or_else(|p| p.into_inner());
        match gen {
            Some(gen) => {
                g.insert(id, (gen, Instant::now()));
            }
            None => {
                g.remove(&id);
            }
        }
        drop(g);
        self.changed.notify_all();
    }

    /// The generation worker `id`'s ring has.
    pub(crate) fn get(&self, id: usize) -> Option<u64> {
        self.at.lock().unwrap_or_else(|p| p.into_inner()).get(&id).map(|&(g, _)| g)
    }

    /// Waits until every ring has generation `gen` or later; the moment the
    /// last one got there.
    pub(crate) fn wait_all_at(&self, gen: u64, timeout: Duration) -> Result<Instant> {
        let deadline = Instant::now().checked_add(timeout);
        let mut g = self.at.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if g.values().all(|&(have, _)| have >= gen) {
                return Ok(g.values().map(|&(_, at)| at).max().unwrap_or_else(Instant::now));
            }
            g = match deadline {
                None => self.changed.wait(g).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        let what = format!("every ring at table generation {gen}");
                        return Err(Error::Timeout { what, waited: timeout });
                    }
                    self.changed.wait_timeout(g, d - now).unwrap_or_else(|p| p.into_inner()).0
                }
            };
        }
    }
}

/// Where worker rings come from.
pub(crate) enum RingSource {
    /// Made here from the table (by clone).
    Table(Arc<BufferTable>),
    /// Handed over by a ring broker, over this process's view of its pool.
    Broker {
        path: std::path::PathBuf,
        memory: crate::memory::IoMemory,
        /// The ring that came with the view, for the first worker.
        first: std::sync::Mutex<Option<Box<crate::handover::HandedRing>>>,
    },
}

/// Builds ring workers.
pub(crate) struct UringFactory {
    pub source: RingSource,
    /// The options of every worker's ring (its depth has one entry more,
    /// for the wake-up read).
    pub ring: RingOptions,
    pub gens: Arc<Generations>,
}

impl EngineFactory for UringFactory {
    fn kind(&self) -> EngineKind {
        EngineKind::IoUring
    }

    fn build(&self, id: usize, counters: Arc<Counters>) -> Result<(Box<dyn Engine>, Wake, Setup)> {
        let opts = &self.ring;
        let mut ring = match &self.source {
            RingSource::Table(t) => t.ring_with(opts)?,
            RingSource::Broker { path, memory, first } => {
                let first = first.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
                let handed = match first {
                    Some(h) => *h,
                    None => crate::handover::RingBroker::request(path, opts.entries, 0)?,
                };
                handed.enable_in(memory, opts)?
            }
        };
        let efd = Arc::new(crate::sys::os::eventfd().map_err(|e| Error::os("eventfd", e))?);
        ring.push_wake(efd.clone(), WAKE_TAG)?;
        ring.submit()?;
        let setup = Setup { ring: ring.setup().ring_time, table: ring.setup().table_time };
        tracing::debug!(worker = id, path = %ring.setup().path, "ring worker ready");
        let ring_generation = ring.table_generation();
        self.gens.set(id, Some(ring_generation));
        let engine = UringEngine {
            ring,
            efd: efd.clone(),
            armed: true,
            pending: Slab::with_capacity(self.ring.entries as usize),
            deferred: VecDeque::new(),
            gens: self.gens.clone(),
            id,
            // One entry is the wake-up read's.
            depth: self.ring.entries.saturating_sub(1) as usize,
            counters,
            reported: ring_generation,
        };
        Ok((Box::new(engine), Wake::EventFd(efd), setup))
    }
}

struct UringEngine {
    ring: Ring,
    efd: Arc<OwnedFd>,
    /// Whether the wake-up read is in flight.
    armed: bool,
    /// The handles of the operations in flight, by tag.
    pending: Slab<Arc<OpState>>,
    /// Operations taken while the ring was full (a split operation takes
    /// several SQEs): pushed before any new one.
    deferred: VecDeque<(Checked, Arc<OpState>)>,
    gens: Arc<Generations>,
    id: usize,
    depth: usize,
    counters: Arc<Counters>,
    /// The table generation last told to `gens`.
    reported: u64,
}

impl UringEngine {
    /// Pushes `op`; `Err` gives it back when the ring is full for now.
    fn push(&mut self, op: Checked, state: Arc<OpState>) -> std::result::Result<(), (Checked, Arc<OpState>)> {
        let entry = self.pending.vacant_entry();
        let tag = entry.key() as u64;
        let before = self.ring.stats();
        match self.ring.push_checked(op, tag) {
            Ok(()) => {
                entry.insert(state);
            }
            // Checked already (and unchanged since): it goes back as it was.
            Err((Error::RingFull { .. }, op)) => return Err((Checked::trusted(op), state)),
            Err((e, op)) => self.counters.finish(&state, op.fail(e)),
        }
        let after = self.ring.stats();
        if after.split_ops > before.split_ops {
            self.counters.split_ops.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        if after.inline_ops > before.inline_ops {
            self.counters.inline_ops.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    }

    /// Pushes what waited for room, in order.
    fn push_deferred(&mut self) {
        while let Some((op, done)) = self.deferred.pop_front() {
            if let Err(back) = self.push(op, done) {
                self.deferred.push_front(back);
                return;
            }
        }
    }

    fn rearm(&mut self) {
        if !self.armed {
            match self.ring.push_wake(self.efd.clone(), WAKE_TAG) {
                Ok(()) => self.armed = true,
                // Retried on the next pass; meanwhile the worker does not sleep.
                Err(e) => tracing::warn!(worker = self.id, "cannot re-arm the wake-up read: {e}"),
            }
        }
    }
}

impl Engine for UringEngine {
    fn room(&mut self) -> usize {
        self.push_deferred();
        if !self.deferred.is_empty() {
            return 0;
        }
        self.depth.saturating_sub(self.pending.len())
    }

    fn start(&mut self, op: Checked, state: Arc<OpState>) {
        if !self.deferred.is_empty() {
            self.deferred.push_back((op, state));
            return;
        }
        if let Err(back) = self.push(op, state) {
            self.deferred.push_back(back);
        }
    }

    fn flush(&mut self) {
        if let Err(e) = self.ring.submit() {
            tracing::warn!(worker = self.id, "submit: {e}");
        }
    }

    fn reap(&mut self) -> usize {
        // One at a time: should a user's waker panic in `complete`, the
        // completions after it stay queued for the recovery.
        self.ring.reap_now();
        let mut n = 0;
        while let Some((tag, done)) = self.ring.pop_completion() {
            n += 1;
            complete(&mut self.pending, &self.counters, &mut self.armed, tag, done);
        }
        self.rearm();
        n
    }

    fn in_flight(&self) -> usize {
        self.pending.len() + self.deferred.len()
    }

    fn sleep(&mut self, timeout: Option<Duration>) {
        self.rearm();
        // A growth or shrink published just before this worker became a
        // sleeper sent it no signal: catch up first.
        if self.ring.table_is_stale() {
            return;
        }
        if !self.armed {
            // Without the wake-up read a sleep could miss a signal.
            std::thread::yield_now();
            return;
        }
        if let Err(e) = self.ring.wait_timeout(timeout) {
            tracing::warn!(worker = self.id, "wait: {e}");
        }
    }

    fn upkeep(&mut self) {
        // Pick up growth and shrink (one atomic load when there is none).
        if self.ring.table_is_stale() {
            if let Err(e) = self.ring.refresh_table() {
                tracing::warn!(worker = self.id, "cannot catch up with the table: {e}");
            }
        }
        // Also when an operation made the ring catch up in between.
        let now = self.ring.table_generation();
        if now != self.reported {
            self.reported = now;
            self.gens.set(self.id, Some(now));
        }
    }

    fn recover(&mut self) {
        tracing::error!(
            worker = self.id,
            in_flight = self.pending.len(),
            "completing the operations of a worker that panicked"
        );
        for (op, state) in std::mem::take(&mut self.deferred) {
            let lost = Error::Lost("the worker panicked before it could submit the operation".into());
            self.counters.finish(&state, op.into_op().fail(lost));
        }
        self.reap();
        // Operations still in the kernel (the wake-up read aside).
        while self.ring.in_flight() > usize::from(self.armed) {
            if self.ring.wait(1).is_err() {
                break;
            }
            self.reap();
        }
        // Operations whose completion was lost with the ring (it failed):
        // their buffers went with the ring's slots.
        for state in self.pending.drain() {
            tracing::error!(worker = self.id, "an operation lost its completion after a panic");
            let lost = Error::Lost("the worker's ring failed while recovering from a panic".into());
            self.counters.finish(&state, Done { result: Err(lost), bufs: Buffers::None });
        }
    }
}

/// Completes the handle of one reaped operation (or notes the wake-up).
fn complete(pending: &mut Slab<Arc<OpState>>, counters: &Counters, armed: &mut bool, tag: u64, done: Done) {
    if tag == WAKE_TAG {
        *armed = false;
        return;
    }
    match pending.try_remove(tag as usize) {
        Some(state) => counters.finish(&state, done),
        None => tracing::error!(tag, "completion for an unknown operation"),
    }
}

impl Drop for UringEngine {
    fn drop(&mut self) {
        self.gens.set(self.id, None);
        // Dropping the ring cancels the wake-up read and unregisters the
        // table, so that unpinning happens here, now.
    }
}
