//! The simulate table (people) and JSON (machines).

use super::{Kind, Model, Outcome};
use serde::Serialize;
use std::fmt::Write;

#[derive(Serialize)]
pub struct Report<'a> {
    pub trace: &'a str,
    pub start: String,
    pub duration_hours: f64,
    pub model: &'a Model,
    pub daily_limit: u32,
    pub time_zone: &'a str,
    /// The run every `elastic_speedup` (η) is against: its label, e.g. "k8s-hpa (cap)".
    pub speedup_reference: String,
    /// The floor of each metric in η, percentage points ([`super::SPEEDUP_FLOOR`]).
    pub speedup_floor: f64,
    pub runs: Vec<Run<'a>>,
}

#[derive(Serialize)]
pub struct Run<'a> {
    pub label: String,
    #[serde(flatten)]
    pub outcome: &'a Outcome,
}

/// What to print of `outcomes`; `reference` is the policy [`super::run_all_with`] measured η
/// against (the table and the JSON name its run).
pub fn report<'a>(
    trace_name: &'a str,
    trace: &super::trace::Trace,
    model: &'a Model,
    cfg: &'a crate::config::Config,
    outcomes: &'a [Outcome],
    reference: Kind,
) -> Report<'a> {
    Report {
        trace: trace_name,
        start: trace.start.to_string(),
        duration_hours: trace.duration_secs() as f64 / 3600.0,
        model,
        daily_limit: cfg.cap.daily_limit,
        time_zone: &cfg.cap.time_zone,
        speedup_reference: super::reference_run(outcomes, reference)
            .map_or_else(|| reference.name().to_string(), Outcome::label),
        speedup_floor: super::SPEEDUP_FLOOR,
        runs: outcomes
            .iter()
            .map(|o| Run {
                label: o.label(),
                outcome: o,
            })
            .collect(),
    }
}

pub fn table(r: &Report<'_>) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "trace {} ({:.1} h from {}), cap {}/day in {}, demand at {:.0}% utilization per host, \
         {:.0}% master-only; η against {}",
        r.trace,
        r.duration_hours,
        r.start,
        r.daily_limit,
        r.time_zone,
        r.model.slo_utilization * 100.0,
        r.model.master_only_share * 100.0,
        r.speedup_reference
    );
    // η first misleads: doing nothing is never over-provisioned, and can score well on it.
    let _ = writeln!(
        s,
        "η above 1: better than {} with under- and over-provisioning weighed alike; a run never \
         over (none) can score high while short: read θU first",
        r.speedup_reference
    );
    // The policy column fits the longest label ("burst-agent+bridge (no cap)"), 22 at least.
    let w = r
        .runs
        .iter()
        .map(|run| run.label.chars().count())
        .fold(22, usize::max);
    let _ = writeln!(
        s,
        "{:<w$} {:>6} {:>6} {:>6} {:>6} {:>6} {:>8} {:>6} {:>7} {:>8} {:>8} {:>7} {:>5} {:>8} {:>8}",
        "policy",
        "θU%",
        "gap",
        "θO%",
        "τU%",
        "τO%",
        "jitter/h",
        "η",
        "inst-h",
        "billed-h",
        "launches",
        "max/day",
        "peak",
        "cap-viol",
        "load/cpu"
    );
    for run in &r.runs {
        let m = &run.outcome.metrics;
        let _ = writeln!(
            s,
            "{:<w$} {:>6.2} {:>6.2} {:>6.2} {:>6.2} {:>6.2} {:>8.2} {:>6.2} {:>7.1} {:>8.0} {:>8} {:>7} {:>5} {:>8} {:>8.1}",
            run.label,
            m.theta_u,
            m.theta_u_gap,
            m.theta_o,
            m.tau_u,
            m.tau_o,
            m.jitter_per_hour,
            m.elastic_speedup,
            m.instance_hours,
            m.billed_hours,
            m.launches,
            m.max_instances_per_day,
            m.peak_slaves,
            m.cap_violations,
            m.peak_load_per_cpu
        );
    }
    s.push_str(
        "θU/θO: under/over-provisioning, % of demand; gap: θU minus the oracle's (clairvoyant: knows the trace, same cap\n\
         and delays, launches one lead time ahead); τU/τO: % of time under/over; jitter: supply minus demand adaptations\n",
    );
    let _ = writeln!(
        s,
        "per hour; η: elastic speedup against {}, the geometric mean over θU, θO, τU and τO of its value over\n\
         this run's, each at least {} (above 1: better than it, below 1: worse; under- and over-provisioning weigh alike);",
        r.speedup_reference, r.speedup_floor
    );
    s.push_str(
        "inst-h: slave hours (per second), billed-h: per started hour; max/day: most distinct slaves on one local day;\n\
         cap-viol: days above the cap (must be 0 with the cap on); load/cpu: the master's peak 1-minute load per CPU.\n",
    );
    bridge_table(&mut s, r);
    for run in &r.runs {
        if let Some(t) = &run.outcome.trouble {
            let _ = writeln!(s, "warning: {}: {}", run.label, crate::text::printable(t));
        }
    }
    s
}

/// The brownout bridge's runs (burst-agent+bridge), beside the bridge-less agent's θU.
fn bridge_table(s: &mut String, r: &Report<'_>) {
    let bridged: Vec<&Run<'_>> = r
        .runs
        .iter()
        .filter(|run| run.outcome.policy == Kind::Bridged)
        .collect();
    if bridged.is_empty() {
        return;
    }
    let _ = writeln!(
        s,
        "\n{:<28} {:>6} {:>9} {:>6} {:>6} {:>9} {:>8}",
        "bridge", "θU%", "θU w/o%", "θD%", "τD%", "needless%", "episodes"
    );
    for run in bridged {
        let m = &run.outcome.metrics;
        let without = r
            .runs
            .iter()
            .find(|o| o.outcome.policy == Kind::Agent && o.outcome.capped == run.outcome.capped)
            .map_or(f64::NAN, |o| o.outcome.metrics.theta_u);
        let _ = writeln!(
            s,
            "{:<28} {:>6.2} {:>9.2} {:>6.2} {:>6.2} {:>9.2} {:>8}",
            run.label, m.theta_u, without, m.theta_d, m.tau_d, m.needless_d, m.bridge_episodes
        );
    }
    s.push_str(
        "θU: against the demand of the requests as served (degraded ones cost bridge.costs of a full one); θU w/o: the\n\
         same agent without the bridge; θD: % of the offered load served degraded; τD: % of time degraded; needless: %\n\
         of the degraded time the serving hosts covered full-cost demand.\n",
    );
}
