//! `burst-agent run`: the daemon that wires sampler → metrics → policy → actuator.
//!
//! Tasks (mini-redis style: every loop takes the shutdown signal):
//! - **sampler**: samples this host every `sampling.interval` (on a blocking thread), queues its
//!   datums for CloudWatch, and hands the newest sample to the reconciler;
//! - **publisher**: flushes the metrics buffer every `metrics.publish_interval`;
//! - **signals**: SIGTERM/SIGINT start a clean shutdown (a second one forces exit), SIGHUP
//!   reloads the config (a bad one is rejected with its errors and the old one kept), SIGUSR1
//!   asks for a content sync to every in-service slave;
//! - **reconciler** (master only, the main task): every `policy.evaluation_interval` it steps
//!   the actuator, reads the fleet back, decides, acts, publishes its own numbers, writes the
//!   status snapshot and pets the systemd watchdog;
//! - **probe** (master only): a round of `sampling.probe_urls` every `sampling.probe_interval`;
//!   the policy reads its slowest answer;
//! - **lease** (`lease.rs`, with `ledger.table`): renews the site's lease beside the reconciler;
//! - **site** (`site.rs`): writes the desk's records from a queue the tick feeds;
//! - event sending (`events.rs`) on tasks of its own.
//!
//! A reporter (on slaves) runs the sampler and publisher only.
//!
//! One current-thread tokio runtime; the reconciler stops only between ticks, and shutdown
//! follows mini-redis (`shutdown.rs`). The operator's one-off commands are `crate::ops`.
//!
//! A dry run with no AWS region or credentials runs on this host alone: it samples, decides
//! and logs, and talks to no AWS API.

pub mod bridge;
pub mod events;
pub(crate) mod lease;
pub(crate) mod lock;
pub(crate) mod shutdown;
mod site;
pub mod status;
mod tasks;
mod tick;

// The operator's commands (crate::ops) under the paths they have always had.
pub use crate::ops::{
    apply_alarms, apply_dashboard, create_table, drill, preflight, repair, request_resume,
    takeover, Drill, RESUME_FILE,
};
use tasks::{probe_loop, publisher_loop, sampler_loop, signal_loop};

use crate::actuator::cloud::{AwsCloud, Cloud};
use crate::actuator::runner::HookRunner;
use crate::actuator::{Actuator, ActuatorError, Phase};
use crate::aws::Aws;
use crate::cap::CapLedger;
use crate::config::{self, Config, Role};
use crate::events::Levels;
use crate::metrics::{self, cloudwatch, Buffer};
use crate::model::ProbeResult;
use crate::policy::{self, Decision, FleetObservation, History, HostMetrics};
use crate::sampler::probe::Prober;
use crate::sampler::{HostSample, Sampler};
use crate::schedule;
use crate::table::Table;
use burst_edge::fenced::{Fenced, LeaseEnd};
use events::Events;
use jiff::Timestamp;
use sd_notify::NotifyState;
use shutdown::{Notice, Shutdown};
use status::{DecisionLine, HostLine, SlaveLine, Snapshot};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("state directory {path}: {error}")]
    StateDir {
        path: PathBuf,
        /// Said in the message (not a `source`, so a chain does not say it twice).
        error: std::io::Error,
    },
    #[error("{0}")]
    Start(String),
    #[error(transparent)]
    Locked(#[from] lock::LockError),
    #[error(transparent)]
    Actuator(#[from] ActuatorError),
    #[error("could not start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("shutdown did not finish within agent.shutdown_timeout ({0}); state was saved at every step")]
    ShutdownTimedOut(config::Dur),
}

pub struct RunOptions {
    /// The file SIGHUP re-reads (`None`: defaults, nothing to reload).
    pub config_path: Option<PathBuf>,
    /// `--dry-run`: forces `agent.dry_run` whatever the file says, across reloads too.
    pub force_dry_run: bool,
}

/// Runs until SIGTERM/SIGINT. Returns after a clean shutdown.
pub fn run(cfg: Config, opts: RunOptions) -> Result<(), DaemonError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(DaemonError::Runtime)?;
    let done = rt.block_on(run_async(cfg, opts));
    // A blocking call stuck in the kernel (a hung mount) never returns: the runtime does not
    // wait for it, and the process exit ends it.
    rt.shutdown_timeout(std::time::Duration::from_secs(2));
    done
}

