//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod agent_proc;
pub mod apache;
pub mod docs;
pub mod fake_apache;
pub mod fault_proxy;
pub mod machine;
pub mod moto;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The README's test command installs every tool the tests use.
pub const SETUP: &str = "scripts/test.sh (the README's test command) installs it";

/// The built `burst-agent` binary.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_burst-agent"))
}

pub fn agent(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run burst-agent")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A tool the test needs; a missing one fails the test naming how to install it, never skips.
pub fn require(tool: &str, package: &str) -> PathBuf {
    fake_apache::which(tool).unwrap_or_else(|| {
        panic!("{tool} is not installed: `apt-get install -y {package}`, or run {SETUP}")
    })
}

/// The repository root (for agent.toml.example, systemd/).
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Writes `text` to `name` in `dir` and returns its path.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// A current-thread tokio runtime for a test that drives the agent's async code.
#[allow(dead_code)]
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}
