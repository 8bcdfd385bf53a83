//! The scaling policy: a pure function from configuration, observation, cap ledger, history and
//! time to a [`Decision`] the actuator carries out, with an [`Explanation`] of every step.
//!
//! No clock, no I/O, no SDK types. [`decide`] is its pipeline, one stage per function, each
//! taking the count the stage before returned and giving its own with its reasons
//! (docs/how-it-decides.md tells the same list to operators):
//! 0. **serving hosts** ([`serving`]): fresh metrics only; each slave's report as far as the
//!    master's evidence backs it ([`corroborate`]);
//! 1. **desired** ([`demand`]) per signal (target tracking or threshold rules); the most
//!    demanding signal wins; missing metrics follow Kubernetes HPA's rule; the master's own
//!    bound and the lead-time forecast;
//! 2. **stabilization** ([`limits`]): out takes the lowest recommendation of its window, in the
//!    highest;
//! 3. **rate limits**: cooldowns and the max step per decision;
//! 4. **min/max slaves**, and a planned burst's floor;
//! 5. **what may launch** ([`holds`]): the daily burst cap (and the optional instance-hours
//!    budget, the warm slaves that come back free), then each hold: no EC2 capacity, a launch
//!    refused for good, a sync that keeps failing, no content source, the last minutes before
//!    the cap resets;
//! 6. **victims** for a scale-in ([`release`]): old enough, in the configured order; kept
//!    instead while bringing them back today (lead time, cap unit) would cost more than keeping
//!    them has;
//! 7. **the brownout bridge** ([`bridge`]): a degraded level while the fleet is short now and
//!    nothing serves in time. Its other half runs right after stage 0: hosts that served at a
//!    level are read back to full cost, so every stage between counts full-cost load.
//!
//! A new stage is one function in one of these modules and one line in [`decide`]. Its
//! reasons get a stable code and a readable line in `reason` ([`Reason`]), and its tests go in
//! that stage's `tests.rs`; `tests.rs` here holds the pipeline's own tests.
//!
//! The caller records each decision in [`History`] after it is made (the actuator keeps the one
//! copy in `state.json`); `decide` only reads it.

mod bridge;
mod corroborate;
mod demand;
mod history;
mod holds;
mod limits;
mod reason;
mod release;
mod serving;

pub use bridge::{BridgeState, LoadTrack, ManualBridge, RequestTrack};
pub use corroborate::{
    corroborate, evidence, Reports, Suspect, CORROBORATION_FACTOR, CORROBORATION_SLACK,
};
pub use history::History;
pub use reason::{Direction, Reason};

use crate::cap::{CapLedger, CapStatus};
use crate::config::{BridgeConfig, PolicyConfig, PolicyMode, Signal};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

pub use crate::model::{HostMetrics, SlaveState};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SlaveObservation {
    pub id: String,
    pub state: SlaveState,
    pub launched_at: Timestamp,
    /// The newest metrics read back for it; `None` when none have arrived.
    pub metrics: Option<HostMetrics>,
}

