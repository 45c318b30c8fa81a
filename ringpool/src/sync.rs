//! Locks and condition variables: std's, or loom's when the crate is built
//! with `--cfg ringpool_loom` for model checking (`RUSTFLAGS="--cfg ringpool_loom" cargo test
//! --lib loom`).

#[cfg(ringpool_loom)]
pub(crate) use loom::sync::{Condvar, Mutex, MutexGuard};
#[cfg(not(ringpool_loom))]
pub(crate) use std::sync::{Condvar, Mutex, MutexGuard};
