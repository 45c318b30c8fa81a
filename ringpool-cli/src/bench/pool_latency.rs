//! `ringpool bench pool-latency`: one caller reading through an `IoPool`
//! and waiting each time (`IoPool::run`: the op runs on the caller's own
//! ring, cloned at its first call), against the best the caller could do
//! on its own thread on that device (the baseline): a bare io_uring ring
//! with one registered buffer (READ_FIXED, SINGLE_ISSUER | DEFER_TASKRUN)
//! where the device serves NOWAIT, `preadv2` where it does not (io_uring
//! would hand every read to an io-wq thread there, so the pool runs the
//! read on the caller's thread itself). The same reads through tokio
//! (`read_at(..).await` on a current-thread runtime: the runtime thread's
//! own ring, completions through the reactor) and a plain `pread` are
//! timed too. Sides alternate within each round, on the same file.

use std::os::fd::AsFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Args;
use hdrhistogram::Histogram;
use ringpool::types::parse_size;
use ringpool::types::{DirectIo, EnginePolicy, Nowait, PagePolicy};
use ringpool::{DirectFile, IoBuf, IoPool, Op};
use ringpool::{MemoryOptions, RingOptions};
use ringpool_testkit::baseline::{preadv2, AlignedBuf, FixedReader};
use serde::Serialize;

use crate::util::median;

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
    /// Time the same reads awaited on a tokio current-thread runtime too.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub tokio: bool,
    /// Print one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize, Debug, Default)]
struct Round {
    pool_p50_us: f64,
    pool_p99_us: f64,
    baseline_p50_us: f64,
    baseline_p99_us: f64,
    pread_p50_us: f64,
    pread_p99_us: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    tokio_p50_us: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tokio_p99_us: Option<f64>,
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
    /// Who runs the pool's reads: "the caller's own ring" or "the caller
    /// (inline preadv2: the device has no NOWAIT)".
    pool_path: &'static str,
    pool_p50_us: f64,
    pool_p99_us: f64,
    /// "io_uring" (a bare READ_FIXED ring on the caller's thread) or
    /// "preadv2" (on a device without NOWAIT).
    baseline: &'static str,
    baseline_p50_us: f64,
    baseline_p99_us: f64,
    pread_p50_us: f64,
    pread_p99_us: f64,
    /// Median over rounds of pool p50 / baseline p50.
    ratio_p50: f64,
    /// Median over rounds of pool p50 / pread p50.
    ratio_p50_vs_pread: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    tokio_p50_us: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tokio_p99_us: Option<f64>,
    /// Median over rounds of tokio p50 / pool (blocking) p50.
    #[serde(skip_serializing_if = "Option::is_none")]
    ratio_tokio_vs_blocking_p50: Option<f64>,
    /// Pool operations run by a worker thread (0: no hand-off), and the
    /// workers started.
    worker_ops: u64,
    workers_started: u64,
    local_ops: u64,
    inline_ops: u64,
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds")
}

fn us(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1e3
}

/// What every side reads from, and with.
struct Sides<'a> {
    a: &'a PoolLatencyArgs,
    pool: &'a IoPool,
    file: &'a DirectFile,
    std_file: &'a std::fs::File,
    blocks: u64,
    fixed: Option<FixedReader>,
    plain: AlignedBuf,
    rt: Option<tokio::runtime::Runtime>,
}

