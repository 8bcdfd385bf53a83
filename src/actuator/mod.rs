//! The fleet actuator: carries out the policy's [`Decision`]s on EC2 and the classic ELB, one
//! small state machine per slave, reconciled against what EC2 and the ELB say every tick
//! (observe, then act; the next tick observes the result).
//!
//! ```text
//!  launch ─▶ Pending ─running─▶ Syncing ─hook ok─▶ Synced ─register─▶ Registering ─InService─▶ InService
//!              │ boot timeout      │ hook failed                          │ register timeout        │ scale in
//!              ▼                   ▼                                      ▼                         ▼
//!          Terminating ◀───────────┴──────────────────────────────────────┘        Releasing (tag, pre_deregister)
//!              ▲                                                                                    │ deregister
//!              └──────────────────────── draining timeout ◀── Draining ◀────────────────────────────┘
//!                  (no room, or refused)                          │ drained, room in fleet.warm_pool
//!                                                                 ▼
//!   scale-out: untag, start ─▶ Pending ◀──────── Stopped ◀── Stopping (tag pooled-since, StopInstances)
//!                                    (max age, over size ─▶ Terminating)
//! ```
//!
//! Every step is idempotent and safe to interrupt: the launch intent and its cap-ledger attempts
//! are on disk before RunInstances; instances carry their group, intent and launch time as
//! tags; a slave being released is tagged `burst-agent:draining-since` before it is deregistered.
//! After a restart, [`Actuator::adopt`] rebuilds every slave's place from tags and ELB
//! membership: a registered slave is in service (only synced slaves are ever registered), a
//! running unregistered one is synced again before it is registered, a tagged one keeps draining.
//!
//! Hooks run as tasks, several at once; a tick never waits for one. The calls a steady-state
//! tick makes are DescribeInstances and DescribeInstanceHealth, whatever the number of slaves.

pub mod brake;
pub mod cloud;
pub mod journal;
pub mod ledger_store;
pub mod lifecycle;
pub mod runner;
pub mod state;

use crate::cap::{self, CapLedger, Seen};
use crate::config::{Config, Hook};
use crate::events::{Event, EventKind};
use crate::fsutil::{Disk, RealDisk};
use crate::hooks::{self, HookVars};
use crate::policy::{Decision, History, SlaveObservation, SlaveState};
use cloud::{
    Cloud, InstanceInfo, InstanceState, LaunchRequest, MemberState, TAG_DRAINING_SINCE, TAG_OWNER,
};
use jiff::Timestamp;
use journal::{Intent, Journal, Outcome};
use runner::{HookRunner, ProcessHooks};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;

/// EC2 is eventually consistent: a new instance may take this long to show in DescribeInstances.
const SETTLE_SECS: i64 = 300;
/// How far EC2's clock may be from this host's when an instance's launch time is compared with
/// when its intent was written.
const CLOCK_SKEW_SECS: i64 = 60;
/// Terminate again if an instance still runs this long after the first TerminateInstances.
const TERMINATE_RETRY_SECS: i64 = 300;
/// A slave must be stopped this long after StopInstances, or it is terminated.
const STOP_DEADLINE_SECS: i64 = 600;
/// Resolved intents are kept this long in the journal.
const JOURNAL_KEEP_SECS: i64 = 2 * 86_400;
/// After EC2 had no capacity for any placement: the first wait before launching again, doubled
/// each time up to the last.
const NO_CAPACITY_BACKOFF_SECS: (i64, i64) = (60, 900);

/// How long a launch waits after `streak` refusals in a row (no capacity anywhere, or a
/// refusal for good): 1 min doubling to 15 min. The wait in seconds, and until when.
fn backoff(now: Timestamp, streak: u32) -> (i64, Timestamp) {
    let (first, last) = NO_CAPACITY_BACKOFF_SECS;
    let wait = first.saturating_mul(1i64 << streak.min(10)).min(last);
    (
        wait,
        Timestamp::from_second(now.as_second() + wait).unwrap_or(now),
    )
}
/// Recent errors kept for `status`.
const RECENT_ERRORS: usize = 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Launched, not running yet.
    Pending,
    /// Running; the `pre_register` hook (content sync) is under way.
    Syncing,
    /// Content synced; registration with the ELB not yet accepted.
    Synced,
    /// Registered; waiting for the ELB to call it InService.
    Registering,
    InService,
    /// Chosen for scale-in: tagged, `pre_deregister` hook under way.
    Releasing,
    /// Deregistered; in-flight requests finish until the draining timeout.
    Draining,
    /// TerminateInstances sent; waiting for EC2 to say terminated.
    Terminating,
    /// Drained and tagged `burst-agent:pooled-since`; StopInstances sent (the warm pool).
    Stopping,
    /// Stopped in the warm pool: costs its volume only, started again before a launch.
    Stopped,
}

