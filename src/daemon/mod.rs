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
//!   status snapshot and pets the systemd watchdog.
//!
//! A reporter (on slaves) runs the sampler and publisher only.
//!
//! A dry run with no AWS region or credentials runs on this host alone: it samples, decides
//! and logs, and talks to no AWS API.

mod drill;
pub mod events;
pub mod lock;
pub use drill::{drill, Drill};
pub mod status;

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
use events::Events;
use jiff::Timestamp;
use sd_notify::NotifyState;
use status::{DecisionLine, HostLine, SlaveLine, Snapshot};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("state directory {path}: {source}")]
    StateDir {
        path: PathBuf,
        source: std::io::Error,
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
    rt.block_on(run_async(cfg, opts))
}

/// `burst-agent repair`: with the agent stopped (it takes the state directory's lock), rebuilds
/// the cap ledger from the state, the journal and the instances' tags, counts at least
/// `used_today` today, and clears a block that waits for an operator. Returns what it did.
/// Runs `f` on a one-off runtime with the AWS client of `cfg` (an operator's command: never a
/// dry run, so AWS must be reachable).
fn with_aws<T, F, Fut>(cfg: Config, what: &str, f: F) -> Result<T, DaemonError>
where
    F: FnOnce(Config, Aws) -> Fut,
    Fut: std::future::Future<Output = Result<T, DaemonError>>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(DaemonError::Runtime)?;
    rt.block_on(async move {
        let mut cfg = cfg;
        cfg.agent.dry_run = false;
        let aws = connect(&cfg)
            .await
            .map_err(DaemonError::Start)?
            .ok_or_else(|| DaemonError::Start(format!("{what} needs AWS: no client")))?;
        f(cfg, aws).await
    })
}

/// The file `burst-agent resume` leaves in the state directory; the running agent removes it
/// and releases the brake on launches (the operator fixed what broke the content sync).
pub const RESUME_FILE: &str = "resume";

/// `burst-agent resume`: asks the running agent to release the brake on launches.
pub fn request_resume(state_dir: &std::path::Path) -> std::io::Result<PathBuf> {
    let path = state_dir.join(RESUME_FILE);
    crate::fsutil::atomic_write(&path, b"resume\n")
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    Ok(path)
}

pub fn repair(
    cfg: Config,
    used_today: Option<u32>,
    adopt: &[String],
) -> Result<Vec<String>, DaemonError> {
    with_aws(cfg, "repair", |mut cfg, aws| async move {
        let state_dir = prepare_state_dir(&mut cfg)?;
        let _lock = lock::StateLock::acquire(&state_dir)?;
        let (_, own) = identity(&cfg, true).await;
        let cloud = AwsCloud::new(aws, &cfg.agent.group, &cfg.elb.name, &cfg.fleet)
            .map_err(|e| DaemonError::Start(e.to_string()))?;
        let now = Timestamp::now();
        let mut a = Actuator::open(cloud, &cfg, now)?;
        a.set_own_instance(own);
        Ok(a.repair(now, used_today, adopt).await?)
    })
}

/// `burst-agent alarms --apply [--prune]`: puts this group's CloudWatch alarms (and deletes the
/// group's alarms no longer planned). Returns what it did, line by line.
pub fn apply_alarms(cfg: Config, prune: bool) -> Result<Vec<String>, DaemonError> {
    with_aws(cfg, "alarms", |cfg, aws| async move {
        let plan = crate::alarms::plan(&cfg);
        let done = crate::alarms::apply(&aws, &cfg, &plan, prune)
            .await
            .map_err(|e| DaemonError::Start(e.to_string()))?;
        let mut out: Vec<String> = done.put.iter().map(|n| format!("put     {n}")).collect();
        out.extend(done.deleted.iter().map(|n| format!("deleted {n}")));
        if cfg.alarms.alarm_actions.is_empty() {
            out.push(
                "note: alarms.alarm_actions is empty: the alarms change state but tell nobody"
                    .into(),
            );
        }
        Ok(out)
    })
}

/// `burst-agent preflight`: this host's checks, then the account's (crate::preflight). A config
/// that reaches no AWS (no region, no credentials) fails that check and keeps the local ones.
pub fn preflight(cfg: Config) -> Result<crate::preflight::Report, DaemonError> {
    let mut report = crate::preflight::local(&cfg);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(DaemonError::Runtime)?;
    rt.block_on(async {
        let mut c = cfg.clone();
        c.agent.dry_run = false;
        match connect(&c).await {
            Ok(Some(aws)) => crate::preflight::account(&cfg, &aws, &mut report).await,
            Ok(None) => {}
            Err(e) => report.checks.push(crate::preflight::Check {
                key: "aws".into(),
                outcome: crate::preflight::Outcome::Fail,
                what: format!("AWS cannot be reached: {e}"),
                fix: Some("set aws.region, and run on the master with its instance profile".into()),
            }),
        }
    });
    Ok(report)
}

/// `burst-agent dashboard --apply`: puts the CloudWatch dashboard of `groups`.
pub fn apply_dashboard(cfg: Config, groups: Vec<String>) -> Result<Vec<String>, DaemonError> {
    with_aws(cfg, "dashboard", |cfg, aws| async move {
        let (name, said) = crate::dashboard::apply(&aws, &cfg, &groups)
            .await
            .map_err(|e| DaemonError::Start(e.to_string()))?;
        let mut out = vec![format!("put dashboard {name}")];
        out.extend(said.into_iter().map(|m| format!("CloudWatch says: {m}")));
        Ok(out)
    })
}

