//! The phase table and its steps: for each [`Phase`], how long a slave may stay in it, what
//! overstaying does, where it may go next, and the one function that moves a slave on from it
//! ([`PHASES`]). [`reconcile`](super::reconcile) first applies what happened outside the
//! agent (gone, stopped, started, a lost answer: [`outside`]), then dispatches each slave to
//! its phase's step. A step reads the slave, what EC2 and the ELB say of it and its hook's
//! result, and changes only the [`Plan`]: phases (each move checked against the table), calls
//! gathered per kind, and hooks started or aborted.

use super::rules::{age, hook_budget, stopped, SETTLE_SECS, STOP_DEADLINE_SECS};
use super::rules::{HOOK_GRACE_SECS, TERMINATE_RETRY_SECS};
use super::{Action, Finished, Observed, Plan, LOG_TARGET};
use crate::config::Config;
use crate::model::{HookKind, InstanceInfo, InstanceState, MemberState, Phase, Slave};
use jiff::Timestamp;
use std::collections::{BTreeMap, BTreeSet};

/// One row of the phase table.
pub struct PhaseRow {
    pub phase: Phase,
    /// How long a slave may stay in this phase before the agent acts; `None`: as long as it
    /// stays healthy.
    pub deadline: fn(&Config) -> Option<i64>,
    /// What overstaying the deadline does.
    pub overdue: &'static str,
    /// Where a slave goes from here: by this phase's step, or by a call that went through
    /// ([`called`](super::called)). Terminating is not listed: a failure or a release's end
    /// reaches it from any phase.
    pub next: &'static [Phase],
    /// What moves a slave on from this phase.
    step: fn(&mut Pass<'_>, &Seen<'_>),
}

/// The phase table: one row per phase, in the order of `Phase` (a test holds it there), which is
/// the order a slave lives them.
pub static PHASES: [PhaseRow; 10] = [
    PhaseRow {
        phase: Phase::Pending,
        deadline: |c| Some(c.fleet.boot_timeout.whole_secs()),
        overdue: "failed: terminated, never registered",
        // Stopped: a start out of the warm pool that never happened.
        next: &[Phase::Syncing, Phase::Stopped],
        step: pending,
    },
    PhaseRow {
        phase: Phase::Syncing,
        deadline: |c| {
            Some(
                hook_budget(&c.hooks.pre_register)
                    + c.hooks.content_check.as_ref().map_or(0, hook_budget)
                    + HOOK_GRACE_SECS,
            )
        },
        overdue: "its hook is aborted; failed: terminated, never registered",
        next: &[Phase::Synced],
        step: syncing,
    },
    PhaseRow {
        phase: Phase::Synced,
        deadline: |c| Some(c.elb.register_timeout.whole_secs()),
        overdue: "failed (the ELB refused every registration): terminated",
        next: &[Phase::Registering],
        step: synced,
    },
    PhaseRow {
        phase: Phase::Registering,
        deadline: |c| Some(c.elb.register_timeout.whole_secs()),
        overdue: "failed: deregistered and terminated",
        // Releasing: a scale-in may take a slave still registering (`releasable`).
        next: &[Phase::InService, Phase::Releasing],
        step: registering,
    },
    PhaseRow {
        phase: Phase::InService,
        deadline: |_| None,
        overdue: "(none; out of InService at the ELB for elb.register_timeout: failed)",
        next: &[Phase::Releasing],
        step: in_service,
    },
    PhaseRow {
        phase: Phase::Releasing,
        deadline: |c| {
            Some(c.hooks.pre_deregister.as_ref().map_or(0, hook_budget) + HOOK_GRACE_SECS)
        },
        overdue: "deregistered anyway; at twice the deadline terminated, ELB or not",
        next: &[Phase::Draining],
        step: releasing,
    },
    PhaseRow {
        phase: Phase::Draining,
        deadline: |c| Some(c.elb.draining_timeout.whole_secs()),
        overdue: "drained: stopped into the warm pool while it has room, else terminated",
        next: &[Phase::Stopping],
        step: draining,
    },
    PhaseRow {
        phase: Phase::Terminating,
        deadline: |_| Some(TERMINATE_RETRY_SECS),
        overdue: "TerminateInstances again",
        next: &[],
        step: terminating,
    },
    PhaseRow {
        phase: Phase::Stopping,
        deadline: |_| Some(STOP_DEADLINE_SECS),
        overdue: "failed: terminated",
        next: &[Phase::Stopped],
        step: stopping,
    },
    PhaseRow {
        phase: Phase::Stopped,
        deadline: |c| Some(c.fleet.warm_pool_max_age.whole_secs()),
        overdue: "leaves the warm pool: terminated",
        // Started out of the pool (StartInstances went through).
        next: &[Phase::Pending],
        step: stopped_in_pool,
    },
];

