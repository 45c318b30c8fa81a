//! `ringpool bench churn`: start and stop pool workers (thread + ring +
//! table) with clone and with register-each, in the same run.

use std::time::Instant;

use anyhow::Context;
use clap::Args;
use ringpool::types::{parse_size, Bytes};
use ringpool::types::{PagePolicy, Sharing};
use ringpool::{IoMemory, IoPool, MemoryOptions};
use serde::Serialize;

use crate::util::{percentile, us};
use ringpool::types::EnginePolicy;
use ringpool::{RingOptions, TableOptions};

#[derive(Args, Debug)]
pub struct ChurnArgs {
    /// Pool size.
    #[arg(long, default_value = "4G", value_parser = parse_size)]
    pub pool: u64,
    /// Page size: auto, 1g, 2m, thp or 4k.
    #[arg(long, default_value = "auto")]
    pub page: PagePolicy,
    /// Reserve exactly the huge pages needed through sysfs (root) and give them back at exit.
    #[arg(long)]
    pub reserve: bool,
    /// Workers started and stopped per sharing mode.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub rings: u32,
    /// Print one JSON object on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// A side's spin-ups are timed as the floor's are: at the spawning thread,
/// from the call that starts the worker until that thread knows the
/// worker's ring is ready (`add_worker` returning; the floor's channel
/// receive). `inside_p50_us` is the pool's own figure, taken by the worker
/// when its ring is ready (without the spawner's wake-up).
#[derive(Serialize, Debug, Clone)]
pub struct Side {
    pub p50_us: f64,
    pub inside_p50_us: f64,
    /// Medians of the parts: thread start, io_uring_setup, table (clone/register).
    pub thread_p50_us: f64,
    pub ring_p50_us: f64,
    pub table_p50_us: f64,
    pub p99_us: f64,
    pub min_us: f64,
    pub max_us: f64,
    /// Workers started and stopped per second (start + stop, one at a time).
    pub rings_per_s: f64,
    pub path: String,
}

#[derive(Serialize, Debug)]
pub struct ChurnReport {
    pub pool_bytes: u64,
    pub page_size: &'static str,
    pub segments: usize,
    pub rings: u32,
    pub clone: Side,
    pub register_each: Side,
    pub ratio_p50: f64,
    /// The floor: a bare std thread + io-uring crate ring + clone, same run.
    pub floor_p50_us: f64,
    pub floor_p99_us: f64,
}

fn side(pool: &IoPool, spin: &[f64], inside: &[f64], cycles_s: f64, n: u32) -> Side {
    let st = pool.stats();
    // The last n spin-ups are the timed ones (the first was the warm-up).
    let parts = &st.spinup_parts[st.spinup_parts.len().saturating_sub(n as usize)..];
    let med = |f: fn(&ringpool::stats::SpinupParts) -> std::time::Duration| {
        crate::util::median(&parts.iter().map(|p| us(f(p))).collect::<Vec<_>>())
    };
    Side {
        p50_us: percentile(spin, 50.0),
        inside_p50_us: percentile(inside, 50.0),
        thread_p50_us: med(|p| p.thread),
        ring_p50_us: med(|p| p.ring),
        table_p50_us: med(|p| p.table),
        p99_us: percentile(spin, 99.0),
        min_us: crate::util::min(spin),
        max_us: spin.iter().copied().fold(0.0, f64::max),
        rings_per_s: n as f64 / cycles_s.max(1e-9),
        path: st.path.map(|x| x.to_string()).unwrap_or_default(),
    }
}

fn pool_for(mem: &IoMemory, sharing: Sharing) -> anyhow::Result<IoPool> {
    IoPool::builder()
        .existing_memory(mem.clone())
        .table(TableOptions::new().sharing(sharing))
        .ring(RingOptions::new().entries(64 + 1).engine(EnginePolicy::IoUring))
        .workers(0, 1)
        .idle_timeout(std::time::Duration::from_secs(3600))
        .build()
        .with_context(|| format!("building a {sharing:?} pool"))
}

pub fn run(a: &ChurnArgs) -> anyhow::Result<()> {
    let (policy, _reservation) = crate::util::reserve_for(a.page, a.pool, a.reserve)?;
    let mem = IoMemory::map_with(a.pool, &MemoryOptions::new().page(policy)).context("mapping the pool")?;
    crate::util::describe_pool(&mem, a.page);
    crate::util::prefault_with_bar(&mem)?;
    let clone = pool_for(&mem, Sharing::Clone)?;
    let each = pool_for(&mem, Sharing::RegisterEach)?;
    // One untimed start/stop of each first (code paths, slab caches).
    for p in [&clone, &each] {
        p.add_worker()?;
        p.retire_worker();
    }
    let bar = crate::util::byte_bar(a.rings as u64 * 2, "churn");
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg:>10} [{bar:40}] {pos}/{len} workers")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let (mut spin_c, mut spin_r) = (Vec::new(), Vec::new());
    let (mut in_c, mut in_r) = (Vec::new(), Vec::new());
    let (mut cyc_c, mut cyc_r) = (0.0, 0.0);
    let mut floor = Vec::new();
    let src = clone.table().context("the clone pool has a table")?.template_fd();
    for i in 0..a.rings {
        // Rotate the order of clone, register-each and the floor, so that
        // none always follows another (a register-each stop unpins GiBs).
        for k in 0..3 {
            match (i as usize + k) % 3 {
                0 => floor.push(us(ringpool_testkit::baseline::thread_ring_clone(src, 65)?)),
                which => {
                    let (p, spins, inside, cyc) = if which == 1 {
                        (&clone, &mut spin_c, &mut in_c, &mut cyc_c)
                    } else {
                        (&each, &mut spin_r, &mut in_r, &mut cyc_r)
                    };
                    let t = Instant::now();
                    let d = p.add_worker()?.context("the pool is at its maximum")?;
                    let ready = t.elapsed();
                    p.retire_worker();
                    *cyc += t.elapsed().as_secs_f64();
                    spins.push(us(ready));
                    inside.push(us(d));
                    bar.inc(1);
                }
            }
        }
    }
    bar.finish_and_clear();
    let report = ChurnReport {
        pool_bytes: mem.len(),
        page_size: mem.page_kind().short_name(),
        segments: mem.segments().len(),
        rings: a.rings,
        clone: side(&clone, &spin_c, &in_c, cyc_c, a.rings),
        register_each: side(&each, &spin_r, &in_r, cyc_r, a.rings),
        ratio_p50: percentile(&spin_r, 50.0) / percentile(&spin_c, 50.0).max(1e-3),
        floor_p50_us: percentile(&floor, 50.0),
        floor_p99_us: percentile(&floor, 99.0),
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "worker spin-up (thread + ring + table), {} pool of {} pages in {} segments, {} workers each:",
        Bytes(report.pool_bytes),
        mem.page_kind(),
        report.segments,
        a.rings
    );
    println!(
        "{:>14} {:>10} {:>10} {:>10} {:>10} {:>12} | {:>10} {:>10} {:>10}",
        "sharing", "p50_us", "p99_us", "min_us", "max_us", "rings/s", "thread_p50", "ring_p50", "table_p50"
    );
    for (name, s) in [("clone", &report.clone), ("register-each", &report.register_each)] {
        println!(
            "{:>14} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>12.0} | {:>10.1} {:>10.1} {:>10.1}",
            name, s.p50_us, s.p99_us, s.min_us, s.max_us, s.rings_per_s, s.thread_p50_us, s.ring_p50_us, s.table_p50_us
        );
    }
    println!("ratio p50 register-each / clone: {:.1}x", report.ratio_p50);
    println!(
        "floor (bare std thread + io-uring crate ring + clone, same run): p50 {:.1} us, p99 {:.1} us",
        report.floor_p50_us, report.floor_p99_us
    );
    println!(
        "(every spin-up timed at the spawning thread, from the spawn call until it knows the ring is ready; the \
         pool's own in-worker figure: clone p50 {:.1} us, register-each p50 {:.1} us. rings/s counts a start and a \
         stop; a stop unregisters the table, so register-each unpins synchronously)",
        report.clone.inside_p50_us, report.register_each.inside_p50_us
    );
    Ok(())
}
