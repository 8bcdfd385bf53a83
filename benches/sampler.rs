//! Cost of one sampling tick with 100, 1,000 and 5,000 Apache-like worker processes, side by
//! side in one run: our sampler (pidfile → children list), sysinfo's full process refresh,
//! sysinfo's minimal refresh (our fallback), and a scan of /proc/*/comm. Then the binary's peak
//! RSS while it samples every second.
//!
//!     cargo bench --bench sampler            # full table
//!     cargo bench --bench sampler -- --quick # fewer iterations (scripts/test.sh runs this)

mod common;

#[allow(dead_code)]
#[path = "../tests/common/fake_apache.rs"]
mod fake_apache;

use burst_agent::config::SamplingConfig;
use burst_agent::sampler::Sampler;
use common::median;
use fake_apache::FakeApache;
use std::hint::black_box;
use std::time::Duration;
use sysinfo::{ProcessRefreshKind, ProcessesToUpdate, System};

fn scan_proc_comm(names: &[&str]) -> usize {
    let mut n = 0;
    let mut buf = String::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = e.file_name();
        let Some(s) = name.to_str() else { continue };
        if !s.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        buf.clear();
        use std::io::Read;
        if let Ok(mut f) = std::fs::File::open(format!("/proc/{s}/comm")) {
            if f.read_to_string(&mut buf).is_ok() && names.contains(&buf.trim_end()) {
                n += 1;
            }
        }
    }
    n
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (cheap_iters, dear_iters) = if quick { (50, 5) } else { (400, 30) };
    println!("sampler benchmark: one tick, median of {cheap_iters} (cheap) / {dear_iters} (full refresh) runs\n");
    println!(
        "{:>8} | {:>12} {:>12} | {:>14} {:>14} {:>14} | {:>9} {:>9}",
        "workers",
        "our tick",
        "our count",
        "sysinfo full",
        "sysinfo min",
        "/proc/*/comm",
        "full/tick",
        "full/count"
    );
    println!("{}", "-".repeat(118));
    for workers in [100u32, 1_000, 5_000] {
        let fa = FakeApache::start("httpd", workers);
        let cfg = SamplingConfig {
            apache_pidfile: fa.pidfile.clone(),
            apache_process_names: vec!["httpd".into()],
            mod_status_url: String::new(),
            ..SamplingConfig::default()
        };
        let mut sampler = Sampler::new(&cfg).expect("sampler");
        let (n, _) = sampler.count_apache_workers().unwrap();
        assert_eq!(n, workers, "our sampler counted {n} of {workers}");
        let tick = median(cheap_iters, || {
            black_box(sampler.sample());
        });
        let count = median(cheap_iters, || {
            black_box(sampler.count_apache_workers().unwrap());
        });
        // sysinfo's full refresh, on a long-lived System like ours (its cheapest steady state).
        let mut sys = System::new().unwrap();
        let full = median(dear_iters, || {
            black_box(sys.refresh_processes_specifics(
                ProcessesToUpdate::All,
                true,
                ProcessRefreshKind::everything(),
            ));
        });
        let mut sys_min = System::new().unwrap();
        let minimal = median(dear_iters, || {
            black_box(sys_min.refresh_processes_specifics(
                ProcessesToUpdate::All,
                true,
                ProcessRefreshKind::nothing().without_tasks(),
            ));
        });
        let scan = median(dear_iters, || {
            black_box(scan_proc_comm(&["httpd"]));
        });
        println!(
            "{:>8} | {:>12} {:>12} | {:>14} {:>14} {:>14} | {:>8.0}x {:>8.0}x",
            workers,
            ms(tick),
            ms(count),
            ms(full),
            ms(minimal),
            ms(scan),
            full.as_secs_f64() / tick.as_secs_f64(),
            full.as_secs_f64() / count.as_secs_f64(),
        );
        drop(fa);
    }
    println!("\n'our tick' is a whole HostSample (load, Apache workers, memory, swap, one disk; mod_status off);");
    println!("'our count' is the Apache worker count alone. Targets at 1,000 workers: tick <= 0.25 ms, >= 40x cheaper than sysinfo full.");
    peak_rss(if quick { 5 } else { 15 });
}

/// Runs `burst-agent sample --every 1s` next to 1,000 Apache-like workers and reads its VmHWM.
fn peak_rss(seconds: u64) {
    let bin = env!("CARGO_BIN_EXE_burst-agent");
    let fa = FakeApache::start("httpd", 1_000);
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("agent.toml");
    std::fs::write(
        &cfg,
        format!(
            "[agent]\ndry_run = true\n[sampling]\napache_pidfile = {:?}\napache_process_names = [\"httpd\"]\nmod_status_url = \"\"\n",
            fa.pidfile
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(bin)
        .arg("--config")
        .arg(&cfg)
        .args([
            "sample",
            "--json",
            "--every",
            "1s",
            "--count",
            &seconds.to_string(),
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("run burst-agent");
    let status = format!("/proc/{}/status", child.id());
    let mut hwm_kib = 0u64;
    while child.try_wait().unwrap().is_none() {
        if let Ok(text) = std::fs::read_to_string(&status) {
            if let Some(v) = text
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            {
                hwm_kib = hwm_kib.max(v);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    println!(
        "\npeak RSS of `burst-agent sample --every 1s` over {seconds} s with 1,000 workers: {:.1} MiB (VmHWM)",
        hwm_kib as f64 / 1024.0
    );
}
