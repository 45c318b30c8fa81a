//! RingpoolStore against LocalFileSystem on the same files, in one run,
//! the two alternating each round (medians over rounds):
//!
//! - `get_ranges`: 100 calls of 10 random ranges of 4-256 KiB over a 4 GiB
//!   file (1,000 ranges), the calls one after another (each call's ranges
//!   are what the store reads at once), cold page cache, then the same again
//!   warm, reported apart;
//! - `get` of a whole 1 GiB object, streamed, cold;
//! - a Parquet scan (every record batch of a multi-row-group file through
//!   parquet's `ParquetObjectReader`), cold.
//!
//! CPU is the process's user + system time (every thread: the runtime's,
//! LocalFileSystem's blocking pool, io_uring's io-wq) over each side's
//! window. Needs root for the cold cache (drop_caches).
//!
//! cargo run --release -p ringpool-object-store --example bench -- --dir DIR [--size 4G] [--rounds 3] [--json]

// parquet 60 deprecates ParquetObjectReader; it is the reader the scan is about.
#![allow(deprecated)]

use std::collections::BTreeMap;
use std::io::Write;
use std::ops::Range;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use futures::{StreamExt, TryStreamExt};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use ringpool::types::{parse_size, PagePolicy};
use ringpool_object_store::{RingpoolStore, StoreOptions};
use serde::Serialize;

#[derive(Parser, Debug)]
struct Args {
    /// Directory of the benchmark's files (made there if missing).
    #[arg(long)]
    dir: PathBuf,
    /// Size of the file the ranges are read from.
    #[arg(long, default_value = "4G", value_parser = parse_size)]
    size: u64,
    /// Size of the whole object that `get` reads.
    #[arg(long, default_value = "1G", value_parser = parse_size)]
    object: u64,
    /// Rows of the Parquet file (about 40 bytes each).
    #[arg(long, default_value_t = 12_000_000)]
    rows: usize,
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Pool size and page policy of RingpoolStore.
    #[arg(long, default_value = "1G", value_parser = parse_size)]
    pool: u64,
    #[arg(long, default_value = "auto")]
    page: PagePolicy,
    #[arg(long)]
    json: bool,
}

#[derive(Serialize, Debug, Default, Clone)]
struct Side {
    ranges_per_s: f64,
    gbps: f64,
    cpu_us_per_range: f64,
    call_p50_ms: f64,
    call_p99_ms: f64,
    warm_ranges_per_s: f64,
    warm_cpu_us_per_range: f64,
    get_gbps: f64,
    get_cpu_s: f64,
    parquet_scan_s: f64,
    parquet_cpu_s: f64,
}

#[derive(Serialize, Debug)]
struct Report {
    file_bytes: u64,
    ranges_per_round: usize,
    calls_per_round: usize,
    object_bytes: u64,
    parquet_bytes: u64,
    rounds: u32,
    sides: BTreeMap<&'static str, Side>,
    ratio_ranges_per_s: f64,
    ratio_cpu_per_range: f64,
    ratio_warm_ranges_per_s: f64,
    ratio_get: f64,
    ratio_parquet: f64,
    runs: BTreeMap<&'static str, Vec<Side>>,
    method: &'static str,
}

const METHOD: &str =
    "same run, RingpoolStore and LocalFileSystem alternating (order swapped each round), medians over \
                      rounds; page cache dropped before each cold measurement; CPU = the whole process's user+system \
                      time over each side's window; ratios are medians of per-round ratios (ringpool / local; CPU: \
                      ringpool's / local's)";

fn cpu_s() -> f64 {
    let (u, s) = ringpool_testkit::process::rusage_self_us();
    (u + s) as f64 / 1e6
}

fn drop_cache(paths: &[&FsPath]) {
    ringpool_testkit::process::drop_page_cache(paths);
}

fn ensure_file(path: &FsPath, size: u64) -> anyhow::Result<()> {
    if std::fs::metadata(path).is_ok_and(|m| m.len() == size) {
        return Ok(());
    }
    eprintln!("writing {} ({} bytes of random data)", path.display(), size);
    let mut f = std::io::BufWriter::with_capacity(8 << 20, std::fs::File::create(path)?);
    let mut rng = fastrand::Rng::with_seed(3);
    let mut buf = vec![0u8; 8 << 20];
    let mut left = size;
    while left > 0 {
        rng.fill(&mut buf);
        let n = left.min(buf.len() as u64) as usize;
        f.write_all(&buf[..n])?;
        left -= n as u64;
    }
    f.flush()?;
    Ok(())
}

