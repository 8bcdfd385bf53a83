//! The slave's life as every part names it: EC2's and the ELB's view of an instance
//! ([`InstanceInfo`], [`InstanceState`], [`MemberState`]), the agent's tags on it, the one phase
//! enum ([`Phase`]) with the policy's coarser view of it ([`SlaveState`]), a tracked [`Slave`] and
//! the hooks run for it ([`HookKind`]). Types only: burst-core's `lifecycle` decides every phase
//! change, the agent's AWS edge fills the instances in.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// The agent's own tags, on every slave it launches.
pub const TAG_GROUP: &str = "burst-agent:group";

pub const TAG_INTENT: &str = "burst-agent:intent";

pub const TAG_LAUNCHED_AT: &str = "burst-agent:launched-at";

pub const TAG_DRAINING_SINCE: &str = "burst-agent:draining-since";

/// On a slave the agent stopped into the warm pool (written before StopInstances): a stopped
/// slave without it was stopped by someone else, and is terminated.
pub const TAG_POOLED_SINCE: &str = "burst-agent:pooled-since";

pub const TAG_BURST: &str = "burst";

/// Which install launched the slave: its ELB's name (unique in an account and region, and
/// DescribeInstances only ever lists this account's instances in this region). Only instances
/// with this agent's group **and** owner are ever synced, registered or terminated.
pub const TAG_OWNER: &str = "burst-agent:owner";

/// EC2's view of one instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InstanceState {
    Pending,
    Running,
    /// shutting-down, stopping, stopped: not serving, still an instance.
    Stopping,
    Stopped,
    ShuttingDown,
    Terminated,
}

#[derive(Clone, Debug, PartialEq)]
pub struct InstanceInfo {
    pub id: String,
    /// The `burst-agent:group` tag (`None`: removed; an instance the records name is found by
    /// id then, and tagged again).
    pub group: Option<String>,
    pub state: InstanceState,
    pub private_ip: Option<String>,
    pub private_dns: Option<String>,
    /// From the `burst-agent:launched-at` tag, else EC2's launch time.
    pub launched_at: Option<Timestamp>,
    /// EC2's own launch time (no tag: nobody but EC2 writes it). An open launch intent claims
    /// only instances EC2 launched after the intent was written.
    pub ec2_launched_at: Option<Timestamp>,
    /// The ClientToken of the RunInstances call that launched it, as EC2 reports it (written
    /// at launch, never by a tag; `None` where the service does not say, as moto).
    pub client_token: Option<String>,
    pub intent: Option<String>,
    /// The `burst-agent:owner` tag: the ELB of the install that launched it.
    pub owner: Option<String>,
    pub draining_since: Option<Timestamp>,
    /// The `burst-agent:pooled-since` tag: stopped into the warm pool by this agent.
    pub pooled_since: Option<Timestamp>,
    /// Its root device is an EBS volume, so it can be stopped and started again (EC2's
    /// `rootDeviceType`; an instance-store root can only be terminated).
    pub ebs_root: bool,
    /// For terminated instances, when (from EC2's state transition reason), if it says.
    pub ended_at: Option<Timestamp>,
    /// EC2's instance type (`c5.large`), for the report's prices.
    pub instance_type: Option<String>,
    /// For stopped instances, when (EC2's state transition reason), if it says: where a run of
    /// the usage records ends.
    pub stopped_at: Option<Timestamp>,
}

/// The ELB's view of a registered instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberState {
    InService,
    OutOfService,
    Unknown,
}

/// Where a slave is in its life. Pending and syncing slaves are capacity on the way.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlaveState {
    /// Launched, not yet running.
    Pending,
    /// Running; content sync or ELB registration under way.
    Syncing,
    InService,
    /// Deregistered, waiting out the draining timeout before termination.
    Draining,
    /// Stopped in the warm pool: not capacity, but the first to come back.
    Stopped,
}

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
    /// Marked unhealthy, and InService at the ELB again since then: the mark clears once this
    /// has lasted a whole `elb.register_timeout`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healthy_since: Option<Timestamp>,
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
        crate::name_of(&self)
    }
}
