//! One `decide` for fleets of 10, 100 and 1,000 hosts, and 30 days of 1-second ticks through the
//! simulator, each policy side by side in one run.
//!
//!     cargo bench --bench policy            # full
//!     cargo bench --bench policy -- --quick # fewer iterations (scripts/test.sh runs this)

use burst_agent::cap::CapLedger;
use burst_agent::config::Config;
use burst_agent::policy::{
    decide, FleetObservation, History, HostMetrics, SlaveObservation, SlaveState,
};
use burst_agent::sim::{self, trace::Trace, Kind, Model};
use jiff::Timestamp;
use std::hint::black_box;
mod common;

use common::median;
use std::time::Instant;

fn fleet(hosts: usize, now: Timestamp) -> FleetObservation {
    let m = |u: f64| HostMetrics {
        at: now,
        load_per_cpu: Some(u),
        apache_busy_ratio: Some(u),
        memory_used_ratio: Some(0.4),
        bridge_level: 0,
        bridge_change: None,
        total_accesses: None,
    };
    FleetObservation {
        master: Some(m(0.75)),
        slaves: (1..hosts)
            .map(|i| SlaveObservation {
                id: format!("i-{i:017x}"),
                state: if i % 17 == 0 {
                    SlaveState::Syncing
                } else {
                    SlaveState::InService
                },
                launched_at: Timestamp::from_second(now.as_second() - 600 - i as i64 * 37).unwrap(),
                metrics: (i % 23 != 0).then(|| m(0.5 + (i % 7) as f64 * 0.05)),
            })
            .collect(),
        no_capacity_until: None,
        launch_refused: None,
        probe_latency: None,
        scheduled: None,
        warm_room: 0,
        drain_secs: 0,
        sync_broken: None,
        content_source_missing: None,
        evidence: Default::default(),
        bridge_manual: None,
    }
}

/// 30 days: a daily curve with an afternoon burst every third day, one point a minute.
fn month() -> Trace {
    let mut csv = String::from("time,offered_load\n");
    for i in 0..30 * 24 * 60 {
        let h = (i % 1440) as f64 / 60.0;
        let day = i / 1440;
        let base = 0.15 + 0.45 * (1.0 - ((h - 4.0) / 24.0 * std::f64::consts::TAU).cos()) / 2.0;
        let burst = if day % 3 == 0 && (13.0..17.0).contains(&h) {
            4.0
        } else {
            1.0
        };
        csv.push_str(&format!("{},{:.4}\n", i * 60, base * burst));
    }
    Trace::parse(&csv, "month", "2026-06-01T00:00:00+09:00".parse().unwrap()).unwrap()
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let mut cfg = Config::default();
    cfg.policy.max_slaves = 1000;
    let now: Timestamp = "2026-06-01T05:00:00Z".parse().unwrap();
    let ledger = CapLedger::new("Asia/Tokyo", 1000, None).unwrap();
    let mut hist = History::new();
    // Full stabilization windows of history, as in steady state.
    for k in (1..=40).rev() {
        let t = Timestamp::from_second(now.as_second() - k * 15).unwrap();
        let d = decide(
            &cfg.policy,
            &Default::default(),
            &fleet(10, t),
            &ledger,
            &hist,
            t,
        );
        hist.record(&cfg.policy, t, &d);
    }
    println!(
        "decide(): median of {} runs",
        if quick { 200 } else { 2000 }
    );
    println!("{:>7} | {:>12}", "hosts", "one decide");
    println!("{}", "-".repeat(23));
    for hosts in [10usize, 100, 1000] {
        let obs = fleet(hosts, now);
        let t = median(if quick { 200 } else { 2000 }, || {
            black_box(decide(
                &cfg.policy,
                &Default::default(),
                &obs,
                &ledger,
                &hist,
                now,
            ));
        });
        println!("{hosts:>7} | {:>9.3} µs", t.as_secs_f64() * 1e6);
    }
    println!("target: <= 1 ms at 1,000 hosts\n");

    let trace = month();
    let cfg = Config::default();
    let model = Model::from_config(&cfg);
    let runs = if quick { 1 } else { 3 };
    println!("simulate 30 days of 1-second ticks (2,592,000 ticks), best of {runs}:");
    println!(
        "{:<22} | {:>10} | {:>10}",
        "policy", "wall time", "per tick"
    );
    println!("{}", "-".repeat(50));
    for (kind, capped) in [
        (Kind::Agent, true),
        (Kind::Agent, false),
        (Kind::Hpa, true),
        (Kind::AwsSimple, true),
        (Kind::None, true),
    ] {
        let best = (0..runs)
            .map(|_| {
                let t = Instant::now();
                black_box(sim::run(&cfg, &trace, &model, kind, capped, 3600));
                t.elapsed()
            })
            .min()
            .unwrap();
        let label = format!(
            "{}{}",
            kind.name(),
            if capped { " (cap)" } else { " (no cap)" }
        );
        println!(
            "{label:<22} | {:>8.3} s | {:>7.1} ns",
            best.as_secs_f64(),
            best.as_secs_f64() * 1e9 / 2_592_000.0
        );
    }
    println!("target: <= 2 s for 30 days\n");
    quality();
}

