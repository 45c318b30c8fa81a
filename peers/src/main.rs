//! ringpool against Rust peers: random 4 KiB O_DIRECT reads at depth 32
//! from one thread, and the spin-up of a thread (runtime, executor) that
//! can do fixed-buffer I/O over a 4 GiB pool.
//!
//! ```text
//! cargo run --release --manifest-path peers/Cargo.toml -- --json
//! ```
//!
//! Each peer lives in its own file (`src/<peer>.rs`) with a doc comment
//! saying which of its docs or examples it follows. See README.md.

// The peer modules share their crates' names; inside them the crates are
// always named with a leading `::`.
mod common;
mod glommio;
mod monoio;
mod ringpool;
mod std_pread;
mod tokio_fs;
mod tokio_uring;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::{hugepages_2m, median, panic_text, JobOut, JobSpec, SpinOut, SpinSpec};

const JOB: &str = "randread4k_qd32";
const POOL_BYTES: u64 = 4 << 30;

const USAGE: &str = "\
usage: ringpool-peers [--json] [--runtime SECS] [--spinups N] [--rounds N] [--disk PATH] [--zram PATH]
                      [--peers LIST] [--no-randread] [--no-spinup]

  --json         one JSON object on stdout (else a table)
  --runtime      seconds of I/O per peer and device (default 5)
  --spinups      spin-ups per peer, p50 reported (default 20)
  --rounds       random-read runs per peer and device, the peers' order rotated each round;
                 the median round (by IOPS) is reported (default 1)
  --disk         file or device for the 'disk' rows (default /var/tmp/ringpool-bench.dat)
  --zram         file or device for the 'zram' rows (default /dev/zram0)
  --peers        comma list to run (default all): ringpool,ringpool-io_uring,tokio-uring,glommio,monoio,tokio-fs,std-pread
  --no-randread  skip the random-read job
  --no-spinup    skip the spin-ups";

/// Random-read peers, in the order they run.
const RANDREAD_PEERS: &[&str] =
    &["ringpool", "ringpool-io_uring", "tokio-uring", "glommio", "monoio", "tokio-fs", "std-pread"];

struct Args {
    json: bool,
    runtime: f64,
    spinups: usize,
    rounds: usize,
    disk: PathBuf,
    zram: PathBuf,
    peers: Option<Vec<String>>,
    randread: bool,
    spinup: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        json: false,
        runtime: 5.0,
        spinups: 20,
        rounds: 1,
        disk: PathBuf::from("/var/tmp/ringpool-bench.dat"),
        zram: PathBuf::from("/dev/zram0"),
        peers: None,
        randread: true,
        spinup: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--json" => a.json = true,
            "--runtime" => {
                a.runtime = val("--runtime")?.parse().map_err(|e| format!("--runtime: {e}"))?;
                if a.runtime.is_nan() || a.runtime <= 0.0 {
                    return Err("--runtime must be above 0".into());
                }
            }
            "--spinups" => {
                a.spinups = val("--spinups")?.parse().map_err(|e| format!("--spinups: {e}"))?;
                if a.spinups == 0 {
                    return Err("--spinups must be at least 1".into());
                }
            }
            "--rounds" => {
                a.rounds = val("--rounds")?.parse().map_err(|e| format!("--rounds: {e}"))?;
                if a.rounds == 0 {
                    return Err("--rounds must be at least 1".into());
                }
            }
            "--disk" => a.disk = val("--disk")?.into(),
            "--zram" => a.zram = val("--zram")?.into(),
            "--peers" => a.peers = Some(val("--peers")?.split(',').map(|s| s.trim().to_string()).collect()),
            "--no-randread" => a.randread = false,
            "--no-spinup" => a.spinup = false,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok(a)
}

impl Args {
    fn wants(&self, peer: &str) -> bool {
        self.peers.as_ref().is_none_or(|p| p.iter().any(|x| x == peer))
    }
}

/// Runs `f` on a thread of its own; a panic becomes an error.
fn isolated<T: Send>(f: impl FnOnce() -> anyhow::Result<T> + Send) -> Result<T, String> {
    std::thread::scope(|s| match std::thread::Builder::new().name("peer".into()).spawn_scoped(s, f) {
        Ok(h) => match h.join() {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(format!("{e:#}")),
            Err(p) => Err(format!("panicked: {}", panic_text(&*p))),
        },
        Err(e) => Err(format!("could not spawn a thread: {e}")),
    })
}

