//! tokio without a hand-off (feature `tokio`): an operation awaited on a
//! runtime thread is submitted on that thread's own asynchronous ring, and
//! its completion is driven by the runtime's reactor: the ring's eventfd
//! (IORING_REGISTER_EVENTFD) is an `AsyncFd`, whose readiness wakes the
//! awaiting task; the task reaps the ring's completions when it is polled,
//! on whichever runtime thread that is (tasks migrate).
//!
//! The ring is set up without SINGLE_ISSUER and DEFER_TASKRUN, so that the
//! kernel posts completions (and signals the eventfd) without its thread
//! entering the ring, and a task on another thread may reap them (see
//! [`crate::sys::send`]); only its own thread submits. Operations that find
//! the ring full wait in order for room. A dropped future leaves its
//! operation in flight with its buffers; its completion is reaped by a task
//! spawned for it, by the next task that drives the ring, or when the
//! thread exits (which waits for every operation on its ring). The runtime
//! needs its IO driver (`enable_io` or `enable_all`); without it, awaited
//! operations go to the pool's workers.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use slab::Slab;
use tokio::io::unix::AsyncFd;

use crate::error::{Error, Result};
use crate::handle::{Driver, OpState};
use crate::op::{Checked, Done};
use crate::ring::{Ring, RingOptions};
use crate::sys::send::Lent;
use crate::table::BufferTable;

/// The asynchronous rings of one pool, one per runtime thread that awaited
/// an operation of it.
pub(crate) struct AsyncRings {
    table: Arc<BufferTable>,
    opts: RingOptions,
    /// Every live thread's ring (for a shrink's catch-up, the stats and
    /// the pool's release).
    live: Mutex<Vec<Weak<AsyncRing>>>,
    made: AtomicU64,
    ops: AtomicU64,
}

/// One thread's asynchronous ring.
pub(crate) struct AsyncRing {
    inner: Mutex<Driven>,
    /// The ring's eventfd in the runtime's reactor (`None` once released).
    efd: Mutex<Option<AsyncFd<OwnedFd>>>,
}

/// The ring and the states of the operations in flight on it.
struct Driven {
    /// `None` once released (the pool went away while the thread lives).
    ring: Option<Lent<Ring>>,
    /// In flight, by tag.
    pending: Slab<Arc<OpState>>,
    /// Waiting for room, in order.
    waiting: VecDeque<(Checked, Arc<OpState>)>,
}

thread_local! {
    static MINE: RefCell<Mine> = const { RefCell::new(Mine(Vec::new())) };
}

/// This thread's asynchronous rings; when the thread exits, each waits for
/// its operations and completes their states.
/// (`None`: refused on this thread.)
struct Mine(Vec<(Weak<AsyncRings>, Option<Arc<AsyncRing>>)>);

impl Drop for Mine {
    fn drop(&mut self) {
        for (_, r) in self.0.drain(..) {
            if let Some(r) = r {
                r.finish();
            }
        }
    }
}

impl AsyncRings {
    pub(crate) fn new(table: Arc<BufferTable>, opts: RingOptions) -> AsyncRings {
        AsyncRings { table, opts, live: Mutex::new(Vec::new()), made: AtomicU64::new(0), ops: AtomicU64::new(0) }
    }

    fn live(&self) -> MutexGuard<'_, Vec<Weak<AsyncRing>>> {
        self.live.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn each(&self, mut f: impl FnMut(&AsyncRing)) {
        let rings: Vec<Arc<AsyncRing>> = {
            let mut live = self.live();
            live.retain(|r| r.strong_count() > 0);
            live.iter().filter_map(Weak::upgrade).collect()
        };
        for r in rings {
            f(&r);
        }
    }

    /// Catches every thread's asynchronous ring up with the table now,
    /// from this thread (after a shrink: no ring holds released pages).
    pub(crate) fn catch_up_all(&self) {
        self.each(|r| {
            if let Some(ring) = r.lock().ring.as_mut() {
                if let Err(e) = ring.0.refresh_table() {
                    tracing::warn!("a runtime thread's ring could not catch up with the table: {e}");
                }
            }
        });
    }

    /// Releases the rings with nothing in flight; how many are left.
    pub(crate) fn release_idle(&self) -> usize {
        let mut left = 0;
        self.each(|r| {
            if !r.release() {
                left += 1;
            }
        });
        left
    }

    /// (threads with a ring now, rings made, operations started).
    pub(crate) fn counts(&self) -> (usize, u64, u64) {
        let mut live = 0;
        self.each(|r| live += usize::from(r.lock().ring.is_some()));
        (live, self.made.load(Ordering::Relaxed), self.ops.load(Ordering::Relaxed))
    }

