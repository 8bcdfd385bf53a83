//! `burst-agent simulate`: replays a load trace through the real policy (`policy::decide`) with
//! a virtual clock, next to baselines, and scores each with the SPEC Research Group's
//! elasticity metrics; η compares each run with a named reference run (HPA's by default).
//! Every deciding policy's slaves (burst-agent, k8s-hpa, aws-simple) go through the real
//! `Actuator`, its cap ledger and its phase table in faultsim's world, with fixed times and no
//! faults (`fleet::RealFleet`). The references that decide nothing or know the future (none,
//! static, oracle) use an ideal fleet model (`fleet::ModelFleet`).
//!
//! Files: `fleet.rs` (both fleets), `trace.rs` (CSV traces), `hpa.rs` and `simple.rs` (the
//! Kubernetes HPA and AWS simple-scaling baselines; none and static are here), `oracle.rs` (the
//! clairvoyant reference every run's θU gap is measured against), `report.rs` (table and
//! JSON), `plot.rs` (the SVG plot, plotters).
//!
//! The model of the load and the hosts, one tick a second (the launch and scale-in bullets are
//! the ideal fleet model's):
//! - a share s of the offered load L (host-equivalents), `master_only_share`, is work only the
//!   master can do (forms and the CMS stay on it); the rest is spread evenly over the n serving
//!   hosts (the master is in the ELB too, with the slaves in service). So the master's
//!   utilization is s·L + (1 − s)·L / n and each slave's (1 − s)·L / n ([`Model::utilization`]);
//! - a host's Apache busy ratio is min(u, 1) (mod_status is instantaneous); its load average
//!   per CPU follows u through the kernel's 1-minute exponential average (updated every 5 s), so
//!   it lags and, when overloaded, grows past 1 the way the run queue does;
//! - a launched slave is pending for `boot_delay`, then syncing for `sync_time` + `register_delay`,
//!   then in service; a scaled-in slave stops serving at once and is terminated after draining;
//! - the master sees its own samples at once; slaves' samples reach it through CloudWatch
//!   `metrics_delay` later (a new slave has no metrics until then).
//!
//! Demand is the hosts needed to keep each at or below `slo_utilization` ([`Model::demand`]): the
//! smallest n with the master (the hottest host) at or below it; with no master-only work that is
//! ceil(L / slo), at least the master. Supply is the serving hosts.

mod fleet;
pub(crate) mod hpa;
pub(crate) mod oracle;
pub mod plot;
pub mod report;
pub(crate) mod simple;
pub mod trace;

use crate::cap::CapLedger;
use crate::config::{BridgeConfig, Config, PolicyConfig, Signal};
use crate::policy::{
    self, Decision, FleetObservation, History, HostMetrics, SlaveObservation, SlaveState,
};
use jiff::Timestamp;
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use trace::Trace;

/// The fleet model's parameters (seconds unless said).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Model {
    pub boot_delay: i64,
    pub sync_time: i64,
    pub register_delay: i64,
    pub metrics_delay: i64,
    pub sampling_interval: i64,
    pub draining: i64,
    /// Demand keeps every host at or below this utilization.
    pub slo_utilization: f64,
    /// Trace units per host (1.0 when the trace is in host-equivalents).
    pub host_capacity: f64,
    /// Share of the offered load (0-1) that only the master can serve: forms and the CMS stay on
    /// the master, so no slave takes this part; the rest is spread evenly over every serving host.
    /// Default 0.1, an estimate rather than a measurement: in a burst nearly all requests are
    /// readers of pages any host serves (the leaderboard, the shop's page, the appeal), while the
    /// forms' posts are few but heavier than a page, and the CMS keeps working through an event
    /// (scores and news published while it runs). With a tenth, at the default 80 % SLO, the
    /// master alone passes the SLO only above 8 host-equivalents (of the shipped traces, only
    /// the tweet's peak), and demand reaches the largest default fleet (1 + 7) from about 3.8: the
    /// master is the bottleneck in a burst, as in the field, without every burst being
    /// hopeless. 0 is the model before the share was added.
    pub master_only_share: f64,
    /// Slaves of the static baseline ([`Kind::Static`]): the fleet planned in advance, in service
    /// from the trace's start to its end. Default 5, the golf tournament's 1 master + 5 slaves.
    pub static_slaves: u32,
    /// A stopped slave of the warm pool: StartInstances to running (an EBS-backed instance
    /// boots from its volume, with no image to fetch).
    pub start_delay: i64,
    /// Its content sync after a start: an incremental rsync of what changed while it slept.
    pub resync_time: i64,
}

/// Utilization of each kind of serving host at one instant.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HostLoad {
    pub master: f64,
    pub slave: f64,
}

impl Model {
    pub fn from_config(cfg: &Config) -> Self {
        Model {
            boot_delay: 90,
            sync_time: 30,
            register_delay: 30,
            metrics_delay: 60,
            sampling_interval: cfg.sampling.interval.get().as_secs().max(1) as i64,
            draining: cfg.elb.draining_timeout.get().as_secs() as i64,
            slo_utilization: 0.8,
            host_capacity: 1.0,
            master_only_share: 0.1,
            static_slaves: 5,
            start_delay: 40,
            resync_time: 10,
        }
    }

    fn share(&self) -> f64 {
        if self.master_only_share.is_finite() {
            self.master_only_share.clamp(0.0, 1.0)
        } else {
            0.0
        }
    }

