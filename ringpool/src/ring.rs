//! `Ring`: one thread's io_uring with the pool's table, and fixed I/O on it.

use std::collections::VecDeque;
use std::marker::PhantomData;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use io_uring::types::CloneBuffersFlags;
use io_uring::IoUring;

use crate::error::{clone_error, CloneRequest, Error, Result};
use crate::file::DirectFile;
use crate::memory::IoMemory;
use crate::sys::buf::IoBuf;
use crate::sys::uring::{Dir, RawRing, Reaped};
use crate::table::{setup_error, BufferTable, Sharing, TableShared};

/// How a ring got its buffer table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TablePath {
    /// Cloned from the template ring (`IORING_REGISTER_CLONE_BUFFERS`).
    Cloned,
    /// Registered (pinned) by this ring itself.
    Registered,
    /// No table: plain READ / WRITE on pool memory.
    Unregistered,
    /// No table yet ([`Ring::new`]).
    Empty,
}

impl std::fmt::Display for TablePath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TablePath::Cloned => "clone",
            TablePath::Registered => "register-each",
            TablePath::Unregistered => "unregistered",
            TablePath::Empty => "empty",
        })
    }
}

/// Options for a new ring.
#[derive(Debug, Clone)]
pub struct RingOptions {
    /// Submission queue entries, 1 to 32768 (default 128); the completion
    /// queue has twice as many.
    pub entries: u32,
    /// Overrides the table's sharing for this ring.
    pub sharing: Option<Sharing>,
    /// Unregister the table before closing the ring (default `true`): the
    /// unpinning then runs on the dropping thread instead of in the
    /// background, where it would show up as other rings' tail latency.
    pub unregister_on_drop: bool,
    /// Set the ring up with DEFER_TASKRUN (default `true`, Linux 6.1+):
    /// completions are posted only when the owning thread waits, in one
    /// batch, with no interrupt of the thread. Without it, they are posted as
    /// soon as the kernel can (task work with a signal-style notification),
    /// which can lower latency for operations completed by io-wq workers
    /// (devices without NOWAIT support, such as zram).
    pub defer_taskrun: bool,
}

impl Default for RingOptions {
    fn default() -> Self {
        RingOptions { entries: 128, sharing: None, unregister_on_drop: true, defer_taskrun: true }
    }
}

impl RingOptions {
    /// Default options.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets the depth.
    pub fn entries(mut self, entries: u32) -> Self {
        self.entries = entries;
        self
    }
    /// Overrides the sharing.
    pub fn sharing(mut self, sharing: Sharing) -> Self {
        self.sharing = Some(sharing);
        self
    }
    /// Sets DEFER_TASKRUN (see the field).
    pub fn defer_taskrun(mut self, yes: bool) -> Self {
        self.defer_taskrun = yes;
        self
    }
}

/// What happened when a ring was set up.
#[derive(Debug, Clone)]
pub struct RingSetup {
    /// How it got its table.
    pub path: TablePath,
    /// `io_uring_setup` time.
    pub ring_time: Duration,
    /// Clone or register time.
    pub table_time: Duration,
    /// Whether DEFER_TASKRUN was available.
    pub defer_taskrun: bool,
    /// Why the preferred path did not run, if it did not.
    pub fallback: Option<String>,
}

impl RingSetup {
    /// Ring plus table time.
    pub fn total(&self) -> Duration {
        self.ring_time + self.table_time
    }
}

/// A range of a clone (`IORING_REGISTER_CLONE_BUFFERS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CloneRange {
    /// First source entry.
    pub src_off: u32,
    /// First destination entry.
    pub dst_off: u32,
    /// Entries; 0 = the whole source table (then both offsets must be 0).
    pub nr: u32,
    /// Replace existing destination entries (DST_REPLACE, Linux 6.13+).
    pub replace: bool,
}

impl CloneRange {
    /// The whole table, into an empty ring.
    pub fn all() -> Self {
        Self::default()
    }
    /// `nr` entries from `src_off` to `dst_off` (ranged clone, Linux 6.13+).
    pub fn range(src_off: u32, dst_off: u32, nr: u32) -> Self {
        CloneRange { src_off, dst_off, nr, replace: false }
    }
    /// With DST_REPLACE.
    pub fn replace(mut self) -> Self {
        self.replace = true;
        self
    }
}

