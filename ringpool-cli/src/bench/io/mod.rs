//! `ringpool bench io`: an fio-style benchmark of O_DIRECT I/O through the
//! pool, with fio run beside it on the same file in the same run.
//!
//! Each worker is a thread that takes its own ring from the pool's
//! [`BufferTable`] (the table by clone) and keeps `iodepth` fixed-buffer
//! operations in flight, like one fio job (`numjobs` = workers).

mod chart;
mod cpu;
mod fio;
mod job;
mod pool_worker;
mod ring_worker;
mod run;
mod target;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use ringpool::types::{parse_size, Bytes};
use ringpool::types::{EnginePolicy, PageKind, PagePolicy, Sharing};
use ringpool::{BufferTable, IoMemory, MemoryOptions, TableOptions};
use serde::Serialize;

pub use chart::{chart, ChartArgs};
pub use fio::FioEngine;
use fio::{fio_available, run_fio, FioJob};
use job::{final_verify, Plan};
use run::run_ringpool;
use target::{prepare_target, Target};

use crate::util::median;
use crate::verify::{Ledger, SUB};

/// The access pattern, as fio names it.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Rw {
    Randread,
    Randwrite,
    Read,
    Write,
    Randrw,
}

impl Rw {
    pub fn name(self) -> &'static str {
        match self {
            Rw::Randread => "randread",
            Rw::Randwrite => "randwrite",
            Rw::Read => "read",
            Rw::Write => "write",
            Rw::Randrw => "randrw",
        }
    }
    fn random(self) -> bool {
        matches!(self, Rw::Randread | Rw::Randwrite | Rw::Randrw)
    }
    fn writes(self) -> bool {
        matches!(self, Rw::Randwrite | Rw::Write | Rw::Randrw)
    }
    fn reads(self) -> bool {
        matches!(self, Rw::Randread | Rw::Read | Rw::Randrw)
    }
}

/// Which API ringpool's workers call.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Api {
    /// A ring of their own from the table (Ring::push / wait).
    Ring,
    /// IoPool's blocking API (run at depth 1; submit and wait deeper).
    Pool,
}

/// How worker rings get the table.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharingArg {
    Clone,
    RegisterEach,
    Unregistered,
}

