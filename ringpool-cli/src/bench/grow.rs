//! `ringpool bench grow`: with I/O running, the time from growing a live
//! pool until every worker's ring can use the new memory, beside the time
//! to re-register the whole enlarged table in every ring.

use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use ringpool::types::{parse_size, Bytes, DirectIo, PagePolicy, Refresh, Sharing};
use ringpool::{DirectFile, IoMemory, IoPool, MemoryOptions, RingOptions, TableOptions};
use serde::Serialize;

use crate::util::us;

#[derive(Args, Debug)]
pub struct GrowArgs {
    /// Pool size before growing.
    #[arg(long, default_value = "4G", value_parser = parse_size)]
    pub pool: u64,
    /// Bytes to add.
    #[arg(long, default_value = "4G", value_parser = parse_size)]
    pub grow: u64,
    /// Workers running I/O while the pool grows.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub workers: u32,
    /// Page size: auto, 1g, 2m, thp or 4k.
    #[arg(long, default_value = "auto")]
    pub page: PagePolicy,
    /// Reserve exactly the huge pages needed (pool and growth) and give them back at exit.
    #[arg(long)]
    pub reserve: bool,
    /// Force the whole-table re-clone path instead of the ranged DST_REPLACE clone.
    #[arg(long)]
    pub whole: bool,
    /// Then shrink the same bytes under the same I/O: time until every
    /// ring dropped them and the memory is unmapped, and VmPin after.
    #[arg(long)]
    pub shrink: bool,
    /// Print one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize, Debug)]
pub struct GrowReport {
    pub pool_bytes: u64,
    pub grow_bytes: u64,
    pub workers: u32,
    pub page_size: &'static str,
    /// How rings picked the growth up: "ranged" (DST_REPLACE of the new slots) or "whole".
    pub refresh: &'static str,
    /// From the start of the template's registration of the new memory until every ring can use it.
    pub ready_us: f64,
    /// The template's registration of the new memory alone (one buffers update).
    pub register_us: f64,
    /// Mapping and prefaulting the new memory (before, not counted in ready_us).
    pub map_ms: f64,
    pub prefault_ms: f64,
    /// Re-registering the whole enlarged table in every ring, one ring after another (the total work).
    pub reregister_us: f64,
    /// The same, all rings at once on their own threads (wall time).
    pub reregister_parallel_us: f64,
    /// reregister_us / ready_us.
    pub ratio: f64,
    /// Operations completed by the load while the pool grew, and with new-memory leases after.
    pub load_ops: u64,
    pub new_memory_ops: u64,
    /// --shrink: bytes released (the growth's segments).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shrink_bytes: Option<u64>,
    /// From the shrink call until every worker's ring dropped the segments
    /// and the memory was unmapped (leases in them waited for).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shrink_ready_us: Option<f64>,
    /// Of it: waiting for leases, taking the slots out of the template and
    /// the rings, unmapping.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shrink_drain_us: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shrink_unpublish_us: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shrink_unmap_us: Option<f64>,
    /// VmPin of this process before the shrink (grown) and after it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vmpin_before_shrink_kb: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vmpin_after_shrink_kb: Option<u64>,
}

pub fn run(a: &GrowArgs) -> anyhow::Result<()> {
    let (policy, _reservation) = crate::util::reserve_for(a.page, a.pool + a.grow, a.reserve)?;
    let mem = IoMemory::map_with(a.pool, &MemoryOptions::new().page(policy)).context("mapping the pool")?;
    if !a.json {
        crate::util::describe_pool(&mem, a.page);
    }
    crate::util::prefault_with_bar(&mem)?;
    let file = load_file()?;
    let pool = IoPool::builder()
        .existing_memory(mem.clone())
        .table(
            TableOptions::new()
                .capacity(a.pool + a.grow)
                .refresh(if a.whole { Refresh::Whole } else { Refresh::Auto })
                .sharing(Sharing::Clone),
        )
        .ring(RingOptions::new().entries(32 + 1))
        .workers(a.workers as usize, a.workers as usize)
        .idle_timeout(Duration::from_secs(3600))
        .build()?;
    let table = pool.table().context("the pool has a table")?;
    let refresh = if table.ranged_refresh() { "ranged" } else { "whole" };
    let stop = AtomicBool::new(false);
    let load_ops = AtomicU64::new(0);
    let m = std::thread::scope(|s| -> anyhow::Result<Measured> {
        for t in 0..a.workers as u64 {
            let (pool, file, stop, load_ops) = (&pool, &file, &stop, &load_ops);
            s.spawn(move || load(pool, file, t, stop, load_ops));
        }
        std::thread::sleep(Duration::from_millis(300));
        let m = measure(a, &pool, table, &file);
        stop.store(true, Ordering::Relaxed);
        m
    })?;
    let out = report(a, &mem, refresh, &m, load_ops.load(Ordering::Relaxed));
    drop(pool);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print_words(&out, mem.len());
    }
    Ok(())
}

