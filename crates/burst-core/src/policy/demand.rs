//! Stage 1 of [`decide`](super::decide): how many slaves the load asks for, per signal in
//! `policy.signals`; the most demanding signal wins. Target tracking (with HPA's tolerance and
//! missing-metrics rules, the master's own bound and the lead-time forecast) or threshold rules.

use super::{ceil, to_u32, Fleet, History, HostMetrics, Reason, SignalReading};
use crate::config::{PolicyConfig, PolicyMode, Signal};
use jiff::Timestamp;

/// What the load asks for: the slaves wanted (before any limit), the top utilization, and each
/// signal's reading.
pub(crate) struct Demand {
    pub raw: u32,
    pub utilization: Option<f64>,
    pub signals: Vec<SignalReading>,
}

/// What target tracking reads besides the hosts: the site-wide probe, and for the forecast the
/// history, the time and the cap left.
#[derive(Clone, Copy)]
pub(crate) struct Ahead<'a> {
    pub probe: Option<f64>,
    pub hist: &'a History,
    pub now: Timestamp,
    pub cap_remaining: u32,
}

/// Stage 1: the slaves the serving hosts' load asks for (`serving`: the master first).
pub(crate) fn desired(
    cfg: &PolicyConfig,
    serving: &[(&str, Option<&HostMetrics>)],
    ahead: &Ahead<'_>,
    fleet: Fleet,
) -> (Demand, Vec<Reason>) {
    let mut reasons = Vec::new();
    let (raw, utilization, signals) = match cfg.mode {
        PolicyMode::TargetTracking => target_tracking(cfg, serving, ahead, fleet, &mut reasons),
        PolicyMode::Threshold => threshold(
            cfg,
            serving,
            fleet.current,
            fleet.on_the_way,
            ahead.hist,
            ahead.now,
            &mut reasons,
        ),
    };
    let demand = Demand {
        raw,
        utilization,
        signals,
    };
    (demand, reasons)
}

/// One signal's values on the serving hosts that have it, and how many lack it; the names of
/// those that lack it are added to `missing_names` (once each).
fn read_signal(
    serving: &[(&str, Option<&HostMetrics>)],
    signal: Signal,
    missing_names: &mut Vec<String>,
) -> (Vec<f64>, usize) {
    let mut present = Vec::with_capacity(serving.len());
    for (name, m) in serving {
        match m.and_then(|m| m.get(signal)) {
            Some(v) => present.push(v),
            None if !missing_names.iter().any(|x| x == name) => {
                missing_names.push((*name).to_string())
            }
            None => {}
        }
    }
    let missing = serving.len() - present.len();
    (present, missing)
}

/// Hosts that bring the master to `target` when it runs hotter than the slaves by work only it
/// does. `present[0]` is the master, the rest in-service slaves (all fresh: `missing` is 0). The
/// shared part each host carries is the slaves' mean s; the master's excess e = m - s, less
/// twice the tolerance, is counted as its own; with n hosts now the shared total is n*s, so
/// n' = ceil(n*s / (target - e)). Returns n' and e. When the
/// excess alone reaches the target, no count brings it there: n' = n*s / (a tenth of the
/// target), bounded later by max_slaves and the cap. `None` when it does not apply: no slave to
/// compare with, a signal that is not a share of the load, or a master within tolerance.
fn master_bound(
    signal: Signal,
    present: &[f64],
    missing: usize,
    target: f64,
    tolerance: f64,
) -> Option<(u32, f64)> {
    if !signal.forecastable() || signal.site_wide() || missing > 0 || present.len() < 2 {
        return None;
    }
    let master = present[0];
    let slaves = present[1..].iter().sum::<f64>() / (present.len() - 1) as f64;
    // The slaves' numbers come later than the master's (CloudWatch), so on a rise and in noise
    // the master looks hotter than it is by some: only an excess past twice the tolerance is
    // taken, and only that part of it.
    let excess = master - slaves - 2.0 * target * tolerance;
    if master <= target * (1.0 + 2.0 * tolerance) || excess <= 0.0 {
        return None;
    }
    let room = (target - excess).max(target * 0.1);
    Some((ceil(present.len() as f64 * slaves / room), excess))
}

