//! A view of a pool another process owns that follows the owner's growth:
//! the owner's notices (the pool's layout after a growth, with the memfds)
//! arrive on the growth channels of the rings enabled here
//! ([`HandoverOptions::follow_growth`](crate::handover::HandoverOptions::follow_growth));
//! catching up maps the new memfds and adds their segments, at the same
//! pool offsets and table slots as the owner's. The new segments are not
//! leased from here (the owner leases them, or the application manages
//! them as regions: [`IoMemory::region`]).

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use super::codec::Notice;
use super::view::Layout;
use super::{pages, IoMemory, SegInfo};
use crate::error::{Error, Result};
use crate::sys::mmap::Mapping;
use crate::types::Segment;

/// Largest growth notice: 16384 segments of 28 bytes, and the rest.
pub(crate) const MAX_NOTICE: usize = 16384 * 28 + 64 * 8 + 64;

impl IoMemory {
    /// Keeps `channel` (a handed ring's growth channel) to read the owner's
    /// growth notices from.
    pub(crate) fn follow_growth(&self, channel: OwnedFd) -> Result<()> {
        let Some(view) = &self.inner.view else {
            return Err(Error::invalid("growth channel", "this pool", "it is not a view of another process's pool"));
        };
        view.channels.lock().unwrap_or_else(|p| p.into_inner()).push(channel);
        Ok(())
    }

    /// In a process that enabled a ring that follows the owner's growth
    /// ([`HandoverOptions::follow_growth`](crate::handover::HandoverOptions::follow_growth)):
    /// maps what the owner added since and gives its segments (the rings
    /// enabled here have their slots already: the owner cloned them in
    /// before it sent the notice). [`IoMemory::region`] and
    /// [`IoMemory::region_span`] call it for a range past the memory this
    /// view knows. Returns the pool's segment count as this process sees
    /// it now. Elsewhere it changes nothing.
    ///
    /// # Errors
    /// [`Error::BadHandover`] for a notice that does not extend this view
    /// (another pool, changed segments, wrong descriptors); mapping errors;
    /// [`Error::Io`] reading the channel.
    pub fn catch_up(&self) -> Result<u16> {
        let Some(view) = &self.inner.view else { return Ok(self.segment_count()) };
        let mut channels = view.channels.lock().unwrap_or_else(|p| p.into_inner());
        if channels.is_empty() {
            return Ok(self.segment_count());
        }
        // One poll for all channels first: a receive allocates room for
        // the largest notice, and most catch-ups find nothing.
        let fds: Vec<_> = channels.iter().map(AsFd::as_fd).collect();
        let ready = crate::sys::socket::poll_readable(&fds, Some(std::time::Duration::ZERO))
            .map_err(|e| Error::os("poll the owner's notices", e))?;
        let mut closed = vec![false; channels.len()];
        for (i, ch) in channels.iter().enumerate().filter(|&(i, _)| ready[i]) {
            loop {
                let (bytes, fds) = match crate::sys::socket::recv_with_fds(ch.as_fd(), MAX_NOTICE) {
                    Ok(x) => x,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(Error::os("read the owner's growth notice", e)),
                };
                if bytes.is_empty() {
                    // The owner is gone: no more notices on this channel.
                    closed[i] = true;
                    break;
                }
                match Notice::decode(&bytes).map_err(|reason| Error::BadHandover { reason })? {
                    Notice::Grew(layout) => {
                        // A growth after a shrink that still waits here
                        // reuses the shrunk slots: the shrink comes first.
                        let waits = view.shrinking.lock().unwrap_or_else(|p| p.into_inner()).is_some();
                        if waits && !self.try_shrink_view() {
                            return Err(Error::BadHandover {
                                reason: "the owner grew the pool again while regions of this process still lie in \
                                         segments it had shrunk away"
                                    .into(),
                            });
                        }
                        self.extend_view(&layout, fds)?
                    }
                    Notice::Shrank(n) => {
                        drop(fds);
                        *view.shrinking.lock().unwrap_or_else(|p| p.into_inner()) = Some(n);
                    }
                }
            }
        }
        // Channels whose owner is gone are read no more.
        let mut keep = closed.into_iter().map(|c| !c);
        channels.retain(|_| keep.next().unwrap_or(true));
        drop(channels);
        let waits = view.shrinking.lock().unwrap_or_else(|p| p.into_inner()).is_some();
        if waits {
            self.try_shrink_view();
        }
        Ok(self.segment_count())
    }

