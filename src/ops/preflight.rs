//! `burst-agent preflight`: read-only checks of a config against this host and the real
//! account, before the first burst finds what the dry run cannot (issue 21). The dry run never
//! sends the launch spec and never runs a hook, so a placeholder AMI, subnet, security group or
//! instance profile, and a slave image without the master's key, were first tried with the site
//! already on fire.
//!
//! Each check passes, fails (naming its key and the fix), warns (a setting that works but
//! will cost lead time) or is skipped saying why; any failure makes the command exit 1. The
//! checks call nothing that changes the account except one `Preflight` datapoint in
//! `NAMESPACE/Agent` (proof that CloudWatch takes the agent's writes).
//!
//! - this host: every hook's program, the ssh key the sync hooks use (there, readable by this
//!   user, not readable by others: ssh refuses such a key), each content source, Apache's
//!   pidfile and mod_status; on a reporter, that it is not in dry run and has a region;
//! - the account (a master): the AMI or launch template, each subnet, each security group in
//!   the subnets' VPC, the key pair, `RunInstances` with `DryRun` for the exact launch spec in
//!   every subnet and every instance type (AWS checks AMI, type, subnet, groups, profile, key
//!   and IAM together), the ELB and the zones it serves, its health check against the lead
//!   time, the SNS topics, CloudWatch write and read; a reporter reads its own datapoint back.

use crate::actuator::cloud::{AwsCloud, LaunchRequest};
use crate::aws::Aws;
use crate::config::{Config, Hook, Role};
use aws_sdk_ec2::error::ProvideErrorMetadata;
use serde::Serialize;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Pass,
    Warn,
    Fail,
    Skip,
}

/// One check: the config key it is about, what was found, and for a failure what to do.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Check {
    pub key: String,
    pub outcome: Outcome,
    pub what: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Report {
    pub checks: Vec<Check>,
}

impl Report {
    fn add(&mut self, key: &str, outcome: Outcome, what: String, fix: Option<String>) {
        self.checks.push(Check {
            key: key.to_string(),
            outcome,
            what,
            fix,
        });
    }
    fn pass(&mut self, key: &str, what: impl Into<String>) {
        self.add(key, Outcome::Pass, what.into(), None);
    }
    fn fail(&mut self, key: &str, what: impl Into<String>, fix: impl Into<String>) {
        self.add(key, Outcome::Fail, what.into(), Some(fix.into()));
    }
    fn warn(&mut self, key: &str, what: impl Into<String>, fix: impl Into<String>) {
        self.add(key, Outcome::Warn, what.into(), Some(fix.into()));
    }
    fn skip(&mut self, key: &str, what: impl Into<String>) {
        self.add(key, Outcome::Skip, what.into(), None);
    }

    pub fn failed(&self) -> bool {
        self.checks.iter().any(|c| c.outcome == Outcome::Fail)
    }

    /// One line per check (`PASS key: what`), the fix indented under a failure or a warning,
    /// and a last line that counts them.
    pub fn render(&self) -> String {
        let mut o = String::new();
        for c in &self.checks {
            let tag = match c.outcome {
                Outcome::Pass => "PASS",
                Outcome::Warn => "WARN",
                Outcome::Fail => "FAIL",
                Outcome::Skip => "SKIP",
            };
            let _ = writeln!(o, "{tag}  {}: {}", c.key, crate::text::printable(&c.what));
            if let Some(f) = &c.fix {
                let _ = writeln!(o, "      fix: {}", crate::text::printable(f));
            }
        }
        let n = |k: Outcome| self.checks.iter().filter(|c| c.outcome == k).count();
        let _ = writeln!(
            o,
            "preflight: {} passed, {} failed, {} warned, {} skipped",
            n(Outcome::Pass),
            n(Outcome::Fail),
            n(Outcome::Warn),
            n(Outcome::Skip)
        );
        o
    }
}

/// The hooks a config runs, by key (`content_sync` only where it is set: unset, it is
/// `pre_register`'s).
fn hooks_of(cfg: &Config) -> Vec<(&'static str, &Hook)> {
    let h = &cfg.hooks;
    let mut out = vec![("hooks.pre_register", &h.pre_register)];
    if let Some(x) = &h.content_sync {
        out.push(("hooks.content_sync", x));
    }
    for (k, x) in [
        ("hooks.content_check", &h.content_check),
        ("hooks.pre_deregister", &h.pre_deregister),
        ("hooks.post_terminate", &h.post_terminate),
        ("hooks.on_event", &h.on_event),
        ("hooks.on_bridge", &h.on_bridge),
    ] {
        if let Some(x) = x {
            out.push((k, x));
        }
    }
    out
}

/// Where `prog` is found the way the hook runner finds it: a path as it is, a bare name in
/// `path` (the agent's PATH, which the hooks get).
pub fn find_program(prog: &str, path: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let runnable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if prog.contains('/') {
        let p = PathBuf::from(prog);
        return runnable(&p).then_some(p);
    }
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(prog))
        .find(|p| runnable(p))
}

