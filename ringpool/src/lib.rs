//! # ringpool
//!
//! One IO memory pool registered once with io_uring, and rings for any
//! thread that get the whole registered table by clone
//! (`IORING_REGISTER_CLONE_BUFFERS`, Linux 6.12+) in microseconds, whatever
//! the pool's size.
//!
//! ```no_run
//! use ringpool::{BufferTable, DirectFile, IoMemory, PagePolicy};
//!
//! // One pool, prefaulted once, registered once.
//! let mem = IoMemory::map(1 << 30, PagePolicy::Auto)?;
//! mem.prefault(|_| {})?;
//! let table = BufferTable::register(&mem)?;
//!
//! // Any thread: a ring with the whole table, by clone.
//! let mut ring = table.ring()?;
//! let file = DirectFile::open("/var/tmp/data")?;
//! let mut buf = mem.try_alloc(64 << 10)?;
//! buf.fill(7);
//! let (n, buf) = ring.write_at(&file, 0, buf); // WRITE_FIXED
//! n?;
//! let (n, buf) = ring.read_at(&file, 0, buf); // READ_FIXED
//! assert_eq!(&buf[..n?], &[7u8; 64 << 10][..]);
//!
//! // Vectored: four blocks of one segment in one READV_FIXED.
//! let bufs = mem.try_alloc_vec(4, 4096)?;
//! let (n, _bufs) = ring.readv_at(&file, 0, bufs);
//! assert_eq!(n?, 4 * 4096);
//! # Ok::<(), ringpool::Error>(())
//! ```
//!
//! The pieces:
//! - [`Features`]: what the kernel and machine offer, found by trial.
//! - [`IoMemory`]: the pool, under a [`PagePolicy`], split into segments,
//!   with a lease allocator handing out [`IoBuf`]s.
//! - [`BufferTable`]: the template ring holding the one registration;
//!   [`BufferTable::ring`] makes a [`Ring`] for the calling thread.
//! - [`DirectFile`]: O_DIRECT files with their alignment.
//! - [`Op`]: one I/O operation (read, write, readv, writev, fsync) as one
//!   value, run by a [`Ring`], an [`IoPool`] or blocking.
//! - [`IoPool`]: the elastic IO thread pool; its workers run an engine
//!   ([`EngineKind`]) chosen per file.
//! - [`Error`]: one error type whose messages say what to do.
#![deny(unsafe_code)]
// Operations hand the caller's buffer back beside the error, (Error, IoBuf):
// a large Err on a cold path, by design.
#![allow(clippy::result_large_err)]
#![warn(missing_docs, missing_debug_implementations, unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

mod alloc;
#[cfg(feature = "baseline")]
pub mod baseline;
mod buf;
mod device;
mod engine;
mod errno;
mod error;
mod file;
mod handle;
mod handover;
mod home;
pub mod hugepages;
mod link;
mod memory;
mod op;
mod plan;
mod pool;
mod probe;
pub mod quirks;
mod ring;
mod sync;
mod sys;
mod table;
mod template;
mod types;
pub mod units;

pub use alloc::{AllocStats, SegmentUse};
pub use buf::{Buffers, IoBuf};
pub use error::{Error, Result};
pub use file::{DirectFile, OpenOptions};
pub use handle::{HandleOutput, IoResult, IoVecResult, OpHandle, Outcome};
pub use handover::{
    check_handover_message, check_ring_request, BrokerOptions, BrokerStats, HandedRing, HandoverOptions, RingBroker,
};
pub use memory::{AllocFuture, GrowReport, IoMemory, MemoryOptions, SegmentReservation, ShrinkReport};
pub use op::Op;
pub use plan::{plan, Plan, PlanRequest};
pub use pool::{Backend, BackendKind, IoPool, IoPoolBuilder, PoolStats, SegmentStats, SpinupParts, WorkerStats};
pub use probe::{
    has_cap_ipc_lock, kernel_release, parse_kernel_version, DirectIoSupport, DstReplace, Features, IoUringStatus,
};
pub use ring::{CloneRange, Completion, Ring, RingOptions, RingSetup, RingStats, TableSource, MAX_RING_ENTRIES};
pub use table::{BufferTable, TableOptions};
pub use types::{
    AlignmentOf, AlignmentSource, DirectIo, EngineKind, EnginePolicy, HugePages, Nowait, OpKind, PageKind, PagePolicy,
    Progress, Refresh, Segment, Sharing, TablePath, ThpMode, INLINE_DEPTH, MAX_IOVECS, MAX_SEGMENTS, MAX_SEGMENT_SIZE,
};

/// Process-level knobs tests and tools need (memlock limit, CPU time).
pub mod process {
    pub use crate::sys::os::{
        fork_child, in_scratch_user, kill, monotonic_ns, rusage_children_us, rusage_self_us, set_memlock_limit,
        vm_pinned_kb, wait_child,
    };
}
