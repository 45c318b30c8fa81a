//! Completion handles: the state an operation shares with whoever runs it,
//! a blocking `wait()` and a runtime-agnostic `Future`.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::buf::Buffers;
use crate::error::Error;
use crate::home::Home;
use crate::op::{Checked, Done};

struct Slot {
    /// The operation, while nobody has started it.
    op: Option<Checked>,
    value: Option<Done>,
    taken: bool,
    waker: Option<Waker>,
    /// A worker was asked to take the operation (help-while-waiting).
    kicked: bool,
    /// Threads blocked on `done` (a notify is a system call: only then).
    blocked: u32,
    /// A lane's queue holds a job for it (else whoever awaits or waits
    /// starts it).
    queued: bool,
    /// The ring it is in flight on, when an awaiting task started it there.
    driver: Option<Arc<dyn Driver>>,
}

impl Slot {
    fn new(op: Option<Checked>, value: Option<Done>, queued: bool) -> Slot {
        Slot { op, value, taken: false, waker: None, kicked: false, blocked: 0, queued, driver: None }
    }
}

/// The ring an operation is in flight on, driven by whoever awaits it (a
/// runtime's reactor wakes the task when the ring has completions).
pub(crate) trait Driver: Send + Sync {
    /// Completes what the ring finished and arranges for `cx` to be woken
    /// at the ring's next completions; whether to call it again at once
    /// (the ring signalled meanwhile).
    fn drive(&self, cx: &mut Context<'_>) -> bool;
    /// Blocks (up to `timeout`) for the ring's next completions and
    /// completes what finished (a blocking wait on such an operation).
    fn wait_blocking(&self, timeout: Option<Duration>);
    /// The handle of an operation in flight on it was dropped: its
    /// completion is reaped (and its buffers freed) without a waiter.
    fn orphan(self: Arc<Self>);
}

/// What a handle may do for an operation its submitter did not hand to a
/// worker at once (help-while-waiting): run it on the waiting thread, or
/// ask a worker to take it.
pub(crate) trait Helper: Send + Sync {
    /// Wakes a worker to take queued operations.
    fn kick(&self);
    /// Takes the job of `state` out of the queue, if it is still there.
    fn withdraw(&self, state: &OpState);
    /// Runs `op` on the waiting thread (on its own ring, or inline), and
    /// counts it.
    fn run_here(&self, op: Checked) -> Done;
    /// Counts a task waker that panicked when the operation it ran
    /// completed (caught).
    fn waker_panicked(&self);
    /// Whether the calling thread has an asynchronous ring to start
    /// operations on (a tokio runtime's thread, with the `tokio` feature).
    fn async_here(&self) -> bool;
    /// Starts `op` on the calling thread's asynchronous ring, whose
    /// completions complete `state`; gives it back when that fails.
    fn start_async(&self, op: Checked, state: &Arc<OpState>) -> Result<Arc<dyn Driver>, Checked>;
    /// Queues a state whose operation no lane holds yet for the workers.
    fn enqueue(&self, state: &Arc<OpState>);
}

/// The state a handle shares with the queue and the worker that runs the
/// operation: the operation until someone takes it, then its outcome.
pub(crate) struct OpState {
    slot: Mutex<Slot>,
    done: Condvar,
    /// Set for operations the caller that waits may run itself.
    helper: Option<Arc<dyn Helper>>,
    /// The process of the pool that runs the operation.
    home: Home,
}

impl OpState {
    /// State holding `op`, not yet started; `queued`: a lane's queue holds
    /// a job for it.
    pub(crate) fn new(op: Checked, helper: Option<Arc<dyn Helper>>, home: Home, queued: bool) -> Arc<Self> {
        Arc::new(OpState { slot: Mutex::new(Slot::new(Some(op), None, queued)), done: Condvar::new(), helper, home })
    }

    /// In a forked child: the outcome of an operation of the parent's pool
    /// is [`Error::Forked`](crate::Error::Forked), with the buffers where they can be had
    /// (the operation was still queued, or had completed), else a detached
    /// one. The lock is only tried: a thread of the parent may have held it
    /// at the fork, and then it stays held here.
    fn forked(&self) -> Done {
        let bufs = match self.slot.try_lock() {
            Ok(mut s) => match (s.op.take(), s.value.take()) {
                (Some(op), _) => op.into_op().into_buffers(),
                (None, Some(done)) => done.bufs,
                (None, None) => Buffers::None,
            },
            Err(_) => Buffers::None,
        };
        Done { result: Err(self.home.forked()), bufs }
    }

