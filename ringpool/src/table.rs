//! `BufferTable`: the one registration of the pool, and rings that get it by clone.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use io_uring::IoUring;

use crate::error::{register_error, Error, Result};
use crate::memory::IoMemory;
use crate::probe::Features;
use crate::ring::{Ring, RingOptions, TablePath};
use crate::sys;
use crate::units::Bytes;

/// How rings get the pool's buffer table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sharing {
    /// Clone where the kernel can (6.12+), else register on each ring; the
    /// path taken is reported.
    #[default]
    Auto,
    /// Clone from the template ring; fails on kernels without
    /// `IORING_REGISTER_CLONE_BUFFERS`.
    Clone,
    /// Every ring registers (pins) the pool itself.
    RegisterEach,
    /// No table: plain READ/WRITE on pool memory (the kernel pins per I/O).
    Unregistered,
}

impl std::str::FromStr for Sharing {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Sharing::Auto),
            "clone" => Ok(Sharing::Clone),
            "register-each" | "register_each" | "registereach" => Ok(Sharing::RegisterEach),
            "unregistered" | "none" => Ok(Sharing::Unregistered),
            _ => Err(format!("unknown sharing {s:?}: expected auto, clone, register-each or unregistered")),
        }
    }
}

/// Options of [`BufferTable::register_with`].
#[derive(Debug, Clone, Default)]
pub struct TableOptions {
    /// How rings get the table.
    pub sharing: Sharing,
    /// Register only the first `n` segments (benchmarks of a prefix of one
    /// mapping). Leases in later segments cannot be used with fixed I/O on
    /// these rings.
    pub segments: Option<u16>,
    /// Table slots to reserve for growth ([`BufferTable::grow`]), at most
    /// 16384; default: just the pool's segments. With room to grow, the
    /// template's table is registered sparse and filled with a buffers
    /// update.
    pub capacity: Option<u16>,
    /// How rings pick up growth (default: ranged clone where it works).
    pub refresh: Refresh,
}

/// How a ring picks up segments added to the template after it was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Refresh {
    /// A ranged DST_REPLACE clone of just the new slots where the kernel has
    /// it (6.13+) and the start-up self-test passed; else [`Refresh::Whole`].
    #[default]
    Auto,
    /// Always the ranged DST_REPLACE clone.
    Ranged,
    /// Unregister, then clone the whole table again (any 6.12+ kernel).
    Whole,
}

/// What [`BufferTable::grow`] did and how long each step took.
#[derive(Debug, Clone)]
pub struct GrowReport {
    /// The new segments (table slots).
    pub segments: std::ops::Range<u16>,
    /// Bytes added.
    pub bytes: u64,
    /// Table generation now published.
    pub generation: u64,
    /// Mapping the memory.
    pub map_time: Duration,
    /// Faulting it in.
    pub prefault_time: Duration,
    /// Registering it into the template's free slots.
    pub register_time: Duration,
    /// When registration began (rings can pick the growth up from then on).
    pub register_started: Instant,
}

/// The template and what rings need to catch up with it.
pub(crate) struct TableShared {
    // Drop order: the template ring closes before the memory handle goes.
    template: IoUring,
    pub(crate) memory: IoMemory,
    /// Slots of the kernel table (entries + room to grow).
    pub(crate) capacity: u16,
    /// Slots filled: segments `[0, entries)`.
    entries: AtomicU16,
    generation: AtomicU64,
    pub(crate) path: TablePath,
    pub(crate) refresh: Refresh,
    growing: Mutex<()>,
}

impl TableShared {
    pub(crate) fn template_fd(&self) -> RawFd {
        self.template.as_raw_fd()
    }

