//! The simulated world the fault simulation runs the real actuator in: EC2 and a classic ELB
//! as AWS documents them (eventual consistency, client tokens, slow boots, OutOfService before
//! InService, batch calls that fail whole), the state directory's disk, and hooks, all behind
//! the actuator's own traits ([`Cloud`], [`Disk`], [`HookRunner`]). One seeded RNG decides
//! every fault, so a seed replays exactly.
//!
//! Crashes: the harness arms a countdown of *effects* (a cloud call reaching AWS, a call's
//! effect, a file write). When it runs out the agent is dead: that call or write and everything
//! after it fails without effect, as after `kill -9`, until the harness opens a new actuator.
//! Violations of the promise are recorded where they happen (a foreign instance touched, a slave
//! registered before its content sync succeeded).
//!
//! Beside EC2, the ELB, the disk and the hooks, the world holds the ledger table (its
//! conditions in memory) and the site's lease. In some seeds a copy of the master takes the
//! lease over from a holder paused mid-tick. Fixed timing replaces the seed's draws with fixed
//! times and no faults: the world `simulate` runs every deciding autoscaler's slaves in.

use crate::actuator::cloud::{
    Cloud, InstanceInfo, InstanceState, LaunchRequest, MemberState, TAG_DRAINING_SINCE, TAG_GROUP,
    TAG_OWNER, TAG_POOLED_SINCE,
};
use crate::actuator::runner::{Finished, HookRunner};
use crate::actuator::HookKind;
use crate::aws::AwsError;
use crate::config::Hook;
use crate::fsutil::Disk;
use crate::hooks::HookVars;
use crate::table::{
    Answer, Counted, Fence, InstanceRecord, IntentRecord, LedgerTable, Reserved, SiteRecords,
};
use burst_edge::fenced::{Fenced, LeaseEnd};
use jiff::Timestamp;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

pub const OWNER: &str = "site-elb";
pub const MASTER: &str = "i-0master";

#[derive(Clone, Debug)]
pub struct SimInstance {
    pub info: InstanceInfo,
    /// Launched by this install's agent (the only ones it may touch).
    pub ours: bool,
    pub launched_at: Timestamp,
    /// DescribeInstances lists it from then on (EC2 is eventually consistent).
    pub visible_at: Timestamp,
    pub running_at: Timestamp,
    /// When TerminateInstances took effect.
    pub terminated_at: Option<Timestamp>,
    /// Its runs: from launch or StartInstances to StopInstances or termination (the truth the
    /// cap is checked against: an instance counts on every day one of its runs touches).
    pub runs: Vec<(Timestamp, Option<Timestamp>)>,
    /// A stop in progress completes then (stopping → stopped).
    pub stopped_at: Option<Timestamp>,
    /// The ELB's health check fails from then on.
    pub sick_from: Option<Timestamp>,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    pub calls: u64,
    pub faults: u64,
    pub crashes: u64,
    pub launched: u64,
    pub hooks: u64,
    pub hook_failures: u64,
    /// Holders paused past their lease, taken over by a copy of the master.
    pub takeovers: u64,
}

/// Fault rates and shapes, drawn per seed.
#[derive(Clone, Debug)]
pub struct Faults {
    /// Chance that a call fails (its kind drawn next).
    pub rate: f64,
    /// Every RunInstances in these subnets gets InsufficientInstanceCapacity in this window.
    pub brownout: Option<(Timestamp, Timestamp, BTreeSet<String>)>,
    /// Chance a hook fails, and that it hangs until its timeout.
    pub hook_fail: f64,
    pub hook_hang: f64,
    /// Boot time range, seconds.
    pub boot: (i64, i64),
    /// Chance a slave's ELB health check starts failing for good while it serves.
    pub sick: f64,
}

/// Fixed times in place of the seed's draws, and no faults: the world `simulate` runs every
/// autoscaler's slaves in (seconds).
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// RunInstances to running (DescribeInstances lists it at once).
    pub boot: i64,
    /// StartInstances of a stopped slave to running.
    pub start: i64,
    /// `pre_register` after a launch, and after a start out of the warm pool (and each periodic
    /// `content_sync`); every other hook takes a second.
    pub sync: i64,
    pub resync: i64,
    /// Registration to the ELB's InService (its health check passing).
    pub in_service: i64,
}

