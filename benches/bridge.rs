//! The brownout bridge on a real Apache through a flash crowd, with and without it, in one run
//! (docs/bridge.md, "Measured"). The master: Debian's apache2 (prefork, 8 workers) whose home
//! page is a CGI that burns about 100 ms of CPU, with the shipped recipe
//! (contrib/bridge/apache-bridge.conf) and a snapshot of the page. The crowd: open-loop
//! arrivals (a closed loop would slow down with the site and hide the overload) ramping to four
//! times what the master serves, each request given 5 s (a timeout is a failure). The agent:
//! `burst-agent run` live against moto, sampling that Apache every second, with `max_slaves =
//! 0` so that no capacity can come, and `hooks.on_bridge` = the shipped `bridge-level`.
//!
//! Prints, side by side: the share of requests answered within 1 s, the p99 latency, the time
//! from the crowd's start to level 1, and the measured cost of a snapshot request against a
//! dynamic one (what `bridge.costs` is made of). Targets (printed, never asserted): at least
//! 95 % within 1 s with the bridge, through a crowd that leaves under half within 1 s without.
//!
//!     cargo bench --bench bridge            # a 60 s crowd, twice
//!     cargo bench --bench bridge -- --quick # 20 s (scripts/test.sh runs this)

#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod testutil;

use burst_agent::config::{Dur, Hook, LogFormat, PolicyMode, Signal};
use std::io::{Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use testutil::agent_proc::AgentProc;
use testutil::apache::Apache;
use testutil::moto::{actuator_config, Moto};

/// One GET of `/` on loopback, given `limit`: its latency, or `None` when it failed (no answer,
/// not a 200, or out of time).
fn get(port: u16, limit: Duration) -> Option<Duration> {
    let t = Instant::now();
    let mut s = std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), limit).ok()?;
    s.set_read_timeout(Some(
        limit
            .saturating_sub(t.elapsed())
            .max(Duration::from_millis(1)),
    ))
    .ok()?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    let ok = out.starts_with(b"HTTP/1.1 200");
    let took = t.elapsed();
    (ok && took <= limit).then_some(took)
}

/// Seconds of CPU a dash loop of `n` steps takes here.
fn loop_secs(n: u64) -> f64 {
    let t = Instant::now();
    let ok = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("i=0; while [ $i -lt {n} ]; do i=$((i+1)); done"))
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "/bin/sh could not run the CPU loop");
    t.elapsed().as_secs_f64()
}

/// The crowd's arrivals per second at `t` s: from half the master's capacity to four times it
/// in `ramp` s, then held.
fn rate(t: f64, capacity: f64, ramp: f64) -> f64 {
    capacity * (0.5 + 3.5 * (t / ramp).min(1.0))
}

struct Crowd {
    /// (sent at, latency if answered in time)
    results: Vec<(f64, Option<Duration>)>,
    /// Seconds from the crowd's start until the flag of level 1 appeared, if it did.
    level1_after: Option<f64>,
}

/// An open-loop crowd of `secs` s against `port`, `rate(t)` arrivals a second; watches `flags`
/// for level 1.
fn crowd(port: u16, secs: f64, rate: impl Fn(f64) -> f64, flags: &Path) -> Crowd {
    let results = Arc::new(Mutex::new(Vec::new()));
    let start = Instant::now();
    let mut next = 0.0;
    let mut level1_after = None;
    let mut threads = Vec::new();
    while next < secs {
        let wait = Duration::from_secs_f64(next).saturating_sub(start.elapsed());
        std::thread::sleep(wait);
        if level1_after.is_none() && flags.join("level1").exists() {
            level1_after = Some(start.elapsed().as_secs_f64());
        }
        let r = results.clone();
        let at = next;
        threads.push(std::thread::spawn(move || {
            let took = get(port, Duration::from_secs(5));
            r.lock().unwrap().push((at, took));
        }));
        next += 1.0 / rate(next).max(0.1);
    }
    for t in threads {
        let _ = t.join();
    }
    let results = std::mem::take(&mut *results.lock().unwrap());
    Crowd {
        results,
        level1_after,
    }
}

