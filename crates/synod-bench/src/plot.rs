//! SVG plots of a comparison: throughput side by side, and each workload's latency
//! distribution for both systems.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use plotters::prelude::*;

use crate::compare::Comparison;
use crate::report::Latency;

const SYNOD: RGBColor = RGBColor(0x1f, 0x77, 0xb4);
const ETCD: RGBColor = RGBColor(0xff, 0x7f, 0x0e);

/// Writes every plot into `dir`, returning their file names.
pub fn write_all(comparison: &Comparison, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    if !comparison.rows.is_empty() {
        let name = PathBuf::from("throughput.svg");
        throughput(comparison, &dir.join(&name)).context("plot throughput")?;
        written.push(name);
    }
    for row in &comparison.rows {
        let name = PathBuf::from(format!("latency-{}.svg", row.name));
        latency(&row.name, &row.synod.latency_us, &row.etcd.latency_us, &dir.join(&name))
            .with_context(|| format!("plot the latency of {}", row.name))?;
        written.push(name);
    }
    Ok(written)
}

/// Grouped bars: ops/s of synod and etcd for each workload, with the ratio above.
fn throughput(comparison: &Comparison, path: &Path) -> anyhow::Result<()> {
    let rows = &comparison.rows;
    let top = rows.iter().map(|r| r.synod.throughput.max(r.etcd.throughput)).fold(1.0, f64::max) * 1.15;
    let root = SVGBackend::new(path, (160 * rows.len().max(4) as u32, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("throughput (ops/s): synod (blue) and etcd (orange)", ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..rows.len() as f64, 0f64..top)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(rows.len() * 2 + 1)
        .x_label_formatter(&|x| {
            let i = x.floor() as usize;
            if (x - x.floor() - 0.5).abs() < 0.01 && i < rows.len() {
                rows[i].name.clone()
            } else {
                String::new()
            }
        })
        .y_desc("ops/s")
        .draw()?;
    for (i, row) in rows.iter().enumerate() {
        let x = i as f64;
        chart.draw_series([
            Rectangle::new([(x + 0.1, 0.0), (x + 0.5, row.synod.throughput)], SYNOD.filled()),
            Rectangle::new([(x + 0.5, 0.0), (x + 0.9, row.etcd.throughput)], ETCD.filled()),
        ])?;
        let label = format!("{:.2}×", row.throughput_ratio());
        chart.draw_series([Text::new(
            label,
            (x + 0.3, row.synod.throughput.max(row.etcd.throughput) * 1.05),
            ("sans-serif", 14),
        )])?;
    }
    root.present()?;
    Ok(())
}

/// Latency against percentile, the percentile axis stretched towards the tail
/// (x = -log10(1 - p)), the latency axis logarithmic.
fn latency(name: &str, synod: &Latency, etcd: &Latency, path: &Path) -> anyhow::Result<()> {
    let points = |latency: &Latency| -> Vec<(f64, f64)> {
        latency
            .distribution
            .iter()
            .filter(|(p, _)| *p < 100.0)
            .map(|&(p, us)| (-(1.0 - p / 100.0).log10(), (us.max(1) as f64) / 1000.0))
            .collect()
    };
    let (synod_points, etcd_points) = (points(synod), points(etcd));
    let all = synod_points.iter().chain(&etcd_points);
    let low = all.clone().map(|p| p.1).fold(f64::INFINITY, f64::min).min(1.0) * 0.8;
    let high = all.map(|p| p.1).fold(0.001, f64::max) * 1.25;
    let root = SVGBackend::new(path, (640, 400)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("{name}: latency by percentile"), ("sans-serif", 18))
        .margin(10)
        .margin_right(30)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..4f64, (low..high).log_scale())?;
    chart
        .configure_mesh()
        .x_labels(5)
        .x_label_formatter(&|x| {
            format!("p{:.2}", 100.0 - 100.0 * 10f64.powf(-x))
                .trim_end_matches('0')
                .trim_end_matches('.')
                .to_string()
        })
        .x_desc("percentile")
        .y_desc("ms")
        .draw()?;
    chart
        .draw_series(LineSeries::new(synod_points, SYNOD.stroke_width(2)))?
        .label("synod")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], SYNOD.stroke_width(2)));
    chart
        .draw_series(LineSeries::new(etcd_points, ETCD.stroke_width(2)))?
        .label("etcd")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], ETCD.stroke_width(2)));
    chart.configure_series_labels().border_style(BLACK).background_style(WHITE.mix(0.8)).draw()?;
    root.present()?;
    Ok(())
}