/// The actuator's backoff after a launch EC2 refused for good.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LaunchRefused {
    pub until: Timestamp,
    /// EC2's answer (`CODE: message`).
    pub cause: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FleetObservation {
    /// The master's own newest sample.
    pub master: Option<HostMetrics>,
    pub slaves: Vec<SlaveObservation>,
    /// EC2 had no capacity for any placement: no launch before then (the actuator's backoff).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_capacity_until: Option<Timestamp>,
    /// EC2 refused the last launch for good (a missing instance profile, a security group or
    /// AMI that does not exist, IAM, a limit): no launch before then (the actuator's backoff;
    /// a reload or `burst-agent resume` ends it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch_refused: Option<LaunchRefused>,
    /// The liveness probe's last round ([`crate::model::probe_latency`]): when, and the slowest
    /// answer in milliseconds; the `probe_latency` signal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_latency: Option<(Timestamp, f64)>,
    /// The planned burst whose window (prewarm included) holds now, if any: its `min_slaves`
    /// is a floor like `policy.min_slaves` (schedule.rs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled: Option<crate::schedule::Window>,
    /// Room left in the warm pool (`fleet.warm_pool` minus the slaves stopped or stopping in
    /// it): a slave released into it can come back today at no new cap unit.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub warm_room: u32,
    /// Seconds a released slave drains before it stops or terminates (`elb.draining_timeout`):
    /// kept slaves are released that much earlier before the cap resets.
    #[serde(default)]
    pub drain_secs: i64,
    /// Content sync keeps failing the same way (the actuator's brake): no launch spends a cap
    /// unit, except one trial when `trial` says so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_broken: Option<SyncBroken>,
    /// The content source on the master is missing or empty (why): a new slave could get no
    /// content, so nothing launches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_source_missing: Option<String>,
    /// What AWS itself measured, which no slave can write (`AWS/` namespaces).
    #[serde(default)]
    pub evidence: Evidence,
    /// The bridge's level as an operator set it by hand, until it expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge_manual: Option<ManualBridge>,
}

/// Evidence from AWS's own metrics (nobody can PutMetricData into an `AWS/` namespace).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// Each slave's newest `AWS/EC2` `CPUUtilization`, as a ratio (EC2's hypervisor measured it).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub cpu: BTreeMap<String, f64>,
    /// The ELB queues or spills requests (`AWS/ELB` `SurgeQueueLength`, `SpilloverCount`): its
    /// backends cannot keep up, so the slaves' reports of a busy fleet are backed. Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elb_saturated: Option<String>,
}

/// The actuator's brake on a content sync that keeps failing, as the policy sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SyncBroken {
    /// What the failures had in common (the fix, when the hook's words name one).
    pub cause: String,
    /// One trial launch may go now.
    pub trial: bool,
    /// Seconds until a trial may go (0 when one may go now; negative while a trial syncs).
    pub trial_in_secs: i64,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// What one signal said this tick.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SignalReading {
    pub signal: Signal,
    /// Mean over serving hosts with fresh metrics; `None` when none had it.
    pub utilization: Option<f64>,
    /// The target (target tracking) or scale-out threshold (threshold mode) it is held to.
    pub goal: f64,
    /// Serving hosts whose metrics were missing or stale.
    pub missing_hosts: u32,
    /// Slaves this signal asks for; `None` when it could not say.
    pub desired: Option<u32>,
    /// Its utilization forecast one lead time ahead, when the trend was used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forecast: Option<f64>,
}

/// How a decision came about: every count along the pipeline and every reason.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Explanation {
    pub mode: PolicyMode,
    pub in_service: u32,
    /// Pending + syncing.
    pub on_the_way: u32,
    pub draining: u32,
    /// Slaves counted as capacity: in service + on the way.
    pub current: u32,
    /// The most demanding signal's utilization (threshold mode compares it to thresholds).
    pub utilization: Option<f64>,
    pub signals: Vec<SignalReading>,
    pub raw_desired: u32,
    pub stabilized: u32,
    pub rate_limited: u32,
    pub bounded: u32,
    pub cap_limited: u32,
    pub final_count: u32,
    pub reasons: Vec<Reason>,
    pub cap: CapStatus,
    /// Of a scale-in's victims, those beyond the warm pool's room: the history counts them so
    /// the next release is priced at the next cap unit (step 6).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub released_beyond_pool: u32,
    /// The brownout bridge after this decision (stage 7): its level and episode.
    #[serde(default, skip_serializing_if = "BridgeState::is_off")]
    pub bridge: BridgeState,
}

/// A [`Decision`]'s variant without its data, named as serde names the decision's `action`
/// tag (both `rename_all = "snake_case"`; a test holds them together).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DecisionKind {
    Hold,
    ScaleOut,
    ScaleIn,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Decision {
    Hold {
        why: Explanation,
    },
    ScaleOut {
        count: u32,
        why: Explanation,
    },
    ScaleIn {
        instances: Vec<String>,
        why: Explanation,
    },
}

