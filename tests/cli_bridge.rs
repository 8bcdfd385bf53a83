//! `burst-agent bridge set N` / `off` / `auto`, run as an operator would: the level set by hand
//! lands where the running agent reads it, and what cannot be set is refused with the reason.

mod common;
use common::*;

fn config(dir: &std::path::Path, enabled: bool) -> std::path::PathBuf {
    write(
        dir,
        "agent.toml",
        &format!(
            "[agent]\ndry_run = true\nstate_dir = \"{}\"\n\n[bridge]\nenabled = {enabled}\ncosts = [0.3, 0.2, 0.1]\n",
            dir.join("state").display()
        ),
    )
}

fn manual(dir: &std::path::Path) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(dir.join("state/bridge-manual.json")).ok()?;
    Some(serde_json::from_str(&text).unwrap())
}

#[test]
fn a_level_by_hand_is_written_for_the_agent_and_handed_back() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("state")).unwrap();
    let cfg = config(dir.path(), true);
    let c = cfg.to_str().unwrap();

    let o = agent(&["-c", c, "bridge", "set", "3", "--for", "20m"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("bridge held at level 3 until"),
        "{}",
        stdout(&o)
    );
    let m = manual(dir.path()).expect("no bridge-manual.json");
    assert_eq!(m["level"], 3);
    let until: jiff::Timestamp = m["until"].as_str().unwrap().parse().unwrap();
    let left = until.as_second() - jiff::Timestamp::now().as_second();
    assert!((1190..=1200).contains(&left), "{left} s left of 20m");
    assert!(m["by"].as_str().unwrap().contains("bridge set 3"), "{m}");

    // Three levels are configured: a fourth is refused, and nothing changes.
    let o = agent(&["-c", c, "bridge", "set", "4"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("1 to 3 (bridge.costs)"),
        "{}",
        stderr(&o)
    );
    assert_eq!(manual(dir.path()).unwrap()["level"], 3);
    let o = agent(&["-c", c, "bridge", "set", "2", "--for", "2d"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("longer than a day"), "{}", stderr(&o));

    let o = agent(&["-c", c, "bridge", "off"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(manual(dir.path()).unwrap()["level"], 0);

    let o = agent(&["-c", c, "bridge", "auto"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("the level set by hand is gone"),
        "{}",
        stdout(&o)
    );
    assert!(manual(dir.path()).is_none());
    let o = agent(&["-c", c, "bridge", "auto"]);
    assert!(
        stdout(&o).contains("no level was set by hand"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn a_bridge_that_is_off_in_the_config_takes_no_level() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("state")).unwrap();
    let cfg = config(dir.path(), false);
    let o = agent(&["-c", cfg.to_str().unwrap(), "bridge", "set", "1"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("bridge.enabled is false"),
        "{}",
        stderr(&o)
    );
    assert!(manual(dir.path()).is_none());
}