/// The ssh identity files (`-i FILE`) a hook's argv names, inside an `-e "ssh ..."` or as ssh's
/// own arguments, with `{state_dir}` filled in.
pub fn ssh_keys(hook: &Hook, state_dir: &Path) -> Vec<PathBuf> {
    let sd = state_dir.display().to_string();
    let words: Vec<String> = hook
        .argv
        .iter()
        .flat_map(|a| a.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .collect();
    let mut out = Vec::new();
    for w in words.windows(2) {
        if w[0] == "-i" {
            let p = PathBuf::from(w[1].replace("{state_dir}", &sd));
            if !out.contains(&p) {
                out.push(p);
            }
        }
    }
    out
}

/// Whether this user can use `key` as ssh would: it exists, this user can read it, and nobody
/// else can (ssh refuses a private key others may read: "UNPROTECTED PRIVATE KEY FILE").
pub fn key_problem(key: &Path) -> Option<(String, String)> {
    use std::os::unix::fs::PermissionsExt;
    let k = key.display();
    let meta = match std::fs::metadata(key) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // ssh-keygen makes no directory: under a state_dir of one's own, .ssh/ is not there.
            let mkdir = key
                .parent()
                .filter(|d| !d.as_os_str().is_empty() && !d.exists())
                .map(|d| format!("sudo -u burst-agent mkdir -p -m 0700 {} && ", d.display()))
                .unwrap_or_default();
            return Some((
                format!("the ssh key {k} does not exist"),
                format!(
                    "{mkdir}sudo -u burst-agent ssh-keygen -t ed25519 -N '' -f {k}, then put \
                     {k}.pub in the slave image's ~burst-agent/.ssh/authorized_keys"
                ),
            ));
        }
        Err(e) => {
            return Some((
                format!("the ssh key {k} cannot be reached ({e})"),
                format!("chown burst-agent: {k} && chmod 600 {k}"),
            ))
        }
    };
    if let Err(e) = std::fs::File::open(key) {
        return Some((
            format!("this user cannot read the ssh key {k} ({e})"),
            format!("chown burst-agent: {k} && chmod 600 {k}"),
        ));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Some((
            format!("the ssh key {k} is mode {mode:o}: ssh refuses a private key others may read"),
            format!("chmod 600 {k}"),
        ));
    }
    None
}

/// The checks of this host: hooks, the ssh key, the content sources, Apache; a reporter's
/// settings.
pub fn local(cfg: &Config) -> Report {
    let mut r = Report::default();
    let master = cfg.agent.role == Role::Master;
    if master {
        check_hook_programs(cfg, &mut r);
        check_ssh_keys(cfg, &mut r);
        check_content_sources(cfg, &mut r);
    } else {
        check_reporter_publishes(cfg, &mut r);
        check_reporter_region(cfg, &mut r);
    }
    check_apache_pidfile(cfg, &mut r);
    check_mod_status(cfg, &mut r);
    r
}

/// Each hook's program is an executable file here (one filled in per slave is skipped).
fn check_hook_programs(cfg: &Config, r: &mut Report) {
    let path = std::env::var("PATH").unwrap_or_default();
    for (key, hook) in hooks_of(cfg) {
        let Some(prog) = hook.argv.first() else {
            continue;
        };
        if prog.contains('{') {
            r.skip(
                &format!("{key}.argv"),
                format!("{prog} is filled in per slave"),
            );
            continue;
        }
        match find_program(prog, &path) {
            Some(p) => r.pass(&format!("{key}.argv"), format!("{prog} is {}", p.display())),
            None => r.fail(
                &format!("{key}.argv"),
                format!("{prog} is not an executable file here (PATH {path})"),
                format!(
                    "install it (rsync: apt-get install rsync) or give its full path in {key}.argv"
                ),
            ),
        }
    }
}

/// Each ssh key the sync hooks use is there and readable by this user only.
fn check_ssh_keys(cfg: &Config, r: &mut Report) {
    let mut keys: Vec<(&str, PathBuf)> = Vec::new();
    for (key, hook) in [
        ("hooks.pre_register", &cfg.hooks.pre_register),
        ("hooks.content_sync", cfg.hooks.content_sync()),
    ] {
        for k in ssh_keys(hook, &cfg.agent.state_dir) {
            if !keys.iter().any(|(_, p)| p == &k) {
                keys.push((key, k));
            }
        }
    }
    for (key, k) in keys {
        match key_problem(&k) {
            None => r.pass(
                &format!("{key}.argv"),
                format!("the ssh key {} is readable by this user only", k.display()),
            ),
            Some((what, fix)) => r.fail(&format!("{key}.argv"), what, fix),
        }
    }
}

/// Each content source the sync hooks read holds the site.
fn check_content_sources(cfg: &Config, r: &mut Report) {
    let h = &cfg.hooks;
    let src_key = |hook_key: &str| {
        if h.content_source.is_some() {
            "hooks.content_source".to_string()
        } else {
            format!("{hook_key}.argv")
        }
    };
    let mut seen = Vec::new();
    // A source on a hung mount fails its check instead of hanging preflight.
    let mut calls = burst_edge::stall::OffThread::default();
    for (key, hook) in [
        ("hooks.pre_register", &h.pre_register),
        ("hooks.content_sync", h.content_sync()),
    ] {
        match h.source_of(hook) {
            Some(p) if seen.contains(&p) => {}
            Some(p) => {
                let (d, sentinel) = (p.clone(), h.content_sentinel.clone());
                let checked = calls
                    .run(
                        &format!("the check of content source {}", p.display()),
                        crate::actuator::SOURCE_CHECK_TIMEOUT,
                        move || crate::hooks::check_source(&d, sentinel.as_deref()),
                    )
                    .and_then(|r| r);
                match checked {
                    Ok(()) => r.pass(
                        &src_key(key),
                        format!("the content source {} holds the site", p.display()),
                    ),
                    Err(why) => r.fail(
                        &src_key(key),
                        why,
                        "mount the content's volume or restore the document root, or point \
                         the hook (or hooks.content_source) at the tree that holds the site",
                    ),
                }
                seen.push(p);
            }
            None => r.skip(
                &src_key(key),
                "the content source cannot be read from this hook's argv: set \
                 hooks.content_source to have it checked",
            ),
        }
    }
}

/// A reporter is not in dry run.
fn check_reporter_publishes(cfg: &Config, r: &mut Report) {
    if cfg.agent.dry_run {
        r.fail(
            "agent.dry_run",
            "a reporter in dry run launches nothing anyway, and with no region found it \
             publishes nothing: the master then counts this slave at target and never scales \
             in for it",
            "set agent.dry_run = false (agent.reporter.toml.example)",
        );
    } else {
        r.pass("agent.dry_run", "false: this reporter publishes");
    }
}