    /// Runs the operation on this thread if nobody has started it and it
    /// may be helped; returns whether it did (the outcome is then stored).
    fn help(&self) -> bool {
        let Some(helper) = &self.helper else { return false };
        let queued = {
            let s = self.lock();
            if s.op.is_none() {
                return false;
            }
            s.queued
        };
        // The queue must not keep a job nobody needs.
        if queued {
            helper.withdraw(self);
        }
        let Some(op) = self.lock().op.take() else { return false };
        let done = helper.run_here(op);
        if !self.complete(done) {
            helper.waker_panicked();
        }
        true
    }

    /// Asks a worker to take the operation if nobody has started it (once).
    fn kick(&self) {
        let Some(helper) = &self.helper else { return };
        let kick = {
            let mut s = self.lock();
            let k = s.op.is_some() && !s.kicked;
            s.kicked = true;
            k
        };
        if kick {
            helper.kick();
        }
    }

    /// Starts the operation on this thread's asynchronous ring if nobody
    /// has started it and there is one (else the workers take it); returns
    /// whether it did.
    pub(crate) fn start_async(self: &Arc<Self>) -> bool {
        let Some(helper) = &self.helper else { return false };
        if !helper.async_here() {
            return false;
        }
        let queued = {
            let s = self.lock();
            if s.op.is_none() {
                return false;
            }
            s.queued
        };
        if queued {
            helper.withdraw(self);
        }
        let Some(op) = self.lock().op.take() else { return false };
        match helper.start_async(op, self) {
            Ok(driver) => {
                self.lock().driver = Some(driver);
                true
            }
            Err(op) => {
                // No room or no ring here: the workers take it.
                {
                    let mut s = self.lock();
                    s.op = Some(op);
                    s.queued = true;
                }
                helper.enqueue(self);
                false
            }
        }
    }

    /// Blocks until the outcome is in (or `deadline`) while the operation
    /// is in flight on an asynchronous ring, driving that ring (nobody
    /// else may be).
    fn drive_blocking(&self, deadline: Option<Instant>) {
        // Each wait is short: another thread may reap this completion.
        const STEP: Duration = Duration::from_millis(10);
        loop {
            let driver = {
                let s = self.lock();
                if s.value.is_some() {
                    return;
                }
                s.driver.clone()
            };
            let Some(d) = driver else { return };
            let step = match deadline {
                None => STEP,
                Some(dl) => match dl.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => left.min(STEP),
                    _ => return,
                },
            };
            d.wait_blocking(Some(step));
        }
    }

    /// Hands the operation to the workers' queue if nobody started it and
    /// no lane holds it yet.
    fn ensure_queued(self: &Arc<Self>) {
        let Some(helper) = &self.helper else { return };
        let enqueue = {
            let mut s = self.lock();
            let e = s.op.is_some() && !s.queued;
            s.queued |= e;
            e
        };
        if enqueue {
            helper.enqueue(self);
        }
    }

    fn lock(&self) -> MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes the operation to run it; `None` if someone else took it.
    pub(crate) fn take_op(&self) -> Option<Checked> {
        self.lock().op.take()
    }

    /// Stores the outcome and wakes the waiter. If the handle is gone, the
    /// outcome (and the buffers in it) is dropped when the last Arc goes.
    /// A waker that panics is caught (the outcome is already stored);
    /// returns `false` then.
    pub(crate) fn complete(&self, v: Done) -> bool {
        let (waker, blocked) = {
            let mut s = self.lock();
            s.value = Some(v);
            (s.waker.take(), s.blocked > 0)
        };
        if blocked {
            self.done.notify_all();
        }
        match waker {
            Some(w) => {
                let woke = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| w.wake())).is_ok();
                if !woke {
                    tracing::error!("a task's waker panicked when its operation completed; the result is stored");
                }
                woke
            }
            None => true,
        }
    }

    /// Completes with `e` and the buffers of the operation, if nobody has
    /// started it yet. Returns whether it did.
    pub(crate) fn fail_unstarted(&self, e: impl FnOnce() -> Error) -> bool {
        let op = self.lock().op.take();
        match op {
            Some(op) => {
                self.complete(op.into_op().fail(e()));
                true
            }
            None => false,
        }
    }
}

/// A handle on one operation submitted to an [`IoPool`](crate::IoPool):
/// it resolves to the operation's [`Done`].
///
/// [`OpHandle::wait`] blocks; `.await` works in any async runtime (the
/// worker wakes the task's waker). Dropping the handle early is safe: the
/// worker keeps the buffers until the kernel is done with them, then returns
/// them to the allocator.
#[must_use = "an operation's buffers come back through its handle"]
pub struct OpHandle {
    state: Arc<OpState>,
}

