//! Pools shared with other processes: the layout a handed-over ring's
//! process needs to map the pool, the view it builds from it, and the
//! segments the owner keeps out of its own leasing for that process.

use std::ops::Range;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, RwLock};

use super::{pages, IoMemory, PoolShared, SegInfo};
use crate::alloc::{Allocator, Buddy};
use crate::buf::IoBuf;
use crate::error::{Error, Result};
use crate::home::Home;
use crate::sys::buf::{Grant, Lease, LeaseOwner};
use crate::sys::mmap::Mapping;
use crate::types::{PageKind, Segment, MAX_SEGMENTS, MAX_SEGMENT_SIZE};

/// One mapping of a shared pool (its memfd travels beside the layout).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MapDesc {
    pub len: u64,
}

/// One segment: its table index, the mapping that holds it and where, its
/// length, and its address in the process that registered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SegDesc {
    pub index: u16,
    pub map: u16,
    pub map_off: u64,
    pub len: u64,
    pub addr: u64,
}

/// What a process that maps a pool another process registered knows of
/// it: the registrar's address of each segment (the kernel knows the
/// registered buffers by them), and the identity of the memfds.
#[derive(Debug)]
pub(crate) struct View {
    pub addrs: Vec<u64>,
    pub memfds: Vec<(u64, u64)>,
}

/// The layout of a shared pool as another process needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Layout {
    pub page: PageKind,
    pub segment_size: u64,
    pub alignment: u64,
    pub maps: Vec<MapDesc>,
    pub segs: Vec<SegDesc>,
}

impl Layout {
    /// Checks what a message cannot be trusted with: sizes, counts, and
    /// every segment inside its mapping, in table order.
    pub(crate) fn check(&self) -> std::result::Result<(), String> {
        let s = self.segment_size;
        if !s.is_power_of_two() || !(4096..=MAX_SEGMENT_SIZE).contains(&s) {
            return Err(format!("segment size {s} is not a power of two from 4 KiB to 1 GiB"));
        }
        if !self.alignment.is_power_of_two() || self.alignment < 512 || self.alignment > s {
            return Err(format!("alignment {} is not a power of two from 512 to the segment size", self.alignment));
        }
        if self.segs.is_empty() || self.segs.len() as u64 > MAX_SEGMENTS {
            return Err(format!("{} segments (1 to 16384)", self.segs.len()));
        }
        if self.maps.is_empty() || self.maps.len() > crate::sys::socket::MAX_FDS - 1 {
            return Err(format!("{} mappings", self.maps.len()));
        }
        for (i, d) in self.segs.iter().enumerate() {
            if usize::from(d.index) != i {
                return Err(format!("segment {i} says it is segment {}", d.index));
            }
            let Some(map) = self.maps.get(usize::from(d.map)) else {
                return Err(format!("segment {i} names mapping {} of {}", d.map, self.maps.len()));
            };
            if d.len == 0 || d.len > s || d.map_off.checked_add(d.len).is_none_or(|e| e > map.len) {
                return Err(format!("segment {i} ({} bytes at {}) is not inside its mapping", d.len, d.map_off));
            }
            if d.map_off % self.alignment != 0 {
                return Err(format!("segment {i} starts at an unaligned offset {}", d.map_off));
            }
        }
        for m in &self.maps {
            if m.len == 0 || m.len % 4096 != 0 || m.len > usize::MAX as u64 / 2 {
                return Err(format!("a mapping of {} bytes", m.len));
            }
        }
        // Whole segments but the last; no two over the same bytes.
        let last = self.segs.len() - 1;
        if let Some((i, d)) = self.segs.iter().enumerate().find(|&(i, d)| i < last && d.len != s) {
            return Err(format!("segment {i} has {} bytes, not the segment size {s}", d.len));
        }
        let mut spans: Vec<(u16, u64, u64)> = self.segs.iter().map(|d| (d.map, d.map_off, d.map_off + d.len)).collect();
        spans.sort_unstable();
        if spans.windows(2).any(|w| w[0].0 == w[1].0 && w[1].1 < w[0].2) {
            return Err("two segments overlap in one mapping".into());
        }
        Ok(())
    }
}

