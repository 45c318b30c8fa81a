//! Completion handles: a blocking `wait()` and a runtime-agnostic `Future`.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::error::Result;
use crate::sys::buf::IoBuf;

/// What a read or write completes with: the count or the error, and the
/// buffer, handed back.
pub type IoResult = (Result<usize>, IoBuf);

struct Slot<T> {
    value: Option<T>,
    taken: bool,
    waker: Option<Waker>,
}

/// The shared state between a handle and the worker completing it.
pub(crate) struct OpState<T> {
    slot: Mutex<Slot<T>>,
    done: Condvar,
}

impl<T> OpState<T> {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(OpState { slot: Mutex::new(Slot { value: None, taken: false, waker: None }), done: Condvar::new() })
    }

    fn lock(&self) -> MutexGuard<'_, Slot<T>> {
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores the result and wakes the waiter. If the handle is gone, the
    /// value (and the buffer in it) is dropped when the last Arc goes.
    pub(crate) fn complete(&self, v: T) {
        let waker = {
            let mut s = self.lock();
            s.value = Some(v);
            s.waker.take()
        };
        self.done.notify_all();
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// A handle on one operation submitted to an [`IoPool`](crate::IoPool).
///
/// [`OpHandle::wait`] blocks; `.await` works in any async runtime (the
/// worker wakes the task's waker). Dropping the handle early is safe: the
/// worker keeps the buffer until the kernel is done with it, then returns it
/// to the allocator.
pub struct OpHandle<T> {
    state: Arc<OpState<T>>,
}

impl<T> std::fmt::Debug for OpHandle<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpHandle").field("done", &self.is_done()).finish()
    }
}

impl<T> OpHandle<T> {
    pub(crate) fn new(state: Arc<OpState<T>>) -> Self {
        OpHandle { state }
    }

    /// A handle that is already complete (an op refused before submission).
    pub(crate) fn ready(v: T) -> Self {
        let state = OpState::new();
        state.complete(v);
        OpHandle { state }
    }

    /// Whether the result is in.
    pub fn is_done(&self) -> bool {
        let s = self.state.lock();
        s.value.is_some() || s.taken
    }

    /// Blocks until the operation completes.
    pub fn wait(self) -> T {
        let mut s = self.state.lock();
        loop {
            if let Some(v) = s.value.take() {
                s.taken = true;
                return v;
            }
            s = self.state.done.wait(s).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Blocks up to `timeout`; gives the handle back if it is not done.
    ///
    /// # Errors
    /// The handle itself, when the time ran out.
    pub fn wait_timeout(self, timeout: Duration) -> std::result::Result<T, Self> {
        let deadline = Instant::now() + timeout;
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
                s = self.state.done.wait_timeout(s, deadline - now).unwrap_or_else(|p| p.into_inner()).0;
            }
        }
        Err(self)
    }
}

impl<T> Future for OpHandle<T> {
    type Output = T;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
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
