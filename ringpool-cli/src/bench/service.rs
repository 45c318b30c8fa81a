//! `ringpool bench service`: load and faults against `ringpool serve`.
//! The bench starts the daemon, then `--clients` client processes
//! (`bench service-client`) that attach, do verified fixed I/O and detach
//! in a loop; one client in ten is SIGKILLed at a random moment (and
//! replaced); twice during the run a grower (this process, as a client)
//! asks for more lease segments than are free, so the daemon grows the
//! pool, and the grower fills the growth's first segment, which every client then
//! writes from with a fixed write and verifies. Reported: attach latency,
//! kills and reclaimed lease segments, mismatches, the daemon's fds and
//! VmPin before and after, the peak of daemon + clients VmPin over the
//! pool, and how many live clients reached each growth, how fast.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use ringpool::handover::{HandedRing, RingBroker};
use ringpool::types::{parse_size, PagePolicy};
use ringpool_testkit::process::{monotonic_ns, vm_pinned_kb};
use serde::Serialize;

use super::service_client::{growth_byte, GROWN_STAMP, SLOT_BYTES};

#[derive(Args, Debug)]
pub struct ServiceArgs {
    /// Client processes at once.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub clients: u64,
    /// How long the clients run.
    #[arg(long, default_value = "60", value_parser = parse_secs)]
    pub duration: Duration,
    /// Pool size at most: the daemon's pool is a segment for every client and
    /// a quarter more, of the largest power-of-two segments that fit; the
    /// bench grows it twice by a quarter of the clients' segments.
    #[arg(long, default_value = "4G", value_parser = parse_size)]
    pub pool: u64,
    /// Page size: auto, 1g, 2m, thp or 4k (passed to `ringpool serve`).
    #[arg(long, default_value = "auto", value_parser = parse_page)]
    pub page: String,
    /// Directory of the clients' file.
    #[arg(long, default_value = "/var/tmp")]
    pub dir: PathBuf,
    /// The daemon's `--shrink-idle` in seconds (0: it never shrinks).
    #[arg(long, default_value_t = 5)]
    pub shrink_idle: u64,
    /// The daemon's `--nice` (its serving thread's nice value; the
    /// daemon's default).
    #[arg(long, default_value_t = -20, allow_hyphen_values = true, value_parser = clap::value_parser!(i32).range(-20..=19))]
    pub daemon_nice: i32,
    /// Start the daemon with `--hold-every-ring` (clients duplicate their
    /// rings from a holder process per ring, not from the daemon).
    #[arg(long)]
    pub hold_every_ring: bool,
    /// Print one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

fn parse_page(s: &str) -> Result<String, String> {
    s.parse::<PagePolicy>().map(|_| s.to_string()).map_err(|e| e.to_string())
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    s.trim_end_matches('s')
        .parse::<f64>()
        .ok()
        .filter(|x| x.is_finite() && *x > 0.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("{s} is not a number of seconds"))
}

#[derive(Serialize, Debug, Default)]
pub struct ServiceReport {
    pub clients: u64,
    pub duration_s: f64,
    pub pool_bytes: u64,
    pub segment_bytes: u64,
    pub attaches: u64,
    pub attach_p50_us: f64,
    pub attach_p99_us: f64,
    /// Of an attachment, the time the client itself waited in a run queue
    /// for a CPU (its /proc/thread-self/schedstat), p50 and p99.
    pub attach_runqueue_p50_us: f64,
    pub attach_runqueue_p99_us: f64,
    /// The attachment less that wait, p50 and p99: the daemon's answer, the
    /// client's system calls and its sleeps.
    pub attach_less_runqueue_p50_us: f64,
    pub attach_less_runqueue_p99_us: f64,
    /// The nice value the daemon's serving thread ran at (`--daemon-nice`).
    pub daemon_nice: i32,
    /// Rings went through a holder process each (`--hold-every-ring`).
    pub ring_holders: bool,
    pub killed: u64,
    pub reclaimed_segments: u64,
    pub mismatches: u64,
    pub client_errors: u64,
    pub daemon_fds_before: usize,
    pub daemon_fds_after: usize,
    /// The fds before, once the daemon shrank the pool back to its first
    /// size after the run (no growth's memfd left); none when it did not.
    pub daemon_fds_expected: Option<usize>,
    /// Growths the clients' requests made (a client that found no free
    /// segment): one segment each.
    pub client_growths: u64,
    pub vmpin_before_kb: u64,
    pub vmpin_after_kb: u64,
    pub vmpin_peak_ratio: f64,
    pub growths: u32,
    pub grow_failures: u32,
    pub grow_reached_procs: u64,
    pub grow_live_procs: u64,
    pub grow_reached_p50_ms: f64,
    pub shrinks: u64,
    /// Of those, the ones done while the clients ran (the grower's last
    /// growth let go at 5/6 of the run).
    pub shrinks_under_clients: u64,
    pub shrink_timeouts: u64,
    /// The pool's segments at the start and after the run (the daemon
    /// shrinks the idle pool back).
    pub segments_initial: u16,
    pub segments_after: u16,
    pub method: &'static str,
}

/// What the clients reported, gathered by reader threads.
#[derive(Default)]
struct Reports {
    attach_us: Vec<u64>,
    /// Of each attachment, the client's wait for a CPU.
    attach_runqueue_us: Vec<u64>,
    /// (client slot, segments seen, monotonic ns).
    /// (slot, growth number, monotonic ns of its verified write).
    grown: Vec<(u64, u64, u64)>,
    mismatches: u64,
    errors: u64,
}

/// The bench's directory, removed however the bench ends.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Daemon {
    child: Child,
    socket: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// Client processes by slot, with their pids.
struct Clients {
    procs: Vec<Option<Child>>,
}

impl Drop for Clients {
    fn drop(&mut self) {
        for c in self.procs.iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn run(a: &ServiceArgs) -> anyhow::Result<()> {
    // Segments for every client and half as many more (a client's next
    // attachment may ask before its last one's segment is back), and one;
    // the grower grows the pool twice by a quarter of that; room besides
    // for the clients' own growths on demand (a client that finds no free
    // segment makes the daemon grow by one).
    let seg = segment_size(a.pool, a.clients)?;
    let initial = u16::try_from(a.clients + a.clients / 2 + 1).context("too many clients")?;
    let growth = (initial / 4).max(1);
    let pool = u64::from(initial) * seg;
    // The daemon grows for clients in steps of an eighth of the pool.
    let grow_to = pool + (2 * u64::from(growth) + a.clients + u64::from(initial / 4)) * seg;
    let scratch = Scratch(tempdir(&a.dir)?);
    let dir = &scratch.0;
    let file = dir.join("clients.dat");
    std::fs::File::create(&file)?.set_len(a.clients * SLOT_BYTES)?;
    let daemon = start_daemon(a, (pool, seg, grow_to), dir)?;
    let pid = daemon.child.id();
    let fds_before = fd_count(pid);
    let vmpin_before = vm_pinned_kb(pid).unwrap_or(0);
    let until = monotonic_ns() + a.duration.as_nanos() as u64;
    let reports = Arc::new(Mutex::new(Reports::default()));
    let spawn = |slot: u64| spawn_client(&daemon.socket, &file, slot, until, initial, &reports);
    let mut clients = Clients { procs: (0..a.clients).map(|s| spawn(s).map(Some)).collect::<anyhow::Result<_>>()? };
    let run = drive(a, &daemon, &mut clients, &spawn, seg, growth, until)?;
    // The clients stop at `until`; give them a moment, then end the rest.
    let grace = Instant::now() + Duration::from_secs(10);
    for c in clients.procs.iter_mut().flatten() {
        while c.try_wait()?.is_none() && Instant::now() < grace {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    drop(clients);
    drop(run.grower);
    // Connections close, the daemon reclaims, and then shrinks the idle
    // pool back to its first size: wait for its books to settle.
    let t = Instant::now();
    let status = loop {
        let s = RingBroker::status(&daemon.socket)?;
        let settled = s.clients.iter().all(|c| c.lease_segments.is_empty()) && s.segments <= initial;
        if settled || t.elapsed() > Duration::from_secs(30) {
            break s;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let reclaimed = run.killed_pids.iter().filter(|p| !status.clients.iter().any(|c| c.pid == **p)).count() as u64;
    // The last shrink leaves the table first, then unmaps its memory and
    // closes the memfds (a second or so for GiBs of 4 KiB pages), and the
    // status connection just used closes behind us: wait (up to 10 s) for
    // the daemon's fds to come back before taking the final figures.
    let t = Instant::now();
    while fd_count(pid) > fds_before + 1 && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    let status = RingBroker::status(&daemon.socket)?;
    std::thread::sleep(Duration::from_millis(300));
    let fds_after = fd_count(pid);
    if fds_after != fds_before {
        // Name what the daemon holds beyond its start, for the record.
        let held: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| {
                d.flatten().filter_map(|e| std::fs::read_link(e.path()).ok()).map(|p| p.display().to_string()).collect()
            })
            .unwrap_or_default();
        tracing::warn!(fds_before, fds_after, ?held, "the daemon holds other descriptors than at its start");
    }
    let client_growths = status.growths.saturating_sub(run.growths.len() as u64);
    let vmpin_after = vm_pinned_kb(pid).unwrap_or(0);
    let r = reports.lock().unwrap_or_else(|p| p.into_inner());
    let (reached, live, p50_ms) = growth_reach(a.clients, &run.growths, &r.grown, &run.killed_at);
    let mut attach = r.attach_us.clone();
    attach.sort_unstable();
    let mut waited = r.attach_runqueue_us.clone();
    let mut less: Vec<u64> = r.attach_us.iter().zip(&waited).map(|(a, w)| a - w).collect();
    waited.sort_unstable();
    less.sort_unstable();
    let report = ServiceReport {
        clients: a.clients,
        duration_s: a.duration.as_secs_f64(),
        pool_bytes: status.pool_bytes,
        segment_bytes: seg,
        attaches: attach.len() as u64,
        attach_p50_us: pct(&attach, 0.5),
        attach_p99_us: pct(&attach, 0.99),
        attach_runqueue_p50_us: pct(&waited, 0.5),
        attach_runqueue_p99_us: pct(&waited, 0.99),
        attach_less_runqueue_p50_us: pct(&less, 0.5),
        attach_less_runqueue_p99_us: pct(&less, 0.99),
        daemon_nice: a.daemon_nice,
        ring_holders: a.hold_every_ring,
        killed: run.killed_pids.len() as u64,
        reclaimed_segments: reclaimed,
        mismatches: r.mismatches,
        client_errors: r.errors,
        daemon_fds_before: fds_before,
        daemon_fds_after: fds_after,
        // One memfd per growth while its memory lives: none once the pool
        // is back to its first size.
        daemon_fds_expected: (status.segments == initial).then_some(fds_before),
        client_growths,
        vmpin_before_kb: vmpin_before,
        vmpin_after_kb: vmpin_after,
        vmpin_peak_ratio: run.vmpin_peak_ratio,
        growths: run.growths.len() as u32,
        grow_failures: run.grow_failures,
        grow_reached_procs: reached,
        grow_live_procs: live,
        grow_reached_p50_ms: p50_ms,
        shrinks: status.shrinks,
        shrinks_under_clients: run.shrinks_under_clients,
        shrink_timeouts: status.shrink_timeouts,
        segments_after: status.segments,
        segments_initial: initial,
        method: "ringpool serve as a process; client processes attach (ring + 1 lease segment), do verified fixed \
                 I/O, detach, in a loop; 1 in 10 SIGKILLed at a random moment and replaced; the pool grown twice by \
                 a grower's request; reclaimed = killed clients no longer holding lease segments in the daemon's \
                 status; vmpin_peak_ratio = max over samples of (daemon + clients VmPin) / pool bytes; growth reach \
                 = live clients that did a verified fixed write from the growth's first segment, counted for the \
                 last growth; the daemon runs with --shrink-idle (5 s): grown segments free that long are shrunk away \
                 under the running clients (shrinks), and after the run the pool goes back to its first size \
                 (segments_after), its memfds closed (daemon_fds_after); the grower lets its last growth go at 5/6 of the run \
                 (shrinks_under_clients)",
    };
    drop(daemon);
    drop(scratch);
    print(&report, a.json)
}

/// What the run loop saw.
struct Run {
    killed_pids: Vec<u32>,
    /// Monotonic ns of each kill.
    killed_at: Vec<(u64, u64)>,
    /// (growth number, monotonic ns when its memory was filled).
    growths: Vec<(u64, u64)>,
    vmpin_peak_ratio: f64,
    grower: Vec<HandedRing>,
    grow_failures: u32,
    /// The daemon's idle shrinks done while the clients ran.
    shrinks_under_clients: u64,
}

/// Until `until`: kills, growths and VmPin samples.
fn drive(
    a: &ServiceArgs,
    daemon: &Daemon,
    clients: &mut Clients,
    spawn: &dyn Fn(u64) -> anyhow::Result<Child>,
    seg: u64,
    growth: u16,
    until: u64,
) -> anyhow::Result<Run> {
    let start = monotonic_ns();
    let span = until - start;
    let kills = (a.clients / 10).max(1);
    let kill_at: Vec<u64> = (1..=kills)
        .map(|k| start + span * k / (kills + 1) - fastrand::u64(0..span / (4 * (kills + 1)).max(1)))
        .collect();
    let grow_at = [start + span / 3, start + span * 2 / 3];
    // The grower lets its last growth go here: the daemon shrinks it away
    // (idle for 5 s) under the running clients.
    let release_at = start + span * 5 / 6;
    let mut released = false;
    let mut run = Run {
        killed_pids: Vec::new(),
        killed_at: Vec::new(),
        growths: Vec::new(),
        vmpin_peak_ratio: 0.0,
        grower: Vec::new(),
        grow_failures: 0,
        shrinks_under_clients: 0,
    };
    let mut next_kill = 0;
    let mut next_grow = 0;
    while monotonic_ns() < until {
        let now = monotonic_ns();
        if next_kill < kill_at.len() && now >= kill_at[next_kill] {
            next_kill += 1;
            let slot = fastrand::usize(0..clients.procs.len());
            if let Some(mut c) = clients.procs[slot].take() {
                run.killed_pids.push(c.id());
                run.killed_at.push((slot as u64, now));
                let _ = c.kill();
                let _ = c.wait();
            }
            clients.procs[slot] = Some(spawn(slot as u64)?);
        }
        if next_grow < grow_at.len() && now >= grow_at[next_grow] {
            next_grow += 1;
            match grow(&daemon.socket, seg, growth, next_grow as u64) {
                Ok(g) => {
                    run.growths.push((next_grow as u64, g.2));
                    run.grower.push(g.0);
                }
                Err(e) => {
                    tracing::error!("the grower's growth failed: {e:#}");
                    run.grow_failures += 1;
                }
            }
        }
        if !released && next_grow == grow_at.len() && now >= release_at {
            released = true;
            drop(run.grower.pop());
        }
        run.vmpin_peak_ratio = run.vmpin_peak_ratio.max(vmpin_ratio(daemon, clients)?);
        std::thread::sleep(Duration::from_millis(100));
    }
    run.shrinks_under_clients = RingBroker::status(&daemon.socket)?.shrinks;
    Ok(run)
}

/// Asks the daemon to grow the pool by `k` segments and lease exactly
/// those to this process; fills the first one (what the clients check),
/// its stamp last. (Filling all of them, hundreds of MiB at a 65th of the
/// CPUs among the clients, took long enough to push the last growth past
/// the end of a run.)
fn grow(socket: &Path, seg: u64, k: u16, number: u64) -> anyhow::Result<(HandedRing, u16, u64)> {
    let mut handed = RingBroker::request_growth(socket, 32, k)?;
    let leases = handed.leases();
    let mem = handed.map_pool()?;
    let first_new = leases.start;
    // SAFETY: these are the grower's own lease segments, not leased from
    // here, and no client writes them.
    let mut stamp_region = None;
    for s in leases.start..leases.start + 1 {
        let mut r = unsafe { mem.region(u64::from(s) * seg, seg as usize) }
            .map_err(|e| anyhow::anyhow!("region of segment {s}: {e}"))?;
        let base = r.pool_offset();
        r.iter_mut().enumerate().for_each(|(i, b)| *b = growth_byte(base + i as u64));
        if s == first_new {
            r[..16].fill(0);
            stamp_region = Some(r);
        }
    }
    // The clock starts as the stamp is written: clients may write from the
    // growth from then on.
    let at = monotonic_ns();
    if let Some(mut r) = stamp_region {
        r[8..16].copy_from_slice(&number.to_le_bytes());
        r[..8].copy_from_slice(&GROWN_STAMP);
    }
    Ok((handed, leases.end, at))
}

/// The segment size: the largest power of two that gives every client a
/// lease segment with half as many to spare (2 MiB to 1 GiB).
fn segment_size(pool: u64, clients: u64) -> anyhow::Result<u64> {
    let per = pool / (clients + clients / 2 + 1);
    if per < 2 << 20 {
        bail!("a pool of {pool} bytes is too small for {clients} clients (2 MiB segments each and half to spare)");
    }
    Ok((1u64 << (63 - per.leading_zeros())).min(1 << 30))
}

fn tempdir(base: &Path) -> anyhow::Result<PathBuf> {
    let dir = base.join(format!("ringpool-service-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    Ok(dir)
}

fn start_daemon(a: &ServiceArgs, (pool, seg, grow_to): (u64, u64, u64), dir: &Path) -> anyhow::Result<Daemon> {
    let socket = dir.join("pool.sock");
    let child = Command::new(std::env::current_exe()?)
        .args(["serve", "--pool", &pool.to_string(), "--segment-size", &seg.to_string()])
        .args(["--grow-to", &grow_to.to_string(), "--page", &a.page, "--drain", "2"])
        .args(["--shrink-idle", &a.shrink_idle.to_string(), "--nice", &a.daemon_nice.to_string()])
        .args(a.hold_every_ring.then_some("--hold-every-ring"))
        .args(["--max-clients", &(a.clients * 4 + 16).to_string(), "--socket"])
        .arg(&socket)
        .stdout(Stdio::null())
        .spawn()
        .context("start ringpool serve")?;
    let daemon = Daemon { child, socket };
    let t = Instant::now();
    while !daemon.socket.exists() {
        if t.elapsed() > Duration::from_secs(120) {
            bail!("ringpool serve did not bind its socket in 120 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(daemon)
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

fn spawn_client(
    socket: &Path,
    file: &Path,
    slot: u64,
    until: u64,
    initial: u16,
    reports: &Arc<Mutex<Reports>>,
) -> anyhow::Result<Child> {
    let mut child = Command::new(std::env::current_exe()?)
        .args(["bench", "service-client", "--slot", &slot.to_string(), "--until-ns", &until.to_string()])
        .args(["--initial-segments", &initial.to_string()])
        .arg("--socket")
        .arg(socket)
        .arg("--file")
        .arg(file)
        .stdout(Stdio::piped())
        .spawn()
        .context("start a client")?;
    let out = child.stdout.take().expect("piped");
    let reports = reports.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let mut r = reports.lock().unwrap_or_else(|p| p.into_inner());
            let mut w = line.split_whitespace();
            match (w.next(), w.next(), w.next()) {
                (Some("A"), Some(us), waited) => {
                    if let Ok(us) = us.parse::<u64>() {
                        r.attach_us.push(us);
                        r.attach_runqueue_us.push(waited.and_then(|w| w.parse().ok()).unwrap_or(0).min(us));
                    }
                }
                (Some("G"), Some(number), Some(ns)) => {
                    if let (Ok(s), Ok(t)) = (number.parse(), ns.parse()) {
                        r.grown.push((slot, s, t));
                    }
                }
                (Some("M"), ..) => {
                    tracing::error!(slot, "client mismatch: {line}");
                    r.mismatches += 1;
                }
                _ => {
                    tracing::warn!(slot, "client: {line}");
                    r.errors += 1;
                }
            }
        }
    });
    Ok(child)
}

/// (Daemon + clients VmPin) over the pool's bytes now.
fn vmpin_ratio(daemon: &Daemon, clients: &Clients) -> anyhow::Result<f64> {
    let pool = RingBroker::status(&daemon.socket)?.pool_bytes.max(1);
    let mut kb = vm_pinned_kb(daemon.child.id()).unwrap_or(0);
    for c in clients.procs.iter().flatten() {
        kb += vm_pinned_kb(c.id()).unwrap_or(0);
    }
    Ok((kb * 1024) as f64 / pool as f64)
}

/// For the last growth: clients (slots) that reported a verified write
/// from it, the clients live at its end that could have (not killed after
/// it), and the p50 of the time from the growth to each first report.
fn growth_reach(
    clients: u64,
    growths: &[(u64, u64)],
    grown: &[(u64, u64, u64)],
    killed: &[(u64, u64)],
) -> (u64, u64, f64) {
    let Some(&(number, at)) = growths.last() else { return (0, 0, 0.0) };
    let mut first: std::collections::BTreeMap<u64, u64> = std::collections::BTreeMap::new();
    for &(slot, s, t) in grown {
        if s == number && t >= at {
            let e = first.entry(slot).or_insert(t);
            *e = (*e).min(t);
        }
    }
    // A slot whose process was killed after the growth, before it
    // reported, had no live process to reach.
    let live =
        (0..clients).filter(|s| first.contains_key(s) || !killed.iter().any(|&(k, t)| k == *s && t > at)).count();
    let missed: Vec<u64> = (0..clients).filter(|s| !first.contains_key(s)).collect();
    if !missed.is_empty() {
        tracing::warn!(?missed, "client slots with no verified write from the last growth");
    }
    let mut ms: Vec<u64> = first.values().map(|t| t - at).collect();
    ms.sort_unstable();
    (first.len() as u64, live as u64, pct(&ms, 0.5) / 1e6)
}

fn pct(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i] as f64
}

fn print(r: &ServiceReport, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(r)?);
        return Ok(());
    }
    println!(
        "{} clients for {:.0} s over a pool of {} MiB ({} MiB segments): {} attaches, p50 {:.0} µs, p99 {:.0} µs",
        r.clients,
        r.duration_s,
        r.pool_bytes >> 20,
        r.segment_bytes >> 20,
        r.attaches,
        r.attach_p50_us,
        r.attach_p99_us
    );
    println!(
        "  of which the client waited for a CPU: p50 {:.0} µs, p99 {:.0} µs; the rest: p50 {:.0} µs, p99 {:.0} µs (daemon nice {})",
        r.attach_runqueue_p50_us,
        r.attach_runqueue_p99_us,
        r.attach_less_runqueue_p50_us,
        r.attach_less_runqueue_p99_us,
        r.daemon_nice
    );
    println!(
        "killed {} (reclaimed {}), mismatches {}, client errors {}; daemon fds {} -> {}, VmPin {} -> {} kB, peak ratio {:.3}",
        r.killed,
        r.reclaimed_segments,
        r.mismatches,
        r.client_errors,
        r.daemon_fds_before,
        r.daemon_fds_after,
        r.vmpin_before_kb,
        r.vmpin_after_kb,
        r.vmpin_peak_ratio
    );
    println!(
        "growths {}: the last reached {} of {} live clients, p50 {:.1} ms",
        r.growths, r.grow_reached_procs, r.grow_live_procs, r.grow_reached_p50_ms
    );
    println!(
        "idle shrinks {} ({} while the clients ran, {} failed); segments {} at the start, {} after the run",
        r.shrinks, r.shrinks_under_clients, r.shrink_timeouts, r.segments_initial, r.segments_after
    );
    Ok(())
}
