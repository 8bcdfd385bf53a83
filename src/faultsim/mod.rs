//! `burst-agent faultsim`: a seeded, deterministic fault and crash simulation of the real
//! actuator (the way FoundationDB and TigerBeetle test themselves). Each seed draws a config,
//! a fault profile and a run of decisions; the actuator runs against [`world`]'s simulated EC2,
//! ELB, disk and hooks, with faults at every call and crashes at every effect (cloud call,
//! its effect, file write), after which a new actuator is opened from the files, as after
//! `kill -9`. After every tick the promises are checked against the world's truth; the checks
//! are numbered as in RELIABILITY.md ("The checks"), whose sabotage table cites them:
//!
//! 1. instances of ours that ran during each local day ≤ the cap, and the ledger never counts
//!    fewer;
//! 2. every ledger entry is an instance EC2 launched or an attempt of a launch still unresolved
//!    (no charge for a launch that did not happen);
//! 3. every live instance of ours that a step could have listed is tracked;
//! 4. no slave registered before its content sync succeeded;
//! 5. no call names the master's instance or another install's;
//! 6. no slave stays in a phase past its deadline ([`crate::actuator::deadline`]), and one the
//!    ELB calls OutOfService is not counted as serving past it;
//! 7. and 8. the agent's clock (RELIABILITY.md);
//! 9. every fleet-changing call comes from the agent the table's lease names;
//!
//! and, once faults stop and the fleet is released: nothing of ours left running but the warm
//! pool, no launch left unresolved, the ledger counting at least every instance of ours that
//! lived today. Each check has a sabotage that breaks its promise on purpose (tests.rs) and
//! must be caught by name.

pub(crate) mod world;

use crate::actuator::{self, Actuator, Phase};
use crate::config::{Config, Dur, Hook};
use crate::policy::Decision;
use jiff::{tz::TimeZone, Timestamp};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use world::{Faults, Shared, SimCloud, SimHooks, Stats, World, OWNER};

/// Ticks with faults and crashes, then quiet ticks in which the fleet is released.
const FAULT_TICKS: u32 = 90;
const QUIET_TICKS: u32 = 70;
const MAX_TICK_SECS: i64 = 90;

/// What one seed did.
#[derive(Clone, Debug, Default)]
pub struct SeedRun {
    pub seed: u64,
    pub ticks: u32,
    pub stats: Stats,
    /// The first broken promise: at which tick, and what.
    pub violation: Option<(u32, String)>,
}

/// Totals over many seeds.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub seeds: u64,
    pub ticks: u64,
    pub calls: u64,
    pub faults: u64,
    pub crashes: u64,
    pub launched: u64,
    pub hooks: u64,
    pub hook_failures: u64,
    pub takeovers: u64,
    pub failed: Vec<SeedRun>,
}

impl Summary {
    fn add(&mut self, r: SeedRun) {
        self.seeds += 1;
        self.ticks += u64::from(r.ticks);
        self.calls += r.stats.calls;
        self.faults += r.stats.faults;
        self.crashes += r.stats.crashes;
        self.launched += r.stats.launched;
        self.hooks += r.stats.hooks;
        self.hook_failures += r.stats.hook_failures;
        self.takeovers += r.stats.takeovers;
        if r.violation.is_some() {
            self.failed.push(r);
        }
    }
}

/// The one command that replays a seed.
pub fn replay_command(seed: u64) -> String {
    format!("burst-agent faultsim --seed {seed} --verbose")
}

/// Runs seeds `first..first + count` (on one current-thread runtime; each seed is deterministic).
pub fn run(first: u64, count: u64) -> Summary {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let mut s = Summary::default();
            s.failed.push(SeedRun {
                seed: first,
                violation: Some((0, format!("could not start a runtime: {e}"))),
                ..SeedRun::default()
            });
            return s;
        }
    };
    let mut s = Summary::default();
    for seed in first..first.saturating_add(count) {
        s.add(rt.block_on(run_seed(seed)));
    }
    s
}

fn at(t: Timestamp, secs: i64) -> Timestamp {
    Timestamp::from_second(t.as_second() + secs).unwrap_or(t)
}

fn hook(secs: u64, retries: u32) -> Hook {
    Hook {
        argv: vec!["true".into()],
        timeout: Dur::secs(secs),
        retries,
        retry_delay: Dur::secs(5),
    }
}

