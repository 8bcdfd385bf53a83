//! The standard CloudWatch alarms for one group, made from the metrics the agent publishes (and
//! the classic ELB's own). [`plan`] is pure: the config in, the alarms out, each named
//! `burst-agent/GROUP/KIND` so that the agent's `alarms::apply` can upsert them (PutMetricAlarm)
//! and prune this group's alarms that are no longer planned, and nobody else's.

use crate::config::{AlarmsConfig, Config};

/// Every kind of alarm, as `alarms.disabled` names them.
pub const KINDS: &[&str] = &[
    "disk",
    "memory",
    "apache_saturated",
    "bridge_on",
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

/// Which alarms one kind makes: what each watches, its name's suffix and its dimensions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scope {
    /// One per `sampling.disk_paths`, named `KIND:PATH`, on `Group` and `Path`.
    DiskPath,
    /// One on the group's series (`Group`).
    Group,
    /// One per `sampling.probe_urls`, named `KIND:URL`, on `Group` and `Url`.
    ProbeUrl,
    /// One on the classic ELB's own metrics (`AWS/ELB`, `LoadBalancerName`), if `elb.name` is set.
    Elb,
}

/// One kind of alarm: a row of [`ALARM_KINDS`].
struct AlarmKind {
    kind: &'static str,
    scope: Scope,
    /// Whether the config asks for it at all (`alarms.disabled` aside).
    wanted: fn(&Config) -> bool,
    metric: &'static str,
    /// Dimensions after the scope's own.
    extra_dims: &'static [(&'static str, &'static str)],
    statistic: &'static str,
    /// `(period_secs, evaluation_periods)`.
    periods: fn(&Config) -> (i32, i32),
    compare: Compare,
    threshold: fn(&AlarmsConfig) -> f64,
    treat_missing: &'static str,
    /// The description, given what the alarm watches: the group, a disk path, a probe URL or
    /// the ELB's name.
    describe: fn(&Config, &str) -> String,
}

fn always(_: &Config) -> bool {
    true
}

/// Five-minute periods, one of them.
fn five_minutes(_: &Config) -> (i32, i32) {
    (300, 1)
}

/// A period holds at least one probe (whole minutes, as CloudWatch's periods are).
fn probe_period(cfg: &Config) -> i32 {
    i32::try_from(cfg.sampling.probe_interval.get().as_secs().div_ceil(60) * 60)
        .unwrap_or(3600)
        .max(60)
}

