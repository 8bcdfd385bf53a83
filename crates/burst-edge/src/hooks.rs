//! Operator hooks (content sync before registration, periodic sync, before deregistration,
//! after termination): argv arrays, never a shell string.
//!
//! - Placeholders (`{instance_id}`, `{private_ip}`, `{private_dns}`, `{group}`, `{state_dir}`)
//!   are replaced inside one argument each, and a value is only accepted if it looks like what
//!   AWS hands out (letters, digits, `.-_:`, not starting with `-`; `{state_dir}` is an absolute
//!   path of letters, digits and `/._-`), so no instance data can inject a command or an option.
//! - A hook runs with a minimal environment ([`hook_env`]): `PATH`, `HOME`, `LANG` and the
//!   placeholders as `BURST_AGENT_*`; never the agent's own (AWS credentials included).
//! - A failed attempt whose stderr says why in words an operator knows (ssh's host-key, key and
//!   connection errors, rsync's unreadable document root) gets a `fix:` naming the file or host
//!   and what to do (`diagnose_line`).
//! - stdout and stderr go to the log line by line (bounded, non-UTF-8 shown lossily).
//! - Each attempt has a timeout; a hung hook is killed with its whole process group (rsync's
//!   ssh child included), and so is anything a finished hook left behind.
//! - Failed attempts are retried `retries` times, `retry_delay` apart.
//! - Output is read at most 5 s after the hook ended: a child that called `setsid` and kept
//!   the pipes open cannot hold the agent.
//! - [`check_source`]: a content source that is missing, empty or lacks its sentinel file.
//! - Each slave's ssh host key is pinned in a file of its own under `known_hosts/` in the
//!   state directory, removed when the slave is gone ([`forget_host_key`]).

use crate::config::Hook;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::process::Command;

/// Lines of one stream logged per attempt; the rest are counted, not logged.
const MAX_LOGGED_LINES: usize = 200;
/// Characters of one output line logged.
const MAX_LINE_CHARS: usize = 1000;
/// stderr lines kept for the error message of a failed attempt.
const STDERR_TAIL: usize = 5;

/// The values a hook's placeholders stand for, for one slave.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HookVars {
    pub instance_id: String,
    pub private_ip: String,
    pub private_dns: String,
    pub group: String,
    /// `agent.state_dir`: the home of per-instance ssh host keys (`known_hosts/{instance_id}`).
    pub state_dir: String,
}

impl HookVars {
    fn get(&self, name: &str) -> Option<&str> {
        match name {
            "instance_id" => Some(&self.instance_id),
            "private_ip" => Some(&self.private_ip),
            "private_dns" => Some(&self.private_dns),
            "group" => Some(&self.group),
            "state_dir" => Some(&self.state_dir),
            _ => None,
        }
    }

    /// The host a hook talks to, for messages: the private IP, else the DNS name.
    fn host(&self) -> &str {
        if self.private_ip.is_empty() {
            &self.private_dns
        } else {
            &self.private_ip
        }
    }
}

