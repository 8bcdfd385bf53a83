//! `burst-agent simulate` as an operator runs it: table, JSON, plot, bad traces.

mod common;
use common::*;
use serde_json::Value;

fn trace(name: &str) -> String {
    root().join("traces").join(name).display().to_string()
}

#[test]
fn table_lists_every_policy_with_and_without_the_cap() {
    let example = root().join("agent.toml.example");
    let o = agent(&[
        "--config",
        example.to_str().unwrap(),
        "simulate",
        &trace("tv-feature.csv"),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    for row in [
        "burst-agent (cap)",
        "burst-agent (no cap)",
        "k8s-hpa (cap)",
        "k8s-hpa (no cap)",
        "aws-simple (cap)",
        "aws-simple (no cap)",
        "static (cap)",
        "static (no cap)",
        "oracle (cap)",
        "none",
    ] {
        assert!(
            out.lines().any(|l| l.starts_with(row)),
            "no row {row:?} in\n{out}"
        );
    }
    assert!(out.contains("θU%") && out.contains("cap-viol"), "{out}");
}

#[test]
fn json_and_plot() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("tweet.svg");
    let example = root().join("agent.toml.example");
    let o = agent(&[
        "--config",
        example.to_str().unwrap(),
        "simulate",
        &trace("celebrity-tweet.csv"),
        "--json",
        "--plot",
        svg.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let runs = v["runs"].as_array().unwrap();
    // Three policies and the static fleet with and without the cap, the oracle, and none.
    assert_eq!(runs.len(), 10);
    for r in runs.iter().filter(|r| r["capped"] == true) {
        assert_eq!(r["metrics"]["cap_violations"], 0, "{r}");
    }
    // Every run's gap is its θU minus the oracle's.
    let oracle = runs.iter().find(|r| r["label"] == "oracle (cap)").unwrap();
    let best = oracle["metrics"]["theta_u"].as_f64().unwrap();
    for r in runs {
        let (u, gap) = (
            r["metrics"]["theta_u"].as_f64().unwrap(),
            r["metrics"]["theta_u_gap"].as_f64().unwrap(),
        );
        assert!((u - best - gap).abs() < 1e-9, "{r}");
    }
    assert_eq!(v["daily_limit"], 7);
    assert_eq!(v["time_zone"], "Asia/Tokyo");
    // η is against capped HPA unless told otherwise; its own is 1.
    assert_eq!(v["speedup_reference"], "k8s-hpa (cap)");
    let hpa = runs.iter().find(|r| r["label"] == "k8s-hpa (cap)").unwrap();
    assert_eq!(hpa["metrics"]["elastic_speedup"], 1.0);
    let plot = std::fs::read_to_string(&svg).unwrap();
    assert!(
        plot.starts_with("<svg") && plot.contains("polyline"),
        "not an SVG plot"
    );
    assert!(plot.contains("daily cap (7)"));
}

#[test]
fn config_policy_and_model_flags_are_used() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        dir.path(),
        "agent.toml",
        "[agent]\ndry_run = true\n[cap]\ndaily_limit = 3\ntime_zone = \"UTC\"\n",
    );
    let o = agent(&[
        "--config",
        cfg.to_str().unwrap(),
        "simulate",
        &trace("tv-feature.csv"),
        "--json",
        "--boot-delay",
        "3m",
        "--slo-utilization",
        "0.7",
        "--master-share",
        "0.2",
        "--static-slaves",
        "4",
        "--reference",
        "none",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["daily_limit"], 3);
    assert_eq!(v["model"]["boot_delay"], 180);
    assert_eq!(v["model"]["slo_utilization"], 0.7);
    assert_eq!(v["model"]["master_only_share"], 0.2);
    assert_eq!(v["model"]["static_slaves"], 4);
    assert_eq!(v["speedup_reference"], "none");
    let launches = |label: &str| {
        v["runs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["label"] == label)
            .unwrap()["metrics"]["launches"]
            .as_u64()
            .unwrap()
    };
    // Four planned, three of them under a cap of 3.
    assert_eq!(launches("static (cap)"), 3);
    assert_eq!(launches("static (no cap)"), 4);
    let agent_cap = v["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["label"] == "burst-agent (cap)")
        .unwrap();
    assert!(
        agent_cap["metrics"]["max_instances_per_day"]
            .as_u64()
            .unwrap()
            <= 3
    );
}

#[test]
fn bad_traces_and_flags_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let bad = write(dir.path(), "bad.csv", "time,offered_load\n0,1\n60,lots\n");
    let o = agent(&["simulate", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("bad.csv:3: offered_load \"lots\" is not a number"),
        "{}",
        stderr(&o)
    );
    let o = agent(&["simulate", "/nonexistent.csv"]);
    assert!(
        stderr(&o).contains("cannot read trace /nonexistent.csv"),
        "{}",
        stderr(&o)
    );
    let o = agent(&[
        "simulate",
        &trace("tv-feature.csv"),
        "--slo-utilization",
        "1.5",
    ]);
    assert!(
        stderr(&o).contains("--slo-utilization must be above 0 and at most 1"),
        "{}",
        stderr(&o)
    );
    let o = agent(&[
        "simulate",
        &trace("tv-feature.csv"),
        "--master-share",
        "1.5",
    ]);
    assert!(
        stderr(&o).contains("--master-share must be between 0 and 1"),
        "{}",
        stderr(&o)
    );
    let o = agent(&["simulate", &trace("tv-feature.csv"), "--reference", "hpa"]);
    assert!(
        stderr(&o).contains("no policy \"hpa\"; one of burst-agent, burst-agent+bridge, k8s-hpa"),
        "{}",
        stderr(&o)
    );
}

/// `--from`/`--to` draw a part of the trace: the hour of a burst is not squeezed into the whole
/// day's axis. The run and its table still cover the whole trace.
#[test]
fn a_plot_zooms_to_the_window_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let example = root().join("agent.toml.example");
    let plot = |name: &str, window: &[&str]| {
        let svg = dir.path().join(name);
        let mut args = vec!["--config", example.to_str().unwrap(), "simulate"];
        let t = trace("tv-feature.csv");
        args.push(&t);
        args.extend(["--plot", svg.to_str().unwrap()]);
        args.extend(window);
        let o = agent(&args);
        (o, svg)
    };
    // The points of the longest line drawn (a series: axes and ticks have two) in an SVG plot.
    let points = |svg: &std::path::Path| {
        let text = std::fs::read_to_string(svg).unwrap();
        text.split("<polyline")
            .skip(1)
            .filter_map(|l| l.split("points=\"").nth(1)?.split('"').next())
            .map(|pts| pts.split_whitespace().count())
            .max()
            .expect("a polyline")
    };
    let (o, whole) = plot("whole.svg", &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (o, zoom) = plot("zoom.svg", &["--from", "7h", "--to", "8h30m"]);
    assert!(o.status.success(), "{}", stderr(&o));
    // 1.5 h of 12: about an eighth of the points (plus one past each edge).
    let (w, z) = (points(&whole), points(&zoom));
    assert!(z * 6 < w && z * 10 > w, "{z} points zoomed, {w} whole");
    // The table is the whole trace's either way.
    assert!(
        stdout(&o).contains("trace tv-feature.csv (12.0 h"),
        "{}",
        stdout(&o)
    );
    let (o, _) = plot("none.svg", &["--from", "9h", "--to", "8h"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("--from must come before --to"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn the_bridge_runs_beside_the_agent_and_its_table_says_what_it_cost() {
    let o = agent(&["simulate", &trace("tv-feature.csv"), "--bridge"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    // In the main table, the column wide enough for the longest label.
    assert!(out.contains("\nburst-agent+bridge (no cap) "), "{out}");
    let header = out
        .lines()
        .find(|l| l.starts_with("bridge "))
        .unwrap_or_else(|| panic!("no bridge table:\n{out}"));
    for col in ["θU%", "θU w/o%", "θD%", "τD%", "needless%", "episodes"] {
        assert!(header.contains(col), "{header}");
    }
    let row = out
        .lines()
        .find(|l| l.starts_with("burst-agent+bridge (cap)") && l.split_whitespace().count() == 8)
        .unwrap_or_else(|| panic!("no bridged row in the bridge table:\n{out}"));
    let v: Vec<f64> = row
        .split_whitespace()
        .skip(2)
        .map(|x| x.parse().unwrap())
        .collect();
    // θU with the bridge below θU without; some load served degraded, in at least one episode.
    assert!(v[0] < v[1], "{row}");
    assert!(v[2] > 0.0 && v[3] > 0.0 && v[5] >= 1.0, "{row}");
    // Without --bridge there is no such run to measure η against.
    let o = agent(&[
        "simulate",
        &trace("tv-feature.csv"),
        "--reference",
        "burst-agent+bridge",
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("needs --bridge"), "{}", stderr(&o));
}