// The sealing trait is unnameable outside the crate, so a crate-private
// type in its signature leaks nothing.
#[allow(private_interfaces)]
mod private {
    use std::sync::Weak;

    use crate::table::TableShared;

    pub trait Sealed {
        /// The template a table source belongs to, to follow its growth.
        fn source_link(&self) -> Option<Weak<TableShared>> {
            None
        }
    }
}

/// Something a ring can clone a table from: a [`BufferTable`] or a [`Ring`].
pub trait TableSource: private::Sealed {
    /// The source ring's fd.
    fn source_fd(&self) -> RawFd;
    /// The pool its table maps, if known.
    fn source_memory(&self) -> Option<&IoMemory>;
    /// Slots of its kernel table (for interpreting range errors).
    fn source_len(&self) -> u16;
    /// Slots filled with pool segments (usable for fixed I/O).
    fn source_valid(&self) -> u16 {
        self.source_len()
    }
}

#[allow(private_interfaces)]
impl private::Sealed for BufferTable {
    fn source_link(&self) -> Option<Weak<TableShared>> {
        Some(Arc::downgrade(&self.shared))
    }
}
impl TableSource for BufferTable {
    fn source_fd(&self) -> RawFd {
        self.template_fd()
    }
    fn source_memory(&self) -> Option<&IoMemory> {
        Some(self.memory())
    }
    fn source_len(&self) -> u16 {
        if self.path() == TablePath::Unregistered {
            0
        } else {
            self.capacity()
        }
    }
    fn source_valid(&self) -> u16 {
        if self.path() == TablePath::Unregistered {
            0
        } else {
            self.len()
        }
    }
}

impl private::Sealed for Ring {}
impl TableSource for Ring {
    fn source_fd(&self) -> RawFd {
        self.raw.fd().as_raw_fd()
    }
    fn source_memory(&self) -> Option<&IoMemory> {
        self.memory.as_ref()
    }
    fn source_len(&self) -> u16 {
        self.table_len
    }
}

/// The result of one operation queued on a [`Ring`].
#[derive(Debug)]
pub struct Completion {
    /// The tag given when it was queued.
    pub tag: u64,
    /// Bytes transferred, or the error.
    pub result: Result<usize>,
    /// The buffer, handed back (`None` for sync).
    pub buf: Option<IoBuf>,
}

enum OpInfo {
    Rw { write: bool, file: DirectFile, offset: u64, len: usize },
    Sync { file: DirectFile },
    Wake,
}

struct Pending {
    id: u64,
    tag: Option<u64>,
    info: OpInfo,
}

/// One thread's io_uring (SINGLE_ISSUER | DEFER_TASKRUN) with the pool's
/// table. Made by [`BufferTable::ring`] on the thread that uses it; it is
/// neither `Send` nor `Sync`, because the kernel binds such a ring to its
/// creating thread.
///
/// Operations take an [`IoBuf`] by value and give it back with the result:
/// [`Ring::read_at`] / [`Ring::write_at`] wait for the one operation;
/// [`Ring::push_read`] / [`Ring::push_write`] with [`Ring::submit`],
/// [`Ring::wait`] and [`Ring::completions`] keep many in flight.
///
/// The ring keeps the pool's memory mapped; it stays usable after the
/// [`BufferTable`] is dropped.
pub struct Ring {
    // Drop order: in-flight ops are drained (in Drop) before the memory
    // handle is released.
    raw: RawRing<Pending>,
    memory: Option<IoMemory>,
    table_len: u16,
    setup: RingSetup,
    unregister_on_drop: bool,
    next_id: u64,
    ready: VecDeque<Completion>,
    /// The template this ring's table came from, to pick up growth; weak,
    /// so that the ring outlives the table.
    table: Option<Weak<TableShared>>,
    /// The template generation this ring's table matches.
    generation: u64,
    /// Files registered with this ring (IOSQE_FIXED_FILE) and their slots;
    /// holding the handle keeps its identity from being reused.
    files: Vec<(DirectFile, u32)>,
    _one_thread: PhantomData<*const ()>,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("fd", &self.raw.fd().as_raw_fd())
            .field("table_len", &self.table_len)
            .field("setup", &self.setup)
            .field("in_flight", &self.raw.in_flight())
            .finish()
    }
}