fn notify(states: &[NotifyState]) {
    // Not under systemd (no NOTIFY_SOCKET) this does nothing.
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::debug!("sd_notify: {e}");
    }
}

/// Decides whether this run talks to AWS. A dry run with no region or no credentials stays on
/// this host; anything else must reach AWS (failures are then logged per call, and retried).
async fn connect(cfg: &Config) -> Result<Option<Aws>, String> {
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
    use aws_credential_types::provider::ProvideCredentials;
    let Some(provider) = sdk.credentials_provider() else {
        return Err("no AWS credentials provider".into());
    };
    match tokio::time::timeout(Duration::from_secs(5), provider.provide_credentials()).await {
        Ok(Ok(_)) => Ok(Some(aws)),
        Ok(Err(e)) => Err(format!("no AWS credentials ({e})")),
        Err(_) => Err("no AWS credentials within 5 s".into()),
    }
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
async fn identity(cfg: &Config, use_imds: bool) -> (String, Option<String>) {
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
    let (aws, aws_off) = match connect(&cfg).await {
        Ok(a) => (a, None),
        Err(why) => {
            tracing::warn!(
                "dry run on this host alone: {why}. Nothing is published to or read \
                from CloudWatch and no AWS API is called; decisions are logged."
            );
            (None, Some(why))
        }
    };
    let (instance_id, own_ec2_id) = identity(&cfg, aws.is_some()).await;
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

    let (cfg_tx, cfg_rx) = watch::channel(Arc::new(cfg.clone()));
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (sample_tx, mut sample_rx) = watch::channel::<Option<HostSample>>(None);
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
        instance_id.clone(),
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

    // READY=1 after the first sample (and, on a master, after the first adoption attempt).
    let _ = tokio::time::timeout(Duration::from_secs(30), sample_rx.changed()).await;

    let result = match cfg.agent.role {
        Role::Reporter => {
            notify(&[
                NotifyState::Ready,
                NotifyState::Status("reporting this host's samples"),
            ]);
            let mut rx = shutdown_rx.clone();
            let _ = rx.wait_for(|s| *s).await;
            Ok(())
        }
        Role::Master => {
            let m = Master {
                cfg,
                cfg_rx,
                shutdown_rx: shutdown_rx.clone(),
                sample_rx,
                probe_rx,
                aws,
                aws_off,
                instance_id,
                own_ec2_id,
                state_dir,
                started_at,
                shared: &shared,
                clock: crate::clock::AgentClock::new(Timestamp::now(), boottime()),
                boot: boot_id(),
            };
            m.run().await
        }
    };
    notify(&[NotifyState::Stopping]);
    let _ = sampler_task.await;
    if let Some(t) = probe_task {
        let _ = t.await;
    }
    if let Some(t) = publisher_task {
        let _ = t.await;
    }
    signals_task.abort();
    if result.is_ok() {
        tracing::info!("burst-agent stopped cleanly");
    }
    result
}

/// Creates the state directory. A dry run that cannot use it (say, not root, first try)
/// falls back to a private temporary one; a real run stops with the error.
fn prepare_state_dir(cfg: &mut Config) -> Result<PathBuf, DaemonError> {
    let dir = cfg.agent.state_dir.clone();
    let probe = dir.join(".write-test");
    let usable = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(&probe, b""))
        .and_then(|()| std::fs::remove_file(&probe));
    match usable {
        Ok(()) => Ok(dir),
        Err(e) if cfg.agent.dry_run => {
            let uid = rustix::process::getuid().as_raw();
            let alt = std::env::temp_dir().join(format!("burst-agent-{uid}"));
            private_dir(&alt, uid).map_err(|source| DaemonError::StateDir {
                path: alt.clone(),
                source,
            })?;
            tracing::warn!(wanted = %dir.display(), using = %alt.display(),
                "dry run: agent.state_dir is not writable ({e}); using a temporary one");
            cfg.agent.state_dir = alt.clone();
            Ok(alt)
        }
        Err(source) => Err(DaemonError::StateDir { path: dir, source }),
    }
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

async fn sampler_loop(
    mut sampler: Sampler,
    cfg_rx: watch::Receiver<Arc<Config>>,
    mut shutdown: watch::Receiver<bool>,
    tx: watch::Sender<Option<HostSample>>,
    buffer: Option<Arc<Mutex<Buffer>>>,
    instance_id: String,
) {
    let mut cfg = cfg_rx.borrow().clone();
    let mut reported_problems: Vec<String> = Vec::new();
    loop {
        let latest = cfg_rx.borrow().clone();
        if latest.sampling != cfg.sampling {
            match Sampler::new(&latest.sampling) {
                Ok(s) => sampler = s,
                Err(e) => tracing::error!("sampling config not applied: {e}"),
            }
        }
        cfg = latest;
        let t = std::time::Instant::now();
        let joined = tokio::task::spawn_blocking(move || {
            let s = sampler.sample();
            (sampler, s)
        })
        .await;
        let Ok((back, sample)) = joined else {
            tracing::error!("the sampling thread panicked; stopping the sampler");
            return;
        };
        sampler = back;
        // Problems are warned once when they appear, and once when they clear.
        if sample.problems != reported_problems {
            for p in &sample.problems {
                if !reported_problems.contains(p) {
                    tracing::warn!(problem = %p, "sampling: {p}");
                }
            }
            if sample.problems.is_empty() {
                tracing::info!("sampling: every part of this host is readable again");
            }
            reported_problems = sample.problems.clone();
        }
        tracing::debug!(secs = t.elapsed().as_secs_f64(), load_per_cpu = ?sample.load_per_cpu(),
            apache_busy_ratio = ?sample.apache_busy_ratio(), "sampled");
        if let Some(buf) = &buffer {
            let (data, bad) = metrics::host_data(&sample, &cfg.agent.group, &instance_id);
            for b in bad {
                tracing::warn!("not published: {b}");
            }
            let dropped = buf.lock().unwrap_or_else(|p| p.into_inner()).push(data);
            if dropped > 0 {
                tracing::warn!(
                    dropped,
                    "metrics buffer full (CloudWatch unreachable?): dropped \
                    the oldest datapoints; raise metrics.buffer_limit to keep more"
                );
            }
        }
        if cfg.agent.role == Role::Reporter {
            notify(&[NotifyState::Watchdog]);
        }
        let _ = tx.send(Some(sample));
        tokio::select! {
            _ = tokio::time::sleep(cfg.sampling.interval.get().saturating_sub(t.elapsed())) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}

/// The liveness probe: a round every `sampling.probe_interval` (none while `probe_urls` is
/// empty), published and handed to the policy. A URL's failure is warned when it starts and
/// told when it ends, not every round.
async fn probe_loop(
    cfg_rx: watch::Receiver<Arc<Config>>,
    mut shutdown: watch::Receiver<bool>,
    tx: watch::Sender<Vec<ProbeResult>>,
    buffer: Option<Arc<Mutex<Buffer>>>,
) {
    let mut failing: BTreeMap<String, String> = BTreeMap::new();
    loop {
        let cfg = cfg_rx.borrow().clone();
        let s = &cfg.sampling;
        let started = std::time::Instant::now();
        if !s.probe_urls.is_empty() {
            let prober = Prober::new(&s.probe_urls, s.probe_timeout.get());
            // Shutdown does not wait for a round of slow URLs (the thread ends on its own).
            let round = tokio::select! {
                r = tokio::task::spawn_blocking(move || prober.round()) => r,
                _ = shutdown.wait_for(|s| *s) => return,
            };
            let Ok(round) = round else {
                tracing::error!("the probe thread panicked; stopping the probe");
                return;
            };
            for r in &round {
                match (&r.error, failing.contains_key(&r.url)) {
                    (Some(e), false) => {
                        tracing::warn!(url = %r.url, status = ?r.status, latency_ms = r.latency_ms,
                            "probe failed: {e}");
                        failing.insert(r.url.clone(), e.clone());
                    }
                    (None, true) => {
                        tracing::info!(url = %r.url, status = ?r.status, latency_ms = r.latency_ms,
                            "probe answers again");
                        failing.remove(&r.url);
                    }
                    _ => tracing::debug!(url = %r.url, status = ?r.status,
                        latency_ms = r.latency_ms, "probed"),
                }
            }
            failing.retain(|u, _| s.probe_urls.contains(u));
            if let Some(buf) = &buffer {
                let data = metrics::probe_data(&round, &cfg.agent.group);
                buf.lock().unwrap_or_else(|p| p.into_inner()).push(data);
            }
            let _ = tx.send(round);
        } else if !tx.borrow().is_empty() {
            let _ = tx.send(Vec::new());
        }
        let wait = s.probe_interval.get().saturating_sub(started.elapsed());
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}

async fn publisher_loop(
    aws: Aws,
    cfg_rx: watch::Receiver<Arc<Config>>,
    mut shutdown: watch::Receiver<bool>,
    buffer: Arc<Mutex<Buffer>>,
) {
    loop {
        let cfg = cfg_rx.borrow().clone();
        let stop = tokio::select! {
            _ = tokio::time::sleep(cfg.metrics.publish_interval.get()) => false,
            _ = shutdown.wait_for(|s| *s) => true,
        };
        let namespace = cfg.metrics.namespace_for(&cfg.agent.group);
        let flush = cloudwatch::flush(&aws, &namespace, cfg.metrics.storage_resolution, &buffer);
        if stop {
            // One last flush on the way out, bounded.
            let _ = tokio::time::timeout(Duration::from_secs(5), flush).await;
            return;
        }
        let f = flush.await;
        if let Some(e) = f.stopped_by {
            let queued = buffer.lock().unwrap_or_else(|p| p.into_inner()).len();
            tracing::warn!(
                queued,
                "metrics not published this round, kept for the next: {e}"
            );
        } else {
            tracing::debug!(sent = f.sent, calls = f.calls, "metrics published");
        }
    }
}

async fn signal_loop(
    opts: RunOptions,
    cfg_tx: watch::Sender<Arc<Config>>,
    shutdown_tx: watch::Sender<bool>,
    sync_requested: Arc<AtomicBool>,
) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int), Ok(mut hup), Ok(mut usr1)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
        signal(SignalKind::user_defined1()),
    ) else {
        tracing::error!("cannot install signal handlers; stop the agent with SIGKILL");
        return;
    };
    loop {
        let stop = tokio::select! {
            _ = term.recv() => Some("SIGTERM"),
            _ = int.recv() => Some("SIGINT"),
            _ = hup.recv() => None,
            _ = usr1.recv() => {
                tracing::info!("SIGUSR1: content sync to every in-service slave requested");
                sync_requested.store(true, Ordering::SeqCst);
                continue;
            }
        };
        match stop {
            Some(sig) if *shutdown_tx.borrow() => {
                tracing::error!(
                    "{sig} again: forcing exit now; state on disk is what the last \
                    completed step wrote, and the next start reconciles it"
                );
                std::process::exit(1);
            }
            Some(sig) => {
                tracing::info!(
                    "{sig}: stopping; in-flight steps finish first (send it again to force)"
                );
                let _ = shutdown_tx.send(true);
            }
            None => {
                notify(&[NotifyState::Reloading]);
                let current = cfg_tx.borrow().clone();
                if let Some(new) = reload(&opts, &current) {
                    let _ = cfg_tx.send(Arc::new(new));
                }
                notify(&[NotifyState::Ready]);
            }
        }
    }
}

struct Master<'a> {
    cfg: Config,
    cfg_rx: watch::Receiver<Arc<Config>>,
    shutdown_rx: watch::Receiver<bool>,
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
}

