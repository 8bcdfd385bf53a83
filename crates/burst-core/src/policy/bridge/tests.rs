//! The bridge's rules (docs/bridge.md), each expected value worked out by hand from the model in
//! `bridge.rs`: a share s = 0.1 only the master serves; the master reads
//! v = s·L + (1 − s)·L·cost/n.

use crate::config::BridgeConfig;
use crate::policy::tests::*;

/// Levels costing 0.4 and 0.2; enter above 0.85, exit at 0.75; a minute's dwell, 10-minute
/// episodes, 5 minutes' cool-down, 30 s of grace.
fn on() -> BridgeConfig {
    BridgeConfig {
        enabled: true,
        costs: vec![0.4, 0.2],
        master_only_share: 0.1,
        signal: Signal::ApacheBusyRatio,
        enter_utilization: 0.85,
        exit_utilization: 0.75,
        min_dwell: Dur::secs(60),
        max_episode: Dur::secs(600),
        cooldown: Dur::secs(300),
        grace: Dur::secs(30),
    }
}

/// The master alone reading busy `v` at `level`.
fn master_at(v: f64, level: u8) -> FleetObservation {
    let mut o = fleet(v, vec![]);
    if let Some(m) = o.master.as_mut() {
        m.bridge_level = level;
    }
    o
}

/// A history whose last decision left the bridge at `level`, changed `since` seconds ago, in
/// an episode begun `episode` seconds ago.
fn left_at(level: u8, since: i64, episode: i64) -> History {
    let mut h = History::new();
    h.bridge = BridgeState {
        level,
        since: Some(at(-since)),
        episode_start: (level > 0).then(|| at(-episode)),
        cooling_until: None,
        manual: false,
        master_load: None,
        master_requests: None,
    };
    h
}

fn decide_with(b: &BridgeConfig, o: &FleetObservation, l: &CapLedger, h: &History) -> Decision {
    decide(&cfg(), b, o, l, h, at(0))
}

fn level(d: &Decision) -> u8 {
    d.explanation().bridge.level
}

#[test]
fn no_bridge_while_capacity_that_serves_in_time_is_on_the_way() {
    // The master alone is saturated: L >= 1 / (0.1 + 0.9) = 1. A slave launched 130 s ago
    // serves at +20 s (lead time 150 s), within the 30 s grace: with it the master would read
    // 0.1 + 0.9 / 2 = 0.55, under 0.85.
    let mut o = fleet(1.0, vec![slave("i-a", SlaveState::Syncing, -130, None)]);
    let d = decide_with(&on(), &o, &cap(), &History::new());
    assert_eq!(level(&d), 0, "{d}");
    assert!(has(&d, "BridgeCovered"), "{d}");
    // Launched 100 s ago it serves at +50 s, past the grace: the master alone reads 1.0, and
    // at level 1 it would read 0.1 + 0.9 × 0.4 = 0.46.
    o.slaves[0].launched_at = at(-100);
    let d = decide_with(&on(), &o, &cap(), &History::new());
    assert_eq!(level(&d), 1, "{d}");
    assert!(has(&d, "BridgeOn"), "{d}");
    // Launched 200 s ago it was due at -50 s: overdue past the grace, it is not counted on.
    o.slaves[0].launched_at = at(-200);
    let d = decide_with(&on(), &o, &cap(), &History::new());
    assert_eq!(level(&d), 1, "{d}");
}

#[test]
fn the_first_seconds_of_a_burst_bridge_before_any_launch_and_the_launch_still_goes() {
    // Nothing on the way: the bridge goes on in the same decision as the scale-out.
    let d = decide_with(&on(), &master_at(1.0, 0), &cap(), &History::new());
    assert_eq!(level(&d), 1, "{d}");
    assert!(matches!(d, Decision::ScaleOut { .. }), "{d}");
}

#[test]
fn the_bridge_when_the_cap_is_spent() {
    // Two slaves and the master at 0.95 (n = 3): L = 0.95 / (0.1 + 0.9 / 3) = 2.375. At
    // level 1: 0.2375 + 0.9 × 2.375 × 0.4 / 3 = 0.5225, at most 0.85.
    let o = fleet(0.95, in_service(2, 0.95));
    let d = decide_with(&on(), &o, &spent(7), &History::new());
    assert!(has(&d, "DailyCapReached"), "{d}");
    assert!(matches!(d, Decision::Hold { .. }), "{d}");
    assert_eq!(level(&d), 1, "{d}");
    // Without the bridge the same decision holds at level 0.
    let d = decide_with(&BridgeConfig::default(), &o, &spent(7), &History::new());
    assert_eq!(level(&d), 0);
}

