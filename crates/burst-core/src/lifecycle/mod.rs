//! The slave lifecycle as a pure function (kube-rs' reconciler: observe, decide, act,
//! requeue): [`reconcile`] takes the tracked slaves, what EC2 and the ELB said, the hook results
//! and the time, and returns the next slaves and the [`Action`]s to carry out. It calls nothing
//! and reads no clock; the agent's `Actuator::step` is the executor that observes, calls it, and
//! carries the actions out through its `Cloud` and `HookRunner` traits (a dry run logs them
//! instead). [`called`] applies what a call that went through means.
//!
//! Every phase change of a slave happens here, by the one phase table, [`PHASES`]: for each
//! phase its deadline, what overstaying it does, where a slave may go next, and the step that
//! moves it on ([`phases`]); [`phase_of`] (in [`rules`]) says what a new instance is, and
//! [`called`] what a call that went through means (a scale-in's release: Releasing; a warm
//! start: Pending). The executor only records a slave's birth, with
//! [`rules::slave_from`] in phase Pending, once EC2 has named the instance it launched.
//!
//! [`adopt`] re-attaches what EC2 lists that nobody tracks (at start; [`reconcile`] does it
//! too for one listed late), in the phase [`phase_of`] gives it. [`silent`] names the serving
//! slaves that have not reported for `metrics.stale_after` (the policy counts them idle for
//! scale-out and at target for scale-in, so the fleet never shrinks for them).
//!
//! A new phase rule is a row or a step in [`PHASES`]; a new phase is a `Phase` variant in
//! burst-model and a row. Every move a pass makes is checked against the table (a debug
//! assertion, and a test that sweeps every phase against every observation).

pub mod brake;
mod choices;
pub mod intents;
pub mod launch;
mod phases;
pub mod rules;

/// Where the lifecycle's lines have always been logged, so an operator's filter on
/// `burst_agent` (`log.level = "warn,burst_agent=debug"`) still shows every phase change.
const LOG_TARGET: &str = "burst_agent::actuator::lifecycle";

pub use choices::{releasable, warm_pick};
pub use phases::{PhaseRow, PHASES};
pub use rules::*;

