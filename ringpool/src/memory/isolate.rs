//! Memory for clients kept apart (a broker that isolates its clients):
//! fresh memory for one segment, in its own memfd, that replaces the
//! segment in the template's table slot; the pool's own pages of a segment
//! given fresh memory go back to the system; and the layout a client maps,
//! with only its own segments' memfds.

use std::os::fd::OwnedFd;
use std::sync::Arc;

use super::view::{Layout, MapDesc, SegDesc, ABSENT};
use super::{pages, IoMemory};
use crate::error::{Error, Result};
use crate::sys::mmap::Mapping;
use crate::types::PageKind;

/// The most segments a client kept apart may reach: a memfd each, in one
/// message with the token, the holder's pidfd and a growth channel.
pub(crate) const MAX_ISOLATED_SEGMENTS: usize = crate::sys::socket::MAX_FDS - 4;

impl IoMemory {
    /// New memory for segment `index` (its length, the pool's page kind
    /// and alignment) in a memfd of its own, faulted in: zeroed pages no
    /// other process has seen.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a segment past the pool; [`Error::Io`]
    /// mapping or faulting it in (no free huge pages, for one).
    pub(crate) fn fresh_segment(&self, index: u16) -> Result<Arc<Mapping>> {
        self.check_home()?;
        let sh = &self.inner;
        let len = {
            let segs = sh.map.segs();
            let s = segs
                .get(usize::from(index))
                .ok_or_else(|| Error::invalid("segment", index, format!("below {}", segs.len())))?;
            // A segment is at most 1 GiB.
            s.seg.len as usize
        };
        let map = Mapping::map_shared(len, pages::backing(sh.map.kind), sh.map.align as usize).map_err(|e| {
            let op = match sh.map.kind {
                // The pool's own pages of the segment go back only after.
                PageKind::Huge2M | PageKind::Huge1G => {
                    "map fresh memory for a segment (it needs free huge pages for one segment beyond the pool)"
                }
                _ => "map fresh memory for a segment",
            };
            Error::os(op, e)
        })?;
        let populated = map.populate(0, len).map_err(|e| Error::os("fault in fresh memory for a segment", e))?;
        if !populated {
            let page = usize::try_from(sh.map.kind.bytes()).unwrap_or(4096);
            map.touch(0, len, page).map_err(|e| Error::os("fault in fresh memory for a segment", e))?;
        }
        Ok(Arc::new(map))
    }

    /// Gives the pool's own pages of segment `index` back to the system
    /// (punched out of its memfd). The caller guarantees that no lease,
    /// region or ring table reaches them any more: the segment's slot holds
    /// fresh memory now.
    ///
    /// # Errors
    /// [`Error::Io`] from `fallocate`.
    pub(crate) fn punch_segment(&self, index: u16) -> Result<()> {
        let segs = self.inner.map.segs();
        let Some(s) = segs.get(usize::from(index)) else { return Ok(()) };
        s.map.punch(s.map_off, s.seg.len as usize).map_err(|e| Error::os("give back a segment's pages", e))
    }

    /// The layout of segments `[0, entries)` as a client that may reach
    /// only `present` sees it: each of those in its own memfd (a copy of
    /// each goes with it), at its address here (where its table slot has
    /// it); the others absent.
    ///
    /// # Errors
    /// [`Error::NotShared`] for a private pool; [`Error::Io`] duplicating a
    /// memfd; [`Error::InvalidArgument`] with no segment present, or more
    /// than one message carries.
    pub(crate) fn isolated_layout(
        &self,
        entries: u16,
        present: &[(u16, Arc<Mapping>)],
    ) -> Result<(Layout, Vec<OwnedFd>)> {
        self.check_home()?;
        if !self.inner.shared {
            return Err(Error::NotShared);
        }
        let most = MAX_ISOLATED_SEGMENTS;
        if present.is_empty() || present.len() > most {
            return Err(Error::invalid(
                "segments of an isolated client",
                present.len(),
                format!("1 to {most} (a memfd each, in one message)"),
            ));
        }
        let sh = &self.inner;
        let segs = sh.map.segs();
        let mut maps = Vec::with_capacity(present.len());
        let mut fds = Vec::with_capacity(present.len());
        let mut descs = Vec::with_capacity(usize::from(entries));
        for s in segs.iter().take(usize::from(entries)) {
            let len = s.seg.len;
            match present.iter().find(|(i, _)| *i == s.seg.index) {
                Some((_, m)) => {
                    let fd = m.memfd().ok_or(Error::NotShared)?;
                    fds.push(fd.try_clone_to_owned().map_err(|e| Error::os("dup memfd", e))?);
                    // At most MAX_FDS mappings (checked above).
                    let map = maps.len() as u16;
                    maps.push(MapDesc { len: m.len() as u64 });
                    descs.push(SegDesc { index: s.seg.index, map, map_off: 0, len, addr: m.addr() as u64 });
                }
                None => descs.push(SegDesc { index: s.seg.index, map: ABSENT, map_off: 0, len, addr: 0 }),
            }
        }
        if fds.len() != present.len() {
            return Err(Error::invalid("segments of an isolated client", present.len(), format!("below {entries}")));
        }
        let layout =
            Layout { page: sh.map.kind, segment_size: sh.map.segment_size, alignment: sh.map.align, maps, segs: descs };
        Ok((layout, fds))
    }
}

impl IoMemory {
    /// The pool's own mapping of segment `index` (weak: to tell later
    /// whether the segment is still the same one, not shrunk away and
    /// grown again).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a segment past the pool.
    pub(crate) fn segment_backing(&self, index: u16) -> Result<std::sync::Weak<Mapping>> {
        let segs = self.inner.map.segs();
        let s = segs
            .get(usize::from(index))
            .ok_or_else(|| Error::invalid("segment", index, format!("below {}", segs.len())))?;
        Ok(Arc::downgrade(&s.map))
    }
}
