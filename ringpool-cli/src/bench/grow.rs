//! `ringpool bench grow`: with I/O running, the time from growing a live
//! pool until every worker's ring can use the new memory, beside the time
//! to re-register the whole enlarged table in every ring.

use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use ringpool::units::{parse_size, Bytes};
use ringpool::{DirectFile, DirectIo, IoMemory, IoPool, MemoryOptions, PagePolicy, Refresh, RingOptions, Sharing};
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

    // A file for the load: 256 MiB written with std::fs (real data).
    let path = std::path::PathBuf::from("/var/tmp/ringpool-grow.dat");
    let size: u64 = 256 << 20;
    {
        let f = std::fs::OpenOptions::new().write(true).create(true).truncate(false).open(&path)?;
        if f.metadata()?.len() < size {
            let chunk = vec![0x5au8; 1 << 20];
            for i in 0..size >> 20 {
                f.write_all_at(&chunk, i << 20)?;
            }
            f.sync_all()?;
        }
    }
    let file = DirectFile::options().read(true).direct(DirectIo::Optional).open(&path)?;
    let pool = IoPool::builder()
        .memory(mem.clone())
        .workers(a.workers as usize, a.workers as usize)
        .ring_depth(32)
        .capacity(a.pool + a.grow)
        .refresh(if a.whole { Refresh::Whole } else { Refresh::Auto })
        .sharing(Sharing::Clone)
        .idle_timeout(Duration::from_secs(3600))
        .build()?;
    let table = pool.table().context("the pool has a table")?;
    let refresh = if table.ranged_refresh() { "ranged" } else { "whole" };

    let stop = AtomicBool::new(false);
    let load_ops = AtomicU64::new(0);
    let (grown, new_ops, reregister, reregister_parallel, shrunk) = std::thread::scope(|s| -> anyhow::Result<_> {
        // The load: every worker busy with 4 KiB reads in old memory.
        for t in 0..a.workers as u64 {
            let (pool, file, stop, load_ops) = (&pool, &file, &stop, &load_ops);
            s.spawn(move || {
                let mut rng = fastrand::Rng::with_seed(t);
                let mut inflight = std::collections::VecDeque::new();
                while !stop.load(Ordering::Relaxed) {
                    if inflight.len() >= 16 {
                        let h: ringpool::OpHandle<ringpool::IoResult> = inflight.pop_front().expect("non-empty");
                        if h.wait().0.is_ok() {
                            load_ops.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    let Ok(buf) = pool.memory().alloc_timeout(4096, Duration::from_secs(10)) else { continue };
                    inflight.push_back(pool.read_at(file, rng.u64(0..size / 4096) * 4096, buf));
                }
                for h in inflight {
                    let _ = h.wait();
                }
            });
        }
        std::thread::sleep(Duration::from_millis(300));
        let report = pool.grow(a.grow)?;
        let ready_at = pool.wait_rings_at(report.generation, Duration::from_secs(60))?;
        // Leases of the new memory, used at once from every worker.
        let mut handles = Vec::new();
        for i in 0..a.workers as u64 * 8 {
            let seg = report.segments.start + (i as u16 % (report.segments.end - report.segments.start));
            let buf = pool.memory().try_alloc_in(seg, 4096)?;
            handles.push(pool.read_at(&file, (i % (size / 4096)) * 4096, buf));
        }
        let mut new_ops = 0;
        for h in handles {
            let (r, _) = h.wait();
            r.context("an operation on new memory failed")?;
            new_ops += 1;
        }
        // The alternative: every ring registers the whole enlarged table.
        let mut reregister = Duration::ZERO;
        for _ in 0..a.workers {
            let t = Instant::now();
            let ring = table.ring_with(&RingOptions::new().entries(32).sharing(Sharing::RegisterEach))?;
            reregister += t.elapsed();
            drop(ring);
        }
        let barrier = Barrier::new(a.workers as usize);
        let t = Instant::now();
        std::thread::scope(|s2| -> anyhow::Result<()> {
            let hs: Vec<_> = (0..a.workers)
                .map(|_| {
                    s2.spawn(|| -> anyhow::Result<()> {
                        barrier.wait();
                        let ring = table.ring_with(&RingOptions::new().entries(32).sharing(Sharing::RegisterEach))?;
                        drop(ring);
                        Ok(())
                    })
                })
                .collect();
            for h in hs {
                h.join().map_err(|_| anyhow::anyhow!("a re-register thread panicked"))??;
            }
            Ok(())
        })?;
        let reregister_parallel = t.elapsed();
        // The growth's bytes back, with the load still running.
        let shrunk = if a.shrink {
            std::thread::sleep(Duration::from_millis(100));
            let before = ringpool::process::vm_pinned_kb(std::process::id())?;
            let r = pool.shrink(report.bytes, Duration::from_secs(30))?;
            let after = ringpool::process::vm_pinned_kb(std::process::id())?;
            Some((r, before, after))
        } else {
            None
        };
        stop.store(true, Ordering::Relaxed);
        Ok(((report, ready_at), new_ops, reregister, reregister_parallel, shrunk))
    })?;
    let (report, ready_at) = grown;
    let ready = ready_at.saturating_duration_since(report.register_started);
    let out = GrowReport {
        pool_bytes: a.pool,
        grow_bytes: report.bytes,
        workers: a.workers,
        page_size: mem.page_kind().short_name(),
        refresh,
        ready_us: us(ready),
        register_us: us(report.register_time),
        map_ms: report.map_time.as_secs_f64() * 1e3,
        prefault_ms: report.prefault_time.as_secs_f64() * 1e3,
        reregister_us: us(reregister),
        reregister_parallel_us: us(reregister_parallel),
        ratio: us(reregister) / us(ready).max(1e-3),
        load_ops: load_ops.load(Ordering::Relaxed),
        new_memory_ops: new_ops,
        shrink_bytes: shrunk.as_ref().map(|(r, _, _)| r.bytes),
        shrink_ready_us: shrunk.as_ref().map(|(r, _, _)| us(r.total)),
        shrink_drain_us: shrunk.as_ref().map(|(r, _, _)| us(r.drain_time)),
        shrink_unpublish_us: shrunk.as_ref().map(|(r, _, _)| us(r.unpublish_time)),
        shrink_unmap_us: shrunk.as_ref().map(|(r, _, _)| us(r.unmap_time)),
        vmpin_before_shrink_kb: shrunk.as_ref().map(|&(_, b, _)| b),
        vmpin_after_shrink_kb: shrunk.as_ref().map(|&(_, _, a)| a),
    };
    drop(pool);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
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
        Bytes(mem.len()),
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
    Ok(())
}
