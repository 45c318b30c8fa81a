//! `rp_error`: what failed, in words and as an errno.

use std::ffi::{c_char, c_int, CString};

use crate::sys;

/// An error: a message and an errno. Free it with `rp_error_free`.
#[allow(non_camel_case_types)]
pub struct rp_error {
    message: CString,
    errno: i32,
}

impl rp_error {
    pub(crate) fn new(errno: i32, message: impl AsRef<str>) -> rp_error {
        rp_error { message: sys::c_string(message.as_ref()), errno }
    }

    pub(crate) fn null(what: &str) -> rp_error {
        rp_error::new(libc::EINVAL, format!("{what} is NULL"))
    }
}

impl From<sys::Refused> for rp_error {
    fn from(r: sys::Refused) -> rp_error {
        match r {
            sys::Refused::Null(what) => rp_error::null(what),
            sys::Refused::BadFd(fd) => rp_error::new(libc::EBADF, format!("socket fd {fd}")),
            sys::Refused::Panic(what) => {
                rp_error::new(libc::EFAULT, format!("internal error (a Rust panic, caught): {what}"))
            }
        }
    }
}

impl From<ringpool::Error> for rp_error {
    fn from(e: ringpool::Error) -> rp_error {
        rp_error::new(e.errno(), e.to_string())
    }
}

/// The error's message (valid until `rp_error_free`); "" for NULL.
///
/// # Safety
/// `err` is NULL or an error from this library, not freed.
#[no_mangle]
pub unsafe extern "C" fn rp_error_message(err: *const rp_error) -> *const c_char {
    sys::quiet(c"".as_ptr(), || {
        // SAFETY: err is NULL or an rp_error from this library (sys doc).
        match unsafe { sys::get(err, "error") } {
            Ok(e) => e.message.as_ptr(),
            Err(_) => c"".as_ptr(),
        }
    })
}

/// The error's errno (EINVAL for a failed argument check, ENOMEM for an
/// exhausted pool, the system call's for an I/O error...); 0 for NULL.
///
/// # Safety
/// As `rp_error_message`.
#[no_mangle]
pub unsafe extern "C" fn rp_error_errno(err: *const rp_error) -> c_int {
    sys::quiet(0, || {
        // SAFETY: as in rp_error_message.
        unsafe { sys::get(err, "error") }.map_or(0, |e| e.errno)
    })
}

/// Frees an error (NULL: nothing).
///
/// # Safety
/// `err` is NULL or an error from this library, not used again.
#[no_mangle]
pub unsafe extern "C" fn rp_error_free(err: *mut rp_error) {
    // SAFETY: err is NULL or an rp_error from this library, not used again.
    sys::quiet((), || drop(unsafe { sys::take(err) }))
}
