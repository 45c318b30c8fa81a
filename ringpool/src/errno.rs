//! What the errnos of `io_uring_setup` and `io_uring_register` (buffer
//! registration and clone) mean, each on its own line, as typed errors.
//!
//! Completion errnos of reads and writes are mapped by the operation itself
//! ([`crate::Op`], op.rs), which knows the file and the offset.

use std::io;

use crate::error::Error;
use crate::probe::{has_cap_ipc_lock, unavailable_reason, Features};
use crate::units::Bytes;

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

/// What a clone asked for, to interpret the kernel's answer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CloneRequest {
    pub src_off: u32,
    pub dst_off: u32,
    pub nr: u32,
    pub source_len: u32,
    pub replace: bool,
}

/// Maps the errno of `IORING_REGISTER_CLONE_BUFFERS` to an [`Error`], in the
/// order the kernel checks them (see KERNEL.md).
pub(crate) fn clone_error(err: io::Error, req: CloneRequest) -> Error {
    let range = || Error::RangeOutOfBounds {
        src_off: req.src_off,
        dst_off: req.dst_off,
        nr: req.nr,
        source_len: req.source_len,
    };
    match err.raw_os_error() {
        // A SINGLE_ISSUER source or destination, and we are not its submitter.
        Some(libc::EEXIST) => Error::SingleIssuer { op: "clone" },
        // The destination has a table and DST_REPLACE was not given.
        Some(libc::EBUSY) => Error::TableAlreadyPresent,
        // The source table is empty.
        Some(libc::ENXIO) => Error::EmptySource,
        // src_off + nr past the source table, or dst_off + nr overflows.
        Some(libc::EOVERFLOW) => range(),
        // The source fd is not open.
        Some(libc::EBADF) => Error::invalid("clone source", "fd", "it is not an open io_uring of this process"),
        // The source fd is open but not an io_uring.
        Some(libc::EOPNOTSUPP) => Error::invalid("clone source", "fd", "it is not an open io_uring of this process"),
        // Unknown opcode, a range 6.12 cannot read, a bad range, or another mm / user.
        Some(libc::EINVAL) => clone_einval(req, range),
        _ => Error::os("clone", err),
    }
}

/// EINVAL from a clone has four causes; tells them apart.
fn clone_einval(req: CloneRequest, range: impl Fn() -> Error) -> Error {
    let f = Features::get();
    if !f.clone_buffers {
        // The opcode is unknown: kernel < 6.12.
        return Error::KernelTooOld {
            feature: "IORING_REGISTER_CLONE_BUFFERS",
            needed: "6.12",
            kernel: f.kernel.clone(),
        };
    }
    let ranged = req.nr != 0 || req.src_off != 0 || req.dst_off != 0 || req.replace;
    if ranged && !f.clone_ranges {
        // 6.12 reads offsets as must-be-zero padding and knows no DST_REPLACE.
        return Error::KernelTooOld {
            feature: "ranged IORING_REGISTER_CLONE_BUFFERS (offsets, DST_REPLACE)",
            needed: "6.13",
            kernel: f.kernel.clone(),
        };
    }
    let nr = u64::from(req.nr);
    let end_src = u64::from(req.src_off) + nr;
    let end_dst = u64::from(req.dst_off) + if nr == 0 { u64::from(req.source_len) } else { nr };
    let bad_range = nr > u64::from(req.source_len)
        || end_src > u64::from(req.source_len)
        || end_dst > crate::types::MAX_SEGMENTS
        || (nr == 0 && (req.src_off | req.dst_off) != 0);
    if bad_range {
        range()
    } else {
        // Different mm or accounting user.
        Error::CrossProcess
    }
}
