//! What ringpool reports: snapshots and reports as plain data, one home for
//! every number a user, a benchmark or `--json` reads. A pool's
//! [`PoolStats`] (serializable with the `serde` feature), a ring's
//! [`RingSetup`] and [`RingStats`], the allocator's [`AllocStats`], each
//! segment's [`SegmentStats`], what a growth or a shrink did
//! ([`GrowReport`], [`ShrinkReport`]), a ring broker's [`BrokerStats`], and
//! the memlock planner's [`Plan`].
//!
//! This module imports nothing of the crate but its vocabulary.

use std::ops::Range;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::types::{Bytes, EngineKind, Nowait, PageKind, TablePath};

/// Statistics of an [`IoPool`](crate::IoPool): one snapshot, serializable
/// with the `serde` feature (`ringpool soak --json` prints it).
#[derive(Debug, Clone)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct PoolStats {
    /// The engine of the pool's main workers: io_uring, or blocking calls.
    pub engine: EngineKind,
    /// How worker rings get the table (`None` for the blocking engine).
    pub path: Option<TablePath>,
    /// Every fallback taken, in words.
    pub fallbacks: Vec<String>,
    /// Workers running now (main workers; side threads apart).
    pub workers: usize,
    /// Side threads running now (FUSE files).
    pub side_threads: usize,
    /// Workers started since the pool was built.
    pub workers_started: u64,
    /// Workers that exited after idling.
    pub workers_retired: u64,
    /// Workers that failed to start.
    pub spawn_failures: u64,
    /// The last start failure.
    pub last_spawn_error: Option<String>,
    /// Workers that unwound from a panic (and were replaced).
    pub worker_panics: u64,
    /// Task wakers that panicked when their operation completed (caught on
    /// the worker; the result was delivered).
    pub waker_panics: u64,
    /// Spin-up time (thread + ring + table) of every worker started.
    pub spinups: Vec<Duration>,
    /// The same, broken down.
    pub spinup_parts: Vec<SpinupParts>,
    /// Operations accepted.
    pub submitted: u64,
    /// Operations completed (successfully or not).
    pub completed: u64,
    /// Operations that completed with an error.
    pub failed: u64,
    /// Vectored operations whose buffers spanned segments, split into one
    /// SQE per segment (or per buffer, without READV_FIXED).
    pub split_ops: u64,
    /// Operations the workers ran inline (devices without NOWAIT, shallow
    /// queues).
    pub inline_ops: u64,
    /// Operations the caller that waited ran itself (help-while-waiting).
    pub helped_ops: u64,
    /// Calling threads that have their own ring for this pool now.
    pub local_rings: usize,
    /// Calling threads' rings made since the pool was built.
    pub local_rings_made: u64,
    /// Operations run on calling threads' rings ([`IoPool::run`](crate::IoPool::run),
    /// waiters helping, [`IoPool::with_ring`](crate::IoPool::with_ring) calls).
    pub local_ops: u64,
    /// The engine chosen for each file the pool served, and why.
    pub files: Vec<FileEngine>,
    /// Operations waiting in the queue now.
    pub queued: usize,
    /// The allocator.
    pub alloc: AllocStats,
    /// Time to register the table once.
    pub register_time: Option<Duration>,
    /// Each running worker.
    pub per_worker: Vec<WorkerStats>,
    /// Each segment of the pool.
    pub segments: Vec<SegmentStats>,
    /// The pool's bytes.
    pub pool_bytes: u64,
    /// Bytes the pool's tables pin, by ringpool's accounting: the pool once
    /// with clone, once per ring and once for the template with
    /// register-each, nothing unregistered or blocking.
    pub pinned_bytes: u64,
    /// VmPin of this process now (all of its pinned memory), when readable.
    pub process_pinned_bytes: Option<u64>,
    /// Bytes moved by operations the workers started.
    pub bytes_moved: u64,
}

/// The engine a pool chose for a file, and why.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct FileEngine {
    /// The file's path.
    pub path: PathBuf,
    /// The engine.
    pub engine: EngineKind,
    /// Why.
    pub reason: &'static str,
    /// What is known of the file's device (when the pool first saw it).
    pub device: DeviceStats,
}

/// What ringpool learned of a device: NOWAIT support, and which engine
/// its operations measured faster at depth 1, in each direction
/// ([`DirectFile::device_stats`](crate::DirectFile::device_stats)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct DeviceStats {
    /// The device number (of a regular file's file system, or of the block
    /// device); 0 when unknown.
    pub device: u64,
    /// Whether it serves non-blocking direct I/O (RWF_NOWAIT).
    pub nowait: Nowait,
    /// Reads at depth 1.
    pub reads: ShallowStats,
    /// Writes at depth 1.
    pub writes: ShallowStats,
}

