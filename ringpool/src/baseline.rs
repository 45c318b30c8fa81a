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

/// A registration of the whole pool made with the bare crate by a process
/// forked from the pool's owner (each process of a prefork server without
/// clone): prepared before the fork, made in the child.
#[derive(Clone)]
pub struct ForkRegistration {
    iovs: Vec<crate::sys::uring::Iov>,
    segment_size: u64,
}

impl std::fmt::Debug for ForkRegistration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForkRegistration").field("segments", &self.iovs.len()).finish()
    }
}

/// A bare ring with the whole pool registered, in a forked child.
pub struct ChildTable {
    ring: IoUring,
    reg: ForkRegistration,
}

impl std::fmt::Debug for ChildTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildTable").field("fd", &self.ring.as_raw_fd()).finish()
    }
}

impl ForkRegistration {
    /// The pool's segments, read now (before the fork).
    pub fn prepare(memory: &IoMemory) -> ForkRegistration {
        ForkRegistration { iovs: memory.shared.iovs(0, memory.segment_count()), segment_size: memory.segment_size() }
    }

    /// Sets up a ring and registers every segment in it (in the child).
    ///
    /// # Errors
    /// [`Error::Io`] with the raw errno.
    pub fn register(&self) -> Result<ChildTable> {
        let ring = crate::sys::uring::raw_register(&self.iovs, 8).map_err(|e| Error::os("register in child", e))?;
        Ok(ChildTable { ring, reg: self.clone() })
    }
}

impl ChildTable {
    /// Reads `len` bytes of `fd` at `file_offset` into pool bytes
    /// `[pool_offset, pool_offset + len)` with one READ_FIXED, and returns
    /// a copy of them.
    ///
    /// # Errors
    /// [`Error::Io`] with the errno; [`Error::InvalidArgument`] for a range
    /// outside one segment.
    pub fn read_fixed(
        &mut self,
        fd: std::os::fd::BorrowedFd<'_>,
        file_offset: u64,
        pool_offset: u64,
        len: u32,
    ) -> Result<Vec<u8>> {
        let seg = pool_offset / self.reg.segment_size;
        let within = (pool_offset % self.reg.segment_size) as usize;
        let Some(iov) = self.reg.iovs.get(seg as usize) else {
            return Err(Error::invalid("pool offset", pool_offset, "inside the pool"));
        };
        if within.checked_add(len as usize).is_none_or(|e| e > iov.len()) {
            return Err(Error::invalid("pool range", pool_offset, "inside one segment"));
        }
        let part = crate::sys::uring::Iov::sub(iov, within, len as usize);
        // At most 16384 segments.
        let n = crate::sys::uring::raw_read_fixed(&mut self.ring, fd, file_offset, seg as u16, &part, len)
            .map_err(|e| Error::os("read fixed in child", e))?;
        Ok(part.copy_out(n))
    }
}