pub struct World {
    pub now: Timestamp,
    /// Set: fixed times instead of drawn ones (the seed's RNG is not used for them).
    pub timing: Option<Timing>,
    pub rng: ChaCha8Rng,
    pub faults: Faults,
    pub faults_on: bool,
    /// Effects left before the agent dies; `None`: no crash armed.
    pub crash_in: Option<u32>,
    pub dead: bool,
    pub instances: BTreeMap<String, SimInstance>,
    /// Registered instances: when.
    pub members: BTreeMap<String, Timestamp>,
    tokens: BTreeMap<String, Vec<String>>,
    next_id: u32,
    /// Instances whose pre_register hook succeeded (their content is there).
    pub synced: BTreeSet<String>,
    pub files: BTreeMap<PathBuf, Vec<u8>>,
    pub violations: Vec<String>,
    /// What the last DescribeInstances that got its answer back listed, and when.
    pub last_listed: BTreeSet<String>,
    pub last_listed_at: Option<Timestamp>,
    pub stats: Stats,
    pub next_intent: u64,
    /// CloudWatch's copy of the ledger: the highest `BurstCapUsed` the agent published, by its
    /// cap day (the daemon publishes the ledger's count every tick).
    pub published_cap: BTreeMap<String, u32>,
    /// Sabotage: pre_register succeeds without putting content on the slave.
    pub hooks_lie: bool,
    /// The site's items in the shared ledger table, and whether the agents use it.
    pub table: TableData,
    pub table_on: bool,
    /// Each agent's lease identity (`HOST/NONCE`) and its lease's end as it knows it.
    pub holders: Vec<String>,
    pub ends: Vec<LeaseEnd>,
    /// Which agent holds the lease in the table.
    pub holder: usize,
    /// Effects left before the holder is paused past its lease and another agent takes over
    /// (it wakes mid-tick, its lease gone): `(effects, to)`.
    pub pause_in: Option<(u32, usize)>,
    /// Sabotage: a paused holder wakes believing it still holds the lease.
    pub unfenced: bool,
}

/// The site's items in the shared table, with the conditions DynamoDB checks.
#[derive(Clone, Debug, Default)]
pub struct TableData {
    /// Holder and record version.
    pub lease: (String, u64),
    pub days: BTreeMap<String, u32>,
    /// Intent → (day, units, refunded, holder).
    pub intents: BTreeMap<String, (String, u32, bool, String)>,
    pub instances: BTreeMap<String, InstanceRecord>,
    pub counted: BTreeSet<(String, String)>,
}

/// The far end of a lease the simulation renews for as long as it holds (real time does not
/// pass in it: the lease moves only when the harness says).
fn held(holder: &str, version: u64) -> Option<(tokio::time::Instant, Fence)> {
    Some((
        tokio::time::Instant::now() + Duration::from_secs(10 * 365 * 86_400),
        Fence {
            holder: holder.to_string(),
            version,
        },
    ))
}

#[derive(Clone)]
pub struct Shared(pub Arc<Mutex<World>>);

impl Shared {
    pub fn w(&self) -> MutexGuard<'_, World> {
        // A panic while holding the lock is already a failed seed; keep going to report it.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn err(op: &'static str, code: &str, retryable: bool, not_applied: bool) -> AwsError {
    AwsError {
        op,
        code: code.into(),
        message: "simulated".into(),
        retryable,
        not_applied,
    }
}

/// How a faulty call fails.
enum Fault {
    /// The service refused (throttling): nothing happened.
    Refused,
    /// 5xx or a reset before the request took effect: unknown to the caller.
    Before,
    /// The request took effect; the answer was lost (reset, timeout).
    After,
}

impl World {
    pub fn new(rng: ChaCha8Rng, faults: Faults, now: Timestamp) -> Self {
        let mut w = World {
            now,
            timing: None,
            rng,
            faults,
            faults_on: true,
            crash_in: None,
            dead: false,
            instances: BTreeMap::new(),
            members: BTreeMap::new(),
            tokens: BTreeMap::new(),
            next_id: 0,
            synced: BTreeSet::new(),
            files: BTreeMap::new(),
            violations: Vec::new(),
            last_listed: BTreeSet::new(),
            last_listed_at: None,
            stats: Stats::default(),
            next_intent: 0,
            published_cap: BTreeMap::new(),
            hooks_lie: false,
            table: TableData {
                lease: ("i-0master/a".into(), 1),
                ..TableData::default()
            },
            table_on: true,
            holders: vec!["i-0master/a".into(), "i-0copy/b".into()],
            ends: vec![LeaseEnd::default(), LeaseEnd::default()],
            holder: 0,
            pause_in: None,
            unfenced: false,
        };
        w.ends[0].set(held("i-0master/a", 1));
        // The master itself carries the slaves' tags (built from a slave's image); another
        // install shares the group name; an untagged leftover names an intent nobody knows.
        let back = Timestamp::from_second(now.as_second() - 86_400).unwrap_or(now);
        for (id, owner, intent) in [
            (MASTER, Some(OWNER), Some("bi-000000000000")),
            ("i-0other", Some("other-elb"), Some("bi-111111111111")),
            ("i-0stray", None, Some("bi-222222222222")),
        ] {
            w.instances.insert(
                id.into(),
                SimInstance {
                    info: InstanceInfo {
                        id: id.into(),
                        state: InstanceState::Running,
                        private_ip: Some("10.0.0.1".into()),
                        private_dns: None,
                        launched_at: Some(back),
                        ec2_launched_at: Some(back),
                        client_token: Some(String::new()),
                        intent: intent.map(str::to_string),
                        group: Some("default".into()),
                        owner: owner.map(str::to_string),
                        draining_since: None,
                        pooled_since: None,
                        ebs_root: true,
                        ended_at: None,
                        instance_type: None,
                        stopped_at: None,
                    },
                    ours: false,
                    launched_at: back,
                    visible_at: back,
                    running_at: back,
                    terminated_at: None,
                    runs: vec![(back, None)],
                    stopped_at: None,
                    sick_from: None,
                },
            );
        }
        w.members.insert(MASTER.into(), back);
        w
    }

