//! The custom metrics loop: host samples and the agent's own numbers become CloudWatch datums
//! (this file, pure), wait in a bounded buffer, go out in batches, and the fleet's newest
//! samples come back for the policy (burst-edge's `cloudwatch`, the agent's
//! `metrics::cloudwatch`). [`Buffer`] is bounded: past its limit the oldest datums are dropped
//! and counted. [`assemble`] keeps, per slave and signal, the newest value no older than
//! `stale_after`: a stale value is a missing one.
//!
//! Names, units and dimensions are fixed here once, for publisher and reader alike:
//! - per host, dimensions `Group` + `InstanceId`: `LoadAverage1`, `LoadPerCpu`, `ApacheWorkers`,
//!   `ApacheBusyWorkers`, `ApacheIdleWorkers`, `ApacheBusyRatio`, `MemoryUsedRatio`,
//!   `SwapUsedBytes`, and `DiskUsedPercent` (+ `Path`);
//! - group-wide aggregate, dimension `Group` only: `LoadPerCpu`, `ApacheBusyRatio`,
//!   `MemoryUsedRatio`, `ApacheWorkers` (CloudWatch matches dimension sets exactly, so the
//!   aggregate is its own series);
//! - the agent's own, dimension `Group` (+ `Action` / `Hook` / `Op`): `Decisions`,
//!   `ScaleOutInstances`, `ScaleInInstances`, `BurstCapUsed`, `BurstCapRemaining`, `ApiErrors`,
//!   `HookSeconds`, `MetricsDropped`;
//! - the liveness probe's, dimensions `Group` + `Url`: `ProbeLatency` (milliseconds) and
//!   `ProbeFailed` (1 or 0).
//!
//! Two namespaces ([`Ns`]): every host's samples go to the site's (`metrics.namespace`), which
//! the slaves may write too; the agent's own numbers and the probe's go to `SITE/Agent`, which
//! only the master's policy names, so no slave can forge the `Heartbeat` that says the master is
//! alive or the `BurstCapUsed` a lost state is rebuilt from.

use crate::cap::CapStatus;
use crate::config::Signal;
use crate::model::HostSample;
use crate::policy::{Decision, HostMetrics};
use jiff::Timestamp;
use std::collections::{BTreeMap, VecDeque};

/// CloudWatch's standard units, the few the agent uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    None,
    Count,
    Percent,
    Bytes,
    Seconds,
    Milliseconds,
}

impl Unit {
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::None => "None",
            Unit::Count => "Count",
            Unit::Percent => "Percent",
            Unit::Bytes => "Bytes",
            Unit::Seconds => "Seconds",
            Unit::Milliseconds => "Milliseconds",
        }
    }
}

/// Which namespace a datum goes to: the site's, which the slaves write too, or the agent's
/// own (`SITE/Agent`), which only the master can write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ns {
    Site,
    Agent,
}

/// The agent's own namespace next to the site's `site`: `SITE/Agent`.
pub fn agent_namespace(site: &str) -> String {
    format!("{site}/Agent")
}

/// The metrics only the master writes (the agent's own and the probe's): they go to
/// [`Ns::Agent`]. Every other name is a host sample's, in [`Ns::Site`].
pub const AGENT_METRICS: [&str; 18] = [
    "BurstCapUsed",
    "BurstCapRemaining",
    "ApiErrors",
    "MetricsDropped",
    "Heartbeat",
    "SlavesInService",
    "SlavesComing",
    "SlavesGoing",
    "SlavesSilent",
    "LaunchFailures",
    "HookFailures",
    "Decisions",
    "ScaleOutInstances",
    "ScaleInInstances",
    "HookSeconds",
    "ProbeLatency",
    "ProbeFailed",
    "BridgeLevel",
];

impl Ns {
    /// Where the metric `name` lives.
    pub fn of(name: &str) -> Ns {
        if AGENT_METRICS.contains(&name) {
            Ns::Agent
        } else {
            Ns::Site
        }
    }

    /// This namespace's name, given the site's.
    pub fn name(self, site: &str) -> String {
        match self {
            Ns::Site => site.to_string(),
            Ns::Agent => agent_namespace(site),
        }
    }
}