#[test]
fn still_short_at_a_level_raises_the_next() {
    // At level 1 the master alone reads 0.9: L = 0.9 / 0.46 = 1.957; at level 2 it would read
    // 0.1957 + 0.9 × 1.957 × 0.2 = 0.548.
    let d = decide_with(&on(), &master_at(0.9, 1), &cap(), &left_at(1, 20, 20));
    assert_eq!(level(&d), 2, "{d}");
    assert!(has(&d, "BridgeRaised"), "{d}");
}

#[test]
fn hysteresis_between_enter_and_exit() {
    // Full-cost L = 0.8 (the master alone reads L at level 0, 0.46 L at level 1): between the
    // exit (0.75) and the enter (0.85) the level stays what it was.
    let d = decide_with(&on(), &master_at(0.8, 0), &cap(), &History::new());
    assert_eq!(level(&d), 0, "{d}");
    let d = decide_with(
        &on(),
        &master_at(0.8 * 0.46, 1),
        &cap(),
        &left_at(1, 300, 300),
    );
    assert_eq!(level(&d), 1, "{d}");
    assert!(has(&d, "BridgeHeld"), "{d}");
    // L = 0.7: at or under the exit, off.
    let d = decide_with(
        &on(),
        &master_at(0.7 * 0.46, 1),
        &cap(),
        &left_at(1, 300, 300),
    );
    assert_eq!(level(&d), 0, "{d}");
    assert!(has(&d, "BridgeOff"), "{d}");
}

#[test]
fn a_level_is_held_its_minimum_dwell_before_it_is_lowered() {
    let calm = master_at(0.5 * 0.46, 1);
    let d = decide_with(&on(), &calm, &cap(), &left_at(1, 30, 30));
    assert_eq!(level(&d), 1, "{d}");
    assert!(
        d.explanation().reasons.iter().any(|r| matches!(
            r,
            Reason::BridgeHeld {
                dwell_left_secs: 30,
                ..
            }
        )),
        "{d}"
    );
    let d = decide_with(&on(), &calm, &cap(), &left_at(1, 60, 60));
    assert_eq!(level(&d), 0, "{d}");
}

#[test]
fn lowering_counts_only_hosts_that_serve_now() {
    // A slave syncing that serves within the grace stops a raise, never lowers a level.
    let mut o = master_at(1.5 * 0.46, 1);
    o.slaves = vec![slave("i-a", SlaveState::Syncing, -140, None)];
    // Full-cost L = 1.5; with the arriving slave, level 0 would read 0.15 + 1.35 / 2 = 0.825
    // (under the enter, so no raise), but alone it reads 1.5 at level 0 and 0.69 at level 1:
    // held at 1.
    let d = decide_with(&on(), &o, &cap(), &left_at(1, 300, 300));
    assert_eq!(level(&d), 1, "{d}");
}

#[test]
fn an_episode_that_runs_its_maximum_ends_and_cools_down() {
    let hot = master_at(0.9, 2);
    let d = decide_with(&on(), &hot, &cap(), &left_at(2, 100, 600));
    assert_eq!(level(&d), 0, "{d}");
    assert!(has(&d, "BridgeExpired"), "{d}");
    let mut h = History::new();
    h.record(&cfg(), at(0), &d);
    assert_eq!(h.bridge.cooling_until, Some(at(300)));
    // 100 s later, still hot at full service: cooling, no level.
    let hot0 = sampled_at(&master_at(1.0, 0), at(100));
    let d = decide(&cfg(), &on(), &hot0, &cap(), &h, at(100));
    assert_eq!(level(&d), 0, "{d}");
    assert!(
        d.explanation()
            .reasons
            .iter()
            .any(|r| matches!(r, Reason::BridgeCooling { left_secs: 200, .. })),
        "{d}"
    );
    // Once the cool-down is over, a new episode.
    let hot0 = sampled_at(&master_at(1.0, 0), at(300));
    let d = decide(&cfg(), &on(), &hot0, &cap(), &h, at(300));
    assert_eq!(level(&d), 1, "{d}");
    assert_eq!(d.explanation().bridge.episode_start, Some(at(300)));
}

