//! The floor: the same registration and clone made with the bare io-uring
//! crate, no ringpool code around them, so that benchmarks can show
//! ringpool's overhead as a ratio.
//!
//! Only with the `baseline` feature, which the `ringpool` command enables:
//! benchmark code, not part of the library's API.

use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use io_uring::IoUring;

use crate::error::{Error, Result};
use crate::memory::IoMemory;

/// A bare io-uring ring holding a registration of a pool prefix.
pub struct RawTable {
    ring: IoUring,
    _memory: IoMemory,
}

impl std::fmt::Debug for RawTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawTable").field("fd", &self.ring.as_raw_fd()).finish()
    }
}

impl Drop for RawTable {
    fn drop(&mut self) {
        // Unpin synchronously (see BufferTable's Drop).
        let _ = self.ring.submitter().unregister_buffers();
    }
}

impl RawTable {
    /// The ring fd, a clone source.
    pub fn fd(&self) -> RawFd {
        self.ring.as_raw_fd()
    }
}

/// `IoUring::new` + `register_buffers` of the first `entries` segments,
/// timed around exactly those two calls (the iovecs are built before).
///
/// # Errors
/// [`Error::Io`] with the raw errno.
pub fn register(memory: &IoMemory, entries: u16) -> Result<(RawTable, Duration)> {
    let iovs = memory.shared.iovs(0, entries.min(memory.segment_count()));
    let (ring, took) = crate::sys::uring::raw_register_timed(&iovs).map_err(|e| Error::os("raw register", e))?;
    Ok((RawTable { ring, _memory: memory.clone() }, took))
}

/// Builds a SINGLE_ISSUER | DEFER_TASKRUN ring of `entries` with the bare
/// crate, then times only `register_buffers_clone(src_fd)` on it.
///
/// # Errors
/// [`Error::Io`] with the raw errno.
pub fn clone_into_fresh_ring(src_fd: RawFd, entries: u32) -> Result<Duration> {
    let ring: IoUring = IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_cqsize(entries * 2)
        .build(entries)
        .map_err(|e| Error::os("raw io_uring_setup", e))?;
    let t = Instant::now();
    ring.submitter().register_buffers_clone(src_fd).map_err(|e| Error::os("raw clone", e))?;
    let took = t.elapsed();
    let _ = ring.submitter().unregister_buffers();
    Ok(took)
}

/// The floor of a worker spin-up: a bare `std::thread::spawn` whose thread
/// builds a SINGLE_ISSUER | DEFER_TASKRUN ring with the bare crate and
/// clones `src_fd` into it; returns the time from the spawn call until the
/// thread reports its ring ready, and the ring's teardown is waited for.
///
/// # Errors
/// [`Error::Io`] with the raw errno.
pub fn thread_ring_clone(src_fd: RawFd, entries: u32) -> Result<Duration> {
    let (tx, rx) = std::sync::mpsc::channel();
    let t = Instant::now();
    let h = std::thread::spawn(move || {
        let r = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_cqsize(entries * 2)
            .build(entries)
            .and_then(|ring: IoUring| ring.submitter().register_buffers_clone(src_fd).map(|_| ring));
        match r {
            Ok(ring) => {
                let _ = tx.send(Ok(()));
                let _ = ring.submitter().unregister_buffers();
            }
            Err(e) => {
                let _ = tx.send(Err(e));
            }
        }
    });
    let ready = rx.recv().map_err(|_| Error::Lost("floor thread died".into()))?;
    let took = t.elapsed();
    let _ = h.join();
    ready.map_err(|e| Error::os("raw thread + ring + clone", e))?;
    Ok(took)
}
