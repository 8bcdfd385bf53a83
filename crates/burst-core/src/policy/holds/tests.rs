//! Stage tests: holds.

use crate::policy::tests::*;

#[test]
fn daily_cap_limits_and_explains() {
    let mut l = cap();
    // 2026-05-28T20:26:40Z is 05:26:40 in Tokyo: 18h33m to midnight.
    for i in 0..7 {
        l.record_attempt(&format!("k{i}"), at(-100)).unwrap();
    }
    let d = decide(
        &cfg(),
        &Default::default(),
        &fleet(3.0, vec![]),
        &l,
        &History::new(),
        at(0),
    );
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
    let d = decide(
        &cfg(),
        &Default::default(),
        &fleet(3.0, vec![]),
        &l,
        &History::new(),
        at(0),
    );
    assert!(matches!(d, Decision::ScaleOut { count: 2, .. }), "{d}");
    assert!(has(&d, "CapLimited"));
    assert_eq!(d.explanation().cap_limited, 2);
    // A blocked (corrupt) ledger refuses scale-out but not scale-in.
    let blocked = cap().blocked("cap-ledger.json: EOF while parsing");
    let d = decide(
        &cfg(),
        &Default::default(),
        &fleet(3.0, vec![]),
        &blocked,
        &History::new(),
        at(0),
    );
    assert!(matches!(d, Decision::Hold { .. }), "{d}");
    assert!(has(&d, "LedgerUnavailable"));
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
        &Default::default(),
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
        &Default::default(),
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
    let d = decide(&c, &Default::default(), &idle, &spent, &h, at(0));
    assert!(
        matches!(d, Decision::Hold { .. }) && has(&d, "KeepingForCap"),
        "{d}"
    );
    idle.warm_room = 2;
    let d = decide(&c, &Default::default(), &idle, &spent, &h, at(0));
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
    let d = decide(
        &c,
        &Default::default(),
        &fresh(0.6, at_2355),
        &cap(),
        &History::new(),
        at_2355,
    );
    assert!(matches!(d, Decision::Hold { .. }), "{d}");
    assert!(has(&d, "MidnightDeferred"), "{d}");
    assert!(d.to_string().contains("300s before the cap resets"), "{d}");
    // Busy 0.8: 1.6x, acute.
    let d = decide(
        &c,
        &Default::default(),
        &fresh(0.8, at_2355),
        &cap(),
        &History::new(),
        at_2355,
    );
    assert!(matches!(d, Decision::ScaleOut { .. }), "{d}");
    // 23:45: outside the guard.
    let at_2345 = tokyo("23:45");
    let d = decide(
        &c,
        &Default::default(),
        &fresh(0.6, at_2345),
        &cap(),
        &History::new(),
        at_2345,
    );
    assert!(matches!(d, Decision::ScaleOut { .. }), "{d}");
    // Below the floor: the floor is kept whatever the hour.
    let mut floor = c.clone();
    floor.min_slaves = 1;
    let d = decide(
        &floor,
        &Default::default(),
        &fresh(0.1, at_2355),
        &cap(),
        &History::new(),
        at_2355,
    );
    assert!(matches!(d, Decision::ScaleOut { count: 1, .. }), "{d}");
    // Turned off.
    let mut off = c.clone();
    off.midnight_guard = Dur::secs(0);
    let d = decide(
        &off,
        &Default::default(),
        &fresh(0.6, at_2355),
        &cap(),
        &History::new(),
        at_2355,
    );
    assert!(matches!(d, Decision::ScaleOut { .. }), "{d}");
}

#[test]
fn stage_cap_limit_allows_the_units_left_and_the_warm_slaves_that_ran_today() {
    use crate::policy::holds::{cap_limit, CapView};
    let view = |free_warm| CapView {
        status: spent(6).status(at(0)),
        hours_left: true,
        free_warm,
    };
    // One unit of 7 left: 1 + 1 = 2 of the 4 wanted.
    let (n, why) = cap_limit(&view(0), 1, 5);
    assert_eq!(n, 2);
    assert!(
        matches!(
            why.as_slice(),
            [Reason::CapLimited {
                wanted: 4,
                allowed: 1,
                ..
            }]
        ),
        "{why:?}"
    );
    // A warm slave that ran today comes back free on top.
    let (n, why) = cap_limit(&view(1), 1, 5);
    assert_eq!(n, 3);
    assert!(
        matches!(
            why.as_slice(),
            [
                Reason::WarmPool { free: 1 },
                Reason::CapLimited {
                    wanted: 4,
                    allowed: 2,
                    ..
                }
            ]
        ),
        "{why:?}"
    );
    // A scale-in is not the cap's business.
    assert_eq!(cap_limit(&view(0), 3, 1), (1, vec![]));
}

#[test]
fn stage_holds_lower_only_a_scale_out_and_say_why() {
    use crate::policy::holds::{no_capacity, source_missing, sync_broken};
    let mut o = fleet(0.1, vec![]);
    o.no_capacity_until = Some(at(60));
    assert_eq!(
        no_capacity(&o, at(0), 1, 3),
        (
            1,
            vec![Reason::NoCapacity {
                wanted: 2,
                retry_in_secs: 60
            }]
        )
    );
    assert_eq!(no_capacity(&o, at(0), 3, 1), (1, vec![]));
    assert_eq!(no_capacity(&o, at(60), 1, 3), (3, vec![]));
    o.sync_broken = Some(SyncBroken {
        cause: "rsync: connection refused".into(),
        trial: true,
        trial_in_secs: 0,
    });
    // The trial goes, the rest wait.
    let (n, why) = sync_broken(&o, 0, 1, 4);
    assert_eq!(n, 2);
    assert!(
        matches!(
            why.as_slice(),
            [Reason::SyncBroken {
                wanted: 3,
                allowed: 1,
                ..
            }]
        ),
        "{why:?}"
    );
    o.content_source_missing = Some("/var/www is empty".into());
    assert_eq!(source_missing(&o, 1, 3).0, 1);
    assert_eq!(source_missing(&o, 3, 1), (1, vec![]));
}