/// One value of one metric at one time, ready for PutMetricData.
#[derive(Clone, Debug, PartialEq)]
pub struct Datum {
    pub name: &'static str,
    pub unit: Unit,
    pub value: f64,
    pub at: Timestamp,
    /// In CloudWatch's order of mention; `Group` first.
    pub dims: Vec<(&'static str, String)>,
}

impl Datum {
    pub fn ns(&self) -> Ns {
        Ns::of(self.name)
    }

    /// Bytes this datum adds to a Query-protocol request body, generously rounded up.
    pub(crate) fn encoded_size_estimate(&self) -> usize {
        let dims: usize = self
            .dims
            .iter()
            .map(|(k, v)| 2 * 48 + k.len() + v.len() * 3)
            .sum();
        200 + self.name.len() + dims
    }
}

/// The signal metrics the policy reads back, with the name each is published under.
pub const SIGNAL_METRICS: [(Signal, &str); 3] = [
    (Signal::LoadPerCpu, "LoadPerCpu"),
    (Signal::ApacheBusyRatio, "ApacheBusyRatio"),
    (Signal::MemoryUsedRatio, "MemoryUsedRatio"),
];

/// Turns one host sample into datums. Values that are not finite numbers ≥ 0 are left out
/// and named in the second list (CloudWatch would reject the whole call).
pub fn host_data(sample: &HostSample, group: &str, instance_id: &str) -> (Vec<Datum>, Vec<String>) {
    let host = |name: &'static str, unit: Unit, value: f64| Datum {
        name,
        unit,
        value,
        at: sample.timestamp,
        dims: vec![("Group", group.into()), ("InstanceId", instance_id.into())],
    };
    let agg = |name: &'static str, unit: Unit, value: f64| Datum {
        name,
        unit,
        value,
        at: sample.timestamp,
        dims: vec![("Group", group.into())],
    };
    let mut out = Vec::with_capacity(16);
    if let Some(l) = sample.load {
        out.push(host("LoadAverage1", Unit::None, l.one));
    }
    for (signal, name) in SIGNAL_METRICS {
        if let Some(v) = sample.signal(signal) {
            out.push(host(name, Unit::None, v));
            out.push(agg(name, Unit::None, v));
        }
    }
    let a = &sample.apache;
    if let Some(w) = a.workers {
        out.push(host("ApacheWorkers", Unit::Count, f64::from(w)));
        out.push(agg("ApacheWorkers", Unit::Count, f64::from(w)));
    }
    if let Some(b) = a.busy_workers {
        out.push(host("ApacheBusyWorkers", Unit::Count, f64::from(b)));
    }
    if let Some(i) = a.idle_workers {
        out.push(host("ApacheIdleWorkers", Unit::Count, f64::from(i)));
    }
    if let Some(m) = sample.memory {
        out.push(host("SwapUsedBytes", Unit::Bytes, m.swap_used_bytes as f64));
    }
    for d in &sample.disks {
        if let Some(p) = d.used_percent {
            let mut datum = host("DiskUsedPercent", Unit::Percent, p);
            datum.dims.push(("Path", d.path.display().to_string()));
            out.push(datum);
            // The group's series per path: its Maximum is the fullest host (the disk alarm).
            let mut datum = agg("DiskUsedPercent", Unit::Percent, p);
            datum.dims.push(("Path", d.path.display().to_string()));
            out.push(datum);
        }
    }
    split_valid(out)
}

fn split_valid(data: Vec<Datum>) -> (Vec<Datum>, Vec<String>) {
    let (ok, bad): (Vec<_>, Vec<_>) = data
        .into_iter()
        .partition(|d| d.value.is_finite() && d.value >= 0.0);
    let bad = bad
        .into_iter()
        .map(|d| {
            format!(
                "{} = {} ({:?}) is not a finite number ≥ 0",
                d.name, d.value, d.dims
            )
        })
        .collect();
    (ok, bad)
}