fn row(peer: &str, device: &str, r: Result<JobOut, String>) -> Value {
    match r {
        Ok(o) if o.ios > 0 => json!({
            "peer": peer, "job": JOB, "device": device,
            "iops": round(o.iops(), 0), "cpu_us_per_io": round(o.cpu_us_per_io(), 2),
            "note": format!("{}; {} I/Os in {:.2} s", o.note, o.ios, o.secs),
        }),
        Ok(o) => json!({
            "peer": peer, "job": JOB, "device": device, "iops": null, "cpu_us_per_io": null,
            "note": format!("no I/O completed; {}", o.note),
        }),
        Err(e) => json!({
            "peer": peer, "job": JOB, "device": device, "iops": null, "cpu_us_per_io": null,
            "note": format!("could not run: {e}"),
        }),
    }
}

fn round(v: f64, digits: i32) -> f64 {
    let m = 10f64.powi(digits);
    (v * m).round() / m
}

/// The target of a device label, or why it cannot be used.
fn resolve(path: &Path, runtime: f64) -> Result<JobSpec, String> {
    if !path.exists() {
        return Err(format!("target {} does not exist", path.display()));
    }
    let size = common::target_size(path).map_err(|e| format!("target {}: {e:#}", path.display()))?;
    if size < (1 << 20) {
        return Err(format!(
            "target {} has size {size} (a zram device needs its disksize set and data written: see README)",
            path.display()
        ));
    }
    Ok(JobSpec { path: path.to_path_buf(), size, runtime: Duration::from_secs_f64(runtime) })
}

fn run_one(peer: &str, spec: &JobSpec) -> Result<JobOut, String> {
    isolated(|| match peer {
        "ringpool" => ringpool::randread(spec, None),
        "ringpool-io_uring" => ringpool::randread(spec, Some(::ringpool::types::EnginePolicy::IoUring)),
        "tokio-uring" => tokio_uring::randread(spec),
        "glommio" => glommio::randread(spec),
        "monoio" => monoio::randread(spec),
        "tokio-fs" => tokio_fs::randread(spec),
        "std-pread" => std_pread::randread(spec),
        _ => unreachable!(),
    })
}

/// The median round of a peer's runs (by IOPS), with every round's IOPS in
/// the note; an error if no round ran.
fn combine(runs: Vec<Result<JobOut, String>>) -> Result<JobOut, String> {
    let rounds = runs.len();
    let mut ok: Vec<JobOut> = Vec::new();
    let mut errs = Vec::new();
    for r in runs {
        match r {
            Ok(o) if o.ios > 0 => ok.push(o),
            Ok(o) => errs.push(format!("no I/O completed ({})", o.note)),
            Err(e) => errs.push(e),
        }
    }
    if ok.is_empty() {
        return Err(errs.join(" | "));
    }
    if rounds == 1 {
        return Ok(ok.remove(0));
    }
    let all: Vec<String> = ok.iter().map(|o| format!("{:.0}", o.iops())).collect();
    ok.sort_by(|a, b| a.iops().total_cmp(&b.iops()));
    let mut m = ok.swap_remove(ok.len() / 2);
    m.note = format!("median of {} rounds by IOPS (rounds: {}); {}", all.len(), all.join(", "), m.note);
    if !errs.is_empty() {
        m.note.push_str(&format!("; {} round(s) failed: {}", errs.len(), errs.join(" | ")));
    }
    Ok(m)
}

fn run_randread(args: &Args, rows: &mut Vec<Value>) {
    let peers: Vec<&str> = RANDREAD_PEERS.iter().copied().filter(|p| args.wants(p)).collect();
    for (device, path) in [("disk", &args.disk), ("zram", &args.zram)] {
        let spec = match resolve(path, args.runtime) {
            Ok(s) => s,
            Err(why) => {
                for &peer in &peers {
                    rows.push(row(peer, device, Err(why.clone())));
                }
                continue;
            }
        };
        let mut runs: Vec<Vec<Result<JobOut, String>>> = peers.iter().map(|_| Vec::new()).collect();
        for round in 0..args.rounds {
            // Each round starts one peer later, so that no peer is always
            // the first (cold device) or the last.
            for k in 0..peers.len() {
                let i = (k + round) % peers.len();
                let peer = peers[i];
                eprintln!(
                    "randread: {peer} on {device} ({}), round {}/{}",
                    spec.path.display(),
                    round + 1,
                    args.rounds
                );
                runs[i].push(run_one(peer, &spec));
                // Let io-wq workers and blocking-pool threads of the last
                // peer go idle before the next one is measured.
                std::thread::sleep(Duration::from_millis(300));
            }
        }
        for (i, r) in runs.into_iter().enumerate() {
            let peer = peers[i];
            let mut v = row(peer, device, combine(r));
            if peer == "ringpool-io_uring" {
                if let Some(n) = v.get_mut("note") {
                    *n = Value::String(format!(
                        "ringpool with RingOptions::engine(EnginePolicy::IoUring): every read through io_uring, as the \
                         other io_uring peers (an extra row; differs from 'ringpool' only on devices without NOWAIT); {}",
                        n.as_str().unwrap_or("")
                    ));
                }
            }
            rows.push(v);
        }
    }
}

