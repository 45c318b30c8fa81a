//! `ringpool bench thread-churn`: N short-lived threads, each doing one
//! verified 4 KiB O_DIRECT read through the pool (`IoPool::run`: its ring
//! is cloned from the pool's table at this first call), against what
//! thread-local ring pools do by hand today, in the same run, alternating:
//!
//! - `qdrant_style`: a thread-local ring made with `IoUring::new` at the
//!   thread's first read, an O_DIRECT bounce buffer, a plain READ, the
//!   bytes copied into a new `Vec` (no registration at all);
//! - `register`: the thread registers the whole pool on a ring of its own
//!   (as tokio-uring's per-thread buffer registry does), then one
//!   READ_FIXED into it.
//!
//! A first read is timed inside its thread, from the thread's first
//! instruction to the verified bytes (the thread's spawn and exit are not
//! counted on any side). Threads run one at a time. fds and VmPin are read
//! before and after the pool's threads, to show no ring is left behind.

use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use ringpool::types::{parse_size, Bytes, DirectIo, PagePolicy};
use ringpool::{DirectFile, IoMemory, IoPool, MemoryOptions, Op};
use serde::Serialize;
use std::collections::BTreeMap;

use crate::util::{percentile, us};

const K4: usize = 4096;
/// Blocks of the data file the threads read from.
const BLOCKS: u64 = 4096;

#[derive(Args, Debug)]
pub struct ThreadChurnArgs {
    /// Threads through the pool (and as many Qdrant-style ones).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub threads: u32,
    /// Threads that register the whole pool themselves (each takes about a millisecond per GiB).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub register_threads: u32,
    /// Pool size.
    #[arg(long, default_value = "4G", value_parser = parse_size)]
    pub pool: u64,
    /// Page size: auto, 1g, 2m, thp or 4k.
    #[arg(long, default_value = "auto")]
    pub page: PagePolicy,
    /// Reserve the huge pages needed through sysfs (root) and give them back at exit.
    #[arg(long)]
    pub reserve: bool,
    /// Directory for the data file (16 MiB, O_DIRECT; removed at exit).
    #[arg(long, default_value = "/var/tmp")]
    pub dir: PathBuf,
    /// Read from this file or block device instead (its first 16 MiB, read once before to
    /// know the bytes; e.g. a filled /dev/zram0, so that the device's latency does not hide
    /// the ring's cost).
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Print one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize, Debug)]
struct Baseline {
    threads: u32,
    first_read_p50_us: f64,
    first_read_p99_us: f64,
}

#[derive(Serialize, Debug)]
struct Report {
    threads: u32,
    pool_bytes: u64,
    page_size: &'static str,
    first_read_p50_us: f64,
    first_read_p99_us: f64,
    baselines: BTreeMap<&'static str, Baseline>,
    /// The register baseline's p50 / the pool's (how many times faster).
    ratio_vs_register: f64,
    /// The pool's p50 / the Qdrant-style baseline's.
    ratio_vs_qdrant_style: f64,
    fds_before: usize,
    fds_after: usize,
    vmpin_before_kb: u64,
    vmpin_after_kb: u64,
    /// Rings the pool made for calling threads (one per thread).
    local_rings_made: u64,
    method: &'static str,
}

const METHOD: &str = "each first read timed inside its thread, from its first instruction to the verified bytes; \
                      threads one at a time, the sides interleaved; medians and p99 over all threads";

/// The 4 KiB block `b` of the data file written for the run.
fn pattern(b: u64) -> Vec<u8> {
    (0..K4 as u64).map(|i| ((b.wrapping_mul(2_654_435_761) ^ i.wrapping_mul(40_503)) >> 3) as u8).collect()
}

/// A thread's first read, verified: its time, inside the thread.
fn first_read(f: impl FnOnce() -> anyhow::Result<Vec<u8>> + Send + 'static, want: Vec<u8>) -> anyhow::Result<f64> {
    let h = std::thread::spawn(move || -> anyhow::Result<f64> {
        let t = Instant::now();
        let got = f()?;
        let took = us(t.elapsed());
        if got != want {
            bail!("a first read came back wrong");
        }
        Ok(took)
    });
    h.join().map_err(|_| anyhow::anyhow!("a reading thread panicked"))?
}

struct Setup {
    pool: std::sync::Arc<IoPool>,
    mem: IoMemory,
    file: DirectFile,
    /// The bytes of the blocks read.
    data: Vec<u8>,
    /// The data file written for the run (removed at exit).
    path: Option<PathBuf>,
    /// Huge pages reserved for the run, given back after the pool.
    _reservation: Option<ringpool_testkit::machine::HugePageReservation>,
}

