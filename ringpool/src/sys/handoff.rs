//! A ring handed to another process: its parameters as bytes, and the ring
//! rebuilt from an fd and parameters it did not set up, checked against the
//! queue layouts this kernel gives.
//!
//! # Safety
//!
//! `IoUring::from_fd` maps the ring's queues with the offsets in the
//! parameters: they are accepted only when they name the layout this kernel
//! gave a ring of the same sizes and flags, and the fd is an io_uring.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use io_uring::IoUring;

/// Bytes of `io_uring_params`, the parameters a ring's fd travels with.
pub(crate) const PARAMS_LEN: usize = std::mem::size_of::<io_uring::Parameters>();

/// The parameters the kernel filled in when `ring` was set up, as bytes.
pub(crate) fn params_bytes(ring: &IoUring) -> Vec<u8> {
    let p: *const io_uring::Parameters = ring.params();
    // SAFETY: Parameters is repr(transparent) over the kernel's
    // io_uring_params, plain integers all initialized by io_uring_setup.
    unsafe { std::slice::from_raw_parts(p.cast::<u8>(), PARAMS_LEN) }.to_vec()
}

/// The offsets and sizes in `params` that the crate maps the rings with:
/// (sq_entries, cq_entries, flags, features, sq_off, cq_off), comparable
/// between two rings.
fn layout_of(params: &[u8]) -> &[u8] {
    // io_uring_params: sq_entries, cq_entries, flags, sq_thread_cpu,
    // sq_thread_idle, features, wq_fd, resv[3], then sq_off (40 bytes) and
    // cq_off (40 bytes). Everything but the sq-thread fields and wq_fd maps.
    &params[..PARAMS_LEN.min(params.len())]
}

/// Queue layouts this kernel gave rings, by (SQ entries, CQ entries, the
/// flags that change the layout): what `ring_from_fd` checks parameters
/// against. Inherited by forked children, so that they set up no ring to
/// learn it.
type Known = ((u32, u32, u32), Vec<u8>);
static LAYOUTS: std::sync::Mutex<Vec<Known>> = std::sync::Mutex::new(Vec::new());

fn layout_key(params: &[u8]) -> (u32, u32, u32) {
    const SINGLE_ISSUER: u32 = 1 << 12;
    const DEFER_TASKRUN: u32 = 1 << 13;
    const NO_SQARRAY: u32 = 1 << 16;
    let word = |i: usize| u32::from_ne_bytes(params[i * 4..i * 4 + 4].try_into().expect("4 bytes"));
    (word(0), word(1), word(2) & (SINGLE_ISSUER | DEFER_TASKRUN | NO_SQARRAY))
}

/// Remembers the queue layout the kernel gave `ring` (a ring this process
/// set up: its parameters are the kernel's own).
pub(crate) fn remember_layout(ring: &IoUring) {
    let p = params_bytes(ring);
    let key = layout_key(&p);
    let mut l = LAYOUTS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if l.len() < 64 && !l.iter().any(|(k, _)| *k == key) {
        l.push((key, p));
    }
}

/// Whether the ring the parameters `params` describe was set up with
/// DEFER_TASKRUN (completions posted only when its issuer waits).
pub(crate) fn defers_taskrun(params: &[u8]) -> bool {
    const DEFER_TASKRUN: u32 = 1 << 13;
    params.get(8..12).is_some_and(|w| u32::from_ne_bytes(w.try_into().expect("4 bytes")) & DEFER_TASKRUN != 0)
}

/// Rebuilds a ring from its fd and the parameters it was set up with (sent
/// by the process that made it). The parameters are not trusted: they must
/// name the same queue layout as a ring this kernel sets up with the same
/// sizes and flags, and the fd must be an io_uring.
pub(crate) fn ring_from_fd(fd: OwnedFd, params: &[u8]) -> io::Result<IoUring> {
    let bad = || io::Error::from_raw_os_error(libc::EINVAL);
    if params.len() != PARAMS_LEN {
        return Err(bad());
    }
    let link = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))?;
    if link.to_string_lossy() != "anon_inode:[io_uring]" {
        return Err(io::Error::from_raw_os_error(libc::EBADF));
    }
    let word = |i: usize| u32::from_ne_bytes(params[i * 4..i * 4 + 4].try_into().expect("4 bytes"));
    let (sq, cq, flags) = (word(0), word(1), word(2));
    if !sq.is_power_of_two() || sq > 32768 || !cq.is_power_of_two() || cq > 65536 || cq < sq {
        return Err(bad());
    }
    // IORING_SETUP_* (include/uapi/linux/io_uring.h).
    const IOPOLL: u32 = 1 << 0;
    const SQPOLL: u32 = 1 << 1;
    const SINGLE_ISSUER: u32 = 1 << 12;
    const DEFER_TASKRUN: u32 = 1 << 13;
    const NO_SQARRAY: u32 = 1 << 16;
    if flags & (IOPOLL | SQPOLL) != 0 {
        // ringpool never hands over such rings.
        return Err(bad());
    }
    // A ring set up here with the same sizes and flags (but enabled) shows
    // the queue layout this kernel uses; remembered per (sizes, flags).
    let key = layout_key(params);
    let known = LAYOUTS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.clone());
    let mine = match known {
        Some(m) => m,
        None => {
            let mut b = IoUring::builder();
            b.setup_cqsize(cq);
            if flags & SINGLE_ISSUER != 0 {
                b.setup_single_issuer();
            }
            if flags & DEFER_TASKRUN != 0 {
                b.setup_defer_taskrun();
            }
            if flags & NO_SQARRAY != 0 {
                b.setup_no_sqarray();
            }
            let probe: IoUring = b.build(sq)?;
            remember_layout(&probe);
            let p = params_bytes(&probe);
            drop(probe);
            super::uring::note_closed();
            p
        }
    };
    // Same sizes, and the same SQ / CQ ring offsets (bytes 40 on).
    if mine[..8] != params[..8] || layout_of(&mine)[40..] != layout_of(params)[40..] {
        return Err(bad());
    }
    let mut raw = [0u8; PARAMS_LEN];
    raw.copy_from_slice(params);
    // SAFETY: Parameters is repr(transparent) over io_uring_params, plain
    // integers; any bit pattern is a value, and these bytes were checked to
    // name the queue layout this kernel gives a ring of these sizes and flags.
    let p: io_uring::Parameters = unsafe { std::mem::transmute::<[u8; PARAMS_LEN], io_uring::Parameters>(raw) };
    let raw_fd = std::os::fd::IntoRawFd::into_raw_fd(fd);
    // SAFETY: raw_fd is an io_uring fd we own (checked above, ownership given
    // up by into_raw_fd), and `p` carries the kernel's parameters of it.
    unsafe { IoUring::from_fd(raw_fd, p) }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ring_parameters_have_the_kernels_size() {
        assert_eq!(super::PARAMS_LEN, 120);
    }
}