fn notify(states: &[NotifyState]) {
    // Not under systemd (no NOTIFY_SOCKET) this does nothing.
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::debug!("sd_notify: {e}");
    }
}

/// Decides whether this run talks to AWS. A dry run with no region or no credentials stays on
/// this host; anything else must reach AWS (failures are then logged per call, and retried).
pub(crate) async fn connect(cfg: &Config) -> Result<Option<Aws>, String> {
    if cfg.agent.dry_run && cfg.aws.endpoint_url.is_empty() && !region_hint(cfg) {
        // Not even loading the SDK keeps a local dry run small (no TLS roots, no clients).
        return Err(
            "no AWS region configured (aws.region, AWS_REGION or an AWS profile); set one for a \
             dry run that reads the real fleet"
                .into(),
        );
    }
    let sdk = Aws::load(
        &cfg.aws,
        aws_config::defaults(aws_config::BehaviorVersion::latest()),
    )
    .await;
    let aws = Aws::from_sdk_config(&cfg.aws, &sdk);
    if !cfg.agent.dry_run || !cfg.aws.endpoint_url.is_empty() {
        return Ok(Some(aws));
    }
    if sdk.region().is_none() {
        return Err("no AWS region configured (aws.region, AWS_REGION or a profile)".into());
    }
    aws.credentials().await.map(|()| Some(aws))
}

/// Whether a region is configured anywhere the SDK would find one without asking the instance
/// metadata service.
fn region_hint(cfg: &Config) -> bool {
    let env = |k: &str| std::env::var_os(k).is_some_and(|v| !v.is_empty());
    let home_config = std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".aws/config"))
        .is_some_and(|p| p.is_file());
    !cfg.aws.region.is_empty()
        || env("AWS_REGION")
        || env("AWS_DEFAULT_REGION")
        || env("AWS_PROFILE")
        || env("AWS_CONFIG_FILE")
        || home_config
}

/// This host's InstanceId dimension (the config's, else the instance metadata's, else the host
/// name) and its EC2 instance id when it has one (the master's own instance is never a slave,
/// whatever its tags say). Instance metadata is asked only when AWS is in use and no emulator
/// endpoint is set.
pub(crate) async fn identity(cfg: &Config, use_imds: bool) -> (String, Option<String>) {
    let ask_imds = use_imds && cfg.aws.endpoint_url.is_empty();
    let ec2_id = if ask_imds {
        let imds = aws_config::imds::Client::builder().build();
        match tokio::time::timeout(
            Duration::from_secs(3),
            imds.get("/latest/meta-data/instance-id"),
        )
        .await
        {
            Ok(Ok(id)) => Some(id.as_ref().to_string()),
            _ => None,
        }
    } else {
        None
    };
    // Off EC2 (or under an emulator), a configured id that looks like an instance id is the
    // master's own.
    let ec2_id = ec2_id.or_else(|| {
        let c = &cfg.agent.instance_id;
        c.starts_with("i-").then(|| c.clone())
    });
    if !cfg.agent.instance_id.is_empty() {
        return (cfg.agent.instance_id.clone(), ec2_id);
    }
    if let Some(id) = &ec2_id {
        return (id.clone(), ec2_id);
    }
    let host = sysinfo::System::host_name().unwrap_or_else(|_| "localhost".into());
    if ask_imds {
        tracing::warn!(
            host,
            "not on EC2 (no instance metadata): publishing this host's \
            metrics as InstanceId={host}; set agent.instance_id to choose"
        );
    }
    (host, None)
}

/// The config changes a reload cannot apply to a running agent: they are logged and kept for
/// the next start.
fn restart_only(old: &Config, new: &mut Config) -> Vec<&'static str> {
    let mut kept = Vec::new();
    if old.agent != new.agent {
        kept.push("agent");
        new.agent = old.agent.clone();
    }
    if old.aws != new.aws {
        kept.push("aws");
        new.aws = old.aws.clone();
    }
    if old.fleet != new.fleet {
        kept.push("fleet");
        new.fleet = old.fleet.clone();
    }
    if old.elb.name != new.elb.name {
        kept.push("elb.name");
        new.elb.name = old.elb.name.clone();
    }
    if old.log != new.log {
        kept.push("log");
        new.log = old.log.clone();
    }
    if old.metrics.namespace != new.metrics.namespace {
        kept.push("metrics.namespace");
        new.metrics.namespace = old.metrics.namespace.clone();
    }
    if old.metrics.buffer_limit != new.metrics.buffer_limit {
        kept.push("metrics.buffer_limit");
        new.metrics.buffer_limit = old.metrics.buffer_limit;
    }
    kept
}