/// Bytes of the load's file.
const LOAD_FILE: u64 = 256 << 20;

/// A file for the load: 256 MiB written with std::fs (real data).
fn load_file() -> anyhow::Result<DirectFile> {
    let path = std::path::PathBuf::from("/var/tmp/ringpool-grow.dat");
    let f = std::fs::OpenOptions::new().write(true).create(true).truncate(false).open(&path)?;
    if f.metadata()?.len() < LOAD_FILE {
        let chunk = vec![0x5au8; 1 << 20];
        for i in 0..LOAD_FILE >> 20 {
            f.write_all_at(&chunk, i << 20)?;
        }
        f.sync_all()?;
    }
    Ok(DirectFile::options().read(true).direct(DirectIo::Optional).open(&path)?)
}

/// One thread of the load: 16 reads of 4 KiB in old memory in flight
/// until `stop`.
fn load(pool: &IoPool, file: &DirectFile, seed: u64, stop: &AtomicBool, ops: &AtomicU64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut inflight = std::collections::VecDeque::new();
    while !stop.load(Ordering::Relaxed) {
        if inflight.len() >= 16 {
            let h: ringpool::OpHandle = inflight.pop_front().expect("non-empty");
            if h.wait().result.is_ok() {
                ops.fetch_add(1, Ordering::Relaxed);
            }
        }
        let Ok(buf) = pool.memory().alloc_timeout(4096, Duration::from_secs(10)) else { continue };
        inflight.push_back(pool.read_at(file, rng.u64(0..LOAD_FILE / 4096) * 4096, buf));
    }
    for h in inflight {
        let _ = h.wait();
    }
}

/// What the growth (and the shrink after it) measured.
struct Measured {
    grown: ringpool::stats::GrowReport,
    ready_at: Instant,
    new_ops: u64,
    reregister: Duration,
    reregister_parallel: Duration,
    /// The shrink's report, and VmPin before and after it.
    shrunk: Option<(ringpool::stats::ShrinkReport, u64, u64)>,
}

/// Under the load: grows the pool, waits until every worker's ring has the
/// new slots, uses leases of the new memory at once from every worker,
/// times the alternative (every ring registering the whole enlarged
/// table), and with --shrink gives the growth back.
fn measure(a: &GrowArgs, pool: &IoPool, table: &ringpool::BufferTable, file: &DirectFile) -> anyhow::Result<Measured> {
    let grown = pool.grow(a.grow)?;
    let ready_at = pool.wait_rings_at(grown.generation, Duration::from_secs(60))?;
    let mut handles = Vec::new();
    for i in 0..a.workers as u64 * 8 {
        let seg = grown.segments.start + (i as u16 % (grown.segments.end - grown.segments.start));
        let buf = pool.memory().try_alloc_in(seg, 4096)?;
        handles.push(pool.read_at(file, (i % (LOAD_FILE / 4096)) * 4096, buf));
    }
    let mut new_ops = 0;
    for h in handles {
        h.wait().result.context("an operation on new memory failed")?;
        new_ops += 1;
    }
    let (reregister, reregister_parallel) = reregister_times(a.workers, table)?;
    let shrunk = if a.shrink {
        std::thread::sleep(Duration::from_millis(100));
        let before = ringpool_testkit::process::vm_pinned_kb(std::process::id())?;
        let r = pool.shrink(grown.bytes, Duration::from_secs(30))?;
        let after = ringpool_testkit::process::vm_pinned_kb(std::process::id())?;
        Some((r, before, after))
    } else {
        None
    };
    Ok(Measured { grown, ready_at, new_ops, reregister, reregister_parallel, shrunk })
}