/// The agent's own numbers after one decision: what it decided, the burst cap, AWS errors since
/// the last report, hook run times, datums dropped from the buffer.
pub struct AgentNumbers<'a> {
    pub decision: Option<&'a Decision>,
    pub cap: &'a CapStatus,
    pub api_errors: u64,
    pub hook_seconds: &'a [(&'static str, f64)],
    /// The hooks that failed for good since the last report, by name.
    pub hook_failures: &'a [&'static str],
    /// Launches EC2 refused for good since the last report.
    pub launch_failures: u32,
    /// Slaves in service, coming and going (the dashboard's fleet size).
    pub fleet: (u32, u32, u32),
    /// Serving slaves that have not reported for `metrics.stale_after` (`slave_silent`).
    pub silent: u32,
    pub dropped: u64,
}

pub fn agent_data(n: &AgentNumbers<'_>, group: &str, at: Timestamp) -> Vec<Datum> {
    let d = |name: &'static str, unit: Unit, value: f64, extra: Option<(&'static str, &str)>| {
        let mut dims = vec![("Group", group.to_string())];
        if let Some((k, v)) = extra {
            dims.push((k, v.to_string()));
        }
        Datum {
            name,
            unit,
            value,
            at,
            dims,
        }
    };
    let mut out = vec![
        d("BurstCapUsed", Unit::Count, f64::from(n.cap.used), None),
        d(
            "BurstCapRemaining",
            Unit::Count,
            f64::from(n.cap.remaining),
            None,
        ),
        d("ApiErrors", Unit::Count, n.api_errors as f64, None),
        d("MetricsDropped", Unit::Count, n.dropped as f64, None),
        // One per tick: the heartbeat alarm fires on its absence.
        d("Heartbeat", Unit::Count, 1.0, None),
        d("SlavesInService", Unit::Count, f64::from(n.fleet.0), None),
        d("SlavesComing", Unit::Count, f64::from(n.fleet.1), None),
        d("SlavesGoing", Unit::Count, f64::from(n.fleet.2), None),
        // Zero when every serving slave reports: its alarm sees a value, not silence.
        d("SlavesSilent", Unit::Count, f64::from(n.silent), None),
        d(
            "LaunchFailures",
            Unit::Count,
            f64::from(n.launch_failures),
            None,
        ),
        // Zero when none failed, so its alarm sees a value, not silence.
        d(
            "HookFailures",
            Unit::Count,
            n.hook_failures
                .iter()
                .filter(|h| **h == "pre_register")
                .count() as f64,
            Some(("Hook", "pre_register")),
        ),
    ];
    for hook in n.hook_failures.iter().filter(|h| **h != "pre_register") {
        out.push(d("HookFailures", Unit::Count, 1.0, Some(("Hook", hook))));
    }
    if let Some(dec) = n.decision {
        // The brownout bridge's decided level (0: full service), every tick: what a serving
        // host is to switch to, and what its alarm reads.
        out.push(d(
            "BridgeLevel",
            Unit::Count,
            f64::from(dec.explanation().bridge.level),
            None,
        ));
        out.push(d(
            "Decisions",
            Unit::Count,
            1.0,
            Some(("Action", dec.action())),
        ));
        match dec {
            Decision::ScaleOut { count, .. } => {
                out.push(d("ScaleOutInstances", Unit::Count, f64::from(*count), None))
            }
            Decision::ScaleIn { instances, .. } => out.push(d(
                "ScaleInInstances",
                Unit::Count,
                instances.len() as f64,
                None,
            )),
            Decision::Hold { .. } => {}
        }
    }
    for (hook, secs) in n.hook_seconds {
        out.push(d("HookSeconds", Unit::Seconds, *secs, Some(("Hook", hook))));
    }
    split_valid(out).0
}

/// One round of the liveness probe: per URL, its latency (a timeout counts as its full time)
/// and whether it failed.
pub fn probe_data(round: &[crate::model::ProbeResult], group: &str) -> Vec<Datum> {
    let mut out = Vec::with_capacity(round.len() * 2);
    for r in round {
        let dims = vec![("Group", group.to_string()), ("Url", r.url.clone())];
        out.push(Datum {
            name: "ProbeLatency",
            unit: Unit::Milliseconds,
            value: r.latency_ms,
            at: r.at,
            dims: dims.clone(),
        });
        out.push(Datum {
            name: "ProbeFailed",
            unit: Unit::Count,
            value: if r.error.is_some() { 1.0 } else { 0.0 },
            at: r.at,
            dims,
        });
    }
    split_valid(out).0
}

