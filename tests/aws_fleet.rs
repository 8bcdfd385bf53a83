//! `burst-agent fleet` against a real moto server's DynamoDB: a month of a site's records,
//! written through the agent's own ledger code (reservations, launch records, runs, shortfalls),
//! read back by the command as CSV and as a heat map, and checked against totals this test
//! recomputes from the raw items; and a table of 40 sites read in one go, timed (printed, not
//! asserted: speed targets live in tables, CONTRIBUTING.md).

mod common;

use aws_sdk_dynamodb::types::AttributeValue;
use burst_agent::table::{Fence, InstanceRecord, Reserved, Table};
use burst_agent::usage::{Held, Run, Shortfall};
use common::moto::Moto;
use jiff::Timestamp;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::process::Command;

const TABLE: &str = "burst-agent";
const TZ: &str = "Asia/Tokyo";
const PRICE: f64 = 15.5;

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

/// Takes the site's lease as `holder` the way the agent does; the fence it gives.
async fn lease(t: &Table, holder: &str) -> Fence {
    let seen = t.read_lease().await.unwrap();
    assert!(t
        .write_lease(
            holder,
            seen.map(|l| l.version),
            &Timestamp::now().to_string()
        )
        .await
        .unwrap());
    let l = t.read_lease().await.unwrap().unwrap();
    Fence {
        holder: l.holder,
        version: l.version,
    }
}

/// A site that spends its whole cap of 3 every day of November 2026 (local days in Tokyo):
/// three launches a day, each slave running 20, 40 and 60 minutes from 10:00 local, and the
/// cap holding a fourth back for 10 minutes a day. The quiet site holds its lease, nothing else.
async fn seed_month(aws: &burst_agent::aws::Aws) {
    let capped = Table::new(aws.clone(), TABLE, "capped");
    let f = lease(&capped, "i-capped/1").await;
    for day in 1..=30 {
        let d = format!("2026-11-{day:02}");
        let intent = format!("n{day}");
        assert_eq!(
            capped.reserve(&f, &d, &intent, 3, 3, TZ).await.unwrap(),
            Reserved::Yes
        );
        // 10:00 in Tokyo is 01:00 UTC the same day.
        let start = ts(&format!("{d}T01:00:00Z"));
        for k in 0..3i64 {
            let id = format!("i-{day:02}{k}");
            capped
                .record_instance(&InstanceRecord {
                    id: id.clone(),
                    intent: intent.clone(),
                    client_token: format!("{intent}-0"),
                    day: d.clone(),
                    launched_at: start.to_string(),
                })
                .await
                .unwrap();
            let run = Run {
                instance: id.clone(),
                instance_type: "c5.large".into(),
                start,
                end: None,
                seen_at: Some(start),
            };
            capped.open_run(&run, &d).await.unwrap();
            let end = start + jiff::SignedDuration::from_mins(20 * (k + 1));
            capped.close_run(&run, end, &d).await.unwrap();
        }
        let short = Shortfall {
            day: d.clone(),
            held: Held::Cap,
            from: start,
            secs: 600,
            max_short: 1,
        };
        capped.put_shortfall(&short, "i-capped/1").await.unwrap();
        // Its answer lost, the write is tried again: it counts once.
        capped.put_shortfall(&short, "i-capped/1").await.unwrap();
    }
    // A slave of the last evening runs across the month's end (23:30 to 00:30 in Tokyo): half
    // an hour is November's.
    let late = Run {
        instance: "i-late".into(),
        instance_type: "c5.large".into(),
        start: ts("2026-11-30T14:30:00Z"),
        end: None,
        seen_at: None,
    };
    capped.open_run(&late, "2026-11-30").await.unwrap();
    capped
        .close_run(&late, ts("2026-11-30T15:30:00Z"), "2026-12-01")
        .await
        .unwrap();
    let quiet = Table::new(aws.clone(), TABLE, "quiet");
    lease(&quiet, "i-quiet/1").await;
}

/// Every item of the table, as DynamoDB returns them (no agent code in between).
async fn raw_items(aws: &burst_agent::aws::Aws) -> Vec<HashMap<String, AttributeValue>> {
    let mut out = Vec::new();
    let mut start = None;
    loop {
        let page = aws
            .dynamodb
            .scan()
            .table_name(TABLE)
            .set_exclusive_start_key(start)
            .send()
            .await
            .unwrap();
        out.extend(page.items().iter().cloned());
        start = page.last_evaluated_key().cloned();
        if start.is_none() {
            return out;
        }
    }
}

fn s<'a>(i: &'a HashMap<String, AttributeValue>, k: &str) -> &'a str {
    i.get(k)
        .and_then(|v| v.as_s().ok())
        .map_or("", |v| v.as_str())
}