/// The config, faults and start time a seed draws.
fn draw(rng: &mut ChaCha8Rng) -> (Config, Faults, Timestamp) {
    let mut cfg = Config::default();
    cfg.agent.state_dir = PathBuf::from("/nonexistent/burst-agent-faultsim");
    cfg.agent.dry_run = false;
    cfg.elb.name = OWNER.into();
    let zones = ["UTC", "Asia/Tokyo", "America/New_York", "Europe/London"];
    cfg.cap.time_zone = zones[rng.random_range(0..zones.len())].into();
    cfg.cap.daily_limit = rng.random_range(1..=5);
    cfg.fleet.subnet_ids = vec!["subnet-a".into(), "subnet-b".into()];
    if rng.random_bool(0.5) {
        cfg.fleet.fallback_instance_types = vec!["c5.large".into()];
    }
    cfg.fleet.boot_timeout = Dur::secs(600);
    // The warm pool, off or small, with an age limit some runs reach before they end.
    cfg.fleet.warm_pool = rng.random_range(0..=3);
    cfg.fleet.warm_pool_max_age = Dur::secs(rng.random_range(600..=7200));
    cfg.elb.register_timeout = Dur::secs(300);
    cfg.elb.draining_timeout = Dur::secs(rng.random_range(30..=300));
    cfg.hooks.pre_register = hook(rng.random_range(60..=300), rng.random_range(0..=2));
    cfg.hooks.content_sync = Some(hook(120, 1));
    cfg.hooks.pre_deregister = rng.random_bool(0.5).then(|| hook(60, 0));
    cfg.hooks.post_terminate = rng.random_bool(0.3).then(|| hook(30, 0));

    // Start up to three hours before a local midnight, so many runs cross one.
    let tz = TimeZone::get(&cfg.cap.time_zone).unwrap_or(TimeZone::UTC);
    let day = rng.random_range(0..365);
    let base = at(
        "2026-01-01T00:00:00Z"
            .parse()
            .unwrap_or(Timestamp::UNIX_EPOCH),
        day * 86_400,
    );
    let midnight = base
        .to_zoned_datetime(tz)
        .start_of_day()
        .map(|z| z.timestamp())
        .unwrap_or(base);
    let start = at(midnight, 86_400 - rng.random_range(0..3 * 3600));

    let brownout = rng.random_bool(0.3).then(|| {
        let from = at(start, rng.random_range(0..3600));
        let subnets: BTreeSet<String> = if rng.random_bool(0.5) {
            ["subnet-a".to_string()].into()
        } else {
            ["subnet-a".to_string(), "subnet-b".to_string()].into()
        };
        (from, at(from, rng.random_range(60..=1800)), subnets)
    });
    let faults = Faults {
        rate: [0.0, 0.05, 0.2, 0.4][rng.random_range(0..4)],
        brownout,
        hook_fail: rng.random_range(0.0..0.3),
        hook_hang: rng.random_range(0.0..0.1),
        boot: if rng.random_bool(0.1) {
            (300, 900)
        } else {
            (20, 200)
        },
        sick: rng.random_range(0.0..0.2),
    };
    (cfg, faults, start)
}

type SimActuator = Actuator<burst_edge::fenced::Fenced<SimCloud>, SimHooks>;

fn open(
    world: &Shared,
    cfg: &Config,
    now: Timestamp,
    sabotage: Sabotage,
    agent: usize,
) -> Result<SimActuator, String> {
    if sabotage == Sabotage::TagsTrusted {
        // The state reads as an agent's from before records wrote it: owner tags are trusted.
        let path = crate::actuator::state::path_in(&cfg.agent.state_dir);
        let mut w = world.w();
        if let Some(bytes) = w.files.get_mut(&path) {
            let text = String::from_utf8_lossy(bytes).replace("\"version\": 3", "\"version\": 2");
            *bytes = text.into_bytes();
        }
    }
    world::actuator(world, cfg, now, agent).map_err(|e| format!("opening the actuator: {e}"))
}

/// A decision as the policy would hand it over: the actuator reads only the count or the
/// victims (the ledger, its last guard, decides what the cap allows).
fn decision(a: &SimActuator, now: Timestamp, count: u32, victims: Vec<String>) -> Decision {
    let why = crate::policy::Explanation::bare(a.ledger().status(now));
    if count > 0 {
        Decision::ScaleOut { count, why }
    } else if !victims.is_empty() {
        Decision::ScaleIn {
            instances: victims,
            why,
        }
    } else {
        Decision::Hold { why }
    }
}

/// Ways to break the agent's world on purpose, so the tests can show each check fails when its
/// promise is broken (a check that cannot fail proves nothing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sabotage {
    None,
    /// Content sync hooks report success but put nothing on the slave.
    HooksLie,
    /// At every open the agent's state reads as written by an agent from before records, so it
    /// trusts owner tags (once per open), and someone else has tagged an instance with them.
    TagsTrusted,
    /// The state directory is wiped at the agent's first crash: its records are gone, so the
    /// slaves it launched are candidates it leaves alone until an operator adopts them.
    StateLost,
    /// The agent runs with a cap two higher than the one the checks hold it to.
    CapRaised,
    /// After its first crash the agent comes back with another `agent.group` (an operator's
    /// edit): the group tag no longer lists the slaves it launched, but its records still name
    /// them (no violation is expected: the records find them by id).
    GroupRenamed,
    /// The agent runs with boot and register timeouts ten times the ones the checks hold it to.
    TimeoutsRaised,
    /// The agent takes the wall clock as it is (no monotonic agent clock), and the wall clock
    /// steps.
    ClockTrusted,
    /// The state directory is wiped at the agent's first crash, as in `StateLost`, but the
    /// shared table names what it launched (no violation is expected).
    StateWiped,
    /// A copy of the master takes the lease over from a holder paused mid-tick, and the paused
    /// one wakes believing it still holds it: its calls are not fenced.
    Unfenced,
    /// A copy of the master with a stale state directory takes over, and neither uses the
    /// shared table: the day is spent again.
    CopyWithoutTable,
}