/// Issue 12's goal, on every trace in traces/ with the shipped defaults and the cap on: the
/// agent's θU against HPA's, AWS simple scaling's and the oracle's, its instance-hours against
/// HPA's, and its jitter against HPA's, side by side.
fn quality() {
    let cfg = Config::default();
    let model = Model::from_config(&cfg);
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/traces");
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "csv"))
        .collect();
    names.sort();
    println!("policy quality, capped, shipped defaults (θU: under-provisioning, % of demand):");
    println!(
        "{:<20} | {:>6} {:>6} {:>6} {:>6} | {:>6} {:>6} {:>6} | {:>7} | {:>6} {:>6} | goal",
        "trace", "θU", "hpa", "simple", "oracle", "τU", "hpa", "simple", "inst-h", "jitter", "hpa"
    );
    println!("{}", "-".repeat(122));
    let (mut met, mut all) = (0, 0);
    for path in names {
        let text = std::fs::read_to_string(&path).unwrap();
        let trace =
            Trace::parse(&text, &path.display().to_string(), Timestamp::UNIX_EPOCH).unwrap();
        let out = sim::run_all(&cfg, &trace, &model, 3600);
        let m = |k: Kind| {
            &out.iter()
                .find(|o| o.policy == k && o.capped)
                .unwrap()
                .metrics
        };
        let (a, h, s, o) = (
            m(Kind::Agent),
            m(Kind::Hpa),
            m(Kind::AwsSimple),
            m(Kind::Oracle),
        );
        let zero = |x: f64| x < 0.005;
        // Strictly below both; at 0 nothing can be below it, so 0 counts as met (the issue's
        // "or all three at 0", read for the agent alone).
        let below = (a.theta_u < h.theta_u && a.theta_u < s.theta_u) || zero(a.theta_u);
        let tau_below = (a.tau_u < h.tau_u && a.tau_u < s.tau_u) || zero(a.tau_u);
        let near = a.theta_u <= (1.5 * o.theta_u).max(o.theta_u + 0.5);
        let hours = a.instance_hours <= 1.3 * h.instance_hours;
        // Jitter above 0 is flapping (more supply changes than demand changes); below, lagging.
        let calm = a.jitter_per_hour <= h.jitter_per_hour.max(0.0) + 0.01;
        let missed: Vec<&str> = [
            (below, "θU not below both"),
            (tau_below, "τU not below both"),
            (near, "θU far from the oracle"),
            (hours, "inst-h > 1.3x HPA"),
            (a.cap_violations == 0, "cap broken"),
            (calm, "flaps more than HPA"),
        ]
        .iter()
        .filter(|(ok, _)| !ok)
        .map(|(_, why)| *why)
        .collect();
        all += 1;
        if missed.is_empty() {
            met += 1;
        }
        println!(
            "{:<20} | {:>6.2} {:>6.2} {:>6.2} {:>6.2} | {:>6.2} {:>6.2} {:>6.2} | {:>6.2}x | {:>6.1} {:>6.1} | {}",
            path.file_stem().unwrap().to_string_lossy(),
            a.theta_u,
            h.theta_u,
            s.theta_u,
            o.theta_u,
            a.tau_u,
            h.tau_u,
            s.tau_u,
            a.instance_hours / h.instance_hours.max(1e-9),
            a.jitter_per_hour,
            h.jitter_per_hour,
            if missed.is_empty() {
                "met".to_string()
            } else {
                missed.join(", ")
            }
        );
    }
    println!(
        "goal (issue 12): θU and τU below HPA's and simple's (or 0), θU <= max(1.5x, +0.5) the oracle's, \
         inst-h <= 1.3x HPA's, no cap violation, no more flapping than HPA: met on {met} of {all}"
    );
}
