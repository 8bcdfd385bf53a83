use super::*;
use crate::config::{Dur, PolicyConfig, PolicyMode, Signal, VictimOrder};

const T0: i64 = 1_780_000_000; // 2026-05-28T20:26:40Z

fn at(s: i64) -> Timestamp {
    Timestamp::from_second(T0 + s).unwrap()
}

/// One signal (busy ratio, target 0.5), no windows or cooldowns: each test turns on what it checks.
fn cfg() -> PolicyConfig {
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
fn keeping() -> PolicyConfig {
    PolicyConfig {
        cap_unit_value: Dur::secs(7200),
        max_kept_per_day: Dur::secs(4 * 3600),
        ..cfg()
    }
}

fn m(u: f64, t: i64) -> HostMetrics {
    HostMetrics {
        at: at(t),
        load_per_cpu: Some(u),
        apache_busy_ratio: Some(u),
        memory_used_ratio: Some(0.3),
    }
}

fn slave(id: &str, state: SlaveState, launched: i64, util: Option<f64>) -> SlaveObservation {
    SlaveObservation {
        id: id.into(),
        state,
        launched_at: at(launched),
        metrics: util.map(|u| m(u, 0)),
    }
}

fn fleet(master: f64, slaves: Vec<SlaveObservation>) -> FleetObservation {
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
    }
}

