//! `fleet --month ... --plot FILE.svg`: units used per site and local day as a heat map, drawn
//! with plotters (as `simulate --plot`). A row per site, a column per day; a day at the cap is
//! dark red and its site's name is red, so the sites that keep hitting their cap stand out.

use super::fleet::SiteMonth;
use crate::usage::{heat, Heat};
use jiff::civil::Date;
use plotters::prelude::*;
use std::path::Path;

/// No unit used that day.
pub const NONE: RGBColor = RGBColor(0xee, 0xee, 0xee);
/// The cap reached that day.
pub const AT_CAP: RGBColor = RGBColor(0xb2, 0x18, 0x2b);
/// Some units used: from LOW (few of the limit) to HIGH (nearly all).
pub const LOW: RGBColor = RGBColor(0xfd, 0xd4, 0x9e);
pub const HIGH: RGBColor = RGBColor(0xf1, 0x69, 0x13);

const LEFT: i32 = 260;
const TOP: i32 = 70;
const CELL_W: i32 = 26;
const CELL_H: i32 = 22;
const GAP: i32 = 2;

/// A cell's colour.
pub fn color(h: Heat) -> RGBColor {
    match h {
        Heat::None => NONE,
        Heat::AtCap => AT_CAP,
        Heat::Part(f) => {
            let f = f.clamp(0.0, 1.0);
            let mix =
                |a: u8, b: u8| (f64::from(a) + (f64::from(b) - f64::from(a)) * f).round() as u8;
            RGBColor(mix(LOW.0, HIGH.0), mix(LOW.1, HIGH.1), mix(LOW.2, HIGH.2))
        }
    }
}

/// Draws `months` (the month starting on `first`) to `path`.
pub fn draw(path: &Path, months: &[SiteMonth], first: Date) -> Result<(), String> {
    let days = i32::from(first.days_in_month());
    let rows = i32::try_from(months.len()).unwrap_or(i32::MAX).max(1);
    let width = u32::try_from(LEFT + days * CELL_W + 40).unwrap_or(1200);
    let height = u32::try_from(TOP + rows * CELL_H + 80).unwrap_or(800);
    let e =
        |e: DrawingAreaErrorKind<std::io::Error>| format!("cannot draw {}: {e}", path.display());
    let root = SVGBackend::new(path, (width, height)).into_drawing_area();
    root.fill(&WHITE).map_err(e)?;
    let font = |size: i32, c: RGBColor| ("sans-serif", size).into_font().color(&c);
    root.draw(&Text::new(
        format!(
            "burst units used per site and local day, {} (dark red: the day's cap reached)",
            first.strftime("%Y-%m")
        ),
        (12, 12),
        font(18, BLACK),
    ))
    .map_err(e)?;
    for d in 1..=days {
        root.draw(&Text::new(
            d.to_string(),
            (LEFT + (d - 1) * CELL_W + 4, TOP - 20),
            font(12, BLACK),
        ))
        .map_err(e)?;
    }
    for (r, m) in months.iter().enumerate() {
        let y = TOP + i32::try_from(r).unwrap_or(0) * CELL_H;
        let u = &m.usage;
        let (label, label_color) = if u.cap_days > 0 {
            (format!("{} ({} day(s) at cap)", m.site, u.cap_days), AT_CAP)
        } else {
            (m.site.clone(), BLACK)
        };
        root.draw(&Text::new(label, (12, y + 4), font(14, label_color)))
            .map_err(e)?;
        for day in &u.days {
            let Some(date) = day.day else { continue };
            let x = LEFT + (i32::from(date.day()) - 1) * CELL_W;
            root.draw(&Rectangle::new(
                [(x, y), (x + CELL_W - GAP, y + CELL_H - GAP)],
                color(heat(day)).filled(),
            ))
            .map_err(e)?;
        }
    }
    // The legend.
    let ly = TOP + rows * CELL_H + 24;
    for (i, (c, what)) in [
        (NONE, "no unit"),
        (LOW, "a few units"),
        (HIGH, "nearly all"),
        (AT_CAP, "cap reached"),
    ]
    .into_iter()
    .enumerate()
    {
        let x = LEFT + i32::try_from(i).unwrap_or(0) * 150;
        root.draw(&Rectangle::new([(x, ly), (x + 16, ly + 16)], c.filled()))
            .map_err(e)?;
        root.draw(&Text::new(what, (x + 22, ly + 2), font(13, BLACK)))
            .map_err(e)?;
    }
    root.present().map_err(e)?;
    Ok(())
}