/// The depth-1 measurements of one direction on one device: operations
/// started on an idle ring, push to completion, an exponentially weighted
/// mean over about the last 16 of each engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct ShallowStats {
    /// "learning" (too few samples yet), "sync" (preadv2 / pwritev2 faster
    /// by 2% or more: an idle ring runs them inline), "io_uring".
    pub verdict: &'static str,
    /// Mean latency of the synchronous path, ns.
    pub sync_mean_ns: u64,
    /// Mean latency of io_uring, ns.
    pub io_uring_mean_ns: u64,
    /// Samples of the synchronous path.
    pub sync_samples: u64,
    /// Samples of io_uring.
    pub io_uring_samples: u64,
}

/// One worker of a pool, now.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct WorkerStats {
    /// Its id in the pool (thread name `ringpool-w<id>`).
    pub id: usize,
    /// Its engine.
    pub engine: EngineKind,
    /// Operations it started.
    pub ops: u64,
    /// Bytes those operations move.
    pub bytes: u64,
    /// Operations it has in flight now.
    pub in_flight: u64,
    /// The table generation its ring has (`None` without a ring).
    pub table_generation: Option<u64>,
    /// Its spin-up.
    pub spinup: SpinupParts,
}

/// Where one worker's spin-up time went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct SpinupParts {
    /// From the spawn call to the first instruction of the worker thread.
    pub thread: Duration,
    /// `io_uring_setup` of its ring.
    pub ring: Duration,
    /// Getting the table (clone or register).
    pub table: Duration,
    /// Everything, until the worker is ready for work.
    pub total: Duration,
}

/// Allocator statistics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct AllocStats {
    /// Bytes the pool can lease.
    pub capacity: u64,
    /// Bytes leased now (each lease rounded up to the alignment).
    pub bytes_in_use: u64,
    /// Bytes of the buddy blocks backing them (powers of two).
    pub block_bytes: u64,
    /// Leases outstanding now.
    pub leases: u64,
    /// Highest `bytes_in_use` seen.
    pub peak_bytes: u64,
    /// Leases granted since the pool was created.
    pub total_leases: u64,
    /// `try_alloc` calls that found no block.
    pub failed: u64,
    /// The largest block free now.
    pub largest_free: u64,
}

/// One segment of the pool, now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct SegmentStats {
    /// Its index (table slot).
    pub index: u16,
    /// Its first byte's pool offset.
    pub offset: u64,
    /// Its length.
    pub len: u64,
    /// Bytes leased from it.
    pub bytes_leased: u64,
    /// Leases out in it.
    pub leases: u64,
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

/// Counters of what a [`Ring`](crate::Ring) did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RingStats {
    /// Operations accepted.
    pub ops: u64,
    /// SQEs they took (more than `ops` when some were split).
    pub sqes: u64,
    /// Vectored operations split into one SQE per segment (or per buffer,
    /// without READV_FIXED).
    pub split_ops: u64,
    /// Operations run inline (preadv2 / pwritev2 in `push`), not by io_uring.
    pub inline_ops: u64,
}

/// What a growth did and how long each step took.
#[derive(Debug, Clone)]
pub struct GrowReport {
    /// The new segments (table slots).
    pub segments: Range<u16>,
    /// Bytes added.
    pub bytes: u64,
    /// Table generation now published (0 without a table).
    pub generation: u64,
    /// Mapping the memory.
    pub map_time: Duration,
    /// Faulting it in.
    pub prefault_time: Duration,
    /// Registering it into the template's free slots (zero without a table).
    pub register_time: Duration,
    /// When registration began (rings can pick the growth up from then on).
    pub register_started: Instant,
    /// Rings handed to other processes that got the new slots
    /// ([`HandoverOptions::follow_growth`](crate::handover::HandoverOptions::follow_growth)).
    pub handed_rings: u32,
}

/// What a shrink released and how long each step took.
#[derive(Debug, Clone)]
pub struct ShrinkReport {
    /// The segments released (the pool's last ones; their table slots are
    /// holes now, free for a later growth).
    pub segments: Range<u16>,
    /// Bytes released.
    pub bytes: u64,
    /// Table generation that dropped them (0 without a table).
    pub generation: u64,
    /// Waiting for the leases in those segments to come back.
    pub drain_time: Duration,
    /// Taking them out of the template and the rings.
    pub unpublish_time: Duration,
    /// Unmapping them.
    pub unmap_time: Duration,
    /// From the call until the memory was unmapped.
    pub total: Duration,
}

