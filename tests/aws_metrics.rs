//! The custom metrics loop against a real moto server (CloudWatch): publish several hosts'
//! samples, read the fleet back, survive an unreachable CloudWatch, and keep the calls per
//! steady-state tick constant as the fleet grows (with the actuator's EC2/ELB calls).

mod common;

use burst_agent::actuator::cloud::AwsCloud;
use burst_agent::actuator::{Actuator, Phase};
use burst_agent::aws::{calls_between, Aws};
use burst_agent::config::{AwsConfig, Dur};
use burst_agent::metrics::{self, cloudwatch, Buffer};
use burst_agent::sampler::{ApacheSample, HostSample, LoadSample, MemorySample};
use common::moto::{actuator_config, scale_out, Moto};
use jiff::{SignedDuration, Timestamp};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

fn sample(at: Timestamp, load: f64, busy: u32) -> HostSample {
    HostSample {
        timestamp: at,
        host: "web".into(),
        cpus: 4,
        load: Some(LoadSample {
            one: load,
            five: load,
            fifteen: load,
            runnable_tasks: 3,
            total_tasks: 300,
        }),
        apache: ApacheSample {
            workers: Some(busy + 5),
            method: None,
            busy_workers: Some(busy),
            idle_workers: Some(5),
            max_workers: 100,
            total_accesses: None,
        },
        memory: Some(MemorySample {
            total_bytes: 1000,
            available_bytes: 400,
            swap_total_bytes: 0,
            swap_used_bytes: 0,
        }),
        disks: vec![],
        problems: vec![],
    }
}

