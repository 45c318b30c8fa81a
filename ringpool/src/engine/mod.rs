//! Engines: what runs an [`IoPool`](crate::IoPool)'s operations on its
//! worker threads, behind one interface.
//!
//! - [`uring`]: a ring per worker, with the pool's table (the default);
//! - [`blocking`]: preadv2 / pwritev2 / fsync on the worker thread (where
//!   io_uring is unavailable, and for files io_uring serves badly).
//!
//! [`choose`] is the one place that decides which engine serves a file, and
//! says why. A new engine is a new file here implementing [`Engine`] and
//! [`EngineFactory`], and an arm in [`choose`].

pub(crate) mod blocking;
pub(crate) mod uring;

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::error::Result;
use crate::file::DirectFile;
use crate::handle::OpState;
use crate::op::Op;
pub use crate::types::EngineKind;
use crate::types::{EnginePolicy, Nowait};

/// Which set of workers (lane) of the pool an operation goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LaneId {
    /// The pool's workers (io_uring, or blocking without it).
    Main,
    /// The side threads.
    Side,
}

/// The engine chosen for a file, and why.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Choice {
    pub lane: LaneId,
    pub engine: EngineKind,
    pub reason: &'static str,
    /// The caller that waits may run the operation itself, and the
    /// submission does not wake a worker while the queue is empty.
    pub help: bool,
}

/// What [`choose`] weighs besides the file.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Policy {
    /// The engine the pool's main workers run.
    pub main: EngineKind,
    /// The engine policy asked for.
    pub engine: EnginePolicy,
    /// Whether waiting callers may run operations themselves.
    pub help_while_waiting: bool,
}

/// Decides which engine serves `file`: the one place the choice is made.
pub(crate) fn choose(p: Policy, file: &DirectFile) -> Choice {
    if file.is_fuse() && p.main == EngineKind::IoUring {
        return Choice {
            lane: LaneId::Side,
            engine: EngineKind::SideThreads,
            reason: "the file is on FUSE: io_uring would block its ring on the server and, on Linux 6.18, retry \
                     short transfers at the same offset (duplicated data)",
            help: false,
        };
    }
    if p.main != EngineKind::IoUring {
        return Choice {
            lane: LaneId::Main,
            engine: EngineKind::Blocking,
            reason: "the pool runs the blocking backend (io_uring unavailable or not wanted)",
            help: false,
        };
    }
    let inline = match p.engine {
        EnginePolicy::IoUring => false,
        EnginePolicy::Inline => true,
        EnginePolicy::Auto => file.nowait() == Nowait::Unsupported,
    };
    if !inline {
        return Choice {
            lane: LaneId::Main,
            engine: EngineKind::IoUring,
            reason: "io_uring with the pool's registered table (the device serves non-blocking I/O)",
            help: false,
        };
    }
    Choice {
        lane: LaneId::Main,
        engine: EngineKind::Inline,
        reason: if p.help_while_waiting {
            "the device has no NOWAIT support, so io_uring would hand every request to an io-wq thread: the caller \
             that waits runs the operation itself (preadv2 / pwritev2), a worker runs shallow queues inline and \
             deeper ones through io_uring"
        } else {
            "the device has no NOWAIT support: workers run shallow queues inline (preadv2 / pwritev2) and deeper \
             ones through io_uring"
        },
        help: p.help_while_waiting,
    }
}

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

    /// Completes `done` with `outcome` and counts it.
    pub(crate) fn finish(&self, done: &OpState, outcome: crate::handle::Outcome) {
        self.count(outcome.0.is_ok());
        if !done.complete(outcome) {
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
    /// Starts `op`, whose handle is `done`.
    fn start(&mut self, op: Op, done: Arc<OpState>);
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
