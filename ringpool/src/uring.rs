//! The kernel's verbs for rings and their buffer tables, safe and typed:
//! the one place ringpool sets rings up, registers, updates, clones and
//! unregisters tables, enables handed rings and registers files, and the
//! one place that says what each errno of those calls means (each on its
//! own line). The safe twin of [`crate::sys::uring`], which holds the raw
//! calls.
//!
//! Completion errnos of reads and writes are mapped by the operation itself
//! ([`crate::op::Op`]), which knows the file and the offset.
//!
//! Every verb that can be charged to RLIMIT_MEMLOCK (ring setup since Linux
//! 6.14, registration always) retries an ENOMEM for a few seconds after
//! this process closed a ring: the kernel releases a closed ring's charge
//! asynchronously, so a process that just closed probe rings would
//! otherwise fail under a limit that fits it exactly.

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

use io_uring::types::CloneBuffersFlags;
use io_uring::IoUring;

use crate::error::{Error, Result};
use crate::probe::{has_cap_ipc_lock, unavailable_reason, Features};
use crate::sys::uring::{closed_within, Iov, Uring};
use crate::types::{Bytes, CloneRange, MAX_SEGMENTS};

/// How long after this process closed a ring an ENOMEM from a charged call
/// is retried (the kernel releases a closed ring's charge asynchronously;
/// measured here: up to about 1.5 s).
const CHARGE_RELEASE: Duration = Duration::from_secs(4);

/// Runs `f`, which charges `needed` bytes to RLIMIT_MEMLOCK, again while
/// it fails with ENOMEM, a ring this process closed may still be charged,
/// and what this process holds charged now plus `needed` is within the
/// limit (else waiting cannot help: the error is reported at once).
fn retry_charged<T>(needed: u64, mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(e) if e.raw_os_error() == Some(libc::ENOMEM) && closed_within(CHARGE_RELEASE) && could_fit(needed) => {
                std::thread::sleep(Duration::from_millis(5));
            }
            r => return r,
        }
    }
}

/// Whether a charge of `needed` bytes fits RLIMIT_MEMLOCK beside what this
/// process holds charged now: its pinned pages (VmPin) and its live rings'
/// memory (other processes of the same user share the limit: it assumes
/// none, as the planner does).
fn could_fit(needed: u64) -> bool {
    let Some(limit) = crate::sys::os::memlock_limit().ok().flatten() else { return true };
    let pinned = crate::sys::os::vm_pinned_kb(std::process::id()).unwrap_or(0).saturating_mul(1024);
    pinned.saturating_add(crate::sys::uring::live_ring_charge()).saturating_add(needed) <= limit
}

/// What setting a ring up as `s` says charges to RLIMIT_MEMLOCK (Linux
/// 6.14+), computed from the kernel's layout.
fn ring_charge(s: &Setup) -> u64 {
    if !crate::quirks::ring_memory_charged(Features::get()) {
        return 0;
    }
    let sq = s.entries.next_power_of_two();
    crate::sys::trial::ring_layout_bytes(sq, sq.saturating_mul(2), 0, Features::get().cqes_offset)
}

/// How a ring is set up.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Setup {
    /// Submission queue entries (1 to 32768).
    pub entries: u32,
    /// SINGLE_ISSUER (Linux 6.0): only the thread that enables or creates
    /// it submits.
    pub single_issuer: bool,
    /// DEFER_TASKRUN (6.1): completions posted only when the issuer waits.
    pub defer_taskrun: bool,
    /// COOP_TASKRUN | TASKRUN_FLAG (5.19), without DEFER_TASKRUN.
    pub coop_taskrun: bool,
    /// NO_SQARRAY (6.6).
    pub no_sqarray: bool,
    /// R_DISABLED (5.10): set up disabled, for another process to enable.
    pub disabled: bool,
}

impl Setup {
    /// A plain ring of `entries` (templates, helpers, trials).
    pub(crate) fn plain(entries: u32) -> Setup {
        Setup {
            entries,
            single_issuer: false,
            defer_taskrun: false,
            coop_taskrun: false,
            no_sqarray: false,
            disabled: false,
        }
    }
}

/// What a ring got: whether its completions wait for its issuer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TaskRun {
    pub defer: bool,
    pub coop: bool,
}

