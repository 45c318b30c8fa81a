//! What the file system and device under an open file offer: FUSE or a
//! page-cache file system, the O_DIRECT alignment, non-blocking I/O, and
//! which engine is faster at depth 1 (each device's [`Profile`]).

use std::collections::HashMap;
use std::fs;
use std::os::fd::BorrowedFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::stats::{DeviceStats, ShallowStats};
use crate::sys;
use crate::types::{AlignmentSource, Nowait};

const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;
const TMPFS_MAGIC: i64 = 0x0102_1994;
const RAMFS_MAGIC: i64 = 0x8584_58f6;

/// Whether the fd lives on FUSE, whose I/O blocks the issuing thread.
pub(crate) fn is_fuse(fd: BorrowedFd<'_>) -> bool {
    matches!(sys::os::fs_magic(fd), Ok(FUSE_SUPER_MAGIC))
}

/// Whether the fd lives on tmpfs or ramfs (O_DIRECT accepted at open since
/// 6.6, but every byte stays in the page cache).
pub(crate) fn is_page_cache_fs(fd: BorrowedFd<'_>) -> bool {
    matches!(sys::os::fs_magic(fd), Ok(TMPFS_MAGIC) | Ok(RAMFS_MAGIC))
}

/// O_DIRECT alignment of an open file: (memory, offset, source).
pub(crate) fn alignment_of(fd: BorrowedFd<'_>) -> (u32, u32, AlignmentSource) {
    if let Ok(Some((mem, off))) = sys::os::statx_dioalign(fd) {
        return (mem, off.max(1), AlignmentSource::Statx);
    }
    if let Ok(dup) = fd.try_clone_to_owned() {
        let f = fs::File::from(dup);
        if let Ok(meta) = f.metadata() {
            let lbs = if meta.file_type().is_block_device() {
                sys::os::block_logical_size(fd).ok()
            } else {
                logical_block_size(meta.dev())
            };
            if let Some(b) = lbs.filter(|b| b.is_power_of_two()) {
                return (b, b, AlignmentSource::BlockDevice);
            }
        }
    }
    (4096, 4096, AlignmentSource::Default)
}

/// Logical block size of the device holding a file, from sysfs.
fn logical_block_size(dev: u64) -> Option<u32> {
    let (maj, min) = (libc::major(dev), libc::minor(dev));
    let base = PathBuf::from(format!("/sys/dev/block/{maj}:{min}"));
    for p in [base.join("queue/logical_block_size"), base.join("../queue/logical_block_size")] {
        if let Ok(s) = fs::read_to_string(&p) {
            if let Ok(v) = s.trim().parse() {
                return Some(v);
            }
        }
    }
    None
}

/// What ringpool learns about one device: whether it serves RWF_NOWAIT
/// (a one-block read trial, at the first file opened on it), and which
/// engine is faster at depth 1 in each direction (measured from the
/// operations themselves).
#[derive(Debug)]
pub(crate) struct Profile {
    /// Device number (a regular file's file system, or the block device).
    pub(crate) dev: u64,
    pub(crate) nowait: Nowait,
    /// Depth-1 latencies: reads, then writes.
    shallow: [Shallow; 2],
}

impl Profile {
    /// What an unreadable file or an untested device gets: nothing known.
    pub(crate) fn unknown() -> Arc<Profile> {
        Arc::new(Profile { dev: 0, nowait: Nowait::Unknown, shallow: Default::default() })
    }

    /// The depth-1 measurements of one direction.
    pub(crate) fn shallow(&self, writes: bool) -> &Shallow {
        &self.shallow[usize::from(writes)]
    }

    /// What it knows, as a report.
    pub(crate) fn stats(&self) -> DeviceStats {
        DeviceStats {
            device: self.dev,
            nowait: self.nowait,
            reads: self.shallow[0].stats(),
            writes: self.shallow[1].stats(),
        }
    }
}