    /// Utilization of the master and of each slave with `serving` hosts in service (the master
    /// included) under `load` host-equivalents: the master does the master-only share s and its
    /// part of the rest, s·L + (1 − s)·L / n; a slave (1 − s)·L / n. The master is always hotter
    /// by s·L, however many slaves serve.
    pub fn utilization(&self, load: f64, serving: u32) -> HostLoad {
        self.utilization_at(load, serving, 1.0)
    }

    /// [`Model::utilization`] while the spread part costs `cost` of its full cost (the brownout
    /// bridge's level; the master-only share is never degraded): s·L + (1 − s)·L·cost / n on
    /// the master, (1 − s)·L·cost / n on a slave.
    pub fn utilization_at(&self, load: f64, serving: u32, cost: f64) -> HostLoad {
        let s = self.share();
        let spread = (1.0 - s) * load * cost / f64::from(serving.max(1));
        HostLoad {
            master: s * load + spread,
            slave: spread,
        }
    }

    /// Hosts needed (the master included) to keep every host at or below `slo_utilization` under
    /// `load` host-equivalents: the smallest n with s·L + (1 − s)·L / n <= slo, which is
    /// ceil((1 − s)·L / (slo − s·L)); with s = 0 that is ceil(L / slo), as without the share.
    ///
    /// As s·L nears the SLO, n grows without bound, and once s·L alone is above it no number of
    /// slaves brings the master under it. So demand is at most the larger of the largest fleet a
    /// policy may run (1 + `max_slaves`) and what the load would need if all of it could be
    /// spread, ceil(L / slo); that bound is also the demand when s·L >= slo. Past it the
    /// master-only work is what overloads the master and a slave more would not fix it. The bound
    /// never cuts the demand below the even-spread demand, so with s = 0 demand is as before.
    pub fn demand(&self, load: f64, max_slaves: u32) -> u32 {
        self.demand_at(load, 1.0, max_slaves)
    }

    /// [`Model::demand`] while the spread part costs `cost` of its full cost (the bridge's
    /// level): the smallest n with s·L + (1 − s)·L·cost / n <= slo, bounded as there.
    pub fn demand_at(&self, load: f64, cost: f64, max_slaves: u32) -> u32 {
        let slo = self.slo_utilization;
        let s = self.share();
        let even = ceil_u32((s + (1.0 - s) * cost) * load / slo).max(1);
        let most = even.max(max_slaves.saturating_add(1));
        let room = slo - s * load;
        if room <= 0.0 {
            return most;
        }
        ceil_u32((1.0 - s) * load * cost / room).clamp(1, most)
    }
}

/// Which autoscaler a run uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// burst-agent's own policy (the config's `[policy]`), with the bridge off.
    Agent,
    /// burst-agent's policy with its brownout bridge (`[bridge]`, on): run beside
    /// [`Kind::Agent`] when `simulate --bridge` or `bridge.enabled` asks for it.
    Bridged,
    /// Kubernetes HPA's algorithm with its defaults, on the same targets.
    Hpa,
    /// AWS simple scaling on the config's scale-out / scale-in thresholds.
    AwsSimple,
    /// No autoscaling: the master plus `min_slaves`.
    None,
    /// A fleet planned in advance: the master plus `Model::static_slaves`, in service from the
    /// trace's start (no boot delay at 0) to its end. Its slaves count against the cap ledger
    /// like any slave: on every local day they run (a day-crossing run counts them each day),
    /// and with the cap on no more than the day's limit are started.
    Static,
    /// The clairvoyant reference (oracle.rs): knows the trace, same cap and delays.
    Oracle,
}

impl Kind {
    /// Every policy, in the order of the table.
    pub const ALL: [Kind; 7] = [
        Kind::Agent,
        Kind::Bridged,
        Kind::Hpa,
        Kind::AwsSimple,
        Kind::Static,
        Kind::Oracle,
        Kind::None,
    ];

    /// The policy of this [`Kind::name`].
    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// burst-agent's own policy, with or without its bridge.
    pub fn is_agent(self) -> bool {
        matches!(self, Kind::Agent | Kind::Bridged)
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Agent => "burst-agent",
            Kind::Bridged => "burst-agent+bridge",
            Kind::Hpa => "k8s-hpa",
            Kind::AwsSimple => "aws-simple",
            Kind::None => "none",
            Kind::Static => "static",
            Kind::Oracle => "oracle",
        }
    }
}