    /// One effect; `true` when the agent is (now) dead.
    pub fn effect(&mut self) -> bool {
        if self.dead {
            return true;
        }
        if let Some((n, to)) = self.pause_in.as_mut() {
            *n = n.saturating_sub(1);
            if *n == 0 {
                let to = *to;
                self.take_over(to);
            }
        }
        if let Some(n) = self.crash_in.as_mut() {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.crash_in = None;
                self.dead = true;
                self.stats.crashes += 1;
            }
        }
        self.dead
    }

    fn fault(&mut self, op: &'static str) -> Option<Fault> {
        self.stats.calls += 1;
        if !self.faults_on || self.rng.random::<f64>() >= self.faults.rate {
            return None;
        }
        self.stats.faults += 1;
        Some(match self.rng.random_range(0..3) {
            0 => Fault::Refused,
            1 => Fault::Before,
            _ => Fault::After,
        })
        .filter(|_| !op.is_empty())
    }

    /// Runs one call: the crash point before it, a fault, the effect, the crash point after.
    fn call<T>(
        &mut self,
        op: &'static str,
        f: impl FnOnce(&mut World) -> Result<T, AwsError>,
    ) -> Result<T, AwsError> {
        if self.effect() {
            return Err(err(op, "Dispatch", true, false));
        }
        let fault = self.fault(op);
        match fault {
            Some(Fault::Refused) => return Err(err(op, "RequestLimitExceeded", true, true)),
            Some(Fault::Before) => return Err(err(op, "InternalError", true, false)),
            _ => {}
        }
        let out = f(self);
        if self.effect() || matches!(fault, Some(Fault::After)) {
            return Err(err(op, "Timeout", true, false));
        }
        out
    }

    /// The holder was paused past its lease; agent `to` takes it over at the next version. The
    /// paused one wakes with its lease's end behind it (unless sabotaged).
    pub fn take_over(&mut self, to: usize) {
        self.pause_in = None;
        if to == self.holder {
            return;
        }
        let old = self.holder;
        self.stats.takeovers += 1;
        self.table.lease = (self.holders[to].clone(), self.table.lease.1 + 1);
        self.holder = to;
        if !self.unfenced {
            self.ends[old].set(None);
        }
        let v = self.table.lease.1;
        self.ends[to].set(held(&self.holders[to], v));
    }

    /// A fleet-changing call reached AWS from agent `agent`: a violation unless it holds the
    /// site's lease.
    fn acting(&mut self, agent: usize, op: &str) {
        if agent != self.holder {
            let v = format!(
                "{op} sent by agent {} while agent {} holds the site's lease",
                self.holders[agent], self.holders[self.holder]
            );
            self.violations.push(v);
        }
    }

    /// Lets time act: boots finish, shutting-down ends, the ELB's health checks settle.
    pub fn advance(&mut self, now: Timestamp) {
        self.now = now;
        for i in self.instances.values_mut() {
            match i.info.state {
                InstanceState::Pending if now >= i.running_at => {
                    i.info.state = InstanceState::Running;
                }
                InstanceState::Stopping if i.stopped_at.is_some_and(|t| now >= t) => {
                    i.info.state = InstanceState::Stopped;
                }
                InstanceState::ShuttingDown
                    if i.terminated_at
                        .is_some_and(|t| now.as_second() - t.as_second() >= 30) =>
                {
                    i.info.state = InstanceState::Terminated;
                    i.info.ended_at = i.terminated_at;
                    self.members.remove(&i.info.id);
                }
                _ => {}
            }
        }
    }

    /// Someone else (a CI role, an admin's script: anyone with `ec2:CreateTags`) tags an
    /// instance of theirs with this install's group, owner and an intent copied from one of the
    /// agent's slaves. It is not the agent's: touching it is a violation (check 5).
    pub fn forge(&mut self, group: &str) {
        const ID: &str = "i-0forged";
        if self.instances.contains_key(ID) {
            return;
        }
        let copied = self
            .instances
            .values()
            .filter(|i| i.ours)
            .find_map(|i| i.info.intent.clone())
            .unwrap_or_else(|| "bi-333333333333".into());
        let now = self.now;
        self.instances.insert(
            ID.into(),
            SimInstance {
                info: InstanceInfo {
                    id: ID.into(),
                    group: Some(group.into()),
                    state: InstanceState::Running,
                    private_ip: Some("10.0.0.2".into()),
                    private_dns: None,
                    launched_at: Some(now),
                    ec2_launched_at: Some(now),
                    client_token: Some(String::new()),
                    intent: Some(copied),
                    owner: Some(OWNER.into()),
                    draining_since: None,
                    pooled_since: None,
                    ebs_root: true,
                    ended_at: None,
                    instance_type: None,
                    stopped_at: None,
                },
                ours: false,
                launched_at: now,
                visible_at: now,
                running_at: now,
                terminated_at: None,
                runs: vec![(now, None)],
                stopped_at: None,
                sick_from: None,
            },
        );
    }

    /// Someone removes the group tag of one of the agent's live instances: it must still be
    /// tracked and counted (check 3 holds whatever the agent asked EC2 for).
    pub fn untag_group(&mut self) {
        let live: Vec<String> = self
            .instances
            .values()
            .filter(|i| i.ours && i.info.group.is_some() && i.terminated_at.is_none())
            .map(|i| i.info.id.clone())
            .collect();
        if live.is_empty() {
            return;
        }
        let pick = live[self.rng.random_range(0..live.len())].clone();
        if let Some(i) = self.instances.get_mut(&pick) {
            i.info.group = None;
        }
    }

    /// A hook started for `id`: a violation when the instance is not the agent's (its content
    /// pushed to a stranger).
    fn hook_on(&mut self, id: &str, kind: HookKind) {
        if self.instances.get(id).is_some_and(|i| !i.ours) {
            let v = format!("{kind:?} hook ran for {id}, which is not this agent's");
            self.violations.push(v);
        }
    }

    fn visible(&self, id: &str) -> bool {
        self.instances.get(id).is_some_and(|i| {
            self.now >= i.visible_at
                && i.terminated_at
                    .is_none_or(|t| self.now.as_second() - t.as_second() <= 3600)
        })
    }

    fn touch(&mut self, op: &str, ids: &[String]) {
        for id in ids {
            if self.instances.get(id).is_some_and(|i| !i.ours) {
                let v = format!("{op} touched {id}, which is not this agent's");
                self.violations.push(v);
            }
        }
    }

    fn launch(&mut self, req: &LaunchRequest, group: &str) -> Result<Vec<InstanceInfo>, AwsError> {
        if let Some(ids) = self.tokens.get(&req.client_token) {
            // EC2's idempotency: the same token answers with the first call's instances.
            return Ok(ids
                .iter()
                .map(|id| self.instances[id].info.clone())
                .collect());
        }
        if let Some((from, to, subnets)) = &self.faults.brownout {
            let here = req.subnet.as_deref().unwrap_or("");
            if self.now >= *from && self.now < *to && subnets.contains(here) {
                return Err(err(
                    "RunInstances",
                    "InsufficientInstanceCapacity",
                    true,
                    true,
                ));
            }
        }
        // Under capacity pressure EC2 may give fewer than asked, never fewer than min.
        let n = if self.faults_on && req.max > req.min && self.rng.random_bool(0.2) {
            self.rng.random_range(req.min..req.max)
        } else {
            req.max.max(req.min)
        };
        let mut out = Vec::new();
        for _ in 0..n {
            self.next_id += 1;
            let id = format!("i-{:08x}", self.next_id);
            let (boot, lag, sick, ebs_root) = match self.timing {
                Some(t) => (t.boot, 0, false, true),
                None => {
                    let (lo, hi) = self.faults.boot;
                    let boot = self.rng.random_range(lo..=hi);
                    let lag = self.rng.random_range(0..=90);
                    let sick = self.rng.random::<f64>() < self.faults.sick;
                    // Now and then an instance-store root, which EC2 will not stop.
                    (boot, lag, sick, !self.rng.random_bool(0.1))
                }
            };
            let at = |s: i64| Timestamp::from_second(self.now.as_second() + s).unwrap_or(self.now);
            let info = InstanceInfo {
                id: id.clone(),
                state: InstanceState::Pending,
                private_ip: Some(format!(
                    "10.1.{}.{}",
                    self.next_id / 250,
                    self.next_id % 250
                )),
                private_dns: None,
                launched_at: Some(req.launched_at),
                ec2_launched_at: Some(self.now),
                client_token: Some(req.client_token.clone()),
                intent: Some(req.intent.clone()),
                group: Some(group.to_string()),
                owner: Some(req.owner.clone()),
                draining_since: None,
                pooled_since: None,
                ebs_root,
                ended_at: None,
                instance_type: req.instance_type.clone().or(Some("c5.large".into())),
                stopped_at: None,
            };
            self.instances.insert(
                id.clone(),
                SimInstance {
                    info: info.clone(),
                    ours: true,
                    launched_at: self.now,
                    visible_at: at(lag),
                    running_at: at(boot),
                    terminated_at: None,
                    runs: vec![(self.now, None)],
                    stopped_at: None,
                    sick_from: sick.then(|| at(boot + self.rng.random_range(60..=1800))),
                },
            );
            self.stats.launched += 1;
            out.push(info);
        }
        self.tokens.insert(
            req.client_token.clone(),
            out.iter().map(|i| i.id.clone()).collect(),
        );
        Ok(out)
    }

    /// Whether the ELB's health check passes for this member now: running, registered long
    /// enough, not sick.
    pub fn healthy(&self, id: &str, now: Timestamp) -> bool {
        let delay = self.timing.map_or(20, |t| t.in_service);
        match (self.instances.get(id), self.members.get(id)) {
            (Some(i), Some(since)) => {
                i.info.state == InstanceState::Running
                    && now.as_second() - since.as_second() >= delay
                    && i.sick_from.is_none_or(|t| now < t)
            }
            _ => false,
        }
    }

    /// Every id must be known to EC2 by now, or the whole call fails (as EC2's batch calls do).
    fn known(&self, op: &'static str, ids: &[String], code: &str) -> Result<(), AwsError> {
        if ids.iter().all(|id| self.visible(id)) {
            Ok(())
        } else {
            Err(err(op, code, false, true))
        }
    }
}