/// Kernel limit on SQ entries.
pub const MAX_RING_ENTRIES: u32 = 32768;

impl Ring {
    /// A ring with no table (clone one into it with
    /// [`Ring::clone_buffers_from`]).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a depth of 0 or above 32768;
    /// [`Error::IoUringUnavailable`].
    pub fn new(opts: &RingOptions) -> Result<Ring> {
        let mut r = Self::build(opts)?;
        r.setup.path = TablePath::Empty;
        Ok(r)
    }

    pub(crate) fn build(opts: &RingOptions) -> Result<Ring> {
        if opts.entries == 0 || opts.entries > MAX_RING_ENTRIES {
            return Err(Error::invalid("ring depth", opts.entries, "it must be from 1 to 32768"));
        }
        let start = Instant::now();
        let (io, defer) = build_io_uring(opts.entries, opts.defer_taskrun)?;
        let ring_time = start.elapsed();
        Ok(Ring {
            raw: RawRing::new(io, defer),
            memory: None,
            table_len: 0,
            setup: RingSetup {
                path: TablePath::Empty,
                ring_time,
                table_time: Duration::ZERO,
                defer_taskrun: defer,
                fallback: None,
            },
            unregister_on_drop: opts.unregister_on_drop,
            next_id: 0,
            ready: VecDeque::new(),
            files: Vec::new(),
            table: None,
            generation: 0,
            _one_thread: PhantomData,
        })
    }

    pub(crate) fn finish_setup(&mut self, path: TablePath, table_time: Duration, fallback: Option<String>) {
        self.setup.path = path;
        self.setup.table_time = table_time;
        self.setup.fallback = fallback;
    }

    /// Gives this ring the template's table by `path` (reading the filled
    /// count and generation before the kernel call, so that the ring never
    /// believes in a slot its copy lacks).
    pub(crate) fn attach_table(&mut self, sh: &Arc<TableShared>, path: TablePath) -> Result<()> {
        let (generation, entries) = (sh.generation(), sh.entries());
        match path {
            TablePath::Cloned => self.clone_raw(sh.template_fd(), sh.capacity, CloneRange::all())?,
            TablePath::Registered => {
                crate::table::register_table(self.raw.io_uring(), &sh.memory, entries, sh.capacity)?;
            }
            TablePath::Unregistered | TablePath::Empty => {}
        }
        self.memory = Some(sh.memory.clone());
        self.table_len = if path == TablePath::Unregistered { 0 } else { entries };
        self.table = Some(Arc::downgrade(sh));
        self.generation = generation;
        Ok(())
    }

    /// Picks up segments the table gained since this ring got it
    /// ([`BufferTable::grow`]): a ranged DST_REPLACE clone of just the new
    /// slots where it works, else the whole table again (or, for a ring that
    /// registered its own table, a buffers update of the new slots).
    /// Returns whether anything changed. Operations call it by themselves
    /// when they meet a buffer of a new segment.
    ///
    /// # Errors
    /// Clone and register errors.
    pub fn refresh_table(&mut self) -> Result<bool> {
        let Some(sh) = self.table.as_ref().and_then(Weak::upgrade) else { return Ok(false) };
        if !matches!(self.setup.path, TablePath::Cloned | TablePath::Registered) {
            // Hand-made tables (Ring::new + clone_buffers_from) are the caller's.
            return Ok(false);
        }
        let (generation, entries) = (sh.generation(), sh.entries());
        if generation == self.generation && entries <= self.table_len {
            return Ok(false);
        }
        let old = self.table_len;
        match self.setup.path {
            TablePath::Cloned if entries > old => {
                if sh.ranged_refresh() {
                    let range = CloneRange::range(old as u32, old as u32, (entries - old) as u32).replace();
                    self.clone_raw(sh.template_fd(), sh.capacity, range)?;
                } else {
                    // The whole table again: every in-flight operation keeps
                    // its own reference to the old entries.
                    self.raw.io_uring().submitter().unregister_buffers().map_err(|e| Error::os("unregister", e))?;
                    self.table_len = 0;
                    self.clone_raw(sh.template_fd(), sh.capacity, CloneRange::all())?;
                }
            }
            TablePath::Registered if entries > old => {
                let iovs = sh.memory.shared.iovs(old, entries);
                let r = crate::sys::uring::update_iovs(self.raw.io_uring(), old as u32, &iovs);
                crate::table::registered("register", &iovs, r)?;
            }
            _ => {}
        }
        if matches!(self.setup.path, TablePath::Cloned | TablePath::Registered) {
            self.table_len = entries;
        }
        self.generation = generation;
        tracing::debug!(from = old, to = entries, generation, "ring picked up table growth");
        Ok(true)
    }