fn builder(s: &Setup) -> io_uring::Builder {
    let mut b = IoUring::builder();
    // entries <= 32768 (checked by the callers): twice that fits.
    b.setup_cqsize(s.entries.saturating_mul(2));
    if s.single_issuer {
        b.setup_single_issuer();
    }
    if s.no_sqarray {
        b.setup_no_sqarray();
    }
    if s.disabled {
        b.setup_r_disabled();
    }
    if s.defer_taskrun {
        b.setup_defer_taskrun();
    } else if s.coop_taskrun {
        b.setup_coop_taskrun().setup_taskrun_flag();
    }
    b
}

/// Sets a ring up as `s` says. A ring that is not for another process
/// falls back to a plain one where the kernel lacks a flag (EINVAL:
/// SINGLE_ISSUER 6.0, DEFER_TASKRUN 6.1, COOP_TASKRUN 5.19, NO_SQARRAY 6.6).
///
/// # Errors
/// [`Error::IoUringUnavailable`] (ENOSYS, EPERM); [`Error::RingMemlock`]
/// (ENOMEM without CAP_IPC_LOCK, Linux 6.14+); [`Error::Io`].
pub(crate) fn setup(s: &Setup) -> Result<(Uring, TaskRun)> {
    let asked = TaskRun { defer: s.defer_taskrun, coop: !s.defer_taskrun && s.coop_taskrun };
    let charge = ring_charge(s);
    match retry_charged(charge, || builder(s).build(s.entries)) {
        Ok(r) => Ok((Uring::new(r, charge), asked)),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) && !s.disabled => {
            let r =
                retry_charged(charge, || builder(&Setup::plain(s.entries)).build(s.entries)).map_err(setup_error)?;
            Ok((Uring::new(r, charge), TaskRun { defer: false, coop: false }))
        }
        Err(e) => Err(setup_error(e)),
    }
}

/// Turns an `io_uring_setup` error into [`Error::IoUringUnavailable`] where
/// it means io_uring cannot be used at all.
pub(crate) fn setup_error(e: io::Error) -> Error {
    match e.raw_os_error() {
        // Not built in, or hidden by seccomp.
        Some(libc::ENOSYS) => Error::IoUringUnavailable { reason: unavailable_reason(&e), source: e },
        // io_uring_disabled, or a seccomp / container policy.
        Some(libc::EPERM) => Error::IoUringUnavailable { reason: unavailable_reason(&e), source: e },
        // Ring memory is charged to RLIMIT_MEMLOCK (Linux 6.14+).
        Some(libc::ENOMEM) => match crate::sys::os::memlock_limit() {
            Ok(Some(limit)) if !has_cap_ipc_lock() => Error::RingMemlock { limit: Bytes(limit) },
            _ => Error::os("io_uring_setup", e),
        },
        _ => Error::os("io_uring_setup", e),
    }
}

/// Limits the io-wq workers of the ring's thread (Linux 5.15+); a failure
/// is logged, the kernel's limits stay.
pub(crate) fn limit_iowq(ring: &IoUring, bounded: u32, unbounded: u32) {
    let mut v = [bounded, unbounded];
    if let Err(e) = ring.submitter().register_iowq_max_workers(&mut v) {
        tracing::warn!("IORING_REGISTER_IOWQ_MAX_WORKERS failed: {e}");
    }
}

/// Registers `iovs` as the ring's whole table, in one call
/// (IORING_REGISTER_BUFFERS); `op` names it in errors.
///
/// # Errors
/// As [`register_error`].
pub(crate) fn register(op: &'static str, ring: &IoUring, iovs: &[Iov]) -> Result<()> {
    mapped(op, iovs, retry_charged(bytes(iovs), || crate::sys::uring::register_iovs(ring, iovs)))
}

/// Registers `iovs` in slots `[0, iovs.len())` of a table of `capacity`
/// slots: in one call when it is full, else as a sparse table filled by one
/// update (room to grow).
///
/// # Errors
/// As [`register_error`].
pub(crate) fn register_table(ring: &IoUring, iovs: &[Iov], capacity: u16) -> Result<()> {
    if usize::from(capacity) > iovs.len() {
        crate::sys::uring::register_sparse(ring, u32::from(capacity)).map_err(|e| register_error("register", e, 0))?;
        update("register", ring, 0, iovs)
    } else {
        register("register", ring, iovs)
    }
}

