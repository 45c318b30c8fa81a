//! What a ring knows of its buffer table: the pool it maps, which segment
//! each slot holds, the table it follows and the generation it matches;
//! and what follows the table: attaching it, cloning into it, catching up
//! with growth and shrink, unregistering it, and routing each buffer of an
//! operation to its slot.

use std::os::fd::RawFd;
use std::sync::{Arc, Weak};

use io_uring::IoUring;

use super::slots::SlotMap;
use super::TableSource;
use crate::buf::IoBuf;
use crate::error::{Error, Result};
use crate::link::TableLink;
use crate::memory::IoMemory;
use crate::op::FixedBuf;
use crate::template::Template;
use crate::types::{CloneRange, OpKind, TablePath};
use crate::uring;

/// A ring's view of its table.
#[derive(Default)]
pub(crate) struct TableView {
    /// The pool the table maps (as this process sees it).
    memory: Option<IoMemory>,
    /// Which segment each slot holds.
    map: SlotMap,
    /// Slots of the kernel table (filled or holes).
    size: u16,
    /// The table was cloned from a bare fd: its contents are unknown.
    opaque: bool,
    /// How the ring got it.
    path: Option<TablePath>,
    /// The template this table came from, to pick up growth; weak, so that
    /// the ring outlives the table.
    template: Option<Weak<Template>>,
    /// The table's filled slots and generation (kept even when the table
    /// is gone): one load before each fixed operation tells whether the
    /// table grew or shrank since.
    link: Option<Arc<TableLink>>,
    /// The template generation this view matches.
    generation: u64,
    /// The template's filled slots when this view last caught up with it
    /// (the kernel table holds template slots `[0, synced)`).
    synced: u16,
}

/// How an operation goes to the kernel.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Route {
    /// One SQE, through this registered entry or none.
    One(Option<FixedBuf>),
    /// One SQE per run of `.0` buffers, each through its entry.
    Split(Vec<(usize, Option<FixedBuf>)>),
}

impl TableView {
    /// Slots `[0, segments)` hold the pool's segments: a ring another
    /// process set up and cloned the table into.
    pub(crate) fn handed(memory: IoMemory, segments: u16) -> TableView {
        TableView {
            memory: Some(memory),
            map: SlotMap::identity(segments),
            size: segments,
            path: Some(TablePath::Cloned),
            synced: segments,
            ..TableView::default()
        }
    }

    pub(crate) fn memory(&self) -> Option<&IoMemory> {
        self.memory.as_ref()
    }

    /// A ring handed over by another process that follows its growth: the
    /// owner cloned each new segment into the slot of its index before the
    /// view learnt of it, so the slots are the view's segments.
    fn follow_handed_growth(&mut self) {
        if self.template.is_some() || self.link.is_some() || self.opaque {
            return;
        }
        let Some(m) = &self.memory else { return };
        let n = m.segment_count();
        if m.is_view() && n > self.map.filled() {
            self.map = SlotMap::identity(n);
            self.size = self.size.max(n);
            self.synced = n;
        }
    }