fn num(i: &HashMap<String, AttributeValue>, k: &str) -> f64 {
    i.get(k)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// The month's totals for `site`, recomputed from the raw items: units, distinct instances,
/// instance-hours (each run clipped to November in Tokyo, at least a minute), seconds held short
/// and the cost at PRICE.
fn totals(items: &[HashMap<String, AttributeValue>], site: &str) -> (f64, usize, f64, f64, f64) {
    let (from, to) = (
        ts("2026-10-31T15:00:00Z").as_second(),
        ts("2026-11-30T15:00:00Z").as_second(),
    );
    let mine: Vec<_> = items.iter().filter(|i| s(i, "site") == site).collect();
    let units: f64 = mine
        .iter()
        .filter(|i| s(i, "item").starts_with("day#2026-11-"))
        .map(|i| num(i, "used"))
        .sum();
    let mut ids = BTreeSet::new();
    let mut hours = 0.0;
    for i in &mine {
        let key = s(i, "item");
        if let Some(rest) = key.strip_prefix("count#2026-11-") {
            ids.insert(rest.split_once('#').unwrap().1.to_string());
        }
        if key.starts_with("run#") {
            let (a, b) = (
                ts(s(i, "started_at")).as_second(),
                ts(s(i, "ended_at")).as_second(),
            );
            let b = b.max(a + 60);
            let (a, b) = (a.max(from), b.min(to));
            if a < b {
                ids.insert(s(i, "instance").to_string());
                hours += (b - a) as f64 / 3600.0;
            }
        }
    }
    let held: f64 = mine
        .iter()
        .filter(|i| s(i, "item").starts_with("short#2026-11-"))
        .map(|i| num(i, "held_secs"))
        .sum();
    (units, ids.len(), hours, held, hours * PRICE)
}

fn desk_config(moto: &Moto, dir: &Path) -> std::path::PathBuf {
    common::write(
        dir,
        "desk.toml",
        &format!(
            "[ledger]\ntable = \"{TABLE}\"\n\n[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{}\"\n\n\
             [prices]\ncurrency = \"JPY\"\nhourly = {{ \"c5.large\" = {PRICE} }}\n",
            moto.endpoint
        ),
    )
}

fn fleet(config: &Path, args: &[&str]) -> std::process::Output {
    Command::new(common::bin())
        .args(["--config", config.to_str().unwrap(), "fleet"])
        .args(args)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .unwrap()
}

#[test]
fn a_month_written_through_the_ledger_code_gives_csv_totals_the_items_add_up_to_and_a_heat_map_of_them(
) {
    let moto = Moto::start();
    let rt = common::runtime();
    let aws = rt.block_on(moto.aws());
    rt.block_on(async {
        Table::create(&aws, TABLE).await.unwrap();
        seed_month(&aws).await;
    });
    let dir = tempfile::tempdir().unwrap();
    let config = desk_config(&moto, dir.path());
    let svg = dir.path().join("month.svg");
    let o = fleet(
        &config,
        &[
            "--month",
            "2026-11",
            "--csv",
            "--plot",
            svg.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", common::stderr(&o));
    let csv = common::stdout(&o);
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let rows: Vec<BTreeMap<&str, &str>> = lines
        .map(|l| header.iter().copied().zip(l.split(',')).collect())
        .collect();
    let items = rt.block_on(raw_items(&aws));
    for site in ["capped", "quiet"] {
        let total = rows
            .iter()
            .find(|r| r["site"] == site && r["day"] == "2026-11")
            .unwrap_or_else(|| panic!("no month total for {site}:\n{csv}"));
        let days = rows
            .iter()
            .filter(|r| r["site"] == site && r["day"].len() == 10)
            .count();
        assert_eq!(
            days, 30,
            "a row per local day of November for {site}:\n{csv}"
        );
        let (units, instances, hours, held, cost) = totals(&items, site);
        let f = |k: &str| {
            total[k]
                .parse::<f64>()
                .unwrap_or_else(|_| panic!("{k}: {total:?}"))
        };
        assert_eq!(f("units_used"), units, "{site}: {total:?}");
        assert_eq!(f("instances") as usize, instances, "{site}: {total:?}");
        assert!(
            (f("instance_hours") - hours).abs() < 1e-3,
            "{site}: {total:?} vs {hours}"
        );
        assert_eq!(f("held_cap_secs"), held, "{site}: {total:?}");
        assert!(
            (f("cost") - cost).abs() < 0.01,
            "{site}: {total:?} vs {cost}"
        );
        assert_eq!(total["currency"], "JPY");
    }
    // Spot values a reader can check by hand: 3 units a day, 90 instances, (20+40+60) minutes a
    // day for 30 days = 60 hours, every day at the cap, 10 minutes held short each day.
    let capped = rows
        .iter()
        .find(|r| r["site"] == "capped" && r["day"] == "2026-11")
        .unwrap();
    assert_eq!(capped["units_used"], "90");
    assert_eq!(capped["instances"], "91", "90 launches and the late one");
    assert_eq!(capped["instance_hours"], "60.5000");
    assert_eq!(
        capped["held_cap_secs"], "18000",
        "10 minutes a day, each write once"
    );
    assert_eq!(capped["days_at_cap"], "30");
    assert_eq!(capped["days_short"], "30");
    assert_eq!(capped["peak_slaves"], "3");

    // The heat map: a cell per site and day, in the site's row; the capped site's all dark red,
    // the quiet site's all grey (docs/operations.md names the colours).
    let text = std::fs::read_to_string(&svg).unwrap();
    let mut rows_by_y: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    for rect in text.split("<rect").skip(1) {
        let attr = |name: &str| {
            rect.split(&format!("{name}=\""))
                .nth(1)
                .and_then(|r| r.split('"').next())
                .map(str::to_string)
        };
        let (Some(y), Some(fill)) = (attr("y"), attr("fill")) else {
            continue;
        };
        let y: f64 = y.parse().unwrap();
        rows_by_y
            .entry(y as i64)
            .or_default()
            .push(fill.to_ascii_uppercase());
    }
    // The background is one rect; the legend's four share a row; the two sites' rows hold 30.
    let site_rows: Vec<&Vec<String>> = rows_by_y.values().filter(|r| r.len() == 30).collect();
    assert_eq!(
        site_rows.len(),
        2,
        "two rows of 30 day cells: {rows_by_y:?}"
    );
    // Sites in name order: capped, then quiet.
    assert!(
        site_rows[0].iter().all(|f| f == "#B2182B"),
        "{:?}",
        site_rows[0]
    );
    assert!(
        site_rows[1].iter().all(|f| f == "#EEEEEE"),
        "{:?}",
        site_rows[1]
    );
    assert!(
        text.contains("capped (30 day(s) at cap)"),
        "the capped site's label stands out"
    );
}

/// 40 sites, each with a month of day items, launches and runs: `fleet` and `fleet --month`
/// read them all in one command each. The time is printed for CONTRIBUTING.md (moto is slower
/// than DynamoDB), never asserted.
#[test]
fn forty_sites_read_in_one_command_each() {
    let moto = Moto::start();
    let rt = common::runtime();
    let aws = rt.block_on(moto.aws());
    rt.block_on(async {
        Table::create(&aws, TABLE).await.unwrap();
        let mut batch = Vec::new();
        for site in 0..40 {
            let site = format!("site-{site:02}");
            let t = Table::new(aws.clone(), TABLE, &site);
            lease(&t, &format!("i-{site}/1")).await;
            // The rest by BatchWriteItem (a seed, not the agent's writes): 25 items a call.
            for day in 1..=30 {
                let d = format!("2026-11-{day:02}");
                let mut put = |item: &str, attrs: &[(&str, AttributeValue)]| {
                    let mut m = HashMap::from([
                        ("site".to_string(), AttributeValue::S(site.clone())),
                        ("item".to_string(), AttributeValue::S(item.to_string())),
                    ]);
                    for (k, v) in attrs {
                        m.insert(k.to_string(), v.clone());
                    }
                    batch.push(m);
                };
                put(
                    &format!("day#{d}"),
                    &[
                        ("used", AttributeValue::N("2".into())),
                        ("limit", AttributeValue::N("7".into())),
                        ("time_zone", AttributeValue::S("UTC".into())),
                    ],
                );
                for k in 0..2 {
                    let id = format!("i-{site}-{day}-{k}");
                    put(&format!("count#{d}#{id}"), &[]);
                    put(
                        &format!("run#{id}#0"),
                        &[
                            ("instance", AttributeValue::S(id.clone())),
                            ("instance_type", AttributeValue::S("c5.large".into())),
                            ("started_at", AttributeValue::S(format!("{d}T10:00:00Z"))),
                            ("ended_at", AttributeValue::S(format!("{d}T11:00:00Z"))),
                        ],
                    );
                }
            }
        }
        for chunk in batch.chunks(25) {
            let reqs = chunk
                .iter()
                .map(|m| {
                    aws_sdk_dynamodb::types::WriteRequest::builder()
                        .put_request(
                            aws_sdk_dynamodb::types::PutRequest::builder()
                                .set_item(Some(m.clone()))
                                .build()
                                .unwrap(),
                        )
                        .build()
                })
                .collect();
            aws.dynamodb
                .batch_write_item()
                .request_items(TABLE, reqs)
                .send()
                .await
                .unwrap();
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let config = desk_config(&moto, dir.path());
    let t = std::time::Instant::now();
    let now = fleet(&config, &["--json"]);
    let now_secs = t.elapsed().as_secs_f64();
    assert!(now.status.success(), "{}", common::stderr(&now));
    let v: serde_json::Value = serde_json::from_str(&common::stdout(&now)).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 40);
    let t = std::time::Instant::now();
    let month = fleet(&config, &["--month", "2026-11", "--csv"]);
    let month_secs = t.elapsed().as_secs_f64();
    assert!(month.status.success(), "{}", common::stderr(&month));
    let totals: Vec<String> = common::stdout(&month)
        .lines()
        .filter(|l| l.split(',').nth(1) == Some("2026-11"))
        .map(str::to_string)
        .collect();
    assert_eq!(totals.len(), 40);
    // 2 units a day for 30 days, 60 instances, 60 instance-hours.
    for l in &totals {
        let f: Vec<&str> = l.split(',').collect();
        assert_eq!((f[2], f[6], f[7]), ("60", "60", "60.0000"), "{l}");
    }
    let table = common::stdout(&fleet(&config, &[]));
    let scan = table
        .lines()
        .next()
        .and_then(|l| l.rsplit_once("(read in "))
        .map(|(_, r)| r.trim_end_matches(')').to_string())
        .unwrap_or_default();
    println!(
        "fleet over 40 sites x 30 days ({} items) against moto: now {now_secs:.2} s, \
         --month {month_secs:.2} s (the whole process); the scan alone {scan}",
        40 * (1 + 30 * 5)
    );
}

/// A desk record that does not read (a newer agent's kind of hold in a mixed rollout, a hand
/// edit) never stops the agent's own read of its site, which adoption needs: that read never
/// reaches the desk's records, and the desk's read names each and keeps the site.
#[test]
fn a_desk_record_that_does_not_read_never_stops_the_agents_read_of_its_site() {
    let moto = Moto::start();
    let rt = common::runtime();
    let aws = rt.block_on(moto.aws());
    rt.block_on(async {
        Table::create(&aws, TABLE).await.unwrap();
        let t = Table::new(aws.clone(), TABLE, "golf");
        let f = lease(&t, "i-golf/1").await;
        assert_eq!(
            t.reserve(&f, "2026-12-07", "a", 2, 7, "UTC").await.unwrap(),
            Reserved::Yes
        );
        for (item, attrs) in [
            (
                "short#2026-12-07#teleport#1765100000#i-new/2",
                vec![("held_secs", "N", "60")],
            ),
            ("status", vec![("at", "S", "yesterday")]),
            (
                "run#i-1#1765100000",
                vec![("started_at", "S", "2026-12-07T10:00:00Z")],
            ),
        ] {
            let mut m = HashMap::from([
                ("site".to_string(), AttributeValue::S("golf".into())),
                ("item".to_string(), AttributeValue::S(item.into())),
            ]);
            for (k, kind, v) in attrs {
                let v = if kind == "N" {
                    AttributeValue::N(v.into())
                } else {
                    AttributeValue::S(v.into())
                };
                m.insert(k.to_string(), v);
            }
            aws.dynamodb
                .put_item()
                .table_name(TABLE)
                .set_item(Some(m))
                .send()
                .await
                .unwrap();
        }
        // The agent's read (adoption) does not even see them: the guarantee's keys sort
        // before the desk's.
        let site = t.read_site(0).await.expect("the site reads");
        assert_eq!(site.days.get("2026-12-07"), Some(&2));
        assert!(site.lease.is_some());
        assert!(
            site.problems.is_empty() && site.status.is_none(),
            "{site:?}"
        );
        // The desk's read names each, and keeps the site.
        let all = Table::read_all(
            &aws,
            TABLE,
            4,
            &burst_agent::table::Wanted::Month {
                first: "2026-12-01".into(),
                last: "2026-12-31".into(),
                from: ts("2026-11-30T00:00:00Z"),
                to: ts("2027-01-02T00:00:00Z"),
            },
            0,
        )
        .await
        .unwrap();
        let site = &all["golf"];
        assert_eq!(site.days.get("2026-12-07"), Some(&2));
        assert_eq!(site.problems.len(), 3, "{:?}", site.problems);
        for (p, what) in site.problems.iter().zip([
            "golf/run#i-1#1765100000: no instance",
            "golf/short#2026-12-07#teleport#1765100000#i-new/2: \"teleport\" is no kind of hold",
            "golf/status: at \"yesterday\" is not a time",
        ]) {
            assert!(p.contains(what), "{p}");
        }
    });
}
