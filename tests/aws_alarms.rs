//! `burst-agent alarms` against a real moto server: the planned alarms are put, putting them
//! again changes nothing but what the config changed, and pruning deletes this group's stale
//! alarms and nobody else's.

mod common;

use burst_agent::alarms;
use burst_agent::config::Config;
use common::moto::Moto;
use std::collections::BTreeMap;

fn config(moto: &Moto) -> Config {
    let mut c = Config::default();
    c.agent.group = "golf".into();
    c.elb.name = "golf-elb".into();
    c.aws = moto.aws_config();
    c.sampling.disk_paths = vec!["/".into(), "/var/www".into()];
    c.alarms.alarm_actions = vec!["arn:aws:sns:us-east-1:123456789012:ops".into()];
    c
}

/// Alarm name → (threshold, evaluation periods, treat missing data, alarm actions).
async fn listed(
    aws: &burst_agent::aws::Aws,
    prefix: &str,
) -> BTreeMap<String, (f64, i32, String, Vec<String>)> {
    let out = aws
        .cloudwatch
        .describe_alarms()
        .alarm_name_prefix(prefix)
        .send()
        .await
        .unwrap();
    out.metric_alarms()
        .iter()
        .map(|a| {
            (
                a.alarm_name().unwrap().to_string(),
                (
                    a.threshold().unwrap(),
                    a.evaluation_periods().unwrap(),
                    a.treat_missing_data().unwrap_or_default().to_string(),
                    a.alarm_actions().to_vec(),
                ),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alarms_are_put_idempotently_and_pruned_by_group() {
    let moto = Moto::start();
    let aws = moto.aws().await;
    let mut cfg = config(&moto);
    let plan = alarms::plan(&cfg);

    let done = alarms::apply(&aws, &cfg, &plan, false).await.unwrap();
    assert_eq!(done.put.len(), plan.len());
    let first = listed(&aws, "burst-agent/golf/").await;
    assert_eq!(first.len(), plan.len(), "{first:#?}");
    let hb = &first["burst-agent/golf/heartbeat"];
    assert_eq!(hb.2, "breaching");
    assert_eq!(hb.3, ["arn:aws:sns:us-east-1:123456789012:ops"]);
    assert_eq!(first["burst-agent/golf/disk:/var/www"].0, 90.0);

    // Again, with one threshold changed: the same alarms, that one updated.
    cfg.alarms.disk_used_percent = 80.0;
    let plan = alarms::plan(&cfg);
    alarms::apply(&aws, &cfg, &plan, false).await.unwrap();
    let second = listed(&aws, "burst-agent/golf/").await;
    assert_eq!(second.len(), first.len());
    assert_eq!(second["burst-agent/golf/disk:/var/www"].0, 80.0);
    assert_eq!(
        second["burst-agent/golf/memory"],
        first["burst-agent/golf/memory"]
    );

    // Another site's alarm and an old one of ours; then a path is dropped from the config.
    let mut other = config(&moto);
    other.agent.group = "ramen".into();
    let theirs = alarms::plan(&other);
    alarms::apply(&aws, &other, &theirs[..1], false)
        .await
        .unwrap();
    cfg.sampling.disk_paths = vec!["/".into()];
    cfg.alarms.disabled = vec!["api_errors".into()];
    let plan = alarms::plan(&cfg);
    let done = alarms::apply(&aws, &cfg, &plan, true).await.unwrap();
    let mut deleted = done.deleted.clone();
    deleted.sort();
    assert_eq!(
        deleted,
        [
            "burst-agent/golf/api_errors",
            "burst-agent/golf/disk:/var/www"
        ]
    );
    let third = listed(&aws, "burst-agent/golf/").await;
    assert_eq!(third.len(), plan.len());
    assert_eq!(
        listed(&aws, "burst-agent/ramen/").await.len(),
        1,
        "another group's alarm was pruned"
    );
}

#[test]
fn print_changes_nothing_and_a_bad_topic_arn_is_named() {
    // --print needs no AWS at all.
    let dir = tempfile::tempdir().unwrap();
    let path = common::write(
        dir.path(),
        "agent.toml",
        "[agent]\ngroup = \"golf\"\ndry_run = true\n[elb]\nname = \"golf-elb\"\n[alarms]\nalarm_actions = [\"arn:aws:sns:us-east-1:123456789012:ops\"]\n",
    );
    let out = common::agent(&["--config", path.to_str().unwrap(), "alarms"]);
    let text = common::stdout(&out);
    assert!(out.status.success(), "{text}{}", common::stderr(&out));
    assert!(text.contains("burst-agent/golf/heartbeat"), "{text}");
    assert!(text.contains("AWS/ELB/SurgeQueueLength"), "{text}");
    let printed = common::agent(&["--config", path.to_str().unwrap(), "alarms", "--print"]);
    assert_eq!(common::stdout(&printed), text);
    let both = common::agent(&[
        "--config",
        path.to_str().unwrap(),
        "alarms",
        "--print",
        "--apply",
    ]);
    assert_eq!(both.status.code(), Some(2), "{}", common::stderr(&both));

    let bad = common::write(
        dir.path(),
        "bad.toml",
        "[alarms]\nalarm_actions = [\"arn:aws:sqs:us-east-1:123456789012:ops\"]\ndisk_used_percent = 120\n",
    );
    let out = common::agent(&["check-config", bad.to_str().unwrap()]);
    let err = common::stdout(&out) + &common::stderr(&out);
    assert!(!out.status.success());
    assert!(
        err.contains("alarms.alarm_actions[0]") && err.contains("SNS topic ARN"),
        "{err}"
    );
    assert!(err.contains("alarms.disk_used_percent"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_is_put_and_reads_back_as_the_body_sent() {
    let moto = Moto::start();
    let aws = moto.aws().await;
    let cfg = config(&moto);
    let groups = vec!["golf".to_string()];
    let (name, _) = burst_agent::dashboard::apply(&aws, &cfg, &groups)
        .await
        .unwrap();
    assert_eq!(name, "burst-agent-golf");
    let got = aws
        .cloudwatch
        .get_dashboard()
        .dashboard_name(&name)
        .send()
        .await
        .unwrap();
    let back: serde_json::Value = serde_json::from_str(got.dashboard_body().unwrap()).unwrap();
    assert_eq!(back, burst_agent::dashboard::body(&cfg, &groups));
    // Put again (idempotent): still one dashboard of that name.
    burst_agent::dashboard::apply(&aws, &cfg, &groups)
        .await
        .unwrap();
    let list = aws.cloudwatch.list_dashboards().send().await.unwrap();
    let names: Vec<&str> = list
        .dashboard_entries()
        .iter()
        .filter_map(|d| d.dashboard_name())
        .collect();
    assert_eq!(names, ["burst-agent-golf"]);
}