/// Every alarm kind, in the order [`plan`] makes them (kinds of one scope in a run go target by
/// target: a probe URL's two alarms together).
const ALARM_KINDS: &[AlarmKind] = &[
    AlarmKind {
        kind: "disk",
        scope: Scope::DiskPath,
        wanted: always,
        metric: "DiskUsedPercent",
        extra_dims: &[],
        statistic: "Maximum",
        periods: five_minutes,
        compare: Compare::AtLeast,
        threshold: |a| a.disk_used_percent,
        treat_missing: "notBreaching",
        describe: |c, p| {
            format!(
                "a host of {} has {p} at least {}% full: find it in the dashboard or with \
                 `burst-agent status`, then clear logs or caches before the web server fails",
                c.agent.group, c.alarms.disk_used_percent
            )
        },
    },
    AlarmKind {
        kind: "memory",
        scope: Scope::Group,
        wanted: always,
        metric: "MemoryUsedRatio",
        extra_dims: &[],
        statistic: "Maximum",
        periods: five_minutes,
        compare: Compare::AtLeast,
        // The metric is a ratio; the key is a percent, as every [alarms] threshold is.
        threshold: |a| a.memory_used_percent / 100.0,
        treat_missing: "notBreaching",
        describe: |c, group| {
            format!(
                "a host of {group} uses at least {:.0}% of its memory: look for runaway PHP or \
                 Apache workers (`burst-agent sample`)",
                c.alarms.memory_used_percent
            )
        },
    },
    AlarmKind {
        kind: "apache_saturated",
        scope: Scope::Group,
        wanted: always,
        metric: "ApacheBusyRatio",
        extra_dims: &[],
        statistic: "Maximum",
        periods: |c| (60, minutes(c.alarms.apache_saturated_for)),
        compare: Compare::AtLeast,
        threshold: |_| 1.0,
        treat_missing: "notBreaching",
        describe: |c, group| {
            format!(
                "every Apache worker of a host of {group} busy for {}: the site queues; check the \
                 agent is scaling out (`burst-agent status`: reasons, burst cap)",
                c.alarms.apache_saturated_for
            )
        },
    },
    AlarmKind {
        kind: "bridge_on",
        scope: Scope::Group,
        wanted: |c| c.bridge.enabled,
        metric: "BridgeLevel",
        extra_dims: &[],
        statistic: "Minimum",
        // Five-minute periods: a day of them is CloudWatch's longest evaluation.
        periods: |c| (300, (minutes(c.alarms.bridge_on_for) / 5).max(1)),
        compare: Compare::AtLeast,
        threshold: |_| 1.0,
        treat_missing: "notBreaching",
        describe: |c, group| {
            format!(
                "{group} has served degraded (the brownout bridge on) for {} without a break: \
                 the site is short for longer than a burst's lead time; see why with \
                 `burst-agent status` (the cap, max_slaves, a held launch) and end it with \
                 `burst-agent bridge off` if it should not be",
                c.alarms.bridge_on_for
            )
        },
    },
    AlarmKind {
        kind: "cap_low",
        scope: Scope::Group,
        wanted: |c| c.alarms.cap_remaining_at_most > 0,
        metric: "BurstCapRemaining",
        extra_dims: &[],
        statistic: "Minimum",
        periods: five_minutes,
        compare: Compare::AtMost,
        threshold: |a| f64::from(a.cap_remaining_at_most),
        treat_missing: "notBreaching",
        describe: |c, group| {
            format!(
                "{group} has at most {} burst launch(es) left today: the next burst may be met \
                 by fewer slaves; tell the customer or raise cap.daily_limit (live on reload)",
                c.alarms.cap_remaining_at_most
            )
        },
    },
    AlarmKind {
        kind: "cap_exhausted",
        scope: Scope::Group,
        wanted: always,
        metric: "BurstCapRemaining",
        extra_dims: &[],
        statistic: "Minimum",
        periods: |_| (60, 1),
        compare: Compare::AtMost,
        threshold: |_| 0.0,
        treat_missing: "notBreaching",
        describe: |_, group| {
            format!(
                "{group} has used its whole burst cap for today: no slave is launched until the \
                 day resets (`burst-agent status` says when)"
            )
        },
    },
    AlarmKind {
        kind: "sync_failures",
        scope: Scope::Group,
        wanted: always,
        metric: "HookFailures",
        extra_dims: &[("Hook", "pre_register")],
        statistic: "Sum",
        periods: five_minutes,
        compare: Compare::AtLeast,
        threshold: |_| 1.0,
        treat_missing: "notBreaching",
        describe: |_, group| {
            format!(
                "a content sync to a new slave of {group} failed: the slave was terminated, never \
                 registered; the agent's journal line ends with `fix:`"
            )
        },
    },
    AlarmKind {
        kind: "launch_failures",
        scope: Scope::Group,
        wanted: always,
        metric: "LaunchFailures",
        extra_dims: &[],
        statistic: "Sum",
        periods: five_minutes,
        compare: Compare::AtLeast,
        threshold: |_| 1.0,
        treat_missing: "notBreaching",
        describe: |_, group| {
            format!(
                "EC2 refused a launch for {group} (limits, permissions, no capacity anywhere): the \
                 journal says which; see docs/operations.md, troubleshooting"
            )
        },
    },
    AlarmKind {
        kind: "slave_silent",
        scope: Scope::Group,
        wanted: always,
        metric: "SlavesSilent",
        extra_dims: &[],
        statistic: "Maximum",
        periods: five_minutes,
        compare: Compare::AtLeast,
        threshold: |_| 1.0,
        treat_missing: "notBreaching",
        describe: |c, group| {
            format!(
                "a serving slave of {group} has not reported its samples for metrics.stale_after \
                 ({}): the agent never scales in for it; `burst-agent status` marks it SILENT. On \
                 the slave, check its burst-agent reporter (role = \"reporter\", dry_run = false, \
                 aws.region, the same metrics.namespace)",
                c.metrics.stale_after
            )
        },
    },
    AlarmKind {
        kind: "api_errors",
        scope: Scope::Group,
        wanted: always,
        metric: "ApiErrors",
        extra_dims: &[],
        statistic: "Sum",
        periods: five_minutes,
        compare: Compare::AtLeast,
        threshold: |a| f64::from(a.api_errors),
        treat_missing: "notBreaching",
        describe: |c, group| {
            format!(
                "the agent of {group} got at least {} AWS API errors in five minutes: check its \
                 credentials, IAM policy and the AWS Health Dashboard",
                c.alarms.api_errors
            )
        },
    },
    AlarmKind {
        kind: "heartbeat",
        scope: Scope::Group,
        wanted: always,
        metric: "Heartbeat",
        extra_dims: &[],
        statistic: "SampleCount",
        periods: |c| (60, minutes(c.alarms.heartbeat_missing_for)),
        compare: Compare::Below,
        threshold: |_| 1.0,
        // Silence itself is the problem.
        treat_missing: "breaching",
        describe: |c, group| {
            format!(
                "the agent of {group} has published nothing for {}: `systemctl status \
                 burst-agent`, `journalctl -u burst-agent`",
                c.alarms.heartbeat_missing_for
            )
        },
    },
    AlarmKind {
        kind: "probe_failed",
        scope: Scope::ProbeUrl,
        wanted: always,
        metric: "ProbeFailed",
        extra_dims: &[],
        statistic: "Minimum",
        periods: |c| (probe_period(c), 3),
        compare: Compare::AtLeast,
        threshold: |_| 1.0,
        treat_missing: "notBreaching",
        describe: |_, url| {
            format!(
                "{url} has failed every probe for three periods (no answer, a timeout or an HTTP \
                 error): visitors see it too, and with the probe_latency signal the agent keeps \
                 its slaves (a missing signal never scales in); `burst-agent status` shows the \
                 last probe and why, then check Apache and the ELB's healthy hosts"
            )
        },
    },
    AlarmKind {
        kind: "probe_latency",
        scope: Scope::ProbeUrl,
        wanted: always,
        metric: "ProbeLatency",
        extra_dims: &[],
        statistic: "Average",
        periods: |c| (probe_period(c), 5),
        compare: Compare::AtLeast,
        threshold: |a| a.probe_latency_ms,
        treat_missing: "notBreaching",
        describe: |c, url| {
            format!(
                "{url} took {} ms or more on average for five minutes: the site crawls; check the \
                 agent is scaling out (`burst-agent status`: reasons, burst cap)",
                c.alarms.probe_latency_ms
            )
        },
    },
    AlarmKind {
        kind: "elb_unhealthy",
        scope: Scope::Elb,
        wanted: always,
        metric: "UnHealthyHostCount",
        extra_dims: &[],
        statistic: "Maximum",
        periods: |_| (60, 5),
        compare: Compare::AtLeast,
        threshold: |a| f64::from(a.elb_unhealthy_hosts),
        treat_missing: "notBreaching",
        describe: |c, elb| {
            format!(
                "the ELB {elb} has called at least {} host(s) unhealthy for five minutes: a slave \
                 without content or a dead Apache; the agent replaces slaves it sees OutOfService",
                c.alarms.elb_unhealthy_hosts
            )
        },
    },
    AlarmKind {
        kind: "elb_surge_queue",
        scope: Scope::Elb,
        wanted: always,
        metric: "SurgeQueueLength",
        extra_dims: &[],
        statistic: "Maximum",
        periods: |_| (60, 5),
        compare: Compare::AtLeast,
        threshold: |a| f64::from(a.elb_surge_queue_length),
        treat_missing: "notBreaching",
        describe: |c, elb| {
            format!(
                "the ELB {elb} has kept at least {} requests waiting for a host for five minutes: \
                 the fleet is too small; check the burst cap and max_slaves",
                c.alarms.elb_surge_queue_length
            )
        },
    },
];

