//! `ringpool soak`: verified random I/O through an IoPool while workers come
//! and go, allocation runs near exhaustion and handles are dropped mid-flight;
//! then a full check that nothing was lost or leaked.

use std::collections::VecDeque;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use ringpool::units::{parse_size, Bytes};
use ringpool::{DirectFile, DirectIo, IoPool, IoResult, OpHandle, PagePolicy};
use serde::Serialize;

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
    pub stats: Option<ringpool::PoolStats>,
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

/// Shared counters of one soak.
#[derive(Default)]
struct Tally {
    ops: AtomicU64,
    bytes: AtomicU64,
    verified: AtomicU64,
    mismatches: AtomicU64,
    op_errors: AtomicU64,
    dropped: AtomicU64,
    problems: Mutex<Vec<String>>,
}

impl Tally {
    fn problem(&self, counter: &AtomicU64, what: String) {
        counter.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut p) = self.problems.lock() {
            if p.len() < 10 {
                p.push(what);
            }
        }
    }
}

const REGION: u64 = 1 << 20;

struct Flight {
    write: bool,
    offset: u64,
    len: u64,
    seq: u64,
    /// For reads of this thread's own region: the sequences expected.
    expect: Option<Vec<u64>>,
    handle: OpHandle<IoResult>,
}

struct Ctx<'a> {
    pool: &'a IoPool,
    file: &'a DirectFile,
    ledger: &'a Ledger,
    seq: &'a AtomicU64,
    tally: &'a Tally,
    size: u64,
    threads: u64,
}

