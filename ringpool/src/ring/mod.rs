//! `Ring`: one thread's io_uring with the pool's table, and I/O on it.
//!
//! - [`options`]: how a ring is set up;
//! - [`table_view`]: what it knows of its buffer table and everything that
//!   follows the table (clone, catch-up, routing buffers to slots);
//! - [`submit`]: operations on it (queue, split, submit, wait, reap);
//! - [`slots`]: which segment each slot holds.

mod options;
mod slots;
mod submit;
mod table_view;

use std::collections::VecDeque;
use std::marker::PhantomData;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(crate) use options::check_depth;
pub use options::RingOptions;
use slab::Slab;
use submit::{Group, Pending};
pub(crate) use table_view::TableView;

use crate::engine::{self, Device, Runner, SyncRingMember};
use crate::error::{Error, Result};
use crate::file::DirectFile;
use crate::home::Home;
use crate::memory::IoMemory;
use crate::op::Done;
use crate::stats::{RingSetup, RingStats};
use crate::sys::uring::{RawRing, Uring};
use crate::template::Template;
use crate::types::{CloneRange, EngineKind, EnginePolicy, OpKind, TablePath};
use crate::uring;

// The sealing trait is unnameable outside the crate, so a crate-private
// type in its signature leaks nothing.
#[allow(private_interfaces)]
pub(crate) mod private {
    use std::sync::Weak;

    use crate::template::Template;

    pub trait Sealed {
        /// The template a table source belongs to, to follow its growth.
        fn source_link(&self) -> Option<Weak<Template>> {
            None
        }
        /// The pool segment slot `slot` of the source's table holds.
        fn source_segment(&self, slot: u16) -> Option<u16>;
        /// `Some(n)` when slots `[0, n)` hold segments `[0, n)` and the rest
        /// are holes.
        fn source_prefix(&self) -> Option<u16> {
            None
        }
        /// The table link the source follows, and the generation its slots
        /// match (read before a clone copies them).
        fn source_sync(&self) -> Option<(std::sync::Arc<crate::link::TableLink>, u64)> {
            None
        }
    }
}

/// Something a ring can clone a table from: a
/// [`BufferTable`](crate::BufferTable) or a [`Ring`].
pub trait TableSource: private::Sealed {
    /// The source ring's fd.
    fn source_fd(&self) -> RawFd;
    /// The pool its table maps, if known.
    fn source_memory(&self) -> Option<&IoMemory>;
    /// Slots of its kernel table (for interpreting range errors).
    fn source_len(&self) -> u16;
}

#[allow(private_interfaces)]
impl private::Sealed for Ring {
    fn source_segment(&self, slot: u16) -> Option<u16> {
        self.table.segment_at(slot)
    }
    fn source_sync(&self) -> Option<(Arc<crate::link::TableLink>, u64)> {
        self.table.sync()
    }
}

impl TableSource for Ring {
    fn source_fd(&self) -> RawFd {
        self.raw.fd().as_raw_fd()
    }
    fn source_memory(&self) -> Option<&IoMemory> {
        self.table.memory()
    }
    fn source_len(&self) -> u16 {
        self.table.size()
    }
}

