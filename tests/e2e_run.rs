//! End to end: `burst-agent run` samples Debian's real apache2 (driven by `ab`), publishes to
//! and reads from a real moto server, scales out with real rsync into per-slave directories and
//! ELB registration, and scales back in when the load stops. Slaves are played by reporter
//! agents (`role = "reporter"`) sampling an idle apache2. Also: kill -9 mid-scale-out and
//! restart, SIGTERM mid-scale-out, SIGHUP with a broken config, status, and sd_notify.
//! Time is compressed by config (1 s ticks, short windows), never faked.

mod common;

use burst_agent::config::{Config, Dur, LogFormat, PolicyMode, Role, Signal};
use common::agent_proc::{msg, AgentProc};
use common::apache::Apache;
use common::moto::{actuator_config, Moto};
use rustix::process::Signal as Sig;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct World {
    moto: Moto,
    aws: burst_agent::aws::Aws,
    master: Apache,
    dir: tempfile::TempDir,
    rt: tokio::runtime::Runtime,
}

impl World {
    fn new() -> World {
        common::require("rsync", "rsync");
        common::require("ab", "apache2-utils");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let moto = Moto::start();
        let aws = rt.block_on(moto.aws());
        let master = Apache::start(2, 8);
        std::fs::write(master.docroot.join("tee-times.html"), "8:00 9:10\n").unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("slaves")).unwrap();
        World {
            moto,
            aws,
            master,
            dir,
            rt,
        }
    }

    /// The master's config: samples the real apache2, decides on its busy ratio (target 0.5),
    /// acts in moto, syncs with rsync into slaves/<id>/.
    fn config(&self, group: &str) -> Config {
        let state = self.dir.path().join(format!("state-{group}"));
        let mut c = actuator_config(
            &self.moto,
            group,
            &state,
            &self.master.docroot,
            &self.dir.path().join("slaves"),
        );
        c.agent.instance_id = "i-master".into();
        c.agent.shutdown_timeout = Dur::secs(5);
        c.sampling.interval = Dur::secs(1);
        c.sampling.apache_pidfile = self.master.pidfile.clone();
        c.sampling.mod_status_url = format!("{}?auto", self.master.status_url());
        c.sampling.mod_status_timeout = Dur::millis(500);
        c.sampling.apache_max_workers = 8;
        c.sampling.disk_paths = vec![self.dir.path().to_path_buf()];
        c.metrics.namespace = "BurstAgentE2E".into();
        c.metrics.publish_interval = Dur::secs(1);
        c.metrics.storage_resolution = 1;
        c.metrics.fleet_read_interval = Dur::secs(1);
        c.metrics.stale_after = Dur::secs(10);
        c.policy.evaluation_interval = Dur::secs(1);
        c.policy.mode = PolicyMode::TargetTracking;
        c.policy.signals = vec![Signal::ApacheBusyRatio];
        c.policy.targets.apache_busy_ratio = 0.5;
        c.policy.stale_after = Dur::secs(10);
        c.policy.max_slaves = 3;
        c.policy.scale_out_cooldown = Dur::secs(1);
        c.policy.scale_in_cooldown = Dur::secs(1);
        c.policy.scale_in_stabilization = Dur::secs(5);
        c.policy.min_lifetime = Dur::secs(1);
        c.policy.max_kept_per_day = Dur::secs(0);
        c.hooks.content_sync_interval = Dur::secs(10);
        c.elb.draining_timeout = Dur::secs(1);
        c.log.format = LogFormat::Json;
        c.log.level = "info".into();
        // A restart after kill -9 waits for the killed agent's lease to lapse: keep it short.
        c.ledger.lease_duration = Dur::secs(10);
        c
    }

    fn write_config(&self, name: &str, cfg: &Config) -> PathBuf {
        let text = toml::to_string(cfg).expect("config to TOML");
        common::write(self.dir.path(), name, &text)
    }

    fn create_elb(&self, name: &str) {
        self.rt.block_on(self.moto.create_elb(&self.aws, name));
    }

    /// Instance id → EC2 state, for the group.
    fn instances(&self, group: &str) -> BTreeMap<String, String> {
        self.rt.block_on(async {
            let out = self
                .aws
                .ec2
                .describe_instances()
                .filters(
                    aws_sdk_ec2::types::Filter::builder()
                        .name("tag:burst-agent:group")
                        .values(group)
                        .build(),
                )
                .send()
                .await
                .unwrap();
            out.reservations()
                .iter()
                .flat_map(|r| r.instances())
                .map(|i| {
                    (
                        i.instance_id().unwrap().to_string(),
                        i.state().unwrap().name().unwrap().as_str().to_string(),
                    )
                })
                .collect()
        })
    }

    /// How many instances (in any state) carry this launch intent's tag.
    fn tagged_with_intent(&self, intent: &str) -> usize {
        self.rt.block_on(async {
            let out = self
                .aws
                .ec2
                .describe_instances()
                .filters(
                    aws_sdk_ec2::types::Filter::builder()
                        .name("tag:burst-agent:intent")
                        .values(intent)
                        .build(),
                )
                .send()
                .await
                .unwrap();
            out.reservations().iter().map(|r| r.instances().len()).sum()
        })
    }

    fn live(&self, group: &str) -> BTreeSet<String> {
        self.instances(group)
            .into_iter()
            .filter(|(_, s)| s == "running" || s == "pending")
            .map(|(id, _)| id)
            .collect()
    }

    fn elb_members(&self, elb: &str) -> BTreeSet<String> {
        self.rt.block_on(common::moto::elb_members(&self.aws, elb))
    }

    fn slave_page(&self, id: &str) -> String {
        std::fs::read_to_string(
            self.dir
                .path()
                .join("slaves")
                .join(id)
                .join("tee-times.html"),
        )
        .unwrap_or_default()
    }

    fn assert_members_have_content(&self, elb: &str) {
        for id in self.elb_members(elb) {
            assert_eq!(
                self.slave_page(&id),
                "8:00 9:10\n",
                "{id} registered without the master's content"
            );
        }
    }

    fn load(&self, secs: u32) -> Child {
        Command::new("ab")
            .args(["-q", "-c", "64", "-t", &secs.to_string(), "-n", "10000000"])
            .arg(format!("http://127.0.0.1:{}/index.html", self.master.port))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start ab")
    }
}

/// An operator's `burst-agent takeover --yes` with the config at `config`, against moto.
fn takeover_yes(config: &Path) -> std::process::Output {
    Command::new(common::bin())
        .args(["--config", config.to_str().unwrap(), "takeover", "--yes"])
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .unwrap()
}

fn stop(mut c: Child) {
    let _ = c.kill();
    let _ = c.wait();
}

fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool, agent: &AgentProc) {
    let t = Instant::now();
    while !f() {
        assert!(
            t.elapsed() < Duration::from_secs(secs),
            "{what}: not within {secs} s; agent log:\n{}",
            agent.tail()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn ledger_used(state: &Path) -> usize {
    let text = std::fs::read_to_string(state.join("state.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["cap"]["entries"].as_array().unwrap().len()
}

#[test]
fn ab_load_scales_out_in_moto_with_rsync_and_back_in_when_it_stops() {
    let w = World::new();
    let cfg = w.config("e2e");
    w.create_elb(&cfg.elb.name);
    let path = w.write_config("master.toml", &cfg);
    let mut agent = AgentProc::start(&path, &[], &w.dir.path().join("master.log"));
    agent.wait_log("ready", 60, |v| msg(v).starts_with("ready"));

    // The slaves' own agents: reporters sampling an idle apache2, one per slave.
    let idle = Apache::start(1, 8);
    let mut reporters: BTreeMap<String, AgentProc> = BTreeMap::new();
    let start_reporter = |id: &str| {
        let mut rc = cfg.clone();
        rc.agent.role = Role::Reporter;
        rc.agent.instance_id = id.into();
        rc.agent.state_dir = w.dir.path().join(format!("state-{id}"));
        rc.sampling.apache_pidfile = idle.pidfile.clone();
        rc.sampling.mod_status_url = format!("{}?auto", idle.status_url());
        let p = w.write_config(&format!("{id}.toml"), &rc);
        AgentProc::start(&p, &[], &w.dir.path().join(format!("{id}.log")))
    };

    let ab = w.load(60);
    let t = Instant::now();
    loop {
        for id in w.live("e2e") {
            reporters
                .entry(id.clone())
                .or_insert_with(|| start_reporter(&id));
        }
        w.assert_members_have_content(&cfg.elb.name);
        if !w.elb_members(&cfg.elb.name).is_empty() {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "no slave in the ELB after 60 s of load:\n{}",
            agent.tail()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    stop(ab);
    let launched = w.instances("e2e").len();
    assert!((1..=3).contains(&launched), "{launched} launched");
    let out = agent.lines();
    let scale_out = out
        .iter()
        .find(|v| v["action"] == "scale_out")
        .expect("a scale_out decision line");
    assert!(msg(scale_out).contains("apache_busy_ratio"), "{scale_out}");
    assert!(
        scale_out["reasons"].to_string().contains("AboveTarget"),
        "{scale_out}"
    );

    // The load is gone: after the stabilization window the agent releases every slave.
    wait_until(
        "all slaves terminated after the load stopped",
        90,
        || {
            for id in w.live("e2e") {
                reporters
                    .entry(id.clone())
                    .or_insert_with(|| start_reporter(&id));
            }
            w.assert_members_have_content(&cfg.elb.name);
            w.live("e2e").is_empty()
        },
        &agent,
    );
    assert!(w.elb_members(&cfg.elb.name).is_empty());
    assert!(
        agent.lines().iter().any(|v| v["action"] == "scale_in"),
        "a scale_in decision line"
    );
    let total = w.instances("e2e").len();
    assert_eq!(
        ledger_used(&cfg.agent.state_dir),
        total,
        "every instance is in the ledger"
    );
    assert!(total <= 7, "burst cap");

    // status shows the running agent; then SIGTERM stops it cleanly.
    let st = common::agent(&["--config", path.to_str().unwrap(), "status"]);
    let text = common::stdout(&st);
    assert!(
        text.contains("running (pid"),
        "{text}{}",
        common::stderr(&st)
    );
    assert!(text.contains("burst cap"), "{text}");
    agent.signal(Sig::TERM);
    assert!(agent.wait_exit(30).success(), "{}", agent.tail());
    let st = common::agent(&["--config", path.to_str().unwrap(), "status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(v["state"], "stopped");
    assert_eq!(v["alive"], false);
}

/// A pre_register hook slow enough to kill the agent in the middle of it. Each `sleep` it
/// starts writes its pid to `sync-pids` in the test's directory.
fn slow_sync(w: &World, cfg: &mut Config, secs: u32) {
    cfg.hooks.pre_register.argv = vec![
        "sh".into(),
        "-c".into(),
        format!(
            "sleep {secs} & echo $! >> {}; wait $!; exec rsync -a --delete {}/ {}/$0/",
            w.dir.path().join("sync-pids").display(),
            w.master.docroot.display(),
            w.dir.path().join("slaves").display()
        ),
        "{instance_id}".into(),
    ];
}

/// Whether process `pid` is gone (or a zombie) within 5 s.
fn dies_soon(pid: &str) -> bool {
    for _ in 0..250 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat.is_empty() || stat.contains(") Z ") {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn kill_9_mid_scale_out_then_restart_finishes_the_job_without_double_launch() {
    let w = World::new();
    let mut cfg = w.config("crash");
    cfg.policy.scale_in_stabilization = Dur::secs(600);
    slow_sync(&w, &mut cfg, 3);
    w.create_elb(&cfg.elb.name);
    let path = w.write_config("crash.toml", &cfg);
    let log = w.dir.path().join("crash.log");
    let mut agent = AgentProc::start(&path, &[], &log);
    agent.wait_log("ready", 60, |v| msg(v).starts_with("ready"));
    let ab = w.load(60);
    wait_until("a launch", 60, || !w.live("crash").is_empty(), &agent);
    agent.kill9();
    stop(ab);
    let launched = w.live("crash");
    assert!(
        w.elb_members(&cfg.elb.name).is_empty(),
        "killed before registering"
    );

    let mut again = AgentProc::start(&path, &[], &log);
    wait_until(
        "the adopted slaves synced and registered",
        60,
        || {
            w.assert_members_have_content(&cfg.elb.name);
            w.elb_members(&cfg.elb.name) == launched
        },
        &again,
    );
    // No orphan and no double launch: the load is gone, so nothing new was needed.
    assert_eq!(w.live("crash"), launched);
    assert_eq!(w.instances("crash").len(), launched.len());
    assert_eq!(
        ledger_used(&cfg.agent.state_dir),
        launched.len(),
        "ledger intact"
    );
    let j = std::fs::read_to_string(cfg.agent.state_dir.join("state.json")).unwrap();
    assert!(!j.contains("\"started\""), "no open launch intent: {j}");
    again.signal(Sig::TERM);
    assert!(again.wait_exit(30).success());
}

#[test]
fn sigterm_during_a_scale_out_exits_cleanly_within_the_deadline() {
    let w = World::new();
    let mut cfg = w.config("term");
    slow_sync(&w, &mut cfg, 60);
    cfg.agent.shutdown_timeout = Dur::secs(2);
    w.create_elb(&cfg.elb.name);
    let path = w.write_config("term.toml", &cfg);
    let mut agent = AgentProc::start(&path, &[], &w.dir.path().join("term.log"));
    agent.wait_log("ready", 60, |v| msg(v).starts_with("ready"));
    let ab = w.load(60);
    wait_until("a launch", 60, || !w.live("term").is_empty(), &agent);
    // Let the sync hook start.
    std::thread::sleep(Duration::from_secs(2));
    let t = Instant::now();
    agent.signal(Sig::TERM);
    let st = agent.wait_exit(30);
    let took = t.elapsed();
    stop(ab);
    assert!(st.success(), "{st}: {}", agent.tail());
    assert!(took < Duration::from_secs(20), "took {took:?}");
    assert!(
        w.elb_members(&cfg.elb.name).is_empty(),
        "never registered unsynced"
    );
    let launched = w.live("term").len();
    assert_eq!(
        ledger_used(&cfg.agent.state_dir),
        launched,
        "launched slaves recorded"
    );
    let status: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(cfg.agent.state_dir.join("status.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(status["state"], "stopped");
    // The killed hook left none of its processes behind (its `sleep`, not only its shell).
    let pids = std::fs::read_to_string(w.dir.path().join("sync-pids")).unwrap_or_default();
    assert!(!pids.trim().is_empty(), "the sync hook never started");
    for pid in pids.split_whitespace() {
        assert!(
            dies_soon(pid),
            "the hook's sleep {pid} survived the agent's exit"
        );
    }
}

/// A dry run on this host alone (no AWS), 1 s ticks, state in `dir`.
fn local_dry_run(dir: &Path) -> Config {
    let mut cfg = Config::default();
    cfg.agent.state_dir = dir.join("state");
    cfg.agent.dry_run = true;
    cfg.agent.instance_id = "i-local".into();
    cfg.sampling.interval = Dur::secs(1);
    cfg.sampling.mod_status_timeout = Dur::millis(200);
    cfg.sampling.disk_paths = vec![dir.to_path_buf()];
    cfg.policy.evaluation_interval = Dur::secs(1);
    cfg
}

#[test]
fn sighup_with_a_broken_config_keeps_the_running_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = local_dry_run(dir.path());
    cfg.log.format = LogFormat::Json;
    let path = common::write(dir.path(), "agent.toml", &toml::to_string(&cfg).unwrap());
    let mut agent = AgentProc::start(&path, &["--dry-run"], &dir.path().join("agent.log"));
    agent.wait_log("ready", 60, |v| msg(v).starts_with("ready"));
    assert!(agent.log_text().contains("dry run on this host alone"));

    std::fs::write(
        &path,
        "[agent]\ngroup = \"x\"\nbogus = 1\n[policy]\nmax_slaves = \"many\"\n",
    )
    .unwrap();
    agent.signal(Sig::HUP);
    let rejected = agent.wait_log("reload rejected", 20, |v| msg(v).contains("rejected"));
    let text = msg(&rejected);
    assert!(
        text.contains("agent.bogus") && text.contains("policy.max_slaves"),
        "{text}"
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(agent.running(), "still running on the old config");

    let mut changed = cfg.clone();
    changed.policy.max_slaves = 5;
    std::fs::write(&path, toml::to_string(&changed).unwrap()).unwrap();
    agent.signal(Sig::HUP);
    agent.wait_log("reload applied", 20, |v| {
        msg(v).contains("reloaded and applied")
    });

    let st = common::agent(&["--config", path.to_str().unwrap(), "status"]);
    assert!(
        common::stdout(&st).contains("running (pid"),
        "{}",
        common::stdout(&st)
    );
    agent.signal(Sig::TERM);
    assert!(agent.wait_exit(20).success());
    let st = common::agent(&["--config", path.to_str().unwrap(), "status"]);
    assert!(
        common::stdout(&st).contains("stopped"),
        "{}",
        common::stdout(&st)
    );
}

#[test]
fn systemd_hears_ready_status_watchdog_and_stopping() {
    use std::os::unix::net::UnixDatagram;
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let cfg = local_dry_run(dir.path());
    let path = common::write(dir.path(), "agent.toml", &toml::to_string(&cfg).unwrap());
    let mut child = Command::new(common::bin())
        .args(["--config", path.to_str().unwrap(), "run"])
        .env("NOTIFY_SOCKET", &sock_path)
        .env_remove("RUST_LOG")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    let t = Instant::now();
    while !(seen.contains("READY=1") && seen.matches("WATCHDOG=1").count() >= 2) {
        assert!(t.elapsed() < Duration::from_secs(30), "heard only: {seen}");
        let n = sock.recv(&mut buf).expect("a notification");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        seen.push('\n');
    }
    assert!(seen.contains("STATUS=0 slaves in service"), "{seen}");
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(child.id() as i32).unwrap(),
        Sig::TERM,
    )
    .unwrap();
    let mut stopping = false;
    while let Ok(n) = sock.recv(&mut buf) {
        if String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1") {
            stopping = true;
            break;
        }
    }
    assert!(stopping, "no STOPPING=1");
    assert!(child.wait().unwrap().success());
}

/// The agent against moto behind a proxy that fails one request in five (throttling, 503, reset
/// before the request, response lost after it took effect, latency, no capacity), killed with
/// SIGKILL mid-scale-out and restarted, under real load. Checked directly in moto: never more
/// instances than the cap, no slave in the ELB without the master's content, another install's
/// instance never touched, every slave released once the load and the faults stop, and the
/// ledger counting every instance once.
#[test]
fn faults_at_every_call_and_kill_9_keep_the_promises() {
    use common::fault_proxy::FaultProxy;
    let w = World::new();
    let proxy = FaultProxy::start(&w.moto.endpoint, 0.2, 42);
    let mut cfg = w.config("faults");
    cfg.aws.endpoint_url = proxy.endpoint.clone();
    cfg.cap.daily_limit = 3;
    cfg.policy.max_slaves = 3;
    cfg.fleet.subnet_ids = Vec::new();
    w.create_elb(&cfg.elb.name);
    // Another install's slave with this group's name, running.
    let other = w.rt.block_on(async {
        use aws_sdk_ec2::types::{ResourceType, Tag, TagSpecification};
        let tags = TagSpecification::builder()
            .resource_type(ResourceType::Instance)
            .tags(
                Tag::builder()
                    .key("burst-agent:group")
                    .value("faults")
                    .build(),
            )
            .tags(
                Tag::builder()
                    .key("burst-agent:owner")
                    .value("another-elb")
                    .build(),
            )
            .tags(
                Tag::builder()
                    .key("burst-agent:intent")
                    .value("bi-0123456789ab")
                    .build(),
            )
            .build();
        let out = w
            .aws
            .ec2
            .run_instances()
            .image_id("ami-12c6146b")
            .min_count(1)
            .max_count(1)
            .tag_specifications(tags)
            .send()
            .await
            .unwrap();
        out.instances()[0].instance_id().unwrap().to_string()
    });
    let ours = |w: &World| -> BTreeSet<String> {
        w.instances("faults")
            .into_keys()
            .filter(|id| *id != other)
            .collect()
    };
    let path = w.write_config("faults.toml", &cfg);
    let log = w.dir.path().join("faults.log");
    let mut agent = AgentProc::start(&path, &[], &log);
    agent.wait_log("ready", 60, |v| msg(v).starts_with("ready"));

    let idle = Apache::start(1, 8);
    let mut reporters: BTreeMap<String, AgentProc> = BTreeMap::new();
    let mut start_reporters = |w: &World| {
        for id in w.live("faults").into_iter().filter(|id| *id != other) {
            reporters.entry(id.clone()).or_insert_with(|| {
                let mut rc = cfg.clone();
                rc.agent.role = Role::Reporter;
                rc.agent.instance_id = id.clone();
                rc.agent.state_dir = w.dir.path().join(format!("state-{id}"));
                rc.aws.endpoint_url = w.moto.endpoint.clone();
                rc.sampling.apache_pidfile = idle.pidfile.clone();
                rc.sampling.mod_status_url = format!("{}?auto", idle.status_url());
                let p = w.write_config(&format!("{id}.toml"), &rc);
                AgentProc::start(&p, &[], &w.dir.path().join(format!("{id}.log")))
            });
        }
    };
    let check = |w: &World| {
        w.assert_members_have_content(&cfg.elb.name);
        let n = ours(w).len();
        assert!(n <= 3, "{n} instances launched, cap 3");
        assert!(
            !w.elb_members(&cfg.elb.name).contains(&other),
            "another install's instance registered"
        );
    };

    proxy.faults(true);
    // The first launch finds no capacity (one attempt, no SDK retry: the agent backs off for
    // 60 s with a single subnet); the next one's answer is lost after EC2 launched: it stays
    // counted and is found by its intent tag (or, asked again by the agent, answered with the
    // same instances by its client token).
    proxy.script_run_instances(&[
        common::fault_proxy::Fault::NoCapacity,
        common::fault_proxy::Fault::LostResponse,
    ]);
    let ab = w.load(110);
    wait_until(
        "a launch through the faults",
        120,
        || !ours(&w).is_empty(),
        &agent,
    );
    agent.kill9();
    let mut agent = AgentProc::start(&path, &[], &log);
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(25) {
        start_reporters(&w);
        check(&w);
        std::thread::sleep(Duration::from_millis(200));
    }
    stop(ab);
    proxy.faults(false);
    wait_until(
        "every slave released after the load and the faults stopped",
        120,
        || {
            start_reporters(&w);
            check(&w);
            w.live("faults").iter().all(|id| *id == other)
        },
        &agent,
    );
    let (faults, requests, replays) = proxy.stats();
    eprintln!("proxy: {requests} requests, faults injected {faults:?}, {replays} RunInstances answered by client token");
    assert!(
        faults.values().sum::<u64>() >= 20,
        "too few faults to show anything: {faults:?}"
    );
    use common::fault_proxy::Fault;
    assert!(faults.contains_key(&Fault::NoCapacity) && faults.contains_key(&Fault::LostResponse));
    // The launch whose answer was lost took effect: it was found by its intent tag, or asked
    // again with the same client token (answered with the same instances), never launched
    // twice (the count above).
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        replays >= 1 || text.contains("launch intent resolved from tags"),
        "the lost launch was not resolved:\n{text}"
    );
    let launched = ours(&w);
    assert!(!launched.is_empty() && launched.len() <= 3, "{launched:?}");
    assert!(
        w.live("faults").contains(&other),
        "another install's instance was terminated"
    );
    // The ledger counts each instance once: the entries bound to an instance are exactly the
    // instances launched. Beyond them, only attempts of a launch that EC2 may still be about to
    // list may count: the agent cannot tell a RunInstances whose answer said nothing (a reset, a
    // 503, a lost response) from a launch EC2 has not listed yet, so its attempts stay charged,
    // journaled as open, until EC2 has had 300 s since the last call to list them (the actuator's
    // unit tests show them withdrawn then). Checked intent by intent: an unbound entry belongs
    // to an intent still open, inside that window, with fewer instances carrying its tag than
    // it has attempts, and each intent holds exactly its own attempts.
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(cfg.agent.state_dir.join("state.json")).unwrap(),
    )
    .unwrap();
    let entries = state["cap"]["entries"].as_array().unwrap().clone();
    let ledger_lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("cap ledger") || l.contains("launch"))
        .collect();
    let why = format!(
        "launched {launched:?}\nentries: {entries:#?}\nintents: {:#}\n{}",
        state["intents"],
        ledger_lines.join("\n")
    );
    let mut bound: Vec<String> = entries
        .iter()
        .filter_map(|e| e["instance_id"].as_str().map(str::to_string))
        .collect();
    bound.sort();
    assert_eq!(
        bound,
        launched.iter().cloned().collect::<Vec<_>>(),
        "the ledger counts each instance once: {why}"
    );
    let intents = state["intents"].as_array().unwrap();
    let now = jiff::Timestamp::now();
    // Units the shared table counts that this state directory cannot name (a refund the table
    // did not acknowledge before a kill -9) stand as placeholders (`counted-…`): with the
    // launched instances, never more than the table counts for the day.
    let placeholder = |e: &serde_json::Value| {
        e["instance_id"].is_null() && e["key"].as_str().is_some_and(|k| k.starts_with("counted-"))
    };
    let placeholders = entries.iter().filter(|e| placeholder(e)).count();
    if placeholders > 0 {
        let day = jiff::tz::TimeZone::UTC.to_datetime(now).date().to_string();
        let table = burst_agent::table::Table::new(
            w.aws.clone(),
            common::moto::LEDGER_TABLE,
            &cfg.agent.group,
        );
        let used = w.rt.block_on(table.day_used(&day)).unwrap();
        assert!(
            placeholders + bound.len() <= used as usize,
            "{placeholders} placeholder(s) and {} launched, the table counts {used}: {why}",
            bound.len()
        );
    }
    for e in entries
        .iter()
        .filter(|e| e["instance_id"].is_null() && !placeholder(e))
    {
        let key = e["key"].as_str().unwrap_or("");
        let id = key.split('#').next().unwrap_or("");
        let intent = intents
            .iter()
            .find(|i| i["id"] == id)
            .unwrap_or_else(|| panic!("an entry with no instance and no intent: {e}\n{why}"));
        assert!(
            e["ended_at"].is_null() && intent["outcome"]["state"] == "started",
            "an entry with no instance whose launch is not open: {e}\n{why}"
        );
        let since: jiff::Timestamp = intent["last_sent"]
            .as_str()
            .or(intent["created_at"].as_str())
            .unwrap()
            .parse()
            .unwrap();
        let age = now.duration_since(since).as_secs();
        assert!(
            age <= 300 + 15,
            "an open attempt {age} s after its last call, past EC2's 300 s to list it: {e}\n{why}"
        );
        let keys = intent["keys"].as_array().unwrap();
        let tagged = w.tagged_with_intent(id);
        assert!(
            tagged < keys.len(),
            "intent {id}: {tagged} instances carry its tag for {} attempts, yet {key} is open: {why}",
            keys.len()
        );
        let held = entries
            .iter()
            .filter(|e| {
                e["key"]
                    .as_str()
                    .is_some_and(|k| k.split('#').next() == Some(id))
            })
            .count();
        assert_eq!(
            held,
            keys.len(),
            "intent {id} stands for {} attempts, the ledger holds {held}: {why}",
            keys.len()
        );
    }
    agent.signal(Sig::TERM);
    assert!(agent.wait_exit(30).success(), "{}", agent.tail());
}

/// A directory served through a real FUSE mount (sshfs, with sftp-server run directly in place
/// of ssh, and no caching) that can be frozen: SIGSTOP the sftp-server and every stat, listing
/// or statvfs of the mount blocks in the kernel, as on a dead NFS or EFS server.
struct HungMount {
    mnt: PathBuf,
    server: i32,
}

impl HungMount {
    fn new(src: &Path, mnt: &Path) -> HungMount {
        common::require("sshfs", "sshfs");
        common::require("fusermount", "fuse3");
        let sftp = Path::new("/usr/lib/openssh/sftp-server");
        assert!(
            sftp.exists(),
            "{} is missing: `apt-get install -y openssh-sftp-server`",
            sftp.display()
        );
        std::fs::create_dir_all(mnt).unwrap();
        let fake_ssh = mnt.with_extension("ssh");
        std::fs::write(&fake_ssh, format!("#!/bin/sh\nexec {}\n", sftp.display())).unwrap();
        std::fs::set_permissions(
            &fake_ssh,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let o = std::process::Command::new("sshfs")
            .arg("-o")
            .arg(format!(
                "ssh_command={},dir_cache=no,attr_timeout=0,entry_timeout=0,negative_timeout=0",
                fake_ssh.display()
            ))
            .arg(format!("x:{}", src.display()))
            .arg(mnt)
            .output()
            .unwrap();
        assert!(o.status.success(), "sshfs: {}", common::stderr(&o));
        // The sftp-server this mount started: the newest one whose parent is an sshfs.
        let server = std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                cmd.starts_with(sftp.to_str().unwrap().as_bytes())
            })
            .max()
            .expect("the mount's sftp-server");
        HungMount {
            mnt: mnt.to_path_buf(),
            server,
        }
    }

    fn signal(&self, sig: Sig) {
        signal_pid(self.server, sig);
    }

    /// A guard that lets the mount answer again when dropped: declared after the agent, it
    /// thaws the mount before the agent's own drop waits for its hung threads to end.
    fn thaw_guard(&self) -> Thaw {
        Thaw(self.server)
    }
}

struct Thaw(i32);

fn signal_pid(pid: i32, sig: Sig) {
    if let Some(p) = rustix::process::Pid::from_raw(pid) {
        let _ = rustix::process::kill_process(p, sig);
    }
}

impl Drop for Thaw {
    fn drop(&mut self) {
        signal_pid(self.0, Sig::CONT);
    }
}

impl Drop for HungMount {
    fn drop(&mut self) {
        self.signal(Sig::CONT);
        let _ = std::process::Command::new("fusermount")
            .args(["-u", "-z"])
            .arg(&self.mnt)
            .status();
    }
}

/// Issue 28, part 4: the document root on a mount that stops answering. The source check and
/// the sampler's statvfs used to run on the runtime's only thread: the first stat hung the
/// agent (no ticks, no signals, no watchdog ping) and systemd restarted it into the same hang.
/// Now the source counts as missing, launches are held, the agent ticks on and stops on SIGTERM.
#[test]
fn a_content_source_on_a_hung_mount_holds_launches_and_loses_no_tick() {
    let w = World::new();
    let mount = HungMount::new(&w.master.docroot, &w.dir.path().join("www-mount"));
    let mut cfg = w.config("hung-source");
    let n = cfg.hooks.pre_register.argv.len();
    cfg.hooks.pre_register.argv[n - 2] = format!("{}/", mount.mnt.display());
    cfg.sampling.disk_paths = vec![mount.mnt.clone()];
    w.create_elb(&cfg.elb.name);
    let path = w.write_config("hung.toml", &cfg);
    let mut agent = AgentProc::start(&path, &[], &w.dir.path().join("hung.log"));
    let _thaw = mount.thaw_guard();
    agent.wait_log("ready", 60, |v| msg(v).starts_with("ready"));
    // The status snapshot is written at the end of every tick.
    let snapshot = cfg.agent.state_dir.join("status.json");
    let written = || -> Option<jiff::Timestamp> {
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&snapshot).ok()?).ok()?;
        v["written_at"].as_str()?.parse().ok()
    };
    wait_until("a first tick", 60, || written().is_some(), &agent);

    mount.signal(Sig::STOP);
    let held = agent.wait_log("the hung source held", 60, |v| {
        msg(v).contains("a hung mount?") && msg(v).contains("counts as missing")
    });
    assert!(msg(&held).contains("www-mount"), "{held}");
    // Ticks go on (one a second): the snapshot of the last tick stays fresh.
    for _ in 0..5 {
        std::thread::sleep(Duration::from_secs(2));
        let age = jiff::Timestamp::now().duration_since(written().unwrap());
        assert!(
            age.as_secs() <= 3,
            "the last tick was {}s ago while the source hung:\n{}",
            age.as_secs(),
            agent.tail()
        );
    }
    // The sampler names the disk it could not read and samples the rest.
    assert!(
        agent.log_text().contains("statvfs of sampling.disk_paths"),
        "{}",
        agent.tail()
    );
    let st = common::agent(&["--config", path.to_str().unwrap(), "status"]);
    let out = common::stdout(&st);
    assert!(out.contains("HELD") && out.contains("www-mount"), "{out}");

    // It stops: the shutdown never waits on the hung thread. The process itself ends once
    // the kernel lets that thread go (a thread blocked on a FUSE or NFS request stays until
    // the server answers, whatever signal comes).
    agent.signal(Sig::TERM);
    agent.wait_log("stopped cleanly", 30, |v| {
        msg(v).contains("stopped cleanly")
    });
    mount.signal(Sig::CONT);
    assert!(agent.wait_exit(30).success(), "{}", agent.tail());
}

/// Issue 19, the first measured case, through CloudWatch as its writer would send it: while the
/// master is idle, something holding a serving slave's credentials publishes `ApacheBusyRatio =
/// 1.0` and `LoadPerCpu = 50` for that slave's own InstanceId every second. Before corroboration
/// the agent launched up to `max_slaves`; now it launches nothing, and its decision names the
/// slave as uncorroborated. (A value out of range, `LoadPerCpu = 1000`, is rejected by name.)
#[test]
fn a_slaves_forged_metrics_through_cloudwatch_launch_nothing_while_the_master_is_idle() {
    let w = World::new();
    let mut cfg = w.config("forged-metric");
    cfg.policy.min_slaves = 1;
    cfg.policy.max_slaves = 3;
    w.create_elb(&cfg.elb.name);
    let path = w.write_config("master.toml", &cfg);
    let mut agent = AgentProc::start(&path, &[], &w.dir.path().join("master.log"));
    agent.wait_log("ready", 60, |v| msg(v).starts_with("ready"));
    wait_until(
        "the floor's slave in the ELB",
        60,
        || w.elb_members(&cfg.elb.name).len() == 1,
        &agent,
    );
    let slave = w.elb_members(&cfg.elb.name).into_iter().next().unwrap();
    let forge = |metric: &str, value: f64| {
        use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit};
        let d = MetricDatum::builder()
            .metric_name(metric)
            .dimensions(
                Dimension::builder()
                    .name("Group")
                    .value("forged-metric")
                    .build(),
            )
            .dimensions(
                Dimension::builder()
                    .name("InstanceId")
                    .value(&slave)
                    .build(),
            )
            .value(value)
            .unit(StandardUnit::None)
            .storage_resolution(1)
            .timestamp(aws_smithy_types::DateTime::from_secs(
                jiff::Timestamp::now().as_second(),
            ))
            .build();
        w.rt.block_on(
            w.aws
                .cloudwatch
                .put_metric_data()
                .namespace("BurstAgentE2E")
                .metric_data(d)
                .send(),
        )
        .expect("PutMetricData");
    };
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(20) {
        forge("ApacheBusyRatio", 1.0);
        forge("LoadPerCpu", 50.0);
        assert_eq!(
            w.live("forged-metric").len(),
            1,
            "a forged report launched a slave:\n{}",
            agent.tail()
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    let said = agent.log_text();
    assert!(
        said.contains("Uncorroborated") && said.contains(&format!("{slave} reported")),
        "the decision does not name the forger:\n{}",
        agent.tail()
    );
    forge("LoadPerCpu", 1000.0);
    agent.wait_log("the out-of-range value rejected by name", 20, |v| {
        msg(v).contains("outside the signal's range") && msg(v).contains(&slave)
    });
    assert_eq!(w.live("forged-metric").len(), 1);
    agent.signal(Sig::TERM);
    assert!(agent.wait_exit(30).success(), "{}", agent.tail());
}

/// Issue 19, the third measured case, with the real binary: every `pre_register` fails the same
/// way (`Permission denied (publickey)`, a slave image without the master's key). The agent
/// spends at most 2 cap units, then holds with `SyncBroken`; once the hook is fixed and the
/// agent reloaded (SIGHUP, as `systemctl reload` sends it), it scales out at the next decision.
#[test]
fn a_sync_that_always_fails_spends_two_units_then_holds_until_fixed_and_reloaded() {
    let w = World::new();
    let mut cfg = w.config("broken-sync");
    cfg.policy.min_slaves = 2;
    cfg.policy.max_slaves = 3;
    let good = cfg.hooks.pre_register.clone();
    cfg.hooks.pre_register.argv = vec![
        "sh".into(),
        "-c".into(),
        "echo 'burst-agent@{private_ip}: Permission denied (publickey).' >&2; exit 255".into(),
    ];
    cfg.hooks.pre_register.retries = 0;
    w.create_elb(&cfg.elb.name);
    let path = w.write_config("master.toml", &cfg);
    let mut agent = AgentProc::start(&path, &[], &w.dir.path().join("master.log"));
    agent.wait_log("ready", 60, |v| msg(v).starts_with("ready"));
    agent.wait_log("the brake", 90, |v| {
        v["reasons"].to_string().contains("SyncBroken")
    });
    // A while at full demand (the floor wants 2): nothing more is spent.
    std::thread::sleep(Duration::from_secs(8));
    let spent = ledger_used(&cfg.agent.state_dir);
    assert!(spent <= 2, "{spent} cap units on a sync that cannot work");
    assert!(
        w.elb_members(&cfg.elb.name).is_empty(),
        "registered unsynced"
    );
    let st = common::agent(&["--config", path.to_str().unwrap(), "status"]);
    let text = common::stdout(&st);
    assert!(text.contains("launches  HELD"), "{text}");
    // Fixed, reloaded: the next decisions launch and the slaves serve.
    cfg.hooks.pre_register = good;
    std::fs::write(&path, toml::to_string(&cfg).unwrap()).unwrap();
    agent.signal(Sig::HUP);
    wait_until(
        "2 slaves in the ELB after the fix and the reload",
        90,
        || w.elb_members(&cfg.elb.name).len() == 2,
        &agent,
    );
    w.assert_members_have_content(&cfg.elb.name);
    agent.signal(Sig::TERM);
    assert!(agent.wait_exit(30).success(), "{}", agent.tail());
}

/// Issue 19, part 5, with the real binary: the wall clock steps 30 minutes forward (libfaketime
/// moves what `clock_gettime(CLOCK_REALTIME)` returns, as an NTP step after a VM resume or an
/// operator's `date -s` would; the monotonic clocks keep running) while the floor's slave is
/// in its `pre_register` hook. Before the agent kept its own clock, that step read as "sync
/// under way for more than 68 s", ended the healthy slave and launched a replacement. Now the
/// slave finishes its sync, registers with content, nothing else is launched, and the log says
/// `clock_step`.
#[test]
fn a_30_minute_wall_clock_step_mid_sync_ends_no_slave_and_launches_no_replacement() {
    let lib = Path::new("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1");
    assert!(
        lib.exists(),
        "{} is missing: `apt-get install -y faketime`, or run scripts/test.sh",
        lib.display()
    );
    let w = World::new();
    let mut cfg = w.config("clock");
    cfg.policy.min_slaves = 1;
    cfg.policy.max_slaves = 3;
    slow_sync(&w, &mut cfg, 8);
    w.create_elb(&cfg.elb.name);
    let path = w.write_config("clock.toml", &cfg);
    let offset = w.dir.path().join("faketime-offset");
    std::fs::write(&offset, "+0\n").unwrap();
    let env: [(&str, &std::ffi::OsStr); 4] = [
        ("LD_PRELOAD", lib.as_os_str()),
        ("FAKETIME_TIMESTAMP_FILE", offset.as_os_str()),
        // Read the file at every call, not every 10 s.
        ("FAKETIME_NO_CACHE", "1".as_ref()),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1".as_ref()),
    ];
    let mut agent = AgentProc::start_with(&path, &[], &w.dir.path().join("clock.log"), &env);
    agent.wait_log("ready", 60, |v| msg(v).starts_with("ready"));
    let pids = w.dir.path().join("sync-pids");
    wait_until(
        "the floor's slave in its pre_register hook",
        60,
        || std::fs::read_to_string(&pids).is_ok_and(|p| !p.trim().is_empty()),
        &agent,
    );
    let launched = w.live("clock");
    assert_eq!(launched.len(), 1, "{launched:?}");
    assert!(
        w.elb_members(&cfg.elb.name).is_empty(),
        "registered mid-sync"
    );
    std::fs::write(&offset, "+30m\n").unwrap();
    let step = agent.wait_log("the step logged", 30, |v| {
        msg(v).contains("the wall clock stepped")
    });
    let secs = step["step_secs"].as_i64().unwrap_or(0);
    assert!((1790..=1810).contains(&secs), "step_secs {secs}: {step}");
    wait_until(
        "the slave synced and in the ELB",
        60,
        || w.elb_members(&cfg.elb.name) == launched,
        &agent,
    );
    w.assert_members_have_content(&cfg.elb.name);
    // A while after: still that one slave, one cap unit, and it is in service.
    std::thread::sleep(Duration::from_secs(8));
    assert_eq!(
        w.instances("clock").len(),
        1,
        "a replacement was launched:\n{}",
        agent.tail()
    );
    assert_eq!(w.live("clock"), launched);
    assert_eq!(w.elb_members(&cfg.elb.name), launched);
    assert_eq!(ledger_used(&cfg.agent.state_dir), 1);
    let failed = agent
        .lines()
        .into_iter()
        .filter(|v| msg(v).contains("it will be terminated") || msg(v).contains("-> Failed"))
        .count();
    assert_eq!(failed, 0, "a slave was failed:\n{}", agent.tail());
    let said = agent.log_text();
    assert!(
        said.contains("clock_step"),
        "no clock_step event:\n{}",
        agent.tail()
    );
    agent.signal(Sig::TERM);
    assert!(agent.wait_exit(30).success(), "{}", agent.tail());
}

/// Issue 21, part 3, through the real binary: a serving slave whose reporter publishes nothing
/// (here none runs, as when the master's example is left in dry run on a slave) is named once
/// it has been quiet for `metrics.stale_after`: a `slave_silent` event, `SILENT` in `status`,
/// and `SlavesSilent` = 1 published for its alarm. Once its reporter runs, it reports again and
/// `SlavesSilent` goes back to 0.
#[test]
fn a_serving_slave_that_never_reports_is_named_silent_until_its_reporter_runs() {
    let w = World::new();
    let mut cfg = w.config("silent");
    cfg.policy.min_slaves = 1;
    cfg.policy.max_slaves = 1;
    w.create_elb(&cfg.elb.name);
    let path = w.write_config("master.toml", &cfg);
    let mut agent = AgentProc::start(&path, &[], &w.dir.path().join("master.log"));
    agent.wait_log("ready", 60, |v| msg(v).starts_with("ready"));
    wait_until(
        "the floor's slave in the ELB",
        60,
        || w.elb_members(&cfg.elb.name).len() == 1,
        &agent,
    );
    let t = Instant::now();
    let slave = w.elb_members(&cfg.elb.name).into_iter().next().unwrap();
    let ev = agent.wait_log("the slave_silent event", 60, |v| {
        v["event"] == "slave_silent"
    });
    // Not before it had the whole window (10 s) to report; a tick and a poll of slack.
    assert!(
        t.elapsed() >= Duration::from_secs(8),
        "{:?}: {ev}",
        t.elapsed()
    );
    assert!(
        msg(&ev).contains(&slave) && msg(&ev).contains("metrics.stale_after"),
        "{ev}"
    );
    let status = || {
        let o = common::agent(&["--config", path.to_str().unwrap(), "status"]);
        common::stdout(&o)
    };
    let s = status();
    assert!(s.contains(&slave) && s.contains("SILENT"), "{s}");
    let newest_silent = || {
        w.rt.block_on(async {
            let now = aws_smithy_types::DateTime::from_secs(jiff::Timestamp::now().as_second());
            let from = aws_smithy_types::DateTime::from_secs(now.secs() - 600);
            let out = w
                .aws
                .cloudwatch
                .get_metric_statistics()
                .namespace("BurstAgentE2E/Agent")
                .metric_name("SlavesSilent")
                .dimensions(
                    aws_sdk_cloudwatch::types::Dimension::builder()
                        .name("Group")
                        .value("silent")
                        .build(),
                )
                .start_time(from)
                .end_time(aws_smithy_types::DateTime::from_secs(now.secs() + 60))
                .period(1)
                .statistics(aws_sdk_cloudwatch::types::Statistic::Maximum)
                .send()
                .await
                .expect("GetMetricStatistics");
            out.datapoints()
                .iter()
                .max_by_key(|d| d.timestamp().map(|t| t.secs()))
                .and_then(|d| d.maximum())
        })
    };
    wait_until(
        "SlavesSilent = 1 in CloudWatch",
        30,
        || newest_silent() == Some(1.0),
        &agent,
    );

    // Its reporter starts: it reports again.
    let idle = Apache::start(1, 8);
    let mut rc = cfg.clone();
    rc.agent.role = Role::Reporter;
    rc.agent.instance_id = slave.clone();
    rc.agent.state_dir = w.dir.path().join("state-reporter");
    rc.sampling.apache_pidfile = idle.pidfile.clone();
    rc.sampling.mod_status_url = format!("{}?auto", idle.status_url());
    let rp = w.write_config("reporter.toml", &rc);
    let _reporter = AgentProc::start(&rp, &[], &w.dir.path().join("reporter.log"));
    agent.wait_log("reports again", 60, |v| {
        msg(v).contains(&format!("slave {slave} reports again"))
    });
    wait_until(
        "SlavesSilent = 0 in CloudWatch",
        30,
        || newest_silent() == Some(0.0),
        &agent,
    );
    let s = status();
    assert!(!s.contains("SILENT"), "{s}");
    agent.signal(Sig::TERM);
    assert!(agent.wait_exit(30).success(), "{}", agent.tail());
}

/// Issue 28: a copy of the master (a test environment built from a snapshot of production
/// while it runs) boots with the same config and a copy of its state directory, its own
/// instance id and its own document root (a staging copy), while the first master runs and
/// both are busy. The site's lease keeps the copy on standby: in all, no more than the day's
/// cap is launched, the copy pushes no content anywhere, and its `status` names the holder.
#[test]
fn a_copy_of_the_master_with_a_copied_state_directory_stands_by_and_spends_nothing() {
    let w = World::new();
    let mut cfg = w.config("copy");
    cfg.cap.daily_limit = 3;
    cfg.policy.max_slaves = 6;
    cfg.policy.max_step_out = 2;
    w.create_elb(&cfg.elb.name);
    let path = w.write_config("master.toml", &cfg);
    let mut master = AgentProc::start(&path, &[], &w.dir.path().join("master.log"));
    master.wait_log("the master holds the lease", 60, |v| {
        msg(v).contains("holds the site's lease now")
    });
    master.wait_log("ready", 60, |v| msg(v).starts_with("ready"));

    // The copy: the same state directory as it stood, its own id and a staging docroot.
    let copied = w.dir.path().join("state-copy-of-master");
    let out = Command::new("cp")
        .args(["-a"])
        .arg(&cfg.agent.state_dir)
        .arg(&copied)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let staging = w.dir.path().join("staging");
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::write(staging.join("tee-times.html"), "STAGING\n").unwrap();
    std::fs::write(staging.join("staging-only.html"), "staging\n").unwrap();
    let mut copy_cfg = cfg.clone();
    copy_cfg.agent.instance_id = "i-copy".into();
    copy_cfg.agent.state_dir = copied.clone();
    copy_cfg.hooks.pre_register.argv[3] = format!("{}/", staging.display());
    let copy_path = w.write_config("copy.toml", &copy_cfg);
    let mut copy = AgentProc::start(&copy_path, &[], &w.dir.path().join("copy.log"));
    copy.wait_log("the copy stands by", 60, |v| {
        msg(v).contains("this agent stands by")
    });

    // Both busy for a while: the master spends the cap, the copy nothing.
    let ab = w.load(40);
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(40) {
        w.assert_members_have_content(&cfg.elb.name);
        let all = w.instances("copy");
        assert!(
            all.len() <= 3,
            "{} instances for a cap of 3: {all:?}\nmaster:\n{}\ncopy:\n{}",
            all.len(),
            master.tail(),
            copy.tail()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    stop(ab);
    assert!(
        !w.elb_members(&cfg.elb.name).is_empty(),
        "the master scaled out under load:\n{}",
        master.tail()
    );
    // No slave ever received the staging content.
    for id in w.instances("copy").keys() {
        let dir = w.dir.path().join("slaves").join(id);
        assert!(
            !dir.join("staging-only.html").exists(),
            "the copy pushed its document root onto {id}"
        );
    }
    let copy_log = copy.log_text();
    assert!(
        !copy_log.contains("launched") && !copy_log.contains("reserved in the ledger table"),
        "the copy launched:\n{copy_log}"
    );
    // The copy's status names the holder: the master's instance id and its nonce.
    let st = common::agent(&["--config", copy_path.to_str().unwrap(), "status"]);
    let text = common::stdout(&st);
    assert!(
        text.contains("lease     STANDBY: held by i-master/"),
        "{text}{}",
        common::stderr(&st)
    );
    // Production's agent restarts (an upgrade): a clean stop gives the lease up, and the
    // staging copy, outside the site's ELB, must not take the site over meanwhile.
    master.signal(Sig::TERM);
    assert!(master.wait_exit(30).success(), "{}", master.tail());
    master.wait_log("the master gave the lease up", 5, |v| {
        msg(v).contains("the site's lease is given up")
    });
    std::thread::sleep(Duration::from_secs(8));
    assert!(
        !copy.log_text().contains("holds the site's lease now"),
        "the staging copy took the site over when production stopped:\n{}",
        copy.tail()
    );
    let st = common::agent(&["--config", copy_path.to_str().unwrap(), "status"]);
    let text = common::stdout(&st);
    assert!(
        text.contains("STANDBY: given up on a clean stop by i-master/") && text.contains("LAPSED"),
        "{text}"
    );
    // Until an operator says so.
    let t = takeover_yes(&copy_path);
    assert!(t.status.success(), "{}", common::stderr(&t));
    assert!(
        common::stdout(&t).contains("given up by i-master/"),
        "{}",
        common::stdout(&t)
    );
    copy.wait_log("the copy takes over when told", 30, |v| {
        msg(v).contains("holds the site's lease now")
    });
    copy.signal(Sig::TERM);
    assert!(copy.wait_exit(30).success(), "{}", copy.tail());
}

/// Issue 28: the master restored from an older state.json (the morning's backup) or with its
/// state directory wiped: what it launched since is neither lost nor spent again, because the
/// shared table names it.
#[test]
fn a_restored_or_wiped_state_directory_loses_nothing_and_spends_nothing_again() {
    let w = World::new();
    let mut cfg = w.config("restore");
    cfg.cap.daily_limit = 3;
    cfg.policy.max_slaves = 2;
    // The lease of the stopped agent lapses quickly, so the restarted one takes it over soon.
    cfg.ledger.lease_duration = Dur::secs(10);
    cfg.aws.call_timeout = Dur::secs(5);
    w.create_elb(&cfg.elb.name);
    let path = w.write_config("master.toml", &cfg);
    let mut master = AgentProc::start(&path, &[], &w.dir.path().join("master.log"));
    master.wait_log("ready", 60, |v| msg(v).starts_with("ready"));
    // The morning's backup: before any launch.
    let morning = w.dir.path().join("morning-state.json");
    std::fs::copy(cfg.agent.state_dir.join("state.json"), &morning).unwrap();

    let ab = w.load(60);
    wait_until(
        "a slave serves",
        60,
        || !w.elb_members(&cfg.elb.name).is_empty(),
        &master,
    );
    stop(ab);
    master.signal(Sig::TERM);
    assert!(master.wait_exit(30).success(), "{}", master.tail());
    let launched = w.live("restore");
    let n = launched.len();
    assert!((1..=2).contains(&n), "{launched:?}");

    for (how, restore) in [("restored", true), ("wiped", false)] {
        if restore {
            std::fs::copy(&morning, cfg.agent.state_dir.join("state.json")).unwrap();
        } else {
            std::fs::remove_dir_all(&cfg.agent.state_dir).unwrap();
        }
        let log = w.dir.path().join(format!("master-{how}.log"));
        let mut again = AgentProc::start(&path, &[], &log);
        again.wait_log("holds the lease again", 90, |v| {
            msg(v).contains("holds the site's lease now")
        });
        // Adopted from the table's records: each tracked, the day's units counted once.
        wait_until(
            "the day's units read back from the table",
            60,
            || {
                std::fs::read_to_string(cfg.agent.state_dir.join("status.json"))
                    .ok()
                    .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                    .is_some_and(|v| {
                        v["cap"]["used"].as_u64() >= Some(n as u64)
                            && v["slaves"].as_array().is_some_and(|s| s.len() >= n)
                    })
            },
            &again,
        );
        // Busy again: the cap of 3 allows 3 - n more, never a fresh day's 3.
        let ab = w.load(20);
        std::thread::sleep(Duration::from_secs(20));
        stop(ab);
        let all = w.instances("restore");
        assert!(
            all.len() <= 3,
            "{how}: {} instances for a cap of 3: {all:?}\n{}",
            all.len(),
            again.tail()
        );
        for id in &launched {
            assert!(
                w.live("restore").contains(id),
                "{how}: {id} was lost or ended:\n{}",
                again.tail()
            );
        }
        again.signal(Sig::TERM);
        assert!(again.wait_exit(30).success(), "{}", again.tail());
    }
}

/// `pid` and every process under it: what a VM pause freezes (the agent and its hooks).
fn tree(pid: u32) -> Vec<i32> {
    let mut all = vec![pid as i32];
    let mut i = 0;
    while i < all.len() {
        let parent = all[i];
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(p) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            // pid (comm) state ppid ...: comm may hold spaces, so read after the last ')'.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<i32>().ok());
            if ppid == Some(parent) && !all.contains(&p) {
                all.push(p);
            }
        }
        i += 1;
    }
    all
}

/// Thaws a frozen process tree whatever the test's outcome.
struct Frozen(Vec<i32>);

impl Drop for Frozen {
    fn drop(&mut self) {
        for p in &self.0 {
            signal_pid(*p, Sig::CONT);
        }
    }
}

/// Issue 28: fencing measured at the wire. Each agent signs with its own access key, so the
/// proxy in front of moto knows who sent what. The holder is paused (SIGSTOP of it and its
/// hooks, as a VM pause does) past its lease; the standby, a member of the site's ELB, takes
/// over within the lease plus the call deadline plus a tick, adopts the holder's slaves and
/// spends no unit again; then the old holder wakes. No fleet-changing call of the paused one
/// may reach the proxy after its lease's end, and none of the standby's before it took over.
#[test]
fn a_holder_paused_past_its_lease_sends_no_fleet_changing_call_after_it_and_a_serving_standby_takes_over(
) {
    use common::fault_proxy::FaultProxy;
    let w = World::new();
    let proxy = FaultProxy::start(&w.moto.endpoint, 0.0, 28);
    let mut cfg = w.config("fence");
    cfg.aws.endpoint_url = proxy.endpoint.clone();
    cfg.cap.daily_limit = 3;
    cfg.policy.max_slaves = 3;
    cfg.policy.max_step_out = 1;
    cfg.ledger.lease_duration = Dur::secs(12);
    cfg.aws.call_timeout = Dur::secs(4);
    w.create_elb(&cfg.elb.name);
    // The standby's host: an instance of its own (no group tag) serving from the site's ELB.
    let host = w.rt.block_on(async {
        let out = w
            .aws
            .ec2
            .run_instances()
            .image_id("ami-12c6146b")
            .min_count(1)
            .max_count(1)
            .send()
            .await
            .unwrap();
        let id = out.instances()[0].instance_id().unwrap().to_string();
        w.aws
            .elb
            .register_instances_with_load_balancer()
            .load_balancer_name(&cfg.elb.name)
            .instances(
                aws_sdk_elasticloadbalancing::types::Instance::builder()
                    .instance_id(&id)
                    .build(),
            )
            .send()
            .await
            .unwrap();
        id
    });
    let path = w.write_config("master.toml", &cfg);
    let key = |k: &'static str| ("AWS_ACCESS_KEY_ID", std::ffi::OsStr::new(k));
    let mut master = AgentProc::start_with(
        &path,
        &[],
        &w.dir.path().join("master.log"),
        &[key("AKIDHOLDER")],
    );
    master.wait_log("the master holds the lease", 60, |v| {
        msg(v).contains("holds the site's lease now")
    });
    master.wait_log("ready", 60, |v| msg(v).starts_with("ready"));
    let mut sb = cfg.clone();
    sb.agent.instance_id = host.clone();
    sb.agent.state_dir = w.dir.path().join("state-standby");
    let sb_path = w.write_config("standby.toml", &sb);
    let mut standby = AgentProc::start_with(
        &sb_path,
        &[],
        &w.dir.path().join("standby.log"),
        &[key("AKIDSTANDBY")],
    );
    standby.wait_log("the standby stands by", 60, |v| {
        msg(v).contains("this agent stands by")
    });

    // Busy: the holder scales out. Its first reservation reaches the table, and it is paused
    // (it and its hooks, as a VM pause does) before the answer arrives: when it wakes, the
    // next thing it would send is the launch that reservation was for.
    proxy.hold_reply("AKIDHOLDER", "TransactWriteItems");
    let ab = w.load(120);
    assert!(
        proxy.wait_held(60),
        "the holder reserved nothing under load:\n{}",
        master.tail()
    );
    let pids = tree(master.pid());
    for p in &pids {
        signal_pid(*p, Sig::STOP);
    }
    let paused = Instant::now();
    let frozen = Frozen(pids);
    standby.wait_log("the standby takes over", 60, |v| {
        msg(v).contains("holds the site's lease now")
    });
    let took = paused.elapsed();
    // It last saw the holder's version change at most a renewal (4 s) before the pause, and
    // reads every 2 s; then the lease (12 s) plus the call deadline (4 s + 1 s), and a tick.
    assert!(
        took <= Duration::from_secs(12 + 5 + 4 + 2 + 1),
        "the standby took over {took:?} after the holder was paused"
    );
    // The answer is in the paused holder's socket when it wakes.
    proxy.release();
    std::thread::sleep(Duration::from_secs(1));
    drop(frozen);
    let woke = Instant::now();
    let new_holder = format!("STANDBY: held by {host}/");
    master.wait_log("the old holder stands by", 30, |v| {
        msg(v).contains("this agent stands by")
            && v["lease"].as_str().is_some_and(|l| l.contains(&new_holder))
    });
    // Both run a while: the old holder awake, the new one acting under load.
    std::thread::sleep(Duration::from_secs(15));
    stop(ab);
    let calls = proxy.calls();
    let of = |k: &'static str| {
        calls
            .iter()
            .filter(move |c| c.key == k && c.changes_fleet())
    };
    let holder_end = paused + Duration::from_secs(12);
    let late: Vec<_> = of("AKIDHOLDER").filter(|c| c.at > holder_end).collect();
    assert!(
        calls.iter().any(|c| c.key == "AKIDHOLDER") && calls.iter().any(|c| c.key == "AKIDSTANDBY"),
        "the proxy cannot tell the agents apart: {:?}",
        calls
            .iter()
            .map(|c| (&c.key, &c.action))
            .collect::<Vec<_>>()
    );
    assert!(
        late.is_empty(),
        "the paused holder sent {} fleet-changing call(s) after its lease's end ({:?} after \
         it woke): {late:?}\n{}",
        late.len(),
        late.first().map(|c| c.at.saturating_duration_since(woke)),
        master.tail()
    );
    let early: Vec<_> = of("AKIDSTANDBY").filter(|c| c.at < paused + took).collect();
    assert!(
        early.is_empty(),
        "the standby changed the fleet before it took over: {early:?}"
    );
    let all = w.instances("fence");
    assert!(
        all.len() <= 3,
        "{} instances for a cap of 3: {all:?}\nholder:\n{}\nstandby:\n{}",
        all.len(),
        master.tail(),
        standby.tail()
    );
    // The new holder adopted what the old one launched: it tracks each of them.
    let st: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(sb.agent.state_dir.join("status.json")).unwrap(),
    )
    .unwrap();
    let tracked: BTreeSet<String> = st["slaves"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["id"].as_str().map(str::to_string))
        .collect();
    for id in w.live("fence") {
        assert!(
            tracked.contains(&id),
            "{id} runs but the new holder does not track it: {tracked:?}\n{}",
            standby.tail()
        );
    }
    eprintln!(
        "fencing: the standby took over {took:?} after the pause; calls after the holder's \
         lease end: {} of the holder's (0 fleet-changing), {} of the new holder's fleet-changing",
        calls
            .iter()
            .filter(|c| c.key == "AKIDHOLDER" && c.at > holder_end)
            .count(),
        of("AKIDSTANDBY").count()
    );
    for a in [&mut standby, &mut master] {
        a.signal(Sig::TERM);
        assert!(a.wait_exit(30).success(), "{}", a.tail());
    }
}

/// `burst-agent fleet` as a desk runs it against the table three sites' agents write to (issue
/// 29): each site with its holder, a site bursting, one at its cap with the launch it held
/// back, a copy of a master standing by, and a lease left to lapse when its agent is killed.
#[test]
fn fleet_shows_three_sites_with_their_holders_a_standby_a_capped_site_and_a_lapsed_lease() {
    let began = Instant::now();
    let w = World::new();
    let mut agents = Vec::new();
    let mut configs = BTreeMap::new();
    for (group, min, cap) in [("golf", 1, 7), ("shop", 2, 1), ("news", 0, 7)] {
        let mut cfg = w.config(group);
        cfg.agent.instance_id = format!("i-{group}");
        cfg.policy.min_slaves = min;
        cfg.cap.daily_limit = cap;
        w.create_elb(&cfg.elb.name);
        let path = w.write_config(&format!("{group}.toml"), &cfg);
        let mut a = AgentProc::start(&path, &[], &w.dir.path().join(format!("{group}.log")));
        a.wait_log("the agent holds its site's lease", 60, |v| {
            msg(v).contains("holds the site's lease now")
        });
        agents.push((group, a));
        configs.insert(group, (cfg, path));
    }
    // A copy of golf's master: its own id and state directory, the same site.
    let mut copy_cfg = configs["golf"].0.clone();
    copy_cfg.agent.instance_id = "i-golf-copy".into();
    copy_cfg.agent.state_dir = w.dir.path().join("state-golf-copy");
    let copy_path = w.write_config("golf-copy.toml", &copy_cfg);
    let mut copy = AgentProc::start(&copy_path, &[], &w.dir.path().join("golf-copy.log"));
    copy.wait_log("the copy stands by", 60, |v| {
        msg(v).contains("this agent stands by")
    });
    let desk = common::write(
        w.dir.path(),
        "desk.toml",
        &format!(
            "[ledger]\ntable = \"{}\"\n\n[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{}\"\n",
            common::moto::LEDGER_TABLE,
            w.moto.endpoint
        ),
    );
    let fleet = |args: &[&str]| {
        let o = Command::new(common::bin())
            .args(["--config", desk.to_str().unwrap(), "fleet"])
            .args(args)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", common::stderr(&o));
        common::stdout(&o)
    };
    let site = |v: &serde_json::Value, name: &str| -> serde_json::Value {
        v.as_array()
            .unwrap()
            .iter()
            .find(|s| s["site"] == name)
            .cloned()
            .unwrap_or_default()
    };
    let logs = |agents: &[(&str, AgentProc)]| {
        agents
            .iter()
            .map(|(g, a)| format!("--- {g}:\n{}", a.tail()))
            .collect::<String>()
    };
    // Golf bursts (its floor of one slave), shop spends its cap of one and is held short of
    // its floor of two, news is idle; each line names its own holder.
    let t = Instant::now();
    let mut v = serde_json::Value::Null;
    let ready = |v: &serde_json::Value| {
        let (golf, shop, news) = (site(v, "golf"), site(v, "shop"), site(v, "news"));
        golf["in_service"] == 1
            && golf["running"] == 1
            && golf["standbys"].as_array().is_some_and(|s| {
                s.iter().any(|s| {
                    s["holder"]
                        .as_str()
                        .unwrap_or("")
                        .starts_with("i-golf-copy/")
                })
            })
            && shop["units_used"] == 1
            && shop["unit_limit"] == 1
            && shop["status"]["reasons"]
                .as_array()
                .is_some_and(|r| r.iter().any(|r| r.as_str().unwrap_or("").contains("cap")))
            && news["lease"]["state"] == "held"
    };
    while t.elapsed() < Duration::from_secs(90) {
        v = serde_json::from_str(&fleet(&["--json"])).unwrap();
        if ready(&v) {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    assert!(
        ready(&v),
        "{}\n{}",
        serde_json::to_string_pretty(&v).unwrap(),
        logs(&agents)
    );
    // Golf's slave runs from now at the latest.
    let ready_at = Instant::now();
    for g in ["golf", "shop", "news"] {
        let holder = site(&v, g)["holder"].as_str().unwrap_or("").to_string();
        assert!(holder.starts_with(&format!("i-{g}/")), "{g}: {holder}");
    }
    let table = fleet(&[]);
    assert!(
        table.contains("3 site(s): 2 bursting, 1 at the day's cap"),
        "{table}"
    );
    assert!(table.contains("STANDBY i-golf-copy"), "{table}");

    // News' agent dies without a word: its lease lapses (10 s) and the desk sees it.
    let news = agents.iter_mut().find(|(g, _)| *g == "news").unwrap();
    news.1.kill9();
    let t = Instant::now();
    loop {
        let v: serde_json::Value = serde_json::from_str(&fleet(&["--json"])).unwrap();
        if site(&v, "news")["lease"]["state"] == "lapsed" {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(40),
            "news' lease never showed lapsed: {}",
            serde_json::to_string_pretty(&site(&v, "news")).unwrap()
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    let table = fleet(&[]);
    println!("{table}");
    let line = table.lines().find(|l| l.starts_with("news")).unwrap();
    assert!(line.contains("LAPSED: i-news"), "{table}");

    // Golf's master dies too, with its slave running; an operator makes the copy act. The
    // new holder carries the same run on: one slave running, its hours counted once.
    let golf = agents.iter_mut().find(|(g, _)| *g == "golf").unwrap();
    golf.1.kill9();
    let t = takeover_yes(&copy_path);
    assert!(t.status.success(), "{}", common::stderr(&t));
    copy.wait_log("the copy takes over when told", 30, |v| {
        msg(v).contains("holds the site's lease now")
    });
    let t = Instant::now();
    loop {
        let v: serde_json::Value = serde_json::from_str(&fleet(&["--json"])).unwrap();
        let g = site(&v, "golf");
        let by_copy = |k: &str| {
            g[k]["holder"]
                .as_str()
                .unwrap_or("")
                .starts_with("i-golf-copy/")
        };
        if by_copy("status")
            && g["holder"]
                .as_str()
                .unwrap_or("")
                .starts_with("i-golf-copy/")
        {
            assert_eq!(g["running"], 1, "one run for the one slave: {g}");
            assert_eq!(g["in_service"], 1, "{g}");
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(40),
            "the copy never wrote golf's status: {g}\n{}",
            copy.tail()
        );
        std::thread::sleep(Duration::from_secs(1));
    }

    // Today in the month's report: golf's slave ran, shop reached its cap and was held short.
    let zone = jiff::tz::TimeZone::get(&configs["golf"].0.cap.time_zone).unwrap();
    let local = zone.to_datetime(jiff::Timestamp::now());
    let (month, today) = (
        local.strftime("%Y-%m").to_string(),
        local.date().to_string(),
    );
    let csv = fleet(&["--month", &month, "--csv"]);
    println!("{}", fleet(&["--month", &month]));
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let row = |site: &str| -> BTreeMap<&str, String> {
        let line = csv
            .lines()
            .find(|l| l.starts_with(&format!("{site},{today},")))
            .unwrap_or_else(|| panic!("no row for {site} today:\n{csv}"));
        header
            .iter()
            .copied()
            .zip(line.split(',').map(str::to_string))
            .collect()
    };
    let (golf, shop) = (row("golf"), row("shop"));
    assert_eq!(golf["instances"], "1", "{csv}");
    // Its run is still open: counted from EC2's launch time until the report (at least EC2's
    // billed minute), so no less than since the desk first saw it running and no more than the
    // test has lasted.
    let hours = golf["instance_hours"].parse::<f64>().unwrap();
    let (lo, hi) = (
        ready_at.elapsed().as_secs_f64().max(60.0) / 3600.0 - 0.0005,
        began.elapsed().as_secs_f64().max(60.0) / 3600.0 + 0.0005,
    );
    assert!(
        lo <= hours && hours <= hi,
        "{hours} h not in [{lo}, {hi}]:\n{csv}"
    );
    assert_eq!(
        (shop["units_used"].as_str(), shop["days_at_cap"].as_str()),
        ("1", "1"),
        "{csv}"
    );
    assert!(shop["held_cap_secs"].parse::<u64>().unwrap() > 0, "{csv}");
    copy.signal(Sig::TERM);
    let shop = agents.iter_mut().find(|(g, _)| *g == "shop").unwrap();
    shop.1.signal(Sig::TERM);
    assert!(copy.wait_exit(30).success(), "{}", copy.tail());
    assert!(shop.1.wait_exit(30).success(), "{}", shop.1.tail());
}
