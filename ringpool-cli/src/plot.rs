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

/// One point of an I/O chart: (series name, iodepth, IOPS).
pub type IoPoint = (String, f64, f64);

/// IOPS against iodepth (log2 x, log y), one line per series.
pub fn io_chart(path: &Path, title: &str, points: &[IoPoint]) -> anyhow::Result<()> {
    let mut names: Vec<&str> = points.iter().map(|p| p.0.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let xmax = points.iter().map(|p| p.1).fold(1.0, f64::max);
    let (ymin, ymax) =
        (points.iter().map(|p| p.2).fold(f64::MAX, f64::min), points.iter().map(|p| p.2).fold(0.0, f64::max));
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(80)
        .build_cartesian_2d((0.8..xmax * 1.25).log_scale(), (ymin * 0.7..ymax * 1.4).log_scale())?;
    chart.configure_mesh().x_desc("iodepth").y_desc("IOPS").draw()?;
    let palette = [RED, BLUE, MAGENTA, CYAN, GREEN, BLACK];
    for (i, name) in names.iter().enumerate() {
        let color = palette[i % palette.len()];
        let mut pts: Vec<(f64, f64)> = points.iter().filter(|p| p.0 == *name).map(|p| (p.1, p.2)).collect();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        let dashed = name.contains("fio");
        let style = if dashed { color.stroke_width(1) } else { color.stroke_width(3) };
        chart.draw_series(LineSeries::new(pts.clone(), style))?.label(name.to_string()).legend(move |(x, y)| {
            PathElement::new(
                vec![(x, y), (x + 18, y)],
                if dashed { color.stroke_width(1) } else { color.stroke_width(3) },
            )
        });
        chart.draw_series(pts.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()?;
    root.present()?;
    Ok(())
}