/// One thing a kind's alarms watch.
struct Target {
    /// What the description names: the group, a disk path, a probe URL or the ELB's name.
    subject: String,
    dims: Vec<(&'static str, String)>,
    /// Its place in its list (disk paths, probe URLs).
    index: usize,
}

/// What the alarms of `scope` watch, in order: none, one, or one per path or URL.
fn targets(cfg: &Config, scope: Scope) -> Vec<Target> {
    let group = &cfg.agent.group;
    let on = |subject: String, extra: Option<&'static str>, index: usize| Target {
        dims: std::iter::once(("Group", group.clone()))
            .chain(extra.map(|k| (k, subject.clone())))
            .collect(),
        subject,
        index,
    };
    match scope {
        Scope::DiskPath => cfg
            .sampling
            .disk_paths
            .iter()
            .enumerate()
            .map(|(i, path)| on(path.display().to_string(), Some("Path"), i))
            .collect(),
        Scope::Group => vec![on(group.clone(), None, 0)],
        Scope::ProbeUrl => cfg
            .sampling
            .probe_urls
            .iter()
            .enumerate()
            .map(|(i, url)| on(url.clone(), Some("Url"), i))
            .collect(),
        Scope::Elb if cfg.elb.name.is_empty() => Vec::new(),
        Scope::Elb => vec![Target {
            subject: cfg.elb.name.clone(),
            dims: vec![("LoadBalancerName", cfg.elb.name.clone())],
            index: 0,
        }],
    }
}

