//! `Ring`: one thread's io_uring with the pool's table, and fixed I/O on it.

mod options;
mod slots;
mod submit;
mod sync_rings;

use std::collections::VecDeque;
use std::marker::PhantomData;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use io_uring::types::CloneBuffersFlags;
use slab::Slab;

pub(crate) use options::{build_io_uring, check_depth};
pub use options::{CloneRange, RingOptions, RingSetup, MAX_RING_ENTRIES};
use slots::SlotMap;
pub use submit::{Completion, RingStats};
use submit::{Group, Pending};

use crate::errno::{clone_error, CloneRequest};
use crate::error::{Error, Result};
use crate::file::DirectFile;
use crate::home::Home;
use crate::memory::IoMemory;
use crate::sys::uring::RawRing;
use crate::template::{register_table, registered, Template};
use crate::types::TablePath;

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
        self.map.segment_at(slot)
    }
    fn source_sync(&self) -> Option<(Arc<crate::link::TableLink>, u64)> {
        self.link.clone().map(|l| (l, self.generation))
    }
}
impl TableSource for Ring {
    fn source_fd(&self) -> RawFd {
        self.raw.fd().as_raw_fd()
    }
    fn source_memory(&self) -> Option<&IoMemory> {
        self.memory.as_ref()
    }
    fn source_len(&self) -> u16 {
        self.table_size
    }
}

