//! Test and benchmark plumbing for ringpool, kept out of the library's
//! public API: processes (fork a child, wait for it, kill it, its VmPin and
//! CPU time, a scratch user under a memlock limit), the machine lock that
//! serialises changes to machine-wide state, huge-page reservations that
//! give the pages back, and the bare io-uring floor that benchmarks compare
//! ringpool's registration and clone with.
//!
//! The unsafe code is in [`process`] and [`baseline`], each block with its
//! SAFETY comment.
#![warn(missing_docs, missing_debug_implementations, unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

pub mod baseline;
pub mod machine;
pub mod process;
