//! Which process an object belongs to.
//!
//! Every object that holds process-bound state (a pool's memory and
//! allocator, a table's template ring, a ring, a pool's threads, a pending
//! operation) records the process that made it. In a process forked from
//! that one, its calls return [`Error::Forked`] before touching anything the
//! parent owns (a lock another thread held at the fork would never be
//! released in the child), and dropping it releases only what the child
//! owns.

use crate::error::{Error, Result};
use crate::sys::pid::current_pid;

/// The process an object was made in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Home {
    pid: u32,
    what: &'static str,
}

impl Home {
    /// The calling process, for an object of type `what`.
    pub(crate) fn here(what: &'static str) -> Home {
        Home { pid: current_pid(), what }
    }

    /// Whether the calling process is this one.
    pub(crate) fn is_here(&self) -> bool {
        self.pid == current_pid()
    }

    /// [`Error::Forked`] when called from another process.
    pub(crate) fn check(&self) -> Result<()> {
        if self.is_here() {
            Ok(())
        } else {
            Err(self.forked())
        }
    }

    /// The error for a call from another process.
    pub(crate) fn forked(&self) -> Error {
        Error::Forked { what: self.what, created_in: self.pid, now: current_pid() }
    }
}
