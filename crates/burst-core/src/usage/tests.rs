use super::*;
use crate::cap::CapStatus;

fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn seen<'a>(id: &'a str, running: bool, launched: Option<&str>) -> Seen<'a> {
    Seen {
        id,
        running,
        launched_at: launched.map(t),
        ended_at: None,
        instance_type: Some("c5.large"),
    }
}

fn run(id: &str, start: &str, end: Option<&str>) -> Run {
    Run {
        instance: id.into(),
        instance_type: "c5.large".into(),
        start: t(start),
        end: end.map(t),
    }
}

#[test]
fn a_running_instance_without_a_run_starts_one_at_ec2s_launch_time() {
    let now = t("2026-11-03T10:00:00Z");
    let ch = runs_step(&[], &[seen("i-1", true, Some("2026-11-03T09:58:30Z"))], now);
    assert_eq!(
        ch,
        vec![RunChange::Open(run("i-1", "2026-11-03T09:58:30Z", None))]
    );
}

#[test]
fn a_warm_start_ec2_left_undated_starts_now_not_at_the_first_launch() {
    let now = t("2026-11-03T10:00:00Z");
    // Its first run ended at 09:00; EC2 still says the first launch time (08:00).
    let runs = [run(
        "i-1",
        "2026-11-03T08:00:00Z",
        Some("2026-11-03T09:00:00Z"),
    )];
    let ch = runs_step(
        &runs,
        &[seen("i-1", true, Some("2026-11-03T08:00:00Z"))],
        now,
    );
    assert_eq!(
        ch,
        vec![RunChange::Open(run("i-1", "2026-11-03T10:00:00Z", None))]
    );
}

#[test]
fn an_open_run_ends_when_its_instance_stops_is_terminated_or_vanishes() {
    let now = t("2026-11-03T10:00:00Z");
    let runs = [
        run("i-stopped", "2026-11-03T08:00:00Z", None),
        run("i-term", "2026-11-03T08:00:00Z", None),
        run("i-gone", "2026-11-03T08:00:00Z", None),
        run("i-odd", "2026-11-03T08:00:00Z", None),
        run("i-up", "2026-11-03T08:00:00Z", None),
    ];
    let mut term = seen("i-term", false, None);
    term.ended_at = Some(t("2026-11-03T09:40:00Z"));
    // An end before the run began: the clocks disagree, so it ends at the step.
    let mut odd = seen("i-odd", false, None);
    odd.ended_at = Some(t("2026-11-03T07:00:00Z"));
    let ch = runs_step(
        &runs,
        &[
            seen("i-stopped", false, None),
            term,
            odd,
            seen("i-up", true, None),
        ],
        now,
    );
    let close = |id: &str, end: &str| RunChange::Close {
        instance: id.into(),
        start: t("2026-11-03T08:00:00Z"),
        end: t(end),
    };
    assert_eq!(
        ch,
        vec![
            close("i-stopped", "2026-11-03T10:00:00Z"),
            close("i-term", "2026-11-03T09:40:00Z"),
            close("i-gone", "2026-11-03T10:00:00Z"),
            close("i-odd", "2026-11-03T10:00:00Z"),
        ]
    );
}

fn cap() -> CapStatus {
    CapStatus {
        used: 7,
        limit: 7,
        remaining: 0,
        instance_hours: 0.0,
        hours_budget: None,
        time_zone: "UTC".into(),
        day: "2026-11-03".parse().unwrap(),
        resets_at: t("2026-11-04T00:00:00Z"),
        resets_in_secs: 3600,
        blocked: None,
    }
}

#[test]
fn held_names_each_kind_of_hold_with_how_many_it_kept_back() {
    let mut why = Explanation::bare(cap());
    why.current = 2;
    why.bounded = 5;
    assert!(held(&why).is_empty(), "no hold reason: nothing held");
    why.reasons = vec![
        Reason::CapLimited {
            wanted: 3,
            allowed: 1,
            message: String::new(),
        },
        Reason::SyncBroken {
            wanted: 1,
            allowed: 0,
            cause: String::new(),
            trial_in_secs: 60,
        },
        Reason::AboveTarget {
            signal: crate::model::Signal::LoadPerCpu,
            utilization: 0.9,
            target: 0.6,
        },
    ];
    assert_eq!(held(&why), vec![(Held::Cap, 2), (Held::Brake, 1)]);
    why.reasons = vec![Reason::DailyCapReached {
        used: 7,
        limit: 7,
        resets_in_secs: 60,
        message: String::new(),
    }];
    assert_eq!(held(&why), vec![(Held::Cap, 3)]);
}

