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
//!
//! What is ours: every observation (`observe`: DescribeInstances by group tag, by id for what
//! the records name that the tag misses, by intent tag for open intents) passes through `claim`
//! before anything else sees it. It keeps what burst-core's `lifecycle::ownership` calls ours:
//! named by this install's records, never by a tag alone (a candidate no record names waits for
//! `repair --adopt`); the records also win over the tags for launch time and release
//! (`records_over_tags`). The master's own instance is never a slave.
//!
//! The actuator holds the policy's [`History`] (its one copy: the daemon records each decision
//! through [`Actuator::remember`]) and writes it with the ledger, the journal, the owned
//! instances, the sync brake ([`brake`], read by a launch and, as `SyncBroken`, by the policy)
//! and the clock's mark, in `state.json` ([`state`]). The rules it carries out are burst-core's
//! [`lifecycle`] (its `rules` re-exported here); [`cloud`] and [`runner`] are burst-edge's.

mod adopt;
mod guarantee;
pub use burst_core::lifecycle::brake;
pub use burst_edge::cloud;
use lifecycle::intents::rebuild_entries;
pub mod journal;
mod launch;
pub(crate) mod ledger_store;
pub use burst_core::lifecycle;
mod reconcile;
pub use burst_edge::runner;
pub mod state;

use crate::cap::{self, CapLedger, Seen};
use crate::config::{Config, Hook};
use crate::events::{Event, EventKind};
use crate::fsutil::{Disk, RealDisk};
use crate::hooks::{self, HookVars};
use crate::policy::{Decision, History, SlaveObservation, SlaveState};
// The lifecycle's types and rules live in the pure core; the executor here carries them out.
pub use crate::model::{HookKind, Phase, Slave};
use cloud::{
    Cloud, InstanceInfo, InstanceState, LaunchRequest, MemberState, TAG_DRAINING_SINCE, TAG_OWNER,
};
use jiff::Timestamp;
use journal::{Intent, Journal, Outcome};
pub use lifecycle::rules::*;
use runner::{HookRunner, ProcessHooks};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;

/// How far EC2's clock may be from this host's when an instance's launch time is compared with
/// when its intent was written.
const CLOCK_SKEW_SECS: i64 = 60;
/// Resolved intents are kept this long in the journal.
const JOURNAL_KEEP_SECS: i64 = 2 * 86_400;

/// Recent errors kept for `status`.
const RECENT_ERRORS: usize = 20;

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
    /// Why launches were held or limited (the launch gate's words), when they were.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held: Option<String>,
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
    /// The instances of this install the last observation listed (`listed()`: the usage records).
    listed: Vec<InstanceInfo>,
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
    /// The brake on a content sync that keeps failing the same way (burst-core's `lifecycle::brake`).
    brake: brake::SyncBrake,
    /// The slaves this install chose to release, and when (state.json's record; the
    /// `burst-agent:draining-since` tag only mirrors it).
    releasing: BTreeMap<String, Timestamp>,
    /// Instances whose unbacked draining tag was said once.
    forged_logged: BTreeSet<String>,
    /// What a launch's content sync runs with (hooks, slave image, ssh key), as the brake's
    /// proof and trip name it: [`sync_fingerprint`] of the config, at start and each reload.
    sync_print: String,
    /// The content sources as last checked (a missing or empty one is never synced).
    sources: lifecycle::Sources,
    /// The source checks' thread: one at a time, bounded (a hung mount stalls a stat).
    source_calls: burst_edge::stall::OffThread,
    /// The state was lost or unreadable at open: launches wait until today's count has been
    /// read back from an independent copy (CloudWatch's `BurstCapUsed`); why, while it has not.
    cap_unverified: Option<String>,
    /// The agent's clock, written with the state (clock.rs: a restart goes on from it).
    clock_mark: Option<crate::clock::Mark>,
    /// This actuator has written a mark.
    clock_marked: bool,
    /// The site's guarantee in the shared table (`ledger.table`) and the lease this agent holds
    /// on it: every unit is reserved there before a launch (guarantee.rs). `None`: no table
    /// (a dry run, `simulate`, `faultsim`).
    guarantee: Option<(
        Arc<dyn crate::table::LedgerTable>,
        burst_edge::fenced::LeaseEnd,
    )>,
    /// Instances a launch gave whose record the table has not acknowledged yet: written again
    /// each step until it has.
    unrecorded: Vec<crate::table::InstanceRecord>,
    /// Refused launches whose refund the table has not acknowledged yet (retried each step).
    unrefunded: Vec<String>,
    /// The launches the shared table names for the site that were not refunded (read at
    /// adoption): one this state directory never knew (a restored or copied state.json, a
    /// holder that stopped between its launch and the record) claims what carries its
    /// ClientToken.
    table_intents: BTreeSet<String>,
    /// The table's count for a day as last read or written (`hold_table_floor`), and the
    /// intents already in it.
    table_floor: Option<(String, u32)>,
    floor_intents: BTreeSet<String>,
    /// Launches the table names (today's or yesterday's at adoption), this state directory
    /// does not know, and no instance of which has been seen yet (EC2 may list them late):
    /// units, since, day. Those of another day than the current one count today too until
    /// found, or for SETTLE_SECS: their midnight carry-over may never have been written by the
    /// holder that launched them.
    table_pending: BTreeMap<String, (u32, Timestamp, String)>,
    /// `(day, instance)` the table counts already by the midnight carry-over.
    carried: BTreeSet<(String, String)>,
}

