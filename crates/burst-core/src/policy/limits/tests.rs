//! Stage tests: limits.

use crate::policy::tests::*;

#[test]
fn stabilization_windows() {
    let mut c = cfg();
    c.scale_in_stabilization = Dur::secs(300);
    c.scale_out_stabilization = Dur::secs(60);
    let mut h = History::new();
    // A high recommendation 100 s ago keeps the fleet up (in: highest of the window).
    let high = run(&c, &fleet(0.9, in_service(2, 0.9)));
    h.record(&c, at(-100), &high);
    let d = decide(
        &c,
        &Default::default(),
        &fleet(0.2, in_service(2, 0.2)),
        &cap(),
        &h,
        at(0),
    );
    assert!(matches!(d, Decision::Hold { .. }), "{d}");
    assert!(has(&d, "ScaleInStabilizing"));
    // Out: the lowest recommendation of the last 60 s.
    let mut h = History::new();
    let low = run(&c, &fleet(0.5, in_service(2, 0.5)));
    h.record(&c, at(-30), &low);
    let d = decide(
        &c,
        &Default::default(),
        &fleet(0.9, in_service(2, 0.9)),
        &cap(),
        &h,
        at(0),
    );
    assert!(matches!(d, Decision::Hold { .. }), "{d}");
    assert!(has(&d, "ScaleOutStabilizing"));
    // Outside the window it no longer counts.
    let d = decide(
        &c,
        &Default::default(),
        &fleet(0.9, in_service(2, 0.9)),
        &cap(),
        &h,
        at(61),
    );
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
    let d = decide(
        &c,
        &Default::default(),
        &fleet(2.0, in_service(1, 2.0)),
        &cap(),
        &h,
        at(0),
    );
    assert!(has(&d, "CooldownActive"), "{d}");
    assert!(matches!(d, Decision::Hold { .. }));
    assert!(
        d.to_string().contains("scale-out cooldown: 60s left"),
        "{d}"
    );
    // Scale-in waits scale_in_cooldown after the scale-out too.
    let d = decide(
        &c,
        &Default::default(),
        &fleet(0.1, in_service(3, 0.1)),
        &cap(),
        &h,
        at(300),
    );
    assert!(matches!(d, Decision::Hold { .. }), "{d}");
    assert!(
        d.to_string().contains("scale-in cooldown: 240s left"),
        "{d}"
    );
    let d = decide(
        &c,
        &Default::default(),
        &fleet(0.1, in_service(3, 0.1)),
        &cap(),
        &h,
        at(600),
    );
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
    let d = decide(
        &cfg(),
        &Default::default(),
        &o,
        &ledger,
        &History::new(),
        at(0),
    );
    assert!(matches!(d, Decision::ScaleOut { count: 2, .. }), "{d}");
    assert!(has(&d, "CapLimited"), "{d}");
}

#[test]
fn stage_stabilize_passes_the_recommendation_through_with_no_history() {
    use crate::policy::limits::stabilize;
    let mut c = cfg();
    c.scale_out_stabilization = Dur::secs(60);
    c.scale_in_stabilization = Dur::secs(300);
    assert_eq!(stabilize(&c, &History::new(), at(0), 2, 5), (5, vec![]));
    assert_eq!(stabilize(&c, &History::new(), at(0), 5, 2), (2, vec![]));
}

#[test]
fn stage_rate_limit_holds_in_a_cooldown_and_steps_at_most_max_step() {
    use crate::policy::limits::rate_limit;
    let mut c = cfg();
    c.scale_out_cooldown = Dur::secs(120);
    c.max_step_out = 2;
    let mut h = History::new();
    assert_eq!(
        rate_limit(&c, &h, at(0), 1, 9),
        (
            3,
            vec![Reason::MaxStep {
                direction: Direction::Out,
                step: 2
            }]
        )
    );
    h.last_scale_out = Some(at(-90));
    assert_eq!(
        rate_limit(&c, &h, at(0), 1, 9),
        (
            1,
            vec![Reason::CooldownActive {
                direction: Direction::Out,
                remaining_secs: 30
            }]
        )
    );
    // Nothing to limit when the count does not change.
    assert_eq!(rate_limit(&c, &h, at(0), 4, 4), (4, vec![]));
}

#[test]
fn stage_bound_clamps_to_min_and_max_and_says_which() {
    use crate::policy::limits::bound;
    let mut c = cfg();
    c.min_slaves = 2;
    c.max_slaves = 4;
    assert_eq!(
        bound(&c, None, at(0), 3, 9, 9, 9),
        ((2, 4), vec![Reason::AtMaxSlaves { max: 4 }])
    );
    assert_eq!(
        bound(&c, None, at(0), 0, 0, 0, 0),
        ((2, 2), vec![Reason::BelowMinSlaves { min: 2 }])
    );
}
