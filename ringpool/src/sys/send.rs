//! A thread's ring that other threads may use under a lock.
//!
//! # Safety
//!
//! A [`Ring`](crate::Ring) is not `Send`: the kernel binds a SINGLE_ISSUER
//! ring's submissions and reaping to the thread that made it, and the type
//! assumes one user at a time. A [`Lent`] holds a calling thread's ring for
//! a pool (crate::pool::local, crate::pool::reactor), set up *without*
//! SINGLE_ISSUER (and so without DEFER_TASKRUN), behind a mutex: whichever
//! thread holds the lock uses it, one at a time. For such a ring the kernel
//! takes submissions, register calls and the reaping of posted completions
//! from any thread of the process (it serialises register calls on the
//! ring's own lock; the queues are ours, and the mutex serialises them);
//! dropping it drains what is in flight and closes it, from any thread.
#![allow(unsafe_code)]

/// A value lent across threads under a lock (see the module doc for when
/// that is sound for a ring).
pub(crate) struct Lent<T>(pub(crate) T);

// SAFETY: only a ring set up without SINGLE_ISSUER is put in it, and it is
// reached only through a mutex, by one thread at a time (module doc).
unsafe impl<T> Send for Lent<T> {}
