//! What every peer shares: the job's parameters, the clock and CPU meter,
//! the offset generator, a 4096-aligned buffer, and small machine probes.
//!
//! Nothing here favours a peer: every peer draws its offsets from the same
//! generator, checks its clock the same way (once per completion), and is
//! measured by the same meter.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::time::{Duration, Instant};

/// Block size of the random-read job.
pub const BS: usize = 4096;
/// Operations in flight in the random-read job.
pub const DEPTH: usize = 32;

/// One random-read run: where, how big, how long.
#[derive(Debug, Clone)]
pub struct JobSpec {
    /// The file or block device.
    pub path: PathBuf,
    /// Its size in bytes (the whole of it is read from).
    pub size: u64,
    /// How long to keep I/O going.
    pub runtime: Duration,
}

impl JobSpec {
    /// Whole 4 KiB blocks in the target.
    pub fn blocks(&self) -> u64 {
        self.size / BS as u64
    }
}

/// What a run gave.
#[derive(Debug, Clone)]
pub struct JobOut {
    /// Completed reads (each checked to have moved 4096 bytes).
    pub ios: u64,
    /// Seconds from the first submission to the last completion.
    pub secs: f64,
    /// Whole-process user + system CPU over the same span, in µs.
    pub cpu_us: f64,
    /// What the peer wants said beside its numbers.
    pub note: String,
}

impl JobOut {
    pub fn iops(&self) -> f64 {
        self.ios as f64 / self.secs
    }
    pub fn cpu_us_per_io(&self) -> f64 {
        self.cpu_us / self.ios.max(1) as f64
    }
}

/// Whole-process CPU time (user + system, all threads: io-wq workers and
/// blocking pools included) in µs, from getrusage(RUSAGE_SELF).
pub fn process_cpu_us() -> f64 {
    let (u, s) = ringpool_testkit::process::rusage_self_us();
    (u + s) as f64
}

/// Wall clock and process CPU from the start of the timed part of a run.
#[derive(Debug, Clone, Copy)]
pub struct Meter {
    t0: Instant,
    cpu0: f64,
    deadline: Instant,
}

impl Meter {
    /// Starts the clock and the CPU account; the run should stop issuing
    /// new I/O at `self.deadline()`.
    pub fn start(runtime: Duration) -> Meter {
        let cpu0 = process_cpu_us();
        let t0 = Instant::now();
        Meter { t0, cpu0, deadline: t0 + runtime }
    }

    /// When to stop issuing I/O.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Stops the clock and the CPU account (call it once every read in
    /// flight has completed).
    pub fn finish(&self, ios: u64, note: impl Into<String>) -> JobOut {
        let secs = self.t0.elapsed().as_secs_f64();
        let cpu_us = process_cpu_us() - self.cpu0;
        JobOut { ios, secs, cpu_us, note: note.into() }
    }
}

/// A small fast generator (xorshift64*), seeded per task, for uniform
/// random block offsets. The same one for every peer.
#[derive(Debug, Clone)]
pub struct Offsets {
    state: u64,
    blocks: u64,
}

impl Offsets {
    /// Offsets into `spec`'s target for task `task`.
    pub fn new(spec: &JobSpec, task: u64) -> Offsets {
        let seed = 0x9E37_79B9_7F4A_7C15u64 ^ (task.wrapping_add(1)).wrapping_mul(0xD1B5_4A32_D192_ED03);
        Offsets { state: seed | 1, blocks: spec.blocks().max(1) }
    }

    /// The next byte offset: a uniformly random 4 KiB block.
    #[inline]
    pub fn next_offset(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        let r = x.wrapping_mul(0x2545_F491_4F6C_DD1D);
        // Multiply-shift: uniform enough, and no division on the hot path.
        (((r as u128) * (self.blocks as u128)) >> 64) as u64 * BS as u64
    }
}

/// A heap buffer of `len` bytes aligned to 4096 (O_DIRECT's usual memory
/// alignment), zeroed at allocation so that its pages are faulted in before
/// any timed I/O.
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: AlignedBuf owns its allocation exclusively, like a Box<[u8]>.
unsafe impl Send for AlignedBuf {}

