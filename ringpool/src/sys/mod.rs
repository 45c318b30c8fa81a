//! Everything that talks to the kernel through raw pointers or raw syscalls.
//!
//! # Safety
//!
//! This is the only module tree of the crate that may contain `unsafe` code
//! (`#![deny(unsafe_code)]` holds everywhere else). Each submodule states the
//! invariant it relies on in its own doc, and every `unsafe` block carries a
//! `SAFETY:` comment naming it:
//!
//! - [`mmap`]: a [`mmap::Mapping`] owns its address range from `mmap` until its
//!   `Drop` calls `munmap`; everything that hands the range to the kernel holds
//!   an `Arc<Mapping>` for as long as the kernel may use it.
//! - [`buf`]: a lease (under an [`crate::IoBuf`]) is the only handle to its
//!   byte range: its owner (the pool) promises the range is mapped and that
//!   the allocator never grants overlapping blocks.
//! - [`uring`]: every SQE pushed references memory owned by the in-flight slot
//!   that stays in the ring until its CQE is reaped, and a ring is drained
//!   before its in-flight slots are dropped.
//! - [`os`]: thin wrappers over libc calls with out-parameters or slices.
//! - [`pid`]: the process id, refreshed in a forked child by an atfork
//!   handler that only stores an atomic.
//! - [`socket`]: messages with descriptors (SCM_RIGHTS) in buffers sized
//!   with `CMSG_SPACE`; received descriptors are owned at once.
//! - [`send`]: a thread's ring dropped by another thread only when idle.
//! - [`holder`]: the ring holder's setup between fork and exec makes only
//!   async-signal-safe calls on integers.
//!
//! Nothing here imports the crate's upper layers: the modules above build
//! on these, never the reverse.
#![allow(unsafe_code)]

pub(crate) mod buf;
pub(crate) mod handoff;
pub(crate) mod holder;
pub(crate) mod mmap;
pub(crate) mod os;
pub(crate) mod pid;
pub(crate) mod send;
pub(crate) mod socket;
pub(crate) mod trial;
pub(crate) mod uring;
