//! The fleets a simulated autoscaler acts on.
//!
//! - [`RealFleet`]: the agent's own executor and lifecycle. Its slaves go through the real
//!   `Actuator` (launch intents, the cap ledger, phases and their deadlines, hooks, registration,
//!   draining, the warm pool), stepped every `policy.evaluation_interval` as the daemon steps it,
//!   in the fault simulation's world of EC2, the ELB and hooks ([`crate::faultsim::world`]) with
//!   fixed times ([`Timing`]) and no faults. Every autoscaler that decides (burst-agent, k8s-hpa,
//!   aws-simple) acts through it, so they differ only in their policy.
//! - [`ModelFleet`]: the fleet model of the references that decide nothing or know the future
//!   (none, static, oracle): a launched slave is pending for `boot_delay`, then syncs and
//!   registers for `sync_time` + `register_delay`, then serves; a scaled-in one stops serving at
//!   once and ends after draining. Its bounds are ideal on purpose: the oracle is the best any
//!   autoscaler could do, not one more thing the lifecycle slows down.

use super::{ts, Action, Model};
use crate::actuator::Actuator;
use crate::cap::CapLedger;
use crate::config::Config;
use crate::faultsim::world::{self, Faults, Shared, SimCloud, SimHooks, Timing, World, MASTER};
use crate::policy::{
    Decision, Explanation, LaunchRefused, SlaveObservation, SlaveState, SyncBroken,
};
use jiff::Timestamp;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// What a fleet says about itself before a decision.
pub(super) struct Observed {
    pub slaves: Vec<SlaveObservation>,
    pub warm_room: u32,
    pub no_capacity_until: Option<Timestamp>,
    pub launch_refused: Option<LaunchRefused>,
    /// The brake on a content sync that keeps failing, as the daemon hands it to the policy.
    pub sync_broken: Option<SyncBroken>,
    pub content_source_missing: Option<String>,
    /// The last step saw the fleet (the daemon acts only on a fleet it observed).
    pub observed: bool,
}

/// One slave's runs, in seconds from the trace's start: when it was launched, and each run
/// (launch or start to stop or termination; open: still running).
pub(super) struct Runs {
    pub launched: i64,
    pub runs: Vec<(i64, Option<i64>)>,
}

pub(super) trait Fleet {
    /// Time passes to `t`; `step`: the executor observes and moves its slaves on (the daemon's
    /// tick). Returns the lead times (launch to in service, s) of launched slaves that went into
    /// service.
    fn advance(&mut self, t: i64, step: bool) -> Vec<i64>;
    /// The slaves serving traffic at `t` (the master aside).
    fn serving(&self, t: i64) -> Vec<String>;
    /// Slaves running (or on their way): what costs money now.
    fn alive(&self) -> u32;
    fn ledger(&self) -> &CapLedger;
    /// Hourly housekeeping (the model's ledger forgets past days).
    fn tidy(&mut self, _t: i64) {}
    /// The slaves, as the policy sees them (no metrics: the caller adds those).
    fn observe(&self, t: i64) -> Observed;
    fn act(&mut self, action: Action, t: i64);
    /// Every slave's runs, and how many starts out of the warm pool there were.
    fn runs(&self) -> (Vec<Runs>, u32);
    /// The first thing that went wrong that a fault-free world never causes.
    fn trouble(&self) -> Option<String> {
        None
    }
}

/// The agent's executor in the simulated world.
pub(super) struct RealFleet {
    world: Shared,
    actuator: Actuator<burst_edge::fenced::Fenced<SimCloud>, SimHooks>,
    rt: tokio::runtime::Runtime,
    start: i64,
    /// The last step went through.
    observed: bool,
    /// What went wrong that a fault-free world should never see (a step or an apply that
    /// failed): the first.
    trouble: Option<String>,
}