impl Explanation {
    /// An explanation with no numbers and no reasons, only the cap: for a decision made by
    /// something other than the policy (a test, the fault simulation), which the actuator carries
    /// out by its count or victims alone.
    pub fn bare(cap: CapStatus) -> Self {
        Explanation {
            mode: PolicyMode::TargetTracking,
            in_service: 0,
            on_the_way: 0,
            draining: 0,
            current: 0,
            utilization: None,
            signals: Vec::new(),
            raw_desired: 0,
            stabilized: 0,
            rate_limited: 0,
            bounded: 0,
            cap_limited: 0,
            final_count: 0,
            reasons: Vec::new(),
            cap,
            released_beyond_pool: 0,
            bridge: BridgeState::default(),
        }
    }
}

impl Decision {
    pub fn explanation(&self) -> &Explanation {
        match self {
            Decision::Hold { why }
            | Decision::ScaleOut { why, .. }
            | Decision::ScaleIn { why, .. } => why,
        }
    }
    /// What it does, by the name serde gives it (its `action` tag in JSON): the logs'
    /// `action` field and the JSON cannot disagree.
    pub fn action(&self) -> &'static str {
        crate::model::name_of(&self.kind())
    }

    pub fn kind(&self) -> DecisionKind {
        match self {
            Decision::Hold { .. } => DecisionKind::Hold,
            Decision::ScaleOut { .. } => DecisionKind::ScaleOut,
            Decision::ScaleIn { .. } => DecisionKind::ScaleIn,
        }
    }
    /// The reason codes, for log fields and tests.
    pub fn reason_codes(&self) -> Vec<&'static str> {
        self.explanation()
            .reasons
            .iter()
            .map(Reason::code)
            .collect()
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let why = self.explanation();
        match self {
            Decision::Hold { .. } => write!(f, "hold at {} slaves", why.current)?,
            Decision::ScaleOut { count, .. } => write!(
                f,
                "scale out by {count} ({} -> {} slaves)",
                why.current, why.final_count
            )?,
            Decision::ScaleIn { instances, .. } => write!(
                f,
                "scale in by {} ({} -> {} slaves: {})",
                instances.len(),
                why.current,
                why.final_count,
                instances.join(", ")
            )?,
        }
        write!(
            f,
            " [desired {}, stabilized {}, rate-limited {}, bounded {}, cap-limited {}; burst cap {}]",
            why.raw_desired, why.stabilized, why.rate_limited, why.bounded, why.cap_limited, why.cap
        )?;
        for r in &why.reasons {
            write!(f, "; {r}")?;
        }
        Ok(())
    }
}

/// `m` if it is at most `stale_after` seconds old at `now`: older metrics count as missing.
pub fn fresh(m: Option<&HostMetrics>, now: Timestamp, stale_after: i64) -> Option<&HostMetrics> {
    m.filter(|m| now.as_second() - m.at.as_second() <= stale_after)
}