    /// Applies the shrink the owner announced, unless a region still lives
    /// in a segment it takes (then it waits for the next catch-up): the
    /// segments past it leave this view, and the mappings only they used
    /// are unmapped. Returns whether no shrink waits any more.
    pub(crate) fn try_shrink_view(&self) -> bool {
        let Some(view) = &self.inner.view else { return true };
        let _growing = self.growth_lock();
        let mut shrinking = view.shrinking.lock().unwrap_or_else(|p| p.into_inner());
        let Some(n) = *shrinking else { return true };
        if view.regions.lock().unwrap_or_else(|p| p.into_inner()).range(n..).any(|(_, &c)| c > 0) {
            return false;
        }
        // The readers' lock order: segments, then addresses, then memfds.
        let mut segs = self.inner.map.segs.write().unwrap_or_else(|p| p.into_inner());
        let mut addrs = view.addrs.write().unwrap_or_else(|p| p.into_inner());
        let keep = usize::from(n).min(segs.len());
        let removed = segs.split_off(keep);
        addrs.truncate(keep);
        // Mappings are numbered in the order segments first use them.
        let mut maps: Vec<&Arc<Mapping>> = Vec::new();
        for s in segs.iter() {
            if !maps.iter().any(|m| Arc::ptr_eq(m, &s.map)) {
                maps.push(&s.map);
            }
        }
        view.memfds.write().unwrap_or_else(|p| p.into_inner()).truncate(maps.len());
        drop((addrs, segs));
        *shrinking = None;
        tracing::debug!(removed = removed.len(), segments = keep, "the view followed the owner's shrink");
        // Mappings only the removed segments used are unmapped here.
        drop(removed);
        true
    }

    /// Maps the segments of `layout` this view lacks (their memfds among
    /// `memfds`, one per mapping of the layout).
    fn extend_view(&self, layout: &Layout, memfds: Vec<OwnedFd>) -> Result<()> {
        let bad = |reason: String| Error::BadHandover { reason };
        let Some(view) = &self.inner.view else { return Ok(()) };
        if memfds.len() != layout.maps.len() {
            return Err(bad(format!("{} memfds for {} mappings", memfds.len(), layout.maps.len())));
        }
        let map = &self.inner.map;
        if layout.page != map.kind || layout.segment_size != map.segment_size || layout.alignment != map.align {
            return Err(bad("a growth notice of another pool (page kind, segment size or alignment differ)".into()));
        }
        // One catch-up at a time; everything is mapped and checked first,
        // then committed under the locks, taken in the order every reader
        // takes them (segments, then addresses, then memfds).
        let _growing = self.growth_lock();
        let known_addrs: Vec<u64> = view.addrs.read().unwrap_or_else(|p| p.into_inner()).clone();
        let known = known_addrs.len();
        let extends = layout.segs.len() >= known
            && layout.segs.iter().zip(&known_addrs).all(|(d, &a)| d.addr == a)
            && layout.segs.iter().zip(map.segs().iter()).all(|(d, s)| d.len == s.seg.len);
        if !extends {
            return Err(bad("a growth notice that does not extend this view's segments".into()));
        }
        let mut mapped: Vec<Option<Arc<Mapping>>> = vec![None; layout.maps.len()];
        let mut memfds: Vec<Option<OwnedFd>> = memfds.into_iter().map(Some).collect();
        let mut new_ids = Vec::new();
        let mut new = Vec::new();
        for d in &layout.segs[known..] {
            let m = usize::from(d.map);
            if mapped[m].is_none() {
                let fd = memfds[m].take().ok_or_else(|| bad(format!("mapping {m} twice")))?;
                let (dev, ino, size) = crate::sys::socket::file_identity(fd.as_fd())
                    .map_err(|e| bad(format!("a memfd of the growth: {e}")))?;
                let len = layout.maps[m].len;
                if size < len {
                    return Err(bad(format!("a memfd of {size} bytes for a mapping of {len}")));
                }
                // Checked by Layout::check: at most half the address space.
                let mapping =
                    Mapping::map_memfd(fd, len as usize, pages::backing(layout.page), layout.alignment as usize)
                        .map_err(|e| Error::os("map the pool's growth", e))?;
                mapped[m] = Some(Arc::new(mapping));
                new_ids.push((dev, ino));
            }
            let mapping = mapped[m].clone().expect("mapped above");
            // Checked by Layout::check: inside the mapping.
            let map_off = d.map_off as usize;
            let seg = Segment {
                index: d.index,
                offset: u64::from(d.index) * layout.segment_size,
                len: d.len,
                addr: mapping.addr() + map_off,
            };
            new.push((SegInfo { seg, map: mapping, map_off }, d.addr));
        }
        let added = new.len();
        let mut segs = map.segs.write().unwrap_or_else(|p| p.into_inner());
        let mut addrs = view.addrs.write().unwrap_or_else(|p| p.into_inner());
        for (info, addr) in new {
            segs.push(info);
            addrs.push(addr);
        }
        view.memfds.write().unwrap_or_else(|p| p.into_inner()).extend(new_ids);
        tracing::debug!(added, segments = segs.len(), "the view caught up with the owner's growth");
        Ok(())
    }
}
