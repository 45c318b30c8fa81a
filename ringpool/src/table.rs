//! `BufferTable`: the one registration of the pool, and rings that get it by clone.

use std::os::fd::RawFd;
use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::memory::IoMemory;
use crate::probe::Features;
use crate::ring::{private, Ring, RingOptions, TableSource};
use crate::stats::{GrowReport, ShrinkReport};
use crate::template::Template;
use crate::types::{Bytes, Refresh, Sharing, TablePath, MAX_SEGMENTS};

/// Options of [`BufferTable::register_with`].
#[derive(Debug, Clone, Default)]
pub struct TableOptions {
    /// How rings get the table.
    pub sharing: Sharing,
    /// Register only the first `n` segments (benchmarks of a prefix of one
    /// mapping). Leases in later segments cannot be used with fixed I/O on
    /// these rings.
    pub segments: Option<u16>,
    /// Room to grow the pool up to this many bytes in all
    /// ([`BufferTable::grow`]): the table reserves a slot for each segment
    /// of it (at most 16384); default: just the pool's segments. With room
    /// to grow, the template's table is registered sparse and filled with a
    /// buffers update.
    pub capacity: Option<u64>,
    /// How rings pick up growth (default: ranged clone where it works).
    pub refresh: Refresh,
}

impl TableOptions {
    /// Default options.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets how rings get the table.
    pub fn sharing(mut self, sharing: Sharing) -> Self {
        self.sharing = sharing;
        self
    }
    /// Sets the room to grow to, in bytes.
    pub fn capacity(mut self, bytes: u64) -> Self {
        self.capacity = Some(bytes);
        self
    }
    /// Sets how rings pick up growth.
    pub fn refresh(mut self, refresh: Refresh) -> Self {
        self.refresh = refresh;
        self
    }
    /// Registers only the first `n` segments.
    pub fn segments(mut self, n: u16) -> Self {
        self.segments = Some(n);
        self
    }

    /// Table slots for the capacity asked for over `memory`: at least the
    /// `entries` registered.
    ///
    /// # Errors
    /// [`Error::TooManySegments`] past 16384 slots.
    pub(crate) fn slots(&self, memory: &IoMemory, entries: u16) -> Result<u16> {
        let Some(bytes) = self.capacity else { return Ok(entries) };
        let slots = bytes.div_ceil(memory.segment_size());
        if slots > MAX_SEGMENTS {
            return Err(Error::TooManySegments {
                size: Bytes(bytes),
                segment: Bytes(memory.segment_size()),
                segments: slots,
            });
        }
        // At most 16384 (checked above).
        Ok((slots as u16).max(entries))
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
/// use ringpool::types::PagePolicy;
/// use ringpool::{BufferTable, IoMemory};
/// let mem = IoMemory::map(4 << 30, PagePolicy::Auto)?;
/// mem.prefault(|_| {})?;
/// let table = BufferTable::register(&mem)?;
/// println!("registered {} segments in {:?}", table.len(), table.register_time());
/// let ring = table.ring()?; // on this thread: table by clone
/// println!("{:?} in {:?}", ring.setup().path, ring.setup().table_time);
/// # Ok::<(), ringpool::Error>(())
/// ```
///
/// Cloning the handle shares the table (one registration).
#[derive(Clone)]
pub struct BufferTable {
    pub(crate) template: Arc<Template>,
    fallback: Option<String>,
    register_time: Duration,
}

impl std::fmt::Debug for BufferTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufferTable")
            .field("entries", &self.template.entries())
            .field("capacity", &self.template.capacity)
            .field("path", &self.template.path)
            .field("register_time", &self.register_time)
            .finish()
    }
}