/// ceil, forgiving float noise (3.0000000001 is 3).
fn ceil(x: f64) -> u32 {
    let c = (x - 1e-9).ceil();
    if c <= 0.0 {
        0
    } else if c >= f64::from(u32::MAX) {
        u32::MAX
    } else {
        c as u32
    }
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The fleet as the policy counts it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Fleet {
    pub in_service: u32,
    /// Pending or syncing: capacity that will serve.
    pub on_the_way: u32,
    pub draining: u32,
    /// In service and on the way: what the stages count up from.
    pub current: u32,
}

impl Fleet {
    fn of(obs: &FleetObservation) -> Self {
        let count = |s: SlaveState| to_u32(obs.slaves.iter().filter(|x| x.state == s).count());
        let in_service = count(SlaveState::InService);
        let on_the_way = count(SlaveState::Pending) + count(SlaveState::Syncing);
        Fleet {
            in_service,
            on_the_way,
            draining: count(SlaveState::Draining),
            current: in_service + on_the_way,
        }
    }
}

/// One stage's output; its reasons join the decision's, in stage order.
fn stage<T>(reasons: &mut Vec<Reason>, (out, why): (T, Vec<Reason>)) -> T {
    reasons.extend(why);
    out
}

/// Decides what to do now. Pure: the same inputs give the same decision.
///
/// The pipeline of docs/how-it-decides.md, a stage per line: each takes the count the one
/// before it returned and gives its own with its reasons.
pub fn decide(
    cfg: &PolicyConfig,
    bridge_cfg: &BridgeConfig,
    obs: &FleetObservation,
    cap: &CapLedger,
    hist: &History,
    now: Timestamp,
) -> Decision {
    let fleet = Fleet::of(obs);
    let current = fleet.current;
    let r = &mut Vec::new();
    // 0. The serving hosts, each slave's report as far as the evidence backs it.
    let mut serving = stage(r, serving::serving(cfg, obs, now));
    // 0b. Hosts that served degraded, read back to full cost.
    let n = 1 + fleet.in_service;
    let prev = &hist.bridge;
    let tracks = stage(
        r,
        bridge::full_cost(bridge_cfg, &mut serving.hosts, n, prev),
    );
    // 1. What the load asks for.
    let ahead = demand::Ahead {
        probe: serving.probe,
        hist,
        now,
        cap_remaining: cap.remaining(now),
    };
    let demand = stage(r, demand::desired(cfg, &serving.hosts(), &ahead, fleet));
    let raw = demand.raw;
    // 2-4. Stabilization, rate limits, min / max slaves.
    let stabilized = stage(r, limits::stabilize(cfg, hist, now, current, raw));
    let rate_limited = stage(r, limits::rate_limit(cfg, hist, now, current, stabilized));
    let scheduled = obs.scheduled.as_ref();
    let bound = limits::bound(cfg, scheduled, now, current, raw, stabilized, rate_limited);
    let (floor, bounded) = stage(r, bound);
    // 5. What may launch: the cap, then every hold.
    let cap = holds::CapView::of(obs, cap, now);
    let n = stage(r, holds::cap_limit(&cap, current, bounded));
    let n = stage(r, holds::no_capacity(obs, now, current, n));
    let n = stage(r, holds::launch_refused(obs, now, current, n));
    let n = stage(r, holds::sync_broken(obs, cap.free_warm, current, n));
    let n = stage(r, holds::source_missing(obs, current, n));
    let signals = &demand.signals;
    let cap_limited = stage(
        r,
        holds::midnight(cfg, &cap.status, signals, current, floor, n),
    );
    // 6. What a scale-in releases, and what it keeps.
    let release = stage(
        r,
        release::release(cfg, obs, hist, &cap, now, current, cap_limited),
    );
    // 7. The brownout bridge: a degraded level while the fleet is short and nothing serves in
    // time.
    let bridge = stage(
        r,
        bridge::bridge(bridge_cfg, cfg, obs, hist, fleet, tracks, now),
    );
    let final_count = if cap_limited < current {
        current - to_u32(release.victims.len())
    } else {
        cap_limited
    };
    let why = Explanation {
        mode: cfg.mode,
        in_service: fleet.in_service,
        on_the_way: fleet.on_the_way,
        draining: fleet.draining,
        current,
        utilization: demand.utilization,
        signals: demand.signals,
        raw_desired: raw,
        stabilized,
        rate_limited,
        bounded,
        cap_limited,
        final_count,
        reasons: std::mem::take(r),
        cap: cap.status,
        released_beyond_pool: release.beyond_pool,
        bridge,
    };
    if final_count > current {
        let count = final_count - current;
        Decision::ScaleOut { count, why }
    } else if !release.victims.is_empty() {
        let instances = release.victims;
        Decision::ScaleIn { instances, why }
    } else {
        Decision::Hold { why }
    }
}

#[cfg(test)]
mod tests;