/// One signal's values for target tracking: the site-wide probe stands for every serving host
/// (at most twice the target: latency that hosts cannot cure, a slow database, must not spend
/// the cap in one decision; each decision at most doubles); any other signal is read off the
/// hosts.
fn signal_values(
    serving: &[(&str, Option<&HostMetrics>)],
    signal: Signal,
    target: f64,
    probe: Option<f64>,
    missing_names: &mut Vec<String>,
) -> (Vec<f64>, usize) {
    if !signal.site_wide() {
        return read_signal(serving, signal, missing_names);
    }
    match probe {
        Some(v) => (vec![v.min(2.0 * target); serving.len()], 0),
        None => {
            if !missing_names.iter().any(|x| x == "probe") {
                missing_names.push("probe".into());
            }
            (Vec::new(), serving.len())
        }
    }
}

/// What one signal asks for: its mean, slaves wanted, why, and the forecast per host if one
/// was made.
struct Tracked {
    /// The signal's mean over the hosts that have it.
    mean: f64,
    desired: u32,
    why: Reason,
    forecast: Option<f64>,
}

/// desired hosts = ceil(Σ utilization / target), with HPA's tolerance and missing-metrics rules.
///
/// A site-wide signal (the probe's latency) stands for every serving host: desired hosts =
/// ceil(serving × value / target), as HPA scales on an object metric.
fn target_tracking(
    cfg: &PolicyConfig,
    serving: &[(&str, Option<&HostMetrics>)],
    ahead: &Ahead<'_>,
    fleet: Fleet,
    reasons: &mut Vec<Reason>,
) -> (u32, Option<f64>, Vec<SignalReading>) {
    let mut readings = Vec::new();
    let mut best: Option<(u32, Reason)> = None;
    let mut top_util: Option<f64> = None;
    let mut any_unreadable = false;
    let mut missing_names: Vec<String> = Vec::new();
    for &signal in &cfg.signals {
        let target = cfg.targets.get(signal);
        let (present, missing) =
            signal_values(serving, signal, target, ahead.probe, &mut missing_names);
        if present.is_empty() {
            any_unreadable = true;
            readings.push(SignalReading {
                signal,
                utilization: None,
                goal: target,
                missing_hosts: to_u32(missing),
                desired: None,
                forecast: None,
            });
            continue;
        }
        let t = track(cfg, signal, &present, missing, serving.len(), ahead, fleet);
        let mean = t.mean;
        top_util = Some(top_util.map_or(mean, |u: f64| u.max(mean)));
        readings.push(SignalReading {
            signal,
            utilization: Some(mean),
            goal: target,
            missing_hosts: to_u32(missing),
            desired: Some(t.desired),
            forecast: t.forecast,
        });
        if best.as_ref().is_none_or(|(d, _)| t.desired > *d) {
            best = Some((t.desired, t.why));
        }
    }
    if !missing_names.is_empty() && best.is_some() {
        reasons.push(Reason::SomeMetricsMissing {
            hosts: missing_names.clone(),
        });
    }
    let Some((mut raw, why)) = best else {
        reasons.push(Reason::MetricsMissing {
            hosts: missing_names,
        });
        return (fleet.current, None, readings);
    };
    reasons.push(why);
    // A signal that could not be read may not let the others scale in (HPA's rule).
    if any_unreadable && raw < fleet.current {
        reasons.push(Reason::MetricsMissing {
            hosts: missing_names,
        });
        raw = fleet.current;
    }
    let Fleet {
        in_service,
        on_the_way,
        current,
        ..
    } = fleet;
    if raw > in_service && raw <= current && on_the_way > 0 {
        reasons.push(Reason::CapacityOnTheWay { on_the_way });
    }
    (raw, top_util, readings)
}

