//! The boundary with C: raw pointers to handles, C strings, error
//! out-parameters, eventfds. Every dereference of a pointer C gave us is
//! here, checked for NULL first.
//!
//! # Safety
//!
//! Handles are `Box`es turned into raw pointers ([`into_raw`]) and back
//! only by the matching `*_free` ([`free`]). C promises (in the header) to
//! pass only pointers it got from this library and has not freed, and not
//! to use one handle from two threads at once unless the function says it
//! may; under that promise a non-NULL handle pointer is a live, aligned,
//! exclusively borrowed value for the duration of the call.

use std::ffi::{c_char, c_int, CStr, CString};
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// What the boundary itself refuses, before any ringpool call: a NULL
/// where a handle was due, a negative descriptor, or a caught panic. The
/// error type of the API turns it into its own (`From`).
#[derive(Debug)]
pub(crate) enum Refused {
    /// A NULL pointer for the named argument.
    Null(&'static str),
    /// A descriptor that cannot be one.
    BadFd(c_int),
    /// A Rust panic, caught at the boundary, with its message.
    Panic(String),
}

/// Runs `f`, turning an error or a panic into `*err` and `fail`.
pub(crate) fn guard<T, E: From<Refused>>(err: *mut *mut E, fail: T, f: impl FnOnce() -> Result<T, E>) -> T {
    let e = match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => return v,
        Ok(Err(e)) => e,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            E::from(Refused::Panic(what))
        }
    };
    set_error(err, e);
    fail
}

/// Runs `f` where there is no error to report (frees, getters): a panic is
/// swallowed and `fail` returned.
pub(crate) fn quiet<T>(fail: T, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(fail)
}

fn set_error<E>(err: *mut *mut E, e: E) {
    if err.is_null() {
        return;
    }
    // SAFETY: err is a non-NULL `rp_error **` from C (module doc): a valid
    // place for one pointer.
    unsafe { *err = Box::into_raw(Box::new(e)) };
}

/// A handle for C.
pub(crate) fn into_raw<T>(v: T) -> *mut T {
    Box::into_raw(Box::new(v))
}

/// Takes a handle back from C (NULL: nothing).
///
/// # Safety
/// `p` came from [`into_raw`] and is not used again.
pub(crate) unsafe fn take<T>(p: *mut T) -> Option<T> {
    if p.is_null() {
        return None;
    }
    // SAFETY: by the caller's contract p is a Box from into_raw, given up.
    Some(*unsafe { Box::from_raw(p) })
}

/// Borrows a handle.
///
/// # Safety
/// As the module doc says of handle pointers.
pub(crate) unsafe fn get<'a, T>(p: *const T, what: &'static str) -> Result<&'a T, Refused> {
    // SAFETY: non-NULL handle pointers are live and aligned (module doc).
    unsafe { p.as_ref() }.ok_or(Refused::Null(what))
}

/// Borrows a handle mutably.
///
/// # Safety
/// As the module doc says of handle pointers.
pub(crate) unsafe fn get_mut<'a, T>(p: *mut T, what: &'static str) -> Result<&'a mut T, Refused> {
    // SAFETY: non-NULL handle pointers are live, aligned and not used by
    // another thread during the call (module doc).
    unsafe { p.as_mut() }.ok_or(Refused::Null(what))
}

/// A path from a C string.
///
/// # Safety
/// `p` is NULL or a NUL-terminated string that outlives the call.
pub(crate) unsafe fn path<'a>(p: *const c_char) -> Result<&'a std::path::Path, Refused> {
    if p.is_null() {
        return Err(Refused::Null("path"));
    }
    // SAFETY: by the caller's contract, a NUL-terminated string.
    let s = unsafe { CStr::from_ptr(p) };
    use std::os::unix::ffi::OsStrExt;
    Ok(std::path::Path::new(std::ffi::OsStr::from_bytes(s.to_bytes())))
}

/// A C string of `s` (NULs replaced).
pub(crate) fn c_string(s: &str) -> CString {
    CString::new(s.replace('\0', "\\0")).expect("NULs replaced")
}

/// A connected Unix socket C owns, borrowed for one call.
pub(crate) fn with_socket<T>(fd: RawFd, f: impl FnOnce(&std::os::unix::net::UnixStream) -> T) -> Result<T, Refused> {
    if fd < 0 {
        return Err(Refused::BadFd(fd));
    }
    // SAFETY: fd is a descriptor C owns and keeps open during the call; the
    // ManuallyDrop never closes it.
    let s = std::mem::ManuallyDrop::new(unsafe { std::os::unix::net::UnixStream::from_raw_fd(fd) });
    Ok(f(&s))
}

/// A non-blocking, close-on-exec eventfd.
pub(crate) fn eventfd() -> std::io::Result<OwnedFd> {
    // SAFETY: eventfd has no pointer arguments.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by eventfd and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Adds 1 to an eventfd's counter.
pub(crate) fn eventfd_signal(fd: BorrowedFd<'_>) {
    use std::os::fd::AsRawFd;
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a local u64.
    unsafe { libc::write(fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
}

/// Resets a non-blocking eventfd's counter.
pub(crate) fn eventfd_drain(fd: BorrowedFd<'_>) {
    use std::os::fd::AsRawFd;
    let mut v: u64 = 0;
    // SAFETY: reads 8 bytes into a local u64 (EAGAIN when it is 0).
    unsafe { libc::read(fd.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
}

/// Writes up to `out.len()` values to C's array `out` of `max` elements.
///
/// # Safety
/// `out` is NULL (with `max` 0) or points to `max` writable elements.
pub(crate) unsafe fn out_slice<'a, T>(out: *mut T, max: usize) -> &'a mut [std::mem::MaybeUninit<T>] {
    if out.is_null() || max == 0 {
        return &mut [];
    }
    // SAFETY: by the caller's contract, max writable elements of T, seen as
    // possibly uninitialized (only written).
    unsafe { std::slice::from_raw_parts_mut(out.cast(), max) }
}
