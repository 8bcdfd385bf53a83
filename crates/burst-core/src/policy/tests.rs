//! The pipeline's own tests, and the helpers every stage's tests use. Each stage's own rules
//! are tested in its `tests.rs` (`serving/`, `demand/`, `limits/`, `holds/`, `release/`,
//! `bridge/`).

pub(crate) use super::*;
pub(crate) use crate::config::{Dur, PolicyConfig, PolicyMode, Signal, VictimOrder};

pub(crate) const T0: i64 = 1_780_000_000; // 2026-05-28T20:26:40Z

pub(crate) fn at(s: i64) -> Timestamp {
    Timestamp::from_second(T0 + s).unwrap()
}

/// One signal (busy ratio, target 0.5), no windows or cooldowns: each test turns on what it checks.
pub(crate) fn cfg() -> PolicyConfig {
    PolicyConfig {
        signals: vec![Signal::ApacheBusyRatio],
        targets: crate::config::Targets {
            apache_busy_ratio: 0.5,
            ..Default::default()
        },
        scale_out_cooldown: Dur::secs(0),
        scale_in_cooldown: Dur::secs(0),
        scale_in_stabilization: Dur::secs(0),
        min_lifetime: Dur::secs(0),
        max_step_out: 10,
        max_step_in: 10,
        max_slaves: 20,
        keep_slaves_when_cap_remaining_at_most: 0,
        // Keeping unneeded slaves for the cap is off here; its own tests turn it on.
        max_kept_per_day: Dur::secs(0),
        ..PolicyConfig::default()
    }
}

/// [`cfg`] with the keep rule on (step 6): a cap unit worth 2 h, 4 h a day.
pub(crate) fn keeping() -> PolicyConfig {
    PolicyConfig {
        cap_unit_value: Dur::secs(7200),
        max_kept_per_day: Dur::secs(4 * 3600),
        ..cfg()
    }
}

pub(crate) fn m(u: f64, t: i64) -> HostMetrics {
    HostMetrics {
        at: at(t),
        load_per_cpu: Some(u),
        apache_busy_ratio: Some(u),
        memory_used_ratio: Some(0.3),
        bridge_level: 0,
        bridge_change: None,
        total_accesses: None,
    }
}

pub(crate) fn slave(
    id: &str,
    state: SlaveState,
    launched: i64,
    util: Option<f64>,
) -> SlaveObservation {
    SlaveObservation {
        id: id.into(),
        state,
        launched_at: at(launched),
        metrics: util.map(|u| m(u, 0)),
    }
}

pub(crate) fn fleet(master: f64, slaves: Vec<SlaveObservation>) -> FleetObservation {
    FleetObservation {
        master: Some(m(master, 0)),
        slaves,
        no_capacity_until: None,
        launch_refused: None,
        probe_latency: None,
        scheduled: None,
        warm_room: 0,
        drain_secs: 0,
        sync_broken: None,
        content_source_missing: None,
        evidence: Default::default(),
        bridge_manual: None,
    }
}

pub(crate) fn in_service(n: usize, u: f64) -> Vec<SlaveObservation> {
    (0..n)
        .map(|i| {
            slave(
                &format!("i-{i}"),
                SlaveState::InService,
                -3600 + i as i64,
                Some(u),
            )
        })
        .collect()
}

pub(crate) fn cap() -> CapLedger {
    CapLedger::new("Asia/Tokyo", 7, None).unwrap()
}

/// `o` with every host's metrics taken at `t`.
pub(crate) fn sampled_at(o: &FleetObservation, t: Timestamp) -> FleetObservation {
    let mut o = o.clone();
    if let Some(m) = o.master.as_mut() {
        m.at = t;
    }
    for s in &mut o.slaves {
        if let Some(m) = s.metrics.as_mut() {
            m.at = t;
        }
    }
    o
}

/// A ledger with `n` of today's units spent (launched an hour before `at(0)`).
pub(crate) fn spent(n: usize) -> CapLedger {
    let mut l = cap();
    for i in 0..n {
        l.record_attempt(&format!("k{i}"), at(-3600)).unwrap();
    }
    l
}

pub(crate) fn run(c: &PolicyConfig, o: &FleetObservation) -> Decision {
    decide(c, &Default::default(), o, &cap(), &History::new(), at(0))
}

pub(crate) fn has(d: &Decision, code: &str) -> bool {
    d.reason_codes().contains(&code)
}

/// Records a decision that wanted `raw` slaves of `current` at `t` (the fleet's need, as the
/// history sees it).
pub(crate) fn wanted_at(c: &PolicyConfig, h: &mut History, t: i64, raw: u32, current: u32) {
    let mut why = Explanation::bare(cap().status(at(t)));
    why.raw_desired = raw;
    why.current = current;
    h.record(c, at(t), &Decision::Hold { why });
}

pub(crate) fn released(d: &Decision) -> usize {
    match d {
        Decision::ScaleIn { instances, .. } => instances.len(),
        _ => 0,
    }
}

