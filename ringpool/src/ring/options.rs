//! How a ring is set up, and what its setup did.

use std::time::Duration;

use io_uring::IoUring;

use crate::errno::setup_error;
use crate::error::{Error, Result};
use crate::types::{Sharing, TablePath};

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
}

impl Default for RingOptions {
    fn default() -> Self {
        RingOptions { entries: 128, sharing: None, unregister_on_drop: true, defer_taskrun: true }
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

/// Creates a SINGLE_ISSUER (| DEFER_TASKRUN) ring, falling back to plainer
/// setups on kernels that lack those flags (EINVAL).
pub(crate) fn build_io_uring(entries: u32, defer: bool) -> Result<(IoUring, bool)> {
    // entries <= 32768 (check_depth): twice that fits.
    let cq = entries * 2;
    if !defer {
        return IoUring::builder()
            .setup_single_issuer()
            .setup_cqsize(cq)
            .build(entries)
            .or_else(|_| IoUring::builder().setup_cqsize(cq).build(entries))
            .map(|r| (r, false))
            .map_err(setup_error);
    }
    match IoUring::builder().setup_single_issuer().setup_defer_taskrun().setup_cqsize(cq).build(entries) {
        Ok(r) => Ok((r, true)),
        // DEFER_TASKRUN (6.1) or SINGLE_ISSUER (6.0) unknown.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            IoUring::builder().setup_cqsize(cq).build(entries).map(|r| (r, false)).map_err(setup_error)
        }
        Err(e) => Err(setup_error(e)),
    }
}
