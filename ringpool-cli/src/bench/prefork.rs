//! `ringpool bench prefork`: the time until N worker processes can each do
//! fixed I/O on the whole pool, (a) the owner registers the pool once,
//! clones its table into N disabled rings and forks (each child enables
//! its ring), against (b) each forked child registering the pool itself
//! (the bare io-uring crate, as a prefork server does without clone); and
//! what is pinned while all are ready. The two sides alternate, round
//! after round; medians are reported.
//!
//! Each child proves its ring reaches the whole pool: two READ_FIXED of
//! 4 KiB, one into the first segment and one into the last, both checked
//! against the file's contents.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Args;
use ringpool::handover::HandoverOptions;
use ringpool::types::{parse_size, Bytes};
use ringpool::types::{EnginePolicy, PagePolicy};
use ringpool::{BufferTable, DirectFile, IoMemory, MemoryOptions, RingOptions};
use ringpool_testkit::baseline;
use serde::Serialize;

use crate::util::median;

const BLOCK: usize = 4096;
/// Blocks of the data file children read from.
const FILE_BLOCKS: u64 = 256;

#[derive(Args, Debug)]
pub struct PreforkArgs {
    /// Worker processes.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub procs: u32,
    /// Pool size (shared memory, a memfd).
    #[arg(long, default_value = "4G", value_parser = parse_size)]
    pub pool: u64,
    /// Page size: auto, 1g, 2m, thp or 4k.
    #[arg(long, default_value = "auto")]
    pub page: PagePolicy,
    /// Reserve exactly the huge pages needed and give them back at exit.
    #[arg(long)]
    pub reserve: bool,
    /// Rounds of each side, alternating (medians are reported).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub rounds: u32,
    /// Broker round trips timed (a process asks the broker for a ring and
    /// does a verified fixed read with it); 0 skips them.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(0..=100_000))]
    pub broker_trips: u32,
    /// Print one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

/// One side's figures (medians over the rounds).
#[derive(Serialize, Debug, Clone, Copy, Default)]
pub struct Side {
    /// From the start until every process reported a verified fixed read
    /// of the first and the last segment.
    pub ready_ms: f64,
    /// Per process: from the start of its own setup (the owner's handover
    /// of its ring, or its fork) until it was ready; median over processes.
    pub per_proc_p50_us: f64,
    /// VmPin summed over the owner and every child while all were ready.
    pub pinned_kb: u64,
}

/// Broker round trips, timed in the requesting process.
#[derive(Serialize, Debug, Clone, Copy, Default)]
pub struct BrokerTrips {
    pub round_trips: u32,
    /// Connect, request, receive the ring and the memfds, enable, map the
    /// pool, one verified 4 KiB READ_FIXED, close.
    pub round_trip_p50_us: f64,
    pub round_trip_p99_us: f64,
}

#[derive(Serialize, Debug)]
pub struct PreforkReport {
    pub procs: u32,
    pub pool_bytes: u64,
    pub page_size: String,
    pub segments: u16,
    pub rounds: u32,
    /// The owner's one registration of the pool, before the clone side's
    /// clock starts (a prefork server has its pool registered before it
    /// starts workers).
    pub template_register_ms: f64,
    pub clone: Side,
    pub register_each: Side,
    /// register_each.ready_ms / clone.ready_ms.
    pub ratio_ready: f64,
    /// The same with the owner's registration counted on the clone side.
    pub ratio_ready_with_register: f64,
    /// register_each.pinned_kb / clone.pinned_kb.
    pub ratio_pinned: f64,
    /// clone.pinned_kb / the pool's KiB.
    pub clone_pinned_per_pool: f64,
    pub broker: BrokerTrips,
}

/// The byte at `i` of the data file.
fn pattern(i: u64) -> u8 {
    (i.wrapping_mul(2_654_435_761) >> 13) as u8
}

fn expected(block: u64) -> Vec<u8> {
    (0..BLOCK as u64).map(|j| pattern(block * BLOCK as u64 + j)).collect()
}

/// The pool offsets child `i` reads into: one block in the first segment,
/// one in the last.
fn slots(i: u32, pool: u64) -> [u64; 2] {
    let b = BLOCK as u64;
    [u64::from(i) * b, pool - (u64::from(i) + 1) * b]
}

/// The data children read: a file in memory (tmpfs), so that the figures
/// are the processes' set-up, not the disk's latency (both sides read the
/// same blocks the same way).
fn data_file() -> anyhow::Result<std::path::PathBuf> {
    let dir = if std::path::Path::new("/dev/shm").is_dir() { "/dev/shm" } else { "/var/tmp" };
    let path = std::path::PathBuf::from(dir).join("ringpool-prefork.dat");
    let want: Vec<u8> = (0..FILE_BLOCKS * BLOCK as u64).map(pattern).collect();
    let fresh = std::fs::read(&path).map(|b| b == want).unwrap_or(false);
    if !fresh {
        std::fs::write(&path, &want).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(path)
}

/// The end of a child's part in a round: say how it went, keep what it set
/// up (its registration stays pinned while the owner reads VmPin) until
/// the owner's byte comes, and give the exit code.
fn finish_child<T>(
    side: &str,
    i: u32,
    ok: ringpool::Result<T>,
    mut tx: std::io::PipeWriter,
    mut go: std::io::PipeReader,
) -> i32 {
    if let Err(e) = &ok {
        eprintln!("{side} child {i}: {e}");
    }
    report(&mut tx, i, ok.is_ok());
    drop(tx);
    let mut b = [0u8; 1];
    let _ = go.read(&mut b);
    i32::from(ok.is_err())
}

/// What a child reports on the ready pipe: index, status, ready time.
const REPORT: usize = 16;

fn report(pipe: &mut std::io::PipeWriter, i: u32, ok: bool) {
    let mut m = [0u8; REPORT];
    m[..4].copy_from_slice(&i.to_le_bytes());
    m[4..8].copy_from_slice(&u32::from(!ok).to_le_bytes());
    m[8..].copy_from_slice(&(now_ns()).to_le_bytes());
    // 16 bytes: atomic on a pipe (PIPE_BUF).
    let _ = pipe.write_all(&m);
}

/// Runs a child's work; a panic becomes an error, so that the child still
/// reports (the owner waits for every report).
fn guarded<T>(f: impl FnOnce() -> ringpool::Result<T>) -> ringpool::Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .unwrap_or_else(|_| Err(ringpool::Error::Lost("the child's work panicked".into())))
}

/// CLOCK_MONOTONIC, one clock for every process.
fn now_ns() -> u64 {
    ringpool_testkit::process::monotonic_ns()
}

struct Round {
    ready: std::time::Duration,
    per_proc_us: Vec<f64>,
    pinned_kb: u64,
}

/// Children block on `go` until the owner has read every report and
/// VmPin (then it writes one byte per child: each child holds a copy of
/// the write end, so no child would ever see the pipe close), then exit.
fn collect(
    procs: &[(u32, u64)],
    start: Instant,
    ready_rx: &mut std::io::PipeReader,
    go_tx: std::io::PipeWriter,
) -> anyhow::Result<Round> {
    let n = procs.len();
    let mut per_proc = vec![0.0; n];
    let mut failed = Vec::new();
    for _ in 0..n {
        let mut m = [0u8; REPORT];
        ready_rx.read_exact(&mut m).context("a child's report")?;
        let i = u32::from_le_bytes(m[..4].try_into()?) as usize;
        let status = u32::from_le_bytes(m[4..8].try_into()?);
        let at = u64::from_le_bytes(m[8..].try_into()?);
        if status != 0 {
            failed.push(i);
        }
        if let Some(&(_, began)) = procs.get(i) {
            per_proc[i] = at.saturating_sub(began) as f64 / 1e3;
        }
    }
    let ready = start.elapsed();
    let mut pinned = ringpool_testkit::process::vm_pinned_kb(std::process::id())?;
    for &(pid, _) in procs {
        pinned += ringpool_testkit::process::vm_pinned_kb(pid).unwrap_or(0);
    }
    let mut go_tx = go_tx;
    go_tx.write_all(&vec![b'g'; n])?;
    drop(go_tx);
    let mut bad = failed.len();
    for &(pid, _) in procs {
        if ringpool_testkit::process::wait_child(pid)? != 0 {
            bad += 1;
        }
    }
    if bad > 0 {
        bail!("{bad} worker processes failed (children {failed:?} reported a failed fixed read)");
    }
    Ok(Round { ready, per_proc_us: per_proc, pinned_kb: pinned })
}

fn clone_round(mem: &IoMemory, file: &DirectFile, procs: u32) -> anyhow::Result<(Round, f64)> {
    let (mut ready_rx, ready_tx) = std::io::pipe()?;
    let (go_rx, go_tx) = std::io::pipe()?;
    // The owner's pool is registered already (a prefork server registers
    // it once, before its workers): the clock starts at the first handover.
    let t = Instant::now();
    let table = BufferTable::register(mem).context("registering the pool")?;
    let register_ms = t.elapsed().as_secs_f64() * 1e3;
    let start = Instant::now();
    let pool = mem.len();
    let mut pids = Vec::with_capacity(procs as usize);
    for i in 0..procs {
        let began = now_ns();
        let handed = table.handover(&HandoverOptions::new().entries(8)).context("handing a ring over")?;
        let (tx, go) = (ready_tx.try_clone()?, go_rx.try_clone()?);
        let child = move || {
            let ok = guarded(|| -> ringpool::Result<()> {
                let opts = RingOptions { engine: EnginePolicy::IoUring, ..RingOptions::default() };
                let mut ring = handed.enable_with(&opts)?;
                let view = ring.memory().expect("a handed ring has the pool").clone();
                for (k, off) in slots(i, pool).into_iter().enumerate() {
                    let block = (u64::from(i) * 2 + k as u64) % FILE_BLOCKS;
                    // SAFETY (of the region): child i alone uses these
                    // blocks (slots are disjoint per child).
                    let buf = unsafe { view.region(off, BLOCK)? };
                    let (res, buf) = ring.read_at(file, block * BLOCK as u64, buf).into_one();
                    res?;
                    if buf[..] != expected(block)[..] {
                        return Err(ringpool::Error::Lost(format!("child {i}: wrong bytes at pool offset {off}")));
                    }
                }
                Ok(())
            });
            finish_child("clone", i, ok, tx, go)
        };
        // SAFETY: this process is single-threaded here but for the Ctrl-C
        // thread (--reserve), which holds no lock the child takes; the child
        // uses only what it inherited and exits.
        let pid = unsafe { ringpool_testkit::process::fork_child(child) }.context("fork")?;
        pids.push((pid, began));
    }
    drop(ready_tx);
    drop(go_rx);
    let round = collect(&pids, start, &mut ready_rx, go_tx)?;
    drop(table);
    Ok((round, register_ms))
}

fn register_round(mem: &IoMemory, file: &DirectFile, procs: u32) -> anyhow::Result<Round> {
    let (mut ready_rx, ready_tx) = std::io::pipe()?;
    let (go_rx, go_tx) = std::io::pipe()?;
    let prepared = baseline::ForkRegistration::prepare(mem);
    let pool = mem.len();
    let start = Instant::now();
    let mut pids = Vec::with_capacity(procs as usize);
    for i in 0..procs {
        let began = now_ns();
        let (tx, go) = (ready_tx.try_clone()?, go_rx.try_clone()?);
        let prepared = prepared.clone();
        let child = move || {
            let ok = guarded(|| -> ringpool::Result<baseline::ChildTable> {
                let bare = |e| ringpool::Error::Io { op: "bare io-uring", path: None, offset: None, source: e };
                let mut t = prepared.register().map_err(bare)?;
                for (k, off) in slots(i, pool).into_iter().enumerate() {
                    let block = (u64::from(i) * 2 + k as u64) % FILE_BLOCKS;
                    let got = t.read_fixed(file.as_fd(), block * BLOCK as u64, off, BLOCK as u32).map_err(bare)?;
                    if got != expected(block) {
                        return Err(ringpool::Error::Lost(format!("child {i}: wrong bytes at pool offset {off}")));
                    }
                }
                Ok(t)
            });
            finish_child("register", i, ok, tx, go)
        };
        // SAFETY: as in clone_round.
        let pid = unsafe { ringpool_testkit::process::fork_child(child) }.context("fork")?;
        pids.push((pid, began));
    }
    drop(ready_tx);
    drop(go_rx);
    collect(&pids, start, &mut ready_rx, go_tx)
}

/// A forked client asks the broker for `n` rings one after another (forked
/// before the broker's thread starts: no other thread at the fork).
fn broker_trips(mem: &IoMemory, file: &DirectFile, n: u32) -> anyhow::Result<BrokerTrips> {
    if n == 0 {
        return Ok(BrokerTrips::default());
    }
    let table = BufferTable::register(mem).context("registering the pool")?;
    let sock = std::env::temp_dir().join(format!("ringpool-bench-broker-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&sock);
    let (go_rx, mut go_tx) = std::io::pipe()?;
    let (mut res_rx, res_tx) = std::io::pipe()?;
    let path = sock.clone();
    let child = move || {
        let (mut go_rx, mut res_tx) = (go_rx, res_tx);
        let mut b = [0u8; 1];
        if go_rx.read_exact(&mut b).is_err() {
            return 1;
        }
        let mut failed = 0;
        for k in 0..n {
            let t = now_ns();
            let block = u64::from(k) % FILE_BLOCKS;
            let trip = guarded(|| -> ringpool::Result<()> {
                let handed = ringpool::handover::RingBroker::request(&path, 8, 0)?;
                let opts = RingOptions { engine: EnginePolicy::IoUring, ..RingOptions::default() };
                let mut ring = handed.enable_with(&opts)?;
                let view = ring.memory().expect("a handed ring has the pool").clone();
                // SAFETY (of the region): no other process uses the
                // pool while the trips run.
                let buf = unsafe { view.region(0, BLOCK)? };
                let (res, buf) = ring.read_at(file, block * BLOCK as u64, buf).into_one();
                res?;
                if buf[..] != expected(block)[..] {
                    return Err(ringpool::Error::Lost("wrong bytes".into()));
                }
                Ok(())
            });
            let took = now_ns().saturating_sub(t);
            let v = match trip {
                Ok(()) => took,
                Err(e) => {
                    eprintln!("broker trip {k}: {e}");
                    failed += 1;
                    u64::MAX
                }
            };
            if res_tx.write_all(&v.to_le_bytes()).is_err() {
                return 1;
            }
        }
        i32::from(failed > 0)
    };
    // SAFETY: one thread here (the broker starts after the fork, and the
    // Ctrl-C thread of --reserve holds no lock the child takes).
    let pid = unsafe { ringpool_testkit::process::fork_child(child) }.context("fork")?;
    let broker = ringpool::handover::RingBroker::serve(&table, &sock, &ringpool::handover::BrokerOptions::default())?;
    go_tx.write_all(b"g")?;
    let mut trips = Vec::with_capacity(n as usize);
    let mut b = [0u8; 8];
    for _ in 0..n {
        res_rx.read_exact(&mut b).context("a broker trip's time")?;
        let v = u64::from_le_bytes(b);
        if v == u64::MAX {
            bail!("a broker round trip failed (see the child's message)");
        }
        trips.push(v as f64 / 1e3);
    }
    if ringpool_testkit::process::wait_child(pid)? != 0 {
        bail!("the broker client failed");
    }
    drop(broker);
    Ok(BrokerTrips {
        round_trips: n,
        round_trip_p50_us: crate::util::percentile(&trips, 50.0),
        round_trip_p99_us: crate::util::percentile(&trips, 99.0),
    })
}

fn side(rounds: &[Round]) -> Side {
    let ready: Vec<f64> = rounds.iter().map(|r| r.ready.as_secs_f64() * 1e3).collect();
    let per: Vec<f64> = rounds.iter().map(|r| median(&r.per_proc_us)).collect();
    let mut pinned: Vec<u64> = rounds.iter().map(|r| r.pinned_kb).collect();
    pinned.sort_unstable();
    Side { ready_ms: median(&ready), per_proc_p50_us: median(&per), pinned_kb: pinned[pinned.len() / 2] }
}

pub fn run(a: &PreforkArgs) -> anyhow::Result<()> {
    let min_pool = 2 * u64::from(a.procs) * BLOCK as u64;
    if a.pool < min_pool {
        bail!("--pool {} is too small for {} processes' blocks (at least {})", Bytes(a.pool), a.procs, Bytes(min_pool));
    }
    let (policy, _reservation) = crate::util::reserve_for(a.page, a.pool, a.reserve)?;
    let mem = IoMemory::map_with(a.pool, &MemoryOptions::new().page(policy).shared()).context("mapping the pool")?;
    if !a.json {
        crate::util::describe_pool(&mem, a.page);
    }
    crate::util::prefault_with_bar(&mem)?;
    let path = data_file()?;
    let file = DirectFile::options()
        .read(true)
        .direct(ringpool::types::DirectIo::Optional)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    let mut clones = Vec::new();
    let mut registers = Vec::new();
    let mut register_ms = Vec::new();
    for r in 0..a.rounds {
        let (c, ms) = clone_round(&mem, &file, a.procs)?;
        register_ms.push(ms);
        let g = register_round(&mem, &file, a.procs)?;
        if !a.json {
            eprintln!(
                "round {}: clone {:.1} ms ({} KiB pinned), register-each {:.1} ms ({} KiB pinned)",
                r + 1,
                c.ready.as_secs_f64() * 1e3,
                c.pinned_kb,
                g.ready.as_secs_f64() * 1e3,
                g.pinned_kb
            );
        }
        clones.push(c);
        registers.push(g);
    }
    let clone = side(&clones);
    let register_each = side(&registers);
    let broker = broker_trips(&mem, &file, a.broker_trips)?;
    let report = PreforkReport {
        procs: a.procs,
        pool_bytes: mem.len(),
        page_size: mem.page_kind().to_string(),
        segments: mem.segment_count(),
        rounds: a.rounds,
        template_register_ms: median(&register_ms),
        clone,
        register_each,
        ratio_ready: register_each.ready_ms / clone.ready_ms.max(1e-9),
        ratio_ready_with_register: register_each.ready_ms / (clone.ready_ms + median(&register_ms)).max(1e-9),
        ratio_pinned: register_each.pinned_kb as f64 / (clone.pinned_kb.max(1)) as f64,
        clone_pinned_per_pool: clone.pinned_kb as f64 / (mem.len() / 1024) as f64,
        broker,
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{} processes, pool {} of {} pages ({} segments), medians of {} rounds",
            a.procs,
            Bytes(report.pool_bytes),
            report.page_size,
            report.segments,
            a.rounds
        );
        println!("{:<16} {:>12} {:>16} {:>14}", "", "ready ms", "per process us", "pinned KiB");
        for (name, s) in [("clone + fork", clone), ("register each", register_each)] {
            println!("{:<16} {:>12.2} {:>16.0} {:>14}", name, s.ready_ms, s.per_proc_p50_us, s.pinned_kb);
        }
        println!(
            "ready {:.1}x faster by clone ({:.1}x counting the owner's one registration, {:.2} ms); pinned {:.1}x less \
             ({:.3}x the pool)",
            report.ratio_ready,
            report.ratio_ready_with_register,
            report.template_register_ms,
            report.ratio_pinned,
            report.clone_pinned_per_pool
        );
        if broker.round_trips > 0 {
            println!(
                "broker round trip (request, enable, map, one verified READ_FIXED): p50 {:.0} us, p99 {:.0} us over {}",
                broker.round_trip_p50_us, broker.round_trip_p99_us, broker.round_trips
            );
        }
    }
    Ok(())
}
