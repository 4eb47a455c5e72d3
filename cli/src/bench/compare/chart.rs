//! The PNG charts of one members setting: throughput as bars, Conclave beside etcd per workload
//! and clients; and latency percentiles, a panel per workload with a line per system and
//! clients. Both on log scales, as the rows differ by orders of magnitude. Text is drawn with an
//! embedded DejaVu Sans (see `font/LICENSE`), so no system font library is needed.

use std::path::Path;
use std::sync::Once;

use anyhow::{Result, anyhow};
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

use super::cluster::System;
use super::results::{Figures, PERCENTILES, Row, members_label};

const FONT: &[u8] = include_bytes!("font/DejaVuSans.ttf");
const SANS: &str = "sans-serif";
const CONCLAVE: RGBColor = RGBColor(31, 119, 180);
const ETCD: RGBColor = RGBColor(214, 39, 40);
/// Steps of a category axis per category: its key points must be integers (plotters formats
/// no labels of floating-point axes with chosen key points), the bars and lines need fractions.
const STEPS: i32 = 100;

/// Plotters draws text only with fonts registered first.
fn register() -> Result<()> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| result = register_font(SANS, FontStyle::Normal, FONT).map_err(|_| anyhow!("the embedded font does not load")));
    result
}

fn systems(row: &Row) -> [(System, RGBColor, &Figures); 2] {
    [(System::Conclave, CONCLAVE, &row.conclave), (System::Etcd, ETCD, &row.etcd)]
}

/// Powers of ten around `values` (positive ones), with room above for `headroom`.
fn log_bounds(values: impl Iterator<Item = f64>, headroom: f64) -> (f64, f64) {
    let (min, max) = values.filter(|v| *v > 0.0).fold((f64::MAX, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if max == 0.0 {
        return (1.0, 10.0);
    }
    let lo = 10f64.powf(min.log10().floor());
    (lo, 10f64.powf((max * headroom).log10().ceil()).max(lo * 10.0))
}

/// Grouped horizontal bars of requests/s, the first row on top.
pub fn throughput(path: &Path, members: usize, rows: &[&Row]) -> Result<()> {
    register()?;
    let n = rows.len();
    let (lo, hi) = log_bounds(rows.iter().flat_map(|r| systems(r).map(|(_, _, f)| f.requests_per_second.unwrap_or(0.0))), 4.0);
    let root = BitMapBackend::new(path, (1100, 120 + 34 * n as u32)).into_drawing_area();
    root.fill(&WHITE)?;
    // Row i's band is [n-1-i, n-i) steps: the first row on top, its label at the band's middle.
    let band = |i: usize| (n - 1 - i) as i32 * STEPS;
    let centres = (0..n).map(|i| band(i) + STEPS / 2).collect();
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("Throughput, {}", members_label(members)), (SANS, 22))
        .margin(15)
        // The last decade's label is centred on the right edge: room for its other half.
        .margin_right(40)
        .x_label_area_size(40)
        .y_label_area_size(190)
        .build_cartesian_2d((lo..hi).log_scale(), (0..n as i32 * STEPS).with_key_points(centres))?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_label_formatter(&|y| rows.get(n.saturating_sub(1 + (*y / STEPS) as usize)).map_or_else(String::new, |r| r.label()))
        .x_label_formatter(&|x| format!("{x}"))
        .x_desc("requests/s (log scale)")
        .label_style((SANS, 14))
        .draw()?;
    for (slot, system) in [System::Conclave, System::Etcd].into_iter().enumerate() {
        // Conclave in the upper half of the band, etcd in the lower.
        let (bottom, top) = if slot == 0 { (52, 90) } else { (10, 48) };
        let color = if slot == 0 { CONCLAVE } else { ETCD };
        let bars: Vec<(i32, f64)> = rows
            .iter()
            .enumerate()
            .filter_map(|(i, r)| systems(r)[slot].2.requests_per_second.map(|rps| (band(i), rps)))
            .collect();
        chart
            .draw_series(bars.iter().map(|&(y, rps)| Rectangle::new([(lo, y + bottom), (rps, y + top)], color.filled())))?
            .label(system.to_string())
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 12, y + 6)], color.filled()));
        let style = TextStyle::from((SANS, 12).into_font()).color(&BLACK);
        chart.draw_series(bars.iter().map(|&(y, rps)| Text::new(format!("{rps:.0}"), (rps * 1.05, y + top), style.clone())))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .border_style(BLACK)
        .background_style(WHITE)
        .label_font((SANS, 14))
        .draw()?;
    root.present()?;
    Ok(())
}

