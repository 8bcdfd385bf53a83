//! The CloudWatch edge of the metrics loop; what to send and how to read the answer are
//! burst-core's `metrics` (datums, queries, `assemble`).
//!
//! - [`flush`]: PutMetricData from the buffer in batches, holding the buffer's lock only to take
//!   or put back a batch, never across a call;
//! - [`read_fleet`]: GetMetricData for every slave's signals, at most `MAX_QUERIES_PER_CALL`
//!   (500) queries a call;
//! - [`read_evidence`]: AWS's own numbers (AWS/ELB, AWS/EC2), which no slave can write;
//! - [`cap_used_since`]: the cap use the agent published, read back to rebuild a lost ledger.

use crate::aws::{Aws, AwsError};
use aws_sdk_cloudwatch::types::{
    Dimension, Metric, MetricDataQuery, MetricDatum, MetricStat, ScanBy, StandardUnit,
};
use aws_smithy_types::DateTime;
use burst_core::metrics::{assemble, queries, Buffer, Datum, Ns, ReadBack, MAX_QUERIES_PER_CALL};
use jiff::Timestamp;
use std::collections::BTreeMap;
use std::sync::Mutex;

fn to_aws(t: Timestamp) -> DateTime {
    DateTime::from_millis(t.as_millisecond())
}

fn from_aws(t: &DateTime) -> Option<Timestamp> {
    t.to_millis()
        .ok()
        .and_then(|ms| Timestamp::from_millisecond(ms).ok())
}

fn to_sdk(d: &Datum, storage_resolution: i32) -> MetricDatum {
    MetricDatum::builder()
        .metric_name(d.name)
        .set_dimensions(Some(
            d.dims
                .iter()
                .map(|(k, v)| Dimension::builder().name(*k).value(v).build())
                .collect(),
        ))
        .value(d.value)
        .unit(StandardUnit::from(d.unit.as_str()))
        .timestamp(to_aws(d.at))
        .storage_resolution(storage_resolution)
        .build()
}

/// What one flush did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Flushed {
    pub sent: usize,
    pub calls: usize,
    /// Datums CloudWatch refused for good (a final error): dropped, and named in the log.
    pub refused: usize,
    /// The error that stopped the flush (the batch went back into the buffer).
    pub stopped_by: Option<AwsError>,
}

/// Publishes everything in the buffer, one batch per call. The lock is held only to take or
/// put back a batch, never across a network call, so sampling never waits on CloudWatch. A
/// retryable failure puts the batch back and stops (the next flush retries); a final one drops
/// the batch with an error naming its metrics. `namespace` is the site's; the agent's own
/// numbers go to [`super::agent_namespace`] of it.
pub async fn flush(
    aws: &Aws,
    namespace: &str,
    storage_resolution: u32,
    buffer: &Mutex<Buffer>,
) -> Flushed {
    let resolution = if storage_resolution == 1 { 1 } else { 60 };
    let mut out = Flushed::default();
    loop {
        let batch = buffer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take_batch();
        if batch.is_empty() {
            return out;
        }
        let data: Vec<MetricDatum> = batch.iter().map(|d| to_sdk(d, resolution)).collect();
        let res = aws
            .call(
                "PutMetricData",
                aws.cloudwatch
                    .put_metric_data()
                    .namespace(batch[0].ns().name(namespace))
                    .set_metric_data(Some(data))
                    .send(),
            )
            .await;
        out.calls += 1;
        match res {
            Ok(_) => out.sent += batch.len(),
            Err(e) if e.retryable => {
                let dropped = buffer
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .put_back(batch);
                if dropped > 0 {
                    tracing::warn!(
                        dropped,
                        "metrics buffer full while CloudWatch is unreachable: \
                        dropped the oldest datapoints (raise metrics.buffer_limit to keep more)"
                    );
                }
                out.stopped_by = Some(e);
                return out;
            }
            Err(e) => {
                let mut names: Vec<&str> = batch.iter().map(|d| d.name).collect();
                names.dedup();
                tracing::error!(refused = batch.len(), metrics = ?names,
                    "CloudWatch refused a batch of datapoints for good; dropped it: {e}");
                out.refused += batch.len();
            }
        }
    }
}

/// Reads the newest value of each policy signal for every slave: `ceil(3 × slaves / 500)`
/// GetMetricData calls (one up to 166 slaves), plus one per extra page of results.
/// One GetMetricData query of `metric`'s `stat` per `period` seconds, named `id`.
pub fn stat_query(
    id: impl Into<String>,
    metric: Metric,
    period: i32,
    stat: &str,
) -> MetricDataQuery {
    MetricDataQuery::builder()
        .id(id)
        .metric_stat(
            MetricStat::builder()
                .metric(metric)
                .period(period)
                .stat(stat)
                .build(),
        )
        .return_data(true)
        .build()
}

