//! Corroboration: a slave's self-reported metrics are a claim, bounded by evidence no slave can
//! write (the master's own sample, the other slaves' median, AWS's own measurements).
//!
//! A slave's value counts as at most `evidence × CORROBORATION_FACTOR + CORROBORATION_SLACK`
//! (1.5 × + 0.1). The evidence is the master's own reading; without one, the median of the
//! other slaves' reports (one forger cannot move it); with neither, the signal's target. What
//! was cut is named (`Uncorroborated`). [`Reports`] sorts each signal's reports once, so
//! corroborating the fleet is O(n log n), not O(n²) (the policy benchmark holds it).

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

/// The signals a slave reports that corroboration bounds.
const BOUNDED: [Signal; 3] = [
    Signal::LoadPerCpu,
    Signal::ApacheBusyRatio,
    Signal::MemoryUsedRatio,
];

/// Every serving slave's reports, each signal's values sorted once: the median of the others
/// (all but one slave) is read off in O(log n), so corroborating a fleet costs O(n log n), not
/// the O(n²) of gathering the others for each slave.
#[derive(Clone, Debug, Default)]
pub struct Reports {
    sorted: [Vec<f64>; 3],
}

impl Reports {
    pub fn new<'a>(all: impl IntoIterator<Item = &'a HostMetrics>) -> Self {
        let mut r = Reports::default();
        for m in all {
            for (i, signal) in BOUNDED.into_iter().enumerate() {
                if let Some(v) = m.get(signal) {
                    r.sorted[i].push(v);
                }
            }
        }
        for v in &mut r.sorted {
            v.sort_by(f64::total_cmp);
        }
        r
    }

    /// The median of `signal` over every report but `own` (the slave's own value, one of them).
    fn median_without(&self, signal: Signal, own: Option<f64>) -> Option<f64> {
        let v = &self.sorted[BOUNDED.iter().position(|s| *s == signal)?];
        // Equal values are interchangeable: leave out the first one equal to `own`.
        let skip = own.map(|x| v.partition_point(|a| a.total_cmp(&x).is_lt()));
        let skip = skip.filter(|p| *p < v.len());
        let n = v.len() - usize::from(skip.is_some());
        if n == 0 {
            return None;
        }
        let at = |k: usize| match skip {
            Some(p) if k >= p => v[k + 1],
            _ => v[k],
        };
        let mid = n / 2;
        Some(if n % 2 == 0 {
            (at(mid - 1) + at(mid)) / 2.0
        } else {
            at(mid)
        })
    }
}

/// What backs a slave's report of `signal`, best first: the master's own reading; without one
/// (mod_status can time out on a saturated master), the median of the other slaves' reports
/// (`reports` less the slave's own, `own`: one forger cannot move it); without any, nothing
/// (the signal's target bounds it).
pub fn evidence(
    master: Option<&HostMetrics>,
    reports: &Reports,
    own: Option<f64>,
    signal: Signal,
) -> Option<(f64, &'static str)> {
    if let Some(m) = master.and_then(|m| m.get(signal)) {
        return Some((m, "the master's own sample"));
    }
    reports
        .median_without(signal, own)
        .map(|m| (m, "the other slaves' median"))
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
    reports: &Reports,
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
    for signal in BOUNDED {
        let Some(v) = slave.get(signal) else { continue };
        let (mut bound, mut source) = match evidence(master, reports, Some(v), signal) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn load(v: f64) -> HostMetrics {
        HostMetrics {
            at: jiff::Timestamp::UNIX_EPOCH,
            load_per_cpu: Some(v),
            apache_busy_ratio: None,
            memory_used_ratio: None,
            bridge_level: 0,
            bridge_change: None,
            total_accesses: None,
        }
    }

    /// The median of the others, read off the sorted reports, against the median of the others
    /// gathered the slow way, for every host of fleets of 1 to 9 with repeated values.
    #[test]
    fn the_median_without_one_host_is_the_median_of_the_others() {
        let slow = |vals: &[f64], skip: usize| -> Option<f64> {
            let mut v: Vec<f64> = vals
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != skip)
                .map(|(_, v)| *v)
                .collect();
            v.sort_by(f64::total_cmp);
            let n = v.len();
            (n > 0).then(|| {
                if n % 2 == 0 {
                    (v[n / 2 - 1] + v[n / 2]) / 2.0
                } else {
                    v[n / 2]
                }
            })
        };
        for n in 1..10usize {
            let vals: Vec<f64> = (0..n).map(|i| ((i * 7) % 5) as f64 / 4.0).collect();
            let hosts: Vec<HostMetrics> = vals.iter().map(|v| load(*v)).collect();
            let r = Reports::new(hosts.iter());
            for (i, v) in vals.iter().enumerate() {
                assert_eq!(
                    r.median_without(Signal::LoadPerCpu, Some(*v)),
                    slow(&vals, i),
                    "{vals:?} without {i}"
                );
            }
            // A host that reports nothing: the median of all.
            assert_eq!(
                r.median_without(Signal::LoadPerCpu, None),
                slow(&vals, usize::MAX)
            );
        }
    }
}