/// One seed, start to end.
pub async fn run_seed(seed: u64) -> SeedRun {
    run_seed_with(seed, Sabotage::None).await
}

/// [`run_seed`] in a world broken by `sabotage`.
pub async fn run_seed_with(seed: u64, sabotage: Sabotage) -> SeedRun {
    let mut sim = SeedSim::new(seed, sabotage);
    let mut act: Option<SimActuator> = None;
    for tick in 0..FAULT_TICKS + QUIET_TICKS {
        if sim.tick(tick, &mut act).await.is_break() {
            break;
        }
    }
    sim.finish(act.as_ref())
}

/// What one seed's run carries from tick to tick (all but the actuator).
struct SeedSim {
    rng: ChaCha8Rng,
    /// The config the checks hold the agent to.
    cfg: Config,
    sabotage: Sabotage,
    world: Shared,
    start: Timestamp,
    /// The true time.
    now: Timestamp,
    /// The master's config and its copy's (index `agent` acts for the site).
    cfgs: [Config; 2],
    agent: usize,
    /// Actuators opened so far.
    opened: u32,
    copy_at: Option<u32>,
    takeover_at: Option<u32>,
    crash_p: f64,
    forge_p: f64,
    untag_p: f64,
    clock_faults: bool,
    wall_off: i64,
    episode: u32,
    paused: i64,
    clock: Option<(crate::clock::AgentClock, Timestamp, i64, i64)>,
    first_open: Option<Timestamp>,
    first_drift: Option<i64>,
    first_paused: Option<i64>,
    last_agent_now: Timestamp,
    prev_now: Timestamp,
    agent_day: Option<(Timestamp, Timestamp)>,
    entered: BTreeMap<String, (Phase, Timestamp)>,
    run: SeedRun,
    adopted: bool,
}

