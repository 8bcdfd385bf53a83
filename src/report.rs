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
