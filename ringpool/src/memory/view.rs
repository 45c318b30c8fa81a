//! Pools shared with other processes: the layout a handed-over ring's
//! process needs to map the pool, and the view it builds from it (where
//! the registrar has each segment, the kernel's addresses).

use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, RwLock};

use super::leasing::Leasing;
use super::{pages, IoMemory, Mapped, SegInfo};
use crate::alloc::Buddy;
use crate::error::{Error, Result};
use crate::sys::mmap::Mapping;
use crate::types::{PageKind, Segment, MAX_SEGMENTS, MAX_SEGMENT_SIZE};

/// One mapping of a shared pool (its memfd travels beside the layout).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MapDesc {
    pub len: u64,
}

/// The mapping of a segment the receiving process may not reach (a
/// daemon that isolates its clients sends only their own segments' memfds).
pub(crate) const ABSENT: u16 = u16::MAX;

/// One segment: its table index, the mapping that holds it and where
/// ([`ABSENT`]: none, offset and address 0), its length, and its address
/// in the process that registered it.
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
    /// The registrar's address of each segment (grows with the pool when
    /// a ring that follows growth was enabled here).
    pub addrs: RwLock<Vec<u64>>,
    /// The identity (device, inode) of each mapping's memfd.
    pub memfds: RwLock<Vec<(u64, u64)>>,
    /// The growth channels of the rings enabled here that follow growth
    /// (the owner's notices: the new layout and memfds).
    pub channels: Mutex<Vec<OwnedFd>>,
    /// Live regions ([`IoMemory::region`]) per segment: a shrink does not
    /// take a segment out of this view while one lives there.
    pub regions: Mutex<std::collections::BTreeMap<u16, u32>>,
    /// The segment count of a shrink the owner announced that waits here
    /// for regions past it to be dropped: no region is made there.
    pub shrinking: Mutex<Option<u16>>,
    /// Segments the owner did not send (inaccessible address space here;
    /// the ring's table has no slot for them either).
    pub absent: std::collections::BTreeSet<u16>,
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
            if d.map == ABSENT {
                if d.map_off != 0 || d.addr != 0 || d.len == 0 || d.len > s {
                    return Err(format!("absent segment {i} with an offset, an address or {} bytes", d.len));
                }
                continue;
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
        let mut spans: Vec<(u16, u64, u64)> =
            self.segs.iter().filter(|d| d.map != ABSENT).map(|d| (d.map, d.map_off, d.map_off + d.len)).collect();
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
        if !self.inner.shared {
            return Err(Error::NotShared);
        }
        let sh = &self.inner;
        let segs = sh.map.segs();
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
                addr: s.seg.addr as u64,
            });
        }
        let layout = Layout {
            page: sh.map.kind,
            segment_size: sh.map.segment_size,
            alignment: sh.map.align,
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
        // The segments not sent keep their places in inaccessible address
        // space (checked: each at most a segment).
        let absent: std::collections::BTreeSet<u16> =
            layout.segs.iter().filter(|d| d.map == ABSENT).map(|d| d.index).collect();
        let hole_len: u64 = layout.segs.iter().filter(|d| d.map == ABSENT).map(|d| d.len).sum();
        let holes = match hole_len {
            0 => None,
            n => Some(Arc::new(
                usize::try_from(n)
                    .map_err(|_| Error::BadHandover { reason: format!("{n} bytes of absent segments") })
                    .and_then(|n| {
                        Mapping::inaccessible(n).map_err(|e| Error::os("reserve the absent segments' place", e))
                    })?,
            )),
        };
        let mut hole_at = 0usize;
        let segs: Vec<SegInfo> = layout
            .segs
            .iter()
            .map(|d| {
                let (map, map_off) = match (&holes, d.map) {
                    (Some(h), ABSENT) => {
                        let at = hole_at;
                        hole_at += d.len as usize;
                        (h.clone(), at)
                    }
                    // Checked: inside the mapping.
                    _ => (maps[usize::from(d.map)].clone(), d.map_off as usize),
                };
                let offset = u64::from(d.index) * layout.segment_size;
                let seg = Segment { index: d.index, offset, len: d.len, addr: map.addr() + map_off };
                SegInfo { seg, map, map_off }
            })
            .collect();
        let buddy = Buddy::empty(layout.segment_size.trailing_zeros(), layout.alignment.trailing_zeros());
        let len = segs.iter().map(|s| s.seg.len).sum();
        let map = Mapped {
            kind: layout.page,
            choice: format!("handed over by process {owner}: {} pages", layout.page),
            requested: len,
            segment_size: layout.segment_size,
            align: layout.alignment,
            segs: RwLock::new(segs),
            prefault: Mutex::new(None),
            growing: Mutex::new(()),
        };
        let view = View {
            addrs: RwLock::new(layout.segs.iter().map(|d| d.addr).collect()),
            memfds: RwLock::new(ids),
            channels: Mutex::new(Vec::new()),
            regions: Mutex::new(Default::default()),
            shrinking: Mutex::new(None),
            absent,
        };
        Ok(IoMemory::from_parts(map, Leasing::new(buddy), Some(view), true))
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

    /// Whether this memory is a view of a pool another process registered.
    pub(crate) fn is_view(&self) -> bool {
        self.inner.view.is_some()
    }

    /// Whether this is a view of the pool `layout` and memfds `ids`
    /// describe: the same memfds (device and inode), the same segments at
    /// the same registrar addresses.
    pub(crate) fn is_view_of(&self, layout: &Layout, ids: &[(u64, u64)]) -> bool {
        let Some(v) = &self.inner.view else { return false };
        let segs = self.inner.map.segs();
        let addrs = v.addrs.read().unwrap_or_else(|p| p.into_inner());
        *v.memfds.read().unwrap_or_else(|p| p.into_inner()) == ids
            && addrs.len() == layout.segs.len()
            && layout
                .segs
                .iter()
                .zip(addrs.iter().zip(segs.iter()))
                .all(|(d, (&a, s))| d.addr == a && d.len == s.seg.len)
    }
}
