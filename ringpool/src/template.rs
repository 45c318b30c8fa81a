//! The template ring: the one registration of the pool, what rings clone
//! from, and the state rings follow to pick up growth.

use std::ops::Range;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use crate::blank::Blank;
use crate::error::Result;
use crate::followers::Origin;
use crate::home::Home;
use crate::link::TableLink;
use crate::memory::IoMemory;
use crate::probe::Features;
use crate::sys::uring::Uring;
use crate::types::{Refresh, TablePath};
use crate::uring::{self, Setup};

/// Entries of a template ring (it submits nothing; the planner counts its
/// memory).
pub(crate) const TEMPLATE_ENTRIES: u32 = 4;

/// Whether rings catch up with a table under `refresh` by a ranged
/// DST_REPLACE clone (else the whole table again), on a kernel with
/// features `f` (the DST_REPLACE quirk guard's predicate decides Auto).
pub(crate) fn ranged_refresh(refresh: Refresh, f: &Features) -> bool {
    match refresh {
        Refresh::Ranged => true,
        Refresh::Whole => false,
        Refresh::Auto => crate::quirks::ranged_refresh_allowed(f),
    }
}

/// The template ring and what rings need to catch up with it.
pub(crate) struct Template {
    // Drop order: the template ring closes before the memory handle goes.
    ring: Uring,
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
    /// Rings handed to other processes that follow its growth.
    pub(crate) followers: crate::followers::Followers,
    /// How many of them the last growth reached.
    reached: std::sync::atomic::AtomicU32,
    /// Rings handed to other processes that do not follow the pool (made
    /// without `follow_growth`): this process cannot take slots out of
    /// them, so a shared pool with any does not shrink.
    pub(crate) unfollowed: std::sync::atomic::AtomicU32,
    /// An empty table: what [`Template::take_out`] clones from.
    blank: Blank,
    /// Shrinks called off that put the pool's own memory back into slots
    /// (a broker that gave segments fresh memory forgets it).
    pub(crate) restored: std::sync::atomic::AtomicU64,
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
        let (ring, _) = uring::setup(&Setup::plain(TEMPLATE_ENTRIES))?;
        if path != TablePath::Unregistered {
            uring::register_table(&ring, &memory.iovs(0, entries), capacity)?;
        }
        let took = start.elapsed();
        let link = std::sync::Arc::new(TableLink::new(entries));
        memory.add_link(&link);
        let t = Template {
            ring,
            memory: memory.clone(),
            capacity,
            link,
            path,
            refresh,
            home: Home::here("BufferTable"),
            followers: Default::default(),
            reached: Default::default(),
            unfollowed: Default::default(),
            blank: Blank::new(),
            restored: Default::default(),
        };
        if path == TablePath::Cloned && memory.is_shared() {
            // Its rings may go to other processes, and be emptied from it.
            if let Err(e) = t.blank.make() {
                tracing::debug!("the blank table waits for its first use: {e}");
            }
        }
        Ok((t, took))
    }

    pub(crate) fn fd(&self) -> RawFd {
        self.ring.fd()
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
            // Handed rings that follow the pool first, while the template
            // still holds the slots to give back if the shrink is called off.
            let revoked = self.followers.revoke(&self.origin(), range.clone())?;
            if let Err(e) = uring::clear(&self.ring, range.start, range.end - range.start) {
                // Part of the range may be holes now: register it all again,
                // so that the template is as before (the shrink is called off),
                // and give the followers their slots back from it.
                let iovs = self.memory.iovs(range.start, range.end);
                self.restored.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                if let Err(e2) = uring::update("register", &self.ring, range.start, &iovs) {
                    tracing::error!("a failed shrink could not restore template slots {range:?}: {e2}");
                } else if revoked > 0 {
                    self.followers.regrant(&self.origin(), &range);
                }
                return Err(e);
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
        ranged_refresh(self.refresh, Features::get())
    }

    /// The growth's publish step: registers the new segments `range` into
    /// the template's free slots, then publishes the new entry count and
    /// generation (returned). Rings pick them up from then on; rings handed
    /// to other processes that follow growth get the slots cloned in now,
    /// and their processes the new memfds.
    pub(crate) fn publish(&self, range: Range<u16>) -> Result<u64> {
        if self.path != TablePath::Unregistered {
            let iovs = self.memory.iovs(range.start, range.end);
            if crate::quirks::grow_via_helper(Features::get()) {
                // Registering straight into the populated template costs
                // more and more as it grows (the populated-table quirk).
                uring::register_via_helper(&self.ring, &iovs, range.start)?;
            } else {
                uring::update("grow register", &self.ring, range.start, &iovs)?;
            }
        }
        let generation = self.link.advance(range.end);
        let reached = if self.followers.len() > 0 { self.followers.reach(&self.origin(), range) } else { 0 };
        self.reached.store(reached, std::sync::atomic::Ordering::Relaxed);
        Ok(generation)
    }

    /// Puts fresh memory `iov` in slot `index` (a broker that isolates its
    /// clients gives a segment new pages): the kernel drops its reference
    /// to what the slot held, and rings cloned from now on get the new
    /// pages.
    pub(crate) fn replace_slot(&self, index: u16, iov: &crate::sys::uring::Iov) -> Result<()> {
        uring::update("register fresh memory", &self.ring, index, std::slice::from_ref(iov))
    }

    /// Empties slots `range` of `ring`, a ring handed to another process
    /// ([`Blank::take_out`]).
    pub(crate) fn take_out(&self, ring: &io_uring::IoUring, range: Range<u16>) -> Result<()> {
        self.blank.take_out(ring, range)
    }

    /// Makes `ring`'s table hold slots `ranges` of the template and
    /// nothing else, in one step ([`Blank::rebuild`]).
    pub(crate) fn rebuild(&self, ring: &io_uring::IoUring, ranges: &[Range<u16>]) -> Result<()> {
        self.blank.rebuild(ring, self.fd(), u32::from(self.source_len()), ranges)
    }

    /// What the rings that follow the table need of it.
    pub(crate) fn origin(&self) -> Origin<'_> {
        Origin { fd: self.fd(), source_len: u32::from(self.source_len()), memory: &self.memory, blank: &self.blank }
    }

    /// How many handed rings the last growth reached.
    pub(crate) fn handed_rings_reached(&self) -> u32 {
        self.reached.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Registers segments `[0, entries)` of the pool on `ring`, in a table
    /// of `capacity` slots (a ring that registers its own table).
    pub(crate) fn register_into(&self, ring: &io_uring::IoUring, entries: u16) -> Result<()> {
        uring::register_table(ring, &self.memory.iovs(0, entries), self.capacity)
    }

    /// Makes slots `[from, to)` of `ring`'s own registration hold what the
    /// template holds there now (holes from `entries` on).
    pub(crate) fn reregister_into(&self, ring: &io_uring::IoUring, from: u16, to: u16, entries: u16) -> Result<()> {
        if to > entries {
            uring::clear(ring, entries, to - entries)?;
        }
        if entries > from {
            uring::update("register", ring, from, &self.memory.iovs(from, entries))?;
        }
        Ok(())
    }
}

