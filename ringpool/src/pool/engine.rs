//! What runs an [`IoPool`](crate::IoPool)'s operations on its worker
//! threads, behind one interface: a worker engine.
//!
//! - [`uring_worker`](super::uring_worker): a ring per worker, with the
//!   pool's table (the default);
//! - [`inline_worker`](super::inline_worker): the inline engine on a worker
//!   thread (preadv2 / pwritev2 / fsync), for pools without io_uring and
//!   for the side threads that serve FUSE files.
//!
//! Which worker set serves a file is the engine choice's
//! ([`crate::engine::choose`]). A new worker engine is a file beside these
//! implementing [`Engine`] and [`EngineFactory`].

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::error::Result;
use crate::handle::OpState;
use crate::op::{Checked, Done};
use crate::types::EngineKind;

/// Pool-wide operation counters.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub submitted: AtomicU64,
    pub completed: AtomicU64,
    pub failed: AtomicU64,
    /// Vectored operations split into one SQE per segment.
    pub split_ops: AtomicU64,
    /// Wakers that panicked when their operation completed (caught).
    pub waker_panics: AtomicU64,
    /// Operations workers ran inline (no NOWAIT on the device, shallow queue).
    pub inline_ops: AtomicU64,
    /// Operations the caller that waited ran itself.
    pub helped_ops: AtomicU64,
}

impl Counters {
    /// Counts one completed operation.
    pub(crate) fn count(&self, ok: bool) {
        self.completed.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Completes `state` with `done` and counts it.
    pub(crate) fn finish(&self, state: &OpState, done: Done) {
        self.count(done.is_ok());
        if !state.complete(done) {
            self.waker_panics.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// How a submitter wakes a worker sleeping in [`Engine::sleep`].
#[derive(Debug)]
pub(crate) enum Wake {
    /// A write to the eventfd whose read the worker's ring keeps in flight.
    EventFd(Arc<OwnedFd>),
    /// An unpark of the worker thread.
    Thread(std::thread::Thread),
}

impl Wake {
    pub(crate) fn wake(&self) {
        match self {
            Wake::EventFd(fd) => crate::sys::os::eventfd_signal(std::os::fd::AsFd::as_fd(&**fd)),
            Wake::Thread(t) => t.unpark(),
        }
    }
}

/// Where a worker's start-up time went, beyond starting the thread.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Setup {
    /// `io_uring_setup`.
    pub ring: Duration,
    /// Getting the table (clone or register).
    pub table: Duration,
}

/// Builds a worker's engine on the worker's own thread.
pub(crate) trait EngineFactory: Send + Sync {
    /// The engine it builds.
    fn kind(&self) -> EngineKind;
    /// Builds the engine for worker `id` (on the calling thread, which it
    /// then runs on), with the wake-up submitters use.
    fn build(&self, id: usize, counters: Arc<Counters>) -> Result<(Box<dyn Engine>, Wake, Setup)>;
}

/// One worker's engine. Synchronous engines complete an operation in
/// [`Engine::start`]; asynchronous ones in [`Engine::reap`].
pub(crate) trait Engine {
    /// Operations it can take now.
    fn room(&mut self) -> usize;
    /// Starts `op`, whose handle's state is `state`.
    fn start(&mut self, op: Checked, state: Arc<OpState>);
    /// Hands what was started to the kernel, if it batches.
    fn flush(&mut self) {}
    /// Completes the operations that finished, and notes wake-ups; returns
    /// how many events it handled.
    fn reap(&mut self) -> usize;
    /// Operations started and not yet completed.
    fn in_flight(&self) -> usize;
    /// Blocks until a completion, a wake-up, or `timeout` (none: no limit).
    fn sleep(&mut self, timeout: Option<Duration>);
    /// Work between passes (picking up table growth).
    fn upkeep(&mut self) {}
    /// After a panic in the worker loop: completes everything still in
    /// flight, so that no handle waits forever and no buffer is lost.
    fn recover(&mut self);
}