/// The real actuator in this world: its EC2, ELB, hooks and state directory, the master
/// [`MASTER`], intent ids from the world's counter.
pub fn actuator(
    world: &Shared,
    cfg: &crate::config::Config,
    now: Timestamp,
    agent: usize,
) -> Result<crate::actuator::Actuator<Fenced<SimCloud>, SimHooks>, crate::actuator::ActuatorError> {
    let end = world.w().ends[agent].clone();
    let ids = world.clone();
    let mut a = crate::actuator::Actuator::open_with(
        Fenced::new(
            SimCloud(world.clone(), cfg.agent.group.clone(), agent),
            end.clone(),
        ),
        SimHooks::new(world.clone()),
        Arc::new(MemDisk(world.clone())),
        Box::new(move || {
            let mut w = ids.w();
            w.next_intent += 1;
            format!("bi-{:012x}", w.next_intent)
        }),
        cfg,
        now,
    )?;
    a.set_own_instance(Some(MASTER.into()));
    if world.w().table_on {
        a.set_guarantee(Arc::new(SimTable(world.clone())), end);
    }
    Ok(a)
}

/// The agent's EC2 and ELB, as agent `.2` (of [`World::holders`]) of group `.1` sees them.
#[derive(Clone)]
pub struct SimCloud(pub Shared, pub String, pub usize);

