//! Asynchronous reads and writes for event loops: submit, watch an
//! eventfd (epoll, poll, select), reap completions.

use std::collections::HashMap;
use std::ffi::c_int;
use std::future::Future;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

use ringpool::{IoBuf, IoPool, OpHandle};

use crate::error::rp_error;
use crate::pool::{rp_buf, rp_file, rp_pool};
use crate::sys;

/// A completed operation: its `user_data`, the bytes moved or -1, and on
/// failure an error the caller frees with `rp_error_free`.
#[repr(C)]
#[allow(non_camel_case_types)]
pub struct rp_completion {
    /// As given to `rp_submit_read` / `rp_submit_write`.
    pub user_data: u64,
    /// Bytes moved, or -1.
    pub result: i64,
    /// NULL on success; otherwise the error (free it).
    pub error: *mut rp_error,
}

/// Operations submitted to a pool whose completions an event loop reaps:
/// its eventfd (`rp_queue_fd`) is readable while completions wait.
/// Used by one thread at a time.
#[allow(non_camel_case_types)]
pub struct rp_queue {
    pool: Arc<IoPool>,
    shared: Arc<Shared>,
    ops: HashMap<u64, Pending>,
    next: u64,
}

struct Pending {
    handle: OpHandle,
    user_data: u64,
    /// Where the buffer goes back.
    slot: Arc<Mutex<Option<IoBuf>>>,
    waker: Waker,
}

struct Shared {
    efd: OwnedFd,
    /// Keys of operations whose handles woke.
    woken: Mutex<Vec<u64>>,
}

struct OpWaker {
    shared: Arc<Shared>,
    key: u64,
}

impl Wake for OpWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.shared.woken.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(self.key);
        sys::eventfd_signal(self.shared.efd.as_fd());
    }
}

impl rp_queue {
    fn submit(
        &mut self,
        write: bool,
        file: &rp_file,
        offset: u64,
        buf: &rp_buf,
        len: usize,
        user_data: u64,
    ) -> Result<(), rp_error> {
        let io = buf.take(len)?;
        let handle =
            if write { self.pool.write_at(&file.file, offset, io) } else { self.pool.read_at(&file.file, offset, io) };
        let key = self.next;
        self.next += 1;
        let waker = Waker::from(Arc::new(OpWaker { shared: self.shared.clone(), key }));
        self.ops.insert(key, Pending { handle, user_data, slot: buf.slot.clone(), waker });
        // The first poll registers the waker (and may find it done).
        self.shared.woken.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(key);
        sys::eventfd_signal(self.shared.efd.as_fd());
        Ok(())
    }

