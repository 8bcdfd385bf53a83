//! Load traces: CSV `time,offered_load`.
//!
//! - `time`: seconds since the trace's start (`0`, `60`, `90.5`) or RFC 3339 (`2026-05-21T10:00:00+09:00`);
//!   one form per file, strictly increasing.
//! - `offered_load`: host-equivalents (1.0 = one web host's full capacity), or requests/s when
//!   `simulate --host-capacity R` says one host serves R requests/s at saturation.
//!
//! A header line `time,offered_load` and `#` comments are allowed, and a UTF-8 byte-order mark
//! (spreadsheets write one). Between points the load is interpolated linearly; after the last
//! point the trace ends. A load above [`MAX_LOAD`] or a trace longer than [`MAX_DAYS`] days is
//! refused with its line: the simulation keeps a second-by-second model of the fleet.

/// The largest offered load a row may give (host-equivalents, or requests/s).
pub const MAX_LOAD: f64 = 1e9;
/// The longest trace simulated, in days.
pub const MAX_DAYS: f64 = 92.0;
/// The largest trace file read, in bytes.
pub const MAX_BYTES: u64 = 256 << 20;

use jiff::Timestamp;

#[derive(Clone, Debug, PartialEq)]
pub struct Trace {
    /// Absolute start: the first RFC 3339 time, or the `start` given for second offsets.
    pub start: Timestamp,
    /// (seconds since start, offered load), increasing in time.
    pub points: Vec<(f64, f64)>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{origin}:{line}: {message}")]
pub struct TraceError {
    pub origin: String,
    pub line: usize,
    pub message: String,
}

impl Trace {
    pub fn parse(
        text: &str,
        origin: &str,
        start_for_offsets: Timestamp,
    ) -> Result<Trace, TraceError> {
        let err = |line: usize, message: String| TraceError {
            origin: origin.to_string(),
            line,
            message,
        };
        let mut points: Vec<(f64, f64)> = Vec::new();
        let mut absolute: Option<bool> = None;
        let mut start = start_for_offsets;
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        for (i, raw) in text.lines().enumerate() {
            let n = i + 1;
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if points.is_empty()
                && absolute.is_none()
                && line.eq_ignore_ascii_case("time,offered_load")
            {
                continue;
            }
            let mut cols = line.split(',').map(str::trim);
            let (Some(t), Some(v), None) = (cols.next(), cols.next(), cols.next()) else {
                return Err(err(
                    n,
                    format!("expected two columns `time,offered_load`, got {line:?}"),
                ));
            };
            let load: f64 = v
                .parse()
                .map_err(|_| err(n, format!("offered_load {v:?} is not a number")))?;
            if !load.is_finite() || load < 0.0 {
                return Err(err(
                    n,
                    format!("offered_load must be a finite number >= 0 (got {v})"),
                ));
            }
            if load > MAX_LOAD {
                return Err(err(
                    n,
                    format!("offered_load {v} is beyond any site (at most {MAX_LOAD:e})"),
                ));
            }
            let is_abs = t.contains('T') || t.contains('-') && t.len() > 10;
            match absolute {
                None => absolute = Some(is_abs),
                Some(a) if a != is_abs => {
                    return Err(err(
                        n,
                        "mixes RFC 3339 times and second offsets; use one form".into(),
                    ))
                }
                _ => {}
            }
            let secs = if is_abs {
                let ts: Timestamp = t.parse().map_err(|e| {
                    err(n, format!("time {t:?} is not RFC 3339 with an offset: {e}"))
                })?;
                if points.is_empty() {
                    start = ts;
                }
                (ts.as_second() - start.as_second()) as f64
                    + f64::from(ts.subsec_nanosecond()) * 1e-9
            } else {
                let s: f64 = t
                    .parse()
                    .map_err(|_| err(n, format!("time {t:?} is neither seconds nor RFC 3339")))?;
                if !s.is_finite() || s < 0.0 {
                    return Err(err(n, format!("time must be seconds >= 0 (got {t})")));
                }
                s
            };
            if secs > MAX_DAYS * 86400.0 {
                return Err(err(
                    n,
                    format!(
                        "time {t} is {:.0} days after the trace's start; simulate takes at most \
                         {MAX_DAYS} days (split the trace)",
                        secs / 86400.0
                    ),
                ));
            }
            if let Some(&(prev, _)) = points.last() {
                if secs <= prev {
                    return Err(err(n, format!("time {t} is not after the previous row's")));
                }
            }
            points.push((secs, load));
        }
        if points.len() < 2 {
            return Err(err(0, "a trace needs at least two rows".into()));
        }
        Ok(Trace { start, points })
    }

