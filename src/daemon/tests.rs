//! The master's loop, one `tick(now)` at a time, on the fault simulation's world (simulated EC2,
//! ELB, disk and hooks). A tick reads time only from its argument and waits on no timer with
//! this world, so the test needs neither the wall clock nor tokio's paused clock (whose
//! `test-util` feature would rebuild the AWS SDK for the tests).

use super::*;
use crate::faultsim::world::{Faults, MemDisk, SimCloud, SimHooks, World, MASTER, OWNER};
use crate::model::{ApacheSample, HostSample, Signal};
use rand::SeedableRng;

fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(1_780_000_000 + secs).unwrap()
}

/// The master's own sample: every Apache worker busy.
fn saturated(t: Timestamp) -> HostSample {
    HostSample {
        timestamp: t,
        host: "master".into(),
        cpus: 2,
        load: None,
        apache: ApacheSample {
            workers: Some(8),
            method: None,
            busy_workers: Some(8),
            idle_workers: Some(0),
            max_workers: 8,
            total_accesses: None,
        },
        memory: None,
        disks: vec![],
        problems: vec![],
    }
}

fn config(dir: &std::path::Path) -> Config {
    let mut c = Config::default();
    c.agent.state_dir = dir.to_path_buf();
    c.agent.dry_run = false;
    c.agent.instance_id = MASTER.into();
    c.elb.name = OWNER.into();
    c.cap.time_zone = "UTC".into();
    c.policy.signals = vec![Signal::ApacheBusyRatio];
    c.policy.targets.apache_busy_ratio = 0.25; // 1.0 busy → 4 hosts → 3 slaves wanted
    c.policy.max_step_out = 1;
    // A decision the tick could not carry out must start no cooldown: tick 6 below launches
    // 5 s after the last launch, but 1 s after the last decision that could not be carried out.
    c.policy.scale_out_cooldown = crate::config::Dur::secs(3);
    c.policy.scale_out_stabilization = crate::config::Dur::secs(0);
    c
}

fn world() -> crate::faultsim::world::Shared {
    let faults = Faults {
        rate: 0.0,
        brownout: None,
        hook_fail: 0.0,
        hook_hang: 0.0,
        boot: (600, 600),
        sick: 0.0,
    };
    crate::faultsim::world::Shared(Arc::new(Mutex::new(World::new(
        rand_chacha::ChaCha8Rng::seed_from_u64(1),
        faults,
        at(0),
    ))))
}

fn ours(w: &crate::faultsim::world::Shared) -> usize {
    w.w().instances.values().filter(|i| i.ours).count()
}

/// The actuator on `w`, adopted as the master `MASTER`, after a first start's read-back.
fn actuator(cfg: &Config, w: &crate::faultsim::world::Shared) -> Actuator<SimCloud, SimHooks> {
    let ids = w.clone();
    let mut act = Actuator::open_with(
        SimCloud(w.clone(), cfg.agent.group.clone(), 0),
        SimHooks::new(w.clone()),
        Arc::new(MemDisk(w.clone())),
        Box::new(move || {
            let mut w = ids.w();
            w.next_intent += 1;
            format!("bi-{:012x}", w.next_intent)
        }),
        cfg,
        at(0),
    )
    .unwrap();
    act.set_own_instance(Some(MASTER.into()));
    // A first start: CloudWatch's copy of today's count says nothing was launched.
    act.cap_read_back(Ok(None), at(0));
    act
}

fn shared() -> Shared {
    Shared {
        buffer: Arc::new(Mutex::new(Buffer::new(1000))),
        sync_requested: Arc::new(AtomicBool::new(false)),
    }
}

/// The senders a [`Master`] of the tests needs kept alive.
type Keep = (watch::Sender<Arc<Config>>, super::shutdown::Notice);

/// The master's loop on `cfg` in `dir`, its sample's sender (saturated at `at(0)`), and what
/// must be kept alive while it runs.
fn master<'a>(
    cfg: &Config,
    dir: &std::path::Path,
    shared: &'a Shared,
) -> (Master<'a>, watch::Sender<Option<HostSample>>, Keep) {
    let (cfg_tx, cfg_rx) = watch::channel(Arc::new(cfg.clone()));
    let (stop_tx, shutdown_rx) = super::shutdown::channel();
    let (sample_tx, sample_rx) = watch::channel(Some(saturated(at(0))));
    let m = Master {
        cfg: cfg.clone(),
        cfg_rx,
        shutdown_rx,
        sample_rx,
        probe_rx: watch::channel(Vec::new()).1,
        aws: None,
        aws_off: None,
        instance_id: MASTER.into(),
        own_ec2_id: Some(MASTER.into()),
        state_dir: dir.to_path_buf(),
        started_at: at(0),
        shared,
        clock: crate::clock::AgentClock::new(at(0), Duration::ZERO),
        boot: "test".into(),
        lease: None,
        lease_task: None,
        site: None,
    };
    (m, sample_tx, (cfg_tx, stop_tx))
}

