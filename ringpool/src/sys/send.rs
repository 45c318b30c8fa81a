//! A thread's ring that another thread may touch under a lock.
//!
//! # Safety
//!
//! A [`Ring`](crate::Ring) is not `Send`: the kernel binds a SINGLE_ISSUER
//! ring's submissions and reaping to the thread that made it, and ringpool
//! keeps a ring's queues to one thread at a time. A [`Lent`] holds a
//! calling thread's ring for a pool (crate::pool::local), set up *without*
//! SINGLE_ISSUER, that its owner thread uses under a lock and that another
//! thread, under the same lock, only (a) catches up with the table
//! (register calls, which the kernel serialises on the ring's own lock and
//! allows from any thread of a ring that is not SINGLE_ISSUER), or (b)
//! drops when no operation is in flight: dropping an idle ring submits
//! nothing (its drain finds nothing in flight), and unregistering, closing
//! its fd and unmapping its queues are allowed from any thread.
#![allow(unsafe_code)]

/// A value lent across threads under a lock (see the module doc for when
/// that is sound for a ring).
pub(crate) struct Lent<T>(pub(crate) T);

// SAFETY: only a calling thread's ring (not SINGLE_ISSUER) is put in it,
// used by its owner under a lock, and by another thread under that lock
// only for table updates, or to drop it when idle (module doc).
unsafe impl<T> Send for Lent<T> {}