impl IoMemory {
    /// The layout of segments `[0, entries)` of a shared pool, and a copy of
    /// each memfd, for a process that maps them.
    ///
    /// # Errors
    /// [`Error::NotShared`] for a private pool; [`Error::Io`] duplicating a
    /// memfd.
    pub(crate) fn layout(&self, entries: u16) -> Result<(Layout, Vec<OwnedFd>)> {
        self.check_home()?;
        if !self.shared.shared {
            return Err(Error::NotShared);
        }
        let sh = &self.shared;
        let segs = sh.segs();
        let mut maps: Vec<(Arc<Mapping>, OwnedFd)> = Vec::new();
        let mut descs = Vec::new();
        for s in segs.iter().take(usize::from(entries)) {
            let map = match maps.iter().position(|(m, _)| Arc::ptr_eq(m, &s.map)) {
                Some(i) => i,
                None => {
                    let fd = s.map.memfd().ok_or(Error::NotShared)?;
                    let dup = fd.try_clone_to_owned().map_err(|e| Error::os("dup memfd", e))?;
                    maps.push((s.map.clone(), dup));
                    maps.len() - 1
                }
            };
            descs.push(SegDesc {
                index: s.seg.index,
                // At most 63 mappings (a growth each), checked by Layout::check.
                map: map as u16,
                map_off: s.map_off as u64,
                len: s.seg.len,
                addr: s.addr as u64,
            });
        }
        let layout = Layout {
            page: sh.kind,
            segment_size: sh.segment_size,
            alignment: sh.align,
            maps: maps.iter().map(|(m, _)| MapDesc { len: m.len() as u64 }).collect(),
            segs: descs,
        };
        Ok((layout, maps.into_iter().map(|(_, fd)| fd).collect()))
    }

    /// This process's view of a pool another process (`owner`) registered:
    /// each memfd mapped here (at whatever address), the segments at the
    /// same pool offsets, leasing from nothing until a ring with lease
    /// segments is enabled in it ([`IoMemory::add_lease_segments`]).
    pub(crate) fn from_layout(layout: &Layout, memfds: Vec<OwnedFd>, owner: u32) -> Result<IoMemory> {
        layout.check().map_err(|reason| Error::BadHandover { reason })?;
        if memfds.len() != layout.maps.len() {
            let reason = format!("{} memfds for {} mappings", memfds.len(), layout.maps.len());
            return Err(Error::BadHandover { reason });
        }
        let mut ids = Vec::with_capacity(memfds.len());
        for (fd, m) in memfds.iter().zip(&layout.maps) {
            let (dev, ino, size) = crate::sys::socket::file_identity(std::os::fd::AsFd::as_fd(fd))
                .map_err(|e| Error::BadHandover { reason: format!("a memfd: {e}") })?;
            if size < m.len {
                // Touching past the end of a memfd raises SIGBUS.
                return Err(Error::BadHandover {
                    reason: format!("a memfd of {size} bytes for a mapping of {}", m.len),
                });
            }
            ids.push((dev, ino));
        }
        let maps: Vec<Arc<Mapping>> = memfds
            .into_iter()
            .zip(&layout.maps)
            .map(|(fd, m)| {
                // Checked: at most half the address space.
                Mapping::map_memfd(fd, m.len as usize, pages::backing(layout.page), layout.alignment as usize)
                    .map(Arc::new)
                    .map_err(|e| Error::os("map the shared pool", e))
            })
            .collect::<Result<_>>()?;
        let segs: Vec<SegInfo> = layout
            .segs
            .iter()
            .map(|d| {
                let map = maps[usize::from(d.map)].clone();
                let seg = Segment { index: d.index, offset: u64::from(d.index) * layout.segment_size, len: d.len };
                // Checked: inside the mapping.
                let map_off = d.map_off as usize;
                SegInfo { seg, addr: map.addr() + map_off, map, map_off }
            })
            .collect();
        let buddy = Buddy::empty(layout.segment_size.trailing_zeros(), layout.alignment.trailing_zeros());
        let len = segs.iter().map(|s| s.seg.len).sum();
        Ok(IoMemory {
            shared: Arc::new(PoolShared {
                kind: layout.page,
                choice: format!("handed over by process {owner}: {} pages", layout.page),
                requested: len,
                segment_size: layout.segment_size,
                align: layout.alignment,
                segs: RwLock::new(segs),
                alloc: Allocator::new(buddy),
                prefault: Mutex::new(None),
                growing: Mutex::new(()),
                home: Home::here("IoMemory"),
                shared: true,
                registrar: Some(View { addrs: layout.segs.iter().map(|d| d.addr).collect(), memfds: ids }),
                keep: Mutex::new(Vec::new()),
                links: Mutex::new(Vec::new()),
                parked: Mutex::new(Vec::new()),
            }),
        })
    }