    /// Slots filled now (Acquire: the slots are registered before this moves).
    pub(crate) fn entries(&self) -> u16 {
        self.entries.load(Ordering::Acquire)
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Whether rings refresh with a ranged DST_REPLACE clone.
    pub(crate) fn ranged_refresh(&self) -> bool {
        match self.refresh {
            Refresh::Ranged => true,
            Refresh::Whole => false,
            Refresh::Auto => {
                let f = Features::get();
                f.clone_ranges && f.dst_replace == crate::probe::DstReplace::Works
            }
        }
    }
}

impl Drop for TableShared {
    fn drop(&mut self) {
        // Unregister before the template ring closes, so that pages only it
        // held are unpinned now, on this thread, not by a background worker
        // that would run into other rings' work.
        if self.path != TablePath::Unregistered {
            let _ = self.template.submitter().unregister_buffers();
        }
    }
}

/// The pool's buffer table, registered once on a template ring.
///
/// The template ring is plain (never SINGLE_ISSUER), so any thread may clone
/// from it. [`BufferTable::ring`] creates, for the calling thread, a
/// SINGLE_ISSUER | DEFER_TASKRUN ring that gets the whole table by clone in
/// microseconds (or registers it, where clone is missing or not wanted).
///
/// Rings keep the memory alive: dropping the table (and its template ring)
/// leaves every ring fully usable. With room to grow
/// ([`TableOptions::capacity`]), [`BufferTable::grow`] adds memory that
/// every ring picks up with a ranged clone of just the new slots.
///
/// ```no_run
/// use ringpool::{BufferTable, IoMemory, PagePolicy};
/// let mem = IoMemory::map(4 << 30, PagePolicy::Auto)?;
/// mem.prefault(|_| {})?;
/// let table = BufferTable::register(&mem)?;
/// println!("registered {} segments in {:?}", table.len(), table.register_time());
/// let ring = table.ring()?; // on this thread: table by clone
/// println!("{:?} in {:?}", ring.setup().path, ring.setup().table_time);
/// # Ok::<(), ringpool::Error>(())
/// ```
pub struct BufferTable {
    pub(crate) shared: Arc<TableShared>,
    fallback: Option<String>,
    register_time: Duration,
}

impl std::fmt::Debug for BufferTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufferTable")
            .field("entries", &self.shared.entries())
            .field("capacity", &self.shared.capacity)
            .field("path", &self.shared.path)
            .field("register_time", &self.register_time)
            .finish()
    }
}

/// Turns an io_uring_setup error into [`Error::IoUringUnavailable`] where it
/// means io_uring cannot be used at all.
pub(crate) fn setup_error(e: std::io::Error) -> Error {
    match e.raw_os_error() {
        Some(libc::ENOSYS) | Some(libc::EPERM) => {
            Error::IoUringUnavailable { reason: crate::probe::unavailable_reason(&e), source: e }
        }
        _ => Error::os("io_uring_setup", e),
    }
}

/// Registers segments `[0, entries)` of `memory` on `ring`: in one call, or,
/// with room to grow, as a sparse table of `capacity` slots filled by one
/// update.
pub(crate) fn register_table(ring: &IoUring, memory: &IoMemory, entries: u16, capacity: u16) -> Result<()> {
    let iovs = memory.shared.iovs(0, entries);
    let r = if capacity > entries {
        sys::uring::register_sparse(ring, capacity as u32).and_then(|_| sys::uring::update_iovs(ring, 0, &iovs))
    } else {
        sys::uring::register_iovs(ring, &iovs)
    };
    registered("register", &iovs, r)
}

/// Maps the result of registering `iovs` to ringpool's error (whose memlock
/// message names the bytes the registration pins).
pub(crate) fn registered(op: &'static str, iovs: &[sys::uring::Iov], r: std::io::Result<()>) -> Result<()> {
    r.map_err(|e| register_error(op, e, iovs.iter().map(|i| i.len() as u64).sum()))
}

impl BufferTable {
    /// Registers every segment of `memory` on a new template ring, with
    /// [`Sharing::Auto`].
    ///
    /// # Errors
    /// See [`BufferTable::register_with`].
    pub fn register(memory: &IoMemory) -> Result<BufferTable> {
        Self::register_with(memory, &TableOptions::default())
    }

