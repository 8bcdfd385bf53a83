//! The status snapshot: `STATE_DIR/status.json`, written atomically by the running agent at
//! every tick and once more when it stops; read by `burst-agent status`, which works while the
//! agent runs and after it has stopped.

use crate::aws::OpStats;
use crate::cap::CapStatus;
use crate::fsutil;
use crate::text::printable as p;
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
    /// In service, and no report for `metrics.stale_after` (`slave_silent`).
    #[serde(default)]
    pub silent: bool,
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
    /// Launches are held: content sync keeps failing the same way (why, what to do).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_broken: Option<String>,
    /// Nothing is synced or launched: the content source is missing or empty (why).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_source_missing: Option<String>,
    /// The site's lease (`ledger.table`): held by this agent, or who holds it while this one
    /// stands by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<String>,
    pub cap: Option<CapStatus>,
    pub last_decision: Option<DecisionLine>,
    /// The cooldowns running when the snapshot was written, in words (as of `written_at`).
    pub cooldowns: Vec<String>,
    /// When each of them ends (`scale-out`, `scale-in`): `status` counts what is left from its
    /// own now, not from the last write. Absent in snapshots from before.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cooldown_ends: Vec<(String, Timestamp)>,
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
    /// The brownout bridge, when it is enabled or a level is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<BridgeLine>,
}

/// The brownout bridge as `status` shows it: the level decided and the one the master serves
/// at, the episode, a level set by hand, the hook's last failure.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BridgeLine {
    pub enabled: bool,
    /// The level the policy decided (0: full service), and the highest.
    pub level: u8,
    pub top: u8,
    /// The level the master serves at (what `hooks.on_bridge` last switched it to).
    pub applied: u8,
    /// A hook run switching it now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switching_to: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub episode_start: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooling_until: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manual: Option<crate::policy::ManualBridge>,
    /// Why it is applied nowhere: a dry run, or no `hooks.on_bridge`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_applied: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hook_failed: Option<(Timestamp, String)>,
}

impl Snapshot {
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        FORMAT.write(&fsutil::RealDisk, path, self)
    }

    pub fn read(path: &Path) -> Result<Snapshot, String> {
        use crate::store::Read;
        match FORMAT.read(&fsutil::RealDisk, path) {
            Read::Found { value, .. } => Ok(value),
            Read::Missing => Err(format!(
                "{}: not there (has the agent run with this state_dir?)",
                path.display()
            )),
            Read::Unreadable(e) => Err(format!("{}: {e}", path.display())),
            Read::Damaged(e) => Err(format!("{}: not a status snapshot ({e})", path.display())),
        }
    }
}

/// `status.json`: version 1 since issue 20; snapshots written before it had no version.
const FORMAT: crate::store::Format = crate::store::Format {
    name: "status.json",
    version: 1,
    oldest: 1,
    unversioned: Some(1),
};

/// Whether the process that wrote the snapshot is still running (and is a burst-agent).
pub fn process_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .is_ok_and(|c| c.trim_end().starts_with("burst-agent"))
}

fn ratio(v: Option<f64>) -> String {
    v.map_or_else(|| "–".into(), |v| format!("{v:.2}"))
}

fn ago(now: Timestamp, t: Timestamp) -> String {
    secs(now.as_second() - t.as_second())
}

fn secs(s: i64) -> String {
    humantime::format_duration(std::time::Duration::from_secs(s.max(0) as u64)).to_string()
}

/// The human rendering of `burst-agent status`. Every string in the snapshot may have come from
/// outside (a hook's stderr relayed from a slave, an API's error, a tag, a probed page), so each
/// is shown with its control characters escaped ([`crate::text::printable`]): nothing in it
/// reaches the terminal of the operator (root, often) as an escape sequence or a line of its own.
pub fn render(s: &Snapshot, alive: bool, now: Timestamp) -> String {
    let mut o = String::new();
    render_agent(&mut o, s, alive, now);
    render_host(&mut o, s, now);
    if let Some(c) = &s.cap {
        let _ = writeln!(o, "burst cap {}", p(&c.to_string()));
    }
    render_slaves(&mut o, s, now);
    if let Some(b) = &s.bridge {
        render_bridge(&mut o, b, now);
    }
    render_site(&mut o, s, now);
    render_schedule(&mut o, s, now);
    for probe in &s.probes {
        let _ = writeln!(
            o,
            "probe     {} ({} ago)",
            p(&probe.to_string()),
            ago(now, probe.at)
        );
    }
    render_events(&mut o, s, now);
    render_errors(&mut o, s, now);
    o
}