/// SPEC RG elasticity metrics and costs of one run.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Metrics {
    /// Under-/over-provisioning accuracy: mean of max(d - s, 0) / d (resp. s - d), % of demand.
    pub theta_u: f64,
    pub theta_o: f64,
    /// Under-/over-provisioning timeshare: % of time s < d (resp. s > d).
    pub tau_u: f64,
    pub tau_o: f64,
    /// (supply adaptations - demand adaptations) per hour: > 0 flaps, < 0 lags.
    pub jitter_per_hour: f64,
    /// Elastic speedup against the reference run ([`speedup`]): above 1 better than it.
    pub elastic_speedup: f64,
    /// Slave running time, per second.
    pub instance_hours: f64,
    /// Slave time billed per started hour (EC2's model when the seed cases ran).
    pub billed_hours: f64,
    pub launches: u32,
    /// Warm slaves started out of the pool (the agent's runs with `fleet.warm_pool`).
    pub warm_starts: u32,
    pub max_launches_per_day: u32,
    pub peak_slaves: u32,
    /// Local days on which more distinct slaves ran than `cap.daily_limit`.
    pub cap_violations: u32,
    pub max_instances_per_day: u32,
    /// The master's peak 1-minute load average per CPU.
    pub peak_load_per_cpu: f64,
    /// θU minus the oracle's (percentage points): how far from the best this run was.
    pub theta_u_gap: f64,
    /// The brownout bridge (burst-agent+bridge only): the share of the offered load served
    /// degraded, % (θD) ...
    pub theta_d: f64,
    /// ... the time degraded, % (τD) ...
    pub tau_d: f64,
    /// ... and the needless part of it: seconds degraded while the serving hosts covered
    /// full-cost demand, % of the degraded seconds.
    pub needless_d: f64,
    /// Bridge episodes (level 0 to above 0).
    pub bridge_episodes: u32,
}

/// Points for the plot, every `step` seconds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Series {
    pub step: i64,
    pub offered: Vec<f64>,
    pub demand: Vec<u32>,
    pub supply: Vec<u32>,
    pub cap_used: Vec<u32>,
    /// The bridge's level (0: full service).
    pub bridge: Vec<u8>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    pub policy: Kind,
    pub capped: bool,
    pub metrics: Metrics,
    #[serde(skip)]
    pub series: Series,
    /// Every slave's launch (seconds from the trace's start), in order.
    #[serde(skip)]
    pub launched_at: Vec<i64>,
    /// The first error of the agent's executor in the simulated world (none expected: it has
    /// no faults), or why it could not start; printed under the table.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trouble: Option<String>,
}

impl Outcome {
    pub fn label(&self) -> String {
        match (self.policy, self.capped) {
            (Kind::None, _) => "none".into(),
            (k, true) => format!("{} (cap)", k.name()),
            (k, false) => format!("{} (no cap)", k.name()),
        }
    }
}

/// What an autoscaler asks for.
enum Action {
    Hold,
    Launch(u32),
    Terminate(Vec<String>),
}

trait Autoscaler {
    fn interval(&self) -> i64;
    fn act(&mut self, now: Timestamp, obs: &FleetObservation, ledger: &CapLedger) -> Action;
    /// A slave it launched went into service `lead` seconds after its launch.
    fn served(&mut self, _lead: i64) {}
    /// The brownout bridge's level it set (0: full service; only burst-agent's has one).
    fn bridge_level(&self) -> u8 {
        0
    }
}

struct AgentScaler {
    cfg: PolicyConfig,
    bridge: BridgeConfig,
    hist: History,
}

impl Autoscaler for AgentScaler {
    fn interval(&self) -> i64 {
        self.cfg.evaluation_interval.get().as_secs().max(1) as i64
    }
    fn act(&mut self, now: Timestamp, obs: &FleetObservation, ledger: &CapLedger) -> Action {
        let d = policy::decide(&self.cfg, &self.bridge, obs, ledger, &self.hist, now);
        self.hist.record(&self.cfg, now, &d);
        match d {
            Decision::Hold { .. } => Action::Hold,
            Decision::ScaleOut { count, .. } => Action::Launch(count),
            Decision::ScaleIn { instances, .. } => Action::Terminate(instances),
        }
    }
    fn served(&mut self, lead: i64) {
        // As the daemon does: the lead time is measured from the fleet itself.
        self.hist.record_lead(lead);
    }
    fn bridge_level(&self) -> u8 {
        self.hist.bridge.level
    }
}

fn slaves_now(obs: &FleetObservation) -> u32 {
    obs.slaves
        .iter()
        .filter(|s| !matches!(s.state, SlaveState::Draining | SlaveState::Stopped))
        .count() as u32
}

/// Newest first among in-service slaves, then not-yet-ready ones.
fn newest(obs: &FleetObservation, n: u32) -> Vec<String> {
    let mut v: Vec<&SlaveObservation> = obs
        .slaves
        .iter()
        .filter(|s| !matches!(s.state, SlaveState::Draining | SlaveState::Stopped))
        .collect();
    v.sort_by_key(|s| {
        (
            s.state == SlaveState::InService,
            std::cmp::Reverse(s.launched_at),
        )
    });
    v.into_iter()
        .take(n as usize)
        .map(|s| s.id.clone())
        .collect()
}

struct HpaScaler {
    params: hpa::HpaParams,
    hpa: hpa::Hpa,
    signals: Vec<(Signal, f64)>,
    stale_after: i64,
}