    /// Registers the segments of `memory` on a new template ring in one call
    /// and records how long that took.
    ///
    /// # Errors
    /// [`Error::IoUringUnavailable`]; [`Error::MemlockLimit`] naming the limit
    /// and the size; [`Error::BadAddress`]; [`Error::KernelTooOld`] for
    /// [`Sharing::Clone`] before Linux 6.12; [`Error::InvalidArgument`] for a
    /// prefix longer than the pool or a capacity past 16384.
    pub fn register_with(memory: &IoMemory, opts: &TableOptions) -> Result<BufferTable> {
        let features = Features::get();
        let all = memory.segment_count();
        let entries = opts.segments.unwrap_or(all);
        if entries == 0 || entries > all {
            return Err(Error::invalid("segment prefix", entries, format!("the pool has {all} segments")));
        }
        let capacity = opts.capacity.unwrap_or(entries).max(entries);
        if capacity as u64 > crate::memory::MAX_SEGMENTS {
            return Err(Error::invalid("table capacity", capacity, "a table holds at most 16384 entries"));
        }
        let (path, fallback) = match opts.sharing {
            Sharing::Unregistered => (TablePath::Unregistered, None),
            Sharing::RegisterEach => (TablePath::Registered, None),
            Sharing::Clone if !features.clone_buffers => {
                return Err(Error::KernelTooOld {
                    feature: "IORING_REGISTER_CLONE_BUFFERS",
                    needed: "6.12",
                    kernel: features.kernel.clone(),
                })
            }
            Sharing::Clone => (TablePath::Cloned, None),
            Sharing::Auto if features.clone_buffers => (TablePath::Cloned, None),
            Sharing::Auto => (
                TablePath::Registered,
                Some(format!(
                    "kernel {} has no IORING_REGISTER_CLONE_BUFFERS (6.12+): each ring registers the pool",
                    features.kernel
                )),
            ),
        };
        if let Some(why) = &fallback {
            tracing::warn!("{why}");
        }
        let start = Instant::now();
        let template = IoUring::new(4).map_err(setup_error)?;
        if path != TablePath::Unregistered {
            register_table(&template, memory, entries, capacity)?;
        }
        let register_time = start.elapsed();
        tracing::debug!(entries, capacity, ?register_time, ?path, "buffer table registered");
        Ok(BufferTable {
            shared: Arc::new(TableShared {
                template,
                memory: memory.clone(),
                capacity,
                entries: AtomicU16::new(entries),
                generation: AtomicU64::new(0),
                path,
                refresh: opts.refresh,
                growing: Mutex::new(()),
            }),
            fallback,
            register_time,
        })
    }

    /// Entries in the table (segments registered).
    pub fn len(&self) -> u16 {
        self.shared.entries()
    }

    /// Always `false`: a table has at least one entry.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Slots of the table, filled or free for growth.
    pub fn capacity(&self) -> u16 {
        self.shared.capacity
    }

    /// How many times the table grew.
    pub fn generation(&self) -> u64 {
        self.shared.generation()
    }

    /// How long creating the template ring and registering took.
    pub fn register_time(&self) -> Duration {
        self.register_time
    }

    /// The pool.
    pub fn memory(&self) -> &IoMemory {
        &self.shared.memory
    }

    /// How rings made by [`BufferTable::ring`] get the table.
    pub fn path(&self) -> TablePath {
        self.shared.path
    }

    /// Why [`Sharing::Auto`] did not clone, if it did not.
    pub fn fallback_reason(&self) -> Option<&str> {
        self.fallback.as_deref()
    }

    /// The template ring's fd (the clone source).
    pub fn template_fd(&self) -> RawFd {
        self.shared.template_fd()
    }

    /// Whether rings pick up growth with a ranged clone (else a whole one).
    pub fn ranged_refresh(&self) -> bool {
        self.shared.ranged_refresh()
    }

