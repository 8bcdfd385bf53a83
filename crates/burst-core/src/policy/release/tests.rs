//! Stage tests: release.

use crate::policy::tests::*;

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
        let d = decide(
            &c,
            &Default::default(),
            &idle,
            &spent(2),
            &needed_at(-unneeded),
            at(0),
        );
        assert_eq!(released(&d), n, "unneeded {unneeded}s: {d}");
        assert_eq!(has(&d, "KeepingForCap"), n < 3, "{d}");
    }
    // One left (r = 1): the first costs 150 + 3600, the others a whole unit, 7350.
    for (unneeded, n) in [(3749, 0), (3750, 1), (7349, 1), (7350, 3)] {
        let d = decide(
            &c,
            &Default::default(),
            &idle,
            &spent(6),
            &needed_at(-unneeded),
            at(0),
        );
        assert_eq!(released(&d), n, "unneeded {unneeded}s: {d}");
    }
    // None left: all three are kept for the whole unit.
    let d = decide(
        &c,
        &Default::default(),
        &idle,
        &spent(7),
        &needed_at(-7349),
        at(0),
    );
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
    let d = decide(
        &m,
        &Default::default(),
        &idle,
        &spent(5),
        &needed_at(-3749),
        at(0),
    );
    assert_eq!(released(&d), 0, "{d}");
    // A measured lead time counts instead of the default: three launches of 600 s.
    let mut h = needed_at(-3749);
    for _ in 0..3 {
        h.record_lead(600);
    }
    let d = decide(&c, &Default::default(), &idle, &spent(6), &h, at(0));
    assert_eq!(released(&d), 0, "lead 600 + 3600 > 3749: {d}");
    // Never needed (an agent started over existing slaves): nothing to keep for.
    let d = decide(
        &c,
        &Default::default(),
        &idle,
        &spent(7),
        &History::new(),
        at(0),
    );
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
    let busy = decide(
        &c,
        &Default::default(),
        &fleet(1.0, in_service(2, 1.0)),
        &l,
        &h,
        at(-60),
    );
    h.record(&c, at(-60), &busy);
    let idle = fleet(0.1, in_service(2, 0.1));
    // Two slaves kept a minute at a time: 120 s a decision, 600 s after five decisions.
    let mut t = 0;
    for _ in 0..5 {
        let d = decide(&c, &Default::default(), &idle, &l, &h, at(t));
        assert!(has(&d, "KeepingForCap"), "at {t}: {d}");
        h.record(&c, at(t), &d);
        t += 60;
    }
    assert_eq!(h.kept_today(at(t)), 600);
    let d = decide(&c, &Default::default(), &idle, &l, &h, at(t));
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
        let d = decide(&c, &Default::default(), &o, &l, &h, at(t));
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
    let d = decide(
        &c,
        &Default::default(),
        &fleet(0.1, in_service(3, 0.1)),
        &cap(),
        &h,
        at(0),
    );
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
    let d = decide(
        &c,
        &Default::default(),
        &fleet(0.1, in_service(3, 0.1)),
        &spent,
        &h,
        at(0),
    );
    assert_eq!(released(&d), 1, "one over max_slaves, the rest kept: {d}");
    assert!(has(&d, "KeepingForCap"), "{d}");

    let c = keeping();
    let mut budget = CapLedger::new("Asia/Tokyo", 7, Some(1.0)).unwrap();
    budget.record_attempt("k0", at(-7200)).unwrap();
    assert!(budget.status(at(0)).instance_hours >= 1.0);
    let d = decide(
        &c,
        &Default::default(),
        &fleet(0.1, in_service(3, 0.1)),
        &budget,
        &h,
        at(0),
    );
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
    let busy = decide(
        &c,
        &Default::default(),
        &fleet(1.0, in_service(3, 1.0)),
        &l,
        &h,
        t(-300),
    );
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
    let d = decide(&c, &Default::default(), &idle, &l, &h, now);
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
    let busy = decide(
        &c,
        &Default::default(),
        &fleet(1.0, in_service(3, 1.0)),
        &l,
        &h_800,
        t(-800),
    );
    h_800.record(&c, t(-800), &busy);
    let d = decide(&c, &Default::default(), &draining, &l, &h_800, t_800);
    assert_eq!(d.explanation().cap.resets_in_secs, 800);
    assert!(has(&d, "KeepEndsBeforeMidnight"), "{d}");
    draining.drain_secs = 0;
    let d = decide(&c, &Default::default(), &draining, &l, &h_800, t_800);
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
        &Default::default(),
        &fleet(1.0, in_service(3, 1.0)),
        &l,
        &h_earlier,
        t(-1200),
    );
    h_earlier.record(&c, t(-1200), &busy);
    let d = decide(
        &c,
        &Default::default(),
        &idle_earlier,
        &l,
        &h_earlier,
        earlier,
    );
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
fn stage_release_takes_victims_old_enough_and_nothing_when_not_scaling_in() {
    use crate::policy::holds::CapView;
    use crate::policy::release::release;
    let mut c = cfg();
    c.min_lifetime = Dur::secs(600);
    let o = fleet(
        0.1,
        vec![
            slave("i-old", SlaveState::InService, -3600, Some(0.1)),
            slave("i-new", SlaveState::InService, -60, Some(0.1)),
        ],
    );
    let view = CapView::of(&o, &cap(), at(0));
    let (r, why) = release(&c, &o, &History::new(), &view, at(0), 2, 0);
    assert_eq!(r.victims, ["i-old"]);
    assert_eq!(r.beyond_pool, 1);
    assert_eq!(
        why,
        [Reason::NoVictimOldEnough {
            min_lifetime_secs: 600
        }]
    );
    let (r, why) = release(&c, &o, &History::new(), &view, at(0), 2, 2);
    assert!(r.victims.is_empty() && why.is_empty());
}