/// The agent's lines: its state, its group and role, and why it runs without AWS.
fn render_agent(o: &mut String, s: &Snapshot, alive: bool, now: Timestamp) {
    let state = if alive {
        format!(
            "{} (pid {}, up {})",
            p(&s.state),
            s.pid,
            ago(now, s.started_at)
        )
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
        p(&s.group),
        p(&s.role),
        if s.dry_run { ", dry run" } else { "" }
    );
    if let Some(why) = &s.aws_off {
        let _ = writeln!(o, "aws       off: {}", p(why));
    }
}

/// This host's line and its problems.
fn render_host(o: &mut String, s: &Snapshot, now: Timestamp) {
    let h = &s.host;
    let _ = writeln!(
        o,
        "this host {}: load/CPU {}, Apache busy {}, memory {}{}",
        p(&h.instance_id),
        ratio(h.load_per_cpu),
        ratio(h.apache_busy_ratio),
        ratio(h.memory_used_ratio),
        h.at.map(|t| format!(" ({} ago)", ago(now, t)))
            .unwrap_or_default()
    );
    for problem in &h.problems {
        let _ = writeln!(o, "          problem: {}", p(problem));
    }
}

/// The bridge's line: its level, since when, on the master or not, by hand, cooling down.
fn render_bridge(o: &mut String, b: &BridgeLine, now: Timestamp) {
    let mut line = if b.level == 0 {
        "off (full service)".to_string()
    } else {
        format!("LEVEL {} of {}", b.level, b.top)
    };
    if let (Some(t), true) = (b.since, b.level > 0) {
        let _ = write!(line, " for {}", ago(now, t));
    }
    if let (Some(t), true) = (b.episode_start, b.level > 0) {
        let _ = write!(line, " (episode {})", ago(now, t));
    }
    match (&b.not_applied, b.switching_to) {
        (Some(why), _) => {
            let _ = write!(line, "; not applied: {}", p(why));
        }
        (None, Some(to)) => {
            let _ = write!(
                line,
                "; the master serves at {}, switching to {to}",
                b.applied
            );
        }
        (None, None) if b.applied != b.level => {
            let _ = write!(line, "; the master serves at {}", b.applied);
        }
        _ => {}
    }
    if let Some(m) = &b.manual {
        let left = m.until.as_second() - now.as_second();
        if left > 0 {
            let _ = write!(
                line,
                "; set by hand by {} for {} more (`burst-agent bridge auto` hands it back)",
                p(&m.by),
                secs(left)
            );
        }
    }
    if let Some(until) = b.cooling_until {
        let left = until.as_second() - now.as_second();
        if left > 0 {
            let _ = write!(
                line,
                "; cooling down {} more after an episode ran its maximum",
                secs(left)
            );
        }
    }
    if !b.enabled {
        line.push_str("; bridge.enabled is false");
    }
    let _ = writeln!(o, "bridge    {line}");
    if let Some((at, e)) = &b.hook_failed {
        let _ = writeln!(
            o,
            "          hooks.on_bridge FAILED {} ago: {}",
            ago(now, *at),
            p(e)
        );
    }
}

/// The slaves: their count, then one line each.
fn render_slaves(o: &mut String, s: &Snapshot, now: Timestamp) {
    if s.slaves.is_empty() {
        let _ = writeln!(o, "slaves    none");
    } else {
        let _ = writeln!(o, "slaves    {}", s.slaves.len());
        for sl in &s.slaves {
            render_slave(o, sl, now);
        }
    }
}

