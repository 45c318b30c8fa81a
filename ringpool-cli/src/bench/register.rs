//! `ringpool bench register`: the seed mail's experiment on this machine.
//!
//! Maps the largest size once and prefaults it once, then for each size
//! registers that prefix on a fresh template ring and clones it into fresh
//! rings, beside the same calls made with the bare io-uring crate.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Args;
use ringpool::probe::Features;
use ringpool::types::{parse_size, Bytes, CloneRange, PageKind, PagePolicy, Sharing};
use ringpool::{BufferTable, IoMemory, MemoryOptions, Ring, RingOptions, TableOptions};
use ringpool_testkit::baseline;
use serde::Serialize;

use crate::util::{byte_bar, median, min, us};

#[derive(Args, Debug)]
pub struct RegisterArgs {
    /// Page size: auto, 1g, 2m, thp or 4k.
    #[arg(long, default_value = "auto")]
    pub page: PagePolicy,
    /// Pool sizes to measure (prefixes of one mapping of the largest).
    #[arg(long, default_value = "1G,2G,4G", value_delimiter = ',', value_parser = parse_size)]
    pub sizes: Vec<u64>,
    /// Clones (and spin-ups) per size.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub clones: u32,
    /// Registrations per size, each for ringpool and for the bare crate (medians are reported).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub repeat: u32,
    /// Reserve exactly the huge pages needed through sysfs (root) and give them back at exit.
    #[arg(long)]
    pub reserve: bool,
    /// Print one JSON object on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Write an SVG chart of register and clone time against pool size.
    #[arg(long)]
    pub plot: Option<PathBuf>,
}

#[derive(Serialize, Debug, Clone)]
pub struct SizeResult {
    pub bytes: u64,
    pub segments: u16,
    pub prefault_ms: f64,
    pub register_us: f64,
    pub raw_register_us: f64,
    pub register_ms_per_gib: f64,
    pub clone_us_median: Option<f64>,
    pub clone_us_min: Option<f64>,
    pub raw_clone_us_median: Option<f64>,
    pub spinup_us_median: f64,
    pub spinup_path: String,
    pub speedup: Option<f64>,
    pub clone_overhead: Option<f64>,
    pub register_overhead: f64,
}

#[derive(Serialize, Debug)]
struct Report {
    kernel: String,
    page_size: &'static str,
    page_choice: String,
    segment_size: u64,
    clones: u32,
    repeat: u32,
    results: Vec<SizeResult>,
}

/// Largest power of two (at most 1 GiB, at least `page`) dividing every size.
fn segment_size_for(sizes: &[u64], page: u64) -> u64 {
    let mut seg = ringpool::types::MAX_SEGMENT_SIZE;
    for &s in sizes {
        while seg > page && s % seg != 0 {
            seg /= 2;
        }
    }
    seg.max(page)
}

