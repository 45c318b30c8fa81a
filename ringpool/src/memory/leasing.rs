//! Leasing pool memory: `IoBuf`s from the buddy allocator; segments kept
//! out of this process's leasing (reserved, or held for a process that was
//! handed a ring with them) and given back; regions of bytes the
//! application manages itself.

use std::future::Future;
use std::ops::Range;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use super::IoMemory;
use crate::alloc::{Allocator, Buddy, Grant};
use crate::buf::IoBuf;
use crate::error::{Error, Result};
use crate::stats::AllocStats;
use crate::sys::buf::{Lease, LeaseOwner};
use crate::types::{Bytes, MAX_IOVECS};

/// A pool's leasing: the allocator, and the segments held back for other
/// processes.
pub(crate) struct Leasing {
    pub(crate) alloc: Allocator,
    /// Kept open while the memory lives: the lease tokens (or broker
    /// connections) that hold this process's lease segments in the owner.
    pub(crate) keep: Mutex<Vec<OwnedFd>>,
    /// In the owner: lease segments of rings handed to other processes,
    /// held back until their token pipe hangs up.
    pub(crate) parked: Mutex<Vec<(Range<u16>, OwnedFd)>>,
}

impl Leasing {
    pub(crate) fn new(buddy: Buddy) -> Leasing {
        Leasing { alloc: Allocator::new(buddy), keep: Mutex::new(Vec::new()), parked: Mutex::new(Vec::new()) }
    }
}

impl IoMemory {
    /// Leases `len` bytes (rounded up to the alignment) or fails at once.
    ///
    /// # Errors
    /// [`Error::Forked`] in a forked child; [`Error::PoolExhausted`] when no
    /// block is free;
    /// [`Error::LeaseTooLarge`] beyond one segment; [`Error::InvalidArgument`]
    /// for zero.
    pub fn try_alloc(&self, len: usize) -> Result<IoBuf> {
        self.check_len(len)?;
        match self.inner.lease.alloc.try_alloc(len, None) {
            Some(g) => Ok(self.lease(g)),
            // Segments handed to processes that are done may be free again.
            None if self.reclaim_handed_segments() > 0 => self.try_alloc(len),
            None => Err(self.exhausted(len)),
        }
    }

    /// Leases `len` bytes inside segment `segment` (table entry
    /// `buf_index == segment`).
    ///
    /// # Errors
    /// As [`IoMemory::try_alloc`]; [`Error::InvalidArgument`] for a segment
    /// past the end.
    pub fn try_alloc_in(&self, segment: u16, len: usize) -> Result<IoBuf> {
        self.check_len(len)?;
        let count = self.inner.map.segment_count();
        if segment >= count {
            return Err(Error::invalid("segment", segment, format!("the pool has {count} segments")));
        }
        match self.inner.lease.alloc.try_alloc(len, Some(u32::from(segment))) {
            Some(g) => Ok(self.lease(g)),
            None if self.reclaim_handed_segments() > 0 => self.try_alloc_in(segment, len),
            None => Err(self.exhausted(len)),
        }
    }

    /// Leases `count` blocks of `len` bytes, all in one segment, so that one
    /// vectored fixed operation (READV_FIXED / WRITEV_FIXED, whose buffers
    /// must lie in one registered entry) can take them all. The blocks are
    /// wherever the segment has room: not adjacent in general.
    ///
    /// # Errors
    /// [`Error::PoolExhausted`] when no segment has room for all of them;
    /// [`Error::TooManyBuffers`] above 1024 (IOV_MAX); as
    /// [`IoMemory::try_alloc`] for `len`.
    pub fn try_alloc_vec(&self, count: usize, len: usize) -> Result<Vec<IoBuf>> {
        self.check_len(len)?;
        if count == 0 {
            return Err(Error::invalid("lease count", 0, "ask for at least one block"));
        }
        if count > MAX_IOVECS {
            return Err(Error::TooManyBuffers { op: "alloc", count, max: MAX_IOVECS });
        }
        match self.inner.lease.alloc.try_alloc_many(count, len) {
            Some(grants) => Ok(grants.into_iter().map(|g| self.lease(g)).collect()),
            None => {
                let total = len.saturating_mul(count);
                Err(self.exhausted(total))
            }
        }
    }

