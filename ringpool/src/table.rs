//! `BufferTable`: the one registration of the pool, and rings that get it by clone.

use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use io_uring::IoUring;

use crate::error::{register_error, Error, Result};
use crate::memory::IoMemory;
use crate::probe::Features;
use crate::ring::{Ring, RingOptions, TablePath};
use crate::sys;

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
}

/// The pool's buffer table, registered once on a template ring.
///
/// The template ring is plain (never SINGLE_ISSUER), so any thread may clone
/// from it. [`BufferTable::ring`] creates, for the calling thread, a
/// SINGLE_ISSUER | DEFER_TASKRUN ring that gets the whole table by clone in
/// microseconds (or registers it, where clone is missing or not wanted).
///
/// Rings keep the memory alive: dropping the table (and its template ring)
/// leaves every ring fully usable.
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
    // Drop order: the template ring closes before the memory handle goes.
    template: IoUring,
    memory: IoMemory,
    entries: u16,
    path: TablePath,
    fallback: Option<String>,
    register_time: Duration,
}

impl std::fmt::Debug for BufferTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufferTable")
            .field("entries", &self.entries)
            .field("path", &self.path)
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
    /// prefix longer than the pool.
    pub fn register_with(memory: &IoMemory, opts: &TableOptions) -> Result<BufferTable> {
        let features = Features::get();
        let all = memory.segments().len() as u16;
        let entries = opts.segments.unwrap_or(all);
        if entries == 0 || entries > all {
            return Err(Error::invalid("segment prefix", entries, format!("the pool has {all} segments")));
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
            let ranges = segment_ranges(memory, entries);
            sys::uring::register_ranges(&template, &memory.shared.mapping, &ranges)
                .map_err(|e| register_error("register", e, ranges.iter().map(|r| r.1).sum()))?;
        }
        let register_time = start.elapsed();
        tracing::debug!(entries, ?register_time, ?path, "buffer table registered");
        Ok(BufferTable { template, memory: memory.clone(), entries, path, fallback, register_time })
    }

    /// Entries in the table (segments registered).
    pub fn len(&self) -> u16 {
        self.entries
    }

    /// Always `false`: a table has at least one entry.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// How long creating the template ring and registering took.
    pub fn register_time(&self) -> Duration {
        self.register_time
    }

    /// The pool.
    pub fn memory(&self) -> &IoMemory {
        &self.memory
    }

    /// How rings made by [`BufferTable::ring`] get the table.
    pub fn path(&self) -> TablePath {
        self.path
    }

    /// Why [`Sharing::Auto`] did not clone, if it did not.
    pub fn fallback_reason(&self) -> Option<&str> {
        self.fallback.as_deref()
    }

    /// The template ring's fd (the clone source).
    pub fn template_fd(&self) -> RawFd {
        self.template.as_raw_fd()
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
        let path = match opts.sharing {
            None | Some(Sharing::Auto) => self.path,
            Some(Sharing::Clone) if self.path == TablePath::Cloned => TablePath::Cloned,
            Some(Sharing::Clone) => {
                let f = Features::get();
                if !f.clone_buffers {
                    return Err(Error::KernelTooOld {
                        feature: "IORING_REGISTER_CLONE_BUFFERS",
                        needed: "6.12",
                        kernel: f.kernel.clone(),
                    });
                }
                if self.path == TablePath::Unregistered {
                    return Err(Error::EmptySource);
                }
                TablePath::Cloned
            }
            Some(Sharing::RegisterEach) => TablePath::Registered,
            Some(Sharing::Unregistered) => TablePath::Unregistered,
        };
        let mut ring = Ring::build(opts)?;
        let start = Instant::now();
        match path {
            TablePath::Cloned => ring.clone_table(self, crate::ring::CloneRange::all())?,
            TablePath::Registered => {
                let ranges = segment_ranges(&self.memory, self.entries);
                ring.register_ranges(&self.memory, &ranges)?;
            }
            TablePath::Unregistered | TablePath::Empty => ring.attach_memory(&self.memory),
        }
        ring.finish_setup(path, start.elapsed(), self.fallback.clone());
        Ok(ring)
    }
}

impl Drop for BufferTable {
    fn drop(&mut self) {
        // Unregister before the template ring closes, so that pages only it
        // held are unpinned now, on this thread, not by a background worker
        // that would run into other rings' work.
        if self.path != TablePath::Unregistered {
            let _ = self.template.submitter().unregister_buffers();
        }
    }
}

pub(crate) fn segment_ranges(memory: &IoMemory, entries: u16) -> Vec<(u64, u64)> {
    memory.segments()[..entries as usize].iter().map(|s| (s.offset, s.len)).collect()
}
