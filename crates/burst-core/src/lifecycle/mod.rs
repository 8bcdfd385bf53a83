//! The slave lifecycle as a pure function (kube-rs' reconciler: observe, decide, act,
//! requeue): [`reconcile`] takes the tracked slaves, what EC2 and the ELB said, the hook results
//! and the time, and returns the next slaves and the [`Action`]s to carry out. It calls nothing
//! and reads no clock; the agent's `Actuator::step` is the executor that observes, calls it, and
//! carries the actions out through its `Cloud` and `HookRunner` traits (a dry run logs them
//! instead). [`called`] applies what a call that went through means.
//!
//! Every phase change of a slave happens here, by the one phase table in [`rules`]
//! ([`phase_of`] for what a new instance is, [`deadline`] for how long each phase may last),
//! or in [`called`] for what a call that went through means (a scale-in's release: Releasing;
//! a warm start: Pending). The executor only records a slave's birth, with
//! [`rules::slave_from`] in phase Pending, once EC2 has named the instance it launched.

pub mod brake;
mod choices;
pub mod intents;
pub mod launch;
pub mod rules;

/// Where the lifecycle's lines have always been logged, so an operator's filter on
/// `burst_agent` (`log.level = "warn,burst_agent=debug"`) still shows every phase change.
const LOG_TARGET: &str = "burst_agent::actuator::lifecycle";

pub use choices::{releasable, warm_pick};
pub use rules::*;

use crate::config::Config;
use crate::model::{
    HookKind, InstanceInfo, InstanceState, MemberState, Phase, Slave, TAG_POOLED_SINCE,
};
use jiff::Timestamp;
use std::collections::{BTreeMap, BTreeSet};

/// What the executor does for the lifecycle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Run this hook for the slave (at most one per slave; a running one is replaced).
    StartHook {
        id: String,
        kind: HookKind,
    },
    /// Stop the slave's hook; its result is not wanted any more.
    AbortHook(String),
    /// The instance is gone: its ledger entry ends now, its pinned ssh host key is removed.
    Gone(String),
    /// EC2 says it stopped (the warm pool): its run ends in the ledger.
    Parked(String),
    Register(Vec<String>),
    Deregister(Vec<String>),
    Terminate(Vec<String>),
    /// Drained, into the warm pool: tag `burst-agent:pooled-since`, then StopInstances.
    Stop(Vec<String>),
    /// In the warm pool but its `burst-agent:pooled-since` tag is gone: tag it again.
    Repool(Vec<String>),
    /// Started out of the pool (EC2 says so) but still tagged as pooled or draining: untag.
    Untag(Vec<String>),
    /// Still stopped long after its StartInstances: it never started (back in the pool; the
    /// executor withdraws the start from the ledger).
    Unstarted(String),
}

/// What the lifecycle sees of the cloud this tick (only instances that are this agent's).
pub struct Observed<'a> {
    pub instances: &'a [InstanceInfo],
    pub members: &'a BTreeMap<String, MemberState>,
    /// Whether `members` is the ELB's answer. `false`: it could not be read this tick, so
    /// nothing is registered, released or judged on health, and untracked instances wait.
    pub members_known: bool,
    /// Content sources found missing, empty or without their sentinel this tick, by the hook
    /// that reads them: that hook is not started (an rsync --delete from an empty source wipes
    /// the slave).
    pub sources: &'a Sources,
}

/// Which sync hooks' content source is unusable now, and why.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sources {
    pub pre_register: Option<String>,
    pub content_sync: Option<String>,
}

impl Sources {
    pub fn ok(&self, kind: HookKind) -> bool {
        match kind {
            HookKind::PreRegister => self.pre_register.is_none(),
            HookKind::ContentSync => self.content_sync.is_none(),
            _ => true,
        }
    }

    /// The first problem, for the policy and `status`.
    pub fn problem(&self) -> Option<&str> {
        self.pre_register
            .as_deref()
            .or(self.content_sync.as_deref())
    }
}

/// Hook results by slave: the hook's kind and its result.
pub type Finished = BTreeMap<String, (HookKind, Result<(), String>)>;

/// The next state and what to do.
#[derive(Debug, Default)]
pub struct Plan {
    pub slaves: BTreeMap<String, Slave>,
    pub actions: Vec<Action>,
    /// Instances of ours that were not tracked, now adopted.
    pub adopted: Vec<String>,
    /// Slaves that became InService.
    pub in_service: Vec<String>,
    /// What went wrong, one line each, for the log and `status`.
    pub errors: Vec<String>,
    /// Slaves with a hook under way once the actions are carried out.
    running: BTreeSet<String>,
}

/// The one way a slave enters a phase: logged with the time it spent in the last one.
pub(crate) fn enter(s: &mut Slave, phase: Phase, now: Timestamp) {
    tracing::info!(target: LOG_TARGET, instance_id = %s.id, from = ?s.phase, to = ?phase,
        secs_in_phase = age(now, s.since), "slave {}: {:?} -> {phase:?}", s.id, s.phase);
    s.phase = phase;
    s.since = now;
}

impl Plan {
    fn set_phase(&mut self, id: &str, phase: Phase, now: Timestamp) {
        if let Some(s) = self.slaves.get_mut(id) {
            enter(s, phase, now);
        }
    }

    fn fail(&mut self, id: &str, why: String) {
        self.errors
            .push(format!("slave {id}: {why}; it will be terminated"));
        if let Some(s) = self.slaves.get_mut(id) {
            s.failure = Some(why);
        }
    }

    /// Starts `kind` for `id` unless its content source is unusable (then the next pass tries
    /// again; the phase's deadline still runs).
    fn start_sync(&mut self, id: &str, kind: HookKind, sources: &Sources) {
        if sources.ok(kind) {
            self.start(id, kind);
        }
    }

    fn start(&mut self, id: &str, kind: HookKind) {
        self.running.insert(id.to_string());
        self.actions.push(Action::StartHook {
            id: id.to_string(),
            kind,
        });
    }

    fn abort(&mut self, id: &str) {
        if self.running.remove(id) {
            self.actions.push(Action::AbortHook(id.to_string()));
        }
    }
}