/// One thread's io_uring (SINGLE_ISSUER | DEFER_TASKRUN) with the pool's
/// table. Made by [`BufferTable::ring`](crate::BufferTable::ring) on the thread that uses it; it is
/// neither `Send` nor `Sync`, because the kernel binds such a ring to its
/// creating thread.
///
/// Operations take their buffers by value and give them back with the
/// result: [`Ring::run`] (or [`Ring::read_at`], [`Ring::readv_at`], ...)
/// waits for one operation; [`Ring::push`] (or [`Ring::push_read`], ...)
/// with [`Ring::submit`], [`Ring::wait`] and [`Ring::completions`] keeps
/// many in flight.
///
/// The ring keeps the pool's memory mapped; it stays usable after the
/// [`BufferTable`](crate::BufferTable) is dropped.
pub struct Ring {
    // Drop order: in-flight ops are drained (in Drop) before the memory
    // handle is released.
    raw: RawRing<Pending>,
    /// Which engine serves operations.
    engine: crate::types::EnginePolicy,
    /// Outstanding operations below which Auto runs inline (no NOWAIT).
    inline_depth: usize,
    /// Batch completions in `wait` (RingOptions::min_wait).
    min_wait: Option<std::time::Duration>,
    /// Counted among the rings serving devices without NOWAIT.
    sync_rings: sync_rings::Member,
    /// The process that made the ring (a forked child shares its SQ and CQ
    /// memory and its fd: it must not drive, cancel or unregister it).
    home: Home,
    memory: Option<IoMemory>,
    /// Which segment each slot of the table holds.
    map: SlotMap,
    /// Slots of the kernel table (filled or holes).
    table_size: u16,
    /// The table was cloned from a bare fd: its contents are unknown.
    opaque: bool,
    setup: RingSetup,
    unregister_on_drop: bool,
    ready: VecDeque<Completion>,
    /// The result of the operation `run` waits for, once reaped.
    ran: Option<(Result<usize>, crate::buf::Buffers)>,
    /// Operations split into several SQEs, waiting for their parts.
    groups: Slab<Group>,
    stats: RingStats,
    /// The template this ring's table came from, to pick up growth; weak,
    /// so that the ring outlives the table.
    table: Option<Weak<Template>>,
    /// The table's filled slots and generation (kept even when the table
    /// is gone): one load before each fixed operation tells whether the
    /// table grew or shrank since.
    link: Option<Arc<crate::link::TableLink>>,
    /// The template generation this ring's table matches.
    generation: u64,
    /// The template's filled slots when this ring last caught up with it
    /// (its table holds template slots `[0, synced)`).
    synced: u16,
    /// Files registered with this ring (IOSQE_FIXED_FILE) and their slots;
    /// holding the handle keeps its identity from being reused.
    files: Vec<(DirectFile, u32)>,
    _one_thread: PhantomData<*const ()>,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("fd", &self.raw.fd().as_raw_fd())
            .field("table_len", &self.map.filled())
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
        Self::build(opts)
    }

    pub(crate) fn build(opts: &RingOptions) -> Result<Ring> {
        check_depth(opts.entries)?;
        let start = Instant::now();
        let (io, flags) = options::build_io_uring(opts)?;
        Ok(Ring::with_io(io, flags.defer, flags.coop, opts, start.elapsed()))
    }

    fn with_io(io: io_uring::IoUring, defer: bool, coop: bool, opts: &RingOptions, ring_time: Duration) -> Ring {
        Ring {
            raw: RawRing::new(io, defer, coop),
            engine: opts.engine,
            inline_depth: opts.inline_depth as usize,
            min_wait: opts.min_wait,
            sync_rings: sync_rings::Member::default(),
            home: Home::here("Ring"),
            memory: None,
            map: SlotMap::default(),
            table_size: 0,
            opaque: false,
            setup: RingSetup {
                path: TablePath::Empty,
                ring_time,
                table_time: Duration::ZERO,
                defer_taskrun: defer,
                coop_taskrun: coop,
                fallback: None,
            },
            unregister_on_drop: opts.unregister_on_drop,
            ready: VecDeque::new(),
            ran: None,
            groups: Slab::new(),
            stats: RingStats::default(),
            files: Vec::new(),
            table: None,
            link: None,
            generation: 0,
            synced: 0,
            _one_thread: PhantomData,
        }
    }

    /// A ring another process set up and cloned the table into
    /// ([`HandedRing::enable`](crate::HandedRing::enable)), enabled here
    /// (DEFER_TASKRUN), over this process's view of the pool; slots
    /// `[0, segments)` hold the pool's segments.
    pub(crate) fn from_handed(io: io_uring::IoUring, memory: IoMemory, segments: u16, opts: &RingOptions) -> Ring {
        let mut r = Ring::with_io(io, true, false, opts, Duration::ZERO);
        r.memory = Some(memory);
        r.map = SlotMap::identity(segments);
        r.table_size = segments;
        r.synced = segments;
        r.setup.path = TablePath::Cloned;
        r
    }

    /// The pool this ring's table maps, as this process sees it: for a
    /// handed-over ring, the view whose leases (of its lease segments) and
    /// regions ([`IoMemory::region`]) it does fixed I/O with.
    pub fn memory(&self) -> Option<&IoMemory> {
        self.memory.as_ref()
    }

    /// Gives this ring the template's table by `path` (reading the filled
    /// count and generation before the kernel call, so that the ring never
    /// believes in a slot its copy lacks), and records the setup.
    pub(crate) fn attach(&mut self, t: &Arc<Template>, path: TablePath, fallback: Option<String>) -> Result<()> {
        let start = Instant::now();
        let (generation, entries, _, _) = t.link.catch_up(u64::MAX);
        match path {
            TablePath::Cloned => self.clone_raw(t.fd(), t.source_len(), CloneRange::all())?,
            TablePath::Registered => register_table(self.raw.io_uring(), &t.memory, entries, t.capacity)?,
            TablePath::Unregistered | TablePath::Empty => {}
        }
        self.memory = Some(t.memory.clone());
        if matches!(path, TablePath::Cloned | TablePath::Registered) {
            self.map = SlotMap::identity(entries);
            self.table_size = t.capacity;
            self.synced = entries;
        }
        self.table = Some(Arc::downgrade(t));
        self.link = Some(t.link.clone());
        self.generation = generation;
        self.setup.path = path;
        self.setup.table_time = start.elapsed();
        self.setup.fallback = fallback;
        Ok(())
    }

    /// Picks up segments the table gained since this ring got it
    /// ([`BufferTable::grow`](crate::BufferTable::grow)): a ranged DST_REPLACE clone of just the new
    /// slots where it works, else the whole table again (or, for a ring that
    /// registered its own table, a buffers update of the new slots).
    /// Returns whether anything changed. Operations call it by themselves
    /// when they meet a buffer of a new segment.
    ///
    /// # Errors
    /// Clone and register errors.
    pub fn refresh_table(&mut self) -> Result<bool> {
        self.home.check()?;
        let Some(link) = self.link.clone() else { return Ok(false) };
        let (generation, entries, low, exact) = link.catch_up(self.generation);
        if generation == self.generation {
            return Ok(false);
        }
        let template = self.table.as_ref().and_then(Weak::upgrade);
        let path = self.setup.path;
        match template {
            Some(t) if matches!(path, TablePath::Cloned | TablePath::Registered) => {
                let old = self.synced;
                // Slots [from, to) changed since this ring's generation:
                // grown into, emptied by a shrink, or both; all of them when
                // the history does not reach back that far.
                let (from, to) =
                    if exact { (low.min(old), entries.max(old)) } else { (0, entries.max(self.table_size)) };
                if from < to {
                    self.catch_up_slots(&t, from, to, entries, exact)?;
                }
                self.map = SlotMap::identity(entries);
                self.table_size = self.table_size.max(t.capacity);
                self.synced = entries;
                tracing::debug!(from = old, to = entries, generation, "ring caught up with the table");
            }
            _ => {
                // A hand-made table, no table, or the table is gone: there
                // is nothing to copy from. Slots that held segments from
                // `low` on may be stale: forget them, so that a lease there
                // is refused (NotInTable) instead of reaching old memory.
                let low = if exact { low } else { 0 };
                self.map.forget_segments_from(low);
                self.synced = self.synced.min(low);
            }
        }
        self.generation = generation;
        Ok(true)
    }

    /// Makes slots `[from, to)` hold what the template holds there now.
    fn catch_up_slots(&mut self, t: &Template, from: u16, to: u16, entries: u16, exact: bool) -> Result<()> {
        match self.setup.path {
            TablePath::Cloned if t.ranged_refresh() && exact => {
                let range = CloneRange::range(u32::from(from), u32::from(from), u32::from(to - from)).replace();
                self.clone_raw(t.fd(), t.source_len(), range)
            }
            TablePath::Cloned => {
                // The whole table again: every in-flight operation keeps its
                // own reference to the old entries. ENXIO: no table (a whole
                // refresh that failed after unregistering).
                match self.raw.io_uring().submitter().unregister_buffers() {
                    Err(e) if e.raw_os_error() != Some(libc::ENXIO) => return Err(Error::os("unregister", e)),
                    _ => {}
                }
                self.map.clear();
                self.clone_raw(t.fd(), t.source_len(), CloneRange::all())
            }
            _ => {
                // This ring registered its own table: empty what the
                // template dropped, register what it has now.
                let ring = self.raw.io_uring();
                if to > entries {
                    crate::sys::uring::clear_slots(ring, u32::from(entries), u32::from(to - entries))
                        .map_err(|e| Error::os("clear table slots", e))?;
                }
                if entries > from {
                    let iovs = t.memory.shared.iovs(from, entries);
                    registered("register", &iovs, crate::sys::uring::update_iovs(ring, u32::from(from), &iovs))?;
                }
                Ok(())
            }
        }
    }

    /// The table generation this ring has.
    pub fn table_generation(&self) -> u64 {
        self.generation
    }

    /// How the ring was set up.
    pub fn setup(&self) -> &RingSetup {
        &self.setup
    }

    /// Slots of this ring's table that hold pool memory (0: none).
    pub fn table_len(&self) -> u16 {
        self.map.filled()
    }

    /// Whether this ring's table holds pool segment `segment`, and in
    /// which slot.
    pub fn slot_of(&self, segment: u16) -> Option<u16> {
        self.map.slot(segment)
    }

    /// Operations queued or running (parts of a split operation count
    /// once each).
    pub fn in_flight(&self) -> usize {
        self.raw.in_flight()
    }

    /// Operations queued and not yet handed to the kernel.
    pub fn queued(&mut self) -> usize {
        self.raw.queued()
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
        if let (Some(mine), Some(theirs)) = (&self.memory, src.source_memory()) {
            if !mine.same_pool(theirs) {
                return Err(Error::ForeignBuffer {
                    op: "clone",
                    reason: "this ring already serves another pool".into(),
                });
            }
        }
        let source_len = src.source_len();
        // The generation first: a shrink after it shows as a change.
        let sync = private::Sealed::source_sync(src);
        let seg = |slot: u32| u16::try_from(slot).ok().and_then(|s| private::Sealed::source_segment(src, s));
        // What the source's slots hold, read before the kernel copies them
        // (a concurrent growth may fill more slots after the copy). A whole
        // table whose filled slots are an identity prefix needs no list.
        let prefix = if range.nr == 0 { private::Sealed::source_prefix(src) } else { None };
        let held: Vec<Option<u16>> = match prefix {
            Some(_) => Vec::new(),
            None => {
                let (first, n) = if range.nr == 0 { (0, u32::from(source_len)) } else { (range.src_off, range.nr) };
                (0..n.min(16384)).map(|k| seg(first.saturating_add(k))).collect()
            }
        };
        self.clone_raw(src.source_fd(), source_len, range)?;
        if range.nr == 0 {
            self.map = SlotMap::identity(prefix.unwrap_or(0));
        }
        // Follow the source's table: a shrink must make this ring forget
        // the slots it released (a hand-made table cannot be refreshed).
        if self.link.is_none() {
            if let Some((link, generation)) = sync {
                self.link = Some(link);
                self.generation = generation;
            }
        }
        // The kernel checked dst_off + nr <= 16384.
        for (k, segment) in held.into_iter().enumerate() {
            self.map.set((range.dst_off as usize + k) as u16, segment);
        }
        let end = if range.nr == 0 { u32::from(source_len) } else { range.dst_off + range.nr };
        self.table_size = self.table_size.max(end as u16);
        if self.memory.is_none() {
            self.memory = src.source_memory().cloned();
        }
        if self.table.is_none() {
            self.table = private::Sealed::source_link(src);
        }
        Ok(())
    }

    /// Clones from any io_uring fd of this process. The ring then has table
    /// entries but no pool it knows of, so fixed I/O on it is refused
    /// ([`Error::ForeignBuffer`]); for tests of kernel semantics.
    ///
    /// # Errors
    /// As [`Ring::clone_buffers_from`].
    pub fn clone_buffers_from_fd(&mut self, src: BorrowedFd<'_>, source_len: u16, range: CloneRange) -> Result<()> {
        self.home.check()?;
        self.clone_raw(src.as_raw_fd(), source_len, range)?;
        self.opaque = true;
        Ok(())
    }

    fn clone_raw(&mut self, fd: RawFd, source_len: u16, range: CloneRange) -> Result<()> {
        let flags = if range.replace { CloneBuffersFlags::DST_REPLACE } else { CloneBuffersFlags::empty() };
        let req = CloneRequest {
            src_off: range.src_off,
            dst_off: range.dst_off,
            nr: range.nr,
            source_len: u32::from(source_len),
            replace: range.replace,
        };
        self.raw
            .io_uring()
            .submitter()
            .register_buffers_clone_offset(fd, range.src_off, range.dst_off, range.nr, flags)
            .map_err(|e| clone_error(e, req))
    }

    /// Unregisters this ring's table (unpinning synchronously what only this
    /// ring held).
    ///
    /// # Errors
    /// [`Error::Io`] (ENXIO when there is no table).
    pub fn unregister_buffers(&mut self) -> Result<()> {
        self.home.check()?;
        self.raw.io_uring().submitter().unregister_buffers().map_err(|e| Error::os("unregister", e))?;
        self.map.clear();
        self.table_size = 0;
        self.opaque = false;
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

    /// What this ring does with operations of `kind` whose buffers lie in
    /// one segment: the opcode name (`"READV_FIXED"`, `"READV"`, or
    /// `"READ_FIXED"` per buffer where the kernel lacks READV_FIXED).
    pub fn opcode_for(&self, kind: crate::OpKind) -> &'static str {
        submit::opcode_for(self, kind)
    }

    /// Counters of what this ring did.
    pub fn stats(&self) -> RingStats {
        self.stats
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
        if self.unregister_on_drop && (self.table_size > 0 || self.opaque) {
            let _ = self.raw.io_uring().submitter().unregister_buffers();
        }
    }
}

impl AsFd for Ring {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.raw.fd()
    }
}