impl Drop for Template {
    fn drop(&mut self) {
        // Unregister before the template ring closes, so that pages only it
        // held are unpinned now, on this thread, not by a background worker
        // that would run into other rings' work.
        if self.path != TablePath::Unregistered && self.home.is_here() {
            let _ = uring::unregister(&self.ring, true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::DstReplace;

    #[test]
    fn the_refresh_a_table_uses_follows_the_dst_replace_guard() {
        // What Template::ranged_refresh decides, on models of kernels.
        let mut f = Features::get().clone();
        (f.clone_ranges, f.dst_replace) = (true, DstReplace::Broken("entry 3 lost".into()));
        assert!(!ranged_refresh(Refresh::Auto, &f), "a broken DST_REPLACE: whole re-clones");
        assert!(ranged_refresh(Refresh::Ranged, &f), "forced ranged is obeyed");
        (f.clone_ranges, f.dst_replace) = (true, DstReplace::Works);
        assert!(ranged_refresh(Refresh::Auto, &f));
        assert!(!ranged_refresh(Refresh::Whole, &f), "forced whole is obeyed");
        (f.clone_ranges, f.dst_replace) = (false, DstReplace::Unsupported);
        assert!(!ranged_refresh(Refresh::Auto, &f), "no ranged clone before 6.13");
    }
}