impl Autoscaler for HpaScaler {
    fn interval(&self) -> i64 {
        self.params.sync_secs
    }
    fn act(&mut self, now: Timestamp, obs: &FleetObservation, _: &CapLedger) -> Action {
        let current = 1 + slaves_now(obs);
        let stale_after = self.stale_after;
        let mut desired: Option<u32> = None;
        let mut unreadable = false;
        for &(sig, target) in &self.signals {
            let pod = |m: Option<&HostMetrics>| match policy::fresh(m, now, stale_after)
                .and_then(|m| m.get(sig))
            {
                Some(v) => hpa::Pod::Ready(v),
                None => hpa::Pod::Missing,
            };
            let mut pods = vec![pod(obs.master.as_ref())];
            for s in &obs.slaves {
                match s.state {
                    SlaveState::InService => pods.push(pod(s.metrics.as_ref())),
                    SlaveState::Pending | SlaveState::Syncing => pods.push(hpa::Pod::Unready),
                    SlaveState::Draining | SlaveState::Stopped => {}
                }
            }
            match hpa::replica_count(current, &pods, target, self.params.tolerance) {
                Some(n) => desired = Some(desired.map_or(n, |d| d.max(n))),
                None => unreadable = true,
            }
        }
        // "If any of these metrics cannot be converted ... and a scale down is suggested ... scaling is skipped."
        if unreadable && desired.is_some_and(|d| d < current) {
            desired = Some(current);
        }
        let next = self
            .hpa
            .reconcile(&self.params, now.as_second(), current, desired);
        match next.cmp(&current) {
            std::cmp::Ordering::Greater => Action::Launch(next - current),
            std::cmp::Ordering::Less => Action::Terminate(newest(obs, current - next)),
            std::cmp::Ordering::Equal => Action::Hold,
        }
    }
}

struct SimpleScaler {
    params: simple::SimpleParams,
    state: simple::SimpleScaling,
    signals: Vec<Signal>,
    min: u32,
    max: u32,
}

impl Autoscaler for SimpleScaler {
    fn interval(&self) -> i64 {
        self.params.period_secs
    }
    fn act(&mut self, now: Timestamp, obs: &FleetObservation, _: &CapLedger) -> Action {
        // The group's average over the hosts that reported: CloudWatch averages what it has.
        let mut hosts: Vec<&HostMetrics> = obs.master.iter().collect();
        hosts.extend(
            obs.slaves
                .iter()
                .filter(|s| s.state == SlaveState::InService)
                .filter_map(|s| s.metrics.as_ref()),
        );
        let point = self
            .signals
            .iter()
            .filter_map(|&sig| {
                let v: Vec<f64> = hosts.iter().filter_map(|m| m.get(sig)).collect();
                (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
            })
            .reduce(f64::max);
        let current = slaves_now(obs);
        match self.state.period(&self.params, now.as_second(), point) {
            simple::Step::Add(n) if current < self.max => Action::Launch(n.min(self.max - current)),
            simple::Step::Remove(n) if current > self.min => {
                // The default termination policy of the time: closest to the next billing hour.
                let mut v: Vec<&SlaveObservation> = obs
                    .slaves
                    .iter()
                    .filter(|s| s.state == SlaveState::InService)
                    .collect();
                let age = |s: &SlaveObservation| now.as_second() - s.launched_at.as_second();
                v.sort_by_key(|s| 3600 - age(s).rem_euclid(3600));
                Action::Terminate(
                    v.into_iter()
                        .take(n.min(current - self.min) as usize)
                        .map(|s| s.id.clone())
                        .collect(),
                )
            }
            _ => Action::Hold,
        }
    }
}

/// Never scales: no autoscaling, and the static fleet.
struct Hold;

impl Autoscaler for Hold {
    fn interval(&self) -> i64 {
        60
    }
    fn act(&mut self, _: Timestamp, _: &FleetObservation, _: &CapLedger) -> Action {
        Action::Hold
    }
}

/// One sample of a serving host: time, busy ratio, load per CPU, and the bridge's level with its
/// last change (the level before, when).
#[derive(Clone, Copy)]
struct Sampled {
    t: i64,
    busy: f64,
    load: f64,
    accesses: u64,
    level: Level,
}

/// The bridge's level every host serves at, and its last change (the level before, when).
type Level = (u8, Option<(u8, i64)>);

/// A serving host's load and samples: what its sampler would report.
#[derive(Default)]
struct Meter {
    load: f64,
    /// Requests served since it went into service.
    accesses: f64,
    /// Every sampling interval while serving.
    samples: VecDeque<Sampled>,
    serving: bool,
}

impl Meter {
    /// The newest sample taken at or before `t`.
    fn metrics_at(&self, t: i64, start: i64) -> Option<HostMetrics> {
        self.samples
            .iter()
            .rev()
            .find(|s| s.t <= t)
            .map(|s| HostMetrics {
                at: ts(start + s.t),
                load_per_cpu: Some(s.load),
                apache_busy_ratio: Some(s.busy),
                memory_used_ratio: Some(0.3),
                bridge_level: s.level.0,
                bridge_change: s.level.1.map(|(from, at)| crate::model::LevelChange {
                    from,
                    at: ts(start + at),
                }),
                total_accesses: Some(s.accesses),
            })
    }