impl Cloud for SimCloud {
    async fn launch(&self, req: &LaunchRequest) -> Result<Vec<InstanceInfo>, AwsError> {
        let mut w = self.0.w();
        let group = self.1.clone();
        w.acting(self.2, "RunInstances");
        w.call("RunInstances", |w| w.launch(req, &group))
    }

    async fn describe_group(&self) -> Result<Vec<InstanceInfo>, AwsError> {
        let mut w = self.0.w();
        let group = self.1.clone();
        let listed: Vec<InstanceInfo> = w.call("DescribeInstances", |w| {
            Ok(w.instances
                .values()
                .filter(|i| {
                    i.info.group.as_deref() == Some(group.as_str()) && w.visible(&i.info.id)
                })
                .map(|i| i.info.clone())
                .collect())
        })?;
        w.last_listed = listed.iter().map(|i| i.id.clone()).collect();
        w.last_listed_at = Some(w.now);
        Ok(listed)
    }

    async fn describe_named(
        &self,
        ids: &[String],
        intents: &[String],
    ) -> Result<Vec<InstanceInfo>, AwsError> {
        let mut w = self.0.w();
        w.call("DescribeInstances", |w| {
            Ok(w.instances
                .values()
                .filter(|i| w.visible(&i.info.id))
                .filter(|i| {
                    ids.contains(&i.info.id)
                        || i.info.intent.as_ref().is_some_and(|t| intents.contains(t))
                })
                .map(|i| i.info.clone())
                .collect())
        })
    }

    async fn elb_members(&self) -> Result<BTreeMap<String, MemberState>, AwsError> {
        let mut w = self.0.w();
        w.call("DescribeInstanceHealth", |w| {
            let now = w.now;
            Ok(w.members
                .keys()
                .map(|id| {
                    let state = if w.healthy(id, now) {
                        MemberState::InService
                    } else {
                        MemberState::OutOfService
                    };
                    (id.clone(), state)
                })
                .collect())
        })
    }

    async fn register(&self, ids: &[String]) -> Result<(), AwsError> {
        let mut w = self.0.w();
        w.acting(self.2, "RegisterInstancesWithLoadBalancer");
        w.call("RegisterInstancesWithLoadBalancer", |w| {
            // The classic ELB refuses the whole call if one instance is not running.
            let op = "RegisterInstancesWithLoadBalancer";
            w.known(op, ids, "InvalidInstance")?;
            if ids
                .iter()
                .any(|id| w.instances[id].info.state != InstanceState::Running)
            {
                return Err(err(op, "InvalidInstance", false, true));
            }
            w.touch("RegisterInstances", ids);
            for id in ids {
                if !w.synced.contains(id) {
                    let v = format!("{id} registered with the ELB before its content sync");
                    w.violations.push(v);
                }
                let now = w.now;
                w.members.entry(id.clone()).or_insert(now);
            }
            Ok(())
        })
    }

    async fn deregister(&self, ids: &[String]) -> Result<(), AwsError> {
        let mut w = self.0.w();
        w.acting(self.2, "DeregisterInstancesFromLoadBalancer");
        w.call("DeregisterInstancesFromLoadBalancer", |w| {
            let op = "DeregisterInstancesFromLoadBalancer";
            if ids.iter().any(|id| !w.members.contains_key(id)) {
                // As AwsCloud maps it: one id already out is what was asked; in a batch, the
                // whole call failed and nothing was deregistered.
                return if ids.len() == 1 {
                    Ok(())
                } else {
                    Err(err(op, "InvalidInstance", false, true))
                };
            }
            w.touch("DeregisterInstances", ids);
            for id in ids {
                w.members.remove(id);
            }
            Ok(())
        })
    }

    async fn terminate(&self, ids: &[String]) -> Result<(), AwsError> {
        let mut w = self.0.w();
        w.acting(self.2, "TerminateInstances");
        w.call("TerminateInstances", |w| {
            let op = "TerminateInstances";
            if let Err(e) = w.known(op, ids, "InvalidInstanceID.NotFound") {
                // AwsCloud: a single unknown id is already gone.
                return if ids.len() == 1 { Ok(()) } else { Err(e) };
            }
            w.touch("TerminateInstances", ids);
            let now = w.now;
            for id in ids {
                if let Some(i) = w.instances.get_mut(id) {
                    if i.terminated_at.is_none() {
                        i.terminated_at = Some(now);
                        i.info.state = InstanceState::ShuttingDown;
                        end_run(i, now);
                    }
                }
            }
            Ok(())
        })
    }