    /// Whether the calling thread is a tokio runtime's.
    pub(crate) fn here() -> bool {
        tokio::runtime::Handle::try_current().is_ok()
    }

    /// This thread's ring for this pool, made now if needed (once refused
    /// on a thread, say for a runtime without its IO driver, not tried
    /// again there).
    fn mine(self: &Arc<Self>) -> Result<Arc<AsyncRing>> {
        let found = MINE.try_with(|m| {
            let mut m = m.borrow_mut();
            m.0.retain(|(p, _)| p.strong_count() > 0);
            m.0.iter().find(|(p, _)| std::ptr::eq(p.as_ptr(), Arc::as_ptr(self))).map(|(_, r)| r.clone())
        });
        let found =
            found.map_err(|_| Error::invalid("async ring", "at thread exit", "this thread's rings are gone"))?;
        match found {
            Some(Some(r)) => return Ok(r),
            Some(None) => return Err(Error::invalid("async ring", "this thread", "refused earlier on this thread")),
            None => {}
        }
        let made = self.make();
        if let Ok(r) = &made {
            self.made.fetch_add(1, Ordering::Relaxed);
            self.live().push(Arc::downgrade(r));
        }
        let keep = made.as_ref().ok().cloned();
        let _ = MINE.try_with(|m| m.borrow_mut().0.push((Arc::downgrade(self), keep)));
        made
    }

    fn make(&self) -> Result<Arc<AsyncRing>> {
        let ring = self.table.ring_with(&self.opts)?;
        let efd = crate::sys::os::eventfd_nonblocking().map_err(|e| Error::os("eventfd", e))?;
        ring.register_eventfd(efd.as_fd())?;
        let efd = crate::sys::os::reactor_fd(efd)
            .map_err(|e| Error::os("register the ring's eventfd with the runtime", e))?;
        Ok(Arc::new(AsyncRing {
            inner: Mutex::new(Driven { ring: Some(Lent(ring)), pending: Slab::new(), waiting: VecDeque::new() }),
            efd: Mutex::new(Some(efd)),
        }))
    }

    /// Starts `op` (whose state is `state`) on this thread's ring.
    pub(crate) fn start(
        self: &Arc<Self>,
        op: Checked,
        state: &Arc<OpState>,
    ) -> std::result::Result<Arc<AsyncRing>, Checked> {
        let ring = match self.mine() {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!("no asynchronous ring on this thread ({e}): the workers take it");
                return Err(op);
            }
        };
        // Where the ring would run it inline anyway (a device without
        // NOWAIT, FUSE, an inline policy) and nothing is outstanding on it:
        // run it now, without the ring's push, submit and reap.
        use crate::engine::{choose, Device, Inline, Runner};
        let inline = matches!(
            choose(self.opts.engine, Runner::Ring, Device::of(op.op().file())).inline,
            Inline::Always | Inline::WhileShallow
        );
        let done = {
            let mut d = ring.lock();
            if d.ring.is_none() {
                return Err(op);
            }
            self.ops.fetch_add(1, Ordering::Relaxed);
            if inline && d.pending.is_empty() && d.waiting.is_empty() {
                drop(d);
                state.complete(op.run_inline());
                return Ok(ring);
            }
            let done = d.push(op, state.clone());
            if let Some(Err(e)) = d.ring.as_mut().map(|r| r.0.submit()) {
                tracing::warn!("submitting on a runtime thread's ring: {e}");
            }
            done
        };
        // Refused before submission (completed with its error).
        if let Some((state, done)) = done {
            state.complete(done);
        }
        Ok(ring)
    }
}

impl Driven {
    /// Pushes one operation, or keeps it for later when the ring is full;
    /// a refused one comes back with its completion.
    fn push(&mut self, op: Checked, state: Arc<OpState>) -> Option<(Arc<OpState>, Done)> {
        let Some(ring) = self.ring.as_mut() else {
            return Some((state, op.into_op().fail(released())));
        };
        if !self.waiting.is_empty() {
            self.waiting.push_back((op, state));
            return None;
        }
        let entry = self.pending.vacant_entry();
        let tag = entry.key() as u64;
        match ring.0.push_checked(op, tag) {
            Ok(()) => {
                entry.insert(state);
                None
            }
            Err((Error::RingFull { .. }, op)) => {
                self.waiting.push_back((Checked::trusted(op), state));
                None
            }
            Err((e, op)) => Some((state, op.fail(e))),
        }
    }