    pub(crate) fn path(&self) -> TablePath {
        self.path.unwrap_or(TablePath::Empty)
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// Slots that hold pool memory.
    pub(crate) fn filled(&self) -> u16 {
        self.map.filled()
    }

    /// Slots of the kernel table.
    pub(crate) fn size(&self) -> u16 {
        self.size
    }

    /// Whether the kernel table holds anything to unregister.
    pub(crate) fn has_kernel_table(&self) -> bool {
        self.size > 0 || self.opaque
    }

    pub(crate) fn slot(&self, segment: u16) -> Option<u16> {
        self.map.slot(segment)
    }

    pub(crate) fn segment_at(&self, slot: u16) -> Option<u16> {
        self.map.segment_at(slot)
    }

    /// The table link followed, and the generation this view matches.
    pub(crate) fn sync(&self) -> Option<(Arc<TableLink>, u64)> {
        self.link.clone().map(|l| (l, self.generation))
    }

    /// Gives `ring` the template's table by `path` (reading the filled count
    /// and generation before the kernel call, so that the view never
    /// believes in a slot its copy lacks).
    pub(crate) fn attach(&mut self, ring: &IoUring, t: &Arc<Template>, path: TablePath) -> Result<()> {
        let (generation, entries, _, _) = t.link.catch_up(u64::MAX);
        match path {
            TablePath::Cloned => uring::clone_into(ring, t.fd(), u32::from(t.source_len()), CloneRange::all())?,
            TablePath::Registered => t.register_into(ring, entries)?,
            TablePath::Unregistered | TablePath::Empty => {}
        }
        self.memory = Some(t.memory.clone());
        if matches!(path, TablePath::Cloned | TablePath::Registered) {
            self.map = SlotMap::identity(entries);
            self.size = t.capacity;
            self.synced = entries;
        }
        self.template = Some(Arc::downgrade(t));
        self.link = Some(t.link.clone());
        self.generation = generation;
        self.path = Some(path);
        Ok(())
    }

    /// Whether the table grew or shrank since this view caught up.
    pub(crate) fn is_stale(&self) -> bool {
        self.link.as_ref().is_some_and(|l| l.generation() != self.generation)
    }

    /// Catches up with the table: a ranged DST_REPLACE clone of the slots
    /// that changed where it works, else the whole table again (or, for a
    /// ring that registered its own table, a buffers update). Returns
    /// whether anything changed.
    pub(crate) fn refresh(&mut self, ring: &IoUring) -> Result<bool> {
        let Some(link) = self.link.clone() else { return Ok(false) };
        let (generation, entries, low, exact) = link.catch_up(self.generation);
        if generation == self.generation {
            return Ok(false);
        }
        let template = self.template.as_ref().and_then(Weak::upgrade);
        match template {
            Some(t) if matches!(self.path(), TablePath::Cloned | TablePath::Registered) => {
                let old = self.synced;
                // Slots [from, to) changed since this view's generation:
                // grown into, emptied by a shrink, or both; all of them when
                // the history does not reach back that far.
                let (from, to) = if exact { (low.min(old), entries.max(old)) } else { (0, entries.max(self.size)) };
                if from < to {
                    self.catch_up_slots(ring, &t, from, to, entries, exact)?;
                }
                self.map = SlotMap::identity(entries);
                self.size = self.size.max(t.capacity);
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
    fn catch_up_slots(
        &mut self,
        ring: &IoUring,
        t: &Template,
        from: u16,
        to: u16,
        entries: u16,
        exact: bool,
    ) -> Result<()> {
        let source_len = u32::from(t.source_len());
        match self.path() {
            TablePath::Cloned if t.ranged_refresh() && exact => {
                let range = CloneRange::range(u32::from(from), u32::from(from), u32::from(to - from)).replace();
                uring::clone_into(ring, t.fd(), source_len, range)
            }
            TablePath::Cloned => {
                // The whole table again: every in-flight operation keeps its
                // own reference to the old entries. No table (a whole
                // refresh that failed after unregistering) is fine.
                uring::unregister(ring, true)?;
                self.map.clear();
                uring::clone_into(ring, t.fd(), source_len, CloneRange::all())
            }
            // This ring registered its own table: empty what the template
            // dropped, register what it has now.
            _ => t.reregister_into(ring, from, to, entries),
        }
    }

    /// Clones `range` of `src`'s table into `ring`, and records what the
    /// slots hold (read from the source before the kernel copies them: a
    /// concurrent growth may fill more slots after the copy).
    pub(crate) fn clone_from(&mut self, ring: &IoUring, src: &impl TableSource, range: CloneRange) -> Result<()> {
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
        let sync = src.source_sync();
        // A whole table whose filled slots are an identity prefix needs no
        // list.
        let prefix = if range.nr == 0 { src.source_prefix() } else { None };
        let held: Vec<Option<u16>> = match prefix {
            Some(_) => Vec::new(),
            None => {
                let (first, n) = if range.nr == 0 { (0, u32::from(source_len)) } else { (range.src_off, range.nr) };
                (0..n.min(16384))
                    .map(|k| u16::try_from(first.saturating_add(k)).ok().and_then(|s| src.source_segment(s)))
                    .collect()
            }
        };
        uring::clone_into(ring, src.source_fd(), u32::from(source_len), range)?;
        if range.nr == 0 {
            self.map = SlotMap::identity(prefix.unwrap_or(0));
        }
        // Follow the source's table: a shrink must make this view forget
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
        self.size = self.size.max(end as u16);
        if self.memory.is_none() {
            self.memory = src.source_memory().cloned();
        }
        if self.template.is_none() {
            self.template = src.source_link();
        }
        Ok(())
    }

    /// Clones from any io_uring fd of this process: the table's contents
    /// are unknown to this view from then on (fixed I/O is refused).
    pub(crate) fn clone_from_fd(
        &mut self,
        ring: &IoUring,
        src: RawFd,
        source_len: u16,
        range: CloneRange,
    ) -> Result<()> {
        uring::clone_into(ring, src, u32::from(source_len), range)?;
        self.opaque = true;
        Ok(())
    }

    /// Unregisters the kernel table and forgets it.
    pub(crate) fn unregister(&mut self, ring: &IoUring) -> Result<()> {
        uring::unregister(ring, false)?;
        self.map.clear();
        self.size = 0;
        self.opaque = false;
        Ok(())
    }

    /// Whether this ring's table can take an operation of `kind` with
    /// `bufs`, whichever engine runs it (so that a refusal never depends on
    /// the engine): not a table cloned from a bare fd, and every buffer's
    /// segment in a slot (catching up with the table once if one is not).
    pub(crate) fn admit(&mut self, ring: &IoUring, kind: OpKind, bufs: &[IoBuf]) -> Result<()> {
        if !kind.moves_data() {
            return Ok(());
        }
        if self.opaque {
            return Err(Error::ForeignBuffer {
                op: kind.name(),
                reason: "this ring's table was cloned from a bare fd; it cannot check buffers".into(),
            });
        }
        let fixed = self.map.filled() > 0 || matches!(self.path(), TablePath::Cloned | TablePath::Registered);
        if self.memory.is_none() || !fixed {
            return Ok(());
        }
        if self.is_stale() {
            self.refresh(ring)?;
        }
        for (i, b) in bufs.iter().enumerate() {
            let segment = b.buf_index();
            if self.map.slot(segment).is_none() {
                self.refresh(ring)?;
                self.follow_handed_growth();
                if self.map.slot(segment).is_none() {
                    return Err(Error::NotInTable {
                        op: kind.name(),
                        segment,
                        buffer: kind.is_vectored().then_some(i),
                    });
                }
            }
        }
        Ok(())
    }

    /// Which registered entry each buffer of `op` goes through, catching up
    /// with the table first when it changed (a shrunk slot may hold new
    /// memory now) and once more for a segment the view lacks. `split_max`
    /// is the most SQEs a split may take; `readv_fixed` whether the kernel
    /// has READV_FIXED.
    pub(crate) fn route(
        &mut self,
        ring: &IoUring,
        kind: OpKind,
        bufs: &[IoBuf],
        split_max: u32,
        readv_fixed: bool,
    ) -> Result<Route> {
        if !kind.moves_data() {
            return Ok(Route::One(None));
        }
        let name = kind.name();
        if self.opaque {
            return Err(Error::ForeignBuffer {
                op: name,
                reason: "this ring's table was cloned from a bare fd; it cannot check buffers".into(),
            });
        }
        let Some(memory) = &self.memory else { return Ok(Route::One(None)) };
        let fixed = self.map.filled() > 0 || matches!(self.path(), TablePath::Cloned | TablePath::Registered);
        if !fixed {
            return Ok(Route::One(None));
        }
        // Not 0 for a pool another process registered.
        let segments: Vec<(u16, usize)> =
            bufs.iter().map(|b| (b.buf_index(), memory.shift_of(b.buf_index()))).collect();
        if self.is_stale() {
            self.refresh(ring)?;
        }
        match plan_route(kind, &segments, |s| self.map.slot(s), split_max, readv_fixed) {
            Err(Error::NotInTable { .. }) => {
                // A segment the table gained since this view got it.
                self.refresh(ring)?;
                self.follow_handed_growth();
                plan_route(kind, &segments, |s| self.map.slot(s), split_max, readv_fixed)
            }
            r => r,
        }
    }
}

/// Routes an operation whose buffers lie in `segments` (each with its
/// address shift): through the slot `slot_of` gives each segment; one SQE
/// when every buffer is in one slot (or for a read or write); for a
/// vectored operation across slots, one SQE per run of buffers in one slot
/// (per buffer without READV_FIXED), at most `split_max` of them.
pub(crate) fn plan_route(
    kind: OpKind,
    segments: &[(u16, usize)],
    slot_of: impl Fn(u16) -> Option<u16>,
    split_max: u32,
    readv_fixed: bool,
) -> Result<Route> {
    let name = kind.name();
    let vectored = kind.is_vectored();
    let mut runs: Vec<(usize, Option<FixedBuf>)> = Vec::new();
    for (i, &(segment, shift)) in segments.iter().enumerate() {
        let slot = slot_of(segment).ok_or(Error::NotInTable { op: name, segment, buffer: vectored.then_some(i) })?;
        match runs.last_mut() {
            Some((n, Some(f))) if f.slot == slot => *n += 1,
            _ => runs.push((1, Some(FixedBuf { slot, shift }))),
        }
    }
    let Some(&(_, first)) = runs.first() else { return Ok(Route::One(None)) };
    if !vectored || (readv_fixed && runs.len() == 1) {
        return Ok(Route::One(first));
    }
    let runs: Vec<_> = if readv_fixed {
        runs
    } else {
        // No READV_FIXED (before 6.15): one fixed operation per buffer.
        runs.iter().flat_map(|&(n, f)| std::iter::repeat_n((1, f), n)).collect()
    };
    if runs.len() > split_max as usize {
        return Err(Error::TooManyParts { op: name, sqes: runs.len(), entries: split_max });
    }
    Ok(Route::Split(runs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slots(map: &[(u16, u16)]) -> impl Fn(u16) -> Option<u16> + '_ {
        move |seg| map.iter().find(|&&(s, _)| s == seg).map(|&(_, slot)| slot)
    }

    fn fixed(slot: u16) -> Option<FixedBuf> {
        Some(FixedBuf { slot, shift: 0 })
    }

    #[test]
    fn one_buffer_goes_through_its_segments_slot() {
        let map = [(0, 0), (3, 7)];
        let r = plan_route(OpKind::Read, &[(3, 0)], slots(&map), 8, true).unwrap();
        assert_eq!(r, Route::One(fixed(7)));
        let shifted = plan_route(OpKind::Write, &[(0, 4096)], slots(&map), 8, true).unwrap();
        assert_eq!(shifted, Route::One(Some(FixedBuf { slot: 0, shift: 4096 })));
    }

    #[test]
    fn a_segment_the_table_lacks_is_refused_naming_the_buffer() {
        let map = [(0, 0)];
        let e = plan_route(OpKind::Readv, &[(0, 0), (2, 0)], slots(&map), 8, true).unwrap_err();
        assert!(matches!(e, Error::NotInTable { segment: 2, buffer: Some(1), .. }), "{e:?}");
        let e = plan_route(OpKind::Read, &[(2, 0)], slots(&map), 8, true).unwrap_err();
        assert!(matches!(e, Error::NotInTable { segment: 2, buffer: None, .. }), "{e:?}");
    }

    #[test]
    fn vectors_split_per_segment_and_per_buffer_without_readv_fixed() {
        let map = [(0, 0), (1, 1)];
        let one = plan_route(OpKind::Readv, &[(0, 0), (0, 0), (0, 0)], slots(&map), 8, true).unwrap();
        assert_eq!(one, Route::One(fixed(0)));
        let split = plan_route(OpKind::Writev, &[(0, 0), (0, 0), (1, 0), (0, 0)], slots(&map), 8, true).unwrap();
        assert_eq!(split, Route::Split(vec![(2, fixed(0)), (1, fixed(1)), (1, fixed(0))]));
        let each = plan_route(OpKind::Readv, &[(0, 0), (0, 0), (1, 0)], slots(&map), 8, false).unwrap();
        assert_eq!(each, Route::Split(vec![(1, fixed(0)), (1, fixed(0)), (1, fixed(1))]));
        let too_many = plan_route(OpKind::Readv, &[(0, 0), (1, 0), (0, 0)], slots(&map), 2, true).unwrap_err();
        assert!(matches!(too_many, Error::TooManyParts { sqes: 3, entries: 2, .. }), "{too_many:?}");
    }
}