pub fn run(a: &RegisterArgs) -> anyhow::Result<()> {
    let mut sizes = a.sizes.clone();
    sizes.sort_unstable();
    sizes.dedup();
    if sizes.is_empty() || sizes[0] == 0 {
        bail!("--sizes needs at least one size above zero");
    }
    let features = Features::get();
    if !features.io_uring.is_available() {
        bail!("{:?}", features.io_uring);
    }
    if !features.clone_buffers {
        eprintln!(
            "note: kernel {} has no IORING_REGISTER_CLONE_BUFFERS (6.12+): only registration is measured",
            features.kernel
        );
    }
    let largest = *sizes.last().expect("non-empty");
    // Huge pages: reserve exactly what the largest size needs, if asked.
    let (policy, _reservation) = crate::util::reserve_for(a.page, largest, a.reserve)?;
    let mem = map_pool(&sizes, policy)?;
    let kind = mem.page_kind();
    crate::util::describe_pool(&mem, a.page);
    let prefault_ms = prefault_prefixes(&mem, &sizes)?;
    let mut results = Vec::new();
    for (i, &size) in sizes.iter().enumerate() {
        let r = measure_size(a, &mem, size, prefault_ms[i], features.clone_buffers)?;
        if !a.json {
            // The seed mail's lines (integers there; one decimal below 10).
            let num = |x: f64| if x < 10.0 { format!("{x:.1}") } else { format!("{x:.0}") };
            println!("Registered {} pages in {} msec", r.segments, num(r.register_us / 1e3));
            if let Some(c) = r.clone_us_median {
                println!("Cloned {} pages in {} usec", r.segments, num(c));
            }
        }
        results.push(r);
    }
    if let Some(p) = &a.plot {
        register_chart(p, kind, &results).with_context(|| format!("writing {}", p.display()))?;
        eprintln!("chart written to {}", p.display());
    }
    if a.json {
        let report = Report {
            kernel: features.kernel.clone(),
            page_size: kind.short_name(),
            page_choice: mem.page_choice().to_string(),
            segment_size: mem.segment_size(),
            clones: a.clones,
            repeat: a.repeat,
            results,
        };
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    print_table(kind, &results);
    Ok(())
}

/// Maps the largest size once, in segments that divide every size.
fn map_pool(sizes: &[u64], policy: PagePolicy) -> anyhow::Result<IoMemory> {
    let largest = *sizes.last().expect("non-empty");
    let page_bytes = match policy {
        PagePolicy::Huge1G => 1 << 30,
        PagePolicy::Base => 4096,
        _ => 2 << 20,
    };
    let seg = segment_size_for(sizes, page_bytes.min(largest));
    let mem = IoMemory::map_with(largest, &MemoryOptions::new().page(policy).segment_size(seg.max(page_bytes)))
        .or_else(|e| match (policy, &e) {
            // Auto chose a kind whose page is larger than our segment guess: let it pick.
            (PagePolicy::Auto, ringpool::Error::InvalidArgument { .. }) => {
                IoMemory::map_with(largest, &MemoryOptions::new().page(policy))
            }
            _ => Err(e),
        })
        .context("mapping the pool")?;
    for &s in sizes {
        if s % mem.segment_size() != 0 {
            bail!("size {} is not a multiple of the segment size {}", Bytes(s), Bytes(mem.segment_size()));
        }
    }
    Ok(mem)
}

/// Prefaults once, prefix by prefix, so that each size has its own time
/// (cumulative ms up to each size).
fn prefault_prefixes(mem: &IoMemory, sizes: &[u64]) -> anyhow::Result<Vec<f64>> {
    let bar = byte_bar(mem.len(), "prefault");
    let mut prefault_ms = Vec::new();
    let (mut done_at, mut elapsed) = (0u64, 0.0);
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    for &s in sizes {
        let base = done_at;
        let took = mem.prefault_range(done_at, s - done_at, threads, |p| bar.set_position(base + p.done))?;
        elapsed += took.as_secs_f64() * 1e3;
        prefault_ms.push(elapsed);
        done_at = s;
    }
    bar.finish_and_clear();
    eprintln!("prefaulted {} in {:.0} ms", Bytes(mem.len()), elapsed);
    Ok(prefault_ms)
}

/// Registration of the first `size` bytes by ringpool and by the bare
/// crate, `repeat` times each, alternating which goes first; the table of
/// ringpool's last one.
fn registrations(a: &RegisterArgs, mem: &IoMemory, topts: &TableOptions, entries: u16) -> anyhow::Result<Registered> {
    let (mut reg, mut raw_reg) = (Vec::new(), Vec::new());
    let mut table = None;
    for rep in 0..a.repeat {
        let mut ringpool_side = |table: &mut Option<BufferTable>| -> anyhow::Result<()> {
            drop(table.take());
            let t = Instant::now();
            let tb = BufferTable::register_with(mem, topts)?;
            reg.push(us(t.elapsed()));
            *table = Some(tb);
            Ok(())
        };
        let mut raw_side = || -> anyhow::Result<()> {
            let (raw, took) = baseline::register(mem, entries)?;
            raw_reg.push(us(took));
            drop(raw);
            Ok(())
        };
        if rep % 2 == 0 {
            ringpool_side(&mut table)?;
            raw_side()?;
        } else {
            raw_side()?;
            ringpool_side(&mut table)?;
        }
    }
    Ok(Registered { table: table.expect("repeat >= 1"), reg, raw_reg })
}

/// ringpool's registrations and the bare crate's, and ringpool's table.
struct Registered {
    table: BufferTable,
    reg: Vec<f64>,
    raw_reg: Vec<f64>,
}

/// Clones into fresh rings by ringpool and by the bare crate, alternating
/// which goes first (so that neither always runs right after the other's
/// ring teardown), and spin-ups (a new ring with the table through
/// `BufferTable::ring_with`): µs each, and the table path of the last.
fn clones(a: &RegisterArgs, table: &BufferTable, clone_ok: bool) -> anyhow::Result<Clones> {
    let opts = RingOptions::new().entries(64);
    let (mut clone, mut raw_clone, mut spinup) = (Vec::new(), Vec::new(), Vec::new());
    let mut path = String::new();
    // One untimed round first: page in the code paths and slab caches.
    if clone_ok {
        Ring::new(&opts)?.clone_buffers_from(table, CloneRange::all())?;
        baseline::clone_into_fresh_ring(table.template_fd(), 64)?;
    }
    drop(table.ring_with(&opts)?);
    for k in 0..a.clones {
        if clone_ok {
            let mut ringpool_side = || -> anyhow::Result<()> {
                let mut ring = Ring::new(&opts)?;
                let t = Instant::now();
                ring.clone_buffers_from(table, CloneRange::all())?;
                clone.push(us(t.elapsed()));
                Ok(())
            };
            if k % 2 == 0 {
                ringpool_side()?;
                raw_clone.push(us(baseline::clone_into_fresh_ring(table.template_fd(), 64)?));
            } else {
                raw_clone.push(us(baseline::clone_into_fresh_ring(table.template_fd(), 64)?));
                ringpool_side()?;
            }
        }
        let t = Instant::now();
        let ring = table.ring_with(&opts)?;
        spinup.push(us(t.elapsed()));
        path = ring.setup().path.to_string();
        drop(ring);
    }
    Ok(Clones { clone, raw_clone, spinup, path })
}

/// µs of ringpool's clones, the bare crate's, and spin-ups; the table path
/// of the last ring.
struct Clones {
    clone: Vec<f64>,
    raw_clone: Vec<f64>,
    spinup: Vec<f64>,
    path: String,
}

/// Everything measured for one pool size.
fn measure_size(
    a: &RegisterArgs,
    mem: &IoMemory,
    size: u64,
    prefault_ms: f64,
    clone_ok: bool,
) -> anyhow::Result<SizeResult> {
    let entries = (size / mem.segment_size()) as u16;
    let sharing = if clone_ok { Sharing::Clone } else { Sharing::RegisterEach };
    let topts = TableOptions::new().sharing(sharing).segments(entries);
    let r = registrations(a, mem, &topts, entries)?;
    let Clones { clone, raw_clone, spinup, path } = clones(a, &r.table, clone_ok)?;
    let register_us = median(&r.reg);
    let raw_register_us = median(&r.raw_reg);
    let some = |v: &Vec<f64>, f: fn(&[f64]) -> f64| (!v.is_empty()).then(|| f(v));
    let clone_med = some(&clone, median);
    Ok(SizeResult {
        bytes: size,
        segments: entries,
        prefault_ms,
        register_us,
        raw_register_us,
        register_ms_per_gib: register_us / 1e3 / (size as f64 / (1u64 << 30) as f64),
        clone_us_median: clone_med,
        clone_us_min: some(&clone, min),
        raw_clone_us_median: some(&raw_clone, median),
        spinup_us_median: median(&spinup),
        spinup_path: path,
        speedup: clone_med.map(|c| register_us / c.max(1e-3)),
        clone_overhead: clone_med.zip(some(&raw_clone, median)).map(|(c, r)| c / r.max(1e-3)),
        register_overhead: register_us / raw_register_us.max(1e-3),
    })
}

fn opt(v: Option<f64>, prec: usize) -> String {
    v.map_or("-".into(), |x| format!("{x:.prec$}"))
}

fn print_table(kind: PageKind, results: &[SizeResult]) {
    println!();
    println!(
        "{:>8} {:>5} {:>5} {:>11} {:>11} {:>8} {:>10} {:>10} {:>11} {:>9} | {:>11} {:>10} {:>8} {:>8}",
        "size",
        "page",
        "segs",
        "prefault_ms",
        "register_ms",
        "ms/GiB",
        "clone_med",
        "clone_min",
        "spinup_med",
        "speedup",
        "raw_reg_ms",
        "raw_clone",
        "reg_x",
        "clone_x"
    );
    for r in results {
        println!(
            "{:>8} {:>5} {:>5} {:>11.0} {:>11.2} {:>8.2} {:>10} {:>10} {:>11.1} {:>9} | {:>11.2} {:>10} {:>8.2} {:>8}",
            Bytes(r.bytes).to_string(),
            kind.short_name(),
            r.segments,
            r.prefault_ms,
            r.register_us / 1e3,
            r.register_ms_per_gib,
            opt(r.clone_us_median, 2),
            opt(r.clone_us_min, 2),
            r.spinup_us_median,
            opt(r.speedup, 0),
            r.raw_register_us / 1e3,
            opt(r.raw_clone_us_median, 2),
            r.register_overhead,
            opt(r.clone_overhead, 2),
        );
    }
    println!();
    println!("clone_* and spinup in µs (spinup = new ring + clone through BufferTable::ring); speedup = register / clone median;");
    println!("raw_* = the same calls with the bare io-uring crate; reg_x / clone_x = ringpool / raw (overhead ratio).");
}

/// Register and clone time (µs) against pool size (GiB), log-log.
fn register_chart(path: &std::path::Path, kind: PageKind, results: &[SizeResult]) -> anyhow::Result<()> {
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    type Pick = fn(&SizeResult) -> Option<f64>;
    let picks: [(&str, Pick); 5] = [
        ("register (ringpool)", |r| Some(r.register_us)),
        ("register (bare io-uring)", |r| Some(r.raw_register_us)),
        ("clone median (ringpool)", |r| r.clone_us_median),
        ("clone median (bare io-uring)", |r| r.raw_clone_us_median),
        ("new ring + clone (spin-up)", |r| Some(r.spinup_us_median)),
    ];
    let series: Vec<crate::plot::Series> = picks
        .iter()
        .map(|(name, f)| crate::plot::Series {
            name: name.to_string(),
            points: results.iter().filter_map(|r| f(r).map(|y| (gib(r.bytes), y))).collect(),
            bold: !name.contains("bare"),
        })
        .collect();
    crate::plot::loglog_chart(
        path,
        &format!("Register vs clone, {kind} pages"),
        "pool size (GiB)",
        "time (µs)",
        &series,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_size_divides_every_size() {
        assert_eq!(segment_size_for(&[1 << 30, 2 << 30, 4 << 30], 2 << 20), 1 << 30);
        assert_eq!(segment_size_for(&[256 << 20, 1 << 30], 2 << 20), 256 << 20);
        assert_eq!(segment_size_for(&[3 << 20], 4096), 1 << 20);
        assert_eq!(segment_size_for(&[4096], 4096), 4096);
    }
}