/// `PATH` for hooks: the usual system directories, nothing from the agent's environment.
pub const HOOK_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The whole environment a hook runs with: `PATH`, `HOME` (the agent's, else the state
/// directory), `LANG=C.UTF-8`, and every placeholder as `BURST_AGENT_<NAME>` plus
/// `BURST_AGENT_HOOK`. Nothing else of the agent's environment reaches a hook: not its AWS
/// credentials (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`), not
/// `NOTIFY_SOCKET`, not `RUST_LOG`.
pub(crate) fn hook_env(hook: &str, vars: &HookVars) -> Vec<(String, String)> {
    let home = std::env::var("HOME")
        .ok()
        .filter(|h| h.starts_with('/'))
        .unwrap_or_else(|| vars.state_dir.clone());
    let mut env = vec![
        ("PATH".to_string(), HOOK_PATH.to_string()),
        ("HOME".to_string(), home),
        ("LANG".to_string(), "C.UTF-8".to_string()),
        ("BURST_AGENT_HOOK".to_string(), hook.to_string()),
    ];
    for name in crate::config::HOOK_PLACEHOLDERS {
        if let Some(v) = vars.get(name).filter(|v| !v.is_empty()) {
            env.push((
                format!("BURST_AGENT_{}", name.to_ascii_uppercase()),
                v.to_string(),
            ));
        }
    }
    env
}

/// Where ssh pins each slave's host key: one file per instance, so an address reused by a later
/// slave (with a new host key) never fails the first sync, and no key outlives its slave.
pub fn known_hosts_dir(state_dir: &std::path::Path) -> std::path::PathBuf {
    state_dir.join("known_hosts")
}

/// Creates [`known_hosts_dir`] (ssh adds keys to a file there but never creates the directory).
pub fn prepare_known_hosts(state_dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(known_hosts_dir(state_dir))
}

/// Removes the pinned host keys of every instance not in `live` (slaves that ended while the
/// agent was not running). Returns how many.
pub fn forget_host_keys_except(
    state_dir: &std::path::Path,
    live: &std::collections::BTreeSet<&str>,
) -> usize {
    let Ok(dir) = std::fs::read_dir(known_hosts_dir(state_dir)) else {
        return 0;
    };
    let mut n = 0;
    for e in dir.flatten() {
        let name = e.file_name();
        let Some(id) = name.to_str() else { continue };
        // ssh's own temporary and backup files (known_hosts.old) are left to ssh.
        if id.starts_with("i-") && !id.contains('.') && !live.contains(id) {
            forget_host_key(state_dir, id);
            n += 1;
        }
    }
    n
}

/// Removes a slave's pinned host key once the slave is gone. A missing file is fine.
pub fn forget_host_key(state_dir: &std::path::Path, instance_id: &str) {
    if !safe_value(instance_id) {
        return;
    }
    let path = known_hosts_dir(state_dir).join(instance_id);
    match std::fs::remove_file(&path) {
        Ok(()) => {
            tracing::debug!(instance_id, path = %path.display(), "removed the slave's pinned ssh host key")
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(instance_id, path = %path.display(), "could not remove the slave's pinned ssh host key: {e}")
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HookError {
    #[error("argument {index} ({arg:?}) uses unknown placeholder {{{name}}}")]
    UnknownPlaceholder {
        index: usize,
        arg: String,
        name: String,
    },
    #[error("argument {index} ({arg:?}) has an unclosed '{{'")]
    Unclosed { index: usize, arg: String },
    #[error("placeholder {{{name}}} has no value for this instance")]
    Empty { name: String },
    #[error(
        "placeholder {{{name}}} value {value:?} is not a plain AWS identifier; refusing to run"
    )]
    UnsafeValue { name: String, value: String },
    #[error("argv is empty")]
    NoProgram,
    #[error("could not start {program:?}: {why}")]
    Spawn { program: String, why: String },
    #[error("exited with {status}{}{}", tail(.stderr), fix_suffix(.fix))]
    Failed {
        status: String,
        stderr: Vec<String>,
        /// What the operator should do, when stderr said why (`diagnose_line`).
        fix: Option<String>,
    },
    #[error("still running after {after:?}; killed with its process group")]
    TimedOut { after: Duration },
}

fn tail(lines: &[String]) -> String {
    if lines.is_empty() {
        String::new()
    } else {
        format!("; stderr: {}", lines.join(" | "))
    }
}

fn fix_suffix(f: &Option<String>) -> String {
    f.as_ref()
        .map(|f| format!("; fix: {f}"))
        .unwrap_or_default()
}

/// A value from AWS that may stand in an argument: what instance ids, IPs and DNS names use.
fn safe_value(v: &str) -> bool {
    !v.is_empty()
        && !v.starts_with('-')
        && v.len() <= 255
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'))
}

/// The argv with every placeholder replaced, each inside its own argument.
pub(crate) fn expand(argv: &[String], vars: &HookVars) -> Result<Vec<String>, HookError> {
    substitute(argv, |index, arg, name| {
        let value = vars
            .get(name)
            .ok_or_else(|| HookError::UnknownPlaceholder {
                index,
                arg: arg.to_string(),
                name: name.into(),
            })?;
        if value.is_empty() {
            return Err(HookError::Empty { name: name.into() });
        }
        let safe = if name == "state_dir" {
            crate::config::plain_path(value)
        } else {
            safe_value(value)
        };
        if !safe {
            return Err(HookError::UnsafeValue {
                name: name.into(),
                value: value.into(),
            });
        }
        Ok(value.to_string())
    })
}

/// Each argument with every `{name}` replaced by `value(index, arg, name)`.
fn substitute(
    argv: &[String],
    mut value: impl FnMut(usize, &str, &str) -> Result<String, HookError>,
) -> Result<Vec<String>, HookError> {
    if argv.is_empty() {
        return Err(HookError::NoProgram);
    }
    argv.iter()
        .enumerate()
        .map(|(index, arg)| {
            let mut out = String::with_capacity(arg.len());
            let mut rest = arg.as_str();
            while let Some(open) = rest.find('{') {
                out.push_str(&rest[..open]);
                let after = &rest[open + 1..];
                let close = after.find('}').ok_or_else(|| HookError::Unclosed {
                    index,
                    arg: arg.clone(),
                })?;
                out.push_str(&value(index, arg, &after[..close])?);
                rest = &after[close + 1..];
            }
            out.push_str(rest);
            Ok(out)
        })
        .collect()
}

/// What an `on_event` hook's placeholders stand for (config::EVENT_PLACEHOLDERS).
#[derive(Clone, Debug, Default)]
pub struct EventVars {
    pub event: String,
    pub group: String,
    /// Empty for an event of no one instance.
    pub instance_id: String,
    /// One line of text (the agent's own words; control characters are already gone).
    pub detail: String,
    pub state_dir: String,
    /// The agent runs with `dry_run`: nothing was launched or released
    /// (`BURST_AGENT_DRY_RUN=true`).
    pub dry_run: bool,
}

impl EventVars {
    fn get(&self, name: &str) -> Option<&str> {
        match name {
            "event" => Some(&self.event),
            "group" => Some(&self.group),
            "instance_id" => Some(&self.instance_id),
            "detail" => Some(&self.detail),
            "state_dir" => Some(&self.state_dir),
            _ => None,
        }
    }
}

/// The `on_event` argv: any value may stand in an argument (no shell ever reads it), empty ones
/// included.
pub(crate) fn expand_event(argv: &[String], vars: &EventVars) -> Result<Vec<String>, HookError> {
    substitute(argv, |index, arg, name| {
        vars.get(name)
            .map(str::to_string)
            .ok_or_else(|| HookError::UnknownPlaceholder {
                index,
                arg: arg.to_string(),
                name: name.into(),
            })
    })
}

/// Runs the `on_event` hook for one event, with its retries, like [`run`]. Its environment also
/// has `BURST_AGENT_EVENT`, `BURST_AGENT_DETAIL` and `BURST_AGENT_DRY_RUN`.
pub async fn run_event(hook: &Hook, vars: &EventVars) -> HookRun {
    let hv = HookVars {
        instance_id: vars.instance_id.clone(),
        group: vars.group.clone(),
        state_dir: vars.state_dir.clone(),
        ..HookVars::default()
    };
    let extra = [
        ("BURST_AGENT_EVENT".to_string(), vars.event.clone()),
        ("BURST_AGENT_DETAIL".to_string(), vars.detail.clone()),
        ("BURST_AGENT_DRY_RUN".to_string(), vars.dry_run.to_string()),
    ];
    attempts(
        "on_event",
        hook,
        expand_event(&hook.argv, vars),
        &hv,
        &extra,
    )
    .await
}

/// Runs `hooks.on_bridge` to switch the master to bridge `level` (0: full service) from
/// `previous`, with its retries, like [`run`]. Placeholders: config::BRIDGE_PLACEHOLDERS; its
/// environment also has `BURST_AGENT_BRIDGE_LEVEL` and `BURST_AGENT_BRIDGE_PREVIOUS`. A hook
/// that fails must leave the host at a whole level (the shipped `bridge-level` does), and is run
/// again at the next tick.
pub async fn run_bridge(
    hook: &Hook,
    level: u8,
    previous: u8,
    group: &str,
    state_dir: &str,
) -> HookRun {
    let hv = HookVars {
        group: group.to_string(),
        state_dir: state_dir.to_string(),
        ..HookVars::default()
    };
    let (l, p) = (level.to_string(), previous.to_string());
    let argv = substitute(&hook.argv, |index, arg, name| match name {
        "level" => Ok(l.clone()),
        "previous" => Ok(p.clone()),
        "group" => Ok(group.to_string()),
        "state_dir" => Ok(state_dir.to_string()),
        _ => Err(HookError::UnknownPlaceholder {
            index,
            arg: arg.to_string(),
            name: name.into(),
        }),
    });
    let extra = [
        ("BURST_AGENT_BRIDGE_LEVEL".to_string(), l.clone()),
        ("BURST_AGENT_BRIDGE_PREVIOUS".to_string(), p.clone()),
    ];
    attempts("on_bridge", hook, argv, &hv, &extra).await
}

/// What running a hook (all its attempts) came to.
#[derive(Debug)]
pub struct HookRun {
    pub attempts: u32,
    pub duration: Duration,
    pub result: Result<(), HookError>,
    /// Output lines of the last attempt past the log's bound: counted, not logged.
    pub lines_not_logged: usize,
}

/// Runs `hook` for one slave: expand, then up to `1 + retries` attempts, each under the timeout.
/// Never panics and never leaves a process behind.
pub async fn run(name: &str, hook: &Hook, vars: &HookVars) -> HookRun {
    attempts(name, hook, expand(&hook.argv, vars), vars, &[]).await
}

/// What [`run`] and [`run_event`] share: up to `1 + retries` attempts of the expanded argv, each
/// logged and under the timeout, `retry_delay` apart.
async fn attempts(
    name: &str,
    hook: &Hook,
    argv: Result<Vec<String>, HookError>,
    vars: &HookVars,
    extra_env: &[(String, String)],
) -> HookRun {
    let started = Instant::now();
    let argv = match argv {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(hook = name, instance_id = %vars.instance_id, "hook not run: {e}");
            return HookRun {
                attempts: 0,
                duration: started.elapsed(),
                result: Err(e),
                lines_not_logged: 0,
            };
        }
    };
    let mut attempts = 0;
    loop {
        attempts += 1;
        let t = Instant::now();
        let (result, lines_not_logged) =
            attempt(name, &argv, hook.timeout.get(), vars, extra_env).await;
        match &result {
            Ok(()) => {
                tracing::info!(hook = name, instance_id = %vars.instance_id, attempt = attempts,
                    secs = t.elapsed().as_secs_f64(), "hook succeeded");
            }
            Err(e) => {
                tracing::warn!(hook = name, instance_id = %vars.instance_id, attempt = attempts,
                    of = hook.retries + 1, secs = t.elapsed().as_secs_f64(), "hook failed: {e}");
            }
        }
        if result.is_ok() || attempts > hook.retries {
            return HookRun {
                attempts,
                duration: started.elapsed(),
                result,
                lines_not_logged,
            };
        }
        tokio::time::sleep(hook.retry_delay.get()).await;
    }
}

async fn attempt(
    name: &str,
    argv: &[String],
    timeout: Duration,
    vars: &HookVars,
    extra_env: &[(String, String)],
) -> (Result<(), HookError>, usize) {
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .env_clear()
        .envs(hook_env(name, vars))
        .envs(extra_env.iter().cloned())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let e = HookError::Spawn {
                program: argv[0].clone(),
                why: e.to_string(),
            };
            return (Err(e), 0);
        }
    };
    let pgid = child.id();
    // Also kills the group if this attempt is abandoned (the agent shutting down mid-hook).
    let _guard = GroupGuard(pgid);
    let out = child
        .stdout
        .take()
        .map(|s| tokio::spawn(drain(s, name.to_string(), vars.clone(), false)));
    let err = child
        .stderr
        .take()
        .map(|s| tokio::spawn(drain(s, name.to_string(), vars.clone(), true)));
    let waited = tokio::time::timeout(timeout, child.wait()).await;
    // Whatever happened, nothing of this hook may outlive it: children that kept our pipes
    // open would also hang the readers below.
    if let Some(pgid) = pgid {
        kill_group(pgid);
    }
    let status = match waited {
        Ok(Ok(s)) => Some(s),
        Ok(Err(e)) => {
            let e = HookError::Spawn {
                program: argv[0].clone(),
                why: format!("wait failed: {e}"),
            };
            return (Err(e), 0);
        }
        Err(_) => {
            let _ = child.wait().await;
            None
        }
    };
    // A child that left the group (setsid, a daemonizing helper) outlives the kill and may
    // hold our pipes open for ever: the reads get a bound after the exit, never a hang.
    let deadline = tokio::time::Instant::now() + DRAIN_AFTER_EXIT;
    let (stdout, out_cut) = finish_drain(out, deadline).await;
    let (stderr, err_cut) = finish_drain(err, deadline).await;
    if out_cut || err_cut {
        tracing::warn!(
            hook = name,
            "a child of the hook left its process group and kept its output open: stopped \
             reading it {}s after the hook ended (what it printed after is not shown)",
            DRAIN_AFTER_EXIT.as_secs()
        );
    }
    let skipped = stdout.skipped + stderr.skipped;
    let result = match status {
        None => Err(HookError::TimedOut { after: timeout }),
        Some(s) if s.success() => Ok(()),
        Some(s) => Err(HookError::Failed {
            status: s.to_string(),
            stderr: stderr.tail,
            fix: stderr.fix.map(|(_, f)| f),
        }),
    };
    (result, skipped)
}