/// The table's row for `phase`.
pub fn row(phase: Phase) -> &'static PhaseRow {
    &PHASES[phase as usize]
}

/// Whether the table lets a slave move from `from` to `to`.
pub fn allowed(from: Phase, to: Phase) -> bool {
    to == Phase::Terminating || row(from).next.contains(&to)
}

/// The calls one pass asks for, gathered per kind (one call each, in this order).
#[derive(Default)]
struct Calls {
    deregister: Vec<String>,
    register: Vec<String>,
    terminate: Vec<String>,
    stop: Vec<String>,
    repool: Vec<String>,
    untag: Vec<String>,
}

/// One reconcile pass: the plan it builds and what it reads.
pub(super) struct Pass<'a> {
    pub plan: Plan,
    obs: &'a Observed<'a>,
    by_id: BTreeMap<&'a str, &'a InstanceInfo>,
    finished: &'a Finished,
    sync_forced: bool,
    now: Timestamp,
    cfg: &'a Config,
    dry: bool,
    calls: Calls,
    /// Places left in the warm pool.
    room: usize,
    /// The oldest stopped slaves over the pool's size (it was made smaller): terminated.
    over_size: BTreeSet<String>,
}

/// One slave as its step sees it.
struct Seen<'a> {
    id: &'a str,
    /// The slave as it was before its step.
    s: Slave,
    ec2: Option<InstanceState>,
    info: Option<&'a InstanceInfo>,
    /// Past its phase's deadline.
    overdue: bool,
    /// A hook of its is under way.
    has_hook: bool,
}

impl Seen<'_> {
    /// "`what` for more than Ns", for a failure's reason.
    fn over(&self, now: Timestamp, what: &str) -> String {
        format!("{what} for more than {}s", age(now, self.s.since))
    }
}

impl<'a> Pass<'a> {
    pub fn new(
        plan: Plan,
        obs: &'a Observed<'a>,
        finished: &'a Finished,
        sync_forced: bool,
        now: Timestamp,
        cfg: &'a Config,
    ) -> Self {
        // The warm pool: its room, and the oldest stopped slaves over its size.
        let mut pooled: Vec<(Timestamp, String)> = plan
            .slaves
            .values()
            .filter(|s| matches!(s.phase, Phase::Stopping | Phase::Stopped) && s.failure.is_none())
            .map(|s| (s.since, s.id.clone()))
            .collect();
        pooled.sort();
        let size = usize::try_from(cfg.fleet.warm_pool).unwrap_or(usize::MAX);
        let room = size.saturating_sub(pooled.len());
        let over_size: BTreeSet<String> = pooled
            .iter()
            .take(pooled.len().saturating_sub(size))
            .map(|(_, id)| id.clone())
            .collect();
        Pass {
            plan,
            obs,
            by_id: obs.instances.iter().map(|i| (i.id.as_str(), i)).collect(),
            finished,
            sync_forced,
            now,
            cfg,
            dry: cfg.agent.dry_run,
            calls: Calls::default(),
            room,
            over_size,
        }
    }

    /// One slave: what happened to it outside the agent, then its phase's step.
    pub fn slave(&mut self, id: &str) {
        let info = self.by_id.get(id).copied();
        let Some(s) = outside(self, id, info) else {
            return;
        };
        let row = row(s.phase);
        let seen = Seen {
            id,
            ec2: info.map(|i| i.state),
            info,
            overdue: (row.deadline)(self.cfg).is_some_and(|d| age(self.now, s.since) > d),
            has_hook: self.plan.running.contains(id),
            s,
        };
        (row.step)(self, &seen);
    }

    /// The plan, with the pass's calls as actions.
    pub fn finish(mut self) -> Plan {
        let c = std::mem::take(&mut self.calls);
        for (ids, call) in [
            (
                c.deregister,
                Action::Deregister as fn(Vec<String>) -> Action,
            ),
            (c.register, Action::Register),
            (c.terminate, Action::Terminate),
            (c.stop, Action::Stop),
            (c.repool, Action::Repool),
            (c.untag, Action::Untag),
        ] {
            if !ids.is_empty() {
                self.plan.actions.push(call(ids));
            }
        }
        self.plan
    }