    async fn stop(&self, ids: &[String]) -> Result<(), AwsError> {
        let mut w = self.0.w();
        w.acting(self.2, "StopInstances");
        w.call("StopInstances", |w| {
            let op = "StopInstances";
            w.known(op, ids, "InvalidInstanceID.NotFound")?;
            // EC2 refuses the whole call for an instance-store root, or one not running.
            if ids.iter().any(|id| {
                let i = &w.instances[id].info;
                !i.ebs_root
                    || !matches!(
                        i.state,
                        InstanceState::Running | InstanceState::Stopping | InstanceState::Stopped
                    )
            }) {
                return Err(err(op, "UnsupportedOperation", false, true));
            }
            w.touch("StopInstances", ids);
            let now = w.now;
            for id in ids {
                let lag = match w.timing {
                    Some(_) => 0,
                    None => w.rng.random_range(5..=120),
                };
                if let Some(i) = w.instances.get_mut(id) {
                    if i.info.state == InstanceState::Running {
                        i.info.state = InstanceState::Stopping;
                        i.stopped_at = Timestamp::from_second(now.as_second() + lag).ok();
                        end_run(i, now);
                    }
                }
            }
            Ok(())
        })
    }

    async fn start(&self, ids: &[String]) -> Result<(), AwsError> {
        let mut w = self.0.w();
        w.acting(self.2, "StartInstances");
        w.call("StartInstances", |w| {
            let op = "StartInstances";
            w.known(op, ids, "InvalidInstanceID.NotFound")?;
            if ids.iter().any(|id| {
                !matches!(
                    w.instances[id].info.state,
                    InstanceState::Stopped | InstanceState::Pending | InstanceState::Running
                )
            }) {
                return Err(err(op, "IncorrectInstanceState", false, true));
            }
            w.touch("StartInstances", ids);
            let now = w.now;
            for id in ids {
                let boot = match w.timing {
                    Some(t) => t.start,
                    None => w.rng.random_range(10..=90),
                };
                if let Some(i) = w.instances.get_mut(id) {
                    if i.info.state == InstanceState::Stopped {
                        i.info.state = InstanceState::Pending;
                        i.running_at =
                            Timestamp::from_second(now.as_second() + boot).unwrap_or(now);
                        i.runs.push((now, None));
                    }
                }
                // Its content is as old as its stop: only a new sync makes it servable.
                w.synced.remove(id);
            }
            Ok(())
        })
    }

    async fn untag(&self, ids: &[String], keys: &[&str]) -> Result<(), AwsError> {
        let mut w = self.0.w();
        w.acting(self.2, "DeleteTags");
        w.call("DeleteTags", |w| {
            w.known("DeleteTags", ids, "InvalidInstanceID.NotFound")?;
            w.touch("DeleteTags", ids);
            for id in ids {
                if let Some(i) = w.instances.get_mut(id) {
                    for k in keys {
                        match *k {
                            TAG_DRAINING_SINCE => i.info.draining_since = None,
                            TAG_POOLED_SINCE => i.info.pooled_since = None,
                            _ => {}
                        }
                    }
                }
            }
            Ok(())
        })
    }

    async fn tag(&self, ids: &[String], key: &str, value: &str) -> Result<(), AwsError> {
        let mut w = self.0.w();
        w.acting(self.2, "CreateTags");
        w.call("CreateTags", |w| {
            w.known("CreateTags", ids, "InvalidInstanceID.NotFound")?;
            w.touch("CreateTags", ids);
            for id in ids {
                if let Some(i) = w.instances.get_mut(id) {
                    match key {
                        TAG_DRAINING_SINCE => i.info.draining_since = value.parse().ok(),
                        TAG_POOLED_SINCE => i.info.pooled_since = value.parse().ok(),
                        TAG_OWNER => i.info.owner = Some(value.into()),
                        TAG_GROUP => i.info.group = Some(value.into()),
                        _ => {}
                    }
                }
            }
            Ok(())
        })
    }
}

/// Ends the instance's run under way, if any.
fn end_run(i: &mut SimInstance, now: Timestamp) {
    if let Some(run) = i.runs.last_mut().filter(|r| r.1.is_none()) {
        run.1 = Some(now);
    }
}

/// The state directory in memory; a write after the crash point is lost.
pub struct MemDisk(pub Shared);

impl Disk for MemDisk {
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.0
            .w()
            .files
            .get(path)
            .cloned()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }
    fn write_atomic(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let mut w = self.0.w();
        if w.effect() {
            return Err(io::Error::other("simulated crash"));
        }
        w.files.insert(path.to_path_buf(), bytes.to_vec());
        Ok(())
    }
    fn quarantine(&self, path: &Path, unix_seconds: i64) -> io::Result<PathBuf> {
        let mut w = self.0.w();
        if w.effect() {
            return Err(io::Error::other("simulated crash"));
        }
        let bytes = w
            .files
            .remove(path)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        let mut aside = path.as_os_str().to_owned();
        aside.push(format!(".corrupt-{unix_seconds}"));
        let aside = PathBuf::from(aside);
        w.files.insert(aside.clone(), bytes);
        Ok(aside)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut w = self.0.w();
        if w.effect() {
            return Err(io::Error::other("simulated crash"));
        }
        let bytes = w
            .files
            .remove(from)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        w.files.insert(to.to_path_buf(), bytes);
        Ok(())
    }
}