#[test]
fn shortfalls_credit_each_held_tick_until_the_next_and_hand_them_out_when_the_episode_ends() {
    let mut s = Shortfalls::default();
    let t0 = t("2026-11-03T10:00:00Z");
    let at = |secs: i64| t0 + jiff::SignedDuration::from_secs(secs);
    assert!(s
        .tick("2026-11-03", vec![(Held::Cap, 2)], t0, 30, 300)
        .is_empty());
    // The first credit is written at once (an episode shows up quickly) ...
    let first = s.tick("2026-11-03", vec![(Held::Cap, 3)], at(15), 30, 300);
    assert_eq!(first.len(), 1);
    assert_eq!((first[0].secs, first[0].max_short), (15, 2));
    // ... then only every 300 s while it lasts ...
    assert!(s
        .tick("2026-11-03", vec![(Held::Cap, 1)], at(30), 30, 300)
        .is_empty());
    // ... and at its end: 15 s at 3 short, then a stalled agent's 1000 s gap counts 30.
    let end = s.tick("2026-11-03", vec![], at(1030), 30, 300);
    assert_eq!(end.len(), 1);
    assert_eq!((end[0].secs, end[0].max_short), (15 + 30, 3));
    assert!(s.tick("2026-11-03", vec![], at(1045), 30, 300).is_empty());
}

#[test]
fn an_unwritten_shortfall_waits_for_the_next_write() {
    let mut s = Shortfalls::default();
    let t0 = t("2026-11-03T10:00:00Z");
    let at = |secs: i64| t0 + jiff::SignedDuration::from_secs(secs);
    s.tick("2026-11-03", vec![(Held::Source, 1)], t0, 30, 300);
    let lost = s.tick("2026-11-03", vec![(Held::Source, 1)], at(10), 30, 300);
    assert_eq!(lost.len(), 1);
    for l in lost {
        s.unwritten(l);
    }
    let end = s.tick("2026-11-03", vec![], at(20), 30, 300);
    assert_eq!((end[0].secs, end[0].max_short), (20, 1));
}

#[test]
fn a_lease_looks_held_lapsed_released_or_unreadable() {
    let now = t("2026-11-03T10:00:00Z");
    let item = |at: &str, released| lease::Item {
        holder: "i-1/ab".into(),
        version: 3,
        renewed_at: at.into(),
        released,
    };
    assert_eq!(
        lease_look(&item("2026-11-03T09:59:50Z", false), 30, now),
        LeaseLook::Held { age_secs: 10 }
    );
    assert_eq!(
        lease_look(&item("2026-11-03T09:59:00Z", false), 30, now),
        LeaseLook::Lapsed { age_secs: 60 }
    );
    assert_eq!(
        lease_look(&item("2026-11-03T09:59:00Z", true), 30, now),
        LeaseLook::Released { age_secs: 60 }
    );
    assert!(matches!(
        lease_look(&item("yesterday", false), 30, now),
        LeaseLook::Unreadable { .. }
    ));
}