    fn members(&self) -> &'a BTreeMap<String, MemberState> {
        self.obs.members
    }

    /// Fails the slave: it is deregistered if the ELB lists it, and terminated.
    fn fail_out(&mut self, id: &str, why: String) {
        self.plan.fail(id, why);
        self.end(id);
    }

    /// Ends a failed slave: its hook aborted, deregistered if the ELB lists it, terminated.
    fn end(&mut self, id: &str) {
        self.plan.abort(id);
        if self.members().contains_key(id) {
            self.calls.deregister.push(id.to_string());
        }
        self.calls.terminate.push(id.to_string());
    }

    fn set_phase(&mut self, id: &str, phase: Phase) {
        self.plan.set_phase(id, phase, self.now);
    }
}

/// What happened to a slave outside the agent, before its phase's step: its address, gone or
/// going, a stop or start whose answer was lost, stale pool tags, stopped by someone else, a
/// failure. The slave as its step sees it, or `None` when the pass is done with it.
fn outside(p: &mut Pass<'_>, id: &str, info: Option<&InstanceInfo>) -> Option<Slave> {
    let now = p.now;
    if let (Some(i), Some(sl)) = (info, p.plan.slaves.get_mut(id)) {
        if i.private_ip.is_some() {
            sl.private_ip.clone_from(&i.private_ip);
        }
        if i.private_dns.is_some() {
            sl.private_dns.clone_from(&i.private_dns);
        }
    }
    let s = p.plan.slaves.get(id).cloned()?;
    let ec2 = info.map(|i| i.state);
    if gone(p, id, &s, ec2) {
        return None;
    }
    // Our StopInstances went through though its answer was lost (tagged, then stopped).
    if s.phase == Phase::Draining
        && ec2.is_some_and(stopped)
        && info.is_some_and(|i| i.pooled_since.is_some())
        && s.failure.is_none()
    {
        p.set_phase(id, Phase::Stopping);
    }
    let s = p.plan.slaves.get(id).cloned()?;
    // Started out of the warm pool: EC2 may list it stopped a little longer; still stopped
    // past that, the start never happened and it goes back to the pool.
    let restarted = s.phase == Phase::Pending && s.restarted_at.is_some();
    let restarting = restarted && s.restarted_at.is_some_and(|t| age(now, t) <= SETTLE_SECS);
    if restarted && !restarting && ec2 == Some(InstanceState::Stopped) && s.failure.is_none() {
        p.set_phase(id, Phase::Stopped);
        if let Some(sl) = p.plan.slaves.get_mut(id) {
            sl.restarted_at = None;
        }
        p.plan.actions.push(Action::Unstarted(id.to_string()));
        return None;
    }
    // Serving or on its way in with a pool or drain tag left from the warm pool: untag.
    let stale_tags = info.is_some_and(|i| {
        i.pooled_since.is_some() || (i.draining_since.is_some() && s.restarted_at.is_some())
    });
    if stale_tags
        && matches!(ec2, Some(InstanceState::Pending | InstanceState::Running))
        && matches!(
            s.phase,
            Phase::Pending | Phase::Syncing | Phase::Synced | Phase::Registering | Phase::InService
        )
    {
        p.calls.untag.push(id.to_string());
    }
    if ec2.is_some_and(stopped)
        && s.failure.is_none()
        && !matches!(
            s.phase,
            Phase::Terminating | Phase::Stopping | Phase::Stopped
        )
        && !restarting
    {
        p.plan.fail(id, "stopped outside the agent".into());
    }
    let s = p.plan.slaves.get(id).cloned()?;
    if s.failure.is_some() && s.phase != Phase::Terminating {
        p.end(id);
        return None;
    }
    Some(s)
}