impl SeedSim {
    /// Set-up: the seed's config, faults and world, and the draws that hold for its whole run.
    fn new(seed: u64, sabotage: Sabotage) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (cfg, faults, start) = draw(&mut rng);
        let mut agent_cfg = cfg.clone();
        match sabotage {
            Sabotage::CapRaised => agent_cfg.cap.daily_limit += 2,
            Sabotage::TimeoutsRaised => {
                agent_cfg.fleet.boot_timeout = Dur::secs(6000);
                agent_cfg.elb.register_timeout = Dur::secs(3000);
            }
            _ => {}
        }
        let world = Shared(Arc::new(Mutex::new(World::new(
            ChaCha8Rng::seed_from_u64(seed ^ 0x9e37_79b9_7f4a_7c15),
            faults,
            start,
        ))));
        {
            let mut w = world.w();
            w.hooks_lie = sabotage == Sabotage::HooksLie;
            w.unfenced = sabotage == Sabotage::Unfenced;
            // Without the table, a wiped state directory loses track (what StateLost shows).
            w.table_on = !matches!(sabotage, Sabotage::StateLost | Sabotage::CopyWithoutTable);
        }
        // A copy of the master: its state directory copied from the master's at one tick (stale
        // from then on); later the master is paused past its lease mid-tick and the copy, in the
        // site's ELB, takes the lease over (the master wakes without it and stands by).
        let copy = matches!(sabotage, Sabotage::Unfenced | Sabotage::CopyWithoutTable)
            || rng.random_bool(0.25);
        let copy_at = copy.then(|| rng.random_range(0..FAULT_TICKS / 2));
        let takeover_at = copy_at.map(|c| c + rng.random_range(1..=FAULT_TICKS / 2));
        let mut cfgs = [agent_cfg.clone(), agent_cfg.clone()];
        cfgs[1].agent.state_dir = PathBuf::from("/nonexistent/burst-agent-faultsim-copy");
        let crash_p = [0.0, 0.05, 0.15][rng.random_range(0..3)];
        let forge_p = [0.0, 0.02][rng.random_range(0..2)];
        let untag_p = [0.0, 0.03][rng.random_range(0..2)];
        // The wall clock lies in some seeds: an episode of a step (forward, back; runs start up
        // to three hours before a local midnight, so forward steps cross it) until NTP corrects
        // it, and VM pauses the agent's monotonic clock never saw.
        let clock_faults = sabotage == Sabotage::ClockTrusted || rng.random_bool(0.3);
        SeedSim {
            rng,
            cfg,
            sabotage,
            world,
            start,
            now: start,
            cfgs,
            agent: 0,
            opened: 0,
            copy_at,
            takeover_at,
            crash_p,
            forge_p,
            untag_p,
            clock_faults,
            wall_off: 0,
            episode: 0,
            paused: 0,
            clock: None,
            first_open: None,
            first_drift: None,
            first_paused: None,
            last_agent_now: start,
            prev_now: start,
            agent_day: None,
            entered: BTreeMap::new(),
            run: SeedRun {
                seed,
                ..SeedRun::default()
            },
            adopted: false,
        }
    }

    /// One step: the world moves on, an actuator is opened if none is (start, crash, takeover),
    /// it steps and applies a drawn decision, and the promises are checked. `Break` ends the run.
    async fn tick(&mut self, tick: u32, act: &mut Option<SimActuator>) -> ControlFlow<()> {
        self.run.ticks = tick + 1;
        let quiet = tick >= FAULT_TICKS;
        self.advance_world(tick, quiet);
        let (wall, mono) = self.wall_clock(quiet);
        if self.open_if_closed(act, tick, wall).is_break() {
            return ControlFlow::Break(());
        }
        let Some(a) = act.as_mut() else {
            return ControlFlow::Break(());
        };
        let agent_now = self.agent_now(a, wall, mono);
        self.set_agent_clock(a, agent_now, wall);
        if self
            .step_and_apply(a, tick, quiet, agent_now)
            .await
            .is_break()
        {
            return ControlFlow::Break(());
        }
        let (took_over, dead) = end_of_tick(&self.world, self.agent);
        if took_over {
            // The paused holder woke without its lease: it stands by, changing nothing, and the
            // copy acts for the site from the next tick, from its own (stale) state directory.
            self.agent = self.world.w().holder;
            *act = None;
            return ControlFlow::Continue(());
        }
        if dead {
            *act = None;
            if self.opened == 1
                && matches!(self.sabotage, Sabotage::StateLost | Sabotage::StateWiped)
            {
                let dir = self.cfgs[self.agent].agent.state_dir.clone();
                self.world.w().files.retain(|p, _| !p.starts_with(&dir));
            }
            return ControlFlow::Continue(());
        }
        self.check_tick(a, tick, agent_now)
    }

    /// The world moves on to this tick's true time: a VM pause, faults and a crash armed, tags
    /// forged or lost, and the master copied or paused at their ticks.
    fn advance_world(&mut self, tick: u32, quiet: bool) {
        self.now = at(self.now, self.rng.random_range(20..=MAX_TICK_SECS));
        // A VM pause before this tick: the world (EC2, the ELB, hooks) went on for it, the
        // agent's monotonic clock did not.
        if self.clock_faults
            && self.paused == 0
            && tick < FAULT_TICKS / 2
            && self.rng.random_bool(0.02)
        {
            self.paused = self.rng.random_range(300..=1200);
            self.now = at(self.now, self.paused);
        }
        {
            let mut w = self.world.w();
            w.advance(self.now);
            w.faults_on = !quiet;
            if !quiet && w.crash_in.is_none() && self.rng.random_bool(self.crash_p) {
                w.crash_in = Some(self.rng.random_range(1..=12));
            }
            // Tags are claims anyone with ec2:CreateTags writes: a stranger's instance tagged
            // as this install's, and one of the agent's losing its group tag.
            if !quiet
                && (self.sabotage == Sabotage::TagsTrusted || self.rng.random_bool(self.forge_p))
            {
                w.forge(&self.cfg.agent.group);
            }
            if !quiet && self.rng.random_bool(self.untag_p) {
                w.untag_group();
            }
        }
        if Some(tick) == self.copy_at {
            self.copy_state();
        }
        if Some(tick) == self.takeover_at {
            self.world.w().pause_in = Some((self.rng.random_range(1..=10), 1));
        }
    }

    /// The copy's state directory, copied from the master's as it is now.
    fn copy_state(&self) {
        let mut w = self.world.w();
        let from = self.cfgs[0].agent.state_dir.clone();
        let to = self.cfgs[1].agent.state_dir.clone();
        let copied: Vec<(PathBuf, Vec<u8>)> = w
            .files
            .iter()
            .filter_map(|(p, b)| Some((to.join(p.strip_prefix(&from).ok()?), b.clone())))
            .collect();
        w.files.extend(copied);
    }

    /// The wall clock (stepped in an episode, right again once quiet) and the agent's monotonic
    /// clock (blind to VM pauses) this tick.
    fn wall_clock(&mut self, quiet: bool) -> (Timestamp, std::time::Duration) {
        if self.clock_faults && !quiet {
            if self.episode > 0 {
                self.episode -= 1;
                if self.episode == 0 {
                    self.wall_off = 0;
                }
            } else if self.rng.random_bool(0.08) {
                self.wall_off = [1800, 5400, 10_800, -1800, -3600][self.rng.random_range(0..5)];
                self.episode = self.rng.random_range(1..=20);
            }
        } else if quiet {
            self.wall_off = 0;
        }
        let wall = at(self.now, self.wall_off);
        let mono = std::time::Duration::from_secs(
            u64::try_from(self.now.as_second() - self.start.as_second() - self.paused).unwrap_or(0),
        );
        (wall, mono)
    }

    /// Crash/restart: with no actuator (the start, after a crash or a takeover) one is opened
    /// from the files, as after `kill -9`; failing to open is the seed's violation (`Break`).
    fn open_if_closed(
        &mut self,
        act: &mut Option<SimActuator>,
        tick: u32,
        wall: Timestamp,
    ) -> ControlFlow<()> {
        if act.is_none() {
            self.clock = None;
        }
        if act.is_none() {
            self.opened += 1;
            let agent = self.agent;
            if self.opened == 2 && self.sabotage == Sabotage::GroupRenamed {
                self.cfgs[agent].agent.group = "renamed".into();
            }
            let agent_cfg = self.cfgs[agent].clone();
            match open(&self.world, &agent_cfg, wall, self.sabotage, agent) {
                Ok(a) => *act = Some(a),
                Err(e) => {
                    self.run.violation = Some((tick, e));
                    return ControlFlow::Break(());
                }
            }
            self.adopted = false;
        }
        ControlFlow::Continue(())
    }

    /// The agent's clock this tick. A new actuator (start, or after a crash) goes on from the
    /// state's clock mark, as `run` does (one boot: the world's); the drift check counts from
    /// its first reading.
    fn agent_now(
        &mut self,
        a: &SimActuator,
        wall: Timestamp,
        mono: std::time::Duration,
    ) -> Timestamp {
        let (now, paused) = (self.now, self.paused);
        match (&mut self.clock, self.sabotage) {
            (_, Sabotage::ClockTrusted) => wall,
            (Some((c, ..)), _) => c.observe(wall, mono).0,
            (None, _) => {
                let marked = a.clock_mark().is_some();
                let c = crate::clock::AgentClock::resume(a.clock_mark(), "sim", wall, mono);
                let (first, _) = c.clone().observe(wall, mono);
                // With no mark to go on from (a crash before the first state write, lost
                // state), the wall clock is all the agent has: the drift counts from there.
                if !marked || self.first_drift.is_none() {
                    self.first_drift = Some(first.as_second() - now.as_second());
                    self.first_open = Some(now);
                    self.first_paused = Some(paused);
                }
                self.clock = Some((
                    c,
                    self.first_open.unwrap_or(now),
                    self.first_drift.unwrap_or(0),
                    self.first_paused.unwrap_or(paused),
                ));
                first
            }
        }
    }

    /// Gives the actuator its clock: the mark, the skew of the wall clock from it, and, with
    /// lost or unreadable state, today's count read back.
    fn set_agent_clock(&self, a: &mut SimActuator, agent_now: Timestamp, wall: Timestamp) {
        if let Some((c, ..)) = &self.clock {
            a.set_clock_mark(c.mark("sim"));
        }
        // As the daemon: EC2's times are on the wall clock, the ledger's day on the agent's.
        a.set_clock_skew(agent_now.as_second() - wall.as_second(), agent_now);
        // Lost or unreadable state: today's count from CloudWatch's copy, as the daemon does.
        if a.cap_unverified().is_some() {
            let day = a.ledger().day_bounds(agent_now).0.to_string();
            let published = self.world.w().published_cap.get(&day).copied();
            a.cap_read_back(Ok(published), agent_now);
        }
    }

    /// The agent adopts (once per actuator), steps, is checked to track what EC2 lists (a
    /// violation is `Break`), and applies a decision drawn for it.
    async fn step_and_apply(
        &mut self,
        a: &mut SimActuator,
        tick: u32,
        quiet: bool,
        agent_now: Timestamp,
    ) -> ControlFlow<()> {
        if !self.adopted {
            // As the daemon: a stale or copied state.json is brought up to date from the table
            // first.
            self.adopted =
                a.sync_from_table(agent_now).await.is_ok() && a.adopt(agent_now).await.is_ok();
        }
        let stepped = self.adopted && a.step(agent_now).await.is_ok();
        if stepped && !self.world.w().dead {
            if let Some(v) = untracked(&self.world, a) {
                self.run.violation = Some((tick, v));
                return ControlFlow::Break(());
            }
        }
        if stepped {
            let d = self.draw_decision(a, quiet, agent_now);
            a.apply(&d, agent_now).await;
        }
        ControlFlow::Continue(())
    }

    /// This tick's decision: once quiet, every slave in service released; before, drawn (a
    /// launch, some slaves in service released, or a hold).
    fn draw_decision(&mut self, a: &SimActuator, quiet: bool, agent_now: Timestamp) -> Decision {
        let in_service: Vec<String> = a
            .slaves()
            .filter(|s| s.phase == Phase::InService)
            .map(|s| s.id.clone())
            .collect();
        if quiet {
            decision(a, agent_now, 0, in_service)
        } else {
            match self.rng.random_range(0..10) {
                // As the policy does: no launch while EC2 had no capacity anywhere.
                0..=2 if a.no_capacity_until(agent_now).is_none() => {
                    decision(a, agent_now, self.rng.random_range(1..=3), Vec::new())
                }
                3 if !in_service.is_empty() => {
                    let k = self.rng.random_range(1..=in_service.len());
                    decision(a, agent_now, 0, in_service[..k].to_vec())
                }
                _ => decision(a, agent_now, 0, Vec::new()),
            }
        }
    }

    /// The checks of invariants after a tick the agent lived through: what it publishes kept,
    /// the promises against the world's truth, its clock's drift, no slave ended early.
    fn check_tick(&mut self, a: &SimActuator, tick: u32, agent_now: Timestamp) -> ControlFlow<()> {
        publish_cap(&self.world, a, agent_now);
        let settled = tick >= FAULT_TICKS + 30;
        let day_began = self.day_began(agent_now);
        if let Some(v) = check(
            &self.world,
            a,
            &self.cfg,
            self.now,
            (agent_now, day_began),
            (settled, self.adopted),
        ) {
            self.run.violation = Some((tick, v));
            return ControlFlow::Break(());
        }
        if let Some(v) = self.drift(agent_now) {
            self.run.violation = Some((tick, v));
            return ControlFlow::Break(());
        }
        if let Some(v) = ended_early(a, &self.cfg, &mut self.entered, self.now) {
            self.run.violation = Some((tick, v));
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    }

    /// When, in true time, the agent's clock entered the day it is in (between two readings
    /// it crossed midnight: in proportion).
    fn day_began(&mut self, agent_now: Timestamp) -> Timestamp {
        let now = self.now;
        let day = today(&self.cfg, agent_now).0;
        match self.agent_day {
            Some((d, _)) if d == day => {}
            Some(_) => {
                let (pa, pt) = (self.last_agent_now.as_second(), self.prev_now.as_second());
                let span = (agent_now.as_second() - pa).max(1);
                let into = (day.as_second() - pa).clamp(0, span);
                let t = pt + (now.as_second() - pt) * into / span;
                self.agent_day = Some((day, Timestamp::from_second(t).unwrap_or(now)));
            }
            None => self.agent_day = Some((day, at(day, now.as_second() - agent_now.as_second()))),
        }
        let day_began = self.agent_day.map_or(now, |(_, t)| t);
        self.last_agent_now = agent_now;
        self.prev_now = now;
        day_began
    }

    /// Time that cannot jump: the agent's clock strays from the true time, since this
    /// actuator opened, by at most SLEW of the time that passed (what a VM pause hid aside),
    /// and no slave is ended for a deadline it had not truly overstayed.
    fn drift(&self, agent_now: Timestamp) -> Option<String> {
        let now = self.now;
        if let Some((_, opened_at, drift0, paused0)) = self.clock.as_ref() {
            let drift = agent_now.as_second() - now.as_second() - drift0;
            let passed = now.as_second() - opened_at.as_second();
            let hidden = self.paused - paused0;
            let bound = (passed as f64 * crate::clock::SLEW) as i64 + hidden + 60;
            if drift.abs() > bound {
                return Some(format!(
                    "the agent's clock is {drift}s off the true time after {passed}s (at \
                     most {bound}s)"
                ));
            }
        }
        None
    }

    /// The summary: unless a promise already broke, the end checks on the last actuator, then
    /// the world's figures.
    fn finish(mut self, act: Option<&SimActuator>) -> SeedRun {
        if self.run.violation.is_none() {
            if let Some(a) = act {
                if let Some(v) = check_end(
                    &self.world,
                    a,
                    &self.cfg,
                    self.now,
                    (
                        self.last_agent_now,
                        self.agent_day.map_or(self.now, |(_, t)| t),
                    ),
                ) {
                    self.run.violation = Some((self.run.ticks, v));
                }
            }
        }
        self.run.stats = self.world.w().stats;
        self.run
    }
}

