//! Shared CLI helpers: progress bars, statistics, Ctrl-C restore.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

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

/// Restores reserved huge pages and exits on Ctrl-C / SIGTERM.
pub fn restore_on_signal() {
    let _ = ctrlc::set_handler(|| {
        ringpool::hugepages::restore_all();
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