/// One thread's io_uring (SINGLE_ISSUER | DEFER_TASKRUN) with the pool's
/// table. Made by [`BufferTable::ring`](crate::BufferTable::ring) on the
/// thread that uses it; it is neither `Send` nor `Sync`, because the kernel
/// binds such a ring to its creating thread.
///
/// Operations take their buffers by value and give them back with the
/// result, a [`Done`]: [`Ring::run`] (or [`Ring::read_at`],
/// [`Ring::readv_at`], ...) waits for one operation; [`Ring::push`] with
/// [`Ring::submit`], [`Ring::wait`] and [`Ring::completions`] keeps many in
/// flight. Each operation runs on the engine the one engine choice names
/// for its file ([`Ring::engine_for`]): io_uring, or inline on this thread.
///
/// The ring keeps the pool's memory mapped; it stays usable after the
/// [`BufferTable`](crate::BufferTable) is dropped.
pub struct Ring {
    // Drop order: in-flight ops are drained (in Drop) before the table view
    // (and the memory handle in it) is released.
    raw: RawRing<Pending>,
    /// Which engine serves operations, as asked for.
    engine: EnginePolicy,
    /// Outstanding operations below which a shallow queue runs inline.
    inline_depth: usize,
    /// Batch completions in `wait` (RingOptions::min_wait).
    min_wait: Option<Duration>,
    /// Counted among the rings serving devices without NOWAIT.
    sync_rings: SyncRingMember,
    /// The process that made the ring (a forked child shares its SQ and CQ
    /// memory and its fd: it must not drive, cancel or unregister it).
    home: Home,
    /// Its buffer table, as this ring knows it.
    table: TableView,
    setup: RingSetup,
    unregister_on_drop: bool,
    /// Completions reaped and not yet taken, with their tags.
    ready: VecDeque<(u64, Done)>,
    /// The completion of the operation `run` waits for, once reaped.
    ran: Option<Done>,
    /// Operations split into several SQEs, waiting for their parts.
    groups: Slab<Group>,
    stats: RingStats,
    /// Files registered with this ring (IOSQE_FIXED_FILE) and their slots;
    /// holding the handle keeps its identity from being reused.
    files: Vec<(DirectFile, u32)>,
    _one_thread: PhantomData<*const ()>,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("fd", &self.raw.fd().as_raw_fd())
            .field("table_len", &self.table.filled())
            .field("setup", &self.setup)
            .field("in_flight", &self.raw.in_flight())
            .finish()
    }
}

impl Ring {
    /// A ring with no table (clone one into it with
    /// [`Ring::clone_buffers_from`]).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a depth of 0 or above 32768;
    /// [`Error::IoUringUnavailable`].
    pub fn new(opts: &RingOptions) -> Result<Ring> {
        let start = Instant::now();
        let (io, task_run) = uring::setup(&opts.setup()?)?;
        if let Some((bounded, unbounded)) = opts.iowq_max_workers {
            uring::limit_iowq(&io, bounded, unbounded);
        }
        Ok(Ring::with_io(io, task_run, opts, start.elapsed()))
    }

    fn with_io(io: Uring, task_run: uring::TaskRun, opts: &RingOptions, ring_time: Duration) -> Ring {
        Ring {
            raw: RawRing::new(io, task_run.defer, task_run.coop),
            engine: opts.engine,
            inline_depth: opts.inline_depth as usize,
            min_wait: opts.min_wait,
            sync_rings: SyncRingMember::default(),
            home: Home::here("Ring"),
            table: TableView::default(),
            setup: RingSetup {
                path: TablePath::Empty,
                ring_time,
                table_time: Duration::ZERO,
                defer_taskrun: task_run.defer,
                coop_taskrun: task_run.coop,
                fallback: None,
            },
            unregister_on_drop: opts.unregister_on_drop,
            ready: VecDeque::new(),
            ran: None,
            groups: Slab::new(),
            stats: RingStats::default(),
            files: Vec::new(),
            _one_thread: PhantomData,
        }
    }

    /// A ring for the calling thread with template `t`'s table by `path`
    /// (what [`BufferTable::ring_with`](crate::BufferTable::ring_with) makes).
    pub(crate) fn with_table(
        opts: &RingOptions,
        t: &Arc<Template>,
        path: TablePath,
        fallback: Option<String>,
    ) -> Result<Ring> {
        let mut ring = Ring::new(opts)?;
        let start = Instant::now();
        ring.table.attach(ring.raw.io_uring(), t, path)?;
        ring.setup.path = path;
        ring.setup.table_time = start.elapsed();
        ring.setup.fallback = fallback;
        Ok(ring)
    }

    /// A ring another process set up and cloned the table into
    /// ([`HandedRing::enable`](crate::handover::HandedRing::enable)),
    /// enabled here (DEFER_TASKRUN), over this process's view of the pool;
    /// slots `[0, segments)` hold the pool's segments.
    pub(crate) fn from_handed(io: Uring, memory: IoMemory, segments: u16, opts: &RingOptions, defer: bool) -> Ring {
        let task_run = uring::TaskRun { defer, coop: false };
        let mut r = Ring::with_io(io, task_run, opts, Duration::ZERO);
        r.table = TableView::handed(memory, segments);
        r.setup.path = TablePath::Cloned;
        r
    }

