//! The status snapshot: `STATE_DIR/status.json`, written atomically by the running agent at
//! every tick and once more when it stops; read by `burst-agent status`, which works while the
//! agent runs and after it has stopped.

use crate::aws::OpStats;
use crate::cap::CapStatus;
use crate::fsutil;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

pub const FILE_NAME: &str = "status.json";

pub fn path_in(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE_NAME)
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HostLine {
    pub instance_id: String,
    pub at: Option<Timestamp>,
    pub load_per_cpu: Option<f64>,
    pub apache_busy_ratio: Option<f64>,
    pub memory_used_ratio: Option<f64>,
    pub apache_workers: Option<u32>,
    pub problems: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SlaveLine {
    pub id: String,
    pub phase: String,
    pub private_ip: Option<String>,
    pub launched_at: Timestamp,
    pub in_phase_since: Timestamp,
    /// The newest metrics read back (None: missing or stale).
    pub sample_at: Option<Timestamp>,
    pub load_per_cpu: Option<f64>,
    pub apache_busy_ratio: Option<f64>,
    pub last_sync: Option<Timestamp>,
    pub last_sync_ok: Option<bool>,
    pub failure: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DecisionLine {
    pub at: Timestamp,
    pub action: String,
    /// The decision as the log writes it, with every step and reason.
    pub text: String,
    pub reasons: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub written_at: Timestamp,
    pub pid: u32,
    /// starting | waiting_for_aws | running | stopping | stopped
    pub state: String,
    pub started_at: Timestamp,
    pub group: String,
    pub role: String,
    pub dry_run: bool,
    /// Why the agent runs without AWS (dry run on this host alone), if it does.
    pub aws_off: Option<String>,
    pub host: HostLine,
    pub slaves: Vec<SlaveLine>,
    /// Live instances tagged with this group that are not this agent's (left alone).
    #[serde(default)]
    pub foreign: Vec<String>,
    pub cap: Option<CapStatus>,
    pub last_decision: Option<DecisionLine>,
    pub cooldowns: Vec<String>,
    pub last_errors: Vec<(Timestamp, String)>,
    pub aws_calls: BTreeMap<String, OpStats>,
    pub metrics_queued: usize,
    pub metrics_dropped: u64,
    /// The last event notifications, sent or held back, oldest first.
    #[serde(default)]
    pub events: Vec<crate::events::Record>,
    /// The liveness probe's last round, one per `sampling.probe_urls`.
    #[serde(default)]
    pub probes: Vec<crate::model::ProbeResult>,
    /// The planned burst holding now (prewarm included), and the next one.
    #[serde(default)]
    pub scheduled: Option<crate::schedule::Window>,
    #[serde(default)]
    pub next_window: Option<crate::schedule::Window>,
}

impl Snapshot {
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let mut bytes = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        bytes.push(b'\n');
        fsutil::atomic_write(path, &bytes)
    }

    pub fn read(path: &Path) -> Result<Snapshot, String> {
        let bytes = std::fs::read(path).map_err(|e| {
            format!(
                "{}: {e} (has the agent run with this state_dir?)",
                path.display()
            )
        })?;
        serde_json::from_slice(&bytes).map_err(|e| {
            format!(
                "{}: not a status snapshot (line {} column {}: {e})",
                path.display(),
                e.line(),
                e.column()
            )
        })
    }
}

/// Whether the process that wrote the snapshot is still running (and is a burst-agent).
pub fn process_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .is_ok_and(|c| c.trim_end().starts_with("burst-agent"))
}

fn ratio(v: Option<f64>) -> String {
    v.map_or_else(|| "–".into(), |v| format!("{v:.2}"))
}

fn ago(now: Timestamp, t: Timestamp) -> String {
    let s = (now.as_second() - t.as_second()).max(0) as u64;
    humantime::format_duration(std::time::Duration::from_secs(s)).to_string()
}