#[test]
fn every_reason_has_a_readable_line_and_a_stable_code() {
    let d = run(&cfg(), &fleet(5.0, vec![]));
    let text = d.to_string();
    assert!(
        text.starts_with("scale out by 7 (0 -> 7 slaves) [desired 9"),
        "{text}"
    );
    assert!(
        text.contains("burst cap allows 7 of 9: 0/7 today, resets 00:00 Asia/Tokyo in 18h33m"),
        "{text}"
    );
    assert!(
        text.contains("apache_busy_ratio 5.00 above target 0.50"),
        "{text}"
    );
    let json = serde_json::to_value(&d).unwrap();
    assert_eq!(json["action"], "scale_out");
    assert_eq!(json["why"]["reasons"][0]["code"], "AboveTarget");
}

#[test]
fn decide_reads_the_time_only_from_its_argument() {
    // T0 is months away from the machine's clock: a decide() that looked at the clock would
    // count the cap's reset, the metrics' age or a cooldown from the wrong instant.
    let o = fleet(0.9, in_service(3, 0.8));
    let d = run(&cfg(), &o);
    let cap = &d.explanation().cap;
    assert_eq!(
        cap.resets_in_secs,
        cap.resets_at.as_second() - at(0).as_second(),
        "{d}"
    );
    assert!(
        cap.resets_in_secs > 0 && cap.resets_in_secs <= 86_400,
        "{d}"
    );
    assert!(
        !has(&d, "MetricsMissing"),
        "fresh metrics at T0 read as stale: {d}"
    );
    // And it keeps nothing between calls: the same inputs, the same decision.
    assert_eq!(run(&cfg(), &o), d);
}

#[test]
fn history_forgets_what_no_window_reaches() {
    let c = PolicyConfig::default();
    let mut h = History::new();
    for t in 0..1000 {
        let d = decide(
            &c,
            &Default::default(),
            &fleet(0.5, vec![]),
            &cap(),
            &h,
            at(t * 15),
        );
        h.record(&c, at(t * 15), &d);
    }
    // The longest window is 600 s: about 40 entries at 15 s.
    assert!(h.len() <= 42, "{}", h.len());
}

#[test]
fn the_readme_decision_line() {
    // The TV feature airs at 19:12 in Tokyo; the master alone reads load 4.9 per CPU.
    let c = PolicyConfig::default();
    let now: Timestamp = "2026-06-10T10:12:00Z".parse().unwrap();
    let obs = FleetObservation {
        master: Some(HostMetrics {
            at: now,
            load_per_cpu: Some(4.9),
            apache_busy_ratio: Some(1.0),
            memory_used_ratio: Some(0.4),
            bridge_level: 0,
            bridge_change: None,
            total_accesses: None,
        }),
        slaves: vec![],
        no_capacity_until: None,
        launch_refused: None,
        probe_latency: None,
        scheduled: None,
        warm_room: 0,
        drain_secs: 0,
        sync_broken: None,
        content_source_missing: None,
        evidence: Default::default(),
        bridge_manual: None,
    };
    let d = decide(&c, &Default::default(), &obs, &cap(), &History::new(), now);
    // The docs show this very line: read it from docs/how-it-decides.md, so the two cannot drift apart.
    let readme = include_str!("../../../../docs/how-it-decides.md");
    let line = d.to_string();
    assert!(
        readme.lines().any(|l| l.trim() == line),
        "docs/how-it-decides.md no longer shows the decision decide() makes:\n{line}"
    );
    assert!(line.starts_with("scale out by 4 (0 -> 4 slaves)"), "{line}");
}

/// A fleet of the master and two in-service slaves whose busy ratios add up to `total`, sampled
/// at `t`.
pub(crate) fn fleet_total(total: f64, t: i64) -> FleetObservation {
    let u = total / 3.0;
    let mut o = fleet(u, in_service(2, u));
    o.master = Some(m(u, t));
    for s in &mut o.slaves {
        s.metrics = Some(m(u, t));
    }
    o
}

/// The history of deciding every 30 s for the five minutes before 0 on a fleet whose total
/// load moves linearly from `from` to `to` (reached at 0).
pub(crate) fn history_of(c: &PolicyConfig, from: f64, to: f64) -> History {
    let mut h = History::new();
    for i in 0..10 {
        let t = -300 + 30 * i;
        let total = from + (to - from) * i as f64 / 10.0;
        let d = decide(
            c,
            &Default::default(),
            &fleet_total(total, t),
            &cap(),
            &h,
            at(t),
        );
        h.record(c, at(t), &d);
    }
    h
}

pub(crate) fn run_with(c: &PolicyConfig, h: &History) -> Decision {
    decide(
        c,
        &Default::default(),
        &fleet_total(2.0, 0),
        &cap(),
        h,
        at(0),
    )
}

#[test]
fn a_decisions_action_in_the_logs_is_its_action_tag_in_json() {
    let why = run(&cfg(), &fleet(0.5, in_service(1, 0.5)))
        .explanation()
        .clone();
    for d in [
        Decision::Hold { why: why.clone() },
        Decision::ScaleOut {
            count: 2,
            why: why.clone(),
        },
        Decision::ScaleIn {
            instances: vec!["i-1".into()],
            why,
        },
    ] {
        let json = serde_json::to_value(&d).unwrap();
        assert_eq!(json["action"].as_str(), Some(d.action()), "{json}");
    }
    // The name operators filter logs by.
    assert_eq!(
        run(&cfg(), &fleet(0.9, in_service(2, 0.9))).action(),
        "scale_out"
    );
}