    /// Lets this view lease from segments `range` (a ring that came with
    /// them was enabled: it is the one process that may), keeping `keep`
    /// open for as long as the view lives (the owner holds the segments
    /// back until every copy of them is closed).
    pub(crate) fn add_lease_segments(&self, range: Range<u16>, keep: Vec<OwnedFd>) {
        let segs = self.segments();
        let spans: Vec<(u64, u64)> =
            segs.iter().filter(|s| range.contains(&s.index)).map(|s| (s.offset, s.len)).collect();
        self.shared.alloc.with_buddy(|b| spans.iter().for_each(|&(off, len)| b.add_range(off, len)));
        self.shared.keep.lock().unwrap_or_else(|p| p.into_inner()).extend(keep);
        self.shared.alloc.notify_grown();
    }

    /// The identity of the memory the memfds `fds` hold, to compare with
    /// a view's.
    pub(crate) fn memfd_identity(fds: &[OwnedFd]) -> Result<Vec<(u64, u64)>> {
        fds.iter()
            .map(|fd| {
                crate::sys::socket::file_identity(std::os::fd::AsFd::as_fd(fd))
                    .map(|(dev, ino, _)| (dev, ino))
                    .map_err(|e| Error::BadHandover { reason: format!("a memfd: {e}") })
            })
            .collect()
    }

    /// Whether this is a view of the pool `layout` and memfds `ids`
    /// describe: the same memfds (device and inode), the same segments at
    /// the same registrar addresses.
    pub(crate) fn is_view_of(&self, layout: &Layout, ids: &[(u64, u64)]) -> bool {
        let Some(v) = &self.shared.registrar else { return false };
        let segs = self.shared.segs();
        v.memfds == ids
            && v.addrs.len() == layout.segs.len()
            && layout
                .segs
                .iter()
                .zip(v.addrs.iter().zip(segs.iter()))
                .all(|(d, (&a, s))| d.addr == a && d.len == s.seg.len)
    }

    /// Holds segments `range` back from leasing until every copy of the
    /// write end of the pipe whose read end is `token` is closed (the
    /// process that leases them is done with them); then
    /// [`IoMemory::reclaim_handed_segments`] gives them back.
    pub(crate) fn park(&self, range: Range<u16>, token: OwnedFd) {
        self.shared.parked.lock().unwrap_or_else(|p| p.into_inner()).push((range, token));
    }

    /// Gives back the lease segments of rings handed to other processes
    /// that are done with them (every copy of their lease token closed: the
    /// process exited, or dropped its view of the pool); returns how many
    /// segments came back. ringpool calls it when it reserves segments, when
    /// a lease finds no room, and in [`IoMemory::segment_stats`].
    pub fn reclaim_handed_segments(&self) -> u16 {
        if !self.shared.home.is_here() {
            return 0;
        }
        let done: Vec<Range<u16>> = {
            let mut p = self.shared.parked.lock().unwrap_or_else(|p| p.into_inner());
            let mut done = Vec::new();
            p.retain(|(range, token)| {
                let gone = crate::sys::socket::hung_up(std::os::fd::AsFd::as_fd(token));
                if gone {
                    done.push(range.clone());
                }
                !gone
            });
            done
        };
        if done.is_empty() {
            return 0;
        }
        let n: u16 = done.iter().map(|r| r.end - r.start).sum();
        self.shared.alloc.with_buddy(|b| {
            for r in &done {
                r.clone().for_each(|s| b.return_segment(u32::from(s)));
            }
        });
        self.shared.alloc.notify_grown();
        tracing::debug!(?done, "lease segments of handed rings came back");
        n
    }