impl Drop for Setup {
    fn drop(&mut self) {
        if let Some(p) = &self.path {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl Setup {
    fn block(&self, b: u64) -> Vec<u8> {
        let at = b as usize * K4;
        self.data[at..at + K4].to_vec()
    }
}

fn setup(a: &ThreadChurnArgs) -> anyhow::Result<Setup> {
    let (policy, reservation) = crate::util::reserve_for(a.page, a.pool, a.reserve)?;
    let mem = IoMemory::map_with(a.pool, &MemoryOptions::new().page(policy)).context("mapping the pool")?;
    if !a.json {
        crate::util::describe_pool(&mem, a.page);
    }
    crate::util::prefault_with_bar(&mem)?;
    let pool = IoPool::builder().existing_memory(mem.clone()).workers(0, 1).build().context("building the pool")?;
    let (read_from, written) = match &a.file {
        Some(f) => (f.clone(), None),
        None => {
            let path = a.dir.join(format!("ringpool-thread-churn-{}", std::process::id()));
            let data: Vec<u8> = (0..BLOCKS).flat_map(pattern).collect();
            std::fs::write(&path, &data).with_context(|| format!("writing {}", path.display()))?;
            (path.clone(), Some(path))
        }
    };
    let file = DirectFile::options()
        .read(true)
        .direct(DirectIo::Required)
        .open(&read_from)
        .with_context(|| format!("opening {} O_DIRECT", read_from.display()))?;
    let mut data = vec![0u8; BLOCKS as usize * K4];
    std::io::Read::read_exact(&mut std::fs::File::open(&read_from)?, &mut data)
        .with_context(|| format!("{} holds less than {} to read", read_from.display(), Bytes(data.len() as u64)))?;
    Ok(Setup { pool: std::sync::Arc::new(pool), mem, file, data, path: written, _reservation: reservation })
}

pub fn run(a: &ThreadChurnArgs) -> anyhow::Result<()> {
    let s = setup(a)?;
    let pool = &s.pool;
    // The pool's own state first (its table and this thread's ring).
    pool.run(Op::read(&s.file, 0, pool.memory().try_alloc(K4)?)).into_one().0?;
    let (fds_before, vmpin_before_kb) = (ringpool_testkit::process::open_fds(), vmpin()?);
    let made_before = pool.stats().local_rings_made;
    let every = (a.threads / a.register_threads).max(1);
    let (mut mine, mut qdrant, mut register) = (Vec::new(), Vec::new(), Vec::new());
    let bar = crate::util::byte_bar(u64::from(a.threads), "threads");
    let mut rng = fastrand::Rng::with_seed(0xc4u64);
    // The register side reads into a lease the main thread holds.
    let target = pool.memory().try_alloc(K4)?;
    for i in 0..a.threads {
        let b = rng.u64(0..BLOCKS);
        let off = b * K4 as u64;
        let sides = if i % every == 0 && register.len() < a.register_threads as usize { 3 } else { 2 };
        for k in 0..sides {
            match (i as usize + k) % sides {
                0 => {
                    let (p, f) = (pool.clone(), s.file.clone());
                    mine.push(first_read(
                        move || {
                            let (n, buf) = p.run(Op::read(&f, off, p.memory().try_alloc(K4)?)).into_one();
                            n.context("read through the pool")?;
                            Ok(buf[..].to_vec())
                        },
                        s.block(b),
                    )?);
                }
                1 => {
                    let f = s.file.clone();
                    qdrant.push(first_read(
                        move || Ok(ringpool_testkit::baseline::qdrant_style_read(f.as_fd(), off, K4)?),
                        s.block(b),
                    )?);
                }
                _ => {
                    let (mem, f, at) = (s.mem.clone(), s.file.clone(), target.pool_offset());
                    let segments = u16::try_from(mem.segments().len()).context("segments")?;
                    register.push(first_read(
                        move || {
                            let (mut raw, _) = ringpool_testkit::baseline::register(&mem, segments)?;
                            Ok(raw.read_fixed(f.as_fd(), off, at, K4 as u32)?)
                        },
                        s.block(b),
                    )?);
                }
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    drop(target);
    // The pool's threads are gone, and their rings with them.
    std::thread::sleep(Duration::from_millis(50));
    let (fds_after, vmpin_after_kb) = (ringpool_testkit::process::open_fds(), vmpin()?);
    let p50 = |v: &[f64]| percentile(v, 50.0);
    let side = |v: &[f64]| Baseline {
        threads: v.len() as u32,
        first_read_p50_us: p50(v),
        first_read_p99_us: percentile(v, 99.0),
    };
    let report = Report {
        threads: a.threads,
        pool_bytes: s.mem.len(),
        page_size: s.mem.page_kind().short_name(),
        first_read_p50_us: p50(&mine),
        first_read_p99_us: percentile(&mine, 99.0),
        ratio_vs_register: p50(&register) / p50(&mine).max(1e-9),
        ratio_vs_qdrant_style: p50(&mine) / p50(&qdrant).max(1e-9),
        baselines: BTreeMap::from([("qdrant_style", side(&qdrant)), ("register", side(&register))]),
        fds_before,
        fds_after,
        vmpin_before_kb,
        vmpin_after_kb,
        local_rings_made: pool.stats().local_rings_made - made_before,
        method: METHOD,
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print(&report);
    }
    Ok(())
}

fn vmpin() -> anyhow::Result<u64> {
    Ok(ringpool_testkit::process::vm_pinned_kb(std::process::id())?)
}

fn print(r: &Report) {
    println!(
        "{} threads, one verified 4 KiB first read each, {} pool of {} pages ({METHOD}):",
        r.threads,
        Bytes(r.pool_bytes),
        r.page_size
    );
    println!("{:>34} {:>8} {:>12} {:>12}", "", "threads", "p50_us", "p99_us");
    println!(
        "{:>34} {:>8} {:>12.1} {:>12.1}",
        "ringpool (ring cloned at 1st call)", r.threads, r.first_read_p50_us, r.first_read_p99_us
    );
    for (name, b) in &r.baselines {
        let label = match *name {
            "qdrant_style" => "Qdrant-style (new ring, bounce)",
            _ => "register the pool (tokio-uring)",
        };
        println!("{label:>34} {:>8} {:>12.1} {:>12.1}", b.threads, b.first_read_p50_us, b.first_read_p99_us);
    }
    println!(
        "ringpool / Qdrant-style p50: {:.2}x; register / ringpool p50: {:.0}x; fds {} -> {}, VmPin {} -> {} kB",
        r.ratio_vs_qdrant_style, r.ratio_vs_register, r.fds_before, r.fds_after, r.vmpin_before_kb, r.vmpin_after_kb
    );
}