    /// Takes a sample at `t`, dropping those older than `keep` seconds before it.
    fn sample(&mut self, t: i64, busy: f64, keep: i64, level: Level) {
        let (load, accesses) = (self.load, self.accesses as u64);
        self.samples.push_back(Sampled {
            t,
            busy,
            load,
            accesses,
            level,
        });
        while self.samples.front().is_some_and(|s| s.t < t - keep) {
            self.samples.pop_front();
        }
    }
}

fn ts(s: i64) -> Timestamp {
    Timestamp::from_second(s).unwrap_or(Timestamp::UNIX_EPOCH)
}

fn ceil_u32(x: f64) -> u32 {
    (x - 1e-9).ceil().max(0.0).min(f64::from(u32::MAX)) as u32
}

/// Requests a second a host serves at full cost and utilization 1 (Apache's `Total Accesses`
/// grows by this times its full-cost utilization).
const REQUESTS_PER_HOST: f64 = 100.0;

/// The kernel's 1-minute load average decay per 5-second update.
const LOAD_DECAY: f64 = 0.920_044_414_629_323; // exp(-5/60)

/// Whether this policy's slaves go through the agent's real executor and lifecycle
/// ([`fleet::RealFleet`]): every autoscaler that decides. The references (none, static, the
/// oracle) use the ideal model ([`fleet::ModelFleet`]).
pub fn runs_the_lifecycle(policy: Kind) -> bool {
    matches!(
        policy,
        Kind::Agent | Kind::Bridged | Kind::Hpa | Kind::AwsSimple
    )
}

/// Runs one autoscaler over the trace.
pub fn run(
    cfg: &Config,
    trace: &Trace,
    model: &Model,
    policy: Kind,
    capped: bool,
    series_step: i64,
) -> Outcome {
    let start = trace.start.as_second();
    let ledger = run_ledger(cfg, capped);
    let p = &cfg.policy;
    let mut scaler = scaler_for(policy, p, &cfg.bridge, trace, model, &ledger);
    let interval = scaler.interval();
    let decides = !matches!(policy, Kind::None | Kind::Static);
    // The executor's tick: the daemon steps its actuator every evaluation interval.
    let every = p.evaluation_interval.get().as_secs().max(1) as i64;
    // The warm pool, as configured, for the agent's runs only.
    let pool = if policy.is_agent() {
        cfg.fleet.warm_pool
    } else {
        0
    };
    let (mut fleet, trouble) = fleet_for(cfg, model, policy, capped, pool, trace, ledger);
    let end = trace.duration_secs();
    let mut state = Stepper::new(cfg, trace, model, policy, series_step);
    for t in 0..=end {
        let now = ts(start + t);
        let deciding = decides && t % interval == 0;
        for lead in fleet.advance(t, deciding || t % every == 0) {
            // As the daemon does: the lead time of launches only (a start is faster).
            scaler.served(lead);
        }
        let up = fleet.serving(t);
        state.track(&up);
        let load = state.cursor.at(t as f64) / model.host_capacity;
        let serving = 1 + up.len() as u32;
        let cost = state.bridge.cost(state.level);
        state.meter(
            t,
            model.utilization_at(load, serving, cost),
            model.utilization(load, serving),
        );
        // Accounting.
        state.account(t, now, load, serving, &*fleet);
        if t % 3600 == 0 {
            fleet.tidy(t);
        }
        // Decide and act.
        if deciding {
            state.decide_and_act(t, now, &mut *fleet, &mut *scaler);
            // The level the decision set is in force from the next second, on every host.
            let level = scaler.bridge_level();
            if state.level == 0 && level > 0 {
                state.acc.episodes += 1;
            }
            if level != state.level {
                state.level_since = Some((state.level, t + 1));
            }
            state.level = level;
        }
    }
    let Stepper {
        mut m, series, acc, ..
    } = state;
    acc.score(&mut m, end);
    let (slaves, warm_starts) = fleet.runs();
    let mut launched_at: Vec<i64> = slaves.iter().map(|s| s.launched).collect();
    launched_at.sort_unstable();
    m.launches = slaves.len() as u32;
    m.warm_starts = warm_starts;
    bill(&mut m, &slaves, end);
    check_cap(&mut m, &slaves, cfg, start, end);
    Outcome {
        policy,
        capped,
        metrics: m,
        series,
        launched_at,
        trouble: trouble.or_else(|| fleet.trouble()),
    }
}

/// The cap ledger of a run: the config's cap when `capped`, no limit otherwise (and none in
/// UTC when the time zone is unknown).
fn run_ledger(cfg: &Config, capped: bool) -> CapLedger {
    let tz = &cfg.cap.time_zone;
    (if capped {
        CapLedger::new(tz, cfg.cap.daily_limit, Some(cfg.cap.daily_instance_hours))
    } else {
        CapLedger::new(tz, u32::MAX, None)
    })
    .unwrap_or_else(|_| CapLedger::new("UTC", u32::MAX, None).expect("UTC exists"))
}

/// The autoscaler of `policy`, on the config's `[policy]` (`p`).
fn scaler_for(
    policy: Kind,
    p: &PolicyConfig,
    bridge: &BridgeConfig,
    trace: &Trace,
    model: &Model,
    ledger: &CapLedger,
) -> Box<dyn Autoscaler> {
    match policy {
        Kind::Agent | Kind::Bridged => Box::new(AgentScaler {
            cfg: p.clone(),
            bridge: BridgeConfig {
                enabled: policy == Kind::Bridged,
                ..bridge.clone()
            },
            hist: History::new(),
        }),
        Kind::Hpa => Box::new(HpaScaler {
            params: hpa::HpaParams::defaults(1 + p.min_slaves, 1 + p.max_slaves),
            hpa: hpa::Hpa::new(),
            signals: p.signals.iter().map(|&s| (s, p.targets.get(s))).collect(),
            stale_after: p.stale_after.get().as_secs() as i64,
        }),
        Kind::AwsSimple => Box::new(SimpleScaler {
            params: simple::SimpleParams::defaults(p.scale_out.threshold, p.scale_in.threshold),
            state: simple::SimpleScaling::new(),
            signals: p.signals.clone(),
            min: p.min_slaves,
            max: p.max_slaves,
        }),
        Kind::None | Kind::Static => Box::new(Hold),
        Kind::Oracle => Box::new(oracle::Oracle::new(trace, model, ledger, p.max_slaves)),
    }
}

/// The fleet a run scales, with why the agent's executor could not start if it could not.
fn fleet_for(
    cfg: &Config,
    model: &Model,
    policy: Kind,
    capped: bool,
    pool: u32,
    trace: &Trace,
    ledger: CapLedger,
) -> (Box<dyn fleet::Fleet>, Option<String>) {
    let start = trace.start.as_second();
    let p = &cfg.policy;
    // An executor that cannot start (a time zone the ledger does not know, an adoption that
    // failed) is said in the run's `trouble`, and the ideal model runs in its place.
    let mut trouble = None;
    let fleet: Box<dyn fleet::Fleet> = if runs_the_lifecycle(policy) {
        match fleet::RealFleet::new(cfg, model, capped, pool, trace.start, p.min_slaves) {
            Ok(f) => Box::new(f),
            Err(e) => {
                trouble = Some(format!(
                    "the agent's executor could not start ({e}); this run used the ideal fleet \
                     model instead"
                ));
                Box::new(fleet::ModelFleet::new(
                    ledger,
                    model,
                    start,
                    0,
                    p.min_slaves,
                ))
            }
        }
    } else if policy == Kind::Static {
        Box::new(fleet::ModelFleet::new(
            ledger,
            model,
            start,
            model.static_slaves,
            0,
        ))
    } else {
        Box::new(fleet::ModelFleet::new(
            ledger,
            model,
            start,
            0,
            p.min_slaves,
        ))
    };
    (fleet, trouble)
}

/// One run's state as it steps through the trace: what the hosts' samplers would report and
/// the running sums the metrics are made of.
struct Stepper<'a> {
    model: &'a Model,
    policy: Kind,
    start: i64,
    max_slaves: u32,
    keep_samples: i64,
    /// Planned bursts, applied to the agent's run as in the daemon, and their time zone.
    plans: Vec<crate::schedule::Plan>,
    sched_tz: Option<jiff::tz::TimeZone>,
    cursor: trace::Cursor<'a>,
    master: Meter,
    meters: BTreeMap<String, Meter>,
    m: Metrics,
    series: Series,
    acc: Accounts,
    /// The bridge's level every serving host applies (set by the agent's decision, in force
    /// from the next second), and what the spread part costs at it.
    level: u8,
    /// The level's last change: the level before, and when (seconds from the start).
    level_since: Option<(u8, i64)>,
    bridge: BridgeConfig,
}