/// How long a hook's output is read after the hook ended and its group was killed.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(5);

/// A stream's reader, cut at `deadline`: what it read, and whether it was cut.
async fn finish_drain(
    h: Option<tokio::task::JoinHandle<Drained>>,
    deadline: tokio::time::Instant,
) -> (Drained, bool) {
    let Some(mut h) = h else {
        return (Drained::default(), false);
    };
    match tokio::time::timeout_at(deadline, &mut h).await {
        Ok(got) => (got.unwrap_or_default(), false),
        Err(_) => {
            h.abort();
            (Drained::default(), true)
        }
    }
}

struct GroupGuard(Option<u32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            kill_group(pgid);
        }
    }
}

fn kill_group(pgid: u32) {
    let pid = i32::try_from(pgid)
        .ok()
        .and_then(rustix::process::Pid::from_raw);
    if let Some(pid) = pid {
        // ESRCH (already gone) is the usual, fine outcome.
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}

/// What a stream said, for a failed attempt's message.
#[derive(Default)]
struct Drained {
    /// The last few lines.
    tail: Vec<String>,
    /// The most specific fix any line called for, with its rank.
    fix: Option<(u8, String)>,
    /// Lines past [`MAX_LOGGED_LINES`]: counted, not logged.
    skipped: usize,
}

/// Logs a stream line by line; returns the last few lines and the best `diagnose_line` of all of
/// them (for stderr's error message).
/// Reads one line into `buf`, at most `max` bytes of it: the rest of a longer line is read and
/// dropped, so memory stays bounded whatever a hook prints (a binary dump with no newline
/// included). `None` at the end of the stream; `Some(true)` when the line was cut.
async fn read_line_bounded<R: AsyncBufRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Option<bool>> {
    let n = (&mut *r)
        .take(u64::try_from(max).unwrap_or(u64::MAX))
        .read_until(b'\n', buf)
        .await?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() == Some(&b'\n') || n < max {
        return Ok(Some(false));
    }
    loop {
        let avail = r.fill_buf().await?;
        if avail.is_empty() {
            break;
        }
        match avail.iter().position(|b| *b == b'\n') {
            Some(i) => {
                r.consume(i + 1);
                break;
            }
            None => {
                let all = avail.len();
                r.consume(all);
            }
        }
    }
    Ok(Some(true))
}

/// Logs a hook's stream line by line, each line bounded and shown with its control characters
/// escaped ([`crate::text::printable`]: a slave's words relayed through ssh or rsync never
/// reach a terminal, the journal, `status` or an event as escape sequences); returns the last
/// few lines and the best `diagnose_line` of all of them (for stderr's error message).
async fn drain<R: AsyncRead + Unpin>(
    stream: R,
    hook: String,
    vars: HookVars,
    is_stderr: bool,
) -> Drained {
    let instance_id = vars.instance_id.as_str();
    let mut reader = BufReader::new(stream);
    let mut buf = Vec::new();
    let mut logged = 0usize;
    let mut skipped = 0usize;
    let mut last: Vec<String> = Vec::new();
    let mut fix: Option<(u8, String)> = None;
    loop {
        buf.clear();
        let cut = match read_line_bounded(&mut reader, &mut buf, MAX_LINE_CHARS * 4).await {
            Ok(None) | Err(_) => break,
            Ok(Some(cut)) => cut,
        };
        let text = String::from_utf8_lossy(&buf);
        let mut chars = text.trim_end().chars();
        let mut line: String = chars.by_ref().take(MAX_LINE_CHARS).collect();
        if cut || chars.next().is_some() {
            line.push('…');
        }
        let line = crate::text::printable(&line).into_owned();
        if logged < MAX_LOGGED_LINES {
            logged += 1;
            if is_stderr {
                tracing::warn!(hook = %hook, instance_id = %instance_id, stream = "stderr", "{line}");
            } else {
                tracing::info!(hook = %hook, instance_id = %instance_id, stream = "stdout", "{line}");
            }
        } else {
            skipped += 1;
        }
        if is_stderr {
            if let Some((rank, f)) = diagnose_line(&line, &vars) {
                if fix.as_ref().is_none_or(|(r, _)| rank > *r) {
                    fix = Some((rank, f));
                }
            }
            last.push(line);
            if last.len() > STDERR_TAIL {
                last.remove(0);
            }
        }
    }
    if skipped > 0 {
        tracing::warn!(hook = %hook, instance_id = %instance_id, skipped,
            "hook wrote more than {MAX_LOGGED_LINES} lines; the rest were not logged");
    }
    Drained {
        tail: last,
        fix,
        skipped,
    }
}

/// `burst-agent check-content`, the shipped `hooks.content_check`: the slave serves the site
/// when a GET of `url` (its private address and a canary page) answers 200 with exactly the
/// bytes of the master's own copy `file`. An empty or wiped docroot, a default Apache page or an
/// error page all fail. `Err` names what differed, for the hook's stderr.
pub fn check_content(url: &str, file: &std::path::Path, timeout: Duration) -> Result<(), String> {
    const MAX: u64 = 16 << 20;
    let want = std::fs::read(file)
        .map_err(|e| format!("the master's copy {} cannot be read: {e}", file.display()))?;
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .max_redirects(0)
        .user_agent(concat!("burst-agent-check/", env!("CARGO_PKG_VERSION")))
        .build()
        .into();
    let mut resp = agent
        .get(url)
        .call()
        .map_err(|e| format!("GET {url}: {e}"))?;
    let status = resp.status().as_u16();
    let mut got = Vec::new();
    {
        use std::io::Read;
        resp.body_mut()
            .as_reader()
            .take(MAX)
            .read_to_end(&mut got)
            .map_err(|e| format!("GET {url}: reading the body: {e}"))?;
    }
    if status != 200 {
        return Err(format!("GET {url} answered {status}, not 200"));
    }
    if got != want {
        return Err(format!(
            "GET {url} served {} byte(s) that differ from the master's {} ({} byte(s)): the \
             slave does not serve the site's content",
            got.len(),
            file.display(),
            want.len()
        ));
    }
    Ok(())
}

/// Whether the content source `dir` may be synced: it exists, is a directory, has at least one
/// entry (an unmounted volume's mount point is empty), and holds `sentinel` when one is set.
/// `Err` says what is wrong, naming the path, for the log, `status` and the alert.
pub fn check_source(dir: &std::path::Path, sentinel: Option<&str>) -> Result<(), String> {
    let meta = std::fs::metadata(dir).map_err(|e| {
        format!(
            "content source {} cannot be read ({e}): nothing is synced from it",
            dir.display()
        )
    })?;
    if !meta.is_dir() {
        return Err(format!(
            "content source {} is not a directory: nothing is synced from it",
            dir.display()
        ));
    }
    let mut entries = std::fs::read_dir(dir).map_err(|e| {
        format!(
            "content source {} cannot be listed ({e}): nothing is synced from it",
            dir.display()
        )
    })?;
    if entries.next().is_none() {
        return Err(format!(
            "content source {} is empty (an unmounted volume looks so): nothing is synced from \
             it, serving slaves keep their content",
            dir.display()
        ));
    }
    if let Some(s) = sentinel {
        let f = dir.join(s);
        if std::fs::symlink_metadata(&f).is_err() {
            return Err(format!(
                "content source {} lacks its sentinel {} (hooks.content_sentinel): nothing is \
                 synced from it, serving slaves keep their content",
                dir.display(),
                f.display()
            ));
        }
    }
    Ok(())
}

/// The fix for a failed hook, from what its stderr said: the most specific line wins (a missing
/// key file explains the "Permission denied (publickey)" after it). `None` when no line is one
/// an operator is known to meet (ssh's and rsync's own words, OpenSSH 9 and rsync 3.2).
/// `drain` ranks a running hook's lines the same way as they come; this is the whole-output
/// form its tests use.
#[cfg(test)]
fn diagnose(stderr: &[String], vars: &HookVars) -> Option<String> {
    let mut best: Option<(u8, String)> = None;
    for line in stderr {
        if let Some((rank, f)) = diagnose_line(line, vars) {
            if best.as_ref().is_none_or(|(r, _)| rank > *r) {
                best = Some((rank, f));
            }
        }
    }
    best.map(|(_, f)| f)
}

/// The text between the first `open` and the following `close` in `line`.
fn between<'a>(line: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let start = line.find(open)? + open.len();
    let len = line[start..].find(close)?;
    Some(&line[start..start + len])
}