/// Adopts every live instance of ours that is not tracked yet (launched by a run that crashed,
/// or listed late by EC2), in the phase [`phase_of`] gives it. A stopped one is failed unless
/// it is in the warm pool; one that needs its content starts its sync (not in a dry run).
fn adopt_untracked(plan: &mut Plan, obs: &Observed<'_>, now: Timestamp, cfg: &Config) {
    for i in obs.instances {
        if !alive(i.state) || plan.slaves.contains_key(&i.id) {
            continue;
        }
        // Without the ELB's view an instance is tracked at once (never lost), as one out of
        // the ELB: a running one syncs again and waits, synced, for the ELB. One on its way
        // out waits for the ELB's answer, which says whether to deregister it first.
        if !obs.members_known && i.draining_since.is_some() {
            continue;
        }
        let phase = phase_of(i, obs.members.get(&i.id).copied());
        // Every start re-attaches the slaves this way (state.json keeps the records, not the
        // phases): an operator's restart is no warning.
        tracing::info!(target: LOG_TARGET, instance_id = %i.id, phase = ?phase, ec2_state = ?i.state,
            in_elb = obs.members.contains_key(&i.id),
            "re-attaching slave {} (this install's records name it) as {phase:?}, from what \
             EC2 and the ELB say of it", i.id);
        plan.adopted.push(i.id.clone());
        // A warm slave's age in the pool counts from when it went there.
        let since = match phase {
            Phase::Stopped | Phase::Stopping => i.pooled_since.filter(|t| *t <= now).unwrap_or(now),
            _ => now,
        };
        plan.slaves
            .insert(i.id.clone(), slave_from(i, phase, since, now));
        if stopped(i.state) && !matches!(phase, Phase::Stopped | Phase::Stopping) {
            plan.fail(
                &i.id,
                format!("found stopped without {TAG_POOLED_SINCE}: stopped outside this agent"),
            );
        } else if phase == Phase::Syncing && !cfg.agent.dry_run {
            plan.start_sync(&i.id, HookKind::PreRegister, obs.sources);
        }
    }
}

/// [`adopt_untracked`] alone, for adoption at start (the phase machine runs from the next step).
pub fn adopt(
    slaves: &BTreeMap<String, Slave>,
    obs: &Observed<'_>,
    running: &BTreeSet<String>,
    now: Timestamp,
    cfg: &Config,
) -> Plan {
    let mut plan = Plan {
        slaves: slaves.clone(),
        running: running.clone(),
        ..Plan::default()
    };
    adopt_untracked(&mut plan, obs, now, cfg);
    plan
}

