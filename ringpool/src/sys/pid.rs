//! The calling process's id, cached, and refreshed in a forked child by a
//! `pthread_atfork` handler, so that every process-bound object can tell,
//! with one atomic load, whether it is used in the process that made it.
//!
//! # Safety
//!
//! The handler only calls `getpid` (async-signal-safe) and stores an atomic.
//! A child made by a raw `clone` or `fork` system call (not libc's `fork`)
//! skips atfork handlers and keeps the parent's cached id; ringpool does not
//! support such children.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Once;

static PID: AtomicU32 = AtomicU32::new(0);
static HOOK: Once = Once::new();

extern "C" fn refresh() {
    // SAFETY: getpid has no preconditions and cannot fail.
    let pid = unsafe { libc::getpid() };
    PID.store(pid as u32, Ordering::Relaxed);
}

/// The id of the calling process.
pub(crate) fn current_pid() -> u32 {
    HOOK.call_once(|| {
        refresh();
        // SAFETY: registers a child handler that only refreshes an atomic
        // (module doc); the handler is a plain extern "C" fn with no state.
        let rc = unsafe { libc::pthread_atfork(None, None, Some(refresh)) };
        if rc != 0 {
            tracing::warn!("pthread_atfork failed ({rc}): forked children are not detected");
        }
    });
    PID.load(Ordering::Relaxed)
}