    /// The table generation this ring has.
    pub fn table_generation(&self) -> u64 {
        self.generation
    }

    /// How the ring was set up.
    pub fn setup(&self) -> &RingSetup {
        &self.setup
    }

    /// Entries in this ring's table (0: none).
    pub fn table_len(&self) -> u16 {
        self.table_len
    }

    /// Operations queued or running.
    pub fn in_flight(&self) -> usize {
        self.raw.in_flight()
    }

    /// Operations queued and not yet handed to the kernel.
    pub fn queued(&mut self) -> usize {
        self.raw.queued()
    }

    /// Clones `range` of `src`'s table into this ring: Linux 6.12+ (ranges
    /// and `replace`: 6.13+). Costs microseconds whatever the pool size, and
    /// nothing against RLIMIT_MEMLOCK.
    ///
    /// # Errors
    /// [`Error::TableAlreadyPresent`] (EBUSY), [`Error::EmptySource`] (ENXIO),
    /// [`Error::RangeOutOfBounds`] (EOVERFLOW), [`Error::CrossProcess`],
    /// [`Error::SingleIssuer`] (EEXIST), [`Error::KernelTooOld`],
    /// [`Error::ForeignBuffer`] if this ring already serves another pool.
    pub fn clone_buffers_from(&mut self, src: &impl TableSource, range: CloneRange) -> Result<()> {
        if let (Some(mine), Some(theirs)) = (&self.memory, src.source_memory()) {
            if !mine.same_pool(&theirs.shared) {
                return Err(Error::ForeignBuffer {
                    op: "clone",
                    reason: "this ring already serves another pool".into(),
                });
            }
        }
        self.clone_raw(src.source_fd(), src.source_len(), range)?;
        self.table_len = usable_after_clone(self.table_len, src.source_valid(), range);
        if self.memory.is_none() {
            self.memory = src.source_memory().cloned();
        }
        if self.table.is_none() {
            self.table = private::Sealed::source_link(src);
        }
        Ok(())
    }

    /// Clones from any io_uring fd of this process. The ring then has table
    /// entries but no pool it knows of, so [`Ring::push_read`] with fixed
    /// buffers is refused; for tests of kernel semantics.
    ///
    /// # Errors
    /// As [`Ring::clone_buffers_from`].
    pub fn clone_buffers_from_fd(&mut self, src: BorrowedFd<'_>, source_len: u16, range: CloneRange) -> Result<()> {
        self.clone_raw(src.as_raw_fd(), source_len, range)?;
        self.table_len = usable_after_clone(self.table_len, source_len, range);
        Ok(())
    }

    fn clone_raw(&mut self, fd: RawFd, source_len: u16, range: CloneRange) -> Result<()> {
        let flags = if range.replace { CloneBuffersFlags::DST_REPLACE } else { CloneBuffersFlags::empty() };
        let req = CloneRequest {
            src_off: range.src_off,
            dst_off: range.dst_off,
            nr: range.nr,
            source_len: source_len as u32,
            replace: range.replace,
        };
        self.raw
            .io_uring()
            .submitter()
            .register_buffers_clone_offset(fd, range.src_off, range.dst_off, range.nr, flags)
            .map_err(|e| clone_error(e, req))?;
        Ok(())
    }

    /// Unregisters this ring's table (unpinning synchronously what only this
    /// ring held).
    ///
    /// # Errors
    /// [`Error::Io`] (ENXIO when there is no table).
    pub fn unregister_buffers(&mut self) -> Result<()> {
        self.raw.io_uring().submitter().unregister_buffers().map_err(|e| Error::os("unregister", e))?;
        self.table_len = 0;
        Ok(())
    }