impl Sides<'_> {
    fn offsets(&self, rng: &mut fastrand::Rng) -> Vec<u64> {
        (0..self.a.ops).map(|_| rng.u64(0..self.blocks) * self.a.bs).collect()
    }

    fn pool(&self, offs: &[u64], buf: &mut Option<IoBuf>) -> anyhow::Result<Histogram<u64>> {
        let mut h = hist();
        for &off in offs {
            let t = Instant::now();
            let (r, b) = self.pool.run(Op::read(self.file, off, buf.take().expect("the buffer is back"))).into_one();
            h.saturating_record(t.elapsed().as_nanos() as u64);
            *buf = Some(b);
            r.with_context(|| format!("pool read at {off}"))?;
        }
        Ok(h)
    }

    fn baseline(&mut self, offs: &[u64]) -> anyhow::Result<Histogram<u64>> {
        let mut h = hist();
        let fd = self.std_file.as_fd();
        for &off in offs {
            let t = Instant::now();
            let r = match &mut self.fixed {
                Some(ring) => ring.read(off),
                None => preadv2(fd, &mut self.plain, off),
            };
            h.saturating_record(t.elapsed().as_nanos() as u64);
            r.with_context(|| format!("baseline read at {off}"))?;
        }
        Ok(h)
    }

    fn pread(&mut self, offs: &[u64]) -> anyhow::Result<Histogram<u64>> {
        let mut h = hist();
        for &off in offs {
            let t = Instant::now();
            let r = self.std_file.read_at(&mut self.plain, off);
            h.saturating_record(t.elapsed().as_nanos() as u64);
            r.with_context(|| format!("pread at {off}"))?;
        }
        Ok(h)
    }

    fn tokio(&self, offs: &[u64], buf: &mut Option<IoBuf>) -> anyhow::Result<Option<Histogram<u64>>> {
        let Some(rt) = &self.rt else { return Ok(None) };
        rt.block_on(async {
            let mut h = hist();
            for &off in offs {
                let t = Instant::now();
                let (r, b) =
                    self.pool.read_at(self.file, off, buf.take().expect("the buffer is back")).await.into_one();
                h.saturating_record(t.elapsed().as_nanos() as u64);
                *buf = Some(b);
                r.with_context(|| format!("tokio read at {off}"))?;
            }
            Ok(Some(h))
        })
    }

    /// One round: each side reads the same offsets, in an order that
    /// rotates with the round.
    fn round(&mut self, round: u32, rng: &mut fastrand::Rng, buf: &mut Option<IoBuf>) -> anyhow::Result<Round> {
        let offs = self.offsets(rng);
        let mut r = Round::default();
        for k in 0..4 {
            match (k + round) % 4 {
                0 => {
                    let h = self.pool(&offs, buf)?;
                    (r.pool_p50_us, r.pool_p99_us) = (us(&h, 0.5), us(&h, 0.99));
                }
                1 => {
                    let h = self.baseline(&offs)?;
                    (r.baseline_p50_us, r.baseline_p99_us) = (us(&h, 0.5), us(&h, 0.99));
                }
                2 => {
                    let h = self.pread(&offs)?;
                    (r.pread_p50_us, r.pread_p99_us) = (us(&h, 0.5), us(&h, 0.99));
                }
                _ => {
                    if let Some(h) = self.tokio(&offs, buf)? {
                        (r.tokio_p50_us, r.tokio_p99_us) = (Some(us(&h, 0.5)), Some(us(&h, 0.99)));
                    }
                }
            }
        }
        Ok(r)
    }
}

fn open(a: &PoolLatencyArgs) -> anyhow::Result<(DirectFile, std::fs::File, u64)> {
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
        .context("opening for the baseline")?;
    Ok((file, std_file, blocks))
}

pub fn run(a: &PoolLatencyArgs) -> anyhow::Result<()> {
    let (file, std_file, blocks) = open(a)?;
    let pool = IoPool::builder()
        .size((a.bs * 4).max(4 << 20))
        .memory(MemoryOptions::new().page(PagePolicy::Base))
        .ring(RingOptions::new().engine(a.engine))
        .workers(0, 1)
        .build()?;
    let (engine, reason) = pool.engine_for(&file);
    let nowait = file.nowait() != Nowait::Unsupported;
    let fixed = if nowait {
        Some(FixedReader::new(std_file.as_fd(), a.bs as usize).context("the baseline ring")?)
    } else {
        None
    };
    let rt = if a.tokio { Some(tokio::runtime::Builder::new_current_thread().enable_all().build()?) } else { None };
    let mut sides = Sides {
        a,
        pool: &pool,
        file: &file,
        std_file: &std_file,
        blocks,
        fixed,
        plain: AlignedBuf::new(a.bs as usize),
        rt,
    };
    let mut rng = fastrand::Rng::with_seed(0x1a7e);
    let mut buf = Some(pool.memory().try_alloc(a.bs as usize)?);
    let mut rounds = Vec::new();
    for round in 0..a.rounds {
        let r = sides.round(round, &mut rng, &mut buf)?;
        if !a.json {
            eprintln!(
                "round {}: pool p50 {:.2} us p99 {:.2} us, baseline p50 {:.2} us p99 {:.2} us, pread p50 {:.2} us{}",
                round + 1,
                r.pool_p50_us,
                r.pool_p99_us,
                r.baseline_p50_us,
                r.baseline_p99_us,
                r.pread_p50_us,
                r.tokio_p50_us.map(|t| format!(", tokio p50 {t:.2} us")).unwrap_or_default()
            );
        }
        rounds.push(r);
    }
    let report = report(a, &pool, engine.name(), reason, nowait, rounds);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print(a, &report);
    }
    Ok(())
}