/// Every page of one GetMetricData call (at most `MAX_QUERIES_PER_CALL` queries), newest
/// first: each result's (timestamp, value) pairs into `results` by query id. A reply whose
/// timestamps and values do not pair up, or an unreadable timestamp, goes to `bad` by name.
async fn series(
    aws: &Aws,
    queries: &[MetricDataQuery],
    (start, end): (Timestamp, Timestamp),
    results: &mut BTreeMap<String, Vec<(Timestamp, f64)>>,
    bad: &mut Vec<String>,
) -> Result<(), AwsError> {
    // The SDK's paginator; each page is one call through the shared rate limit.
    let mut pages = aws
        .cloudwatch
        .get_metric_data()
        .set_metric_data_queries(Some(queries.to_vec()))
        .start_time(to_aws(start))
        .end_time(to_aws(end))
        .scan_by(ScanBy::TimestampDescending)
        .into_paginator()
        .send();
    while let Some(out) = aws.page("GetMetricData", pages.next()).await? {
        for r in out.metric_data_results() {
            let Some(id) = r.id() else { continue };
            let (ts, vals) = (r.timestamps(), r.values());
            if ts.len() != vals.len() {
                bad.push(format!(
                    "GetMetricData result {id}: {} timestamps but {} values; ignored",
                    ts.len(),
                    vals.len()
                ));
                continue;
            }
            let series = results.entry(id.to_string()).or_default();
            for (t, v) in ts.iter().zip(vals) {
                match from_aws(t) {
                    Some(t) => series.push((t, *v)),
                    None => bad.push(format!(
                        "GetMetricData result {id}: timestamp {t:?} unreadable"
                    )),
                }
            }
        }
    }
    Ok(())
}

/// The query for the agent's own `BurstCapUsed` (its Maximum a minute), in the agent's own
/// namespace next to the site's `namespace`.
fn cap_query(namespace: &str, group: &str) -> MetricDataQuery {
    let metric = Metric::builder()
        .namespace(Ns::Agent.name(namespace))
        .metric_name("BurstCapUsed")
        .dimensions(Dimension::builder().name("Group").value(group).build())
        .build();
    stat_query("cap", metric, 60, "Maximum")
}

/// The highest `BurstCapUsed` this group's agent published since `since` (the cap day's
/// start): an independent copy of the day's count, so a wiped state directory never grants a
/// fresh day. `None`: no datapoint today (a first start, or no launch yet). `namespace` is the
/// site's; the count is read from the agent's own ([`Ns::Agent`]), which no slave can write.
pub async fn cap_used_since(
    aws: &Aws,
    namespace: &str,
    group: &str,
    since: Timestamp,
    now: Timestamp,
) -> Result<Option<u32>, AwsError> {
    let q = cap_query(namespace, group);
    let (mut results, mut bad) = (BTreeMap::new(), Vec::new());
    let end = now + jiff::SignedDuration::from_secs(60);
    series(aws, &[q], (since, end), &mut results, &mut bad).await?;
    for b in &bad {
        tracing::warn!(group, "burst cap read-back: {b}");
    }
    let most = results
        .values()
        .flatten()
        .map(|(_, v)| *v)
        .filter(|v| v.is_finite() && *v >= 0.0)
        .reduce(f64::max);
    // A count: at most a day's worth of launches is believable; more is not ours to trust.
    Ok(most.map(|m| m.ceil().min(f64::from(u32::MAX)) as u32))
}