    /// Leases `len` bytes, waiting up to `timeout` for leases to come back.
    ///
    /// # Errors
    /// [`Error::Timeout`]; [`Error::LeaseTooLarge`]; [`Error::InvalidArgument`].
    pub fn alloc_timeout(&self, len: usize, timeout: Duration) -> Result<IoBuf> {
        self.check_len(len)?;
        match self.inner.lease.alloc.alloc_wait(len, Some(timeout)) {
            Some(g) => Ok(self.lease(g)),
            None => Err(Error::Timeout { what: format!("a lease of {}", Bytes(len as u64)), waited: timeout }),
        }
    }

    /// Leases `len` bytes, waiting as long as it takes.
    ///
    /// # Errors
    /// [`Error::LeaseTooLarge`]; [`Error::InvalidArgument`] (never exhaustion).
    pub fn alloc(&self, len: usize) -> Result<IoBuf> {
        self.check_len(len)?;
        let g = self.inner.lease.alloc.alloc_wait(len, None).expect("an untimed wait returns only with a block");
        Ok(self.lease(g))
    }

    /// Leases `len` bytes as a future that resolves when a block is free
    /// (runtime-agnostic: woken by the free that makes room).
    pub fn alloc_async(&self, len: usize) -> AllocFuture {
        AllocFuture { mem: self.clone(), len, checked: self.check_len(len).err() }
    }

    /// Allocator statistics.
    pub fn stats(&self) -> AllocStats {
        self.inner.lease.alloc.stats()
    }

    fn check_len(&self, len: usize) -> Result<()> {
        // In a forked child the memory is not mapped, and the allocator is a
        // copy of the parent's (its lock may be held for ever).
        self.check_home()?;
        if len == 0 {
            return Err(Error::invalid("lease length", 0, "it must be at least 1 byte"));
        }
        if len as u64 > self.inner.map.segment_size {
            return Err(Error::LeaseTooLarge {
                requested: Bytes(len as u64),
                segment: Bytes(self.inner.map.segment_size),
            });
        }
        Ok(())
    }

    fn exhausted(&self, len: usize) -> Error {
        let st = self.stats();
        let rounded = self.inner.lease.alloc.with_buddy(|b| b.round(len as u64));
        Error::PoolExhausted { requested: Bytes(rounded), in_use: Bytes(st.bytes_in_use), capacity: Bytes(st.capacity) }
    }

    fn lease(&self, g: Grant) -> IoBuf {
        let segment = self.inner.map.segment_of(g.offset());
        let owner: Arc<dyn LeaseOwner> = self.inner.clone();
        IoBuf::new(Lease::new(owner, g), segment)
    }
}

/// A lease that resolves when memory is free: [`IoMemory::alloc_async`].
#[derive(Debug)]
pub struct AllocFuture {
    mem: IoMemory,
    len: usize,
    checked: Option<Error>,
}

impl Future for AllocFuture {
    type Output = Result<IoBuf>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(e) = self.checked.take() {
            return Poll::Ready(Err(e));
        }
        match self.mem.inner.lease.alloc.poll_alloc(self.len, cx.waker()) {
            Some(g) => Poll::Ready(Ok(self.mem.lease(g))),
            None => Poll::Pending,
        }
    }
}