/// Fills slots `[first, first + iovs.len())` of a table, all or nothing
/// (IORING_REGISTER_BUFFERS_UPDATE).
///
/// # Errors
/// As [`register_error`].
pub(crate) fn update(op: &'static str, ring: &IoUring, first: u16, iovs: &[Iov]) -> Result<()> {
    mapped(op, iovs, retry_charged(bytes(iovs), || crate::sys::uring::update_iovs(ring, u32::from(first), iovs)))
}

/// Empties slots `[first, first + n)` (a buffers update with NULL iovecs:
/// the kernel drops the entries, unpinning pages no other table holds).
///
/// # Errors
/// [`Error::Io`].
pub(crate) fn clear(ring: &IoUring, first: u16, n: u16) -> Result<()> {
    crate::sys::uring::clear_slots(ring, u32::from(first), u32::from(n)).map_err(|e| Error::os("clear table slots", e))
}

/// Unregisters the ring's table (unpinning, on this thread, what only it
/// held). With `empty_ok`, a ring with no table (ENXIO) is no error.
///
/// # Errors
/// [`Error::Io`].
pub(crate) fn unregister(ring: &IoUring, empty_ok: bool) -> Result<()> {
    match ring.submitter().unregister_buffers() {
        Err(e) if empty_ok && e.raw_os_error() == Some(libc::ENXIO) => Ok(()),
        r => r.map_err(|e| Error::os("unregister", e)),
    }
}

/// Registers `iovs` on a fresh helper ring and clones them into `ring`'s
/// slots from `first` on (DST_REPLACE, Linux 6.13+); the helper's
/// references are dropped here, on this thread.
///
/// # Errors
/// As [`register`] and [`clone_into`].
pub(crate) fn register_via_helper(ring: &IoUring, iovs: &[Iov], first: u16) -> Result<()> {
    let (helper, _) = setup(&Setup::plain(2))?;
    register("grow register", &helper, iovs)?;
    // At most 16384 entries.
    let n = iovs.len() as u32;
    let r = clone_into(ring, helper.fd(), n, CloneRange::range(0, u32::from(first), n).replace());
    let _ = unregister(&helper, true);
    r
}

/// Bytes `iovs` pin.
fn bytes(iovs: &[Iov]) -> u64 {
    iovs.iter().map(|i| i.len() as u64).sum()
}

/// Maps the result of registering `iovs` (which pins their bytes).
fn mapped(op: &'static str, iovs: &[Iov], r: io::Result<()>) -> Result<()> {
    r.map_err(|e| register_error(op, e, bytes(iovs)))
}

/// Maps the errno of `IORING_REGISTER_BUFFERS` (and of a buffers update) to
/// an [`Error`]; `needed` is the bytes the registration pins.
pub(crate) fn register_error(op: &'static str, err: io::Error, needed: u64) -> Error {
    match err.raw_os_error() {
        // The pages would exceed RLIMIT_MEMLOCK (the task lacks CAP_IPC_LOCK).
        Some(libc::ENOMEM) => match crate::sys::os::memlock_limit() {
            Ok(Some(limit)) if !has_cap_ipc_lock() => {
                Error::MemlockLimit { op, limit: Bytes(limit), needed: Bytes(needed) }
            }
            _ => Error::os(op, err),
        },
        // An entry is larger than 1 GiB, or the memory is file-backed / not mapped.
        Some(libc::EFAULT) => {
            Error::BadAddress { op, hint: "every segment must be anonymous, hugetlb or shmem memory of at most 1 GiB" }
        }
        // SINGLE_ISSUER ring used from another thread.
        Some(libc::EEXIST) => Error::SingleIssuer { op },
        // The ring already has a table.
        Some(libc::EBUSY) => Error::TableAlreadyPresent,
        _ => Error::os(op, err),
    }
}