/// Samples of each engine at depth 1 before the faster one is chosen.
const LEARN: u64 = 32;
/// Once chosen, one operation in this many still goes to the other engine,
/// so that a change of the device's behaviour is seen; that many times the
/// slower engine's latency over the faster's (so that sampling costs about
/// 1.5% whatever the gap), at most `EXPLORE_MAX`.
const EXPLORE_EVERY: u64 = 64;
const EXPLORE_MAX: u64 = 4096;

/// Which engine is faster at depth 1 on one device in one direction, from
/// the latency of operations started on an idle ring (push to completion):
/// an exponentially weighted mean of each engine's, the two alternating
/// while learning and the slower one sampled now and then after.
#[derive(Debug, Default)]
pub(crate) struct Shallow {
    /// Mean latency in ns: synchronous (preadv2 / pwritev2), then io_uring.
    mean_ns: [AtomicU64; 2],
    samples: [AtomicU64; 2],
    picks: AtomicU64,
}

/// What the depth-1 measurements say now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Too few samples of one engine yet.
    Learning,
    /// The synchronous path is faster (by 2% or more).
    Sync,
    /// io_uring is as fast or faster.
    IoUring,
}

impl Shallow {
    /// Whether the next operation started on an idle ring runs
    /// synchronously (inline).
    pub(crate) fn pick_sync(&self) -> bool {
        let n = self.picks.fetch_add(1, Ordering::Relaxed);
        match self.verdict() {
            Verdict::Learning => n.is_multiple_of(2),
            Verdict::Sync => !n.is_multiple_of(self.explore_every()),
            Verdict::IoUring => n.is_multiple_of(self.explore_every()),
        }
    }

    /// One operation in this many goes to the slower engine.
    fn explore_every(&self) -> u64 {
        let (a, b) = (self.mean_ns[0].load(Ordering::Relaxed), self.mean_ns[1].load(Ordering::Relaxed));
        let (fast, slow) = (a.min(b).max(1), a.max(b));
        EXPLORE_EVERY.saturating_mul(slow / fast).clamp(EXPLORE_EVERY, EXPLORE_MAX)
    }

    /// Records one operation's latency on `sync` (else io_uring).
    pub(crate) fn record(&self, sync: bool, ns: u64) {
        let i = usize::from(!sync);
        let seen = self.samples[i].fetch_add(1, Ordering::Relaxed);
        let mean = &self.mean_ns[i];
        // A mean over about the last 16 samples; racing updates from two
        // rings lose at most one of them.
        let old = mean.load(Ordering::Relaxed);
        let new = if seen == 0 { ns } else { old - old / 16 + ns / 16 };
        mean.store(new, Ordering::Relaxed);
    }

    /// What the measurements say now.
    pub(crate) fn verdict(&self) -> Verdict {
        let (sync_n, uring_n) = (self.samples[0].load(Ordering::Relaxed), self.samples[1].load(Ordering::Relaxed));
        if sync_n < LEARN || uring_n < LEARN {
            return Verdict::Learning;
        }
        let (sync, uring) = (self.mean_ns[0].load(Ordering::Relaxed), self.mean_ns[1].load(Ordering::Relaxed));
        if sync.saturating_mul(100) <= uring.saturating_mul(98) {
            Verdict::Sync
        } else {
            Verdict::IoUring
        }
    }

    /// (mean ns of the synchronous path, of io_uring; samples of each).
    pub(crate) fn figures(&self) -> (u64, u64, u64, u64) {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        (l(&self.mean_ns[0]), l(&self.mean_ns[1]), l(&self.samples[0]), l(&self.samples[1]))
    }

    fn stats(&self) -> ShallowStats {
        let (sync_mean_ns, io_uring_mean_ns, sync_samples, io_uring_samples) = self.figures();
        let verdict = match self.verdict() {
            Verdict::Learning => "learning",
            Verdict::Sync => "sync",
            Verdict::IoUring => "io_uring",
        };
        ShallowStats { verdict, sync_mean_ns, io_uring_mean_ns, sync_samples, io_uring_samples }
    }
}

