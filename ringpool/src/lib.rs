//! # ringpool
//!
//! One IO memory pool registered once with io_uring, and rings for any
//! thread that get the whole registered table by clone
//! (`IORING_REGISTER_CLONE_BUFFERS`, Linux 6.12+) in microseconds, whatever
//! the pool's size.
//!
//! ```no_run
//! use ringpool::types::PagePolicy;
//! use ringpool::{BufferTable, DirectFile, IoMemory};
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
//! let (n, buf) = ring.write_at(&file, 0, buf).into_one(); // WRITE_FIXED
//! n?;
//! let (n, buf) = ring.read_at(&file, 0, buf).into_one(); // READ_FIXED
//! assert_eq!(&buf[..n?], &[7u8; 64 << 10][..]);
//!
//! // Vectored: four blocks of one segment in one READV_FIXED.
//! let bufs = mem.try_alloc_vec(4, 4096)?;
//! let (n, _bufs) = ring.readv_at(&file, 0, bufs).into_vec();
//! assert_eq!(n?, 4 * 4096);
//! # Ok::<(), ringpool::Error>(())
//! ```
//!
//! The house's concepts are at the root, each with its options:
//! - [`IoMemory`] ([`MemoryOptions`]): the pool, split into segments, with
//!   a lease allocator handing out [`IoBuf`]s.
//! - [`BufferTable`] ([`TableOptions`]): the template ring holding the one
//!   registration; [`BufferTable::ring`] makes a [`Ring`] ([`RingOptions`])
//!   for the calling thread.
//! - [`DirectFile`] ([`OpenOptions`]): O_DIRECT files with their alignment.
//! - [`Op`]: one I/O operation (read, write, readv, writev, fsync) as one
//!   value, run by a [`Ring`], an [`IoPool`] or blocking; every operation
//!   completes with a [`Done`]: the result and every buffer, handed back.
//! - [`IoPool`] ([`IoPoolBuilder`]): the elastic IO thread pool, whose
//!   operations complete through an [`OpHandle`] (`wait()` or `.await`).
//! - [`Error`]: one error type whose messages say what to do.
//!
//! And one module deep: [`types`] (the vocabulary: policies, kinds,
//! segments, sizes), [`stats`] (every report and snapshot), [`probe`] (what
//! the kernel and machine offer), [`quirks`] (the kernel-quirk guards),
//! [`plan`] (the memlock planner), [`handover`] (rings for other processes,
//! and the ring broker).
#![deny(unsafe_code)]
// Rings refuse operations by handing the operation back beside the error,
// (Error, Op): a large Err on a cold path, by design.
#![allow(clippy::result_large_err)]
#![warn(missing_docs, missing_debug_implementations, unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

mod alloc;
mod blank;
mod buf;
mod device;
mod engine;
mod error;
mod file;
mod followers;
mod handle;
pub mod handover;
mod home;
mod link;
mod memory;
mod op;
pub mod plan;
mod pool;
pub mod probe;
pub mod quirks;
mod ranges;
mod ring;
pub mod stats;
mod sync;
mod sys;
mod table;
mod template;
pub mod types;
mod uring;

pub use buf::{Buffers, IoBuf};
pub use error::{Error, Result};
pub use file::{DirectFile, OpenOptions};
pub use handle::OpHandle;
pub use memory::{AllocFuture, IoMemory, MemoryOptions, SegmentReservation};
pub use op::{Done, Op};
pub use pool::{IoPool, IoPoolBuilder};
pub use ranges::{RangeBuf, RangeRequest};
pub use ring::{Ring, RingOptions, TableSource};
pub use table::{BufferTable, TableOptions};
