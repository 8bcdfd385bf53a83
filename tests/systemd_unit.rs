//! The shipped unit, checked offline by systemd's own analyzer.

mod common;
use common::*;
use std::process::Command;

#[test]
fn unit_exposure_is_low() {
    let analyze = require("systemd-analyze", "systemd");
    let unit = root().join("systemd/burst-agent.service");
    let o = Command::new(analyze)
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&unit)
        .output()
        .expect("run systemd-analyze");
    let out = format!("{}{}", stdout(&o), stderr(&o));
    let line = out
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no exposure line in:\n{out}"));
    println!("{}", line.trim());
    let score: f64 = line
        .split(':')
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the score in {line:?}"));
    assert!(score <= 2.0, "exposure {score} is above 2.0:\n{out}");
}

#[test]
fn unit_keeps_proc_visible_and_runs_as_its_own_user() {
    let text = std::fs::read_to_string(root().join("systemd/burst-agent.service")).unwrap();
    // Apache's workers belong to www-data: hiding other users' processes would blind the agent.
    let directives: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect();
    assert!(!directives
        .iter()
        .any(|l| l.starts_with("ProtectProc=invisible")));
    assert!(!directives.iter().any(|l| l.starts_with("ProcSubset=")));
    for want in [
        "User=burst-agent",
        "StateDirectory=burst-agent",
        "Type=notify",
        "WatchdogSec=",
        "Restart=on-failure",
    ] {
        assert!(text.contains(want), "unit lacks {want}");
    }
}
