//! Rings handed to other processes: across `fork`, over a Unix socket,
//! or from a ring broker; and the handed ring's own fixed I/O.

use std::ffi::{c_char, c_int};
use std::sync::Arc;

use ringpool::handover::{BrokerOptions, HandedRing, HandoverOptions, RingBroker};
use ringpool::{IoPool, Ring};

use crate::error::rp_error;
use crate::pool::{rp_buf, rp_file, rp_pool};
use crate::sys;

/// A ring set up by a shared pool's owner for another process: pass it
/// across `fork` (the child calls `rp_handed_enable`) or send it over a
/// Unix socket (`rp_handed_send`). The owner keeps its copy until the
/// other process is done with the ring's lease segments.
#[allow(non_camel_case_types)]
pub struct rp_handed {
    handed: HandedRing,
}

/// A handed-over ring, enabled in this process: used only by the thread
/// that enabled it (it is the ring's single issuer).
#[allow(non_camel_case_types)]
pub struct rp_ring {
    ring: Ring,
}

/// A ring broker serving a shared pool's rings on a Unix socket.
#[allow(non_camel_case_types)]
pub struct rp_broker {
    _broker: RingBroker,
}

/// A ring for another process, from a shared pool (`rp_pool_new_shared`):
/// `entries` submission queue entries (0: 128), and segments
/// `[lease_first, lease_first + lease_count)` that process leases from
/// alone (`lease_count` 0: none; it uses `rp_ring_region` only). The
/// segments hold no lease of the pool's and stay out of its leasing while
/// the returned value lives here.
///
/// # Safety
/// `pool` is a pool from this library; `err` as in `rp_pool_new`.
#[no_mangle]
pub unsafe extern "C" fn rp_pool_handover(
    pool: *mut rp_pool,
    entries: u32,
    lease_first: u16,
    lease_count: u16,
    err: *mut *mut rp_error,
) -> *mut rp_handed {
    sys::guard(err, std::ptr::null_mut(), || {
        // SAFETY: as the function's contract says.
        let p = unsafe { sys::get(pool, "pool") }?;
        let table = p.pool.table().ok_or_else(|| {
            rp_error::new(libc::EOPNOTSUPP, "the pool runs on the blocking backend: it has no table to hand over")
        })?;
        let mut opts = HandoverOptions::new().entries(if entries == 0 { 128 } else { entries });
        if lease_count > 0 {
            let end = lease_first.checked_add(lease_count).ok_or_else(|| {
                rp_error::new(libc::EINVAL, format!("lease segments {lease_first} + {lease_count} overflow"))
            })?;
            opts = opts.leases(lease_first..end);
        }
        Ok(sys::into_raw(rp_handed { handed: table.handover(&opts)? }))
    })
}

/// The number of segments of a handed ring's pool (0 for NULL).
///
/// # Safety
/// `handed` is NULL or from this library, not freed.
#[no_mangle]
pub unsafe extern "C" fn rp_handed_segments(handed: *const rp_handed) -> u16 {
    // SAFETY: as the function's contract says.
    sys::quiet(0, || unsafe { sys::get(handed, "handed ring") }.map_or(0, |h| h.handed.segments()))
}

/// Enables a handed ring in this process (the calling thread becomes its
/// single issuer) and maps the pool here. Consumes `handed` (freed, also
/// on failure). Fails with EBADFD when the ring was enabled already.
///
/// # Safety
/// `handed` is from this library and not used again; `err` as in
/// `rp_pool_new`.
#[no_mangle]
pub unsafe extern "C" fn rp_handed_enable(handed: *mut rp_handed, err: *mut *mut rp_error) -> *mut rp_ring {
    sys::guard(err, std::ptr::null_mut(), || {
        // SAFETY: as the function's contract says.
        let h = unsafe { sys::take(handed) }.ok_or_else(|| rp_error::null("handed ring"))?;
        Ok(sys::into_raw(rp_ring { ring: h.handed.enable()? }))
    })
}