    /// Registers `file` with this ring, so that its operations skip the
    /// per-I/O file lookup (IOSQE_FIXED_FILE, as fio's `registerfiles`).
    /// Operations on `file` through this ring use the registered slot from
    /// now on; registering it again is a no-op.
    ///
    /// # Errors
    /// [`Error::Io`] from the register calls; [`Error::FileClosed`].
    pub fn register_file(&mut self, file: &DirectFile) -> Result<()> {
        const SLOTS: u32 = 64;
        if file.is_closed() {
            return Err(Error::FileClosed { op: "register_file", path: file.path().to_path_buf() });
        }
        if self.fixed_file(file).is_some() {
            return Ok(());
        }
        let slot = self.files.len() as u32;
        if slot >= SLOTS {
            return Err(Error::invalid(
                "registered files",
                slot + 1,
                format!("a ring registers at most {SLOTS} files"),
            ));
        }
        let sub = self.raw.io_uring().submitter();
        if slot == 0 {
            sub.register_files_sparse(SLOTS).map_err(|e| Error::os("register files", e))?;
        }
        sub.register_files_update(slot, &[file.as_fd().as_raw_fd()]).map_err(|e| Error::os("register files", e))?;
        self.files.push((file.clone(), slot));
        Ok(())
    }

    fn fixed_file(&self, file: &DirectFile) -> Option<u32> {
        self.files.iter().find(|(f, _)| f.same_file(file)).map(|&(_, slot)| slot)
    }

    fn fixed_for(&mut self, op: &'static str, buf: &IoBuf) -> Result<bool> {
        let Some(mem) = &self.memory else {
            if self.table_len > 0 {
                return Err(Error::ForeignBuffer {
                    op,
                    reason: "this ring's table was cloned from a bare fd; it cannot check buffers".into(),
                });
            }
            return Ok(false);
        };
        if !mem.same_pool(buf.pool()) {
            return Err(Error::ForeignBuffer {
                op,
                reason: "the buffer belongs to another IoMemory than this ring's".into(),
            });
        }
        if self.table_len == 0 && self.setup.path != TablePath::Cloned && self.setup.path != TablePath::Registered {
            return Ok(false);
        }
        if buf.buf_index() >= self.table_len {
            // A segment the table gained since this ring got it.
            self.refresh_table()?;
        }
        if buf.buf_index() >= self.table_len {
            return Err(Error::ForeignBuffer {
                op,
                reason: format!(
                    "buf_index {} is outside this ring's table of {} entries",
                    buf.buf_index(),
                    self.table_len
                ),
            });
        }
        Ok(true)
    }

    fn push_rw(
        &mut self,
        write: bool,
        file: &DirectFile,
        offset: u64,
        buf: IoBuf,
        tag: Option<u64>,
    ) -> Result<u64, (Error, IoBuf)> {
        let op = if write { "write" } else { "read" };
        if let Err(e) = file.check_io(write, offset, &buf) {
            return Err((e, buf));
        }
        if file.is_forced_async() {
            return Err((Error::BlockingFileSystem { op, path: file.path().to_path_buf() }, buf));
        }
        let fixed = match self.fixed_for(op, &buf) {
            Ok(f) => f,
            Err(e) => return Err((e, buf)),
        };
        let id = self.next_id;
        self.next_id += 1;
        let info = OpInfo::Rw { write, file: file.clone(), offset, len: buf.len() };
        let dir = if write { Dir::Write } else { Dir::Read };
        let slot = self.fixed_file(file);
        match self.raw.push_rw(dir, file.hold(), slot, offset, buf, fixed, false, Pending { id, tag, info }) {
            Ok(()) => Ok(id),
            Err((_, buf)) => Err((
                Error::os(
                    op,
                    std::io::Error::new(
                        std::io::ErrorKind::WouldBlock,
                        "submission queue full: reap completions first",
                    ),
                ),
                buf,
            )),
        }
    }

    /// Queues a read of `buf.len()` bytes at `offset` (READ_FIXED where the
    /// ring has the table). Checked first: see [`DirectFile::check_io`].
    ///
    /// # Errors
    /// The check's errors, or a full submission queue; the buffer comes back.
    pub fn push_read(&mut self, file: &DirectFile, offset: u64, buf: IoBuf, tag: u64) -> Result<(), (Error, IoBuf)> {
        self.push_rw(false, file, offset, buf, Some(tag)).map(drop)
    }

