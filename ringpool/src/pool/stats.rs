//! What an `IoPool` reports about itself.

use std::time::Duration;

use crate::alloc::AllocStats;
use crate::engine::EngineKind;
pub use crate::memory::SegmentStats;
use crate::types::TablePath;

use super::BackendKind;

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

/// The engine a pool chose for a file, and why.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct FileEngine {
    /// The file's path.
    pub path: std::path::PathBuf,
    /// The engine.
    pub engine: EngineKind,
    /// Why.
    pub reason: &'static str,
}

/// A lane's own books.
#[derive(Debug, Default)]
pub(crate) struct LaneStats {
    pub parts: Vec<SpinupParts>,
    pub started: u64,
    pub retired: u64,
    pub spawn_failures: u64,
    pub last_spawn_error: Option<String>,
    pub panics: u64,
    /// The running workers' counters.
    pub live: Vec<std::sync::Arc<WorkerBook>>,
    /// Bytes moved by workers that have exited.
    pub retired_bytes: u64,
}

/// Statistics of an [`IoPool`](crate::IoPool): one snapshot, serializable
/// with the `serde` feature (`ringpool soak --json` prints it).
#[derive(Debug, Clone)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct PoolStats {
    /// The engine the pool's workers run.
    pub backend: BackendKind,
    /// The engine of the main workers, as [`EngineKind`].
    pub engine: EngineKind,
    /// How worker rings get the table (`None` for the blocking backend).
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

/// One worker, now.
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

/// A running worker's counters, kept by the worker, read by `stats`.
#[derive(Debug)]
pub(crate) struct WorkerBook {
    pub id: usize,
    pub engine: EngineKind,
    pub spinup: SpinupParts,
    pub ops: std::sync::atomic::AtomicU64,
    pub bytes: std::sync::atomic::AtomicU64,
    pub in_flight: std::sync::atomic::AtomicU64,
}