/// A reporter has a region.
fn check_reporter_region(cfg: &Config, r: &mut Report) {
    if cfg.aws.region.is_empty() && std::env::var_os("AWS_REGION").is_none() {
        r.fail(
            "aws.region",
            "no region set: the samples go wherever the SDK's chain points, not necessarily \
             where the master reads",
            "set aws.region to the master's region",
        );
    } else {
        r.pass("aws.region", "set");
    }
}

/// Apache's pidfile names a running Apache.
fn check_apache_pidfile(cfg: &Config, r: &mut Report) {
    let s = &cfg.sampling;
    if !s.apache_pidfile.as_os_str().is_empty() {
        let k = s.apache_pidfile.display();
        match std::fs::read_to_string(&s.apache_pidfile)
            .map_err(|e| e.to_string())
            .and_then(|t| {
                crate::sampler::procfs::parse_pidfile(&t).map_err(|e| e.to_string())
            }) {
            Ok(pid) if Path::new(&format!("/proc/{pid}")).exists() => {
                r.pass("sampling.apache_pidfile", format!("{k}: Apache runs as pid {pid}"))
            }
            Ok(pid) => r.fail(
                "sampling.apache_pidfile",
                format!("{k} names pid {pid}, which is not running"),
                "start Apache (systemctl start apache2), or set sampling.apache_pidfile",
            ),
            Err(e) => r.fail(
                "sampling.apache_pidfile",
                format!("{k}: {e}"),
                "start Apache (systemctl start apache2), or set sampling.apache_pidfile to its pidfile",
            ),
        }
    }
}

/// mod_status answers with its workers.
fn check_mod_status(cfg: &Config, r: &mut Report) {
    let s = &cfg.sampling;
    if !s.mod_status_url.is_empty() {
        let c = crate::sampler::modstatus::ModStatusClient::new(
            &s.mod_status_url,
            s.mod_status_timeout.get(),
        );
        match c.fetch() {
            Ok(m) => r.pass(
                "sampling.mod_status_url",
                format!(
                    "{}: {} busy, {} idle workers",
                    s.mod_status_url, m.busy_workers, m.idle_workers
                ),
            ),
            Err(e) => r.fail(
                "sampling.mod_status_url",
                e.to_string(),
                "enable mod_status for 127.0.0.1 (a2enmod status; `Require local` on \
                 /server-status), or set sampling.mod_status_url = \"\" to count processes",
            ),
        }
    }
}

/// An SDK error as `CODE: message` (or the transport's story).
fn said<E, R>(e: &aws_smithy_runtime_api::client::result::SdkError<E, R>) -> (String, String)
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let code = e.code().unwrap_or("").to_string();
    let msg = match e.message() {
        Some(m) => m.to_string(),
        None => aws_smithy_types::error::display::DisplayErrorContext(e).to_string(),
    };
    (code, msg)
}

/// Bounds one call by the config's `aws.call_timeout`.
async fn bounded<T>(
    cfg: &Config,
    fut: impl std::future::Future<Output = T>,
) -> Result<T, (String, String)> {
    let d: Duration = cfg.aws.call_timeout.get();
    tokio::time::timeout(d, fut).await.map_err(|_| {
        (
            "Timeout".to_string(),
            format!("no answer within {}", cfg.aws.call_timeout),
        )
    })
}

macro_rules! call {
    ($cfg:expr, $fut:expr) => {
        match bounded($cfg, $fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(said(&e)),
            Err(t) => Err(t),
        }
    };
}

/// The checks of the account, added to `r`.
pub async fn account(cfg: &Config, aws: &Aws, r: &mut Report) {
    if !check_credentials(cfg, aws, r).await {
        return;
    }
    if cfg.agent.role == Role::Reporter {
        reporter_readback(cfg, aws, r).await;
        return;
    }
    // The image: a launch template, or an AMI.
    if let Some(lt) = &cfg.fleet.launch_template {
        check_launch_template(cfg, aws, lt, r).await;
    } else {
        check_ami(cfg, aws, r).await;
    }

    let subnets = check_subnets(cfg, aws, r).await;
    check_security_groups(cfg, aws, &subnets, r).await;
    check_key_pair(cfg, aws, r).await;

    check_dry_run_launches(cfg, aws, r).await;
    check_own_instance(cfg, r).await;
    r.skip(
        "IAM",
        "StopInstances, StartInstances, TerminateInstances and CreateTags are allowed only on \
         this install's own slaves (docs/aws.md's conditions), so they cannot be tried before one \
         runs: `burst-agent drill --yes` makes them with one slave",
    );

    ledger(cfg, aws, r).await;
    elb(cfg, aws, &subnets, r).await;
    topics(cfg, aws, r).await;
    cloudwatch(cfg, aws, r).await;
}

/// The master's own EC2 instance id: the agent never takes that instance for a slave, whatever
/// its tags say, and a lease held from this host is known as its own. Off EC2 (or with an
/// emulator) only `agent.instance_id` can say it.
async fn check_own_instance(cfg: &Config, r: &mut Report) {
    match crate::daemon::identity(cfg, true).await {
        (_, Some(id)) => r.pass("agent.instance_id", format!("this master is instance {id}")),
        (name, None) => r.warn(
            "agent.instance_id",
            format!(
                "this master's own EC2 instance id is unknown (no instance metadata here; its \
                 metrics go out as InstanceId={name}): the guard that never takes the master's \
                 own instance for a slave has no id to compare with"
            ),
            "run preflight on the master's instance, or set agent.instance_id = \"i-...\" (the \
             master's id)",
        ),
    }
}

