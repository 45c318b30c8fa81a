//! Thin wrappers over libc calls that take out-parameters or raw fds.
//!
//! # Safety
//!
//! Each wrapper passes the kernel a pointer to a local, properly sized and
//! zero-initialised value, or a file descriptor borrowed for the call.

use std::ffi::CString;
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Runs `f` again while it fails with EINTR (a signal arrived first).
pub(crate) fn retry_eintr<T>(mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            r => return r,
        }
    }
}

/// `preadv2(2)` into `bufs` at `offset` with `flags` (`RWF_*`), retried on
/// EINTR; the bytes read. The raw system call: libc's wrapper is a thread
/// cancellation point, which costs two more calls per read.
pub(crate) fn preadv2(fd: BorrowedFd<'_>, bufs: &mut [IoSliceMut<'_>], offset: u64, flags: i32) -> io::Result<usize> {
    let off = i64::try_from(offset).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let cnt = libc::c_int::try_from(bufs.len()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    retry_eintr(|| {
        // SAFETY: IoSliceMut is ABI-compatible with iovec (std's guarantee on
        // Unix), and every slice is valid, writable memory for the call. On
        // 64-bit Linux the offset goes whole in pos_l, and pos_h is 0.
        let n = unsafe {
            libc::syscall(libc::SYS_preadv2, fd.as_raw_fd(), bufs.as_mut_ptr(), cnt, off, 0 as libc::c_long, flags)
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    })
}

/// `pwritev2(2)` of `bufs` at `offset` with `flags`, retried on EINTR; the
/// bytes written (the raw system call, as `preadv2`).
pub(crate) fn pwritev2(fd: BorrowedFd<'_>, bufs: &[IoSlice<'_>], offset: u64, flags: i32) -> io::Result<usize> {
    let off = i64::try_from(offset).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let cnt = libc::c_int::try_from(bufs.len()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    retry_eintr(|| {
        // SAFETY: IoSlice is ABI-compatible with iovec, and every slice is
        // valid memory for the call; the offset as in preadv2.
        let n = unsafe {
            libc::syscall(libc::SYS_pwritev2, fd.as_raw_fd(), bufs.as_ptr(), cnt, off, 0 as libc::c_long, flags)
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    })
}

/// Reads `len` bytes at offset 0 of `fd` with `preadv2(RWF_NOWAIT)` into a
/// scratch page-aligned buffer: whether the file serves non-blocking I/O.
/// `Ok(n)` or `EAGAIN`: it does (EAGAIN: this read would have blocked);
/// `EOPNOTSUPP`: it does not (io_uring sends its requests to io-wq).
pub(crate) fn read_nowait_trial(fd: BorrowedFd<'_>, len: usize) -> io::Result<usize> {
    let page = 4096;
    let len = len.clamp(page, 1 << 20).next_multiple_of(page);
    let map = super::mmap::Mapping::map(len, super::mmap::Backing::Base, page)?;
    // SAFETY: the mapping is ours, `len` bytes long, alive until the end of
    // this function, and nothing else refers to it.
    let bytes = unsafe { std::slice::from_raw_parts_mut(map.ptr_at(0), len) };
    preadv2(fd, &mut [IoSliceMut::new(bytes)], 0, libc::RWF_NOWAIT)
}

/// `RLIMIT_MEMLOCK` soft limit in bytes; `None` means unlimited.
pub(crate) fn memlock_limit() -> io::Result<Option<u64>> {
    let mut rl = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: rl is a valid out-parameter of the right type.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut rl) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(if rl.rlim_cur == libc::RLIM_INFINITY { None } else { Some(rl.rlim_cur) })
}

/// O_DIRECT alignment reported by `statx(STATX_DIOALIGN)` (Linux 6.1+):
/// `Some((memory, offset))`, or `None` where the file system does not say
/// (or says direct I/O is not supported: both fields zero).
pub(crate) fn statx_dioalign(fd: BorrowedFd<'_>) -> io::Result<Option<(u32, u32)>> {
    // SAFETY: statx is plain data; all-zero is a valid value.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: an empty C string with AT_EMPTY_PATH names the fd itself; stx is
    // a valid out-parameter.
    let rc = unsafe { libc::statx(fd.as_raw_fd(), c"".as_ptr(), libc::AT_EMPTY_PATH, libc::STATX_DIOALIGN, &mut stx) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    if stx.stx_mask & libc::STATX_DIOALIGN == 0 || stx.stx_dio_mem_align == 0 {
        return Ok(None);
    }
    Ok(Some((stx.stx_dio_mem_align, stx.stx_dio_offset_align)))
}

/// Logical block size of a block device (`BLKSSZGET`).
pub(crate) fn block_logical_size(fd: BorrowedFd<'_>) -> io::Result<u32> {
    let mut size: libc::c_int = 0;
    // SAFETY: BLKSSZGET writes one int into `size`.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::BLKSSZGET, &mut size) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(size as u32)
}

/// `_IOR(0x12, 114, u64)`: libc does not export it.
const BLKGETSIZE64: libc::Ioctl = 0x8008_1272;

/// Size in bytes of a block device (`BLKGETSIZE64`).
pub(crate) fn block_size_bytes(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let mut size: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 into `size`.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), BLKGETSIZE64, &mut size) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(size)
}

/// A close-on-exec eventfd (blocking, so that an io_uring read of it waits
/// for a signal instead of failing with EAGAIN).
pub(crate) fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd has no pointer arguments.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by eventfd and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(feature = "tokio")]
/// A close-on-exec, non-blocking eventfd (for a runtime's reactor).
pub(crate) fn eventfd_nonblocking() -> io::Result<OwnedFd> {
    // SAFETY: eventfd has no pointer arguments.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by eventfd and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Registers an owned fd with the current tokio runtime's reactor; an
/// error when there is no runtime or its IO driver is disabled (tokio
/// panics there: the panic is caught, after the panic hook has reported it).
#[cfg(feature = "tokio")]
pub(crate) fn reactor_fd(fd: OwnedFd) -> io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    use std::panic::{catch_unwind, AssertUnwindSafe};
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(io::Error::other("not on a tokio runtime"));
    }
    let mut fd = Some(fd);
    // SAFETY: the fd is an OwnedFd moved into the AsyncFd, which owns it
    // (open, the same description, as_raw_fd constant) until it is dropped.
    let made = catch_unwind(AssertUnwindSafe(|| unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(fd.take().expect("once"), tokio::io::Interest::READABLE)
    }));
    match made {
        Ok(Ok(a)) => Ok(a),
        Ok(Err(e)) => Err(e.into()),
        Err(_) => Err(io::Error::other("the tokio runtime's IO driver is disabled (enable_io)")),
    }
}

