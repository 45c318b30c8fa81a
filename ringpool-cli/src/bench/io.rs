//! `ringpool bench io`: an fio-style benchmark of O_DIRECT I/O through the
//! pool, with fio run beside it on the same file in the same run.
//!
//! Each worker is a thread that takes its own ring from the pool's
//! [`BufferTable`] (the table by clone) and keeps `iodepth` fixed-buffer
//! operations in flight, like one fio job (`numjobs` = workers).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use ringpool::units::{parse_size, Bytes};
use ringpool::{
    BufferTable, DirectFile, DirectIo, IoBuf, IoMemory, MemoryOptions, PageKind, PagePolicy, RingOptions, Sharing,
    TableOptions,
};
use serde::Serialize;

use crate::util::median;

/// The access pattern, as fio names it.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Rw {
    Randread,
    Randwrite,
    Read,
    Write,
    Randrw,
}

impl Rw {
    pub fn name(self) -> &'static str {
        match self {
            Rw::Randread => "randread",
            Rw::Randwrite => "randwrite",
            Rw::Read => "read",
            Rw::Write => "write",
            Rw::Randrw => "randrw",
        }
    }
    fn random(self) -> bool {
        matches!(self, Rw::Randread | Rw::Randwrite | Rw::Randrw)
    }
    fn writes(self) -> bool {
        matches!(self, Rw::Randwrite | Rw::Write | Rw::Randrw)
    }
}

/// How worker rings get the table.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharingArg {
    Clone,
    RegisterEach,
    Unregistered,
}

