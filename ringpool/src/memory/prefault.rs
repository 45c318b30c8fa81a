//! Faulting the pool in before it is registered, in parallel, with progress.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::IoMemory;
use crate::error::{Error, Result};
use crate::sys::mmap::Mapping;
use crate::types::Progress;

/// Threads a prefault uses by default: the CPUs, at most 8.
fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get()).min(8)
}

impl IoMemory {
    /// Faults every page in for writing, in parallel on up to 8 threads,
    /// calling `progress` after each chunk (from any of those threads).
    /// Returns how long it took (also kept: [`IoMemory::prefault_time`]).
    ///
    /// # Errors
    /// [`Error::Io`] if the kernel cannot supply the memory (ENOMEM, or
    /// EFAULT for hugetlb pages taken by someone else).
    pub fn prefault(&self, progress: impl Fn(Progress) + Sync) -> Result<Duration> {
        self.check_home()?;
        let took = self.prefault_range(0, self.len(), default_threads(), progress)?;
        if let Ok(mut p) = self.inner.map.prefault.lock() {
            *p = Some(took);
        }
        Ok(took)
    }

    /// How long the last [`IoMemory::prefault`] took, if one ran.
    pub fn prefault_time(&self) -> Option<Duration> {
        self.inner.map.prefault.lock().ok().and_then(|p| *p)
    }

    /// Faults segments `range` in (as [`IoMemory::prefault`]).
    pub(crate) fn prefault_segments(&self, range: Range<u16>, progress: impl Fn(Progress) + Sync) -> Result<Duration> {
        let segs = self.inner.map.segs();
        let (Some(first), Some(last)) =
            (segs.get(range.start as usize), range.end.checked_sub(1).and_then(|l| segs.get(l as usize)))
        else {
            return Ok(Duration::ZERO);
        };
        let (start, end) = (first.seg.offset, last.seg.offset + last.seg.len);
        drop(segs);
        self.prefault_range(start, end - start, default_threads(), progress)
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
        self.check_home()?;
        let start = Instant::now();
        let page = self.inner.map.kind.bytes();
        let begin = offset / page * page;
        let pool_end = self.inner.map.segs().last().map_or(0, |s| s.seg.offset + s.seg.len);
        let end = offset.checked_add(len).and_then(|e| e.checked_next_multiple_of(page)).filter(|&e| e <= pool_end);
        let Some(end) = end else {
            return Err(Error::invalid(
                "prefault range",
                format!("{offset}+{len}"),
                format!("the pool ends at offset {pool_end}"),
            ));
        };
        let work = self.chunks(begin, end, page);
        // Without MADV_POPULATE_WRITE (before 5.14), a chunk is touched by
        // hand, only while it is free of leases, under the allocator's lock.
        let touch = |c: &Chunk| {
            let free = self
                .inner
                .lease
                .alloc
                .with_buddy(|b| b.is_free(c.pool_off, c.len as u64).then(|| c.map.touch(c.map_off, c.len, 4096)));
            free.unwrap_or(Ok(()))
        };
        run_parallel(&work, threads, &touch, progress).map_err(|e| Error::os("prefault", e))?;
        Ok(start.elapsed())
    }

    /// `[begin, end)` as chunks of at most 64 MiB (or one page), each inside
    /// one segment (none in a view's absent segments: nothing is there).
    fn chunks(&self, begin: u64, end: u64, page: u64) -> Vec<Chunk> {
        let chunk = (64u64 << 20).max(page);
        let mut out = Vec::new();
        let absent = |i: u16| self.inner.view.as_ref().is_some_and(|v| v.absent.contains(&i));
        for s in self.inner.map.segs().iter().filter(|s| !absent(s.seg.index)) {
            let (a, b) = (s.seg.offset.max(begin), (s.seg.offset + s.seg.len).min(end));
            let mut at = a;
            while at < b {
                let n = chunk.min(b - at);
                let map_off = s.map_off + (at - s.seg.offset) as usize;
                out.push(Chunk { map: s.map.clone(), map_off, pool_off: at, len: n as usize });
                at += n;
            }
        }
        out
    }
}

/// A range to fault in: its mapping, its place there and in the pool.
struct Chunk {
    map: Arc<Mapping>,
    map_off: usize,
    pool_off: u64,
    len: usize,
}

/// Populates every chunk on up to `threads` threads (this one included);
/// `touch` faults a chunk in where the kernel cannot populate it.
fn run_parallel(
    work: &[Chunk],
    threads: usize,
    touch: &(dyn Fn(&Chunk) -> std::io::Result<()> + Sync),
    progress: impl Fn(Progress) + Sync,
) -> std::io::Result<()> {
    let total: u64 = work.iter().map(|w| w.len as u64).sum();
    let next = AtomicUsize::new(0);
    let done = AtomicU64::new(0);
    let failed: Mutex<Option<std::io::Error>> = Mutex::new(None);
    let one = || loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= work.len() || failed.lock().map(|f| f.is_some()).unwrap_or(true) {
            return;
        }
        let c = &work[i];
        let r = match c.map.populate(c.map_off, c.len) {
            Ok(true) => Ok(()),
            Ok(false) => touch(c),
            Err(e) => Err(e),
        };
        if let Err(e) = r {
            if let Ok(mut f) = failed.lock() {
                f.get_or_insert(e);
            }
            return;
        }
        let d = done.fetch_add(c.len as u64, Ordering::Relaxed) + c.len as u64;
        progress(Progress { done: d, total });
    };
    let threads = threads.clamp(1, work.len().max(1));
    std::thread::scope(|s| {
        for _ in 1..threads {
            s.spawn(one);
        }
        one();
    });
    match failed.into_inner().ok().flatten() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
