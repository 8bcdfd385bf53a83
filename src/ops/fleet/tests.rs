use super::*;

fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn status(holder: &str, at: &str) -> SiteStatus {
    SiteStatus {
        holder: holder.into(),
        at: t(at),
        action: "hold".into(),
        text: "hold at 1 slaves".into(),
        reasons: vec!["burst cap reached: 7/7 today".into()],
        holds: vec![Held::Cap],
        in_service: 1,
        coming: 0,
        draining: 0,
        warm: 2,
        used: 7,
        limit: 7,
        day: "2026-12-07".into(),
        time_zone: "Asia/Tokyo".into(),
    }
}

#[test]
fn a_month_is_read_as_its_first_day_and_anything_else_is_named() {
    assert_eq!(
        parse_month("2026-11").unwrap(),
        Date::new(2026, 11, 1).unwrap()
    );
    for bad in ["2026-13", "2026/11", "november", "2026-11-01"] {
        let e = parse_month(bad).unwrap_err();
        assert!(e.contains(bad) && e.contains("YYYY-MM"), "{e}");
    }
}

#[test]
fn a_site_is_seen_in_its_own_time_zone_with_its_lease_standbys_and_a_status_another_agent_wrote() {
    // 16:00 UTC is already the 8th in Tokyo.
    let now = t("2026-12-07T16:00:00Z");
    let mut r = SiteRecords {
        lease: Some(crate::lease::Item {
            holder: "i-new/2".into(),
            version: 9,
            renewed_at: "2026-12-07T15:59:55Z".into(),
            released: false,
        }),
        lease_secs: Some(30),
        status: Some(status("i-old/1", "2026-12-07T15:59:00Z")),
        ..SiteRecords::default()
    };
    r.days.insert("2026-12-08".into(), 3);
    r.limits
        .insert("2026-12-08".into(), (Some(7), "Asia/Tokyo".into()));
    r.standbys.push(Standby {
        holder: "i-copy/3".into(),
        stands_by_for: "i-new/2".into(),
        seen_at: t("2026-12-07T15:58:00Z"),
    });
    // An old mark of its own, and one from yesterday: neither shows.
    r.standbys.push(Standby {
        holder: "i-new/2".into(),
        stands_by_for: "i-old/1".into(),
        seen_at: t("2026-12-07T15:50:00Z"),
    });
    r.standbys.push(Standby {
        holder: "i-gone/4".into(),
        stands_by_for: "i-new/2".into(),
        seen_at: t("2026-12-06T15:50:00Z"),
    });
    let sites = BTreeMap::from([("golf".to_string(), r)]);
    let v = now_view(&sites, 60, now);
    let s = &v[0];
    assert_eq!(
        (s.day.as_str(), s.units_used, s.unit_limit),
        ("2026-12-08", 3, 7)
    );
    assert_eq!(s.lease, Some(LeaseLook::Held { age_secs: 5 }));
    assert_eq!(
        s.standbys
            .iter()
            .map(|s| s.holder.as_str())
            .collect::<Vec<_>>(),
        ["i-copy/3"]
    );
    assert!(s.status_stale, "written by i-old, the lease is i-new's");
    let text = render_now(&v, now, 0.1);
    assert!(text.contains("STANDBY i-copy (seen 2m ago)"), "{text}");
    assert!(
        text.contains("STALE hold (60s ago): burst cap reached"),
        "{text}"
    );
}

#[test]
fn an_item_that_does_not_read_is_named_and_its_site_still_shows() {
    let golf = SiteRecords {
        problems: vec!["ledger table item golf/run#x: no instance (left out)".into()],
        ..SiteRecords::default()
    };
    let sites = BTreeMap::from([
        ("golf".to_string(), golf),
        ("shop".to_string(), SiteRecords::default()),
    ]);
    let now = t("2026-12-07T16:00:00Z");
    let text = render_now(&now_view(&sites, 30, now), now, 0.1);
    assert!(text.contains("1 with items that do not read"), "{text}");
    assert!(text.contains("golf !"), "{text}");
    assert!(
        text.contains("! golf: ledger table item golf/run#x: no instance (left out)"),
        "{text}"
    );
    assert!(text.contains("NO LEASE"), "{text}");
    let first = Date::new(2026, 12, 1).unwrap();
    let months = month_view(&sites, first, &Default::default(), now);
    let csv = render_csv(&months, first, "JPY");
    assert!(
        csv.lines().any(|l| l.starts_with("golf,2026-12,")),
        "the site keeps its rows in the CSV:\n{csv}"
    );
    let table = render_month(&months, first, "JPY");
    assert!(
        table.contains("golf: ledger table item golf/run#x"),
        "{table}"
    );
}
