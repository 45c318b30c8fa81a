//! Shared CLI helpers: progress bars, statistics, Ctrl-C restore.

use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use ringpool::types::Bytes;
use ringpool::types::{PageKind, PagePolicy};
use ringpool::IoMemory;
use ringpool_testkit::machine::HugePageReservation;

/// A byte progress bar on stderr (hidden when stderr is not a terminal).
pub fn byte_bar(total: u64, msg: &str) -> ProgressBar {
    let pb = ProgressBar::new(total);
    pb.set_style(
        ProgressStyle::with_template("{msg:>10} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.set_message(msg.to_string());
    pb
}

/// Median of a sample (sorted copy); 0 for empty.
pub fn median(v: &[f64]) -> f64 {
    percentile(v, 50.0)
}

/// Percentile (nearest rank) of a sample; 0 for empty.
pub fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

/// Minimum of a sample; 0 for empty.
pub fn min(v: &[f64]) -> f64 {
    v.iter().copied().reduce(f64::min).unwrap_or(0.0)
}

pub fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Resolves `--page` / `--reserve`: with `--reserve`, reserves exactly the
/// hugetlb pages `bytes` needs (2 MiB pages for `auto`) and returns the page
/// policy to map with and the reservation (restored on drop or Ctrl-C).
pub fn reserve_for(
    page: PagePolicy,
    bytes: u64,
    reserve: bool,
) -> anyhow::Result<(PagePolicy, Option<HugePageReservation>)> {
    if !reserve {
        return Ok((page, None));
    }
    let kind = match page {
        PagePolicy::Huge1G => PageKind::Huge1G,
        PagePolicy::Huge2M | PagePolicy::Auto => PageKind::Huge2M,
        other => anyhow::bail!("--reserve needs --page 1g or 2m (or auto, which reserves 2 MiB pages), not {other:?}"),
    };
    restore_on_signal();
    let pages = bytes.div_ceil(kind.bytes());
    let r = HugePageReservation::ensure_available(kind, pages).context("--reserve")?;
    if r.added() > 0 {
        eprintln!(
            "reserved {} {} pages (nr_hugepages {} -> {}); restored at exit",
            r.added(),
            kind,
            r.previous(),
            r.previous() + r.added()
        );
    }
    Ok((if kind == PageKind::Huge1G { PagePolicy::Huge1G } else { PagePolicy::Huge2M }, Some(r)))
}

/// Says which pages the pool got, and whether `auto` fell back.
pub fn describe_pool(mem: &IoMemory, asked: PagePolicy) {
    eprintln!(
        "pool: {} of {} pages in {} segments of {} ({})",
        Bytes(mem.len()),
        mem.page_kind(),
        mem.segments().len(),
        Bytes(mem.segment_size()),
        mem.page_choice()
    );
    if asked == PagePolicy::Auto && !matches!(mem.page_kind(), PageKind::Huge1G | PageKind::Huge2M) {
        eprintln!(
            "note: no hugetlb pages free: fell back to {} pages (use --reserve, or --page 2m/1g with pages reserved)",
            mem.page_kind()
        );
    }
}

/// Prefaults the whole pool with a progress bar; returns milliseconds.
pub fn prefault_with_bar(mem: &IoMemory) -> anyhow::Result<f64> {
    let bar = byte_bar(mem.len(), "prefault");
    let took = mem.prefault(|p| bar.set_position(p.done))?;
    bar.finish_and_clear();
    let ms = took.as_secs_f64() * 1e3;
    eprintln!("prefaulted {} in {:.0} ms", Bytes(mem.len()), ms);
    Ok(ms)
}

/// Restores reserved huge pages and exits on Ctrl-C / SIGTERM.
pub fn restore_on_signal() {
    let _ = ctrlc::set_handler(|| {
        ringpool_testkit::machine::restore_all();
        eprintln!("\ninterrupted: huge page counts restored");
        std::process::exit(130);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(median(&v), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v, 100.0), 100.0);
        assert_eq!(min(&v), 1.0);
        assert_eq!(median(&[]), 0.0);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
    }
}