/// One stderr line's fix and its rank (the higher, the more specific), or `None`; the checks run
/// in the order of their ranks, the first that matches wins.
fn diagnose_line(line: &str, vars: &HookVars) -> Option<(u8, String)> {
    diagnose_key_file(line)
        .or_else(|| diagnose_host_key(line, vars))
        .or_else(|| diagnose_login(line, vars))
        .or_else(|| diagnose_unreachable(line, vars))
        .or_else(|| diagnose_rsync_path(line, vars))
}

/// The agent's own ssh key or config file: missing, unreadable, or readable by others (rank 9).
fn diagnose_key_file(line: &str) -> Option<(u8, String)> {
    if let Some(file) = between(line, "Identity file ", " not accessible") {
        let fix = if line.contains("Permission denied") {
            format!(
                "the agent's user cannot read the ssh key {file}: `chown burst-agent: {file} && \
                 chmod 600 {file}`"
            )
        } else {
            format!(
                "the ssh key {file} is missing: create it with `sudo -u burst-agent ssh-keygen \
                 -t ed25519 -N '' -f {file}` and put the .pub in the slave image's authorized_keys"
            )
        };
        return Some((9, fix));
    }
    if line.contains("are too open") || line.starts_with("Bad owner or permissions on") {
        let file = between(line, "for '", "'").or_else(|| line.split_whitespace().last());
        let file = file.unwrap_or("the key");
        return Some((
            9,
            format!(
                "ssh refuses a key or config file readable by others: `chown burst-agent: {file} \
                 && chmod 600 {file}`"
            ),
        ));
    }
    None
}

