//! The blocking engine: each operation runs to completion on the worker
//! thread with preadv2 / pwritev2 / fsync. The pool's backend where io_uring
//! is unavailable, and the side threads that serve FUSE files.

use std::sync::Arc;
use std::time::Duration;

use super::{Counters, Engine, EngineFactory, EngineKind, Setup, Wake};
use crate::error::Result;
use crate::handle::OpState;
use crate::op::Op;

/// Builds blocking engines, reported as `kind` (blocking, or side threads).
pub(crate) struct BlockingFactory {
    pub kind: EngineKind,
}

impl EngineFactory for BlockingFactory {
    fn kind(&self) -> EngineKind {
        self.kind
    }

    fn build(&self, _id: usize, counters: Arc<Counters>) -> Result<(Box<dyn Engine>, Wake, Setup)> {
        let engine = BlockingEngine { counters };
        Ok((Box::new(engine), Wake::Thread(std::thread::current()), Setup::default()))
    }
}

struct BlockingEngine {
    counters: Arc<Counters>,
}

impl Engine for BlockingEngine {
    fn room(&mut self) -> usize {
        1
    }

    fn start(&mut self, op: Op, done: Arc<OpState>) {
        // Checked again inside: the file may have been closed while queued.
        let outcome = op.run_blocking();
        self.counters.finish(&done, outcome);
    }

    fn reap(&mut self) -> usize {
        0
    }

    fn in_flight(&self) -> usize {
        0
    }

    fn sleep(&mut self, timeout: Option<Duration>) {
        // The dispatcher registered this worker as a sleeper before this
        // call; an unpark sent in between is kept by the thread's token.
        match timeout {
            Some(t) => std::thread::park_timeout(t),
            None => std::thread::park(),
        }
    }

    fn recover(&mut self) {
        // Nothing is held between calls: start completes what it takes.
    }
}
