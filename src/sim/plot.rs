//! `simulate --plot FILE.svg`: offered load, demand and each policy's capacity over time, and
//! the day's burst-cap use below, drawn with plotters.

use super::{Outcome, Series};
use plotters::prelude::*;
use std::path::Path;

const COLORS: [RGBColor; 6] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x7f, 0x7f, 0x7f),
];

/// Draws the capped runs (and no autoscaling) of one trace.
pub fn draw(
    path: &Path,
    title: &str,
    outcomes: &[Outcome],
    daily_limit: u32,
) -> Result<(), String> {
    let runs: Vec<&Outcome> = outcomes.iter().filter(|o| o.capped).collect();
    let Some(first) = runs.first() else {
        return Err("nothing to plot".into());
    };
    let s = &first.series;
    let hours = |i: usize| hours_at(i, s.step);
    let x_max = hours(s.offered.len().saturating_sub(1)).max(1e-3);
    let y_max = s
        .offered
        .iter()
        .copied()
        .chain(
            runs.iter()
                .flat_map(|o| o.series.supply.iter().map(|&v| f64::from(v))),
        )
        .chain(s.demand.iter().map(|&v| f64::from(v)))
        .fold(1.0, f64::max)
        * 1.08;
    let e = draw_error(path);
    let root = SVGBackend::new(path, (1280, 860)).into_drawing_area();
    root.fill(&WHITE).map_err(e)?;
    let (upper, lower) = root.split_vertically(600);
    draw_capacity(&upper, path, title, s, &runs, x_max, y_max)?;
    draw_cap_use(&lower, path, &runs, s.step, x_max, daily_limit)?;
    root.present().map_err(e)?;
    Ok(())
}

/// A half of the figure.
type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

/// Hours since the trace's start at point `i` of a series sampled every `step` seconds.
fn hours_at(i: usize, step: i64) -> f64 {
    i as f64 * step as f64 / 3600.0
}

/// What a failure to draw to `path` says.
fn draw_error(path: &Path) -> impl Fn(DrawingAreaErrorKind<std::io::Error>) -> String + Copy + '_ {
    move |e: DrawingAreaErrorKind<std::io::Error>| format!("cannot draw {}: {e}", path.display())
}

/// The upper chart: offered load and demand (from `s`, the first run's series) and each run's
/// capacity.
fn draw_capacity(
    upper: &Area<'_>,
    path: &Path,
    title: &str,
    s: &Series,
    runs: &[&Outcome],
    x_max: f64,
    y_max: f64,
) -> Result<(), String> {
    let hours = |i: usize| hours_at(i, s.step);
    let e = draw_error(path);
    let mut chart = ChartBuilder::on(upper)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..x_max, 0f64..y_max)
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc("hours since the trace's start")
        .y_desc("hosts (load in host-equivalents)")
        .draw()
        .map_err(e)?;
    chart
        .draw_series(LineSeries::new(
            s.offered.iter().enumerate().map(|(i, &v)| (hours(i), v)),
            BLACK.mix(0.35),
        ))
        .map_err(e)?
        .label("offered load")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.mix(0.35)));
    chart
        .draw_series(LineSeries::new(
            s.demand
                .iter()
                .enumerate()
                .map(|(i, &v)| (hours(i), f64::from(v))),
            BLACK.stroke_width(2),
        ))
        .map_err(e)?
        .label("demand (hosts)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.stroke_width(2)));
    for (k, o) in runs.iter().enumerate() {
        let c = COLORS[k % COLORS.len()];
        chart
            .draw_series(LineSeries::new(
                o.series
                    .supply
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| (hours(i), f64::from(v))),
                c.stroke_width(2),
            ))
            .map_err(e)?
            .label(format!("capacity: {}", o.label()))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(e)?;
    Ok(())
}

/// The lower chart: the daily cap and each run's use of it (no autoscaling uses none), on the
/// hours of a series sampled every `step` seconds.
fn draw_cap_use(
    lower: &Area<'_>,
    path: &Path,
    runs: &[&Outcome],
    step: i64,
    x_max: f64,
    daily_limit: u32,
) -> Result<(), String> {
    let hours = |i: usize| hours_at(i, step);
    let e = draw_error(path);
    let cap_max = f64::from(daily_limit.max(1)) + 1.0;
    let mut cap = ChartBuilder::on(lower)
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..x_max, 0f64..cap_max)
        .map_err(e)?;
    cap.configure_mesh()
        .x_desc("hours since the trace's start")
        .y_desc("burst instances today")
        .draw()
        .map_err(e)?;
    cap.draw_series(LineSeries::new(
        [
            (0.0, f64::from(daily_limit)),
            (x_max, f64::from(daily_limit)),
        ],
        RED.mix(0.6),
    ))
    .map_err(e)?
    .label(format!("daily cap ({daily_limit})"))
    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED.mix(0.6)));
    for (k, o) in runs
        .iter()
        .enumerate()
        .filter(|(_, o)| o.policy != super::Kind::None)
    {
        let c = COLORS[k % COLORS.len()];
        cap.draw_series(LineSeries::new(
            o.series
                .cap_used
                .iter()
                .enumerate()
                .map(|(i, &v)| (hours(i), f64::from(v))),
            c.stroke_width(2),
        ))
        .map_err(e)?
        .label(format!("cap used: {}", o.label()))
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    cap.configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(e)?;
    Ok(())
}