impl RealFleet {
    /// The actuator under `cfg` (hooks run as the world's; `capped` off: no daily limit), with
    /// `warm_pool` stopped slaves kept, opened at the trace's start and adopted, then
    /// `initial` slaves launched.
    pub fn new(
        cfg: &Config,
        model: &Model,
        capped: bool,
        warm_pool: u32,
        start: Timestamp,
        initial: u32,
    ) -> Result<Self, String> {
        let mut c = cfg.clone();
        c.agent.dry_run = false;
        c.agent.state_dir = PathBuf::from("/nonexistent/burst-agent-simulate");
        c.elb.name = world::OWNER.into();
        // The world runs the hooks (in their configured timeouts); nothing of this host is read.
        let h = &mut c.hooks;
        for hook in std::iter::once(&mut h.pre_register).chain(
            [
                &mut h.content_sync,
                &mut h.content_check,
                &mut h.pre_deregister,
                &mut h.post_terminate,
            ]
            .into_iter()
            .flatten(),
        ) {
            hook.argv = vec!["true".into()];
        }
        h.content_source = None;
        h.content_sentinel = None;
        if !capped {
            c.cap.daily_limit = u32::MAX;
            c.cap.daily_instance_hours = 0.0;
        }
        c.fleet.warm_pool = warm_pool;
        c.elb.draining_timeout = crate::config::Dur::secs(model.draining.max(0) as u64);
        let mut w = World::new(
            ChaCha8Rng::seed_from_u64(0),
            Faults {
                rate: 0.0,
                brownout: None,
                hook_fail: 0.0,
                hook_hang: 0.0,
                boot: (model.boot_delay, model.boot_delay),
                sick: 0.0,
            },
            start,
        );
        w.faults_on = false;
        // No decoys here (the fault simulation's master, another install's slave, a stray):
        // the figures must not depend on how ownership treats them.
        w.instances.clear();
        w.members.clear();
        // The policy's figures, not the shared table's: no table (the lease is this agent's).
        w.table_on = false;
        w.timing = Some(Timing {
            boot: model.boot_delay,
            start: model.start_delay,
            sync: model.sync_time,
            resync: model.resync_time,
            in_service: model.register_delay,
        });
        let world = Shared(Arc::new(Mutex::new(w)));
        let mut actuator = world::actuator(&world, &c, start, 0).map_err(|e| e.to_string())?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(|e| format!("could not start a runtime: {e}"))?;
        let adopted = rt
            .block_on(actuator.adopt(start))
            .map_err(|e| format!("adoption: {e}"))?;
        if let Some(e) = adopted.errors.first() {
            return Err(format!("adoption: {e}"));
        }
        // A fresh state: nothing launched today (the daemon reads CloudWatch's copy).
        actuator.cap_read_back(Ok(None), start);
        let mut f = RealFleet {
            world,
            actuator,
            rt,
            start: start.as_second(),
            observed: true,
            trouble: None,
        };
        if initial > 0 {
            f.act(Action::Launch(initial), 0);
        }
        Ok(f)
    }

    fn now(&self, t: i64) -> Timestamp {
        ts(self.start + t)
    }
}

impl Fleet for RealFleet {
    fn advance(&mut self, t: i64, step: bool) -> Vec<i64> {
        let now = self.now(t);
        self.world.w().advance(now);
        if !step {
            return Vec::new();
        }
        let stepped = self.rt.block_on(self.actuator.step(now));
        self.observed = stepped.is_ok();
        match stepped {
            Ok(r) => r
                .in_service
                .iter()
                .filter_map(|id| self.actuator.slave(id))
                // As the daemon: only a slave seen from its launch (not one started out of the
                // warm pool, whose first sight is its start).
                .filter(|s| s.first_seen.as_second() - s.launched_at.as_second() <= 60)
                .map(|s| now.as_second() - s.launched_at.as_second())
                .collect(),
            Err(e) => {
                self.trouble
                    .get_or_insert_with(|| format!("step at {t}s: {e}"));
                Vec::new()
            }
        }
    }