    /// The pool this ring's table maps, as this process sees it: for a
    /// handed-over ring, the view whose leases (of its lease segments) and
    /// regions ([`IoMemory::region`]) it does fixed I/O with.
    pub fn memory(&self) -> Option<&IoMemory> {
        self.table.memory()
    }

    /// Picks up segments the table gained or lost since this ring got it
    /// ([`BufferTable::grow`](crate::BufferTable::grow),
    /// [`BufferTable::shrink`](crate::BufferTable::shrink)): a ranged
    /// DST_REPLACE clone of just the changed slots where it works, else the
    /// whole table again (or, for a ring that registered its own table, a
    /// buffers update). Returns whether anything changed. Operations call
    /// it by themselves when the table changed.
    ///
    /// # Errors
    /// Clone and register errors; [`Error::Forked`].
    pub fn refresh_table(&mut self) -> Result<bool> {
        self.home.check()?;
        self.table.refresh(self.raw.io_uring())
    }

    /// The table generation this ring has.
    pub fn table_generation(&self) -> u64 {
        self.table.generation()
    }

    /// Whether the table changed since this ring caught up with it (one
    /// atomic load).
    pub(crate) fn table_is_stale(&self) -> bool {
        self.table.is_stale()
    }

    /// How the ring was set up.
    pub fn setup(&self) -> &RingSetup {
        &self.setup
    }

    /// Slots of this ring's table that hold pool memory (0: none).
    pub fn table_len(&self) -> u16 {
        self.table.filled()
    }

    /// Whether this ring's table holds pool segment `segment`, and in
    /// which slot.
    pub fn slot_of(&self, segment: u16) -> Option<u16> {
        self.table.slot(segment)
    }

    /// Operations queued or running (parts of a split operation count
    /// once each).
    pub fn in_flight(&self) -> usize {
        self.raw.in_flight()
    }

    /// Clones `range` of `src`'s table into this ring: Linux 6.12+ (ranges
    /// and `replace`: 6.13+). Costs microseconds whatever the pool size, and
    /// nothing against RLIMIT_MEMLOCK. Fixed I/O then uses the slots where
    /// the clone put each segment; a lease of a segment the ring did not get
    /// is refused with [`Error::NotInTable`].
    ///
    /// # Errors
    /// [`Error::TableAlreadyPresent`] (EBUSY), [`Error::EmptySource`] (ENXIO),
    /// [`Error::RangeOutOfBounds`] (EOVERFLOW), [`Error::CrossProcess`],
    /// [`Error::SingleIssuer`] (EEXIST), [`Error::KernelTooOld`],
    /// [`Error::ForeignBuffer`] if this ring already serves another pool.
    pub fn clone_buffers_from(&mut self, src: &impl TableSource, range: CloneRange) -> Result<()> {
        self.home.check()?;
        self.table.clone_from(self.raw.io_uring(), src, range)
    }

    /// Clones from any io_uring fd of this process. The ring then has table
    /// entries but no pool it knows of, so fixed I/O on it is refused
    /// ([`Error::ForeignBuffer`]); for tests of kernel semantics.
    ///
    /// # Errors
    /// As [`Ring::clone_buffers_from`].
    pub fn clone_buffers_from_fd(&mut self, src: BorrowedFd<'_>, source_len: u16, range: CloneRange) -> Result<()> {
        self.home.check()?;
        self.table.clone_from_fd(self.raw.io_uring(), src.as_raw_fd(), source_len, range)
    }

    /// Unregisters this ring's table (unpinning synchronously what only this
    /// ring held).
    ///
    /// # Errors
    /// [`Error::Io`] (ENXIO when there is no table).
    pub fn unregister_buffers(&mut self) -> Result<()> {
        self.home.check()?;
        self.table.unregister(self.raw.io_uring())
    }

