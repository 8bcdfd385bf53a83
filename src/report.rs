//! Human-readable renderings for the CLI (`sample`, later `status`).

use crate::sampler::{CountMethod, HostSample};
use std::fmt::Write;

/// Bytes as the largest binary unit that keeps a whole number in front (`1.5 GiB`).
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn ratio(r: Option<f64>) -> String {
    r.map_or_else(|| "missing".into(), |v| format!("{v:.2}"))
}

/// `sample --every`'s column heads, as `vmstat 1` prints them: one line per sample follows
/// ([`sample_row`]); a part that could not be read is `-`.
pub fn sample_header() -> String {
    format!(
        "{:<8} {:>6} {:>6} {:>4} {:>6} {:>5} {:>5} {:>5} {:>5} {:>9} {:>5}",
        "time",
        "load1",
        "ld/cpu",
        "run",
        "httpd",
        "busy",
        "idle",
        "busy%",
        "mem%",
        "swapMiB",
        "disk%"
    )
}

/// One sample on one line under [`sample_header`]: the time (UTC), the 1-minute load, per CPU,
/// runnable tasks, Apache's worker processes, mod_status busy and idle, the busy ratio and the
/// memory used ratio in percent, swap used in MiB, and the fullest disk's used percent; then `!` and
/// what could not be sampled, if anything.
pub fn sample_row(s: &HostSample) -> String {
    let dash = || "-".to_string();
    let num = |v: Option<u32>| v.map_or_else(dash, |v| v.to_string());
    let pct = |v: Option<f64>| v.map_or_else(dash, |v| format!("{:.0}", v * 100.0));
    let a = &s.apache;
    let disk = s
        .disks
        .iter()
        .filter_map(|d| d.used_percent)
        .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
    let mut line = format!(
        "{:<8} {:>6} {:>6} {:>4} {:>6} {:>5} {:>5} {:>5} {:>5} {:>9} {:>5}",
        s.timestamp.strftime("%H:%M:%S"),
        s.load.map_or_else(dash, |l| format!("{:.2}", l.one)),
        s.load_per_cpu().map_or_else(dash, |v| format!("{v:.2}")),
        num(s.load.map(|l| l.runnable_tasks)),
        num(a.workers),
        num(a.busy_workers),
        num(a.idle_workers),
        pct(s.apache_busy_ratio()),
        pct(s.memory_used_ratio()),
        s.memory.map_or_else(dash, |m| {
            format!("{:.0}", m.swap_used_bytes as f64 / (1024.0 * 1024.0))
        }),
        disk.map_or_else(dash, |d| format!("{d:.0}")),
    );
    if !s.problems.is_empty() {
        line.push_str(&format!(
            "  ! {}",
            crate::text::printable(&s.problems.join("; "))
        ));
    }
    line
}

/// The `burst-agent sample` text: one line per part, missing parts said so.
pub fn sample_text(s: &HostSample) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "host      {} ({} CPUs)", s.host, s.cpus);
    let _ = writeln!(o, "time      {}", s.timestamp);
    match s.load {
        Some(l) => {
            let _ = writeln!(
                o,
                "load      {:.2} {:.2} {:.2}  ({}/{} tasks runnable; {} per CPU)",
                l.one,
                l.five,
                l.fifteen,
                l.runnable_tasks,
                l.total_tasks,
                ratio(s.load_per_cpu())
            );
        }
        None => o.push_str("load      missing\n"),
    }
    let a = &s.apache;
    let method = match a.method {
        Some(CountMethod::Pidfile) => "children of the pidfile's parent",
        Some(CountMethod::ProcessNames) => "by process name",
        None => "not counted",
    };
    let workers = a.workers.map_or_else(|| "?".into(), |w| w.to_string());
    let _ = write!(
        o,
        "apache    {workers} worker processes ({method}), max {}",
        a.max_workers
    );
    if let (Some(b), Some(i)) = (a.busy_workers, a.idle_workers) {
        let _ = write!(o, "; mod_status {b} busy / {i} idle");
    }
    let _ = writeln!(o, "; busy ratio {}", ratio(s.apache_busy_ratio()));
    match s.memory {
        Some(m) => {
            let _ = writeln!(
                o,
                "memory    {} available of {} (used ratio {})",
                bytes(m.available_bytes),
                bytes(m.total_bytes),
                ratio(s.memory_used_ratio())
            );
            let _ = writeln!(
                o,
                "swap      {} used of {}",
                bytes(m.swap_used_bytes),
                bytes(m.swap_total_bytes)
            );
        }
        None => o.push_str("memory    missing\n"),
    }
    for d in &s.disks {
        let used = d
            .used_percent
            .map_or_else(|| "missing".into(), |p| format!("{p:.1}% used"));
        let _ = writeln!(o, "disk      {} {used}", d.path.display());
    }
    for p in &s.problems {
        let _ = writeln!(o, "problem   {p}");
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_units() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(35 * 1024 * 1024 * 1024), "35.0 GiB");
    }
}