fn report(
    a: &PoolLatencyArgs,
    pool: &IoPool,
    engine: &'static str,
    reason: &'static str,
    nowait: bool,
    rounds: Vec<Round>,
) -> Report {
    let m = |f: &dyn Fn(&Round) -> f64| median(&rounds.iter().map(f).collect::<Vec<_>>());
    let mo = |f: &dyn Fn(&Round) -> Option<f64>| {
        rounds.iter().map(f).collect::<Option<Vec<_>>>().filter(|v| !v.is_empty()).map(|v| median(&v))
    };
    let st = pool.stats();
    Report {
        file: a.file.clone(),
        bs: a.bs,
        ops: a.ops,
        engine,
        engine_reason: reason,
        pool_path: if engine == "inline" {
            "the caller (inline preadv2: the device has no NOWAIT)"
        } else {
            "the caller's own ring"
        },
        pool_p50_us: m(&|r| r.pool_p50_us),
        pool_p99_us: m(&|r| r.pool_p99_us),
        baseline: if nowait { "io_uring" } else { "preadv2" },
        baseline_p50_us: m(&|r| r.baseline_p50_us),
        baseline_p99_us: m(&|r| r.baseline_p99_us),
        pread_p50_us: m(&|r| r.pread_p50_us),
        pread_p99_us: m(&|r| r.pread_p99_us),
        ratio_p50: m(&|r| r.pool_p50_us / r.baseline_p50_us.max(1e-9)),
        ratio_p50_vs_pread: m(&|r| r.pool_p50_us / r.pread_p50_us.max(1e-9)),
        tokio_p50_us: mo(&|r| r.tokio_p50_us),
        tokio_p99_us: mo(&|r| r.tokio_p99_us),
        ratio_tokio_vs_blocking_p50: mo(&|r| r.tokio_p50_us.map(|t| t / r.pool_p50_us.max(1e-9))),
        worker_ops: st.per_worker.iter().map(|w| w.ops).sum::<u64>(),
        workers_started: st.workers_started,
        local_ops: st.local_ops,
        inline_ops: st.inline_ops,
        rounds,
    }
}

fn print(a: &PoolLatencyArgs, r: &Report) {
    println!(
        "{} reads of {} B, median of {} rounds (sides alternating):\n  pool (run on {}): p50 {:.2} us, p99 {:.2} \
         us\n  baseline ({} on the caller's thread): p50 {:.2} us, p99 {:.2} us\n  pread: p50 {:.2} us\n  pool / \
         baseline p50: {:.3}x; pool / pread p50: {:.3}x",
        a.ops,
        a.bs,
        a.rounds,
        r.pool_path,
        r.pool_p50_us,
        r.pool_p99_us,
        r.baseline,
        r.baseline_p50_us,
        r.baseline_p99_us,
        r.pread_p50_us,
        r.ratio_p50,
        r.ratio_p50_vs_pread
    );
    if let (Some(t), Some(x)) = (r.tokio_p50_us, r.ratio_tokio_vs_blocking_p50) {
        println!(
            "  tokio (current-thread runtime, the runtime thread's ring): p50 {t:.2} us, {x:.3}x the blocking call"
        );
    }
}
