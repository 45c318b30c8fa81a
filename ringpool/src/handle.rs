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
    /// State holding `op`, not yet started.
    pub(crate) fn new(op: Checked, helper: Option<Arc<dyn Helper>>, home: Home) -> Arc<Self> {
        Arc::new(OpState {
            slot: Mutex::new(Slot { op: Some(op), value: None, taken: false, waker: None, kicked: false, blocked: 0 }),
            done: Condvar::new(),
            helper,
            home,
        })
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
        if self.lock().op.is_none() {
            return false;
        }
        // The queue must not keep a job nobody needs.
        helper.withdraw(self);
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
            slot: Mutex::new(Slot { op: None, value: Some(v), taken: false, waker: None, kicked: false, blocked: 0 }),
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
        // An operation nobody waits for any more still runs: a worker takes
        // it (not in a forked child: the workers are the parent's).
        if self.state.home.is_here() {
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
        // A task is not blocked on the I/O: a worker runs it.
        self.state.kick();
        let mut s = self.state.lock();
        if let Some(v) = s.value.take() {
            s.taken = true;
            return Poll::Ready(v);
        }
        match &s.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => s.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}