fn ensure_parquet(path: &FsPath, rows: usize) -> anyhow::Result<()> {
    use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
    if path.exists() {
        return Ok(());
    }
    eprintln!("writing {} ({rows} rows)", path.display());
    let tmp = path.with_extension("tmp");
    let file = std::fs::File::create(&tmp)?;
    let props =
        parquet::file::properties::WriterProperties::builder().set_max_row_group_row_count(Some(1 << 20)).build();
    let mut w: Option<parquet::arrow::ArrowWriter<std::fs::File>> = None;
    let mut file = Some(file);
    for start in (0..rows).step_by(1 << 20) {
        let n = (1 << 20).min(rows - start);
        let ids: ArrayRef = Arc::new(Int64Array::from_iter_values((start..start + n).map(|i| i as i64)));
        let vals: ArrayRef = Arc::new(Float64Array::from_iter_values((start..start + n).map(|i| (i as f64).sqrt())));
        let names: ArrayRef =
            Arc::new(StringArray::from_iter_values((start..start + n).map(|i| format!("name-{i:012}"))));
        let batch = RecordBatch::try_from_iter([("id", ids), ("val", vals), ("name", names)])?;
        if w.is_none() {
            w = Some(parquet::arrow::ArrowWriter::try_new(
                file.take().expect("once"),
                batch.schema(),
                Some(props.clone()),
            )?);
        }
        w.as_mut().expect("made").write(&batch)?;
    }
    w.context("no rows")?.close()?;
    std::fs::rename(tmp, path)?;
    Ok(())
}

fn calls(size: u64, seed: u64) -> Vec<Vec<Range<u64>>> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..100)
        .map(|_| {
            (0..10)
                .map(|_| {
                    let len = rng.u64(4096..=256 << 10);
                    let start = rng.u64(0..size - len);
                    start..start + len
                })
                .collect()
        })
        .collect()
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

async fn ranges(
    store: &dyn ObjectStore,
    path: &Path,
    calls: &[Vec<Range<u64>>],
) -> anyhow::Result<(f64, f64, f64, Vec<f64>)> {
    let (c0, t0) = (cpu_s(), Instant::now());
    let (mut bytes, mut lat) = (0u64, Vec::new());
    for c in calls {
        let t = Instant::now();
        let got = store.get_ranges(path, c).await?;
        lat.push(t.elapsed().as_secs_f64() * 1e3);
        bytes += got.iter().map(|b| b.len() as u64).sum::<u64>();
    }
    Ok((t0.elapsed().as_secs_f64(), cpu_s() - c0, bytes as f64, lat))
}

async fn get(store: &dyn ObjectStore, path: &Path) -> anyhow::Result<(f64, f64, u64)> {
    let (c0, t0) = (cpu_s(), Instant::now());
    let mut s = store.get(path).await?.into_stream();
    let mut n = 0u64;
    while let Some(b) = s.next().await {
        n += b?.len() as u64;
    }
    Ok((t0.elapsed().as_secs_f64(), cpu_s() - c0, n))
}

async fn scan(store: Arc<dyn ObjectStore>, path: &Path) -> anyhow::Result<(f64, f64, usize)> {
    use parquet::arrow::async_reader::{ParquetObjectReader, ParquetRecordBatchStreamBuilder};
    let (c0, t0) = (cpu_s(), Instant::now());
    let size = store.head(path).await?.size;
    let reader = ParquetObjectReader::new(store, path.clone()).with_file_size(size);
    let batches: Vec<_> = ParquetRecordBatchStreamBuilder::new(reader).await?.build()?.try_collect().await?;
    let rows = batches.iter().map(|b| b.num_rows()).sum();
    Ok((t0.elapsed().as_secs_f64(), cpu_s() - c0, rows))
}

async fn one(store: &Arc<dyn ObjectStore>, a: &Args, files: &Files, round: u32) -> anyhow::Result<Side> {
    let c = calls(a.size, 100 + u64::from(round));
    drop_cache(&[&files.big]);
    let (secs, cpu, bytes, mut lat) = ranges(store.as_ref(), &Path::from(files.big_name.as_str()), &c).await?;
    let n = 1000.0;
    let (wsecs, wcpu, _, _) = ranges(store.as_ref(), &Path::from(files.big_name.as_str()), &c).await?;
    drop_cache(&[&files.object]);
    let (gsecs, gcpu, gbytes) = get(store.as_ref(), &Path::from(files.object_name.as_str())).await?;
    drop_cache(&[&files.parquet]);
    let (psecs, pcpu, _rows) = scan(Arc::clone(store), &Path::from(files.parquet_name.as_str())).await?;
    Ok(Side {
        ranges_per_s: n / secs,
        gbps: bytes / secs / 1e9,
        cpu_us_per_range: cpu * 1e6 / n,
        call_p50_ms: pct(&mut lat, 0.5),
        call_p99_ms: pct(&mut lat, 0.99),
        warm_ranges_per_s: n / wsecs,
        warm_cpu_us_per_range: wcpu * 1e6 / n,
        get_gbps: gbytes as f64 / gsecs / 1e9,
        get_cpu_s: gcpu,
        parquet_scan_s: psecs,
        parquet_cpu_s: pcpu,
    })
}

