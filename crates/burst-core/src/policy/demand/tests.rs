//! Stage tests: demand.

use crate::policy::tests::*;

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
        bridge_manual: None,
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
        let d = decide(&c, &Default::default(), &hot, &cap(), &h, at(t));
        assert!(matches!(d, Decision::Hold { .. }), "t={t}: {d}");
        assert!(has(&d, "ScaleOutSustaining"));
        h.record(&c, at(t), &d);
    }
    let d = decide(&c, &Default::default(), &hot, &cap(), &h, at(60));
    assert!(matches!(d, Decision::ScaleOut { count: 1, .. }), "{d}");
    assert!(has(&d, "AboveThreshold"));
    // A dip resets the streak.
    let mut h = History::new();
    h.record(
        &c,
        at(0),
        &decide(&c, &Default::default(), &hot, &cap(), &h, at(0)),
    );
    let calm = fleet(0.5, in_service(1, 0.5));
    let d = decide(&c, &Default::default(), &calm, &cap(), &h, at(15));
    assert!(has(&d, "BetweenThresholds"), "{d}");
    h.record(&c, at(15), &d);
    let d = decide(&c, &Default::default(), &hot, &cap(), &h, at(60));
    assert!(has(&d, "ScaleOutSustaining"), "{d}");
    // Scale-in after its own window.
    let mut h = History::new();
    let cold = fleet(0.1, in_service(2, 0.1));
    for t in (0..120).step_by(15) {
        let d = decide(&c, &Default::default(), &cold, &cap(), &h, at(t));
        assert!(has(&d, "ScaleInSustaining"), "t={t}: {d}");
        h.record(&c, at(t), &d);
    }
    let d = decide(&c, &Default::default(), &cold, &cap(), &h, at(120));
    assert!(matches!(d, Decision::ScaleIn { .. }), "{d}");
    assert!(has(&d, "BelowThreshold"));
    // Missing metrics block the scale-in.
    let mut part = cold.clone();
    part.slaves[0].metrics = None;
    let d = decide(&c, &Default::default(), &part, &cap(), &h, at(120));
    assert!(matches!(d, Decision::Hold { .. }), "{d}");
    assert!(has(&d, "SomeMetricsMissing"));
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

