//! The ring core: registration, and SQEs whose memory is owned until the CQE.
//!
//! # Safety
//!
//! [`RawRing`] pushes an SQE only for memory it owns from that moment until
//! the CQE is reaped: the payload (an [`Sqe`]: the operation with its
//! buffers and its file), the iovec array its entry points to, and any
//! internal word live in the in-flight slot named by the SQE's `user_data`.
//! A `RawRing` is drained (every in-flight op cancelled and its CQE reaped)
//! before its slots are dropped; if draining fails the slots are leaked
//! rather than freed under the kernel.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::Arc;
use std::time::Duration;

use io_uring::types::{CancelBuilder, Fd, SubmitArgs, Timespec};
use io_uring::{opcode, squeue, IoUring};
use slab::Slab;

use crate::sys::mmap::Mapping;
use crate::sys::os::retry_eintr;

/// One buffer-table entry to register: a range of a live mapping. Holding
/// the `Arc` keeps the range valid for as long as the `Iov` exists; whoever
/// keeps a ring with this registration keeps the pool (and so the mapping).
#[derive(Clone)]
pub(crate) struct Iov {
    map: Arc<Mapping>,
    off: usize,
    len: usize,
}

impl Iov {
    /// `[off, off + len)` of `map`, clamped to the mapping.
    pub(crate) fn new(map: &Arc<Mapping>, off: usize, len: usize) -> Iov {
        let off = off.min(map.len());
        Iov { map: map.clone(), off, len: len.min(map.len() - off) }
    }