/// Running sums of under- and over-provisioning and of the adaptations of demand and supply.
#[derive(Default)]
struct Accounts {
    sum_under: f64,
    sum_over: f64,
    t_under: u64,
    t_over: u64,
    last_demand: Option<u32>,
    last_supply: Option<u32>,
    demand_changes: u64,
    supply_changes: u64,
    /// The bridge: offered load in all and served degraded, seconds degraded and needlessly so.
    load_sum: f64,
    load_degraded: f64,
    t_degraded: u64,
    t_needless: u64,
    episodes: u32,
}

impl<'a> Stepper<'a> {
    /// A run at the trace's start, with no host metered yet.
    fn new(
        cfg: &Config,
        trace: &'a Trace,
        model: &'a Model,
        policy: Kind,
        series_step: i64,
    ) -> Self {
        // Planned bursts apply to the agent's run, as in the daemon.
        let plans = crate::schedule::plans(cfg);
        let sched_tz = jiff::tz::TimeZone::get(&cfg.cap.time_zone).ok();
        let cursor = trace.cursor();
        Stepper {
            model,
            policy,
            start: trace.start.as_second(),
            max_slaves: cfg.policy.max_slaves,
            keep_samples: model.metrics_delay + 2 * model.sampling_interval + 5,
            plans,
            sched_tz,
            cursor,
            master: Meter::default(),
            meters: BTreeMap::new(),
            m: Metrics::default(),
            series: Series {
                step: series_step.max(1),
                ..Series::default()
            },
            acc: Accounts::default(),
            level: 0,
            level_since: None,
            bridge: cfg.bridge.clone(),
        }
    }

    /// Marks which slaves serve (`up`): a slave out of service stops being metered, one in
    /// service again starts afresh.
    fn track(&mut self, up: &[String]) {
        for (id, meter) in self.meters.iter_mut() {
            if !up.contains(id) {
                meter.serving = false;
            }
        }
        for id in up {
            let meter = self.meters.entry(id.clone()).or_default();
            if !meter.serving {
                // In service (again, out of the warm pool): a new run, no old load or samples.
                *meter = Meter {
                    serving: true,
                    ..Meter::default()
                };
            }
        }
    }

    /// The hosts' load averages (every 5 s) and samples (every sampling interval) under `u`.
    fn meter(&mut self, t: i64, u: HostLoad, full: HostLoad) {
        // Requests served this second: a level makes them cheaper, never fewer.
        self.master.accesses += REQUESTS_PER_HOST * full.master;
        for h in self.meters.values_mut().filter(|h| h.serving) {
            h.accesses += REQUESTS_PER_HOST * full.slave;
        }
        if t % 5 == 0 {
            self.master.load = self.master.load * LOAD_DECAY + u.master * (1.0 - LOAD_DECAY);
            for h in self.meters.values_mut().filter(|h| h.serving) {
                h.load = h.load * LOAD_DECAY + u.slave * (1.0 - LOAD_DECAY);
            }
            self.m.peak_load_per_cpu = self.m.peak_load_per_cpu.max(self.master.load);
        }
        if t % self.model.sampling_interval == 0 {
            let keep = self.keep_samples;
            let level = (self.level, self.level_since);
            self.master.sample(t, u.master.min(1.0), keep, level);
            for h in self.meters.values_mut().filter(|h| h.serving) {
                h.sample(t, u.slave.min(1.0), keep, level);
            }
        }
    }

