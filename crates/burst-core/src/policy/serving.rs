//! Stage 0 of [`decide`](super::decide): which hosts serve, and what their reports are worth.
//! The master and the in-service slaves serve; metrics older than `stale_after` are missing;
//! each slave's report counts only as far as evidence no slave can write backs it
//! ([`corroborate`](super::corroborate)), and what was cut is named (`Uncorroborated`).

use super::corroborate::{corroborate, Reports};
use super::{fresh, FleetObservation, HostMetrics, Reason, SlaveState};
use crate::config::PolicyConfig;
use jiff::Timestamp;

/// The serving hosts as the policy reads them: the master's fresh sample, each in-service
/// slave's corroborated one, and the site-wide probe if fresh.
pub(crate) struct Serving<'a> {
    /// Every serving host, the master first.
    pub hosts: Vec<(&'a str, Option<HostMetrics>)>,
    /// The site-wide probe's latency, if fresh.
    pub probe: Option<f64>,
}

impl Serving<'_> {
    /// Every serving host, the master first.
    pub fn hosts(&self) -> Vec<(&str, Option<&HostMetrics>)> {
        self.hosts.iter().map(|(id, m)| (*id, m.as_ref())).collect()
    }
}

/// Stage 0: the serving hosts, each slave's report cut to what the evidence backs.
pub(crate) fn serving<'a>(
    cfg: &PolicyConfig,
    obs: &'a FleetObservation,
    now: Timestamp,
) -> (Serving<'a>, Vec<Reason>) {
    let mut reasons = Vec::new();
    let stale_after = cfg.stale_after.whole_secs();
    let fresh = |m| fresh(m, now, stale_after);
    let master = fresh(obs.master.as_ref());
    let mut suspects = Vec::new();
    let reported: Vec<(&str, Option<&HostMetrics>)> = obs
        .slaves
        .iter()
        .filter(|s| s.state == SlaveState::InService)
        .map(|s| (s.id.as_str(), fresh(s.metrics.as_ref())))
        .collect();
    let reports = Reports::new(reported.iter().filter_map(|(_, m)| *m));
    let slaves: Vec<(&str, Option<HostMetrics>)> = reported
        .iter()
        .map(|(id, m)| {
            let m = m.map(|m| {
                let (m, cut) = corroborate(master, &reports, id, m, &cfg.targets, &obs.evidence);
                suspects.extend(cut);
                m
            });
            (*id, m)
        })
        .collect();
    if !suspects.is_empty() {
        reasons.push(Reason::Uncorroborated {
            hosts: suspects.iter().map(|s| s.host.clone()).collect(),
            message: suspects
                .iter()
                .map(|s| {
                    format!(
                        "{} reported {} {:.2}, {} backs at most {:.2}",
                        s.host,
                        s.signal.name(),
                        s.reported,
                        s.source,
                        s.bound
                    )
                })
                .collect::<Vec<_>>()
                .join("; "),
        });
    }
    let probe = obs
        .probe_latency
        .filter(|(at, _)| now.as_second() - at.as_second() <= stale_after)
        .map(|(_, ms)| ms);
    let mut hosts = vec![("master", master.copied())];
    hosts.extend(slaves);
    let serving = Serving { hosts, probe };
    (serving, reasons)
}

#[cfg(test)]
mod tests;