/// SIGHUP: re-read and validate; a config with any problem is rejected whole.
fn reload(opts: &RunOptions, current: &Config) -> Option<Config> {
    let Some(path) = &opts.config_path else {
        tracing::warn!(
            "SIGHUP: running on the built-in defaults (no config file); nothing to reload"
        );
        return None;
    };
    match config::load_file(path) {
        Ok(mut new) => {
            if opts.force_dry_run {
                new.agent.dry_run = true;
            }
            let kept = restart_only(current, &mut new);
            if !kept.is_empty() {
                tracing::warn!(sections = ?kept, "SIGHUP: these changed but take effect only at \
                    restart (systemctl restart burst-agent); the running values stay");
            }
            if &new == current && !kept.is_empty() {
                tracing::info!(path = %path.display(),
                    "SIGHUP: config reloaded; nothing that a reload applies changed");
            } else if &new == current {
                tracing::info!(path = %path.display(), "SIGHUP: config reloaded; nothing changed");
            } else {
                tracing::info!(path = %path.display(), "SIGHUP: config reloaded and applied");
            }
            Some(new)
        }
        Err(e) => {
            tracing::error!(path = %path.display(), "SIGHUP: the new config is rejected; keeping \
                the running one. Fix these and send SIGHUP again:\n{e}");
            None
        }
    }
}

struct Shared {
    buffer: Arc<Mutex<Buffer>>,
    sync_requested: Arc<AtomicBool>,
}

async fn run_async(cfg: Config, opts: RunOptions) -> Result<(), DaemonError> {
    let started_at = Timestamp::now();
    let mut cfg = cfg;
    if opts.force_dry_run {
        cfg.agent.dry_run = true;
    }
    let state_dir = prepare_state_dir(&mut cfg)?;
    // Held until this function returns: one agent per state directory.
    let _lock = lock::StateLock::acquire(&state_dir)?;
    if let Err(e) = crate::hooks::prepare_known_hosts(&state_dir) {
        tracing::warn!(dir = %crate::hooks::known_hosts_dir(&state_dir).display(),
            "cannot create the directory for the slaves' pinned ssh host keys: {e}");
    }
    let Reach {
        aws,
        aws_off,
        instance_id,
        own_ec2_id,
    } = reach(&cfg, &state_dir).await;

    let mut t = spawn_tasks(&cfg, opts, &aws, &instance_id)?;

    // READY=1 after the first sample (and, on a master, after the first adoption attempt).
    let _ = tokio::time::timeout(Duration::from_secs(30), t.sample_rx.changed()).await;

    let result = match cfg.agent.role {
        Role::Reporter => {
            notify(&[
                NotifyState::Ready,
                NotifyState::Status("reporting this host's samples"),
            ]);
            t.shutdown_rx.clone().recv().await;
            Ok(())
        }
        Role::Master => {
            let m = Master {
                cfg,
                cfg_rx: t.cfg_rx,
                shutdown_rx: t.shutdown_rx.clone(),
                sample_rx: t.sample_rx,
                probe_rx: t.probe_rx,
                aws,
                aws_off,
                instance_id,
                own_ec2_id,
                state_dir,
                started_at,
                shared: &t.shared,
                clock: crate::clock::AgentClock::new(Timestamp::now(), boottime()),
                boot: boot_id(),
                lease: None,
                lease_task: None,
                site: None,
            };
            m.run().await
        }
    };
    notify(&[NotifyState::Stopping]);
    let _ = t.sampler.await;
    if let Some(task) = t.probe {
        let _ = task.await;
    }
    if let Some(task) = t.publisher {
        let _ = task.await;
    }
    t.signals.abort();
    if result.is_ok() {
        tracing::info!("burst-agent stopped cleanly");
    }
    result
}

/// How this run reaches AWS (or why it does not), and who this host is.
struct Reach {
    aws: Option<Aws>,
    aws_off: Option<String>,
    instance_id: String,
    own_ec2_id: Option<String>,
}

