//! Each calling thread's own ring for a pool: cloned from the table at the
//! thread's first call that needs it (microseconds, whatever the pool's
//! size), used by that thread alone, released when the thread exits or the
//! pool is dropped, whichever comes first. A blocking call submits and
//! reaps its operation on it: no queue, no wake-up, no worker.
//!
//! The rings live in the threads (a thread-local list of slots, one per
//! pool the thread used); the pool keeps the list of every live slot, so
//! that a shrink can catch every thread's ring up with the table from its
//! own thread (the rings are not SINGLE_ISSUER for that: the pages it
//! releases are unpinned when it returns), and the pool's drop can release
//! the rings of idle threads (see [`crate::sys::send`] for why both are
//! sound). A thread whose ring was released gets a new one at its next
//! call.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use crate::error::{Error, Result};
use crate::ring::{Ring, RingOptions};
use crate::sys::send::Lent;
use crate::table::BufferTable;

/// One thread's ring for one pool.
struct Slot {
    ring: Mutex<Option<Lent<Ring>>>,
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, Option<Lent<Ring>>> {
        self.ring.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes the ring out if nothing is in flight on it (to drop it on
    /// this thread); `false` when a ring with operations in flight stays.
    fn release(&self) -> bool {
        let mut g = self.lock();
        if g.as_ref().is_some_and(|r| r.0.in_flight() > 0) {
            return false;
        }
        let ring = g.take();
        drop(g);
        drop(ring);
        true
    }
}

/// The per-thread rings of one pool.
pub(crate) struct LocalRings {
    table: Arc<BufferTable>,
    opts: RingOptions,
    /// Every live thread's slot.
    slots: Mutex<Vec<Arc<Slot>>>,
    made: AtomicU64,
    ops: AtomicU64,
}

/// A thread's slot for one pool, and whether the thread is inside a call
/// on it (a nested call would wait for itself).
struct Entry {
    pool: Weak<LocalRings>,
    slot: Arc<Slot>,
    busy: bool,
}

/// This thread's slots; dropped (and their rings with them, on this
/// thread) when the thread exits.
struct Mine(Vec<Entry>);

impl Drop for Mine {
    fn drop(&mut self) {
        for e in self.0.drain(..) {
            drop(e.slot.lock().take());
            if let Some(pool) = e.pool.upgrade() {
                pool.forget(&e.slot);
            }
        }
    }
}

thread_local! {
    static MINE: RefCell<Mine> = const { RefCell::new(Mine(Vec::new())) };
}

impl LocalRings {
    pub(crate) fn new(table: Arc<BufferTable>, opts: RingOptions) -> LocalRings {
        LocalRings { table, opts, slots: Mutex::new(Vec::new()), made: AtomicU64::new(0), ops: AtomicU64::new(0) }
    }

    fn slots(&self) -> MutexGuard<'_, Vec<Arc<Slot>>> {
        self.slots.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn forget(&self, slot: &Arc<Slot>) {
        self.slots().retain(|s| !Arc::ptr_eq(s, slot));
    }

    /// Runs `f` with the calling thread's ring for this pool (made now, by
    /// clone, if the thread has none).
    ///
    /// # Errors
    /// The ring's setup errors; [`Error::InvalidArgument`] for a call made
    /// from inside `f` itself, or during the thread's exit.
    pub(crate) fn with<R>(self: &Arc<Self>, f: impl FnOnce(&mut Ring) -> R) -> Result<R> {
        let slot = self.enter()?;
        let out = (|| {
            let mut g = slot.lock();
            if g.is_none() {
                let ring = self.table.ring_with(&self.opts)?;
                self.made.fetch_add(1, Ordering::Relaxed);
                *g = Some(Lent(ring));
            }
            self.ops.fetch_add(1, Ordering::Relaxed);
            let ring = &mut g.as_mut().expect("made above").0;
            Ok(f(ring))
        })();
        self.leave();
        out
    }

    /// Finds (or makes) this thread's slot and marks the thread inside a
    /// call on it.
    fn enter(self: &Arc<Self>) -> Result<Arc<Slot>> {
        let reentered =
            || Error::invalid("pool call", "nested", "a call on this thread's ring made from inside a call on it");
        let r = MINE.try_with(|m| {
            let mut m = m.borrow_mut();
            // A dead entry may name the address of a new pool: alive only.
            let mine = |e: &&mut Entry| std::ptr::eq(e.pool.as_ptr(), Arc::as_ptr(self)) && e.pool.strong_count() > 0;
            if let Some(e) = m.0.iter_mut().find(mine) {
                if e.busy {
                    return Err(reentered());
                }
                e.busy = true;
                return Ok(e.slot.clone());
            }
            // Entries of pools that are gone go when a new one comes.
            m.0.retain(|e| e.pool.strong_count() > 0);
            let slot = Arc::new(Slot { ring: Mutex::new(None) });
            self.slots().push(slot.clone());
            m.0.push(Entry { pool: Arc::downgrade(self), slot: slot.clone(), busy: true });
            Ok(slot)
        });
        r.unwrap_or_else(|_| Err(Error::invalid("pool call", "at thread exit", "this thread's rings are gone")))
    }

    fn leave(self: &Arc<Self>) {
        let _ = MINE.try_with(|m| {
            let mine = |e: &&mut Entry| std::ptr::eq(e.pool.as_ptr(), Arc::as_ptr(self)) && e.pool.strong_count() > 0;
            if let Some(e) = m.borrow_mut().0.iter_mut().find(mine) {
                e.busy = false;
            }
        });
    }

    /// Releases the rings of threads that have nothing in flight on them
    /// (each thread gets a new one at its next call); how many are left,
    /// holding operations in flight.
    pub(crate) fn release_idle(&self) -> usize {
        let slots: Vec<Arc<Slot>> = self.slots().clone();
        slots.iter().filter(|s| !s.release()).count()
    }

    /// Catches every thread's ring up with the table now, from this thread
    /// (waiting for a thread inside a call to finish it): after a shrink,
    /// no ring holds the released pages.
    pub(crate) fn catch_up_all(&self) {
        let slots: Vec<Arc<Slot>> = self.slots().clone();
        for s in slots {
            if let Some(ring) = s.lock().as_mut() {
                if let Err(e) = ring.0.refresh_table() {
                    tracing::warn!("a calling thread's ring could not catch up with the table: {e}");
                }
            }
        }
    }

    /// (threads with a ring now, rings made, operations run).
    pub(crate) fn counts(&self) -> (usize, u64, u64) {
        let live = self.slots().iter().filter(|s| s.lock().is_some()).count();
        (live, self.made.load(Ordering::Relaxed), self.ops.load(Ordering::Relaxed))
    }
}

impl Drop for LocalRings {
    fn drop(&mut self) {
        // The pool is gone: the rings of idle threads go with it; a ring
        // with operations in flight goes with its thread.
        let slots = std::mem::take(&mut *self.slots());
        for s in slots {
            s.release();
        }
    }
}

/// How a pool's calling thread runs an operation itself (a blocking call,
/// or a handle's waiter helping): on its own ring, which obeys the engine
/// choice (io_uring, or inline where the device says so); inline where
/// the pool has no table (the blocking engine, or rings from a broker), or
/// where the thread's ring cannot be set up (logged once).
pub(crate) struct Caller {
    pub(crate) local: Option<Arc<LocalRings>>,
    /// The engine policy of the calling threads' rings.
    pub(crate) policy: crate::types::EnginePolicy,
    /// Runtime threads' asynchronous rings (feature `tokio`).
    #[cfg(feature = "tokio")]
    pub(crate) asyncs: Option<Arc<super::reactor::AsyncRings>>,
    /// The pool's counters (splits and inline operations on the thread's
    /// ring are counted there too).
    pub(crate) counters: Arc<super::engine::Counters>,
}

impl Caller {
    /// Whether an operation awaited on this thread starts on the thread's
    /// own asynchronous ring (a tokio runtime's thread, feature `tokio`).
    pub(crate) fn async_here(&self) -> bool {
        #[cfg(feature = "tokio")]
        if self.asyncs.is_some() {
            return super::reactor::AsyncRings::here();
        }
        false
    }

    /// Catches every calling thread's ring up with the table (after a
    /// shrink), from this thread.
    pub(crate) fn catch_up_all(&self) {
        if let Some(l) = &self.local {
            l.catch_up_all();
        }
        #[cfg(feature = "tokio")]
        if let Some(a) = &self.asyncs {
            a.catch_up_all();
        }
    }

    /// Releases the calling threads' rings that have nothing in flight.
    pub(crate) fn release_idle(&self) {
        if let Some(l) = &self.local {
            l.release_idle();
        }
        #[cfg(feature = "tokio")]
        if let Some(a) = &self.asyncs {
            a.release_idle();
        }
    }

    /// (threads with a ring now, rings made, operations run on them): the
    /// blocking callers' and the runtime threads' together.
    pub(crate) fn counts(&self) -> (usize, u64, u64) {
        let l = self.local.as_ref().map_or((0, 0, 0), |l| l.counts());
        #[cfg(feature = "tokio")]
        if let Some(a) = &self.asyncs {
            let a = a.counts();
            return (l.0 + a.0, l.1 + a.1, l.2 + a.2);
        }
        l
    }

    /// Starts `op` on this thread's asynchronous ring.
    pub(crate) fn start_async(
        &self,
        op: crate::op::Checked,
        state: &Arc<crate::handle::OpState>,
    ) -> std::result::Result<Arc<dyn crate::handle::Driver>, crate::op::Checked> {
        #[cfg(feature = "tokio")]
        if let Some(a) = &self.asyncs {
            return a.start(op, state).map(|r| r as Arc<dyn crate::handle::Driver>);
        }
        let _ = state;
        Err(op)
    }

    pub(crate) fn run(&self, op: crate::op::Checked) -> crate::op::Done {
        let Some(local) = &self.local else {
            self.counters.inline_ops.fetch_add(1, Ordering::Relaxed);
            return op.run_inline();
        };
        // Where the thread's ring would run it inline anyway (a device
        // without NOWAIT, FUSE, an inline policy: one blocking call is a
        // shallow queue), it runs here without touching the ring: fewer
        // cache lines per operation (measured on zram, whose decompression
        // evicts them: 0.2-0.4 µs of a 3.5 µs read).
        use crate::engine::{choose, Device, Inline, Runner};
        let choice = choose(self.policy, Runner::Ring, Device::of(op.op().file()));
        if matches!(choice.inline, Inline::Always | Inline::WhileShallow) {
            self.counters.inline_ops.fetch_add(1, Ordering::Relaxed);
            return op.run_inline();
        }
        let mut op = Some(op);
        let ran = local.with(|ring| {
            let before = ring.stats();
            let done = ring.run_checked(op.take().expect("run once"));
            let after = ring.stats();
            let c = &self.counters;
            c.split_ops.fetch_add(after.split_ops - before.split_ops, Ordering::Relaxed);
            c.inline_ops.fetch_add(after.inline_ops - before.inline_ops, Ordering::Relaxed);
            done
        });
        match ran {
            Ok(done) => done,
            Err(e) => {
                static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
                if !WARNED.swap(true, Ordering::Relaxed) {
                    tracing::warn!("this thread's ring could not be set up ({e}): its calls run inline");
                }
                op.take().expect("not run").run_inline()
            }
        }
    }
}
