//! A pool's own books behind [`PoolStats`](crate::stats::PoolStats): each
//! lane's counters and each running worker's.

use crate::stats::SpinupParts;
use crate::types::EngineKind;

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
