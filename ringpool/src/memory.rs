//! `IoMemory`: the IO memory pool, one mapping split into segments.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::alloc::{AllocStats, Allocator, Buddy, Grant};
use crate::error::{Error, Result};
use crate::probe::{HugePages, ThpMode};
use crate::sys::buf::IoBuf;
use crate::sys::mmap::{Backing, Mapping};
use crate::units::Bytes;

/// Most entries a registered buffer table can hold (kernel limit).
pub const MAX_SEGMENTS: u64 = 16384;
/// Largest registered buffer (kernel limit); also the largest segment.
pub const MAX_SEGMENT_SIZE: u64 = 1 << 30;

/// Which pages back the pool, as asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PagePolicy {
    /// The largest hugetlb size with enough free pages, else transparent huge
    /// pages, else base pages. The choice is reported by
    /// [`IoMemory::page_choice`].
    #[default]
    Auto,
    /// 1 GiB hugetlb pages (reserve them in
    /// `/sys/kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages`).
    Huge1G,
    /// 2 MiB hugetlb pages (reserve them in
    /// `/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages`).
    Huge2M,
    /// Anonymous memory with `MADV_HUGEPAGE` (transparent huge pages).
    Transparent,
    /// 4 KiB base pages only (`MADV_NOHUGEPAGE`).
    Base,
}

impl std::str::FromStr for PagePolicy {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(PagePolicy::Auto),
            "1g" | "1gib" | "huge1g" => Ok(PagePolicy::Huge1G),
            "2m" | "2mib" | "huge2m" => Ok(PagePolicy::Huge2M),
            "thp" | "transparent" => Ok(PagePolicy::Transparent),
            "4k" | "4kib" | "base" => Ok(PagePolicy::Base),
            _ => Err(format!("unknown page size {s:?}: expected auto, 1g, 2m, thp or 4k")),
        }
    }
}

/// Which pages back the pool, as chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PageKind {
    /// 1 GiB hugetlb pages.
    Huge1G,
    /// 2 MiB hugetlb pages.
    Huge2M,
    /// Transparent huge pages (2 MiB where the kernel can, else 4 KiB).
    Transparent,
    /// 4 KiB base pages.
    Base,
}

impl PageKind {
    /// The page size in bytes (the size granularity of the pool).
    pub fn bytes(self) -> u64 {
        match self {
            PageKind::Huge1G => 1 << 30,
            PageKind::Huge2M | PageKind::Transparent => 2 << 20,
            PageKind::Base => 4096,
        }
    }

    /// Short name as the CLI takes it: `1g`, `2m`, `thp`, `4k`.
    pub fn short_name(self) -> &'static str {
        match self {
            PageKind::Huge1G => "1g",
            PageKind::Huge2M => "2m",
            PageKind::Transparent => "thp",
            PageKind::Base => "4k",
        }
    }

    fn is_hugetlb(self) -> bool {
        matches!(self, PageKind::Huge1G | PageKind::Huge2M)
    }

    fn backing(self) -> Backing {
        match self {
            PageKind::Huge1G => Backing::Hugetlb { shift: 30 },
            PageKind::Huge2M => Backing::Hugetlb { shift: 21 },
            PageKind::Transparent => Backing::Transparent,
            PageKind::Base => Backing::Base,
        }
    }
}

impl fmt::Display for PageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PageKind::Huge1G => "1 GiB hugetlb",
            PageKind::Huge2M => "2 MiB hugetlb",
            PageKind::Transparent => "transparent huge",
            PageKind::Base => "4 KiB base",
        })
    }
}

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
}

impl Default for MemoryOptions {
    fn default() -> Self {
        MemoryOptions { page: PagePolicy::Auto, segment_size: None, alignment: 4096 }
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
}

/// One entry of the buffer table: a contiguous part of the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Index in the registered table (`sqe.buf_index`).
    pub index: u16,
    /// Offset of its first byte in the pool.
    pub offset: u64,
    /// Length in bytes (at most 1 GiB).
    pub len: u64,
}

/// Progress of a long operation: bytes done of bytes total.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Bytes done.
    pub done: u64,
    /// Bytes in all.
    pub total: u64,
}

