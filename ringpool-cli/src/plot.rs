//! SVG charts.

use std::path::Path;

use plotters::prelude::*;
use ringpool::PageKind;

use crate::bench::register::SizeResult;

/// Register and clone time (µs, log) against pool size (GiB, log).
pub fn register_chart(path: &Path, kind: PageKind, results: &[SizeResult]) -> anyhow::Result<()> {
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    let xs: Vec<f64> = results.iter().map(|r| gib(r.bytes)).collect();
    let mut ys: Vec<f64> = Vec::new();
    for r in results {
        ys.extend([r.register_us, r.raw_register_us, r.spinup_us_median]);
        ys.extend(r.clone_us_median);
        ys.extend(r.raw_clone_us_median);
    }
    let (xmin, xmax) = (xs.iter().copied().fold(f64::MAX, f64::min), xs.iter().copied().fold(0.0, f64::max));
    let (ymin, ymax) = (ys.iter().copied().fold(f64::MAX, f64::min), ys.iter().copied().fold(0.0, f64::max));
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("Register vs clone, {kind} pages"), ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(70)
        .build_cartesian_2d((xmin * 0.8..xmax * 1.25).log_scale(), (ymin * 0.5..ymax * 2.0).log_scale())?;
    chart.configure_mesh().x_desc("pool size (GiB)").y_desc("time (µs)").draw()?;
    type Pick = fn(&SizeResult) -> Option<f64>;
    let series: [(&str, RGBColor, Pick); 5] = [
        ("register (ringpool)", RED, |r| Some(r.register_us)),
        ("register (bare io-uring)", MAGENTA, |r| Some(r.raw_register_us)),
        ("clone median (ringpool)", BLUE, |r| r.clone_us_median),
        ("clone median (bare io-uring)", CYAN, |r| r.raw_clone_us_median),
        ("new ring + clone (spin-up)", GREEN, |r| Some(r.spinup_us_median)),
    ];
    for (name, color, f) in series {
        let pts: Vec<(f64, f64)> = results.iter().filter_map(|r| f(r).map(|y| (gib(r.bytes), y))).collect();
        if pts.is_empty() {
            continue;
        }
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
        chart.draw_series(pts.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()?;
    root.present()?;
    Ok(())
}
