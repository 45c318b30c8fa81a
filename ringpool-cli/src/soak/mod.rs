//! `ringpool soak`: verified random I/O through an IoPool while workers come
//! and go, allocation runs near exhaustion and handles are dropped mid-flight;
//! then a full check that nothing was lost or leaked.

mod traffic;

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use ringpool::types::{parse_size, Bytes, DirectIo, PagePolicy};
use ringpool::{DirectFile, IoPool, MemoryOptions, RingOptions, TableOptions};
use serde::Serialize;
use traffic::{Ctx, Cycles, Tally, REGION};

use crate::verify::{check, stamp, Ledger, SUB, UNCERTAIN};

/// Parses `60s`, `10m`, `1h`, `500ms` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (num, mult) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = t.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (t, 1.0)
    };
    match num.trim().parse::<f64>() {
        Ok(x) if x.is_finite() && x > 0.0 && x * mult < 1e7 => Ok(Duration::from_secs_f64(x * mult)),
        _ => Err(format!("invalid duration {s:?}: expected e.g. 60s, 10m, 1h, 500ms")),
    }
}

#[derive(Args, Debug)]
pub struct SoakArgs {
    /// How long to run.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub duration: Duration,
    /// The file to soak (created and laid out; removed at the end if created here).
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Bytes of the file to use.
    #[arg(long, default_value = "256M", value_parser = parse_size)]
    pub size: u64,
    /// IO memory pool size (small, so that allocation runs near exhaustion).
    #[arg(long, default_value = "16M", value_parser = parse_size)]
    pub pool: u64,
    /// Submitting threads.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub threads: u32,
    /// Operations in flight per submitting thread.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub depth: u32,
    /// Also grow the live pool by --pool and shrink it back, over and over,
    /// under the verified I/O.
    #[arg(long)]
    pub grow_shrink: bool,
    /// Print one JSON object on stdout (with the pool's final stats).
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize, Debug, Default)]
pub struct SoakReport {
    pub duration_s: f64,
    pub ops: u64,
    pub bytes: u64,
    pub verified: u64,
    pub mismatches: u64,
    pub op_errors: u64,
    pub dropped_handles: u64,
    pub leases_outstanding: u64,
    pub fds_before: usize,
    pub fds_after: usize,
    pub vmpin_before_kb: u64,
    pub vmpin_after_kb: u64,
    /// Highest VmPin seen while the pool ran (the registration is there).
    pub vmpin_peak_kb: u64,
    pub workers_started: u64,
    pub workers_retired: u64,
    pub backend: String,
    pub path: String,
    /// Growths and shrinks completed (--grow-shrink).
    pub grow_cycles: u64,
    pub shrink_cycles: u64,
    /// Shrinks that gave up waiting for leases (the pool stayed as it was).
    pub shrink_timeouts: u64,
    pub first_problems: Vec<String>,
    /// The pool's stats just before it shut down.
    pub stats: Option<ringpool::stats::PoolStats>,
}

fn fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0)
}

fn vmpin_kb() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmPin:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