/// Connects to AWS (or runs on this host alone) and finds this host's identity; logs the start.
async fn reach(cfg: &Config, state_dir: &std::path::Path) -> Reach {
    let (aws, aws_off) = match connect(cfg).await {
        Ok(a) => (a, None),
        Err(why) => {
            tracing::warn!(
                "dry run on this host alone: {why}. Nothing is published to or read \
                from CloudWatch and no AWS API is called; decisions are logged."
            );
            (None, Some(why))
        }
    };
    let (instance_id, own_ec2_id) = identity(cfg, aws.is_some()).await;
    if aws.is_some() && cfg.agent.role == Role::Master && own_ec2_id.is_none() {
        tracing::warn!(instance_id = %instance_id,
            "this master's own EC2 instance id is unknown (no instance metadata, and \
             agent.instance_id is not an i-... id): set agent.instance_id to it. Until then a \
             slave without a burst-agent:owner tag is claimed only through this agent's \
             journal and ledger, never because it serves from the ELB");
    }
    tracing::info!(group = %cfg.agent.group, role = cfg.agent.role.name(), dry_run = cfg.agent.dry_run,
        instance_id = %instance_id, state_dir = %state_dir.display(), aws = aws.is_some(),
        "burst-agent {} starting", env!("CARGO_PKG_VERSION"));
    Reach {
        aws,
        aws_off,
        instance_id,
        own_ec2_id,
    }
}

/// The tasks beside the reconciler (awaited or ended at stop), and the channels it reads.
struct Tasks {
    cfg_rx: watch::Receiver<Arc<Config>>,
    shutdown_rx: Shutdown,
    sample_rx: watch::Receiver<Option<HostSample>>,
    probe_rx: watch::Receiver<Vec<ProbeResult>>,
    shared: Shared,
    sampler: tokio::task::JoinHandle<()>,
    probe: Option<tokio::task::JoinHandle<()>>,
    publisher: Option<tokio::task::JoinHandle<()>>,
    signals: tokio::task::JoinHandle<()>,
}

/// Makes the channels and starts the sampler, the probe (a master's), the publisher (with AWS)
/// and the signal handler.
fn spawn_tasks(
    cfg: &Config,
    opts: RunOptions,
    aws: &Option<Aws>,
    instance_id: &str,
) -> Result<Tasks, DaemonError> {
    let (cfg_tx, cfg_rx) = watch::channel(Arc::new(cfg.clone()));
    let (shutdown_tx, shutdown_rx) = shutdown::channel();
    let (sample_tx, sample_rx) = watch::channel::<Option<HostSample>>(None);
    let shared = Shared {
        buffer: Arc::new(Mutex::new(Buffer::new(cfg.metrics.buffer_limit))),
        sync_requested: Arc::new(AtomicBool::new(false)),
    };

    let sampler = Sampler::new(&cfg.sampling).map_err(|e| DaemonError::Start(e.to_string()))?;
    let sampler_task = tokio::spawn(sampler_loop(
        sampler,
        cfg_rx.clone(),
        shutdown_rx.clone(),
        sample_tx,
        aws.is_some().then(|| shared.buffer.clone()),
        instance_id.to_string(),
    ));
    // The probe is the master's: one view of the site per group (a reporter publishing the same
    // series would hide a master that cannot reach it).
    let (probe_tx, probe_rx) = watch::channel::<Vec<ProbeResult>>(Vec::new());
    let probe_task = (cfg.agent.role == Role::Master).then(|| {
        tokio::spawn(probe_loop(
            cfg_rx.clone(),
            shutdown_rx.clone(),
            probe_tx,
            aws.is_some().then(|| shared.buffer.clone()),
        ))
    });
    let publisher_task = aws.clone().map(|aws| {
        tokio::spawn(publisher_loop(
            aws,
            cfg_rx.clone(),
            shutdown_rx.clone(),
            shared.buffer.clone(),
        ))
    });
    let signals_task = tokio::spawn(signal_loop(
        opts,
        cfg_tx,
        shutdown_tx,
        shared.sync_requested.clone(),
    ));
    Ok(Tasks {
        cfg_rx,
        shutdown_rx,
        sample_rx,
        probe_rx,
        shared,
        sampler: sampler_task,
        probe: probe_task,
        publisher: publisher_task,
        signals: signals_task,
    })
}