/// Clones `range` of the table of ring `src` (whose table has `source_len`
/// slots, for interpreting range errors) into `ring`
/// (IORING_REGISTER_CLONE_BUFFERS, Linux 6.12+; offsets and DST_REPLACE
/// 6.13+). Costs O(entries), charges nothing.
///
/// # Errors
/// As [`clone_error`].
pub(crate) fn clone_into(ring: &IoUring, src: RawFd, source_len: u32, range: CloneRange) -> Result<()> {
    try_clone_into(ring, src, range).map_err(|e| clone_error(e, range, source_len))
}

/// [`clone_into`] with the errno untouched: for the feature probes.
pub(crate) fn try_clone_into(ring: &IoUring, src: RawFd, range: CloneRange) -> io::Result<()> {
    let flags = if range.replace { CloneBuffersFlags::DST_REPLACE } else { CloneBuffersFlags::empty() };
    // Note the argument order of the io-uring crate: (src_fd, src_off, dst_off, nr).
    ring.submitter().register_buffers_clone_offset(src, range.src_off, range.dst_off, range.nr, flags)
}

/// Maps the errno of `IORING_REGISTER_CLONE_BUFFERS` to an [`Error`], in the
/// order the kernel checks them (see KERNEL.md).
pub(crate) fn clone_error(err: io::Error, range: CloneRange, source_len: u32) -> Error {
    let out_of_bounds =
        || Error::RangeOutOfBounds { src_off: range.src_off, dst_off: range.dst_off, nr: range.nr, source_len };
    match err.raw_os_error() {
        // A SINGLE_ISSUER source or destination, and we are not its submitter.
        Some(libc::EEXIST) => Error::SingleIssuer { op: "clone" },
        // The destination has a table and DST_REPLACE was not given.
        Some(libc::EBUSY) => Error::TableAlreadyPresent,
        // The source table is empty.
        Some(libc::ENXIO) => Error::EmptySource,
        // src_off + nr past the source table, or dst_off + nr overflows.
        Some(libc::EOVERFLOW) => out_of_bounds(),
        // The source fd is not open.
        Some(libc::EBADF) => Error::invalid("clone source", "fd", "it is not an open io_uring of this process"),
        // The source fd is open but not an io_uring.
        Some(libc::EOPNOTSUPP) => Error::invalid("clone source", "fd", "it is not an open io_uring of this process"),
        // Unknown opcode, a range 6.12 cannot read, a bad range, or another mm / user.
        Some(libc::EINVAL) => clone_einval(range, source_len, Features::get(), out_of_bounds),
        _ => Error::os("clone", err),
    }
}

/// EINVAL from a clone has four causes; tells them apart.
fn clone_einval(range: CloneRange, source_len: u32, f: &Features, out_of_bounds: impl Fn() -> Error) -> Error {
    if !f.clone_buffers {
        // The opcode is unknown: kernel < 6.12.
        return Error::KernelTooOld {
            feature: "IORING_REGISTER_CLONE_BUFFERS",
            needed: "6.12",
            kernel: f.kernel.clone(),
        };
    }
    if range.is_ranged() && !f.clone_ranges {
        // 6.12 reads offsets as must-be-zero padding and knows no DST_REPLACE.
        return Error::KernelTooOld {
            feature: "ranged IORING_REGISTER_CLONE_BUFFERS (offsets, DST_REPLACE)",
            needed: "6.13",
            kernel: f.kernel.clone(),
        };
    }
    if range.fits(source_len) {
        // Different mm or accounting user.
        Error::CrossProcess
    } else {
        out_of_bounds()
    }
}

impl CloneRange {
    /// Whether it uses what 6.12 lacks: offsets, a count, DST_REPLACE.
    pub(crate) fn is_ranged(&self) -> bool {
        self.nr != 0 || self.src_off != 0 || self.dst_off != 0 || self.replace
    }

    /// Whether the kernel accepts it against a source of `source_len`
    /// slots: the source range inside the source table, the destination
    /// range inside 16384 slots, and a whole-table clone (`nr` 0) without
    /// offsets.
    pub(crate) fn fits(&self, source_len: u32) -> bool {
        let nr = u64::from(self.nr);
        let src_end = u64::from(self.src_off) + nr;
        let dst_end = u64::from(self.dst_off) + if nr == 0 { u64::from(source_len) } else { nr };
        !(nr > u64::from(source_len)
            || src_end > u64::from(source_len)
            || dst_end > MAX_SEGMENTS
            || (nr == 0 && (self.src_off | self.dst_off) != 0))
    }
}