pub fn run(a: &SoakArgs) -> anyhow::Result<()> {
    let size = a.size / REGION * REGION;
    if size < REGION * a.threads as u64 {
        bail!("--size {} leaves fewer than one 1 MiB region per thread", Bytes(a.size));
    }
    let (path, created) = match &a.file {
        Some(p) => (p.clone(), !p.exists()),
        None => (PathBuf::from("/var/tmp/ringpool-soak.dat"), true),
    };
    // The probe's own rings come and go first, so that they are not counted.
    let _ = ringpool::probe::Features::get();
    let file = DirectFile::options().read(true).write(true).create(true).direct(DirectIo::Optional).open(&path)?;
    lay_out(&path, size)?;
    let (fds_before, vmpin_before_kb) = (fds(), vmpin_kb());
    let ledger = Ledger::new(size);
    let tally = Tally::default();
    let started = Instant::now();
    let pool = build_pool(a)?;
    let memory = pool.memory().clone();
    if !a.json {
        let st = pool.stats();
        eprintln!(
            "soaking {} of {} for {:?}: pool of {} ({}), engine {}, table by {:?}, {} threads x {} in flight",
            Bytes(size),
            path.display(),
            a.duration,
            Bytes(memory.len()),
            memory.page_kind(),
            st.engine,
            st.path,
            a.threads,
            a.depth
        );
    }
    let seq = AtomicU64::new(0);
    let ctx =
        Ctx { pool: &pool, file: &file, ledger: &ledger, seq: &seq, tally: &tally, size, threads: a.threads as u64 };
    let cycles = Cycles::default();
    let vmpin_peak = drive(a, &ctx, &cycles, started);
    let snapshot = pool.stats();
    pool.shutdown();
    let st = pool.stats();
    drop(pool);
    let leases_outstanding = memory.stats().leases;
    drop(memory);
    let (fds_after, vmpin_after_kb) = (fds(), vmpin_kb());
    final_pass(&path, &ledger, &tally)?;
    drop(file);
    if created {
        let _ = std::fs::remove_file(&path);
    }
    let report = SoakReport {
        duration_s: started.elapsed().as_secs_f64(),
        ops: tally.ops.load(Ordering::Relaxed),
        bytes: tally.bytes.load(Ordering::Relaxed),
        verified: tally.verified.load(Ordering::Relaxed),
        mismatches: tally.mismatches.load(Ordering::Relaxed),
        op_errors: tally.op_errors.load(Ordering::Relaxed),
        dropped_handles: tally.dropped.load(Ordering::Relaxed),
        leases_outstanding,
        fds_before,
        fds_after,
        vmpin_before_kb,
        vmpin_after_kb,
        vmpin_peak_kb: vmpin_peak,
        workers_started: st.workers_started,
        workers_retired: st.workers_retired,
        backend: st.engine.to_string(),
        path: st.path.map(|p| p.to_string()).unwrap_or_else(|| "none".into()),
        grow_cycles: cycles.grown.load(Ordering::Relaxed),
        shrink_cycles: cycles.shrunk.load(Ordering::Relaxed),
        shrink_timeouts: cycles.shrink_timeouts.load(Ordering::Relaxed),
        first_problems: tally.problems.lock().map(|p| p.clone()).unwrap_or_default(),
        stats: Some(snapshot),
    };
    report_and_judge(a, &report)
}

/// Lays the file out with sequence-0 headers (std::fs: not through ringpool).
fn lay_out(path: &Path, size: u64) -> anyhow::Result<()> {
    let bar = crate::util::byte_bar(size, "layout");
    let mut chunk = vec![0u8; REGION as usize];
    let std_file =
        std::fs::OpenOptions::new().write(true).open(path).with_context(|| format!("opening {}", path.display()))?;
    for r in 0..size / REGION {
        for (i, sub) in chunk.chunks_mut(SUB).enumerate() {
            stamp(sub, r * REGION + (i * SUB) as u64, 0);
        }
        std_file.write_all_at(&chunk, r * REGION)?;
        bar.set_position((r + 1) * REGION);
    }
    std_file.sync_all()?;
    bar.finish_and_clear();
    Ok(())
}

/// The pool under test: small (allocation runs near exhaustion), workers
/// that come and go fast; with --grow-shrink, one segment for the pool and
/// one for each growth, and table slots for both.
fn build_pool(a: &SoakArgs) -> anyhow::Result<IoPool> {
    let mut memory = MemoryOptions::new().page(PagePolicy::Auto);
    let mut table = TableOptions::new();
    if a.grow_shrink {
        memory = memory.segment_size(a.pool.next_power_of_two());
        table = table.capacity(a.pool.next_power_of_two() * 2);
    }
    Ok(IoPool::builder()
        .size(a.pool)
        .memory(memory)
        .table(table)
        .ring(RingOptions::new().entries(33))
        .workers(1, 4)
        .idle_timeout(Duration::from_millis(15))
        .grow_threshold(8, Duration::from_micros(300))
        .build()?)
}

/// Runs the submitting threads until the deadline, with the growth and
/// worker churn beside them and progress shown; returns the peak VmPin.
fn drive(a: &SoakArgs, ctx: &Ctx<'_>, cycles: &Cycles, started: Instant) -> u64 {
    let deadline = started + a.duration;
    let stop = AtomicBool::new(false);
    let vmpin_peak = AtomicU64::new(vmpin_kb());
    std::thread::scope(|s| {
        if a.grow_shrink {
            s.spawn(|| traffic::grow_and_shrink(ctx.pool, a.pool.next_power_of_two(), &stop, ctx.tally, cycles));
        }
        s.spawn(|| traffic::churn_workers(ctx.pool, &stop));
        let progress = s.spawn(|| show_progress(a, ctx.tally, &stop, &vmpin_peak, started));
        let subs: Vec<_> = (0..a.threads as u64)
            .map(|t| s.spawn(move || traffic::submitter(ctx, t, a.depth as usize, deadline)))
            .collect();
        for h in subs {
            let _ = h.join();
        }
        stop.store(true, Ordering::Relaxed);
        let _ = progress.join();
    });
    vmpin_peak.load(Ordering::Relaxed)
}

