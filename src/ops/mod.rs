//! The operator's commands, beside the daemon: the one-off ones that need AWS (`repair`,
//! `alarms --apply`, `preflight`, `dashboard --apply`, `table create`, `takeover`), `resume`
//! (a file the running agent picks up), and `drill` (drill.rs). Each
//! opens what it needs (a one-off runtime, the AWS client, the state directory's lock) and
//! carries out what the core and the actuator decide. `repair` takes the state directory's
//! lock, opens the actuator and rebuilds. `lib.rs` re-exports `alarms`, `dashboard` and
//! `preflight` at the crate root, under the paths they always had.
//!
//! - [`alarms`]: puts burst-core's alarm plan; [`dashboard`]: puts its dashboard body;
//! - [`preflight`]: this host's and the account's checks before the first burst;
//! - `drill.rs`: one slave through its whole life, each phase timed;
//! - [`fleet`]: every site of the ledger table at a glance, and the month's guarantee report
//!   (`fleet_plot`: its heat map).

pub mod alarms;
pub mod dashboard;
mod drill;
pub mod fleet;
pub mod fleet_plot;
pub mod preflight;

pub use drill::{drill, Drill};

use crate::actuator::cloud::AwsCloud;
use crate::actuator::Actuator;
use crate::aws::Aws;
use crate::config::Config;
use crate::daemon::{connect, identity, lock, prepare_state_dir, DaemonError};
use jiff::Timestamp;
use std::path::PathBuf;

/// Runs `f` on a one-off runtime with the AWS client of `cfg` (an operator's command: never a
/// dry run, so AWS must be reachable).
pub(crate) fn with_aws<T, F, Fut>(cfg: Config, what: &str, f: F) -> Result<T, DaemonError>
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

/// `burst-agent repair`: with the agent stopped (it takes the state directory's lock), rebuilds
/// the cap ledger from the state, the journal and the instances' tags, counts at least
/// `used_today` today, and clears a block that waits for an operator. Returns what it did.
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

/// `burst-agent table create NAME`: the account's ledger table. `Ok(false)`: it was there.
pub fn create_table(cfg: Config, name: &str) -> Result<bool, DaemonError> {
    let name = name.to_string();
    with_aws(cfg, "table create", |_, aws| async move {
        crate::table::Table::create(&aws, &name)
            .await
            .map_err(|e| DaemonError::Start(e.to_string()))
    })
}

/// `burst-agent takeover [--yes]`: says who holds the site's lease and, with `yes`, leaves the
/// request the running agent (or its next start) acts on: it takes the lease at once, whether
/// or not the old holder's lease lapsed and whether or not this host serves from the ELB.
pub fn takeover(cfg: Config, yes: bool) -> Result<Vec<String>, DaemonError> {
    if cfg.ledger.table.is_empty() {
        return Err(DaemonError::Start(
            "ledger.table is not set: without the shared table there is no lease to take".into(),
        ));
    }
    let dir = cfg.agent.state_dir.clone();
    with_aws(cfg, "takeover", move |cfg, aws| async move {
        let table = crate::table::Table::new(aws, &cfg.ledger.table, &cfg.agent.group);
        let lease = table
            .read_lease()
            .await
            .map_err(|e| DaemonError::Start(e.to_string()))?;
        let mut out = vec![match &lease {
            Some(l) if l.released => format!(
                "the lease on site {} was given up by {} on a clean stop at {} by its clock \
                 (version {}): its host's next start or a host in the site's ELB takes it",
                cfg.agent.group, l.holder, l.renewed_at, l.version
            ),
            Some(l) => format!(
                "the lease on site {} is held by {} (version {}, last renewed {} by its clock)",
                cfg.agent.group, l.holder, l.version, l.renewed_at
            ),
            None => format!("nobody holds the lease on site {}", cfg.agent.group),
        }];
        if !yes {
            out.push(
                "with --yes, this host's agent takes the lease at once and acts for the site; \
                 if the holder above is still running, it stops changing the fleet at its next \
                 renewal. Use it only when you know the old master is gone."
                    .into(),
            );
            return Ok(out);
        }
        let path = dir.join(crate::daemon::lease::TAKEOVER_FILE);
        crate::fsutil::Disk::write_atomic(&crate::fsutil::RealDisk, &path, b"takeover\n")
            .map_err(|e| DaemonError::Start(format!("{}: {e}", path.display())))?;
        out.push(format!(
            "asked this host's agent to take the lease ({}); its lease task does within \
             seconds, and `burst-agent status` shows it{}",
            path.display(),
            lease.map_or(String::new(), |l| format!(", displacing {}", l.holder))
        ));
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