/// The human rendering of `burst-agent status`.
pub fn render(s: &Snapshot, alive: bool, now: Timestamp) -> String {
    let mut o = String::new();
    let state = if alive {
        format!("{} (pid {}, up {})", s.state, s.pid, ago(now, s.started_at))
    } else if s.state == "stopped" {
        format!("stopped {} ago", ago(now, s.written_at))
    } else {
        format!(
            "not running (last snapshot {} ago said {:?}: it did not stop cleanly)",
            ago(now, s.written_at),
            s.state
        )
    };
    let _ = writeln!(o, "agent     {state}");
    let _ = writeln!(
        o,
        "group     {} ({}{})",
        s.group,
        s.role,
        if s.dry_run { ", dry run" } else { "" }
    );
    if let Some(why) = &s.aws_off {
        let _ = writeln!(o, "aws       off: {why}");
    }
    let h = &s.host;
    let _ = writeln!(
        o,
        "this host {}: load/CPU {}, Apache busy {}, memory {}{}",
        h.instance_id,
        ratio(h.load_per_cpu),
        ratio(h.apache_busy_ratio),
        ratio(h.memory_used_ratio),
        h.at.map(|t| format!(" ({} ago)", ago(now, t)))
            .unwrap_or_default()
    );
    for p in &h.problems {
        let _ = writeln!(o, "          problem: {p}");
    }
    if let Some(c) = &s.cap {
        let _ = writeln!(o, "burst cap {c}");
    }
    if s.slaves.is_empty() {
        let _ = writeln!(o, "slaves    none");
    } else {
        let _ = writeln!(o, "slaves    {}", s.slaves.len());
        for sl in &s.slaves {
            let sample = match sl.sample_at {
                Some(t) => format!(
                    "load/CPU {}, busy {} ({} ago)",
                    ratio(sl.load_per_cpu),
                    ratio(sl.apache_busy_ratio),
                    ago(now, t)
                ),
                None => "no recent sample".into(),
            };
            let sync = match (sl.last_sync, sl.last_sync_ok) {
                (Some(t), Some(true)) => format!("synced {} ago", ago(now, t)),
                (Some(t), _) => format!("last sync FAILED {} ago", ago(now, t)),
                _ => "not synced yet".into(),
            };
            let _ = writeln!(
                o,
                "  {:<20} {:<12} age {:<10} {} {}; {sample}; {sync}{}",
                sl.id,
                sl.phase,
                ago(now, sl.launched_at),
                sl.private_ip.as_deref().unwrap_or("-"),
                format_args!("(in phase {})", ago(now, sl.in_phase_since)),
                sl.failure
                    .as_ref()
                    .map(|f| format!("; failing: {f}"))
                    .unwrap_or_default()
            );
        }
    }
    if !s.foreign.is_empty() {
        let _ = writeln!(
            o,
            "foreign   {} tagged with this group but not this agent's, left alone: {}",
            s.foreign.len(),
            s.foreign.join(", ")
        );
    }
    match &s.last_decision {
        Some(d) => {
            let _ = writeln!(o, "decision  {} ago: {}", ago(now, d.at), d.text);
        }
        None => {
            let _ = writeln!(o, "decision  none yet");
        }
    }
    for c in &s.cooldowns {
        let _ = writeln!(o, "cooldown  {c}");
    }
    if s.metrics_dropped > 0 || s.metrics_queued > 0 {
        let _ = writeln!(
            o,
            "metrics   {} datapoints queued, {} dropped since start",
            s.metrics_queued, s.metrics_dropped
        );
    }
    if !s.aws_calls.is_empty() {
        let calls: u64 = s.aws_calls.values().map(|c| c.calls).sum();
        let errors: u64 = s.aws_calls.values().map(|c| c.errors).sum();
        let _ = writeln!(o, "aws       {calls} calls, {errors} failed, since start");
    }
    let at = |t: Timestamp| {
        let secs = t.as_second() - now.as_second();
        if secs >= 0 {
            format!(
                "in {}",
                humantime::format_duration(std::time::Duration::from_secs(secs as u64))
            )
        } else {
            format!("{} ago", ago(now, t))
        }
    };
    if let Some(w) = &s.scheduled {
        let _ = writeln!(
            o,
            "schedule  {:?}: at least {} slave(s), opens {}, closes {}",
            w.name,
            w.min_slaves,
            at(w.opens),
            at(w.closes)
        );
    }
    if let Some(w) = &s.next_window {
        let _ = writeln!(
            o,
            "next      {:?}: {} slave(s), prewarm {}, opens {} ({})",
            w.name,
            w.min_slaves,
            at(w.from),
            at(w.opens),
            w.opens
        );
    }
    for p in &s.probes {
        let _ = writeln!(o, "probe     {p} ({} ago)", ago(now, p.at));
    }
    if !s.events.is_empty() {
        let _ = writeln!(o, "events    (newest last)");
        for e in s.events.iter().rev().take(5).rev() {
            let _ = writeln!(
                o,
                "  {} ago: {}{} [{}] {}",
                ago(now, e.at),
                e.kind,
                e.instance_id
                    .as_deref()
                    .map(|i| format!(" {i}"))
                    .unwrap_or_default(),
                match e.outcome {
                    crate::events::Outcome::Sent => "sent",
                    crate::events::Outcome::Deduplicated => "held back: sent within events.window",
                    crate::events::Outcome::RateLimited => "held back: events.max_per_hour",
                    crate::events::Outcome::Disabled => "not sent: events.disabled",
                    crate::events::Outcome::Failed => "NOT DELIVERED, told again after the window",
                },
                e.detail
            );
        }
    }
    if s.last_errors.is_empty() {
        let _ = writeln!(o, "errors    none");
    } else {
        let _ = writeln!(o, "errors    (newest last)");
        for (t, e) in &s.last_errors {
            let _ = writeln!(o, "  {} ago: {e}", ago(now, *t));
        }
    }
    o
}