use crate::config::Config;
use crate::model::{HookKind, InstanceInfo, MemberState, Phase, Slave, TAG_POOLED_SINCE};
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
    /// Moves a slave on, as the phase table allows.
    fn set_phase(&mut self, id: &str, phase: Phase, now: Timestamp) {
        if let Some(s) = self.slaves.get_mut(id) {
            debug_assert!(
                phases::allowed(s.phase, phase),
                "the phase table has no move {:?} -> {phase:?}",
                s.phase
            );
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
/// `sync_forced`: content sync to every in-service slave now (SIGUSR1). Untracked instances of
/// ours are adopted first; then each slave gets what happened to it outside the agent, and its
/// phase's step from the phase table ([`phases::PHASES`]).
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
    let ids: Vec<String> = plan.slaves.keys().cloned().collect();
    let mut pass = phases::Pass::new(plan, obs, finished, sync_forced, now, cfg);
    for id in ids {
        pass.slave(&id);
    }
    pass.finish()
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
    use crate::model::InstanceState;

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

    /// The phase table is the lifecycle: every move a reconcile pass makes is one the table
    /// lists (every phase, against each state EC2 can report or none, in the ELB or not, the
    /// ELB read or not, each hook result, fresh, within a restart's settling time and overdue,
    /// with and without room in the pool); so is every move a call makes on the slaves the
    /// executor makes it for; and every move the table lists is made by one or the other.
    #[test]
    fn every_move_is_one_the_phase_table_lists_and_every_listed_move_is_made() {
        use InstanceState as E;
        let states = [
            None,
            Some(E::Pending),
            Some(E::Running),
            Some(E::Stopping),
            Some(E::Stopped),
            Some(E::ShuttingDown),
            Some(E::Terminated),
        ];
        let members = [
            None,
            Some(MemberState::InService),
            Some(MemberState::OutOfService),
        ];
        let results: [Option<(HookKind, Result<(), String>)>; 6] = [
            None,
            Some((HookKind::PreRegister, Ok(()))),
            Some((HookKind::PreRegister, Err("x".into()))),
            Some((HookKind::ContentCheck, Ok(()))),
            Some((HookKind::ContentSync, Ok(()))),
            Some((HookKind::PreDeregister, Err("x".into()))),
        ];
        // (now, warm pool size, pooled and restarted at 0)
        let times = [
            (1, 0, false),
            (100, 0, true),
            (100_000, 2, true),
            (100_000, 0, false),
        ];
        let mut made: Vec<(Phase, Phase)> = Vec::new();
        for row in &PHASES {
            for ec2 in states {
                for member in members {
                    for result in &results {
                        for (now, pool, pooled) in times {
                            for known in [true, false] {
                                let mut slaves = slave(row.phase, 0);
                                if let Some(s) = slaves.get_mut("i-1") {
                                    s.restarted_at = pooled.then(|| at(0));
                                }
                                let mut i = instance("i-1", ec2.unwrap_or(E::Running));
                                i.pooled_since = pooled.then(|| at(0));
                                let instances: Vec<InstanceInfo> =
                                    ec2.map(|_| i).into_iter().collect();
                                let members: BTreeMap<String, MemberState> = member
                                    .filter(|_| known)
                                    .map(|m| ("i-1".to_string(), m))
                                    .into_iter()
                                    .collect();
                                let finished: Finished = result
                                    .clone()
                                    .map(|r| ("i-1".to_string(), r))
                                    .into_iter()
                                    .collect();
                                let mut c = cfg();
                                c.fleet.warm_pool = pool;
                                let p = reconcile(
                                    &slaves,
                                    &Observed {
                                        instances: &instances,
                                        members: &members,
                                        members_known: known,
                                        sources: &Sources::default(),
                                    },
                                    &finished,
                                    &BTreeSet::new(),
                                    false,
                                    at(now),
                                    &c,
                                );
                                let Some(to) = p.slaves.get("i-1").map(|s| s.phase) else {
                                    continue;
                                };
                                if to == row.phase {
                                    continue;
                                }
                                // One pass makes two moves in one case only: a lost stop
                                // answer (Draining -> Stopping), then Stopping's step sees
                                // the slave stopped.
                                let two = row.phase == Phase::Draining && to == Phase::Stopped;
                                assert!(
                                    row.next.contains(&to) || two,
                                    "{:?} -> {to:?} (EC2 {ec2:?}, ELB {member:?} read {known}, \
                                     {result:?}, t={now}) is not in the phase table",
                                    row.phase
                                );
                                if !two {
                                    made.push((row.phase, to));
                                }
                            }
                        }
                    }
                }
            }
        }
        // The calls, on the slaves the executor makes them for: a release on the victims
        // `releasable` keeps, a start on those `warm_pick` picks, the rest on any slave
        // (`called` itself keeps register, deregister and stop to their phase).
        let calls = [
            Call::Release,
            Call::Register,
            Call::Deregister,
            Call::Terminate,
            Call::Stop,
            Call::Start,
        ];
        for row in &PHASES {
            for call in calls {
                let mut slaves = slave(row.phase, 0);
                let ids = match call {
                    Call::Release => releasable(&slaves, &["i-1".to_string()]).0,
                    Call::Start => warm_pick(&slaves, |_| true, 1),
                    _ => vec!["i-1".to_string()],
                };
                called(&mut slaves, call, &ids, at(1));
                let to = slaves["i-1"].phase;
                if to != row.phase {
                    assert!(
                        phases::allowed(row.phase, to),
                        "{call:?} moves {:?} to {to:?}, which the phase table does not list",
                        row.phase
                    );
                    made.push((row.phase, to));
                }
            }
        }
        for row in &PHASES {
            for to in row.next {
                assert!(
                    made.contains(&(row.phase, *to)),
                    "the table lets {:?} go to {to:?}, and nothing moves a slave so",
                    row.phase
                );
            }
        }
        // And every phase has its row.
        for phase in [
            Phase::Pending,
            Phase::Syncing,
            Phase::Synced,
            Phase::Registering,
            Phase::InService,
            Phase::Releasing,
            Phase::Draining,
            Phase::Terminating,
            Phase::Stopping,
            Phase::Stopped,
        ] {
            // (row() indexes the table by the phase: it must be in Phase's order.)
            assert_eq!(phases::row(phase).phase, phase);
        }
    }
}
