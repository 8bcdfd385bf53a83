//! The lifecycle's rules: each phase's deadline, read off the phase table ([`deadline`]), the
//! one map from what EC2 and the ELB say to a phase ([`phase_of`]), whose an instance is
//! ([`ownership`]), where a launch goes ([`pick_placement`]) and how long a refused one waits
//! ([`backoff`]).
//! Pure: every function takes the time it needs.
//!
//! Ownership is by record, never by tag: a tag is a claim anyone with `ec2:CreateTags` can
//! write, so tags only find candidates ([`ownership`]). `pick_subnet` spreads intents over
//! `fleet.subnet_ids`, and each further call of an intent moves to the next subnet, so a zone
//! with no capacity is left at once.

use crate::config::{Config, Hook};
use crate::model::{InstanceInfo, InstanceState, MemberState, Phase, Slave};
use jiff::Timestamp;

/// EC2 is eventually consistent: a new instance may take this long to show in DescribeInstances.
pub const SETTLE_SECS: i64 = 300;

/// Terminate again if an instance still runs this long after the first TerminateInstances.
pub const TERMINATE_RETRY_SECS: i64 = 300;

/// A slave must be stopped this long after StopInstances, or it is terminated.
pub const STOP_DEADLINE_SECS: i64 = 600;

/// After EC2 had no capacity for any placement: the first wait before launching again, doubled
/// each time up to the last.
pub const NO_CAPACITY_BACKOFF_SECS: (i64, i64) = (60, 900);

/// How long a launch waits after `streak` refusals in a row (no capacity anywhere, or a
/// refusal for good): 1 min doubling to 15 min. The wait in seconds, and until when.
pub fn backoff(now: Timestamp, streak: u32) -> (i64, Timestamp) {
    let (first, last) = NO_CAPACITY_BACKOFF_SECS;
    let wait = first.saturating_mul(1i64 << streak.min(10)).min(last);
    (
        wait,
        Timestamp::from_second(now.as_second() + wait).unwrap_or(now),
    )
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
pub(crate) fn pick_placement(
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
pub fn placements(subnets: &[String], fallbacks: &[String]) -> usize {
    subnets.len().max(1) * (1 + fallbacks.len())
}

/// The subnet for RunInstances call `call` (1-based) of intent `intent`: successive intents
/// start in different subnets (spreading slaves over zones), and each further call of one
/// intent moves to the next subnet, so a zone out of capacity is left, not asked again. The
/// same (intent, call) always gives the same subnet, as a client token's retry must.
pub(crate) fn pick_subnet(subnets: &[String], intent: &str, call: u32) -> Option<String> {
    if subnets.is_empty() {
        return None;
    }
    let start = intent.bytes().map(usize::from).sum::<usize>();
    let call = usize::try_from(call.saturating_sub(1)).unwrap_or(0);
    Some(subnets[(start + call) % subnets.len()].clone())
}

/// On top of a hook's own time budget: a tick or two for its result to be collected.
pub const HOOK_GRACE_SECS: i64 = 120;

/// The longest a hook can take: every attempt to its timeout, and the delays between.
pub(crate) fn hook_budget(h: &Hook) -> i64 {
    let tries = i64::from(h.retries) + 1;
    h.timeout
        .whole_secs()
        .saturating_mul(tries)
        .saturating_add(h.retry_delay.whole_secs().saturating_mul(tries - 1))
}

/// How long a slave may stay in `phase` before the agent acts ([`Actuator::step`]), from the
/// phase table ([`PHASES`](super::PHASES)); `None` for a healthy slave in service. Overstaying
/// Pending, Syncing, Synced or Registering fails the slave (terminated, never registered);
/// Releasing deregisters anyway; Draining ends in TerminateInstances; Terminating sends it
/// again. An in-service slave the ELB has not called InService for `elb.register_timeout` is
/// failed too.
pub fn deadline(phase: Phase, cfg: &Config) -> Option<i64> {
    (super::phases::row(phase).deadline)(cfg)
}

/// The one place that maps what EC2 and the ELB say of an untracked instance of ours to a
/// phase (adoption at start, and a slave seen late); it enters that phase now. Only synced
/// slaves are ever registered, so a registered running one is past its sync. The draining tag
/// wins over everything, so a slave on its way out is never registered again: still in the ELB,
/// it is deregistered (Releasing); out of it, it drains for the whole draining timeout from now,
/// since when it left the ELB is not known (the tag was written before). A stopped or stopping
/// one tagged `burst-agent:pooled-since` is in the warm pool; any other stopped one comes back
/// Pending and is failed by the caller (stopped outside the agent).
pub(crate) fn phase_of(i: &InstanceInfo, member: Option<MemberState>) -> Phase {
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

pub fn age(now: Timestamp, since: Timestamp) -> i64 {
    now.as_second() - since.as_second()
}

pub fn alive(s: InstanceState) -> bool {
    matches!(
        s,
        InstanceState::Pending
            | InstanceState::Running
            | InstanceState::Stopping
            | InstanceState::Stopped
    )
}

pub fn stopped(s: InstanceState) -> bool {
    matches!(s, InstanceState::Stopping | InstanceState::Stopped)
}

pub fn slave_from(i: &InstanceInfo, phase: Phase, since: Timestamp, now: Timestamp) -> Slave {
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
        healthy_since: None,
        first_seen: now,
        ebs_root: i.ebs_root,
        restarted_at: None,
    }
}