/// PutMetricData's limits: 1,000 datums and 1 MB a request. Stay well inside the byte limit.
pub const MAX_DATA_PER_CALL: usize = 1000;
pub const MAX_BYTES_PER_CALL: usize = 800 * 1024;

/// Datums waiting to be published. Bounded: past `limit` the oldest are dropped (and counted),
/// so an unreachable CloudWatch costs old datapoints, never memory or a blocked sampler.
#[derive(Debug)]
pub struct Buffer {
    queue: VecDeque<Datum>,
    limit: usize,
    dropped_total: u64,
}

impl Buffer {
    pub fn new(limit: usize) -> Self {
        Buffer {
            queue: VecDeque::new(),
            limit: limit.max(1),
            dropped_total: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub fn dropped_total(&self) -> u64 {
        self.dropped_total
    }

    /// Appends; returns how many of the oldest were dropped to stay within the limit.
    pub fn push(&mut self, data: impl IntoIterator<Item = Datum>) -> usize {
        self.queue.extend(data);
        self.trim()
    }

    fn trim(&mut self) -> usize {
        let over = self.queue.len().saturating_sub(self.limit);
        self.queue.drain(..over);
        self.dropped_total += over as u64;
        over
    }

    /// The oldest datums that fit one PutMetricData call, all of one namespace (a call names
    /// one).
    pub fn take_batch(&mut self) -> Vec<Datum> {
        let mut bytes = 0;
        let mut n = 0;
        let ns = self.queue.front().map(Datum::ns);
        for d in &self.queue {
            let size = d.encoded_size_estimate();
            if n == MAX_DATA_PER_CALL
                || (n > 0 && bytes + size > MAX_BYTES_PER_CALL)
                || Some(d.ns()) != ns
            {
                break;
            }
            bytes += size;
            n += 1;
        }
        self.queue.drain(..n).collect()
    }

    /// A batch that could not be sent goes back to the front, in order; if new datums arrived
    /// meanwhile and the limit is exceeded, the oldest go. Returns how many were dropped.
    pub fn put_back(&mut self, batch: Vec<Datum>) -> usize {
        for d in batch.into_iter().rev() {
            self.queue.push_front(d);
        }
        self.trim()
    }
}

/// One GetMetricData query: which slave and which signal its id stands for.
#[derive(Clone, Debug, PartialEq)]
pub struct QuerySpec {
    /// `m<slave index>_<signal index>`: CloudWatch wants ids that start with a lower-case letter.
    pub id: String,
    pub instance_id: String,
    pub metric: &'static str,
}

/// GetMetricData takes at most 500 queries a call.
pub const MAX_QUERIES_PER_CALL: usize = 500;

pub fn queries(instance_ids: &[String]) -> Vec<QuerySpec> {
    instance_ids
        .iter()
        .enumerate()
        .flat_map(|(i, id)| {
            SIGNAL_METRICS
                .iter()
                .enumerate()
                .map(move |(k, (_, metric))| QuerySpec {
                    id: format!("m{i}_{k}"),
                    instance_id: id.clone(),
                    metric,
                })
        })
        .collect()
}

/// What the read-back found, per slave.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReadBack {
    /// Slaves with at least one fresh signal.
    pub metrics: BTreeMap<String, HostMetrics>,
    /// Slaves with no fresh value at all: missing, never zero.
    pub missing: Vec<String>,
    /// Values CloudWatch returned that cannot be a utilization, named.
    pub rejected: Vec<String>,
}

/// The highest load per CPU taken as a measurement (the tweet's 273 on 8 CPUs is 34).
pub const MAX_LOAD_PER_CPU: f64 = 100.0;

/// Puts the query results back together: for each slave and signal the newest value, if it is
/// no older than `stale_after` seconds at `now`. Each series is (timestamp, value) pairs.
pub fn assemble(
    specs: &[QuerySpec],
    results: &BTreeMap<String, Vec<(Timestamp, f64)>>,
    now: Timestamp,
    stale_after: i64,
) -> ReadBack {
    let mut out = ReadBack::default();
    let mut per: BTreeMap<&str, HostMetrics> = BTreeMap::new();
    let mut order: Vec<&str> = Vec::new();
    for spec in specs {
        if !order.contains(&spec.instance_id.as_str()) {
            order.push(&spec.instance_id);
        }
        let Some(series) = results.get(&spec.id) else {
            continue;
        };
        let newest = series.iter().max_by_key(|(t, _)| *t);
        let Some(&(at, value)) = newest else { continue };
        if now.as_second() - at.as_second() > stale_after {
            continue;
        }
        if !value.is_finite() || value < 0.0 {
            out.rejected.push(format!(
                "{} of {}: CloudWatch returned {value}, not a utilization",
                spec.metric, spec.instance_id
            ));
            continue;
        }
        // Outside what the signal can be: a ratio above 1, a load per CPU no web host reaches
        // (the tweet's 273 on 8 CPUs is 34). Whoever wrote it, it is not a measurement.
        let max = if spec.metric == "LoadPerCpu" {
            MAX_LOAD_PER_CPU
        } else {
            1.0 + 1e-9
        };
        if value > max {
            out.rejected.push(format!(
                "{} of {}: {value} is outside the signal's range (at most {max}); rejected, \
                 the host counts as missing for it",
                spec.metric, spec.instance_id
            ));
            continue;
        }
        let m = per
            .entry(spec.instance_id.as_str())
            .or_insert_with(|| HostMetrics {
                at,
                load_per_cpu: None,
                apache_busy_ratio: None,
                memory_used_ratio: None,
                bridge_level: 0,
                bridge_change: None,
                total_accesses: None,
            });
        // The observation is as old as its oldest part.
        m.at = m.at.min(at);
        match spec.metric {
            "LoadPerCpu" => m.load_per_cpu = Some(value),
            "ApacheBusyRatio" => m.apache_busy_ratio = Some(value),
            _ => m.memory_used_ratio = Some(value),
        }
    }
    for id in order {
        match per.remove(id) {
            Some(m) => {
                out.metrics.insert(id.to_string(), m);
            }
            None => out.missing.push(id.to_string()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ApacheSample, DiskSample, LoadSample, MemorySample};

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn sample() -> HostSample {
        HostSample {
            timestamp: ts("2026-11-25T09:00:00Z"),
            host: "web1".into(),
            cpus: 8,
            load: Some(LoadSample {
                one: 273.91,
                five: 200.0,
                fifteen: 100.0,
                runnable_tasks: 400,
                total_tasks: 704,
            }),
            apache: ApacheSample {
                workers: Some(400),
                method: None,
                busy_workers: Some(250),
                idle_workers: Some(6),
                max_workers: 256,
                total_accesses: None,
            },
            memory: Some(MemorySample {
                total_bytes: 100,
                available_bytes: 25,
                swap_total_bytes: 10,
                swap_used_bytes: 4,
            }),
            disks: vec![DiskSample {
                path: "/".into(),
                used_percent: Some(f64::NAN),
            }],
            problems: vec![],
        }
    }

    #[test]
    fn a_sample_becomes_host_and_group_datums_and_bad_values_are_named() {
        let (data, bad) = host_data(&sample(), "site", "i-1");
        let names: Vec<_> = data.iter().map(|d| (d.name, d.dims.len())).collect();
        assert!(names.contains(&("LoadPerCpu", 2)));
        assert!(names.contains(&("LoadPerCpu", 1)), "group aggregate");
        assert!(names.contains(&("ApacheBusyWorkers", 2)));
        let lpc = data.iter().find(|d| d.name == "LoadPerCpu").unwrap();
        assert!((lpc.value - 273.91 / 8.0).abs() < 1e-9);
        // The bad disk's host series and its group series (the disk alarm's), each named.
        assert_eq!(bad.len(), 2, "{bad:?}");
        assert!(bad.iter().all(|b| b.contains("DiskUsedPercent")), "{bad:?}");
    }

    #[test]
    fn agent_numbers_cover_decision_cap_errors_and_hooks() {
        let cap = crate::cap::CapLedger::new("Asia/Tokyo", 7, None)
            .unwrap()
            .status(ts("2026-11-25T09:00:00Z"));
        let data = agent_data(
            &AgentNumbers {
                decision: None,
                cap: &cap,
                api_errors: 2,
                hook_seconds: &[("pre_register", 12.5)],
                hook_failures: &["pre_register"],
                launch_failures: 1,
                fleet: (2, 1, 0),
                silent: 1,
                dropped: 0,
            },
            "site",
            ts("2026-11-25T09:00:00Z"),
        );
        let get = |n: &str| data.iter().find(|d| d.name == n).map(|d| d.value);
        assert_eq!(get("BurstCapRemaining"), Some(7.0));
        assert_eq!(get("ApiErrors"), Some(2.0));
        assert_eq!(get("HookSeconds"), Some(12.5));
        assert_eq!(get("SlavesSilent"), Some(1.0));
    }

    /// What the master alone writes lands in the namespace no slave may write; every host's
    /// sample, the master's included, in the site's; a batch never mixes the two.
    #[test]
    fn the_agents_own_numbers_go_where_no_slave_can_write() {
        let at = ts("2026-11-25T09:00:00Z");
        let cap = crate::cap::CapLedger::new("Asia/Tokyo", 7, None)
            .unwrap()
            .status(at);
        let mut own = Vec::new();
        for decision in [
            Decision::ScaleOut {
                count: 2,
                why: crate::policy::Explanation::bare(cap.clone()),
            },
            Decision::ScaleIn {
                instances: vec!["i-1".into()],
                why: crate::policy::Explanation::bare(cap.clone()),
            },
        ] {
            own.extend(agent_data(
                &AgentNumbers {
                    decision: Some(&decision),
                    cap: &cap,
                    api_errors: 1,
                    hook_seconds: &[("pre_register", 3.0)],
                    hook_failures: &["pre_register", "content_sync"],
                    launch_failures: 1,
                    fleet: (1, 1, 1),
                    silent: 0,
                    dropped: 4,
                },
                "site",
                at,
            ));
        }
        own.extend(probe_data(
            &[crate::model::ProbeResult {
                url: "http://127.0.0.1/".into(),
                at,
                latency_ms: 12.0,
                status: Some(200),
                error: None,
                timed_out: false,
            }],
            "site",
        ));
        let names: std::collections::BTreeSet<_> = own.iter().map(|d| d.name).collect();
        for must in [
            "Heartbeat",
            "BurstCapUsed",
            "ProbeFailed",
            "ScaleInInstances",
        ] {
            assert!(names.contains(must), "{must}: {names:?}");
        }
        for d in &own {
            assert_eq!(d.ns(), Ns::Agent, "{}", d.name);
            assert_eq!(d.ns().name("BurstAgent/site"), "BurstAgent/site/Agent");
        }
        let (hosts, _) = host_data(&sample(), "site", "i-1");
        for d in &hosts {
            assert_eq!(d.ns(), Ns::Site, "{}", d.name);
        }
        let mut b = Buffer::new(10_000);
        b.push(hosts.iter().take(3).cloned());
        b.push(own.iter().take(2).cloned());
        b.push(hosts.iter().take(4).cloned());
        let sizes: Vec<(Ns, usize)> = std::iter::from_fn(|| {
            let batch = b.take_batch();
            (!batch.is_empty()).then(|| {
                assert!(batch.iter().all(|d| d.ns() == batch[0].ns()));
                (batch[0].ns(), batch.len())
            })
        })
        .collect();
        assert_eq!(sizes, [(Ns::Site, 3), (Ns::Agent, 2), (Ns::Site, 4)]);
    }

    fn datum(v: f64) -> Datum {
        Datum {
            name: "LoadPerCpu",
            unit: Unit::None,
            value: v,
            at: ts("2026-11-25T09:00:00Z"),
            dims: vec![("Group", "g".into())],
        }
    }

    #[test]
    fn buffer_drops_oldest_past_its_limit_and_keeps_order_on_put_back() {
        let mut b = Buffer::new(3);
        assert_eq!(b.push((0..5).map(|i| datum(i as f64))), 2);
        assert_eq!(b.dropped_total(), 2);
        let batch = b.take_batch();
        assert_eq!(
            batch.iter().map(|d| d.value).collect::<Vec<_>>(),
            [2.0, 3.0, 4.0]
        );
        b.push([datum(5.0)]);
        assert_eq!(b.put_back(batch), 1, "one over the limit");
        assert_eq!(
            b.take_batch().iter().map(|d| d.value).collect::<Vec<_>>(),
            [3.0, 4.0, 5.0]
        );
    }

    #[test]
    fn batches_respect_the_per_call_limits() {
        let mut b = Buffer::new(5000);
        b.push((0..2500).map(|i| datum(i as f64)));
        assert_eq!(b.take_batch().len(), MAX_DATA_PER_CALL);
        let mut big = datum(1.0);
        big.dims.push(("Path", "x".repeat(250)));
        let mut b = Buffer::new(5000);
        b.push(std::iter::repeat_n(big.clone(), 1000));
        let batch = b.take_batch();
        let bytes: usize = batch.iter().map(Datum::encoded_size_estimate).sum();
        assert!(
            bytes <= MAX_BYTES_PER_CALL && batch.len() < 1000,
            "{}",
            batch.len()
        );
    }

    #[test]
    fn read_back_takes_the_newest_fresh_value_and_reports_stale_as_missing() {
        let ids: Vec<String> = ["i-a", "i-b", "i-c"].map(String::from).to_vec();
        let specs = queries(&ids);
        assert_eq!(specs.len(), 9);
        assert!(specs.iter().all(|s| s.id.starts_with('m')));
        let now = ts("2026-11-25T09:10:00Z");
        let mut r = BTreeMap::new();
        // i-a: two load points (newest wins), busy ratio fresh.
        r.insert(
            "m0_0".to_string(),
            vec![
                (ts("2026-11-25T09:05:00Z"), 0.2),
                (ts("2026-11-25T09:09:00Z"), 0.9),
            ],
        );
        r.insert("m0_1".to_string(), vec![(ts("2026-11-25T09:09:30Z"), 0.5)]);
        // i-b: only a stale point.
        r.insert("m1_0".to_string(), vec![(ts("2026-11-25T09:00:00Z"), 0.7)]);
        // i-c: a negative value from the API.
        r.insert("m2_2".to_string(), vec![(ts("2026-11-25T09:09:00Z"), -1.0)]);
        let back = assemble(&specs, &r, now, 180);
        let a = back.metrics["i-a"];
        assert_eq!(a.load_per_cpu, Some(0.9));
        assert_eq!(a.apache_busy_ratio, Some(0.5));
        assert_eq!(a.memory_used_ratio, None);
        assert_eq!(a.at, ts("2026-11-25T09:09:00Z"));
        assert_eq!(back.missing, ["i-b", "i-c"]);
        assert_eq!(back.rejected.len(), 1);
        assert!(back.rejected[0].contains("i-c"));
    }

    #[test]
    fn a_value_outside_its_signals_range_is_rejected_naming_the_host() {
        let ids: Vec<String> = ["i-a", "i-b"].map(String::from).to_vec();
        let specs = queries(&ids);
        let now = ts("2026-11-25T09:10:00Z");
        let at = ts("2026-11-25T09:09:00Z");
        let mut r = BTreeMap::new();
        // A forged load per CPU of 1000, a busy ratio above 1.
        r.insert("m0_0".to_string(), vec![(at, 1000.0)]);
        r.insert("m1_1".to_string(), vec![(at, 1.5)]);
        // In range: 34 per CPU (the tweet's 273 on 8 CPUs), a ratio of exactly 1.
        r.insert("m1_0".to_string(), vec![(at, 34.0)]);
        r.insert("m0_1".to_string(), vec![(at, 1.0)]);
        let back = assemble(&specs, &r, now, 180);
        assert_eq!(back.rejected.len(), 2, "{:?}", back.rejected);
        assert!(back
            .rejected
            .iter()
            .any(|l| l.contains("LoadPerCpu of i-a")));
        assert!(back
            .rejected
            .iter()
            .any(|l| l.contains("ApacheBusyRatio of i-b")));
        assert_eq!(back.metrics["i-a"].load_per_cpu, None);
        assert_eq!(back.metrics["i-a"].apache_busy_ratio, Some(1.0));
        assert_eq!(back.metrics["i-b"].load_per_cpu, Some(34.0));
    }
}
