//! How a ring is set up, and what its setup did.

use std::time::Duration;

use io_uring::IoUring;

use crate::errno::setup_error;
use crate::error::{Error, Result};
use crate::types::{EnginePolicy, Sharing, TablePath, INLINE_DEPTH};

/// Kernel limit on SQ entries.
pub const MAX_RING_ENTRIES: u32 = 32768;

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
    /// [`INLINE_DEPTH`](crate::INLINE_DEPTH).
    pub inline_depth: u32,
}

impl Default for RingOptions {
    fn default() -> Self {
        RingOptions {
            entries: 128,
            sharing: None,
            unregister_on_drop: true,
            defer_taskrun: true,
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

/// What happened when a ring was set up.
#[derive(Debug, Clone)]
pub struct RingSetup {
    /// How it got its table.
    pub path: TablePath,
    /// `io_uring_setup` time.
    pub ring_time: Duration,
    /// Clone or register time.
    pub table_time: Duration,
    /// Whether DEFER_TASKRUN was available.
    pub defer_taskrun: bool,
    /// Whether COOP_TASKRUN | TASKRUN_FLAG was set.
    pub coop_taskrun: bool,
    /// Why the preferred path did not run, if it did not.
    pub fallback: Option<String>,
}

impl RingSetup {
    /// Ring plus table time.
    pub fn total(&self) -> Duration {
        self.ring_time + self.table_time
    }
}

/// A range of a clone (`IORING_REGISTER_CLONE_BUFFERS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CloneRange {
    /// First source entry.
    pub src_off: u32,
    /// First destination entry.
    pub dst_off: u32,
    /// Entries; 0 = the whole source table (then both offsets must be 0).
    pub nr: u32,
    /// Replace existing destination entries (DST_REPLACE, Linux 6.13+).
    pub replace: bool,
}

impl CloneRange {
    /// The whole table, into an empty ring.
    pub fn all() -> Self {
        Self::default()
    }
    /// `nr` entries from `src_off` to `dst_off` (ranged clone, Linux 6.13+).
    pub fn range(src_off: u32, dst_off: u32, nr: u32) -> Self {
        CloneRange { src_off, dst_off, nr, replace: false }
    }
    /// With DST_REPLACE.
    pub fn replace(mut self) -> Self {
        self.replace = true;
        self
    }
}

/// Checks a ring depth.
pub(crate) fn check_depth(entries: u32) -> Result<()> {
    if entries == 0 || entries > MAX_RING_ENTRIES {
        return Err(Error::invalid("ring depth", entries, "it must be from 1 to 32768"));
    }
    Ok(())
}

/// How a ring was set up, as far as completions go.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Flags {
    pub defer: bool,
    pub coop: bool,
}

/// Creates a SINGLE_ISSUER ring with the options' task-run mode, falling
/// back to plainer setups on kernels that lack those flags (EINVAL).
pub(crate) fn build_io_uring(opts: &RingOptions) -> Result<(IoUring, Flags)> {
    // entries <= 32768 (check_depth): twice that fits.
    let cq = opts.entries * 2;
    let mut b = IoUring::builder();
    b.setup_single_issuer().setup_cqsize(cq);
    if opts.no_sqarray {
        b.setup_no_sqarray();
    }
    let flags = if opts.defer_taskrun {
        b.setup_defer_taskrun();
        Flags { defer: true, coop: false }
    } else if opts.coop_taskrun {
        b.setup_coop_taskrun().setup_taskrun_flag();
        Flags { defer: false, coop: true }
    } else {
        Flags { defer: false, coop: false }
    };
    let ring = match b.build(opts.entries) {
        Ok(r) => (r, flags),
        // SINGLE_ISSUER (6.0), DEFER_TASKRUN (6.1), COOP_TASKRUN (5.19) or
        // NO_SQARRAY (6.6) unknown: the plain ring.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            let r = IoUring::builder().setup_cqsize(cq).build(opts.entries).map_err(setup_error)?;
            (r, Flags { defer: false, coop: false })
        }
        Err(e) => return Err(setup_error(e)),
    };
    if let Some((bounded, unbounded)) = opts.iowq_max_workers {
        let mut v = [bounded, unbounded];
        if let Err(e) = ring.0.submitter().register_iowq_max_workers(&mut v) {
            tracing::warn!("IORING_REGISTER_IOWQ_MAX_WORKERS failed: {e}");
        }
    }
    Ok(ring)
}