struct Files {
    big: PathBuf,
    big_name: String,
    object: PathBuf,
    object_name: String,
    parquet: PathBuf,
    parquet_name: String,
}

fn median(v: Vec<f64>) -> f64 {
    let mut v = v;
    pct(&mut v, 0.5)
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    std::fs::create_dir_all(&a.dir)?;
    let name = |s: &str| s.to_string();
    let files = Files {
        big: a.dir.join(format!("ranges-{}.dat", a.size)),
        big_name: name(&format!("ranges-{}.dat", a.size)),
        object: a.dir.join(format!("object-{}.dat", a.object)),
        object_name: name(&format!("object-{}.dat", a.object)),
        parquet: a.dir.join(format!("scan-{}.parquet", a.rows)),
        parquet_name: name(&format!("scan-{}.parquet", a.rows)),
    };
    ensure_file(&files.big, a.size)?;
    ensure_file(&files.object, a.object)?;
    ensure_parquet(&files.parquet, a.rows)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let opts = StoreOptions { pool_size: a.pool, page: a.page, ..Default::default() };
    let ours: Arc<dyn ObjectStore> = Arc::new(RingpoolStore::new(&a.dir, opts)?);
    let theirs: Arc<dyn ObjectStore> = Arc::new(LocalFileSystem::new_with_prefix(&a.dir)?);
    let mut runs: BTreeMap<&'static str, Vec<Side>> = BTreeMap::new();
    for round in 0..a.rounds {
        let order: [(&'static str, &Arc<dyn ObjectStore>); 2] = if round % 2 == 0 {
            [("ringpool", &ours), ("local", &theirs)]
        } else {
            [("local", &theirs), ("ringpool", &ours)]
        };
        for (who, store) in order {
            let s = rt.block_on(one(store, &a, &files, round))?;
            if !a.json {
                eprintln!(
                    "round {} {who:>8}: {:.0} ranges/s cold ({:.1} us CPU/range), {:.0} warm, get {:.3} GB/s, parquet {:.2} s",
                    round + 1,
                    s.ranges_per_s,
                    s.cpu_us_per_range,
                    s.warm_ranges_per_s,
                    s.get_gbps,
                    s.parquet_scan_s
                );
            }
            runs.entry(who).or_default().push(s);
        }
    }
    let ratio = |f: fn(&Side) -> f64| {
        median(runs["ringpool"].iter().zip(&runs["local"]).map(|(x, y)| f(x) / f(y).max(1e-12)).collect())
    };
    let med = |who: &str| {
        let r = &runs[who];
        let m = |f: fn(&Side) -> f64| median(r.iter().map(f).collect());
        Side {
            ranges_per_s: m(|s| s.ranges_per_s),
            gbps: m(|s| s.gbps),
            cpu_us_per_range: m(|s| s.cpu_us_per_range),
            call_p50_ms: m(|s| s.call_p50_ms),
            call_p99_ms: m(|s| s.call_p99_ms),
            warm_ranges_per_s: m(|s| s.warm_ranges_per_s),
            warm_cpu_us_per_range: m(|s| s.warm_cpu_us_per_range),
            get_gbps: m(|s| s.get_gbps),
            get_cpu_s: m(|s| s.get_cpu_s),
            parquet_scan_s: m(|s| s.parquet_scan_s),
            parquet_cpu_s: m(|s| s.parquet_cpu_s),
        }
    };
    let report = Report {
        file_bytes: a.size,
        ranges_per_round: 1000,
        calls_per_round: 100,
        object_bytes: a.object,
        parquet_bytes: std::fs::metadata(&files.parquet)?.len(),
        rounds: a.rounds,
        sides: BTreeMap::from([("ringpool", med("ringpool")), ("local", med("local"))]),
        ratio_ranges_per_s: ratio(|s| s.ranges_per_s),
        ratio_cpu_per_range: ratio(|s| s.cpu_us_per_range),
        ratio_warm_ranges_per_s: ratio(|s| s.warm_ranges_per_s),
        ratio_get: ratio(|s| s.get_gbps),
        ratio_parquet: median(
            runs["local"].iter().zip(&runs["ringpool"]).map(|(l, r)| l.parquet_scan_s / r.parquet_scan_s).collect(),
        ),
        runs,
        method: METHOD,
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{}", serde_json::to_string_pretty(&report.sides)?);
        println!(
            "ringpool / local: ranges/s cold {:.2}x (CPU per range {:.2}x), warm {:.2}x, get {:.2}x, parquet scan {:.2}x faster",
            report.ratio_ranges_per_s, report.ratio_cpu_per_range, report.ratio_warm_ranges_per_s, report.ratio_get, report.ratio_parquet
        );
    }
    Ok(())
}