impl std::fmt::Debug for OpHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let done = self.state.slot.try_lock().map(|s| s.value.is_some() || s.taken).ok();
        f.debug_struct("OpHandle").field("done", &done).finish()
    }
}

impl OpHandle {
    pub(crate) fn new(state: Arc<OpState>) -> Self {
        OpHandle { state }
    }

    /// A handle that is already complete (an op refused before submission).
    pub(crate) fn ready(v: Done) -> Self {
        let state = Arc::new(OpState {
            slot: Mutex::new(Slot::new(None, Some(v), false)),
            done: Condvar::new(),
            helper: None,
            home: Home::here("OpHandle"),
        });
        OpHandle::new(state)
    }

    /// Whether the result is in (in a forked child: always, it is
    /// [`Error::Forked`](crate::Error::Forked)).
    pub fn is_done(&self) -> bool {
        if !self.state.home.is_here() {
            return true;
        }
        let s = self.state.lock();
        s.value.is_some() || s.taken
    }

    /// Blocks until the operation completes. An operation no worker has
    /// started yet runs on this thread, on its own ring (or inline where
    /// the engine choice says so): no hand-off.
    pub fn wait(self) -> Done {
        if !self.state.home.is_here() {
            return self.state.forked();
        }
        self.state.help();
        self.state.drive_blocking(None);
        let mut s = self.state.lock();
        loop {
            if let Some(v) = s.value.take() {
                s.taken = true;
                return v;
            }
            s.blocked += 1;
            s = self.state.done.wait(s).unwrap_or_else(|p| p.into_inner());
            s.blocked -= 1;
        }
    }

    /// Blocks up to `timeout`; gives the handle back if it is not done.
    ///
    /// # Errors
    /// The handle itself, when the time ran out.
    pub fn wait_timeout(self, timeout: Duration) -> std::result::Result<Done, Self> {
        if !self.state.home.is_here() {
            return Ok(self.state.forked());
        }
        let Some(deadline) = Instant::now().checked_add(timeout) else { return Ok(self.wait()) };
        self.state.help();
        self.state.drive_blocking(Some(deadline));
        {
            let mut s = self.state.lock();
            loop {
                if let Some(v) = s.value.take() {
                    s.taken = true;
                    return Ok(v);
                }
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                s.blocked += 1;
                s = self.state.done.wait_timeout(s, deadline - now).unwrap_or_else(|p| p.into_inner()).0;
                s.blocked -= 1;
            }
        }
        Err(self)
    }
}

impl Drop for OpHandle {
    fn drop(&mut self) {
        // An operation nobody waits for any more still runs (not in a
        // forked child: the workers and rings are the parent's): on this
        // thread's asynchronous ring, or a worker takes it; one in flight
        // on a ring is reaped there without a waiter.
        if !self.state.home.is_here() {
            return;
        }
        let (unstarted, queued, driver) = {
            let s = self.state.lock();
            (s.op.is_some(), s.queued, s.value.is_none().then(|| s.driver.clone()).flatten())
        };
        if unstarted && !queued {
            if self.state.start_async() {
                if let Some(d) = self.state.lock().driver.clone() {
                    d.orphan();
                }
            } else {
                self.state.ensure_queued();
                self.state.kick();
            }
        } else if let Some(d) = driver {
            d.orphan();
        } else {
            self.state.kick();
        }
    }
}

impl Future for OpHandle {
    type Output = Done;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Done> {
        if !self.state.home.is_here() {
            return Poll::Ready(self.state.forked());
        }
        let state = &self.state;
        loop {
            let driver = {
                let mut s = state.lock();
                if let Some(v) = s.value.take() {
                    s.taken = true;
                    return Poll::Ready(v);
                }
                match &s.waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => s.waker = Some(cx.waker().clone()),
                }
                s.driver.clone()
            };
            match driver {
                // In flight on a ring this task drives.
                Some(d) => {
                    if !d.drive(cx) {
                        return Poll::Pending;
                    }
                }
                // On a runtime thread with a ring: started there, no hand-off.
                None if state.start_async() => {}
                // A task is not blocked on the I/O: a worker runs it.
                None => {
                    state.ensure_queued();
                    state.kick();
                    let mut s = state.lock();
                    if let Some(v) = s.value.take() {
                        s.taken = true;
                        return Poll::Ready(v);
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}