    fn serving(&self, t: i64) -> Vec<String> {
        let now = self.now(t);
        let w = self.world.w();
        w.members
            .keys()
            .filter(|id| *id != MASTER && w.healthy(id, now))
            .cloned()
            .collect()
    }

    fn alive(&self) -> u32 {
        let w = self.world.w();
        w.instances
            .values()
            .filter(|i| i.ours && i.runs.last().is_some_and(|r| r.1.is_none()))
            .count() as u32
    }

    fn ledger(&self) -> &CapLedger {
        self.actuator.ledger()
    }

    fn observe(&self, t: i64) -> Observed {
        let now = self.now(t);
        let a = &self.actuator;
        Observed {
            slaves: a.observation(now),
            warm_room: a.warm_room(),
            no_capacity_until: a.no_capacity_until(now),
            launch_refused: a.launch_refused(now),
            // As the daemon's decide() builds it.
            sync_broken: a.sync_broken().map(|t| SyncBroken {
                cause: t.cause.clone(),
                trial: a.brake_gate(now) == crate::actuator::brake::Gate::Trial,
                trial_in_secs: a
                    .next_trial(now)
                    .map_or(-1, |n| (n.as_second() - now.as_second()).max(0)),
            }),
            content_source_missing: a.content_source_missing().map(str::to_string),
            observed: self.observed,
        }
    }

    fn act(&mut self, action: Action, t: i64) {
        let now = self.now(t);
        // The executor reads only the count or the victims (its ledger decides what the cap
        // allows).
        let why = Explanation::bare(self.actuator.ledger().status(now));
        let d = match action {
            Action::Hold => Decision::Hold { why },
            Action::Launch(count) => Decision::ScaleOut { count, why },
            Action::Terminate(instances) => Decision::ScaleIn { instances, why },
        };
        let r = self.rt.block_on(self.actuator.apply(&d, now));
        if let Some(e) = r.errors.first() {
            self.trouble
                .get_or_insert_with(|| format!("apply at {t}s: {e}"));
        }
    }

    fn runs(&self) -> (Vec<Runs>, u32) {
        let w = self.world.w();
        let rel = |at: Timestamp| at.as_second() - self.start;
        let mut starts = 0;
        let runs = w
            .instances
            .values()
            .filter(|i| i.ours)
            .map(|i| {
                starts += i.runs.len().saturating_sub(1) as u32;
                Runs {
                    launched: rel(i.launched_at),
                    runs: i
                        .runs
                        .iter()
                        .map(|&(from, to)| (rel(from), to.map(rel)))
                        .collect(),
                }
            })
            .collect();
        (runs, starts)
    }

    fn trouble(&self) -> Option<String> {
        self.trouble.clone()
    }
}

/// A slave of the model fleet.
struct Host {
    id: String,
    launched: i64,
    /// Launch (or the trace's start for a planned slave) to termination.
    ended: Option<i64>,
    serving_from: i64,
    running_from: i64,
    drain_until: Option<i64>,
}

impl Host {
    fn state(&self, t: i64) -> SlaveState {
        if self.drain_until.is_some() {
            SlaveState::Draining
        } else if t < self.running_from {
            SlaveState::Pending
        } else if t < self.serving_from {
            SlaveState::Syncing
        } else {
            SlaveState::InService
        }
    }
    fn serving(&self, t: i64) -> bool {
        self.ended.is_none() && self.drain_until.is_none() && t >= self.serving_from
    }
}

/// The ideal fleet of the references.
pub(super) struct ModelFleet {
    slaves: Vec<Host>,
    ledger: CapLedger,
    model: Model,
    start: i64,
}