    fn iovec(&self) -> libc::iovec {
        libc::iovec { iov_base: self.map.ptr_at(self.off).cast(), iov_len: self.len }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

fn iovecs(iovs: &[Iov]) -> Vec<libc::iovec> {
    iovs.iter().map(Iov::iovec).collect()
}

/// An io_uring this process set up. Notes when it closes: since Linux 6.14
/// a ring's memory is charged to RLIMIT_MEMLOCK, and the kernel releases
/// the charge of a closed ring asynchronously, later ([`closed_within`]).
pub(crate) struct Uring(IoUring, u64);

impl Uring {
    /// `ring`, whose memory is charged `charge` bytes (0 where not known).
    pub(crate) fn new(ring: IoUring, charge: u64) -> Uring {
        LIVE_CHARGE.fetch_add(charge, std::sync::atomic::Ordering::Relaxed);
        Uring(ring, charge)
    }

    /// The ring's fd.
    pub(crate) fn fd(&self) -> std::os::fd::RawFd {
        self.0.as_raw_fd()
    }
}

impl std::ops::Deref for Uring {
    type Target = IoUring;
    fn deref(&self) -> &IoUring {
        &self.0
    }
}

impl std::ops::DerefMut for Uring {
    fn deref_mut(&mut self) -> &mut IoUring {
        &mut self.0
    }
}

impl Drop for Uring {
    fn drop(&mut self) {
        LIVE_CHARGE.fetch_sub(self.1, std::sync::atomic::Ordering::Relaxed);
        note_closed();
    }
}

/// Memory of this process's live [`Uring`]s charged to RLIMIT_MEMLOCK.
static LIVE_CHARGE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Memory of this process's live rings charged to RLIMIT_MEMLOCK (as far
/// as known: rings set up by ringpool).
pub(crate) fn live_ring_charge() -> u64 {
    LIVE_CHARGE.load(std::sync::atomic::Ordering::Relaxed)
}

/// Notes that this process closed a ring now (rings of the trials, which
/// are not [`Uring`]s, say so when they are done).
pub(crate) fn note_closed() {
    CLOSED_AT_NS.store(since_start_ns().max(1), std::sync::atomic::Ordering::Relaxed);
}

/// When this process last closed a ring (ns since [`since_start_ns`]'s
/// origin; 0: never).
static CLOSED_AT_NS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn since_start_ns() -> u64 {
    static ORIGIN: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let origin = *ORIGIN.get_or_init(std::time::Instant::now);
    u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Whether this process closed a ring less than `window` ago.
pub(crate) fn closed_within(window: Duration) -> bool {
    let at = CLOSED_AT_NS.load(std::sync::atomic::Ordering::Relaxed);
    at != 0 && since_start_ns().saturating_sub(at) < u64::try_from(window.as_nanos()).unwrap_or(u64::MAX)
}

/// Registers `iovs` as the ring's buffer table, in one call.
pub(crate) fn register_iovs(ring: &IoUring, iovs: &[Iov]) -> io::Result<()> {
    let v = iovecs(iovs);
    // SAFETY: every iovec lies inside a live mapping of ours (Iov::new clamps
    // to it); the kernel pins the pages, and the ring's owner keeps the pool.
    unsafe { ring.submitter().register_buffers(&v) }
}

/// Registers an empty table of `n` slots (IORING_RSRC_REGISTER_SPARSE).
pub(crate) fn register_sparse(ring: &IoUring, n: u32) -> io::Result<()> {
    ring.submitter().register_buffers_sparse(n)
}

/// Register operations a client of another user may make on a ring set
/// up for it (`IORING_REGISTER_*`, all in Linux 6.12): files, eventfds,
/// the probe, personalities, enabling, io-wq limits and affinity, ring
/// fds, cancelation, NAPI, the clock, unregistering its buffer table, and
/// clones (which pin nothing, and only between rings of one process's mm
/// and user, which a client gets none of but its own). Left out: every
/// operation that registers memory (buffers, buffer updates, provided
/// buffer rings, memory regions, resizing the rings), restrictions,
/// zero-copy receive queues, and the ring-less ones.
const CLIENT_REGISTER_OPS: &[u8] =
    &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 13, 14, 17, 18, 19, 20, 21, 23, 24, 25, 26, 27, 28, 29, 30];

/// Restricts a disabled ring set up for a client of another user
/// (`IORING_REGISTER_RESTRICTIONS`, in force once the client enables it):
/// every submission opcode this kernel has and every SQE flag, but only
/// [`CLIENT_REGISTER_OPS`]: a process with CAP_IPC_LOCK set the ring up,
/// so memory registered on it would be charged to no one, and the client
/// could pin memory past its RLIMIT_MEMLOCK.
pub(crate) fn restrict_for_client(ring: &IoUring) -> io::Result<()> {
    let mut probe = io_uring::Probe::new();
    ring.submitter().register_probe(&mut probe)?;
    let mut res: Vec<io_uring::register::Restriction> =
        (0..=u8::MAX).filter(|&op| probe.is_supported(op)).map(io_uring::register::Restriction::sqe_op).collect();
    res.push(io_uring::register::Restriction::sqe_flags_allowed(0x7f));
    res.extend(CLIENT_REGISTER_OPS.iter().map(|&op| io_uring::register::Restriction::register_op(op)));
    ring.submitter().register_restrictions(&mut res)
}

/// `struct io_uring_rsrc_update2` (32 bytes).
#[repr(C)]
struct RsrcUpdate2 {
    offset: u32,
    resv: u32,
    data: u64,
    tags: u64,
    nr: u32,
    resv2: u32,
}

/// `IORING_REGISTER_BUFFERS_UPDATE`
const REGISTER_BUFFERS_UPDATE: libc::c_uint = 16;

/// One buffers update of `v` from slot `first`: how many slots it filled.
/// (The io-uring crate's wrapper drops that count, and the kernel reports a
/// failure after some slots as success with the count done.)
fn buffers_update(ring: &IoUring, first: u32, v: &[libc::iovec]) -> io::Result<usize> {
    let nr = u32::try_from(v.len()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let up = RsrcUpdate2 { offset: first, resv: 0, data: v.as_ptr() as u64, tags: 0, nr, resv2: 0 };
    // SAFETY: `up` is a valid io_uring_rsrc_update2 whose `data` points to
    // `nr` iovecs alive for the call (the caller's mappings); the kernel
    // reads them and pins the pages they name.
    let r = unsafe {
        libc::syscall(
            libc::SYS_io_uring_register,
            ring.as_raw_fd(),
            REGISTER_BUFFERS_UPDATE,
            &up as *const RsrcUpdate2,
            std::mem::size_of::<RsrcUpdate2>() as libc::c_uint,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r as usize)
}

/// Fills slots `[first, first + iovs.len())` of a (sparse) table, all or
/// nothing: after a failure part-way, the slots filled are emptied again.
pub(crate) fn update_iovs(ring: &IoUring, first: u32, iovs: &[Iov]) -> io::Result<()> {
    let v = iovecs(iovs);
    let mut done = 0;
    while done < v.len() {
        // done < v.len() <= 16384.
        match buffers_update(ring, first + done as u32, &v[done..]) {
            Ok(n) if n > 0 => done += n,
            r => {
                let e = r.err().unwrap_or_else(|| io::Error::from_raw_os_error(libc::EIO));
                if done > 0 {
                    let empty = vec![libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; done];
                    let _ = buffers_update(ring, first, &empty);
                }
                return Err(e);
            }
        }
    }
    Ok(())
}

/// Empties slots `[first, first + n)` of a table (a buffers update with
/// NULL iovecs: the kernel drops the entries, unpinning pages no other
/// table holds).
pub(crate) fn clear_slots(ring: &IoUring, first: u32, n: u32) -> io::Result<()> {
    let empty = vec![libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; n as usize];
    let mut done = 0usize;
    while done < empty.len() {
        // done < n <= 16384.
        match buffers_update(ring, first + done as u32, &empty[done..]) {
            Ok(k) if k > 0 => done += k,
            r => return Err(r.err().unwrap_or_else(|| io::Error::from_raw_os_error(libc::EIO))),
        }
    }
    Ok(())
}

/// Reads `len` bytes of `fd` into `iov`'s memory with READ_FIXED through
/// table entry `index` of a plain (not DEFER_TASKRUN) ring, and waits for
/// the result (the CQE's res): for probing which memory an entry maps.
pub(crate) fn read_fixed_sync(ring: &mut IoUring, fd: BorrowedFd<'_>, iov: &Iov, index: u16) -> io::Result<i32> {
    let entry = opcode::ReadFixed::new(Fd(fd.as_raw_fd()), iov.map.ptr_at(iov.off), iov.len as u32, index)
        .build()
        .user_data(0x5e1f);
    // SAFETY: the target memory is `iov`'s, alive for the whole call, and we
    // wait for this operation's CQE before returning.
    unsafe { ring.submission().push(&entry) }.map_err(|_| io::Error::from_raw_os_error(libc::EBUSY))?;
    loop {
        match ring.submit_and_wait(1) {
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            Err(e) => {
                // The op may still be in flight: keep its memory forever
                // rather than let the kernel write into freed memory.
                std::mem::forget(iov.map.clone());
                return Err(e);
            }
            Ok(_) => {}
        }
        if let Some(cqe) = ring.completion().find(|c| c.user_data() == 0x5e1f) {
            return Ok(cqe.result());
        }
    }
}

/// Writes `len` bytes to `fd` at offset 0 from table entry `index` with
/// WRITE_FIXED, naming registrar address `addr` (not an address of this
/// process: the kernel reads the entry's pages, if the entry covers
/// `[addr, addr + len)`), and waits for the result (the CQE's res, EFAULT
/// for an empty entry): for a test that tries to reach slots a ring should
/// not hold. The ring must have nothing else in flight.
pub(crate) fn write_fixed_slot_sync(
    ring: &IoUring,
    fd: BorrowedFd<'_>,
    addr: u64,
    len: u32,
    index: u16,
) -> io::Result<i32> {
    let entry = opcode::WriteFixed::new(Fd(fd.as_raw_fd()), addr as *const u8, len, index).build().user_data(0x5e1e);
    // SAFETY: the operation reads only registered pages (the kernel's, by
    // table entry), never memory of this process; the caller has the ring
    // to itself (`&mut Ring`, nothing in flight), so no other submission
    // or completion queue handle is in use.
    unsafe { ring.submission_shared().push(&entry) }.map_err(|_| io::Error::from_raw_os_error(libc::EBUSY))?;
    loop {
        match ring.submit_and_wait(1) {
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            Err(e) => return Err(e),
            Ok(_) => {}
        }
        // SAFETY: as above, the completion queue is ours alone.
        if let Some(cqe) = unsafe { ring.completion_shared() }.find(|c| c.user_data() == 0x5e1e) {
            return Ok(cqe.result());
        }
    }
}

/// Registers `len` bytes of new anonymous memory of this process into
/// slot `slot` (a buffers update), then empties the slot again: whether
/// this process may pin memory through the ring (the kernel charges it to
/// the ring's user, against this process's RLIMIT_MEMLOCK, unless the ring
/// was set up with CAP_IPC_LOCK). For a test that tries.
pub(crate) fn try_pin_through(ring: &IoUring, slot: u32, len: usize) -> io::Result<()> {
    let map = Arc::new(Mapping::map(len, crate::sys::mmap::Backing::Base, 4096)?);
    update_iovs(ring, slot, &[Iov::new(&map, 0, len)])?;
    clear_slots(ring, slot, 1)
}

/// A file kept open while an op on it is in flight.
pub(crate) type FdHold = Arc<dyn AsFd + Send + Sync>;

/// A payload that knows its own SQE (the crate's `Op`, with what the ring
/// decided about it).
///
/// # Contract
///
/// The unsafe push of [`RawRing::push`] relies on it: the entry built by
/// [`Sqe::sqe`] may point only to memory owned by `self` (its buffers; its
/// file, kept open by it) and to the `iovecs` array it is handed, which the
/// ring keeps beside the payload in the slot until the CQE is reaped.
pub(crate) trait Sqe {
    /// Builds the entry; `iovecs` starts empty and may be filled.
    fn sqe(&mut self, iovecs: &mut Vec<libc::iovec>) -> squeue::Entry;
}

struct Slot<T> {
    payload: T,
    /// The iovec array a vectored entry points to.
    iovecs: Vec<libc::iovec>,
    /// The eventfd of a wake-up read, and the word it reads into.
    wake: Option<(FdHold, Box<u64>)>,
}

/// What a reaped CQE gives back.
pub(crate) struct Reaped<T> {
    pub payload: T,
    pub res: i32,
}

const CANCEL_TAG: u64 = u64::MAX;

/// An io_uring plus the slots of its in-flight ops.
pub(crate) struct RawRing<T> {
    ring: Uring,
    slots: Slab<Slot<T>>,
    /// Whether the ring was set up with DEFER_TASKRUN (completions need an
    /// enter with GETEVENTS to be posted).
    defer: bool,
    /// Whether an enter with GETEVENTS ran since the last reap (then the
    /// deferred completions are already posted and reaping needs no syscall).
    flushed: bool,
    /// Whether the ring was set up with COOP_TASKRUN | TASKRUN_FLAG (the SQ
    /// flags say when completions wait for an enter).
    coop: bool,
    /// The process that created the ring. Its SQ and CQ are shared memory a
    /// forked child inherits: the child must not push, reap or cancel (it
    /// would act on the parent's ring).
    pid: u32,
}

impl<T: Sqe> RawRing<T> {
    pub(crate) fn new(ring: Uring, defer: bool, coop: bool) -> Self {
        RawRing { ring, slots: Slab::new(), defer, flushed: false, coop, pid: crate::sys::pid::current_pid() }
    }

    pub(crate) fn io_uring(&self) -> &IoUring {
        &self.ring
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.slots.len()
    }

    /// SQEs pushed and not yet submitted.
    pub(crate) fn queued(&mut self) -> usize {
        self.ring.submission().len()
    }

    /// How many more operations fit now: never more in flight than the CQ
    /// holds (an overflowing CQ relies on the kernel's backlog allocation,
    /// and a lost CQE would strand its slot), and the SQ after handing what
    /// is queued to the kernel.
    pub(crate) fn room(&mut self) -> usize {
        let cq_room = (self.ring.params().cq_entries() as usize).saturating_sub(self.slots.len());
        if self.ring.submission().is_full() {
            // Make room by handing what is queued to the kernel.
            let _ = self.ring.submit();
        }
        let sq = self.ring.submission();
        cq_room.min(sq.capacity() - sq.len())
    }

    /// Whether this is the process that created the ring.
    pub(crate) fn is_home(&self) -> bool {
        self.pid == crate::sys::pid::current_pid()
    }

    fn insert(&mut self, slot: Slot<T>, build: impl FnOnce(&mut Slot<T>) -> squeue::Entry) -> Result<(), T> {
        if !self.is_home() || self.room() == 0 {
            return Err(slot.payload);
        }
        let key = self.slots.insert(slot);
        let entry = build(&mut self.slots[key]).user_data(key as u64);
        // SAFETY: the memory the entry points to (the payload's buffers and
        // file, the slot's iovecs, the wake-up word) is owned by slot `key`
        // until its CQE is reaped (module doc, and the Sqe contract).
        let pushed = unsafe { self.ring.submission().push(&entry) };
        match pushed {
            Ok(()) => Ok(()),
            Err(_) => Err(self.slots.remove(key).payload),
        }
    }

    /// Queues the payload's SQE. Gives the payload back when the ring is
    /// full (see [`RawRing::room`]).
    pub(crate) fn push(&mut self, payload: T) -> Result<(), T> {
        let slot = Slot { payload, iovecs: Vec::new(), wake: None };
        self.insert(slot, |s| s.payload.sqe(&mut s.iovecs))
    }

    /// Queues a read of one eventfd counter into an internal word; the
    /// payload comes back with its CQE.
    pub(crate) fn push_eventfd_read(&mut self, fd: FdHold, payload: T) -> Result<(), T> {
        let slot = Slot { payload, iovecs: Vec::new(), wake: Some((fd, Box::new(0u64))) };
        self.insert(slot, |s| {
            let (fd, word) = s.wake.as_mut().expect("a wake-up slot holds its eventfd");
            opcode::Read::new(Fd(fd.as_fd().as_raw_fd()), (&mut **word as *mut u64).cast(), 8).build()
        })
    }

    /// Hands queued SQEs to the kernel.
    pub(crate) fn submit(&mut self) -> io::Result<usize> {
        if self.ring.submission().is_empty() {
            return Ok(0);
        }
        retry_eintr(|| self.ring.submit())
    }

    /// Submits and waits for at least `want` completions (one syscall that
    /// also runs deferred completions). An interrupted wait returns 0.
    pub(crate) fn submit_and_wait(&mut self, want: usize) -> io::Result<usize> {
        let r = match self.ring.submit_and_wait(want) {
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => Ok(0),
            r => r,
        };
        if want > 0 && r.is_ok() {
            self.flushed = true;
        }
        r
    }

    /// Submits and waits until `want` completions are ready, or `min_wait`
    /// has passed and at least one is (IORING_ENTER_EXT_ARG with
    /// min_wait_usec, Linux 6.12+): batches completions into fewer wake-ups.
    /// An interrupted wait returns 0.
    pub(crate) fn submit_and_wait_batch(&mut self, want: usize, min_wait: Duration) -> io::Result<usize> {
        let us = u32::try_from(min_wait.as_micros()).unwrap_or(u32::MAX);
        let args = SubmitArgs::new().min_wait_usec(us);
        let r = match self.ring.submitter().submit_with_args(want, &args) {
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => Ok(0),
            // The minimum wait ran out with fewer than `want` completions.
            Err(e) if e.raw_os_error() == Some(libc::ETIME) => Ok(0),
            r => r,
        };
        if want > 0 && r.is_ok() {
            self.flushed = true;
        }
        r
    }

    /// Submits and waits for one completion or until `timeout`; returns
    /// `false` on timeout.
    pub(crate) fn submit_and_wait_timeout(&mut self, timeout: Duration) -> io::Result<bool> {
        let ts = Timespec::from(timeout);
        let args = SubmitArgs::new().timespec(&ts);
        let r = match self.ring.submitter().submit_with_args(1, &args) {
            Ok(_) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ETIME) => Ok(false),
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => Ok(true),
            Err(e) => Err(e),
        };
        self.flushed = r.is_ok();
        r
    }

    /// Reaps every posted CQE. With DEFER_TASKRUN, first runs the deferred
    /// completions (an enter with GETEVENTS and no wait).
    pub(crate) fn reap(&mut self, f: impl FnMut(Reaped<T>)) -> usize {
        let pending_work = if self.defer {
            !self.flushed && !self.slots.is_empty()
        } else {
            // COOP_TASKRUN | TASKRUN_FLAG: the kernel flags completions that
            // wait for the task to enter.
            self.coop && self.ring.submission().taskrun()
        };
        if pending_work {
            let _ = self.enter_getevents();
        }
        self.reap_posted(f)
    }

    /// Reaps the CQEs already posted, without entering the kernel.
    pub(crate) fn reap_posted(&mut self, mut f: impl FnMut(Reaped<T>)) -> usize {
        self.flushed = false;
        let mut n = 0;
        let slots = &mut self.slots;
        for cqe in self.ring.completion() {
            let key = cqe.user_data();
            if key == CANCEL_TAG {
                continue;
            }
            let Some(slot) = slots.try_remove(key as usize) else { continue };
            n += 1;
            f(Reaped { payload: slot.payload, res: cqe.result() });
        }
        n
    }

    fn enter_getevents(&self) -> io::Result<usize> {
        // SAFETY: to_submit is 0 (nothing is consumed from the SQ) and no
        // argument pointer is passed.
        unsafe { self.ring.submitter().enter::<libc::sigset_t>(0, 0, io_uring::EnterFlags::GETEVENTS.bits(), None) }
    }

    /// The ring fd.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.ring.as_fd()
    }
}

impl<T> RawRing<T> {
    /// Cancels everything in flight and waits for every CQE; the payloads
    /// are dropped.
    pub(crate) fn drain(&mut self) {
        if self.slots.is_empty() {
            return;
        }
        // Cancel what can be cancelled, then wait for every CQE, so that no
        // buffer is freed while the kernel may still write it.
        let mut cancel = Cancel::Any;
        let mut stuck = 0;
        while !self.slots.is_empty() {
            self.push_cancels(&mut cancel);
            match self.ring.submit_and_wait(1) {
                Ok(_) => stuck = 0,
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(_) => stuck += 1,
            }
            let slots = &mut self.slots;
            for cqe in self.ring.completion() {
                if cqe.user_data() == CANCEL_TAG {
                    // Cancel-any (IORING_ASYNC_CANCEL_ANY) needs Linux 5.19:
                    // before it, cancel each operation by its user_data.
                    if cqe.result() == -libc::EINVAL && cancel == Cancel::AnySent {
                        cancel = Cancel::Each;
                    }
                    continue;
                }
                slots.try_remove(cqe.user_data() as usize);
            }
            if stuck > 100 {
                // The ring is broken: leak the slots rather than free memory
                // the kernel might still use.
                tracing::error!(in_flight = self.slots.len(), "cannot drain io_uring; leaking its buffers");
                std::mem::forget(std::mem::take(&mut self.slots));
                return;
            }
        }
    }

    /// Queues the cancellations `cancel` says are still to be sent.
    fn push_cancels(&mut self, cancel: &mut Cancel) {
        // Make room first: the SQ may be full of queued operations.
        let _ = self.ring.submit();
        match *cancel {
            Cancel::Any => {
                let e = opcode::AsyncCancel2::new(CancelBuilder::any()).build().user_data(CANCEL_TAG);
                // SAFETY: a cancel SQE references no memory of ours.
                if unsafe { self.ring.submission().push(&e) }.is_ok() {
                    *cancel = Cancel::AnySent;
                }
            }
            Cancel::Each => {
                let keys: Vec<u64> = self.slots.iter().map(|(k, _)| k as u64).collect();
                for key in keys {
                    let e = opcode::AsyncCancel::new(key).build().user_data(CANCEL_TAG);
                    // SAFETY: a cancel SQE references no memory of ours.
                    if unsafe { self.ring.submission().push(&e) }.is_err() {
                        let _ = self.ring.submit();
                    }
                }
                *cancel = Cancel::EachSent;
            }
            Cancel::AnySent | Cancel::EachSent => {}
        }
    }
}

/// Where a drain is with its cancellations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cancel {
    Any,
    AnySent,
    Each,
    EachSent,
}

impl<T> Drop for RawRing<T> {
    fn drop(&mut self) {
        if self.pid != crate::sys::pid::current_pid() {
            // A forked child: the operations are the parent's (its thread
            // reaps them); cancelling from here would cancel them in the
            // parent. The child's copies of the payloads are left alone.
            std::mem::forget(std::mem::take(&mut self.slots));
            return;
        }
        self.drain();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn rsrc_update2_has_the_kernels_layout() {
        assert_eq!(std::mem::size_of::<super::RsrcUpdate2>(), 32);
        assert_eq!(std::mem::offset_of!(super::RsrcUpdate2, data), 8);
        assert_eq!(std::mem::offset_of!(super::RsrcUpdate2, tags), 16);
        assert_eq!(std::mem::offset_of!(super::RsrcUpdate2, nr), 24);
    }
}