/// What one readable signal asks for: the hosts its load needs, raised to what the master's
/// own bound needs, raised to what the forecast one lead time ahead needs.
fn track(
    cfg: &PolicyConfig,
    signal: Signal,
    present: &[f64],
    missing: usize,
    hosts: usize,
    ahead: &Ahead<'_>,
    fleet: Fleet,
) -> Tracked {
    let target = cfg.targets.get(signal);
    let sum: f64 = present.iter().sum();
    let mean = sum / present.len() as f64;
    let (desired_hosts, why) = hosts_needed(cfg, signal, sum, mean, missing, hosts, fleet.current);
    let mut desired = desired_hosts.map_or(fleet.current, |h| h.saturating_sub(1));
    let mut why = why;
    // The master does work no slave can take (forms, the CMS): it runs hotter than the
    // slaves by that much, and the mean hides it. With slaves in service to compare with,
    // the hosts that bring the master itself to the target: the shared part per host
    // (the slaves' level) must fall to target - excess.
    if let Some((hosts, counted)) = master_bound(signal, present, missing, target, cfg.tolerance) {
        let slaves_wanted = hosts.saturating_sub(1);
        if slaves_wanted > desired {
            desired = slaves_wanted;
            let slaves = present[1..].iter().sum::<f64>() / (present.len() - 1) as f64;
            why = Reason::MasterBound {
                signal,
                master: present[0],
                slaves,
                counted,
                target,
            };
        }
    }
    let mut forecast = None;
    if missing == 0 {
        if let Some((per_host, wanted)) =
            forecast_ahead(cfg, signal, sum, hosts, ahead, fleet.current, desired)
        {
            forecast = Some(per_host);
            if let Some((slaves, reason)) = wanted {
                desired = slaves;
                why = reason;
            }
        }
    }
    Tracked {
        mean,
        desired,
        why,
        forecast,
    }
}

/// The hosts one signal's load needs (`None`: hold, within tolerance), and why. Hosts missing
/// the signal count as idle when scaling up and as at target when scaling down (HPA's rule).
fn hosts_needed(
    cfg: &PolicyConfig,
    signal: Signal,
    sum: f64,
    mean: f64,
    missing: usize,
    hosts: usize,
    current: u32,
) -> (Option<u32>, Reason) {
    let target = cfg.targets.get(signal);
    let n = hosts as f64;
    let current_hosts = current + 1;
    let ratio = mean / target;
    let hold = Reason::WithinTolerance {
        signal,
        ratio,
        tolerance: cfg.tolerance,
    };
    if missing == 0 {
        if (1.0 - ratio).abs() <= cfg.tolerance {
            return (None, hold);
        }
        return (
            Some(ceil(sum / target)),
            direction_reason(signal, mean, target),
        );
    }
    let assumed = if ratio < 1.0 { target } else { 0.0 };
    let sum2 = sum + missing as f64 * assumed;
    let ratio2 = sum2 / n / target;
    if (1.0 - ratio2).abs() <= cfg.tolerance
        || (ratio < 1.0 && ratio2 > 1.0)
        || (ratio > 1.0 && ratio2 < 1.0)
    {
        return (None, hold);
    }
    let d = ceil(sum2 / target);
    if (ratio2 < 1.0 && d > current_hosts) || (ratio2 > 1.0 && d < current_hosts) {
        (None, hold)
    } else {
        (Some(d), direction_reason(signal, mean, target))
    }
}

/// One lead time ahead, on the fleet's own trend: only ever more. The forecast load per host
/// when one was made, and the slaves it asks for when that is more than `desired`.
fn forecast_ahead(
    cfg: &PolicyConfig,
    signal: Signal,
    sum: f64,
    hosts: usize,
    ahead: &Ahead<'_>,
    current: u32,
    desired: u32,
) -> Option<(f64, Option<(u32, Reason)>)> {
    let f = &cfg.forecast;
    if !f.enabled || !signal.forecastable() {
        return None;
    }
    let target = cfg.targets.get(signal);
    let n = hosts as f64;
    let mean = sum / n;
    let (lead, measured) = ahead.hist.lead_time(f.lead_time.whole_secs());
    let slope = ahead
        .hist
        .trend(signal, ahead.now, f.window.whole_secs(), sum, to_u32(hosts))?;
    let forecast = (sum + slope * lead as f64).min(sum * f.max_factor);
    let ratio_ahead = forecast / n / target;
    // Only ever more, and only past the tolerance.
    let rises = forecast > sum && ratio_ahead > 1.0 + cfg.tolerance;
    if !rises {
        return None;
    }
    // A forecast is a bet: it may spend at most a third of the cap that is left once what the
    // load asks for now is launched (a wave that fades early leaves the rest for the next;
    // measured on traces/double-spike.csv).
    let spare = ahead
        .cap_remaining
        .saturating_sub(desired.saturating_sub(current));
    let wanted = ceil(forecast / target).saturating_sub(1);
    let ahead_slaves = wanted.min(desired + spare / 3);
    let raise = (ahead_slaves > desired).then(|| {
        let why = Reason::Forecast {
            signal,
            utilization: mean,
            forecast: forecast / n,
            target,
            horizon_secs: lead,
            measured,
        };
        (ahead_slaves, why)
    });
    Some((forecast / n, raise))
}

