//! How a ring is set up.

use crate::error::{Error, Result};
use crate::types::{EnginePolicy, Sharing, INLINE_DEPTH, MAX_RING_ENTRIES};
use crate::uring::Setup;

/// Options for a new ring.
#[derive(Debug, Clone)]
pub struct RingOptions {
    /// Submission queue entries, 1 to 32768 (default 128); the completion
    /// queue has twice as many.
    pub entries: u32,
    /// Overrides the table's sharing for this ring.
    pub sharing: Option<Sharing>,
    /// Unregister the table before closing the ring (default `true`): the
    /// unpinning then runs on the dropping thread instead of in the
    /// background, where it would show up as other rings' tail latency.
    pub unregister_on_drop: bool,
    /// Set the ring up with DEFER_TASKRUN (default `true`, Linux 6.1+):
    /// completions are posted only when the owning thread waits, in one
    /// batch, with no interrupt of the thread. Without it, they are posted as
    /// soon as the kernel can (task work with a signal-style notification),
    /// which can lower latency for operations completed by io-wq workers
    /// (devices without NOWAIT support, such as zram).
    pub defer_taskrun: bool,
    /// Set the ring up SINGLE_ISSUER (default `true`, Linux 6.0+): only its
    /// thread submits and registers on it. Without it (and so without
    /// DEFER_TASKRUN, which needs it), another thread may update its table
    /// (an [`IoPool`](crate::IoPool)'s shrink catches the calling threads'
    /// rings up from its own thread), and completions are posted without
    /// the owner entering the kernel (a runtime's reactor can reap them).
    pub single_issuer: bool,
    /// Without DEFER_TASKRUN: set the ring up with COOP_TASKRUN |
    /// TASKRUN_FLAG (Linux 5.19+; default `false`): completions are posted
    /// when the thread next enters the kernel, without interrupting it.
    pub coop_taskrun: bool,
    /// Set the ring up with NO_SQARRAY (Linux 6.6+; default `false`).
    pub no_sqarray: bool,
    /// Limits of the ring thread's io-wq workers, bounded and unbounded
    /// (IORING_REGISTER_IOWQ_MAX_WORKERS, Linux 5.15+); `None` keeps the
    /// kernel's (default).
    pub iowq_max_workers: Option<(u32, u32)>,
    /// [`Ring::wait`](crate::Ring::wait) for more than the completions
    /// asked for, until this much time passed with at least one ready
    /// (min_wait_usec, Linux 6.12+; default `None`: wake at the first).
    pub min_wait: Option<std::time::Duration>,
    /// Which engine serves operations (default [`EnginePolicy::Auto`]).
    pub engine: EnginePolicy,
    /// Under [`EnginePolicy::Auto`], operations on a device without NOWAIT
    /// run inline while fewer than this many are outstanding (queued,
    /// running, or completed and not yet taken). Default
    /// [`INLINE_DEPTH`].
    pub inline_depth: u32,
}

impl Default for RingOptions {
    fn default() -> Self {
        RingOptions {
            entries: 128,
            sharing: None,
            unregister_on_drop: true,
            defer_taskrun: true,
            single_issuer: true,
            coop_taskrun: false,
            no_sqarray: false,
            iowq_max_workers: None,
            min_wait: None,
            engine: EnginePolicy::Auto,
            inline_depth: INLINE_DEPTH,
        }
    }
}

impl RingOptions {
    /// Default options.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets the depth.
    pub fn entries(mut self, entries: u32) -> Self {
        self.entries = entries;
        self
    }
    /// Overrides the sharing.
    pub fn sharing(mut self, sharing: Sharing) -> Self {
        self.sharing = Some(sharing);
        self
    }
    /// Sets DEFER_TASKRUN (see the field).
    pub fn defer_taskrun(mut self, yes: bool) -> Self {
        self.defer_taskrun = yes;
        self
    }
    /// Sets SINGLE_ISSUER (see the field; `false` also clears DEFER_TASKRUN).
    pub fn single_issuer(mut self, yes: bool) -> Self {
        self.single_issuer = yes;
        self
    }
    /// Sets COOP_TASKRUN | TASKRUN_FLAG (see the field).
    pub fn coop_taskrun(mut self, yes: bool) -> Self {
        self.coop_taskrun = yes;
        self
    }
    /// Sets NO_SQARRAY.
    pub fn no_sqarray(mut self, yes: bool) -> Self {
        self.no_sqarray = yes;
        self
    }
    /// Limits the ring thread's io-wq workers.
    pub fn iowq_max_workers(mut self, bounded: u32, unbounded: u32) -> Self {
        self.iowq_max_workers = Some((bounded, unbounded));
        self
    }
    /// Sets the engine policy.
    pub fn engine(mut self, engine: EnginePolicy) -> Self {
        self.engine = engine;
        self
    }
    /// Sets the inline depth (see the field).
    pub fn inline_depth(mut self, depth: u32) -> Self {
        self.inline_depth = depth;
        self
    }
}

impl RingOptions {
    /// The kernel setup these options ask for: SINGLE_ISSUER, with the
    /// task-run mode asked for.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a depth of 0 or above 32768.
    pub(crate) fn setup(&self) -> Result<Setup> {
        check_depth(self.entries)?;
        Ok(Setup {
            entries: self.entries,
            single_issuer: self.single_issuer,
            defer_taskrun: self.defer_taskrun && self.single_issuer,
            coop_taskrun: self.coop_taskrun,
            no_sqarray: self.no_sqarray,
            disabled: false,
        })
    }
}

/// Checks a ring depth.
pub(crate) fn check_depth(entries: u32) -> Result<()> {
    if entries == 0 || entries > MAX_RING_ENTRIES {
        return Err(Error::invalid("ring depth", entries, "it must be from 1 to 32768"));
    }
    Ok(())
}
