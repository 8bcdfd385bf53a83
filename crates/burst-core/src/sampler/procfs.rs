//! Pure parsers for the `/proc` text the sampler reads. No I/O here: each takes the file's text.

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("{file}: {what} (got {got:?})")]
    Malformed {
        file: &'static str,
        what: &'static str,
        got: String,
    },
}

fn malformed(file: &'static str, what: &'static str, got: &str) -> ParseError {
    let mut got = got.trim().to_string();
    if got.len() > 80 {
        let cut = (0..=80)
            .rev()
            .find(|&i| got.is_char_boundary(i))
            .unwrap_or(0);
        got.truncate(cut);
        got.push('…');
    }
    ParseError::Malformed { file, what, got }
}

/// `/proc/loadavg`: `273.91 166.21 115.99 400/704 31337`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LoadAvg {
    pub one: f64,
    pub five: f64,
    pub fifteen: f64,
    /// Tasks runnable right now (the run queue the seed case saw at 400).
    pub runnable: u32,
    pub total: u32,
}

pub fn parse_loadavg(text: &str) -> Result<LoadAvg, ParseError> {
    const F: &str = "/proc/loadavg";
    let mut it = text.split_ascii_whitespace();
    let mut load = || -> Result<f64, ParseError> {
        it.next()
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|v| v.is_finite() && *v >= 0.0)
            .ok_or_else(|| malformed(F, "expected three non-negative load averages", text))
    };
    let (one, five, fifteen) = (load()?, load()?, load()?);
    let tasks = text
        .split_ascii_whitespace()
        .nth(3)
        .ok_or_else(|| malformed(F, "expected runnable/total tasks", text))?;
    let (r, t) = tasks
        .split_once('/')
        .ok_or_else(|| malformed(F, "expected runnable/total tasks", text))?;
    let runnable = r
        .parse()
        .map_err(|_| malformed(F, "runnable task count is not a number", text))?;
    let total = t
        .parse()
        .map_err(|_| malformed(F, "total task count is not a number", text))?;
    Ok(LoadAvg {
        one,
        five,
        fifteen,
        runnable,
        total,
    })
}

/// A pidfile: one positive pid, surrounding white space allowed.
pub fn parse_pidfile(text: &str) -> Result<u32, ParseError> {
    text.trim()
        .parse::<u32>()
        .ok()
        .filter(|&p| p > 0)
        .ok_or_else(|| malformed("pidfile", "expected one positive process id", text))
}

/// `/proc/PID/task/TID/children`: space-separated child pids, trailing space, empty when none.
/// Returns the count only: that is all the sampler needs, and it avoids allocating.
pub fn count_children(text: &str) -> Result<u32, ParseError> {
    let mut n = 0u32;
    for tok in text.split_ascii_whitespace() {
        if tok.is_empty() || !tok.bytes().all(|b| b.is_ascii_digit()) {
            return Err(malformed(
                "children",
                "expected space-separated process ids",
                text,
            ));
        }
        n += 1;
    }
    Ok(n)
}

/// `/proc/PID/comm`: the process name (at most 15 bytes) and a newline.
pub fn parse_comm(text: &str) -> &str {
    text.strip_suffix('\n').unwrap_or(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loadavg_real_samples() {
        // Captured on an idle Debian host.
        let l = parse_loadavg("0.52 0.58 0.59 1/183 12345\n").unwrap();
        assert_eq!(
            (l.one, l.five, l.fifteen, l.runnable, l.total),
            (0.52, 0.58, 0.59, 1, 183)
        );
        // The donation site minutes after the tweet (seed notes): 400 running of 704 tasks.
        let l = parse_loadavg("273.91 166.21 115.99 400/704 31337\n").unwrap();
        assert_eq!(l.one, 273.91);
        assert_eq!((l.runnable, l.total), (400, 704));
    }

    #[test]
    fn loadavg_garbage() {
        for bad in [
            "",
            "\n",
            "abc",
            "1.0 2.0",
            "1.0 2.0 3.0",
            "1 2 3 4",
            "1 2 3 x/5 9",
            "-1 2 3 1/2 3",
            "NaN 1 1 1/1 1",
            "1 2 3 1/ 4",
        ] {
            let e = parse_loadavg(bad).unwrap_err();
            assert!(e.to_string().starts_with("/proc/loadavg: "), "{bad:?}: {e}");
        }
    }

    #[test]
    fn pidfile() {
        assert_eq!(parse_pidfile("1234\n").unwrap(), 1234);
        assert_eq!(parse_pidfile("  77  ").unwrap(), 77);
        for bad in ["", "0", "-5", "12 13", "apache", "99999999999"] {
            assert!(parse_pidfile(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn children_lists() {
        // Captured from an Apache prefork parent with five workers.
        assert_eq!(count_children("2211 2212 2213 2214 2215 ").unwrap(), 5);
        assert_eq!(count_children("").unwrap(), 0);
        assert_eq!(count_children("42").unwrap(), 1);
        assert!(count_children("12 x3 ").is_err());
        assert!(count_children("12 -3").is_err());
    }

    #[test]
    fn comm_strips_newline() {
        assert_eq!(parse_comm("apache2\n"), "apache2");
        assert_eq!(parse_comm("httpd"), "httpd");
    }

    #[test]
    fn error_text_is_bounded() {
        let long = "x".repeat(500);
        let e = parse_loadavg(&long).unwrap_err().to_string();
        assert!(e.len() < 200, "{e}");
    }
}