/// Sends a handed ring over the connected Unix socket `sock` (SCM_RIGHTS:
/// the ring's fd, the pool's memfds, its layout). Returns 0, or -1 with
/// `*err` set. The sender keeps `handed` while the receiver uses it.
///
/// # Safety
/// `handed` is from this library, not freed; `err` as in `rp_pool_new`.
#[no_mangle]
pub unsafe extern "C" fn rp_handed_send(handed: *const rp_handed, sock: c_int, err: *mut *mut rp_error) -> c_int {
    sys::guard(err, -1, || {
        // SAFETY: as the function's contract says.
        let h = unsafe { sys::get(handed, "handed ring") }?;
        sys::with_socket(sock, |s| h.handed.send(s))??;
        Ok(0)
    })
}

/// Receives a ring sent with `rp_handed_send` from the connected Unix
/// socket `sock`. A malformed message fails (EBADFD) and its descriptors
/// are closed.
///
/// # Safety
/// `err` as in `rp_pool_new`.
#[no_mangle]
pub unsafe extern "C" fn rp_handed_receive(sock: c_int, err: *mut *mut rp_error) -> *mut rp_handed {
    sys::guard(err, std::ptr::null_mut(), || {
        let handed = sys::with_socket(sock, HandedRing::receive)??;
        Ok(sys::into_raw(rp_handed { handed }))
    })
}

/// Frees a handed ring that will not be enabled here (NULL: nothing); in
/// the owner, its lease segments return to the pool.
///
/// # Safety
/// `handed` is NULL or from this library, not used again.
#[no_mangle]
pub unsafe extern "C" fn rp_handed_free(handed: *mut rp_handed) {
    // SAFETY: as the function's contract says.
    sys::quiet((), || drop(unsafe { sys::take(handed) }))
}

/// Serves rings of a shared pool on a Unix socket at `path` (which must
/// not exist; mode 0600), to processes of the same user only.
///
/// # Safety
/// `pool` is a pool from this library; `path` a NUL-terminated string;
/// `err` as in `rp_pool_new`.
#[no_mangle]
pub unsafe extern "C" fn rp_broker_serve(
    pool: *mut rp_pool,
    path: *const c_char,
    err: *mut *mut rp_error,
) -> *mut rp_broker {
    sys::guard(err, std::ptr::null_mut(), || {
        // SAFETY: as the function's contract says.
        let (p, path) = unsafe { (sys::get(pool, "pool")?, sys::path(path)?) };
        let table = p.pool.table().ok_or_else(|| rp_error::new(libc::EOPNOTSUPP, "the pool has no table"))?;
        Ok(sys::into_raw(rp_broker { _broker: RingBroker::serve(table, path, &BrokerOptions::default())? }))
    })
}

/// Stops a broker and removes its socket (NULL: nothing).
///
/// # Safety
/// `broker` is NULL or from this library, not used again.
#[no_mangle]
pub unsafe extern "C" fn rp_broker_free(broker: *mut rp_broker) {
    // SAFETY: as the function's contract says.
    sys::quiet((), || drop(unsafe { sys::take(broker) }))
}

/// Asks the broker at `path` for a ring (`entries` 0: 128) and
/// `lease_segments` segments to lease from alone. A refusal fails with
/// EACCES and the broker's reason.
///
/// # Safety
/// `path` is a NUL-terminated string; `err` as in `rp_pool_new`.
#[no_mangle]
pub unsafe extern "C" fn rp_broker_request(
    path: *const c_char,
    entries: u32,
    lease_segments: u16,
    err: *mut *mut rp_error,
) -> *mut rp_handed {
    sys::guard(err, std::ptr::null_mut(), || {
        // SAFETY: as the function's contract says.
        let path = unsafe { sys::path(path) }?;
        Ok(sys::into_raw(rp_handed { handed: RingBroker::request(path, entries, lease_segments)? }))
    })
}

/// A pool in this process whose workers get their rings from the broker at
/// `path` (the broker's pool, mapped here; this process leases from
/// `lease_segments` segments set aside for it).
///
/// # Safety
/// `path` is a NUL-terminated string; `err` as in `rp_pool_new`.
#[no_mangle]
pub unsafe extern "C" fn rp_pool_from_broker(
    path: *const c_char,
    lease_segments: u16,
    err: *mut *mut rp_error,
) -> *mut rp_pool {
    sys::guard(err, std::ptr::null_mut(), || {
        // SAFETY: as the function's contract says.
        let path = unsafe { sys::path(path) }?;
        let pool = IoPool::builder().broker(path, lease_segments).build()?;
        Ok(sys::into_raw(rp_pool { pool: Arc::new(pool) }))
    })
}

