//! Kubernetes' Horizontal Pod Autoscaler algorithm, as documented (Algorithm details, Scaling
//! policies, Stabilization window, Default Behavior), for the simulation baseline.
//!
//! Replicas are hosts: the master (always ready) plus slaves; pending/syncing slaves are
//! not-yet-ready pods; in-service slaves without fresh metrics are pods with missing metrics.

use std::collections::VecDeque;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PolicyKind {
    Pods,
    Percent,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScalingPolicy {
    pub kind: PolicyKind,
    pub value: u32,
    pub period_secs: i64,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Select {
    Max,
    Min,
    Disabled,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Rules {
    pub stabilization_secs: i64,
    pub policies: Vec<ScalingPolicy>,
    pub select: Select,
}

#[derive(Clone, Debug, PartialEq)]
pub struct HpaParams {
    pub sync_secs: i64,
    pub tolerance: f64,
    pub scale_up: Rules,
    pub scale_down: Rules,
    pub min_replicas: u32,
    pub max_replicas: u32,
}

impl HpaParams {
    /// HPA's defaults: 15 s sync, tolerance 0.1; scale-up max(4 pods, 100 %) per 15 s with no
    /// stabilization; scale-down 100 % per 15 s after a 300 s stabilization window.
    pub fn defaults(min_replicas: u32, max_replicas: u32) -> Self {
        HpaParams {
            sync_secs: 15,
            tolerance: 0.1,
            scale_up: Rules {
                stabilization_secs: 0,
                policies: vec![
                    ScalingPolicy {
                        kind: PolicyKind::Percent,
                        value: 100,
                        period_secs: 15,
                    },
                    ScalingPolicy {
                        kind: PolicyKind::Pods,
                        value: 4,
                        period_secs: 15,
                    },
                ],
                select: Select::Max,
            },
            scale_down: Rules {
                stabilization_secs: 300,
                policies: vec![ScalingPolicy {
                    kind: PolicyKind::Percent,
                    value: 100,
                    period_secs: 15,
                }],
                select: Select::Max,
            },
            min_replicas,
            max_replicas,
        }
    }
}

/// One pod as the replica calculator sees it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Pod {
    /// Ready, with a metric value.
    Ready(f64),
    /// Ready, but no (fresh) metric.
    Missing,
    /// Not yet ready (still initializing).
    Unready,
}

/// `desiredReplicas = ceil[currentReplicas * ( currentMetricValue / desiredMetricValue )]` with the
/// tolerance, missing-metrics and not-yet-ready rules. `None` when no pod has a metric.
pub fn replica_count(current: u32, pods: &[Pod], target: f64, tolerance: f64) -> Option<u32> {
    let ready: Vec<f64> = pods
        .iter()
        .filter_map(|p| {
            if let Pod::Ready(v) = p {
                Some(*v)
            } else {
                None
            }
        })
        .collect();
    if ready.is_empty() {
        return None;
    }
    let missing = pods.iter().filter(|p| **p == Pod::Missing).count();
    let unready = pods.iter().filter(|p| **p == Pod::Unready).count();
    let ratio = ready.iter().sum::<f64>() / ready.len() as f64 / target;
    let scale_up_with_unready = unready > 0 && ratio > 1.0;
    if !scale_up_with_unready && missing == 0 {
        if (1.0 - ratio).abs() <= tolerance {
            return Some(current);
        }
        return Some(ceil(ratio * ready.len() as f64));
    }
    let mut values = ready.clone();
    if missing > 0 {
        let assumed = if ratio < 1.0 { target } else { 0.0 };
        values.extend(std::iter::repeat_n(assumed, missing));
    }
    if scale_up_with_unready {
        values.extend(std::iter::repeat_n(0.0, unready));
    }
    let new_ratio = values.iter().sum::<f64>() / values.len() as f64 / target;
    if (1.0 - new_ratio).abs() <= tolerance
        || (ratio < 1.0 && new_ratio > 1.0)
        || (ratio > 1.0 && new_ratio < 1.0)
    {
        return Some(current);
    }
    let n = ceil(new_ratio * values.len() as f64);
    if (new_ratio < 1.0 && n > current) || (new_ratio > 1.0 && n < current) {
        return Some(current);
    }
    Some(n)
}

fn ceil(x: f64) -> u32 {
    let c = (x - 1e-9).ceil();
    if c <= 0.0 {
        0
    } else {
        c.min(f64::from(u32::MAX)) as u32
    }
}

/// The controller's memory: recommendations and scale events.
#[derive(Clone, Debug, Default)]
pub struct Hpa {
    recommendations: VecDeque<(i64, u32)>,
    up_events: VecDeque<(i64, u32)>,
    down_events: VecDeque<(i64, u32)>,
}

fn changed_in_period(events: &VecDeque<(i64, u32)>, now: i64, period: i64) -> u32 {
    events
        .iter()
        .filter(|(t, _)| *t > now - period)
        .map(|(_, n)| n)
        .sum()
}

impl Hpa {
    pub fn new() -> Self {
        Self::default()
    }

    /// One reconcile: `desired` is the largest replica count the metrics ask for (`None` when
    /// no metric could be computed). Returns the replica count to set.
    pub fn reconcile(
        &mut self,
        p: &HpaParams,
        now: i64,
        current: u32,
        desired: Option<u32>,
    ) -> u32 {
        let Some(desired) = desired else {
            return current;
        };
        let desired = desired.clamp(p.min_replicas, p.max_replicas);
        // Stabilization.
        let up_cut = now - p.scale_up.stabilization_secs;
        let down_cut = now - p.scale_down.stabilization_secs;
        let mut up = desired;
        let mut down = desired;
        for &(t, r) in &self.recommendations {
            if t > up_cut {
                up = up.min(r);
            }
            if t > down_cut {
                down = down.max(r);
            }
        }
        let mut rec = current;
        if rec < up {
            rec = up;
        }
        if rec > down {
            rec = down;
        }
        self.recommendations.push_back((now, desired));
        let keep = p
            .scale_up
            .stabilization_secs
            .max(p.scale_down.stabilization_secs);
        while self
            .recommendations
            .front()
            .is_some_and(|(t, _)| *t <= now - keep)
        {
            self.recommendations.pop_front();
        }
        // Rate limits.
        let next = self.limit(p, now, current, rec);
        if next > current {
            self.up_events.push_back((now, next - current));
        } else if next < current {
            self.down_events.push_back((now, current - next));
        }
        let horizon = p
            .scale_up
            .policies
            .iter()
            .chain(&p.scale_down.policies)
            .map(|x| x.period_secs)
            .max()
            .unwrap_or(0);
        for ev in [&mut self.up_events, &mut self.down_events] {
            while ev.front().is_some_and(|(t, _)| *t <= now - horizon) {
                ev.pop_front();
            }
        }
        next
    }

    fn limit(&self, p: &HpaParams, now: i64, current: u32, desired: u32) -> u32 {
        let start = |period: i64| {
            i64::from(current) - i64::from(changed_in_period(&self.up_events, now, period))
                + i64::from(changed_in_period(&self.down_events, now, period))
        };
        if desired > current {
            let r = &p.scale_up;
            if r.select == Select::Disabled {
                return current;
            }
            let proposals = r.policies.iter().map(|pol| {
                let s = start(pol.period_secs);
                match pol.kind {
                    PolicyKind::Pods => s + i64::from(pol.value),
                    PolicyKind::Percent => {
                        (s as f64 * (1.0 + f64::from(pol.value) / 100.0)).ceil() as i64
                    }
                }
            });
            let limit = if r.select == Select::Min {
                proposals.min()
            } else {
                proposals.max()
            };
            let limit = limit.unwrap_or(i64::from(current)).max(i64::from(current));
            let allowed = limit.min(i64::from(p.max_replicas));
            (i64::from(desired).min(allowed)).max(0) as u32
        } else if desired < current {
            let r = &p.scale_down;
            if r.select == Select::Disabled {
                return current;
            }
            let proposals = r.policies.iter().map(|pol| {
                let s = start(pol.period_secs);
                match pol.kind {
                    PolicyKind::Pods => s - i64::from(pol.value),
                    PolicyKind::Percent => (s as f64 * (1.0 - f64::from(pol.value) / 100.0)) as i64,
                }
            });
            // For scaling down, the largest change is the smallest proposal.
            let limit = if r.select == Select::Min {
                proposals.max()
            } else {
                proposals.min()
            };
            let limit = limit.unwrap_or(i64::from(current)).min(i64::from(current));
            let allowed = limit.max(i64::from(p.min_replicas));
            (i64::from(desired).max(allowed)).max(0) as u32
        } else {
            current
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(n: usize, v: f64) -> Vec<Pod> {
        vec![Pod::Ready(v); n]
    }

    #[test]
    fn documented_ratio_examples() {
        // "if the current metric value is 200m, and the desired value is 100m, the number of
        // replicas will be doubled"
        assert_eq!(replica_count(3, &ready(3, 200.0), 100.0, 0.1), Some(6));
        // "If the current value is instead 50m, you'll halve the number of replicas"
        assert_eq!(replica_count(4, &ready(4, 50.0), 100.0, 0.1), Some(2));
        // "skips any scaling action if the ratio is sufficiently close to 1.0 (... 0.1 by default)"
        assert_eq!(replica_count(4, &ready(4, 109.0), 100.0, 0.1), Some(4));
        assert_eq!(replica_count(4, &ready(4, 91.0), 100.0, 0.1), Some(4));
        assert_eq!(replica_count(4, &ready(4, 111.0), 100.0, 0.1), Some(5));
    }

    #[test]
    fn walkthrough_php_apache() {
        // The walkthrough: one php-apache pod at 305% of its request against a 50% target.
        assert_eq!(replica_count(1, &[Pod::Ready(3.05)], 0.5, 0.1), Some(7));
    }

    #[test]
    fn missing_metrics_dampen_both_ways() {
        // Scale-down with a missing pod: it counts as at target, so 2 pods at 50% and one
        // missing → (50+50+100)/3 = 66.7% of 100 → ceil(0.667*3)=2.
        let pods = [Pod::Ready(50.0), Pod::Ready(50.0), Pod::Missing];
        assert_eq!(replica_count(3, &pods, 100.0, 0.1), Some(2));
        // Scale-up with a missing pod: it counts as 0, 2 at 150% + 0 → 100%: within tolerance.
        let pods = [Pod::Ready(150.0), Pod::Ready(150.0), Pod::Missing];
        assert_eq!(replica_count(3, &pods, 100.0, 0.1), Some(3));
        // Unready pods count as 0 on the way up.
        let pods = [Pod::Ready(300.0), Pod::Unready, Pod::Unready];
        assert_eq!(replica_count(3, &pods, 100.0, 0.1), Some(3));
        assert_eq!(
            replica_count(3, &[Pod::Missing, Pod::Unready], 100.0, 0.1),
            None
        );
    }

    #[test]
    fn documented_scale_down_policy_example() {
        // "if there are 80 replicas and the target has to be scaled down to 10 replicas then
        // during the first step 8 replicas will be reduced. In the next iteration when the
        // number of replicas is 72, 10% of the pods is 7.2 but the number is rounded up to 8
        // ... When the number of replicas falls below 40 the first policy (Pods) is applied
        // and 4 replicas will be reduced at a time."
        let mut p = HpaParams::defaults(1, 100);
        p.scale_down = Rules {
            stabilization_secs: 0,
            policies: vec![
                ScalingPolicy {
                    kind: PolicyKind::Pods,
                    value: 4,
                    period_secs: 60,
                },
                ScalingPolicy {
                    kind: PolicyKind::Percent,
                    value: 10,
                    period_secs: 60,
                },
            ],
            select: Select::Max,
        };
        let mut h = Hpa::new();
        let mut replicas = 80;
        let mut seen = vec![replicas];
        for step in 0..200 {
            let now = step * 15;
            let next = h.reconcile(&p, now, replicas, Some(10));
            if next != replicas {
                seen.push(next);
                replicas = next;
            }
        }
        assert_eq!(&seen[..3], &[80, 72, 64]);
        let drops: Vec<u32> = seen.windows(2).map(|w| w[0] - w[1]).collect();
        for (w, d) in seen.windows(2).zip(&drops) {
            if w[0] <= 40 {
                assert_eq!(
                    *d,
                    (w[0] - 10).min(4),
                    "below 40 the Pods policy applies: {seen:?}"
                );
            }
        }
        assert_eq!(*seen.last().unwrap(), 10);
    }

    #[test]
    fn default_scale_up_is_max_of_4_pods_or_100_percent_per_15s() {
        let p = HpaParams::defaults(1, 100);
        let mut h = Hpa::new();
        let mut r = 1;
        let mut seen = vec![];
        for step in 0..4 {
            r = h.reconcile(&p, step * 15, r, Some(40));
            seen.push(r);
        }
        assert_eq!(seen, [5, 10, 20, 40]);
    }

    #[test]
    fn default_scale_down_waits_for_the_5_minute_window() {
        let p = HpaParams::defaults(1, 100);
        let mut h = Hpa::new();
        assert_eq!(h.reconcile(&p, 0, 10, Some(10)), 10);
        // The load drops: nothing happens until the 10 leaves the 300 s window.
        let mut t = 15;
        while t < 300 {
            assert_eq!(h.reconcile(&p, t, 10, Some(2)), 10, "t={t}");
            t += 15;
        }
        assert_eq!(h.reconcile(&p, 300, 10, Some(2)), 2);
    }
}
