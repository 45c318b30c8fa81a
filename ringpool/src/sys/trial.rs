//! Small trials of the kernel, each in a ring of its own (or a child
//! process): what a ring's memory is charged, whether one fits under a
//! memlock limit, whether a clone across processes is refused, one plain
//! read. For the planner and the quirk guards.
//!
//! # Safety
//!
//! Every SQE points into memory the call owns until its completion is
//! reaped; when waiting fails, that memory and the ring are leaked rather
//! than freed under the kernel. Children run only system calls and
//! allocations (which glibc's malloc allows after fork).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use io_uring::IoUring;

use super::handoff::params_bytes;

/// The memory of a ring as the kernel lays it out (io_uring.c
/// `rings_size`; each region rounded up to pages): the SQ/CQ rings with
/// the CQEs and the SQ index array, and the SQE array. What Linux 6.14+
/// charges to RLIMIT_MEMLOCK for `ring`.
pub(crate) fn ring_layout_bytes(ring: &IoUring) -> u64 {
    const SQE128: u32 = 1 << 10;
    const CQE32: u32 = 1 << 11;
    const NO_SQARRAY: u32 = 1 << 16;
    // io_uring_params: sq_entries, cq_entries, flags at bytes 0, 4, 8;
    // cq_off (io_cqring_offsets) at 80, whose sixth word is cqes.
    let b = params_bytes(ring);
    let word = |at: usize| u64::from(u32::from_ne_bytes(b[at..at + 4].try_into().expect("4 bytes")));
    let (sq_entries, cq_entries, flags, cqes_off) = (word(0), word(4), word(8) as u32, word(100));
    let page = page_size();
    // rings_size(): struct_size(rings, cqes, cq_entries), the whole of it
    // doubled for 32-byte CQEs; then cache-line aligned.
    let mut rings = cqes_off + cq_entries * 16;
    if flags & CQE32 != 0 {
        rings <<= 1;
    }
    rings = rings.next_multiple_of(64);
    if flags & NO_SQARRAY == 0 {
        rings += sq_entries * 4;
    }
    let sqe = if flags & SQE128 != 0 { 128 } else { 64 };
    let sqes = sq_entries * sqe;
    rings.next_multiple_of(page) + sqes.next_multiple_of(page)
}

/// One plain READ of `buf.len()` bytes of `fd` at `offset` on a fresh
/// ring, waited for: the count (for kernel trials).
pub(crate) fn read_once(fd: BorrowedFd<'_>, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut ring = IoUring::new(2)?;
    let len = u32::try_from(buf.len()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // The kernel reads into a buffer of this call's own, copied out at the
    // end: should waiting fail, it is left to the kernel, not freed.
    let mut own = vec![0u8; buf.len()];
    let e =
        io_uring::opcode::Read::new(io_uring::types::Fd(fd.as_raw_fd()), own.as_mut_ptr(), len).offset(offset).build();
    // SAFETY: `own` lives until the completion is reaped below, or is
    // leaked with the ring when waiting fails.
    unsafe { ring.submission().push(&e).map_err(|_| io::Error::from_raw_os_error(libc::EBUSY))? };
    let res = wait_one(&mut ring);
    let res = match res {
        Ok(r) => r,
        Err(e) => {
            std::mem::forget(own);
            std::mem::forget(ring);
            return Err(e);
        }
    };
    if res < 0 {
        return Err(io::Error::from_raw_os_error(-res));
    }
    let n = (res as usize).min(buf.len());
    buf[..n].copy_from_slice(&own[..n]);
    Ok(n)
}

/// Waits for the one operation in flight on `ring`: its result.
pub(crate) fn wait_one(ring: &mut IoUring) -> io::Result<i32> {
    loop {
        if let Some(c) = ring.completion().next() {
            return Ok(c.result());
        }
        match ring.submit_and_wait(1) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
}

/// Whether a ring of `entries` (set up as ringpool's rings are:
/// SINGLE_ISSUER | DEFER_TASKRUN, twice as many CQEs) sets up in a child
/// running as scratch user `uid` under RLIMIT_MEMLOCK `limit`: `Some(true)`,
/// `Some(false)` on ENOMEM, `None` when the trial itself failed. Root only.
pub(crate) fn ring_fits_under(limit: u64, uid: u32, entries: u32) -> Option<bool> {
    // SAFETY: the child sets up one ring (system calls and an allocation,
    // which glibc's malloc allows after fork) and exits.
    let code = unsafe {
        super::os::in_scratch_user(limit, uid, move || {
            let mut b = IoUring::builder();
            b.setup_single_issuer().setup_defer_taskrun().setup_cqsize(entries.saturating_mul(2));
            let r: io::Result<IoUring> = match b.build(entries) {
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    IoUring::builder().setup_cqsize(entries.saturating_mul(2)).build(entries)
                }
                r => r,
            };
            match r {
                Ok(_) => 0,
                Err(e) if e.raw_os_error() == Some(libc::ENOMEM) => 1,
                Err(_) => 2,
            }
        })
    }
    .ok()?;
    match code {
        0 => Some(true),
        1 => Some(false),
        _ => None,
    }
}

/// A forked child sets up a ring and clones `src`'s table into it: 0 when
/// the clone worked, 1 on EINVAL (refused across accounting contexts),
/// another code when the trial failed.
pub(crate) fn clone_from_forked_child(src: &IoUring) -> io::Result<i32> {
    let fd = src.as_raw_fd();
    // SAFETY: the child sets up a ring and makes one register call (system
    // calls and an allocation, which glibc's malloc allows after fork).
    let pid = unsafe {
        super::os::fork_child(move || {
            let Ok(dst) = IoUring::new(2) else { return 2 };
            match dst.submitter().register_buffers_clone(fd) {
                Ok(()) => 0,
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => 1,
                Err(_) => 3,
            }
        })
    }?;
    super::os::wait_child(pid)
}

/// The system's page size.
pub(crate) fn page_size() -> u64 {
    // SAFETY: sysconf has no pointer arguments.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(p).ok().filter(|&p| p > 0).unwrap_or(4096)
}