/// Enables a ring set up disabled (IORING_REGISTER_ENABLE_RINGS): the
/// calling thread becomes its single issuer.
///
/// # Errors
/// [`Error::RingAlreadyEnabled`]; [`Error::Io`].
pub(crate) fn enable(ring: &IoUring) -> Result<()> {
    match ring.submitter().register_enable_rings() {
        Ok(()) => Ok(()),
        // The ring is not disabled (EBADFD), or another task is its single
        // issuer already (EEXIST): some process enabled it.
        Err(e) if matches!(e.raw_os_error(), Some(libc::EBADFD) | Some(libc::EEXIST)) => Err(Error::RingAlreadyEnabled),
        Err(e) => Err(Error::os("enable ring", e)),
    }
}

#[cfg(feature = "tokio")]
/// Has the kernel signal `efd` at every completion posted on the ring
/// (IORING_REGISTER_EVENTFD).
///
/// # Errors
/// [`Error::Io`].
pub(crate) fn register_eventfd(ring: &IoUring, efd: RawFd) -> Result<()> {
    ring.submitter().register_eventfd(efd).map_err(|e| Error::os("register eventfd", e))
}

/// Registers an empty file table of `slots` slots.
///
/// # Errors
/// [`Error::Io`].
pub(crate) fn register_files_sparse(ring: &IoUring, slots: u32) -> Result<()> {
    ring.submitter().register_files_sparse(slots).map_err(|e| Error::os("register files", e))
}

/// Puts `fd` in file slot `slot`.
///
/// # Errors
/// [`Error::Io`].
pub(crate) fn register_file(ring: &IoUring, slot: u32, fd: RawFd) -> Result<()> {
    ring.submitter().register_files_update(slot, &[fd]).map(drop).map_err(|e| Error::os("register files", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clone_ranges_fit_as_the_kernel_checks_them() {
        // Whole tables: no offsets, any source size up to 16384.
        assert!(CloneRange::all().fits(4));
        assert!(CloneRange::all().fits(16384));
        assert!(!CloneRange { src_off: 1, ..CloneRange::all() }.fits(4));
        assert!(!CloneRange { dst_off: 1, ..CloneRange::all() }.fits(4));
        // Ranged: inside the source, and inside 16384 destination slots.
        assert!(CloneRange::range(1, 1, 2).fits(4));
        assert!(CloneRange::range(2, 0, 2).fits(4));
        assert!(!CloneRange::range(3, 0, 2).fits(4), "past the source");
        assert!(!CloneRange::range(0, 0, 5).fits(4), "more than the source holds");
        assert!(CloneRange::range(0, 16383, 1).fits(4));
        assert!(!CloneRange::range(0, 16383, 2).fits(4), "past 16384 destination slots");
        assert!(!CloneRange::range(u32::MAX, 0, 1).fits(4), "no overflow");
        assert!(!CloneRange::range(0, u32::MAX, 1).fits(4), "no overflow");
        // What 6.12 lacks.
        assert!(!CloneRange::all().is_ranged());
        assert!(CloneRange::all().replace().is_ranged());
        assert!(CloneRange::range(0, 0, 1).is_ranged());
    }

    #[test]
    fn clone_einval_tells_its_four_causes_apart() {
        let mut f = Features::get().clone();
        let oob = || Error::RangeOutOfBounds { src_off: 0, dst_off: 0, nr: 0, source_len: 0 };
        f.clone_buffers = false;
        assert!(matches!(clone_einval(CloneRange::all(), 4, &f, oob), Error::KernelTooOld { needed: "6.12", .. }));
        f.clone_buffers = true;
        f.clone_ranges = false;
        let ranged = CloneRange::range(1, 1, 1);
        assert!(matches!(clone_einval(ranged, 4, &f, oob), Error::KernelTooOld { needed: "6.13", .. }));
        f.clone_ranges = true;
        assert!(matches!(clone_einval(CloneRange::range(3, 0, 2), 4, &f, oob), Error::RangeOutOfBounds { .. }));
        assert!(matches!(clone_einval(ranged, 4, &f, oob), Error::CrossProcess));
    }
}