fn direction_reason(signal: Signal, utilization: f64, target: f64) -> Reason {
    if utilization > target {
        Reason::AboveTarget {
            signal,
            utilization,
            target,
        }
    } else {
        Reason::BelowTarget {
            signal,
            utilization,
            target,
        }
    }
}

/// Step rules: breach a threshold for its sustain window, then add or remove a step. Slaves on
/// their way count as capacity: the load the serving hosts carry is spread over them too before
/// it is held to the scale-out threshold, so one spike is answered once, not once a tick while
/// the first slave boots.
fn threshold(
    cfg: &PolicyConfig,
    serving: &[(&str, Option<&HostMetrics>)],
    current: u32,
    on_the_way: u32,
    hist: &History,
    now: Timestamp,
    reasons: &mut Vec<Reason>,
) -> (u32, Option<f64>, Vec<SignalReading>) {
    let n = serving.len() as f64;
    let mut readings = Vec::new();
    let mut util: Option<f64> = None;
    let mut missing_names: Vec<String> = Vec::new();
    for &signal in &cfg.signals {
        let (present, missing) = read_signal(serving, signal, &mut missing_names);
        // Missing hosts count as idle here: they can only delay a scale-out, never cause a scale-in.
        let u = (!present.is_empty()).then(|| present.iter().sum::<f64>() / n);
        if let Some(u) = u {
            util = Some(util.map_or(u, |x: f64| x.max(u)));
        }
        readings.push(SignalReading {
            signal,
            utilization: u,
            goal: cfg.scale_out.threshold,
            missing_hosts: to_u32(missing),
            desired: None,
            forecast: None,
        });
    }
    let Some(u) = util else {
        reasons.push(Reason::MetricsMissing {
            hosts: missing_names,
        });
        return (current, None, readings);
    };
    let raw = step_rules(
        cfg,
        u,
        n,
        current,
        on_the_way,
        missing_names,
        hist,
        now,
        reasons,
    );
    (raw, Some(u), readings)
}

/// The step rules on the top utilization `u` of `n` serving hosts: a breach sustained for its
/// window adds or removes a step; missing metrics never remove one.
#[allow(clippy::too_many_arguments)]
fn step_rules(
    cfg: &PolicyConfig,
    u: f64,
    n: f64,
    current: u32,
    on_the_way: u32,
    missing_names: Vec<String>,
    hist: &History,
    now: Timestamp,
    reasons: &mut Vec<Reason>,
) -> u32 {
    let since = |start: Timestamp| now.as_second() - start.as_second();
    let out = &cfg.scale_out;
    let inn = &cfg.scale_in;
    if let Some(start) = hist.streak_start(now, Some(u), |x| x > out.threshold) {
        let (for_secs, need) = (since(start), out.sustain.whole_secs());
        // The same load over the serving hosts and those on their way.
        let spread = u * n / (n + f64::from(on_the_way));
        if for_secs >= need && on_the_way > 0 && spread <= out.threshold {
            reasons.push(Reason::CapacityOnTheWay { on_the_way });
            current
        } else if for_secs >= need {
            reasons.push(Reason::AboveThreshold {
                utilization: u,
                threshold: out.threshold,
                for_secs,
            });
            current + out.step
        } else {
            reasons.push(Reason::ScaleOutSustaining {
                utilization: u,
                threshold: out.threshold,
                for_secs,
                need_secs: need,
            });
            current
        }
    } else if !missing_names.is_empty() {
        reasons.push(Reason::SomeMetricsMissing {
            hosts: missing_names,
        });
        current
    } else if let Some(start) = hist.streak_start(now, Some(u), |x| x < inn.threshold) {
        let (for_secs, need) = (since(start), inn.sustain.whole_secs());
        if for_secs >= need {
            reasons.push(Reason::BelowThreshold {
                utilization: u,
                threshold: inn.threshold,
                for_secs,
            });
            current.saturating_sub(inn.step)
        } else {
            reasons.push(Reason::ScaleInSustaining {
                utilization: u,
                threshold: inn.threshold,
                for_secs,
                need_secs: need,
            });
            current
        }
    } else {
        reasons.push(Reason::BetweenThresholds {
            utilization: u,
            scale_in: inn.threshold,
            scale_out: out.threshold,
        });
        current
    }
}

#[cfg(test)]
mod tests;