#[cfg(feature = "tokio")]
/// Reads (and so resets) a non-blocking eventfd's counter: its value, or
/// WouldBlock when it was 0.
pub(crate) fn eventfd_read_nonblocking(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let mut v: u64 = 0;
    // SAFETY: reads 8 bytes into a local u64.
    let n = unsafe { libc::read(fd.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(v)
}

/// Adds 1 to an eventfd counter (blocks only if the counter would overflow
/// 2^64 - 2, which a wake-up counter never reaches).
pub(crate) fn eventfd_signal(fd: BorrowedFd<'_>) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a local u64.
    unsafe {
        libc::write(fd.as_raw_fd(), (&one as *const u64).cast(), 8);
    }
}

/// Resets an eventfd's counter (call it when the fd is readable: a
/// blocking eventfd's read waits while the counter is 0).
pub(crate) fn eventfd_drain(fd: BorrowedFd<'_>) {
    let mut v: u64 = 0;
    // SAFETY: reads 8 bytes into a local u64.
    unsafe {
        libc::read(fd.as_raw_fd(), (&mut v as *mut u64).cast(), 8);
    }
}

/// Opens `dir` for an anonymous file with `O_TMPFILE` and extra `flags`;
/// returns the fd (the file vanishes when it is closed).
pub(crate) fn open_tmpfile(dir: &Path, flags: libc::c_int) -> io::Result<OwnedFd> {
    let c = CString::new(dir.as_os_str().as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: c is a valid NUL-terminated path; the mode is a plain integer.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_TMPFILE | libc::O_RDWR | libc::O_CLOEXEC | flags, 0o600) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by open and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The file system magic of an open fd (`fstatfs().f_type`).
pub(crate) fn fs_magic(fd: BorrowedFd<'_>) -> io::Result<i64> {
    // SAFETY: statfs is plain data; all-zero is valid.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: st is a valid out-parameter.
    let rc = unsafe { libc::fstatfs(fd.as_raw_fd(), &mut st) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.f_type as i64)
}

/// Forks; the child runs `child` and exits with its code (`_exit`: no
/// atexit handlers, no destructors of the parent's objects; 101 when it
/// panics). Returns the child's pid.
///
/// # Safety
/// The child is a copy of the process with only the calling thread: it
/// must not wait for a lock another thread of the parent may have held at
/// the fork (glibc's malloc is safe; ringpool's objects say
/// [`Error::Forked`](crate::Error::Forked) instead of touching their locks).
pub(crate) unsafe fn fork_child(child: impl FnOnce() -> i32) -> io::Result<u32> {
    // SAFETY: the caller upholds the contract above for what the child runs.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => {
            let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(child)).unwrap_or(101);
            // SAFETY: _exit ends the child at once, as the contract says.
            unsafe { libc::_exit(code) }
        }
        pid => Ok(pid as u32),
    }
}

