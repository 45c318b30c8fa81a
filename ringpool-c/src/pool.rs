//! The pool, its buffers, files, and blocking reads and writes.

use std::ffi::c_char;
use std::sync::{Arc, Mutex};

use ringpool::{DirectFile, Done, IoBuf, IoPool, MemoryOptions};

use crate::error::rp_error;
use crate::sys;

/// An IO memory pool registered with io_uring, and its worker threads.
/// Thread-safe: any thread may use one pool at the same time.
#[allow(non_camel_case_types)]
pub struct rp_pool {
    pub(crate) pool: Arc<IoPool>,
}

/// A buffer leased from a pool (or a region of one). While an operation
/// uses it, `rp_buf_data` returns NULL and other operations with it fail
/// (EBUSY).
#[allow(non_camel_case_types)]
pub struct rp_buf {
    pub(crate) slot: Arc<Mutex<Option<IoBuf>>>,
    pub(crate) cap: usize,
}

/// A file opened for O_DIRECT I/O.
#[allow(non_camel_case_types)]
pub struct rp_file {
    pub(crate) file: DirectFile,
}

impl rp_buf {
    pub(crate) fn new(b: IoBuf) -> rp_buf {
        let cap = b.capacity();
        rp_buf { slot: Arc::new(Mutex::new(Some(b))), cap }
    }

    /// Takes the buffer out for an operation of `len` bytes.
    pub(crate) fn take(&self, len: usize) -> Result<IoBuf, rp_error> {
        let mut slot = self.slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(mut b) = slot.take() else {
            return Err(rp_error::new(libc::EBUSY, "the buffer is in use by an operation"));
        };
        if len > self.cap {
            *slot = Some(b);
            return Err(rp_error::new(libc::EINVAL, format!("{len} bytes asked of a buffer of {}", self.cap)));
        }
        if let Err(e) = b.set_len(len) {
            *slot = Some(b);
            return Err(e.into());
        }
        Ok(b)
    }

    /// Puts the buffer back after an operation.
    pub(crate) fn put(slot: &Mutex<Option<IoBuf>>, mut b: IoBuf) {
        b.reset_window();
        *slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(b);
    }

    /// Runs `op` with the buffer cut to `len` bytes; the bytes moved.
    pub(crate) fn with(&self, len: usize, op: impl FnOnce(IoBuf) -> Done) -> Result<i64, rp_error> {
        let b = self.take(len)?;
        let (res, b) = op(b).into_one();
        rp_buf::put(&self.slot, b);
        // At most the buffer's length.
        Ok(res? as i64)
    }
}

fn new_pool(bytes: u64, segment_bytes: u64, shared: bool) -> Result<rp_pool, rp_error> {
    let mut memory = MemoryOptions::new();
    if shared {
        memory = memory.shared();
    }
    if segment_bytes != 0 {
        memory = memory.segment_size(segment_bytes);
    }
    Ok(rp_pool { pool: Arc::new(IoPool::builder().size(bytes).memory(memory).build()?) })
}

/// A pool of `bytes` (page policy Auto: huge pages where free, else THP or
/// 4 KiB pages; prefaulted), registered once, with the default workers.
///
/// # Safety
/// `err` is NULL or a place for an error pointer.
#[no_mangle]
pub unsafe extern "C" fn rp_pool_new(bytes: u64, err: *mut *mut rp_error) -> *mut rp_pool {
    sys::guard(err, std::ptr::null_mut(), || new_pool(bytes, 0, false).map(sys::into_raw))
}

/// As `rp_pool_new`, over shared memory (memfds): its rings can be handed
/// to forked or exec'd processes (`rp_pool_handover`, `rp_broker_serve`).
/// `segment_bytes` (a power of two from 4 KiB to 1 GiB; 0: up to 1 GiB)
/// is the unit of the lease ranges handed with rings.
///
/// # Safety
/// As `rp_pool_new`.
#[no_mangle]
pub unsafe extern "C" fn rp_pool_new_shared(bytes: u64, segment_bytes: u64, err: *mut *mut rp_error) -> *mut rp_pool {
    sys::guard(err, std::ptr::null_mut(), || new_pool(bytes, segment_bytes, true).map(sys::into_raw))
}

/// The pool's size in bytes (0 for NULL).
///
/// # Safety
/// `pool` is NULL or a pool from this library, not freed.
#[no_mangle]
pub unsafe extern "C" fn rp_pool_bytes(pool: *const rp_pool) -> u64 {
    // SAFETY: as the function's contract says.
    sys::quiet(0, || unsafe { sys::get(pool, "pool") }.map_or(0, |p| p.pool.memory().len()))
}

/// Frees a pool: waits for its operations, stops its workers, unregisters
/// (NULL: nothing). Buffers still held keep its memory until freed.
///
/// # Safety
/// `pool` is NULL or a pool from this library, not used again.
#[no_mangle]
pub unsafe extern "C" fn rp_pool_free(pool: *mut rp_pool) {
    // SAFETY: as the function's contract says.
    sys::quiet((), || drop(unsafe { sys::take(pool) }))
}