/// The slave's host key: changed from the pinned one (rank 8), or not verifiable (rank 7).
fn diagnose_host_key(line: &str, vars: &HookVars) -> Option<(u8, String)> {
    let host = vars.host();
    let kh = format!("{}/known_hosts/{{instance_id}}", vars.state_dir);
    if line.contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
        || line.contains("has changed and you have requested strict checking")
    {
        return Some((
            8,
            format!(
                "{host} answered with another host key than the one pinned for it. If this slave \
                 was rebuilt, remove {}/known_hosts/{}; if not, something else answers at its \
                 address. A known_hosts file shared by all slaves fails like this when an \
                 address is reused: pin per instance with `-o UserKnownHostsFile={kh}`",
                vars.state_dir, vars.instance_id
            ),
        ));
    }
    if line.contains("Host key verification failed") {
        return Some((
            7,
            format!(
                "ssh could not verify {host}'s host key and may not ask: add `-o BatchMode=yes \
                 -o StrictHostKeyChecking=accept-new -o UserKnownHostsFile={kh}` to ssh's \
                 options (docs/install.md: content sync over ssh)"
            ),
        ));
    }
    None
}

/// The slave refused the login, or its image lacks what the hook runs (rank 6).
fn diagnose_login(line: &str, vars: &HookVars) -> Option<(u8, String)> {
    let host = vars.host();
    if line.contains("Permission denied (publickey") {
        return Some((
            6,
            format!(
                "{host} refused the agent's ssh key: put the public key of the burst-agent user \
                 ({}/.ssh/id_ed25519.pub) in the receiving user's authorized_keys in the slave \
                 image",
                vars.state_dir
            ),
        ));
    }
    if line.contains("System is booting up") {
        return Some((
            6,
            format!(
                "{host} is still booting and refuses logins (pam_nologin): give it longer with \
                 hooks.pre_register.retries and retry_delay"
            ),
        ));
    }
    if line.contains("This account is currently not available") {
        return Some((
            6,
            format!(
                "the receiving user on {host} has no login shell: in the slave image, \
                 `usermod -s /bin/sh USER` for the user the hook connects as"
            ),
        ));
    }
    if line.contains("rsync: command not found") || line.contains("rsync: not found") {
        return Some((
            6,
            format!("{host} has no rsync: install it in the slave image"),
        ));
    }
    None
}