    /// Reaps what completed (inline ones included), then pushes what waited
    /// for room; the states to complete.
    fn reap(&mut self) -> Vec<(Arc<OpState>, Done)> {
        let mut out = Vec::new();
        let Some(ring) = self.ring.as_mut() else { return out };
        while let Some((tag, done)) = ring.0.next_completion() {
            match self.pending.try_remove(tag as usize) {
                Some(state) => out.push((state, done)),
                None => tracing::error!(tag, "a completion for no operation on a runtime thread's ring"),
            }
        }
        while let Some((op, state)) = self.waiting.pop_front() {
            let entry = self.pending.vacant_entry();
            let tag = entry.key() as u64;
            match ring.0.push_checked(op, tag) {
                Ok(()) => {
                    entry.insert(state);
                }
                Err((Error::RingFull { .. }, op)) => {
                    self.waiting.push_front((Checked::trusted(op), state));
                    break;
                }
                Err((e, op)) => out.push((state, op.fail(e))),
            }
        }
        if !self.pending.is_empty() {
            // Only the ring's own thread submits; from another one the
            // pushed operations go with the owner's next call (and a ring
            // that is not SINGLE_ISSUER takes a submit from any thread).
            let _ = ring.0.submit();
        }
        out
    }

    fn in_flight(&self) -> usize {
        self.ring.as_ref().map_or(0, |r| r.0.in_flight())
    }
}

impl AsyncRing {
    fn lock(&self) -> MutexGuard<'_, Driven> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Reaps and completes; whether anything completed.
    fn reap_and_complete(&self) -> bool {
        let done = self.lock().reap();
        let any = !done.is_empty();
        for (state, d) in done {
            state.complete(d);
        }
        any
    }

    /// Waits (up to `timeout`, `None`: without a limit) for one completion
    /// while something is in flight, then reaps; whether anything is left.
    fn wait_and_reap(&self, timeout: Option<Duration>) -> bool {
        {
            let mut d = self.lock();
            if d.in_flight() > 0 {
                if let Some(ring) = d.ring.as_mut() {
                    let _ = match timeout {
                        None => ring.0.wait(1).map(|_| true),
                        Some(t) => ring.0.wait_timeout(Some(t)),
                    };
                }
            }
        }
        self.reap_and_complete();
        let d = self.lock();
        !d.pending.is_empty() || !d.waiting.is_empty()
    }

    /// At the thread's exit: every operation on the ring completes (waited
    /// for) and its state with it; then the ring goes.
    fn finish(&self) {
        while self.wait_and_reap(None) {
            if self.lock().in_flight() == 0 {
                // Waiting for room on a ring with nothing in flight cannot
                // happen (reap pushes them); guard against a spin all the
                // same.
                let mut d = self.lock();
                for (op, state) in std::mem::take(&mut d.waiting) {
                    drop(d);
                    state.complete(op.into_op().fail(released()));
                    d = self.lock();
                }
                if d.pending.is_empty() {
                    break;
                }
            }
        }
        self.release();
    }

    /// Drops the ring (and its eventfd) if nothing is in flight on it;
    /// whether it did (or had already).
    fn release(&self) -> bool {
        let ring = {
            let mut d = self.lock();
            if !d.pending.is_empty() || !d.waiting.is_empty() {
                return false;
            }
            d.ring.take()
        };
        drop(ring);
        drop(self.efd.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take());
        true
    }
}

fn released() -> Error {
    Error::invalid("async ring", "released", "the pool's ring on this thread was released")
}

impl Driver for AsyncRing {
    fn drive(&self, cx: &mut Context<'_>) -> bool {
        let progressed = self.reap_and_complete();
        let held = self.efd.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(efd) = held.as_ref() else { return progressed };
        match efd.poll_read_ready(cx) {
            Poll::Pending => progressed,
            Poll::Ready(Ok(mut guard)) => {
                // Drain the eventfd; readiness is cleared only once it is
                // empty, so that a later signal is a new edge.
                let _ = guard.try_io(|fd| crate::sys::os::eventfd_read_nonblocking(fd.get_ref().as_fd()));
                true
            }
            Poll::Ready(Err(e)) => {
                // The runtime is shutting down: reap by waiting here.
                tracing::debug!("the ring's eventfd left the reactor ({e}): waiting for completions");
                drop(held);
                self.wait_and_reap(Some(Duration::from_millis(10)));
                true
            }
        }
    }

    fn wait_blocking(&self, timeout: Option<Duration>) {
        self.wait_and_reap(timeout);
    }

    fn orphan(self: Arc<Self>) {
        // Reaped now if it already completed; else by a task of its own,
        // which drives the ring until nothing is in flight on it (or by
        // the thread's exit).
        self.reap_and_complete();
        if self.lock().pending.is_empty() {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(reap_until_idle(self));
        }
    }
}

/// Drives `ring` until nothing is in flight on it (the operations of
/// dropped futures complete, and their buffers return to the pool).
async fn reap_until_idle(ring: Arc<AsyncRing>) {
    std::future::poll_fn(|cx| {
        while ring.drive(cx) {}
        if ring.lock().pending.is_empty() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await
}
