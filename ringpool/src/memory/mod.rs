//! `IoMemory`: the IO memory pool, by concept:
//!
//! - this file: the mappings, split into segments (what `IoMemory` is);
//! - [`pages`], [`prefault`], [`grow`], [`shrink`]: choosing the pages,
//!   faulting them in, adding and releasing segments;
//! - [`leasing`]: `IoBuf` leases from the buddy allocator, segments kept
//!   out of leasing for other processes, regions;
//! - [`view`]: the process-shared view (the layout another process maps,
//!   and the registrar's addresses);
//! - [`isolate`]: fresh memory per segment, and the layout of a client
//!   that reaches only its own segments.

mod codec;
mod follow;
mod grow;
mod isolate;
pub(crate) use isolate::MAX_ISOLATED_SEGMENTS;
mod leasing;
mod pages;
mod prefault;
mod shrink;
mod view;

use std::fmt;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard};
use std::time::Duration;

pub(crate) use codec::{encode_shrink_notice, Reader};
use leasing::Leasing;
pub use leasing::{AllocFuture, SegmentReservation};
use view::View;
pub(crate) use view::{Layout, ABSENT};
#[cfg(test)]
pub(crate) use view::{MapDesc, SegDesc};

/// The page kind `policy` gives a pool of `size` bytes now, and why.
pub(crate) fn choose_pages(size: u64, policy: PagePolicy) -> Result<(PageKind, String)> {
    pages::choose(size, policy)
}

use crate::alloc::{Buddy, Grant};
use crate::error::{Error, Result};
use crate::home::Home;
use crate::stats::SegmentStats;
use crate::sys::buf::LeaseOwner;
use crate::sys::mmap::Mapping;
use crate::types::{Bytes, PageKind, PagePolicy, Segment, MAX_SEGMENTS, MAX_SEGMENT_SIZE};

/// How to map the pool.
#[derive(Debug, Clone)]
pub struct MemoryOptions {
    /// Page policy (default [`PagePolicy::Auto`]).
    pub page: PagePolicy,
    /// Segment size: a power of two, at least the page size, at most 1 GiB
    /// (default 1 GiB, or the pool rounded up to a power of two if smaller).
    pub segment_size: Option<u64>,
    /// Lease alignment: a power of two from 512 to the segment size
    /// (default 4096, the usual O_DIRECT memory alignment).
    pub alignment: u64,
    /// Map the pool shared, from memfds ([`MemoryOptions::shared`]).
    pub shared: bool,
}

impl Default for MemoryOptions {
    fn default() -> Self {
        MemoryOptions { page: PagePolicy::Auto, segment_size: None, alignment: 4096, shared: false }
    }
}

impl MemoryOptions {
    /// Default options.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets the page policy.
    pub fn page(mut self, page: PagePolicy) -> Self {
        self.page = page;
        self
    }
    /// Sets the segment size.
    pub fn segment_size(mut self, bytes: u64) -> Self {
        self.segment_size = Some(bytes);
        self
    }
    /// Sets the lease alignment.
    pub fn alignment(mut self, bytes: u64) -> Self {
        self.alignment = bytes;
        self
    }
    /// Maps the pool shared, from memfds (`MFD_HUGETLB` for 2 MiB / 1 GiB
    /// pages; shmem, with THP where `shmem_enabled` allows it, otherwise):
    /// memory a forked child inherits and other processes map from the
    /// memfd, so that rings handed to them
    /// ([`BufferTable::handover`](crate::BufferTable::handover)) reach it.
    pub fn shared(mut self) -> Self {
        self.shared = true;
        self
    }
}

/// A segment and the mapping that holds it.
#[derive(Clone)]
pub(crate) struct SegInfo {
    /// The segment (its `addr` is where this process maps it).
    pub(crate) seg: Segment,
    map: Arc<Mapping>,
    /// Offset of the segment in its mapping.
    map_off: usize,
}