/// A segment and the mapping that holds it.
#[derive(Clone)]
pub(crate) struct SegInfo {
    pub(crate) seg: Segment,
    /// Address of the segment's first byte.
    pub(crate) addr: usize,
    map: Arc<Mapping>,
    /// Offset of the segment in its mapping.
    map_off: usize,
}

pub(crate) struct PoolShared {
    kind: PageKind,
    choice: String,
    requested: u64,
    segment_size: u64,
    align: u64,
    /// Segments in table order; grows, never shrinks. Segment `i` starts at
    /// pool offset `i * segment_size`.
    segs: RwLock<Vec<SegInfo>>,
    pub(crate) alloc: Allocator,
    prefault: Mutex<Option<Duration>>,
    /// Serialises growth.
    growing: Mutex<()>,
}

impl PoolShared {
    pub(crate) fn release(&self, grant: Grant) {
        self.alloc.release(grant);
    }

    pub(crate) fn segment_of(&self, offset: u64) -> u16 {
        (offset / self.segment_size) as u16
    }

    fn segs(&self) -> std::sync::RwLockReadGuard<'_, Vec<SegInfo>> {
        self.segs.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Address of the byte at pool offset `offset` (inside a mapped segment).
    pub(crate) fn addr_of(&self, offset: u64) -> usize {
        let segs = self.segs();
        let s = &segs[self.segment_of(offset) as usize];
        s.addr + (offset - s.seg.offset) as usize
    }

    /// The iovecs of segments `[from, to)`, for registration.
    pub(crate) fn iovs(&self, from: u16, to: u16) -> Vec<crate::sys::uring::Iov> {
        self.segs()[from as usize..to as usize]
            .iter()
            .map(|s| crate::sys::uring::Iov::new(&s.map, s.map_off, s.seg.len as usize))
            .collect()
    }

    pub(crate) fn segment_count(&self) -> u16 {
        self.segs().len() as u16
    }
}

/// The IO memory pool: one anonymous mapping under a page policy, split into
/// segments of at most 1 GiB (at most 16384), with a lease allocator.
///
/// `IoMemory` is a cheap handle (clone it freely). The mapping is unmapped
/// only when the last handle, lease, table and ring that can reach it are
/// gone.
///
/// ```no_run
/// use ringpool::{IoMemory, PagePolicy};
/// let mem = IoMemory::map(1 << 30, PagePolicy::Auto)?;
/// println!("{} in {} segments of {}", mem.len(), mem.segment_count(), mem.page_kind());
/// mem.prefault(|p| eprint!("\r{} / {}", p.done, p.total))?;
/// let mut buf = mem.try_alloc(64 << 10)?;
/// buf.fill(0xab);
/// # Ok::<(), ringpool::Error>(())
/// ```
#[derive(Clone)]
pub struct IoMemory {
    pub(crate) shared: Arc<PoolShared>,
}