#[test]
fn a_level_set_by_hand_wins_until_it_expires() {
    let mut o = master_at(0.1, 0);
    o.bridge_manual = Some(ManualBridge {
        level: 2,
        until: at(600),
        by: "ops".into(),
    });
    let d = decide_with(&on(), &o, &cap(), &History::new());
    assert_eq!(level(&d), 2, "{d}");
    assert!(d.explanation().bridge.manual);
    assert!(has(&d, "BridgeManual"), "{d}");
    // Expired: the rule decides again (idle: off).
    o.bridge_manual.as_mut().unwrap().until = at(-1);
    let d = decide_with(&on(), &o, &cap(), &left_at(2, 300, 300));
    assert_eq!(level(&d), 0, "{d}");
}

#[test]
fn no_fresh_master_sample_holds_the_level() {
    let mut o = master_at(0.3, 1);
    o.master = None;
    let d = decide_with(&on(), &o, &cap(), &left_at(1, 300, 60));
    assert_eq!(level(&d), 1, "{d}");
    assert!(has(&d, "BridgeBlind"), "{d}");
}

#[test]
fn turned_off_in_the_config_ends_a_level() {
    let d = decide_with(
        &BridgeConfig::default(),
        &master_at(0.9, 1),
        &cap(),
        &left_at(1, 10, 10),
    );
    assert_eq!(level(&d), 0, "{d}");
    assert!(has(&d, "BridgeDisabled"), "{d}");
}

#[test]
fn scaling_reads_degraded_hosts_at_full_cost() {
    // The master alone at level 1 reads 0.46 × L; with L = 1 it is the master at 1.0 at level
    // 0. Target 0.5: ceil(1.0 / 0.5) = 2 hosts, one slave, either way.
    let full = run(&cfg(), &master_at(1.0, 0));
    let degraded = decide_with(&on(), &master_at(0.46, 1), &cap(), &left_at(1, 10, 10));
    assert_eq!(full.explanation().raw_desired, 1, "{full}");
    assert_eq!(degraded.explanation().raw_desired, 1, "{degraded}");
    assert!(has(&degraded, "FullCost"), "{degraded}");
    // Two slaves at level 2 (cost 0.2) reading 0.12 carry 0.6 each at full cost; the master
    // (n = 3) reads 0.1 L + 0.9 L × 0.2 / 3 = 0.16 L: L = 2.0 reads 0.32, and 0.2 + 0.6 = 0.8
    // at full cost. The decision is the one on those full-cost readings.
    let mut o = master_at(0.32, 2);
    o.slaves = in_service(2, 0.12);
    for s in &mut o.slaves {
        s.metrics.as_mut().unwrap().bridge_level = 2;
    }
    let d = decide_with(&on(), &o, &cap(), &left_at(2, 10, 10));
    let same = run(&cfg(), &fleet(0.8, in_service(2, 0.6)));
    assert_eq!(
        d.explanation().raw_desired,
        same.explanation().raw_desired,
        "{d}\n{same}"
    );
    let (u, v) = (d.explanation().utilization, same.explanation().utilization);
    assert!((u.unwrap() - v.unwrap()).abs() < 1e-9, "{u:?} {v:?}");
    assert!(matches!(d, Decision::ScaleOut { .. }), "{d}");
}

#[test]
fn a_load_average_that_spans_a_level_change_is_read_at_the_mix_of_both_costs() {
    // The kernel's load average keeps e^(-t/60) of what came t seconds before: 100 s after
    // the master went from level 0 to level 1 (cost 0.4), its load average still carries
    // w = e^(-100/60) = 0.189 of full-cost work, so its spread part cost 0.4 (1 - w) + w.
    let w = (-100.0f64 / 60.0).exp();
    let sample = |level: u8, from: u8| {
        let mut h = m(0.3, 0);
        h.bridge_level = level;
        h.bridge_change = Some(crate::model::LevelChange { from, at: at(-100) });
        vec![("master", Some(h))]
    };
    let mut hosts = sample(1, 0);
    let (_, why) = super::full_cost(&on(), &mut hosts, 1, &BridgeState::default());
    let h = hosts[0].1.unwrap();
    // The master alone (n = 1): v = 0.1 L + 0.9 L c, and at full cost it reads L.
    let load = 0.3 / (0.1 + 0.9 * (0.4 * (1.0 - w) + w));
    assert!(
        (h.load_per_cpu.unwrap() - load).abs() < 1e-9,
        "{h:?} against {load}"
    );
    // The busy ratio is instantaneous: level 1's cost alone.
    let busy = 0.3 / (0.1 + 0.9 * 0.4);
    assert!((h.apache_busy_ratio.unwrap() - busy).abs() < 1e-9, "{h:?}");
    assert!(matches!(&why[..], [Reason::FullCost { .. }]), "{why:?}");
    // Back at level 0 after an episode, the load average still carries w of level 1's cost:
    // read up, never down (a release is never hastened by the cheap minutes just past).
    let mut hosts = sample(0, 1);
    super::full_cost(&on(), &mut hosts, 1, &BridgeState::default());
    let h = hosts[0].1.unwrap();
    let load = 0.3 / (0.1 + 0.9 * ((1.0 - w) + 0.4 * w));
    assert!(
        (h.load_per_cpu.unwrap() - load).abs() < 1e-9,
        "{h:?} against {load}"
    );
    assert!(load > 0.3);
    assert_eq!(h.apache_busy_ratio, Some(0.3));
}

