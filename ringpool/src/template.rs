//! The template ring: the one registration of the pool, what rings clone
//! from, and the state rings follow to pick up growth.

use std::ops::Range;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use io_uring::types::CloneBuffersFlags;
use io_uring::IoUring;

use crate::errno::{clone_error, register_error, setup_error, CloneRequest};
use crate::error::Result;
use crate::home::Home;
use crate::memory::IoMemory;
use crate::probe::{DstReplace, Features};
use crate::sys;
use crate::types::{Refresh, TablePath};

/// The template ring and what rings need to catch up with it.
pub(crate) struct Template {
    // Drop order: the template ring closes before the memory handle goes.
    ring: IoUring,
    pub(crate) memory: IoMemory,
    /// Slots of the kernel table (entries + room to grow).
    pub(crate) capacity: u16,
    /// Slots filled: segments `[0, entries)`.
    entries: AtomicU16,
    generation: AtomicU64,
    pub(crate) path: TablePath,
    pub(crate) refresh: Refresh,
    /// The process that registered it (a forked child shares the ring fd:
    /// it must not unregister the parent's table).
    pub(crate) home: Home,
}

impl Template {
    /// A template ring with segments `[0, entries)` of `memory` registered
    /// (nothing for [`TablePath::Unregistered`]) in a table of `capacity`
    /// slots; returns it and how long setup and registration took.
    pub(crate) fn new(
        memory: &IoMemory,
        entries: u16,
        capacity: u16,
        path: TablePath,
        refresh: Refresh,
    ) -> Result<(Template, Duration)> {
        let start = Instant::now();
        let ring = IoUring::new(4).map_err(setup_error)?;
        if path != TablePath::Unregistered {
            register_table(&ring, memory, entries, capacity)?;
        }
        let took = start.elapsed();
        let t = Template {
            ring,
            memory: memory.clone(),
            capacity,
            entries: AtomicU16::new(entries),
            generation: AtomicU64::new(0),
            path,
            refresh,
            home: Home::here("BufferTable"),
        };
        Ok((t, took))
    }

    pub(crate) fn fd(&self) -> RawFd {
        self.ring.as_raw_fd()
    }

    /// Slots filled now (Acquire: the slots are registered before this moves).
    pub(crate) fn entries(&self) -> u16 {
        self.entries.load(Ordering::Acquire)
    }

    /// How many times the table grew.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Slots a ring can clone: the kernel table's size (0 unregistered).
    pub(crate) fn source_len(&self) -> u16 {
        if self.path == TablePath::Unregistered {
            0
        } else {
            self.capacity
        }
    }

    /// The segment slot `slot` holds (the template maps slot i to segment i).
    pub(crate) fn segment_at(&self, slot: u16) -> Option<u16> {
        (self.path != TablePath::Unregistered && slot < self.entries()).then_some(slot)
    }

    /// Whether rings refresh with a ranged DST_REPLACE clone.
    pub(crate) fn ranged_refresh(&self) -> bool {
        match self.refresh {
            Refresh::Ranged => true,
            Refresh::Whole => false,
            Refresh::Auto => {
                let f = Features::get();
                f.clone_ranges && f.dst_replace == DstReplace::Works
            }
        }
    }

    /// The growth's publish step: registers the new segments `range` into
    /// the template's free slots, then publishes the new entry count and
    /// generation (returned). Rings pick them up from then on.
    pub(crate) fn publish(&self, range: Range<u16>) -> Result<u64> {
        if self.path != TablePath::Unregistered {
            let iovs = self.memory.shared.iovs(range.start, range.end);
            if self.ranged_refresh() {
                self.register_via_helper(&iovs, range.start)?;
            } else {
                registered("grow register", &iovs, sys::uring::update_iovs(&self.ring, u32::from(range.start), &iovs))?;
            }
        }
        self.entries.store(range.end, Ordering::Release);
        Ok(self.generation.fetch_add(1, Ordering::AcqRel) + 1)
    }

    /// Registers `iovs` on a fresh helper ring, then clones them into the
    /// template's slots from `first` on. Registering straight into the
    /// populated template costs more and more as it grows: for huge pages
    /// the kernel checks every new page against every buffer already in the
    /// table (head-page accounting; 39.5 ms against 6-8 ms for 4 GiB here).
    fn register_via_helper(&self, iovs: &[sys::uring::Iov], first: u16) -> Result<()> {
        let helper = IoUring::new(2).map_err(setup_error)?;
        registered("grow register", iovs, sys::uring::register_iovs(&helper, iovs))?;
        // At most 16384 entries.
        let n = iovs.len() as u32;
        let req = CloneRequest { src_off: 0, dst_off: u32::from(first), nr: n, source_len: n, replace: true };
        let r = self
            .ring
            .submitter()
            .register_buffers_clone_offset(helper.as_raw_fd(), 0, u32::from(first), n, CloneBuffersFlags::DST_REPLACE)
            .map_err(|e| clone_error(e, req));
        // Unpin the helper's references now, on this thread.
        let _ = helper.submitter().unregister_buffers();
        r
    }
}

impl Drop for Template {
    fn drop(&mut self) {
        // Unregister before the template ring closes, so that pages only it
        // held are unpinned now, on this thread, not by a background worker
        // that would run into other rings' work.
        if self.path != TablePath::Unregistered && self.home.is_here() {
            let _ = self.ring.submitter().unregister_buffers();
        }
    }
}

/// Registers segments `[0, entries)` of `memory` on `ring`: in one call, or,
/// with room to grow, as a sparse table of `capacity` slots filled by one
/// update.
pub(crate) fn register_table(ring: &IoUring, memory: &IoMemory, entries: u16, capacity: u16) -> Result<()> {
    let iovs = memory.shared.iovs(0, entries);
    let r = if capacity > entries {
        sys::uring::register_sparse(ring, u32::from(capacity)).and_then(|_| sys::uring::update_iovs(ring, 0, &iovs))
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