impl Phase {
    /// What the policy sees.
    pub fn slave_state(self) -> SlaveState {
        match self {
            Phase::Pending => SlaveState::Pending,
            Phase::Syncing | Phase::Synced | Phase::Registering => SlaveState::Syncing,
            Phase::InService => SlaveState::InService,
            Phase::Releasing | Phase::Draining | Phase::Terminating => SlaveState::Draining,
            // Stopping is still on its way out; only a stopped one can be started.
            Phase::Stopping => SlaveState::Draining,
            Phase::Stopped => SlaveState::Stopped,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Slave {
    pub id: String,
    pub intent: Option<String>,
    pub private_ip: Option<String>,
    pub private_dns: Option<String>,
    pub launched_at: Timestamp,
    pub phase: Phase,
    /// When it entered `phase`.
    pub since: Timestamp,
    pub last_sync: Option<Timestamp>,
    pub last_sync_ok: Option<bool>,
    /// Why it is being terminated, when it is not a scale-in.
    pub failure: Option<String>,
    /// In service, but not InService at the ELB since then.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unhealthy_since: Option<Timestamp>,
    /// When this agent started tracking it: EC2 may not list it until a while after.
    pub first_seen: Timestamp,
    /// EBS root: it may go to the warm pool (an instance-store root can only be terminated).
    pub ebs_root: bool,
    /// When it was last started out of the warm pool (EC2 may still list it stopped a while).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restarted_at: Option<Timestamp>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HookKind {
    PreRegister,
    ContentSync,
    /// `hooks.content_check`: after `pre_register` and after each periodic `content_sync`.
    ContentCheck,
    PreDeregister,
    PostTerminate,
}

impl HookKind {
    pub fn name(self) -> &'static str {
        match self {
            HookKind::PreRegister => "pre_register",
            HookKind::ContentSync => "content_sync",
            HookKind::ContentCheck => "content_check",
            HookKind::PreDeregister => "pre_deregister",
            HookKind::PostTerminate => "post_terminate",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ActuatorError {
    #[error("cap ledger {path}: {why}")]
    Ledger { path: PathBuf, why: String },
    #[error(transparent)]
    Journal(#[from] journal::JournalError),
    #[error(transparent)]
    Aws(#[from] crate::aws::AwsError),
    #[error("repair --adopt {0}")]
    Adopt(String),
}

/// What one call of [`Actuator::apply`] or [`Actuator::step`] did, for logs and tests.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Report {
    pub launched: Vec<String>,
    /// Started out of the warm pool.
    pub started: Vec<String>,
    /// Stopped into the warm pool.
    pub stopped: Vec<String>,
    pub registered: Vec<String>,
    pub in_service: Vec<String>,
    pub deregistered: Vec<String>,
    pub terminated: Vec<String>,
    pub adopted: Vec<String>,
    /// Instances with this group's tag that are not this agent's, seen this tick (left alone).
    pub foreign: Vec<String>,
    /// Launches the ledger refused (the last guard of the cap).
    pub refused: u32,
    pub errors: Vec<String>,
}

/// Names each new launch intent (`bi-` and 12 hex digits; random unless a test says).
pub type IntentIds = Box<dyn FnMut() -> String + Send>;

fn random_intent_id() -> String {
    format!("bi-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

pub struct Actuator<C: Cloud, H: HookRunner = ProcessHooks> {
    cloud: C,
    cfg: Config,
    disk: Arc<dyn Disk>,
    ledger: CapLedger,
    journal: Journal,
    /// The policy's memory, kept in state.json with the ledger.
    history: History,
    /// Scale-out is blocked until an operator runs `burst-agent repair`: why.
    needs_repair: Option<String>,
    /// No state was found at open: adoption tells a first start from lost state.
    fresh: bool,
    /// EC2 had no capacity for any placement: (no launch before, launches refused in a row).
    no_capacity: Option<(Timestamp, u32)>,
    /// EC2 refused the last launch for good (not capacity): (no launch before, refusals in a
    /// row, EC2's answer). Ended by a launch that goes through, a reload or `resume`.
    refused: Option<(Timestamp, u32, String)>,
    /// The files state.json replaced are renamed once it is written.
    legacy_retired: bool,
    slaves: BTreeMap<String, Slave>,
    /// At most one hook per slave at a time; post_terminate hooks outlive their slave.
    hooks: H,
    /// Hook results collected by a step that could not observe the fleet; the next one reads them.
    unheard: BTreeMap<String, (HookKind, Result<(), String>)>,
    intent_ids: IntentIds,
    sync_requested: bool,
    /// This master's own EC2 instance id, never a slave whatever its tags say.
    own_instance: Option<String>,
    /// Foreign instances already logged (each is logged once).
    foreign_logged: BTreeSet<String>,
    /// The live foreign instances the last observation saw (for `status`).
    foreign_now: Vec<String>,
    /// Of those, the ones carrying this install's group and owner tags: candidates an operator
    /// may adopt (`burst-agent repair --adopt ID`) after lost state, or a forgery.
    candidates: Vec<InstanceInfo>,
    hook_seconds: Vec<(&'static str, f64)>,
    /// Hooks that failed for good, and launches EC2 refused, since the last report.
    hook_failures: Vec<&'static str>,
    launch_failures: u32,
    recent_errors: VecDeque<(Timestamp, String)>,
    /// What an operator should hear of, since the daemon last took them (events.rs).
    events: Vec<Event>,
    /// EC2 refuses this agent's StopInstances or StartInstances for good: why (the warm pool is
    /// not used until a stop goes through).
    pool_refused: Option<String>,
    /// The instances this install's records name (kept in state.json): what makes an instance
    /// ours. Tags only find instances.
    owned: BTreeSet<String>,
    /// State from an agent before records: owner-tagged instances are claimed once, at the
    /// first adoption, and recorded.
    trust_tags_once: bool,
    /// The brake on a content sync that keeps failing the same way (brake.rs).
    brake: brake::SyncBrake,
    /// The content sources as last checked (a missing or empty one is never synced).
    sources: lifecycle::Sources,
    /// The state was lost or unreadable at open: launches wait until today's count has been
    /// read back from an independent copy (CloudWatch's `BurstCapUsed`); why, while it has not.
    cap_unverified: Option<String>,
    /// The agent's clock, written with the state (clock.rs: a restart goes on from it).
    clock_mark: Option<crate::clock::Mark>,
    /// This actuator has written a mark.
    clock_marked: bool,
}

#[derive(Clone, Copy)]
enum Batch {
    Register,
    Deregister,
}

/// Whose an instance found by this group's tag (or by id) is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ownership {
    /// This install's records name it (or the journal holds the open launch intent it carries).
    Ours,
    /// Ours by the owner tag, claimed once after an upgrade from an agent before records (or
    /// from before owner tags: its intent is in the journal, or it serves from this agent's ELB
    /// while the master's own id is known); recorded from now on.
    Legacy,
    /// Left alone, and logged once: why.
    Foreign(&'static str),
}

/// What this agent's own records say of one instance, for [`ownership`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Known {
    /// The records (owned instances, the ledger, the journal, the tracked slaves) name this
    /// instance id: the agent launched it, or an operator adopted it with `repair --adopt`.
    pub instance: bool,
    /// It carries the `burst-agent:intent` of a launch the journal has not resolved yet (its
    /// answer was lost: the intent was written before RunInstances).
    pub open_intent: bool,
    /// The journal holds its `burst-agent:intent`, resolved or not.
    pub intent: bool,
    /// It is registered with this agent's ELB.
    pub in_our_elb: bool,
    /// The state came from an agent before records: tags are trusted once.
    pub trust_tags: bool,
}

/// The one rule for which instances the agent may sync, register, deregister, stop or
/// terminate: those this install's records name. A tag is a claim anyone with
/// `ec2:CreateTags` can write, so tags only find candidates; an instance no record names is
/// foreign however it is tagged, until an operator adopts it (`burst-agent repair --adopt`).
/// `owner` is this install's `burst-agent:owner` (its ELB's name), trusted only once after an
/// upgrade from an agent before records; `own_instance` the master's own instance id, never a
/// slave whatever its tags or the records say.
pub fn ownership(
    i: &InstanceInfo,
    owner: &str,
    own_instance: Option<&str>,
    known: Known,
) -> Ownership {
    if own_instance == Some(i.id.as_str()) {
        return Ownership::Foreign("it is this master's own instance");
    }
    if known.instance || known.open_intent {
        return Ownership::Ours;
    }
    if known.trust_tags {
        if i.owner.as_deref() == Some(owner) {
            return Ownership::Legacy;
        }
        if i.owner.is_none()
            && i.intent.is_some()
            && (known.intent || (known.in_our_elb && own_instance.is_some()))
        {
            return Ownership::Legacy;
        }
    }
    match i.owner.as_deref() {
        Some(o) if o == owner => Ownership::Foreign(
            "it carries this install's tags, but no record of this install names it (tags are \
             not ownership: anyone with ec2:CreateTags can write them)",
        ),
        Some(_) => Ownership::Foreign("its burst-agent:owner names another install's ELB"),
        None => Ownership::Foreign(
            "it has no burst-agent:owner tag, and no record of this install names it",
        ),
    }
}

/// Where RunInstances call `call` (1-based) of intent `intent` goes: its subnet, and its
/// instance type (`None`: the configured one). Each type is tried in every subnet before the
/// next type in `fallbacks`. The same (intent, call) always gives the same placement.
pub fn pick_placement(
    subnets: &[String],
    fallbacks: &[String],
    intent: &str,
    call: u32,
) -> (Option<String>, Option<String>) {
    let per_type = u32::try_from(subnets.len().max(1)).unwrap_or(u32::MAX);
    let type_index = usize::try_from(call.saturating_sub(1) / per_type).unwrap_or(usize::MAX);
    let instance_type = match type_index {
        0 => None,
        n => fallbacks.get(n - 1).cloned(),
    };
    (pick_subnet(subnets, intent, call), instance_type)
}

/// How many RunInstances calls one launch may make on capacity errors: every subnet, with the
/// configured type and then each fallback type.
fn placements(subnets: &[String], fallbacks: &[String]) -> usize {
    subnets.len().max(1) * (1 + fallbacks.len())
}

/// The subnet for RunInstances call `call` (1-based) of intent `intent`: successive intents
/// start in different subnets (spreading slaves over zones), and each further call of one
/// intent moves to the next subnet, so a zone out of capacity is left, not asked again. The
/// same (intent, call) always gives the same subnet, as a client token's retry must.
pub fn pick_subnet(subnets: &[String], intent: &str, call: u32) -> Option<String> {
    if subnets.is_empty() {
        return None;
    }
    let start = intent.bytes().map(usize::from).sum::<usize>();
    let call = usize::try_from(call.saturating_sub(1)).unwrap_or(0);
    Some(subnets[(start + call) % subnets.len()].clone())
}

/// On top of a hook's own time budget: a tick or two for its result to be collected.
const HOOK_GRACE_SECS: i64 = 120;

/// The longest a hook can take: every attempt to its timeout, and the delays between.
fn hook_budget(h: &Hook) -> i64 {
    let tries = i64::from(h.retries) + 1;
    h.timeout
        .whole_secs()
        .saturating_mul(tries)
        .saturating_add(h.retry_delay.whole_secs().saturating_mul(tries - 1))
}

/// The one table of phase deadlines: how long a slave may stay in `phase` before the agent acts
/// ([`Actuator::step`]); `None` for a healthy slave in service. Overstaying Pending, Syncing,
/// Synced or Registering fails the slave (terminated, never registered); Releasing deregisters
/// anyway; Draining ends in TerminateInstances; Terminating sends it again. An in-service
/// slave the ELB has not called InService for `elb.register_timeout` is failed too.
pub fn deadline(phase: Phase, cfg: &Config) -> Option<i64> {
    Some(match phase {
        Phase::Pending => cfg.fleet.boot_timeout.whole_secs(),
        Phase::Syncing => {
            hook_budget(&cfg.hooks.pre_register)
                + cfg.hooks.content_check.as_ref().map_or(0, hook_budget)
                + HOOK_GRACE_SECS
        }
        Phase::Synced | Phase::Registering => cfg.elb.register_timeout.whole_secs(),
        Phase::InService => return None,
        Phase::Releasing => {
            cfg.hooks.pre_deregister.as_ref().map_or(0, hook_budget) + HOOK_GRACE_SECS
        }
        Phase::Draining => cfg.elb.draining_timeout.whole_secs(),
        Phase::Terminating => TERMINATE_RETRY_SECS,
        Phase::Stopping => STOP_DEADLINE_SECS,
        Phase::Stopped => cfg.fleet.warm_pool_max_age.whole_secs(),
    })
}

/// The one place that maps what EC2 and the ELB say of an untracked instance of ours to a
/// phase (adoption at start, and a slave seen late); it enters that phase now. Only synced
/// slaves are ever registered, so a registered running one is past its sync. The draining tag
/// wins over everything, so a slave on its way out is never registered again: still in the ELB,
/// it is deregistered (Releasing); out of it, it drains for the whole draining timeout from now,
/// since when it left the ELB is not known (the tag was written before). A stopped or stopping
/// one tagged `burst-agent:pooled-since` is in the warm pool; any other stopped one comes back
/// Pending and is failed by the caller (stopped outside the agent).
pub fn phase_of(i: &InstanceInfo, member: Option<MemberState>) -> Phase {
    if i.pooled_since.is_some() && member.is_none() {
        match i.state {
            InstanceState::Stopped => return Phase::Stopped,
            InstanceState::Stopping => return Phase::Stopping,
            _ => {}
        }
    }
    if i.draining_since.is_some() {
        return match member {
            Some(_) => Phase::Releasing,
            None => Phase::Draining,
        };
    }
    match (i.state, member) {
        (InstanceState::Running, Some(MemberState::InService)) => Phase::InService,
        (InstanceState::Running, Some(_)) => Phase::Registering,
        (InstanceState::Running, None) => Phase::Syncing,
        _ => Phase::Pending,
    }
}

/// The ledger key of a warm slave's start at `now`: [`restart_prefix`] and the time.
fn restart_key(id: &str, now: Timestamp) -> String {
    format!("{}{}", restart_prefix(id), now.as_second())
}

/// What the ledger keys of every start of warm slave `id` begin with.
fn restart_prefix(id: &str) -> String {
    format!("start#{id}@")
}

/// EC2 refused a StopInstances or StartInstances for good, and for sure: nothing took effect
/// and asking again will not help. Throttling is not (the SDK's retries may have sent an
/// earlier attempt that did take effect, and the next step may succeed).
fn refuses_for_good(e: &crate::aws::AwsError) -> bool {
    e.not_applied
        && (e.is_capacity()
            || [
                "UnsupportedOperation",
                "IncorrectInstanceState",
                "IncorrectSpotRequestState",
                "UnauthorizedOperation",
                "OperationNotPermitted",
                "InvalidParameterCombination",
            ]
            .contains(&e.code.as_str()))
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn age(now: Timestamp, since: Timestamp) -> i64 {
    now.as_second() - since.as_second()
}

impl<C: Cloud> Actuator<C, ProcessHooks> {
    /// Loads the ledger and journal from `agent.state_dir`. A corrupt ledger comes back blocked
    /// (scale-out refused) until [`Actuator::adopt`] rebuilds it from tags; a corrupt journal is
    /// kept aside and the tags stand in for it.
    pub fn open(cloud: C, cfg: &Config, now: Timestamp) -> Result<Self, ActuatorError> {
        Self::open_with(
            cloud,
            ProcessHooks::default(),
            Arc::new(RealDisk),
            Box::new(random_intent_id),
            cfg,
            now,
        )
    }
}

impl<C: Cloud, H: HookRunner> Actuator<C, H> {
    /// [`Actuator::open`] with its edges given: where hooks run, the state directory's disk,
    /// and how intents are named (the fault simulation passes its own of each).
    pub fn open_with(
        cloud: C,
        hooks: H,
        disk: Arc<dyn Disk>,
        intent_ids: IntentIds,
        cfg: &Config,
        now: Timestamp,
    ) -> Result<Self, ActuatorError> {
        let loaded =
            state::load(disk.as_ref(), &cfg.agent.state_dir, &cfg.cap, now).map_err(|why| {
                ActuatorError::Ledger {
                    path: state::path_in(&cfg.agent.state_dir),
                    why,
                }
            })?;
        for w in &loaded.warn {
            tracing::warn!("{w}");
        }
        for e in &loaded.error {
            tracing::error!("{e}");
        }
        let (ledger, journal, history) = (loaded.ledger, loaded.journal, loaded.history);
        let (needs_repair, fresh) = (loaded.needs_repair, loaded.fresh);
        let trust_tags_once = loaded.owned.is_none();
        let cap_unverified = (loaded.fresh || !loaded.error.is_empty()).then(|| {
            "the state was lost or unreadable: today's launches are read back from CloudWatch \
             (BurstCapUsed) before any launch"
                .to_string()
        });
        let brake = loaded.sync_brake;
        let clock_mark = loaded.clock;
        let owned = loaded.owned.unwrap_or_default();
        Ok(Actuator {
            cloud,
            cfg: cfg.clone(),
            disk,
            ledger,
            journal,
            history,
            needs_repair,
            fresh,
            no_capacity: None,
            refused: None,
            legacy_retired: false,
            slaves: BTreeMap::new(),
            hooks,
            unheard: BTreeMap::new(),
            intent_ids,
            sync_requested: false,
            own_instance: None,
            foreign_logged: BTreeSet::new(),
            foreign_now: Vec::new(),
            hook_seconds: Vec::new(),
            hook_failures: Vec::new(),
            launch_failures: 0,
            events: Vec::new(),
            recent_errors: VecDeque::new(),
            pool_refused: None,
            candidates: Vec::new(),
            owned,
            trust_tags_once,
            brake,
            sources: lifecycle::Sources::default(),
            cap_unverified,
            clock_mark,
            clock_marked: false,
        })
    }

    /// This master's own EC2 instance id (from instance metadata): never treated as a slave.
    pub fn set_own_instance(&mut self, id: Option<String>) {
        self.own_instance = id.filter(|i| !i.is_empty());
    }

    /// Live instances tagged with this group that are not this agent's, as last seen (the
    /// master's own instance aside).
    pub fn foreign(&self) -> &[String] {
        &self.foreign_now
    }

    /// Live instances with this install's group and owner tags that no record of this install
    /// names, as last seen: left alone until an operator adopts them.
    pub fn candidates(&self) -> &[InstanceInfo] {
        &self.candidates
    }

    /// The instances this install's records name.
    pub fn owned(&self) -> &BTreeSet<String> {
        &self.owned
    }

    /// The `burst-agent:owner` value of this install.
    fn owner(&self) -> &str {
        &self.cfg.elb.name
    }

    /// Observes the fleet: the group by tag, every instance the records name that the tag
    /// listing missed (its group tag removed or changed: found by id, so it is still tracked,
    /// counted and tagged again), and the ELB's members.
    async fn observe(
        &mut self,
        now: Timestamp,
    ) -> Result<(Vec<InstanceInfo>, BTreeMap<String, MemberState>), ActuatorError> {
        let mut instances = self.cloud.describe_group().await?;
        let listed: BTreeSet<String> = instances.iter().map(|i| i.id.clone()).collect();
        let missing: Vec<String> = self
            .owned
            .iter()
            .chain(self.slaves.keys())
            .filter(|id| !listed.contains(*id))
            .cloned()
            .collect::<BTreeSet<String>>()
            .into_iter()
            .collect();
        // Open intents (rare: a lost RunInstances answer), whatever their instances' group tag
        // says now.
        let open: Vec<String> = self.journal.unresolved().map(|j| j.id.clone()).collect();
        if !missing.is_empty() || !open.is_empty() {
            let found: Vec<InstanceInfo> = self
                .cloud
                .describe_named(&missing, &open)
                .await?
                .into_iter()
                .filter(|i| !listed.contains(&i.id))
                .collect();
            let seen: BTreeSet<&str> = found.iter().map(|i| i.id.as_str()).collect();
            // What EC2 no longer knows by id is gone for good, unless it launched so recently
            // that EC2 may not list it yet (eventually consistent), or a slave still tracks it.
            let recent = |id: &str| {
                self.ledger.entries().iter().any(|e| {
                    e.instance_id.as_deref() == Some(id) && age(now, e.launched_at) <= SETTLE_SECS
                }) || self.journal.intents.iter().any(|j| {
                    matches!(&j.outcome, Outcome::Launched { instance_ids } if instance_ids.iter().any(|i| i == id))
                        && age(now, j.settling_since()) <= SETTLE_SECS
                })
            };
            let gone: Vec<String> = missing
                .iter()
                .filter(|id| {
                    !seen.contains(id.as_str()) && !self.slaves.contains_key(*id) && !recent(id)
                })
                .cloned()
                .collect();
            for id in &gone {
                self.owned.remove(id);
            }
            if !found.is_empty() {
                tracing::warn!(instances = ?seen, group = %self.cfg.agent.group,
                    "instances this install's records name are missing the group tag \
                     burst-agent:group={}: found by id, still tracked; tagging them again",
                    self.cfg.agent.group);
            }
            instances.extend(found);
        }
        let members = self.cloud.elb_members().await?;
        Ok((instances, members))
    }

    /// Keeps the instances that are this agent's ([`ownership`]: its records name them); logs
    /// each other one once (an event for a live one) and leaves it alone. Tags what is ours
    /// but lacks this install's group or owner tag, and records every instance it keeps.
    async fn claim(
        &mut self,
        instances: Vec<InstanceInfo>,
        members: &BTreeMap<String, MemberState>,
        now: Timestamp,
        report: &mut Report,
    ) -> Vec<InstanceInfo> {
        let owner = self.owner().to_string();
        let group = self.cfg.agent.group.clone();
        let trust_tags = std::mem::take(&mut self.trust_tags_once);
        let mut ours = Vec::with_capacity(instances.len());
        let mut retag_owner = Vec::new();
        let mut retag_group = Vec::new();
        let mut foreign = Vec::new();
        let mut candidates = Vec::new();
        let mut recorded = false;
        // An open intent (its RunInstances answer lost) claims what its own call launched: an
        // instance whose EC2 ClientToken is one of the intent's (nobody can write that after
        // launch); where EC2 does not report tokens, at most its attempts' count of the
        // instances carrying its tag, the earliest EC2 launched after the intent was written.
        // A stranger's instance tagged with a copy of the intent is left out.
        let mut by_open_intent: BTreeSet<String> = BTreeSet::new();
        for j in self.journal.unresolved() {
            let written = j.created_at.as_second() - CLOCK_SKEW_SECS;
            let stem = format!("{}-", j.id);
            let tagged_with = |i: &&InstanceInfo| i.intent.as_deref() == Some(j.id.as_str());
            // Its own call's token: EC2's word, whatever the clocks say.
            by_open_intent.extend(
                instances
                    .iter()
                    .filter(tagged_with)
                    .filter(|i| {
                        i.client_token
                            .as_deref()
                            .is_some_and(|t| t.starts_with(&stem))
                    })
                    .map(|i| i.id.clone()),
            );
            let mut tagged: Vec<(Timestamp, &str)> = instances
                .iter()
                .filter(tagged_with)
                .filter(|i| i.client_token.is_none())
                .filter_map(|i| i.ec2_launched_at.map(|t| (t, i.id.as_str())))
                .filter(|(t, _)| t.as_second() >= written)
                .collect();
            tagged.sort();
            by_open_intent.extend(
                tagged
                    .into_iter()
                    .take(j.keys.len())
                    .map(|(_, id)| id.to_string()),
            );
        }
        for i in instances {
            let known = Known {
                instance: self.owned.contains(&i.id)
                    || self.slaves.contains_key(&i.id)
                    || self.journal.launched(&i.id)
                    || self
                        .ledger
                        .entries()
                        .iter()
                        .any(|e| e.instance_id.as_deref() == Some(i.id.as_str())),
                open_intent: by_open_intent.contains(&i.id),
                intent: i.intent.as_deref().is_some_and(|t| self.journal.knows(t)),
                in_our_elb: members.contains_key(&i.id),
                trust_tags,
            };
            match ownership(&i, &owner, self.own_instance.as_deref(), known) {
                Ownership::Ours | Ownership::Legacy => {
                    if alive(i.state) {
                        if i.owner.as_deref() != Some(owner.as_str()) {
                            retag_owner.push(i.id.clone());
                        }
                        if i.group.as_deref() != Some(group.as_str()) {
                            retag_group.push(i.id.clone());
                        }
                    }
                    if !matches!(i.state, InstanceState::Terminated) {
                        recorded |= self.owned.insert(i.id.clone());
                    }
                    ours.push(i);
                }
                Ownership::Foreign(why) => {
                    let master = self.own_instance.as_deref() == Some(i.id.as_str());
                    if self.foreign_logged.insert(i.id.clone()) {
                        // The master's own instance is expected; anything else is news.
                        if !master && alive(i.state) {
                            self.events.push(Event::new(
                                EventKind::ForeignInstance,
                                Some(&i.id),
                                format!(
                                    "{} carries burst-agent:group={} but is not this agent's: \
                                     {why} ({}); left alone: never synced, \
                                     registered, stopped or terminated",
                                    i.id,
                                    self.cfg.agent.group,
                                    i.owner.as_deref().map_or_else(
                                        || "no burst-agent:owner tag".to_string(),
                                        |o| format!("burst-agent:owner={o}")
                                    )
                                ),
                            ));
                        }
                        tracing::warn!(instance_id = %i.id, owner = ?i.owner, ec2_state = ?i.state,
                            "instance {} carries burst-agent:group={} but is not this agent's: \
                             {why}; leaving it alone", i.id, self.cfg.agent.group);
                    }
                    if alive(i.state) && !master {
                        foreign.push(i.id.clone());
                        if i.owner.as_deref() == Some(owner.as_str()) {
                            candidates.push(i.clone());
                        }
                    }
                    report.foreign.push(i.id);
                }
            }
        }
        self.foreign_now = foreign;
        self.candidates = candidates;
        if recorded && !self.cfg.agent.dry_run {
            self.save_state(now, report);
        }
        if self.cfg.agent.dry_run {
            return ours;
        }
        for (ids, key, value) in [
            (retag_owner, TAG_OWNER, owner.as_str()),
            (retag_group, cloud::TAG_GROUP, group.as_str()),
        ] {
            if ids.is_empty() {
                continue;
            }
            match self.cloud.tag(&ids, key, value).await {
                Ok(()) => tracing::info!(instances = ?ids, tag = key, value,
                    "tagged this install's slaves with {key}={value} again"),
                Err(e) => {
                    let msg = format!("tagging {ids:?} with {key}: {e}");
                    self.error(now, report, msg);
                }
            }
        }
        ours
    }

    pub fn ledger(&self) -> &CapLedger {
        &self.ledger
    }

    /// What the policy remembered when the agent last wrote its state.
    pub fn history(&self) -> &History {
        &self.history
    }

    /// Keeps the policy's memory with the state. Written at once when the last scaling or the
    /// last time slaves were needed changed (cooldowns must survive a restart); otherwise with
    /// the next write.
    pub fn keep_history(&mut self, h: &History, now: Timestamp) {
        let marks = |h: &History| (h.last_scale_out, h.last_scale_in, h.last_needed);
        let changed = marks(h) != marks(&self.history);
        self.history = h.clone();
        if changed && !self.cfg.agent.dry_run {
            self.save_state(now, &mut Report::default());
        }
    }

    /// Writes the state now (at shutdown).
    pub fn flush(&mut self, now: Timestamp) -> bool {
        self.cfg.agent.dry_run || self.save_state(now, &mut Report::default())
    }

    /// Until when the policy must not launch: EC2 had no capacity in any subnet for any type.
    pub fn no_capacity_until(&self, now: Timestamp) -> Option<Timestamp> {
        self.no_capacity.map(|(t, _)| t).filter(|t| *t > now)
    }

    /// EC2 refused the last launch for good: until when launches wait, and its answer.
    pub fn launch_refused(&self, now: Timestamp) -> Option<crate::policy::LaunchRefused> {
        self.refused
            .as_ref()
            .filter(|(t, _, _)| *t > now)
            .map(|(t, _, c)| crate::policy::LaunchRefused {
                until: *t,
                cause: c.clone(),
            })
    }

    /// A launch EC2 refused for good (a missing profile, group or AMI, IAM, a limit): the same
    /// request gets the same answer, so the next waits, longer each time in a row (1 min
    /// doubling to 15 min), instead of calling RunInstances at every decision.
    fn refuse_back_off(&mut self, now: Timestamp, e: &crate::aws::AwsError) {
        let streak = self.refused.as_ref().map_or(0, |(_, n, _)| *n);
        let (wait, until) = backoff(now, streak);
        tracing::warn!(wait_secs = wait, streak = streak + 1, code = %e.code,
            "EC2 refused the launch for good; next launch at {until}, or at once after the fix \
             and `systemctl reload burst-agent` (`burst-agent preflight` names the key)");
        self.refused = Some((until, streak + 1, format!("{}: {}", e.code, e.message)));
    }

    /// A launch ended with no capacity anywhere: back off, longer each time in a row.
    fn back_off(&mut self, now: Timestamp) {
        let streak = self.no_capacity.map_or(0, |(_, n)| n);
        let (wait, until) = backoff(now, streak);
        tracing::warn!(
            wait_secs = wait,
            streak = streak + 1,
            "EC2 had no capacity in any subnet for any instance type; next launch at {until}"
        );
        self.no_capacity = Some((until, streak + 1));
    }

    /// Why scale-out waits for `burst-agent repair`, if it does.
    pub fn needs_repair(&self) -> Option<&str> {
        self.needs_repair.as_deref()
    }

    /// `burst-agent repair`: rebuilds the ledger from what is known (the readable state, the
    /// journal, every instance of ours EC2 lists), counts at least `used_today` instances today
    /// when the operator says more were used (from billing or CloudTrail), clears the block and
    /// writes the state. Lists the candidates (instances tagged as this install's that no
    /// record names: tags, launch time, ELB membership) and adopts those in `adopt`, the
    /// operator's word that they are this install's; the others stay foreign, and those
    /// launched today are counted against the cap without being claimed. Returns what it did,
    /// line by line.
    pub async fn repair(
        &mut self,
        now: Timestamp,
        used_today: Option<u32>,
        adopt: &[String],
    ) -> Result<Vec<String>, ActuatorError> {
        let mut report = Report::default();
        let (instances, members) = self.observe(now).await?;
        let mut instances = self.claim(instances, &members, now, &mut report).await;
        let unknown: Vec<&String> = adopt
            .iter()
            .filter(|id| !self.candidates.iter().any(|c| &c.id == *id))
            .collect();
        if !unknown.is_empty() {
            return Err(ActuatorError::Adopt(format!(
                "{unknown:?}: not a candidate (a live instance tagged burst-agent:group={} and \
                 burst-agent:owner={} that no record of this install names); nothing was \
                 changed; `burst-agent repair` without --adopt lists the candidates",
                self.cfg.agent.group,
                self.owner()
            )));
        }
        let mut out = vec![match &self.needs_repair {
            Some(why) => format!("was blocked: {why}"),
            None => match self.ledger.is_blocked() {
                Some(why) => format!("was blocked: {why}"),
                None => "was not blocked".to_string(),
            },
        }];
        let (_, day_start, _) = self.ledger.day_bounds(now);
        let mut left = Vec::new();
        for c in std::mem::take(&mut self.candidates) {
            let line = format!(
                "{} {} ({:?}, launched {}, {}, intent tag {})",
                if adopt.contains(&c.id) {
                    "adopted"
                } else {
                    "candidate, left alone:"
                },
                c.id,
                c.state,
                c.launched_at
                    .map_or_else(|| "at an unknown time".to_string(), |t| t.to_string()),
                if members.contains_key(&c.id) {
                    "in the ELB"
                } else {
                    "not in the ELB"
                },
                c.intent.as_deref().unwrap_or("none"),
            );
            out.push(line);
            if adopt.contains(&c.id) {
                self.owned.insert(c.id.clone());
                instances.push(c);
            } else {
                left.push(c);
            }
        }
        if !left.is_empty() {
            out.push(format!(
                "{} candidate(s) left alone; if one is this install's, run repair again with \
                 --adopt ID",
                left.len()
            ));
        }
        let mut entries = rebuild_entries(self.ledger.entries(), &self.journal, &instances, now);
        // A candidate launched today may have been this install's: counted, never claimed.
        for c in left
            .iter()
            .filter(|c| c.launched_at.is_none_or(|t| t >= day_start))
        {
            entries.push(cap::Entry {
                key: format!("candidate-{}", c.id),
                instance_id: None,
                launched_at: day_start,
                ended_at: Some(now),
            });
        }
        self.candidates = left;
        let probe = self.ledger.clone().rebuilt_from(entries.clone());
        let known = probe.used(now);
        out.push(format!(
            "known: {known} instance(s) today from the state, the journal and {} instance(s) \
             EC2 lists for this install",
            instances.len()
        ));
        self.ledger = self.ledger.clone().rebuilt_from(entries);
        if let Some(n) = used_today {
            out.extend(self.count_at_least(n, "the operator", now));
        }
        self.needs_repair = None;
        // The operator has said what today used (or that the state and EC2 say it all).
        self.cap_unverified = None;
        if !self.save_state(now, &mut report) {
            return Err(ActuatorError::Ledger {
                path: state::path_in(&self.cfg.agent.state_dir),
                why: report.errors.join("; "),
            });
        }
        out.push(format!("burst cap now {}", self.ledger.status(now)));
        out.push(
            "start the agent again (systemctl start burst-agent); `burst-agent status` shows its \
             last snapshot until it has run"
                .into(),
        );
        Ok(out)
    }

    pub fn slaves(&self) -> impl Iterator<Item = &Slave> {
        self.slaves.values()
    }

    pub fn slave(&self, id: &str) -> Option<&Slave> {
        self.slaves.get(id)
    }

    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    pub fn cloud(&self) -> &C {
        &self.cloud
    }

    /// Hooks under way (per slave, plus post_terminate ones).
    pub fn hooks_in_flight(&self) -> usize {
        self.hooks.in_flight()
    }

    /// Hook run times since the last call, for the agent's own metrics.
    pub fn take_hook_seconds(&mut self) -> Vec<(&'static str, f64)> {
        std::mem::take(&mut self.hook_seconds)
    }

    /// Hooks that failed for good and launches EC2 refused since the last call (the alarms'
    /// metrics).
    /// Events since the last call, for the notifier.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    pub fn take_failures(&mut self) -> (Vec<&'static str>, u32) {
        (
            std::mem::take(&mut self.hook_failures),
            std::mem::take(&mut self.launch_failures),
        )
    }

    pub fn recent_errors(&self) -> impl Iterator<Item = &(Timestamp, String)> {
        self.recent_errors.iter()
    }

    /// Syncs content to every in-service slave at the next step, whatever the interval says.
    pub fn request_sync(&mut self) {
        self.sync_requested = true;
    }

    /// Takes a new config (SIGHUP). Slaves, ledger entries and journal stay; `[cap]` applies at
    /// once: a lower limit stops launches, a higher one allows them, and a new time zone never
    /// grants a fresh day (the old zone's day under way keeps counting until it ends).
    pub fn reconfigure(&mut self, cfg: &Config, now: Timestamp) {
        // A reload is the operator's "fixed": a launch EC2 refused may go again at once.
        if self.refused.take().is_some() {
            tracing::info!("reload: the launch EC2 refused may be tried again at once");
        }
        let (old, new) = (self.cfg.cap.clone(), cfg.cap.clone());
        self.ledger
            .set_limits(new.daily_limit, Some(new.daily_instance_hours));
        if old.daily_limit != new.daily_limit
            || old.daily_instance_hours != new.daily_instance_hours
        {
            tracing::info!(
                was = old.daily_limit,
                now = new.daily_limit,
                "burst cap changed: {}",
                self.ledger.status(now)
            );
        }
        let mut report = Report::default();
        match self.ledger.set_time_zone(&new.time_zone, now) {
            Ok(true) => {
                tracing::warn!(was = %old.time_zone, now = %new.time_zone,
                    "cap.time_zone changed: the day under way in {} keeps counting until it \
                     ends; burst cap {}", old.time_zone, self.ledger.status(now));
                self.save_state(now, &mut report);
            }
            Ok(false) => {}
            // check-config rejects unknown zones before a reload gets here.
            Err(e) => self.error(now, &mut report, format!("cap.time_zone not applied: {e}")),
        }
        self.cfg = cfg.clone();
        // A reload is how an operator says the hook or the image was fixed.
        self.resume("a reload", now);
    }

    /// The slaves as the policy sees them (metrics are added by the caller), and the launches
    /// whose outcome is not known yet: each attempt of an unresolved intent that no tracked
    /// slave stands for yet is capacity on the way (`pending`, named by its ledger key), so
    /// the next decision does not launch again for the same need. After `fleet.boot_timeout`
    /// an unresolved attempt is no longer counted as on the way (it stays charged to the cap
    /// until resolved).
    pub fn observation(&self, now: Timestamp) -> Vec<SlaveObservation> {
        let mut out: Vec<SlaveObservation> = self
            .slaves
            .values()
            .map(|s| SlaveObservation {
                id: s.id.clone(),
                state: s.phase.slave_state(),
                // Started out of the warm pool: its min_lifetime and victim order count from
                // the start.
                launched_at: s.restarted_at.unwrap_or(s.launched_at),
                metrics: None,
            })
            .collect();
        let expiry = self.cfg.fleet.boot_timeout.whole_secs();
        for intent in self.journal.unresolved() {
            if age(now, intent.created_at) > expiry {
                continue;
            }
            let tracked = self
                .slaves
                .values()
                .filter(|s| s.intent.as_deref() == Some(intent.id.as_str()))
                .count();
            out.extend(
                intent
                    .keys
                    .iter()
                    .skip(tracked)
                    .map(|key| SlaveObservation {
                        id: key.clone(),
                        state: SlaveState::Pending,
                        launched_at: intent.created_at,
                        metrics: None,
                    }),
            );
        }
        out
    }

    fn error(&mut self, now: Timestamp, report: &mut Report, msg: String) {
        tracing::error!("{msg}");
        report.errors.push(msg.clone());
        self.recent_errors.push_back((now, msg));
        while self.recent_errors.len() > RECENT_ERRORS {
            self.recent_errors.pop_front();
        }
    }

    /// Writes the ledger and the intents, together, in one atomic replacement of state.json.
    /// On failure nothing is launched: the write-ahead rule needs it on disk first.
    fn save_state(&mut self, now: Timestamp, report: &mut Report) -> bool {
        let dir = self.cfg.agent.state_dir.clone();
        let snap = state::Snapshot {
            ledger: &self.ledger,
            journal: &self.journal,
            history: &self.history,
            needs_repair: self.needs_repair.as_deref(),
            owned: &self.owned,
            sync_brake: &self.brake,
            clock: self.clock_mark.as_ref(),
        };
        match state::write(self.disk.as_ref(), &dir, &snap) {
            Ok(()) => {
                if !std::mem::replace(&mut self.legacy_retired, true) {
                    state::retire_legacy(self.disk.as_ref(), &dir);
                }
                true
            }
            Err(e) => {
                let msg = format!(
                    "could not write {}: {e}; launches stop until it can be written",
                    state::path_in(&dir).display()
                );
                self.error(now, report, msg);
                false
            }
        }
    }

    fn vars(&self, s: &Slave) -> HookVars {
        HookVars {
            instance_id: s.id.clone(),
            private_ip: s.private_ip.clone().unwrap_or_default(),
            private_dns: s.private_dns.clone().unwrap_or_default(),
            group: self.cfg.agent.group.clone(),
            state_dir: self.cfg.agent.state_dir.to_string_lossy().into_owned(),
        }
    }

    fn spawn_hook(&mut self, id: &str, kind: HookKind, hook: Hook) {
        let Some(s) = self.slaves.get(id) else { return };
        let vars = self.vars(s);
        self.hooks.start(id, kind, &hook, vars);
    }

    fn set_phase(&mut self, id: &str, phase: Phase, now: Timestamp) {
        if let Some(s) = self.slaves.get_mut(id) {
            lifecycle::enter(s, phase, now);
        }
    }

    // ---------------------------------------------------------------- adoption

    /// At start: lists the group's instances and the ELB's members, re-attaches to every live
    /// slave, resolves launches a crash left open, and brings the cap ledger in line with the
    /// tags (rebuilding it when the stored one was unreadable). Nothing is launched twice and
    /// nothing running is forgotten.
    pub async fn adopt(&mut self, now: Timestamp) -> Result<Report, ActuatorError> {
        let mut report = Report::default();
        let (instances, members) = self.observe(now).await?;
        let instances = self.claim(instances, &members, now, &mut report).await;
        if std::mem::take(&mut self.fresh) && !self.candidates.is_empty() {
            let ids: Vec<&str> = self.candidates.iter().map(|i| i.id.as_str()).collect();
            let why = format!(
                "no state in {} but EC2 lists {} instance(s) tagged as this install's ({}): the \
                 state was lost (or someone tagged them), launches EC2 no longer lists cannot \
                 be counted, and none of them is touched until an operator says it is ours; \
                 stop the agent, run `sudo -u burst-agent burst-agent repair` to see them, then \
                 `repair --adopt ID` for each that is this install's (with `--used-today N` \
                 from billing or CloudTrail)",
                self.cfg.agent.state_dir.display(),
                ids.len(),
                ids.join(", ")
            );
            self.error(now, &mut report, why.clone());
            self.needs_repair = Some(why.clone());
            self.ledger = self.ledger.clone().blocked(why);
        }
        if let (Some(why), None) = (
            self.ledger.is_blocked().map(str::to_string),
            &self.needs_repair,
        ) {
            let rebuilt = self.ledger.clone().rebuilt_from(rebuild_entries(
                self.ledger.entries(),
                &self.journal,
                &instances,
                now,
            ));
            tracing::warn!(was = %why, used = rebuilt.used(now),
                "cap ledger rebuilt from what could still be read, the launch journal and the \
                 instances' tags (EC2 lists terminated instances for about an hour only)");
            self.ledger = rebuilt;
            self.save_state(now, &mut report);
        }
        self.check_sources(now, &mut report);
        let plan = lifecycle::adopt(
            &self.slaves,
            &lifecycle::Observed {
                instances: &instances,
                members: &members,
                sources: &self.sources,
            },
            &self.running_hooks(),
            now,
            &self.cfg,
        );
        self.carry_out(plan, now, &mut report);
        // After the loop above, so slaves found by their intent tag keep the phase it gave them.
        self.resolve_intents(&instances, now, &mut report).await;
        let changes = self
            .ledger
            .reconcile(&self.seen_all(&instances, now), now, SETTLE_SECS);
        for c in &changes {
            tracing::info!("cap ledger: {c}");
        }
        self.ledger.prune(now);
        self.journal.prune(now, JOURNAL_KEEP_SECS);
        self.save_state(now, &mut report);
        // Host keys of slaves that ended while no agent ran.
        let live: BTreeSet<&str> = self.slaves.keys().map(String::as_str).collect();
        let gone = hooks::forget_host_keys_except(&self.cfg.agent.state_dir, &live);
        if gone > 0 {
            tracing::info!(
                removed = gone,
                "removed the pinned ssh host keys of slaves that are gone"
            );
        }
        Ok(report)
    }

    /// Intents written before a RunInstances whose answer never made it to the journal: their
    /// instances are found by the intent tag; an intent EC2 still lists nothing of, 300 s after
    /// its last call, launched nothing.
    async fn resolve_intents(
        &mut self,
        instances: &[InstanceInfo],
        now: Timestamp,
        report: &mut Report,
    ) {
        let open: Vec<Intent> = self.journal.unresolved().cloned().collect();
        for intent in open {
            let found: Vec<&InstanceInfo> = instances
                .iter()
                .filter(|i| i.intent.as_deref() == Some(intent.id.as_str()))
                .collect();
            if !found.is_empty() {
                let ids: Vec<String> = found.iter().map(|i| i.id.clone()).collect();
                for i in found.iter().filter(|i| alive(i.state)) {
                    self.slaves
                        .entry(i.id.clone())
                        .or_insert_with(|| slave_from(i, Phase::Pending, now, now));
                }
                // EC2 is eventually consistent: fewer instances than attempts may be all it
                // launched, or all it lists yet. Only once it has had time to list them all are
                // the missing attempts known to have launched nothing.
                if ids.len() < intent.keys.len() && age(now, intent.settling_since()) <= SETTLE_SECS
                {
                    tracing::info!(intent = %intent.id, instances = ?ids, of = intent.keys.len(),
                        "launch intent partly found by tag; waiting for EC2 to list the rest");
                    continue;
                }
                tracing::info!(intent = %intent.id, instances = ?ids,
                    "launch intent resolved from tags");
                self.finish_intent(&intent, &ids, now, report);
                continue;
            }
            if self.cfg.agent.dry_run {
                continue;
            }
            // Nothing lists it. Every instance of a launch carries its intent tag from the
            // moment it exists (RunInstances tags atomically), so once EC2 has had time to list
            // what the last call launched, nothing was launched: the attempts are withdrawn and
            // the policy decides anew. Never sent again: a launch asked for minutes ago may no
            // longer be wanted, and a repeat could launch what nobody decided.
            if age(now, intent.settling_since()) <= SETTLE_SECS {
                continue;
            }
            let why = format!(
                "EC2 lists no instance of this launch {}s after its last RunInstances: nothing \
                 was launched",
                age(now, intent.settling_since())
            );
            self.fail_intent(&intent, &why, now, report);
        }
    }

    /// What the ledger is reconciled with: every instance EC2 lists, and the slaves this agent
    /// started tracking too recently for EC2 to list them yet (alive, not ended).
    fn seen_all(&self, instances: &[InstanceInfo], now: Timestamp) -> Vec<Seen> {
        let mut out: Vec<Seen> = instances.iter().map(|i| seen(i, now)).collect();
        for s in self.slaves.values() {
            if age(now, s.first_seen) <= SETTLE_SECS && !instances.iter().any(|i| i.id == s.id) {
                out.push(Seen {
                    instance_id: s.id.clone(),
                    intent: s.intent.clone(),
                    launched_at: s.launched_at,
                    ended_at: None,
                    stopped: false,
                    stopped_by: None,
                });
            }
        }
        out
    }

    /// Binds an intent's ledger attempts to its instances, withdraws the ones EC2 did not fill.
    fn finish_intent(&mut self, intent: &Intent, ids: &[String], now: Timestamp, r: &mut Report) {
        let free = self.bind_free(intent, ids);
        // What is left launched nothing: EC2 answered with fewer, or has listed all there is.
        for key in free {
            if let Err(e) = self.ledger.withdraw(&key) {
                tracing::warn!(key, "cap ledger: {e}");
            }
        }
        if let Some(j) = self.journal.get_mut(&intent.id) {
            j.outcome = Outcome::Launched {
                instance_ids: ids.to_vec(),
            };
        }
        self.save_state(now, r);
    }

    /// Binds each of `ids` to one attempt of `intent`: attempts already bound (the ledger's
    /// reconcile binds by intent tag) stay; the others take the free attempts in order. Returns
    /// the attempts still free.
    fn bind_free(&mut self, intent: &Intent, ids: &[String]) -> VecDeque<String> {
        let entries = self.ledger.entries();
        let bound: BTreeSet<String> = entries
            .iter()
            .filter(|e| intent.keys.contains(&e.key))
            .filter_map(|e| e.instance_id.clone())
            .collect();
        let mut free: VecDeque<String> = intent
            .keys
            .iter()
            .filter(|k| {
                entries
                    .iter()
                    .any(|e| &e.key == *k && e.instance_id.is_none())
            })
            .cloned()
            .collect();
        // Launched by this install: its records name them from now on, whatever their tags.
        self.owned.extend(ids.iter().cloned());
        for id in ids.iter().filter(|id| !bound.contains(*id)) {
            match free.pop_front() {
                Some(key) => {
                    if let Err(e) = self.ledger.bind(&key, id) {
                        tracing::warn!(key, instance_id = %id, "cap ledger: {e}");
                    }
                }
                None => tracing::warn!(intent = %intent.id, instance_id = %id,
                    "more instances than launch attempts for this intent"),
            }
        }
        free
    }

    fn fail_intent(&mut self, intent: &Intent, error: &str, now: Timestamp, r: &mut Report) {
        self.launch_failures += 1;
        self.events.push(Event::new(
            EventKind::LaunchFailed,
            None,
            format!(
                "launch {} of {} slave(s) failed, nothing charged to the cap: {error}",
                intent.id,
                intent.keys.len()
            ),
        ));
        for key in &intent.keys {
            let _ = self.ledger.withdraw(key);
        }
        if let Some(j) = self.journal.get_mut(&intent.id) {
            j.outcome = Outcome::Failed {
                error: error.to_string(),
            };
        }
        self.save_state(now, r);
        self.error(
            now,
            r,
            format!("launch {} failed for good: {error}", intent.id),
        );
    }

    // ---------------------------------------------------------------- decisions

    /// Starts carrying out a decision. Scale-out launches at once (after the ledger and journal
    /// are on disk); scale-in tags the victims and starts their release. The rest happens in
    /// [`Actuator::step`].
    pub async fn apply(&mut self, decision: &Decision, now: Timestamp) -> Report {
        let mut report = Report::default();
        match decision {
            Decision::Hold { .. } => {}
            Decision::ScaleOut { count, .. } if self.cfg.agent.dry_run => {
                tracing::info!(count, "dry run: would launch {count} slave(s)");
            }
            Decision::ScaleIn { instances, .. } if self.cfg.agent.dry_run => {
                tracing::info!(instances = ?instances, "dry run: would release {}", instances.join(", "));
            }
            Decision::ScaleOut { count, .. } => self.launch(*count, now, &mut report).await,
            Decision::ScaleIn { instances, .. } => self.release(instances, now, &mut report).await,
        }
        report
    }

    async fn launch(&mut self, count: u32, now: Timestamp, report: &mut Report) {
        // The warm pool first: faster than a launch, and free when it ran today already.
        let started = self.start_warm(count, now, report).await;
        let mut count = count.saturating_sub(started);
        if count == 0 {
            return;
        }
        if let Some(why) = self
            .sources
            .pre_register
            .clone()
            .or_else(|| self.cap_unverified.clone())
            .or_else(|| {
                self.launch_refused(now).map(|r| {
                    format!(
                        "EC2 refused the last launch for good ({}); the next waits until {}",
                        r.cause, r.until
                    )
                })
            })
        {
            report.refused = count;
            tracing::warn!(asked = count, "launches are held: {why}");
            return;
        }
        let gate = self.brake_gate(now);
        match gate {
            brake::Gate::Open => {}
            brake::Gate::Trial => count = 1,
            brake::Gate::Closed => {
                report.refused = count;
                tracing::warn!(
                    asked = count,
                    "launches are held: the content sync keeps failing ({}); fix it, then \
                     `systemctl reload burst-agent` or `burst-agent resume`",
                    self.brake.tripped.as_ref().map_or("", |t| t.cause.as_str())
                );
                return;
            }
        }
        let id = (self.intent_ids)();
        if gate == brake::Gate::Trial {
            self.brake.trial_started(&id, now);
            tracing::warn!(intent = %id,
                "one trial launch while content sync is broken: if its sync fails the same way, \
                 the next trial waits twice as long");
        }
        let mut keys = Vec::new();
        for n in 1..=count {
            let key = format!("{id}#{n}");
            match self.ledger.record_attempt(&key, now) {
                Ok(()) => keys.push(key),
                Err(e) => {
                    report.refused = count - (n - 1);
                    tracing::error!(
                        asked = count,
                        allowed = keys.len(),
                        "the cap ledger refused a launch the policy asked for: {e}"
                    );
                    break;
                }
            }
        }
        if keys.is_empty() {
            return;
        }
        let intent = Intent {
            id: id.clone(),
            created_at: now,
            keys: keys.clone(),
            outcome: Outcome::Started,
            open_call: 0,
            last_sent: None,
        };
        self.journal.intents.push(intent.clone());
        // Write-ahead: no RunInstances unless the attempt is durably counted and journaled.
        if !self.save_state(now, report) {
            for k in &keys {
                let _ = self.ledger.withdraw(k);
            }
            self.journal.intents.retain(|i| i.id != id);
            return;
        }
        let n = u32::try_from(keys.len()).unwrap_or(u32::MAX);
        let t = std::time::Instant::now();
        let mut got: Vec<InstanceInfo> = Vec::new();
        let subnets = self.cfg.fleet.subnet_ids.clone();
        let fallbacks = self.cfg.fleet.fallback_instance_types.clone();
        let mut call = 0u32;
        let mut no_capacity: Vec<String> = Vec::new();
        // First ask for as many as EC2 can give (min 1). No capacity in a zone: the next subnet
        // at once, each subnet once. If EC2 gave fewer than asked, ask once more for the rest,
        // all or nothing. (Moto launches only MinCount, so tests see two calls.)
        let mut shortfall = false;
        loop {
            let want = n - u32::try_from(got.len()).unwrap_or(0);
            if want == 0 {
                break;
            }
            call += 1;
            let (subnet, instance_type) = pick_placement(&subnets, &fallbacks, &id, call);
            let req = LaunchRequest {
                intent: id.clone(),
                owner: self.owner().to_string(),
                client_token: intent.client_token(call),
                min: if shortfall { want } else { 1 },
                max: want,
                launched_at: now,
                subnet: subnet.clone(),
                instance_type: instance_type.clone(),
            };
            match self.cloud.launch(&req).await {
                Ok(more) => {
                    got.extend(more);
                    if shortfall {
                        break;
                    }
                    shortfall = true;
                }
                // The call for the rest was refused: EC2 launched fewer than asked, for sure.
                Err(e) if shortfall && e.not_applied => {
                    tracing::warn!(intent = %id, launched = got.len(), asked = n,
                        "EC2 launched fewer slaves than asked: {e}");
                    break;
                }
                Err(e)
                    if e.is_capacity()
                        && usize::try_from(call).unwrap_or(usize::MAX)
                            < placements(&subnets, &fallbacks) =>
                {
                    let here = format!(
                        "{} in {}",
                        instance_type.as_deref().unwrap_or("the configured type"),
                        subnet.as_deref().unwrap_or("EC2's choice of subnet")
                    );
                    let (next_subnet, next_type) =
                        pick_placement(&subnets, &fallbacks, &id, call + 1);
                    tracing::warn!(intent = %id, code = %e.code, next_subnet = ?next_subnet,
                        next_type = ?next_type, "no EC2 capacity for {here}; trying the next placement");
                    self.events.push(Event::new(
                        EventKind::CapacityFallback,
                        None,
                        format!(
                            "no EC2 capacity for {here} ({}); trying {} in {}",
                            e.code,
                            next_type.as_deref().unwrap_or("the configured type"),
                            next_subnet.as_deref().unwrap_or("EC2's choice of subnet")
                        ),
                    ));
                    no_capacity.push(here);
                }
                Err(e) if e.not_applied || !e.retryable => {
                    // EC2 refused: nothing was launched, so nothing is charged to the cap.
                    if e.is_capacity() {
                        self.back_off(now);
                    } else if !e.retryable {
                        self.refuse_back_off(now, &e);
                    }
                    let mut why = e.to_string();
                    if !no_capacity.is_empty() {
                        why = format!("{why} (no capacity for {} either)", no_capacity.join(", "));
                    }
                    self.fail_intent(&intent, &why, now, report);
                    return;
                }
                Err(e) => {
                    // The call may or may not have launched: leave the intent open (its
                    // attempts stay charged and count as on the way); the next steps find its
                    // instances by tag, or settle it as not launched once EC2 had time to list
                    // them. What earlier calls of this launch gave is tracked now.
                    if let Some(j) = self.journal.get_mut(&id) {
                        j.open_call = call;
                        j.last_sent = Some(now);
                    }
                    let ids: Vec<String> = got.iter().map(|i| i.id.clone()).collect();
                    for i in &got {
                        self.slaves
                            .insert(i.id.clone(), slave_from(i, Phase::Pending, now, now));
                    }
                    report.launched.extend(ids.iter().cloned());
                    self.bind_free(&intent, &ids);
                    self.save_state(now, report);
                    let msg = format!("launch {id} of {n}: {e}; will resolve from tags");
                    self.error(now, report, msg);
                    return;
                }
            }
        }
        let ids: Vec<String> = got.iter().map(|i| i.id.clone()).collect();
        if !ids.is_empty() {
            self.no_capacity = None;
            self.refused = None;
        }
        tracing::info!(intent = %id, asked = n, launched = ids.len(), instances = ?ids,
            secs = t.elapsed().as_secs_f64(), "launched {} slave(s)", ids.len());
        if !ids.is_empty() {
            self.events.push(Event::new(
                EventKind::ScaleOut,
                None,
                format!(
                    "launched {} of {n} slave(s) {ids:?}; cap {}",
                    ids.len(),
                    self.ledger.status(now)
                ),
            ));
        }
        for i in &got {
            self.slaves
                .insert(i.id.clone(), slave_from(i, Phase::Pending, now, now));
        }
        report.launched.extend(ids.iter().cloned());
        self.finish_intent(&intent, &ids, now, report);
    }

    async fn release(&mut self, victims: &[String], now: Timestamp, report: &mut Report) {
        let ids: Vec<String> = victims
            .iter()
            .filter(|id| {
                let ok = self
                    .slaves
                    .get(*id)
                    .is_some_and(|s| matches!(s.phase, Phase::InService | Phase::Registering));
                if !ok {
                    tracing::warn!(instance_id = %id, "not releasing: not an in-service slave");
                }
                ok
            })
            .cloned()
            .collect();
        if ids.is_empty() {
            return;
        }
        // The tag first: after a crash, it tells adoption this slave is on its way out and must
        // not be registered again.
        if let Err(e) = self
            .cloud
            .tag(&ids, TAG_DRAINING_SINCE, &now.to_string())
            .await
        {
            self.error(
                now,
                report,
                format!("could not tag {ids:?} for release: {e}"),
            );
            return;
        }
        self.events.push(Event::new(
            EventKind::ScaleIn,
            None,
            format!("releasing {} slave(s) {ids:?}", ids.len()),
        ));
        for id in &ids {
            self.set_phase(id, Phase::Releasing, now);
            if let Some(hook) = self.cfg.hooks.pre_deregister.clone() {
                self.spawn_hook(id, HookKind::PreDeregister, hook);
            }
        }
    }

    // ---------------------------------------------------------------- reconcile

    /// One reconcile pass: observe EC2 and the ELB (two calls), then move every slave along.
    pub async fn step(&mut self, now: Timestamp) -> Result<Report, ActuatorError> {
        let mut report = Report::default();
        // Results wait here until a step gets past the observation: a failed DescribeInstances
        // must not lose the news that a content sync finished.
        let mut finished = std::mem::take(&mut self.unheard);
        finished.extend(self.collect_hooks());
        self.unheard = finished;
        let (instances, members) = self.observe(now).await?;
        let finished = std::mem::take(&mut self.unheard);
        let instances = self.claim(instances, &members, now, &mut report).await;

        if self.journal.unresolved().next().is_some() {
            self.resolve_intents(&instances, now, &mut report).await;
        }
        let changes = self
            .ledger
            .reconcile(&self.seen_all(&instances, now), now, SETTLE_SECS);
        if !changes.is_empty() {
            for c in &changes {
                tracing::info!("cap ledger: {c}");
            }
            self.save_state(now, &mut report);
        }
        let dry = self.cfg.agent.dry_run;
        let forced = !dry && std::mem::take(&mut self.sync_requested);
        self.brake_hears(&finished, now, &mut report);
        self.check_sources(now, &mut report);
        let plan = lifecycle::reconcile(
            &self.slaves,
            &lifecycle::Observed {
                instances: &instances,
                members: &members,
                sources: &self.sources,
            },
            &finished,
            &self.running_hooks(),
            forced,
            now,
            &self.cfg,
        );
        let calls = self.carry_out(plan, now, &mut report);
        if dry {
            if !calls.is_empty() {
                tracing::info!(calls = ?calls, "dry run: would act on adopted slaves");
            }
            return Ok(report);
        }
        let (mut to_register, mut to_deregister, mut to_terminate) = (vec![], vec![], vec![]);
        let mut to_stop = vec![];
        for c in calls {
            match c {
                lifecycle::Action::Register(ids) => to_register = ids,
                lifecycle::Action::Deregister(ids) => to_deregister = ids,
                lifecycle::Action::Terminate(ids) => to_terminate = ids,
                lifecycle::Action::Stop(ids) => to_stop = ids,
                lifecycle::Action::Repool(ids) => {
                    // A warm slave whose pool tag is gone (removed by hand, or by an untag of
                    // a start that never happened): tagged again with when it went to the
                    // pool, so a restart of the agent adopts it with its age.
                    for id in ids {
                        let Some(since) = self.slaves.get(&id).map(|s| s.since) else {
                            continue;
                        };
                        let one = std::slice::from_ref(&id);
                        if let Err(e) = self
                            .cloud
                            .tag(one, cloud::TAG_POOLED_SINCE, &since.to_string())
                            .await
                        {
                            let msg = format!("could not tag warm slave {id} again: {e}");
                            self.error(now, &mut report, msg);
                        }
                    }
                }
                lifecycle::Action::Untag(ids) => self.untag_started(&ids, now, &mut report).await,
                _ => {}
            }
        }
        // A stop EC2 refused (an instance-store root, a spot instance, no permission) is a
        // termination: a drained slave is never left running.
        to_terminate.extend(self.stop(now, &mut report, &to_stop).await);
        self.act(now, &mut report, to_register, to_deregister, to_terminate)
            .await;
        Ok(report)
    }

    /// The brake hears every `pre_register` that ended: the same cause twice in a row trips
    /// it (an alert), a success releases it.
    fn brake_hears(
        &mut self,
        finished: &BTreeMap<String, (HookKind, Result<(), String>)>,
        now: Timestamp,
        report: &mut Report,
    ) {
        let day = self.ledger.day_bounds(now).0.to_string();
        let mut changed = false;
        for (id, (kind, res)) in finished {
            if !matches!(kind, HookKind::PreRegister | HookKind::ContentCheck) {
                continue;
            }
            let Some(s) = self.slaves.get(id) else {
                continue;
            };
            // A content check that fails before registration is a sync that failed too.
            if *kind == HookKind::ContentCheck && s.phase != Phase::Syncing {
                continue;
            }
            let intent = s.intent.clone().unwrap_or_default();
            // A warm start the day counts already cost nothing; a launch cost a unit.
            let paid = s.restarted_at.is_none();
            let res = res.as_ref().map(|_| ()).map_err(String::as_str);
            changed = true;
            match self.brake.record(&[id, &intent], res, paid, &day, now) {
                brake::Change::None => {}
                brake::Change::Tripped(t) => {
                    let msg = format!(
                        "content sync failed {} times in a row the same way: {}; launches that \
                         spend the cap stop (warm slaves the day counts may still start) until \
                         a reload or `burst-agent resume` after the fix, or a trial launch from \
                         {} (a cap unit, at most {} per cause a day); last error: {}",
                        brake::TRIP_AFTER,
                        t.cause,
                        t.next_trial,
                        brake::UNITS_PER_CAUSE_PER_DAY,
                        t.error
                    );
                    self.events
                        .push(Event::new(EventKind::SyncBroken, None, msg.clone()));
                    self.error(now, report, msg);
                }
                brake::Change::TrialFailed(t) => {
                    tracing::warn!(cause = %t.cause, next_trial = %t.next_trial,
                        "the trial launch's content sync failed the same way; launches stay \
                         held: {}", t.error);
                }
                brake::Change::Released { cause } => {
                    tracing::info!(instance_id = %id, cause = %cause,
                        "a content sync went through: the brake on launches is released");
                }
            }
        }
        let (slaves, journal) = (&self.slaves, &self.journal);
        self.brake.trial_gone(|intent| {
            slaves.values().any(|s| s.intent.as_deref() == Some(intent))
                || journal.unresolved().any(|j| j.id == intent)
        });
        if changed && !self.cfg.agent.dry_run {
            self.save_state(now, report);
        }
    }

    /// Checks each sync hook's content source before the lifecycle may start it: a missing,
    /// empty or sentinel-less one is never synced (an alert when it goes bad, a line when it is
    /// back).
    fn check_sources(&mut self, now: Timestamp, report: &mut Report) {
        let h = &self.cfg.hooks;
        let check = |hook: &Hook| {
            h.source_of(hook)
                .and_then(|p| hooks::check_source(&p, h.content_sentinel.as_deref()).err())
        };
        let next = lifecycle::Sources {
            pre_register: check(&h.pre_register),
            content_sync: check(h.content_sync()),
        };
        match (self.sources.problem(), next.problem()) {
            (None, Some(why)) => {
                let why = why.to_string();
                self.events.push(Event::new(
                    EventKind::ContentSourceMissing,
                    None,
                    format!("{why}; launches are held until it is back"),
                ));
                self.error(now, report, why);
            }
            (Some(_), None) => {
                tracing::info!("the content source is back: syncs and launches go again");
            }
            _ => {}
        }
        self.sources = next;
    }

    /// The agent's clock as the state last had it (read at start: clock.rs).
    pub fn clock_mark(&self) -> Option<&crate::clock::Mark> {
        self.clock_mark.as_ref()
    }

    /// The agent's clock now, written with the next state write (at once when the state holds
    /// no mark of this boot yet: a restart must find one).
    pub fn set_clock_mark(&mut self, m: crate::clock::Mark) {
        let first_in_boot =
            self.clock_mark.as_ref().is_none_or(|o| o.boot != m.boot) || !self.clock_marked;
        self.clock_mark = Some(m);
        if first_in_boot && !self.cfg.agent.dry_run {
            self.clock_marked = self.save_state(self.ledger_now_hint(), &mut Report::default());
        }
    }

    /// A time for a state write outside a step (the mark's own agent time).
    fn ledger_now_hint(&self) -> Timestamp {
        self.clock_mark
            .as_ref()
            .map_or_else(Timestamp::now, |m| m.agent)
    }

    /// Launches wait for today's count to be read back (the state was lost): why.
    pub fn cap_unverified(&self) -> Option<&str> {
        self.cap_unverified.as_deref()
    }

    /// Today's count read back from CloudWatch after lost state: the ledger counts at least
    /// `used` today from now on, and launches may go. `Err(why)`: it could not be read; launches
    /// keep waiting (a wiped state directory must never grant a fresh day).
    pub fn cap_read_back(&mut self, used: Result<Option<u32>, String>, now: Timestamp) {
        match used {
            Ok(n) => {
                let lines = self.count_at_least(n.unwrap_or(0), "CloudWatch BurstCapUsed", now);
                for l in &lines {
                    tracing::warn!("cap ledger after lost state: {l}");
                }
                tracing::info!(read_back = ?n, cap = %self.ledger.status(now),
                    "today's launches read back from CloudWatch after lost state");
                self.cap_unverified = None;
                self.save_state(now, &mut Report::default());
            }
            Err(e) => {
                let why = format!(
                    "the state was lost or unreadable and today's BurstCapUsed could not be read \
                     back from CloudWatch ({e}): launches wait (a wiped state must not grant a \
                     fresh day); it is tried again each tick, or run `burst-agent repair \
                     --used-today N`"
                );
                if self.cap_unverified.as_deref() != Some(why.as_str()) {
                    tracing::error!("{why}");
                }
                self.cap_unverified = Some(why);
            }
        }
    }

    /// Makes the ledger count at least `n` instances today (instance-less entries from the day's
    /// start, ended now). Returns what it did.
    fn count_at_least(&mut self, n: u32, source: &str, now: Timestamp) -> Vec<String> {
        let known = self.ledger.used(now);
        if n <= known {
            return Vec::new();
        }
        let (_, day_start, _) = self.ledger.day_bounds(now);
        let mut entries = self.ledger.entries().to_vec();
        for k in 1..=(n - known) {
            entries.push(cap::Entry {
                key: format!("counted-{}#{k}", now.as_second()),
                instance_id: None,
                launched_at: day_start,
                ended_at: Some(now),
            });
        }
        let blocked = self.ledger.is_blocked().map(str::to_string);
        self.ledger = self.ledger.clone().rebuilt_from(entries);
        if let Some(why) = blocked {
            self.ledger = self.ledger.clone().blocked(why);
        }
        vec![format!(
            "counted {} more, as {source} says {n} were used today",
            n - known
        )]
    }

    /// Why no content can be synced now (a missing or empty source), if so.
    pub fn content_source_missing(&self) -> Option<&str> {
        self.sources.problem()
    }

    /// The brake on launches, tripped by a content sync that keeps failing: why, and when a
    /// trial may go.
    pub fn sync_broken(&self) -> Option<&brake::Tripped> {
        self.brake.tripped.as_ref()
    }

    /// When a trial launch may go at the earliest: after its back-off, and not before the cap
    /// day ends once the cause has spent its units today. `None`: none is held, or a trial is
    /// syncing now.
    pub fn next_trial(&self, now: Timestamp) -> Option<Timestamp> {
        let t = self.brake.tripped.as_ref().filter(|t| t.trial.is_none())?;
        let (date, _, day_end) = self.ledger.day_bounds(now);
        if self.brake.spent(&date.to_string(), &t.cause) >= brake::UNITS_PER_CAUSE_PER_DAY {
            Some(t.next_trial.max(day_end))
        } else {
            Some(t.next_trial)
        }
    }

    /// What the brake allows now (the policy reads it with [`Actuator::sync_broken`]).
    pub fn brake_gate(&self, now: Timestamp) -> brake::Gate {
        self.brake
            .gate(&self.ledger.day_bounds(now).0.to_string(), now)
    }

    /// The operator says the cause is fixed (`burst-agent resume`, a reload): launches go
    /// again. Returns whether the brake was on.
    pub fn resume(&mut self, by: &str, now: Timestamp) -> bool {
        // The operator fixed something: a launch EC2 refused may go again at once.
        self.refused = None;
        match self.brake.release() {
            Some(t) => {
                tracing::info!(by, cause = %t.cause,
                    "the brake on launches is released ({by}); the next decision may scale out");
                if !self.cfg.agent.dry_run {
                    self.save_state(now, &mut Report::default());
                }
                true
            }
            None => false,
        }
    }

    /// Slaves with a hook under way.
    fn running_hooks(&self) -> BTreeSet<String> {
        self.slaves
            .keys()
            .filter(|id| self.hooks.has(id))
            .cloned()
            .collect()
    }

    /// Takes the lifecycle's next state and carries out what needs no cloud call (hooks, gone
    /// slaves); returns the cloud calls.
    fn carry_out(
        &mut self,
        plan: lifecycle::Plan,
        now: Timestamp,
        report: &mut Report,
    ) -> Vec<lifecycle::Action> {
        self.slaves = plan.slaves;
        report.adopted.extend(plan.adopted);
        report.in_service.extend(plan.in_service);
        for e in plan.errors {
            self.error(now, report, e);
        }
        let mut calls = Vec::new();
        // The warm pool's ledger changes this pass: written once, after them all.
        let mut pool_changed = false;
        for a in plan.actions {
            match a {
                lifecycle::Action::StartHook { id, kind } => {
                    let hook = match kind {
                        HookKind::PreRegister => Some(self.cfg.hooks.pre_register.clone()),
                        HookKind::ContentSync => Some(self.cfg.hooks.content_sync().clone()),
                        HookKind::ContentCheck => self.cfg.hooks.content_check.clone(),
                        HookKind::PreDeregister => self.cfg.hooks.pre_deregister.clone(),
                        HookKind::PostTerminate => self.cfg.hooks.post_terminate.clone(),
                    };
                    if let Some(hook) = hook {
                        self.spawn_hook(&id, kind, hook);
                    }
                }
                lifecycle::Action::AbortHook(id) => self.hooks.abort(&id),
                lifecycle::Action::Unstarted(id) => {
                    // Still stopped long after its StartInstances (whose answer was lost): it
                    // never started, so its start is withdrawn; it is back in the pool.
                    let prefix = restart_prefix(&id);
                    let keys: Vec<String> = self
                        .ledger
                        .entries()
                        .iter()
                        .filter(|e| e.key.starts_with(&prefix) && e.ended_at.is_none())
                        .map(|e| e.key.clone())
                        .collect();
                    for k in keys {
                        let _ = self.ledger.withdraw_restart(&k);
                    }
                    tracing::warn!(instance_id = %id,
                        "warm slave {id} did not start; back in the pool, its start withdrawn");
                    pool_changed = true;
                }
                lifecycle::Action::Parked(id) => {
                    // Stopped: it runs no more, so its run ends (started again today it costs
                    // nothing more; on a later day, one unit then).
                    let _ = self.ledger.record_ended(&id, now);
                    tracing::info!(instance_id = %id, pool = self.pooled(),
                        "slave {id} stopped into the warm pool");
                    pool_changed = true;
                }
                lifecycle::Action::Gone(id) => {
                    let _ = self.ledger.record_ended(&id, now);
                    self.hooks.abort(&id);
                    // Its address may come back with another slave and another host key.
                    hooks::forget_host_key(&self.cfg.agent.state_dir, &id);
                }
                call => calls.push(call),
            }
        }
        if pool_changed {
            self.save_state(now, report);
        }
        calls
    }

    async fn act(
        &mut self,
        now: Timestamp,
        report: &mut Report,
        to_register: Vec<String>,
        to_deregister: Vec<String>,
        to_terminate: Vec<String>,
    ) {
        if !to_deregister.is_empty() {
            let (done, errors) = self.batch(Batch::Deregister, &to_deregister).await;
            lifecycle::called(&mut self.slaves, lifecycle::Call::Deregister, &done, now);
            report.deregistered.extend(done);
            for e in errors {
                self.error(now, report, e);
            }
        }
        if !to_register.is_empty() {
            let (done, errors) = self.batch(Batch::Register, &to_register).await;
            lifecycle::called(&mut self.slaves, lifecycle::Call::Register, &done, now);
            report.registered.extend(done);
            for e in errors {
                self.error(now, report, e);
            }
        }
        if !to_terminate.is_empty() {
            let (done, errors) = self.terminate(&to_terminate).await;
            for e in errors {
                self.error(now, report, e);
            }
            if !done.is_empty() {
                lifecycle::called(&mut self.slaves, lifecycle::Call::Terminate, &done, now);
                for id in &done {
                    let _ = self.ledger.record_ended(id, now);
                    self.hooks.abort(id);
                    if let Some(hook) = self.cfg.hooks.post_terminate.clone() {
                        if let Some(s) = self.slaves.get(id) {
                            let vars = self.vars(s);
                            self.hooks
                                .start_detached(id, HookKind::PostTerminate, &hook, vars);
                        }
                    }
                }
                report.terminated.extend(done);
                self.save_state(now, report);
            }
        }
    }

    /// Slaves stopped or stopping in the warm pool.
    pub fn pooled(&self) -> u32 {
        to_u32(
            self.slaves
                .values()
                .filter(|s| matches!(s.phase, Phase::Stopping | Phase::Stopped))
                .count(),
        )
    }

    /// Room in the warm pool the policy may count on when it releases slaves: none while EC2
    /// refuses this agent's stops or starts for good (no permission, say: the slaves would be
    /// terminated, or never come back), and no more than the in-service slaves that can stop.
    pub fn warm_room(&self) -> u32 {
        if self.pool_refused.is_some() {
            return 0;
        }
        let stoppable = self
            .slaves
            .values()
            .filter(|s| s.phase == Phase::InService && s.ebs_root)
            .count();
        // Slaves already released and still draining take the room they will stop into.
        let bound = self
            .slaves
            .values()
            .filter(|s| matches!(s.phase, Phase::Releasing | Phase::Draining) && s.ebs_root)
            .count();
        self.cfg
            .fleet
            .warm_pool
            .saturating_sub(self.pooled())
            .saturating_sub(to_u32(bound))
            .min(to_u32(stoppable))
    }

    /// Why EC2 refuses this agent's stops or starts for good, if it does (for `status`).
    pub fn pool_refused(&self) -> Option<&str> {
        self.pool_refused.as_deref()
    }

    /// Drained slaves into the warm pool: the `burst-agent:pooled-since` tag first (a stopped
    /// slave without it is one someone else stopped, and is terminated), then StopInstances.
    /// Returns the ones EC2 refused to stop for good (an instance-store root, a spot instance,
    /// no permission), for termination; throttling or a call whose outcome is unknown leaves
    /// them Draining, to be stopped again next step (both calls are idempotent; a stop that did
    /// go through is seen as such: `lifecycle::reconcile`).
    async fn stop(&mut self, now: Timestamp, report: &mut Report, ids: &[String]) -> Vec<String> {
        if ids.is_empty() {
            return Vec::new();
        }
        if let Err(e) = self
            .cloud
            .tag(ids, cloud::TAG_POOLED_SINCE, &now.to_string())
            .await
        {
            self.error(
                now,
                report,
                format!("could not tag {ids:?} for the warm pool: {e}"),
            );
            return Vec::new();
        }
        let mut refused = Vec::new();
        let mut done = Vec::new();
        match self.cloud.stop(ids).await {
            Ok(()) => done = ids.to_vec(),
            Err(e) if refuses_for_good(&e) => {
                // One instance that cannot stop fails the batch: one by one.
                for id in ids {
                    match self.cloud.stop(std::slice::from_ref(id)).await {
                        Ok(()) => done.push(id.clone()),
                        Err(e) if refuses_for_good(&e) => {
                            tracing::warn!(instance_id = %id, code = %e.code,
                                "EC2 will not stop {id} ({e}); terminating it instead");
                            if e.is("UnauthorizedOperation") {
                                let why = format!(
                                    "the warm pool is not used: StopInstances refused ({e}): \
                                     grant ec2:StopInstances, ec2:StartInstances and \
                                     ec2:DeleteTags (docs/aws.md) or set fleet.warm_pool = 0"
                                );
                                self.error(now, report, why.clone());
                                self.pool_refused = Some(why);
                            }
                            refused.push(id.clone());
                        }
                        Err(e) => self.error(now, report, format!("stopping {id}: {e}")),
                    }
                }
            }
            Err(e) => self.error(now, report, format!("stopping {ids:?}: {e}")),
        }
        if !done.is_empty() && refused.is_empty() {
            self.pool_refused = None;
        }
        lifecycle::called(&mut self.slaves, lifecycle::Call::Stop, &done, now);
        report.stopped.extend(done);
        refused
    }

    /// Starts up to `count` slaves of the warm pool: the ones today's cap counts already first
    /// (free), then the most recently stopped (the freshest content). Each start is in the
    /// ledger before StartInstances (a unit, unless free; refused past the cap). The pool's
    /// tags are removed only after the start (the lifecycle removes them from a started slave
    /// until they are gone), so a stopped slave always carries them. A start EC2 refused for
    /// sure (no capacity for the type, wrong state, no permission) is withdrawn and the slave
    /// stays in the pool; anything else (throttling, no answer) stays counted, the slave
    /// Pending, and EC2's listing tells: still stopped after a while, it goes back to the pool
    /// and the start is withdrawn. Returns how many started (or may have).
    async fn start_warm(&mut self, count: u32, now: Timestamp, report: &mut Report) -> u32 {
        if self.pool_refused.is_some() {
            return 0;
        }
        let mut pool: Vec<(bool, Timestamp, String)> = self
            .slaves
            .values()
            .filter(|s| s.phase == Phase::Stopped && s.failure.is_none())
            .map(|s| (self.ledger.counts_today(&s.id, now), s.since, s.id.clone()))
            .collect();
        // Free first, then the newest in the pool.
        pool.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)));
        let mut picked: Vec<(String, String, bool)> = Vec::new();
        for (_, _, id) in pool.into_iter().take(usize::try_from(count).unwrap_or(0)) {
            let key = restart_key(&id, now);
            match self.ledger.record_restart(&key, &id, now) {
                Ok(free) => picked.push((id, key, free)),
                Err(e) => {
                    tracing::info!(instance_id = %id, "not starting warm slave {id}: {e}");
                    break;
                }
            }
        }
        if picked.is_empty() {
            return 0;
        }
        let withdraw = |this: &mut Self, picked: &[(String, String, bool)]| {
            for (_, key, _) in picked {
                if let Err(e) = this.ledger.withdraw_restart(key) {
                    tracing::warn!(key, "cap ledger: {e}");
                }
            }
        };
        // Write-ahead, as for a launch.
        if !self.save_state(now, report) {
            withdraw(self, &picked);
            return 0;
        }
        let ids: Vec<String> = picked.iter().map(|(id, _, _)| id.clone()).collect();
        match self.cloud.start(&ids).await {
            Err(e) if refuses_for_good(&e) => {
                // Nothing started: still in the pool, as it was, tags and age included.
                withdraw(self, &picked);
                if e.is("UnauthorizedOperation") {
                    self.pool_refused = Some(format!(
                        "the warm pool is not used: StartInstances refused ({e}): grant \
                         ec2:StartInstances and ec2:DeleteTags (docs/aws.md) or set \
                         fleet.warm_pool = 0"
                    ));
                }
                self.save_state(now, report);
                self.error(
                    now,
                    report,
                    format!("EC2 would not start warm slaves {ids:?}: {e}; launching instead"),
                );
                return 0;
            }
            res => {
                for id in &ids {
                    self.set_phase(id, Phase::Pending, now);
                    if let Some(s) = self.slaves.get_mut(id) {
                        s.restarted_at = Some(now);
                        s.first_seen = now;
                    }
                }
                if let Err(e) = res {
                    // May have started: counted, Pending; EC2's next listings tell.
                    self.error(now, report, format!("starting warm slaves {ids:?}: {e}"));
                    return to_u32(ids.len());
                }
            }
        }
        let free = picked.iter().filter(|p| p.2).count();
        tracing::info!(instances = ?ids, free,
            "started {} warm slave(s) ({free} at no new cap unit); burst cap {}",
            ids.len(), self.ledger.status(now));
        self.events.push(Event::new(
            EventKind::ScaleOut,
            None,
            format!(
                "started {} warm slave(s) {ids:?} from the pool; cap {}",
                ids.len(),
                self.ledger.status(now)
            ),
        ));
        report.started.extend(ids.iter().cloned());
        self.untag_started(&ids, now, report).await;
        to_u32(ids.len())
    }

    /// Removes the pool's tags from started slaves (the lifecycle asks again until they are
    /// gone: a restart of the agent must not take a running slave for a pooled or draining one).
    async fn untag_started(&mut self, ids: &[String], now: Timestamp, report: &mut Report) {
        let tags = [cloud::TAG_POOLED_SINCE, TAG_DRAINING_SINCE];
        if let Err(e) = self.cloud.untag(ids, &tags).await {
            let msg =
                format!("could not remove the pool's tags from {ids:?} (again next step): {e}");
            self.error(now, report, msg);
        }
    }

    /// One ELB call for all of `ids`; when the ELB refuses the batch (one instance it will not
    /// take poisons the whole call), one call per instance, so the others go ahead. Returns the
    /// ids the ELB accepted and the errors, for the log.
    async fn batch(&self, op: Batch, ids: &[String]) -> (Vec<String>, Vec<String>) {
        let call = |ids: Vec<String>| {
            let cloud = self.cloud.clone();
            async move {
                match op {
                    Batch::Register => cloud.register(&ids).await,
                    Batch::Deregister => cloud.deregister(&ids).await,
                }
            }
        };
        let what = match op {
            Batch::Register => "registering",
            Batch::Deregister => "deregistering",
        };
        match call(ids.to_vec()).await {
            Ok(()) => (ids.to_vec(), Vec::new()),
            Err(e) if e.not_applied && ids.len() > 1 => {
                let (mut done, mut errors) = (Vec::new(), Vec::new());
                for id in ids {
                    match call(vec![id.clone()]).await {
                        Ok(()) => done.push(id.clone()),
                        Err(e) => errors.push(format!("{what} {id} (ELB): {e}")),
                    }
                }
                (done, errors)
            }
            Err(e) => (Vec::new(), vec![format!("{what} {ids:?} (ELB): {e}")]),
        }
    }

    /// TerminateInstances for all at once; if EC2 refuses the batch (one id it does not know
    /// fails the whole call), one by one so the others are not left running. Returns the ids
    /// EC2 accepted and the errors.
    async fn terminate(&self, ids: &[String]) -> (Vec<String>, Vec<String>) {
        match self.cloud.terminate(ids).await {
            Ok(()) => (ids.to_vec(), Vec::new()),
            Err(e) if e.not_applied && ids.len() > 1 => {
                let (mut done, mut errors) = (Vec::new(), Vec::new());
                for id in ids {
                    match self.cloud.terminate(std::slice::from_ref(id)).await {
                        Ok(()) => done.push(id.clone()),
                        Err(e) => errors.push(format!("terminating {id}: {e}")),
                    }
                }
                (done, errors)
            }
            Err(e) => (Vec::new(), vec![format!("terminating {ids:?}: {e}")]),
        }
    }

    /// Finished hooks, by slave: their kind and result (post_terminate ones are only logged).
    fn collect_hooks(&mut self) -> BTreeMap<String, (HookKind, Result<(), String>)> {
        let mut out = BTreeMap::new();
        for f in self.hooks.finished() {
            self.hook_seconds.push((f.kind.name(), f.secs));
            if let Err(e) = &f.result {
                self.hook_failures.push(f.kind.name());
                if f.kind == HookKind::PreRegister {
                    self.events.push(Event::new(
                        EventKind::SyncFailed,
                        Some(&f.id),
                        format!("pre_register (content sync) failed; never registered: {e}"),
                    ));
                }
            }
            if f.detached {
                if let Err(e) = &f.result {
                    tracing::warn!(instance_id = %f.id, "{} hook failed: {e}", f.kind.name());
                }
                continue;
            }
            out.insert(f.id, (f.kind, f.result));
        }
        out
    }

    /// Waits up to `deadline` for hooks under way to finish (shutdown); returns how many were
    /// still running and were abandoned (their process groups die with the tasks).
    pub async fn wait_for_hooks(&mut self, deadline: std::time::Duration) -> usize {
        self.hooks.drain(deadline).await
    }
}

fn alive(s: InstanceState) -> bool {
    matches!(
        s,
        InstanceState::Pending
            | InstanceState::Running
            | InstanceState::Stopping
            | InstanceState::Stopped
    )
}

fn stopped(s: InstanceState) -> bool {
    matches!(s, InstanceState::Stopping | InstanceState::Stopped)
}

/// A blocked ledger's entries, rebuilt: what could still be read of the old file, then each
/// launch the journal knows (an instance it launched counts from its intent; an intent still
/// open counts as an attempt), then every instance of ours EC2 still lists. Nothing is
/// counted twice; an entry that cannot be shown to have ended counts as running, so the
/// rebuilt ledger may overcount, never undercount, what the journal and tags show.
fn rebuild_entries(
    readable: &[cap::Entry],
    journal: &Journal,
    instances: &[InstanceInfo],
    now: Timestamp,
) -> Vec<cap::Entry> {
    let mut out: Vec<cap::Entry> = readable.to_vec();
    let known = |out: &[cap::Entry], key: &str, id: Option<&str>| {
        out.iter()
            .any(|e| e.key == key || (id.is_some() && e.instance_id.as_deref() == id))
    };
    for intent in &journal.intents {
        let ids: Vec<Option<&str>> = match &intent.outcome {
            Outcome::Launched { instance_ids } => {
                instance_ids.iter().map(|i| Some(i.as_str())).collect()
            }
            Outcome::Started => vec![None; intent.keys.len()],
            Outcome::Failed { .. } => continue,
        };
        for (key, id) in intent.keys.iter().zip(ids) {
            if !known(&out, key, id) {
                out.push(cap::Entry {
                    key: key.clone(),
                    instance_id: id.map(str::to_string),
                    launched_at: intent.created_at,
                    ended_at: None,
                });
            }
        }
    }
    for s in instances.iter().map(|i| seen(i, now)) {
        let key = format!(
            "{}#{}",
            s.intent.as_deref().unwrap_or("adopted"),
            s.instance_id
        );
        let ended = s.ended_at.or_else(|| s.ended_by(now));
        if let Some(e) = out
            .iter_mut()
            .find(|e| e.instance_id.as_deref() == Some(s.instance_id.as_str()))
        {
            if e.ended_at.is_none() {
                e.ended_at = ended.map(|end| end.max(e.launched_at));
            }
        } else if !known(&out, &key, None) {
            out.push(cap::Entry {
                key,
                instance_id: Some(s.instance_id),
                launched_at: s.launched_at,
                ended_at: ended,
            });
        }
    }
    out
}

/// What the ledger hears of one listed instance. Shutting down is ended (it runs no more, and
/// must not count as running again); stopping or stopped is not running.
fn seen(i: &InstanceInfo, now: Timestamp) -> Seen {
    let ended = matches!(
        i.state,
        InstanceState::Terminated | InstanceState::ShuttingDown
    );
    Seen {
        instance_id: i.id.clone(),
        intent: i.intent.clone(),
        launched_at: i.launched_at.unwrap_or(now),
        ended_at: ended.then(|| i.ended_at.unwrap_or(now)),
        stopped: stopped(i.state),
        stopped_by: i
            .pooled_since
            .and_then(|t| Timestamp::from_second(t.as_second() + STOP_DEADLINE_SECS).ok()),
    }
}

fn slave_from(i: &InstanceInfo, phase: Phase, since: Timestamp, now: Timestamp) -> Slave {
    Slave {
        id: i.id.clone(),
        intent: i.intent.clone(),
        private_ip: i.private_ip.clone(),
        private_dns: i.private_dns.clone(),
        launched_at: i.launched_at.unwrap_or(now),
        phase,
        since,
        last_sync: None,
        last_sync_ok: None,
        failure: None,
        unhealthy_since: None,
        first_seen: now,
        ebs_root: i.ebs_root,
        restarted_at: None,
    }
}

#[cfg(test)]
mod tests;