#[derive(Clone, Copy)]
enum Batch {
    Register,
    Deregister,
}

/// What [`Actuator::claim`] sorted the observed instances into.
#[derive(Default)]
struct Sorted {
    ours: Vec<InstanceInfo>,
    /// Ours and alive, lacking this install's owner tag, or its group tag.
    retag_owner: Vec<String>,
    retag_group: Vec<String>,
    /// Live foreign instances (the master's own aside), and those of them with our owner tag.
    foreign: Vec<String>,
    candidates: Vec<InstanceInfo>,
    /// An instance was added to the records (`owned`).
    recorded: bool,
}

/// Whose instances [`Actuator::claim`] keeps: this install's owner and group tags, and whether
/// the tags are trusted this once (state from an agent before records).
#[derive(Clone, Copy)]
struct Who<'a> {
    owner: &'a str,
    group: &'a str,
    trust_tags: bool,
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
            listed: Vec::new(),
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
            sync_print: sync_fingerprint(cfg),
            releasing: loaded.releasing,
            forged_logged: BTreeSet::new(),
            sources: lifecycle::Sources::default(),
            source_calls: Default::default(),
            cap_unverified,
            clock_mark,
            clock_marked: false,
            guarantee: None,
            unrecorded: Vec::new(),
            unrefunded: Vec::new(),
            table_intents: BTreeSet::new(),
            table_floor: None,
            floor_intents: BTreeSet::new(),
            table_pending: BTreeMap::new(),
            carried: BTreeSet::new(),
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
        let (instances, members) = self.observe_loose(now).await?;
        Ok((instances, members?))
    }

    /// As [`Actuator::observe`], with the ELB's answer as it came: a step goes on without it
    /// (nothing is registered, released or judged on health it could not read).
    #[allow(clippy::type_complexity)]
    async fn observe_loose(
        &mut self,
        now: Timestamp,
    ) -> Result<
        (
            Vec<InstanceInfo>,
            Result<BTreeMap<String, MemberState>, crate::aws::AwsError>,
        ),
        ActuatorError,
    > {
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
        // And the table's launches this state directory does not know (their instances may be
        // unrecorded yet, and listed under another group tag).
        let open: Vec<String> = self
            .journal
            .unresolved()
            .map(|j| j.id.clone())
            .chain(
                self.table_intents
                    .iter()
                    .filter(|id| !self.journal.knows(id))
                    .cloned(),
            )
            .collect();
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
        let members = self.cloud.elb_members().await;
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
        // An open intent (its RunInstances answer lost) claims what its own call launched: an
        // instance whose EC2 ClientToken is one of the intent's (nobody can write that after
        // launch); where EC2 does not report tokens, at most its attempts' count of the
        // instances carrying its tag, the earliest EC2 launched after the intent was written.
        // A stranger's instance tagged with a copy of the intent is left out.
        let mut by_open_intent: BTreeSet<String> = BTreeSet::new();
        self.claim_journal_tokens(&instances, now, &mut by_open_intent);
        self.claim_table_tokens(&instances, now, &mut by_open_intent);
        self.claim_open_intents(&instances, &mut by_open_intent);
        let Sorted {
            mut ours,
            retag_owner,
            retag_group,
            foreign,
            candidates,
            recorded,
        } = self.sort_by_ownership(
            instances,
            members,
            &by_open_intent,
            Who {
                owner: &owner,
                group: &group,
                trust_tags,
            },
            report,
        );
        self.foreign_now = foreign;
        self.candidates = candidates;
        self.records_over_tags(&mut ours);
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
        self.listed = ours.clone();
        ours
    }

    /// Any intent of the journal, settled or not, claims what carries one of its calls'
    /// ClientTokens: a launch EC2 lists after its intent was settled as "launched nothing"
    /// (its answer lost, nothing listed for SETTLE_SECS) is ours and counted, never left
    /// running as a foreign candidate.
    fn claim_journal_tokens(
        &mut self,
        instances: &[InstanceInfo],
        now: Timestamp,
        by_open_intent: &mut BTreeSet<String>,
    ) {
        for j in &self.journal.intents {
            let stem = format!("{}-", j.id);
            for i in instances {
                let token = i
                    .client_token
                    .as_deref()
                    .is_some_and(|t| t.starts_with(&stem));
                let late = token
                    && alive(i.state)
                    && j.outcome != Outcome::Started
                    && !self.journal.launched(&i.id)
                    && !self.owned.contains(&i.id);
                if late {
                    tracing::warn!(instance_id = %i.id, intent = %j.id,
                        "EC2 lists {} late: its ClientToken is one of launch {}'s calls, which \
                         was settled without it; it is ours and counted", i.id, j.id);
                    // The table's record too (its units stayed reserved: a launch whose answer
                    // was lost is never refunded).
                    if self.guarantee.is_some() {
                        self.unrecorded.push(crate::table::InstanceRecord {
                            id: i.id.clone(),
                            intent: j.id.clone(),
                            client_token: i.client_token.clone().unwrap_or_default(),
                            day: self.ledger.day_bounds(now).0.to_string(),
                            launched_at: i
                                .ec2_launched_at
                                .map(|t| t.to_string())
                                .unwrap_or_default(),
                        });
                    }
                }
                if token {
                    by_open_intent.insert(i.id.clone());
                }
            }
        }
    }

    /// A launch the table names and this state directory does not know: what carries one of
    /// its calls' ClientTokens is ours (its units are spent in the table), recorded there.
    fn claim_table_tokens(
        &mut self,
        instances: &[InstanceInfo],
        now: Timestamp,
        by_open_intent: &mut BTreeSet<String>,
    ) {
        let mut table_counted = Vec::new();
        let mut found_pending = Vec::new();
        for id in &self.table_intents {
            if self.journal.knows(id) {
                continue;
            }
            let stem = format!("{id}-");
            for i in instances {
                let token = i
                    .client_token
                    .as_deref()
                    .is_some_and(|t| t.starts_with(&stem));
                if !token {
                    continue;
                }
                found_pending.push(id.clone());
                if !self
                    .ledger
                    .entries()
                    .iter()
                    .any(|e| e.instance_id.as_deref() == Some(i.id.as_str()))
                {
                    // Counted by its own entry: a bare count read from the table may be made
                    // up by runs that end later. One that ended already counts for the days
                    // it ran (EC2 lists it for an hour): the table may not count it today yet
                    // (its midnight carry-over unwritten when its holder lost the lease).
                    let launched_at = i.ec2_launched_at.unwrap_or(now).min(now);
                    table_counted.push(cap::Entry {
                        key: format!("{id}#{}", i.id),
                        instance_id: Some(i.id.clone()),
                        launched_at,
                        ended_at: (!alive(i.state))
                            .then(|| cap::end_of(launched_at, i.ended_at.unwrap_or(now), now)),
                    });
                }
                if !alive(i.state) {
                    continue;
                }
                if !self.owned.contains(&i.id) {
                    tracing::warn!(instance_id = %i.id, intent = %id,
                        "{} carries the ClientToken of launch {id}, which the ledger table names \
                         and this state directory did not know: it is ours and counted", i.id);
                    self.unrecorded.push(crate::table::InstanceRecord {
                        id: i.id.clone(),
                        intent: id.clone(),
                        client_token: i.client_token.clone().unwrap_or_default(),
                        day: self.ledger.day_bounds(now).0.to_string(),
                        launched_at: i.ec2_launched_at.map(|t| t.to_string()).unwrap_or_default(),
                    });
                }
                by_open_intent.insert(i.id.clone());
            }
        }
        for id in found_pending {
            self.table_pending.remove(&id);
        }
        if !table_counted.is_empty() {
            let mut entries = self.ledger.entries().to_vec();
            entries.extend(table_counted);
            self.replace_entries(entries);
        }
    }

    /// An unresolved intent claims its own calls' instances (by ClientToken), else at most its
    /// attempts' count of those carrying its tag that EC2 launched after it was written.
    fn claim_open_intents(
        &self,
        instances: &[InstanceInfo],
        by_open_intent: &mut BTreeSet<String>,
    ) {
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
    }

    /// Sorts the observed instances by [`ownership`]: ours (and which of them need their owner
    /// or group tag again), and the foreign ones, each logged once and left alone.
    fn sort_by_ownership(
        &mut self,
        instances: Vec<InstanceInfo>,
        members: &BTreeMap<String, MemberState>,
        by_open_intent: &BTreeSet<String>,
        who: Who<'_>,
        report: &mut Report,
    ) -> Sorted {
        let mut sorted = Sorted {
            ours: Vec::with_capacity(instances.len()),
            ..Sorted::default()
        };
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
                trust_tags: who.trust_tags,
            };
            match ownership(&i, who.owner, self.own_instance.as_deref(), known) {
                Ownership::Ours | Ownership::Legacy => {
                    if alive(i.state) {
                        if i.owner.as_deref() != Some(who.owner) {
                            sorted.retag_owner.push(i.id.clone());
                        }
                        if i.group.as_deref() != Some(who.group) {
                            sorted.retag_group.push(i.id.clone());
                        }
                    }
                    if !matches!(i.state, InstanceState::Terminated) {
                        sorted.recorded |= self.owned.insert(i.id.clone());
                    }
                    sorted.ours.push(i);
                }
                Ownership::Foreign(why) => {
                    self.leave_foreign(i, why, who.owner, &mut sorted, report);
                }
            }
        }
        sorted
    }

    /// An instance that is not this agent's: logged once (an event for a live one that is not
    /// the master's own), left alone, and kept as a candidate when it carries our owner tag.
    fn leave_foreign(
        &mut self,
        i: InstanceInfo,
        why: &'static str,
        owner: &str,
        sorted: &mut Sorted,
        report: &mut Report,
    ) {
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
            sorted.foreign.push(i.id.clone());
            if i.owner.as_deref() == Some(owner) {
                sorted.candidates.push(i.clone());
            }
        }
        report.foreign.push(i.id);
    }

    /// The instances of this install the last observation listed (every state), as EC2 said.
    pub fn listed(&self) -> &[InstanceInfo] {
        &self.listed
    }

    /// What the records say over what the tags say, for the instances that are ours: when one
    /// was launched (its ledger entry, else EC2's `LaunchTime`; a far-future
    /// `burst-agent:launched-at` written by anyone with `ec2:CreateTags` made a slave never a
    /// scale-in victim), and whether this install chose to release it (`releasing`, written
    /// before the `burst-agent:draining-since` tag; a forged tag made a serving slave adopt as
    /// Releasing). A tag the records do not back is ignored, and said once.
    fn records_over_tags(&mut self, instances: &mut [InstanceInfo]) {
        for i in instances.iter_mut() {
            let entry = self
                .ledger
                .entries()
                .iter()
                .filter(|e| e.instance_id.as_deref() == Some(i.id.as_str()))
                .map(|e| e.launched_at)
                .min();
            i.launched_at = entry.or(i.ec2_launched_at);
            match (self.releasing.get(&i.id), i.draining_since) {
                (Some(t), _) => i.draining_since = Some(*t),
                (None, Some(t)) => {
                    // A slave this agent started again out of the warm pool keeps the tag
                    // until the step removes it: not news.
                    let restarted = i.pooled_since.is_some()
                        || self
                            .slaves
                            .get(&i.id)
                            .is_some_and(|s| s.restarted_at.is_some());
                    if !restarted && alive(i.state) && self.forged_logged.insert(i.id.clone()) {
                        tracing::warn!(instance_id = %i.id, tag = TAG_DRAINING_SINCE, value = %t,
                            "ignoring the tag {TAG_DRAINING_SINCE} on {}: this install's records \
                             do not say it released it (someone else wrote the tag)", i.id);
                    }
                    i.draining_since = None;
                }
                (None, None) => {}
            }
        }
    }

    /// Keeps the release records of slaves still on their way out (or stopped in the warm
    /// pool, or listed by EC2 but not tracked yet); a slave started again, or gone, leaves them.
    pub(super) fn prune_releasing(&mut self, instances: &[InstanceInfo]) -> bool {
        let before = self.releasing.len();
        let (slaves, listed) = (&self.slaves, instances);
        self.releasing.retain(|id, _| match slaves.get(id) {
            Some(s) => {
                s.restarted_at.is_none()
                    && matches!(
                        s.phase,
                        Phase::Releasing
                            | Phase::Draining
                            | Phase::Terminating
                            | Phase::Stopping
                            | Phase::Stopped
                    )
            }
            None => listed.iter().any(|i| &i.id == id && alive(i.state)),
        });
        self.releasing.len() != before
    }

    pub fn ledger(&self) -> &CapLedger {
        &self.ledger
    }

    /// What the policy remembered when the agent last wrote its state.
    pub fn history(&self) -> &History {
        &self.history
    }

    /// Updates the policy's memory, which the actuator keeps (its one copy) and writes with the
    /// state: at once when the last scaling or the last time slaves were needed changed
    /// (cooldowns must survive a restart); otherwise with the next write.
    pub fn remember(&mut self, now: Timestamp, update: impl FnOnce(&mut History)) {
        let marks = |h: &History| (h.last_scale_out, h.last_scale_in, h.last_needed);
        let before = marks(&self.history);
        update(&mut self.history);
        if marks(&self.history) != before && !self.cfg.agent.dry_run {
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
        self.check_adoptable(adopt)?;
        let mut out = vec![match &self.needs_repair {
            Some(why) => format!("was blocked: {why}"),
            None => match self.ledger.is_blocked() {
                Some(why) => format!("was blocked: {why}"),
                None => "was not blocked".to_string(),
            },
        }];
        let (_, day_start, _) = self.ledger.day_bounds(now);
        let left = self.adopt_candidates(adopt, &members, &mut instances, &mut out);
        let entries = self.repair_entries(&instances, &left, day_start, now);
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

    /// Every id in `adopt` must be a candidate; else nothing is changed.
    fn check_adoptable(&self, adopt: &[String]) -> Result<(), ActuatorError> {
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
        Ok(())
    }

    /// Lists each candidate in `out`, adopting those in `adopt` (recorded, added to
    /// `instances`); returns the ones left alone.
    fn adopt_candidates(
        &mut self,
        adopt: &[String],
        members: &BTreeMap<String, MemberState>,
        instances: &mut Vec<InstanceInfo>,
        out: &mut Vec<String>,
    ) -> Vec<InstanceInfo> {
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
        left
    }

    /// The ledger entries a repair rebuilds: from the readable state, the journal and the
    /// instances of ours, plus one for each candidate left alone that was launched today.
    fn repair_entries(
        &self,
        instances: &[InstanceInfo],
        left: &[InstanceInfo],
        day_start: Timestamp,
        now: Timestamp,
    ) -> Vec<cap::Entry> {
        let mut entries = rebuild_entries(self.ledger.entries(), &self.journal, instances, now);
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
        entries
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
        // A reload releases the brake when the hook, the image or the key changed: how an
        // operator says the cause was fixed. An unchanged file fixes nothing.
        self.sync_print = sync_fingerprint(cfg);
        match self.brake.reload(&self.sync_print) {
            Ok(Some(t)) => {
                tracing::info!(cause = %t.cause,
                    "reload: the hook, the slave image or the ssh key changed, so the brake on \
                     launches is released; the next decision may scale out (two at a time until \
                     a sync goes through)");
                self.save_state(now, &mut report);
            }
            Ok(None) => {}
            Err(cause) => tracing::warn!(cause = %cause,
                "reload: the brake on launches stays on: the hook, the slave image and the ssh \
                 key are as they were when it tripped. Fix the cause and reload, or say it is \
                 fixed elsewhere with `burst-agent resume`"),
        }
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
            releasing: &self.releasing,
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
}

/// How long a content source's check may take before the source counts as missing (a hung
/// NFS, EFS or sshfs mount).
pub const SOURCE_CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// What a launch's content sync runs with, as one short digest: the `pre_register` and
/// `content_check` hooks (argv, timeout, environment), the slave image (AMI, or launch template
/// and version) and the ssh keys the hook names (their bytes). The brake's proof holds for this
/// digest only, and a reload releases a tripped brake only when it changed.
pub fn sync_fingerprint(cfg: &Config) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for hook in std::iter::once(&cfg.hooks.pre_register).chain(cfg.hooks.content_check.as_ref()) {
        h.update(serde_json::to_vec(hook).unwrap_or_default());
        h.update(b"\0");
        for key in crate::preflight::ssh_keys(hook, &cfg.agent.state_dir) {
            h.update(key.as_os_str().as_encoded_bytes());
            // A missing or unreadable key hashes as empty: its appearance is a change.
            h.update(std::fs::read(&key).unwrap_or_default());
            h.update(b"\0");
        }
    }
    match &cfg.fleet.launch_template {
        Some(lt) => h.update(format!("lt:{}:{}:{}", lt.id, lt.name, lt.version)),
        None => h.update(format!("ami:{}", cfg.fleet.ami)),
    }
    h.finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests;