impl SharingArg {
    fn sharing(self) -> Sharing {
        match self {
            SharingArg::Clone => Sharing::Clone,
            SharingArg::RegisterEach => Sharing::RegisterEach,
            SharingArg::Unregistered => Sharing::Unregistered,
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct IoArgs {
    /// A regular file (created or extended as needed) or a block device.
    #[arg(long)]
    pub file: PathBuf,
    /// Bytes of the file to use (a regular file is laid out to this size; a block device uses its own size when omitted).
    #[arg(long, value_parser = parse_size)]
    pub size: Option<u64>,
    /// Access pattern.
    #[arg(long, value_enum, default_value = "randread")]
    pub rw: Rw,
    /// Block size.
    #[arg(long, default_value = "4k", value_parser = parse_size)]
    pub bs: u64,
    /// Operations in flight per worker.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub iodepth: u32,
    /// Workers (threads with a ring each), like fio's numjobs.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub workers: u32,
    /// Seconds per run.
    #[arg(long, default_value = "10")]
    pub runtime: f64,
    /// How worker rings get the table.
    #[arg(long, value_enum, default_value = "clone")]
    pub sharing: SharingArg,
    /// Page size of the pool: auto, 1g, 2m, thp or 4k.
    #[arg(long, default_value = "auto")]
    pub page: PagePolicy,
    /// Reserve the huge pages needed (pool, and fio's buffers with --vs-fio) and give them back at exit.
    #[arg(long)]
    pub reserve: bool,
    /// Every written 4 KiB carries a header (offset, sequence, crc32c); every read checks it, and a
    /// final pass re-reads what was written. A mismatch fails the run and names the offset.
    #[arg(long)]
    pub verify: bool,
    /// Run fio with the equivalent job, alternating with ringpool three times each.
    #[arg(long)]
    pub vs_fio: bool,
    /// Runs of each side with --vs-fio.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub rounds: u32,
    /// Submit queued operations once this many wait (1: each at once, fio's default
    /// iodepth_batch_submit); 0: all replacements of a completion batch in one io_uring_enter.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(0..=4096))]
    pub submit_batch: u32,
    /// Set worker rings up with DEFER_TASKRUN (completions posted when the worker waits).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub defer_taskrun: bool,
    /// Register the file too (IOSQE_FIXED_FILE), as fio's registerfiles.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub fixed_files: bool,
    /// Print one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Figures of one run (ringpool's or fio's).
#[derive(Serialize, Debug, Clone, Default)]
pub struct Figures {
    pub iops: f64,
    pub mib_s: f64,
    pub lat_us: Lat,
    /// Whole-process CPU (user + system, every thread including io_uring's
    /// io-wq workers) per I/O: getrusage of ringpool's run, wait4 of fio's.
    pub cpu_us_per_io: f64,
    /// fio only: the CPU fio itself reports (its job threads' RUSAGE_THREAD).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fio_reported_cpu_us_per_io: Option<f64>,
    pub ios: u64,
    pub seconds: f64,
}

#[derive(Serialize, Debug, Clone, Copy, Default)]
pub struct Lat {
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
}

#[derive(Serialize, Debug)]
struct Report {
    file: PathBuf,
    device: String,
    size: u64,
    rw: Rw,
    bs: u64,
    iodepth: u32,
    workers: u32,
    page_size: &'static str,
    sharing: String,
    backend: &'static str,
    fixed_files: bool,
    verify: bool,
    verified_blocks: u64,
    iops: f64,
    mib_s: f64,
    lat_us: Lat,
    cpu_us_per_io: f64,
    runs: Vec<Figures>,
    fio: Option<Figures>,
    fio_runs: Vec<Figures>,
    ratio_iops: Option<f64>,
    ratio_cpu_per_io: Option<f64>,
    ratio_lat_p50: Option<f64>,
    fio_command: Option<String>,
}

use crate::verify::{check, stamp, Ledger, SUB};

// ---------------------------------------------------------------- target

struct Target {
    file: DirectFile,
    size: u64,
    device: String,
}

fn is_mounted(path: &Path) -> anyhow::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let rdev = std::fs::metadata(path)?.rdev();
    let (maj, min) = (libc::major(rdev), libc::minor(rdev));
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    Ok(info.lines().any(|l| l.split_whitespace().nth(2).is_some_and(|d| d == format!("{maj}:{min}"))))
}

/// Opens the target; lays a regular file out (real data, so reads hit the
/// device) when it is new, too short, or lacks verify headers.
fn prepare_target(a: &IoArgs, mem: &IoMemory, table: &BufferTable) -> anyhow::Result<Target> {
    let meta = std::fs::metadata(&a.file).ok();
    let is_block = meta.as_ref().is_some_and(|m| std::os::unix::fs::FileTypeExt::is_block_device(&m.file_type()));
    if is_block && a.rw.writes() && is_mounted(&a.file)? {
        bail!("{} is mounted: refusing to write to it", a.file.display());
    }
    let file = DirectFile::options()
        .read(true)
        .write(a.rw.writes() || !is_block)
        .create(!is_block)
        .direct(DirectIo::Required)
        .open(&a.file)
        .with_context(|| format!("opening {}", a.file.display()))?;
    let device =
        if is_block { format!("block device, logical block {}", file.offset_align()) } else { "regular file".into() };
    let have = file.size()?;
    let size = match (a.size, is_block) {
        (Some(s), true) if s > have => bail!("--size {} is larger than the device ({})", Bytes(s), Bytes(have)),
        (Some(s), _) => s,
        (None, true) => have,
        (None, false) => 1 << 30,
    };
    let size = size / a.bs * a.bs;
    if size < a.bs * a.workers as u64 {
        bail!("--size {} holds fewer than one block of {} per worker", Bytes(size), Bytes(a.bs));
    }
    if !a.bs.is_multiple_of(file.offset_align() as u64) {
        bail!(
            "--bs {} is not a multiple of the O_DIRECT alignment {} of {}",
            a.bs,
            file.offset_align(),
            a.file.display()
        );
    }
    let needs_layout = if is_block {
        a.verify && !a.rw.writes() && !has_header(&file, mem, table, 0)?
    } else {
        have < size || (a.verify && !has_header(&file, mem, table, 0)?)
    };
    if needs_layout {
        if is_block && !a.verify {
            bail!("nothing to lay out on a block device");
        }
        if is_block && is_mounted(&a.file)? {
            bail!("{} is mounted: refusing to lay out verify headers on it", a.file.display());
        }
        layout(&file, size, a.verify || !is_block, mem, table)?;
    }
    Ok(Target { file, size, device })
}

fn has_header(file: &DirectFile, mem: &IoMemory, table: &BufferTable, offset: u64) -> anyhow::Result<bool> {
    if file.size()? < offset + SUB as u64 {
        return Ok(false);
    }
    let mut ring = table.ring()?;
    let (r, buf) = ring.read_at(file, offset, mem.try_alloc(SUB)?);
    Ok(r? == SUB && check(&buf, offset).is_ok())
}

/// Writes the whole file (verify headers, sequence 0) through a ring, with a progress bar.
fn layout(file: &DirectFile, size: u64, stamped: bool, mem: &IoMemory, table: &BufferTable) -> anyhow::Result<()> {
    let chunk: u64 = 1 << 20;
    let bar = crate::util::byte_bar(size, "layout");
    let mut ring = table.ring_with(&RingOptions::new().entries(16))?;
    let mut next = 0u64;
    let mut done = 0u64;
    while done < size {
        while ring.in_flight() < 16 && next < size {
            let len = chunk.min(size - next);
            let mut buf = mem.alloc_timeout(len as usize, Duration::from_secs(60))?;
            buf.set_len(len as usize)?;
            for (i, sub) in buf.chunks_mut(SUB).enumerate() {
                if stamped && sub.len() == SUB {
                    stamp(sub, next + (i * SUB) as u64, 0);
                }
            }
            ring.push_write(file, next, buf, next).map_err(|(e, _)| e)?;
            next += len;
        }
        ring.wait(1)?;
        for c in ring.completions() {
            let n = c.result.with_context(|| format!("laying out {} at {}", file.path().display(), c.tag))?;
            done += n as u64;
            bar.set_position(done);
        }
    }
    bar.finish_and_clear();
    file.sync_data()?;
    eprintln!("laid out {} of {}", Bytes(size), file.path().display());
    Ok(())
}

// ---------------------------------------------------------------- ringpool run

struct WorkerOut {
    ios: u64,
    bytes: u64,
    hist: Histogram<u64>,
    verified: u64,
}

struct Plan<'a> {
    a: &'a IoArgs,
    target: &'a Target,
    mem: &'a IoMemory,
    table: &'a BufferTable,
    ledger: Option<&'a Ledger>,
    seq: &'a AtomicU64,
}

struct Op {
    offset: u64,
    write: bool,
    seq: u64,
    at: Instant,
}

fn worker(p: &Plan<'_>, w: u32, start: &Barrier, stop_at: &AtomicU64, t0: Instant) -> anyhow::Result<WorkerOut> {
    let a = p.a;
    let mut ring = p.table.ring_with(&RingOptions::new().entries(a.iodepth).defer_taskrun(a.defer_taskrun))?;
    let file = p.target.file.clone();
    if a.fixed_files {
        ring.register_file(&file)?;
    }
    let blocks = p.target.size / a.bs;
    let span = blocks / a.workers as u64;
    let mut cursor = w as u64 * span;
    let mut rng = fastrand::Rng::with_seed(0x5eed ^ w as u64 ^ t0.elapsed().as_nanos() as u64);
    let mut ops: Vec<Option<Op>> = (0..a.iodepth).map(|_| None).collect();
    let mut bufs: Vec<IoBuf> = Vec::new();
    for _ in 0..a.iodepth {
        let mut b = p.mem.try_alloc(a.bs as usize)?;
        // Incompressible content, as fio's buffers: a compressing device
        // (zram) must not get an easy ride from zero pages.
        rng.fill(&mut b);
        bufs.push(b);
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds");
    let (mut ios, mut bytes, mut verified) = (0u64, 0u64, 0u64);
    let writes_stripe = p.ledger.is_some() && a.rw.writes();
    let mut pick = |rng: &mut fastrand::Rng, busy: &[Option<Op>]| -> (u64, bool) {
        let write = match a.rw {
            Rw::Randread | Rw::Read => false,
            Rw::Randwrite | Rw::Write => true,
            Rw::Randrw => rng.bool(),
        };
        loop {
            let block = if a.rw.random() {
                rng.u64(0..blocks)
            } else {
                let b = cursor;
                cursor += 1;
                if cursor >= (w as u64 + 1) * span {
                    cursor = w as u64 * span;
                }
                b
            };
            // With --verify, each worker writes only its own stripe of blocks
            // and never two in flight to one block, so the last completed
            // write of every block is well defined.
            if writes_stripe
                && write
                && (block % a.workers as u64 != w as u64 || busy.iter().flatten().any(|o| o.offset == block * a.bs))
            {
                if !a.rw.random() {
                    return (block * a.bs, false);
                }
                continue;
            }
            return (block * a.bs, write);
        }
    };
    let push = |ring: &mut ringpool::Ring,
                ops: &mut Vec<Option<Op>>,
                slot: usize,
                mut buf: IoBuf,
                offset: u64,
                write: bool|
     -> anyhow::Result<()> {
        let seq = if write { p.seq.fetch_add(1, Ordering::Relaxed) + 1 } else { 0 };
        if write && p.ledger.is_some() {
            for (i, sub) in buf.chunks_mut(SUB).enumerate() {
                stamp(sub, offset + (i * SUB) as u64, seq);
            }
        } else if write {
            // As fio's scramble_buffers: the offset in every 512-byte sector,
            // so no two writes carry the same data (no dedupe, no same-page).
            for sector in buf.chunks_mut(512) {
                sector[..8].copy_from_slice(&(offset ^ seq).to_le_bytes());
            }
        }
        ops[slot] = Some(Op { offset, write, seq, at: Instant::now() });
        let r = if write {
            ring.push_write(&file, offset, buf, slot as u64)
        } else {
            ring.push_read(&file, offset, buf, slot as u64)
        };
        r.map_err(|(e, _)| anyhow::anyhow!(e))?;
        // --submit-batch N: hand the queued operations to the kernel once N
        // wait (1 = each at once, as fio's default iodepth_batch_submit);
        // 0 = all the replacements of a completion batch in one call.
        if a.submit_batch > 0 && ring.queued() >= a.submit_batch as usize {
            ring.submit()?;
        }
        Ok(())
    };
    start.wait();
    for (slot, buf) in bufs.into_iter().enumerate() {
        let (off, write) = pick(&mut rng, &ops);
        push(&mut ring, &mut ops, slot, buf, off, write)?;
    }
    loop {
        ring.wait(1)?;
        let now = Instant::now();
        // The main thread moves the deadline from "never" to "now" when the run ends.
        let running = (now - t0).as_nanos() < stop_at.load(Ordering::Relaxed) as u128;
        let done: Vec<_> = ring.completions().collect();
        for c in done {
            let slot = c.tag as usize;
            let op = ops[slot].take().expect("a completion for a slot in flight");
            let n = c
                .result
                .with_context(|| format!("{} at offset {}", if op.write { "write" } else { "read" }, op.offset))?;
            if n as u64 != a.bs {
                bail!(
                    "short {} at offset {}: {} of {} bytes",
                    if op.write { "write" } else { "read" },
                    op.offset,
                    n,
                    a.bs
                );
            }
            let buf = c.bufs.into_one().expect("read/write completions carry their buffer");
            if let Some(ledger) = p.ledger {
                if op.write {
                    ledger.record(op.offset, a.bs, op.seq);
                } else {
                    for (i, sub) in buf.chunks(SUB).enumerate() {
                        let off = op.offset + (i * SUB) as u64;
                        let seq = check(sub, off).map_err(|e| anyhow::anyhow!("verify failed: {e}"))?;
                        let issued = p.seq.load(Ordering::Relaxed);
                        if seq > issued {
                            bail!(
                                "verify failed: offset {off}: sequence {seq} was never written (last issued {issued})"
                            );
                        }
                        verified += 1;
                    }
                }
            }
            hist.saturating_record((now - op.at).as_nanos() as u64);
            ios += 1;
            bytes += n as u64;
            if running {
                let (off, write) = pick(&mut rng, &ops);
                push(&mut ring, &mut ops, slot, buf, off, write)?;
            }
        }
        if !running && ring.in_flight() == 0 {
            break;
        }
    }
    Ok(WorkerOut { ios, bytes, hist, verified })
}

fn run_ringpool(p: &Plan<'_>) -> anyhow::Result<(Figures, u64)> {
    let a = p.a;
    let start = Barrier::new(a.workers as usize + 1);
    let stop_at = AtomicU64::new(u64::MAX);
    let t0 = Instant::now();
    let (outs, secs, cpu_us) = std::thread::scope(|s| -> anyhow::Result<(Vec<WorkerOut>, f64, f64)> {
        let handles: Vec<_> = (0..a.workers)
            .map(|w| {
                let (start, stop_at) = (&start, &stop_at);
                s.spawn(move || {
                    let r = worker(p, w, start, stop_at, t0);
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
        let (u0, s0) = ringpool::process::rusage_self_us();
        let begun = Instant::now();
        let deadline = begun + Duration::from_secs_f64(a.runtime);
        while Instant::now() < deadline && stop_at.load(Ordering::Relaxed) != 0 {
            std::thread::sleep((deadline - Instant::now()).min(Duration::from_millis(50)));
        }
        stop_at.store(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
        let outs: anyhow::Result<Vec<WorkerOut>> =
            handles.into_iter().map(|h| h.join().map_err(|_| anyhow::anyhow!("a worker panicked"))?).collect();
        let secs = begun.elapsed().as_secs_f64();
        let (u1, s1) = ringpool::process::rusage_self_us();
        Ok((outs?, secs, ((u1 - u0) + (s1 - s0)) as f64))
    })?;
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds");
    let (mut ios, mut bytes, mut verified) = (0, 0, 0);
    for o in &outs {
        hist.add(&o.hist).ok();
        ios += o.ios;
        bytes += o.bytes;
        verified += o.verified;
    }
    Ok((
        Figures {
            iops: ios as f64 / secs,
            mib_s: bytes as f64 / secs / (1 << 20) as f64,
            lat_us: Lat {
                p50: hist.value_at_quantile(0.5) as f64 / 1e3,
                p99: hist.value_at_quantile(0.99) as f64 / 1e3,
                p999: hist.value_at_quantile(0.999) as f64 / 1e3,
            },
            cpu_us_per_io: cpu_us / ios.max(1) as f64,
            fio_reported_cpu_us_per_io: None,
            ios,
            seconds: secs,
        },
        verified,
    ))
}

/// After the timed run: re-reads every block written and checks it holds
/// exactly the last sequence written there (no lost or misplaced write).
fn final_verify(p: &Plan<'_>, ledger: &Ledger) -> anyhow::Result<u64> {
    let mut ring = p.table.ring_with(&RingOptions::new().entries(32))?;
    let file = &p.target.file;
    let written = ledger.written_blocks();
    let bar = crate::util::byte_bar(written.len() as u64 * SUB as u64, "verify");
    let mut it = written.iter();
    let mut checked = 0u64;
    loop {
        while ring.in_flight() < 32 {
            let Some(&sub) = it.next() else { break };
            let buf = p.mem.alloc_timeout(SUB, Duration::from_secs(60))?;
            ring.push_read(file, sub * SUB as u64, buf, sub).map_err(|(e, _)| e)?;
        }
        if ring.in_flight() == 0 {
            break;
        }
        ring.wait(1)?;
        for c in ring.completions() {
            let off = c.tag * SUB as u64;
            c.result.with_context(|| format!("verify read at {off}"))?;
            let buf = c.bufs.into_one().expect("reads carry their buffer");
            let seq = check(&buf, off).map_err(|e| anyhow::anyhow!("verify failed: {e}"))?;
            let want = ledger.seq[c.tag as usize].load(Ordering::Relaxed);
            if seq != want {
                bail!("verify failed: offset {off} holds sequence {seq}, but the last write there was sequence {want}");
            }
            checked += 1;
            bar.inc(SUB as u64);
        }
    }
    bar.finish_and_clear();
    Ok(checked)
}

// ---------------------------------------------------------------- fio

/// The fio job equivalent to a ringpool run.
#[derive(Debug, Clone, PartialEq)]
pub struct FioJob {
    pub file: PathBuf,
    pub size: u64,
    pub rw: Rw,
    pub bs: u64,
    pub iodepth: u32,
    pub numjobs: u32,
    pub runtime: f64,
    pub fixedbufs: bool,
    pub registerfiles: bool,
    pub hugepages: Option<PageKind>,
}

impl FioJob {
    /// fio's command-line arguments (JSON output on stdout).
    pub fn args(&self) -> Vec<String> {
        let mut v = vec![
            "--name=ringpool-vs-fio".to_string(),
            format!("--filename={}", self.file.display()),
            format!("--size={}", self.size),
            format!("--rw={}", self.rw.name()),
            format!("--bs={}", self.bs),
            format!("--iodepth={}", self.iodepth),
            format!("--numjobs={}", self.numjobs),
            format!("--runtime={}", (self.runtime.ceil() as u64).max(1)),
            "--time_based=1".into(),
            "--ioengine=io_uring".into(),
            "--direct=1".into(),
            "--thread=1".into(),
            "--group_reporting=1".into(),
            "--lat_percentiles=1".into(),
            "--randrepeat=0".into(),
            "--norandommap=1".into(),
            "--output-format=json".into(),
        ];
        if self.fixedbufs {
            v.push("--fixedbufs=1".into());
        }
        if self.registerfiles {
            v.push("--registerfiles=1".into());
        }
        if self.rw == Rw::Randrw {
            v.push("--rwmixread=50".into());
        }
        match self.hugepages {
            Some(PageKind::Huge2M) => v.extend(["--iomem=mmaphuge".into(), "--hugepage-size=2m".into()]),
            Some(PageKind::Huge1G) => v.extend(["--iomem=mmaphuge".into(), "--hugepage-size=1g".into()]),
            _ => {}
        }
        v
    }

    /// Huge pages fio needs for its buffers (per job: its buffers rounded up,
    /// plus two for fio's alignment, as measured with fio 3.33).
    pub fn hugepages_needed(&self) -> u64 {
        match self.hugepages {
            Some(k) => self.numjobs as u64 * ((self.iodepth as u64 * self.bs).div_ceil(k.bytes()) + 2),
            None => 0,
        }
    }
}

fn fio_available() -> bool {
    std::process::Command::new("fio").arg("--version").output().is_ok_and(|o| o.status.success())
}

fn pct(v: &serde_json::Value, key: &str) -> f64 {
    v.get("percentile").and_then(|p| p.get(key)).and_then(|x| x.as_f64()).unwrap_or(0.0) / 1e3
}

/// Runs fio once and reads its JSON.
fn run_fio(job: &FioJob) -> anyhow::Result<Figures> {
    let (u0, s0) = ringpool::process::rusage_children_us();
    let out = std::process::Command::new("fio").args(job.args()).output().context("running fio")?;
    let (u1, s1) = ringpool::process::rusage_children_us();
    let process_cpu_us = ((u1 - u0) + (s1 - s0)) as f64;
    let text = String::from_utf8_lossy(&out.stdout);
    let json_at = text
        .find('{')
        .ok_or_else(|| anyhow::anyhow!("fio printed no JSON: {}", String::from_utf8_lossy(&out.stderr)))?;
    let v: serde_json::Value = serde_json::from_str(&text[json_at..]).context("parsing fio's JSON")?;
    let j = &v["jobs"][0];
    let err = j["error"].as_i64().unwrap_or(0);
    if !out.status.success() || err != 0 {
        bail!("fio failed (error {err}): {}{}", &text[..json_at], String::from_utf8_lossy(&out.stderr));
    }
    let (r, w) = (&j["read"], &j["write"]);
    let ios = r["total_ios"].as_u64().unwrap_or(0) + w["total_ios"].as_u64().unwrap_or(0);
    let bytes = r["io_bytes"].as_u64().unwrap_or(0) + w["io_bytes"].as_u64().unwrap_or(0);
    let runtime_ms = r["runtime"].as_u64().unwrap_or(0).max(w["runtime"].as_u64().unwrap_or(0)).max(1);
    let secs = runtime_ms as f64 / 1e3;
    // usr_cpu / sys_cpu: percent of one CPU over the job's run, summed over
    // the group's jobs.
    let cpu_pct = j["usr_cpu"].as_f64().unwrap_or(0.0) + j["sys_cpu"].as_f64().unwrap_or(0.0);
    let cpu_us = cpu_pct / 100.0 * secs * 1e6;
    // The dominant direction's total latency percentiles (randrw: reads).
    let lat = if r["total_ios"].as_u64().unwrap_or(0) > 0 { &r["lat_ns"] } else { &w["lat_ns"] };
    Ok(Figures {
        iops: ios as f64 / secs,
        mib_s: bytes as f64 / secs / (1 << 20) as f64,
        lat_us: Lat { p50: pct(lat, "50.000000"), p99: pct(lat, "99.000000"), p999: pct(lat, "99.900000") },
        cpu_us_per_io: process_cpu_us / ios.max(1) as f64,
        fio_reported_cpu_us_per_io: Some(cpu_us / ios.max(1) as f64),
        ios,
        seconds: secs,
    })
}

fn median_figures(runs: &[Figures]) -> Figures {
    let m = |f: fn(&Figures) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
    Figures {
        iops: m(|f| f.iops),
        mib_s: m(|f| f.mib_s),
        lat_us: Lat { p50: m(|f| f.lat_us.p50), p99: m(|f| f.lat_us.p99), p999: m(|f| f.lat_us.p999) },
        cpu_us_per_io: m(|f| f.cpu_us_per_io),
        fio_reported_cpu_us_per_io: runs
            .iter()
            .map(|f| f.fio_reported_cpu_us_per_io)
            .collect::<Option<Vec<_>>>()
            .map(|v| median(&v)),
        ios: runs.iter().map(|f| f.ios).sum(),
        seconds: runs.iter().map(|f| f.seconds).sum(),
    }
}

// ---------------------------------------------------------------- command

pub fn run(a: &IoArgs) -> anyhow::Result<()> {
    if a.bs == 0 || a.bs > 1 << 30 {
        bail!("--bs must be from 512 bytes to 1 GiB");
    }
    if a.verify && !a.bs.is_multiple_of(SUB as u64) {
        bail!("--verify needs --bs a multiple of 4 KiB (every 4 KiB carries a header)");
    }
    if !(a.runtime > 0.0 && a.runtime <= 86400.0) {
        bail!("--runtime must be from a fraction of a second to a day");
    }
    let fio_job_hp = |pool: PageKind| matches!(pool, PageKind::Huge1G | PageKind::Huge2M).then_some(pool);
    // The pool: every worker's buffers, plus room for layout and verify.
    let pool_bytes = (a.workers as u64 * a.iodepth as u64 * a.bs + (64 << 20)).next_multiple_of(2 << 20);
    let fio_pages = if a.vs_fio && a.reserve && a.page != PagePolicy::Auto {
        let k = if a.page == PagePolicy::Huge1G { PageKind::Huge1G } else { PageKind::Huge2M };
        FioJob {
            file: a.file.clone(),
            size: 0,
            rw: a.rw,
            bs: a.bs,
            iodepth: a.iodepth,
            numjobs: a.workers,
            runtime: a.runtime,
            fixedbufs: true,
            registerfiles: true,
            hugepages: Some(k),
        }
        .hugepages_needed()
            * k.bytes()
    } else {
        0
    };
    let (policy, _reservation) = crate::util::reserve_for(a.page, pool_bytes + fio_pages, a.reserve)?;
    let mem = IoMemory::map_with(pool_bytes, &MemoryOptions::new().page(policy)).context("mapping the pool")?;
    if !a.json {
        crate::util::describe_pool(&mem, a.page);
    }
    mem.prefault(|_| {})?;
    let table = BufferTable::register_with(&mem, &TableOptions { sharing: a.sharing.sharing(), ..Default::default() })?;
    let target = prepare_target(a, &mem, &table)?;
    let ledger = a.verify.then(|| Ledger::new(target.size));
    // Sequences grow across runs too (they start at the wall clock in µs),
    // so a block left by an earlier run never looks newer than this run's.
    let seq = AtomicU64::new(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_micros() as u64),
    );
    let plan = Plan { a, target: &target, mem: &mem, table: &table, ledger: ledger.as_ref(), seq: &seq };

    let fio_job = FioJob {
        file: a.file.clone(),
        size: target.size,
        rw: a.rw,
        bs: a.bs,
        iodepth: a.iodepth,
        numjobs: a.workers,
        runtime: a.runtime,
        fixedbufs: a.sharing != SharingArg::Unregistered,
        registerfiles: a.fixed_files,
        hugepages: fio_job_hp(mem.page_kind()),
    };
    let fio_ok = a.vs_fio && fio_available();
    if a.vs_fio && !fio_ok {
        eprintln!(
            "note: fio is not on PATH: install it (Debian: apt-get install fio) to compare; running ringpool alone"
        );
    }
    let rounds = if fio_ok { a.rounds } else { 1 };
    let (mut runs, mut fio_runs) = (Vec::new(), Vec::new());
    let mut verified = 0;
    for round in 0..rounds {
        let (f, v) = run_ringpool(&plan)?;
        verified += v;
        if !a.json {
            eprintln!(
                "ringpool run {}: {:.0} IOPS, {:.1} MiB/s, p50 {:.1} us, {:.2} us CPU/IO",
                round + 1,
                f.iops,
                f.mib_s,
                f.lat_us.p50,
                f.cpu_us_per_io
            );
        }
        runs.push(f);
        if fio_ok {
            let f = run_fio(&fio_job)?;
            if !a.json {
                eprintln!(
                    "fio      run {}: {:.0} IOPS, {:.1} MiB/s, p50 {:.1} us, {:.2} us CPU/IO",
                    round + 1,
                    f.iops,
                    f.mib_s,
                    f.lat_us.p50,
                    f.cpu_us_per_io
                );
            }
            fio_runs.push(f);
        }
    }
    if let Some(l) = &ledger {
        if a.rw.writes() {
            verified += final_verify(&plan, l)?;
        }
    }
    let mine = median_figures(&runs);
    let fio = (!fio_runs.is_empty()).then(|| median_figures(&fio_runs));
    let ratio = |f: fn(&Figures) -> f64| {
        (!fio_runs.is_empty())
            .then(|| median(&runs.iter().zip(&fio_runs).map(|(r, x)| f(r) / f(x).max(1e-9)).collect::<Vec<_>>()))
    };
    let (ratio_iops, ratio_cpu_per_io, ratio_lat_p50) =
        (ratio(|f| f.iops), ratio(|f| f.cpu_us_per_io), ratio(|f| f.lat_us.p50));
    let report = Report {
        file: a.file.clone(),
        device: target.device.clone(),
        size: target.size,
        rw: a.rw,
        bs: a.bs,
        iodepth: a.iodepth,
        workers: a.workers,
        page_size: mem.page_kind().short_name(),
        sharing: table.path().to_string(),
        backend: "io_uring",
        fixed_files: a.fixed_files,
        verify: a.verify,
        verified_blocks: verified,
        iops: mine.iops,
        mib_s: mine.mib_s,
        lat_us: mine.lat_us,
        cpu_us_per_io: mine.cpu_us_per_io,
        runs,
        fio,
        fio_runs,
        ratio_iops,
        ratio_cpu_per_io,
        ratio_lat_p50,
        fio_command: fio_ok.then(|| format!("fio {}", fio_job.args().join(" "))),
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "{} {} bs={} iodepth={} workers={} on {} ({}, {}), pool {} pages, table by {}, fixed files {}",
        report.rw.name(),
        Bytes(report.size),
        Bytes(a.bs),
        a.iodepth,
        a.workers,
        a.file.display(),
        report.device,
        if target.file.is_direct() { "O_DIRECT" } else { "buffered" },
        mem.page_kind(),
        report.sharing,
        a.fixed_files
    );
    println!(
        "{:>9} {:>12} {:>10} {:>9} {:>9} {:>9} {:>10}",
        "", "IOPS", "MiB/s", "p50_us", "p99_us", "p999_us", "CPU_us/IO"
    );
    let line = |name: &str, f: &Figures| {
        println!(
            "{:>9} {:>12.0} {:>10.1} {:>9.1} {:>9.1} {:>9.1} {:>10.2}",
            name, f.iops, f.mib_s, f.lat_us.p50, f.lat_us.p99, f.lat_us.p999, f.cpu_us_per_io
        )
    };
    line("ringpool", &mine);
    if let Some(f) = &report.fio {
        line("fio", f);
        if let Some(c) = f.fio_reported_cpu_us_per_io {
            println!("(CPU is whole-process for both; fio's own report, its job threads only: {c:.2} us/IO)");
        }
        println!(
            "median of {} alternations, ringpool / fio: IOPS {:.2}x, CPU per I/O {:.2}x, p50 latency {:.2}x",
            rounds,
            report.ratio_iops.unwrap_or(0.0),
            report.ratio_cpu_per_io.unwrap_or(0.0),
            report.ratio_lat_p50.unwrap_or(0.0)
        );
    }
    if a.verify {
        println!("verified {} blocks of 4 KiB: no mismatch", verified);
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct ChartArgs {
    /// The SVG to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Chart title.
    #[arg(long, default_value = "randread IOPS against iodepth")]
    pub title: String,
    /// `bench io --json` reports (one object per file).
    pub reports: Vec<PathBuf>,
}

/// Plots every report's ringpool and fio IOPS at its iodepth, one line per
/// (device, workers, side).
pub fn chart(a: &ChartArgs) -> anyhow::Result<()> {
    if a.reports.is_empty() {
        bail!("no reports given");
    }
    let mut points = Vec::new();
    for p in &a.reports {
        let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
        let v: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("{} is not a bench io report", p.display()))?;
        let dev = if v["device"].as_str().unwrap_or("").starts_with("block") {
            Path::new(v["file"].as_str().unwrap_or("?"))
                .file_name()
                .map_or("?".into(), |f| f.to_string_lossy().into_owned())
        } else {
            "file".to_string()
        };
        let label = format!("{dev} {}w", v["workers"]);
        let depth = v["iodepth"].as_f64().context("report without iodepth")?;
        points.push((format!("ringpool {label}"), depth, v["iops"].as_f64().unwrap_or(0.0)));
        if let Some(f) = v["fio"]["iops"].as_f64() {
            points.push((format!("fio {label}"), depth, f));
        }
    }
    let mut series: Vec<crate::plot::Series> = Vec::new();
    for (name, x, y) in points {
        match series.iter_mut().find(|s| s.name == name) {
            Some(s) => s.points.push((x, y)),
            None => series.push(crate::plot::Series { bold: name.starts_with("ringpool"), name, points: vec![(x, y)] }),
        }
    }
    series.sort_by(|a, b| a.name.cmp(&b.name));
    crate::plot::loglog_chart(&a.out, &a.title, "iodepth", "IOPS", &series)?;
    eprintln!("chart written to {}", a.out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> FioJob {
        FioJob {
            file: "/dev/zram0".into(),
            size: 4 << 30,
            rw: Rw::Randread,
            bs: 4096,
            iodepth: 32,
            numjobs: 1,
            runtime: 10.0,
            fixedbufs: true,
            registerfiles: true,
            hugepages: None,
        }
    }

    #[test]
    fn fio_args_for_the_default_job() {
        assert_eq!(
            job().args(),
            [
                "--name=ringpool-vs-fio",
                "--filename=/dev/zram0",
                "--size=4294967296",
                "--rw=randread",
                "--bs=4096",
                "--iodepth=32",
                "--numjobs=1",
                "--runtime=10",
                "--time_based=1",
                "--ioengine=io_uring",
                "--direct=1",
                "--thread=1",
                "--group_reporting=1",
                "--lat_percentiles=1",
                "--randrepeat=0",
                "--norandommap=1",
                "--output-format=json",
                "--fixedbufs=1",
                "--registerfiles=1",
            ]
        );
    }

    #[test]
    fn fio_args_follow_each_option() {
        let unreg = FioJob { fixedbufs: false, ..job() };
        assert!(!unreg.args().iter().any(|a| a.starts_with("--fixedbufs")));
        let nofiles = FioJob { registerfiles: false, ..job() };
        assert!(!nofiles.args().iter().any(|a| a.starts_with("--registerfiles")));
        let mixed = FioJob { rw: Rw::Randrw, numjobs: 2, runtime: 2.5, ..job() };
        let args = mixed.args();
        assert!(args.contains(&"--rw=randrw".to_string()) && args.contains(&"--rwmixread=50".to_string()));
        assert!(args.contains(&"--numjobs=2".to_string()) && args.contains(&"--runtime=3".to_string()));
        let huge = FioJob { hugepages: Some(PageKind::Huge2M), bs: 128 << 10, ..job() };
        let args = huge.args();
        assert!(args.contains(&"--iomem=mmaphuge".to_string()) && args.contains(&"--hugepage-size=2m".to_string()));
        assert_eq!(huge.hugepages_needed(), 4);
        let thp = FioJob { hugepages: Some(PageKind::Transparent), ..job() };
        assert!(!thp.args().iter().any(|a| a.starts_with("--iomem")));
        for rw in [Rw::Read, Rw::Write, Rw::Randwrite] {
            assert!(FioJob { rw, ..job() }.args().contains(&format!("--rw={}", rw.name())));
        }
    }
}
