//! The standard CloudWatch alarms for one group, made from the metrics the agent publishes (and
//! the classic ELB's own). [`plan`] is pure: the config in, the alarms out, each named
//! `burst-agent/GROUP/KIND` so that the agent's `alarms::apply` can upsert them (PutMetricAlarm)
//! and prune this group's alarms that are no longer planned, and nobody else's.

use crate::config::Config;

/// Every kind of alarm, as `alarms.disabled` names them.
pub const KINDS: &[&str] = &[
    "disk",
    "memory",
    "apache_saturated",
    "cap_low",
    "cap_exhausted",
    "sync_failures",
    "launch_failures",
    "slave_silent",
    "api_errors",
    "heartbeat",
    "elb_unhealthy",
    "elb_surge_queue",
    "probe_failed",
    "probe_latency",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compare {
    AtLeast,
    AtMost,
    Below,
}

/// One alarm, as PutMetricAlarm takes it.
#[derive(Clone, Debug, PartialEq)]
pub struct AlarmSpec {
    pub name: String,
    pub kind: &'static str,
    /// What it means and the first thing to do.
    pub description: String,
    pub namespace: String,
    pub metric: &'static str,
    pub dims: Vec<(&'static str, String)>,
    pub statistic: &'static str,
    pub period_secs: i32,
    pub evaluation_periods: i32,
    pub threshold: f64,
    pub compare: Compare,
    /// `breaching` when silence itself is the problem (the heartbeat), else `notBreaching`.
    pub treat_missing: &'static str,
}

/// The prefix of every alarm name of `group`.
pub fn prefix(group: &str) -> String {
    format!("burst-agent/{group}/")
}

fn minutes(d: crate::config::Dur) -> i32 {
    i32::try_from(d.get().as_secs() / 60)
        .unwrap_or(i32::MAX)
        .max(1)
}

/// The alarms the config asks for.
pub fn plan(cfg: &Config) -> Vec<AlarmSpec> {
    let a = &cfg.alarms;
    let group = &cfg.agent.group;
    let ns = cfg.metrics.namespace_for(group);
    let g = || vec![("Group", group.clone())];
    let spec = |kind: &'static str,
                suffix: String,
                metric: &'static str,
                dims: Vec<(&'static str, String)>,
                statistic: &'static str,
                (period_secs, evaluation_periods): (i32, i32),
                (compare, threshold): (Compare, f64),
                description: String| AlarmSpec {
        name: format!("{}{kind}{suffix}", prefix(group)),
        kind,
        description,
        namespace: crate::metrics::Ns::of(metric).name(&ns),
        metric,
        dims,
        statistic,
        period_secs,
        evaluation_periods,
        threshold,
        compare,
        treat_missing: "notBreaching",
    };
    let mut out = Vec::new();
    for path in &cfg.sampling.disk_paths {
        let p = path.display().to_string();
        let mut dims = g();
        dims.push(("Path", p.clone()));
        out.push(spec(
            "disk",
            format!(":{p}"),
            "DiskUsedPercent",
            dims,
            "Maximum",
            (300, 1),
            (Compare::AtLeast, a.disk_used_percent),
            format!(
                "a host of {group} has {p} at least {}% full: find it in the dashboard or with \
                 `burst-agent status`, then clear logs or caches before the web server fails",
                a.disk_used_percent
            ),
        ));
    }
    out.push(spec(
        "memory",
        String::new(),
        "MemoryUsedRatio",
        g(),
        "Maximum",
        (300, 1),
        // The metric is a ratio; the key is a percent, as every [alarms] threshold is.
        (Compare::AtLeast, a.memory_used_percent / 100.0),
        format!(
            "a host of {group} uses at least {:.0}% of its memory: look for runaway PHP or Apache \
             workers (`burst-agent sample`)",
            a.memory_used_percent
        ),
    ));
    out.push(spec(
        "apache_saturated",
        String::new(),
        "ApacheBusyRatio",
        g(),
        "Maximum",
        (60, minutes(a.apache_saturated_for)),
        (Compare::AtLeast, 1.0),
        format!(
            "every Apache worker of a host of {group} busy for {}: the site queues; check the \
             agent is scaling out (`burst-agent status`: reasons, burst cap)",
            a.apache_saturated_for
        ),
    ));
    if a.cap_remaining_at_most > 0 {
        out.push(spec(
            "cap_low",
            String::new(),
            "BurstCapRemaining",
            g(),
            "Minimum",
            (300, 1),
            (Compare::AtMost, f64::from(a.cap_remaining_at_most)),
            format!(
                "{group} has at most {} burst launch(es) left today: the next burst may be met \
                 by fewer slaves; tell the customer or raise cap.daily_limit (live on reload)",
                a.cap_remaining_at_most
            ),
        ));
    }
    out.push(spec(
        "cap_exhausted",
        String::new(),
        "BurstCapRemaining",
        g(),
        "Minimum",
        (60, 1),
        (Compare::AtMost, 0.0),
        format!(
            "{group} has used its whole burst cap for today: no slave is launched until the day \
             resets (`burst-agent status` says when)"
        ),
    ));
    let mut sync = g();
    sync.push(("Hook", "pre_register".into()));
    out.push(spec(
        "sync_failures",
        String::new(),
        "HookFailures",
        sync,
        "Sum",
        (300, 1),
        (Compare::AtLeast, 1.0),
        format!(
            "a content sync to a new slave of {group} failed: the slave was terminated, never \
             registered; the agent's journal line ends with `fix:`"
        ),
    ));
    out.push(spec(
        "launch_failures",
        String::new(),
        "LaunchFailures",
        g(),
        "Sum",
        (300, 1),
        (Compare::AtLeast, 1.0),
        format!(
            "EC2 refused a launch for {group} (limits, permissions, no capacity anywhere): the \
             journal says which; see docs/operations.md, troubleshooting"
        ),
    ));
    out.push(spec(
        "slave_silent",
        String::new(),
        "SlavesSilent",
        g(),
        "Maximum",
        (300, 1),
        (Compare::AtLeast, 1.0),
        format!(
            "a serving slave of {group} has not reported its samples for metrics.stale_after \
             ({}): the agent never scales in for it; `burst-agent status` marks it SILENT. On \
             the slave, check its burst-agent reporter (role = \"reporter\", dry_run = false, \
             aws.region, the same metrics.namespace)",
            cfg.metrics.stale_after
        ),
    ));
    out.push(spec(
        "api_errors",
        String::new(),
        "ApiErrors",
        g(),
        "Sum",
        (300, 1),
        (Compare::AtLeast, f64::from(a.api_errors)),
        format!(
            "the agent of {group} got at least {} AWS API errors in five minutes: check its \
             credentials, IAM policy and the AWS Health Dashboard",
            a.api_errors
        ),
    ));
    let mut heartbeat = spec(
        "heartbeat",
        String::new(),
        "Heartbeat",
        g(),
        "SampleCount",
        (60, minutes(a.heartbeat_missing_for)),
        (Compare::Below, 1.0),
        format!(
            "the agent of {group} has published nothing for {}: `systemctl status burst-agent`, \
             `journalctl -u burst-agent`",
            a.heartbeat_missing_for
        ),
    );
    heartbeat.treat_missing = "breaching";
    out.push(heartbeat);
    // A period holds at least one probe (whole minutes, as CloudWatch's periods are).
    let probe_period = i32::try_from(cfg.sampling.probe_interval.get().as_secs().div_ceil(60) * 60)
        .unwrap_or(3600)
        .max(60);
    for (i, url) in cfg.sampling.probe_urls.iter().enumerate() {
        let mut dims = g();
        dims.push(("Url", url.clone()));
        // Alarm names are at most 255 characters: a long URL goes by its place in the list.
        let suffix = |kind: &str| {
            if prefix(group).len() + kind.len() + 1 + url.len() <= 255 {
                format!(":{url}")
            } else {
                format!(":{i}")
            }
        };
        out.push(spec(
            "probe_failed",
            suffix("probe_failed"),
            "ProbeFailed",
            dims.clone(),
            "Minimum",
            (probe_period, 3),
            (Compare::AtLeast, 1.0),
            format!(
                "{url} has failed every probe for three periods (no answer, a timeout or an HTTP \
                 error): visitors see it too, and with the probe_latency signal the agent keeps \
                 its slaves (a missing signal never scales in); `burst-agent status` shows the \
                 last probe and why, then check Apache and the ELB's healthy hosts"
            ),
        ));
        out.push(spec(
            "probe_latency",
            suffix("probe_latency"),
            "ProbeLatency",
            dims,
            "Average",
            (probe_period, 5),
            (Compare::AtLeast, a.probe_latency_ms),
            format!(
                "{url} took {} ms or more on average for five minutes: the site crawls; check the \
                 agent is scaling out (`burst-agent status`: reasons, burst cap)",
                a.probe_latency_ms
            ),
        ));
    }
    if !cfg.elb.name.is_empty() {
        let elb = || vec![("LoadBalancerName", cfg.elb.name.clone())];
        let mut unhealthy = spec(
            "elb_unhealthy",
            String::new(),
            "UnHealthyHostCount",
            elb(),
            "Maximum",
            (60, 5),
            (Compare::AtLeast, f64::from(a.elb_unhealthy_hosts)),
            format!(
                "the ELB {} has called at least {} host(s) unhealthy for five minutes: a slave \
                 without content or a dead Apache; the agent replaces slaves it sees OutOfService",
                cfg.elb.name, a.elb_unhealthy_hosts
            ),
        );
        unhealthy.namespace = "AWS/ELB".into();
        out.push(unhealthy);
        let mut surge = spec(
            "elb_surge_queue",
            String::new(),
            "SurgeQueueLength",
            elb(),
            "Maximum",
            (60, 5),
            (Compare::AtLeast, f64::from(a.elb_surge_queue_length)),
            format!(
                "the ELB {} has kept at least {} requests waiting for a host for five minutes: \
                 the fleet is too small; check the burst cap and max_slaves",
                cfg.elb.name, a.elb_surge_queue_length
            ),
        );
        surge.namespace = "AWS/ELB".into();
        out.push(surge);
    }
    out.retain(|s| !a.disabled.iter().any(|d| d == s.kind));
    out
}

/// The plan as a table for `--print`.
pub fn table(plan: &[AlarmSpec]) -> String {
    let mut o = String::from("alarm | metric | fires when | missing data\n");
    for s in plan {
        let op = match s.compare {
            Compare::AtLeast => ">=",
            Compare::AtMost => "<=",
            Compare::Below => "<",
        };
        let dims: Vec<String> = s.dims.iter().map(|(k, v)| format!("{k}={v}")).collect();
        o.push_str(&format!(
            "{} | {}/{} {{{}}} | {} {op} {} for {}x{}s | {}\n",
            s.name,
            s.namespace,
            s.metric,
            dims.join(", "),
            s.statistic,
            s.threshold,
            s.evaluation_periods,
            s.period_secs,
            s.treat_missing
        ));
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn cfg() -> Config {
        let mut c = Config::default();
        c.agent.group = "golf".into();
        c.elb.name = "golf-elb".into();
        c.sampling.disk_paths = vec!["/".into(), "/var/www".into()];
        c.sampling.probe_urls = vec!["http://golf-elb-1.example.com/".into()];
        c
    }

    fn find<'a>(p: &'a [AlarmSpec], name: &str) -> &'a AlarmSpec {
        p.iter().find(|s| s.name == name).unwrap_or_else(|| {
            panic!(
                "no alarm {name}: {:#?}",
                p.iter().map(|s| &s.name).collect::<Vec<_>>()
            )
        })
    }

    #[test]
    fn every_condition_the_issue_names_has_its_alarm_under_the_group_prefix() {
        let p = plan(&cfg());
        for s in &p {
            assert!(s.name.starts_with("burst-agent/golf/"), "{}", s.name);
        }
        let names: BTreeSet<&str> = p.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names.len(), p.len(), "names are unique");
        // One disk alarm per path, on the worst host (Maximum over the group's series).
        let d = find(&p, "burst-agent/golf/disk:/var/www");
        assert_eq!((d.statistic, d.threshold), ("Maximum", 90.0));
        assert!(d.dims.contains(&("Path", "/var/www".into())));
        assert!(names.contains("burst-agent/golf/disk:/"));
        // The heartbeat fires on silence.
        let h = find(&p, "burst-agent/golf/heartbeat");
        assert_eq!(h.treat_missing, "breaching");
        assert_eq!((h.compare, h.evaluation_periods), (Compare::Below, 5));
        // ...on the master's own heartbeat, where no slave can write one for it.
        assert_eq!(h.namespace, "BurstAgent/golf/Agent");
        assert_eq!(
            find(&p, "burst-agent/golf/disk:/").namespace,
            "BurstAgent/golf"
        );
        // The ELB's own metrics, by its name.
        let e = find(&p, "burst-agent/golf/elb_surge_queue");
        assert_eq!(e.namespace, "AWS/ELB");
        assert_eq!(e.dims, vec![("LoadBalancerName", "golf-elb".to_string())]);
        let c = find(&p, "burst-agent/golf/cap_exhausted");
        assert_eq!((c.compare, c.threshold), (Compare::AtMost, 0.0));
        // The probe, per URL: failing every minute for three, or slow on average.
        let f = find(
            &p,
            "burst-agent/golf/probe_failed:http://golf-elb-1.example.com/",
        );
        assert_eq!((f.statistic, f.evaluation_periods), ("Minimum", 3));
        assert_eq!(f.period_secs, 60);
        // A probe every 90 s: periods of two minutes, so each holds a probe.
        let mut slow = cfg();
        slow.sampling.probe_interval = crate::config::Dur::secs(90);
        let f = plan(&slow)
            .into_iter()
            .find(|s| s.kind == "probe_failed")
            .unwrap();
        assert_eq!(f.period_secs, 120);
        assert!(f
            .dims
            .contains(&("Url", "http://golf-elb-1.example.com/".into())));
        let l = find(
            &p,
            "burst-agent/golf/probe_latency:http://golf-elb-1.example.com/",
        );
        assert_eq!((l.metric, l.threshold), ("ProbeLatency", 2000.0));
        // Every kind is planned once at least (disk twice).
        for k in KINDS {
            assert!(p.iter().any(|s| s.kind == *k), "{k}");
        }
    }

    #[test]
    fn disabled_kinds_and_an_elb_less_config_plan_fewer() {
        let mut c = cfg();
        c.alarms.disabled = vec!["disk".into(), "heartbeat".into()];
        c.alarms.cap_remaining_at_most = 0;
        c.elb.name.clear();
        let p = plan(&c);
        let kinds: BTreeSet<&str> = p.iter().map(|s| s.kind).collect();
        for gone in [
            "disk",
            "heartbeat",
            "cap_low",
            "elb_unhealthy",
            "elb_surge_queue",
        ] {
            assert!(!kinds.contains(gone), "{gone}");
        }
        assert!(kinds.contains("cap_exhausted"));
    }
}