fn spin_row(r: Result<SpinOut, String>, peer: &str, pool_bytes: u64) -> Value {
    match r {
        Ok(mut o) => {
            let p50 = median(&mut o.samples_us);
            let note = match p50 {
                Some(_) => format!(
                    "{}; {} spin-ups, min {:.0} us, max {:.0} us",
                    o.note,
                    o.samples_us.len(),
                    o.samples_us.first().copied().unwrap_or(f64::NAN),
                    o.samples_us.last().copied().unwrap_or(f64::NAN)
                ),
                None => o.note,
            };
            json!({"peer": o.peer, "pool_bytes": o.pool_bytes, "p50_us": p50.map(|v| round(v, 1)), "note": note})
        }
        Err(e) => {
            json!({"peer": peer, "pool_bytes": pool_bytes, "p50_us": null, "note": format!("could not run: {e}")})
        }
    }
}

fn run_spinups(args: &Args, spin: &mut Vec<Value>, notes: &mut Vec<String>) {
    let pages_needed = POOL_BYTES / (2 << 20);
    let (nr, free) = hugepages_2m();
    let page = if free >= pages_needed {
        ::ringpool::types::PagePolicy::Huge2M
    } else {
        notes.push(format!(
            "spin-up pool: only {free} free 2 MiB hugetlb pages of the {pages_needed} a 4 GiB pool needs \
             (nr_hugepages {nr}; this program never reserves pages): transparent huge pages used instead for \
             every peer whose memory this program provides (ringpool, tokio-uring); see README to reserve them"
        ));
        ::ringpool::types::PagePolicy::Transparent
    };
    let spec = SpinSpec { count: args.spinups, pool_bytes: POOL_BYTES };

    if args.wants("ringpool") || args.wants("tokio-uring") {
        eprintln!("spin-up: mapping, prefaulting and registering the {} GiB pool (once)", POOL_BYTES >> 30);
        match ringpool::make_pool(POOL_BYTES, page) {
            Ok((mem, table)) => {
                let page_desc = mem.page_kind().to_string();
                let table = Arc::new(table);
                if args.wants("ringpool") {
                    eprintln!("spin-up: ringpool x {}", spec.count);
                    spin.push(spin_row(isolated(|| ringpool::spinup(&table, &spec)), "ringpool", POOL_BYTES));
                }
                if args.wants("tokio-uring") {
                    eprintln!("spin-up: tokio-uring x {}", spec.count);
                    let (addr, len) = (mem.addr(), mem.len());
                    let contiguous = mem.segments().windows(2).all(|w| w[1].offset == w[0].offset + w[0].len);
                    let r = if contiguous {
                        isolated(|| tokio_uring::spinup(addr, len, &page_desc, &spec))
                    } else {
                        Err("the pool is not one contiguous mapping".to_string())
                    };
                    spin.push(spin_row(r, "tokio-uring", POOL_BYTES));
                }
                drop(table);
                drop(mem);
            }
            Err(e) => {
                for p in ["ringpool", "tokio-uring"] {
                    if args.wants(p) {
                        spin.push(spin_row(Err(format!("the 4 GiB pool could not be made: {e}")), p, POOL_BYTES));
                    }
                }
            }
        }
        // The kernel unpins the closed rings' registrations in the background.
        if page == ::ringpool::types::PagePolicy::Huge2M {
            common::wait_free_hugepages(pages_needed, Duration::from_secs(5));
        }
    }
    if args.wants("glommio") && args.wants("ringpool") {
        // glommio registers at most 1 GiB: ringpool at the same size too,
        // so that one row compares like with like.
        let one_g = SpinSpec { count: spec.count, pool_bytes: 1 << 30 };
        eprintln!("spin-up: ringpool x {} (1 GiB pool, as glommio's largest)", spec.count);
        let r = match ringpool::make_pool(one_g.pool_bytes, page) {
            Ok((_mem, table)) => isolated(|| ringpool::spinup(&Arc::new(table), &one_g)),
            Err(e) => Err(format!("the 1 GiB pool could not be made: {e}")),
        };
        let mut r = spin_row(r, "ringpool", one_g.pool_bytes);
        if let Some(n) = r.get_mut("note") {
            *n =
                Value::String(format!("extra row: 1 GiB, the size glommio can register; {}", n.as_str().unwrap_or("")));
        }
        spin.push(r);
        if page == ::ringpool::types::PagePolicy::Huge2M {
            common::wait_free_hugepages(pages_needed, Duration::from_secs(5));
        }
    }
    if args.wants("glommio") {
        eprintln!("spin-up: glommio x {} (4 GiB io memory)", spec.count);
        spin.push(spin_row(isolated(|| glommio::spinup(&spec)), "glommio", POOL_BYTES));
        // The most glommio can register: one buffer of at most 1 GiB.
        let one_g = SpinSpec { count: spec.count, pool_bytes: 1 << 30 };
        eprintln!("spin-up: glommio x {} (1 GiB io memory)", spec.count);
        let mut r = spin_row(isolated(|| glommio::spinup(&one_g)), "glommio", one_g.pool_bytes);
        if let Some(n) = r.get_mut("note") {
            *n = Value::String(format!(
                "extra row: 1 GiB, the largest io memory glommio can register (one buffer; the kernel caps a \
                 registered buffer at 1 GiB), so that glommio has a measured spin-up; {}",
                n.as_str().unwrap_or("")
            ));
        }
        spin.push(r);
    }
    for (peer, why) in [
        ("monoio", "monoio has no registered-buffer API (its reads and writes take owned buffers, never READ_FIXED)"),
        (
            "tokio-fs",
            "tokio's file I/O runs blocking syscalls on its blocking thread pool; there are no registered buffers",
        ),
    ] {
        if args.wants(peer) {
            spin.push(json!({"peer": peer, "pool_bytes": POOL_BYTES, "p50_us": null, "note": why}));
        }
    }
}

