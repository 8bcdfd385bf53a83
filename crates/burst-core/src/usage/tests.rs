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
        seen_at: None,
    }
}

#[test]
fn a_running_instance_without_a_run_starts_one_at_ec2s_launch_time() {
    let now = t("2026-11-03T10:00:00Z");
    let ch = runs_step(&[], &[seen("i-1", true, Some("2026-11-03T09:58:30Z"))], now);
    let mut want = run("i-1", "2026-11-03T09:58:30Z", None);
    want.seen_at = Some(now);
    assert_eq!(ch, vec![RunChange::Open(want)]);
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
    let mut want = run("i-1", "2026-11-03T10:00:00Z", None);
    want.seen_at = Some(now);
    assert_eq!(ch, vec![RunChange::Open(want)]);
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
            RunChange::Seen {
                instance: "i-up".into(),
                start: t("2026-11-03T08:00:00Z"),
                at: now,
            },
        ]
    );
}

#[test]
fn a_run_that_vanished_while_no_agent_watched_ends_where_it_was_last_seen_not_at_the_restart() {
    // The agent was down from 08:30 to 11:00; the slave was terminated meanwhile and EC2 no
    // longer lists it: its run ends at its last sighting, not when the agent came back.
    let now = t("2026-11-03T11:00:00Z");
    let mut r = run("i-1", "2026-11-03T08:00:00Z", None);
    r.seen_at = Some(t("2026-11-03T08:25:00Z"));
    // A stopped one EC2 dates: its own time.
    let mut w = run("i-warm", "2026-11-03T08:00:00Z", None);
    w.seen_at = Some(t("2026-11-03T08:25:00Z"));
    let mut stopped = seen("i-warm", false, None);
    stopped.ended_at = Some(t("2026-11-03T08:29:00Z"));
    let ch = runs_step(&[r, w], &[stopped], now);
    assert_eq!(
        ch,
        vec![
            RunChange::Close {
                instance: "i-1".into(),
                start: t("2026-11-03T08:00:00Z"),
                end: t("2026-11-03T08:25:00Z"),
            },
            RunChange::Close {
                instance: "i-warm".into(),
                start: t("2026-11-03T08:00:00Z"),
                end: t("2026-11-03T08:29:00Z"),
            },
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
    assert_eq!(
        (first[0].secs, first[0].max_short, first[0].from),
        (15, 2, t0)
    );
    // ... then only every 300 s while it lasts ...
    assert!(s
        .tick("2026-11-03", vec![(Held::Cap, 1)], at(30), 30, 300)
        .is_empty());
    // ... and at its end: 15 s at 3 short, then a stalled agent's 1000 s gap counts 30. Each
    // write has its own start, so the table keeps them apart and a retry counts once.
    let end = s.tick("2026-11-03", vec![], at(1030), 30, 300);
    assert_eq!(end.len(), 1);
    assert_eq!(
        (end[0].secs, end[0].max_short, end[0].from),
        (15 + 30, 3, at(15))
    );
    assert!(s.tick("2026-11-03", vec![], at(1045), 30, 300).is_empty());
}

#[test]
fn a_hold_across_local_midnight_is_credited_to_the_day_each_tick_was_on() {
    let mut s = Shortfalls::default();
    let t0 = t("2026-11-03T14:59:50Z"); // 23:59:50 in Tokyo
    let at = |secs: i64| t0 + jiff::SignedDuration::from_secs(secs);
    s.tick("2026-11-03", vec![(Held::Brake, 1)], t0, 30, 300);
    let a = s.tick("2026-11-04", vec![(Held::Brake, 1)], at(15), 30, 300);
    let b = s.tick("2026-11-04", vec![], at(30), 30, 300);
    let days: Vec<(&str, u64)> = a
        .iter()
        .chain(&b)
        .map(|x| (x.day.as_str(), x.secs))
        .collect();
    assert_eq!(days, [("2026-11-03", 15), ("2026-11-04", 15)]);
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
            ("2026-11-02".to_string(), (7, Some(7))),
            ("2026-11-03".to_string(), (2, Some(7))),
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
            from: t("2026-11-02T13:00:00Z"),
            secs: 900,
            max_short: 2,
        }],
    };
    let prices = BTreeMap::from([("c5.large".to_string(), 10.0)]);
    let now = t("2026-11-03T12:00:00Z"); // local 21:00 on the 3rd
    let m = month(&site, "2026-11-01".parse().unwrap(), &tz, &prices, now);
    assert_eq!(m.days.len(), 3, "the 1st to today, the 3rd");
    let (d2, d3) = (&m.days[1], &m.days[2]);
    // A day with no item: nothing used, the site's limit.
    assert_eq!(
        m.days[0],
        DayUse {
            day: Some("2026-11-01".parse().unwrap()),
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
    assert_eq!(m.days[0].cost, None);
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
    assert!((m.days[30].instance_hours - 2.0).abs() < 1e-9);
    assert_eq!(heat(&m.days[30]), Heat::None, "no units: no colour");
}

#[test]
fn a_dst_day_has_25_hours_and_two_agents_runs_of_one_slave_bill_it_once() {
    // New York leaves daylight time on 2026-11-01: that local day is 25 hours long.
    let tz = TimeZone::get("America/New_York").unwrap();
    let whole = |id: &str| {
        run(
            id,
            "2026-11-01T04:00:00Z",       // local midnight, EDT
            Some("2026-11-02T05:00:00Z"), // the next local midnight, EST
        )
    };
    // A takeover: the new holder recorded the same slave again from 10:00 UTC.
    let mut dup = run("i-a", "2026-11-01T10:00:00Z", Some("2026-11-02T05:00:00Z"));
    dup.instance_type = String::new();
    let site = SiteUse {
        limit: 7,
        days: BTreeMap::from([("2026-11-01".to_string(), (1, None))]),
        runs: vec![whole("i-a"), dup],
        ..SiteUse::default()
    };
    let m = month(
        &site,
        "2026-11-01".parse().unwrap(),
        &tz,
        &BTreeMap::from([("c5.large".to_string(), 1.0)]),
        t("2026-11-02T12:00:00Z"),
    );
    let d = &m.days[0];
    assert!(
        (d.instance_hours - 25.0).abs() < 1e-9,
        "{}",
        d.instance_hours
    );
    assert_eq!((d.peak_slaves, d.instances), (1, 1));
    assert_eq!(
        d.unit_limit, 7,
        "a day whose item says no limit has the site's"
    );
    assert_eq!(d.cost, Some(25.0), "the merged span keeps its priced type");
}

#[test]
fn an_open_run_nobody_saw_for_a_while_counts_until_its_last_sighting_and_is_named() {
    let mut r = run("i-a", "2026-11-01T01:00:00Z", None);
    r.seen_at = Some(t("2026-11-01T03:00:00Z"));
    let site = SiteUse {
        runs: vec![r],
        ..SiteUse::default()
    };
    let m = month(
        &site,
        "2026-11-01".parse().unwrap(),
        &TimeZone::UTC,
        &BTreeMap::new(),
        t("2026-11-01T12:00:00Z"),
    );
    assert!((m.days[0].instance_hours - 2.0).abs() < 1e-9);
    assert_eq!(m.unconfirmed, vec!["i-a".to_string()]);
}

#[test]
fn a_flush_credits_the_last_held_tick_until_now_and_hands_out_everything() {
    let mut s = Shortfalls::default();
    let t0 = t("2026-11-03T10:00:00Z");
    let at = |secs: i64| t0 + jiff::SignedDuration::from_secs(secs);
    s.tick("2026-11-03", vec![(Held::Cap, 2)], t0, 30, 300);
    let first = s.tick(
        "2026-11-03",
        vec![(Held::Cap, 2), (Held::Ec2, 1)],
        at(10),
        30,
        300,
    );
    assert_eq!(first.len(), 1, "cap's first 10 s, at once");
    // A stop 5 s after the last tick: cap's and ec2's last 5 s, nothing lost.
    let mut out = s.flush(at(15), 30);
    out.sort_by_key(|x| x.held);
    let got: Vec<(Held, u64)> = out.iter().map(|x| (x.held, x.secs)).collect();
    assert_eq!(got, [(Held::Cap, 5), (Held::Ec2, 5)]);
    assert!(s.flush(at(20), 30).is_empty(), "nothing twice");
}

#[test]
fn a_stop_and_start_nobody_watched_ends_the_run_where_it_was_last_seen_and_starts_another() {
    let now = t("2026-11-03T12:00:00Z");
    let mut r = run("i-1", "2026-11-03T08:00:00Z", None);
    r.seen_at = Some(t("2026-11-03T09:00:00Z"));
    // EC2 says it started (again) at 11:00: stopped some time after 09:00.
    let ch = runs_step(
        &[r],
        &[seen("i-1", true, Some("2026-11-03T11:00:00Z"))],
        now,
    );
    let mut again = run("i-1", "2026-11-03T11:00:00Z", None);
    again.seen_at = Some(now);
    assert_eq!(
        ch,
        vec![
            RunChange::Close {
                instance: "i-1".into(),
                start: t("2026-11-03T08:00:00Z"),
                end: t("2026-11-03T09:00:00Z"),
            },
            RunChange::Open(again),
        ]
    );
    // Seen all along (EC2's launch time is the run's own start): it goes on.
    let mut r = run("i-2", "2026-11-03T08:00:00Z", None);
    r.seen_at = Some(t("2026-11-03T11:59:45Z"));
    let ch = runs_step(
        &[r],
        &[seen("i-2", true, Some("2026-11-03T08:00:00Z"))],
        now,
    );
    assert!(matches!(ch[..], [RunChange::Seen { .. }]), "{ch:?}");
}

#[test]
fn running_now_counts_each_slave_once_and_apart_those_nobody_saw_for_15_minutes() {
    let now = t("2026-11-03T12:00:00Z");
    let mut fresh = run("i-1", "2026-11-03T08:00:00Z", None);
    fresh.seen_at = Some(t("2026-11-03T11:58:00Z"));
    // The same slave recorded twice across a takeover: once.
    let mut dup = run("i-1", "2026-11-03T09:00:00Z", None);
    dup.seen_at = Some(t("2026-11-03T11:50:00Z"));
    let mut stale = run("i-2", "2026-11-03T08:00:00Z", None);
    stale.seen_at = Some(t("2026-11-03T10:00:00Z"));
    let closed = run("i-3", "2026-11-03T08:00:00Z", Some("2026-11-03T09:00:00Z"));
    assert_eq!(running_now(&[fresh, dup, stale, closed], now), (1, 1));
}
