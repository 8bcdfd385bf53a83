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

/// The part of the trace to draw, in hours since its start (`None`: from the start, to the end),
/// and the trace's start with the cap's time zone, for an axis in local time with each local
/// midnight (the cap day's reset) marked.
#[derive(Clone, Debug, Default)]
pub struct Window {
    pub from: Option<f64>,
    pub to: Option<f64>,
    pub local: Option<(jiff::Timestamp, jiff::tz::TimeZone)>,
}

impl Window {
    /// The x axis's words and labels: local time when known, else hours since the start.
    fn axis(&self, x_min: f64, x_max: f64) -> (String, impl Fn(&f64) -> String + '_) {
        let desc = match &self.local {
            Some((_, tz)) => format!(
                "local time ({}); dashed: the cap day resets",
                tz.iana_name().unwrap_or("UTC")
            ),
            None => "hours since the trace's start".to_string(),
        };
        let days = x_max - x_min > 24.0;
        let label = move |h: &f64| match &self.local {
            Some((start, tz)) => {
                let at = start.as_second() + (h * 3600.0).round() as i64;
                let at = jiff::Timestamp::from_second(at).unwrap_or(*start);
                at.to_zoned_datetime(tz.clone())
                    .strftime(if days { "%a %H:%M" } else { "%H:%M" })
                    .to_string()
            }
            None => format!("{h:.1}"),
        };
        (desc, label)
    }

    /// Hours since the start of each local midnight from `x_min` to `x_max`.
    fn midnights(&self, x_min: f64, x_max: f64) -> Vec<f64> {
        let Some((start, tz)) = &self.local else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let Ok(mut day) = start.to_zoned_datetime(tz.clone()).start_of_day() else {
            return out;
        };
        // A trace is at most 92 days long (trace.rs).
        for _ in 0..100 {
            let Ok(next) = day.tomorrow().and_then(|d| d.start_of_day()) else {
                break;
            };
            day = next;
            let h = (day.timestamp().as_second() - start.as_second()) as f64 / 3600.0;
            if h > x_max {
                break;
            }
            if h >= x_min {
                out.push(h);
            }
        }
        out
    }
}

/// Draws the capped runs (and no autoscaling) of one trace, within `window`.
pub fn draw(
    path: &Path,
    title: &str,
    outcomes: &[Outcome],
    daily_limit: u32,
    window: Window,
) -> Result<(), String> {
    let runs: Vec<&Outcome> = outcomes.iter().filter(|o| o.capped).collect();
    let Some(first) = runs.first() else {
        return Err("nothing to plot".into());
    };
    let s = &first.series;
    let hours = |i: usize| hours_at(i, s.step);
    let end = hours(s.offered.len().saturating_sub(1)).max(1e-3);
    let x_min = window.from.unwrap_or(0.0).clamp(0.0, end);
    let x_max = window.to.unwrap_or(end).min(end);
    if x_max <= x_min {
        return Err(format!(
            "nothing to draw between {x_min:.2} h and {x_max:.2} h: the trace runs {end:.2} h \
             (--from must come before --to, and before the trace's end)"
        ));
    }
    let x = (x_min, x_max);
    // The highest value drawn sets the scale: a zoomed plot is not squeezed by peaks outside.
    let inside = |i: &usize| (x_min..=x_max).contains(&hours(*i));
    let y_max = s
        .offered
        .iter()
        .enumerate()
        .filter(|(i, _)| inside(i))
        .map(|(_, &v)| v)
        .chain(runs.iter().flat_map(|o| {
            o.series
                .supply
                .iter()
                .enumerate()
                .filter(|(i, _)| inside(i))
                .map(|(_, &v)| f64::from(v))
        }))
        .chain(
            s.demand
                .iter()
                .enumerate()
                .filter(|(i, _)| inside(i))
                .map(|(_, &v)| f64::from(v)),
        )
        .fold(1.0, f64::max)
        * 1.08;
    let e = draw_error(path);
    let root = SVGBackend::new(path, (1280, 860)).into_drawing_area();
    root.fill(&WHITE).map_err(e)?;
    let (upper, lower) = root.split_vertically(600);
    draw_capacity(&upper, path, title, s, &runs, x, y_max, &window)?;
    draw_cap_use(&lower, path, &runs, s.step, x, daily_limit, &window)?;
    root.present().map_err(e)?;
    Ok(())
}

/// A half of the figure.
type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

/// Hours since the trace's start at point `i` of a series sampled every `step` seconds.
fn hours_at(i: usize, step: i64) -> f64 {
    i as f64 * step as f64 / 3600.0
}

/// Whether a point at `h` hours is drawn in a window from `x_min` to `x_max`: inside it, or the
/// one point just past each edge, so a line reaches the edge.
fn visible(h: f64, x_min: f64, x_max: f64, step: i64) -> bool {
    let pad = step as f64 / 3600.0;
    h >= x_min - pad && h <= x_max + pad
}

/// The spans (hours since the start) in which the bridge's level was above 0, from a series
/// sampled every `step` seconds: each from its first point to the point after its last.
fn episodes(levels: &[u8], step: i64) -> Vec<(f64, f64)> {
    let mut out = Vec::new();
    let mut open: Option<usize> = None;
    for (i, &l) in levels.iter().enumerate() {
        match (open, l > 0) {
            (None, true) => open = Some(i),
            (Some(a), false) => {
                out.push((hours_at(a, step), hours_at(i, step)));
                open = None;
            }
            _ => {}
        }
    }
    if let Some(a) = open {
        out.push((hours_at(a, step), hours_at(levels.len(), step)));
    }
    out
}

