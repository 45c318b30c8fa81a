//! `bench io-chart`: IOPS against iodepth from `bench io --json` reports.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Args;

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

/// Plots every report's ringpool IOPS and each fio engine's at its iodepth,
/// one line per (device, workers, side).
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
        match v["fio_engines"].as_object() {
            Some(engines) => {
                for (engine, f) in engines {
                    if let Some(iops) = f["iops"].as_f64() {
                        points.push((format!("fio {engine} {label}"), depth, iops));
                    }
                }
            }
            // Reports from before --fio-engines: fio's io_uring only.
            None => {
                if let Some(f) = v["fio"]["iops"].as_f64() {
                    points.push((format!("fio {label}"), depth, f));
                }
            }
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