    /// Takes segments `range` out of this pool's leasing, so that a process
    /// given a ring with that lease range allocates there alone; they come
    /// back when the reservation is dropped.
    ///
    /// # Errors
    /// [`Error::SegmentsInUse`] when a lease lies in one of them (nothing is
    /// taken then); [`Error::InvalidArgument`] past the pool's segments.
    pub fn reserve_segments(&self, range: Range<u16>) -> Result<SegmentReservation> {
        self.check_home()?;
        self.reclaim_handed_segments();
        let count = self.segment_count();
        if range.start >= range.end || range.end > count {
            return Err(Error::invalid(
                "segment range",
                format!("{range:?}"),
                format!("the pool has {count} segments"),
            ));
        }
        let taken = self.shared.alloc.with_buddy(|b| {
            let mut taken = Vec::new();
            for seg in range.clone() {
                if b.take_segment(u32::from(seg)) {
                    taken.push(seg);
                } else {
                    for t in taken.drain(..) {
                        b.return_segment(u32::from(t));
                    }
                    return Err(seg);
                }
            }
            Ok(())
        });
        match taken {
            Ok(()) => Ok(SegmentReservation { memory: self.clone(), range, release: true }),
            Err(segment) => Err(Error::SegmentsInUse { range, segment }),
        }
    }
}

impl IoMemory {
    /// A buffer over pool bytes `[offset, offset + len)` that no lease
    /// covers, for applications that manage part of the pool themselves
    /// (a shared buffer cache read by many processes): fixed I/O with it
    /// goes through the registered table like a lease's. The range must lie
    /// in one segment that this process does not lease from: one reserved
    /// with [`IoMemory::reserve_segments`], or, in a process that received a
    /// ring ([`HandedRing::enable`](crate::HandedRing::enable)), any segment
    /// outside its lease range. Dropping the buffer gives nothing back.
    ///
    /// # Safety
    /// While the buffer lives (and while I/O with it runs), nothing else, in
    /// this process or another that maps the pool, may access those bytes in
    /// a way that conflicts with it: no other buffer over them is written
    /// through or read into while this one is, as with any `&mut [u8]`.
    ///
    /// # Errors
    /// [`Error::BadRegion`] for an empty range, one past the pool or across
    /// a segment boundary, or one in a segment this process leases from;
    /// [`Error::Forked`].
    // The contract is the caller's (above); the body needs no unsafe
    // operation: the lease it builds is an ordinary one of this pool.
    #[allow(unsafe_code)]
    pub unsafe fn region(&self, offset: u64, len: usize) -> Result<IoBuf> {
        self.check_home()?;
        let bad = |why: String| Error::BadRegion { offset, len: len as u64, reason: why };
        let end = offset
            .checked_add(len as u64)
            .filter(|_| len > 0)
            .ok_or_else(|| bad("an empty or overflowing range".into()))?;
        let sh = &self.shared;
        let segment = {
            let segs = sh.segs();
            let Some(s) = segs.iter().find(|s| s.seg.offset <= offset && offset < s.seg.offset + s.seg.len) else {
                return Err(bad(format!("past the pool ({} bytes)", self.len())));
            };
            if end > s.seg.offset + s.seg.len {
                return Err(bad(format!("it crosses the end of segment {}", s.seg.index)));
            }
            s.seg.index
        };
        if sh.alloc.with_buddy(|b| b.leases_from(u32::from(segment))) {
            return Err(bad(format!(
                "segment {segment} is leased from in this process (reserve it with IoMemory::reserve_segments)"
            )));
        }
        let owner: Arc<dyn LeaseOwner> = sh.clone();
        Ok(IoBuf::new(Lease::new(owner, Grant::region(offset, len)), segment))
    }
}

/// Segments kept out of a pool's leasing ([`IoMemory::reserve_segments`]);
/// given back on drop.
#[derive(Debug)]
pub struct SegmentReservation {
    memory: IoMemory,
    range: Range<u16>,
    /// Give the segments back on drop (not once parked).
    release: bool,
}

impl SegmentReservation {
    /// The segments.
    pub fn segments(&self) -> Range<u16> {
        self.range.clone()
    }

    /// Keeps the segments reserved until every copy of the write end of
    /// `token`'s pipe is closed (a ring given to another process).
    pub(crate) fn park(mut self, token: OwnedFd) {
        self.release = false;
        if self.memory.shared.home.is_here() {
            self.memory.park(self.range.clone(), token);
        }
    }
}

impl Drop for SegmentReservation {
    fn drop(&mut self) {
        if !self.release || !self.memory.shared.home.is_here() {
            return;
        }
        self.memory.shared.alloc.with_buddy(|b| {
            for seg in self.range.clone() {
                b.return_segment(u32::from(seg));
            }
        });
        self.memory.shared.alloc.notify_grown();
    }
}