/// The table path a sharing policy gives on this kernel, and why it fell
/// back, if it did.
fn path_for(sharing: Sharing, features: &Features) -> Result<(TablePath, Option<String>)> {
    Ok(match sharing {
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
    })
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
    /// prefix longer than the pool; [`Error::TooManySegments`] for a
    /// capacity past 16384 segments.
    pub fn register_with(memory: &IoMemory, opts: &TableOptions) -> Result<BufferTable> {
        let all = memory.segment_count();
        let entries = opts.segments.unwrap_or(all);
        if entries == 0 || entries > all {
            return Err(Error::invalid("segment prefix", entries, format!("the pool has {all} segments")));
        }
        let capacity = opts.slots(memory, entries)?;
        let (path, fallback) = path_for(opts.sharing, Features::get())?;
        if let Some(why) = &fallback {
            tracing::warn!("{why}");
        }
        let (template, register_time) = Template::new(memory, entries, capacity, path, opts.refresh)?;
        tracing::debug!(entries, capacity, ?register_time, ?path, "buffer table registered");
        Ok(BufferTable { template: Arc::new(template), fallback, register_time })
    }

    /// Entries in the table (segments registered).
    pub fn len(&self) -> u16 {
        self.template.entries()
    }

    /// Always `false`: a table has at least one entry.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Slots of the table, filled or free for growth.
    pub fn capacity(&self) -> u16 {
        self.template.capacity
    }

    /// How many times the table grew.
    pub fn generation(&self) -> u64 {
        self.template.generation()
    }

    /// How long creating the template ring and registering took.
    pub fn register_time(&self) -> Duration {
        self.register_time
    }

    /// The pool.
    pub fn memory(&self) -> &IoMemory {
        &self.template.memory
    }

    /// How rings made by [`BufferTable::ring`] get the table.
    pub fn path(&self) -> TablePath {
        self.template.path
    }

    /// Why [`Sharing::Auto`] did not clone, if it did not.
    pub fn fallback_reason(&self) -> Option<&str> {
        self.fallback.as_deref()
    }

    /// The template ring's fd (the clone source).
    pub fn template_fd(&self) -> RawFd {
        self.template.fd()
    }

    /// Whether rings pick up growth with a ranged clone (else a whole one).
    pub fn ranged_refresh(&self) -> bool {
        self.template.ranged_refresh()
    }

    /// Maps `bytes` more memory under the pool's page policy, prefaults it,
    /// registers it into free slots of the template, publishes a new table
    /// generation, and only then makes it leasable. Rings pick the new slots
    /// up before their next operation that needs them
    /// ([`Ring::refresh_table`] does it at once). On failure the pool is as
    /// before.
    ///
    /// # Errors
    /// [`Error::CapacityExhausted`] past the capacity; memory errors as
    /// [`IoMemory::map_with`]; registration errors.
    pub fn grow(&self, bytes: u64) -> Result<GrowReport> {
        let t = &self.template;
        t.home.check()?;
        let whole = |segments: u16| {
            if t.entries() != segments {
                return Err(Error::invalid(
                    "growth",
                    Bytes(bytes),
                    "the table registers a prefix of the pool; grow only a table of the whole pool",
                ));
            }
            Ok(())
        };
        let mut report = t.memory.grow_with(bytes, u64::from(t.capacity), whole, |range| t.publish(range))?;
        report.handed_rings = t.handed_rings_reached();
        Ok(report)
    }

    /// Bytes of the pool registered in the table (its filled slots).
    pub fn registered_bytes(&self) -> u64 {
        let t = &self.template;
        if t.path == TablePath::Unregistered {
            return 0;
        }
        t.memory.segments().iter().take(usize::from(t.entries())).map(|s| s.len).sum()
    }

    /// Releases the pool's trailing segments holding at least `bytes`
    /// (whole segments), while I/O runs: they stop leasing at once, the
    /// shrink waits up to `timeout` for their leases to come back (else
    /// [`Error::ShrinkTimeout`] and the pool is as before), empties their
    /// slots in the template and publishes a new table generation, then
    /// unmaps them. Each ring drops its references to their pages before its
    /// next fixed operation ([`Ring::refresh_table`] at once); VmPin falls
    /// when the last ring has. The slots are free for a later growth.
    ///
    /// # Errors
    /// As [`IoMemory::shrink`]; [`Error::InvalidArgument`] for a table of
    /// a prefix of the pool.
    pub fn shrink(&self, bytes: u64, timeout: Duration) -> Result<ShrinkReport> {
        self.shrink_then(bytes, timeout, |_, _| {})
    }

    /// [`BufferTable::shrink`], calling `rings_follow(generation,
    /// deadline)` once the template dropped the segments and published
    /// `generation`: where a pool makes its rings catch up before the
    /// memory is unmapped.
    pub(crate) fn shrink_then(
        &self,
        bytes: u64,
        timeout: Duration,
        rings_follow: impl FnOnce(u64, std::time::Instant),
    ) -> Result<ShrinkReport> {
        let t = &self.template;
        t.home.check()?;
        if t.entries() != t.memory.segment_count() {
            return Err(Error::invalid(
                "shrink",
                Bytes(bytes),
                "the table registers a prefix of the pool; shrink only a table of the whole pool",
            ));
        }
        let unfollowed = t.unfollowed.load(std::sync::atomic::Ordering::Relaxed);
        if unfollowed > 0 {
            return Err(Error::invalid(
                "shrink",
                Bytes(bytes),
                format!(
                    "{unfollowed} ring(s) were handed to other processes without follow_growth: this process cannot \
                     take the segments out of them (hand rings with HandoverOptions::follow_growth to shrink a \
                     shared pool)"
                ),
            ));
        }
        let report = t.memory.shrink_with(bytes, timeout, Some(&t.link), |range, deadline| {
            let generation = t.unpublish(range)?;
            rings_follow(generation, deadline);
            Ok(generation)
        })?;
        // The handed rings lost the slots in unpublish; now their
        // processes' views let the memory go.
        t.followers.shrunk(report.segments.start);
        Ok(report)
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
        let t = &self.template;
        // A forked child cannot clone its parent's table (the kernel says
        // EINVAL): say what happened.
        t.home.check()?;
        let path = match opts.sharing {
            None | Some(Sharing::Auto) => t.path,
            Some(Sharing::Clone) if t.path == TablePath::Cloned => TablePath::Cloned,
            Some(Sharing::Clone) => {
                let (path, _) = path_for(Sharing::Clone, Features::get())?;
                if t.path == TablePath::Unregistered {
                    return Err(Error::EmptySource);
                }
                path
            }
            Some(Sharing::RegisterEach) => TablePath::Registered,
            Some(Sharing::Unregistered) => TablePath::Unregistered,
        };
        Ring::with_table(opts, t, path, self.fallback.clone())
    }
}

#[allow(private_interfaces)]
impl private::Sealed for BufferTable {
    fn source_link(&self) -> Option<Weak<Template>> {
        Some(Arc::downgrade(&self.template))
    }
    fn source_segment(&self, slot: u16) -> Option<u16> {
        self.template.segment_at(slot)
    }
    fn source_prefix(&self) -> Option<u16> {
        Some(if self.template.path == TablePath::Unregistered { 0 } else { self.template.entries() })
    }
    fn source_sync(&self) -> Option<(Arc<crate::link::TableLink>, u64)> {
        Some((self.template.link.clone(), self.template.link.generation()))
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
        self.template.source_len()
    }
}