/// Creates the state directory. A dry run that cannot use it (say, not root, first try)
/// falls back to a private temporary one; a real run stops with the error.
pub(crate) fn prepare_state_dir(cfg: &mut Config) -> Result<PathBuf, DaemonError> {
    let dir = cfg.agent.state_dir.clone();
    // A file where the directory should be is a mistake to fix, not a permission a dry run
    // works around.
    if let Some(why) = not_a_directory(&dir) {
        return Err(DaemonError::Start(why));
    }
    let probe = dir.join(".write-test");
    let usable = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(&probe, b""))
        .and_then(|()| std::fs::remove_file(&probe));
    match usable {
        Ok(()) => Ok(dir),
        Err(e) if cfg.agent.dry_run => {
            let uid = rustix::process::getuid().as_raw();
            let alt = std::env::temp_dir().join(format!("burst-agent-{uid}"));
            private_dir(&alt, uid).map_err(|error| DaemonError::StateDir {
                path: alt.clone(),
                error,
            })?;
            tracing::warn!(wanted = %dir.display(), using = %alt.display(),
                "dry run: agent.state_dir is not writable ({e}); using a temporary one");
            cfg.agent.state_dir = alt.clone();
            Ok(alt)
        }
        Err(error) => Err(DaemonError::StateDir { path: dir, error }),
    }
}

/// What is wrong with an `agent.state_dir` that exists and is not a directory; `None` when it
/// is one or does not exist yet.
pub fn not_a_directory(dir: &std::path::Path) -> Option<String> {
    (dir.exists() && !dir.is_dir()).then(|| {
        format!(
            "agent.state_dir {} is a file, not a directory: move the file away, or set \
             agent.state_dir to a directory",
            dir.display()
        )
    })
}

/// Creates `dir` as this user's own (0700), or accepts it if it already is: a real directory
/// (not a link) owned by `uid` that nobody else may write. A shared /tmp name another user made
/// first is refused.
fn private_dir(dir: &std::path::Path, uid: u32) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let m = std::fs::symlink_metadata(dir)?;
    if !m.is_dir() || m.uid() != uid || m.mode() & 0o022 != 0 {
        return Err(std::io::Error::other(format!(
            "exists but is not a private directory of uid {uid} (a link, another owner, or \
             writable by others): remove it or set agent.state_dir"
        )));
    }
    Ok(())
}

struct Master<'a> {
    cfg: Config,
    cfg_rx: watch::Receiver<Arc<Config>>,
    shutdown_rx: Shutdown,
    sample_rx: watch::Receiver<Option<HostSample>>,
    probe_rx: watch::Receiver<Vec<ProbeResult>>,
    aws: Option<Aws>,
    aws_off: Option<String>,
    instance_id: String,
    /// This master's EC2 instance id, if it has one: never adopted as a slave.
    own_ec2_id: Option<String>,
    state_dir: PathBuf,
    started_at: Timestamp,
    shared: &'a Shared,
    /// The agent's time: monotonic, following the wall clock at a bounded rate (clock.rs).
    clock: crate::clock::AgentClock,
    /// This boot's id: the agent's clock goes on from state.json's mark only in the same boot.
    boot: String,
    /// The site's lease, when a live master runs with `ledger.table` (lease.rs).
    lease: Option<lease::SharedLease>,
    /// The lease task, awaited at stop (it gives the lease up), and what tells it to: sent
    /// once the last tick and the hooks are done, so the lease is renewed until then.
    lease_task: Option<(
        tokio::task::JoinHandle<()>,
        tokio::sync::oneshot::Sender<()>,
    )>,
    /// The records `burst-agent fleet` reads, with the shared table (site.rs).
    site: Option<site::SiteFeed>,
}

/// The kernel's boot id, and the boot-time clock (CLOCK_BOOTTIME: monotonic, counting suspend,
/// the same across restarts of the agent within one boot).
fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

use burst_edge::fenced::boottime;

