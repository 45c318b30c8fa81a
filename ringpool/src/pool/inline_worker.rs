//! The inline engine on a worker thread: each operation runs to
//! completion there with preadv2 / pwritev2 / fsync
//! ([`Checked::run_inline`], the same function a ring and a waiting caller
//! run inline operations with). The pool's blocking engine where io_uring
//! is unavailable or not wanted, and the side threads that serve FUSE
//! files.

use std::sync::Arc;
use std::time::Duration;

use super::engine::{Counters, Engine, EngineFactory, Setup, Wake};
use crate::error::Result;
use crate::handle::OpState;
use crate::op::Checked;
use crate::types::EngineKind;

/// Builds inline engines, reported as `kind` (blocking, or side threads).
pub(crate) struct InlineFactory {
    pub kind: EngineKind,
}

impl EngineFactory for InlineFactory {
    fn kind(&self) -> EngineKind {
        self.kind
    }

    fn build(&self, _id: usize, counters: Arc<Counters>) -> Result<(Box<dyn Engine>, Wake, Setup)> {
        let engine = InlineEngine { counters };
        Ok((Box::new(engine), Wake::Thread(std::thread::current()), Setup::default()))
    }
}

struct InlineEngine {
    counters: Arc<Counters>,
}

impl Engine for InlineEngine {
    fn room(&mut self) -> usize {
        1
    }

    fn start(&mut self, op: Checked, state: Arc<OpState>) {
        // A file closed while the operation was queued fails it here.
        self.counters.finish(&state, op.run_inline());
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
