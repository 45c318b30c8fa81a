//! Running ringpool's side of `bench io`: the workers (a ring each, or
//! the pool's blocking API) started together, timed over the same window
//! as the CPU they use, and their figures summed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use ringpool::IoPool;

use super::job::{Plan, WorkerOut};
use super::{Figures, Lat};

/// What one ringpool run gave.
pub(super) struct RunOut {
    pub figures: Figures,
    pub verified: u64,
    /// The opcode the io_uring operations used (READ_FIXED, READV_FIXED, ...).
    pub opcode: &'static str,
    /// Operations the rings took, and those they ran inline.
    pub ops: u64,
    pub inline_ops: u64,
}

/// Runs the workers for `--runtime`; their figures, with the whole
/// process's CPU over the I/O window (io-wq threads included), read from
/// /proc/self/stat as fio's is from /proc/<fio>/stat (see `cpu`).
pub(super) fn run_ringpool(p: &Plan<'_>) -> anyhow::Result<RunOut> {
    let a = p.a;
    let start = Barrier::new(a.workers as usize + 1);
    let stop_at = AtomicU64::new(u64::MAX);
    let t0 = Instant::now();
    let (outs, secs, cpu_us) = std::thread::scope(|s| -> anyhow::Result<(Vec<WorkerOut>, f64, f64)> {
        let handles: Vec<_> = (0..a.workers)
            .map(|w| {
                let (start, stop_at) = (&start, &stop_at);
                s.spawn(move || {
                    let r = match p.pool {
                        None => super::ring_worker::worker(p, w, start, stop_at, t0),
                        Some(pool) => super::pool_worker::worker(p, pool, w, start, stop_at, t0),
                    };
                    if r.is_err() {
                        // Release the others: a failed worker must not hang the run.
                        stop_at.store(0, Ordering::Relaxed);
                    }
                    r
                })
            })
            .collect();
        // Workers set up their rings and buffers first; the clock and the
        // CPU account start when all are ready.
        start.wait();
        let before = p.pool.map(IoPool::stats);
        let c0 = super::cpu::self_cpu_us()?;
        let begun = Instant::now();
        let deadline = begun + Duration::from_secs_f64(a.runtime);
        while Instant::now() < deadline && stop_at.load(Ordering::Relaxed) != 0 {
            std::thread::sleep((deadline - Instant::now()).min(Duration::from_millis(50)));
        }
        stop_at.store(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
        let outs: anyhow::Result<Vec<WorkerOut>> =
            handles.into_iter().map(|h| h.join().map_err(|_| anyhow::anyhow!("a worker panicked"))?).collect();
        let secs = begun.elapsed().as_secs_f64();
        let c1 = super::cpu::self_cpu_us()?;
        let mut outs = outs?;
        if let (Some(pool), Some(b)) = (p.pool, before) {
            // The pool's counter stands for every worker's.
            let inline = pool.stats().inline_ops.saturating_sub(b.inline_ops);
            for (i, o) in outs.iter_mut().enumerate() {
                o.stats.ops = o.ios;
                o.stats.inline_ops = if i == 0 { inline } else { 0 };
            }
        }
        Ok((outs, secs, c1.saturating_sub(c0) as f64))
    })?;
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds");
    let (mut ios, mut bytes, mut verified) = (0, 0, 0);
    for o in &outs {
        hist.add(&o.hist).ok();
        ios += o.ios;
        bytes += o.bytes;
        verified += o.verified;
    }
    let figures = Figures {
        iops: ios as f64 / secs,
        mib_s: bytes as f64 / secs / (1 << 20) as f64,
        lat_us: Lat {
            p50: hist.value_at_quantile(0.5) as f64 / 1e3,
            p99: hist.value_at_quantile(0.99) as f64 / 1e3,
            p999: hist.value_at_quantile(0.999) as f64 / 1e3,
        },
        cpu_us_per_io: cpu_us / ios.max(1) as f64,
        cpu_window: "io",
        fio_reported_cpu_us_per_io: None,
        lifetime_cpu_us_per_io: None,
        ios,
        seconds: secs,
    };
    Ok(RunOut {
        figures,
        verified,
        opcode: outs.first().map_or("none", |o| o.opcode),
        ops: outs.iter().map(|o| o.stats.ops).sum(),
        inline_ops: outs.iter().map(|o| o.stats.inline_ops).sum(),
    })
}