    /// Queues a write of `buf.len()` bytes at `offset` (WRITE_FIXED where the
    /// ring has the table).
    ///
    /// # Errors
    /// As [`Ring::push_read`].
    pub fn push_write(&mut self, file: &DirectFile, offset: u64, buf: IoBuf, tag: u64) -> Result<(), (Error, IoBuf)> {
        self.push_rw(true, file, offset, buf, Some(tag)).map(drop)
    }

    /// Queues an fsync (`datasync`: fdatasync).
    ///
    /// # Errors
    /// [`Error::FileClosed`], or a full submission queue.
    pub fn push_sync(&mut self, file: &DirectFile, datasync: bool, tag: u64) -> Result<()> {
        if file.is_closed() {
            return Err(Error::FileClosed { op: "sync", path: file.path().to_path_buf() });
        }
        let id = self.next_id;
        self.next_id += 1;
        self.raw
            .push_fsync(
                file.hold(),
                datasync,
                Pending { id, tag: Some(tag), info: OpInfo::Sync { file: file.clone() } },
            )
            .map_err(|_| {
                Error::os("sync", std::io::Error::new(std::io::ErrorKind::WouldBlock, "submission queue full"))
            })
    }

    /// Hands queued operations to the kernel.
    ///
    /// # Errors
    /// [`Error::Io`] from io_uring_enter.
    pub fn submit(&mut self) -> Result<usize> {
        self.raw.submit().map_err(|e| Error::os("submit", e))
    }

    /// Submits, then waits until at least `min` completions are ready (or
    /// nothing is left in flight). Returns how many are ready. One
    /// `io_uring_enter` per wait: it submits, runs deferred completions and
    /// sleeps.
    ///
    /// # Errors
    /// [`Error::Io`] from io_uring_enter.
    pub fn wait(&mut self, min: usize) -> Result<usize> {
        self.reap_posted();
        loop {
            if self.ready.len() >= min || self.raw.in_flight() == 0 {
                self.raw.submit().map_err(|e| Error::os("submit", e))?;
                return Ok(self.ready.len());
            }
            let want = (min - self.ready.len()).min(self.raw.in_flight());
            self.raw.submit_and_wait(want).map_err(|e| Error::os("wait", e))?;
            self.reap_posted();
        }
    }

    /// Submits, then waits for at least one completion, at most `timeout`
    /// (`None`: no limit). Returns `false` on timeout.
    ///
    /// # Errors
    /// [`Error::Io`] from io_uring_enter.
    pub fn wait_timeout(&mut self, timeout: Option<Duration>) -> Result<bool> {
        self.reap();
        if !self.ready.is_empty() {
            self.raw.submit().map_err(|e| Error::os("submit", e))?;
            return Ok(true);
        }
        match timeout {
            Some(t) => self.raw.submit_and_wait_timeout(t).map_err(|e| Error::os("wait", e)),
            None => self.raw.submit_and_wait(1).map(|_| true).map_err(|e| Error::os("wait", e)),
        }
    }

    /// Keeps a read of `eventfd` in flight; its completion comes back with
    /// `tag` (for waking a thread blocked in [`Ring::wait_timeout`]).
    pub(crate) fn push_wake(&mut self, eventfd: crate::sys::uring::FdHold, tag: u64) -> Result<()> {
        let id = self.next_id;
        self.next_id += 1;
        self.raw.push_eventfd_read(eventfd, Pending { id, tag: Some(tag), info: OpInfo::Wake }).map_err(|_| {
            Error::os("eventfd read", std::io::Error::new(std::io::ErrorKind::WouldBlock, "submission queue full"))
        })
    }