/// ssh could not reach the slave: no connection, or no name (rank 5).
fn diagnose_unreachable(line: &str, vars: &HookVars) -> Option<(u8, String)> {
    let host = vars.host();
    for (what, why) in [
        ("Connection timed out", "does not answer"),
        ("Connection refused", "refuses the connection"),
        ("No route to host", "cannot be reached"),
        ("Network is unreachable", "cannot be reached"),
        ("Operation timed out", "does not answer"),
    ] {
        if line.contains("connect to host") && line.contains(what) {
            return Some((
                5,
                format!(
                    "{host} {why} on ssh: check that the slave's security group allows port 22 \
                     from the master and that sshd runs in the image (it may still be booting: \
                     raise hooks.pre_register.retries or retry_delay)"
                ),
            ));
        }
    }
    if line.contains("during banner exchange") {
        return Some((
            5,
            format!(
                "{host} took the ssh connection but sent no ssh banner in time: sshd is still \
                 starting on a slave just booted (raise hooks.pre_register.retries or \
                 retry_delay), the host is overloaded, or something else than sshd listens on \
                 port 22"
            ),
        ));
    }
    if line.contains("Could not resolve hostname") {
        return Some((
            5,
            format!("ssh cannot resolve the slave's name ({host}): use {{private_ip}} in the hook"),
        ));
    }
    None
}

