//! `burst-agent alarms`: puts the alarms [`plan`] (burst-core, pure) makes for one group
//! (PutMetricAlarm) and prunes this group's alarms that are no longer planned, and nobody else's.

pub use burst_core::alarms::*;

use crate::aws::{Aws, AwsError};
use crate::config::Config;
use aws_sdk_cloudwatch::types::{ComparisonOperator, Dimension, Statistic};
use std::collections::BTreeSet;

/// What [`apply`] did.
#[derive(Debug, Default, PartialEq)]
pub struct Applied {
    pub put: Vec<String>,
    pub deleted: Vec<String>,
}

/// The names of this group's alarms in CloudWatch.
pub async fn existing(aws: &Aws, group: &str) -> Result<BTreeSet<String>, AwsError> {
    let mut pages = aws
        .cloudwatch
        .describe_alarms()
        .alarm_name_prefix(prefix(group))
        .into_paginator()
        .send();
    let mut out = BTreeSet::new();
    while let Some(page) = aws.page("DescribeAlarms", pages.next()).await? {
        out.extend(
            page.metric_alarms()
                .iter()
                .filter_map(|a| a.alarm_name().map(str::to_string)),
        );
    }
    Ok(out)
}

/// Puts every planned alarm (PutMetricAlarm replaces one of the same name, so this is
/// idempotent); with `prune`, deletes this group's alarms that are not planned.
pub async fn apply(
    aws: &Aws,
    cfg: &Config,
    plan: &[AlarmSpec],
    prune: bool,
) -> Result<Applied, AwsError> {
    let mut done = Applied::default();
    for s in plan {
        let dims: Vec<Dimension> = s
            .dims
            .iter()
            .map(|(k, v)| Dimension::builder().name(*k).value(v).build())
            .collect();
        let op = match s.compare {
            Compare::AtLeast => ComparisonOperator::GreaterThanOrEqualToThreshold,
            Compare::AtMost => ComparisonOperator::LessThanOrEqualToThreshold,
            Compare::Below => ComparisonOperator::LessThanThreshold,
        };
        aws.call(
            "PutMetricAlarm",
            aws.cloudwatch
                .put_metric_alarm()
                .alarm_name(&s.name)
                .alarm_description(&s.description)
                .namespace(&s.namespace)
                .metric_name(s.metric)
                .set_dimensions(Some(dims))
                .statistic(Statistic::from(s.statistic))
                .period(s.period_secs)
                .evaluation_periods(s.evaluation_periods)
                .threshold(s.threshold)
                .comparison_operator(op)
                .treat_missing_data(s.treat_missing)
                .actions_enabled(true)
                .set_alarm_actions(Some(cfg.alarms.alarm_actions.clone()))
                .set_ok_actions(Some(cfg.alarms.ok_actions.clone()))
                .send(),
        )
        .await?;
        done.put.push(s.name.clone());
    }
    if prune {
        let planned: BTreeSet<&str> = plan.iter().map(|s| s.name.as_str()).collect();
        let stale: Vec<String> = existing(aws, &cfg.agent.group)
            .await?
            .into_iter()
            .filter(|n| !planned.contains(n.as_str()))
            .collect();
        for chunk in stale.chunks(100) {
            aws.call(
                "DeleteAlarms",
                aws.cloudwatch
                    .delete_alarms()
                    .set_alarm_names(Some(chunk.to_vec()))
                    .send(),
            )
            .await?;
            done.deleted.extend(chunk.iter().cloned());
        }
    }
    Ok(done)
}
