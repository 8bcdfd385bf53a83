//! The agent next to Prometheus' node_exporter, in the same run: `burst-agent run --dry-run`
//! (1 s sampling and evaluation, sampling a real apache2 with mod_status, no AWS) and Debian's
//! `prometheus-node-exporter` scraped once a second, side by side for 60 s. Prints each one's
//! CPU seconds and peak RSS, split into the process's own memory (`RssAnon`: heap, stacks) and
//! the pages it maps from its binary and libraries (`RssFile`: shared with the page cache,
//! reclaimable, and growing with the binary, not with load). Targets: the agent's own memory
//! ≤ 4 MiB, its whole RSS below node_exporter's, and its CPU below node_exporter's
//! (CONTRIBUTING.md says why the target is no longer 12 MiB of RSS).
//!
//!     cargo bench --bench agent            # 60 s
//!     cargo bench --bench agent -- --quick # 10 s (scripts/test.sh runs this)

#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod testutil;

use burst_agent::config::{Config, Dur};
use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `(RssAnon, RssFile)` of a running process now, in KiB.
fn mem(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("RssAnon:"), field("RssFile:"))
}

/// (CPU seconds, peak RSS KiB) of a running process.
fn usage(pid: u32) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime) are at 11 and 12 after the command name.
    let ticks: f64 = f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    let hz = rustix::param::clock_ticks_per_second() as f64;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (ticks / hz, hwm)
}

fn scrape(port: u16) -> usize {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return 0;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    );
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out.len()
}

fn stop(mut c: Child) {
    let _ = c.kill();
    let _ = c.wait();
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let secs = if quick { 10 } else { 60 };
    let exporter = "/usr/bin/prometheus-node-exporter";
    assert!(
        std::path::Path::new(exporter).is_file(),
        "node_exporter is not installed: `apt-get install -y prometheus-node-exporter`, or run \
         scripts/test.sh"
    );
    let apache = testutil::apache::Apache::start(5, 50);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = Config::default();
    cfg.agent.state_dir = dir.path().join("state");
    cfg.agent.dry_run = true;
    cfg.agent.instance_id = "i-bench".into();
    cfg.sampling.interval = Dur::secs(1);
    cfg.sampling.apache_pidfile = apache.pidfile.clone();
    cfg.sampling.mod_status_url = format!("{}?auto", apache.status_url());
    cfg.sampling.mod_status_timeout = Dur::millis(500);
    cfg.policy.evaluation_interval = Dur::secs(1);
    let conf = dir.path().join("agent.toml");
    std::fs::write(&conf, toml::to_string(&cfg).expect("toml")).expect("write config");
    let agent = Command::new(env!("CARGO_BIN_EXE_burst-agent"))
        .args([
            "--config",
            conf.to_str().expect("utf-8 path"),
            "run",
            "--dry-run",
        ])
        .env_remove("RUST_LOG")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stderr(Stdio::null())
        .spawn()
        .expect("start the agent");
    let port = testutil::apache::free_port();
    let ne = Command::new(exporter)
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start node_exporter");
    std::thread::sleep(Duration::from_secs(2));
    let (a0, _) = usage(agent.id());
    let (n0, _) = usage(ne.id());
    let t = Instant::now();
    let mut bytes = 0;
    let (mut a_mem, mut n_mem) = ((0, 0), (0, 0));
    let peak = |m: &mut (u64, u64), now: (u64, u64)| *m = (m.0.max(now.0), m.1.max(now.1));
    for i in 1..=secs {
        bytes += scrape(port);
        peak(&mut a_mem, mem(agent.id()));
        peak(&mut n_mem, mem(ne.id()));
        let next = Duration::from_secs(i);
        std::thread::sleep(next.saturating_sub(t.elapsed()));
    }
    let (a1, a_rss) = usage(agent.id());
    let (n1, n_rss) = usage(ne.id());
    stop(agent);
    stop(ne);
    let (acpu, ncpu) = (a1 - a0, n1 - n0);
    println!("{secs} s side by side: burst-agent run --dry-run (1 s sampling + decision) vs");
    println!(
        "prometheus-node-exporter scraped every 1 s ({} KiB per scrape)",
        bytes / secs as usize / 1024
    );
    let mib = |k: u64| k as f64 / 1024.0;
    println!(
        "{:<16} {:>12} {:>13} {:>13} {:>16}",
        "", "CPU seconds", "peak RSS MiB", "own MiB", "mapped files MiB"
    );
    for (name, cpu, rss, m) in [
        ("burst-agent", acpu, a_rss, a_mem),
        ("node_exporter", ncpu, n_rss, n_mem),
    ] {
        println!(
            "{name:<16} {cpu:>12.2} {:>13.1} {:>13.1} {:>16.1}",
            mib(rss),
            mib(m.0),
            mib(m.1)
        );
    }
    println!(
        "ratio node_exporter/agent: CPU {:.1}x, RSS {:.1}x, own memory {:.1}x",
        ncpu / acpu.max(0.001),
        n_rss as f64 / a_rss.max(1) as f64,
        n_mem.0 as f64 / a_mem.0.max(1) as f64
    );
    let met = |ok: bool| if ok { "met" } else { "MISSED" };
    println!(
        "targets: agent's own memory <= 4 MiB: {}; agent RSS below node_exporter's: {}; \
         agent CPU below node_exporter's: {}",
        met(a_mem.0 <= 4 * 1024),
        met(a_rss < n_rss),
        met(acpu < ncpu)
    );
}