/// What the reconciler keeps between ticks.
struct Tick {
    /// The policy's memory in a local dry run; with an actuator, the actuator keeps it (the
    /// one copy, written to state.json with the ledger).
    local_history: History,
    adopted: bool,
    last_read: Option<Timestamp>,
    fleet_metrics: BTreeMap<String, HostMetrics>,
    last_decision: Option<DecisionLine>,
    last_reasons: Vec<&'static str>,
    errors: Vec<(Timestamp, String)>,
    api_errors_reported: u64,
    state: &'static str,
    /// This tick's adoption or step saw EC2 and the ELB: only then is a decision carried out
    /// (a launch decided on a fleet that could not be seen could double what is on its way).
    observed: bool,
    /// What this tick's decision tells an operator (slaves whose metrics are suspect).
    news: Vec<crate::events::Event>,
    /// AWS's own measurements, read with the fleet's metrics (policy::corroborate).
    evidence: policy::Evidence,
    /// Serving slaves that have not reported for `metrics.stale_after` (`slave_silent`).
    silent: BTreeSet<String>,
    /// The lease as `status` shows it, when another agent holds it (or it is not read yet).
    standby: Option<String>,
    /// The holder this agent stands by for, when it knows one.
    standby_for: Option<String>,
    /// The brownout bridge's level on the master, and the hook that switches it.
    bridge: bridge::Applier,
    /// The level an operator set by hand (`burst-agent bridge`), read each tick.
    manual: Option<policy::ManualBridge>,
    /// Why the level set by hand could not be read (said once per text).
    manual_error: Option<String>,
}

/// The actuator's numbers since the last tick, for the agent's own metrics.
struct Own {
    hooks: Vec<(&'static str, f64)>,
    /// Hooks that failed for good, launches EC2 refused.
    failures: (Vec<&'static str>, u32),
    /// Slaves in service, coming, going.
    fleet: (u32, u32, u32),
}

/// What the master's loop keeps between ticks, with the actuator it drives (any [`Cloud`] and
/// [`HookRunner`]: AWS and processes in the service, a simulated world in tests).
struct Loop<C: Cloud, H: HookRunner> {
    actuator: Option<Actuator<C, H>>,
    /// Without AWS (local dry run) the policy reads the stored ledger, never writes it.
    stored_ledger: CapLedger,
    tick: Tick,
    ready_sent: bool,
    events: Events,
}

impl<C: Cloud, H: HookRunner> Loop<C, H> {
    fn ledger(&self) -> CapLedger {
        match &self.actuator {
            // Until today's count is read back after lost state, the policy sees why.
            Some(a) => match a.cap_unverified() {
                Some(why) => a.ledger().clone().blocked(why),
                None => a.ledger().clone(),
            },
            None => self.stored_ledger.clone(),
        }
    }
}

fn local_ledger(cfg: &Config, now: Timestamp) -> CapLedger {
    match crate::actuator::state::load_ledger(
        &crate::fsutil::RealDisk,
        &cfg.agent.state_dir,
        &cfg.cap,
        now,
    ) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!("cap ledger: {e}");
            CapLedger::new("UTC", cfg.cap.daily_limit, None)
                .unwrap_or_else(|_| unreachable!("UTC is always known"))
        }
    }
}

/// A phase as `status` and `drill` show it: its serde name, the warm pool's spelled out.
pub fn phase_name(p: Phase) -> &'static str {
    match p {
        Phase::Stopped => "warm (stopped)",
        p => crate::model::name_of(&p),
    }
}

/// systemd's one-line STATUS=.
/// Slaves in service, coming (pending, syncing) and going (releasing, draining, terminating).
fn fleet_counts<C: Cloud, H: HookRunner>(actuator: &Option<Actuator<C, H>>) -> (u32, u32, u32) {
    let (mut inservice, mut coming, mut going) = (0, 0, 0);
    for s in actuator.iter().flat_map(|a| a.slaves()) {
        match s.phase.slave_state() {
            policy::SlaveState::InService => inservice += 1,
            policy::SlaveState::Pending | policy::SlaveState::Syncing => coming += 1,
            policy::SlaveState::Draining => going += 1,
            // The warm pool is shown on its own (status_line, `status`'s slave list).
            policy::SlaveState::Stopped => {}
        }
    }
    (inservice, coming, going)
}

fn status_line<C: Cloud, H: HookRunner>(
    actuator: &Option<Actuator<C, H>>,
    ledger: &CapLedger,
    decision: &Decision,
    now: Timestamp,
) -> String {
    let (inservice, coming, going) = fleet_counts(actuator);
    let warm = actuator.as_ref().map_or(0, |a| a.pooled());
    let cap = ledger.status(now);
    format!(
        "{inservice} slaves in service, {coming} coming, {going} going, {warm} warm; burst cap {}/{} used; last decision: {}",
        cap.used,
        cap.limit,
        decision.action()
    )
}

#[cfg(test)]
mod tests;