/// Everything behind an [`IoMemory`] handle, by concept: the mapping and
/// its segments, leasing, and (for memory another process registered) the
/// view of the registrar's pool.
pub(crate) struct PoolInner {
    /// The mappings and their segments.
    pub(crate) map: Mapped,
    /// The allocator, and the segments held back for other processes.
    pub(crate) lease: Leasing,
    /// For memory handed over by another process: where the registrar has
    /// each segment, and which memfds hold it.
    pub(crate) view: Option<View>,
    /// Mapped from memfds, shared with other processes.
    pub(crate) shared: bool,
    /// The process that mapped the memory: private mappings are
    /// MADV_DONTFORK, absent in a forked child, whose copy of the allocator
    /// is the parent's.
    home: Home,
    /// The tables registered over it (and followed by their rings): a
    /// shrink must reach every ring that may hold its segments.
    links: Mutex<Vec<std::sync::Weak<crate::link::TableLink>>>,
}

/// The pool's mappings, split into segments.
pub(crate) struct Mapped {
    pub(crate) kind: PageKind,
    pub(crate) choice: String,
    pub(crate) requested: u64,
    pub(crate) segment_size: u64,
    pub(crate) align: u64,
    /// Segments in table order; segment `i` starts at pool offset
    /// `i * segment_size`.
    pub(crate) segs: RwLock<Vec<SegInfo>>,
    pub(crate) prefault: Mutex<Option<Duration>>,
    /// Serialises growth and shrink (held from the capacity check to
    /// publication).
    pub(crate) growing: Mutex<()>,
}

impl Mapped {
    pub(crate) fn segment_of(&self, offset: u64) -> u16 {
        // Offsets come from grants inside the pool, whose segments number at
        // most 16384: the quotient fits.
        u16::try_from(offset / self.segment_size).unwrap_or(u16::MAX)
    }

    pub(crate) fn segs(&self) -> RwLockReadGuard<'_, Vec<SegInfo>> {
        self.segs.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The iovecs of segments `[from, to)`, for registration.
    pub(crate) fn iovs(&self, from: u16, to: u16) -> Vec<crate::sys::uring::Iov> {
        let segs = self.segs();
        let to = (to as usize).min(segs.len());
        let from = (from as usize).min(to);
        segs[from..to].iter().map(|s| crate::sys::uring::Iov::new(&s.map, s.map_off, s.seg.len as usize)).collect()
    }

    pub(crate) fn segment_count(&self) -> u16 {
        // At most 16384 segments (checked when mapping and growing).
        u16::try_from(self.segs().len()).unwrap_or(u16::MAX)
    }
}

impl LeaseOwner for PoolInner {
    fn addr(&self, grant: &Grant) -> NonNull<u8> {
        let segs = self.map.segs();
        let s = &segs[self.map.segment_of(grant.offset()) as usize];
        let addr = s.seg.addr + (grant.offset() - s.seg.offset) as usize;
        NonNull::new(addr as *mut u8).expect("a mapping never starts at address 0")
    }

    fn release(&self, grant: Grant) {
        if !grant.is_region() {
            self.lease.alloc.release(grant);
        } else if let Some(view) = &self.view {
            let seg = self.map.segment_of(grant.offset());
            let mut regions = view.regions.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(c) = regions.get_mut(&seg) {
                *c = c.saturating_sub(1);
                if *c == 0 {
                    regions.remove(&seg);
                }
            }
        }
    }

    fn is_mapped_here(&self) -> bool {
        self.home.is_here()
    }

    fn is_home(&self) -> bool {
        self.home.is_here()
    }
}

/// The IO memory pool: anonymous mappings under a page policy, split into
/// segments of at most 1 GiB (at most 16384), with a lease allocator.
///
/// `IoMemory` is a cheap handle (clone it freely). The mapping is unmapped
/// only when the last handle, lease, table and ring that can reach it are
/// gone.
///
/// ```no_run
/// use ringpool::types::PagePolicy;
/// use ringpool::IoMemory;
/// let mem = IoMemory::map(1 << 30, PagePolicy::Auto)?;
/// println!("{} in {} segments of {}", mem.len(), mem.segment_count(), mem.page_kind());
/// mem.prefault(|p| eprint!("\r{} / {}", p.done, p.total))?;
/// let mut buf = mem.try_alloc(64 << 10)?;
/// buf.fill(0xab);
/// # Ok::<(), ringpool::Error>(())
/// ```
#[derive(Clone)]
pub struct IoMemory {
    pub(crate) inner: Arc<PoolInner>,
}

impl fmt::Debug for IoMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IoMemory")
            .field("len", &self.len())
            .field("page", &self.inner.map.kind)
            .field("segments", &self.inner.map.segment_count())
            .finish()
    }
}