impl AlarmKind {
    /// What follows `burst-agent/GROUP/KIND` in the name of this kind's alarm on `target`.
    fn suffix(&self, group: &str, target: &Target) -> String {
        match self.scope {
            Scope::Group | Scope::Elb => String::new(),
            Scope::DiskPath => format!(":{}", target.subject),
            // Alarm names are at most 255 characters: a long URL goes by its place in the list.
            Scope::ProbeUrl => {
                let url = &target.subject;
                if prefix(group).len() + self.kind.len() + 1 + url.len() <= 255 {
                    format!(":{url}")
                } else {
                    format!(":{}", target.index)
                }
            }
        }
    }

    /// This kind's alarm on one target, its metric in the site's namespace `ns` (or `AWS/ELB`).
    fn alarm(&self, cfg: &Config, ns: &str, target: &Target) -> AlarmSpec {
        let group = &cfg.agent.group;
        let mut dims = target.dims.clone();
        dims.extend(self.extra_dims.iter().map(|&(k, v)| (k, v.to_string())));
        let (period_secs, evaluation_periods) = (self.periods)(cfg);
        AlarmSpec {
            name: format!(
                "{}{}{}",
                prefix(group),
                self.kind,
                self.suffix(group, target)
            ),
            kind: self.kind,
            description: (self.describe)(cfg, &target.subject),
            namespace: match self.scope {
                Scope::Elb => "AWS/ELB".into(),
                _ => crate::metrics::Ns::of(self.metric).name(ns),
            },
            metric: self.metric,
            dims,
            statistic: self.statistic,
            period_secs,
            evaluation_periods,
            threshold: (self.threshold)(&cfg.alarms),
            compare: self.compare,
            treat_missing: self.treat_missing,
        }
    }
}

/// The alarms the config asks for.
pub fn plan(cfg: &Config) -> Vec<AlarmSpec> {
    let ns = cfg.metrics.namespace_for(&cfg.agent.group);
    let mut out = Vec::new();
    // Kinds of one scope in a row go target by target: each probe URL's two alarms together.
    for run in ALARM_KINDS.chunk_by(|a, b| a.scope == b.scope) {
        for target in targets(cfg, run[0].scope) {
            for kind in run.iter().filter(|k| (k.wanted)(cfg)) {
                out.push(kind.alarm(cfg, &ns, &target));
            }
        }
    }
    out.retain(|s| !cfg.alarms.disabled.iter().any(|d| d == s.kind));
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
        c.bridge.enabled = true;
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
        // The bridge on for an hour: BridgeLevel's Minimum at least 1 in twelve five-minute
        // periods, in the agent's own namespace (no slave can write it).
        let b = find(&p, "burst-agent/golf/bridge_on");
        assert_eq!(
            (b.metric, b.statistic, b.threshold),
            ("BridgeLevel", "Minimum", 1.0)
        );
        assert_eq!((b.period_secs, b.evaluation_periods), (300, 12));
        let mut off = cfg();
        off.bridge.enabled = false;
        assert!(plan(&off).iter().all(|s| s.kind != "bridge_on"));
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
