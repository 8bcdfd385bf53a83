//! `burst-agent drill` against moto with real rsync (issue 21, part 2), run as an operator
//! would: without `--yes` it says what it would spend and does nothing; with it, one slave goes
//! through every phase and out again, each phase timed, the lead time kept; with the shipped ssh
//! hook and no key it fails at the sync phase with the fix, and leaves nothing running.

mod common;

use common::moto::{actuator_config, elb_members, Moto};
use common::*;
use serde_json::Value;

fn run(cfg: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let o = std::process::Command::new(bin())
        .arg("--config")
        .arg(cfg)
        .arg("drill")
        .args(args)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("RUST_LOG")
        .output()
        .expect("run burst-agent drill");
    (o.status.code().unwrap_or(-1), stdout(&o), stderr(&o))
}

fn live(rt: &tokio::runtime::Runtime, aws: &burst_agent::aws::Aws) -> Vec<String> {
    rt.block_on(async {
        let out = aws.ec2.describe_instances().send().await.unwrap();
        out.reservations()
            .iter()
            .flat_map(|r| r.instances())
            .filter(|i| {
                i.state()
                    .and_then(|s| s.name())
                    .is_some_and(|n| n.as_str() == "running" || n.as_str() == "pending")
            })
            .map(|i| i.instance_id().unwrap().to_string())
            .collect()
    })
}

fn ledger_and_leads(state: &std::path::Path) -> (usize, Vec<i64>) {
    let v: Value =
        serde_json::from_str(&std::fs::read_to_string(state.join("state.json")).unwrap()).unwrap();
    let used = v["cap"]["entries"].as_array().map_or(0, Vec::len);
    let leads = v["history"]["lead_times"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_i64).collect())
        .unwrap_or_default();
    (used, leads)
}

#[test]
fn a_drill_times_every_phase_and_a_broken_sync_fails_at_its_phase_with_the_fix() {
    require("rsync", "rsync");
    require("ssh", "openssh-client");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let moto = Moto::start();
    let aws = rt.block_on(moto.aws());
    let dir = tempfile::tempdir().unwrap();
    let docroot = dir.path().join("www");
    std::fs::create_dir_all(&docroot).unwrap();
    std::fs::write(docroot.join("index.html"), "tee times\n").unwrap();
    let slaves = dir.path().join("slaves");
    std::fs::create_dir_all(&slaves).unwrap();
    let state = dir.path().join("state");
    let mut cfg = actuator_config(&moto, "drill", &state, &docroot, &slaves);
    cfg.agent.dry_run = false;
    cfg.agent.instance_id = "i-master".into();
    rt.block_on(moto.create_elb(&aws, &cfg.elb.name));
    let path = write(dir.path(), "drill.toml", &toml::to_string(&cfg).unwrap());

    // Without --yes: what it would spend, and nothing done.
    let (code, out, err) = run(&path, &[]);
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(
        out.contains("spends 1 burst-cap unit of today's 7 (7 left, 6 after)"),
        "{out}"
    );
    // The exact command again, with the config it was given.
    let again = format!("to do it: burst-agent -c {} drill --yes", path.display());
    assert!(out.contains(&again), "{out}");
    assert!(live(&rt, &aws).is_empty());
    // With dry_run = true the drill says plainly that it is real all the same.
    let mut dry = cfg.clone();
    dry.agent.dry_run = true;
    let dry_path = write(dir.path(), "dry.toml", &toml::to_string(&dry).unwrap());
    let (code, out, err) = run(&dry_path, &[]);
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(
        out.contains("agent.dry_run = true does not make the drill a rehearsal on paper"),
        "{out}"
    );
    assert!(live(&rt, &aws).is_empty());

    // With it: every phase, in order, and out again.
    let (code, out, err) = run(&path, &["--yes", "--json"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let d: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}\n{err}"));
    let id = d["instance"].as_str().unwrap().to_string();
    let phases: Vec<&str> = d["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[0].as_str().unwrap())
        .collect();
    assert_eq!(
        phases,
        [
            "pending",
            "syncing",
            "synced",
            "registering",
            "in_service",
            "releasing",
            "draining",
            "terminating"
        ]
        .iter()
        .copied()
        .filter(|p| phases.contains(p))
        .collect::<Vec<_>>(),
        "{d:#}"
    );
    for p in ["syncing", "in_service", "draining"] {
        assert!(phases.contains(&p), "no {p}: {d:#}");
    }
    assert_eq!(d["end"], "terminated", "{d:#}");
    assert!(d["failed"].is_null(), "{d:#}");
    let lead = d["lead_secs"].as_i64().unwrap();
    assert_eq!(
        std::fs::read_to_string(slaves.join(&id).join("index.html")).unwrap(),
        "tee times\n",
        "synced before it took traffic"
    );
    assert!(live(&rt, &aws).is_empty(), "the drill's slave still runs");
    assert!(rt.block_on(elb_members(&aws, &cfg.elb.name)).is_empty());
    let (used, leads) = ledger_and_leads(&state);
    assert_eq!(used, 1, "one cap unit");
    assert_eq!(leads, [lead.max(10)], "the lead time kept for the forecast");

    // The shipped ssh hook and no key: it fails at the sync, says the fix, and cleans up.
    let mut broken = cfg.clone();
    broken.hooks.pre_register = burst_agent::config::Config::default().hooks.pre_register;
    broken.hooks.pre_register.retries = 0;
    broken.hooks.pre_register.timeout = burst_agent::config::Dur::secs(30);
    let n = broken.hooks.pre_register.argv.len();
    broken.hooks.pre_register.argv[n - 2] = format!("{}/", docroot.display());
    let path = write(
        dir.path(),
        "broken.toml",
        &toml::to_string(&broken).unwrap(),
    );
    let (code, out, err) = run(&path, &["--yes"]);
    assert_eq!(code, 1, "{out}\n{err}");
    let key = state.join(".ssh/id_ed25519");
    assert!(out.contains("FAILED in syncing:"), "{out}");
    assert!(
        out.contains(&format!("fix: the ssh key {} is missing", key.display())),
        "{out}"
    );
    assert!(out.contains("end: terminated"), "{out}");
    assert!(live(&rt, &aws).is_empty(), "the failed slave still runs");
    assert!(rt.block_on(elb_members(&aws, &cfg.elb.name)).is_empty());
    assert_eq!(ledger_and_leads(&state).0, 2);
}