/// One slave's line: phase, age, address, its newest sample, its last sync, its failure.
fn render_slave(o: &mut String, sl: &SlaveLine, now: Timestamp) {
    let sample = match sl.sample_at {
        Some(t) => format!(
            "load/CPU {}, busy {} ({} ago)",
            ratio(sl.load_per_cpu),
            ratio(sl.apache_busy_ratio),
            ago(now, t)
        ),
        None if sl.silent => "SILENT: no sample for metrics.stale_after (is its \
                              reporter running?)"
            .into(),
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
        p(&sl.id),
        p(&sl.phase),
        ago(now, sl.launched_at),
        p(sl.private_ip.as_deref().unwrap_or("-")),
        format_args!("(in phase {})", ago(now, sl.in_phase_since)),
        sl.failure
            .as_ref()
            .map(|f| format!("; failing: {}", p(f)))
            .unwrap_or_default()
    );
}

/// The site's lines: foreign instances, the lease, held launches, the last decision, the
/// cooldowns, the metrics queue and the AWS calls.
fn render_site(o: &mut String, s: &Snapshot, now: Timestamp) {
    if !s.foreign.is_empty() {
        let _ = writeln!(
            o,
            "foreign   {} tagged with this group but not this agent's, left alone: {}",
            s.foreign.len(),
            p(&s.foreign.join(", "))
        );
    }
    if let Some(lease) = &s.lease {
        let _ = writeln!(o, "lease     {}", p(lease));
    }
    if let Some(why) = &s.content_source_missing {
        let _ = writeln!(o, "launches  HELD: {}", p(why));
    }
    if let Some(why) = &s.sync_broken {
        let _ = writeln!(o, "launches  HELD: {}", p(why));
    }
    match &s.last_decision {
        Some(d) => {
            let _ = writeln!(o, "decision  {} ago: {}", ago(now, d.at), p(&d.text));
        }
        None => {
            let _ = writeln!(o, "decision  none yet");
        }
    }
    if s.cooldown_ends.is_empty() {
        for c in &s.cooldowns {
            let _ = writeln!(o, "cooldown  {}", p(c));
        }
    }
    for (what, until) in &s.cooldown_ends {
        let left = until.as_second() - now.as_second();
        if left > 0 {
            let _ = writeln!(o, "cooldown  {} cooldown: {left} s left", p(what));
        }
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
}

/// `t` from `now`: "in …" when it is still to come, "… ago" when it is past.
fn at(now: Timestamp, t: Timestamp) -> String {
    let secs = t.as_second() - now.as_second();
    if secs >= 0 {
        format!(
            "in {}",
            humantime::format_duration(std::time::Duration::from_secs(secs as u64))
        )
    } else {
        format!("{} ago", ago(now, t))
    }
}

/// The planned burst holding now, and the next one.
fn render_schedule(o: &mut String, s: &Snapshot, now: Timestamp) {
    if let Some(w) = &s.scheduled {
        let _ = writeln!(
            o,
            "schedule  {:?}: at least {} slave(s), opens {}, closes {}",
            w.name,
            w.min_slaves,
            at(now, w.opens),
            at(now, w.closes)
        );
    }
    if let Some(w) = &s.next_window {
        let _ = writeln!(
            o,
            "next      {:?}: {} slave(s), prewarm {}, opens {} ({})",
            w.name,
            w.min_slaves,
            at(now, w.from),
            at(now, w.opens),
            w.opens
        );
    }
}

/// The last five event notifications, oldest first.
fn render_events(o: &mut String, s: &Snapshot, now: Timestamp) {
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
                    .map(|i| format!(" {}", p(i)))
                    .unwrap_or_default(),
                outcome_text(&e.outcome),
                p(&e.detail)
            );
        }
    }
}

/// What became of an event notification, as `status` says it.
fn outcome_text(outcome: &crate::events::Outcome) -> &'static str {
    match outcome {
        crate::events::Outcome::Sent => "sent",
        crate::events::Outcome::Deduplicated => "held back: sent within events.window",
        crate::events::Outcome::RateLimited => "held back: events.max_per_hour",
        crate::events::Outcome::Disabled => "not sent: events.disabled",
        crate::events::Outcome::Failed => "NOT DELIVERED, told again after the window",
    }
}