struct SimHook {
    kind: HookKind,
    done_at: Timestamp,
    result: Result<(), String>,
    detached: bool,
}

/// Hooks that succeed, fail or hang until their timeout, as the seed says. A pre_register that
/// succeeds puts the content on its slave ([`World::synced`]).
pub struct SimHooks {
    world: Shared,
    attached: BTreeMap<String, SimHook>,
    detached: Vec<(String, SimHook)>,
    /// As the process runner: every hook is cut at the agent's lease end, unreported.
    lease: Option<LeaseEnd>,
}

impl SimHooks {
    pub fn new(world: Shared) -> Self {
        SimHooks {
            world,
            attached: BTreeMap::new(),
            detached: Vec::new(),
            lease: None,
        }
    }

    /// The lease has ended: every hook is cut (none reported, no content arrives).
    fn cut(&mut self) -> bool {
        let cut = self.lease.as_ref().is_some_and(|e| !e.holds());
        if cut {
            self.attached.clear();
            self.detached.clear();
        }
        cut
    }

    fn draw(&self, id: &str, kind: HookKind, hook: &Hook, detached: bool) -> SimHook {
        let mut w = self.world.w();
        w.stats.hooks += 1;
        // Every attempt to its timeout, and the delays between: what the real runner may take.
        let secs = |d: crate::config::Dur| i64::try_from(d.get().as_secs()).unwrap_or(60);
        let tries = i64::from(hook.retries) + 1;
        let budget = secs(hook.timeout) * tries + secs(hook.retry_delay) * (tries - 1);
        if let Some(t) = w.timing {
            let restarted = w.instances.get(id).is_some_and(|i| i.runs.len() > 1);
            let takes = match kind {
                HookKind::PreRegister if !restarted => t.sync,
                HookKind::PreRegister | HookKind::ContentSync => t.resync,
                _ => 1,
            };
            // As the runner: each attempt is killed at its timeout, and every retry takes as
            // long again.
            let (secs, result) = if takes > secs(hook.timeout) {
                (
                    budget,
                    Err(format!(
                        "still running after {}s; killed with its process group",
                        secs(hook.timeout)
                    )),
                )
            } else {
                (takes, Ok(()))
            };
            return SimHook {
                kind,
                done_at: Timestamp::from_second(w.now.as_second() + secs).unwrap_or(w.now),
                result,
                detached,
            };
        }
        let r: f64 = w.rng.random();
        let (secs, result) = if r < w.faults.hook_hang {
            (
                budget,
                Err(format!(
                    "still running after {budget}s; killed with its process group"
                )),
            )
        } else if r < w.faults.hook_hang + w.faults.hook_fail {
            (w.rng.random_range(1..=budget), Err("exit status 23".into()))
        } else {
            (w.rng.random_range(1..=budget.clamp(1, 120)), Ok(()))
        };
        if result.is_err() {
            w.stats.hook_failures += 1;
        }
        SimHook {
            kind,
            done_at: Timestamp::from_second(w.now.as_second() + secs).unwrap_or(w.now),
            result,
            detached,
        }
    }
}

impl HookRunner for SimHooks {
    fn start(&mut self, id: &str, kind: HookKind, hook: &Hook, _vars: HookVars) {
        if self.cut() {
            return;
        }
        self.world.w().hook_on(id, kind);
        let h = self.draw(id, kind, hook, false);
        self.attached.insert(id.to_string(), h);
    }
    fn start_detached(&mut self, id: &str, kind: HookKind, hook: &Hook, _vars: HookVars) {
        if self.cut() {
            return;
        }
        self.world.w().hook_on(id, kind);
        let h = self.draw(id, kind, hook, true);
        self.detached.push((id.to_string(), h));
    }
    fn abort(&mut self, id: &str) {
        self.attached.remove(id);
    }
    fn has(&self, id: &str) -> bool {
        self.attached.contains_key(id)
    }
    fn in_flight(&self) -> usize {
        self.attached.len() + self.detached.len()
    }
    fn cut_at(&mut self, end: LeaseEnd) {
        self.lease = Some(end);
    }
    fn finished(&mut self) -> Vec<Finished> {
        if self.cut() {
            return Vec::new();
        }
        let mut w = self.world.w();
        let now = w.now;
        let mut out = Vec::new();
        let done: Vec<String> = self
            .attached
            .iter()
            .filter(|(_, h)| h.done_at <= now)
            .map(|(id, _)| id.clone())
            .collect();
        let mut ended: Vec<(String, SimHook)> = done
            .into_iter()
            .filter_map(|id| self.attached.remove(&id).map(|h| (id, h)))
            .collect();
        let (gone, still): (Vec<_>, Vec<_>) = std::mem::take(&mut self.detached)
            .into_iter()
            .partition(|(_, h)| h.done_at <= now);
        self.detached = still;
        ended.extend(gone);
        for (id, h) in ended {
            // Content reached the slave (before the agent hears of it).
            if h.kind == HookKind::PreRegister && h.result.is_ok() && !w.dead && !w.hooks_lie {
                w.synced.insert(id.clone());
            }
            out.push(Finished {
                id,
                kind: h.kind,
                result: h.result,
                secs: 0.0,
                detached: h.detached,
            });
        }
        out
    }
    async fn drain(&mut self, _deadline: Duration) -> usize {
        let n = self.in_flight();
        self.attached.clear();
        self.detached.clear();
        n
    }
}