impl ModelFleet {
    /// `planned` slaves in service from the start (the static fleet), or `initial` launched at
    /// the start; as many as `ledger` allows.
    pub fn new(ledger: CapLedger, model: &Model, start: i64, planned: u32, initial: u32) -> Self {
        let mut f = ModelFleet {
            slaves: Vec::new(),
            ledger,
            model: model.clone(),
            start,
        };
        for _ in 0..planned {
            if !f.launch(0, true) {
                break;
            }
        }
        for _ in 0..initial {
            f.launch(0, false);
        }
        f
    }

    /// A planned slave is in service at `t` (it was started ahead of the trace); a launched one
    /// boots, syncs and registers first.
    fn launch(&mut self, t: i64, planned: bool) -> bool {
        let id = format!("i-{:05}", self.slaves.len());
        let now = ts(self.start + t);
        if self.ledger.record_attempt(&id, now).is_err() {
            return false;
        }
        // EC2 answers at once here: the attempt is this instance.
        let _ = self.ledger.bind(&id, &id);
        let m = &self.model;
        let (running_from, serving_from) = if planned {
            (t, t)
        } else {
            (
                t + m.boot_delay,
                t + m.boot_delay + m.sync_time + m.register_delay,
            )
        };
        self.slaves.push(Host {
            id,
            launched: t,
            ended: None,
            running_from,
            serving_from,
            drain_until: None,
        });
        true
    }

    fn end(&mut self, i: usize, t: i64) {
        let now = ts(self.start + t);
        let s = &mut self.slaves[i];
        s.drain_until = None;
        s.ended = Some(t);
        let _ = self.ledger.record_ended(&s.id, now);
    }
}

impl Fleet for ModelFleet {
    fn advance(&mut self, t: i64, _step: bool) -> Vec<i64> {
        for i in 0..self.slaves.len() {
            let s = &self.slaves[i];
            if s.ended.is_none() && s.drain_until.is_some_and(|d| d <= t) {
                self.end(i, t);
            }
        }
        self.slaves
            .iter()
            .filter(|s| s.serving_from == t && s.serving(t))
            .map(|s| t - s.launched)
            .collect()
    }

    fn tidy(&mut self, t: i64) {
        self.ledger.prune(ts(self.start + t));
    }

    fn serving(&self, t: i64) -> Vec<String> {
        self.slaves
            .iter()
            .filter(|s| s.serving(t))
            .map(|s| s.id.clone())
            .collect()
    }

    fn alive(&self) -> u32 {
        self.slaves.iter().filter(|s| s.ended.is_none()).count() as u32
    }

    fn ledger(&self) -> &CapLedger {
        &self.ledger
    }

    fn observe(&self, t: i64) -> Observed {
        Observed {
            slaves: self
                .slaves
                .iter()
                .filter(|s| s.ended.is_none())
                .map(|s| SlaveObservation {
                    id: s.id.clone(),
                    state: s.state(t),
                    launched_at: ts(self.start + s.launched),
                    metrics: None,
                })
                .collect(),
            warm_room: 0,
            no_capacity_until: None,
            launch_refused: None,
            sync_broken: None,
            content_source_missing: None,
            observed: true,
        }
    }

    fn act(&mut self, action: Action, t: i64) {
        match action {
            Action::Hold => {}
            Action::Launch(n) => {
                for _ in 0..n {
                    if !self.launch(t, false) {
                        break;
                    }
                }
            }
            Action::Terminate(ids) => {
                for i in 0..self.slaves.len() {
                    let s = &self.slaves[i];
                    if !ids.contains(&s.id) || s.ended.is_some() {
                        continue;
                    }
                    if s.serving(t) {
                        self.slaves[i].drain_until = Some(t + self.model.draining);
                    } else {
                        self.end(i, t);
                    }
                }
            }
        }
    }

    fn runs(&self) -> (Vec<Runs>, u32) {
        let runs = self
            .slaves
            .iter()
            .map(|s| Runs {
                launched: s.launched,
                runs: vec![(s.launched, s.ended)],
            })
            .collect();
        (runs, 0)
    }
}
