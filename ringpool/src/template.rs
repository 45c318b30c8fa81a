//! The template ring: the one registration of the pool, what rings clone
//! from, and the state rings follow to pick up growth.

use std::ops::Range;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use io_uring::types::CloneBuffersFlags;
use io_uring::IoUring;

use crate::errno::{clone_error, register_error, setup_error, CloneRequest};
use crate::error::Result;
use crate::home::Home;
use crate::link::TableLink;
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
    /// Filled slots and generation, shared with the rings.
    pub(crate) link: std::sync::Arc<TableLink>,
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
        let link = std::sync::Arc::new(TableLink::new(entries));
        memory.add_link(&link);
        let t =
            Template { ring, memory: memory.clone(), capacity, link, path, refresh, home: Home::here("BufferTable") };
        Ok((t, took))
    }

    pub(crate) fn fd(&self) -> RawFd {
        self.ring.as_raw_fd()
    }

    /// Slots filled now.
    pub(crate) fn entries(&self) -> u16 {
        self.link.entries()
    }

    /// How many times the table grew or shrank.
    pub(crate) fn generation(&self) -> u64 {
        self.link.generation()
    }

    /// The shrink's unpublish step: empties slots `range` of the template
    /// (the kernel drops its references to their pages), then publishes the
    /// smaller entry count and a new generation (returned). Rings drop the
    /// entries when they catch up.
    pub(crate) fn unpublish(&self, range: Range<u16>) -> Result<u64> {
        if self.path != TablePath::Unregistered {
            let n = u32::from(range.end - range.start);
            if let Err(e) = sys::uring::clear_slots(&self.ring, u32::from(range.start), n) {
                // Part of the range may be holes now: register it all again,
                // so that the template is as before (the shrink is called off).
                let iovs = self.memory.shared.iovs(range.start, range.end);
                if let Err(e2) = sys::uring::update_iovs(&self.ring, u32::from(range.start), &iovs) {
                    tracing::error!("a failed shrink could not restore template slots {range:?}: {e2}");
                }
                return Err(crate::error::Error::os("clear table slots", e));
            }
        }
        Ok(self.link.advance(range.start))
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
        Ok(self.link.advance(range.end))
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

/// Times registering 1 GiB of 2 MiB pages into a table that holds 1 GiB
/// already, directly (a buffers update) and on a helper ring cloned in
/// (DST_REPLACE): the best of two alternating tries of each. For the
/// populated-table quirk guard; needs 1024 free 2 MiB pages.
pub(crate) fn time_populated_registration() -> std::result::Result<(Duration, Duration), String> {
    use crate::memory::MemoryOptions;
    use crate::types::{HugePages, PageKind, PagePolicy};
    if !Features::get().clone_ranges {
        return Err("no ranged clone (before Linux 6.13): growth registers directly".into());
    }
    let half: u64 = 1 << 30;
    let need = 2 * half / PageKind::Huge2M.bytes();
    let free = HugePages::read(PageKind::Huge2M).available();
    if free < need {
        return Err(format!("needs {need} free 2 MiB huge pages, {free} are free (ringpool probe --reserve)"));
    }
    let opts = MemoryOptions::new().page(PagePolicy::Huge2M).segment_size(half);
    let mem = IoMemory::map_with(2 * half, &opts).map_err(|e| e.to_string())?;
    mem.prefault(|_| {}).map_err(|e| e.to_string())?;
    let (first, second) = (mem.shared.iovs(0, 1), mem.shared.iovs(1, 2));
    let populated = || -> std::result::Result<IoUring, String> {
        let ring = IoUring::new(2).map_err(|e| e.to_string())?;
        sys::uring::register_sparse(&ring, 2).map_err(|e| e.to_string())?;
        sys::uring::update_iovs(&ring, 0, &first).map_err(|e| e.to_string())?;
        Ok(ring)
    };
    let (mut direct, mut helper) = (Duration::MAX, Duration::MAX);
    for _ in 0..2 {
        let ring = populated()?;
        let t = Instant::now();
        sys::uring::update_iovs(&ring, 1, &second).map_err(|e| e.to_string())?;
        direct = direct.min(t.elapsed());
        let _ = ring.submitter().unregister_buffers();
        let ring = populated()?;
        let t = Instant::now();
        let h = IoUring::new(2).map_err(|e| e.to_string())?;
        sys::uring::register_iovs(&h, &second).map_err(|e| e.to_string())?;
        ring.submitter()
            .register_buffers_clone_offset(h.as_raw_fd(), 0, 1, 1, CloneBuffersFlags::DST_REPLACE)
            .map_err(|e| e.to_string())?;
        let _ = h.submitter().unregister_buffers();
        helper = helper.min(t.elapsed());
        let _ = ring.submitter().unregister_buffers();
    }
    Ok((direct, helper))
}