/// A ring broker's state, as [`RingBroker::status`](crate::handover::RingBroker::status)
/// asks it over its socket (`ringpool serve --status`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct BrokerStatus {
    /// The serving process.
    pub pid: u32,
    /// Bytes of the pool now.
    pub pool_bytes: u64,
    /// Segments of the pool (filled table slots).
    pub segments: u16,
    /// Table slots (the most segments the pool may grow to).
    pub capacity: u16,
    /// Rings handed over since the start.
    pub served: u64,
    /// Connections or requests refused since the start.
    pub refused: u64,
    /// Handed rings that follow the pool's growth, as the owner keeps them
    /// (a ring whose process is gone goes at the next growth).
    pub following_rings: u32,
    /// Growths on a client's request since the start.
    pub growths: u64,
    /// Idle shrinks since the start ([`BrokerOptions::shrink_idle`](crate::handover::BrokerOptions::shrink_idle)).
    pub shrinks: u64,
    /// Idle shrinks that failed (a segment still held at the deadline).
    pub shrink_timeouts: u64,
    /// The connections open now.
    pub clients: Vec<BrokerClient>,
}

/// One connection of a ring broker.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct BrokerClient {
    /// The peer's process id (SO_PEERCRED at connect).
    pub pid: u32,
    /// Its user (SO_PEERCRED at connect): the broker's own, or one it
    /// allows ([`BrokerOptions::allow_uids`](crate::handover::BrokerOptions::allow_uids)).
    pub uid: u32,
    /// Rings handed to it.
    pub rings: u32,
    /// The segments it leases from alone (empty: none).
    pub lease_segments: std::ops::Range<u16>,
}

/// What a ring broker has done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BrokerStats {
    /// Rings handed over.
    pub served: u64,
    /// Connections or requests refused.
    pub refused: u64,
    /// Connections open now.
    pub clients: u64,
}

/// What a configuration pins and is charged, what the process has, and
/// whether it fits ([`PlanRequest::plan`](crate::plan::PlanRequest::plan)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Plan {
    /// Pool size, rounded up to whole pages.
    pub pool_bytes: u64,
    /// Rings planned for.
    pub rings: u32,
    /// Pages that would back the pool (in JSON: "2M", "1G", "thp", "4k").
    #[cfg_attr(feature = "serde", serde(serialize_with = "page_name_ser"))]
    pub page_size: PageKind,
    /// How rings would get the table: [`TablePath::Cloned`],
    /// [`TablePath::Registered`] or [`TablePath::Unregistered`] (in JSON:
    /// "clone", "register-each", "unregistered").
    #[cfg_attr(feature = "serde", serde(serialize_with = "display_ser"))]
    pub sharing: TablePath,
    /// Bytes of registered buffers (VmPin): the pool once with clone, once
    /// per ring plus the template with register-each.
    pub pinned_bytes: u64,
    /// Memory of one ring charged to RLIMIT_MEMLOCK (0 where the kernel
    /// does not charge ring memory; a process with CAP_IPC_LOCK is charged
    /// nothing at all).
    pub ring_bytes_each: u64,
    /// How `ring_bytes_each` was found: "trial", "kernel layout", or "not
    /// charged".
    pub ring_bytes_source: String,
    /// What RLIMIT_MEMLOCK must allow a process without CAP_IPC_LOCK:
    /// pinned bytes and ring memory (the rings and the template's).
    pub memlock_needed_bytes: u64,
    /// The soft RLIMIT_MEMLOCK (`None`: unlimited).
    pub memlock_limit_bytes: Option<u64>,
    /// Whether the process has CAP_IPC_LOCK.
    pub cap_ipc_lock: bool,
    /// Huge pages the pool needs (0 for THP and base pages).
    pub hugepages_needed: u64,
    /// Huge pages of that size free now.
    pub hugepages_free: u64,
    /// Whether the configuration fits now (other processes of the same user
    /// that lock memory share the limit: it assumes none).
    pub fits: bool,
    /// What to change, exactly, when it does not fit (and notes when it
    /// does).
    pub advice: Vec<String>,
}

impl std::fmt::Display for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let limit = self.memlock_limit_bytes.map_or("unlimited".to_string(), |l| Bytes(l).to_string());
        write!(
            f,
            "{} of {} pages, {} rings, {}: pins {}, needs {} of RLIMIT_MEMLOCK (limit {limit}{}); {}",
            Bytes(self.pool_bytes),
            page_name(self.page_size),
            self.rings,
            self.sharing,
            Bytes(self.pinned_bytes),
            Bytes(self.memlock_needed_bytes),
            if self.cap_ipc_lock { ", CAP_IPC_LOCK: not charged" } else { "" },
            if self.fits { "fits" } else { "does not fit" }
        )?;
        for a in &self.advice {
            write!(f, "; {a}")?;
        }
        Ok(())
    }
}

#[cfg(feature = "serde")]
fn page_name_ser<S: serde::Serializer>(k: &PageKind, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(page_name(*k))
}

#[cfg(feature = "serde")]
fn display_ser<S: serde::Serializer, T: std::fmt::Display>(v: &T, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// The page size as the planner names it.
pub(crate) fn page_name(kind: PageKind) -> &'static str {
    match kind {
        PageKind::Huge1G => "1G",
        PageKind::Huge2M => "2M",
        PageKind::Transparent => "thp",
        PageKind::Base => "4k",
    }
}