fn push_hosts(buf: &Mutex<Buffer>, group: &str, hosts: &[(&str, f64, u32)], at: Timestamp) {
    let mut b = buf.lock().unwrap();
    for (id, load, busy) in hosts {
        let (data, bad) = metrics::host_data(&sample(at, *load, *busy), group, id);
        assert!(bad.is_empty());
        b.push(data);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_hosts_are_published_and_read_back_with_missing_ones_named() {
    let moto = Moto::start();
    let aws = moto.aws().await;
    let now = Timestamp::now();
    let buf = Mutex::new(Buffer::new(10_000));
    push_hosts(
        &buf,
        "site",
        &[("i-a", 2.0, 50), ("i-b", 6.0, 90), ("i-c", 0.4, 10)],
        now - SignedDuration::from_secs(5),
    );
    let flushed = cloudwatch::flush(&aws, "BurstAgentTest", 60, &buf).await;
    assert_eq!(flushed.calls, 1, "{flushed:?}");
    assert!(flushed.stopped_by.is_none());
    assert!(buf.lock().unwrap().is_empty());

    let ids: Vec<String> = ["i-a", "i-b", "i-c", "i-silent"].map(String::from).to_vec();
    let back = cloudwatch::read_fleet(&aws, "BurstAgentTest", "site", &ids, 60, 180, now)
        .await
        .unwrap();
    assert_eq!(back.missing, ["i-silent"], "no data is missing, not zero");
    let a = back.metrics["i-a"];
    assert_eq!(a.load_per_cpu, Some(0.5));
    assert_eq!(a.apache_busy_ratio, Some(0.5));
    assert_eq!(a.memory_used_ratio, Some(0.6));
    assert_eq!(back.metrics["i-b"].load_per_cpu, Some(1.5));

    // Another group's reader sees none of it.
    let other = cloudwatch::read_fleet(&aws, "BurstAgentTest", "other", &ids, 60, 180, now)
        .await
        .unwrap();
    assert_eq!(other.missing.len(), 4);

    // A sample older than stale_after reads back as missing.
    push_hosts(
        &buf,
        "site",
        &[("i-old", 3.0, 1)],
        now - SignedDuration::from_secs(600),
    );
    cloudwatch::flush(&aws, "BurstAgentTest", 60, &buf).await;
    let old = cloudwatch::read_fleet(
        &aws,
        "BurstAgentTest",
        "site",
        &["i-old".into()],
        60,
        180,
        now,
    )
    .await
    .unwrap();
    assert_eq!(old.missing, ["i-old"]);

    // The group-wide aggregate series exists with the Group dimension alone.
    let listed = aws
        .cloudwatch
        .list_metrics()
        .namespace("BurstAgentTest")
        .metric_name("LoadPerCpu")
        .send()
        .await
        .unwrap();
    assert!(listed
        .metrics()
        .iter()
        .any(|m| m.dimensions().len() == 1 && m.dimensions()[0].name() == Some("Group")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_cloudwatch_keeps_datapoints_bounded_and_sends_them_later() {
    let moto = Moto::start();
    let dead = AwsConfig {
        endpoint_url: format!("http://127.0.0.1:{}", common::apache::free_port()),
        call_timeout: Dur::secs(2),
        max_attempts: 1,
        ..moto.aws_config()
    };
    let creds = aws_sdk_ec2::config::Credentials::new("testing", "testing", None, None, "moto");
    let down = Aws::from_loader(
        &dead,
        aws_config::defaults(aws_config::BehaviorVersion::latest()).credentials_provider(creds),
    )
    .await;
    let now = Timestamp::now();
    let buf = Mutex::new(Buffer::new(40));
    push_hosts(&buf, "site", &[("i-a", 1.0, 1), ("i-b", 1.0, 1)], now);
    let queued = buf.lock().unwrap().len();
    let flushed = cloudwatch::flush(&down, "BurstAgentTest", 60, &buf).await;
    let err = flushed.stopped_by.expect("CloudWatch is down");
    assert!(err.retryable, "{err}");
    assert_eq!(buf.lock().unwrap().len(), queued, "nothing lost while down");
    // Sampling goes on while it is down: the buffer stays bounded, dropping the oldest.
    for _ in 0..5 {
        push_hosts(&buf, "site", &[("i-a", 1.0, 1)], now);
    }
    assert_eq!(buf.lock().unwrap().len(), 40);
    assert!(buf.lock().unwrap().dropped_total() > 0);
    // CloudWatch is back: everything queued goes out.
    let up = moto.aws().await;
    let flushed = cloudwatch::flush(&up, "BurstAgentTest", 60, &buf).await;
    assert_eq!(flushed.sent, 40);
    assert!(buf.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agents_own_metrics_are_published() {
    let moto = Moto::start();
    let aws = moto.aws().await;
    let now = Timestamp::now();
    let cap = burst_agent::cap::CapLedger::new("UTC", 7, None)
        .unwrap()
        .status(now);
    let data = metrics::agent_data(
        &metrics::AgentNumbers {
            decision: None,
            cap: &cap,
            api_errors: 1,
            hook_seconds: &[("pre_register", 3.5)],
            hook_failures: &[],
            launch_failures: 0,
            fleet: (0, 0, 0),
            silent: 0,
            dropped: 0,
        },
        "site",
        now,
    );
    let buf = Mutex::new(Buffer::new(100));
    buf.lock().unwrap().push(data);
    let f = cloudwatch::flush(&aws, "BurstAgentTest", 60, &buf).await;
    assert!(f.stopped_by.is_none() && f.refused == 0, "{f:?}");
    // In the agent's own namespace, which the slaves' policy does not name.
    let listed = aws
        .cloudwatch
        .list_metrics()
        .namespace("BurstAgentTest/Agent")
        .send()
        .await
        .unwrap();
    let names: Vec<&str> = listed
        .metrics()
        .iter()
        .filter_map(|m| m.metric_name())
        .collect();
    for n in [
        "BurstCapUsed",
        "BurstCapRemaining",
        "ApiErrors",
        "HookSeconds",
    ] {
        assert!(names.contains(&n), "{n} not in {names:?}");
    }
}

/// Issue 19, part 6, against moto's CloudWatch: the highest BurstCapUsed published since the
/// cap day began is read back (yesterday's higher count is not), and none reads as `None`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn todays_highest_burst_cap_used_is_read_back_from_cloudwatch() {
    let moto = Moto::start();
    let aws = moto.aws().await;
    let now = Timestamp::now();
    let since = now - SignedDuration::from_hours(2);
    assert_eq!(
        cloudwatch::cap_used_since(&aws, "BurstAgentCap", "site", since, now)
            .await
            .unwrap(),
        None
    );
    let buf = Mutex::new(Buffer::new(100));
    for (ago_mins, used) in [(180i64, 7u32), (90, 3), (60, 5), (10, 4)] {
        let at = now - SignedDuration::from_mins(ago_mins);
        let mut l = burst_agent::cap::CapLedger::new("UTC", 7, None).unwrap();
        for i in 0..used {
            l.record_attempt(&format!("k{i}"), at).unwrap();
        }
        let cap = l.status(at);
        buf.lock().unwrap().push(metrics::agent_data(
            &metrics::AgentNumbers {
                decision: None,
                cap: &cap,
                api_errors: 0,
                hook_seconds: &[],
                hook_failures: &[],
                launch_failures: 0,
                fleet: (0, 0, 0),
                silent: 0,
                dropped: 0,
            },
            "site",
            at,
        ));
    }
    let f = cloudwatch::flush(&aws, "BurstAgentCap", 60, &buf).await;
    assert!(f.stopped_by.is_none() && f.refused == 0, "{f:?}");
    // The agent's count lives where only the master writes, not in the site's namespace that
    // the slaves write too. (moto answers a query with dimensions from every namespace, so it
    // cannot show the read skipping a slave's forged count:
    // `cloudwatch::tests::the_cap_is_read_from_the_agents_own_namespace` shows what the read
    // names.)
    let names_in = |aws: &Aws, ns: &'static str| {
        let aws = aws.clone();
        async move {
            let l = aws
                .cloudwatch
                .list_metrics()
                .namespace(ns)
                .send()
                .await
                .unwrap();
            l.metrics()
                .iter()
                .filter_map(|m| m.metric_name().map(String::from))
                .collect::<Vec<_>>()
        }
    };
    assert!(
        names_in(&aws, "BurstAgentCap/Agent")
            .await
            .contains(&"BurstCapUsed".to_string()),
        "the agent's count is not in its own namespace"
    );
    assert!(
        !names_in(&aws, "BurstAgentCap")
            .await
            .contains(&"BurstCapUsed".to_string()),
        "the agent's count is in the namespace the slaves write"
    );
    let got = cloudwatch::cap_used_since(&aws, "BurstAgentCap", "site", since, now)
        .await
        .unwrap();
    assert_eq!(
        got,
        Some(5),
        "today's highest, not yesterday's 7 nor the latest 4"
    );
    let other = cloudwatch::cap_used_since(&aws, "BurstAgentCap", "another", since, now)
        .await
        .unwrap();
    assert_eq!(other, None, "another group's count is not this one's");
}

/// Issue 19, part 2: AWS's own metrics are read as evidence (here written into moto's
/// `AWS/EC2` and `AWS/ELB` as EC2 and the ELB would: real CloudWatch refuses PutMetricData into
/// an `AWS/` namespace, which is why no slave can forge them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_elbs_and_ec2s_own_metrics_are_read_back_as_evidence() {
    use aws_sdk_cloudwatch::types::{Dimension, MetricDatum};
    let moto = Moto::start();
    let aws = moto.aws().await;
    let now = Timestamp::now();
    let ids = vec!["i-busy".to_string(), "i-quiet".to_string()];
    let none = cloudwatch::read_evidence(&aws, "site-elb", &ids, now)
        .await
        .unwrap();
    assert!(
        none.cpu.is_empty() && none.elb_saturated.is_none(),
        "{none:?}"
    );
    let put = |ns: &'static str, name: &'static str, dim: (&'static str, &'static str), v: f64| {
        let aws = aws.clone();
        async move {
            aws.cloudwatch
                .put_metric_data()
                .namespace(ns)
                .metric_data(
                    MetricDatum::builder()
                        .metric_name(name)
                        .dimensions(Dimension::builder().name(dim.0).value(dim.1).build())
                        .value(v)
                        .timestamp(aws_smithy_types::DateTime::from_secs(
                            (now - SignedDuration::from_secs(60)).as_second(),
                        ))
                        .build(),
                )
                .send()
                .await
                .unwrap();
        }
    };
    put("AWS/EC2", "CPUUtilization", ("InstanceId", "i-busy"), 87.0).await;
    put(
        "AWS/ELB",
        "SurgeQueueLength",
        ("LoadBalancerName", "site-elb"),
        12.0,
    )
    .await;
    let ev = cloudwatch::read_evidence(&aws, "site-elb", &ids, now)
        .await
        .unwrap();
    assert_eq!(ev.cpu.get("i-busy").copied(), Some(0.87), "{ev:?}");
    assert!(!ev.cpu.contains_key("i-quiet"));
    assert!(
        ev.elb_saturated
            .as_deref()
            .is_some_and(|w| w.contains("12")),
        "{ev:?}"
    );
    let other = cloudwatch::read_evidence(&aws, "another-elb", &ids, now)
        .await
        .unwrap();
    assert!(other.elb_saturated.is_none());
}

/// One steady-state tick of the master: the actuator's reconcile step, the publish of its own
/// sample and numbers, and the fleet read-back (slaves publish their own samples). Its AWS calls must not grow with the slaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_per_steady_tick_do_not_grow_with_1_10_100_slaves() {
    let mut per_size = BTreeMap::new();
    for n in [1u32, 10, 100] {
        let moto = Moto::start();
        let aws = moto.aws().await;
        let dir = tempfile::tempdir().unwrap();
        let group = format!("fleet{n}");
        let mut cfg = actuator_config(&moto, &group, dir.path(), dir.path(), dir.path());
        cfg.cap.daily_limit = 200;
        cfg.hooks.pre_register.argv = vec!["true".into()];
        moto.create_elb(&aws, &cfg.elb.name).await;
        let cloud = AwsCloud::new(aws.clone(), &group, &cfg.elb.name, &cfg.fleet).unwrap();
        let mut act = Actuator::open(cloud, &cfg, Timestamp::now()).unwrap();
        act.cap_read_back(Ok(None), Timestamp::now());
        // A site whose content path is proven: the whole fleet launches at once (the brake's
        // two-at-a-time start is not what this counts).
        act.prove_sync(Timestamp::now());
        act.apply(&scale_out(n), Timestamp::now()).await;
        let t = std::time::Instant::now();
        while act.slaves().filter(|s| s.phase == Phase::InService).count() < n as usize {
            act.step(Timestamp::now()).await.unwrap();
            assert!(
                t.elapsed() < Duration::from_secs(120),
                "{n} slaves not in service"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let ids: Vec<String> = act.slaves().map(|s| s.id.clone()).collect();
        let buf = Mutex::new(Buffer::new(100_000));

        // The slaves' reporters publish their own samples (not part of the master's tick).
        let now = Timestamp::now();
        for id in &ids {
            let (data, _) = metrics::host_data(&sample(now, 1.0, 10), &group, id);
            buf.lock().unwrap().push(data);
        }
        cloudwatch::flush(&aws, "BurstAgentTest", 60, &buf).await;

        let before = aws.stats().snapshot();
        act.step(now).await.unwrap();
        let (mine, _) = metrics::host_data(&sample(now, 1.0, 10), &group, "i-master");
        let cap = act.ledger().status(now);
        let own = metrics::agent_data(
            &metrics::AgentNumbers {
                decision: None,
                cap: &cap,
                api_errors: 0,
                hook_seconds: &[],
                hook_failures: &[],
                launch_failures: 0,
                fleet: (0, 0, 0),
                silent: 0,
                dropped: 0,
            },
            &group,
            now,
        );
        buf.lock().unwrap().push(mine.into_iter().chain(own));
        cloudwatch::flush(&aws, "BurstAgentTest", 60, &buf).await;
        let back = cloudwatch::read_fleet(&aws, "BurstAgentTest", &group, &ids, 60, 180, now)
            .await
            .unwrap();
        assert_eq!(back.metrics.len(), n as usize);
        let calls = calls_between(&before, &aws.stats().snapshot());
        eprintln!("{n:>3} slaves: {calls:?}");
        per_size.insert(n, calls);
    }
    assert_eq!(per_size[&1], per_size[&10], "{per_size:?}");
    assert_eq!(per_size[&1], per_size[&100], "{per_size:?}");
    assert_eq!(per_size[&1]["DescribeInstances"], 1);
    assert_eq!(per_size[&1]["DescribeInstanceHealth"], 1);
    assert_eq!(per_size[&1]["GetMetricData"], 1);
    // One PutMetricData per namespace: the master's host sample goes to the site's namespace,
    // its own numbers (Heartbeat, BurstCapUsed, ...) to NAMESPACE/Agent, which no slave may write.
    assert_eq!(per_size[&1]["PutMetricData"], 2);
    assert_eq!(per_size[&1].values().sum::<u64>(), 5);
}