#[test]
fn at_a_level_the_master_is_read_by_its_request_rate_not_its_cheap_workers() {
    // At full service, settled, 20 requests a second kept 0.4 of the workers busy: a request
    // costs 0.02 busy-seconds. At a level costing a hundredth, one busy worker in eight (the
    // mod_status request itself) would read 12.5 times the workers at full cost; the rate
    // says 30 requests a second, 0.6 at full cost: the level can come down (at most 0.75 is
    // needed to lower to 0 here).
    let b = BridgeConfig {
        costs: vec![0.01],
        master_only_share: 0.0,
        ..on()
    };
    let sample = |t: i64, total: u64, busy: f64, level: u8| {
        let mut h = m(busy, t);
        h.total_accesses = Some(total);
        h.bridge_level = level;
        h
    };
    let mut h = History::new();
    let decide_at = |t: i64, o: FleetObservation, h: &mut History| {
        let d = decide(&cfg(), &b, &o, &cap(), h, at(t));
        h.record(&cfg(), at(t), &d);
        d
    };
    for (i, t) in [-300, -285, -270].into_iter().enumerate() {
        let mut o = master_at(0.4, 0);
        o.master = Some(sample(t, 1000 + 300 * i as u64, 0.4, 0));
        decide_at(t, o, &mut h);
    }
    let learned = h.bridge.master_requests.unwrap().per_request.unwrap();
    assert!((learned - 0.02).abs() < 1e-9, "{learned}");
    // The crowd came and went; the master serves at level 1 since a minute, 30 requests a
    // second, one worker busy.
    h.bridge = BridgeState {
        level: 1,
        since: Some(at(-60)),
        episode_start: Some(at(-60)),
        master_requests: h.bridge.master_requests,
        ..BridgeState::default()
    };
    let mut o = master_at(0.125, 1);
    o.master = Some(sample(-15, 5000, 0.125, 1));
    decide_at(-15, o, &mut h);
    let mut o = master_at(0.125, 1);
    o.master = Some(sample(0, 5450, 0.125, 1));
    let d = decide_at(0, o, &mut h);
    assert_eq!(level(&d), 0, "{d}");
    assert!(has(&d, "BridgeOff"), "{d}");
}

#[test]
fn a_bridge_on_the_load_average_reads_it_unmixed() {
    // signal = load_per_cpu: the master alone at level 1 reads 0.3. As if settled at level 1,
    // that is 0.3 / 0.46 = 0.65 at full cost, under the 0.75 exit. But 15 s before it read 0.6
    // and stood at 1.2 at full cost: the kernel's mean keeps e = e^(-15/60) = 0.78 of that,
    // 0.6 × 0.78 = 0.47 already above 0.3, so nothing ran since (u = 0) and at full cost it now
    // stands at 1.2 × 0.78 = 0.93: the level holds.
    let b = BridgeConfig {
        signal: Signal::LoadPerCpu,
        ..on()
    };
    let mut h = left_at(1, 300, 300);
    h.bridge.master_load = Some(super::LoadTrack {
        at: at(-15),
        raw: 0.6,
        full: 1.2,
    });
    let mut o = master_at(0.3, 1);
    if let Some(m) = o.master.as_mut() {
        m.bridge_change = Some(crate::model::LevelChange {
            from: 0,
            at: at(-100),
        });
    }
    let d = decide(&cfg(), &b, &o, &cap(), &h, at(0));
    assert_eq!(level(&d), 1, "{d}");
    assert!(has(&d, "BridgeHeld"), "{d}");
    // Without the sample before, the mix of the two costs by time stands in: 100 s after the
    // change, e^(-100/60) = 0.19 of full cost is left in the mean, so the spread part cost
    // 0.4 × 0.81 + 0.19 = 0.51: 0.3 / (0.1 + 0.9 × 0.51) = 0.53, under the exit: off.
    h.bridge.master_load = None;
    let d = decide(&cfg(), &b, &o, &cap(), &h, at(0));
    assert_eq!(level(&d), 0, "{d}");
}