/// The shared ledger table in this world: [`TableData`] behind the same faults and crash
/// points as every call (a lost answer after a conditional write applied, throttling).
pub struct SimTable(pub Shared);

fn lease_is(t: &TableData, f: &Fence) -> bool {
    t.lease.0 == f.holder && t.lease.1 == f.version
}

impl LedgerTable for SimTable {
    fn name(&self) -> &str {
        "sim-ledger"
    }
    fn reserve<'a>(
        &'a self,
        fence: &'a Fence,
        day: &'a str,
        intent: &'a str,
        units: u32,
        limit: u32,
        _time_zone: &'a str,
    ) -> Answer<'a, Reserved> {
        let mut w = self.0.w();
        let r = w.call("TransactWriteItems", |w| {
            let t = &mut w.table;
            let used = t.days.get(day).copied().unwrap_or(0);
            if !lease_is(t, fence) {
                return Ok(Reserved::LeaseLost);
            }
            if let Some((_, u, refunded, _)) = t.intents.get(intent) {
                return Ok(if !refunded && *u == units {
                    Reserved::Yes
                } else {
                    Reserved::CapSpent { used }
                });
            }
            if used + units > limit {
                return Ok(Reserved::CapSpent { used });
            }
            t.days.insert(day.to_string(), used + units);
            t.intents.insert(
                intent.to_string(),
                (day.to_string(), units, false, fence.holder.clone()),
            );
            Ok(Reserved::Yes)
        });
        Box::pin(std::future::ready(r))
    }
    fn refund<'a>(&'a self, intent: &'a str) -> Answer<'a, bool> {
        let mut w = self.0.w();
        let r = w.call("TransactWriteItems", |w| {
            let t = &mut w.table;
            let Some((day, units, refunded, _)) = t.intents.get_mut(intent) else {
                return Ok(false);
            };
            if *refunded {
                return Ok(false);
            }
            *refunded = true;
            let used = t.days.entry(day.clone()).or_insert(0);
            *used = used.saturating_sub(*units);
            Ok(true)
        });
        Box::pin(std::future::ready(r))
    }
    fn record_instance<'a>(&'a self, r: &'a InstanceRecord) -> Answer<'a, ()> {
        let mut w = self.0.w();
        let out = w.call("PutItem", |w| {
            w.table.counted.insert((r.day.clone(), r.id.clone()));
            w.table.instances.insert(r.id.clone(), r.clone());
            Ok(())
        });
        Box::pin(std::future::ready(out))
    }
    fn count<'a>(
        &'a self,
        fence: Option<&'a Fence>,
        day: &'a str,
        instance: &'a str,
        limit: Option<u32>,
        _time_zone: &'a str,
    ) -> Answer<'a, Counted> {
        let mut w = self.0.w();
        let r = w.call("TransactWriteItems", |w| {
            let t = &mut w.table;
            let key = (day.to_string(), instance.to_string());
            if t.counted.contains(&key) {
                return Ok(Counted::Already);
            }
            if fence.is_some_and(|f| !lease_is(t, f)) {
                return Ok(Counted::LeaseLost);
            }
            let used = t.days.get(day).copied().unwrap_or(0);
            if limit.is_some_and(|l| used + 1 > l) {
                return Ok(Counted::CapSpent { used });
            }
            t.counted.insert(key);
            t.days.insert(day.to_string(), used + 1);
            Ok(Counted::Yes)
        });
        Box::pin(std::future::ready(r))
    }
    fn day_used<'a>(&'a self, day: &'a str) -> Answer<'a, u32> {
        let mut w = self.0.w();
        let r = w.call("GetItem", |w| {
            Ok(w.table.days.get(day).copied().unwrap_or(0))
        });
        Box::pin(std::future::ready(r))
    }
    fn read_site(&self, _now_epoch: i64) -> Answer<'_, SiteRecords> {
        let mut w = self.0.w();
        let r = w.call("Query", |w| {
            let t = &w.table;
            Ok(SiteRecords {
                lease: Some(crate::lease::Item {
                    holder: t.lease.0.clone(),
                    version: t.lease.1,
                    renewed_at: String::new(),
                    released: false,
                }),
                days: t.days.clone(),
                intents: t
                    .intents
                    .iter()
                    .map(|(id, (day, units, refunded, holder))| IntentRecord {
                        id: id.clone(),
                        day: day.clone(),
                        units: *units,
                        refunded: *refunded,
                        holder: holder.clone(),
                    })
                    .collect(),
                instances: t.instances.values().cloned().collect(),
                counted: t.counted.iter().cloned().collect(),
                ..SiteRecords::default()
            })
        });
        Box::pin(std::future::ready(r))
    }
}
