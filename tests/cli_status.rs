//! `burst-agent status` where no agent has run yet: a drill or a repair may have spent cap
//! units already, and status says so from state.json.

mod common;
use burst_agent::actuator::{journal::Journal, state};
use burst_agent::cap::CapLedger;
use burst_agent::fsutil::RealDisk;
use common::*;

#[test]
fn status_before_the_first_run_shows_the_units_the_records_spent() {
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("state");
    std::fs::create_dir(&state_dir).unwrap();
    let cfg = write(
        dir.path(),
        "agent.toml",
        &format!(
            "[agent]\ndry_run = true\nstate_dir = {:?}\n[cap]\ndaily_limit = 7\ntime_zone = \"UTC\"\n",
            state_dir
        ),
    );
    let cfg = cfg.to_str().unwrap();
    // Nothing yet: said, and not a failure.
    let o = agent(&["-c", cfg, "status"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("0/7 today"), "{}", stdout(&o));
    // An empty day is 0 hours, not the -0.0 a float sum starts from.
    let o = agent(&["-c", cfg, "status", "--json"]);
    assert!(
        stdout(&o).contains("\"instance_hours\": 0.0"),
        "{}",
        stdout(&o)
    );
    // Two drills' units, recorded the way the agent records them.
    let now = jiff::Timestamp::now();
    let mut ledger = CapLedger::new("UTC", 7, None).unwrap();
    ledger.record_attempt("i-0drill1", now).unwrap();
    ledger.record_attempt("i-0drill2", now).unwrap();
    state::save(&RealDisk, &state_dir, &ledger, &Journal::default()).unwrap();
    let o = agent(&["-c", cfg, "status"]);
    let text = stdout(&o);
    assert!(o.status.success(), "{text}{}", stderr(&o));
    assert!(text.contains("not running"), "{text}");
    assert!(text.contains("burst cap 2/7 today"), "{text}");
    let o = agent(&["-c", cfg, "status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["alive"], false, "{v:#}");
    assert_eq!(v["cap"]["used"], 2, "{v:#}");
}

#[test]
fn a_state_dir_that_is_a_file_is_named_as_such_and_never_swapped_for_another() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "state", "not a directory\n");
    let cfg = write(
        dir.path(),
        "agent.toml",
        &format!("[agent]\ndry_run = true\nstate_dir = {file:?}\n"),
    );
    let cfg = cfg.to_str().unwrap();
    let o = agent(&["-c", cfg, "check-config"]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(
        stderr(&o).contains("is a file, not a directory"),
        "{}",
        stderr(&o)
    );
    // A dry run does not move to a temporary directory for it: it stops and says why, once.
    let o = agent(&["-c", cfg, "run"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("is a file, not a directory"), "{err}");
    assert!(!err.contains("os error"), "{err}");
}