impl IoMemory {
    /// Lets this view lease from segments `range` (a ring that came with
    /// them was enabled: it is the one process that may), keeping `keep`
    /// open for as long as the view lives (the owner holds the segments
    /// back until every copy of them is closed).
    pub(crate) fn add_lease_segments(&self, range: Range<u16>, keep: Vec<OwnedFd>) {
        let segs = self.segments();
        let spans: Vec<(u64, u64)> =
            segs.iter().filter(|s| range.contains(&s.index)).map(|s| (s.offset, s.len)).collect();
        self.inner.lease.alloc.with_buddy(|b| spans.iter().for_each(|&(off, len)| b.add_range(off, len)));
        self.inner.lease.keep.lock().unwrap_or_else(|p| p.into_inner()).extend(keep);
        self.inner.lease.alloc.notify_grown();
    }

    /// Holds segments `range` back from leasing until every copy of the
    /// write end of the pipe whose read end is `token` is closed (the
    /// process that leases them is done with them); then
    /// [`IoMemory::reclaim_handed_segments`] gives them back.
    pub(crate) fn park(&self, range: Range<u16>, token: OwnedFd) {
        self.inner.lease.parked.lock().unwrap_or_else(|p| p.into_inner()).push((range, token));
    }

    /// Gives back the lease segments of rings handed to other processes
    /// that are done with them (every copy of their lease token closed: the
    /// process exited, or dropped its view of the pool); returns how many
    /// segments came back. ringpool calls it when it reserves segments, when
    /// a lease finds no room, and in [`IoMemory::segment_stats`].
    pub fn reclaim_handed_segments(&self) -> u16 {
        if !self.inner.home.is_here() {
            return 0;
        }
        let done: Vec<Range<u16>> = {
            let mut p = self.inner.lease.parked.lock().unwrap_or_else(|p| p.into_inner());
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
        self.inner.lease.alloc.with_buddy(|b| {
            for r in &done {
                r.clone().for_each(|s| b.return_segment(u32::from(s)));
            }
        });
        self.inner.lease.alloc.notify_grown();
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
        let taken = self.inner.lease.alloc.with_buddy(|b| {
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
    /// ring ([`HandedRing::enable`](crate::handover::HandedRing::enable)), any segment
    /// outside its lease range. Dropping the buffer gives nothing back.
    ///
    /// In a process whose rings follow the owner's pool, making a region
    /// first reads the owner's notices ([`IoMemory::catch_up`]). When the
    /// owner shrinks the pool, its segments past the new end leave this
    /// view once no region lives there (none is made there meanwhile); the
    /// owner cannot see regions, so fixed I/O through one over a shrunk
    /// segment fails (EFAULT: the ring no longer holds the slot) rather
    /// than reach memory given back.
    ///
    /// # Safety
    /// While the buffer lives (and while I/O with it runs), nothing else, in
    /// this process or another that maps the pool, may access those bytes in
    /// a way that conflicts with it: no other buffer over them is written
    /// through or read into while this one is, as with any `&mut [u8]`.
    ///
    /// # Errors
    /// [`Error::BadRegion`] for an empty range, one past the pool or across
    /// a segment boundary, one in a segment this process leases from, or
    /// in a view of an isolating daemon's pool, one in a segment that is
    /// not this process's; [`Error::Forked`].
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
        if follows_owner(self) || end > self.len() {
            // What the owner changed since (a view that follows its pool).
            self.catch_up()?;
        }
        let sh = &self.inner;
        let segment = {
            let segs = sh.map.segs();
            let Some(s) = segs.iter().find(|s| s.seg.offset <= offset && offset < s.seg.offset + s.seg.len) else {
                return Err(bad(format!("past the pool ({} bytes)", self.len())));
            };
            if end > s.seg.offset + s.seg.len {
                return Err(bad(format!("it crosses the end of segment {}", s.seg.index)));
            }
            s.seg.index
        };
        if sh.lease.alloc.with_buddy(|b| b.leases_from(u32::from(segment))) {
            return Err(bad(format!(
                "segment {segment} is leased from in this process (reserve it with IoMemory::reserve_segments)"
            )));
        }
        if let Some(view) = &sh.view {
            if view.absent.contains(&segment) {
                return Err(bad(format!(
                    "segment {segment} is not this process's: the pool's owner isolates its clients and sent only their lease segments"
                )));
            }
            // Lock order: shrinking, then regions (as the view's shrink).
            let shrinking = view.shrinking.lock().unwrap_or_else(|p| p.into_inner());
            if shrinking.is_some_and(|n| segment >= n) {
                return Err(bad(format!("segment {segment} is being shrunk away by the pool's owner")));
            }
            *view.regions.lock().unwrap_or_else(|p| p.into_inner()).entry(segment).or_insert(0) += 1;
        }
        let owner: Arc<dyn LeaseOwner> = sh.clone();
        Ok(IoBuf::new(Lease::new(owner, Grant::region(offset, len)), segment))
    }

    /// Pool bytes `[offset, offset + len)` as one buffer per segment they
    /// touch, in order: a range an application manages that crosses
    /// segment edges (a registered buffer is at most 1 GiB, so a pool of
    /// several GiB has edges wherever its segments meet). Give the pieces
    /// to [`Op::readv`](crate::Op::readv) / [`Op::writev`](crate::Op::writev):
    /// a ring submits one fixed operation per segment and reports them as
    /// one result; the blocking and inline engines make one
    /// `preadv2` / `pwritev2` of them. Every piece obeys
    /// [`IoMemory::region`]'s rules (no segment this process leases from).
    ///
    /// # Safety
    /// As [`IoMemory::region`], for every byte of the range.
    ///
    /// # Errors
    /// [`Error::BadRegion`] for an empty or overflowing range, one past the
    /// pool, one over a hole between segments, or one touching a segment
    /// this process leases from; [`Error::Forked`].
    #[allow(unsafe_code)]
    pub unsafe fn region_span(&self, offset: u64, len: u64) -> Result<Vec<IoBuf>> {
        self.check_home()?;
        let bad = |why: String| Error::BadRegion { offset, len, reason: why };
        let end =
            offset.checked_add(len).filter(|_| len > 0).ok_or_else(|| bad("an empty or overflowing range".into()))?;
        if end > self.len() {
            self.catch_up()?;
        }
        let mut pieces: Vec<(u64, usize)> = Vec::new();
        {
            let segs = self.inner.map.segs();
            let mut at = offset;
            while at < end {
                let Some(s) = segs.iter().find(|s| s.seg.offset <= at && at < s.seg.offset + s.seg.len) else {
                    return Err(if at == offset {
                        bad(format!("past the pool ({} bytes)", self.len()))
                    } else {
                        bad(format!("byte {at} of the pool is in no segment"))
                    });
                };
                let stop = end.min(s.seg.offset + s.seg.len);
                // A segment is at most 1 GiB: its piece fits in a usize.
                let n = usize::try_from(stop - at).map_err(|_| bad("a piece larger than memory".into()))?;
                pieces.push((at, n));
                at = stop;
            }
        }
        // SAFETY: the caller's promise covers every byte of the range, so
        // every piece of it.
        pieces.into_iter().map(|(at, n)| unsafe { self.region(at, n) }).collect()
    }
}

/// Whether this memory is a view whose rings follow the owner's pool.
fn follows_owner(m: &IoMemory) -> bool {
    m.inner.view.as_ref().is_some_and(|v| !v.channels.lock().unwrap_or_else(|p| p.into_inner()).is_empty())
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
        if self.memory.inner.home.is_here() {
            self.memory.park(self.range.clone(), token);
        }
    }
}

impl Drop for SegmentReservation {
    fn drop(&mut self) {
        if !self.release || !self.memory.inner.home.is_here() {
            return;
        }
        self.memory.inner.lease.alloc.with_buddy(|b| {
            for seg in self.range.clone() {
                b.return_segment(u32::from(seg));
            }
        });
        self.memory.inner.lease.alloc.notify_grown();
    }
}
