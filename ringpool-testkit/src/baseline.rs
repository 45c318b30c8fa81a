//! The floor: the same registration and clone made with the bare io-uring
//! crate, no ringpool code around them, so that benchmarks can show
//! ringpool's overhead as a ratio (and a process without clone can
//! register the pool itself).
//!
//! # Safety
//!
//! Every registration names segments of an [`IoMemory`] whose handle the
//! registering value holds for as long as its ring lives, so the kernel
//! never keeps pages of a range that was unmapped under it; the one read
//! waits for its completion before its memory is touched.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::time::{Duration, Instant};

use io_uring::IoUring;
use ringpool::IoMemory;

/// The iovecs of the first `n` segments of `memory` (their addresses in
/// this process).
fn iovecs(memory: &IoMemory, n: usize) -> Vec<libc::iovec> {
    memory
        .segments()
        .iter()
        .take(n)
        .map(|s| libc::iovec { iov_base: s.addr as *mut _, iov_len: s.len as usize })
        .collect()
}

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
/// The raw errno.
pub fn register(memory: &IoMemory, entries: u16) -> io::Result<(RawTable, Duration)> {
    let v = iovecs(memory, usize::from(entries));
    let t = Instant::now();
    let ring = IoUring::new(4)?;
    // SAFETY: every iovec is a segment of `memory`, which the RawTable holds
    // (so keeps mapped) for as long as the ring lives.
    unsafe { ring.submitter().register_buffers(&v)? };
    let took = t.elapsed();
    Ok((RawTable { ring, _memory: memory.clone() }, took))
}

/// Builds a SINGLE_ISSUER | DEFER_TASKRUN ring of `entries` with the bare
/// crate, then times only `register_buffers_clone(src_fd)` on it.
///
/// # Errors
/// The raw errno.
pub fn clone_into_fresh_ring(src_fd: RawFd, entries: u32) -> io::Result<Duration> {
    let ring: IoUring =
        IoUring::builder().setup_single_issuer().setup_defer_taskrun().setup_cqsize(entries * 2).build(entries)?;
    let t = Instant::now();
    ring.submitter().register_buffers_clone(src_fd)?;
    let took = t.elapsed();
    let _ = ring.submitter().unregister_buffers();
    Ok(took)
}

/// The floor of a worker spin-up: a bare `std::thread::spawn` whose thread
/// builds a SINGLE_ISSUER | DEFER_TASKRUN ring with the bare crate and
/// clones `src_fd` into it; returns the time from the spawn call until the
/// thread reports its ring ready, measured on the spawning thread when it
/// receives the report (as a pool's `add_worker` is), and the ring's
/// teardown is waited for.
///
/// # Errors
/// The raw errno.
pub fn thread_ring_clone(src_fd: RawFd, entries: u32) -> io::Result<Duration> {
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
    let ready = rx.recv().map_err(|_| io::Error::other("the floor's thread died"))?;
    let took = t.elapsed();
    let _ = h.join();
    ready?;
    Ok(took)
}

/// A registration of the whole pool made with the bare crate by a process
/// forked from the pool's owner (each process of a prefork server without
/// clone): prepared before the fork, made in the child.
#[derive(Clone)]
pub struct ForkRegistration {
    memory: IoMemory,
    /// (address, length) of each segment.
    segments: Vec<(usize, usize)>,
    segment_size: u64,
}

impl std::fmt::Debug for ForkRegistration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForkRegistration").field("segments", &self.segments.len()).finish()
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
    /// The pool's segments, read now (before the fork). The pool must be
    /// shared (a private pool is not mapped in a forked child).
    pub fn prepare(memory: &IoMemory) -> ForkRegistration {
        let segments = memory.segments().iter().map(|s| (s.addr, s.len as usize)).collect();
        ForkRegistration { memory: memory.clone(), segments, segment_size: memory.segment_size() }
    }

    /// Sets up a ring and registers every segment in it (in the child).
    ///
    /// # Errors
    /// The raw errno.
    pub fn register(&self) -> io::Result<ChildTable> {
        if !self.memory.is_shared() {
            return Err(io::Error::other("a private pool is not mapped in a forked child"));
        }
        let v: Vec<libc::iovec> =
            self.segments.iter().map(|&(addr, len)| libc::iovec { iov_base: addr as *mut _, iov_len: len }).collect();
        let ring = IoUring::new(8)?;
        // SAFETY: the segments belong to a shared pool mapped in this child
        // (inherited across the fork), which the ChildTable holds.
        unsafe { ring.submitter().register_buffers(&v)? };
        Ok(ChildTable { ring, reg: self.clone() })
    }
}

impl ChildTable {
    /// Reads `len` bytes of `fd` at `file_offset` into pool bytes
    /// `[pool_offset, pool_offset + len)` with one READ_FIXED, and returns
    /// a copy of them.
    ///
    /// # Errors
    /// The errno; EINVAL for a range outside one segment.
    pub fn read_fixed(
        &mut self,
        fd: BorrowedFd<'_>,
        file_offset: u64,
        pool_offset: u64,
        len: u32,
    ) -> io::Result<Vec<u8>> {
        let seg = pool_offset / self.reg.segment_size;
        let within = (pool_offset % self.reg.segment_size) as usize;
        let &(addr, seg_len) =
            self.reg.segments.get(seg as usize).ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
        if within.checked_add(len as usize).is_none_or(|e| e > seg_len) {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let ptr = (addr + within) as *mut u8;
        // At most 16384 segments.
        let e = io_uring::opcode::ReadFixed::new(io_uring::types::Fd(fd.as_raw_fd()), ptr, len, seg as u16)
            .offset(file_offset)
            .build()
            .user_data(7);
        // SAFETY: the SQE points into a registered segment this value keeps
        // mapped, checked to hold the whole range; the call waits for the
        // completion before anything reads the bytes.
        unsafe { self.ring.submission().push(&e).map_err(|_| io::Error::from_raw_os_error(libc::EBUSY))? };
        let res = loop {
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) => {
                    // The read may still land: keep the pool mapped for ever.
                    std::mem::forget(self.reg.memory.clone());
                    return Err(e);
                }
            }
            if let Some(c) = self.ring.completion().next() {
                break c.result();
            }
        };
        if res < 0 {
            return Err(io::Error::from_raw_os_error(-res));
        }
        let n = (res as usize).min(len as usize);
        // SAFETY: the read completed; [ptr, ptr + n) lies in the segment
        // (checked above), mapped while this value holds the pool.
        Ok(unsafe { std::slice::from_raw_parts(ptr, n) }.to_vec())
    }
}