fn in_service(n: usize, u: f64) -> Vec<SlaveObservation> {
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

fn cap() -> CapLedger {
    CapLedger::new("Asia/Tokyo", 7, None).unwrap()
}

/// `o` with every host's metrics taken at `t`.
fn sampled_at(o: &FleetObservation, t: Timestamp) -> FleetObservation {
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
fn spent(n: usize) -> CapLedger {
    let mut l = cap();
    for i in 0..n {
        l.record_attempt(&format!("k{i}"), at(-3600)).unwrap();
    }
    l
}

fn run(c: &PolicyConfig, o: &FleetObservation) -> Decision {
    decide(c, o, &cap(), &History::new(), at(0))
}

fn has(d: &Decision, code: &str) -> bool {
    d.reason_codes().contains(&code)
}

#[test]
fn above_target_scales_out_to_ceil_of_demand() {
    // Master at 1.0 busy, target 0.5: the fleet needs 2 hosts → 1 slave.
    let d = run(&cfg(), &fleet(1.0, vec![]));
    assert!(matches!(d, Decision::ScaleOut { count: 1, .. }), "{d}");
    assert!(has(&d, "AboveTarget"));
    // Master + 2 slaves at 0.9: Σ 2.7 / 0.5 = 5.4 → 6 hosts → 5 slaves.
    let d = run(&cfg(), &fleet(0.9, in_service(2, 0.9)));
    assert!(matches!(d, Decision::ScaleOut { count: 3, .. }), "{d}");
    assert_eq!(d.explanation().raw_desired, 5);
}

#[test]
fn below_target_scales_in_and_within_tolerance_holds() {
    let d = run(&cfg(), &fleet(0.2, in_service(3, 0.2)));
    // Σ 0.8 / 0.5 = 1.6 → 2 hosts → 1 slave: remove 2.
    match &d {
        Decision::ScaleIn { instances, .. } => assert_eq!(instances.len(), 2),
        other => panic!("{other}"),
    }
    assert!(has(&d, "BelowTarget"));
    let d = run(&cfg(), &fleet(0.53, in_service(1, 0.53)));
    assert!(matches!(d, Decision::Hold { .. }), "{d}");
    assert!(has(&d, "WithinTolerance"));
}

#[test]
fn the_most_demanding_signal_wins() {
    let mut c = cfg();
    c.signals = vec![Signal::ApacheBusyRatio, Signal::LoadPerCpu];
    c.targets.load_per_cpu = 0.25;
    // busy 0.5 (at target), load 0.5 (2x target) → load asks for 4 hosts.
    let mut o = fleet(0.5, in_service(1, 0.5));
    let d = run(&c, &o);
    assert_eq!(d.explanation().raw_desired, 3, "{d}");
    let r = &d.explanation().signals;
    assert_eq!(r.len(), 2);
    assert_eq!(r[0].desired, Some(1));
    assert_eq!(r[1].desired, Some(3));
    // And with one signal unreadable, the other can still scale out.
    o.master.as_mut().unwrap().apache_busy_ratio = None;
    o.slaves[0].metrics.as_mut().unwrap().apache_busy_ratio = None;
    assert!(matches!(run(&c, &o), Decision::ScaleOut { .. }));
}

#[test]
fn missing_metrics_never_cause_a_scale_in() {
    // Nothing readable at all: hold.
    let o = FleetObservation {
        master: None,
        slaves: vec![slave("i-1", SlaveState::InService, -3600, None)],
        no_capacity_until: None,
        launch_refused: None,
        probe_latency: None,
        scheduled: None,
        warm_room: 0,
        drain_secs: 0,
        sync_broken: None,
        content_source_missing: None,
        evidence: Default::default(),
    };
    let d = run(&cfg(), &o);
    assert!(matches!(d, Decision::Hold { .. }));
    assert!(has(&d, "MetricsMissing"), "{d}");
    // Stale counts as missing.
    let mut o = fleet(0.1, in_service(2, 0.1));
    for s in &mut o.slaves {
        s.metrics = Some(m(0.1, -10_000));
    }
    o.master = Some(m(0.1, -10_000));
    let d = run(&cfg(), &o);
    assert!(matches!(d, Decision::Hold { .. }), "{d}");
    // Some missing while the rest are idle: the missing ones count as at-target.
    // Master 0.1 present, 3 slaves missing: (0.1 + 3*0.5)/0.5 = 3.2 → 4 hosts → 3 slaves: hold.
    let mut o = fleet(0.1, in_service(3, 0.1));
    for s in &mut o.slaves {
        s.metrics = None;
    }
    let d = run(&cfg(), &o);
    assert!(matches!(d, Decision::Hold { .. }), "{d}");
    assert!(has(&d, "SomeMetricsMissing"));
    // A signal with no data blocks a scale-in the other asks for (HPA's rule).
    let mut c = cfg();
    c.signals = vec![Signal::ApacheBusyRatio, Signal::LoadPerCpu];
    let mut o = fleet(0.1, in_service(3, 0.1));
    o.master.as_mut().unwrap().load_per_cpu = None;
    for s in &mut o.slaves {
        s.metrics.as_mut().unwrap().load_per_cpu = None;
    }
    let d = run(&c, &o);
    assert!(matches!(d, Decision::Hold { .. }), "{d}");
    assert!(has(&d, "MetricsMissing"));
}

#[test]
fn missing_hosts_count_as_idle_when_scaling_out() {
    // Master 1.0, one slave missing: (1.0 + 0)/0.5 = 2 hosts → 1 slave; we have 1: hold, not 3.
    let mut o = fleet(1.0, in_service(1, 1.0));
    o.slaves[0].metrics = None;
    let d = run(&cfg(), &o);
    assert!(matches!(d, Decision::Hold { .. }), "{d}");
    // Master 2.0: (2.0 + 0)/0.5 = 4 hosts → 3 slaves: +2.
    let mut o = fleet(2.0, in_service(1, 1.0));
    o.slaves[0].metrics = None;
    let d = run(&cfg(), &o);
    assert!(matches!(d, Decision::ScaleOut { count: 2, .. }), "{d}");
}

#[test]
fn capacity_on_the_way_is_not_asked_for_twice() {
    // Master at 1.5 → 3 hosts → 2 slaves; 2 already pending/syncing.
    let o = fleet(
        1.5,
        vec![
            slave("i-p", SlaveState::Pending, -30, None),
            slave("i-s", SlaveState::Syncing, -120, None),
        ],
    );
    let d = run(&cfg(), &o);
    assert!(matches!(d, Decision::Hold { .. }), "{d}");
    assert!(has(&d, "CapacityOnTheWay"));
    assert_eq!(d.explanation().on_the_way, 2);
    // Draining slaves are not capacity.
    let o = fleet(
        1.5,
        vec![slave("i-d", SlaveState::Draining, -7200, Some(0.0))],
    );
    let d = run(&cfg(), &o);
    assert!(matches!(d, Decision::ScaleOut { count: 2, .. }), "{d}");
}

#[test]
fn stabilization_windows() {
    let mut c = cfg();
    c.scale_in_stabilization = Dur::secs(300);
    c.scale_out_stabilization = Dur::secs(60);
    let mut h = History::new();
    // A high recommendation 100 s ago keeps the fleet up (in: highest of the window).
    let high = run(&c, &fleet(0.9, in_service(2, 0.9)));
    h.record(&c, at(-100), &high);
    let d = decide(&c, &fleet(0.2, in_service(2, 0.2)), &cap(), &h, at(0));
    assert!(matches!(d, Decision::Hold { .. }), "{d}");
    assert!(has(&d, "ScaleInStabilizing"));
    // Out: the lowest recommendation of the last 60 s.
    let mut h = History::new();
    let low = run(&c, &fleet(0.5, in_service(2, 0.5)));
    h.record(&c, at(-30), &low);
    let d = decide(&c, &fleet(0.9, in_service(2, 0.9)), &cap(), &h, at(0));
    assert!(matches!(d, Decision::Hold { .. }), "{d}");
    assert!(has(&d, "ScaleOutStabilizing"));
    // Outside the window it no longer counts.
    let d = decide(&c, &fleet(0.9, in_service(2, 0.9)), &cap(), &h, at(61));
    assert!(matches!(d, Decision::ScaleOut { .. }), "{d}");
}

#[test]
fn cooldowns_are_separate_for_out_and_in() {
    let mut c = cfg();
    c.scale_out_cooldown = Dur::secs(120);
    c.scale_in_cooldown = Dur::secs(600);
    c.stale_after = Dur::secs(3600); // the fixtures' metrics are stamped at t=0
    let mut h = History::new();
    let out = run(&c, &fleet(1.0, vec![]));
    h.record(&c, at(-60), &out);
    let d = decide(&c, &fleet(2.0, in_service(1, 2.0)), &cap(), &h, at(0));
    assert!(has(&d, "CooldownActive"), "{d}");
    assert!(matches!(d, Decision::Hold { .. }));
    assert!(
        d.to_string().contains("scale-out cooldown: 60s left"),
        "{d}"
    );
    // Scale-in waits scale_in_cooldown after the scale-out too.
    let d = decide(&c, &fleet(0.1, in_service(3, 0.1)), &cap(), &h, at(300));
    assert!(matches!(d, Decision::Hold { .. }), "{d}");
    assert!(
        d.to_string().contains("scale-in cooldown: 240s left"),
        "{d}"
    );
    let d = decide(&c, &fleet(0.1, in_service(3, 0.1)), &cap(), &h, at(600));
    assert!(matches!(d, Decision::ScaleIn { .. }), "{d}");
}

#[test]
fn max_step_per_decision() {
    let mut c = cfg();
    c.max_step_out = 3;
    c.max_step_in = 1;
    let d = run(&c, &fleet(5.0, vec![]));
    assert!(matches!(d, Decision::ScaleOut { count: 3, .. }), "{d}");
    assert!(has(&d, "MaxStep"));
    let d = run(&c, &fleet(0.05, in_service(4, 0.05)));
    assert!(
        matches!(&d, Decision::ScaleIn { instances, .. } if instances.len() == 1),
        "{d}"
    );
    assert!(has(&d, "MaxStep"));
}

#[test]
fn min_and_max_slaves() {
    let mut c = cfg();
    c.min_slaves = 2;
    c.max_slaves = 4;
    let d = run(&c, &fleet(0.1, vec![]));
    assert!(matches!(d, Decision::ScaleOut { count: 2, .. }), "{d}");
    assert!(has(&d, "BelowMinSlaves"));
    let d = run(&c, &fleet(5.0, in_service(2, 5.0)));
    assert!(matches!(d, Decision::ScaleOut { count: 2, .. }), "{d}");
    assert!(has(&d, "AtMaxSlaves"));
    let d = run(&c, &fleet(0.5, in_service(6, 0.5)));
    assert!(
        matches!(&d, Decision::ScaleIn { instances, .. } if instances.len() == 2),
        "{d}"
    );
    assert!(has(&d, "AboveMaxSlaves"));
    let d = run(&c, &fleet(0.01, in_service(2, 0.01)));
    assert!(matches!(d, Decision::Hold { .. }), "{d}");
    assert!(has(&d, "AtMinSlaves"));
}

#[test]
fn daily_cap_limits_and_explains() {
    let mut l = cap();
    // 2026-05-28T20:26:40Z is 05:26:40 in Tokyo: 18h33m to midnight.
    for i in 0..7 {
        l.record_attempt(&format!("k{i}"), at(-100)).unwrap();
    }
    let d = decide(&cfg(), &fleet(3.0, vec![]), &l, &History::new(), at(0));
    assert!(matches!(d, Decision::Hold { .. }), "{d}");
    assert!(has(&d, "DailyCapReached"));
    assert!(
        d.to_string()
            .contains("burst cap reached: 7/7 today, resets 00:00 Asia/Tokyo in 18h33m"),
        "{d}"
    );
    // Partly spent: allowed what is left.
    let mut l = cap();
    for i in 0..5 {
        l.record_attempt(&format!("k{i}"), at(-100)).unwrap();
    }
    let d = decide(&cfg(), &fleet(3.0, vec![]), &l, &History::new(), at(0));
    assert!(matches!(d, Decision::ScaleOut { count: 2, .. }), "{d}");
    assert!(has(&d, "CapLimited"));
    assert_eq!(d.explanation().cap_limited, 2);
    // A blocked (corrupt) ledger refuses scale-out but not scale-in.
    let blocked = cap().blocked("cap-ledger.json: EOF while parsing");
    let d = decide(
        &cfg(),
        &fleet(3.0, vec![]),
        &blocked,
        &History::new(),
        at(0),
    );
    assert!(matches!(d, Decision::Hold { .. }), "{d}");
    assert!(has(&d, "LedgerUnavailable"));
}

/// The keep rule's arithmetic, worked by hand: a cap unit worth 2 h (7200 s), the lead time
/// 150 s until measured (the default). Releasing the k-th slave when `r` units
/// are left costs 150 + 7200·k/(r+1) s, or 150 + 7200 s once the cap could not bring it back;
/// a slave is kept while the fleet has been unneeded for less than that.
#[test]
fn keeps_unneeded_slaves_while_a_relaunch_would_cost_more_than_keeping_them() {
    let c = keeping();
    let needed_at = |t: i64| {
        let mut h = History::new();
        let busy = run(&c, &fleet(1.0, in_service(3, 1.0)));
        h.record(&c, at(t), &busy);
        h
    };
    let idle = fleet(0.1, in_service(3, 0.1));
    // Five launches left (r = 5): the three cost 1350, 2550 and 3750 s.
    for (unneeded, n) in [
        (300, 0),
        (1349, 0),
        (1350, 1),
        (2550, 2),
        (3749, 2),
        (3750, 3),
    ] {
        let d = decide(&c, &idle, &spent(2), &needed_at(-unneeded), at(0));
        assert_eq!(released(&d), n, "unneeded {unneeded}s: {d}");
        assert_eq!(has(&d, "KeepingForCap"), n < 3, "{d}");
    }
    // One left (r = 1): the first costs 150 + 3600, the others a whole unit, 7350.
    for (unneeded, n) in [(3749, 0), (3750, 1), (7349, 1), (7350, 3)] {
        let d = decide(&c, &idle, &spent(6), &needed_at(-unneeded), at(0));
        assert_eq!(released(&d), n, "unneeded {unneeded}s: {d}");
    }
    // None left: all three are kept for the whole unit.
    let d = decide(&c, &idle, &spent(7), &needed_at(-7349), at(0));
    assert!(matches!(d, Decision::Hold { .. }), "{d}");
    assert!(
        d.to_string().contains(
            "keeping 3 slave(s): the next one out has been unneeded for 2h 2m 29s, less than \
             bringing it back today would cost (2h 2m 30s of instance time: lead 150s + 1.00 of \
             a cap unit worth 2h, 0 unit(s) left to spend); kept 0s of max_kept_per_day 4h today"
        ),
        "{d}"
    );
    // The margin counts as spent: with 2 left and a margin of 1, the first costs 150 + 3600.
    let mut m = c.clone();
    m.keep_slaves_when_cap_remaining_at_most = 1;
    let d = decide(&m, &idle, &spent(5), &needed_at(-3749), at(0));
    assert_eq!(released(&d), 0, "{d}");
    // A measured lead time counts instead of the default: three launches of 600 s.
    let mut h = needed_at(-3749);
    for _ in 0..3 {
        h.record_lead(600);
    }
    let d = decide(&c, &idle, &spent(6), &h, at(0));
    assert_eq!(released(&d), 0, "lead 600 + 3600 > 3749: {d}");
    // Never needed (an agent started over existing slaves): nothing to keep for.
    let d = decide(&c, &idle, &spent(7), &History::new(), at(0));
    assert_eq!(released(&d), 3, "{d}");
}

/// `max_kept_per_day` bounds the instance-time spent keeping, per cap day: spent, the slaves
/// go; on the next day the count starts again.
#[test]
fn keeping_stops_when_the_days_kept_time_is_spent() {
    let mut c = cfg();
    c.evaluation_interval = Dur::secs(60);
    c.max_kept_per_day = Dur::secs(600);
    c.stale_after = Dur::secs(3600);
    let l = spent(7);
    let mut h = History::new();
    let busy = decide(&c, &fleet(1.0, in_service(2, 1.0)), &l, &h, at(-60));
    h.record(&c, at(-60), &busy);
    let idle = fleet(0.1, in_service(2, 0.1));
    // Two slaves kept a minute at a time: 120 s a decision, 600 s after five decisions.
    let mut t = 0;
    for _ in 0..5 {
        let d = decide(&c, &idle, &l, &h, at(t));
        assert!(has(&d, "KeepingForCap"), "at {t}: {d}");
        h.record(&c, at(t), &d);
        t += 60;
    }
    assert_eq!(h.kept_today(at(t)), 600);
    let d = decide(&c, &idle, &l, &h, at(t));
    assert!(
        matches!(&d, Decision::ScaleIn { instances, .. } if instances.len() == 2),
        "{d}"
    );
    assert!(
        d.to_string().contains(
            "releasing 2 slave(s) the cap would keep: 10m of instance time already kept today \
             (max_kept_per_day 10m)"
        ),
        "{d}"
    );
    // After the reset the day's kept time starts from 0.
    let reset = t + d.explanation().cap.resets_in_secs;
    assert_eq!(h.kept_today(at(reset)), 0);
    assert_eq!(h.kept_today(at(reset - 1)), 600);
}

/// Records a decision that wanted `raw` slaves of `current` at `t` (the fleet's need, as the
/// history sees it).
fn wanted_at(c: &PolicyConfig, h: &mut History, t: i64, raw: u32, current: u32) {
    let mut why = Explanation::bare(cap().status(at(t)));
    why.raw_desired = raw;
    why.current = current;
    h.record(c, at(t), &Decision::Hold { why });
}

fn released(d: &Decision) -> usize {
    match d {
        Decision::ScaleIn { instances, .. } => instances.len(),
        _ => 0,
    }
}

/// Slaves released one decision at a time in one lull take the cap's places in turn: with 5
/// units left, the first goes at 1350 s (1/6 of 2 h + 150), the second not before 2550 s
/// (2/6), the third at 3750 s (3/6); each later decision does not start the prices over.
#[test]
fn a_lull_released_in_stages_prices_each_slave_at_the_next_cap_unit() {
    let mut c = keeping();
    c.max_step_in = 1;
    let l = spent(2);
    let mut h = History::new();
    wanted_at(&c, &mut h, 0, 3, 3);
    let mut fleet_now = in_service(3, 0.1);
    let mut out = Vec::new();
    for t in (60..=4000).step_by(10) {
        let o = sampled_at(&fleet(0.1, fleet_now.clone()), at(t));
        let d = decide(&c, &o, &l, &h, at(t));
        h.record(&c, at(t), &d);
        if let Decision::ScaleIn { instances, .. } = &d {
            out.push(t);
            fleet_now.retain(|s| !instances.contains(&s.id));
        }
    }
    assert_eq!(out, vec![1350, 2550, 3750]);
}

/// Each slave's own idle time counts: the third slave, unneeded for 1000 s, goes (its cost is
/// the lead time, 150 s, with a unit worth nothing); the other two were wanted 100 s ago and
/// stay. One clock for the fleet would have released all three.
#[test]
fn each_slave_is_kept_by_how_long_its_own_place_in_the_fleet_has_been_unneeded() {
    let mut c = keeping();
    c.cap_unit_value = Dur::secs(0);
    let mut h = History::new();
    wanted_at(&c, &mut h, -1000, 3, 3);
    wanted_at(&c, &mut h, -100, 2, 3);
    let d = decide(&c, &fleet(0.1, in_service(3, 0.1)), &cap(), &h, at(0));
    assert_eq!(released(&d), 1, "{d}");
    assert!(
        d.to_string()
            .contains("keeping 2 slave(s): the next one out has been unneeded for 1m 40s"),
        "{d}"
    );
}

/// Above max_slaves the excess goes whatever keeping says, and no more; with the
/// instance-hours budget spent nothing is kept (keeping would spend it further).
#[test]
fn keeping_yields_to_max_slaves_and_to_a_spent_hours_budget() {
    let mut c = keeping();
    c.max_slaves = 2;
    let spent = spent(7);
    let mut h = History::new();
    wanted_at(&c, &mut h, -300, 3, 3);
    let d = decide(&c, &fleet(0.1, in_service(3, 0.1)), &spent, &h, at(0));
    assert_eq!(released(&d), 1, "one over max_slaves, the rest kept: {d}");
    assert!(has(&d, "KeepingForCap"), "{d}");

    let c = keeping();
    let mut budget = CapLedger::new("Asia/Tokyo", 7, Some(1.0)).unwrap();
    budget.record_attempt("k0", at(-7200)).unwrap();
    assert!(budget.status(at(0)).instance_hours >= 1.0);
    let d = decide(&c, &fleet(0.1, in_service(3, 0.1)), &budget, &h, at(0));
    assert_eq!(released(&d), 3, "{d}");
    assert!(!has(&d, "KeepingForCap"), "{d}");
}

#[test]
fn kept_slaves_are_released_before_midnight_so_they_do_not_cost_tomorrow() {
    let c = keeping();
    // 23:55 in Tokyo: 5 minutes to the reset, within the midnight guard (10 m).
    let now: Timestamp = "2026-05-28T14:55:00Z".parse().unwrap();
    let mut l = cap();
    for i in 0..7 {
        l.record_attempt(&format!("k{i}"), now).unwrap();
    }
    let mut h = History::new();
    let t = |s: i64| Timestamp::from_second(now.as_second() + s).unwrap();
    let busy = decide(&c, &fleet(1.0, in_service(3, 1.0)), &l, &h, t(-300));
    h.record(&c, t(-300), &busy);
    let mut idle = fleet(0.1, in_service(3, 0.1));
    idle.master = Some(HostMetrics {
        at: now,
        ..m(0.1, 0)
    });
    for s in &mut idle.slaves {
        s.metrics = Some(HostMetrics {
            at: now,
            ..m(0.1, 0)
        });
        s.launched_at = t(-7200);
    }
    let d = decide(&c, &idle, &l, &h, now);
    assert!(
        matches!(&d, Decision::ScaleIn { instances, .. } if instances.len() == 3),
        "{d}"
    );
    assert_eq!(d.explanation().cap.resets_in_secs, 300);
    assert!(has(&d, "KeepEndsBeforeMidnight"), "{d}");
    // With a 5-minute drain they go 5 minutes earlier: at 23:45 (15 m left), not 23:50.
    let t_800 = Timestamp::from_second(now.as_second() - 500).unwrap();
    let mut draining = sampled_at(&idle, t_800);
    draining.drain_secs = 300;
    let mut h_800 = History::new();
    let busy = decide(&c, &fleet(1.0, in_service(3, 1.0)), &l, &h_800, t(-800));
    h_800.record(&c, t(-800), &busy);
    let d = decide(&c, &draining, &l, &h_800, t_800);
    assert_eq!(d.explanation().cap.resets_in_secs, 800);
    assert!(has(&d, "KeepEndsBeforeMidnight"), "{d}");
    draining.drain_secs = 0;
    let d = decide(&c, &draining, &l, &h_800, t_800);
    assert!(
        has(&d, "KeepingForCap"),
        "without the drain 800 s is still kept: {d}"
    );
    // Twenty minutes before the reset they are still kept.
    let earlier = Timestamp::from_second(now.as_second() - 900).unwrap();
    let idle_earlier = sampled_at(&idle, earlier);
    let mut h_earlier = History::new();
    let busy = decide(
        &c,
        &fleet(1.0, in_service(3, 1.0)),
        &l,
        &h_earlier,
        t(-1200),
    );
    h_earlier.record(&c, t(-1200), &busy);
    let d = decide(&c, &idle_earlier, &l, &h_earlier, earlier);
    assert!(matches!(d, Decision::Hold { .. }), "{d}");
    assert!(has(&d, "KeepingForCap"), "{d}");
}

#[test]
fn victims_old_enough_in_the_configured_order() {
    let mut c = cfg();
    c.min_lifetime = Dur::secs(1200);
    c.max_step_in = 1;
    let slaves = vec![
        slave("young", SlaveState::InService, -600, Some(0.05)),
        slave("oldest", SlaveState::InService, -3 * 3600 - 600, Some(0.05)), // 10 min into its hour
        slave("middle", SlaveState::InService, -3600 - 3300, Some(0.05)),    // 55 min into its hour
        slave("newest-old", SlaveState::InService, -1800, Some(0.05)),
    ];
    let o = fleet(0.05, slaves);
    let pick = |order| {
        let mut c = c.clone();
        c.victim_order = order;
        match run(&c, &o) {
            Decision::ScaleIn { instances, .. } => instances,
            d => panic!("{d}"),
        }
    };
    assert_eq!(pick(VictimOrder::NewestFirst), ["newest-old"]);
    assert_eq!(pick(VictimOrder::OldestFirst), ["oldest"]);
    assert_eq!(pick(VictimOrder::ClosestToBillingHour), ["middle"]);
    // Only young slaves: nothing to remove.
    let o = fleet(
        0.05,
        vec![slave("young", SlaveState::InService, -600, Some(0.05))],
    );
    let d = run(&c, &o);
    assert!(matches!(d, Decision::Hold { .. }), "{d}");
    assert!(has(&d, "NoVictimOldEnough"));
}

#[test]
fn threshold_rules_need_their_sustain_window() {
    let mut c = cfg();
    c.mode = PolicyMode::Threshold;
    c.scale_out.threshold = 0.8;
    c.scale_out.sustain = Dur::secs(60);
    c.scale_in.threshold = 0.3;
    c.scale_in.sustain = Dur::secs(120);
    let mut h = History::new();
    let hot = fleet(0.9, in_service(1, 0.9));
    for t in [0, 15, 30, 45] {
        let d = decide(&c, &hot, &cap(), &h, at(t));
        assert!(matches!(d, Decision::Hold { .. }), "t={t}: {d}");
        assert!(has(&d, "ScaleOutSustaining"));
        h.record(&c, at(t), &d);
    }
    let d = decide(&c, &hot, &cap(), &h, at(60));
    assert!(matches!(d, Decision::ScaleOut { count: 1, .. }), "{d}");
    assert!(has(&d, "AboveThreshold"));
    // A dip resets the streak.
    let mut h = History::new();
    h.record(&c, at(0), &decide(&c, &hot, &cap(), &h, at(0)));
    let calm = fleet(0.5, in_service(1, 0.5));
    let d = decide(&c, &calm, &cap(), &h, at(15));
    assert!(has(&d, "BetweenThresholds"), "{d}");
    h.record(&c, at(15), &d);
    let d = decide(&c, &hot, &cap(), &h, at(60));
    assert!(has(&d, "ScaleOutSustaining"), "{d}");
    // Scale-in after its own window.
    let mut h = History::new();
    let cold = fleet(0.1, in_service(2, 0.1));
    for t in (0..120).step_by(15) {
        let d = decide(&c, &cold, &cap(), &h, at(t));
        assert!(has(&d, "ScaleInSustaining"), "t={t}: {d}");
        h.record(&c, at(t), &d);
    }
    let d = decide(&c, &cold, &cap(), &h, at(120));
    assert!(matches!(d, Decision::ScaleIn { .. }), "{d}");
    assert!(has(&d, "BelowThreshold"));
    // Missing metrics block the scale-in.
    let mut part = cold.clone();
    part.slaves[0].metrics = None;
    let d = decide(&c, &part, &cap(), &h, at(120));
    assert!(matches!(d, Decision::Hold { .. }), "{d}");
    assert!(has(&d, "SomeMetricsMissing"));
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
        let d = decide(&c, &fleet(0.5, vec![]), &cap(), &h, at(t * 15));
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
    };
    let d = decide(&c, &obs, &cap(), &History::new(), now);
    // The docs show this very line: read it from docs/how-it-decides.md, so the two cannot drift apart.
    let readme = include_str!("../../../../docs/how-it-decides.md");
    let line = d.to_string();
    assert!(
        readme.lines().any(|l| l.trim() == line),
        "docs/how-it-decides.md no longer shows the decision decide() makes:\n{line}"
    );
    assert!(line.starts_with("scale out by 4 (0 -> 4 slaves)"), "{line}");
}

/// Found by an operator's run: a missing instance profile got RunInstances every 15 s.
#[test]
fn a_launch_ec2_refused_for_good_holds_launches_until_the_backoff_ends_and_says_why() {
    let mut o = fleet(1.0, vec![]);
    o.launch_refused = Some(crate::policy::LaunchRefused {
        until: at(60),
        cause: "NoSuchEntity: Instance profile golf-slave not found".into(),
    });
    let d = run(&cfg(), &o);
    assert!(matches!(d, Decision::Hold { .. }), "{d}");
    assert!(has(&d, "LaunchRefused"), "{d}");
    let t = d.to_string();
    assert!(t.contains("Instance profile golf-slave not found"), "{t}");
    assert!(t.contains("next try in 60s"), "{t}");
    // Over: the need is met again.
    o.launch_refused.as_mut().unwrap().until = at(0);
    let d = run(&cfg(), &o);
    assert!(matches!(d, Decision::ScaleOut { .. }), "{d}");
}

#[test]
fn no_capacity_anywhere_holds_launches_until_the_backoff_ends_and_says_so() {
    let mut o = fleet(1.0, vec![]);
    o.no_capacity_until = Some(at(90));
    let d = run(&cfg(), &o);
    assert!(matches!(d, Decision::Hold { .. }), "{d}");
    assert!(has(&d, "NoCapacity"), "{d}");
    assert!(d.to_string().contains("next launch in 90s"), "{d}");
    // Over: the need is met again.
    o.no_capacity_until = Some(at(0));
    let d = run(&cfg(), &o);
    assert!(matches!(d, Decision::ScaleOut { count: 1, .. }), "{d}");
    // Scale-in is not held by it.
    let mut o = fleet(0.2, in_service(3, 0.2));
    o.no_capacity_until = Some(at(90));
    assert!(matches!(run(&cfg(), &o), Decision::ScaleIn { .. }));
}

#[test]
fn a_broken_sync_holds_launches_that_cost_a_unit_with_its_cause_and_allows_one_trial() {
    let mut o = fleet(3.0, vec![]);
    o.sync_broken = Some(crate::policy::SyncBroken {
        cause: "the slave image lacks the master's ssh key".into(),
        trial: false,
        trial_in_secs: 900,
    });
    let d = run(&cfg(), &o);
    assert!(matches!(d, Decision::Hold { .. }), "{d}");
    assert!(has(&d, "SyncBroken"), "{d}");
    let line = d.to_string();
    assert!(line.contains("lacks the master's ssh key"), "{line}");
    assert!(line.contains("burst-agent resume"), "{line}");
    assert!(line.contains("a trial launch in 15m"), "{line}");
    // The back-off is over: one launch, not the three the load asks for.
    o.sync_broken.as_mut().unwrap().trial = true;
    o.sync_broken.as_mut().unwrap().trial_in_secs = 0;
    let d = run(&cfg(), &o);
    assert!(matches!(d, Decision::ScaleOut { count: 1, .. }), "{d}");
    assert!(has(&d, "SyncBroken"), "{d}");
    // Released: the need is met again.
    o.sync_broken = None;
    let d = run(&cfg(), &o);
    assert!(
        matches!(d, Decision::ScaleOut { count, .. } if count > 1),
        "{d}"
    );
}

/// Issue 19, part 2: one slave's forged report (anything with its instance credentials can
/// PutMetricData for its InstanceId) cannot raise the fleet's demand past what the master's own
/// sample backs; the decision names it. A real burst, which the master sees too, still scales.
#[test]
fn one_slaves_report_cannot_raise_demand_past_the_masters_evidence() {
    // The master idle at 0.1, one slave claims 50 per CPU (inside the range check), one honest.
    let mut o = fleet(0.1, in_service(2, 0.1));
    o.slaves[0].metrics.as_mut().unwrap().load_per_cpu = Some(50.0);
    o.slaves[0].metrics.as_mut().unwrap().apache_busy_ratio = Some(1.0);
    let d = run(&cfg(), &o);
    assert!(!matches!(d, Decision::ScaleOut { .. }), "{d}");
    assert!(has(&d, "Uncorroborated"), "{d}");
    let line = d.to_string();
    assert!(line.contains("i-0 reported"), "{line}");
    assert!(!line.contains("i-1 reported"), "{line}");
    // Without the cut, the same numbers would launch: the rule is what holds them.
    let honest = fleet(0.1, in_service(2, 0.1));
    let mut lie_alone = honest.clone();
    lie_alone.master = None;
    lie_alone.slaves[0].metrics.as_mut().unwrap().load_per_cpu = Some(50.0);
    let d = run(&cfg(), &lie_alone);
    assert!(
        !matches!(d, Decision::ScaleOut { .. }),
        "no master sample: {d}"
    );
    // The master sees the burst too: the slaves' reports are backed, and it scales out.
    let burst = fleet(0.95, in_service(2, 1.2));
    let d = run(&cfg(), &burst);
    assert!(matches!(d, Decision::ScaleOut { .. }), "{d}");
    assert!(!has(&d, "Uncorroborated"), "{d}");
    // The bound itself: 1.5 x the master's reading plus 0.1.
    let (cut, why) = crate::policy::corroborate(
        Some(&m(0.4, 0)),
        &crate::policy::Reports::default(),
        "i-9",
        &m(2.0, 0),
        &cfg().targets,
        &Default::default(),
    );
    assert_eq!(why.len(), 2, "{why:?}");
    assert!((cut.load_per_cpu.unwrap() - 0.7).abs() < 1e-9);
    assert_eq!(cut.memory_used_ratio, Some(0.3), "backed values are kept");
    // No master reading (mod_status timed out on a saturated master): the other slaves'
    // median backs a real burst; one forger among honest idle slaves is still cut.
    let mut o = fleet(0.9, in_service(3, 0.95));
    o.master.as_mut().unwrap().apache_busy_ratio = None;
    o.master.as_mut().unwrap().load_per_cpu = None;
    let d = run(&cfg(), &o);
    assert!(matches!(d, Decision::ScaleOut { .. }), "{d}");
    assert!(!has(&d, "Uncorroborated"), "{d}");
    let mut o = fleet(0.1, in_service(3, 0.1));
    o.master.as_mut().unwrap().apache_busy_ratio = None;
    o.master.as_mut().unwrap().load_per_cpu = None;
    o.slaves[0].metrics.as_mut().unwrap().load_per_cpu = Some(50.0);
    let d = run(&cfg(), &o);
    assert!(!matches!(d, Decision::ScaleOut { .. }), "{d}");
    assert!(d.to_string().contains("the other slaves' median"), "{d}");
}

/// The rest of the evidence no slave can write: its own CPU as EC2 measured it backs its
/// report, and an ELB that queues or spills requests backs a busy fleet.
#[test]
fn aws_own_metrics_back_a_slaves_report_the_master_does_not() {
    // The master idle (its own work elsewhere), one slave really busy.
    let mut o = fleet(0.1, in_service(2, 0.1));
    o.slaves[0].metrics.as_mut().unwrap().apache_busy_ratio = Some(1.0);
    o.slaves[0].metrics.as_mut().unwrap().load_per_cpu = Some(1.0);
    let d = run(&cfg(), &o);
    assert!(has(&d, "Uncorroborated"), "{d}");
    let cut = d.explanation().final_count;
    // EC2 measured its CPU at 90 %: backed.
    o.evidence.cpu.insert("i-0".into(), 0.9);
    let d = run(&cfg(), &o);
    assert!(!has(&d, "Uncorroborated"), "{d}");
    assert!(d.explanation().final_count > cut, "{d}");
    // Another slave's CPU backs nothing of this one's.
    o.evidence.cpu.clear();
    o.evidence.cpu.insert("i-1".into(), 0.9);
    assert!(has(&run(&cfg(), &o), "Uncorroborated"));
    // The ELB queues requests: its backends cannot keep up.
    o.evidence.elb_saturated = Some("SurgeQueueLength 57".into());
    let d = run(&cfg(), &o);
    assert!(!has(&d, "Uncorroborated"), "{d}");
}

#[test]
fn probe_latency_scales_the_serving_hosts_like_an_object_metric() {
    let mut c = cfg();
    c.signals = vec![Signal::ApacheBusyRatio, Signal::ProbeLatency];
    c.targets.probe_latency_ms = 800.0;
    // Apache looks fine (at target), the site answers in 1.6 s: 3 serving hosts × 2 = 6 hosts.
    let mut o = fleet(0.5, in_service(2, 0.5));
    o.probe_latency = Some((at(-20), 1600.0));
    let d = run(&c, &o);
    assert!(matches!(d, Decision::ScaleOut { count: 3, .. }), "{d}");
    let r = &d.explanation().signals[1];
    assert_eq!(
        (r.signal, r.utilization, r.desired),
        (Signal::ProbeLatency, Some(1600.0), Some(5))
    );
    assert!(d.to_string().contains("probe_latency"), "{d}");

    // Fast, with Apache idle: both ask for fewer hosts.
    let mut o = fleet(0.1, in_service(2, 0.1));
    o.probe_latency = Some((at(-20), 100.0));
    assert!(matches!(run(&c, &o), Decision::ScaleIn { .. }));
    // The probe failed fast (an error page) or is stale: missing, so no scale-in on Apache alone.
    for probe in [None, Some((at(-3600), 100.0))] {
        o.probe_latency = probe;
        let d = run(&c, &o);
        assert!(matches!(d, Decision::Hold { .. }), "{d}");
        assert!(has(&d, "MetricsMissing"), "{d}");
    }
}

#[test]
fn a_probe_round_reads_as_its_slowest_answer_and_fast_failures_as_missing() {
    use crate::model::{probe_latency, ProbeResult};
    let r = |ms: f64, error: Option<&str>, timed_out: bool| ProbeResult {
        url: "http://x/".into(),
        at: at(0),
        status: Some(200),
        latency_ms: ms,
        error: error.map(str::to_string),
        timed_out,
    };
    assert_eq!(probe_latency(&[]), None);
    assert_eq!(
        probe_latency(&[r(120.0, None, false), r(900.0, None, false)]),
        Some((at(0), 900.0))
    );
    // A timeout is slowness: it counts as its full time.
    assert_eq!(
        probe_latency(&[r(120.0, None, false), r(5000.0, Some("timeout"), true)]),
        Some((at(0), 5000.0))
    );
    assert_eq!(
        probe_latency(&[r(120.0, None, false), r(3.0, Some("HTTP 503"), false)]),
        None
    );
    assert_eq!(probe_latency(&[r(f64::NAN, None, false)]), None);
}

/// A fleet of the master and two in-service slaves whose busy ratios add up to `total`, sampled
/// at `t`.
fn fleet_total(total: f64, t: i64) -> FleetObservation {
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
fn history_of(c: &PolicyConfig, from: f64, to: f64) -> History {
    let mut h = History::new();
    for i in 0..10 {
        let t = -300 + 30 * i;
        let total = from + (to - from) * i as f64 / 10.0;
        let d = decide(c, &fleet_total(total, t), &cap(), &h, at(t));
        h.record(c, at(t), &d);
    }
    h
}

#[test]
fn a_rising_load_is_met_one_lead_time_ahead_and_a_falling_one_never_scales_in_early() {
    let c = cfg(); // busy ratio, target 0.5; forecast on, lead 150 s until measured.
                   // Total 1.0 → 2.0 host-equivalents over five minutes: +1/300 per second.
    let h = history_of(&c, 1.0, 2.0);
    let d = decide(&c, &fleet_total(2.0, 0), &cap(), &h, at(0));
    // Now: ceil(2.0 / 0.5) = 4 hosts (3 slaves). In 150 s: 2.5 → 5 hosts → 4 slaves.
    assert!(matches!(d, Decision::ScaleOut { count: 2, .. }), "{d}");
    assert!(has(&d, "Forecast"), "{d}");
    assert!(
        d.to_string()
            .contains("forecast 0.83 in 150s (configured lead time)"),
        "{d}"
    );
    assert_eq!(
        d.explanation().signals[0]
            .forecast
            .map(|f| (f * 100.0).round()),
        Some(83.0)
    );

    // Measured lead times (300 s) replace the configured one.
    let mut h2 = h.clone();
    for secs in [280, 300, 320] {
        h2.record_lead(secs);
    }
    let d = decide(&c, &fleet_total(2.0, 0), &cap(), &h2, at(0));
    // 2.0 + 300/300 = 3.0 → 6 hosts → 5 slaves.
    assert_eq!(d.explanation().raw_desired, 5, "{d}");
    assert!(
        d.to_string().contains("in 300s (measured lead time)"),
        "{d}"
    );

    // The forecast is at most max_factor × now: 2.2 → 5 hosts → 4 slaves.
    let mut capped = c.clone();
    capped.forecast.max_factor = 1.1;
    let d = decide(&capped, &fleet_total(2.0, 0), &cap(), &h2, at(0));
    assert_eq!(d.explanation().raw_desired, 4, "{d}");

    // Off: what the load asks for now.
    let mut off = c.clone();
    off.forecast.enabled = false;
    let d = decide(&off, &fleet_total(2.0, 0), &cap(), &h, at(0));
    assert_eq!(d.explanation().raw_desired, 3, "{d}");
    assert!(!has(&d, "Forecast"));

    // Falling from 3.0 to 1.0: the forecast never asks for less than now.
    let h = history_of(&c, 3.0, 1.0);
    let with = decide(&c, &fleet_total(1.0, 0), &cap(), &h, at(0));
    let without = decide(&off, &fleet_total(1.0, 0), &cap(), &h, at(0));
    assert_eq!(
        with.explanation().raw_desired,
        without.explanation().raw_desired
    );
    assert!(!has(&with, "Forecast"), "{with}");
}

#[test]
fn a_trend_needs_enough_history_and_shrugs_off_an_odd_sample() {
    let c = cfg();
    let mut h = History::new();
    // Two points only: no trend.
    for (t, total) in [(-60, 1.0), (-30, 1.5)] {
        let d = decide(&c, &fleet_total(total, t), &cap(), &h, at(t));
        h.record(&c, at(t), &d);
    }
    assert_eq!(h.trend(Signal::ApacheBusyRatio, at(0), 300, 2.0, 3), None);
    // A flat load with one wild sample: the points do not agree on a rise, so no trend.
    let mut h = History::new();
    for i in 0..10 {
        let t = -300 + 30 * i;
        let total = if i == 7 { 2.9 } else { 1.0 };
        let d = decide(&c, &fleet_total(total, t), &cap(), &h, at(t));
        h.record(&c, at(t), &d);
    }
    assert_eq!(h.trend(Signal::ApacheBusyRatio, at(0), 300, 1.0, 3), None);
    // A steady rise with one wild sample: the slope is the rise's, not the outlier's.
    let mut h = History::new();
    for i in 0..10 {
        let t = -300 + 30 * i;
        let total = if i == 7 { 9.0 } else { 1.0 + 0.03 * i as f64 };
        let d = decide(&c, &fleet_total(total, t), &cap(), &h, at(t));
        h.record(&c, at(t), &d);
    }
    let slope = h
        .trend(Signal::ApacheBusyRatio, at(0), 300, 1.3, 3)
        .unwrap();
    assert!((slope - 0.001).abs() < 1e-6, "{slope}");
    // Points taken with another number of serving hosts are not part of the trend.
    assert_eq!(h.trend(Signal::ApacheBusyRatio, at(0), 300, 1.3, 4), None);
}

#[test]
fn a_planned_burst_is_a_floor_from_its_prewarm_and_the_cap_still_rules() {
    let window = |min: u32| crate::schedule::Window {
        name: "golf final".into(),
        min_slaves: min,
        from: at(-600),
        opens: at(300),
        closes: at(3600),
    };
    // Idle site, no slaves: the window's floor launches 5 ahead of its opening.
    let mut o = fleet(0.1, vec![]);
    o.scheduled = Some(window(5));
    let d = run(&cfg(), &o);
    assert!(matches!(d, Decision::ScaleOut { count: 5, .. }), "{d}");
    assert!(has(&d, "Scheduled"), "{d}");
    assert!(
        d.to_string()
            .contains("planned burst \"golf final\" opens in 300s"),
        "{d}"
    );
    // Inside the window an idle fleet is not scaled in below the floor...
    let mut o = fleet(0.1, in_service(6, 0.1));
    o.scheduled = Some(window(5));
    match run(&cfg(), &o) {
        Decision::ScaleIn { instances, .. } => assert_eq!(instances.len(), 1),
        other => panic!("{other}"),
    }
    // ...nor above max_slaves, nor past the day's cap.
    let mut c = cfg();
    c.max_slaves = 3;
    let mut o = fleet(0.1, vec![]);
    o.scheduled = Some(window(5));
    assert!(matches!(run(&c, &o), Decision::ScaleOut { count: 3, .. }));
    let mut ledger = cap();
    for i in 0..5 {
        ledger.record_attempt(&format!("i-{i}"), at(-100)).unwrap();
    }
    let d = decide(&cfg(), &o, &ledger, &History::new(), at(0));
    assert!(matches!(d, Decision::ScaleOut { count: 2, .. }), "{d}");
    assert!(has(&d, "CapLimited"), "{d}");
}

fn run_with(c: &PolicyConfig, h: &History) -> Decision {
    decide(c, &fleet_total(2.0, 0), &cap(), h, at(0))
}

#[test]
fn a_forecast_spends_at_most_a_third_of_the_cap_left() {
    let c = cfg();
    let mut h = history_of(&c, 1.0, 2.0);
    for secs in [300, 300, 300] {
        h.record_lead(secs);
    }
    // Now asks for 3 slaves (2 serve): 1 launch. The forecast (300 s ahead) wants 5.
    assert_eq!(run_with(&c, &h).explanation().raw_desired, 5);
    let mut ledger = cap();
    for i in 0..3 {
        ledger.record_attempt(&format!("i-{i}"), at(-1000)).unwrap();
    }
    // 4 left; 3 once the launch for now is made: a third of that is 1, so 3 + 1 = 4, not 5.
    let d = decide(&c, &fleet_total(2.0, 0), &ledger, &h, at(0));
    assert_eq!(d.explanation().raw_desired, 4, "{d}");
    // 2 left; 1 after the launch for now: no slave on the forecast.
    ledger.record_attempt("i-3", at(-1000)).unwrap();
    ledger.record_attempt("i-4", at(-1000)).unwrap();
    let d = decide(&c, &fleet_total(2.0, 0), &ledger, &h, at(0));
    assert_eq!(d.explanation().raw_desired, 3, "{d}");
    assert!(!has(&d, "Forecast"), "{d}");
}

/// The warm pool in the cap step: a stopped slave the day counts already starts at no new unit,
/// so a spent cap still allows it (reason WarmPool); one that has not run today needs a unit.
/// Scale-in keeps nothing "for the cap" that the pool has room for.
#[test]
fn warm_slaves_that_ran_today_come_back_past_a_spent_cap() {
    let mut l = CapLedger::new("Asia/Tokyo", 2, None).unwrap();
    for (k, id) in [("a#1", "i-w1"), ("a#2", "i-w2")] {
        l.record_attempt(k, at(-7200)).unwrap();
        l.bind(k, id).unwrap();
        l.record_ended(id, at(-3600)).unwrap();
    }
    let mut warm = vec![
        slave("i-w1", SlaveState::Stopped, -7200, None),
        slave("i-w2", SlaveState::Stopped, -7200, None),
    ];
    // Master at 2.0 busy / target 0.5: 4 hosts, 3 slaves wanted; cap 2/2 spent.
    let d = decide(
        &cfg(),
        &fleet(2.0, warm.clone()),
        &l,
        &History::new(),
        at(0),
    );
    assert!(matches!(d, Decision::ScaleOut { count: 2, .. }), "{d}");
    assert!(has(&d, "WarmPool") && has(&d, "CapLimited"), "{d}");
    assert!(
        d.to_string().contains("2 warm slave(s) that ran today"),
        "{d}"
    );
    // A stopped slave the day has not counted is no free start.
    warm.push(slave("i-w3", SlaveState::Stopped, -90_000, None));
    let d = decide(
        &cfg(),
        &fleet(2.0, warm[2..].to_vec()),
        &l,
        &History::new(),
        at(0),
    );
    assert!(matches!(d, Decision::Hold { .. }), "{d}");
    assert!(has(&d, "DailyCapReached"), "{d}");

    // Scale-in with the cap nearly spent: kept for the cap without a pool, released into it
    // when it has room.
    let c = keeping();
    let mut h = History::new();
    h.record(&c, at(-300), &run(&c, &fleet(1.0, in_service(3, 1.0))));
    let mut spent = cap();
    for i in 0..7 {
        spent.record_attempt(&format!("k{i}"), at(-3600)).unwrap();
    }
    let mut idle = fleet(0.1, in_service(3, 0.1));
    let d = decide(&c, &idle, &spent, &h, at(0));
    assert!(
        matches!(d, Decision::Hold { .. }) && has(&d, "KeepingForCap"),
        "{d}"
    );
    idle.warm_room = 2;
    let d = decide(&c, &idle, &spent, &h, at(0));
    assert!(
        matches!(&d, Decision::ScaleIn { instances, .. } if instances.len() == 2),
        "{d}"
    );
}

/// In the last `midnight_guard` before the cap resets, a launch on demand that is not acute
/// waits for the new day (a slave running past midnight counts on both); acute demand, a
/// fleet below its floor, or more time left launches as ever.
#[test]
fn launches_just_before_midnight_wait_unless_demand_is_acute() {
    let c = cfg(); // busy target 0.5; guard 10 m, acute at 1.5x by default
    let tokyo = |hm: &str| -> Timestamp {
        format!("2026-05-28T{hm}:00+09:00[Asia/Tokyo]")
            .parse::<jiff::ZonedDateTime>()
            .unwrap()
            .timestamp()
    };
    let fresh = |u: f64, now: Timestamp| {
        let mut o = fleet(u, vec![]);
        o.master.as_mut().unwrap().at = now;
        o
    };
    let at_2355 = tokyo("23:55");
    // Busy 0.6: 1.2x the target, wants a slave; not acute.
    let d = decide(&c, &fresh(0.6, at_2355), &cap(), &History::new(), at_2355);
    assert!(matches!(d, Decision::Hold { .. }), "{d}");
    assert!(has(&d, "MidnightDeferred"), "{d}");
    assert!(d.to_string().contains("300s before the cap resets"), "{d}");
    // Busy 0.8: 1.6x, acute.
    let d = decide(&c, &fresh(0.8, at_2355), &cap(), &History::new(), at_2355);
    assert!(matches!(d, Decision::ScaleOut { .. }), "{d}");
    // 23:45: outside the guard.
    let at_2345 = tokyo("23:45");
    let d = decide(&c, &fresh(0.6, at_2345), &cap(), &History::new(), at_2345);
    assert!(matches!(d, Decision::ScaleOut { .. }), "{d}");
    // Below the floor: the floor is kept whatever the hour.
    let mut floor = c.clone();
    floor.min_slaves = 1;
    let d = decide(
        &floor,
        &fresh(0.1, at_2355),
        &cap(),
        &History::new(),
        at_2355,
    );
    assert!(matches!(d, Decision::ScaleOut { count: 1, .. }), "{d}");
    // Turned off.
    let mut off = c.clone();
    off.midnight_guard = Dur::secs(0);
    let d = decide(&off, &fresh(0.6, at_2355), &cap(), &History::new(), at_2355);
    assert!(matches!(d, Decision::ScaleOut { .. }), "{d}");
}

/// The master does work no slave can take. Master 0.7, two slaves 0.4, target 0.5, tolerance
/// 0.1: the mean (0.5) says "at target", but the master runs 0.3 hotter; less twice the
/// tolerance (0.1: the slaves' numbers come later) 0.2 is counted as its own, so the shared
/// part must fall to 0.3 per host: ceil(3 x 0.4 / 0.3) = 4 hosts, 3 slaves. Master 0.9, slaves
/// 0.3: the counted 0.5 alone reaches the target, so it asks for 3 x 0.3 / 0.05 = 18 hosts
/// (max_slaves and the cap bound it later). Master and slaves alike, or no slave to compare
/// with: plain tracking.
#[test]
fn a_master_hotter_than_its_slaves_asks_for_the_hosts_that_cool_it() {
    let mk = |master: f64, slave: f64| {
        let mut o = fleet(master, in_service(2, slave));
        o.master.as_mut().unwrap().at = at(0);
        o
    };
    let d = run(&cfg(), &mk(0.7, 0.4));
    assert!(matches!(d, Decision::ScaleOut { count: 1, .. }), "{d}");
    assert_eq!(d.explanation().raw_desired, 3, "{d}");
    assert!(has(&d, "MasterBound"), "{d}");
    assert!(
        d.to_string()
            .contains("0.20 of it counted as work only the master does"),
        "{d}"
    );
    let d = run(&cfg(), &mk(0.9, 0.3));
    assert_eq!(d.explanation().raw_desired, 17, "{d}");
    // Even: plain target tracking (0.6 x 3 / 0.5 = 3.6 -> 4 hosts, 3 slaves).
    let d = run(&cfg(), &mk(0.6, 0.6));
    assert!(!has(&d, "MasterBound"), "{d}");
    assert_eq!(d.explanation().raw_desired, 3, "{d}");
    // No slave to compare with: plain target tracking.
    let d = run(&cfg(), &fleet(0.9, vec![]));
    assert!(!has(&d, "MasterBound"), "{d}");
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