/// The end of a tick in the world: the pause armed for it came, at the latest, now. Whether
/// `agent` lost the lease, and whether it crashed (the crash collected).
fn end_of_tick(world: &Shared, agent: usize) -> (bool, bool) {
    // The pause armed for this tick came, at the latest, at its end.
    let took_over = {
        let mut w = world.w();
        if let Some((_, to)) = w.pause_in {
            w.take_over(to);
        }
        w.holder != agent
    };
    let dead = {
        let mut w = world.w();
        std::mem::replace(&mut w.dead, false)
    };
    (took_over, dead)
}

/// What the daemon publishes each tick (BurstCapUsed), kept by CloudWatch.
fn publish_cap(world: &Shared, a: &SimActuator, agent_now: Timestamp) {
    let day = a.ledger().day_bounds(agent_now).0.to_string();
    let used = a.ledger().used(agent_now);
    let mut w = world.w();
    let e = w.published_cap.entry(day).or_insert(0);
    *e = (*e).max(used);
}

/// A slave failed for a deadline it had not overstayed in true time (a clock step ending a
/// healthy slave). `entered` keeps when, in true time, each slave was first seen in its phase.
fn ended_early(
    a: &SimActuator,
    cfg: &Config,
    entered: &mut BTreeMap<String, (Phase, Timestamp)>,
    now: Timestamp,
) -> Option<String> {
    entered.retain(|id, _| a.slave(id).is_some());
    for s in a.slaves() {
        let e = entered.entry(s.id.clone()).or_insert((s.phase, now));
        if let Some(why) = &s.failure {
            let deadline_kill = why.contains("for more than")
                || why.contains("not running after")
                || why.contains("not InService");
            if deadline_kill
                && matches!(
                    e.0,
                    Phase::Pending | Phase::Syncing | Phase::Synced | Phase::Registering
                )
            {
                let d = actuator::deadline(e.0, cfg).unwrap_or(i64::MAX);
                let truly = now.as_second() - e.1.as_second();
                // At most SLEW faster than true time, and one tick of not knowing when.
                let least = (d as f64 * (1.0 - crate::clock::SLEW)) as i64 - 2 * MAX_TICK_SECS;
                if truly < least {
                    return Some(format!(
                        "{} ended as overdue {:?} ({why}) after {truly}s of true time; its deadline \
                         is {d}s",
                        s.id, e.0
                    ));
                }
            }
        } else if e.0 != s.phase {
            *e = (s.phase, now);
        }
    }
    None
}

