//! `ringpool bench pool-latency`: one caller doing `read_at(..).wait()` in a
//! loop through an `IoPool`, against `pread` on the caller's own thread, on
//! the same file, alternating, so that the pool's hand-off shows as a ratio.

use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Args;
use hdrhistogram::Histogram;
use ringpool::types::parse_size;
use ringpool::types::{DirectIo, EnginePolicy, PagePolicy};
use ringpool::{DirectFile, IoPool};
use serde::Serialize;

use crate::util::median;
use ringpool::{MemoryOptions, RingOptions};

#[derive(Args, Debug, Clone)]
pub struct PoolLatencyArgs {
    /// A file or block device with data to read (it is only read).
    #[arg(long)]
    pub file: PathBuf,
    /// Block size of each read.
    #[arg(long, default_value = "4k", value_parser = parse_size)]
    pub bs: u64,
    /// Reads per side and round.
    #[arg(long, default_value_t = 200_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub ops: u64,
    /// Rounds, each side once per round, alternating.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=50))]
    pub rounds: u32,
    /// Bytes of the file to read from (default: all of it).
    #[arg(long, value_parser = parse_size)]
    pub size: Option<u64>,
    /// The pool's engine policy.
    #[arg(long, default_value = "auto")]
    pub engine: EnginePolicy,
    /// Let the waiting caller run operations no worker has started.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub help_while_waiting: bool,
    /// Print one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize, Debug)]
struct Round {
    pool_p50_us: f64,
    pool_p99_us: f64,
    pread_p50_us: f64,
    pread_p99_us: f64,
}

#[derive(Serialize, Debug)]
struct Report {
    file: PathBuf,
    bs: u64,
    ops: u64,
    rounds: Vec<Round>,
    /// The engine the pool chose for the file.
    engine: &'static str,
    engine_reason: &'static str,
    pool_p50_us: f64,
    pool_p99_us: f64,
    pread_p50_us: f64,
    pread_p99_us: f64,
    /// Median over rounds of pool p50 / pread p50.
    ratio_p50: f64,
    helped_ops: u64,
    inline_ops: u64,
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds")
}

fn us(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1e3
}

/// One round: `a.ops` reads through the pool, then as many with pread on
/// this thread, into the same buffer.
fn one_round(
    a: &PoolLatencyArgs,
    pool: &IoPool,
    file: &DirectFile,
    std_file: &std::fs::File,
    blocks: u64,
    rng: &mut fastrand::Rng,
    buf: &mut Option<ringpool::IoBuf>,
) -> anyhow::Result<Round> {
    let mut hp = hist();
    for _ in 0..a.ops {
        let off = rng.u64(0..blocks) * a.bs;
        let t = Instant::now();
        let (r, b) = pool.read_at(file, off, buf.take().expect("the buffer is back")).wait().into_one();
        hp.saturating_record(t.elapsed().as_nanos() as u64);
        *buf = Some(b);
        r.with_context(|| format!("pool read at {off}"))?;
    }
    let mut hr = hist();
    let b = buf.as_mut().expect("the buffer is back");
    for _ in 0..a.ops {
        let off = rng.u64(0..blocks) * a.bs;
        let t = Instant::now();
        let r = std_file.read_at(b, off);
        hr.saturating_record(t.elapsed().as_nanos() as u64);
        r.with_context(|| format!("pread at {off}"))?;
    }
    Ok(Round {
        pool_p50_us: us(&hp, 0.5),
        pool_p99_us: us(&hp, 0.99),
        pread_p50_us: us(&hr, 0.5),
        pread_p99_us: us(&hr, 0.99),
    })
}

pub fn run(a: &PoolLatencyArgs) -> anyhow::Result<()> {
    if a.bs == 0 || a.bs > 64 << 20 {
        bail!("--bs must be from 512 bytes to 64 MiB");
    }
    let file = DirectFile::options()
        .read(true)
        .direct(DirectIo::Required)
        .open(&a.file)
        .with_context(|| format!("opening {}", a.file.display()))?;
    let size = a.size.unwrap_or(file.size()?);
    let blocks = size / a.bs;
    if blocks == 0 {
        bail!("{} holds no block of {} bytes to read", a.file.display(), a.bs);
    }
    let std_file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(&a.file)
        .context("opening for pread")?;
    let pool = IoPool::builder()
        .size((a.bs * 4).max(4 << 20))
        .memory(MemoryOptions::new().page(PagePolicy::Base))
        .ring(RingOptions::new().engine(a.engine))
        .workers(1, 1)
        .help_while_waiting(a.help_while_waiting)
        .build()?;
    let (engine, reason) = pool.engine_for(&file);
    let mut rng = fastrand::Rng::with_seed(0x1a7e);
    let mut buf = Some(pool.memory().try_alloc(a.bs as usize)?);
    let mut rounds = Vec::new();
    for round in 0..a.rounds {
        let r = one_round(a, &pool, &file, &std_file, blocks, &mut rng, &mut buf)?;
        if !a.json {
            eprintln!(
                "round {}: pool p50 {:.2} us p99 {:.2} us, pread p50 {:.2} us p99 {:.2} us",
                round + 1,
                r.pool_p50_us,
                r.pool_p99_us,
                r.pread_p50_us,
                r.pread_p99_us
            );
        }
        rounds.push(r);
    }
    let m = |f: fn(&Round) -> f64| median(&rounds.iter().map(f).collect::<Vec<_>>());
    let st = pool.stats();
    let report = Report {
        file: a.file.clone(),
        bs: a.bs,
        ops: a.ops,
        engine: engine.name(),
        engine_reason: reason,
        pool_p50_us: m(|r| r.pool_p50_us),
        pool_p99_us: m(|r| r.pool_p99_us),
        pread_p50_us: m(|r| r.pread_p50_us),
        pread_p99_us: m(|r| r.pread_p99_us),
        ratio_p50: m(|r| r.pool_p50_us / r.pread_p50_us.max(1e-9)),
        helped_ops: st.helped_ops,
        inline_ops: st.inline_ops,
        rounds,
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{} reads of {} B through the pool ({}): p50 {:.2} us, p99 {:.2} us; pread on this thread: p50 {:.2} us, \
             p99 {:.2} us; pool / pread p50: {:.2}x (median of {} rounds)",
            a.ops,
            a.bs,
            report.engine,
            report.pool_p50_us,
            report.pool_p99_us,
            report.pread_p50_us,
            report.pread_p99_us,
            report.ratio_p50,
            a.rounds
        );
    }
    Ok(())
}