fn machine() -> Value {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").map(|r| r.trim_start_matches([' ', '\t', ':']).to_string()))
        .unwrap_or_default();
    let mem_total = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024);
    let thp = read("/sys/kernel/mm/transparent_hugepage/enabled").trim().to_string();
    let (nr, free) = hugepages_2m();
    let f = ::ringpool::probe::Features::get();
    json!({
        "kernel": ::ringpool::probe::kernel_release(),
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu_model": model,
        "mem_total_bytes": mem_total,
        "hugepages_2m": {"nr": nr, "free": free},
        "thp": thp,
        "clone_buffers": f.clone_buffers,
        "crates": env!("PEER_VERSIONS"),
        "rustc": env!("PEER_RUSTC"),
    })
}

fn print_table(out: &Value) {
    println!("{:<18} {:<5} {:>10} {:>11}  note", "peer", "dev", "IOPS", "CPU us/IO");
    for r in out["rows"].as_array().into_iter().flatten() {
        let num = |k: &str, d: usize| r[k].as_f64().map_or("-".to_string(), |v| format!("{v:.d$}"));
        println!(
            "{:<18} {:<5} {:>10} {:>11}  {}",
            r["peer"].as_str().unwrap_or(""),
            r["device"].as_str().unwrap_or(""),
            num("iops", 0),
            num("cpu_us_per_io", 2),
            r["note"].as_str().unwrap_or("")
        );
    }
    println!();
    println!("{:<18} {:>9} {:>12}  note", "spin-up peer", "pool", "p50 us");
    for r in out["spinup"].as_array().into_iter().flatten() {
        println!(
            "{:<18} {:>6} GiB {:>12}  {}",
            r["peer"].as_str().unwrap_or(""),
            r["pool_bytes"].as_u64().unwrap_or(0) >> 30,
            r["p50_us"].as_f64().map_or("-".to_string(), |v| format!("{v:.1}")),
            r["note"].as_str().unwrap_or("")
        );
    }
    println!();
    println!("machine: {}", out["machine"]);
    if let Some(n) = out["note"].as_str() {
        println!("note: {n}");
    }
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    glommio::install_log_capture();
    let machine = machine();
    let mut rows = Vec::new();
    let mut spin = Vec::new();
    let mut notes = vec![
        "one thread per peer; CPU per I/O is whole-process user+system CPU (getrusage RUSAGE_SELF: io-wq workers \
         and blocking pools included) over the timed span, divided by the I/Os completed"
            .to_string(),
    ];
    if args.randread {
        run_randread(&args, &mut rows);
    }
    if args.spinup {
        run_spinups(&args, &mut spin, &mut notes);
    }
    let out = json!({"rows": rows, "spinup": spin, "machine": machine, "note": notes.join("; ")});
    if args.json {
        println!("{}", serde_json::to_string_pretty(&out).expect("JSON"));
    } else {
        print_table(&out);
    }
}