#[test]
fn a_rising_load_is_met_one_lead_time_ahead_and_a_falling_one_never_scales_in_early() {
    let c = cfg(); // busy ratio, target 0.5; forecast on, lead 150 s until measured.
                   // Total 1.0 → 2.0 host-equivalents over five minutes: +1/300 per second.
    let h = history_of(&c, 1.0, 2.0);
    let d = decide(
        &c,
        &Default::default(),
        &fleet_total(2.0, 0),
        &cap(),
        &h,
        at(0),
    );
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
    let d = decide(
        &c,
        &Default::default(),
        &fleet_total(2.0, 0),
        &cap(),
        &h2,
        at(0),
    );
    // 2.0 + 300/300 = 3.0 → 6 hosts → 5 slaves.
    assert_eq!(d.explanation().raw_desired, 5, "{d}");
    assert!(
        d.to_string().contains("in 300s (measured lead time)"),
        "{d}"
    );

    // The forecast is at most max_factor × now: 2.2 → 5 hosts → 4 slaves.
    let mut capped = c.clone();
    capped.forecast.max_factor = 1.1;
    let d = decide(
        &capped,
        &Default::default(),
        &fleet_total(2.0, 0),
        &cap(),
        &h2,
        at(0),
    );
    assert_eq!(d.explanation().raw_desired, 4, "{d}");

    // Off: what the load asks for now.
    let mut off = c.clone();
    off.forecast.enabled = false;
    let d = decide(
        &off,
        &Default::default(),
        &fleet_total(2.0, 0),
        &cap(),
        &h,
        at(0),
    );
    assert_eq!(d.explanation().raw_desired, 3, "{d}");
    assert!(!has(&d, "Forecast"));

    // Falling from 3.0 to 1.0: the forecast never asks for less than now.
    let h = history_of(&c, 3.0, 1.0);
    let with = decide(
        &c,
        &Default::default(),
        &fleet_total(1.0, 0),
        &cap(),
        &h,
        at(0),
    );
    let without = decide(
        &off,
        &Default::default(),
        &fleet_total(1.0, 0),
        &cap(),
        &h,
        at(0),
    );
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
        let d = decide(
            &c,
            &Default::default(),
            &fleet_total(total, t),
            &cap(),
            &h,
            at(t),
        );
        h.record(&c, at(t), &d);
    }
    assert_eq!(h.trend(Signal::ApacheBusyRatio, at(0), 300, 2.0, 3), None);
    // A flat load with one wild sample: the points do not agree on a rise, so no trend.
    let mut h = History::new();
    for i in 0..10 {
        let t = -300 + 30 * i;
        let total = if i == 7 { 2.9 } else { 1.0 };
        let d = decide(
            &c,
            &Default::default(),
            &fleet_total(total, t),
            &cap(),
            &h,
            at(t),
        );
        h.record(&c, at(t), &d);
    }
    assert_eq!(h.trend(Signal::ApacheBusyRatio, at(0), 300, 1.0, 3), None);
    // A steady rise with one wild sample: the slope is the rise's, not the outlier's.
    let mut h = History::new();
    for i in 0..10 {
        let t = -300 + 30 * i;
        let total = if i == 7 { 9.0 } else { 1.0 + 0.03 * i as f64 };
        let d = decide(
            &c,
            &Default::default(),
            &fleet_total(total, t),
            &cap(),
            &h,
            at(t),
        );
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
    let d = decide(
        &c,
        &Default::default(),
        &fleet_total(2.0, 0),
        &ledger,
        &h,
        at(0),
    );
    assert_eq!(d.explanation().raw_desired, 4, "{d}");
    // 2 left; 1 after the launch for now: no slave on the forecast.
    ledger.record_attempt("i-3", at(-1000)).unwrap();
    ledger.record_attempt("i-4", at(-1000)).unwrap();
    let d = decide(
        &c,
        &Default::default(),
        &fleet_total(2.0, 0),
        &ledger,
        &h,
        at(0),
    );
    assert_eq!(d.explanation().raw_desired, 3, "{d}");
    assert!(!has(&d, "Forecast"), "{d}");
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
fn stage_desired_counts_hosts_for_the_load_and_counts_a_silent_host_idle_going_up() {
    use crate::policy::demand::{desired, Ahead};
    use crate::policy::Fleet;
    let c = cfg(); // apache_busy_ratio, target 0.5
    let busy = m(1.0, 0);
    let hist = History::new();
    let ahead = Ahead {
        probe: None,
        hist: &hist,
        now: at(0),
        cap_remaining: 7,
    };
    let one = Fleet {
        in_service: 1,
        on_the_way: 0,
        draining: 0,
        current: 1,
    };
    // Two hosts at 1.0 carry 2.0: four hosts at 0.5, so three slaves.
    let hosts = [("master", Some(&busy)), ("i-0", Some(&busy))];
    let (d, why) = desired(&c, &hosts, &ahead, one);
    assert_eq!((d.raw, d.utilization), (3, Some(1.0)));
    assert!(
        matches!(why.as_slice(), [Reason::AboveTarget { .. }]),
        "{why:?}"
    );
    // The slave reports nothing: counted idle on the way up, 1.0 over two hosts is the target
    // itself, so the fleet holds, and says who was missing.
    let hosts = [("master", Some(&busy)), ("i-0", None)];
    let (d, why) = desired(&c, &hosts, &ahead, one);
    assert_eq!(d.raw, 1);
    assert!(
        matches!(why.as_slice(),
            [Reason::SomeMetricsMissing { hosts }, Reason::WithinTolerance { .. }]
            if hosts == &["i-0"]),
        "{why:?}"
    );
}