    fn reap(&mut self, out: &mut [std::mem::MaybeUninit<rp_completion>]) -> usize {
        sys::eventfd_drain(self.shared.efd.as_fd());
        let mut woken =
            std::mem::take(&mut *self.shared.woken.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        woken.sort_unstable();
        woken.dedup();
        let mut n = 0;
        let mut left = Vec::new();
        for key in woken {
            if n == out.len() {
                left.push(key);
                continue;
            }
            let Some(p) = self.ops.get_mut(&key) else { continue };
            let mut cx = Context::from_waker(&p.waker);
            let Poll::Ready(done) = Pin::new(&mut p.handle).poll(&mut cx) else { continue };
            let (res, io) = done.into_one();
            let p = self.ops.remove(&key).expect("present");
            rp_buf::put(&p.slot, io);
            let (result, error) = match res {
                // At most a buffer's length.
                Ok(k) => (k as i64, std::ptr::null_mut()),
                Err(e) => (-1, sys::into_raw(rp_error::from(e))),
            };
            out[n].write(rp_completion { user_data: p.user_data, result, error });
            n += 1;
        }
        if !left.is_empty() {
            self.shared.woken.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend(left);
            sys::eventfd_signal(self.shared.efd.as_fd());
        }
        n
    }
}

impl Drop for rp_queue {
    fn drop(&mut self) {
        // Wait for what is in flight, so that every buffer goes back.
        for (_, p) in self.ops.drain() {
            let (_, io) = p.handle.wait().into_one();
            rp_buf::put(&p.slot, io);
        }
    }
}

/// A completion queue over `pool`.
///
/// # Safety
/// `pool` is a pool from this library; `err` as in `rp_pool_new`.
#[no_mangle]
pub unsafe extern "C" fn rp_queue_new(pool: *mut rp_pool, err: *mut *mut rp_error) -> *mut rp_queue {
    sys::guard(err, std::ptr::null_mut(), || {
        // SAFETY: as the function's contract says.
        let p = unsafe { sys::get(pool, "pool") }?;
        let efd = sys::eventfd()
            .map_err(|e| rp_error::new(e.raw_os_error().unwrap_or(libc::EIO), format!("eventfd: {e}")))?;
        let shared = Arc::new(Shared { efd, woken: Mutex::new(Vec::new()) });
        Ok(sys::into_raw(rp_queue { pool: p.pool.clone(), shared, ops: HashMap::new(), next: 0 }))
    })
}

/// The queue's eventfd: readable while completions wait to be reaped
/// (edge or level: `rp_queue_reap` resets it). -1 for NULL.
///
/// # Safety
/// `queue` is NULL or from this library, not freed.
#[no_mangle]
pub unsafe extern "C" fn rp_queue_fd(queue: *const rp_queue) -> c_int {
    // SAFETY: as the function's contract says.
    sys::quiet(-1, || unsafe { sys::get(queue, "queue") }.map_or(-1, |q| q.shared.efd.as_raw_fd()))
}

/// Operations submitted and not yet reaped (0 for NULL).
///
/// # Safety
/// As `rp_queue_fd`.
#[no_mangle]
pub unsafe extern "C" fn rp_queue_in_flight(queue: *const rp_queue) -> usize {
    // SAFETY: as the function's contract says.
    sys::quiet(0, || unsafe { sys::get(queue, "queue") }.map_or(0, |q| q.ops.len()))
}

/// Submits a read of `len` bytes at `offset` of `file` into `buf`; its
/// completion carries `user_data`. The buffer belongs to the operation
/// until it is reaped. Returns 0, or -1 with `*err` set.
///
/// # Safety
/// `queue`, `file` and `buf` are from this library, not freed; `err` as in
/// `rp_pool_new`.
#[no_mangle]
pub unsafe extern "C" fn rp_submit_read(
    queue: *mut rp_queue,
    file: *mut rp_file,
    offset: u64,
    buf: *mut rp_buf,
    len: usize,
    user_data: u64,
    err: *mut *mut rp_error,
) -> c_int {
    sys::guard(err, -1, || {
        // SAFETY: as the function's contract says.
        let (q, f, b) = unsafe { (sys::get_mut(queue, "queue")?, sys::get(file, "file")?, sys::get(buf, "buffer")?) };
        q.submit(false, f, offset, b, len, user_data).map(|()| 0)
    })
}

/// Submits a write of the first `len` bytes of `buf` at `offset` of
/// `file`, as `rp_submit_read`.
///
/// # Safety
/// As `rp_submit_read`.
#[no_mangle]
pub unsafe extern "C" fn rp_submit_write(
    queue: *mut rp_queue,
    file: *mut rp_file,
    offset: u64,
    buf: *mut rp_buf,
    len: usize,
    user_data: u64,
    err: *mut *mut rp_error,
) -> c_int {
    sys::guard(err, -1, || {
        // SAFETY: as the function's contract says.
        let (q, f, b) = unsafe { (sys::get_mut(queue, "queue")?, sys::get(file, "file")?, sys::get(buf, "buffer")?) };
        q.submit(true, f, offset, b, len, user_data).map(|()| 0)
    })
}

/// Writes up to `max` completed operations to `out` without waiting;
/// returns how many. Each returns its buffer.
///
/// # Safety
/// `queue` is from this library; `out` has room for `max` completions.
#[no_mangle]
pub unsafe extern "C" fn rp_queue_reap(queue: *mut rp_queue, out: *mut rp_completion, max: usize) -> usize {
    sys::quiet(0, || {
        // SAFETY: as the function's contract says.
        let (Ok(q), out) = (unsafe { sys::get_mut(queue, "queue") }, unsafe { sys::out_slice(out, max) }) else {
            return 0;
        };
        q.reap(out)
    })
}

/// Frees a queue (NULL: nothing), after waiting for its operations; their
/// buffers go back to their `rp_buf`s.
///
/// # Safety
/// `queue` is NULL or from this library, not used again.
#[no_mangle]
pub unsafe extern "C" fn rp_queue_free(queue: *mut rp_queue) {
    // SAFETY: as the function's contract says.
    sys::quiet((), || drop(unsafe { sys::take(queue) }))
}