/// Profiles per device: (device number, whether it is a block device).
type Profiles = HashMap<(u64, bool), Arc<Profile>>;
static PROFILES: Mutex<Option<Profiles>> = Mutex::new(None);

/// The profile of the device under `fd` (its NOWAIT trial made now if the
/// device is new: a read of `block` bytes with RWF_NOWAIT).
pub(crate) fn profile(fd: BorrowedFd<'_>, block: u32) -> Arc<Profile> {
    let Ok(meta) = fd.try_clone_to_owned().map(fs::File::from).and_then(|f| f.metadata()) else {
        return Profile::unknown();
    };
    let is_block = meta.file_type().is_block_device();
    let key = (if is_block { meta.rdev() } else { meta.dev() }, is_block);
    let lock = || PROFILES.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(p) = lock().as_ref().and_then(|m| m.get(&key).cloned()) {
        return p;
    }
    let nowait = match sys::os::read_nowait_trial(fd, block as usize) {
        // Read, or would have blocked: the flag is honoured.
        Ok(_) => Nowait::Supported,
        Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => Nowait::Supported,
        // The file (its device) does not take RWF_NOWAIT.
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => Nowait::Unsupported,
        // Not readable (EBADF on a write-only fd), or another failure:
        // tried again with the next file on the device.
        Err(e) => {
            tracing::debug!("RWF_NOWAIT trial failed ({e}): assuming non-blocking I/O works");
            return Profile::unknown();
        }
    };
    let p = Arc::new(Profile { dev: key.0, nowait, shallow: Default::default() });
    lock().get_or_insert_with(HashMap::new).entry(key).or_insert(p).clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(s: &Shallow, sync_ns: u64, uring_ns: u64, rounds: u64) {
        for _ in 0..rounds {
            s.record(true, sync_ns);
            s.record(false, uring_ns);
        }
    }

    #[test]
    fn the_engines_alternate_until_both_are_measured() {
        let s = Shallow::default();
        assert_eq!(s.verdict(), Verdict::Learning);
        let picks: Vec<bool> = (0..6).map(|_| s.pick_sync()).collect();
        assert_eq!(picks, [true, false, true, false, true, false]);
        feed(&s, 70_000, 80_000, LEARN - 1);
        assert_eq!(s.verdict(), Verdict::Learning, "one sample short");
    }

    #[test]
    fn the_faster_engine_wins_and_the_other_is_still_sampled() {
        let s = Shallow::default();
        feed(&s, 70_000, 80_000, LEARN);
        assert_eq!(s.verdict(), Verdict::Sync);
        let sync = (0..EXPLORE_EVERY * 4).filter(|_| s.pick_sync()).count() as u64;
        assert_eq!(sync, EXPLORE_EVERY * 4 - 4, "one in {EXPLORE_EVERY} goes to io_uring");
        // Within 2%: io_uring (the asynchronous path) keeps the depth.
        let tie = Shallow::default();
        feed(&tie, 99_000, 100_000, LEARN);
        assert_eq!(tie.verdict(), Verdict::IoUring);
        // A slower engine 10x slower is sampled 10x less often.
        let gap = Shallow::default();
        feed(&gap, 5_000, 50_000, LEARN);
        let n = EXPLORE_EVERY * 10 * 4;
        assert_eq!((0..n).filter(|_| !gap.pick_sync()).count(), 4, "one in {}", EXPLORE_EVERY * 10);
        let huge = Shallow::default();
        feed(&huge, 1_000, 10_000_000, LEARN);
        assert_eq!(huge.explore_every(), EXPLORE_MAX);
        // The device changes: io_uring becomes faster, and the means follow.
        feed(&s, 90_000, 60_000, 64);
        assert_eq!(s.verdict(), Verdict::IoUring);
        let (sync_ns, uring_ns, n_sync, n_uring) = s.figures();
        assert!(sync_ns > uring_ns && n_sync == LEARN + 64 && n_uring == LEARN + 64);
    }
}