    /// Seconds from start to the last point.
    pub fn duration_secs(&self) -> i64 {
        self.points.last().map_or(0, |p| p.0.floor() as i64)
    }

    /// A cursor for reading the load at increasing times in O(1) amortized.
    pub fn cursor(&self) -> Cursor<'_> {
        Cursor { trace: self, i: 0 }
    }
}

pub struct Cursor<'a> {
    trace: &'a Trace,
    i: usize,
}

impl Cursor<'_> {
    /// Offered load at `t` seconds (linear between points). `t` must not go backwards.
    pub fn at(&mut self, t: f64) -> f64 {
        let p = &self.trace.points;
        while self.i + 1 < p.len() && p[self.i + 1].0 <= t {
            self.i += 1;
        }
        let (t0, v0) = p[self.i];
        match p.get(self.i + 1) {
            Some(&(t1, v1)) if t > t0 => v0 + (v1 - v0) * (t - t0) / (t1 - t0),
            _ => v0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start() -> Timestamp {
        "2026-01-05T00:00:00Z".parse().unwrap()
    }

    #[test]
    fn seconds_and_interpolation() {
        let t = Trace::parse(
            "time,offered_load\n0,1\n# comment\n10,3\n20,3\n",
            "t.csv",
            start(),
        )
        .unwrap();
        let mut c = t.cursor();
        assert_eq!(c.at(0.0), 1.0);
        assert_eq!(c.at(5.0), 2.0);
        assert_eq!(c.at(15.0), 3.0);
        assert_eq!(c.at(99.0), 3.0);
        assert_eq!(t.duration_secs(), 20);
    }

    #[test]
    fn a_byte_order_mark_is_read_past() {
        let t = Trace::parse("\u{feff}time,offered_load\n0,1\n10,2\n", "t.csv", start()).unwrap();
        assert_eq!(t.points, vec![(0.0, 1.0), (10.0, 2.0)]);
    }

    #[test]
    fn rfc3339_sets_the_start() {
        let t = Trace::parse(
            "2026-05-21T10:00:00+09:00,0.5\n2026-05-21T10:01:00+09:00,1.5\n",
            "t.csv",
            start(),
        )
        .unwrap();
        assert_eq!(
            t.start,
            "2026-05-21T01:00:00Z".parse::<Timestamp>().unwrap()
        );
        assert_eq!(t.points[1].0, 60.0);
    }

    #[test]
    fn bad_rows_name_the_line() {
        for (text, says) in [
            ("0,1\n5,x\n", "t.csv:2: offered_load \"x\" is not a number"),
            (
                "0,1\n5,-1\n",
                "t.csv:2: offered_load must be a finite number >= 0",
            ),
            ("0,1\n0,2\n", "t.csv:2: time 0 is not after"),
            (
                "0,1\n2026-05-21T10:00:00+09:00,1\n",
                "t.csv:2: mixes RFC 3339",
            ),
            ("0,1,2\n", "t.csv:1: expected two columns"),
            ("0,1\n", "t.csv:0: a trace needs at least two rows"),
            (
                "0,1\nyesterday,2\n",
                "t.csv:2: time \"yesterday\" is neither",
            ),
            ("0,NaN\n1,1\n", "t.csv:1: offered_load must be a finite"),
            (
                "0,1\n60,1e308\n",
                "t.csv:2: offered_load 1e308 is beyond any site",
            ),
            (
                "0,1\n9000000,1\n",
                "t.csv:2: time 9000000 is 104 days after the trace's start",
            ),
        ] {
            let e = Trace::parse(text, "t.csv", start())
                .unwrap_err()
                .to_string();
            assert!(e.starts_with(says), "{text:?}: {e}");
        }
    }
}
