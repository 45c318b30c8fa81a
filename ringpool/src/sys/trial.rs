//! Small trials of the kernel, each in a ring of its own (or a child
//! process): whether io_uring, clone, ranged clone and the fixed opcodes
//! exist, whether a partial DST_REPLACE clone keeps the entries outside its
//! range, what a ring's memory is charged, whether one fits under a memlock
//! limit, whether a clone across processes is refused, one plain read. For
//! the feature probe, the planner and the quirk guards: they read the
//! errnos themselves, so these calls return them untouched.
//!
//! # Safety
//!
//! Every SQE points into memory the call owns until its completion is
//! reaped; when waiting fails, that memory and the ring are leaked rather
//! than freed under the kernel. Children run only system calls and
//! allocations (which glibc's malloc allows after fork).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use io_uring::types::CloneBuffersFlags;
use io_uring::IoUring;

use super::handoff::params_bytes;
use super::mmap::{Backing, Mapping};
use super::uring::{read_fixed_sync, register_iovs, Iov};

/// The memory of a ring as the kernel lays it out (io_uring.c
/// `rings_size`; each region rounded up to pages): the SQ/CQ rings with
/// the CQEs and the SQ index array, and the SQE array. What Linux 6.14+
/// charges to RLIMIT_MEMLOCK for a ring of `sq_entries` and `cq_entries`
/// set up with `flags`, on a kernel whose `struct io_rings` puts the CQEs
/// at `cqes_off` (the `cq_off.cqes` every ring's parameters carry).
pub(crate) fn ring_layout_bytes(sq_entries: u32, cq_entries: u32, flags: u32, cqes_off: u32) -> u64 {
    const SQE128: u32 = 1 << 10;
    const CQE32: u32 = 1 << 11;
    const NO_SQARRAY: u32 = 1 << 16;
    let (sq_entries, cq_entries, cqes_off) = (u64::from(sq_entries), u64::from(cq_entries), u64::from(cqes_off));
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

/// Where this kernel's `struct io_rings` puts the CQEs (`cq_off.cqes` in
/// `ring`'s parameters).
fn cqes_offset(ring: &IoUring) -> u32 {
    // io_uring_params: cq_off (io_cqring_offsets) at byte 80, whose sixth
    // word is cqes.
    let b = params_bytes(ring);
    u32::from_ne_bytes(b[100..104].try_into().expect("4 bytes"))
}

/// One plain READ of `buf.len()` bytes of `fd` at `offset` on a fresh
/// ring, waited for: the count (for kernel trials).
pub(crate) fn read_once(fd: BorrowedFd<'_>, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut ring = IoUring::new(2)?;
    super::uring::note_closed();
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
fn clone_from_forked_child(src: &IoUring) -> io::Result<i32> {
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

/// Whether a ring of two entries sets up (the error otherwise), and where
/// this kernel puts a ring's CQEs (for [`ring_layout_bytes`]).
pub(crate) fn setup_works() -> io::Result<u32> {
    IoUring::new(2).map(|r| cqes_offset(&r))
}

/// Whether `IORING_REGISTER_CLONE_BUFFERS` exists (Linux 6.12+): a clone
/// from a ring with no buffers gives ENXIO where it does, EINVAL where the
/// opcode is unknown.
pub(crate) fn clone_exists() -> bool {
    let (Ok(src), Ok(dst)) = (IoUring::new(2), IoUring::new(2)) else { return false };
    match dst.submitter().register_buffers_clone(src.as_raw_fd()) {
        // The source table is empty: the opcode exists (6.12+).
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => true,
        // Unknown opcode: older kernel.
        Err(_) => false,
        Ok(()) => true,
    }
}

/// Whether ranged clone (offsets, Linux 6.13+) exists: an out-of-range
/// `src_off` gives EOVERFLOW where it does, EINVAL on 6.12. `None` when the
/// trial cannot run (no ring, or no page may be registered).
pub(crate) fn clone_ranges_exist() -> Option<bool> {
    let src = IoUring::new(2).ok()?;
    let dst = IoUring::new(2).ok()?;
    // One registered page in the source (pins 4 KiB, released below).
    let mapping = Arc::new(Mapping::map(4096, Backing::Base, 4096).ok()?);
    register_iovs(&src, &[Iov::new(&mapping, 0, 4096)]).ok()?;
    let r = dst.submitter().register_buffers_clone_offset(src.as_raw_fd(), 1, 0, 1, CloneBuffersFlags::empty());
    // Unpin now, not in the background after close (VmPin accounting).
    let _ = src.submitter().unregister_buffers();
    Some(matches!(r, Err(e) if e.raw_os_error() == Some(libc::EOVERFLOW)))
}

/// Clones source entries 1..3 over destination entries 1..3 of a 4-entry
/// table with DST_REPLACE, then checks with a READ_FIXED from /dev/zero
/// into each entry's expected page that entries 0 and 3 are still the
/// destination's own and 1..3 the source's (a wrong entry gives EFAULT).
/// `Ok(None)`: correct; `Ok(Some(why))`: broken; `Err(())`: the trial
/// could not run (no ranged clone).
pub(crate) fn dst_replace_keeps_outside() -> Result<Option<String>, ()> {
    let page = 4096usize;
    let map = Arc::new(Mapping::map(8 * page, Backing::Base, page).map_err(drop)?);
    let iov = |i: usize| Iov::new(&map, i * page, page);
    let (Ok(src), Ok(mut dst)) = (IoUring::new(4), IoUring::new(4)) else { return Err(()) };
    let zero = std::fs::File::open("/dev/zero").map_err(drop)?;
    let result = (|| {
        register_iovs(&src, &(0..4).map(iov).collect::<Vec<_>>()).map_err(drop)?;
        register_iovs(&dst, &(4..8).map(iov).collect::<Vec<_>>()).map_err(drop)?;
        dst.submitter()
            .register_buffers_clone_offset(src.as_raw_fd(), 1, 1, 2, CloneBuffersFlags::DST_REPLACE)
            .map_err(drop)?;
        for (index, expect_page, whose) in
            [(0u16, 4, "its own"), (1, 1, "the source's"), (2, 2, "the source's"), (3, 7, "its own")]
        {
            let res =
                read_fixed_sync(&mut dst, std::os::fd::AsFd::as_fd(&zero), &iov(expect_page), index).map_err(drop)?;
            if res != page as i32 {
                return Ok(Some(format!(
                    "after replacing entries 1..3, entry {index} is not {whose} buffer (READ_FIXED gave {res})"
                )));
            }
        }
        Ok(None)
    })();
    let _ = src.submitter().unregister_buffers();
    let _ = dst.submitter().unregister_buffers();
    result
}

/// (READ_FIXED and WRITE_FIXED, READV_FIXED and WRITEV_FIXED) in the
/// kernel's opcode probe.
pub(crate) fn fixed_opcodes() -> (bool, bool) {
    let Ok(ring) = IoUring::new(2) else { return (false, false) };
    let mut probe = io_uring::Probe::new();
    if ring.submitter().register_probe(&mut probe).is_err() {
        return (false, false);
    }
    let has = |a: u8, b: u8| probe.is_supported(a) && probe.is_supported(b);
    use io_uring::opcode::{ReadFixed, ReadvFixed, WriteFixed, WritevFixed};
    (has(ReadFixed::CODE, WriteFixed::CODE), has(ReadvFixed::CODE, WritevFixed::CODE))
}

/// A ring registers one page, and a forked child clones its table: 0 when
/// the child's clone worked, 1 on EINVAL (refused across accounting
/// contexts), another code when the child's trial failed.
pub(crate) fn clone_across_processes() -> io::Result<i32> {
    let map = Arc::new(Mapping::map(4096, Backing::Base, 4096)?);
    let src = IoUring::new(2)?;
    register_iovs(&src, &[Iov::new(&map, 0, 4096)])?;
    let code = clone_from_forked_child(&src);
    let _ = src.submitter().unregister_buffers();
    drop(src);
    super::uring::note_closed();
    code
}

/// Times registering 1 GiB of 2 MiB hugetlb pages into a table that holds
/// 1 GiB already, directly (a buffers update) and on a helper ring cloned
/// in (DST_REPLACE): the best of two alternating tries of each. Maps 2 GiB
/// of 2 MiB pages (the caller checked they are free).
pub(crate) fn populated_registration_times() -> io::Result<(Duration, Duration)> {
    const GIB: usize = 1 << 30;
    let map = Arc::new(Mapping::map(2 * GIB, Backing::Hugetlb { shift: 21 }, 2 << 20)?);
    if !map.populate(0, 2 * GIB)? {
        map.touch(0, 2 * GIB, 2 << 20)?;
    }
    let (first, second) = ([Iov::new(&map, 0, GIB)], [Iov::new(&map, GIB, GIB)]);
    let populated = || -> io::Result<IoUring> {
        let ring = IoUring::new(2)?;
        super::uring::register_sparse(&ring, 2)?;
        super::uring::update_iovs(&ring, 0, &first)?;
        Ok(ring)
    };
    let (mut direct, mut helper) = (Duration::MAX, Duration::MAX);
    for _ in 0..2 {
        let ring = populated()?;
        let t = Instant::now();
        super::uring::update_iovs(&ring, 1, &second)?;
        direct = direct.min(t.elapsed());
        let _ = ring.submitter().unregister_buffers();
        let ring = populated()?;
        let t = Instant::now();
        let h = IoUring::new(2)?;
        register_iovs(&h, &second)?;
        ring.submitter().register_buffers_clone_offset(h.as_raw_fd(), 0, 1, 1, CloneBuffersFlags::DST_REPLACE)?;
        let _ = h.submitter().unregister_buffers();
        helper = helper.min(t.elapsed());
        let _ = ring.submitter().unregister_buffers();
    }
    super::uring::note_closed();
    Ok((direct, helper))
}

/// The smallest RLIMIT_MEMLOCK under which a ring of `entries` (set up as
/// [`ring_fits_under`] does) sets up, for a user that has nothing else
/// locked: a binary search over whole pages up to 16 times `hint`, each
/// step in a child under a scratch uid of its own (a ring's charge is
/// released asynchronously when it closes, so no uid is used twice); found
/// once per `entries` and cached. Root only; `None` otherwise or when a
/// step fails oddly.
pub(crate) fn smallest_limit_for_ring(entries: u32, hint: u64) -> Option<u64> {
    static CACHE: std::sync::Mutex<Vec<(u32, u64)>> = std::sync::Mutex::new(Vec::new());
    let cache = || CACHE.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(&(_, bytes)) = cache().iter().find(|c| c.0 == entries) {
        return Some(bytes);
    }
    let found = search_limit_for_ring(entries, hint)?;
    cache().push((entries, found));
    Some(found)
}

fn search_limit_for_ring(entries: u32, hint: u64) -> Option<u64> {
    if super::socket::euid() != 0 {
        return None;
    }
    // Scratch uids high in the 32-bit range: 256 per process, none used
    // twice.
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let fits = |limit: u64| -> Option<bool> {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if n >= 0x100 {
            return None;
        }
        let uid = 0x7ff0_0000 + (std::process::id() % 0x1000) * 0x100 + n;
        ring_fits_under(limit, uid, entries)
    };
    let page = page_size();
    let (mut lo, mut hi) = (0u64, hint.saturating_mul(16).div_ceil(page));
    if !fits(hi * page)? {
        return None;
    }
    // fits(lo) is false (a ring needs some memory), fits(hi) true.
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        if fits(mid * page)? {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Some(hi * page)
}

/// The system's page size.
pub(crate) fn page_size() -> u64 {
    // SAFETY: sysconf has no pointer arguments.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(p).ok().filter(|&p| p > 0).unwrap_or(4096)
}
