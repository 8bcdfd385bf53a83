//! `burst-agent run` as a child process: its JSON log in a file, signals, exit.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub struct AgentProc {
    child: Child,
    pub log: PathBuf,
}

impl AgentProc {
    /// Starts `burst-agent --config CONFIG run ARGS` with moto's test credentials in its
    /// environment; stderr (the JSON log) goes to `log`.
    pub fn start(config: &Path, args: &[&str], log: &Path) -> AgentProc {
        Self::start_with(config, args, log, &[])
    }

    /// As [`AgentProc::start`], with `env` added to its environment.
    pub fn start_with(
        config: &Path,
        args: &[&str],
        log: &Path,
        env: &[(&str, &std::ffi::OsStr)],
    ) -> AgentProc {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("agent log");
        let child = Command::new(super::bin())
            .arg("--config")
            .arg(config)
            .arg("run")
            .args(args)
            .env_remove("RUST_LOG")
            .env_remove("NOTIFY_SOCKET")
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .expect("start burst-agent run");
        AgentProc {
            child,
            log: log.to_path_buf(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn lines(&self) -> Vec<Value> {
        self.log_text()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits for a log line matching `pred`; panics with the log after `secs`.
    pub fn wait_log(&mut self, what: &str, secs: u64, pred: impl Fn(&Value) -> bool) -> Value {
        let t = Instant::now();
        loop {
            if let Some(v) = self.lines().into_iter().find(|v| pred(v)) {
                return v;
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("agent exited ({st}) before {what}:\n{}", self.tail());
            }
            assert!(
                t.elapsed() < Duration::from_secs(secs),
                "{what}: not in the log within {secs} s:\n{}",
                self.tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn tail(&self) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    pub fn signal(&self, sig: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.pid() as i32).expect("pid");
        rustix::process::kill_process(pid, sig).expect("signal the agent");
    }

    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn wait_exit(&mut self, secs: u64) -> ExitStatus {
        let t = Instant::now();
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st;
            }
            assert!(
                t.elapsed() < Duration::from_secs(secs),
                "agent still running {secs} s after the signal:\n{}",
                self.tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        if self.running() {
            self.kill9();
        }
    }
}

/// The `message` of a JSON log line.
pub fn msg(v: &Value) -> &str {
    v["message"].as_str().unwrap_or("")
}