/// The kernel's boot id, and the boot-time clock (CLOCK_BOOTTIME: monotonic, counting suspend,
/// the same across restarts of the agent within one boot).
fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn boottime() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

/// What the reconciler keeps between ticks.
struct Tick {
    history: History,
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

impl Master<'_> {
    async fn run(mut self) -> Result<(), DaemonError> {
        let actuator = match &self.aws {
            Some(aws) => {
                let cloud = AwsCloud::new(
                    aws.clone(),
                    &self.cfg.agent.group,
                    &self.cfg.elb.name,
                    &self.cfg.fleet,
                )
                .map_err(|e| DaemonError::Start(e.to_string()))?;
                let mut a = Actuator::open(cloud, &self.cfg, Timestamp::now())?;
                a.set_own_instance(self.own_ec2_id.clone());
                Some(a)
            }
            None => None,
        };
        // The agent's clock goes on from the state's mark after a restart in this boot.
        self.clock = crate::clock::AgentClock::resume(
            actuator.as_ref().and_then(|a| a.clock_mark()),
            &self.boot,
            Timestamp::now(),
            boottime(),
        );
        let mut l = self.start(actuator);
        let mut watchdog_usec = 0u64;
        if sd_notify::watchdog_enabled(false, &mut watchdog_usec)
            && Duration::from_micros(watchdog_usec / 2) < self.cfg.policy.evaluation_interval.get()
        {
            tracing::warn!(watchdog_secs = watchdog_usec / 1_000_000,
                evaluation_interval = %self.cfg.policy.evaluation_interval,
                "the unit's WatchdogSec is less than twice policy.evaluation_interval: systemd \
                 may restart a healthy agent; raise WatchdogSec or shorten the interval");
        }
        loop {
            let now = self.read_clock(&mut l.tick);
            if let Some(a) = l.actuator.as_mut() {
                a.set_clock_mark(self.clock.mark(&self.boot));
            }
            self.tick(&mut l, now).await;
            let wait = self.cfg.policy.evaluation_interval.get();
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.shutdown_rx.wait_for(|s| *s) => break,
            }
        }
        self.stop(&mut l).await;
        Ok(())
    }

    fn start<C: Cloud, H: HookRunner>(&self, actuator: Option<Actuator<C, H>>) -> Loop<C, H> {
        let tick = Tick {
            // Cooldowns and the last scaling survive a restart.
            history: actuator
                .as_ref()
                .map_or_else(History::new, |a| a.history().clone()),
            adopted: false,
            last_read: None,
            fleet_metrics: BTreeMap::new(),
            last_decision: None,
            last_reasons: Vec::new(),
            news: Vec::new(),
            evidence: policy::Evidence::default(),
            silent: BTreeSet::new(),
            errors: Vec::new(),
            api_errors_reported: 0,
            state: "starting",
            observed: false,
        };
        Loop {
            actuator,
            stored_ledger: local_ledger(&self.cfg, Timestamp::now()),
            tick,
            ready_sent: false,
            events: Events::load(&self.state_dir),
        }
    }

    /// One tick at `now`: a new config, observe (adopt or step, read the fleet back), decide,
    /// act only on a fleet this tick observed, publish, status, watchdog. Returns the decision.
    async fn tick<C: Cloud, H: HookRunner>(
        &mut self,
        l: &mut Loop<C, H>,
        now: Timestamp,
    ) -> Decision {
        if self.cfg_rx.has_changed().unwrap_or(false) {
            self.cfg = (**self.cfg_rx.borrow_and_update()).clone();
            match l.actuator.as_mut() {
                Some(a) => a.reconfigure(&self.cfg, now),
                // A local dry run reads the stored ledger under the new [cap].
                None => l.stored_ledger = local_ledger(&self.cfg, now),
            }
        }
        if let Some(a) = l.actuator.as_mut() {
            self.actuate_observe(a, &mut l.tick, now).await;
        }
        let ledger = l.ledger();
        let decision = self.decide(&l.actuator, &ledger, &mut l.tick, now);
        if let Some(a) = l.actuator.as_mut() {
            a.keep_history(&l.tick.history, now);
        }
        let observed = l.tick.adopted && l.tick.observed;
        if let (Some(a), true) = (l.actuator.as_mut(), observed) {
            let r = a.apply(&decision, now).await;
            for e in r.errors {
                l.tick.errors.push((now, e));
            }
        } else if !matches!(decision, Decision::Hold { .. }) && l.actuator.is_none() {
            // The decision line above has the numbers; this only says nothing was done.
            tracing::info!(
                action = decision.action(),
                "dry run (no AWS): nothing launched or released"
            );
        }
        let after = l.ledger().status(now);
        let levels = Levels {
            cap_used: after.used,
            cap_limit: after.limit,
            cap_remaining: after.remaining,
            day: after.day.to_string(),
            blocked: l
                .actuator
                .as_ref()
                .and_then(|a| a.needs_repair().map(str::to_string)),
        };
        let mut news = std::mem::take(&mut l.tick.news);
        news.extend(
            l.actuator
                .as_mut()
                .map(|a| a.take_events())
                .unwrap_or_default(),
        );
        for e in l
            .events
            .tick(&self.cfg, self.aws.as_ref(), levels, news, now)
        {
            l.tick.errors.push((now, e));
        }
        let own = Own {
            hooks: l
                .actuator
                .as_mut()
                .map(|a| a.take_hook_seconds())
                .unwrap_or_default(),
            failures: l
                .actuator
                .as_mut()
                .map(|a| a.take_failures())
                .unwrap_or_default(),
            fleet: fleet_counts(&l.actuator),
        };
        self.publish_own(&decision, &ledger, &own, &mut l.tick, now);
        l.tick.state = if l.actuator.is_some() && !l.tick.adopted {
            "waiting_for_aws"
        } else {
            "running"
        };
        self.snapshot(&l.actuator, &ledger, &l.tick, &l.events, now);
        let line = status_line(&l.actuator, &ledger, &decision, now);
        notify(&[NotifyState::Watchdog, NotifyState::Status(&line)]);
        if !l.ready_sent {
            notify(&[NotifyState::Ready]);
            l.ready_sent = true;
            tracing::info!("ready: {line}");
        }
        decision
    }

    /// Shutdown: the loop only stops between ticks, so no launch or registration is half done;
    /// hooks under way get what is left of the deadline.
    async fn stop<C: Cloud, H: HookRunner>(&mut self, l: &mut Loop<C, H>) {
        l.tick.state = "stopping";
        let deadline = self.cfg.agent.shutdown_timeout;
        let mut timed_out = false;
        if let Some(a) = l.actuator.as_mut() {
            a.flush(Timestamp::now());
            let left = a.wait_for_hooks(deadline.get()).await;
            if left > 0 {
                tracing::warn!(left, "shutdown: hooks still running at agent.shutdown_timeout were \
                    killed; their slaves are synced again (never registered unsynced) at the next start");
                timed_out = true;
            }
        }
        l.events.finish(Duration::from_secs(5)).await;
        l.tick.state = "stopped";
        let ledger = l.ledger();
        self.snapshot(&l.actuator, &ledger, &l.tick, &l.events, Timestamp::now());
        if timed_out {
            tracing::warn!("{}", DaemonError::ShutdownTimedOut(deadline));
        }
    }

    /// Adopts (until it has worked once), steps the actuator, and reads the fleet back.
    async fn actuate_observe<C: Cloud, H: HookRunner>(
        &self,
        a: &mut Actuator<C, H>,
        tick: &mut Tick,
        now: Timestamp,
    ) {
        if self.shared.sync_requested.swap(false, Ordering::SeqCst) {
            a.request_sync();
        }
        tick.observed = false;
        if !tick.adopted {
            match a.adopt(now).await {
                Ok(r) => {
                    tick.adopted = true;
                    tick.observed = true;
                    tracing::info!(adopted = ?r.adopted, launched = ?r.launched, cap = %a.ledger().status(now),
                        "adoption done: {} slave(s) of group {:?} re-attached", r.adopted.len(), self.cfg.agent.group);
                }
                Err(e) => {
                    let msg =
                        format!("adoption failed, will retry; no scaling until it works: {e}");
                    tracing::error!("{msg}");
                    tick.errors.push((now, msg));
                    return;
                }
            }
        } else {
            // `burst-agent resume`: the operator fixed what broke the content sync.
            let resume = self.cfg.agent.state_dir.join(RESUME_FILE);
            if std::fs::remove_file(&resume).is_ok() {
                a.resume("burst-agent resume", now);
            }
            match a.step(now).await {
                Ok(r) => {
                    tick.observed = true;
                    for id in &r.in_service {
                        // Only a slave this agent saw from its launch: an adopted one's
                        // launch-to-InService time says nothing of the lead time.
                        let lead = a
                            .slave(id)
                            .filter(|s| s.first_seen.as_second() - s.launched_at.as_second() <= 60)
                            .map(|s| now.as_second() - s.launched_at.as_second());
                        tracing::info!(instance_id = %id, lead_secs = ?lead,
                            "slave {id} is in service");
                        // The forecast's lead time: launch to InService, measured.
                        if let Some(secs) = lead {
                            tick.history.record_lead(secs);
                        }
                    }
                }
                Err(e) => {
                    let msg = format!(
                        "actuator step skipped, and no scaling this tick (the fleet could not be \
                         observed): {e}"
                    );
                    tracing::warn!("{msg}");
                    tick.errors.push((now, msg));
                }
            }
        }
        // Lost or unreadable state: today's count from CloudWatch's copy before any launch, once
        // adoption has counted what EC2 still lists (the read-back adds only what is missing).
        if a.cap_unverified().is_some() && tick.adopted {
            if let Some(aws) = &self.aws {
                let (_, since, _) = a.ledger().day_bounds(now);
                let read = cloudwatch::cap_used_since(
                    aws,
                    &self.cfg.metrics.namespace_for(&self.cfg.agent.group),
                    &self.cfg.agent.group,
                    since,
                    now,
                )
                .await
                .map_err(|e| e.to_string());
                a.cap_read_back(read, now);
            }
        }
        let ids: Vec<String> = a.slaves().map(|s| s.id.clone()).collect();
        let due = tick.last_read.is_none_or(|t| {
            now.as_second() - t.as_second()
                >= self.cfg.metrics.fleet_read_interval.get().as_secs() as i64
        });
        if let (Some(aws), true, false) = (&self.aws, due, ids.is_empty()) {
            let stale = self.cfg.metrics.stale_after.get().as_secs() as i64;
            match cloudwatch::read_fleet(
                aws,
                &self.cfg.metrics.namespace_for(&self.cfg.agent.group),
                &self.cfg.agent.group,
                &ids,
                self.cfg.metrics.storage_resolution,
                stale,
                // The query window and the slaves' timestamps are wall-clock time.
                self.clock.wall(),
            )
            .await
            {
                Ok(mut back) => {
                    // Each datapoint's age by the wall clock, as the agent's time.
                    for m in back.metrics.values_mut() {
                        m.at = self.clock.to_agent(m.at);
                    }
                    if !back.missing.is_empty() {
                        tracing::debug!(missing = ?back.missing, "fleet read-back: no fresh metrics for some slaves");
                    }
                    tick.fleet_metrics = back.metrics;
                    tick.last_read = Some(now);
                    self.note_silence(a.slaves(), tick, now);
                    // No slave can write these; a failed read only means less evidence.
                    match cloudwatch::read_evidence(
                        aws,
                        &self.cfg.elb.name,
                        &ids,
                        self.clock.wall(),
                    )
                    .await
                    {
                        Ok(ev) => tick.evidence = ev,
                        Err(e) => {
                            tracing::debug!("AWS/ELB and AWS/EC2 evidence unread: {e}");
                            tick.evidence = policy::Evidence::default();
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!("fleet read-back failed; slaves count as missing: {e}");
                    tick.fleet_metrics.clear();
                }
            }
        }
        if ids.is_empty() {
            tick.fleet_metrics.clear();
            tick.silent.clear();
        }
        for (t, e) in a.recent_errors() {
            if !tick.errors.iter().any(|(t2, e2)| t2 == t && e2 == e) {
                tick.errors.push((*t, e.clone()));
            }
        }
        tick.errors.sort_by_key(|(t, _)| *t);
        let n = tick.errors.len();
        if n > 10 {
            tick.errors.drain(..n - 10);
        }
    }

    /// Serving slaves that stopped reporting (after a read that went through: a failed read
    /// says nothing of them): an event once each time one goes silent, a line when it is back.
    fn note_silence<'a>(
        &self,
        slaves: impl IntoIterator<Item = &'a crate::actuator::Slave>,
        tick: &mut Tick,
        now: Timestamp,
    ) {
        let window = self.cfg.metrics.stale_after;
        let ns = self.cfg.metrics.namespace_for(&self.cfg.agent.group);
        let slaves: Vec<&crate::actuator::Slave> = slaves.into_iter().collect();
        let silent = crate::actuator::lifecycle::silent(
            slaves.iter().copied(),
            &tick.fleet_metrics,
            now,
            window.whole_secs(),
        );
        for id in silent.difference(&tick.silent) {
            let msg = format!(
                "slave {id} is in service but has not reported its samples for {window} \
                 (metrics.stale_after): the policy counts it idle for scale-out and at target \
                 for scale-in, so the fleet is never scaled in for it. On the slave: is \
                 burst-agent running with role = \"reporter\", dry_run = false, aws.region set \
                 and metrics.namespace = \"{ns}\"? (`systemctl status burst-agent`, \
                 `journalctl -u burst-agent`)"
            );
            tracing::warn!(instance_id = %id, "{msg}");
            tick.news.push(crate::events::Event::new(
                crate::events::EventKind::SlaveSilent,
                Some(id),
                msg,
            ));
        }
        for id in tick.silent.difference(&silent) {
            if slaves.iter().any(|s| &s.id == id) {
                tracing::info!(instance_id = %id, "slave {id} reports again");
            }
        }
        tick.silent = silent;
    }

    fn decide<C: Cloud, H: HookRunner>(
        &self,
        actuator: &Option<Actuator<C, H>>,
        ledger: &CapLedger,
        tick: &mut Tick,
        now: Timestamp,
    ) -> Decision {
        let master = self
            .sample_rx
            .borrow()
            .as_ref()
            .map(HostMetrics::from_sample)
            .map(|mut m| {
                m.at = self.clock.to_agent(m.at);
                m
            });
        let slaves = match actuator {
            Some(a) => a
                .observation(now)
                .into_iter()
                .map(|mut s| {
                    s.metrics = tick.fleet_metrics.get(&s.id).copied();
                    s
                })
                .collect(),
            None => Vec::new(),
        };
        let no_capacity_until = actuator.as_ref().and_then(|a| a.no_capacity_until(now));
        let launch_refused = actuator.as_ref().and_then(|a| a.launch_refused(now));
        let probe_latency = crate::model::probe_latency(&self.probe_rx.borrow());
        let (scheduled, _) = self.windows(now);
        let warm_room = actuator.as_ref().map_or(0, |a| a.warm_room());
        let sync_broken = actuator.as_ref().and_then(|a| {
            a.sync_broken().map(|t| policy::SyncBroken {
                cause: t.cause.clone(),
                trial: a.brake_gate(now) == crate::actuator::brake::Gate::Trial,
                trial_in_secs: a
                    .next_trial(now)
                    .map_or(-1, |n| (n.as_second() - now.as_second()).max(0)),
            })
        });
        let obs = FleetObservation {
            master,
            slaves,
            no_capacity_until,
            launch_refused,
            probe_latency,
            scheduled,
            warm_room,
            drain_secs: self.cfg.elb.draining_timeout.whole_secs(),
            sync_broken,
            content_source_missing: actuator
                .as_ref()
                .and_then(|a| a.content_source_missing().map(str::to_string)),
            evidence: tick.evidence.clone(),
        };
        let decision = policy::decide(&self.cfg.policy, &obs, ledger, &tick.history, now);
        // A decision this tick will not carry out (the fleet could not be observed) starts no
        // cooldown: it is remembered as a hold with the same numbers.
        let carried_out = actuator.is_none() || (tick.adopted && tick.observed);
        if carried_out {
            tick.history.record(&self.cfg.policy, now, &decision);
        } else {
            let held = Decision::Hold {
                why: decision.explanation().clone(),
            };
            tick.history.record(&self.cfg.policy, now, &held);
        }
        let why = decision.explanation();
        for r in &why.reasons {
            if let policy::Reason::Uncorroborated { hosts, .. } = r {
                for h in hosts {
                    tick.news.push(crate::events::Event::new(
                        crate::events::EventKind::MetricsSuspect,
                        Some(h),
                        r.to_string(),
                    ));
                }
            }
        }
        let codes = decision.reason_codes();
        let changed = codes != tick.last_reasons;
        let fields = |d: &Decision| {
            tracing::info!(action = d.action(), current = why.current, in_service = why.in_service,
                on_the_way = why.on_the_way, draining = why.draining, target = why.final_count,
                utilization = ?why.utilization, reasons = ?codes, cap_used = why.cap.used,
                cap_remaining = why.cap.remaining, dry_run = self.cfg.agent.dry_run, "decision: {d}");
        };
        match &decision {
            Decision::Hold { .. } if !changed => {
                tracing::debug!(action = "hold", reasons = ?codes, utilization = ?why.utilization, "decision: {decision}")
            }
            _ => fields(&decision),
        }
        tick.last_reasons = codes.clone();
        tick.last_decision = Some(DecisionLine {
            at: now,
            action: decision.action().into(),
            text: decision.to_string(),
            reasons: codes.iter().map(|c| c.to_string()).collect(),
        });
        decision
    }

    /// The planned burst holding now, and the next one to prewarm.
    fn windows(&self, now: Timestamp) -> (Option<schedule::Window>, Option<schedule::Window>) {
        let Ok(tz) = jiff::tz::TimeZone::get(&self.cfg.cap.time_zone) else {
            return (None, None);
        };
        let plans = schedule::plans(&self.cfg);
        (
            schedule::active(&plans, &tz, now),
            schedule::next(&plans, &tz, now),
        )
    }

    /// The agent's time now (clock.rs); a wall-clock step is logged and told once.
    fn read_clock(&mut self, tick: &mut Tick) -> Timestamp {
        let (now, step) = self.clock.observe(Timestamp::now(), boottime());
        if let Some(s) = step {
            let msg = format!(
                "the wall clock stepped {}{}s against the monotonic clock (now {}; an NTP step, a \
                 VM pause or `date -s`): deadlines, cooldowns and the cap day follow the agent's \
                 own clock ({now}), which catches up at most {}% of the time that passes; no \
                 slave is ended and no cap day opens for it",
                if s.secs > 0 { "+" } else { "" },
                s.secs,
                s.wall,
                (crate::clock::SLEW * 100.0) as u32
            );
            tracing::warn!(step_secs = s.secs, wall = %s.wall, agent = %now, "{msg}");
            tick.news.push(crate::events::Event::new(
                crate::events::EventKind::ClockStep,
                None,
                msg,
            ));
        }
        now
    }

    fn publish_own(
        &self,
        decision: &Decision,
        ledger: &CapLedger,
        own: &Own,
        tick: &mut Tick,
        now: Timestamp,
    ) {
        let Some(aws) = &self.aws else { return };
        let errors: u64 = aws.stats().snapshot().values().map(|s| s.errors).sum();
        let cap = ledger.status(now);
        let mut buf = self.shared.buffer.lock().unwrap_or_else(|p| p.into_inner());
        let dropped = buf.dropped_total();
        buf.push(metrics::agent_data(
            &metrics::AgentNumbers {
                decision: Some(decision),
                cap: &cap,
                api_errors: errors - tick.api_errors_reported,
                hook_seconds: &own.hooks,
                hook_failures: &own.failures.0,
                launch_failures: own.failures.1,
                fleet: own.fleet,
                silent: u32::try_from(tick.silent.len()).unwrap_or(u32::MAX),
                dropped,
            },
            &self.cfg.agent.group,
            // CloudWatch's timestamps are the wall clock's (shared with every other host).
            self.clock.wall().max(now),
        ));
        tick.api_errors_reported = errors;
    }

    fn snapshot<C: Cloud, H: HookRunner>(
        &self,
        actuator: &Option<Actuator<C, H>>,
        ledger: &CapLedger,
        tick: &Tick,
        events: &Events,
        now: Timestamp,
    ) {
        let sample = self.sample_rx.borrow().clone();
        let host = HostLine {
            instance_id: self.instance_id.clone(),
            at: sample.as_ref().map(|s| s.timestamp),
            load_per_cpu: sample.as_ref().and_then(|s| s.load_per_cpu()),
            apache_busy_ratio: sample.as_ref().and_then(|s| s.apache_busy_ratio()),
            memory_used_ratio: sample.as_ref().and_then(|s| s.memory_used_ratio()),
            apache_workers: sample.as_ref().and_then(|s| s.apache.workers),
            problems: sample.map(|s| s.problems).unwrap_or_default(),
        };
        let slaves = actuator
            .iter()
            .flat_map(|a| a.slaves())
            .map(|s| {
                let m = tick.fleet_metrics.get(&s.id);
                SlaveLine {
                    id: s.id.clone(),
                    phase: phase_name(s.phase).into(),
                    private_ip: s.private_ip.clone(),
                    launched_at: s.launched_at,
                    in_phase_since: s.since,
                    sample_at: m.map(|m| m.at),
                    load_per_cpu: m.and_then(|m| m.load_per_cpu),
                    apache_busy_ratio: m.and_then(|m| m.apache_busy_ratio),
                    last_sync: s.last_sync,
                    last_sync_ok: s.last_sync_ok,
                    silent: tick.silent.contains(&s.id),
                    failure: s.failure.clone(),
                }
            })
            .collect();
        let mut cooldowns = Vec::new();
        let p = &self.cfg.policy;
        for (what, last, d) in [
            (
                "scale-out",
                tick.history.last_scale_out,
                p.scale_out_cooldown,
            ),
            ("scale-in", tick.history.last_scale_in, p.scale_in_cooldown),
        ] {
            if let Some(t) = last {
                let left = d.get().as_secs() as i64 - (now.as_second() - t.as_second());
                if left > 0 {
                    cooldowns.push(format!("{what} cooldown: {left} s left"));
                }
            }
        }
        let (scheduled, next_window) = self.windows(now);
        let buf = self.shared.buffer.lock().unwrap_or_else(|p| p.into_inner());
        let snap = Snapshot {
            written_at: now,
            pid: std::process::id(),
            state: tick.state.into(),
            started_at: self.started_at,
            group: self.cfg.agent.group.clone(),
            role: self.cfg.agent.role.name().into(),
            dry_run: self.cfg.agent.dry_run,
            aws_off: self.aws_off.clone(),
            host,
            slaves,
            foreign: actuator
                .as_ref()
                .map(|a| a.foreign().to_vec())
                .unwrap_or_default(),
            content_source_missing: actuator
                .as_ref()
                .and_then(|a| a.content_source_missing().map(str::to_string)),
            sync_broken: actuator.as_ref().and_then(|a| {
                a.sync_broken().map(|t| {
                    format!(
                        "content sync failed the same way {} times: {}; fix it, then \
                         `systemctl reload burst-agent` or `sudo -u burst-agent burst-agent \
                         resume`; {}; last error: {}",
                        crate::actuator::brake::TRIP_AFTER,
                        t.cause,
                        match a.next_trial(now) {
                            None => "a trial launch is syncing".to_string(),
                            Some(n) => format!("next trial launch not before {n}"),
                        },
                        t.error
                    )
                })
            }),
            cap: Some(ledger.status(now)),
            last_decision: tick.last_decision.clone(),
            cooldowns,
            last_errors: tick.errors.clone(),
            aws_calls: self
                .aws
                .as_ref()
                .map(|a| {
                    a.stats()
                        .snapshot()
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), v))
                        .collect()
                })
                .unwrap_or_default(),
            metrics_queued: buf.len(),
            metrics_dropped: buf.dropped_total(),
            events: events.recent().cloned().collect(),
            scheduled,
            next_window,
            probes: self.probe_rx.borrow().clone(),
        };
        drop(buf);
        if let Err(e) = snap.write(&status::path_in(&self.state_dir)) {
            tracing::warn!("could not write the status snapshot: {e}");
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

pub fn phase_name(p: Phase) -> &'static str {
    match p {
        Phase::Pending => "pending",
        Phase::Syncing => "syncing",
        Phase::Synced => "synced",
        Phase::Registering => "registering",
        Phase::InService => "in_service",
        Phase::Releasing => "releasing",
        Phase::Draining => "draining",
        Phase::Terminating => "terminating",
        Phase::Stopping => "stopping",
        Phase::Stopped => "warm (stopped)",
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