/// One reconcile pass over every slave. `running`: the slaves with a hook under way;
/// `sync_forced`: content sync to every in-service slave now (SIGUSR1).
pub fn reconcile(
    slaves: &BTreeMap<String, Slave>,
    obs: &Observed<'_>,
    finished: &Finished,
    running: &BTreeSet<String>,
    sync_forced: bool,
    now: Timestamp,
    cfg: &Config,
) -> Plan {
    let mut plan = Plan {
        slaves: slaves.clone(),
        running: running.clone(),
        ..Plan::default()
    };
    adopt_untracked(&mut plan, obs, now, cfg);
    let by_id: BTreeMap<&str, &InstanceInfo> =
        obs.instances.iter().map(|i| (i.id.as_str(), i)).collect();
    let members = obs.members;
    let dry = cfg.agent.dry_run;
    let mut to_register = Vec::new();
    let mut to_deregister = Vec::new();
    let mut to_terminate = Vec::new();
    let mut to_stop = Vec::new();
    let mut to_repool = Vec::new();
    let mut to_untag = Vec::new();
    // The warm pool: its room, and the oldest stopped slaves over its size (it was made
    // smaller), which are terminated.
    let mut pooled: Vec<(Timestamp, String)> = plan
        .slaves
        .values()
        .filter(|s| matches!(s.phase, Phase::Stopping | Phase::Stopped) && s.failure.is_none())
        .map(|s| (s.since, s.id.clone()))
        .collect();
    pooled.sort();
    let size = usize::try_from(cfg.fleet.warm_pool).unwrap_or(usize::MAX);
    let mut room = size.saturating_sub(pooled.len());
    let over_size: BTreeSet<String> = pooled
        .iter()
        .take(pooled.len().saturating_sub(size))
        .map(|(_, id)| id.clone())
        .collect();
    let ids: Vec<String> = plan.slaves.keys().cloned().collect();
    for id in ids {
        let info = by_id.get(id.as_str()).copied();
        if let (Some(i), Some(sl)) = (info, plan.slaves.get_mut(&id)) {
            if i.private_ip.is_some() {
                sl.private_ip.clone_from(&i.private_ip);
            }
            if i.private_dns.is_some() {
                sl.private_dns.clone_from(&i.private_dns);
            }
        }
        let Some(s) = plan.slaves.get(&id).cloned() else {
            continue;
        };
        let ec2 = info.map(|i| i.state);
        // Gone or going, whoever did it. EC2 may not list a new instance for a while: only
        // SETTLE_SECS after the agent first tracked it does not being listed mean gone.
        if matches!(
            ec2,
            Some(InstanceState::Terminated | InstanceState::ShuttingDown)
        ) || (ec2.is_none() && age(now, s.first_seen) > SETTLE_SECS)
        {
            if s.phase != Phase::Terminating {
                plan.errors.push(match ec2 {
                    None => format!(
                        "slave {id} is no longer listed by EC2 ({}s after this agent first \
                         tracked it): counted as gone",
                        age(now, s.first_seen)
                    ),
                    Some(state) => format!(
                        "slave {id} is {state:?}: terminated by someone else, or by a \
                         TerminateInstances of this agent's whose answer was lost"
                    ),
                });
                if members.contains_key(&id) {
                    to_deregister.push(id.clone());
                }
            }
            plan.slaves.remove(&id);
            plan.running.remove(&id);
            plan.actions.push(Action::Gone(id.clone()));
            continue;
        }
        // Our StopInstances went through though its answer was lost (tagged, then stopped).
        if s.phase == Phase::Draining
            && ec2.is_some_and(stopped)
            && info.is_some_and(|i| i.pooled_since.is_some())
            && s.failure.is_none()
        {
            plan.set_phase(&id, Phase::Stopping, now);
        }
        let Some(s) = plan.slaves.get(&id).cloned() else {
            continue;
        };
        // Started out of the warm pool: EC2 may list it stopped a little longer; still stopped
        // past that, the start never happened and it goes back to the pool.
        let restarted = s.phase == Phase::Pending && s.restarted_at.is_some();
        let restarting = restarted && s.restarted_at.is_some_and(|t| age(now, t) <= SETTLE_SECS);
        if restarted && !restarting && ec2 == Some(InstanceState::Stopped) && s.failure.is_none() {
            plan.set_phase(&id, Phase::Stopped, now);
            if let Some(sl) = plan.slaves.get_mut(&id) {
                sl.restarted_at = None;
            }
            plan.actions.push(Action::Unstarted(id.clone()));
            continue;
        }
        // Serving or on its way in with a pool or drain tag left from the warm pool: untag.
        let stale_tags = info.is_some_and(|i| {
            i.pooled_since.is_some() || (i.draining_since.is_some() && s.restarted_at.is_some())
        });
        if stale_tags
            && matches!(ec2, Some(InstanceState::Pending | InstanceState::Running))
            && matches!(
                s.phase,
                Phase::Pending
                    | Phase::Syncing
                    | Phase::Synced
                    | Phase::Registering
                    | Phase::InService
            )
        {
            to_untag.push(id.clone());
        }
        if ec2.is_some_and(stopped)
            && s.failure.is_none()
            && !matches!(
                s.phase,
                Phase::Terminating | Phase::Stopping | Phase::Stopped
            )
            && !restarting
        {
            plan.fail(&id, "stopped outside the agent".into());
        }
        let Some(s) = plan.slaves.get(&id).cloned() else {
            continue;
        };
        if s.failure.is_some() && s.phase != Phase::Terminating {
            plan.abort(&id);
            if members.contains_key(&id) {
                to_deregister.push(id.clone());
            }
            to_terminate.push(id.clone());
            continue;
        }
        // The phase table's deadline, by which this slave must have moved on.
        let overdue = deadline(s.phase, cfg).is_some_and(|d| age(now, s.since) > d);
        let over = |what: &str| format!("{what} for more than {}s", age(now, s.since));
        let has_hook = plan.running.contains(&id);
        match s.phase {
            Phase::Pending => {
                if ec2 == Some(InstanceState::Running) {
                    plan.set_phase(&id, Phase::Syncing, now);
                    if !dry {
                        plan.start_sync(&id, HookKind::PreRegister, obs.sources);
                    }
                } else if overdue {
                    plan.fail(&id, format!("not running after {}", cfg.fleet.boot_timeout));
                    to_terminate.push(id.clone());
                }
            }
            Phase::Syncing if overdue && !finished.contains_key(&id) => {
                plan.abort(&id);
                plan.fail(&id, over("content sync under way"));
                to_terminate.push(id.clone());
            }
            Phase::Syncing => match finished.get(&id) {
                // Synced; the slave proves it serves the site before it is registered.
                Some((HookKind::PreRegister, Ok(()))) if cfg.hooks.content_check.is_some() => {
                    // The sync went through (`status`: "synced"); the check decides the rest.
                    if let Some(sl) = plan.slaves.get_mut(&id) {
                        sl.last_sync = Some(now);
                        sl.last_sync_ok = Some(true);
                    }
                    if !dry {
                        plan.start(&id, HookKind::ContentCheck);
                    }
                }
                Some((HookKind::ContentCheck, Err(e))) => {
                    plan.fail(
                        &id,
                        format!(
                            "content check (hooks.content_check) failed after its sync, never \
                             registered: {e}"
                        ),
                    );
                    to_terminate.push(id.clone());
                }
                Some((HookKind::PreRegister | HookKind::ContentCheck, Ok(()))) => {
                    plan.set_phase(&id, Phase::Synced, now);
                    if let Some(sl) = plan.slaves.get_mut(&id) {
                        sl.last_sync = Some(now);
                        sl.last_sync_ok = Some(true);
                    }
                    // Registered once the ELB answers (Synced waits for it).
                    if obs.members_known {
                        to_register.push(id.clone());
                    }
                }
                Some((HookKind::PreRegister, Err(e))) => {
                    plan.fail(
                        &id,
                        format!("content sync (pre_register) failed, never registered: {e}"),
                    );
                    to_terminate.push(id.clone());
                }
                // Adopted mid-sync, or its hook was lost: start it (again).
                _ if !has_hook && !dry => {
                    plan.start_sync(&id, HookKind::PreRegister, obs.sources);
                }
                _ => {}
            },
            // No ELB answer this tick: neither registered nor judged, and its deadline waits
            // too (it counts from the ELB's next answer, not from a time it could not act).
            Phase::Synced | Phase::Registering if !obs.members_known => {
                if let Some(sl) = plan.slaves.get_mut(&id) {
                    sl.since = now;
                }
            }
            Phase::Synced if overdue => {
                plan.fail(&id, over("synced, and the ELB refused every registration,"));
                to_terminate.push(id.clone());
            }
            Phase::Synced => to_register.push(id.clone()),
            Phase::Registering => match members.get(&id) {
                Some(MemberState::InService) => {
                    plan.set_phase(&id, Phase::InService, now);
                    plan.in_service.push(id.clone());
                }
                _ if overdue => {
                    plan.fail(
                        &id,
                        format!(
                            "not InService {} after registration",
                            cfg.elb.register_timeout
                        ),
                    );
                    to_deregister.push(id.clone());
                    to_terminate.push(id.clone());
                }
                None if !dry => to_register.push(id.clone()),
                _ => {}
            },
            Phase::InService => {
                // Health is judged over a window, not by the last reading: once a slave is
                // seen out of InService, its mark clears only after a whole register_timeout of
                // InService readings, so a slave that flaps is failed as one that stays down.
                // Unread this tick: the mark and its recovery stay as they were.
                let healthy = members.get(&id) == Some(&MemberState::InService);
                let window = cfg.elb.register_timeout.whole_secs();
                let (sick_since, well_since) = match (obs.members_known, healthy, s.unhealthy_since)
                {
                    (false, _, t) => (t, s.healthy_since),
                    (true, true, None) => (None, None),
                    (true, true, Some(t)) => {
                        let well = s.healthy_since.unwrap_or(now);
                        if age(now, well) >= window {
                            (None, None)
                        } else {
                            (Some(t), Some(well))
                        }
                    }
                    (true, false, Some(t)) => (Some(t), None),
                    (true, false, None) => {
                        tracing::warn!(target: LOG_TARGET, instance_id = %id, elb = ?members.get(&id),
                            "in-service slave {id} is not InService at the ELB");
                        (Some(now), None)
                    }
                };
                if let Some(sl) = plan.slaves.get_mut(&id) {
                    sl.unhealthy_since = sick_since;
                    sl.healthy_since = well_since;
                }
                if let Some(t) = sick_since
                    .filter(|_| obs.members_known && !healthy)
                    .filter(|t| age(now, *t) > window)
                {
                    plan.abort(&id);
                    plan.fail(
                        &id,
                        format!("the ELB has not called it InService for {}s", age(now, t)),
                    );
                    if members.contains_key(&id) {
                        to_deregister.push(id.clone());
                    }
                    to_terminate.push(id.clone());
                    continue;
                }
                if let Some((HookKind::ContentSync, res)) = finished.get(&id) {
                    if let Some(sl) = plan.slaves.get_mut(&id) {
                        sl.last_sync = Some(now);
                        sl.last_sync_ok = Some(res.is_ok());
                    }
                    match res {
                        Err(e) => plan.errors.push(format!(
                            "periodic content sync to {id} failed (it keeps serving the content \
                             of its last sync): {e}"
                        )),
                        // The slave proves it still serves the site.
                        Ok(()) if cfg.hooks.content_check.is_some() && !dry => {
                            plan.start(&id, HookKind::ContentCheck);
                        }
                        Ok(()) => {}
                    }
                }
                if let Some((HookKind::ContentCheck, Err(e))) = finished.get(&id) {
                    plan.fail(
                        &id,
                        format!(
                            "content check (hooks.content_check) failed after a periodic sync: it \
                             no longer serves the site: {e}"
                        ),
                    );
                    if members.contains_key(&id) {
                        to_deregister.push(id.clone());
                    }
                    to_terminate.push(id.clone());
                    continue;
                }
                let interval = cfg.hooks.content_sync_interval.whole_secs();
                let due = sync_forced || s.last_sync.is_none_or(|t| age(now, t) >= interval);
                let has_hook = plan.running.contains(&id);
                if due && !has_hook && !dry && !finished.contains_key(&id) {
                    plan.start_sync(&id, HookKind::ContentSync, obs.sources);
                }
            }
            // Out of the ELB already (a deregistration whose answer was lost, or someone
            // else's): nothing to call; its drain starts now.
            Phase::Releasing if obs.members_known && !members.contains_key(&id) && !has_hook => {
                plan.set_phase(&id, Phase::Draining, now);
            }
            // The ELB refused every deregistration for as long again: terminate anyway (the
            // ELB stops routing to a terminated instance); never leave it running, and counting
            // against tomorrow's cap, because the ELB is unwell.
            Phase::Releasing
                if deadline(s.phase, cfg).is_some_and(|d| age(now, s.since) > 2 * d) =>
            {
                plan.abort(&id);
                plan.fail(&id, over("the ELB refused to deregister it"));
                to_deregister.push(id.clone());
                to_terminate.push(id.clone());
            }
            // No ELB answer this tick: not deregistered (its deadline still runs, and the arm
            // above terminates it at twice that, ELB or not).
            Phase::Releasing if !obs.members_known => {}
            Phase::Releasing if overdue => {
                plan.abort(&id);
                tracing::warn!(target: LOG_TARGET, instance_id = %id, "{}; deregistering anyway",
                    over("pre_deregister under way"));
                to_deregister.push(id.clone());
            }
            Phase::Releasing => {
                if !has_hook {
                    if let Some((HookKind::PreDeregister, Err(e))) = finished.get(&id) {
                        tracing::warn!(target: LOG_TARGET, instance_id = %id,
                            "pre_deregister hook failed; releasing anyway: {e}");
                    }
                    to_deregister.push(id.clone());
                }
            }
            Phase::Draining => {
                let drained = age(now, s.since) >= cfg.elb.draining_timeout.whole_secs();
                let stuck = age(now, s.since)
                    > cfg.elb.draining_timeout.whole_secs() + cfg.elb.register_timeout.whole_secs();
                if members.contains_key(&id) && !stuck {
                    to_deregister.push(id.clone());
                } else if drained && !stuck && room > 0 && s.ebs_root {
                    // Into the warm pool (while every stop is refused, for as long as the ELB
                    // is given above; then terminated).
                    room -= 1;
                    to_stop.push(id.clone());
                } else if drained {
                    // Drained with no room in the pool; or still listed by the ELB long past
                    // it (every deregistration refused), or never stopped: terminated.
                    to_terminate.push(id.clone());
                }
            }
            Phase::Terminating => {
                if overdue {
                    to_terminate.push(id.clone());
                }
            }
            Phase::Stopping if ec2 == Some(InstanceState::Stopped) => {
                plan.set_phase(&id, Phase::Stopped, now);
                plan.actions.push(Action::Parked(id.clone()));
            }
            Phase::Stopping if overdue => {
                plan.fail(&id, over("stopping"));
                to_terminate.push(id.clone());
            }
            Phase::Stopping => {}
            Phase::Stopped
                if matches!(ec2, Some(InstanceState::Running | InstanceState::Pending)) =>
            {
                plan.fail(
                    &id,
                    "started outside this agent while in the warm pool".into(),
                );
                to_terminate.push(id.clone());
            }
            Phase::Stopped if overdue || over_size.contains(&id) => {
                tracing::info!(target: LOG_TARGET, instance_id = %id, secs_in_pool = age(now, s.since),
                    pool_size = cfg.fleet.warm_pool,
                    "warm slave {id} leaves the pool: {}; terminating",
                    if overdue { "older than fleet.warm_pool_max_age" } else { "over fleet.warm_pool" });
                to_terminate.push(id.clone());
            }
            Phase::Stopped => {
                if info.is_some_and(|i| i.pooled_since.is_none()) {
                    to_repool.push(id.clone());
                }
            }
        }
    }
    for (ids, call) in [
        (
            to_deregister,
            Action::Deregister as fn(Vec<String>) -> Action,
        ),
        (to_register, Action::Register),
        (to_terminate, Action::Terminate),
        (to_stop, Action::Stop),
        (to_repool, Action::Repool),
        (to_untag, Action::Untag),
    ] {
        if !ids.is_empty() {
            plan.actions.push(call(ids));
        }
    }
    plan
}