    /// Accounting: one second's demand against supply, the peak of slaves and the series.
    fn account(
        &mut self,
        t: i64,
        now: Timestamp,
        load: f64,
        serving: u32,
        fleet: &dyn fleet::Fleet,
    ) {
        let cost = self.bridge.cost(self.level);
        let demand = self.model.demand_at(load, cost, self.max_slaves);
        let a = &mut self.acc;
        a.load_sum += load;
        if self.level > 0 {
            a.load_degraded += (1.0 - self.model.share()) * load;
            a.t_degraded += 1;
            // Needless: every serving host (the master, the hottest) would have stayed at or
            // under the SLO at full cost.
            if self.model.utilization(load, serving).master <= self.model.slo_utilization {
                a.t_needless += 1;
            }
        }
        if demand > serving {
            a.sum_under += f64::from(demand - serving) / f64::from(demand);
            a.t_under += 1;
        } else if serving > demand {
            a.sum_over += f64::from(serving - demand) / f64::from(demand);
            a.t_over += 1;
        }
        if a.last_demand.is_some_and(|d| d != demand) {
            a.demand_changes += 1;
        }
        if a.last_supply.is_some_and(|s| s != serving) {
            a.supply_changes += 1;
        }
        a.last_demand = Some(demand);
        a.last_supply = Some(serving);
        self.m.peak_slaves = self.m.peak_slaves.max(fleet.alive());
        let series = &mut self.series;
        if t % series.step == 0 {
            series.offered.push(load);
            series.demand.push(demand);
            series.supply.push(serving);
            series.cap_used.push(fleet.ledger().used(now));
            series.bridge.push(self.level);
        }
    }

    /// Decide and act: the autoscaler sees the fleet as the daemon would, and its action is
    /// carried out.
    fn decide_and_act(
        &self,
        t: i64,
        now: Timestamp,
        fleet: &mut dyn fleet::Fleet,
        scaler: &mut dyn Autoscaler,
    ) {
        let model = self.model;
        let start = self.start;
        let seen = fleet.observe(t);
        let obs = FleetObservation {
            master: self.master.metrics_at(t, start),
            slaves: seen
                .slaves
                .into_iter()
                .map(|mut s| {
                    s.metrics = self
                        .meters
                        .get(&s.id)
                        .and_then(|h| h.metrics_at(t - model.metrics_delay, start));
                    s
                })
                .collect(),
            no_capacity_until: seen.no_capacity_until,
            launch_refused: seen.launch_refused,
            sync_broken: seen.sync_broken,
            content_source_missing: seen.content_source_missing,
            evidence: Default::default(),
            probe_latency: None,
            scheduled: self
                .policy
                .is_agent()
                .then(|| {
                    self.sched_tz
                        .as_ref()
                        .and_then(|tz| crate::schedule::active(&self.plans, tz, now))
                })
                .flatten(),
            warm_room: seen.warm_room,
            drain_secs: model.draining,
            bridge_manual: None,
        };
        let action = scaler.act(now, &obs, fleet.ledger());
        // As the daemon: nothing is carried out on a fleet the step could not observe.
        if seen.observed {
            fleet.act(action, t);
        }
    }
}

impl Accounts {
    /// The accuracy, timeshare and jitter metrics of a run of `end` + 1 seconds.
    fn score(&self, m: &mut Metrics, end: i64) {
        let seconds = (end + 1) as f64;
        m.theta_u = 100.0 * self.sum_under / seconds;
        m.theta_o = 100.0 * self.sum_over / seconds;
        m.tau_u = 100.0 * self.t_under as f64 / seconds;
        m.tau_o = 100.0 * self.t_over as f64 / seconds;
        m.jitter_per_hour =
            (self.supply_changes as f64 - self.demand_changes as f64) / (seconds / 3600.0);
        if self.load_sum > 0.0 {
            m.theta_d = 100.0 * self.load_degraded / self.load_sum;
        }
        m.tau_d = 100.0 * self.t_degraded as f64 / seconds;
        if self.t_degraded > 0 {
            m.needless_d = 100.0 * self.t_needless as f64 / self.t_degraded as f64;
        }
        m.bridge_episodes = self.episodes;
    }
}

/// The slaves' running and billed hours.
fn bill(m: &mut Metrics, slaves: &[fleet::Runs], end: i64) {
    // Each run bills at least a minute (EC2's per-second billing after a start), and per
    // started hour in the old model; a stopped slave's volume is not counted.
    for s in slaves {
        for &(from, to) in &s.runs {
            let ran = (to.unwrap_or(end + 1) - from).max(0);
            m.instance_hours += ran.max(60) as f64 / 3600.0;
            m.billed_hours += ((ran + 3599) / 3600).max(1) as f64;
        }
    }
}