/// Samples VmPin and, without --json, draws a progress bar, until `stop`.
fn show_progress(a: &SoakArgs, tally: &Tally, stop: &AtomicBool, vmpin_peak: &AtomicU64, started: Instant) {
    let bar = (!a.json).then(|| {
        let bar = indicatif::ProgressBar::new(a.duration.as_secs().max(1));
        bar.set_style(
            indicatif::ProgressStyle::with_template("{msg:>10} [{bar:40}] {pos}/{len} s {prefix}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_message("soak");
        bar
    });
    while !stop.load(Ordering::Relaxed) {
        vmpin_peak.fetch_max(vmpin_kb(), Ordering::Relaxed);
        if let Some(bar) = &bar {
            bar.set_position(started.elapsed().as_secs());
            bar.set_prefix(format!(
                "{} ops, {} verified, {} mismatches",
                tally.ops.load(Ordering::Relaxed),
                tally.verified.load(Ordering::Relaxed),
                tally.mismatches.load(Ordering::Relaxed)
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
}

/// Every block written, read back with std::fs (not through ringpool) and
/// checked against the ledger.
fn final_pass(path: &Path, ledger: &Ledger, tally: &Tally) -> anyhow::Result<()> {
    let std_file = std::fs::File::open(path)?;
    let mut sub = vec![0u8; SUB];
    let written = ledger.written_blocks();
    let bar = crate::util::byte_bar(written.len() as u64 * SUB as u64, "verify");
    for &b in &written {
        let off = b * SUB as u64;
        std_file.read_exact_at(&mut sub, off)?;
        let want = ledger.seq[b as usize].load(Ordering::Relaxed);
        match check(&sub, off) {
            Err(e) => tally.problem(&tally.mismatches, format!("final pass: {e}")),
            Ok(got) if want != UNCERTAIN && got != want => tally.problem(
                &tally.mismatches,
                format!("final pass: offset {off} holds sequence {got}, last write was {want}"),
            ),
            Ok(_) => {
                tally.verified.fetch_add(1, Ordering::Relaxed);
            }
        }
        bar.inc(SUB as u64);
    }
    bar.finish_and_clear();
    Ok(())
}

/// Prints the report (JSON or words) and fails on any violation: a
/// mismatch, a failed operation, a lost lease, a leaked fd or pinned page.
fn report_and_judge(a: &SoakArgs, report: &SoakReport) -> anyhow::Result<()> {
    let mut violations = Vec::new();
    if report.mismatches > 0 {
        violations.push(format!("{} mismatches", report.mismatches));
    }
    if report.op_errors > 0 {
        violations.push(format!("{} failed operations", report.op_errors));
    }
    if report.leases_outstanding > 0 {
        violations.push(format!("{} leases outstanding", report.leases_outstanding));
    }
    if report.fds_before != report.fds_after {
        violations.push(format!("fds {} before, {} after", report.fds_before, report.fds_after));
    }
    if report.vmpin_before_kb != report.vmpin_after_kb {
        violations.push(format!("VmPin {} kB before, {} kB after", report.vmpin_before_kb, report.vmpin_after_kb));
    }
    if report.ops == 0 {
        violations.push("no operation completed".into());
    }
    if a.grow_shrink && report.shrink_cycles == 0 {
        violations.push("--grow-shrink: no shrink completed".into());
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        print_words(a, report);
    }
    if !violations.is_empty() {
        bail!("soak failed: {}", violations.join(", "));
    }
    Ok(())
}

fn print_words(a: &SoakArgs, report: &SoakReport) {
    println!(
        "{:.1} s: {} ops ({}), {} blocks of 4 KiB verified, {} mismatches, {} failed ops, {} handles dropped mid-flight",
        report.duration_s,
        report.ops,
        Bytes(report.bytes),
        report.verified,
        report.mismatches,
        report.op_errors,
        report.dropped_handles
    );
    println!(
        "workers started {}, retired {}; leases outstanding {}; fds {} -> {}; VmPin {} kB -> {} kB (peak {} kB)",
        report.workers_started,
        report.workers_retired,
        report.leases_outstanding,
        report.fds_before,
        report.fds_after,
        report.vmpin_before_kb,
        report.vmpin_after_kb,
        report.vmpin_peak_kb
    );
    if a.grow_shrink {
        println!(
            "grown {} times, shrunk {} times ({} shrinks waited past 10 s for leases)",
            report.grow_cycles, report.shrink_cycles, report.shrink_timeouts
        );
    }
    for p in &report.first_problems {
        println!("  {p}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("60s").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("20").unwrap(), Duration::from_secs(20));
        for bad in ["", "s", "-1s", "abc", "1e30h", "0"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