#[tokio::test]
async fn a_tick_launches_only_on_a_fleet_it_could_observe() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    // Events reach a real program, with their placeholders.
    let told = dir.path().join("told");
    cfg.hooks.on_event = Some(crate::config::Hook {
        argv: vec![
            "/bin/sh".into(),
            "-c".into(),
            format!("echo \"$0|$1|$2\" >> {}", told.display()),
            "{event}".into(),
            "{group}".into(),
            "{detail}".into(),
        ],
        ..crate::config::Hook::default()
    });
    let w = world();
    let act = actuator(&cfg, &w);
    let shared = shared();
    let (mut m, sample_tx, _keep) = master(&cfg, dir.path(), &shared);
    let mut l = m.start(Some(act));
    // The monotonic clock of a test that passes its own times: time since at(0).
    let since0 = |t: Timestamp| Duration::from_secs((t.as_second() - at(0).as_second()) as u64);
    let tick = |t: i64| {
        w.w().advance(at(t));
        sample_tx.send_replace(Some(saturated(at(t))));
        at(t)
    };

    // Adoption and the first decision: one slave (max_step_out 1).
    let now = tick(1);
    m.clock.observe(now, since0(now));
    let d = m.tick(&mut l, now).await;
    assert!(matches!(d, Decision::ScaleOut { count: 1, .. }), "{d}");
    assert_eq!(ours(&w), 1);

    // EC2 and the ELB stop answering: the policy still wants more, nothing is launched.
    {
        let mut g = w.w();
        g.faults.rate = 1.0;
        g.faults_on = true;
    }
    for t in 2..6 {
        let now = tick(t);
        m.clock.observe(now, since0(now));
        let d = m.tick(&mut l, now).await;
        if t == 5 {
            // The cooldown from the launch at 1 is over: the policy wants more.
            assert!(matches!(d, Decision::ScaleOut { .. }), "{d}");
        }
        assert_eq!(ours(&w), 1, "launched at {t} on a fleet it could not see");
    }
    assert!(l
        .tick
        .errors
        .iter()
        .any(|(_, e)| e.contains("no scaling this tick")));

    // They answer again: the next tick observes, then launches.
    w.w().faults.rate = 0.0;
    let now = tick(6);
    m.clock.observe(now, since0(now));
    m.tick(&mut l, now).await;
    assert_eq!(ours(&w), 2);
    // status.json says what an operator would see.
    let status = std::fs::read_to_string(dir.path().join("status.json")).unwrap();
    assert!(status.contains("\"running\""), "{status}");

    // Two launches within events.window: one scale_out message, the second held back.
    l.events.finish(Duration::from_secs(10)).await;
    let told = std::fs::read_to_string(&told).unwrap();
    let lines =
        |prefix: &str| -> Vec<&str> { told.lines().filter(|l| l.starts_with(prefix)).collect() };
    let out = lines("scale_out|");
    assert_eq!(out.len(), 1, "{told}");
    assert!(
        out[0].starts_with("scale_out|default|launched 1 of 1 slave(s)"),
        "{told}"
    );
    // The world's two instances of another install or none are one condition: told once, the
    // second held back for the summary; never the master.
    let foreign = lines("foreign_instance|");
    assert_eq!(foreign.len(), 1, "{told}");
    assert!(!told.contains(MASTER), "{told}");
    assert_eq!(told.lines().count(), 2, "{told}");
    use crate::events::{EventKind, Outcome};
    let held: Vec<_> = l
        .events
        .recent()
        .filter(|r| r.kind == EventKind::ForeignInstance)
        .map(|r| (r.instance_id.clone().unwrap_or_default(), r.outcome))
        .collect();
    assert_eq!(held.len(), 2, "{held:?}");
    assert_eq!(held[1].1, Outcome::Deduplicated, "{held:?}");
    let outcomes: Vec<_> = l
        .events
        .recent()
        .filter(|r| r.kind == EventKind::ScaleOut)
        .map(|r| r.outcome)
        .collect();
    assert_eq!(outcomes, [Outcome::Sent, Outcome::Deduplicated]);
    assert!(dir.path().join("events.json").exists());
}

