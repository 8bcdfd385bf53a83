//! Corroboration: a slave's self-reported metrics are a claim, bounded by evidence no slave can
//! write (the master's own sample, the other slaves' median, AWS's own measurements).

use super::{Evidence, HostMetrics};
use crate::config::Signal;

/// A slave's report may exceed the master's own reading of the same signal by this factor, plus
/// [`CORROBORATION_SLACK`], before it counts as uncorroborated (see [`corroborate`]).
pub const CORROBORATION_FACTOR: f64 = 1.5;
pub const CORROBORATION_SLACK: f64 = 0.1;

/// A slave's report that the evidence does not back: what it said, and what was used.
#[derive(Clone, Debug, PartialEq)]
pub struct Suspect {
    pub host: String,
    pub signal: Signal,
    pub reported: f64,
    pub bound: f64,
    /// What the bound came from.
    pub source: &'static str,
}

/// What backs a slave's report of `signal`, best first: the master's own reading; without one
/// (mod_status can time out on a saturated master), the median of the other slaves' reports
/// (one forger cannot move it); without any, nothing (the signal's target bounds it).
pub fn evidence(
    master: Option<&HostMetrics>,
    others: &[&HostMetrics],
    signal: Signal,
) -> Option<(f64, &'static str)> {
    if let Some(m) = master.and_then(|m| m.get(signal)) {
        return Some((m, "the master's own sample"));
    }
    let mut v: Vec<f64> = others.iter().filter_map(|o| o.get(signal)).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    let median = if v.len() % 2 == 0 {
        (v[mid - 1] + v[mid]) / 2.0
    } else {
        v[mid]
    };
    Some((median, "the other slaves' median"))
}

/// A slave's self-reported metrics are a claim: anything holding its instance credentials (a
/// PHP exploit running as www-data reads them from instance metadata) can PutMetricData for
/// its InstanceId. What no slave can write is the master's own sample, and the master serves
/// through the same ELB, so a slave cannot be much busier than the master unless the master's
/// own reading says the site is busy. Each slave's value is taken as at most
/// `evidence × CORROBORATION_FACTOR + CORROBORATION_SLACK` ([`evidence`]: the master's
/// reading, else the other slaves' median; with neither, at most the signal's target: a slave
/// alone can hold the fleet, never grow it); what was cut is returned, named. One host's report
/// can thus raise the fleet's demand only as far as the evidence supports. Reports below it
/// are not raised: a slave that under-reports counts for its own share only, and missing
/// metrics never scale in.
pub fn corroborate(
    master: Option<&HostMetrics>,
    others: &[&HostMetrics],
    host: &str,
    slave: &HostMetrics,
    targets: &crate::config::Targets,
    aws: &Evidence,
) -> (HostMetrics, Vec<Suspect>) {
    let mut out = *slave;
    let mut suspects = Vec::new();
    // The ELB says its backends are full: a busy fleet is what AWS measured.
    if aws.elb_saturated.is_some() {
        return (out, suspects);
    }
    let cpu = aws.cpu.get(host).copied();
    for signal in [
        Signal::LoadPerCpu,
        Signal::ApacheBusyRatio,
        Signal::MemoryUsedRatio,
    ] {
        let Some(v) = slave.get(signal) else { continue };
        let (mut bound, mut source) = match evidence(master, others, signal) {
            Some((e, source)) => (e * CORROBORATION_FACTOR + CORROBORATION_SLACK, source),
            None => (targets.get(signal), "its target (no other reading)"),
        };
        // Its own CPU as EC2 measured it backs its load and busy workers too.
        if let Some(c) = cpu.filter(|_| signal != Signal::MemoryUsedRatio) {
            let by_cpu = c * CORROBORATION_FACTOR + CORROBORATION_SLACK;
            if by_cpu > bound {
                (bound, source) = (by_cpu, "its EC2 CPUUtilization");
            }
        }
        if v > bound {
            suspects.push(Suspect {
                host: host.to_string(),
                signal,
                reported: v,
                bound,
                source,
            });
            match signal {
                Signal::LoadPerCpu => out.load_per_cpu = Some(bound),
                Signal::ApacheBusyRatio => out.apache_busy_ratio = Some(bound),
                Signal::MemoryUsedRatio => out.memory_used_ratio = Some(bound),
                Signal::ProbeLatency => {}
            }
        }
    }
    (out, suspects)
}
