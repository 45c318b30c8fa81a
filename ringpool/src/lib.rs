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
//! - [`Error`]: one error type whose messages say what to do.
#![deny(unsafe_code)]
// Operations hand the caller's buffer back beside the error, (Error, IoBuf):
// a large Err on a cold path, by design.
#![allow(clippy::result_large_err)]
#![warn(missing_docs, missing_debug_implementations, unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

mod alloc;
pub mod baseline;
mod error;
mod file;
pub mod hugepages;
mod memory;
mod pool;
mod probe;
mod ring;
mod sync;
mod sys;
mod table;
pub mod units;

pub use alloc::AllocStats;
pub use error::{AlignmentOf, Error, Result};
pub use file::{DirectFile, DirectIo, OpenOptions};
pub use memory::{
    AllocFuture, IoMemory, MemoryOptions, PageKind, PagePolicy, Progress, Segment, MAX_SEGMENTS, MAX_SEGMENT_SIZE,
};
pub use pool::{Backend, BackendKind, IoPool, IoPoolBuilder, IoResult, OpHandle, PoolStats, SpinupParts};
pub use probe::{
    has_cap_ipc_lock, kernel_release, parse_kernel_version, AlignmentSource, DirectIoSupport, DstReplace, Features,
    HugePages, IoUringStatus, ThpMode,
};
pub use ring::{CloneRange, Completion, Ring, RingOptions, RingSetup, TablePath, TableSource, MAX_RING_ENTRIES};
pub use sys::buf::IoBuf;
pub use table::{BufferTable, GrowReport, Refresh, Sharing, TableOptions};

/// Process-level knobs tests and tools need (memlock limit).
pub mod process {
    pub use crate::sys::os::{rusage_children_us, rusage_self_us, set_memlock_limit};
}