/// rsync could not read the source on the master or write the destination on the slave (rank 4).
fn diagnose_rsync_path(line: &str, vars: &HookVars) -> Option<(u8, String)> {
    let host = vars.host();
    let quoted = |or: &'static str| between(line, "\"", "\"").unwrap_or(or);
    if line.contains("[sender]") && line.contains("failed:") {
        let path = quoted("the source");
        if line.contains("No such file or directory") {
            return Some((
                4,
                format!(
                    "{path} does not exist on the master: check the hook's source path (the \
                     agent sees /home, /srv and /var/www as they are, read-only)"
                ),
            ));
        }
        if line.contains("Permission denied") {
            return Some((
                4,
                format!(
                    "the burst-agent user may not read {path} on the master: give it read \
                     access (a group, or `chmod o+rX`), or, if a drop-in hides it \
                     (ProtectHome=yes or tmpfs, InaccessiblePaths=), widen it with \
                     ReadOnlyPaths= (docs/operations.md: troubleshooting)"
                ),
            ));
        }
    }
    if line.contains("[receiver]") && line.contains("Permission denied") {
        let path = quoted("the destination");
        return Some((
            4,
            format!(
                "the receiving user on {host} cannot write {path}: give it write access in the \
                 slave image"
            ),
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_or_unmarked_source_is_never_synced() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("www");
        assert!(check_source(&src, None)
            .unwrap_err()
            .contains("cannot be read"));
        std::fs::create_dir(&src).unwrap();
        // An unmounted volume's mount point: empty.
        let e = check_source(&src, None).unwrap_err();
        assert!(
            e.contains("is empty") && e.contains(&src.display().to_string()),
            "{e}"
        );
        std::fs::write(src.join("index.html"), "site").unwrap();
        assert_eq!(check_source(&src, None), Ok(()));
        let e = check_source(&src, Some(".burst-agent-content")).unwrap_err();
        assert!(e.contains("lacks its sentinel"), "{e}");
        std::fs::write(src.join(".burst-agent-content"), "").unwrap();
        assert_eq!(check_source(&src, Some(".burst-agent-content")), Ok(()));
    }

    /// One HTTP answer on a loopback port, for `check_content`.
    fn serve_once(status: &str, body: &'static str) -> String {
        use std::io::{Read, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let status = status.to_string();
        std::thread::spawn(move || {
            if let Ok((mut c, _)) = l.accept() {
                let mut buf = [0u8; 2048];
                let _ = c.read(&mut buf);
                let _ = write!(
                    c,
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        format!("http://{addr}/index.html")
    }

    #[test]
    fn the_content_check_compares_the_slaves_page_with_the_masters_copy() {
        let d = tempfile::tempdir().unwrap();
        let copy = d.path().join("index.html");
        std::fs::write(&copy, "<h1>Open week</h1>\n").unwrap();
        let t = Duration::from_secs(5);
        assert_eq!(
            check_content(&serve_once("200 OK", "<h1>Open week</h1>\n"), &copy, t),
            Ok(())
        );
        let e = check_content(&serve_once("200 OK", "It works!"), &copy, t).unwrap_err();
        assert!(e.contains("differ from the master's"), "{e}");
        let e = check_content(&serve_once("404 Not Found", ""), &copy, t).unwrap_err();
        assert!(e.contains("answered 404"), "{e}");
        let e = check_content("http://127.0.0.1:9/x", &copy, t).unwrap_err();
        assert!(e.contains("GET http://127.0.0.1:9/x"), "{e}");
    }

    #[tokio::test]
    async fn a_line_longer_than_the_bound_is_cut_and_the_rest_dropped() {
        let mut input = vec![b'a'; 100_000];
        input.extend_from_slice(b"\nnext\n");
        // A small buffer, as a pipe hands over a long line in pieces.
        let mut r = BufReader::with_capacity(64, &input[..]);
        let mut buf = Vec::new();
        assert_eq!(
            read_line_bounded(&mut r, &mut buf, 10).await.unwrap(),
            Some(true)
        );
        assert_eq!(buf, b"aaaaaaaaaa", "held no more than the bound");
        buf.clear();
        assert_eq!(
            read_line_bounded(&mut r, &mut buf, 10).await.unwrap(),
            Some(false)
        );
        assert_eq!(buf, b"next\n", "the next line is whole");
        buf.clear();
        assert_eq!(read_line_bounded(&mut r, &mut buf, 10).await.unwrap(), None);
        // No newline at the end of the stream.
        let mut r = BufReader::new(&b"tail"[..]);
        assert_eq!(
            read_line_bounded(&mut r, &mut buf, 10).await.unwrap(),
            Some(false)
        );
        assert_eq!(buf, b"tail");
    }
    use crate::config::Dur;

    fn vars() -> HookVars {
        HookVars {
            instance_id: "i-0abc".into(),
            private_ip: "10.0.0.7".into(),
            private_dns: "ip-10-0-0-7.ec2.internal".into(),
            group: "site".into(),
            state_dir: "/var/lib/burst-agent".into(),
        }
    }

    fn argv(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    fn hook(a: &[&str], timeout_ms: u64, retries: u32) -> Hook {
        Hook {
            argv: argv(a),
            timeout: Dur::millis(timeout_ms),
            retries,
            retry_delay: Dur::millis(10),
        }
    }

    #[test]
    fn placeholders_are_replaced_inside_one_argument() {
        let out = expand(
            &argv(&[
                "rsync",
                "-az",
                "/var/www/",
                "{private_ip}:/var/www/",
                "{group}-{instance_id}",
            ]),
            &vars(),
        )
        .unwrap();
        assert_eq!(out[3], "10.0.0.7:/var/www/");
        assert_eq!(out[4], "site-i-0abc");
        assert_eq!(out.len(), 5);
    }

    #[test]
    fn instance_data_cannot_inject_commands_or_options() {
        for bad in [
            "10.0.0.7; rm -rf /",
            "$(reboot)",
            "-e sh",
            "a b",
            "x\0y",
            "`id`",
        ] {
            let mut v = vars();
            v.private_ip = bad.into();
            let e = expand(&argv(&["rsync", "{private_ip}:/x"]), &v).unwrap_err();
            assert!(matches!(e, HookError::UnsafeValue { .. }), "{bad:?}: {e}");
        }
        let mut v = vars();
        v.private_ip.clear();
        assert_eq!(
            expand(&argv(&["ssh", "{private_ip}"]), &v).unwrap_err(),
            HookError::Empty {
                name: "private_ip".into()
            }
        );
    }

    #[test]
    fn unknown_and_unclosed_placeholders_are_errors() {
        assert!(matches!(
            expand(&argv(&["x", "{password}"]), &vars()),
            Err(HookError::UnknownPlaceholder { index: 1, .. })
        ));
        assert!(matches!(
            expand(&argv(&["x", "{group"]), &vars()),
            Err(HookError::Unclosed { index: 1, .. })
        ));
        assert_eq!(expand(&[], &vars()), Err(HookError::NoProgram));
    }

    #[tokio::test]
    async fn success_failure_and_retries() {
        let ok = run("t", &hook(&["true"], 5000, 0), &vars()).await;
        assert!(ok.result.is_ok());
        assert_eq!(ok.attempts, 1);

        let bad = run(
            "t",
            &hook(&["sh", "-c", "echo nope >&2; exit 3"], 5000, 2),
            &vars(),
        )
        .await;
        assert_eq!(bad.attempts, 3);
        match bad.result {
            Err(HookError::Failed { status, stderr, .. }) => {
                assert!(status.contains('3'), "{status}");
                assert_eq!(stderr, vec!["nope".to_string()]);
            }
            other => panic!("{other:?}"),
        }

        let missing = run("t", &hook(&["/nonexistent/hook"], 5000, 0), &vars()).await;
        assert!(matches!(missing.result, Err(HookError::Spawn { .. })));
    }

    /// The pid a test hook wrote to `path`.
    fn pid_in(path: &std::path::Path) -> i32 {
        std::fs::read_to_string(path)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    /// Whether process `pid` is gone (or a zombie) within 2 s.
    fn dies_soon(pid: i32) -> bool {
        for _ in 0..100 {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            if stat.is_empty() || stat.contains(") Z ") {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    #[tokio::test]
    async fn a_hung_hook_is_killed_with_its_children() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("child.pid");
        // The hook starts a grandchild that would outlive a plain kill of the hook itself.
        let script = format!("sleep 300 & echo $! > {}; wait", pidfile.display());
        let run = run("t", &hook(&["sh", "-c", &script], 300, 0), &vars()).await;
        assert!(
            matches!(run.result, Err(HookError::TimedOut { .. })),
            "{:?}",
            run.result
        );
        let pid = pid_in(&pidfile);
        // Killed and reaped by init or its parent shortly after the group kill.
        assert!(
            dies_soon(pid),
            "grandchild {pid} survived the hook's timeout"
        );
    }

    #[tokio::test]
    async fn a_child_that_leaves_the_process_group_cannot_hang_the_hook() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("escaped.pid");
        // setsid: out of the group the runner kills, still holding stdout and stderr.
        // The hook ends only once its child is out of the group (it wrote its pid after setsid).
        let script = format!(
            "setsid sh -c 'echo $$ > {0}; exec sleep 300' & \
             while [ ! -s {0} ]; do sleep 0.05; done; exit 0",
            pidfile.display()
        );
        let h = hook(&["sh", "-c", &script], 5000, 0);
        let ran = tokio::time::timeout(Duration::from_secs(120), run("t", &h, &vars())).await;
        let pid = pid_in(&pidfile);
        if let Some(p) = rustix::process::Pid::from_raw(pid) {
            let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
        }
        let run = ran.expect("the hook's output drain never ended");
        assert!(run.result.is_ok(), "{:?}", run.result);
    }

    #[tokio::test]
    async fn a_finished_hook_leaves_nothing_behind_and_floods_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("left.pid");
        // 500 lines on stdout and 300 on stderr, and a process left running in the background.
        let script = format!(
            "for i in $(seq 1 500); do echo line $i; done; \
             for i in $(seq 1 300); do echo err $i >&2; done; \
             sleep 300 & echo $! > {}; exit 0",
            pidfile.display()
        );
        let run = run("t", &hook(&["sh", "-c", &script], 5000, 0), &vars()).await;
        assert!(run.result.is_ok(), "{:?}", run.result);
        // At most MAX_LOGGED_LINES a stream were logged; the rest only counted.
        assert_eq!(
            run.lines_not_logged,
            (500 - MAX_LOGGED_LINES) + (300 - MAX_LOGGED_LINES)
        );
        // What it left running died with its process group.
        let pid = pid_in(&pidfile);
        assert!(dies_soon(pid), "{pid} outlived its hook");
    }

    #[test]
    fn state_dir_is_a_path_placeholder_and_must_be_plain() {
        let out = expand(
            &argv(&[
                "ssh",
                "-o UserKnownHostsFile={state_dir}/known_hosts/{instance_id}",
            ]),
            &vars(),
        )
        .unwrap();
        assert_eq!(
            out[1],
            "-o UserKnownHostsFile=/var/lib/burst-agent/known_hosts/i-0abc"
        );
        // A path is no AWS identifier, and an AWS value is no path.
        let mut v = vars();
        v.private_ip = "/etc/passwd".into();
        assert!(expand(&argv(&["x", "{private_ip}"]), &v).is_err());
        for bad in ["relative/dir", "/var/lib/my agent", "/x;reboot", "/x$(id)"] {
            let mut v = vars();
            v.state_dir = bad.into();
            let e = expand(&argv(&["x", "{state_dir}"]), &v).unwrap_err();
            assert!(matches!(e, HookError::UnsafeValue { .. }), "{bad:?}: {e}");
        }
    }

    #[tokio::test]
    async fn hooks_get_a_minimal_environment_without_the_agents_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("env");
        // The test process's environment stands in for the agent's: whatever it holds, the hook
        // must see only what hook_env() gives it.
        let script = format!("env > {}", out.display());
        let run = run(
            "content_sync",
            &hook(&["sh", "-c", &script], 5000, 0),
            &vars(),
        )
        .await;
        assert!(run.result.is_ok(), "{:?}", run.result);
        let text = std::fs::read_to_string(&out).unwrap();
        let mut names: Vec<&str> = text
            .lines()
            .filter_map(|l| l.split_once('=').map(|(k, _)| k))
            // sh itself adds PWD (and dash SHLVL-like names on some shells).
            .filter(|k| !matches!(*k, "PWD" | "OLDPWD" | "SHLVL" | "_"))
            .collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "BURST_AGENT_GROUP",
                "BURST_AGENT_HOOK",
                "BURST_AGENT_INSTANCE_ID",
                "BURST_AGENT_PRIVATE_DNS",
                "BURST_AGENT_PRIVATE_IP",
                "BURST_AGENT_STATE_DIR",
                "HOME",
                "LANG",
                "PATH",
            ],
            "{text}"
        );
        assert!(text.contains("BURST_AGENT_PRIVATE_IP=10.0.0.7\n"), "{text}");
        assert!(text.contains("BURST_AGENT_HOOK=content_sync\n"), "{text}");
        assert!(text.contains(&format!("PATH={HOOK_PATH}\n")), "{text}");
    }

    fn lines(a: &[&str]) -> Vec<String> {
        argv(a)
    }

    /// The fix `diagnose` gives for these stderr lines; there must be one.
    fn fix_for(stderr: &[&str]) -> String {
        diagnose(&lines(stderr), &vars()).unwrap_or_else(|| panic!("no fix for {stderr:?}"))
    }

    #[test]
    fn ssh_and_rsync_failures_get_a_fix_naming_the_file_or_host() {
        // Missing key: ssh's warning names the file; it outranks the "Permission denied" after it.
        let fix = fix_for(&[
                "Warning: Identity file /var/lib/burst-agent/.ssh/id_ed25519 not accessible: No such file or directory.",
                "burst-agent@10.0.0.7: Permission denied (publickey).",
                "rsync: connection unexpectedly closed (0 bytes received so far) [sender]",
            ]);
        assert!(fix.contains("ssh-keygen"), "{fix}");
        assert!(
            fix.contains("-f /var/lib/burst-agent/.ssh/id_ed25519"),
            "{fix}"
        );
        // A key the agent's user cannot read: chown, not a new key over the old one.
        let fix = fix_for(&["Warning: Identity file /var/lib/burst-agent/.ssh/id_ed25519 not accessible: Permission denied."]);
        assert!(
            fix.contains("chown burst-agent: /var/lib/burst-agent/.ssh/id_ed25519"),
            "{fix}"
        );
        assert!(!fix.contains("ssh-keygen"), "{fix}");

        let fix = fix_for(&["Host key verification failed."]);
        assert!(fix.contains("10.0.0.7"), "{fix}");
        assert!(fix.contains("StrictHostKeyChecking=accept-new"), "{fix}");
        // A changed key under per-instance pins is no routine reuse: name the pinned file.
        let fix =
            fix_for(&["Host key for 10.0.0.7 has changed and you have requested strict checking."]);
        assert!(
            fix.contains("remove /var/lib/burst-agent/known_hosts/i-0abc"),
            "{fix}"
        );

        let fix = fix_for(&["ssh: connect to host 10.0.0.7 port 22: Connection timed out"]);
        assert!(fix.starts_with("10.0.0.7 does not answer on ssh"), "{fix}");
        assert!(fix.contains("security group"), "{fix}");
        // A slave just booted: it takes the connection, its sshd is not up yet (the drill's
        // first-day failure, which had no fix).
        let fix = fix_for(&["Connection timed out during banner exchange"]);
        assert!(fix.starts_with("10.0.0.7 took the ssh connection"), "{fix}");
        assert!(fix.contains("retries"), "{fix}");

        let fix = fix_for(&[
            r#"rsync: [sender] change_dir "/home/ramen/www" failed: No such file or directory (2)"#,
        ]);
        assert!(
            fix.starts_with("/home/ramen/www does not exist on the master"),
            "{fix}"
        );
        let fix = fix_for(&[
            r#"rsync: [sender] opendir "/home/ramen/www" failed: Permission denied (13)"#,
        ]);
        assert!(fix.contains("may not read /home/ramen/www"), "{fix}");

        let fix = fix_for(&[
            r#""System is booting up. Unprivileged users are not permitted to log in yet. Please come back later. For technical details, see pam_nologin(8).""#,
            "Connection closed by 10.0.0.7 port 22",
        ]);
        assert!(fix.starts_with("10.0.0.7 is still booting"), "{fix}");

        assert_eq!(diagnose(&lines(&["some other failure"]), &vars()), None);
    }

    #[tokio::test]
    async fn a_failed_attempt_carries_the_fix_in_its_message() {
        let run = run(
            "pre_register",
            &hook(
                &[
                    "sh",
                    "-c",
                    "echo 'Host key verification failed.' >&2; exit 255",
                ],
                5000,
                0,
            ),
            &vars(),
        )
        .await;
        let msg = run.result.unwrap_err().to_string();
        assert!(
            msg.contains("; fix: ssh could not verify 10.0.0.7"),
            "{msg}"
        );
    }
}