fn finish(c: &Ctx<'_>, f: Flight) {
    let (r, buf) = f.handle.wait();
    let n = match r {
        Ok(n) => n as u64,
        Err(e) => {
            c.tally.problem(
                &c.tally.op_errors,
                format!("{} at {}: {e}", if f.write { "write" } else { "read" }, f.offset),
            );
            return;
        }
    };
    c.tally.ops.fetch_add(1, Ordering::Relaxed);
    c.tally.bytes.fetch_add(n, Ordering::Relaxed);
    if n != f.len {
        c.tally.problem(&c.tally.op_errors, format!("short transfer at {}: {n} of {}", f.offset, f.len));
        return;
    }
    if f.write {
        c.ledger.record(f.offset, f.len, f.seq);
        return;
    }
    for (i, sub) in buf.chunks(SUB).enumerate() {
        let off = f.offset + (i * SUB) as u64;
        match check(sub, off) {
            Err(e) => c.tally.problem(&c.tally.mismatches, e),
            Ok(seq) => {
                let issued = c.seq.load(Ordering::Relaxed);
                let exact = f.expect.as_ref().map(|v| v[i]).filter(|&s| s != UNCERTAIN);
                if seq > issued {
                    c.tally.problem(&c.tally.mismatches, format!("offset {off}: sequence {seq} was never issued"));
                } else if exact.is_some_and(|want| want != seq) {
                    c.tally.problem(
                        &c.tally.mismatches,
                        format!("offset {off}: holds sequence {seq}, the last write there was {}", exact.unwrap_or(0)),
                    );
                } else {
                    c.tally.verified.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

fn submitter(c: &Ctx<'_>, t: u64, depth: usize, deadline: Instant) {
    let mut rng = fastrand::Rng::with_seed(0x50a6 ^ t);
    let mut flights: VecDeque<Flight> = VecDeque::new();
    let regions = c.size / REGION;
    let overlaps = |flights: &VecDeque<Flight>, off: u64, len: u64| {
        flights.iter().any(|f| off < f.offset + f.len && f.offset < off + len)
    };
    while Instant::now() < deadline {
        if flights.len() >= depth {
            if let Some(f) = flights.pop_front() {
                finish(c, f);
            }
        }
        let len = rng.u64(1..=64) * SUB as u64;
        let write = rng.u32(0..10) < 4;
        let (offset, own) = if write {
            // Writes stay inside this thread's regions.
            let mine = (regions / c.threads).max(1);
            let region = (rng.u64(0..mine) * c.threads + t) % regions;
            let off = region * REGION + rng.u64(0..(REGION - len) / SUB as u64 + 1) * SUB as u64;
            (off, true)
        } else {
            let off = rng.u64(0..(c.size - len) / SUB as u64 + 1) * SUB as u64;
            let region_first = off / REGION;
            let region_last = (off + len - 1) / REGION;
            (off, region_first == region_last && region_first % c.threads == t)
        };
        // Never two of this thread's operations on the same bytes at once, so
        // that the last completed write of its regions is well defined.
        if own && overlaps(&flights, offset, len) {
            continue;
        }
        let mut buf = match c.pool.memory().alloc_timeout(len as usize, Duration::from_secs(30)) {
            Ok(b) => b,
            Err(e) => {
                c.tally.problem(&c.tally.op_errors, format!("alloc {len}: {e}"));
                continue;
            }
        };
        let drop_it = rng.u32(0..100) < 5;
        if write {
            let seq = c.seq.fetch_add(1, Ordering::Relaxed) + 1;
            for (i, sub) in buf.chunks_mut(SUB).enumerate() {
                stamp(sub, offset + (i * SUB) as u64, seq);
            }
            let handle = c.pool.write_at(c.file, offset, buf);
            if drop_it {
                // Its completion will never be seen: whatever version of
                // these blocks ends up on disk is acceptable, if it is whole.
                c.ledger.record(offset, len, UNCERTAIN);
                c.tally.dropped.fetch_add(1, Ordering::Relaxed);
                drop(handle);
            } else {
                flights.push_back(Flight { write, offset, len, seq, expect: None, handle });
            }
        } else {
            let expect = own.then(|| {
                (0..len / SUB as u64)
                    .map(|i| c.ledger.seq[((offset / SUB as u64) + i) as usize].load(Ordering::Relaxed))
                    .collect()
            });
            let handle = c.pool.read_at(c.file, offset, buf);
            if drop_it {
                c.tally.dropped.fetch_add(1, Ordering::Relaxed);
                drop(handle);
            } else {
                flights.push_back(Flight { write, offset, len, seq: 0, expect, handle });
            }
        }
    }
    for f in flights {
        finish(c, f);
    }
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
    let _ = ringpool::Features::get();
    let file = DirectFile::options().read(true).write(true).create(true).direct(DirectIo::Optional).open(&path)?;
    // Lay the file out with sequence-0 headers (std::fs: not through ringpool).
    let bar = crate::util::byte_bar(size, "layout");
    let mut chunk = vec![0u8; REGION as usize];
    let std_file =
        std::fs::OpenOptions::new().write(true).open(&path).with_context(|| format!("opening {}", path.display()))?;
    for r in 0..size / REGION {
        for (i, sub) in chunk.chunks_mut(SUB).enumerate() {
            stamp(sub, r * REGION + (i * SUB) as u64, 0);
        }
        std_file.write_all_at(&chunk, r * REGION)?;
        bar.set_position((r + 1) * REGION);
    }
    std_file.sync_all()?;
    bar.finish_and_clear();

    let (fds_before, vmpin_before_kb) = (fds(), vmpin_kb());
    let ledger = Ledger::new(size);
    let seq = AtomicU64::new(0);
    let tally = Tally::default();
    let started = Instant::now();
    let deadline = started + a.duration;
    let mut builder = IoPool::builder().memory_size(a.pool).page(PagePolicy::Auto);
    if a.grow_shrink {
        // One segment for the pool and one for each growth, slots for both.
        builder = builder.segment_size(a.pool.next_power_of_two()).capacity(a.pool.next_power_of_two() * 2);
    }
    let pool = builder
        .workers(1, 4)
        .ring_depth(32)
        .idle_timeout(Duration::from_millis(15))
        .grow_threshold(8, Duration::from_micros(300))
        .build()?;
    let memory = pool.memory().clone();
    if !a.json {
        let st = pool.stats();
        eprintln!(
            "soaking {} of {} for {:?}: pool of {} ({}), backend {}, table by {:?}, {} threads x {} in flight",
            Bytes(size),
            path.display(),
            a.duration,
            Bytes(memory.len()),
            memory.page_kind(),
            st.backend,
            st.path,
            a.threads,
            a.depth
        );
    }
    let ctx =
        Ctx { pool: &pool, file: &file, ledger: &ledger, seq: &seq, tally: &tally, size, threads: a.threads as u64 };
    let stop = AtomicBool::new(false);
    let vmpin_peak = AtomicU64::new(vmpin_kb());
    let (grow_cycles, shrink_cycles, shrink_timeouts) = (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
    std::thread::scope(|s| {
        if a.grow_shrink {
            s.spawn(|| {
                let mut rng = fastrand::Rng::with_seed(7);
                let step = a.pool.next_power_of_two();
                while !stop.load(Ordering::Relaxed) {
                    match pool.grow(step) {
                        Ok(_) => grow_cycles.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            tally.problem(&tally.op_errors, format!("grow: {e}"));
                            break;
                        }
                    };
                    std::thread::sleep(Duration::from_millis(rng.u64(1..30)));
                    // Leases in the grown segment come back within the
                    // operations' time; the shrink waits for them.
                    match pool.shrink(step, Duration::from_secs(10)) {
                        Ok(_) => {
                            shrink_cycles.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(ringpool::Error::ShrinkTimeout { .. }) => {
                            shrink_timeouts.fetch_add(1, Ordering::Relaxed);
                            let _ = pool.shrink(step, Duration::from_secs(60));
                        }
                        Err(e) => {
                            tally.problem(&tally.op_errors, format!("shrink: {e}"));
                            break;
                        }
                    }
                    std::thread::sleep(Duration::from_millis(rng.u64(1..30)));
                }
            });
        }
        // Workers come and go all the time, beside the pool's own scaling.
        s.spawn(|| {
            let mut rng = fastrand::Rng::with_seed(42);
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(rng.u64(2..20)));
                if rng.bool() {
                    let _ = pool.add_worker();
                } else if pool.stats().workers > 1 {
                    pool.retire_worker();
                }
            }
        });
        let progress = s.spawn(|| {
            if a.json {
                while !stop.load(Ordering::Relaxed) {
                    vmpin_peak.fetch_max(vmpin_kb(), Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(200));
                }
                return;
            }
            let bar = indicatif::ProgressBar::new(a.duration.as_secs().max(1));
            bar.set_style(
                indicatif::ProgressStyle::with_template("{msg:>10} [{bar:40}] {pos}/{len} s {prefix}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar.set_message("soak");
            while !stop.load(Ordering::Relaxed) {
                vmpin_peak.fetch_max(vmpin_kb(), Ordering::Relaxed);
                bar.set_position(started.elapsed().as_secs());
                bar.set_prefix(format!(
                    "{} ops, {} verified, {} mismatches",
                    tally.ops.load(Ordering::Relaxed),
                    tally.verified.load(Ordering::Relaxed),
                    tally.mismatches.load(Ordering::Relaxed)
                ));
                std::thread::sleep(Duration::from_millis(200));
            }
            bar.finish_and_clear();
        });
        let subs: Vec<_> = (0..a.threads as u64)
            .map(|t| {
                s.spawn({
                    let ctx = &ctx;
                    move || submitter(ctx, t, a.depth as usize, deadline)
                })
            })
            .collect();
        for h in subs {
            let _ = h.join();
        }
        stop.store(true, Ordering::Relaxed);
        let _ = progress.join();
    });
    let snapshot = pool.stats();
    pool.shutdown();
    let st = pool.stats();
    drop(pool);
    let leases_outstanding = memory.stats().leases;
    drop(memory);
    let (fds_after, vmpin_after_kb) = (fds(), vmpin_kb());

    // Every block written, read back with std::fs (not through ringpool).
    let std_file = std::fs::File::open(&path)?;
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
        vmpin_peak_kb: vmpin_peak.load(Ordering::Relaxed),
        workers_started: st.workers_started,
        workers_retired: st.workers_retired,
        backend: st.backend.to_string(),
        path: st.path.map(|p| p.to_string()).unwrap_or_else(|| "none".into()),
        grow_cycles: grow_cycles.load(Ordering::Relaxed),
        shrink_cycles: shrink_cycles.load(Ordering::Relaxed),
        shrink_timeouts: shrink_timeouts.load(Ordering::Relaxed),
        first_problems: tally.problems.lock().map(|p| p.clone()).unwrap_or_default(),
        stats: Some(snapshot),
    };
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
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
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
    if !violations.is_empty() {
        bail!("soak failed: {}", violations.join(", "));
    }
    Ok(())
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