    /// Completions that are ready (call [`Ring::wait`] to get some).
    pub fn completions(&mut self) -> impl Iterator<Item = Completion> + '_ {
        self.reap();
        self.ready.drain(..)
    }

    fn reap(&mut self) {
        let ready = &mut self.ready;
        self.raw.reap(|r| {
            if let Some(c) = finish(r) {
                ready.push_back(c);
            }
        });
    }

    fn reap_posted(&mut self) {
        let ready = &mut self.ready;
        self.raw.reap_posted(|r| {
            if let Some(c) = finish(r) {
                ready.push_back(c);
            }
        });
    }

    fn run_one(&mut self, write: bool, file: &DirectFile, offset: u64, buf: IoBuf) -> (Result<usize>, IoBuf) {
        let id = match self.push_rw(write, file, offset, buf, None) {
            Ok(id) => id,
            Err((e, b)) => return (Err(e), b),
        };
        if let Err(e) = self.raw.submit() {
            // Submission failed: the op is still queued; wait for it below.
            tracing::debug!("submit failed: {e}");
        }
        loop {
            let mut mine = None;
            let ready = &mut self.ready;
            self.raw.reap(|r| {
                if r.tag.id == id && r.tag.tag.is_none() {
                    mine = Some(r);
                } else if let Some(c) = finish(r) {
                    ready.push_back(c);
                }
            });
            if let Some(r) = mine {
                let buf = r.buf.expect("read/write slots hold their buffer");
                let OpInfo::Rw { write, file, offset, len } = r.tag.info else {
                    unreachable!("id belongs to a read/write")
                };
                return (file.complete(write, offset, len, r.res), buf);
            }
            if let Err(e) = self.raw.submit_and_wait(1) {
                // The op is in flight: it cannot be abandoned with its buffer.
                tracing::warn!("io_uring_enter failed while waiting: {e}; retrying");
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }

    /// Reads `buf.len()` bytes at `offset` and waits for the result: the
    /// count (short at end of file), or the error, and the buffer.
    pub fn read_at(&mut self, file: &DirectFile, offset: u64, buf: IoBuf) -> (Result<usize>, IoBuf) {
        self.run_one(false, file, offset, buf)
    }

    /// Writes `buf.len()` bytes at `offset` and waits for the result.
    pub fn write_at(&mut self, file: &DirectFile, offset: u64, buf: IoBuf) -> (Result<usize>, IoBuf) {
        self.run_one(true, file, offset, buf)
    }
}

/// The filled prefix of a ring's table after a clone of `range` from a
/// source whose first `valid` slots are filled: a whole clone gives exactly
/// that prefix; a ranged one extends the prefix only if it starts inside it.
fn usable_after_clone(before: u16, valid: u16, range: CloneRange) -> u16 {
    if range.nr == 0 {
        return valid;
    }
    let filled = range.nr.min((valid as u32).saturating_sub(range.src_off));
    let end = (range.dst_off + filled).min(u16::MAX as u32) as u16;
    if range.dst_off <= before as u32 {
        before.max(end)
    } else {
        before
    }
}

fn finish(r: Reaped<Pending>) -> Option<Completion> {
    let tag = r.tag.tag?;
    let result = match &r.tag.info {
        OpInfo::Rw { write, file, offset, len } => file.complete(*write, *offset, *len, r.res),
        OpInfo::Sync { file } => {
            if r.res < 0 {
                Err(file.io_error("sync", None, std::io::Error::from_raw_os_error(-r.res)))
            } else {
                Ok(0)
            }
        }
        OpInfo::Wake => {
            if r.res < 0 {
                Err(Error::os("eventfd read", std::io::Error::from_raw_os_error(-r.res)))
            } else {
                Ok(r.res as usize)
            }
        }
    };
    Some(Completion { tag, result, buf: r.buf })
}

impl Drop for Ring {
    fn drop(&mut self) {
        self.raw.drain();
        if self.unregister_on_drop && self.table_len > 0 {
            let _ = self.raw.io_uring().submitter().unregister_buffers();
        }
    }
}

impl AsFd for Ring {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.raw.fd()
    }
}

/// Creates a SINGLE_ISSUER | DEFER_TASKRUN ring, falling back to plainer
/// setups on kernels that lack those flags (EINVAL).
pub(crate) fn build_io_uring(entries: u32, defer: bool) -> Result<(IoUring, bool)> {
    if !defer {
        return IoUring::builder()
            .setup_single_issuer()
            .setup_cqsize(entries * 2)
            .build(entries)
            .or_else(|_| IoUring::builder().setup_cqsize(entries * 2).build(entries))
            .map(|r| (r, false))
            .map_err(setup_error);
    }
    match IoUring::builder().setup_single_issuer().setup_defer_taskrun().setup_cqsize(entries * 2).build(entries) {
        Ok(r) => Ok((r, true)),
        // DEFER_TASKRUN (6.1) or SINGLE_ISSUER (6.0) unknown.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            IoUring::builder().setup_cqsize(entries * 2).build(entries).map(|r| (r, false)).map_err(setup_error)
        }
        Err(e) => Err(setup_error(e)),
    }
}