    /// Registers `file` with this ring, so that its operations skip the
    /// per-I/O file lookup (IOSQE_FIXED_FILE, as fio's `registerfiles`).
    /// Operations on `file` through this ring use the registered slot from
    /// now on; registering it again is a no-op.
    ///
    /// # Errors
    /// [`Error::Io`] from the register calls; [`Error::FileClosed`];
    /// [`Error::InvalidArgument`] past 64 files.
    pub fn register_file(&mut self, file: &DirectFile) -> Result<()> {
        const SLOTS: u32 = 64;
        self.home.check()?;
        if file.is_closed() {
            return Err(Error::FileClosed { op: "register_file", path: file.path().to_path_buf() });
        }
        if self.fixed_file(file).is_some() {
            return Ok(());
        }
        // At most 64 files.
        let slot = self.files.len() as u32;
        if slot >= SLOTS {
            return Err(Error::invalid(
                "registered files",
                slot + 1,
                format!("a ring registers at most {SLOTS} files"),
            ));
        }
        let ring = self.raw.io_uring();
        if slot == 0 {
            uring::register_files_sparse(ring, SLOTS)?;
        }
        uring::register_file(ring, slot, file.as_fd().as_raw_fd())?;
        self.files.push((file.clone(), slot));
        Ok(())
    }

    #[cfg(feature = "tokio")]
    /// Has the kernel signal `efd` at each of this ring's completions.
    pub(crate) fn register_eventfd(&self, efd: BorrowedFd<'_>) -> Result<()> {
        uring::register_eventfd(self.raw.io_uring(), efd.as_raw_fd())
    }

    fn fixed_file(&self, file: &DirectFile) -> Option<u32> {
        self.files.iter().find(|(f, _)| f.same_file(file)).map(|&(_, slot)| slot)
    }

    /// Which engine this ring uses for operations on `file`, and why (the
    /// one engine choice, for a ring under its policy).
    pub fn engine_for(&self, file: &DirectFile) -> (EngineKind, &'static str) {
        let c = engine::choose(self.engine, Runner::Ring, Device::of(file));
        (c.engine, c.reason)
    }

    /// What this ring does with operations of `kind` whose buffers lie in
    /// one segment: the opcode name (`"READV_FIXED"`, `"READV"`, or
    /// `"READ_FIXED"` per buffer where the kernel lacks READV_FIXED).
    pub fn opcode_for(&self, kind: OpKind) -> &'static str {
        submit::opcode_for(self, kind)
    }

    /// Counters of what this ring did.
    pub fn stats(&self) -> RingStats {
        self.stats
    }

    /// Writes `len` bytes to `file` at offset 0 from table slot `slot` as
    /// the kernel has it, naming the registering process's address `addr`
    /// (WRITE_FIXED, waited for): the CQE's result, `-EFAULT` for a slot
    /// the ring does not hold or a range it does not cover. For tests that
    /// try to reach memory a ring should not (an isolating daemon's
    /// client); it bypasses everything ringpool checks.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] with operations in flight, or in a
    /// forked child; [`Error::Io`] from the submission.
    #[doc(hidden)]
    pub fn try_write_from_slot(&mut self, file: BorrowedFd<'_>, slot: u16, addr: u64, len: u32) -> Result<i32> {
        if self.raw.in_flight() != 0 || !self.home.is_here() {
            return Err(Error::invalid("ring", self.raw.in_flight(), "idle, in the process that enabled it"));
        }
        crate::sys::uring::write_fixed_slot_sync(self.raw.io_uring(), file, addr, len, slot)
            .map_err(|e| Error::os("write from a table slot", e))
    }

    /// Registers `len` bytes of new memory of this process into table slot
    /// `slot` and empties the slot again (what that slot held is gone
    /// from this ring): whether this process can pin memory through the
    /// ring. For tests that try (a ring a daemon set up with CAP_IPC_LOCK
    /// would let any process pin memory uncharged).
    ///
    /// # Errors
    /// [`Error::Io`] with the kernel's refusal (ENOMEM past the
    /// RLIMIT_MEMLOCK charged).
    #[doc(hidden)]
    pub fn try_pin_through_slot(&mut self, slot: u16, len: usize) -> Result<()> {
        self.home.check()?;
        crate::sys::uring::try_pin_through(self.raw.io_uring(), u32::from(slot), len)
            .map_err(|e| Error::os("pin memory through a table slot", e))
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        if !self.home.is_here() {
            // A forked child: the ring's operations and table are the
            // parent's (RawRing's drop leaves its slots alone too).
            return;
        }
        self.raw.drain();
        if self.unregister_on_drop && self.table.has_kernel_table() {
            let _ = uring::unregister(self.raw.io_uring(), true);
        }
    }
}

impl AsFd for Ring {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.raw.fd()
    }
}
