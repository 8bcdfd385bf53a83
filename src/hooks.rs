//! Operator hooks (content sync before registration, periodic sync, before deregistration,
//! after termination): argv arrays, never a shell string.
//!
//! - Placeholders (`{instance_id}`, `{private_ip}`, `{private_dns}`, `{group}`) are replaced
//!   inside one argument each, and a value is only accepted if it looks like what AWS hands out
//!   (letters, digits, `.-_:`, not starting with `-`), so no instance data can inject a command
//!   or an option.
//! - stdout and stderr go to the log line by line (bounded, non-UTF-8 shown lossily).
//! - Each attempt has a timeout; a hung hook is killed with its whole process group (rsync's
//!   ssh child included), and so is anything a finished hook left behind.
//! - Failed attempts are retried `retries` times, `retry_delay` apart.

use crate::config::Hook;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
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
}

impl HookVars {
    fn get(&self, name: &str) -> Option<&str> {
        match name {
            "instance_id" => Some(&self.instance_id),
            "private_ip" => Some(&self.private_ip),
            "private_dns" => Some(&self.private_dns),
            "group" => Some(&self.group),
            _ => None,
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
    #[error("exited with {status}{}", tail(.stderr))]
    Failed { status: String, stderr: Vec<String> },
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

/// A value from AWS that may stand in an argument: what instance ids, IPs and DNS names use.
fn safe_value(v: &str) -> bool {
    !v.is_empty()
        && !v.starts_with('-')
        && v.len() <= 255
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'))
}

/// The argv with every placeholder replaced, each inside its own argument.
pub fn expand(argv: &[String], vars: &HookVars) -> Result<Vec<String>, HookError> {
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
                let name = &after[..close];
                let value = vars
                    .get(name)
                    .ok_or_else(|| HookError::UnknownPlaceholder {
                        index,
                        arg: arg.clone(),
                        name: name.into(),
                    })?;
                if value.is_empty() {
                    return Err(HookError::Empty { name: name.into() });
                }
                if !safe_value(value) {
                    return Err(HookError::UnsafeValue {
                        name: name.into(),
                        value: value.into(),
                    });
                }
                out.push_str(value);
                rest = &after[close + 1..];
            }
            out.push_str(rest);
            Ok(out)
        })
        .collect()
}

/// What running a hook (all its attempts) came to.
#[derive(Debug)]
pub struct HookRun {
    pub attempts: u32,
    pub duration: Duration,
    pub result: Result<(), HookError>,
}

/// Runs `hook` for one slave: expand, then up to `1 + retries` attempts, each under the timeout.
/// Never panics and never leaves a process behind.
pub async fn run(name: &str, hook: &Hook, vars: &HookVars) -> HookRun {
    let started = Instant::now();
    let argv = match expand(&hook.argv, vars) {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(hook = name, instance_id = %vars.instance_id, "hook not run: {e}");
            return HookRun {
                attempts: 0,
                duration: started.elapsed(),
                result: Err(e),
            };
        }
    };
    let mut attempts = 0;
    loop {
        attempts += 1;
        let t = Instant::now();
        let result = attempt(name, &argv, hook.timeout.get(), &vars.instance_id).await;
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
            };
        }
        tokio::time::sleep(hook.retry_delay.get()).await;
    }
}

async fn attempt(
    name: &str,
    argv: &[String],
    timeout: Duration,
    instance_id: &str,
) -> Result<(), HookError> {
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| HookError::Spawn {
        program: argv[0].clone(),
        why: e.to_string(),
    })?;
    let pgid = child.id();
    // Also kills the group if this attempt is abandoned (the agent shutting down mid-hook).
    let _guard = GroupGuard(pgid);
    let out = child
        .stdout
        .take()
        .map(|s| tokio::spawn(drain(s, name.to_string(), instance_id.to_string(), false)));
    let err = child
        .stderr
        .take()
        .map(|s| tokio::spawn(drain(s, name.to_string(), instance_id.to_string(), true)));
    let waited = tokio::time::timeout(timeout, child.wait()).await;
    // Whatever happened, nothing of this hook may outlive it: children that kept our pipes
    // open would also hang the readers below.
    if let Some(pgid) = pgid {
        kill_group(pgid);
    }
    let status = match waited {
        Ok(Ok(s)) => Some(s),
        Ok(Err(e)) => {
            return Err(HookError::Spawn {
                program: argv[0].clone(),
                why: format!("wait failed: {e}"),
            })
        }
        Err(_) => {
            let _ = child.wait().await;
            None
        }
    };
    if let Some(h) = out {
        let _ = h.await;
    }
    let stderr = match err {
        Some(h) => h.await.unwrap_or_default(),
        None => Vec::new(),
    };
    match status {
        None => Err(HookError::TimedOut { after: timeout }),
        Some(s) if s.success() => Ok(()),
        Some(s) => Err(HookError::Failed {
            status: s.to_string(),
            stderr,
        }),
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

/// Logs a stream line by line; returns the last few lines (for stderr's error message).
async fn drain<R: AsyncRead + Unpin>(
    stream: R,
    hook: String,
    instance_id: String,
    is_stderr: bool,
) -> Vec<String> {
    let mut reader = BufReader::new(stream);
    let mut buf = Vec::new();
    let mut logged = 0usize;
    let mut skipped = 0usize;
    let mut last: Vec<String> = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&buf);
        let mut chars = text.trim_end().chars();
        let mut line: String = chars.by_ref().take(MAX_LINE_CHARS).collect();
        if chars.next().is_some() {
            line.push('…');
        }
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
    last
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Dur;

    fn vars() -> HookVars {
        HookVars {
            instance_id: "i-0abc".into(),
            private_ip: "10.0.0.7".into(),
            private_dns: "ip-10-0-0-7.ec2.internal".into(),
            group: "site".into(),
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
            Err(HookError::Failed { status, stderr }) => {
                assert!(status.contains('3'), "{status}");
                assert_eq!(stderr, vec!["nope".to_string()]);
            }
            other => panic!("{other:?}"),
        }

        let missing = run("t", &hook(&["/nonexistent/hook"], 5000, 0), &vars()).await;
        assert!(matches!(missing.result, Err(HookError::Spawn { .. })));
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
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // Killed and reaped by init or its parent shortly after the group kill.
        let mut gone = false;
        for _ in 0..100 {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            if stat.is_empty() || stat.contains(") Z ") {
                gone = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(gone, "grandchild {pid} survived the hook's timeout");
    }

    #[tokio::test]
    async fn a_finished_hook_leaves_nothing_behind_and_floods_are_bounded() {
        let script = "for i in $(seq 1 500); do echo line $i; done; (sleep 300 &) ; exit 0";
        let run = run("t", &hook(&["sh", "-c", script], 5000, 0), &vars()).await;
        assert!(run.result.is_ok(), "{:?}", run.result);
        assert!(run.duration < Duration::from_secs(60));
    }
}