    /// Maps `bytes` more memory under the pool's page policy, prefaults it,
    /// registers it into free slots of the template (one buffers update),
    /// publishes a new table generation, and only then makes it leasable.
    /// Rings pick the new slots up before their next operation that needs
    /// them ([`Ring::refresh_table`] does it at once).
    ///
    /// # Errors
    /// [`Error::CapacityExhausted`] past the capacity; memory errors as
    /// [`IoMemory::map_with`]; registration errors.
    pub fn grow(&self, bytes: u64) -> Result<GrowReport> {
        let sh = &self.shared;
        let _g = sh.growing.lock().unwrap_or_else(|p| p.into_inner());
        let per = sh.memory.segment_size();
        let needed = bytes.div_ceil(per).max(1);
        let entries = sh.entries();
        let all = sh.memory.segment_count();
        if entries != all {
            return Err(Error::invalid(
                "growth",
                Bytes(bytes),
                "the table registers a prefix of the pool; grow only a table of the whole pool",
            ));
        }
        if entries as u64 + needed > sh.capacity as u64 {
            return Err(Error::CapacityExhausted {
                capacity: sh.capacity,
                used: entries,
                needed: needed as u16,
                bytes: Bytes(bytes),
            });
        }
        let t = Instant::now();
        let range = sh.memory.extend(bytes)?;
        let map_time = t.elapsed();
        let prefault_time = sh.memory.prefault_segments(range.clone(), |_| {})?;
        let register_started = Instant::now();
        if sh.path != TablePath::Unregistered {
            let iovs = sh.memory.shared.iovs(range.start, range.end);
            if sh.ranged_refresh() {
                // Register on a fresh helper ring, then clone into the
                // template's free slots. Registering straight into the
                // populated template costs more and more as it grows: for
                // huge pages the kernel checks every new page against every
                // buffer already in the table (head-page accounting).
                let helper = IoUring::new(2).map_err(setup_error)?;
                registered("grow register", &iovs, sys::uring::register_iovs(&helper, &iovs))?;
                let n = range.end - range.start;
                let req = crate::error::CloneRequest {
                    src_off: 0,
                    dst_off: range.start as u32,
                    nr: n as u32,
                    source_len: n as u32,
                    replace: true,
                };
                sh.template
                    .submitter()
                    .register_buffers_clone_offset(
                        helper.as_raw_fd(),
                        0,
                        range.start as u32,
                        n as u32,
                        io_uring::types::CloneBuffersFlags::DST_REPLACE,
                    )
                    .map_err(|e| crate::error::clone_error(e, req))?;
                let _ = helper.submitter().unregister_buffers();
            } else {
                registered("grow register", &iovs, sys::uring::update_iovs(&sh.template, range.start as u32, &iovs))?;
            }
        }
        let register_time = register_started.elapsed();
        sh.entries.store(range.end, Ordering::Release);
        let generation = sh.generation.fetch_add(1, Ordering::AcqRel) + 1;
        // Only now can a lease of the new memory exist: any ring that meets
        // one finds the slots in the template.
        sh.memory.make_leasable(range.clone());
        let added: u64 = sh.memory.segments()[range.start as usize..range.end as usize].iter().map(|s| s.len).sum();
        tracing::debug!(?range, generation, ?register_time, "table grew");
        Ok(GrowReport {
            segments: range,
            bytes: added,
            generation,
            map_time,
            prefault_time,
            register_time,
            register_started,
        })
    }

    /// A ring for the calling thread with the whole table, 128 entries deep.
    ///
    /// # Errors
    /// See [`BufferTable::ring_with`].
    pub fn ring(&self) -> Result<Ring> {
        self.ring_with(&RingOptions::default())
    }

    /// A ring for the calling thread (SINGLE_ISSUER | DEFER_TASKRUN) with the
    /// whole table, by clone or registration as the table's path says (or as
    /// `opts.sharing` overrides). [`Ring::setup`] says which path ran and how
    /// long each step took.
    ///
    /// # Errors
    /// [`Error::IoUringUnavailable`], errors of clone and register
    /// ([`Error::MemlockLimit`], ...), [`Error::InvalidArgument`] for a bad
    /// depth.
    pub fn ring_with(&self, opts: &RingOptions) -> Result<Ring> {
        let sh = &self.shared;
        let path = match opts.sharing {
            None | Some(Sharing::Auto) => sh.path,
            Some(Sharing::Clone) if sh.path == TablePath::Cloned => TablePath::Cloned,
            Some(Sharing::Clone) => {
                let f = Features::get();
                if !f.clone_buffers {
                    return Err(Error::KernelTooOld {
                        feature: "IORING_REGISTER_CLONE_BUFFERS",
                        needed: "6.12",
                        kernel: f.kernel.clone(),
                    });
                }
                if sh.path == TablePath::Unregistered {
                    return Err(Error::EmptySource);
                }
                TablePath::Cloned
            }
            Some(Sharing::RegisterEach) => TablePath::Registered,
            Some(Sharing::Unregistered) => TablePath::Unregistered,
        };
        let mut ring = Ring::build(opts)?;
        let start = Instant::now();
        ring.attach_table(sh, path)?;
        ring.finish_setup(path, start.elapsed(), self.fallback.clone());
        Ok(ring)
    }
}