/// The credentials: without them every check below fails the same way, each with the SDK's
/// whole provider chain: say it once, with its fix. Whether there are any.
async fn check_credentials(cfg: &Config, aws: &Aws, r: &mut Report) -> bool {
    if let Err(why) = aws.credentials().await {
        let fix = if cfg.agent.role == Role::Reporter {
            "run it on the slave, whose instance profile (the slaves' policy in docs/aws.md) gives \
             the credentials through instance metadata: check the launch spec's \
             fleet.instance_profile on the master, or give the service AWS_PROFILE or \
             AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (systemctl edit burst-agent)"
        } else {
            "run it on the master, whose instance profile (the master's policy in docs/aws.md) \
             gives the credentials through instance metadata, or give the service AWS_PROFILE or \
             AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (systemctl edit burst-agent)"
        };
        r.fail("aws", why, fix);
        r.skip(
            "aws",
            "the account's checks (image, subnets, security groups, RunInstances DryRun, ELB, \
             topics, CloudWatch) need credentials",
        );
        return false;
    }
    true
}

/// The launch template exists.
async fn check_launch_template(
    cfg: &Config,
    aws: &Aws,
    lt: &crate::config::LaunchTemplate,
    r: &mut Report,
) {
    let mut q = aws.ec2.describe_launch_templates();
    q = if lt.id.is_empty() {
        q.launch_template_names(&lt.name)
    } else {
        q.launch_template_ids(&lt.id)
    };
    let name = if lt.id.is_empty() { &lt.name } else { &lt.id };
    match call!(cfg, q.send()) {
        Ok(out) if !out.launch_templates().is_empty() => {
            r.pass("fleet.launch_template", format!("{name} exists"))
        }
        Ok(_) => r.fail(
            "fleet.launch_template",
            format!("no launch template {name} in this region"),
            "aws ec2 describe-launch-templates lists the ones there are",
        ),
        Err((code, msg)) => r.fail(
            "fleet.launch_template",
            format!("{name}: {code}: {msg}"),
            "aws ec2 describe-launch-templates lists the ones there are",
        ),
    }
}

/// The AMI exists and is available.
async fn check_ami(cfg: &Config, aws: &Aws, r: &mut Report) {
    let f = &cfg.fleet;
    let q = aws.ec2.describe_images().image_ids(&f.ami);
    let fix = "set fleet.ami to an AMI of this region this account may launch (aws ec2 \
               describe-images --owners self)";
    match call!(cfg, q.send()) {
        Ok(out) => match out.images().first() {
            Some(i) => {
                let state = i
                    .state()
                    .map(|s| s.as_str().to_string())
                    .unwrap_or_default();
                if state.is_empty() || state == "available" {
                    r.pass("fleet.ami", format!("{} exists", f.ami))
                } else {
                    r.fail(
                        "fleet.ami",
                        format!("{} is {state}, not available", f.ami),
                        fix,
                    )
                }
            }
            None => r.fail("fleet.ami", format!("{} does not exist here", f.ami), fix),
        },
        Err((code, msg)) => r.fail("fleet.ami", format!("{}: {code}: {msg}", f.ami), fix),
    }
}

/// Subnets: each exists; their VPCs and zones (id, VPC, zone) for what follows.
async fn check_subnets(cfg: &Config, aws: &Aws, r: &mut Report) -> Vec<(String, String, String)> {
    let mut subnets: Vec<(String, String, String)> = Vec::new();
    for id in &cfg.fleet.subnet_ids {
        let q = aws.ec2.describe_subnets().subnet_ids(id);
        match call!(cfg, q.send()) {
            Ok(out) => match out.subnets().first() {
                Some(s) => {
                    let vpc = s.vpc_id().unwrap_or("").to_string();
                    let az = s.availability_zone().unwrap_or("").to_string();
                    r.pass("fleet.subnet_ids", format!("{id} is in {vpc}, {az}"));
                    subnets.push((id.clone(), vpc, az));
                }
                None => r.fail(
                    "fleet.subnet_ids",
                    format!("{id} does not exist here"),
                    "aws ec2 describe-subnets lists the ones there are",
                ),
            },
            Err((code, msg)) => r.fail(
                "fleet.subnet_ids",
                format!("{id}: {code}: {msg}"),
                "aws ec2 describe-subnets lists the ones there are",
            ),
        }
    }
    subnets
}