/// A call the executor made for some slaves, and that went through for `done`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    /// Tagged `burst-agent:draining-since` for a scale-in.
    Release,
    Register,
    Deregister,
    Terminate,
    Stop,
    /// StartInstances for slaves of the warm pool (sent; EC2's listings tell if it started).
    Start,
}

/// The serving slaves that have gone silent: in service for longer than `stale_after_secs` and
/// absent from the fleet's fresh metrics (`reported`, read with that same window). The policy
/// counts such a slave idle for scale-out and at target for scale-in, so the fleet never
/// shrinks for it: its reporter is down, in dry run without a region, or writing to another
/// namespace. A slave just in service (or just adopted) gets the window to report first.
pub fn silent<'a, T>(
    slaves: impl IntoIterator<Item = &'a Slave>,
    reported: &BTreeMap<String, T>,
    now: Timestamp,
    stale_after_secs: i64,
) -> BTreeSet<String> {
    slaves
        .into_iter()
        .filter(|s| s.phase == Phase::InService && age(now, s.since) > stale_after_secs)
        .filter(|s| !reported.contains_key(&s.id))
        .map(|s| s.id.clone())
        .collect()
}

/// What a call that went through means for each slave it named: tagged for release →
/// Releasing, registered → Registering (from Synced), deregistered → Draining (from Releasing),
/// terminated → Terminating (its clock for the next TerminateInstances restarts), stopped →
/// Stopping (from Draining), started out of the pool → Pending, tracked anew from now.
pub fn called(slaves: &mut BTreeMap<String, Slave>, call: Call, done: &[String], now: Timestamp) {
    for id in done {
        let Some(s) = slaves.get_mut(id) else {
            continue;
        };
        let to = match (call, s.phase) {
            (Call::Release, _) => Phase::Releasing,
            (Call::Start, _) => {
                s.restarted_at = Some(now);
                s.first_seen = now;
                Phase::Pending
            }
            (Call::Register, Phase::Synced) => Phase::Registering,
            (Call::Deregister, Phase::Releasing) => Phase::Draining,
            (Call::Terminate, _) => Phase::Terminating,
            (Call::Stop, Phase::Draining) => Phase::Stopping,
            _ => continue,
        };
        enter(s, to, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Dur, Hook};

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_780_000_000 + secs).unwrap()
    }

    fn cfg() -> Config {
        let mut c = Config::default();
        // Off here: the tests of the pool turn it on.
        c.fleet.warm_pool = 0;
        c.fleet.boot_timeout = Dur::secs(600);
        c.elb.register_timeout = Dur::secs(300);
        c.elb.draining_timeout = Dur::secs(60);
        c.hooks.pre_register = Hook {
            argv: vec!["true".into()],
            timeout: Dur::secs(100),
            retries: 1,
            retry_delay: Dur::secs(10),
        };
        c.hooks.pre_deregister = Some(Hook {
            argv: vec!["true".into()],
            timeout: Dur::secs(30),
            retries: 0,
            retry_delay: Dur::secs(1),
        });
        c
    }

    fn instance(id: &str, state: InstanceState) -> InstanceInfo {
        InstanceInfo {
            id: id.into(),
            state,
            private_ip: Some("10.0.0.9".into()),
            private_dns: None,
            launched_at: Some(at(0)),
            ec2_launched_at: Some(at(0)),
            client_token: None,
            intent: Some("bi-000000000001".into()),
            group: Some("default".into()),
            owner: Some("site-elb".into()),
            draining_since: None,
            pooled_since: None,
            ebs_root: true,
            ended_at: None,
            instance_type: None,
            stopped_at: None,
        }
    }

    fn slave(phase: Phase, since: i64) -> BTreeMap<String, Slave> {
        let mut s = slave_from(
            &instance("i-1", InstanceState::Running),
            phase,
            at(since),
            at(0),
        );
        s.last_sync = Some(at(since));
        [("i-1".to_string(), s)].into()
    }

    /// One slave in `phase` since t=0, running, in the ELB as `member` says, `running` its
    /// hook, reconciled at `now`.
    fn plan(phase: Phase, member: Option<MemberState>, hook: bool, now: i64) -> Plan {
        let instances = [instance("i-1", InstanceState::Running)];
        let members: BTreeMap<String, MemberState> =
            member.map(|m| ("i-1".to_string(), m)).into_iter().collect();
        let running: BTreeSet<String> = hook.then(|| "i-1".to_string()).into_iter().collect();
        reconcile(
            &slave(phase, 0),
            &Observed {
                instances: &instances,
                members: &members,
                members_known: true,
                sources: &Sources::default(),
            },
            &Finished::new(),
            &running,
            false,
            at(now),
            &cfg(),
        )
    }

    fn terminates(p: &Plan) -> bool {
        p.actions
            .iter()
            .any(|a| matches!(a, Action::Terminate(ids) if ids == &["i-1"]))
    }

    fn deregisters(p: &Plan) -> bool {
        p.actions
            .iter()
            .any(|a| matches!(a, Action::Deregister(ids) if ids == &["i-1"]))
    }

    /// Each phase's deadline (the table in `actuator::deadline`) and what overstaying it does.
    /// Just inside the deadline nothing of that happens; just past it, it does.
    #[test]
    fn every_phase_is_acted_on_past_its_deadline_and_not_before() {
        use MemberState::*;
        let c = cfg();
        // pre_register: 2 attempts of 100 s and 10 s between, plus 120 s of grace.
        assert_eq!(deadline(Phase::Syncing, &c), Some(330));
        let pending = |now| plan(Phase::Pending, None, false, now);
        // Running but never seen pending here: the instance runs, so it moves on at once.
        assert_eq!(pending(1).slaves["i-1"].phase, Phase::Syncing);
        type Case = (Phase, Option<MemberState>, bool, i64, fn(&Plan) -> bool);
        let cases: [Case; 5] = [
            (Phase::Syncing, None, true, 330, terminates),
            (Phase::Synced, None, false, 300, terminates),
            (
                Phase::Registering,
                Some(OutOfService),
                false,
                300,
                terminates,
            ),
            (Phase::Releasing, Some(InService), true, 150, deregisters),
            (Phase::Terminating, None, false, 300, terminates),
        ];
        for (phase, member, hook, limit, acted) in cases {
            let inside = plan(phase, member, hook, limit);
            let past = plan(phase, member, hook, limit + 1);
            assert!(acted(&past), "{phase:?} past {limit}s: {:?}", past.actions);
            if phase != Phase::Synced {
                // (Synced asks for registration every tick; past its deadline it is failed.)
                assert!(
                    !acted(&inside),
                    "{phase:?} at {limit}s: {:?}",
                    inside.actions
                );
            } else {
                assert!(past.slaves["i-1"].failure.is_some());
                assert!(inside.slaves["i-1"].failure.is_none());
            }
        }
        // Draining ends in termination at draining_timeout.
        assert!(!terminates(&plan(Phase::Draining, None, false, 59)));
        assert!(terminates(&plan(Phase::Draining, None, false, 60)));
        // An ELB that refuses every deregistration does not keep a slave running for ever:
        // Releasing past twice its deadline, Draining past draining + register timeout.
        let releasing = plan(Phase::Releasing, Some(InService), false, 301);
        assert!(terminates(&releasing) && deregisters(&releasing));
        let draining = |t| plan(Phase::Draining, Some(InService), false, t);
        assert!(deregisters(&draining(360)) && !terminates(&draining(360)));
        assert!(terminates(&draining(361)));
    }

    #[test]
    fn a_slave_the_elb_stops_calling_in_service_is_replaced_after_register_timeout() {
        use MemberState::*;
        // First seen OutOfService at t=10: marked, not failed.
        let p = plan(Phase::InService, Some(OutOfService), false, 10);
        let s = &p.slaves["i-1"];
        assert_eq!(s.unhealthy_since, Some(at(10)));
        assert!(!terminates(&p));
        // Still OutOfService past register_timeout from then: failed, deregistered, terminated.
        let mut slaves = p.slaves.clone();
        let instances = [instance("i-1", InstanceState::Running)];
        let members: BTreeMap<String, MemberState> = [("i-1".to_string(), OutOfService)].into();
        let obs = Observed {
            instances: &instances,
            members: &members,
            members_known: true,
            sources: &Sources::default(),
        };
        let later = reconcile(
            &slaves,
            &obs,
            &Finished::new(),
            &BTreeSet::new(),
            false,
            at(311),
            &cfg(),
        );
        assert!(
            terminates(&later) && deregisters(&later),
            "{:?}",
            later.actions
        );
        // InService again before that: the mark stays until a whole register_timeout of
        // InService readings (300 s here), then clears.
        slaves.get_mut("i-1").unwrap().unhealthy_since = Some(at(10));
        let step = |slaves: &BTreeMap<String, Slave>, state: MemberState, t: i64| {
            let members: BTreeMap<String, MemberState> = [("i-1".to_string(), state)].into();
            let obs = Observed {
                instances: &instances,
                members: &members,
                members_known: true,
                sources: &Sources::default(),
            };
            reconcile(
                slaves,
                &obs,
                &Finished::new(),
                &BTreeSet::new(),
                false,
                at(t),
                &cfg(),
            )
        };
        let well = step(&slaves, InService, 200);
        assert_eq!(well.slaves["i-1"].unhealthy_since, Some(at(10)));
        assert!(!terminates(&well));
        let well = step(&well.slaves, InService, 499);
        assert_eq!(well.slaves["i-1"].unhealthy_since, Some(at(10)));
        let cleared = step(&well.slaves, InService, 500);
        assert_eq!(cleared.slaves["i-1"].unhealthy_since, None);
        // Flapping: one InService reading among the bad ones does not reset the clock.
        let flap = step(&slaves, InService, 200);
        let flap = step(&flap.slaves, OutOfService, 250);
        assert!(!terminates(&flap));
        let flap = step(&flap.slaves, InService, 280);
        let flap = step(&flap.slaves, OutOfService, 311);
        assert!(
            terminates(&flap) && deregisters(&flap),
            "a flapping slave is judged from its first bad reading: {:?}",
            flap.actions
        );
    }

    #[test]
    fn without_the_elbs_answer_nothing_is_registered_released_or_judged() {
        use MemberState::*;
        let unknown = |phase: Phase, t: i64| {
            let instances = [instance("i-1", InstanceState::Running)];
            let members = BTreeMap::new();
            reconcile(
                &slave(phase, 0),
                &Observed {
                    instances: &instances,
                    members: &members,
                    members_known: false,
                    sources: &Sources::default(),
                },
                &Finished::new(),
                &BTreeSet::new(),
                false,
                at(t),
                &cfg(),
            )
        };
        for (phase, t) in [
            (Phase::Synced, 1000),
            (Phase::Registering, 1000),
            (Phase::InService, 1000),
            // Within its deadline (at twice that it is terminated, ELB or not).
            (Phase::Releasing, 5),
        ] {
            let p = unknown(phase, t);
            assert!(
                !terminates(&p) && !deregisters(&p),
                "{phase:?}: {:?}",
                p.actions
            );
            assert!(
                !p.actions.iter().any(|a| matches!(a, Action::Register(_))),
                "{phase:?}: {:?}",
                p.actions
            );
            assert_eq!(
                p.slaves["i-1"].phase, phase,
                "{phase:?} moved on unknown health"
            );
        }
        // The same slaves with the ELB's answer (an empty one) do move on: the test can fail.
        assert!(plan(Phase::Synced, None, false, 1)
            .actions
            .iter()
            .any(|a| matches!(a, Action::Register(_))));
        let judged = plan(Phase::InService, Some(OutOfService), false, 1000);
        assert_eq!(judged.slaves["i-1"].unhealthy_since, Some(at(1000)));
        let p = unknown(Phase::InService, 1000);
        assert_eq!(p.slaves["i-1"].unhealthy_since, None);
        assert_eq!(
            plan(Phase::Releasing, None, false, 1).slaves["i-1"].phase,
            Phase::Draining
        );
        // Untracked instances are tracked at once, as out of the ELB (they sync again and
        // wait for it); one on its way out waits for the ELB's view.
        let mut leaving = instance("i-8", InstanceState::Running);
        leaving.draining_since = Some(at(1));
        let instances = [instance("i-9", InstanceState::Running), leaving];
        let members = BTreeMap::new();
        let p = reconcile(
            &BTreeMap::new(),
            &Observed {
                instances: &instances,
                members: &members,
                members_known: false,
                sources: &Sources::default(),
            },
            &Finished::new(),
            &BTreeSet::new(),
            false,
            at(5),
            &cfg(),
        );
        assert_eq!(
            p.slaves.keys().collect::<Vec<_>>(),
            ["i-9"],
            "{:?}",
            p.slaves
        );
        assert_eq!(p.slaves["i-9"].phase, Phase::Syncing);
    }

    /// `slaves`, with i-1 running and in no ELB, reconciled at t=5 with `finished` hook results.
    fn after_hooks(slaves: &BTreeMap<String, Slave>, finished: &Finished, cfg: &Config) -> Plan {
        let instances = [instance("i-1", InstanceState::Running)];
        let members = BTreeMap::new();
        let obs = Observed {
            instances: &instances,
            members: &members,
            members_known: true,
            sources: &Sources::default(),
        };
        reconcile(slaves, &obs, finished, &BTreeSet::new(), false, at(5), cfg)
    }

    #[test]
    fn only_a_successful_content_sync_leads_to_registration() {
        let slaves = slave(Phase::Syncing, 0);
        let run = |kind: HookKind, res: Result<(), String>| {
            let finished: Finished = [("i-1".to_string(), (kind, res))].into();
            after_hooks(&slaves, &finished, &cfg())
        };
        let ok = run(HookKind::PreRegister, Ok(()));
        assert!(ok.actions.contains(&Action::Register(vec!["i-1".into()])));
        let failed = run(HookKind::PreRegister, Err("exit status 23".into()));
        assert!(!failed
            .actions
            .iter()
            .any(|a| matches!(a, Action::Register(_))));
        assert!(terminates(&failed));
        // A content_sync result (not pre_register) does not count as the first sync.
        let other = run(HookKind::ContentSync, Ok(()));
        assert!(!other
            .actions
            .iter()
            .any(|a| matches!(a, Action::Register(_))));
    }

    /// A serving slave is silent once it has been in service longer than the window without a
    /// fresh report; one that reports, one still syncing, and one just in service are not.
    #[test]
    fn a_serving_slave_without_reports_for_the_window_is_silent() {
        let mk = |id: &str, phase: Phase, since: i64| {
            let mut s = slave(phase, since).remove("i-1").unwrap();
            s.id = id.into();
            s
        };
        let slaves = [
            mk("i-quiet", Phase::InService, 0),
            mk("i-talks", Phase::InService, 0),
            mk("i-new", Phase::InService, 900),
            mk("i-syncing", Phase::Syncing, 0),
        ];
        let reported: BTreeMap<String, ()> = [("i-talks".to_string(), ())].into();
        let got = silent(&slaves, &reported, at(1000), 180);
        assert_eq!(got, ["i-quiet".to_string()].into());
        // Exactly at the window it is not yet silent; just past it, it is.
        let edge = [mk("i-quiet", Phase::InService, 820)];
        assert!(silent(&edge, &reported, at(1000), 180).is_empty());
        assert_eq!(silent(&edge, &reported, at(1001), 180).len(), 1);
    }

    /// Found by an operator's run: between a successful pre_register and its content check,
    /// `status` said "last sync FAILED" for a slave whose sync had just gone through.
    #[test]
    fn a_sync_that_went_through_is_recorded_ok_while_its_content_check_runs() {
        let mut c = cfg();
        c.hooks.content_check = Some(Hook {
            argv: vec!["true".into()],
            timeout: Dur::secs(10),
            retries: 0,
            retry_delay: Dur::secs(1),
        });
        let finished: Finished = [("i-1".to_string(), (HookKind::PreRegister, Ok(())))].into();
        let mut slaves = slave(Phase::Syncing, 0);
        slaves.get_mut("i-1").unwrap().last_sync = None;
        let p = after_hooks(&slaves, &finished, &c);
        let s = &p.slaves["i-1"];
        assert_eq!(s.phase, Phase::Syncing, "registered before its check");
        assert_eq!((s.last_sync, s.last_sync_ok), (Some(at(5)), Some(true)));
        assert!(!p.actions.iter().any(|a| matches!(a, Action::Register(_))));
    }

    #[test]
    fn a_registration_that_went_through_moves_only_synced_slaves() {
        let mut slaves = slave(Phase::Synced, 0);
        slaves.insert(
            "i-2".into(),
            slave_from(
                &instance("i-2", InstanceState::Running),
                Phase::Releasing,
                at(0),
                at(0),
            ),
        );
        called(
            &mut slaves,
            Call::Register,
            &["i-1".into(), "i-2".into()],
            at(9),
        );
        assert_eq!(slaves["i-1"].phase, Phase::Registering);
        assert_eq!(slaves["i-1"].since, at(9));
        assert_eq!(
            slaves["i-2"].phase,
            Phase::Releasing,
            "never registered again"
        );
        called(&mut slaves, Call::Deregister, &["i-2".into()], at(10));
        assert_eq!(slaves["i-2"].phase, Phase::Draining);
    }

    /// `slaves` reconciled at `now` against `instances`, none in the ELB, no hook running.
    fn unregistered(
        slaves: &BTreeMap<String, Slave>,
        instances: &[InstanceInfo],
        now: i64,
        c: &Config,
    ) -> Plan {
        reconcile(
            slaves,
            &Observed {
                instances,
                members: &BTreeMap::new(),
                members_known: true,
                sources: &Sources::default(),
            },
            &Finished::new(),
            &BTreeSet::new(),
            false,
            at(now),
            c,
        )
    }

    /// One slave `i-1` in `phase` since t=0, EC2 saying `state`, reconciled at `now` with a
    /// warm pool of `pool` (and `others` already stopped in it, since t=0).
    fn pooled_plan(
        phase: Phase,
        state: InstanceState,
        pool: u32,
        others: &[&str],
        now: i64,
    ) -> Plan {
        let mut c = cfg();
        c.fleet.warm_pool = pool;
        c.fleet.warm_pool_max_age = Dur::secs(3600);
        let mut instances = vec![instance("i-1", state)];
        let mut slaves = slave(phase, 0);
        for id in others {
            instances.push(instance(id, InstanceState::Stopped));
            slaves.insert(
                (*id).to_string(),
                slave_from(
                    &instance(id, InstanceState::Stopped),
                    Phase::Stopped,
                    at(0),
                    at(0),
                ),
            );
        }
        unregistered(&slaves, &instances, now, &c)
    }

    fn stops(p: &Plan) -> bool {
        p.actions
            .iter()
            .any(|a| matches!(a, Action::Stop(ids) if ids == &["i-1"]))
    }

    /// A drained slave goes to the warm pool while it has room and the slave can stop (EBS
    /// root); otherwise, or once the pool is full, it is terminated as before.
    #[test]
    fn a_drained_slave_is_stopped_into_the_pool_while_it_has_room() {
        use InstanceState::Running;
        let drained =
            |pool, others: &[&str]| pooled_plan(Phase::Draining, Running, pool, others, 60);
        assert!(stops(&drained(1, &[])) && !terminates(&drained(1, &[])));
        assert!(
            terminates(&drained(0, &[])) && !stops(&drained(0, &[])),
            "pool off"
        );
        assert!(terminates(&drained(1, &["i-2"])), "pool full");
        assert!(stops(&drained(2, &["i-2"])));
        // Not drained yet: neither.
        let early = pooled_plan(Phase::Draining, Running, 1, &[], 59);
        assert!(!stops(&early) && !terminates(&early));
        // An instance-store root cannot stop.
        let mut c = cfg();
        c.fleet.warm_pool = 3;
        let mut slaves = slave(Phase::Draining, 0);
        slaves.get_mut("i-1").unwrap().ebs_root = false;
        let instances = [instance("i-1", Running)];
        let p = unregistered(&slaves, &instances, 60, &c);
        assert!(terminates(&p) && !stops(&p));
    }

    /// Stopping ends in the pool when EC2 says stopped (its ledger run ends: Parked), or in
    /// termination past the stop deadline; a pooled slave leaves by termination when it is older
    /// than warm_pool_max_age, when the pool is over its size (oldest first), or when someone
    /// else starts it.
    #[test]
    fn the_pool_has_deadlines_and_a_size() {
        use InstanceState::*;
        let p = pooled_plan(Phase::Stopping, Stopped, 2, &[], 30);
        assert_eq!(p.slaves["i-1"].phase, Phase::Stopped);
        assert!(p.actions.contains(&Action::Parked("i-1".into())));
        let still = pooled_plan(Phase::Stopping, Stopping, 2, &[], 600);
        assert!(!terminates(&still) && still.slaves["i-1"].phase == Phase::Stopping);
        assert!(terminates(&pooled_plan(
            Phase::Stopping,
            Stopping,
            2,
            &[],
            601
        )));
        // Age.
        let kept = pooled_plan(Phase::Stopped, Stopped, 2, &[], 3600);
        assert!(!terminates(&kept));
        // Its pool tag is gone (an untag whose start was refused): tagged again.
        assert!(kept.actions.contains(&Action::Repool(vec!["i-1".into()])));
        assert!(terminates(&pooled_plan(
            Phase::Stopped,
            Stopped,
            2,
            &[],
            3601
        )));
        // Size: three in a pool of two; i-1 (since t=0, as old as the others, first by id)
        // goes, and only one goes.
        let over = pooled_plan(Phase::Stopped, Stopped, 2, &["i-2", "i-3"], 10);
        let gone: Vec<&Action> = over
            .actions
            .iter()
            .filter(|a| matches!(a, Action::Terminate(_)))
            .collect();
        assert_eq!(gone, [&Action::Terminate(vec!["i-1".into()])]);
        // Started by someone else: failed and terminated.
        let started = pooled_plan(Phase::Stopped, Running, 2, &[], 10);
        assert!(terminates(&started) && started.slaves["i-1"].failure.is_some());
    }

    /// A slave just started out of the pool may still be listed stopped: left alone then; still
    /// stopped past the settle time, its start (whose answer was lost) never happened: it is
    /// back in the pool and its start is withdrawn (Unstarted), not failed. One that never left
    /// the pool and is found stopped while Pending is failed at once (stopped outside).
    #[test]
    fn a_restarted_slave_listed_stopped_is_given_time() {
        use InstanceState::Stopped;
        let run = |restarted: Option<i64>, now| {
            let mut slaves = slave(Phase::Pending, 0);
            slaves.get_mut("i-1").unwrap().restarted_at = restarted.map(at);
            let instances = [instance("i-1", Stopped)];
            unregistered(&slaves, &instances, now, &cfg())
        };
        let waiting = run(Some(0), SETTLE_SECS);
        assert!(waiting.slaves["i-1"].failure.is_none());
        assert_eq!(waiting.slaves["i-1"].phase, Phase::Pending);
        assert!(!waiting.actions.contains(&Action::Unstarted("i-1".into())));
        let back = run(Some(0), SETTLE_SECS + 1);
        assert!(back.slaves["i-1"].failure.is_none());
        assert_eq!(back.slaves["i-1"].phase, Phase::Stopped);
        assert!(back.actions.contains(&Action::Unstarted("i-1".into())));
        assert!(!terminates(&back));
        assert!(run(None, 10).slaves["i-1"].failure.is_some());
    }

    /// Adoption: stopped with the pool tag is a warm slave (its age from the tag); stopped
    /// without it was stopped by someone else, and is failed.
    #[test]
    fn adoption_knows_the_pool_by_its_tag() {
        let mut pooled = instance("i-1", InstanceState::Stopped);
        pooled.pooled_since = Some(at(-600));
        let bare = instance("i-2", InstanceState::Stopped);
        let instances = [pooled, bare];
        let plan = adopt(
            &BTreeMap::new(),
            &Observed {
                instances: &instances,
                members: &BTreeMap::new(),
                members_known: true,
                sources: &Sources::default(),
            },
            &BTreeSet::new(),
            at(0),
            &cfg(),
        );
        assert_eq!(plan.slaves["i-1"].phase, Phase::Stopped);
        assert_eq!(plan.slaves["i-1"].since, at(-600));
        assert!(plan.slaves["i-1"].failure.is_none());
        assert!(plan.slaves["i-2"].failure.is_some());
    }
}