/// Waits for child `pid` to end: its exit code, or 128 + the signal that
/// killed it.
pub(crate) fn wait_child(pid: u32) -> io::Result<i32> {
    let mut status: libc::c_int = 0;
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::from_raw_os_error(libc::ESRCH))?;
    // SAFETY: status is a valid out-parameter.
    retry_eintr(|| match unsafe { libc::waitpid(pid, &mut status, 0) } {
        -1 => Err(io::Error::last_os_error()),
        _ => Ok(()),
    })?;
    if libc::WIFEXITED(status) {
        Ok(libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        Ok(128 + libc::WTERMSIG(status))
    } else {
        Ok(-1)
    }
}

/// `VmPin` of process `pid` (pages pinned, io_uring buffers among them), in
/// KiB, from /proc/PID/status.
pub(crate) fn vm_pinned_kb(pid: u32) -> io::Result<u64> {
    // Read from /proc: no unsafe; pid is any process's.
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmPin:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no VmPin in /proc/PID/status"))
}

/// Runs `f` in a forked child under a scratch user: RLIMIT_MEMLOCK soft
/// and hard set to `memlock` bytes, then uid and gid switched to `uid`
/// (which drops every capability, CAP_IPC_LOCK among them, and gives the
/// child a `locked_vm` count of its own). Returns the child's exit code
/// (101 when `f` panics; 90 to 93 when setting the limit, the groups, the
/// gid or the uid failed). Needs root.
///
/// # Safety
/// As [`fork_child`]: the child must not wait for a lock another thread
/// of this process may have held at the fork.
pub(crate) unsafe fn in_scratch_user(memlock: u64, uid: u32, f: impl FnOnce() -> i32) -> io::Result<i32> {
    let child = move || {
        let rl = libc::rlimit { rlim_cur: memlock, rlim_max: memlock };
        // SAFETY: plain system calls on this (child) process.
        let failed = unsafe {
            if libc::setrlimit(libc::RLIMIT_MEMLOCK, &rl) != 0 {
                Some(90)
            } else if libc::setgroups(0, std::ptr::null()) != 0 {
                Some(91)
            } else if libc::setgid(uid) != 0 {
                Some(92)
            } else if libc::setuid(uid) != 0 {
                Some(93)
            } else {
                None
            }
        };
        match failed {
            Some(code) => code,
            None => f(),
        }
    };
    // SAFETY: the caller upholds fork_child's contract for `f`; the rest
    // of the child is raw system calls.
    let pid = unsafe { fork_child(child) }?;
    wait_child(pid)
}

/// Sets the calling thread's nice value (`setpriority(PRIO_PROCESS, tid)`:
/// on Linux it applies to one thread). Raising the priority (a negative
/// value) needs CAP_SYS_NICE or a high enough RLIMIT_NICE.
pub(crate) fn set_thread_nice(nice: i32) -> io::Result<()> {
    // SAFETY: gettid takes no arguments.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) };
    let tid = libc::id_t::try_from(tid).map_err(|_| io::Error::from_raw_os_error(libc::ESRCH))?;
    // SAFETY: setpriority takes integers, no pointers.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, nice) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Duplicates descriptor `fd` of process `pid` into this one
/// (`pidfd_open` + `pidfd_getfd`, Linux 5.6+; needs ptrace access to it:
/// the same user). The copy is close-on-exec.
pub(crate) fn pull_fd(pid: u32, fd: i32) -> io::Result<OwnedFd> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::from_raw_os_error(libc::ESRCH))?;
    // SAFETY: pidfd_open takes a pid and flags, no pointers.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if pidfd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pidfd_open returned a new descriptor owned by nobody else.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as RawFd) };
    pull_fd_by_pidfd(std::os::fd::AsFd::as_fd(&pidfd), fd)
}

/// Duplicates descriptor `fd` of the process `pidfd` refers to into this
/// one (`pidfd_getfd`: ptrace access to it needed). The copy is
/// close-on-exec.
pub(crate) fn pull_fd_by_pidfd(pidfd: BorrowedFd<'_>, fd: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_getfd takes descriptors and flags, no pointers.
    let got = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    if got < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pidfd_getfd returned a new descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(got as RawFd) })
}