/// What a failure to draw to `path` says.
fn draw_error(path: &Path) -> impl Fn(DrawingAreaErrorKind<std::io::Error>) -> String + Copy + '_ {
    move |e: DrawingAreaErrorKind<std::io::Error>| format!("cannot draw {}: {e}", path.display())
}

/// The upper chart: offered load and demand (from `s`, the first run's series) and each run's
/// capacity.
#[allow(clippy::too_many_arguments)]
fn draw_capacity(
    upper: &Area<'_>,
    path: &Path,
    title: &str,
    s: &Series,
    runs: &[&Outcome],
    (x_min, x_max): (f64, f64),
    y_max: f64,
    window: &Window,
) -> Result<(), String> {
    let (x_desc, x_label) = window.axis(x_min, x_max);
    let hours = |i: usize| hours_at(i, s.step);
    let shown = |i: &usize| visible(hours(*i), x_min, x_max, s.step);
    let e = draw_error(path);
    let mut chart = ChartBuilder::on(upper)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(x_min..x_max, 0f64..y_max)
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .x_label_formatter(&x_label)
        .y_desc("hosts (load in host-equivalents)")
        .draw()
        .map_err(e)?;
    for h in window.midnights(x_min, x_max) {
        chart
            .draw_series(DashedLineSeries::new(
                [(h, 0.0), (h, y_max)],
                6,
                4,
                RED.mix(0.5).into(),
            ))
            .map_err(e)?;
    }
    // The bridge's episodes, shaded in the colour of the run that degraded.
    for (k, o) in runs.iter().enumerate() {
        let spans = episodes(&o.series.bridge, s.step);
        if spans.is_empty() {
            continue;
        }
        let c = COLORS[k % COLORS.len()];
        chart
            .draw_series(
                spans
                    .into_iter()
                    .filter(|&(a, b)| b >= x_min && a <= x_max)
                    .map(|(a, b)| {
                        Rectangle::new(
                            [(a.max(x_min), 0.0), (b.min(x_max), y_max)],
                            c.mix(0.12).filled(),
                        )
                    }),
            )
            .map_err(e)?
            .label(format!("bridge on: {}", o.label()))
            .legend(move |(x, y)| {
                Rectangle::new([(x, y - 5), (x + 20, y + 5)], c.mix(0.3).filled())
            });
    }
    chart
        .draw_series(LineSeries::new(
            s.offered
                .iter()
                .enumerate()
                .filter(|(i, _)| shown(i))
                .map(|(i, &v)| (hours(i), v)),
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
                .filter(|(i, _)| shown(i))
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
                    .filter(|(i, _)| shown(i))
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
#[allow(clippy::too_many_arguments)]
fn draw_cap_use(
    lower: &Area<'_>,
    path: &Path,
    runs: &[&Outcome],
    step: i64,
    (x_min, x_max): (f64, f64),
    daily_limit: u32,
    window: &Window,
) -> Result<(), String> {
    let (x_desc, x_label) = window.axis(x_min, x_max);
    let hours = |i: usize| hours_at(i, step);
    let shown = |i: &usize| visible(hours(*i), x_min, x_max, step);
    let e = draw_error(path);
    let cap_max = f64::from(daily_limit.max(1)) + 1.0;
    let mut cap = ChartBuilder::on(lower)
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(x_min..x_max, 0f64..cap_max)
        .map_err(e)?;
    cap.configure_mesh()
        .x_desc(x_desc)
        .x_label_formatter(&x_label)
        .y_desc("burst instances today")
        .draw()
        .map_err(e)?;
    for h in window.midnights(x_min, x_max) {
        cap.draw_series(DashedLineSeries::new(
            [(h, 0.0), (h, cap_max)],
            6,
            4,
            RED.mix(0.5).into(),
        ))
        .map_err(e)?;
    }
    cap.draw_series(LineSeries::new(
        [
            (x_min, f64::from(daily_limit)),
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
                .filter(|(i, _)| shown(i))
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

#[cfg(test)]
mod tests {
    use super::{episodes, Window};

    #[test]
    fn episodes_span_from_the_first_degraded_point_to_the_next_full_one() {
        // One point every 15 minutes: on from 0.25 h to 0.75 h, and from 1.25 h to the end.
        assert_eq!(
            episodes(&[0, 1, 2, 0, 0, 1], 900),
            [(0.25, 0.75), (1.25, 1.5)]
        );
        assert!(episodes(&[0, 0], 900).is_empty());
    }

    fn window(start: &str, tz: &str) -> Window {
        Window {
            from: None,
            to: None,
            local: Some((start.parse().unwrap(), jiff::tz::TimeZone::get(tz).unwrap())),
        }
    }

    /// The cap day resets at each local midnight: a trace from noon in Tokyo meets the first 12
    /// hours in, the next 24 after; labels are the local time of day.
    #[test]
    fn the_axis_is_local_time_and_marks_each_local_midnight() {
        let w = window("2026-06-10T03:00:00Z", "Asia/Tokyo");
        assert_eq!(w.midnights(0.0, 40.0), [12.0, 36.0]);
        assert_eq!(w.midnights(13.0, 30.0), Vec::<f64>::new());
        let (desc, label) = w.axis(7.0, 8.5);
        assert!(desc.starts_with("local time (Asia/Tokyo)"), "{desc}");
        assert_eq!(label(&7.2), "19:12");
        // New York springs forward on 2026-03-08: that day is 23 hours long.
        let w = window("2026-03-07T17:00:00Z", "America/New_York");
        assert_eq!(w.midnights(0.0, 40.0), [12.0, 35.0]);
        // Without a start, hours since the start.
        let plain = Window::default();
        let (desc, label) = plain.axis(0.0, 12.0);
        assert_eq!(desc, "hours since the trace's start");
        assert_eq!(label(&7.25), "7.2");
    }
}