/// Each security group exists, in the subnets' VPC.
async fn check_security_groups(
    cfg: &Config,
    aws: &Aws,
    subnets: &[(String, String, String)],
    r: &mut Report,
) {
    let vpcs: Vec<&str> = {
        let mut v: Vec<&str> = subnets.iter().map(|(_, vpc, _)| vpc.as_str()).collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    for id in &cfg.fleet.security_group_ids {
        let q = aws.ec2.describe_security_groups().group_ids(id);
        match call!(cfg, q.send()) {
            Ok(out) => match out.security_groups().first() {
                Some(g) => {
                    let vpc = g.vpc_id().unwrap_or("");
                    if vpcs.is_empty() || vpcs.contains(&vpc) {
                        r.pass("fleet.security_group_ids", format!("{id} is in {vpc}"));
                    } else {
                        r.fail(
                            "fleet.security_group_ids",
                            format!(
                                "{id} is in {vpc}, the subnets in {}: EC2 refuses the launch",
                                vpcs.join(", ")
                            ),
                            format!("use a security group of {}", vpcs.join(", ")),
                        );
                    }
                }
                None => r.fail(
                    "fleet.security_group_ids",
                    format!("{id} does not exist here"),
                    "aws ec2 describe-security-groups lists the ones there are",
                ),
            },
            Err((code, msg)) => r.fail(
                "fleet.security_group_ids",
                format!("{id}: {code}: {msg}"),
                "aws ec2 describe-security-groups lists the ones there are",
            ),
        }
    }
}

/// The key pair exists, when one is set.
async fn check_key_pair(cfg: &Config, aws: &Aws, r: &mut Report) {
    let f = &cfg.fleet;
    if !f.key_name.is_empty() {
        let q = aws.ec2.describe_key_pairs().key_names(&f.key_name);
        match call!(cfg, q.send()) {
            Ok(out) if !out.key_pairs().is_empty() => {
                r.pass("fleet.key_name", format!("{} exists", f.key_name))
            }
            Ok(_) => r.fail(
                "fleet.key_name",
                format!("no key pair {} here", f.key_name),
                "aws ec2 describe-key-pairs, or fleet.key_name = \"\"",
            ),
            Err((code, msg)) => r.fail(
                "fleet.key_name",
                format!("{}: {code}: {msg}", f.key_name),
                "aws ec2 describe-key-pairs, or fleet.key_name = \"\"",
            ),
        }
    }
}

/// The exact launch spec, with DryRun, in every subnet and for every instance type.
async fn check_dry_run_launches(cfg: &Config, aws: &Aws, r: &mut Report) {
    let f = &cfg.fleet;
    match AwsCloud::new(aws.clone(), &cfg.agent.group, &cfg.elb.name, f) {
        Err(e) => r.fail(
            "fleet.user_data_file",
            e.to_string(),
            "fix the file or the key",
        ),
        Ok(cloud) => {
            let mut types: Vec<Option<String>> = vec![None];
            types.extend(f.fallback_instance_types.iter().cloned().map(Some));
            let places: Vec<Option<String>> = if f.subnet_ids.is_empty() {
                vec![None]
            } else {
                f.subnet_ids.iter().cloned().map(Some).collect()
            };
            for subnet in &places {
                for ty in &types {
                    check_dry_run(cfg, &cloud, subnet, ty, r).await;
                }
            }
        }
    }
}

/// One RunInstances with DryRun: in `subnet` (EC2's choice if none) as `ty` (the fleet's type if
/// none).
async fn check_dry_run(
    cfg: &Config,
    cloud: &AwsCloud,
    subnet: &Option<String>,
    ty: &Option<String>,
    r: &mut Report,
) {
    let f = &cfg.fleet;
    let req = LaunchRequest {
        intent: "bi-preflight0000".into(),
        owner: cfg.elb.name.clone(),
        client_token: format!("preflight-{}", jiff::Timestamp::now().as_second()),
        min: 1,
        max: 1,
        launched_at: jiff::Timestamp::now(),
        subnet: subnet.clone(),
        instance_type: ty.clone(),
    };
    let shown = format!(
        "RunInstances (DryRun) in {} as {}",
        subnet.as_deref().unwrap_or("EC2's choice of subnet"),
        ty.as_deref().unwrap_or(if f.launch_template.is_some() {
            "the template's type"
        } else {
            &f.instance_type
        })
    );
    let q = cloud.run_instances(&req).dry_run(true);
    match call!(cfg, q.send()) {
        Err((code, _)) if code == "DryRunOperation" => {
            r.pass("fleet", format!("{shown}: EC2 would launch it"))
        }
        Ok(_) => r.fail(
            "fleet",
            format!("{shown}: EC2 launched although DryRun was set"),
            "terminate what it launched; report this",
        ),
        Err((code, msg)) => {
            let (key, fix) = launch_fix(&code, &msg);
            r.fail(key, format!("{shown}: {code}: {msg}"), fix)
        }
    }
}

/// The key of every check of the guarantee's table.
const LEDGER_KEY: &str = "ledger.table";

/// The guarantee's table: there, shaped as the agent writes it, this site's items readable and
/// writable (a transaction whose condition cannot hold, so nothing changes), and who holds the
/// lease.
async fn ledger(cfg: &Config, aws: &Aws, r: &mut Report) {
    let name = &cfg.ledger.table;
    if name.is_empty() {
        r.skip(
            LEDGER_KEY,
            "no table: the day's units live on this disk only, which only a dry run may do",
        );
        return;
    }
    let table = crate::table::Table::new(aws.clone(), name, &cfg.agent.group);
    if !check_ledger_shape(cfg, &table, r).await {
        return;
    }
    let policy = format!(
        "the master's policy allows dynamodb:GetItem, PutItem, UpdateItem, DeleteItem, \
         ConditionCheckItem and Query on {name} for the leading key \"{}\" (docs/aws.md)",
        cfg.agent.group
    );
    check_ledger_read(cfg, &table, &policy, r).await;
    check_ledger_write(cfg, &table, policy, r).await;
    check_ledger_other_site(cfg, aws, r).await;
}

/// The table is there and is the agent's (ACTIVE, keys site and item). Whether the checks of
/// its items may go on.
async fn check_ledger_shape(cfg: &Config, table: &crate::table::Table, r: &mut Report) -> bool {
    let name = &cfg.ledger.table;
    let create = format!(
        "as an operator (not the master's role): burst-agent table create {name}; then the \
         master's policy's ledger statements (docs/aws.md) on it"
    );
    match bounded(cfg, table.shape_problem()).await {
        Ok(Ok(None)) => {
            r.pass(
                LEDGER_KEY,
                format!("the table {name} is ACTIVE with keys site and item"),
            );
            true
        }
        Ok(Ok(Some(p))) => {
            r.fail(
                LEDGER_KEY,
                format!("the table {name} is not the agent's: {p}"),
                format!(
                    "name a table made by `burst-agent table create` (it makes its own: {create})"
                ),
            );
            false
        }
        Ok(Err(e)) => {
            let fix = if e.is("ResourceNotFoundException") {
                create
            } else {
                "the master's policy needs dynamodb:DescribeTable on the table (docs/aws.md)"
                    .to_string()
            };
            r.fail(
                LEDGER_KEY,
                format!("{name}: {}: {}", e.code, e.message),
                fix,
            );
            false
        }
        Err((code, msg)) => {
            r.fail(
                LEDGER_KEY,
                format!("{name}: {code}: {msg}"),
                "check the network path to DynamoDB",
            );
            false
        }
    }
}

/// This site's items read back: who holds the lease, the units spent last.
async fn check_ledger_read(
    cfg: &Config,
    table: &crate::table::Table,
    policy: &str,
    r: &mut Report,
) {
    let now = jiff::Timestamp::now().as_second();
    match bounded(cfg, table.read_site(now)).await {
        Ok(Ok(site)) => {
            let lease = match &site.lease {
                Some(l) if l.released => format!(
                    "the lease was given up by {} on a clean stop (version {}, {} by its clock)",
                    l.holder, l.version, l.renewed_at
                ),
                Some(l) => format!(
                    "the lease is held by {} (version {}, renewed {} by its clock)",
                    l.holder, l.version, l.renewed_at
                ),
                None => "nobody holds the lease yet".to_string(),
            };
            let days = site
                .days
                .iter()
                .next_back()
                .map_or("no unit spent yet".to_string(), |(d, u)| {
                    format!("{u} unit(s) spent on {d}")
                });
            r.pass(
                LEDGER_KEY,
                format!("site {} reads back: {lease}; {days}", cfg.agent.group),
            )
        }
        Ok(Err(e)) if e.code == "BadItem" => r.fail(
            LEDGER_KEY,
            e.message,
            "the item was not written by this agent: restore it from the table's point-in-time \
             recovery, or delete it if it is not the guarantee's",
        ),
        Ok(Err(e)) => r.fail(
            LEDGER_KEY,
            format!("Query: {}: {}", e.code, e.message),
            policy,
        ),
        Err((code, msg)) => r.fail(LEDGER_KEY, format!("Query: {code}: {msg}"), policy),
    }
}

/// A conditional write of this site's items is weighed (its condition cannot hold: nothing
/// changes).
async fn check_ledger_write(
    cfg: &Config,
    table: &crate::table::Table,
    policy: String,
    r: &mut Report,
) {
    match bounded(cfg, table.probe_writes()).await {
        Ok(Ok(())) => r.pass(
            LEDGER_KEY,
            "a conditional write of this site's items is weighed (a transaction whose condition \
             cannot hold: nothing changed)",
        ),
        Ok(Err(e)) => r.fail(
            LEDGER_KEY,
            format!("TransactWriteItems: {}: {}", e.code, e.message),
            policy,
        ),
        Err((code, msg)) => r.fail(
            LEDGER_KEY,
            format!("TransactWriteItems: {code}: {msg}"),
            policy,
        ),
    }
}

/// Each master may write its own site's items only: the same probe on another site's
/// partition must be refused by IAM (dynamodb:LeadingKeys).
async fn check_ledger_other_site(cfg: &Config, aws: &Aws, r: &mut Report) {
    if !cfg.aws.endpoint_url.is_empty() {
        r.skip(
            LEDGER_KEY,
            "another site's items: not probed against aws.endpoint_url (an emulator such as \
             moto does not enforce dynamodb:LeadingKeys); on AWS the probe expects AccessDenied",
        );
        return;
    }
    let name = &cfg.ledger.table;
    let other = format!("{}.preflight-probe", cfg.agent.group);
    let stranger = crate::table::Table::new(aws.clone(), name, &other);
    let leading = format!(
        "the master's policy's ledger statements carry the condition \
         ForAllValues:StringEquals dynamodb:LeadingKeys [\"{}\"] (docs/aws.md), so a copy of \
         one site's master cannot spend another's guarantee",
        cfg.agent.group
    );
    match bounded(cfg, stranger.probe_writes()).await {
        Ok(Err(e)) if e.code == "AccessDeniedException" => r.pass(
            LEDGER_KEY,
            format!("a write to another site's items ({other}) is denied, as it must be"),
        ),
        Ok(Ok(())) => r.fail(
            LEDGER_KEY,
            format!("a write to another site's items ({other}) was allowed"),
            leading,
        ),
        Ok(Err(e)) => r.fail(
            LEDGER_KEY,
            format!(
                "a write to another site's items ({other}): {}: {}, not AccessDenied",
                e.code, e.message
            ),
            leading,
        ),
        Err((code, msg)) => r.fail(
            LEDGER_KEY,
            format!("the probe of another site: {code}: {msg}"),
            leading,
        ),
    }
}

/// Which key a refused dry run points at, and the fix.
fn launch_fix(code: &str, msg: &str) -> (&'static str, String) {
    let m = msg.to_ascii_lowercase();
    if code == "UnauthorizedOperation" {
        return (
            "fleet",
            "the master's IAM policy does not allow this launch: docs/aws.md, \"Minimal IAM policy \
             for the master\" (RunInstances on this AMI or template, type, subnets and tags, and \
             iam:PassRole for the slaves' role)"
                .into(),
        );
    }
    if m.contains("instance profile") || code == "NoSuchEntity" {
        return (
            "fleet.instance_profile",
            "create the slaves' instance profile (docs/aws.md, \"IAM policy for the slaves\") or set \
             fleet.instance_profile to one that exists"
                .into(),
        );
    }
    if code.starts_with("InvalidGroup") || m.contains("security group") {
        return (
            "fleet.security_group_ids",
            "use security groups of the subnets' VPC".into(),
        );
    }
    if code.starts_with("InvalidAMIID") {
        return ("fleet.ami", "set fleet.ami to an AMI of this region".into());
    }
    if code.starts_with("InvalidSubnetID") {
        return ("fleet.subnet_ids", "aws ec2 describe-subnets".into());
    }
    if code.starts_with("InvalidKeyPair") {
        return ("fleet.key_name", "aws ec2 describe-key-pairs".into());
    }
    if code == "Unsupported" || code == "InvalidParameterValue" && m.contains("instance type") {
        return (
            "fleet.instance_type",
            "pick a type this zone offers (aws ec2 describe-instance-type-offerings)".into(),
        );
    }
    ("fleet", "EC2's message names what it refused".into())
}

async fn elb(cfg: &Config, aws: &Aws, subnets: &[(String, String, String)], r: &mut Report) {
    let name = &cfg.elb.name;
    let q = aws.elb.describe_load_balancers().load_balancer_names(name);
    let lb = match call!(cfg, q.send()) {
        Ok(out) => out.load_balancer_descriptions().first().cloned(),
        Err((code, _)) if code == "LoadBalancerNotFound" => None,
        Err((code, msg)) => {
            r.fail(
                "elb.name",
                format!("{name}: {code}: {msg}"),
                "the master's policy needs elasticloadbalancing:DescribeLoadBalancers",
            );
            return;
        }
    };
    let Some(lb) = lb else {
        r.fail(
            "elb.name",
            format!("no classic load balancer {name} in this region"),
            "aws elb describe-load-balancers lists the classic ones (an ALB or NLB is not one)",
        );
        return;
    };
    r.pass("elb.name", format!("{name} exists"));
    let zones: Vec<&str> = lb.availability_zones().iter().map(String::as_str).collect();
    if zones.is_empty() && !subnets.is_empty() {
        r.skip(
            "fleet.subnet_ids",
            format!(
                "{name} lists no availability zones, so which of fleet.subnet_ids it serves \
                 cannot be read here (`burst-agent drill --yes` shows a slave going InService)"
            ),
        );
        return;
    }
    for (id, _, az) in subnets {
        if zones.contains(&az.as_str()) {
            r.pass(
                "fleet.subnet_ids",
                format!("{id} ({az}) is served by {name}"),
            );
        } else {
            r.fail(
                "fleet.subnet_ids",
                format!(
                    "{id} is in {az}, which {name} does not serve ({}): a slave there would never \
                     be InService",
                    zones.join(", ")
                ),
                format!(
                    "attach the ELB to a subnet of {az} (aws elb attach-load-balancer-to-subnets) \
                     or drop {id} from fleet.subnet_ids"
                ),
            );
        }
    }
    if let Some(hc) = lb.health_check() {
        let secs = i64::from(hc.interval()) * i64::from(hc.healthy_threshold());
        let lead = cfg.policy.forecast.lead_time.whole_secs();
        let what = format!(
            "the health check calls a new slave InService after about {secs} s (interval {} s \
             × healthy threshold {})",
            hc.interval(),
            hc.healthy_threshold()
        );
        if secs > lead {
            r.warn(
                "policy.forecast.lead_time",
                format!("{what}, more than the lead time of {lead} s"),
                "raise policy.forecast.lead_time, or shorten the ELB's interval or healthy \
                 threshold",
            );
        } else {
            r.pass(
                "policy.forecast.lead_time",
                format!("{what}, within the lead time of {lead} s"),
            );
        }
    }
}

async fn topics(cfg: &Config, aws: &Aws, r: &mut Report) {
    let mut arns: Vec<(&str, &str)> = Vec::new();
    if !cfg.events.topic_arn.is_empty() {
        arns.push(("events.topic_arn", &cfg.events.topic_arn));
    }
    for a in &cfg.alarms.alarm_actions {
        arns.push(("alarms.alarm_actions", a));
    }
    for a in &cfg.alarms.ok_actions {
        arns.push(("alarms.ok_actions", a));
    }
    for (key, arn) in arns {
        if !arn.starts_with("arn:aws:sns:") {
            r.skip(key, format!("{arn} is not an SNS topic"));
            continue;
        }
        let q = aws.sns.get_topic_attributes().topic_arn(arn);
        match call!(cfg, q.send()) {
            Ok(_) => r.pass(key, format!("the topic {arn} exists")),
            Err((code, msg)) => r.fail(
                key,
                format!("{arn}: {code}: {msg}"),
                "aws sns list-topics; the master's policy needs sns:Publish on it",
            ),
        }
    }
}

async fn cloudwatch(cfg: &Config, aws: &Aws, r: &mut Report) {
    use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit};
    let site = cfg.metrics.namespace_for(&cfg.agent.group);
    let ns = crate::metrics::agent_namespace(&site);
    let group = Dimension::builder()
        .name("Group")
        .value(&cfg.agent.group)
        .build();
    let d = MetricDatum::builder()
        .metric_name("Preflight")
        .dimensions(group.clone())
        .value(1.0)
        .unit(StandardUnit::Count)
        .build();
    let q = aws
        .cloudwatch
        .put_metric_data()
        .namespace(&ns)
        .metric_data(d);
    match call!(cfg, q.send()) {
        Ok(_) => r.pass(
            "metrics.namespace",
            format!("PutMetricData into {ns} went through"),
        ),
        Err((code, msg)) => r.fail(
            "metrics.namespace",
            format!("PutMetricData into {ns}: {code}: {msg}"),
            format!(
                "the master's policy allows cloudwatch:PutMetricData with the condition \
                 cloudwatch:namespace in [\"{site}\", \"{ns}\"] (docs/aws.md)"
            ),
        ),
    }
    let now = jiff::Timestamp::now().as_second();
    let q = aws
        .cloudwatch
        .get_metric_data()
        .start_time(aws_smithy_types::DateTime::from_secs(now - 600))
        .end_time(aws_smithy_types::DateTime::from_secs(now))
        .metric_data_queries(stat_query("hb", &ns, "Heartbeat", vec![group]));
    match call!(cfg, q.send()) {
        Ok(_) => r.pass(
            "metrics.namespace",
            format!("GetMetricData from {ns} went through"),
        ),
        Err((code, msg)) => r.fail(
            "metrics.namespace",
            format!("GetMetricData: {code}: {msg}"),
            "the master's policy needs cloudwatch:GetMetricData",
        ),
    }
}