/// Leases `len` bytes from a handed ring's lease segments.
///
/// # Safety
/// `ring` is from this library, used by the thread that enabled it; `err`
/// as in `rp_pool_new`.
#[no_mangle]
pub unsafe extern "C" fn rp_ring_buf_alloc(ring: *mut rp_ring, len: usize, err: *mut *mut rp_error) -> *mut rp_buf {
    sys::guard(err, std::ptr::null_mut(), || {
        // SAFETY: as the function's contract says.
        let r = unsafe { sys::get(ring, "ring") }?;
        let mem = r.ring.memory().ok_or_else(|| rp_error::new(libc::ENXIO, "the ring has no pool"))?;
        Ok(sys::into_raw(rp_buf::new(mem.try_alloc(len)?)))
    })
}

/// A buffer over pool bytes `[pool_offset, pool_offset + len)` outside this
/// process's lease segments (a buffer cache the application manages, for
/// instance): fixed I/O with it goes through the registered table. Within
/// one segment.
///
/// # Safety
/// `ring` as in `rp_ring_buf_alloc`. While the buffer is used for I/O, no
/// other process or thread may use those bytes in a conflicting way (the
/// application's locking decides, as for any shared memory).
#[no_mangle]
pub unsafe extern "C" fn rp_ring_region(
    ring: *mut rp_ring,
    pool_offset: u64,
    len: usize,
    err: *mut *mut rp_error,
) -> *mut rp_buf {
    sys::guard(err, std::ptr::null_mut(), || {
        // SAFETY: as the function's contract says.
        let r = unsafe { sys::get(ring, "ring") }?;
        let mem = r.ring.memory().ok_or_else(|| rp_error::new(libc::ENXIO, "the ring has no pool"))?;
        // SAFETY: the caller takes on region's contract (above).
        Ok(sys::into_raw(rp_buf::new(unsafe { mem.region(pool_offset, len) }?)))
    })
}

/// Reads `len` bytes at `offset` of `file` into `buf` with the ring
/// (READ_FIXED) and waits: the bytes read, or -1 with `*err` set.
///
/// # Safety
/// `ring` as in `rp_ring_buf_alloc`; `file` and `buf` from this library.
#[no_mangle]
pub unsafe extern "C" fn rp_ring_read_at(
    ring: *mut rp_ring,
    file: *mut rp_file,
    offset: u64,
    buf: *mut rp_buf,
    len: usize,
    err: *mut *mut rp_error,
) -> i64 {
    sys::guard(err, -1, || {
        // SAFETY: as the function's contract says.
        let (r, f, b) = unsafe { (sys::get_mut(ring, "ring")?, sys::get(file, "file")?, sys::get(buf, "buffer")?) };
        b.with(len, |io| r.ring.read_at(&f.file, offset, io))
    })
}

/// Writes the first `len` bytes of `buf` at `offset` of `file` with the
/// ring (WRITE_FIXED) and waits: the bytes written, or -1 with `*err` set.
///
/// # Safety
/// As `rp_ring_read_at`.
#[no_mangle]
pub unsafe extern "C" fn rp_ring_write_at(
    ring: *mut rp_ring,
    file: *mut rp_file,
    offset: u64,
    buf: *mut rp_buf,
    len: usize,
    err: *mut *mut rp_error,
) -> i64 {
    sys::guard(err, -1, || {
        // SAFETY: as the function's contract says.
        let (r, f, b) = unsafe { (sys::get_mut(ring, "ring")?, sys::get(file, "file")?, sys::get(buf, "buffer")?) };
        b.with(len, |io| r.ring.write_at(&f.file, offset, io))
    })
}

/// Frees a ring (NULL: nothing), after its operations complete.
///
/// # Safety
/// `ring` is NULL or from this library, not used again, freed by the
/// thread that enabled it.
#[no_mangle]
pub unsafe extern "C" fn rp_ring_free(ring: *mut rp_ring) {
    // SAFETY: as the function's contract says.
    sys::quiet((), || drop(unsafe { sys::take(ring) }))
}