/// A panel per workload: latency at each percentile, a line per system and clients (labelled
/// with the clients at its end).
pub fn latency(path: &Path, members: usize, rows: &[&Row]) -> Result<()> {
    register()?;
    let mut workloads: Vec<&str> = Vec::new();
    for row in rows {
        if !workloads.contains(&row.workload.as_str()) {
            workloads.push(&row.workload);
        }
    }
    let columns = workloads.len().clamp(1, 3);
    let lines = workloads.len().div_ceil(columns).max(1);
    let root = BitMapBackend::new(path, (460 * columns as u32, 340 * lines as u32 + 50)).into_drawing_area();
    root.fill(&WHITE)?;
    let body = root.titled(&format!("Latency percentiles, {} (ms, log scale)", members_label(members)), (SANS, 22))?;
    for (panel, workload) in body.split_evenly((lines, columns)).iter().zip(&workloads) {
        let series: Vec<(System, RGBColor, usize, Vec<f64>)> = rows
            .iter()
            .filter(|r| r.workload == *workload)
            .flat_map(|r| systems(r).map(move |(system, color, f)| (system, color, r.clients, f)))
            .filter_map(|(system, color, clients, f)| {
                let points = PERCENTILES.iter().map(|p| f.latency(p)).collect::<Option<Vec<f64>>>()?;
                Some((system, color, clients, points))
            })
            .collect();
        // A decade above the highest line keeps the legend off the lines.
        let (lo, hi) = log_bounds(series.iter().flat_map(|s| s.3.iter().copied()), 10.0);
        let last = (PERCENTILES.len() as i32 - 1) * STEPS;
        let ticks = (0..PERCENTILES.len() as i32).map(|i| i * STEPS).collect();
        let mut chart = ChartBuilder::on(panel)
            .caption(*workload, (SANS, 18))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(60)
            // Room right of the last percentile for the lines' labels.
            .build_cartesian_2d((-STEPS / 5..last + STEPS * 3 / 5).with_key_points(ticks), (lo..hi).log_scale())?;
        chart
            .configure_mesh()
            .x_label_formatter(&|x| PERCENTILES.get((*x / STEPS) as usize).map_or_else(String::new, |p| p.to_string()))
            .y_label_formatter(&|y| format!("{y}"))
            .label_style((SANS, 12))
            .draw()?;
        let mut labelled = Vec::new();
        for (system, color, clients, points) in &series {
            let line = chart.draw_series(LineSeries::new(points.iter().enumerate().map(|(i, &ms)| (i as i32 * STEPS, ms)), color.stroke_width(2)))?;
            if !labelled.contains(system) {
                labelled.push(*system);
                let color = *color;
                line.label(system.to_string()).legend(move |(x, y)| PathElement::new([(x, y), (x + 14, y)], color.stroke_width(2)));
            }
            let style = TextStyle::from((SANS, 12).into_font()).color(color);
            chart.draw_series(std::iter::once(Text::new(format!("×{clients}"), (last + STEPS / 20, points[PERCENTILES.len() - 1]), style)))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .border_style(BLACK)
            .background_style(WHITE)
            .label_font((SANS, 12))
            .draw()?;
    }
    root.present()?;
    Ok(())
}
