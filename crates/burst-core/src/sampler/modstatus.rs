//! Apache mod_status, machine-readable form (`/server-status?auto`): the pure parser (the
//! agent's sampler fetches it over HTTP).

use serde::{Deserialize, Serialize};
use thiserror::Error;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ModStatus {
    pub busy_workers: u32,
    pub idle_workers: u32,
    /// Scoreboard slots (ServerLimit × ThreadsPerChild): an upper bound on workers.
    pub scoreboard_slots: Option<u32>,
    /// Requests per second since restart (ExtendedStatus On only).
    pub req_per_sec: Option<f64>,
    /// Requests served since restart (ExtendedStatus On only): a counter, so a rate over any
    /// two samples.
    pub total_accesses: Option<u64>,
    pub mpm: Option<String>,
}

#[derive(Debug, Error)]
pub enum ModStatusError {
    #[error("mod_status at {url}: {reason}")]
    Fetch { url: String, reason: String },
    #[error(
        "mod_status at {url}: reply has no {field} line; is it the machine-readable form \
         (\"?auto\") and is mod_status enabled? (reply starts {start:?})"
    )]
    Missing {
        url: String,
        field: &'static str,
        start: String,
    },
    #[error("mod_status at {url}: {field} is not a number (got {got:?})")]
    Bad {
        url: String,
        field: &'static str,
        got: String,
    },
}

/// Parses the `?auto` text. `url` only names the source in errors.
pub fn parse(text: &str, url: &str) -> Result<ModStatus, ModStatusError> {
    let mut busy = None;
    let mut idle = None;
    let mut out = ModStatus::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        let count = |field: &'static str| {
            value.parse::<u32>().map_err(|_| ModStatusError::Bad {
                url: url.to_string(),
                field,
                got: value.chars().take(40).collect(),
            })
        };
        match key.trim() {
            "BusyWorkers" => busy = Some(count("BusyWorkers")?),
            "IdleWorkers" => idle = Some(count("IdleWorkers")?),
            "Scoreboard" => out.scoreboard_slots = u32::try_from(value.len()).ok(),
            // Apache writes ".0810373" for 0.08; Rust parses that form.
            "ReqPerSec" => out.req_per_sec = value.parse::<f64>().ok().filter(|v| v.is_finite()),
            "ServerMPM" => out.mpm = Some(value.to_string()),
            "Total Accesses" => out.total_accesses = value.parse::<u64>().ok(),
            _ => {}
        }
    }
    let missing = |field| ModStatusError::Missing {
        url: url.to_string(),
        field,
        start: text.chars().take(60).collect(),
    };
    out.busy_workers = busy.ok_or_else(|| missing("BusyWorkers"))?;
    out.idle_workers = idle.ok_or_else(|| missing("IdleWorkers"))?;
    Ok(out)
}

/// The URL with `?auto` asked for, whatever the operator wrote.
pub fn auto_url(url: &str) -> String {
    if url
        .split('?')
        .nth(1)
        .is_some_and(|q| q.split('&').any(|p| p == "auto"))
    {
        url.to_string()
    } else if url.contains('?') {
        format!("{url}&auto")
    } else {
        format!("{url}?auto")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captured from Debian's apache2 2.4.71 (prefork, ExtendedStatus On, 5 servers, 20 requests
    /// served) on a loopback port with `?auto`.
    const DEBIAN_PREFORK: &str = "127.0.0.1\nServerVersion: Apache/2.4.71 (Debian)\nServerMPM: prefork\nServer Built: 2026-11-12T08:58:41\nCurrentTime: Wednesday, 25-Nov-2026 08:34:15 UTC\nRestartTime: Wednesday, 25-Nov-2026 08:34:14 UTC\nParentServerConfigGeneration: 1\nParentServerMPMGeneration: 0\nServerUptimeSeconds: 1\nServerUptime: 1 second\nLoad1: 0.05\nLoad5: 0.05\nLoad15: 0.01\nTotal Accesses: 20\nTotal kBytes: 5\nTotal Duration: 8\nCPUUser: 0\nCPUSystem: 0\nCPUChildrenUser: 0\nCPUChildrenSystem: 0\nUptime: 1\nReqPerSec: 20\nBytesPerSec: 5120\nBytesPerReq: 256\nDurationPerReq: .4\nBusyWorkers: 1\nGracefulWorkers: 0\nIdleWorkers: 4\nScoreboard: W____...........................................................................................................................................................................................................................................................\n";

    /// Without ExtendedStatus: fewer lines, same worker counts.
    const PLAIN: &str = "localhost\nServerVersion: Apache/2.4.62 (Debian)\nServerMPM: event\nBusyWorkers: 1\nIdleWorkers: 49\nScoreboard: _________________________________________________W\n";

    #[test]
    fn parses_debian_prefork() {
        let s = parse(DEBIAN_PREFORK, "u").unwrap();
        assert_eq!(s.busy_workers, 1);
        assert_eq!(s.idle_workers, 4);
        assert_eq!(s.scoreboard_slots, Some(256));
        assert_eq!(s.req_per_sec, Some(20.0));
        assert_eq!(s.total_accesses, Some(20));
        assert_eq!(s.mpm.as_deref(), Some("prefork"));
    }

    #[test]
    fn parses_without_extended_status() {
        let s = parse(PLAIN, "u").unwrap();
        assert_eq!(
            (s.busy_workers, s.idle_workers, s.scoreboard_slots),
            (1, 49, Some(50))
        );
        assert_eq!(s.req_per_sec, None);
        assert_eq!(s.total_accesses, None);
    }

    #[test]
    fn html_page_is_named() {
        let e = parse(
            "<!DOCTYPE HTML PUBLIC><html><head><title>Apache Status</title>",
            "http://x/server-status",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("no BusyWorkers line") && e.contains("?auto"),
            "{e}"
        );
    }

    #[test]
    fn garbage_counts_are_errors_not_zero() {
        let e = parse("BusyWorkers: lots\nIdleWorkers: 3\n", "u")
            .unwrap_err()
            .to_string();
        assert!(e.contains("BusyWorkers is not a number"), "{e}");
        assert!(parse("BusyWorkers: -1\nIdleWorkers: 3\n", "u").is_err());
        assert!(parse("", "u").is_err());
        assert!(parse("\u{0}\u{1}binary", "u").is_err());
    }

    #[test]
    fn auto_is_added_once() {
        assert_eq!(
            auto_url("http://h/server-status"),
            "http://h/server-status?auto"
        );
        assert_eq!(
            auto_url("http://h/server-status?auto"),
            "http://h/server-status?auto"
        );
        assert_eq!(
            auto_url("http://h/s?refresh=5"),
            "http://h/s?refresh=5&auto"
        );
    }
}