impl fmt::Debug for IoMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IoMemory")
            .field("len", &self.len())
            .field("page", &self.shared.kind)
            .field("segments", &self.shared.segment_count())
            .finish()
    }
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
    /// [`Error::InvalidArgument`] for a zero size, a bad segment size or
    /// alignment; [`Error::TooManySegments`]; [`Error::HugePagesUnavailable`]
    /// naming the pages needed and the sysfs file to write;
    /// [`Error::InsufficientMemory`]; [`Error::Io`] from `mmap`.
    pub fn map_with(size: u64, opts: &MemoryOptions) -> Result<IoMemory> {
        if size == 0 {
            return Err(Error::invalid("pool size", 0, "it must be at least one page (4 KiB)"));
        }
        let (kind, choice) = choose_page(size, opts.page)?;
        let page = kind.bytes();
        let len = size.checked_next_multiple_of(page).ok_or_else(|| Error::invalid("pool size", size, "too large"))?;
        if len > usize::MAX as u64 / 2 {
            return Err(Error::invalid("pool size", Bytes(size), "larger than the address space"));
        }
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
            None => len.next_power_of_two().clamp(page, MAX_SEGMENT_SIZE),
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
        check_capacity(kind, len)?;
        let mapping =
            Mapping::map(len as usize, kind.backing(), align as usize).map_err(|e| match e.raw_os_error() {
                // hugetlb: the pages were taken between our check and mmap.
                Some(libc::ENOMEM) if kind.is_hugetlb() => match check_capacity(kind, len) {
                    Err(err) => err,
                    Ok(()) => Error::os("mmap", e),
                },
                _ => Error::os("mmap", e),
            })?;
        let map = Arc::new(mapping);
        let segments = (0..nseg)
            .map(|i| {
                let seg = Segment {
                    index: i as u16,
                    offset: i * segment_size,
                    len: segment_size.min(len - i * segment_size),
                };
                let map_off = seg.offset as usize;
                SegInfo { seg, addr: map.addr() + map_off, map: map.clone(), map_off }
            })
            .collect();
        let buddy = Buddy::new(len, segment_size.trailing_zeros(), align.trailing_zeros());
        if len != size {
            tracing::info!(requested = size, len, page = %kind, "pool size rounded up to a multiple of the page size");
        }
        tracing::debug!(len, segments = nseg, page = %kind, %choice, "mapped IO memory");
        Ok(IoMemory {
            shared: Arc::new(PoolShared {
                kind,
                choice,
                requested: size,
                segment_size,
                align,
                segs: RwLock::new(segments),
                alloc: Allocator::new(buddy),
                prefault: Mutex::new(None),
                growing: Mutex::new(()),
            }),
        })
    }

    /// Length in bytes: the requested size rounded up to the page size,
    /// plus everything grown since.
    pub fn len(&self) -> u64 {
        self.shared.segs().iter().map(|s| s.seg.len).sum()
    }

    /// Always `false`: a pool has at least one page.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The size that was asked for, before rounding.
    pub fn requested_len(&self) -> u64 {
        self.shared.requested
    }

    /// The pages that back the pool.
    pub fn page_kind(&self) -> PageKind {
        self.shared.kind
    }

    /// Why this page size was chosen (for [`PagePolicy::Auto`], what was
    /// tried).
    pub fn page_choice(&self) -> &str {
        &self.shared.choice
    }

    /// The segment size.
    pub fn segment_size(&self) -> u64 {
        self.shared.segment_size
    }

    /// The segments, in table order (a copy: the pool may grow).
    pub fn segments(&self) -> Vec<Segment> {
        self.shared.segs().iter().map(|s| s.seg).collect()
    }

    /// How many segments the pool has now.
    pub fn segment_count(&self) -> u16 {
        self.shared.segment_count()
    }

    /// Maps `bytes` more (rounded up to the page size) under the pool's page
    /// kind as new segments, prefaults them, and makes them leasable.
    /// Returns the new segment indexes.
    ///
    /// With a [`BufferTable`](crate::BufferTable) or an
    /// [`IoPool`](crate::IoPool) over this memory, grow through
    /// [`BufferTable::grow`](crate::BufferTable::grow) /
    /// [`IoPool::grow`](crate::IoPool::grow) instead: they register the new
    /// segments before any lease of them exists.
    ///
    /// # Errors
    /// As [`IoMemory::map_with`] for the new memory;
    /// [`Error::TooManySegments`] past 16384 segments.
    pub fn grow(&self, bytes: u64) -> Result<std::ops::Range<u16>> {
        let range = self.extend(bytes)?;
        self.prefault_segments(range.clone(), |_| {})?;
        self.make_leasable(range.clone());
        Ok(range)
    }

    /// Maps new segments; they are visible in [`IoMemory::segments`] but not
    /// leasable until [`IoMemory::make_leasable`].
    pub(crate) fn extend(&self, bytes: u64) -> Result<std::ops::Range<u16>> {
        if bytes == 0 {
            return Err(Error::invalid("growth", 0, "it must be at least one page"));
        }
        let sh = &self.shared;
        let _g = sh.growing.lock().unwrap_or_else(|p| p.into_inner());
        let kind = sh.kind;
        let len =
            bytes.checked_next_multiple_of(kind.bytes()).ok_or_else(|| Error::invalid("growth", bytes, "too large"))?;
        let first = sh.segment_count() as u64;
        let nseg = len.div_ceil(sh.segment_size);
        if first + nseg > MAX_SEGMENTS {
            return Err(Error::TooManySegments {
                size: Bytes(self.len() + len),
                segment: Bytes(sh.segment_size),
                segments: first + nseg,
            });
        }
        check_capacity(kind, len)?;
        let map =
            Arc::new(Mapping::map(len as usize, kind.backing(), sh.align as usize).map_err(
                |e| match e.raw_os_error() {
                    Some(libc::ENOMEM) if kind.is_hugetlb() => {
                        check_capacity(kind, len).err().unwrap_or(Error::os("mmap", e))
                    }
                    _ => Error::os("mmap", e),
                },
            )?);
        let mut segs = sh.segs.write().unwrap_or_else(|p| p.into_inner());
        for i in 0..nseg {
            let map_off = (i * sh.segment_size) as usize;
            let index = (first + i) as u16;
            let seg = Segment {
                index,
                offset: (first + i) * sh.segment_size,
                len: sh.segment_size.min(len - i * sh.segment_size),
            };
            segs.push(SegInfo { seg, addr: map.addr() + map_off, map: map.clone(), map_off });
        }
        tracing::debug!(bytes = len, segments = nseg, first, "mapped more IO memory");
        Ok(first as u16..(first + nseg) as u16)
    }

    /// Hands segments `range` (from [`IoMemory::extend`]) to the allocator.
    pub(crate) fn make_leasable(&self, range: std::ops::Range<u16>) {
        let segs = self.shared.segs();
        let (Some(first), Some(last)) = (segs.get(range.start as usize), segs.get(range.end as usize - 1)) else {
            return;
        };
        let start = first.seg.offset;
        let len = last.seg.offset + last.seg.len - start;
        drop(segs);
        self.shared.alloc.with_buddy(|b| b.add_range(start, len));
        self.shared.alloc.notify_grown();
    }

    /// Faults segments `range` in (as [`IoMemory::prefault`]).
    pub(crate) fn prefault_segments(
        &self,
        range: std::ops::Range<u16>,
        progress: impl Fn(Progress) + Sync,
    ) -> Result<Duration> {
        let segs = self.shared.segs();
        let (Some(first), Some(last)) = (segs.get(range.start as usize), segs.get(range.end as usize - 1)) else {
            return Ok(Duration::ZERO);
        };
        let (start, end) = (first.seg.offset, last.seg.offset + last.seg.len);
        drop(segs);
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).min(8);
        self.prefault_range(start, end - start, threads, progress)
    }

    /// The lease alignment.
    pub fn alignment(&self) -> u64 {
        self.shared.alloc.with_buddy(|b| b.alignment())
    }

    /// Address of the first byte of the first segment (for diagnostics).
    pub fn addr(&self) -> usize {
        self.shared.segs()[0].addr
    }

    /// Faults every page in for writing, in parallel on up to 8 threads,
    /// calling `progress` after each chunk (from any of those threads).
    /// Returns how long it took (also kept: [`IoMemory::prefault_time`]).
    ///
    /// # Errors
    /// [`Error::Io`] if the kernel cannot supply the memory (ENOMEM, or
    /// EFAULT for hugetlb pages taken by someone else).
    pub fn prefault(&self, progress: impl Fn(Progress) + Sync) -> Result<Duration> {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).min(8);
        self.prefault_with(threads, progress)
    }

    /// [`IoMemory::prefault`] with an explicit number of threads.
    ///
    /// # Errors
    /// As [`IoMemory::prefault`].
    pub fn prefault_with(&self, threads: usize, progress: impl Fn(Progress) + Sync) -> Result<Duration> {
        let took = self.prefault_range(0, self.len(), threads, progress)?;
        if let Ok(mut p) = self.shared.prefault.lock() {
            *p = Some(took);
        }
        Ok(took)
    }

    /// Faults in `[offset, offset + len)` (rounded out to whole pages) on up
    /// to `threads` threads; `progress` counts bytes of this range.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a range outside the pool; otherwise as
    /// [`IoMemory::prefault`].
    pub fn prefault_range(
        &self,
        offset: u64,
        len: u64,
        threads: usize,
        progress: impl Fn(Progress) + Sync,
    ) -> Result<Duration> {
        let start = Instant::now();
        let page = self.shared.kind.bytes();
        let begin = offset / page * page;
        let pool_end = self.shared.segs().last().map_or(0, |s| s.seg.offset + s.seg.len);
        let end = offset.checked_add(len).map(|e| e.div_ceil(page) * page).filter(|&e| e <= pool_end);
        let Some(end) = end else {
            return Err(Error::invalid(
                "prefault range",
                format!("{offset}+{len}"),
                format!("the pool ends at offset {pool_end}"),
            ));
        };
        // Chunks of at most 64 MiB (or one page), each inside one segment.
        let chunk = (64u64 << 20).max(page);
        let mut work_list: Vec<(Arc<Mapping>, usize, usize)> = Vec::new();
        for s in self.shared.segs().iter() {
            let (a, b) = (s.seg.offset.max(begin), (s.seg.offset + s.seg.len).min(end));
            let mut at = a;
            while at < b {
                let n = chunk.min(b - at);
                work_list.push((s.map.clone(), s.map_off + (at - s.seg.offset) as usize, n as usize));
                at += n;
            }
        }
        let total: u64 = work_list.iter().map(|w| w.2 as u64).sum();
        let no_leases = self.stats().leases == 0;
        let next = AtomicUsize::new(0);
        let done = AtomicU64::new(0);
        let failed: Mutex<Option<std::io::Error>> = Mutex::new(None);
        let work = || loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= work_list.len() || failed.lock().map(|f| f.is_some()).unwrap_or(true) {
                return;
            }
            let (map, off, len) = &work_list[i];
            if let Err(e) = map.populate(*off, *len, 4096, no_leases) {
                if let Ok(mut f) = failed.lock() {
                    f.get_or_insert(e);
                }
                return;
            }
            let d = done.fetch_add(*len as u64, Ordering::Relaxed) + *len as u64;
            progress(Progress { done: d, total });
        };
        let threads = threads.clamp(1, work_list.len().max(1));
        std::thread::scope(|s| {
            for _ in 1..threads {
                s.spawn(work);
            }
            work();
        });
        if let Some(e) = failed.into_inner().ok().flatten() {
            return Err(Error::os("prefault", e));
        }
        Ok(start.elapsed())
    }

    /// How long the last [`IoMemory::prefault`] took, if one ran.
    pub fn prefault_time(&self) -> Option<Duration> {
        self.shared.prefault.lock().ok().and_then(|p| *p)
    }

    /// Leases `len` bytes (rounded up to the alignment) or fails at once.
    ///
    /// # Errors
    /// [`Error::PoolExhausted`] when no block is free;
    /// [`Error::LeaseTooLarge`] beyond one segment; [`Error::InvalidArgument`]
    /// for zero.
    pub fn try_alloc(&self, len: usize) -> Result<IoBuf> {
        self.check_len(len)?;
        match self.shared.alloc.try_alloc(len, None) {
            Some(g) => Ok(self.lease(g)),
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
        let count = self.shared.segment_count();
        if segment >= count {
            return Err(Error::invalid("segment", segment, format!("the pool has {count} segments")));
        }
        match self.shared.alloc.try_alloc(len, Some(segment as u32)) {
            Some(g) => Ok(self.lease(g)),
            None => Err(self.exhausted(len)),
        }
    }

    /// Leases `len` bytes, waiting up to `timeout` for leases to come back.
    ///
    /// # Errors
    /// [`Error::Timeout`]; [`Error::LeaseTooLarge`]; [`Error::InvalidArgument`].
    pub fn alloc_timeout(&self, len: usize, timeout: Duration) -> Result<IoBuf> {
        self.check_len(len)?;
        match self.shared.alloc.alloc_wait(len, Some(timeout)) {
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
        let g = self.shared.alloc.alloc_wait(len, None).expect("an untimed wait returns only with a block");
        Ok(self.lease(g))
    }

    /// Leases `len` bytes as a future that resolves when a block is free
    /// (runtime-agnostic: woken by the free that makes room).
    pub fn alloc_async(&self, len: usize) -> AllocFuture {
        AllocFuture { mem: self.clone(), len, checked: self.check_len(len).err() }
    }

    /// Allocator statistics.
    pub fn stats(&self) -> AllocStats {
        self.shared.alloc.stats()
    }

    fn check_len(&self, len: usize) -> Result<()> {
        if len == 0 {
            return Err(Error::invalid("lease length", 0, "it must be at least 1 byte"));
        }
        if len as u64 > self.shared.segment_size {
            return Err(Error::LeaseTooLarge {
                requested: Bytes(len as u64),
                segment: Bytes(self.shared.segment_size),
            });
        }
        Ok(())
    }

    fn exhausted(&self, len: usize) -> Error {
        let st = self.stats();
        let rounded = self.shared.alloc.with_buddy(|b| b.round(len as u64));
        Error::PoolExhausted { requested: Bytes(rounded), in_use: Bytes(st.bytes_in_use), capacity: Bytes(st.capacity) }
    }

    fn lease(&self, g: Grant) -> IoBuf {
        let index = self.shared.segment_of(g.offset());
        IoBuf::from_grant(self.shared.clone(), g, index)
    }

    pub(crate) fn same_pool(&self, other: &Arc<PoolShared>) -> bool {
        Arc::ptr_eq(&self.shared, other)
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
        match self.mem.shared.alloc.poll_alloc(self.len, cx.waker()) {
            Some(g) => Poll::Ready(Ok(self.mem.lease(g))),
            None => Poll::Pending,
        }
    }
}

fn hugetlb_need(kind: PageKind, len: u64) -> Result<()> {
    let hp = HugePages::read(kind);
    let needed = len.div_ceil(kind.bytes());
    if !hp.present {
        return Err(Error::PageSizeUnavailable {
            page: kind,
            reason: format!("{} does not exist", HugePages::sysfs_dir(kind).display()),
        });
    }
    let avail = hp.available();
    if avail < needed {
        return Err(Error::HugePagesUnavailable {
            page: kind,
            needed,
            free: avail,
            want_total: hp.total + (needed - avail),
            sysfs: HugePages::nr_hugepages_path(kind),
        });
    }
    Ok(())
}

fn check_capacity(kind: PageKind, len: u64) -> Result<()> {
    if kind.is_hugetlb() {
        return hugetlb_need(kind, len);
    }
    if let Some(avail) = mem_available() {
        if len > avail {
            return Err(Error::InsufficientMemory { needed: Bytes(len), available: Bytes(avail) });
        }
    }
    Ok(())
}

/// `MemAvailable` from /proc/meminfo, in bytes.
pub(crate) fn mem_available() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: u64 =
        s.lines().find_map(|l| l.strip_prefix("MemAvailable:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb * 1024)
}

fn choose_page(size: u64, policy: PagePolicy) -> Result<(PageKind, String)> {
    let fixed = |k: PageKind| Ok((k, format!("{k} pages, as asked")));
    match policy {
        PagePolicy::Huge1G => fixed(PageKind::Huge1G),
        PagePolicy::Huge2M => fixed(PageKind::Huge2M),
        PagePolicy::Transparent => {
            let mode = ThpMode::read();
            if !mode.is_usable() {
                return Err(Error::PageSizeUnavailable {
                    page: PageKind::Transparent,
                    reason: format!(
                        "transparent huge pages are {mode:?} in /sys/kernel/mm/transparent_hugepage/enabled"
                    ),
                });
            }
            fixed(PageKind::Transparent)
        }
        PagePolicy::Base => fixed(PageKind::Base),
        PagePolicy::Auto => {
            let mut tried = Vec::new();
            for kind in [PageKind::Huge1G, PageKind::Huge2M] {
                let page = kind.bytes();
                let rounded = size.div_ceil(page) * page;
                // Skip a page size that would inflate the pool by more than 1/8.
                if rounded - size > size / 8 {
                    tried.push(format!("{kind}: pool not a multiple of {}", Bytes(page)));
                    continue;
                }
                let hp = HugePages::read(kind);
                let needed = rounded / page;
                if hp.present && hp.available() >= needed {
                    return Ok((kind, format!("auto: {kind} ({needed} pages needed, {} free)", hp.available())));
                }
                tried.push(format!("{kind}: {} free, {needed} needed", hp.available()));
            }
            let mode = ThpMode::read();
            if mode.is_usable() && size >= PageKind::Transparent.bytes() {
                tried.push(format!("THP is {mode:?}"));
                return Ok((PageKind::Transparent, format!("auto: transparent huge pages ({})", tried.join("; "))));
            }
            tried.push(format!("THP {mode:?} or pool under 2 MiB"));
            Ok((PageKind::Base, format!("auto: 4 KiB base pages ({})", tried.join("; "))))
        }
    }
}