fn summary(c: &Crowd) -> (f64, f64) {
    let n = c.results.len().max(1) as f64;
    let fast = c
        .results
        .iter()
        .filter(|(_, t)| t.is_some_and(|t| t <= Duration::from_secs(1)))
        .count() as f64;
    let mut lat: Vec<f64> = c
        .results
        .iter()
        .map(|(_, t)| t.map_or(5000.0, |t| t.as_secs_f64() * 1000.0))
        .collect();
    lat.sort_by(f64::total_cmp);
    let p99 = lat[((lat.len() as f64 * 0.99) as usize).min(lat.len() - 1)];
    (100.0 * fast / n, p99)
}

/// The mean latency of `n` requests one after another.
fn serial(port: u16, n: u32) -> f64 {
    let t = Instant::now();
    for _ in 0..n {
        get(port, Duration::from_secs(10)).expect("a serial request failed");
    }
    t.elapsed().as_secs_f64() / f64::from(n)
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let secs = if quick { 20.0 } else { 60.0 };
    let dir = tempfile::tempdir().expect("tempdir");
    let flags = dir.path().join("flags");
    let snaps = dir.path().join("snapshots");
    std::fs::create_dir_all(&flags).unwrap();
    std::fs::create_dir_all(&snaps).unwrap();
    // The dynamic page: about 100 ms of one CPU.
    let steps = {
        let per = loop_secs(200_000) / 200_000.0;
        ((0.1 / per) as u64).max(1000)
    };
    let cgi = dir.path().join("page.cgi");
    std::fs::write(
        &cgi,
        format!(
            "#!/bin/sh\ni=0; while [ $i -lt {steps} ]; do i=$((i+1)); done\n\
             printf 'Content-Type: text/html\\r\\n\\r\\n<h1>Leaderboard</h1><p>rendered</p>\\n'\n"
        ),
    )
    .unwrap();
    std::process::Command::new("chmod")
        .arg("755")
        .arg(&cgi)
        .status()
        .unwrap();
    std::fs::write(
        snaps.join("index.html"),
        "<h1>Leaderboard</h1><p>rendered</p>\n",
    )
    .unwrap();
    let recipe = testutil::root().join("contrib/bridge/apache-bridge.conf");
    let conf = format!(
        "LoadModule cgi_module /usr/lib/apache2/modules/mod_cgi.so\n\
         ScriptAliasMatch ^/$ {cgi}\n<Directory {dir}>\n  Require all granted\n</Directory>\n\
         Define BRIDGE_FLAGS {flags}\nDefine BRIDGE_SNAPSHOTS {snaps}\n\
         Define BRIDGE_KEEP_COOKIE \"PHPSESSID\"\nDefine BRIDGE_KEEP_PATH \"^/admin\"\n\
         Include {recipe}\n",
        cgi = cgi.display(),
        dir = dir.path().display(),
        flags = flags.display(),
        snaps = snaps.display(),
        recipe = recipe.display()
    );
    let apache = Apache::start_with(8, 8, &conf);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;

    // The cost a snapshot request has against a dynamic one, one request at a time.
    let dynamic = serial(apache.port, 10);
    let run = |n: &str| {
        let out = std::process::Command::new(testutil::root().join("contrib/bridge/bridge-level"))
            .arg(n)
            .arg(&flags)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run("1");
    let snapshot = serial(apache.port, 200);
    run("0");
    let fraction = snapshot / dynamic;
    // What the master serves at full cost: CPUs over a page's time (it is CPU-bound).
    let capacity = cpus / dynamic;

    // The agent, live against moto, with nothing that can launch.
    let moto = Moto::start();
    let rt = testutil::runtime();
    let aws = rt.block_on(moto.aws());
    let mut cfg = actuator_config(
        &moto,
        "bridge-bench",
        &dir.path().join("state"),
        &apache.docroot,
        &dir.path().join("slaves"),
    );
    rt.block_on(moto.create_elb(&aws, &cfg.elb.name));
    cfg.agent.instance_id = "i-master".into();
    cfg.agent.dry_run = false;
    cfg.sampling.interval = Dur::secs(1);
    cfg.sampling.apache_pidfile = apache.pidfile.clone();
    cfg.sampling.mod_status_url = format!("{}?auto", apache.status_url());
    cfg.sampling.mod_status_timeout = Dur::millis(500);
    cfg.sampling.apache_max_workers = 8;
    cfg.sampling.disk_paths = vec![dir.path().to_path_buf()];
    cfg.metrics.namespace = "BridgeBench".into();
    cfg.policy.evaluation_interval = Dur::secs(1);
    cfg.policy.mode = PolicyMode::TargetTracking;
    cfg.policy.signals = vec![Signal::ApacheBusyRatio];
    cfg.policy.max_slaves = 0;
    cfg.log.format = LogFormat::Json;
    cfg.bridge.costs = vec![fraction.clamp(0.01, 0.9)];
    cfg.bridge.grace = Dur::secs(0);
    cfg.hooks.on_bridge = Some(Hook {
        argv: vec![
            testutil::root()
                .join("contrib/bridge/bridge-level")
                .display()
                .to_string(),
            "{level}".into(),
            flags.display().to_string(),
        ],
        timeout: Dur::secs(10),
        ..Hook::default()
    });
    let mut outcome = Vec::new();
    for bridged in [false, true] {
        let mut c = cfg.clone();
        c.bridge.enabled = bridged;
        c.agent.state_dir = dir.path().join(format!("state-{bridged}"));
        let path = dir.path().join(format!("agent-{bridged}.toml"));
        std::fs::write(&path, toml::to_string(&c).unwrap()).unwrap();
        // Each run starts on an idle master: what the run before left in Apache's queue is
        // served first.
        let calm = Instant::now();
        while get(apache.port, Duration::from_secs(5))
            .is_none_or(|t| t.as_secs_f64() >= 2.0 * dynamic)
        {
            assert!(
                calm.elapsed() < Duration::from_secs(180),
                "the master did not calm down in 3 minutes"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        let log = dir.path().join(format!("agent-{bridged}.log"));
        let mut agent = AgentProc::start(&path, &[], &log);
        agent.wait_log("ready", 60, |v| {
            testutil::agent_proc::msg(v).starts_with("ready")
        });
        // An ordinary afternoon first (a third of what the master serves), as before any
        // burst: the agent learns what a request costs at full service.
        let warm = if quick { 15.0 } else { 30.0 };
        crowd(apache.port, warm, |_| capacity / 3.0, &flags);
        let c = crowd(apache.port, secs, |t| rate(t, capacity, secs / 4.0), &flags);
        // After the crowd, the bridge comes down by itself.
        let after = Instant::now();
        while std::fs::read_dir(&flags).is_ok_and(|mut d| d.next().is_some()) {
            assert!(
                after.elapsed() < Duration::from_secs(120),
                "the bridge stayed on 2 minutes after the crowd left\n{}",
                agent.tail()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        let off_after = after.elapsed().as_secs_f64();
        agent.signal(rustix::process::Signal::TERM);
        agent.wait_exit(30);
        run("0");
        outcome.push((c, off_after));
    }
    let (without, with) = (summary(&outcome[0].0), summary(&outcome[1].0));
    println!(
        "bridge on a real Apache: {cpus} CPU(s), prefork 8 workers, a dynamic page of {:.0} ms, \
         an open-loop crowd ramping to 4x the master's {capacity:.1} req/s over {:.0} s, held to \
         {secs:.0} s; the agent live on moto with max_slaves 0",
        dynamic * 1000.0,
        secs / 4.0
    );
    println!("{:<34} {:>14} {:>14}", "", "without bridge", "with bridge");
    println!(
        "{:<34} {:>13.1}% {:>13.1}%",
        "answered within 1 s", without.0, with.0
    );
    println!(
        "{:<34} {:>11.0} ms {:>11.0} ms",
        "p99 latency (a failure counts 5 s)", without.1, with.1
    );
    println!(
        "{:<34} {:>14} {:>14}",
        "requests",
        outcome[0].0.results.len(),
        outcome[1].0.results.len()
    );
    println!(
        "{:<34} {:>14} {:>14}",
        "crowd start to level 1",
        "-",
        outcome[1]
            .0
            .level1_after
            .map_or("never".into(), |s| format!("{s:.1} s"))
    );
    println!(
        "{:<34} {:>14} {:>12.1} s",
        "crowd's end to full service", "-", outcome[1].1
    );
    println!(
        "snapshot / dynamic request cost: {fraction:.4} ({:.2} ms against {:.1} ms, one at a \
         time); bridge.costs for nine hot requests in ten: {:.3}",
        snapshot * 1000.0,
        dynamic * 1000.0,
        0.9 * fraction + 0.1
    );
    let met = with.0 >= 95.0 && without.0 < 50.0;
    println!(
        "target (>= 95% within 1 s with the bridge where < 50% without): {}",
        if met { "met" } else { "MISSED" }
    );
}