/// Leases `len` bytes (rounded up to the alignment, 4096) from the pool,
/// without waiting: ENOMEM when no block that large is free.
///
/// # Safety
/// `pool` is a pool from this library; `err` as in `rp_pool_new`.
#[no_mangle]
pub unsafe extern "C" fn rp_buf_alloc(pool: *mut rp_pool, len: usize, err: *mut *mut rp_error) -> *mut rp_buf {
    sys::guard(err, std::ptr::null_mut(), || {
        // SAFETY: as the function's contract says.
        let p = unsafe { sys::get(pool, "pool") }?;
        Ok(sys::into_raw(rp_buf::new(p.pool.memory().try_alloc(len)?)))
    })
}

/// The buffer's bytes (`rp_buf_len` of them); NULL while an operation uses
/// it, or for NULL.
///
/// # Safety
/// `buf` is NULL or a buffer from this library, not freed.
#[no_mangle]
pub unsafe extern "C" fn rp_buf_data(buf: *mut rp_buf) -> *mut u8 {
    sys::quiet(std::ptr::null_mut(), || {
        // SAFETY: as the function's contract says.
        let Ok(b) = (unsafe { sys::get(buf, "buffer") }) else { return std::ptr::null_mut() };
        let mut slot = b.slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // The bytes stay where they are while the lease lives in the slot;
        // none where the pool is not mapped (a forked child of a private
        // pool's process).
        match slot.as_mut() {
            Some(b) if b.is_usable() => {
                let bytes: &mut [u8] = &mut b[..];
                bytes.as_mut_ptr()
            }
            _ => std::ptr::null_mut(),
        }
    })
}

/// The buffer's length in bytes (0 for NULL).
///
/// # Safety
/// As `rp_buf_data`.
#[no_mangle]
pub unsafe extern "C" fn rp_buf_len(buf: *const rp_buf) -> usize {
    // SAFETY: as the function's contract says.
    sys::quiet(0, || unsafe { sys::get(buf, "buffer") }.map_or(0, |b| b.cap))
}

/// Frees a buffer (NULL: nothing). One an operation still uses goes back
/// to its pool when the operation completes.
///
/// # Safety
/// `buf` is NULL or a buffer from this library, not used again.
#[no_mangle]
pub unsafe extern "C" fn rp_buf_free(buf: *mut rp_buf) {
    // SAFETY: as the function's contract says.
    sys::quiet((), || drop(unsafe { sys::take(buf) }))
}

/// Opens `path` for O_DIRECT reads and writes, creating it (mode 0644) if
/// it is missing.
///
/// # Safety
/// `path` is a NUL-terminated string; `err` as in `rp_pool_new`.
#[no_mangle]
pub unsafe extern "C" fn rp_file_open(path: *const c_char, err: *mut *mut rp_error) -> *mut rp_file {
    sys::guard(err, std::ptr::null_mut(), || {
        // SAFETY: as the function's contract says.
        let path = unsafe { sys::path(path) }?;
        let file = DirectFile::options().read(true).write(true).create(true).open(path)?;
        Ok(sys::into_raw(rp_file { file }))
    })
}

/// Closes a file (NULL: nothing); operations in flight keep it open until
/// they complete.
///
/// # Safety
/// `file` is NULL or a file from this library, not used again.
#[no_mangle]
pub unsafe extern "C" fn rp_file_close(file: *mut rp_file) {
    // SAFETY: as the function's contract says.
    sys::quiet((), || drop(unsafe { sys::take(file) }))
}

/// Writes the first `len` bytes of `buf` at `offset` of `file` through the
/// pool and waits: the bytes written, or -1 with `*err` set. `len` and
/// `offset` must suit O_DIRECT (multiples of the device's block size).
///
/// # Safety
/// `pool`, `file` and `buf` are from this library, not freed; `err` as in
/// `rp_pool_new`.
#[no_mangle]
pub unsafe extern "C" fn rp_write_at(
    pool: *mut rp_pool,
    file: *mut rp_file,
    offset: u64,
    buf: *mut rp_buf,
    len: usize,
    err: *mut *mut rp_error,
) -> i64 {
    sys::guard(err, -1, || {
        // SAFETY: as the function's contract says.
        let (p, f, b) = unsafe { (sys::get(pool, "pool")?, sys::get(file, "file")?, sys::get(buf, "buffer")?) };
        b.with(len, |io| p.pool.write_at(&f.file, offset, io).wait())
    })
}

/// Reads `len` bytes at `offset` of `file` into `buf` through the pool and
/// waits: the bytes read, or -1 with `*err` set.
///
/// # Safety
/// As `rp_write_at`.
#[no_mangle]
pub unsafe extern "C" fn rp_read_at(
    pool: *mut rp_pool,
    file: *mut rp_file,
    offset: u64,
    buf: *mut rp_buf,
    len: usize,
    err: *mut *mut rp_error,
) -> i64 {
    sys::guard(err, -1, || {
        // SAFETY: as the function's contract says.
        let (p, f, b) = unsafe { (sys::get(pool, "pool")?, sys::get(file, "file")?, sys::get(buf, "buffer")?) };
        b.with(len, |io| p.pool.read_at(&f.file, offset, io).wait())
    })
}