/// The cap, checked independently of the ledger: distinct slaves alive on each local day.
fn check_cap(m: &mut Metrics, slaves: &[fleet::Runs], cfg: &Config, start: i64, end: i64) {
    let days = CapLedger::new(&cfg.cap.time_zone, cfg.cap.daily_limit, None).ok();
    if let Some(days) = days {
        let mut day_start = days.day_bounds(ts(start)).1;
        while day_start.as_second() <= start + end {
            let (_, ds, de) = days.day_bounds(day_start);
            let (ds, de) = (ds.as_second() - start, de.as_second() - start);
            // Distinct slaves with a run touching the day (a stopped one does not run).
            let alive = slaves
                .iter()
                .filter(|s| {
                    s.runs
                        .iter()
                        .any(|&(from, to)| from < de && to.is_none_or(|e| e > ds))
                })
                .count() as u32;
            let launched = slaves
                .iter()
                .filter(|s| s.launched >= ds && s.launched < de)
                .count() as u32;
            m.max_instances_per_day = m.max_instances_per_day.max(alive);
            m.max_launches_per_day = m.max_launches_per_day.max(launched);
            if alive > cfg.cap.daily_limit {
                m.cap_violations += 1;
            }
            day_start = ts(start + de);
        }
    }
}

/// The policy η is measured against unless told otherwise: Kubernetes' HPA, the autoscaler a
/// reader is most likely to know, and one that both under- and over-provisions.
pub const DEFAULT_REFERENCE: Kind = Kind::Hpa;

/// Every θU, θO, τU and τO enters η as at least this (percentage points), in the reference's
/// value and the run's alike: a metric at 0 would make η infinite (or 0) however the other three
/// compare. A tenth of a point is small next to how far the runs on the shipped traces are apart
/// (tenths to tens of points), and it bounds what being perfect on one metric is worth: a run at
/// 0 where the reference is at 1 gains a factor of 10 on that metric, not an infinite one.
pub const SPEEDUP_FLOOR: f64 = 0.1;

/// Every policy with and without the cap, plus the oracle and no autoscaling, with elastic
/// speedups against [`DEFAULT_REFERENCE`].
pub fn run_all(cfg: &Config, trace: &Trace, model: &Model, series_step: i64) -> Vec<Outcome> {
    run_all_with(
        cfg,
        trace,
        model,
        DEFAULT_REFERENCE,
        series_step,
        &mut |_, _, _| {},
    )
}

/// [`run_all`] with η against `reference` (its capped run), telling `progress(done, of, label)`
/// after each run.
pub fn run_all_with(
    cfg: &Config,
    trace: &Trace,
    model: &Model,
    reference: Kind,
    series_step: i64,
    progress: &mut dyn FnMut(usize, usize, &str),
) -> Vec<Outcome> {
    let mut runs: Vec<(Kind, bool)> = Vec::new();
    let mut kinds = vec![Kind::Agent, Kind::Hpa, Kind::AwsSimple, Kind::Static];
    if cfg.bridge.enabled {
        kinds.insert(1, Kind::Bridged);
    }
    for kind in kinds {
        for capped in [true, false] {
            runs.push((kind, capped));
        }
    }
    runs.push((Kind::Oracle, true));
    runs.push((Kind::None, true));
    let mut out = Vec::new();
    for (i, (kind, capped)) in runs.iter().enumerate() {
        let o = run(cfg, trace, model, *kind, *capped, series_step);
        progress(i + 1, runs.len(), &o.label());
        out.push(o);
    }
    let reference = reference_run(&out, reference)
        .map(|o| o.metrics.clone())
        .unwrap_or_default();
    let best = out
        .iter()
        .find(|o| o.policy == Kind::Oracle)
        .map_or(0.0, |o| o.metrics.theta_u);
    for o in &mut out {
        o.metrics.elastic_speedup = speedup(&reference, &o.metrics);
        o.metrics.theta_u_gap = o.metrics.theta_u - best;
    }
    out
}

/// The run η is measured against: the reference policy's run with the cap on (the product's
/// setting; every policy has one).
pub fn reference_run(outcomes: &[Outcome], reference: Kind) -> Option<&Outcome> {
    outcomes.iter().find(|o| o.policy == reference && o.capped)
}

/// The elastic speedup of `m` against `reference`, as the SPEC Research Group defines it
/// (Herbst et al., "Quantifying Cloud Performance and Dependability: Taxonomy, Metric Design,
/// and Emerging Challenges", ACM ToMPECS 2018): the geometric mean over the four metrics
/// a ∈ {θU, θO, τU, τO} of a_reference / a_m, so over- and under-provisioning weigh alike.
/// Above 1 the run is better than the reference, below 1 worse; the reference's own is 1.
/// Each metric is floored at [`SPEEDUP_FLOOR`] percentage points, numerator and denominator
/// alike, so η stays finite and a perfect run's is not infinite.
pub fn speedup(reference: &Metrics, m: &Metrics) -> f64 {
    let pairs = [
        (reference.theta_u, m.theta_u),
        (reference.theta_o, m.theta_o),
        (reference.tau_u, m.tau_u),
        (reference.tau_o, m.tau_o),
    ];
    let log_sum: f64 = pairs
        .iter()
        .map(|(r, x)| (r.max(SPEEDUP_FLOOR) / x.max(SPEEDUP_FLOOR)).ln())
        .sum();
    (log_sum / pairs.len() as f64).exp()
}

#[cfg(test)]
mod tests;