/// The segments of `len` bytes mapped at `map`, numbered from `first`.
fn segments_of(map: &Arc<Mapping>, first: u64, len: u64, segment_size: u64) -> Vec<SegInfo> {
    let n = len.div_ceil(segment_size);
    (0..n)
        .map(|i| {
            let map_off = i * segment_size;
            let seg = Segment {
                // first + n <= 16384: checked by the callers.
                index: (first + i) as u16,
                offset: (first + i) * segment_size,
                len: segment_size.min(len - map_off),
                addr: map.addr() + map_off as usize,
            };
            SegInfo { seg, map: map.clone(), map_off: map_off as usize }
        })
        .collect()
}

impl IoMemory {
    /// Maps `size` bytes under `page` with default options.
    ///
    /// # Errors
    /// See [`IoMemory::map_with`].
    pub fn map(size: u64, page: PagePolicy) -> Result<IoMemory> {
        Self::map_with(size, &MemoryOptions::new().page(page))
    }

    /// Maps `size` bytes. A size that is not a multiple of the page size is
    /// rounded up ([`IoMemory::len`] says to what). The memory is not faulted
    /// in: call [`IoMemory::prefault`] before registering it.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a zero size, a size that does not fit
    /// the address space, a bad segment size or alignment;
    /// [`Error::TooManySegments`]; [`Error::HugePagesUnavailable`] naming the
    /// pages needed and the sysfs file to write; [`Error::InsufficientMemory`];
    /// [`Error::Io`] from `mmap`.
    pub fn map_with(size: u64, opts: &MemoryOptions) -> Result<IoMemory> {
        if size == 0 {
            return Err(Error::invalid("pool size", 0, "it must be at least one page (4 KiB)"));
        }
        let (kind, choice) = pages::choose(size, opts.page)?;
        let page = kind.bytes();
        let len = pages::round_to_pages("pool size", size, kind)?;
        let segment_size = match opts.segment_size {
            Some(s) => {
                if !s.is_power_of_two() || s < page || s > MAX_SEGMENT_SIZE {
                    return Err(Error::invalid(
                        "segment size",
                        Bytes(s),
                        format!("it must be a power of two from the page size ({}) to 1 GiB", Bytes(page)),
                    ));
                }
                s
            }
            None => len.checked_next_power_of_two().unwrap_or(MAX_SEGMENT_SIZE).clamp(page, MAX_SEGMENT_SIZE),
        };
        let nseg = len.div_ceil(segment_size);
        if nseg > MAX_SEGMENTS {
            return Err(Error::TooManySegments { size: Bytes(len), segment: Bytes(segment_size), segments: nseg });
        }
        let align = opts.alignment;
        if !align.is_power_of_two() || align < 512 || align > segment_size {
            return Err(Error::invalid("alignment", align, "it must be a power of two from 512 to the segment size"));
        }
        if kind.is_hugetlb() && align > page {
            return Err(Error::invalid(
                "alignment",
                align,
                format!("hugetlb memory aligns to its page size ({})", Bytes(page)),
            ));
        }
        let map = pages::map(kind, len, align, opts.shared)?;
        let segments = segments_of(&map, 0, len, segment_size);
        let buddy = Buddy::new(len, segment_size.trailing_zeros(), align.trailing_zeros());
        if len != size {
            tracing::info!(requested = size, len, page = %kind, "pool size rounded up to a multiple of the page size");
        }
        tracing::debug!(len, segments = nseg, page = %kind, %choice, "mapped IO memory");
        let map = Mapped {
            kind,
            choice,
            requested: size,
            segment_size,
            align,
            segs: RwLock::new(segments),
            prefault: Mutex::new(None),
            growing: Mutex::new(()),
        };
        Ok(IoMemory::from_parts(map, Leasing::new(buddy), None, opts.shared))
    }