/// Gone or going, whoever did it: forgotten (deregistered first if the ELB still lists it).
/// EC2 may not list a new instance for a while: only SETTLE_SECS after the agent first
/// tracked it does not being listed mean gone.
fn gone(p: &mut Pass<'_>, id: &str, s: &Slave, ec2: Option<InstanceState>) -> bool {
    let now = p.now;
    if !(matches!(
        ec2,
        Some(InstanceState::Terminated | InstanceState::ShuttingDown)
    ) || (ec2.is_none() && age(now, s.first_seen) > SETTLE_SECS))
    {
        return false;
    }
    if s.phase != Phase::Terminating {
        p.plan.errors.push(match ec2 {
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
        if p.members().contains_key(id) {
            p.calls.deregister.push(id.to_string());
        }
    }
    p.plan.slaves.remove(id);
    p.plan.running.remove(id);
    p.plan.actions.push(Action::Gone(id.to_string()));
    true
}

/// Pending: running → Syncing, its content sync started; not running by its deadline: failed.
fn pending(p: &mut Pass<'_>, v: &Seen<'_>) {
    if v.ec2 == Some(InstanceState::Running) {
        p.set_phase(v.id, Phase::Syncing);
        if !p.dry {
            p.plan
                .start_sync(v.id, HookKind::PreRegister, p.obs.sources);
        }
    } else if v.overdue {
        let why = format!("not running after {}", p.cfg.fleet.boot_timeout);
        p.plan.fail(v.id, why);
        p.calls.terminate.push(v.id.to_string());
    }
}

/// Syncing: its sync went through → its content check, or Synced (registered once the ELB
/// answers); a failed sync or check, or its deadline with no result: failed, never
/// registered.
fn syncing(p: &mut Pass<'_>, v: &Seen<'_>) {
    let (id, finished) = (v.id, p.finished);
    if v.overdue && !finished.contains_key(id) {
        p.plan.abort(id);
        p.plan.fail(id, v.over(p.now, "content sync under way"));
        p.calls.terminate.push(id.to_string());
        return;
    }
    match finished.get(id) {
        // Synced; the slave proves it serves the site before it is registered.
        Some((HookKind::PreRegister, Ok(()))) if p.cfg.hooks.content_check.is_some() => {
            // The sync went through (`status`: "synced"); the check decides the rest.
            synced_ok(p, id);
            if !p.dry {
                p.plan.start(id, HookKind::ContentCheck);
            }
        }
        Some((HookKind::ContentCheck, Err(e))) => {
            let why = format!(
                "content check (hooks.content_check) failed after its sync, never \
                 registered: {e}"
            );
            p.plan.fail(id, why);
            p.calls.terminate.push(id.to_string());
        }
        Some((HookKind::PreRegister | HookKind::ContentCheck, Ok(()))) => {
            p.set_phase(id, Phase::Synced);
            synced_ok(p, id);
            // Registered once the ELB answers (Synced waits for it).
            if p.obs.members_known {
                p.calls.register.push(id.to_string());
            }
        }
        Some((HookKind::PreRegister, Err(e))) => {
            let why = format!("content sync (pre_register) failed, never registered: {e}");
            p.plan.fail(id, why);
            p.calls.terminate.push(id.to_string());
        }
        // Adopted mid-sync, or its hook was lost: start it (again).
        _ if !v.has_hook && !p.dry => {
            p.plan.start_sync(id, HookKind::PreRegister, p.obs.sources);
        }
        _ => {}
    }
}

/// Records a sync that went through.
fn synced_ok(p: &mut Pass<'_>, id: &str) {
    if let Some(sl) = p.plan.slaves.get_mut(id) {
        sl.last_sync = Some(p.now);
        sl.last_sync_ok = Some(true);
    }
}

/// No ELB answer this tick: neither registered nor judged, and its deadline waits too (it
/// counts from the ELB's next answer, not from a time it could not act). True if so.
fn waits_for_the_elb(p: &mut Pass<'_>, id: &str) -> bool {
    if p.obs.members_known {
        return false;
    }
    if let Some(sl) = p.plan.slaves.get_mut(id) {
        sl.since = p.now;
    }
    true
}

/// Synced: registered (Registering once the call goes through); refused past its deadline:
/// failed.
fn synced(p: &mut Pass<'_>, v: &Seen<'_>) {
    if waits_for_the_elb(p, v.id) {
        return;
    }
    if v.overdue {
        let why = v.over(p.now, "synced, and the ELB refused every registration,");
        p.plan.fail(v.id, why);
        p.calls.terminate.push(v.id.to_string());
    } else {
        p.calls.register.push(v.id.to_string());
    }
}

/// Registering: InService at the ELB → InService; not by its deadline: failed; not listed:
/// registered again.
fn registering(p: &mut Pass<'_>, v: &Seen<'_>) {
    let id = v.id;
    if waits_for_the_elb(p, id) {
        return;
    }
    match p.members().get(id) {
        Some(MemberState::InService) => {
            p.set_phase(id, Phase::InService);
            p.plan.in_service.push(id.to_string());
        }
        _ if v.overdue => {
            let why = format!(
                "not InService {} after registration",
                p.cfg.elb.register_timeout
            );
            p.plan.fail(id, why);
            p.calls.deregister.push(id.to_string());
            p.calls.terminate.push(id.to_string());
        }
        None if !p.dry => p.calls.register.push(id.to_string()),
        _ => {}
    }
}

/// InService: failed when the ELB has not called it InService for a whole window, or its
/// content check fails after a periodic sync; otherwise its periodic content sync, when due.
fn in_service(p: &mut Pass<'_>, v: &Seen<'_>) {
    if unhealthy(p, v) || periodic_sync_failed(p, v.id) {
        return;
    }
    let interval = p.cfg.hooks.content_sync_interval.whole_secs();
    let due = p.sync_forced || v.s.last_sync.is_none_or(|t| age(p.now, t) >= interval);
    let has_hook = p.plan.running.contains(v.id);
    if due && !has_hook && !p.dry && !p.finished.contains_key(v.id) {
        p.plan
            .start_sync(v.id, HookKind::ContentSync, p.obs.sources);
    }
}

/// Health is judged over a window, not by the last reading: once a slave is seen out of
/// InService, its mark clears only after a whole register_timeout of InService readings, so a
/// slave that flaps is failed as one that stays down. Unread this tick: the mark and its
/// recovery stay as they were. True if it failed.
fn unhealthy(p: &mut Pass<'_>, v: &Seen<'_>) -> bool {
    let (id, s, now) = (v.id, &v.s, p.now);
    let members = p.members();
    let healthy = members.get(id) == Some(&MemberState::InService);
    let window = p.cfg.elb.register_timeout.whole_secs();
    let (sick_since, well_since) = match (p.obs.members_known, healthy, s.unhealthy_since) {
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
            tracing::warn!(target: LOG_TARGET, instance_id = %id, elb = ?members.get(id),
                "in-service slave {id} is not InService at the ELB");
            (Some(now), None)
        }
    };
    if let Some(sl) = p.plan.slaves.get_mut(id) {
        sl.unhealthy_since = sick_since;
        sl.healthy_since = well_since;
    }
    let Some(t) = sick_since
        .filter(|_| p.obs.members_known && !healthy)
        .filter(|t| age(now, *t) > window)
    else {
        return false;
    };
    let why = format!("the ELB has not called it InService for {}s", age(now, t));
    p.fail_out(id, why);
    true
}

/// A periodic content sync's result: recorded; on success the slave proves it still serves the
/// site (its content check); a failed check fails it. True if it failed.
fn periodic_sync_failed(p: &mut Pass<'_>, id: &str) -> bool {
    let finished = p.finished;
    if let Some((HookKind::ContentSync, res)) = finished.get(id) {
        if let Some(sl) = p.plan.slaves.get_mut(id) {
            sl.last_sync = Some(p.now);
            sl.last_sync_ok = Some(res.is_ok());
        }
        match res {
            Err(e) => p.plan.errors.push(format!(
                "periodic content sync to {id} failed (it keeps serving the content \
                 of its last sync): {e}"
            )),
            // The slave proves it still serves the site.
            Ok(()) if p.cfg.hooks.content_check.is_some() && !p.dry => {
                p.plan.start(id, HookKind::ContentCheck);
            }
            Ok(()) => {}
        }
    }
    let Some((HookKind::ContentCheck, Err(e))) = finished.get(id) else {
        return false;
    };
    let why = format!(
        "content check (hooks.content_check) failed after a periodic sync: it \
         no longer serves the site: {e}"
    );
    p.plan.fail(id, why);
    if p.members().contains_key(id) {
        p.calls.deregister.push(id.to_string());
    }
    p.calls.terminate.push(id.to_string());
    true
}

/// Releasing: its `pre_deregister` hook, then deregistered (Draining once that goes through).
fn releasing(p: &mut Pass<'_>, v: &Seen<'_>) {
    let id = v.id;
    let known = p.obs.members_known;
    let twice =
        (row(Phase::Releasing).deadline)(p.cfg).is_some_and(|d| age(p.now, v.s.since) > 2 * d);
    if known && !p.members().contains_key(id) && !v.has_hook {
        // Out of the ELB already (a deregistration whose answer was lost, or someone
        // else's): nothing to call; its drain starts now.
        p.set_phase(id, Phase::Draining);
    } else if twice {
        // The ELB refused every deregistration for as long again: terminate anyway (the ELB
        // stops routing to a terminated instance); never leave it running, and counting
        // against tomorrow's cap, because the ELB is unwell.
        p.plan.abort(id);
        p.plan
            .fail(id, v.over(p.now, "the ELB refused to deregister it"));
        p.calls.deregister.push(id.to_string());
        p.calls.terminate.push(id.to_string());
    } else if !known {
        // No ELB answer this tick: not deregistered (its deadline still runs, and the branch
        // above terminates it at twice that, ELB or not).
    } else if v.overdue {
        p.plan.abort(id);
        tracing::warn!(target: LOG_TARGET, instance_id = %id, "{}; deregistering anyway",
            v.over(p.now, "pre_deregister under way"));
        p.calls.deregister.push(id.to_string());
    } else if !v.has_hook {
        if let Some((HookKind::PreDeregister, Err(e))) = p.finished.get(id) {
            tracing::warn!(target: LOG_TARGET, instance_id = %id,
                "pre_deregister hook failed; releasing anyway: {e}");
        }
        p.calls.deregister.push(id.to_string());
    }
}

/// Draining: deregistered again while the ELB lists it; drained, into the warm pool while it
/// has room (Stopping once the stop goes through), else terminated; still listed long past
/// it (every deregistration refused), or never stopped: terminated.
fn draining(p: &mut Pass<'_>, v: &Seen<'_>) {
    let id = v.id;
    let in_drain = age(p.now, v.s.since);
    let elb = &p.cfg.elb;
    let drained = in_drain >= elb.draining_timeout.whole_secs();
    let stuck = in_drain > elb.draining_timeout.whole_secs() + elb.register_timeout.whole_secs();
    if p.members().contains_key(id) && !stuck {
        p.calls.deregister.push(id.to_string());
    } else if drained && !stuck && p.room > 0 && v.s.ebs_root {
        // Into the warm pool (while every stop is refused, for as long as the ELB is given
        // above; then terminated).
        p.room -= 1;
        p.calls.stop.push(id.to_string());
    } else if drained {
        // Drained with no room in the pool; or still listed by the ELB long past it (every
        // deregistration refused), or never stopped: terminated.
        p.calls.terminate.push(id.to_string());
    }
}

/// Terminating: past its deadline, TerminateInstances again.
fn terminating(p: &mut Pass<'_>, v: &Seen<'_>) {
    if v.overdue {
        p.calls.terminate.push(v.id.to_string());
    }
}

/// Stopping: stopped → Stopped (its run ends in the ledger); not by its deadline: failed.
fn stopping(p: &mut Pass<'_>, v: &Seen<'_>) {
    if v.ec2 == Some(InstanceState::Stopped) {
        p.set_phase(v.id, Phase::Stopped);
        p.plan.actions.push(Action::Parked(v.id.to_string()));
    } else if v.overdue {
        p.plan.fail(v.id, v.over(p.now, "stopping"));
        p.calls.terminate.push(v.id.to_string());
    }
}

/// Stopped in the warm pool: started by someone else: failed; older than its deadline or over
/// the pool's size: terminated; its pool tag lost: tagged again.
fn stopped_in_pool(p: &mut Pass<'_>, v: &Seen<'_>) {
    let id = v.id;
    if matches!(v.ec2, Some(InstanceState::Running | InstanceState::Pending)) {
        p.plan.fail(
            id,
            "started outside this agent while in the warm pool".into(),
        );
        p.calls.terminate.push(id.to_string());
    } else if v.overdue || p.over_size.contains(id) {
        tracing::info!(target: LOG_TARGET, instance_id = %id,
            secs_in_pool = age(p.now, v.s.since), pool_size = p.cfg.fleet.warm_pool,
            "warm slave {id} leaves the pool: {}; terminating",
            if v.overdue { "older than fleet.warm_pool_max_age" } else { "over fleet.warm_pool" });
        p.calls.terminate.push(id.to_string());
    } else if v.info.is_some_and(|i| i.pooled_since.is_none()) {
        p.calls.repool.push(id.to_string());
    }
}