/// The last errors, oldest first.
fn render_errors(o: &mut String, s: &Snapshot, now: Timestamp) {
    if s.last_errors.is_empty() {
        let _ = writeln!(o, "errors    none");
    } else {
        let _ = writeln!(o, "errors    (newest last)");
        for (t, e) in &s.last_errors {
            let _ = writeln!(o, "  {} ago: {}", ago(now, *t), p(e));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A snapshot whose every outside string carries ESC sequences, a carriage return and a
    /// newline that would fake a line of its own.
    fn hostile() -> Snapshot {
        let t = "2026-01-05T00:00:00Z";
        let bad = "\u{1b}]0;owned\u{7}\u{1b}[2J\rerrors    none\n";
        serde_json::from_value(serde_json::json!({
            "written_at": t, "pid": 1, "state": "running", "started_at": t,
            "group": format!("site{bad}"), "role": "master", "dry_run": false,
            "aws_off": bad,
            "host": { "instance_id": format!("i-1{bad}"), "at": t, "load_per_cpu": null,
                      "apache_busy_ratio": null, "memory_used_ratio": null,
                      "apache_workers": null, "problems": [bad] },
            "slaves": [{ "id": format!("i-2{bad}"), "phase": "syncing",
                         "private_ip": bad, "launched_at": t, "in_phase_since": t,
                         "sample_at": null, "load_per_cpu": null, "apache_busy_ratio": null,
                         "last_sync": t, "last_sync_ok": false,
                         "failure": format!("pre_register: exited with 23; stderr: {bad}") }],
            "foreign": [format!("i-3{bad}")],
            "lease": bad,
            "cap": null,
            "last_decision": { "at": t, "action": "hold", "text": bad, "reasons": [] },
            "cooldowns": [bad],
            "last_errors": [[t, format!("DescribeInstances: {bad}")]],
            "aws_calls": {}, "metrics_queued": 0, "metrics_dropped": 0,
            "events": [{ "at": t, "kind": "sync_failed", "instance_id": format!("i-4{bad}"),
                         "detail": bad, "outcome": "sent" }],
            "probes": [], "scheduled": null, "next_window": null
        }))
        .expect("a snapshot")
    }

    #[test]
    fn nothing_from_outside_reaches_the_terminal_as_a_control_character() {
        let now = "2026-01-05T00:01:00Z".parse().unwrap();
        let out = render(&hostile(), true, now);
        for line in out.lines() {
            assert!(
                !line.chars().any(char::is_control),
                "a control character in {line:?}"
            );
        }
        // The newline in each string did not make lines of their own.
        assert_eq!(
            out.lines().filter(|l| l.starts_with("errors")).count(),
            1,
            "{out}"
        );
        assert!(out.contains("\\x1b]0;owned\\x07\\x1b[2J\\x0derrors    none\\x0a"));
        assert!(
            out.contains("  1m ago: DescribeInstances: \\x1b]0;owned"),
            "{out}"
        );
        assert!(out.contains("failing: pre_register: exited with 23; stderr: \\x1b]0;"));
    }

    /// `status` as root reads the snapshot through no link the state directory's owner made.
    #[test]
    fn a_snapshot_is_never_read_through_a_link() {
        let d = tempfile::tempdir().unwrap();
        let secret = d.path().join("secret");
        std::fs::write(&secret, b"{\"root\": \"only\"}").unwrap();
        std::os::unix::fs::symlink(&secret, path_in(d.path())).unwrap();
        let e = Snapshot::read(&path_in(d.path())).unwrap_err();
        assert!(e.contains("symbolic link"), "{e}");
    }

    /// What is left of a cooldown counts from the reader's now: a snapshot written 4 minutes
    /// ago of a 10-minute cooldown with 600 s left has 360 s left.
    #[test]
    fn a_cooldown_counts_down_from_now_not_from_the_last_write() {
        let written: Timestamp = "2026-01-05T00:00:00Z".parse().unwrap();
        let mut snap = hostile();
        snap.written_at = written;
        snap.cooldowns = vec!["scale-in cooldown: 600 s left".into()];
        snap.cooldown_ends = vec![("scale-in".into(), "2026-01-05T00:10:00Z".parse().unwrap())];
        let later = "2026-01-05T00:04:00Z".parse().unwrap();
        let out = render(&snap, true, later);
        assert!(
            out.contains("cooldown  scale-in cooldown: 360 s left"),
            "{out}"
        );
        assert!(!out.contains("600 s left"), "{out}");
        // Over by now: not shown.
        let out = render(&snap, true, "2026-01-05T00:11:00Z".parse().unwrap());
        assert!(!out.contains("cooldown  scale-in"), "{out}");
    }
}