/// What AWS measured itself, as evidence no slave can write (`AWS/` namespaces): each
/// slave's newest `AWS/EC2` `CPUUtilization` in the last 15 minutes (basic monitoring: every
/// 5 min), and whether the ELB queued or spilled requests in the last 5 minutes
/// (`SurgeQueueLength` Maximum, `SpilloverCount` Sum).
pub async fn read_evidence(
    aws: &Aws,
    elb_name: &str,
    instance_ids: &[String],
    now: Timestamp,
) -> Result<crate::policy::Evidence, AwsError> {
    let q = |id: String, ns: &str, name: &str, dim: (&str, &str), stat: &str| {
        let metric = Metric::builder()
            .namespace(ns)
            .metric_name(name)
            .dimensions(Dimension::builder().name(dim.0).value(dim.1).build())
            .build();
        stat_query(id, metric, 60, stat)
    };
    let mut queries = vec![
        q(
            "surge".into(),
            "AWS/ELB",
            "SurgeQueueLength",
            ("LoadBalancerName", elb_name),
            "Maximum",
        ),
        q(
            "spill".into(),
            "AWS/ELB",
            "SpilloverCount",
            ("LoadBalancerName", elb_name),
            "Sum",
        ),
    ];
    for (i, id) in instance_ids.iter().enumerate() {
        queries.push(q(
            format!("c{i}"),
            "AWS/EC2",
            "CPUUtilization",
            ("InstanceId", id),
            "Maximum",
        ));
    }
    let (mut results, mut bad) = (BTreeMap::new(), Vec::new());
    let window = (
        now - jiff::SignedDuration::from_mins(15),
        now + jiff::SignedDuration::from_secs(60),
    );
    for chunk in queries.chunks(MAX_QUERIES_PER_CALL) {
        series(aws, chunk, window, &mut results, &mut bad).await?;
    }
    for b in &bad {
        tracing::warn!("AWS evidence read-back: {b}");
    }
    let mut ev = crate::policy::Evidence::default();
    let (mut surge, mut spill) = (0.0f64, 0.0f64);
    for (id, points) in &results {
        // The ELB's numbers count for the last 5 minutes; EC2's CPU (every 5 min on basic
        // monitoring) for the whole window.
        let recent: Vec<f64> = points
            .iter()
            .filter(|(t, v)| {
                v.is_finite()
                    && *v >= 0.0
                    && (id.starts_with('c') || now.as_second() - t.as_second() <= 300)
            })
            .map(|(_, v)| *v)
            .collect();
        match id.as_str() {
            "surge" => surge = recent.iter().copied().fold(surge, f64::max),
            "spill" => spill += recent.iter().sum::<f64>(),
            _ => {
                let idx: Option<usize> = id[1..].parse().ok();
                // Newest first (TimestampDescending); a percentage, at most 100.
                if let (Some(i), Some(v)) = (idx, recent.first()) {
                    if let Some(inst) = instance_ids.get(i) {
                        ev.cpu.insert(inst.clone(), (v / 100.0).min(1.0));
                    }
                }
            }
        }
    }
    if surge > 0.0 || spill > 0.0 {
        ev.elb_saturated = Some(format!(
            "the ELB's SurgeQueueLength reached {surge} and {spill} request(s) spilled in 5 min"
        ));
    }
    Ok(ev)
}

pub async fn read_fleet(
    aws: &Aws,
    namespace: &str,
    group: &str,
    instance_ids: &[String],
    storage_resolution: u32,
    stale_after_secs: i64,
    now: Timestamp,
) -> Result<ReadBack, AwsError> {
    let specs = queries(instance_ids);
    let period: i32 = if storage_resolution == 1 { 1 } else { 60 };
    let start = now - jiff::SignedDuration::from_secs(stale_after_secs + i64::from(period));
    let end = now + jiff::SignedDuration::from_secs(i64::from(period));
    let mut results: BTreeMap<String, Vec<(Timestamp, f64)>> = BTreeMap::new();
    let mut bad_replies = Vec::new();
    for chunk in specs.chunks(MAX_QUERIES_PER_CALL) {
        let q: Vec<MetricDataQuery> = chunk
            .iter()
            .map(|s| {
                let metric = Metric::builder()
                    .namespace(namespace)
                    .metric_name(s.metric)
                    .dimensions(Dimension::builder().name("Group").value(group).build())
                    .dimensions(
                        Dimension::builder()
                            .name("InstanceId")
                            .value(&s.instance_id)
                            .build(),
                    )
                    .build();
                // Each period's highest datapoint, never its Average: a flood of zeros with a
                // large SampleCount drags an Average down (a scale-in in the middle of a burst);
                // the policy bounds what a high one can claim (policy::corroborate).
                stat_query(&s.id, metric, period, "Maximum")
            })
            .collect();
        series(aws, &q, (start, end), &mut results, &mut bad_replies).await?;
    }
    let mut back = assemble(&specs, &results, now, stale_after_secs);
    back.rejected.extend(bad_replies);
    for r in &back.rejected {
        tracing::warn!(group, "fleet read-back: {r}");
    }
    Ok(back)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// moto answers a query with dimensions from every namespace (its GetMetricData filters by
    /// namespace only without them), so the namespace the read names is shown here: the
    /// agent's own, never the site's that the slaves may write.
    #[test]
    fn the_cap_is_read_from_the_agents_own_namespace() {
        let q = cap_query("BurstAgent/golf", "golf");
        let m = q.metric_stat().and_then(|s| s.metric()).unwrap();
        assert_eq!(m.namespace(), Some("BurstAgent/golf/Agent"));
        assert_eq!(m.metric_name(), Some("BurstCapUsed"));
        assert_eq!(q.metric_stat().and_then(|s| s.stat()), Some("Maximum"));
    }
}