/// The brownout bridge through the master's loop: a saturated master with no slave that can
/// come (`max_slaves = 0`) is switched by `hooks.on_bridge`, a real program; once it serves at
/// a level its samples are read back at full cost; a level set by hand wins; `status.json` and
/// the events say so.
#[tokio::test]
async fn a_saturated_master_is_bridged_by_its_hook_and_a_hand_can_end_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.policy.max_slaves = 0;
    cfg.bridge.enabled = true;
    // No dwell: a sample read at the wrong level would end the level at the next decision.
    cfg.bridge.min_dwell = crate::config::Dur::secs(0);
    let switched = dir.path().join("switched");
    cfg.hooks.on_bridge = Some(crate::config::Hook {
        argv: vec![
            "/bin/sh".into(),
            "-c".into(),
            format!("echo \"$0 $1\" >> {}", switched.display()),
            "{level}".into(),
            "{previous}".into(),
        ],
        ..crate::config::Hook::default()
    });
    let w = world();
    let act = actuator(&cfg, &w);
    let shared = shared();
    let (mut m, sample_tx, _keep) = master(&cfg, dir.path(), &shared);
    let mut l = m.start(Some(act));
    let since0 = |t: Timestamp| Duration::from_secs((t.as_second() - at(0).as_second()) as u64);
    let mut t = 0;
    let mut decisions: Vec<Decision> = Vec::new();
    // Ticks two seconds apart in the agent's time (with real time between them for the hook,
    // a real process, to run), each on a sample taken a second before it: the crowd keeps all 8
    // workers busy at full service and 2 at a level. Until the master serves at `$until`, or
    // `$ticks` ticks.
    macro_rules! ticks {
        ($until:expr, $ticks:expr) => {
            for _ in 0..$ticks {
                t += 2;
                let now = at(t);
                w.w().advance(now);
                // A switch under way has finished by now (the hook takes milliseconds).
                let level = (l.tick.bridge.switching_to()).unwrap_or(l.tick.bridge.applied());
                let busy = if level > 0 { 2 } else { 8 };
                let mut sample = saturated(at(t - 1));
                sample.apache.busy_workers = Some(busy);
                sample.apache.idle_workers = Some(8 - busy);
                sample_tx.send_replace(Some(sample));
                m.clock.observe(now, since0(now));
                decisions.push(m.tick(&mut l, now).await);
                let done = l.tick.bridge.switching_to().is_none();
                if $until == Some(l.tick.bridge.applied()) && done {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
    }
    // The master alone, every worker busy, nothing can launch: level 1 (0.1 + 0.9 × 0.15 of a
    // saturated master's full load is 0.235, under 0.81).
    ticks!(Some(1), 200);
    assert_eq!(
        l.tick.bridge.applied(),
        1,
        "{:?}",
        decisions.last().map(|d| d.to_string())
    );
    assert!(
        decisions[0].reason_codes().contains(&"BridgeOn"),
        "{}",
        decisions[0]
    );
    // At level 1 the crowd keeps 2 workers of 8 busy: 0.25 at level 1 is 0.25 / 0.235 = 1.06
    // at full cost, so the level holds. Each sample is read at the level it was taken at, the
    // one taken just after the switch included: read at level 0 it would say 0.25 and end the
    // level at once.
    let held = decisions.len();
    ticks!(None::<u8>, 8);
    for d in &decisions[1..] {
        let codes = d.reason_codes();
        assert_eq!(d.explanation().bridge.level, 1, "{d}");
        assert!(
            !codes.contains(&"BridgeOff") && !codes.contains(&"BridgeOn"),
            "{d}"
        );
    }
    assert!(
        decisions[held..]
            .iter()
            .all(|d| d.reason_codes().contains(&"FullCost")),
        "{:?}",
        decisions[held..]
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
    );
    // By hand: full service for an hour, whatever the load.
    super::bridge::write_manual(
        dir.path(),
        &crate::policy::ManualBridge {
            level: 0,
            until: at(t + 3600),
            by: "ops".into(),
        },
    )
    .unwrap();
    ticks!(Some(0), 200);
    assert_eq!(l.tick.bridge.applied(), 0);
    let last = decisions.last().unwrap();
    assert!(last.reason_codes().contains(&"BridgeManual"), "{last}");
    // The hook was run once per switch, with the level and the one before.
    let ran = std::fs::read_to_string(&switched).unwrap();
    assert_eq!(ran, "1 0\n0 1\n");
    let status = std::fs::read_to_string(dir.path().join("status.json")).unwrap();
    assert!(status.contains("\"bridge\""), "{status}");
    assert!(status.contains("\"ops\""), "{status}");
    l.events.finish(Duration::from_secs(10)).await;
    let kinds: Vec<_> = l.events.recent().map(|r| r.kind).collect();
    assert!(
        kinds.contains(&crate::events::EventKind::BridgeChanged),
        "{kinds:?}"
    );
}