#[test]
fn a_month_splits_runs_at_local_midnight_and_counts_peaks_caps_and_holds() {
    let tz = TimeZone::get("Asia/Tokyo").unwrap();
    // Tokyo is UTC+9: local 2026-11-02 ends at 2026-11-02T15:00:00Z.
    let site = SiteUse {
        limit: 7,
        days: BTreeMap::from([
            ("2026-11-02".to_string(), (7, 7)),
            ("2026-11-03".to_string(), (2, 7)),
        ]),
        counted: vec![
            ("2026-11-02".into(), "i-a".into()),
            ("2026-11-02".into(), "i-never-ran".into()),
            ("2026-11-03".into(), "i-a".into()),
        ],
        runs: vec![
            // 13:00Z-17:00Z: 2 h on the 2nd, 2 h on the 3rd (local).
            run("i-a", "2026-11-02T13:00:00Z", Some("2026-11-02T17:00:00Z")),
            // 14:00Z-14:30Z on the 2nd, beside i-a: two at once.
            run("i-b", "2026-11-02T14:00:00Z", Some("2026-11-02T14:30:00Z")),
            // 20 s: billed a minute.
            run("i-c", "2026-11-03T01:00:00Z", Some("2026-11-03T01:00:20Z")),
        ],
        shortfalls: vec![Shortfall {
            day: "2026-11-02".into(),
            held: Held::Cap,
            secs: 900,
            max_short: 2,
        }],
    };
    let prices = BTreeMap::from([("c5.large".to_string(), 10.0)]);
    let now = t("2026-11-03T12:00:00Z"); // local 21:00 on the 3rd
    let m = month(&site, "2026-11-01".parse().unwrap(), &tz, &prices, now);
    assert_eq!(m.days.len(), 3, "the 1st to today, the 3rd");
    let (d2, d3) = (&m.days[1].1, &m.days[2].1);
    // A day with no item: nothing used, the site's limit.
    assert_eq!(
        m.days[0].1,
        DayUse {
            unit_limit: 7,
            cost: Some(0.0),
            ..DayUse::default()
        }
    );
    assert_eq!((d2.units_used, d2.unit_limit, d2.at_cap), (7, 7, true));
    assert_eq!(d2.instances, 3, "i-a, i-b and the counted i-never-ran");
    assert!(
        (d2.instance_hours - 2.5).abs() < 1e-9,
        "{}",
        d2.instance_hours
    );
    assert_eq!(d2.peak_slaves, 2);
    assert_eq!(d2.held_secs, BTreeMap::from([(Held::Cap, 900)]));
    assert_eq!(d2.max_short, 2);
    assert!((d2.cost.unwrap() - 25.0).abs() < 1e-9);
    assert_eq!(d3.instances, 2, "i-a carried over, i-c");
    let h3 = 2.0 + 60.0 / 3600.0;
    assert!(
        (d3.instance_hours - h3).abs() < 1e-9,
        "{}",
        d3.instance_hours
    );
    assert_eq!(d3.peak_slaves, 1);
    assert_eq!((m.cap_days, m.short_days), (1, 1));
    assert_eq!(m.total.instances, 4);
    assert_eq!(m.total.units_used, 9);
    assert!((m.total.cost.unwrap() - (25.0 + h3 * 10.0)).abs() < 1e-9);
    assert!(m.unpriced.is_empty());
}

#[test]
fn a_type_with_no_price_leaves_the_cost_unknown_and_is_named() {
    let tz = TimeZone::UTC;
    let mut r = run("i-a", "2026-11-01T01:00:00Z", Some("2026-11-01T02:00:00Z"));
    r.instance_type = "m7g.large".into();
    let site = SiteUse {
        runs: vec![r],
        ..SiteUse::default()
    };
    let m = month(
        &site,
        "2026-11-01".parse().unwrap(),
        &tz,
        &BTreeMap::from([("c5.large".to_string(), 10.0)]),
        t("2026-11-01T12:00:00Z"),
    );
    assert_eq!(m.days[0].1.cost, None);
    assert_eq!(m.total.cost, None);
    assert_eq!(m.unpriced, vec!["m7g.large".to_string()]);
}

#[test]
fn an_open_run_counts_until_now_and_a_past_month_runs_to_its_last_day() {
    let site = SiteUse {
        runs: vec![run("i-a", "2026-10-31T22:00:00Z", None)],
        ..SiteUse::default()
    };
    let m = month(
        &site,
        "2026-10-01".parse().unwrap(),
        &TimeZone::UTC,
        &BTreeMap::new(),
        t("2026-11-01T03:00:00Z"),
    );
    assert_eq!(m.days.len(), 31);
    assert!((m.days[30].1.instance_hours - 2.0).abs() < 1e-9);
    assert_eq!(heat(&m.days[30].1), Heat::None, "no units: no colour");
}
