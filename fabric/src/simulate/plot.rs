//! The chart `simulate --plot FILE` draws (PNG): the load, the replicas per pool and the spend
//! over time, one panel each, sharing the time axis. Text is set in the system's sans-serif font
//! (found through fontconfig).

use std::path::Path;

use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use super::engine::Sample;

type Panel<'a> = ChartContext<'a, BitMapBackend<'a>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// Why the chart could not be drawn: plotters' own error (a font, the file), with the chart or
/// panel it happened in.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PlotError(String);

/// One panel: its caption, hours on x up to `end`, `0..top` on y, the mesh drawn.
fn panel<'a>(
    area: &DrawingArea<BitMapBackend<'a>, Shift>,
    caption: &str,
    end: f64,
    top: f64,
) -> Result<Panel<'a>, PlotError> {
    let fail = |e: &dyn std::fmt::Display| PlotError(format!("chart panel {caption}: {e}"));
    let mut chart = ChartBuilder::on(area)
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .caption(caption, ("sans-serif", 18))
        .build_cartesian_2d(0.0..end, 0.0..top)
        .map_err(|e| fail(&e))?;
    chart
        .configure_mesh()
        .x_desc("hours")
        .draw()
        .map_err(|e| fail(&e))?;
    Ok(chart)
}

const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// Draws `timeline` of the endpoint `title` to a PNG at `path`.
pub fn draw(
    path: &Path,
    title: &str,
    pools: &[String],
    timeline: &[Sample],
) -> Result<(), PlotError> {
    let fail = |e: &dyn std::fmt::Display| PlotError(format!("chart {}: {e}", path.display()));
    let hours: Vec<f64> = timeline.iter().map(|s| s.second / 3600.0).collect();
    let end = hours.last().copied().unwrap_or(1.0).max(1e-3);
    let root = BitMapBackend::new(path, (1400, 1000)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let root = root
        .titled(title, ("sans-serif", 26))
        .map_err(|e| fail(&e))?;
    let panels = root.split_evenly((3, 1));

    let top_rate = timeline.iter().map(|s| s.arrival_rate).fold(1.0, f64::max);
    let mut load = panel(&panels[0], "load (requests/s)", end, top_rate * 1.05)?;
    load.draw_series(LineSeries::new(
        hours
            .iter()
            .zip(timeline)
            .map(|(h, s)| (*h, s.arrival_rate)),
        &COLORS[0],
    ))
    .map_err(|e| fail(&e))?;

    let top_replicas = timeline
        .iter()
        .map(|s| s.replicas.iter().sum::<usize>())
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let mut fleet = panel(&panels[1], "replicas by pool", end, top_replicas + 1.0)?;
    for (i, name) in pools.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        fleet
            .draw_series(LineSeries::new(
                hours
                    .iter()
                    .zip(timeline)
                    .map(|(h, s)| (*h, s.replicas.get(i).copied().unwrap_or(0) as f64)),
                color.stroke_width(2),
            ))
            .map_err(|e| fail(&e))?
            .label(name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(3))
            });
    }
    fleet
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .label_font(("sans-serif", 15))
        .draw()
        .map_err(|e| fail(&e))?;

    let top_spend = timeline.iter().map(|s| s.usd_per_hour).fold(0.1, f64::max);
    let mut spend = panel(&panels[2], "spend (USD per hour)", end, top_spend * 1.1)?;
    spend
        .draw_series(LineSeries::new(
            hours
                .iter()
                .zip(timeline)
                .map(|(h, s)| (*h, s.usd_per_hour)),
            COLORS[3].stroke_width(2),
        ))
        .map_err(|e| fail(&e))?;
    root.present().map_err(|e| fail(&e))
}