impl AlignedBuf {
    pub fn new(len: usize) -> AlignedBuf {
        let layout = Layout::from_size_align(len, 4096).expect("valid layout");
        // SAFETY: len > 0 for every caller (4096); the pointer is checked.
        let p = unsafe { alloc_zeroed(layout) };
        let ptr = NonNull::new(p).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        AlignedBuf { ptr, len }
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: the allocation is len bytes, initialised (zeroed), ours.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        let layout = Layout::from_size_align(self.len, 4096).expect("valid layout");
        // SAFETY: allocated in `new` with this very layout.
        unsafe { dealloc(self.ptr.as_ptr(), layout) };
    }
}

/// The size of a file or block device, in bytes (BLKGETSIZE64 for a block
/// device, through ringpool's DirectFile::size).
pub fn target_size(path: &Path) -> anyhow::Result<u64> {
    let f = ringpool::DirectFile::options().read(true).direct(ringpool::types::DirectIo::Required).open(path)?;
    Ok(f.size()?)
}

/// The 2 MiB hugetlb pool: (nr_hugepages, free_hugepages - resv_hugepages).
pub fn hugepages_2m() -> (u64, u64) {
    let rd = |f: &str| -> u64 {
        std::fs::read_to_string(format!("/sys/kernel/mm/hugepages/hugepages-2048kB/{f}"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    };
    (rd("nr_hugepages"), rd("free_hugepages").saturating_sub(rd("resv_hugepages")))
}

/// Waits (at most `max`) until `pages` 2 MiB hugetlb pages are free: the
/// kernel unpins a closed ring's registered buffers in the background.
pub fn wait_free_hugepages(pages: u64, max: Duration) -> bool {
    let t = Instant::now();
    loop {
        if hugepages_2m().1 >= pages {
            return true;
        }
        if t.elapsed() > max {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The io_uring fds of this process.
pub fn uring_fds() -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else { return Vec::new() };
    dir.flatten()
        .filter_map(|e| {
            let fd: i32 = e.file_name().to_str()?.parse().ok()?;
            let link = std::fs::read_link(e.path()).ok()?;
            (link.to_str()? == "anon_inode:[io_uring]").then_some(fd)
        })
        .collect()
}

/// What the kernel says of the registered buffers of the io_uring fds of
/// this process that are not in `before`: (rings, buffers, bytes), from
/// /proc/self/fdinfo ("UserBufs:" and one "  i: 0xaddr/len" line each).
pub fn registered_since(before: &[i32]) -> (usize, u64, u64) {
    let (mut rings, mut bufs, mut bytes) = (0, 0, 0);
    for fd in uring_fds() {
        if before.contains(&fd) {
            continue;
        }
        let Ok(info) = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")) else { continue };
        let mut n = 0u64;
        for line in info.lines() {
            if let Some(v) = line.strip_prefix("UserBufs:") {
                n = v.trim().parse().unwrap_or(0);
            } else if let Some((_, rest)) = line.trim_start().split_once(": 0x") {
                if let Some((_, len)) = rest.split_once('/') {
                    bytes += len.trim().parse::<u64>().unwrap_or(0);
                }
            }
        }
        rings += 1;
        bufs += n;
    }
    (rings, bufs, bytes)
}

/// A short text of what `registered_since` found.
pub fn describe_registered(before: &[i32]) -> String {
    let (rings, bufs, bytes) = registered_since(before);
    format!(
        "fdinfo after ready: {rings} new io_uring fd(s), {bufs} registered buffer(s) of {:.2} GiB in all",
        bytes as f64 / (1u64 << 30) as f64
    )
}

/// The median of `v` (sorted in place).
pub fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 })
}

/// Spin-up parameters.
#[derive(Debug, Clone)]
pub struct SpinSpec {
    /// Spin-ups to time.
    pub count: usize,
    /// Pool size in bytes.
    pub pool_bytes: u64,
}

/// A spin-up peer's result.
#[derive(Debug, Clone)]
pub struct SpinOut {
    pub peer: String,
    pub pool_bytes: u64,
    /// Microseconds, one per spin-up.
    pub samples_us: Vec<f64>,
    pub note: String,
}

/// A short error text from a thread's panic payload.
pub fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic".to_string()
    }
}

/// Pause between spin-ups, the same for every peer: lets the kernel's
/// deferred ring teardown (unpinning) of the previous one finish.
pub const SPINUP_GAP: Duration = Duration::from_millis(20);
