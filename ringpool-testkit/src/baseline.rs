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
    entries: u16,
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
    Ok((RawTable { ring, _memory: memory.clone(), entries }, took))
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
        read_fixed(
            &mut self.ring,
            &self.reg.memory,
            &self.reg.segments,
            self.reg.segment_size,
            fd,
            file_offset,
            pool_offset,
            len,
        )
    }
}

impl RawTable {
    /// As [`ChildTable::read_fixed`], on this registration (the pool's
    /// first segments).
    ///
    /// # Errors
    /// The errno; EINVAL for a range outside one registered segment.
    pub fn read_fixed(
        &mut self,
        fd: BorrowedFd<'_>,
        file_offset: u64,
        pool_offset: u64,
        len: u32,
    ) -> io::Result<Vec<u8>> {
        let segments: Vec<(usize, usize)> =
            self._memory.segments().iter().take(usize::from(self.entries)).map(|s| (s.addr, s.len as usize)).collect();
        let size = self._memory.segment_size();
        read_fixed(&mut self.ring, &self._memory, &segments, size, fd, file_offset, pool_offset, len)
    }
}

/// One READ_FIXED of `len` bytes of `fd` at `file_offset` into pool bytes
/// `[pool_offset, +len)` (registered at index = segment), waited for; a
/// copy of them.
#[allow(clippy::too_many_arguments)]
fn read_fixed(
    ring: &mut IoUring,
    memory: &IoMemory,
    segments: &[(usize, usize)],
    segment_size: u64,
    fd: BorrowedFd<'_>,
    file_offset: u64,
    pool_offset: u64,
    len: u32,
) -> io::Result<Vec<u8>> {
    let seg = pool_offset / segment_size;
    let within = (pool_offset % segment_size) as usize;
    let &(addr, seg_len) = segments.get(seg as usize).ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
    if within.checked_add(len as usize).is_none_or(|e| e > seg_len) {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let ptr = (addr + within) as *mut u8;
    // At most 16384 segments.
    let e = io_uring::opcode::ReadFixed::new(io_uring::types::Fd(fd.as_raw_fd()), ptr, len, seg as u16)
        .offset(file_offset)
        .build()
        .user_data(7);
    let res = match submit_one(ring, &e) {
        Ok(res) => res,
        Err(e) => {
            // The read may still land: keep the pool mapped for ever.
            std::mem::forget(memory.clone());
            return Err(e);
        }
    };
    let n = bytes(res)?.min(len as usize);
    // SAFETY: the read completed; [ptr, ptr + n) lies in the segment
    // (checked above), mapped while the caller holds the pool.
    Ok(unsafe { std::slice::from_raw_parts(ptr, n) }.to_vec())
}

/// Pushes one SQE, submits it and waits for its completion: its raw
/// result (a negative errno for a failed operation); an error only when
/// the submission or the wait failed (the operation may then be in flight).
fn submit_one(ring: &mut IoUring, e: &io_uring::squeue::Entry) -> io::Result<i32> {
    // SAFETY: every caller's SQE points into memory that stays valid until
    // this function returns, which is after the completion (or, on an
    // error of the wait, the caller keeps it valid for ever).
    unsafe { ring.submission().push(e).map_err(|_| io::Error::from_raw_os_error(libc::EBUSY))? };
    loop {
        match ring.submit_and_wait(1) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
            Err(e) => return Err(e),
        }
        if let Some(c) = ring.completion().next() {
            return Ok(c.result());
        }
    }
}

/// A raw result as bytes, or its errno.
fn bytes(res: i32) -> io::Result<usize> {
    if res < 0 {
        Err(io::Error::from_raw_os_error(-res))
    } else {
        Ok(res as usize)
    }
}

/// A heap buffer aligned for O_DIRECT (4096 bytes).
pub struct AlignedBuf {
    ptr: std::ptr::NonNull<u8>,
    len: usize,
}

// SAFETY: the buffer is owned memory, like a Vec<u8>.
unsafe impl Send for AlignedBuf {}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlignedBuf").field("len", &self.len).finish()
    }
}

impl AlignedBuf {
    fn layout(len: usize) -> std::alloc::Layout {
        std::alloc::Layout::from_size_align(len.max(1), 4096).expect("a buffer length below isize::MAX")
    }