/// Every ring registering the whole enlarged table itself: one ring after
/// another (the total work), and all at once on their own threads (wall).
fn reregister_times(workers: u32, table: &ringpool::BufferTable) -> anyhow::Result<(Duration, Duration)> {
    let opts = RingOptions::new().entries(32).sharing(Sharing::RegisterEach);
    let mut one_by_one = Duration::ZERO;
    for _ in 0..workers {
        let t = Instant::now();
        let ring = table.ring_with(&opts)?;
        one_by_one += t.elapsed();
        drop(ring);
    }
    let barrier = Barrier::new(workers as usize);
    let t = Instant::now();
    std::thread::scope(|s| -> anyhow::Result<()> {
        let hs: Vec<_> = (0..workers)
            .map(|_| {
                s.spawn(|| -> anyhow::Result<()> {
                    barrier.wait();
                    drop(table.ring_with(&opts)?);
                    Ok(())
                })
            })
            .collect();
        for h in hs {
            h.join().map_err(|_| anyhow::anyhow!("a re-register thread panicked"))??;
        }
        Ok(())
    })?;
    Ok((one_by_one, t.elapsed()))
}

fn report(a: &GrowArgs, mem: &IoMemory, refresh: &'static str, m: &Measured, load_ops: u64) -> GrowReport {
    let ready = m.ready_at.saturating_duration_since(m.grown.register_started);
    let shrunk = m.shrunk.as_ref();
    GrowReport {
        pool_bytes: a.pool,
        grow_bytes: m.grown.bytes,
        workers: a.workers,
        page_size: mem.page_kind().short_name(),
        refresh,
        ready_us: us(ready),
        register_us: us(m.grown.register_time),
        map_ms: m.grown.map_time.as_secs_f64() * 1e3,
        prefault_ms: m.grown.prefault_time.as_secs_f64() * 1e3,
        reregister_us: us(m.reregister),
        reregister_parallel_us: us(m.reregister_parallel),
        ratio: us(m.reregister) / us(ready).max(1e-3),
        load_ops,
        new_memory_ops: m.new_ops,
        shrink_bytes: shrunk.map(|(r, _, _)| r.bytes),
        shrink_ready_us: shrunk.map(|(r, _, _)| us(r.total)),
        shrink_drain_us: shrunk.map(|(r, _, _)| us(r.drain_time)),
        shrink_unpublish_us: shrunk.map(|(r, _, _)| us(r.unpublish_time)),
        shrink_unmap_us: shrunk.map(|(r, _, _)| us(r.unmap_time)),
        vmpin_before_shrink_kb: shrunk.map(|&(_, b, _)| b),
        vmpin_after_shrink_kb: shrunk.map(|&(_, _, a)| a),
    }
}

fn print_words(out: &GrowReport, table_bytes: u64) {
    println!(
        "grew a {} pool by {} under {} workers with I/O running ({} pages, rings refresh: {})",
        Bytes(out.pool_bytes),
        Bytes(out.grow_bytes),
        out.workers,
        out.page_size,
        out.refresh
    );
    println!("  map {:.1} ms, prefault {:.1} ms (before; not counted)", out.map_ms, out.prefault_ms);
    println!("  register into the template's free slots: {:.0} us", out.register_us);
    println!("  ready (register start -> every ring has the new slots): {:.0} us", out.ready_us);
    println!(
        "  re-register the whole {} table in every ring: {:.0} us one after another, {:.0} us all at once",
        Bytes(table_bytes),
        out.reregister_us,
        out.reregister_parallel_us
    );
    println!(
        "  ratio re-register / ready: {:.1}x; {} load ops meanwhile, {} ops on new memory at once",
        out.ratio, out.load_ops, out.new_memory_ops
    );
    if let (Some(b), Some(t), Some(before), Some(after)) =
        (out.shrink_bytes, out.shrink_ready_us, out.vmpin_before_shrink_kb, out.vmpin_after_shrink_kb)
    {
        println!(
            "  shrank {} back under the same load: {:.0} us until every ring dropped it and it was unmapped \
             (leases {:.0} us, tables {:.0} us, unmap {:.0} us); VmPin {} kB -> {} kB",
            Bytes(b),
            t,
            out.shrink_drain_us.unwrap_or(0.0),
            out.shrink_unpublish_us.unwrap_or(0.0),
            out.shrink_unmap_us.unwrap_or(0.0),
            before,
            after
        );
    }
}