    /// A handle over memory mapped here (`view`: memory another process
    /// registered).
    pub(crate) fn from_parts(map: Mapped, lease: Leasing, view: Option<View>, shared: bool) -> IoMemory {
        IoMemory {
            inner: Arc::new(PoolInner {
                map,
                lease,
                view,
                shared,
                home: Home::here("IoMemory"),
                links: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Length in bytes: the requested size rounded up to the page size,
    /// plus everything grown since.
    pub fn len(&self) -> u64 {
        self.inner.map.segs().iter().map(|s| s.seg.len).sum()
    }

    /// Always `false`: a pool has at least one page.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The size that was asked for, before rounding.
    pub fn requested_len(&self) -> u64 {
        self.inner.map.requested
    }

    /// The pages that back the pool.
    pub fn page_kind(&self) -> PageKind {
        self.inner.map.kind
    }

    /// Why this page size was chosen (for [`PagePolicy::Auto`], what was
    /// tried).
    pub fn page_choice(&self) -> &str {
        &self.inner.map.choice
    }

    /// The segment size.
    pub fn segment_size(&self) -> u64 {
        self.inner.map.segment_size
    }

    /// The segments, in table order (a copy: the pool may grow).
    pub fn segments(&self) -> Vec<Segment> {
        self.inner.map.segs().iter().map(|s| s.seg).collect()
    }

    /// How many segments the pool has now.
    pub fn segment_count(&self) -> u16 {
        self.inner.map.segment_count()
    }

    /// The lease alignment.
    pub fn alignment(&self) -> u64 {
        self.inner.map.align
    }

    /// Address of the first byte of the first segment in this process
    /// (every segment's is in [`IoMemory::segments`]).
    pub fn addr(&self) -> usize {
        self.inner.map.segs()[0].seg.addr
    }

    /// The iovecs of segments `[from, to)`, for registration.
    pub(crate) fn iovs(&self, from: u16, to: u16) -> Vec<crate::sys::uring::Iov> {
        self.inner.map.iovs(from, to)
    }

    /// Records a table registered over this memory.
    pub(crate) fn add_link(&self, link: &Arc<crate::link::TableLink>) {
        let mut l = self.inner.links.lock().unwrap_or_else(|p| p.into_inner());
        l.retain(|w| w.strong_count() > 0);
        l.push(Arc::downgrade(link));
    }

    /// Tables (or rings of tables) over this memory that live now, other
    /// than `own`.
    pub(crate) fn other_links(&self, own: Option<&Arc<crate::link::TableLink>>) -> usize {
        let l = self.inner.links.lock().unwrap_or_else(|p| p.into_inner());
        l.iter().filter_map(std::sync::Weak::upgrade).filter(|link| own.is_none_or(|o| !Arc::ptr_eq(o, link))).count()
    }

    /// Each segment now: where it is, and what is leased from it.
    pub fn segment_stats(&self) -> Vec<SegmentStats> {
        self.reclaim_handed_segments();
        // The segments first, then the allocator: never both locks at once.
        let segs: Vec<Segment> = self.segments();
        self.inner.lease.alloc.with_buddy(|b| {
            let used = b.per_segment();
            segs.iter()
                .map(|s| {
                    let u = used.get(usize::from(s.index)).copied().unwrap_or_default();
                    SegmentStats {
                        index: s.index,
                        offset: s.offset,
                        len: s.len,
                        bytes_leased: u.bytes,
                        leases: u.leases,
                    }
                })
                .collect()
        })
    }

    /// Whether the pool is mapped shared ([`MemoryOptions::shared`]).
    pub fn is_shared(&self) -> bool {
        self.inner.shared
    }

    /// What to add to the address of a byte of segment `segment` to get the
    /// address the kernel's registered buffer knows it by (not 0 in a
    /// process that maps memory another process registered).
    pub(crate) fn shift_of(&self, segment: u16) -> usize {
        match &self.inner.view {
            None => 0,
            Some(v) => {
                let local = self.inner.map.segs().get(segment as usize).map_or(0, |s| s.seg.addr);
                let addrs = v.addrs.read().unwrap_or_else(|p| p.into_inner());
                addrs.get(segment as usize).map_or(0, |&a| (a as usize).wrapping_sub(local))
            }
        }
    }

    /// Whether a lease came from this pool.
    pub(crate) fn owns(&self, buf: &crate::buf::IoBuf) -> bool {
        buf.pool_id() == Arc::as_ptr(&self.inner) as *const ()
    }

    /// Whether both handles are the same pool.
    pub(crate) fn same_pool(&self, other: &IoMemory) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// [`Error::Forked`] in a process forked from the one that mapped it.
    pub(crate) fn check_home(&self) -> Result<()> {
        self.inner.home.check()
    }

    pub(crate) fn growth_lock(&self) -> MutexGuard<'_, ()> {
        self.inner.map.growing.lock().unwrap_or_else(|p| p.into_inner())
    }
}