impl SharingArg {
    fn sharing(self) -> Sharing {
        match self {
            SharingArg::Clone => Sharing::Clone,
            SharingArg::RegisterEach => Sharing::RegisterEach,
            SharingArg::Unregistered => Sharing::Unregistered,
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct IoArgs {
    /// A regular file (created or extended as needed) or a block device.
    #[arg(long)]
    pub file: PathBuf,
    /// Bytes of the file to use (a regular file is laid out to this size; a block device uses its own size when omitted).
    #[arg(long, value_parser = parse_size)]
    pub size: Option<u64>,
    /// Access pattern.
    #[arg(long, value_enum, default_value = "randread")]
    pub rw: Rw,
    /// Block size.
    #[arg(long, default_value = "4k", value_parser = parse_size)]
    pub bs: u64,
    /// Blocks per operation: each operation is one vectored READV_FIXED / WRITEV_FIXED of this many
    /// blocks of --bs, at consecutive file offsets, from buffers scattered in the pool (1: plain
    /// READ_FIXED / WRITE_FIXED).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub vec: u32,
    /// Operations in flight per worker.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub iodepth: u32,
    /// Workers (threads with a ring each), like fio's numjobs.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub workers: u32,
    /// Seconds per run.
    #[arg(long, default_value = "10")]
    pub runtime: f64,
    /// How worker rings get the table.
    #[arg(long, value_enum, default_value = "clone")]
    pub sharing: SharingArg,
    /// Page size of the pool: auto, 1g, 2m, thp or 4k.
    #[arg(long, default_value = "auto")]
    pub page: PagePolicy,
    /// Reserve the huge pages needed (pool, and fio's buffers with --vs-fio) and give them back at exit.
    #[arg(long)]
    pub reserve: bool,
    /// Every written 4 KiB carries a header (offset, sequence, crc32c); every read checks it, and a
    /// final pass re-reads what was written. A mismatch fails the run and names the offset.
    #[arg(long)]
    pub verify: bool,
    /// Run fio with the equivalent job, alternating with ringpool (--rounds times each).
    #[arg(long)]
    pub vs_fio: bool,
    /// fio engines to compare with (--vs-fio); ringpool's ratios are taken against the best.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "io_uring,libaio,pvsync2")]
    pub fio_engines: Vec<FioEngine>,
    /// Runs of each side with --vs-fio.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub rounds: u32,
    /// Submit queued operations once this many wait (1: each at once, fio's default
    /// iodepth_batch_submit); 0: all replacements of a completion batch in one io_uring_enter.
    /// fio is given the same (--iodepth_batch_submit; 0 as the depth).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(0..=4096))]
    pub submit_batch: u32,
    /// Scramble every write's buffer (the offset in every 512-byte sector), as fio's
    /// scramble_buffers=1; by default both sides write buffers filled with random bytes once
    /// (fio: --scramble_buffers=0).
    #[arg(long)]
    pub scramble: bool,
    /// Which API ringpool's workers call: their own ring, or IoPool's blocking API.
    #[arg(long, value_enum, default_value = "ring")]
    pub api: Api,
    /// Also run the same job through the other API (--api) in every round, alternating, and
    /// report its figures and its IOPS ratio to the main side.
    #[arg(long)]
    pub compare_api: bool,
    /// Read a zram device even though most of it was never written (such reads return zeroes
    /// without decompressing anything, and measure nothing real).
    #[arg(long)]
    pub allow_unfilled_zram: bool,
    /// Set worker rings up with DEFER_TASKRUN (completions posted when the worker waits).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub defer_taskrun: bool,
    /// Set worker rings up with SINGLE_ISSUER (`false` also clears DEFER_TASKRUN: the rings of
    /// other processes that follow the pool's growth are set up that way).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub single_issuer: bool,
    /// Without DEFER_TASKRUN: COOP_TASKRUN | TASKRUN_FLAG.
    #[arg(long)]
    pub coop_taskrun: bool,
    /// Set worker rings up with NO_SQARRAY.
    #[arg(long)]
    pub no_sqarray: bool,
    /// Limit each worker's io-wq threads (bounded,unbounded), e.g. 2,2.
    #[arg(long, value_parser = parse_pair)]
    pub iowq_max: Option<(u32, u32)>,
    /// Wait for completions in batches: until all in flight, or this many µs with at least one (6.12+).
    #[arg(long)]
    pub min_wait_us: Option<u32>,
    /// Which engine serves ringpool's side: auto (inline for shallow queues on devices without
    /// NOWAIT, io_uring otherwise), io_uring, or inline.
    #[arg(long, default_value = "auto")]
    pub engine: EnginePolicy,
    /// With --engine auto: run inline while fewer than this many operations are outstanding.
    #[arg(long, default_value_t = ringpool::types::INLINE_DEPTH)]
    pub inline_depth: u32,
    /// Register the file too (IOSQE_FIXED_FILE), as fio's registerfiles.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub fixed_files: bool,
    /// Print one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Figures of one run (ringpool's or fio's).
#[derive(Serialize, Debug, Clone, Default)]
pub struct Figures {
    pub iops: f64,
    pub mib_s: f64,
    pub lat_us: Lat,
    /// Whole-process CPU (user + system, every thread including io_uring's
    /// io-wq workers) per I/O over the I/O window (see `cpu`).
    pub cpu_us_per_io: f64,
    /// How CPU was counted: "io" (the I/O window, both sides).
    pub cpu_window: &'static str,
    /// fio only: the CPU fio itself reports (its job threads' RUSAGE_THREAD).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fio_reported_cpu_us_per_io: Option<f64>,
    /// fio only: its whole lifetime's CPU (wait4: start-up and teardown
    /// included), per I/O; not the compared figure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lifetime_cpu_us_per_io: Option<f64>,
    pub ios: u64,
    pub seconds: f64,
}

#[derive(Serialize, Debug, Clone, Copy, Default)]
pub struct Lat {
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
}

#[derive(Serialize, Debug)]
struct Report {
    file: PathBuf,
    device: String,
    size: u64,
    rw: Rw,
    bs: u64,
    /// Blocks per operation (--vec).
    vec: u32,
    /// The opcode ringpool's io_uring operations used (READ_FIXED, READV_FIXED, ...).
    opcode: &'static str,
    /// What served ringpool's side: io_uring, inline, or inline+io_uring.
    engine: String,
    /// The API ringpool's workers called (ring, pool).
    api: Api,
    /// Submit batch of both sides (ringpool's --submit-batch, fio's iodepth_batch_submit).
    submit_batch: u32,
    /// What both sides write: "random-once" or "scrambled" (see --scramble).
    buffers: &'static str,
    /// How CPU was counted on every side ("io": the I/O window).
    cpu_window: &'static str,
    /// Share of ringpool's operations run inline.
    inline_share: f64,
    iodepth: u32,
    workers: u32,
    page_size: &'static str,
    sharing: String,
    backend: &'static str,
    fixed_files: bool,
    verify: bool,
    verified_blocks: u64,
    iops: f64,
    mib_s: f64,
    /// Blocks of --bs per second (iops x vec).
    blocks_per_s: f64,
    lat_us: Lat,
    cpu_us_per_io: f64,
    /// CPU per block of --bs (cpu_us_per_io / vec).
    cpu_us_per_block: f64,
    runs: Vec<Figures>,
    /// fio's io_uring engine (or the best engine, when io_uring did not run):
    /// its median, its runs, ringpool's ratios to it, its command.
    fio: Option<Figures>,
    fio_runs: Vec<Figures>,
    ratio_iops: Option<f64>,
    ratio_cpu_per_io: Option<f64>,
    ratio_lat_p50: Option<f64>,
    fio_command: Option<String>,
    /// With --compare-api: the other API's medians, and its IOPS over
    /// the main side's (median of the per-round ratios).
    other_api: Option<Api>,
    other_api_figures: Option<Figures>,
    ratio_other_api_iops: Option<f64>,
    /// Each fio engine's medians.
    fio_engines: BTreeMap<&'static str, EngineFigures>,
    /// The engine with the most IOPS (median), and its medians.
    fio_best: Option<BestFigures>,
    /// ringpool / the best engine, median of the per-round ratios.
    ratio_best_iops: Option<f64>,
    ratio_best_lat_p50: Option<f64>,
    ratio_best_cpu_per_io: Option<f64>,
    /// Every fio command run.
    fio_commands: BTreeMap<&'static str, String>,
}

/// One fio engine's medians.
#[derive(Serialize, Debug, Clone, Copy)]
struct EngineFigures {
    iops: f64,
    lat_us: Lat,
    cpu_us_per_io: f64,
}

#[derive(Serialize, Debug, Clone, Copy)]
struct BestFigures {
    engine: &'static str,
    iops: f64,
    lat_us: Lat,
    cpu_us_per_io: f64,
}

/// Parses `a,b`.
fn parse_pair(s: &str) -> Result<(u32, u32), String> {
    let (a, b) = s.split_once(',').ok_or_else(|| format!("{s:?}: expected two numbers, as 2,4"))?;
    let n = |x: &str| x.trim().parse::<u32>().map_err(|e| format!("{x:?}: {e}"));
    Ok((n(a)?, n(b)?))
}

fn check_args(a: &IoArgs) -> anyhow::Result<()> {
    if a.bs == 0 || a.bs > 1 << 30 {
        bail!("--bs must be from 512 bytes to 1 GiB");
    }
    if a.verify && !a.bs.is_multiple_of(SUB as u64) {
        bail!("--verify needs --bs a multiple of 4 KiB (every 4 KiB carries a header)");
    }
    if !(a.runtime > 0.0 && a.runtime <= 86400.0) {
        bail!("--runtime must be from a fraction of a second to a day");
    }
    if a.vec > 1 && a.vs_fio {
        bail!("--vs-fio compares single-block operations: fio has no vectored fixed-buffer engine (drop --vec)");
    }
    Ok(())
}

/// The equivalent fio job with `engine` (size 0: no target yet).
fn fio_job(a: &IoArgs, engine: FioEngine, size: u64, hugepages: Option<PageKind>) -> FioJob {
    FioJob {
        engine,
        file: a.file.clone(),
        size,
        rw: a.rw,
        bs: a.bs,
        iodepth: a.iodepth,
        numjobs: a.workers,
        runtime: a.runtime,
        fixedbufs: a.sharing != SharingArg::Unregistered,
        registerfiles: a.fixed_files,
        hugepages,
        batch_submit: if a.submit_batch == 0 { a.iodepth } else { a.submit_batch },
        scramble: a.scramble,
    }
}

/// Bytes of the pool: every slot's buffers (twice --vec blocks, every
/// other kept), plus room for layout and verify.
fn pool_bytes(a: &IoArgs) -> anyhow::Result<u64> {
    let per_slot = if a.vec == 1 { a.bs } else { 2 * u64::from(a.vec) * a.bs };
    u64::from(a.workers)
        .checked_mul(u64::from(a.iodepth))
        .and_then(|n| n.checked_mul(per_slot))
        .and_then(|b| b.checked_add(64 << 20))
        .map(|b| b.next_multiple_of(2 << 20))
        .context("--workers x --iodepth x --vec x --bs does not fit in 64 bits")
}

/// What ringpool's runs did besides their figures.
struct Served {
    verified: u64,
    opcode: &'static str,
    ops: u64,
    inline_ops: u64,
}

impl Served {
    fn engine(&self) -> String {
        match self.inline_ops {
            0 => "io_uring".into(),
            n if n == self.ops => "inline".into(),
            _ => "inline+io_uring".into(),
        }
    }
}

/// fio's runs, per engine.
type FioRuns = BTreeMap<FioEngine, Vec<Figures>>;

/// Alternates ringpool, the other API (--compare-api) and each fio engine;
/// (ringpool's, the other API's, fio's, what served).
fn alternate(
    a: &IoArgs,
    plan: &Plan<'_>,
    other: Option<&Plan<'_>>,
    fio: &[FioJob],
) -> anyhow::Result<(Vec<Figures>, Vec<Figures>, FioRuns, Served)> {
    let rounds = if fio.is_empty() && other.is_none() { 1 } else { a.rounds };
    let (mut runs, mut other_runs, mut fio_runs) = (Vec::new(), Vec::new(), FioRuns::new());
    let mut served = Served { verified: 0, opcode: "none", ops: 0, inline_ops: 0 };
    for round in 0..rounds {
        let out = run_ringpool(plan)?;
        served.verified += out.verified;
        served.opcode = out.opcode;
        served.ops += out.ops;
        served.inline_ops += out.inline_ops;
        say(a, "ringpool", round, &out.figures);
        runs.push(out.figures);
        if let Some(o) = other {
            let out = run_ringpool(o)?;
            served.verified += out.verified;
            say(a, if o.pool.is_some() { "  api pool" } else { "  api ring" }, round, &out.figures);
            other_runs.push(out.figures);
        }
        for job in fio {
            let f = run_fio(job).with_context(|| format!("fio with {}", job.engine.name()))?;
            say(a, &format!("fio {:<8}", job.engine.name()), round, &f);
            fio_runs.entry(job.engine).or_default().push(f);
        }
    }
    Ok((runs, other_runs, fio_runs, served))
}

/// Median over rounds of `f(ringpool) / f(fio)`, the two from the same round.
fn ratio(runs: &[Figures], fio: &[Figures], f: fn(&Figures) -> f64) -> Option<f64> {
    (!fio.is_empty()).then(|| median(&runs.iter().zip(fio).map(|(r, x)| f(r) / f(x).max(1e-9)).collect::<Vec<_>>()))
}

/// The engine with the most IOPS (median of its runs).
fn best_engine(fio_runs: &FioRuns) -> Option<FioEngine> {
    fio_runs.iter().map(|(e, runs)| (*e, median_figures(runs).iops)).max_by(|a, b| a.1.total_cmp(&b.1)).map(|(e, _)| e)
}

fn say(a: &IoArgs, who: &str, round: u32, f: &Figures) {
    if !a.json {
        eprintln!(
            "{who} run {}: {:.0} IOPS, {:.1} MiB/s, p50 {:.1} us, {:.2} us CPU/IO",
            round + 1,
            f.iops,
            f.mib_s,
            f.lat_us.p50,
            f.cpu_us_per_io
        );
    }
}

pub fn run(a: &IoArgs) -> anyhow::Result<()> {
    check_args(a)?;
    let pool_bytes = pool_bytes(a)?;
    let fio_pages = if a.vs_fio && a.reserve && a.page != PagePolicy::Auto {
        let k = if a.page == PagePolicy::Huge1G { PageKind::Huge1G } else { PageKind::Huge2M };
        // The engines run one at a time: the largest need.
        fio_job(a, FioEngine::IoUring, 0, Some(k)).hugepages_needed() * k.bytes()
    } else {
        0
    };
    let (policy, _reservation) = crate::util::reserve_for(a.page, pool_bytes + fio_pages, a.reserve)?;
    let mem = IoMemory::map_with(pool_bytes, &MemoryOptions::new().page(policy)).context("mapping the pool")?;
    if !a.json {
        crate::util::describe_pool(&mem, a.page);
    }
    mem.prefault(|_| {})?;
    let table = BufferTable::register_with(&mem, &TableOptions { sharing: a.sharing.sharing(), ..Default::default() })?;
    let target = prepare_target(a, &mem, &table)?;
    let ledger = a.verify.then(|| Ledger::new(target.size));
    // Sequences grow across runs too (they start at the wall clock in µs),
    // so a block left by an earlier run never looks newer than this run's.
    let seq = AtomicU64::new(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_micros() as u64),
    );
    let pool = if a.api == Api::Pool || a.compare_api {
        Some(
            ringpool::IoPool::builder()
                .existing_memory(mem.clone())
                .ring(ringpool::RingOptions::new().engine(a.engine).inline_depth(a.inline_depth))
                .workers(0, a.workers as usize)
                .build()
                .context("building the pool for the pool API")?,
        )
    } else {
        None
    };
    let plan = Plan {
        a,
        target: &target,
        mem: &mem,
        table: &table,
        ledger: ledger.as_ref(),
        seq: &seq,
        pool: if a.api == Api::Pool { pool.as_ref() } else { None },
    };
    let other = a.compare_api.then(|| Plan { pool: if a.api == Api::Pool { None } else { pool.as_ref() }, ..plan });
    let hugepages = matches!(mem.page_kind(), PageKind::Huge1G | PageKind::Huge2M).then_some(mem.page_kind());
    let fio_ok = a.vs_fio && fio_available();
    if a.vs_fio && !fio_ok {
        eprintln!(
            "note: fio is not on PATH: install it (Debian: apt-get install fio) to compare; running ringpool alone"
        );
    }
    let mut engines = a.fio_engines.clone();
    engines.sort();
    engines.dedup();
    let jobs: Vec<FioJob> =
        if fio_ok { engines.iter().map(|&e| fio_job(a, e, target.size, hugepages)).collect() } else { Vec::new() };
    let (runs, other_runs, fio_runs, served) = alternate(a, &plan, other.as_ref(), &jobs)?;
    let mut verified = served.verified;
    if let Some(l) = &ledger {
        if a.rw.writes() {
            verified += final_verify(&plan, l)?;
        }
    }
    let mut report = report(a, &target, &mem, &table, &runs, &fio_runs, &jobs, &served, verified);
    if !other_runs.is_empty() {
        report.other_api = Some(if a.api == Api::Pool { Api::Ring } else { Api::Pool });
        report.other_api_figures = Some(median_figures(&other_runs));
        report.ratio_other_api_iops = ratio(&other_runs, &runs, |f| f.iops);
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    print_report(a, &report, &target, &mem, &median_figures(&runs));
    Ok(())
}

/// The report of a run: ringpool's medians, each fio engine's, the ratios.
#[allow(clippy::too_many_arguments)]
fn report(
    a: &IoArgs,
    target: &Target,
    mem: &IoMemory,
    table: &BufferTable,
    runs: &[Figures],
    fio_runs: &FioRuns,
    jobs: &[FioJob],
    served: &Served,
    verified: u64,
) -> Report {
    let mine = median_figures(runs);
    let best = best_engine(fio_runs);
    // The legacy keys follow fio's io_uring engine where it ran.
    let legacy = if fio_runs.contains_key(&FioEngine::IoUring) { Some(FioEngine::IoUring) } else { best };
    let legacy_runs = legacy.and_then(|e| fio_runs.get(&e)).cloned().unwrap_or_default();
    let best_runs = best.and_then(|e| fio_runs.get(&e)).cloned().unwrap_or_default();
    let engine_figures = |runs: &[Figures]| {
        let m = median_figures(runs);
        EngineFigures { iops: m.iops, lat_us: m.lat_us, cpu_us_per_io: m.cpu_us_per_io }
    };
    let command = |e: FioEngine| jobs.iter().find(|j| j.engine == e).map(|j| format!("fio {}", j.args().join(" ")));
    Report {
        file: a.file.clone(),
        device: target.device.clone(),
        size: target.size,
        rw: a.rw,
        bs: a.bs,
        vec: a.vec,
        opcode: served.opcode,
        engine: served.engine(),
        api: a.api,
        submit_batch: a.submit_batch,
        buffers: if a.scramble { "scrambled" } else { "random-once" },
        cpu_window: "io",
        inline_share: served.inline_ops as f64 / served.ops.max(1) as f64,
        iodepth: a.iodepth,
        workers: a.workers,
        page_size: mem.page_kind().short_name(),
        sharing: table.path().to_string(),
        backend: "io_uring",
        fixed_files: a.fixed_files,
        verify: a.verify,
        verified_blocks: verified,
        iops: mine.iops,
        mib_s: mine.mib_s,
        blocks_per_s: mine.iops * f64::from(a.vec),
        lat_us: mine.lat_us,
        cpu_us_per_io: mine.cpu_us_per_io,
        cpu_us_per_block: mine.cpu_us_per_io / f64::from(a.vec),
        ratio_iops: ratio(runs, &legacy_runs, |f| f.iops),
        ratio_cpu_per_io: ratio(runs, &legacy_runs, |f| f.cpu_us_per_io),
        ratio_lat_p50: ratio(runs, &legacy_runs, |f| f.lat_us.p50),
        fio: (!legacy_runs.is_empty()).then(|| median_figures(&legacy_runs)),
        fio_runs: legacy_runs,
        fio_command: legacy.and_then(command),
        other_api: None,
        other_api_figures: None,
        ratio_other_api_iops: None,
        fio_engines: fio_runs.iter().map(|(e, r)| (e.name(), engine_figures(r))).collect(),
        fio_best: best.map(|e| {
            let f = engine_figures(&best_runs);
            BestFigures { engine: e.name(), iops: f.iops, lat_us: f.lat_us, cpu_us_per_io: f.cpu_us_per_io }
        }),
        ratio_best_iops: ratio(runs, &best_runs, |f| f.iops),
        ratio_best_lat_p50: ratio(runs, &best_runs, |f| f.lat_us.p50),
        ratio_best_cpu_per_io: ratio(runs, &best_runs, |f| f.cpu_us_per_io),
        fio_commands: jobs.iter().map(|j| (j.engine.name(), format!("fio {}", j.args().join(" ")))).collect(),
        runs: runs.to_vec(),
    }
}

fn print_report(a: &IoArgs, report: &Report, target: &Target, mem: &IoMemory, mine: &Figures) {
    println!(
        "{} {} bs={} vec={} ({}) iodepth={} workers={} on {} ({}, {}), pool {} pages, table by {}, fixed files {}",
        report.rw.name(),
        Bytes(report.size),
        Bytes(a.bs),
        a.vec,
        report.opcode,
        a.iodepth,
        a.workers,
        a.file.display(),
        report.device,
        if target.file.is_direct() { "O_DIRECT" } else { "buffered" },
        mem.page_kind(),
        report.sharing,
        a.fixed_files
    );
    println!(
        "{:>9} {:>12} {:>10} {:>9} {:>9} {:>9} {:>10}",
        "", "IOPS", "MiB/s", "p50_us", "p99_us", "p999_us", "CPU_us/IO"
    );
    let line = |name: &str, f: &Figures| {
        println!(
            "{:>9} {:>12.0} {:>10.1} {:>9.1} {:>9.1} {:>9.1} {:>10.2}",
            name, f.iops, f.mib_s, f.lat_us.p50, f.lat_us.p99, f.lat_us.p999, f.cpu_us_per_io
        )
    };
    line("ringpool", mine);
    if a.vec > 1 {
        println!("{:.0} blocks/s, {:.2} us CPU per block", report.blocks_per_s, report.cpu_us_per_block);
    }
    for (name, f) in &report.fio_engines {
        println!(
            "{:>9} {:>12.0} {:>10} {:>9.1} {:>9.1} {:>9.1} {:>10.2}",
            format!("fio {name}").chars().take(9).collect::<String>(),
            f.iops,
            "",
            f.lat_us.p50,
            f.lat_us.p99,
            f.lat_us.p999,
            f.cpu_us_per_io
        );
    }
    if let Some(best) = &report.fio_best {
        println!(
            "median of {} alternations, ringpool ({}) / best fio engine ({}): IOPS {:.2}x, CPU per I/O {:.2}x, p50 \
             latency {:.2}x (CPU: whole process over the I/O window, io-wq included, both sides; submit batch {}, buffers {})",
            report.runs.len(),
            report.engine,
            best.engine,
            report.ratio_best_iops.unwrap_or(0.0),
            report.ratio_best_cpu_per_io.unwrap_or(0.0),
            report.ratio_best_lat_p50.unwrap_or(0.0),
            report.submit_batch,
            report.buffers
        );
    }
    if let (Some(api), Some(f), Some(r)) = (report.other_api, &report.other_api_figures, report.ratio_other_api_iops) {
        println!(
            "api {api:?}, alternating: {:.0} IOPS, p50 {:.1} us, {:.2} us CPU/IO: {r:.3}x the main side's IOPS",
            f.iops, f.lat_us.p50, f.cpu_us_per_io
        );
    }
    if a.verify {
        println!("verified {} blocks of 4 KiB: no mismatch", report.verified_blocks);
    }
}

fn median_figures(runs: &[Figures]) -> Figures {
    let m = |f: fn(&Figures) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
    Figures {
        iops: m(|f| f.iops),
        mib_s: m(|f| f.mib_s),
        lat_us: Lat { p50: m(|f| f.lat_us.p50), p99: m(|f| f.lat_us.p99), p999: m(|f| f.lat_us.p999) },
        cpu_us_per_io: m(|f| f.cpu_us_per_io),
        cpu_window: "io",
        lifetime_cpu_us_per_io: runs
            .iter()
            .map(|f| f.lifetime_cpu_us_per_io)
            .collect::<Option<Vec<_>>>()
            .map(|v| median(&v)),
        fio_reported_cpu_us_per_io: runs
            .iter()
            .map(|f| f.fio_reported_cpu_us_per_io)
            .collect::<Option<Vec<_>>>()
            .map(|v| median(&v)),
        ios: runs.iter().map(|f| f.ios).sum(),
        seconds: runs.iter().map(|f| f.seconds).sum(),
    }
}