/// Today's bounds in the cap's time zone, computed here from jiff alone (not the ledger's code).
fn today(cfg: &Config, now: Timestamp) -> (Timestamp, Timestamp) {
    let tz = TimeZone::get(&cfg.cap.time_zone).unwrap_or(TimeZone::UTC);
    let z = now.to_zoned_datetime(tz);
    let start = z.start_of_day().map(|s| s.timestamp()).unwrap_or(now);
    let end = z
        .tomorrow()
        .and_then(|t| t.start_of_day())
        .map(|s| s.timestamp())
        .unwrap_or(now);
    (start, end)
}

/// Distinct instances of ours that ran at some time today: a run (launch or start to stop or
/// termination) under way at its start or begun since. A stopped instance does not run.
/// Today is the agent's (its clock, which the drift check keeps near the truth): `start` is the
/// true time at which the agent's clock entered its current day.
fn truth_today(w: &World, now: Timestamp, start: Timestamp) -> u32 {
    let n = w
        .instances
        .values()
        .filter(|i| i.ours)
        .filter(|i| {
            i.runs
                .iter()
                .any(|(from, to)| *from <= now && to.is_none_or(|t| t > start))
        })
        .count();
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// A ledger entry is an instance EC2 launched, or an attempt of a launch still unresolved;
/// anything else is a charge for a launch that did not happen. (The ledger may count an
/// instance longer than it ran, when it cannot know yet that it ended: that errs safe.)
fn charged_for_nothing(w: &World, a: &SimActuator) -> Option<String> {
    for e in a.ledger().entries() {
        let ok = match &e.instance_id {
            Some(id) => w.instances.get(id).is_some_and(|i| i.ours),
            // Today's count read back from CloudWatch after lost state: launches that happened.
            None if e.key.starts_with("counted-") => true,
            None => a.journal().unresolved().any(|i| i.keys.contains(&e.key)),
        };
        if !ok {
            return Some(format!(
                "the ledger charges {} ({:?}) but no such launch happened and none is unresolved",
                e.key, e.instance_id
            ));
        }
    }
    None
}

/// Right after a step that saw the fleet: every live instance of ours that EC2 could have listed
/// then (it existed and was visible) is tracked, whatever the agent asked EC2 for.
fn untracked(world: &Shared, a: &SimActuator) -> Option<String> {
    let w = world.w();
    let listed_at = w.last_listed_at?;
    for i in w.instances.values().filter(|i| i.ours) {
        // Stopped ones too: their volumes cost money.
        let alive = matches!(
            i.info.state,
            actuator::cloud::InstanceState::Pending
                | actuator::cloud::InstanceState::Running
                | actuator::cloud::InstanceState::Stopping
                | actuator::cloud::InstanceState::Stopped
        );
        let listable = i.visible_at <= listed_at && i.launched_at <= listed_at;
        if alive && listable && a.slave(&i.info.id).is_none() {
            return Some(format!(
                "{} is {:?} and EC2 lists it, but the actuator does not track it",
                i.info.id, i.info.state
            ));
        }
    }
    None
}

/// `now` is the true time, `agent_now` the agent's clock (what it passed its ledger and phases).
fn check(
    world: &Shared,
    a: &SimActuator,
    cfg: &Config,
    now: Timestamp,
    (agent_now, day_began): (Timestamp, Timestamp),
    (quiet, adopted): (bool, bool),
) -> Option<String> {
    let w = world.w();
    if let Some(v) = w.violations.first() {
        return Some(v.clone());
    }
    let truth = truth_today(&w, now, day_began);
    if truth > cfg.cap.daily_limit {
        return Some(format!(
            "{truth} instances of ours alive today, cap {}",
            cfg.cap.daily_limit
        ));
    }
    if let Some(v) = charged_for_nothing(&w, a) {
        return Some(v);
    }
    let used = a.ledger().used(agent_now);
    // Until it has adopted (the table read first), an agent acts on nothing: a copy's stale
    // state.json may count less until then.
    if adopted && used < truth {
        return Some(format!(
            "the ledger charges {used} today, but {truth} instance(s) of ours lived today \
             (the agent's clock {:+}s off, its day began at {day_began} in true time; lived: \
             {:?}; entries: {:?})",
            agent_now.as_second() - now.as_second(),
            w.instances
                .values()
                .filter(|i| i.ours
                    && i.runs
                        .iter()
                        .any(|(from, to)| *from <= now && to.is_none_or(|t| t > day_began)))
                .map(|i| (&i.info.id, &i.info.intent, i.visible_at, &i.runs))
                .collect::<Vec<_>>(),
            a.ledger()
                .entries()
                .iter()
                .map(|e| (&e.key, &e.instance_id, e.launched_at, e.ended_at))
                .collect::<Vec<_>>()
        ));
    }
    for intent in &a.journal().intents {
        let n = w
            .instances
            .values()
            .filter(|i| i.ours && i.info.intent.as_deref() == Some(intent.id.as_str()))
            .count();
        if n > intent.keys.len() {
            return Some(format!(
                "launch {} has {n} instances for {} attempt(s)",
                intent.id,
                intent.keys.len()
            ));
        }
    }
    // Faults can hold a slave past its deadline (every call it needs failing); once they stop,
    // two ticks is all it may take.
    let slack = if quiet { 2 * MAX_TICK_SECS } else { 1800 };
    for s in a.slaves() {
        // The agent's own clock against its own deadline table.
        let age = agent_now.as_second() - s.since.as_second();
        if let Some(d) = actuator::deadline(s.phase, cfg) {
            if age > d + slack {
                return Some(format!(
                    "{} has been {:?} for {age}s; its deadline is {d}s",
                    s.id, s.phase
                ));
            }
        }
        if s.phase == Phase::InService {
            if let Some(t) = w.instances.get(&s.id).and_then(|i| i.sick_from) {
                let sick = now.as_second() - t.as_second();
                let limit = i64::try_from(cfg.elb.register_timeout.get().as_secs()).unwrap_or(0);
                if sick > limit + slack {
                    return Some(format!(
                        "{} is OutOfService for {sick}s but still counted as in service",
                        s.id
                    ));
                }
            }
        }
    }
    None
}

fn check_end(
    world: &Shared,
    a: &SimActuator,
    cfg: &Config,
    now: Timestamp,
    (agent_now, day_began): (Timestamp, Timestamp),
) -> Option<String> {
    let w = world.w();
    // What may be left: stopped slaves the agent keeps in its warm pool, no more than its size.
    let pooled = |i: &&world::SimInstance| {
        i.info.state == actuator::cloud::InstanceState::Stopped
            && i.info.pooled_since.is_some()
            && a.slave(&i.info.id)
                .is_some_and(|s| s.phase == Phase::Stopped)
    };
    let warm = w
        .instances
        .values()
        .filter(|i| i.ours && i.terminated_at.is_none())
        .filter(pooled)
        .count();
    if warm > usize::try_from(cfg.fleet.warm_pool).unwrap_or(usize::MAX) {
        return Some(format!(
            "{warm} stopped slaves in a warm pool of {}",
            cfg.fleet.warm_pool
        ));
    }
    let left: Vec<&str> = w
        .instances
        .values()
        .filter(|i| i.ours && i.terminated_at.is_none())
        .filter(|i| !pooled(i))
        .map(|i| i.info.id.as_str())
        .collect();
    if !left.is_empty() {
        return Some(format!(
            "after the fleet was released, {left:?} still run (tracked: {:?})",
            a.slaves()
                .map(|s| (s.id.as_str(), s.phase))
                .collect::<Vec<_>>()
        ));
    }
    if let Some(i) = a.journal().unresolved().next() {
        return Some(format!(
            "launch intent {} is still unresolved at the end",
            i.id
        ));
    }
    let (truth, used) = (truth_today(&w, now, day_began), a.ledger().used(agent_now));
    if used < truth {
        return Some(format!(
            "at the end the ledger charges {used} today, but {truth} instance(s) of ours lived \
             today"
        ));
    }
    charged_for_nothing(&w, a)
}

#[cfg(test)]
mod tests;
