//! SVG charts: lines on log-log axes.

use std::path::Path;

use plotters::prelude::*;

/// One line of a chart.
#[derive(Debug, Clone)]
pub struct Series {
    /// The legend.
    pub name: String,
    /// (x, y) points, any order.
    pub points: Vec<(f64, f64)>,
    /// A bold line (ringpool's); thin otherwise (peers, fio).
    pub bold: bool,
}

/// A chart of `series` on log-log axes.
pub fn loglog_chart(path: &Path, title: &str, x_desc: &str, y_desc: &str, series: &[Series]) -> anyhow::Result<()> {
    let all = || series.iter().flat_map(|s| s.points.iter().copied());
    let (xmin, xmax) = all().fold((f64::MAX, f64::MIN_POSITIVE), |(lo, hi), (x, _)| (lo.min(x), hi.max(x)));
    let (ymin, ymax) = all().fold((f64::MAX, f64::MIN_POSITIVE), |(lo, hi), (_, y)| (lo.min(y), hi.max(y)));
    if xmin > xmax {
        anyhow::bail!("nothing to chart");
    }
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(80)
        .build_cartesian_2d((xmin * 0.8..xmax * 1.25).log_scale(), (ymin * 0.5..ymax * 2.0).log_scale())?;
    chart.configure_mesh().x_desc(x_desc).y_desc(y_desc).draw()?;
    let palette = [RED, BLUE, MAGENTA, CYAN, GREEN, BLACK, RGBColor(230, 140, 0), RGBColor(120, 60, 160)];
    for (i, s) in series.iter().enumerate() {
        if s.points.is_empty() {
            continue;
        }
        let color = palette[i % palette.len()];
        let width = if s.bold { 3 } else { 1 };
        let mut pts = s.points.clone();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(width)))?
            .label(s.name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(width)));
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