/// One metric's Maximum a minute, by the fleet read-back's own query builder.
fn stat_query(
    id: &str,
    ns: &str,
    metric: &str,
    dims: Vec<aws_sdk_cloudwatch::types::Dimension>,
) -> aws_sdk_cloudwatch::types::MetricDataQuery {
    let m = aws_sdk_cloudwatch::types::Metric::builder()
        .namespace(ns)
        .metric_name(metric)
        .set_dimensions(Some(dims))
        .build();
    crate::metrics::cloudwatch::stat_query(id, m, 60, "Maximum")
}

/// A reporter: its own newest datapoint, read back the way the master reads it.
async fn reporter_readback(cfg: &Config, aws: &Aws, r: &mut Report) {
    use aws_sdk_cloudwatch::types::Dimension;
    let ns = cfg.metrics.namespace_for(&cfg.agent.group);
    let id = &cfg.agent.instance_id;
    if id.is_empty() {
        r.skip(
            "agent.instance_id",
            "this host's id comes from the instance metadata when the agent runs; set \
             agent.instance_id to have its datapoints read back here",
        );
        return;
    }
    let now = jiff::Timestamp::now().as_second();
    let dims = vec![
        Dimension::builder()
            .name("Group")
            .value(&cfg.agent.group)
            .build(),
        Dimension::builder().name("InstanceId").value(id).build(),
    ];
    let q = aws
        .cloudwatch
        .get_metric_data()
        .start_time(aws_smithy_types::DateTime::from_secs(now - 900))
        .end_time(aws_smithy_types::DateTime::from_secs(now + 60))
        .metric_data_queries(stat_query("load", &ns, "LoadPerCpu", dims));
    match call!(cfg, q.send()) {
        Ok(out) => {
            let n: usize = out
                .metric_data_results()
                .iter()
                .map(|m| m.values().len())
                .sum();
            if n > 0 {
                r.pass(
                    "metrics.namespace",
                    format!("{n} datapoint(s) of {id} in {ns} in the last 15 min: the master reads them"),
                );
            } else {
                r.fail(
                    "metrics.namespace",
                    format!("no datapoint of {id} in {ns} in the last 15 min"),
                    "is the reporter running (systemctl status burst-agent), with the master's \
                     agent.group and metrics.namespace?",
                );
            }
        }
        Err((code, msg)) => r.fail(
            "metrics.namespace",
            format!("GetMetricData: {code}: {msg}"),
            "the slaves' policy needs cloudwatch:GetMetricData for this check (or run it from \
             the master with this slave's agent.instance_id)",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Dur;

    #[test]
    fn the_ssh_key_is_read_from_the_shipped_hooks_ssh_options() {
        let h = Config::default().hooks.pre_register;
        assert_eq!(
            ssh_keys(&h, Path::new("/var/lib/burst-agent")),
            [PathBuf::from("/var/lib/burst-agent/.ssh/id_ed25519")]
        );
        let mine = Hook {
            argv: vec!["/usr/local/bin/sync".into(), "{private_ip}".into()],
            timeout: Dur::secs(1),
            retries: 0,
            retry_delay: Dur::secs(1),
        };
        assert!(ssh_keys(&mine, Path::new("/x")).is_empty());
    }

    #[test]
    fn a_key_that_is_missing_or_open_to_others_is_a_problem_with_its_fix() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let k = d.path().join("id_ed25519");
        let (what, fix) = key_problem(&k).unwrap();
        assert!(what.contains("does not exist"), "{what}");
        assert!(fix.contains("ssh-keygen -t ed25519"), "{fix}");
        assert!(!fix.contains("mkdir"), "its directory is there: {fix}");
        // Under a state_dir of one's own nothing made .ssh/: ssh-keygen would fail without it.
        let deeper = d.path().join("state").join(".ssh").join("id_ed25519");
        let (_, fix) = key_problem(&deeper).unwrap();
        let mkdir = format!("mkdir -p -m 0700 {}", d.path().join("state/.ssh").display());
        assert!(fix.contains(&mkdir), "{fix}");
        std::fs::write(&k, "key").unwrap();
        std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o644)).unwrap();
        let (what, fix) = key_problem(&k).unwrap();
        assert!(what.contains("mode 644"), "{what}");
        assert_eq!(fix, format!("chmod 600 {}", k.display()));
        std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(key_problem(&k), None);
    }

    #[test]
    fn a_program_is_found_as_the_hook_runner_finds_it() {
        assert!(find_program("sh", "/nonexistent:/bin:/usr/bin").is_some());
        assert!(find_program("sh", "/nonexistent").is_none());
        assert!(find_program("/bin/sh", "").is_some());
        assert!(find_program("/usr/local/bin/no-such-sync", "/usr/bin").is_none());
    }

    #[test]
    fn a_report_fails_on_any_failure_and_names_key_and_fix() {
        let mut r = Report::default();
        r.pass("fleet.ami", "ami-1 exists");
        r.warn("policy.forecast.lead_time", "slow", "raise it");
        assert!(!r.failed());
        r.fail(
            "elb.name",
            "no classic load balancer x",
            "aws elb describe-load-balancers",
        );
        assert!(r.failed());
        let t = r.render();
        assert!(
            t.contains("FAIL  elb.name: no classic load balancer x\n      fix: aws elb"),
            "{t}"
        );
        assert!(t.contains("1 passed, 1 failed, 1 warned, 0 skipped"), "{t}");
    }
}