    /// `len` zeroed bytes at a 4096-byte boundary.
    pub fn new(len: usize) -> AlignedBuf {
        let layout = Self::layout(len);
        // SAFETY: the layout's size is non-zero.
        let p = unsafe { std::alloc::alloc_zeroed(layout) };
        let ptr = std::ptr::NonNull::new(p).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        AlignedBuf { ptr, len }
    }
}

impl std::ops::Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: ptr holds len initialised bytes owned by self.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl std::ops::DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as deref, borrowed mutably through &mut self.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in new with this layout.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), Self::layout(self.len)) }
    }
}

/// The best a caller can do on its own thread for one read at a time on a
/// device with NOWAIT: a bare io-uring ring (SINGLE_ISSUER |
/// DEFER_TASKRUN) with one registered buffer and the file registered,
/// READ_FIXED into it, submit and wait in one io_uring_enter.
pub struct FixedReader {
    ring: IoUring,
    buf: AlignedBuf,
    /// A wait failed with the read maybe in flight: the buffer is never
    /// freed.
    leak: bool,
}

impl Drop for FixedReader {
    fn drop(&mut self) {
        if self.leak {
            std::mem::forget(std::mem::replace(&mut self.buf, AlignedBuf::new(0)));
        }
    }
}

impl std::fmt::Debug for FixedReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FixedReader").field("len", &self.buf.len).finish()
    }
}

impl FixedReader {
    /// A ring reading `len` bytes at a time from `fd`.
    ///
    /// # Errors
    /// The errno of the setup or a registration.
    pub fn new(fd: BorrowedFd<'_>, len: usize) -> io::Result<FixedReader> {
        let ring: IoUring = IoUring::builder().setup_single_issuer().setup_defer_taskrun().build(8)?;
        let mut buf = AlignedBuf::new(len);
        let iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: len };
        // SAFETY: the buffer is owned by the FixedReader with the ring and
        // freed only after the ring (field order: ring drops first).
        unsafe { ring.submitter().register_buffers(&[iov])? };
        ring.submitter().register_files(&[fd.as_raw_fd()])?;
        Ok(FixedReader { ring, buf, leak: false })
    }

    /// Reads the buffer's length at `offset` into it; the bytes read.
    ///
    /// # Errors
    /// The read's errno.
    pub fn read(&mut self, offset: u64) -> io::Result<usize> {
        let len = self.buf.len as u32;
        let e = io_uring::opcode::ReadFixed::new(io_uring::types::Fixed(0), self.buf.as_mut_ptr(), len, 0)
            .offset(offset)
            .build()
            .user_data(1);
        match submit_one(&mut self.ring, &e) {
            Ok(res) => bytes(res),
            Err(err) => {
                self.leak = true;
                Err(err)
            }
        }
    }

    /// The buffer (the last read's bytes).
    pub fn buf(&self) -> &[u8] {
        &self.buf
    }
}

/// One `preadv2` (flags 0) of `buf.len()` bytes at `offset`.
///
/// # Errors
/// The errno.
pub fn preadv2(fd: BorrowedFd<'_>, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    let off = i64::try_from(offset).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: one iovec over `buf`, borrowed mutably for the call.
    let n = unsafe { libc::preadv2(fd.as_raw_fd(), &iov, 1, off, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

thread_local! {
    static QDRANT_RING: std::cell::RefCell<Option<IoUring>> = const { std::cell::RefCell::new(None) };
}

/// A first read as Qdrant's thread-local io_uring pool does it: the
/// thread's ring made with `IoUring::new` when it has none (kept for the
/// thread's life), an O_DIRECT bounce buffer, a plain READ (no registered
/// buffer), the bytes copied into a new `Vec`.
///
/// # Errors
/// The errno of the setup or the read.
pub fn qdrant_style_read(fd: BorrowedFd<'_>, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    QDRANT_RING.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(IoUring::new(16)?);
        }
        let ring = slot.as_mut().expect("made above");
        let mut bounce = AlignedBuf::new(len);
        let e = io_uring::opcode::Read::new(io_uring::types::Fd(fd.as_raw_fd()), bounce.as_mut_ptr(), len as u32)
            .offset(offset)
            .build()
            .user_data(1);
        let n = match submit_one(ring, &e) {
            Ok(res) => bytes(res)?,
            Err(err) => {
                // The read may still land in the bounce buffer.
                std::mem::forget(bounce);
                return Err(err);
            }
        };
        Ok(bounce[..n.min(len)].to_vec())
    })
}
