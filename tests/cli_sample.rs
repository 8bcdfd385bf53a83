//! `burst-agent sample` on this host, with real processes named like Apache and a real apache2.

mod common;
use common::apache::Apache;
use common::fake_apache::FakeApache;
use common::*;
use serde_json::Value;

fn sample_json(config: &str) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(dir.path(), "agent.toml", config);
    let o = agent(&["--config", cfg.to_str().unwrap(), "sample", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(&o)))
}

#[test]
fn counts_workers_from_the_pidfile_parent() {
    let fa = FakeApache::start("httpd", 40);
    let s = sample_json(&format!(
        "[agent]\ndry_run = true\n[sampling]\napache_pidfile = {:?}\nmod_status_url = \"\"\n",
        fa.pidfile
    ));
    assert_eq!(s["apache"]["workers"], 40, "{s:#}");
    assert_eq!(s["apache"]["method"], "pidfile");
    assert!(s["load"]["one"].is_number());
    assert!(s["memory"]["total_bytes"].as_u64().unwrap() > 0);
    assert!(s["disks"][0]["used_percent"].is_number());
}

#[test]
fn falls_back_to_process_names_without_a_pidfile() {
    // A name no other process on the machine has, so the count is exactly ours.
    let fa = FakeApache::start("burstfakehttpd", 12);
    let s = sample_json(
        "[agent]\ndry_run = true\n[sampling]\napache_pidfile = \"/nonexistent/httpd.pid\"\n\
         apache_process_names = [\"burstfakehttpd\"]\nmod_status_url = \"\"\n",
    );
    assert_eq!(s["apache"]["workers"], fa.workers, "{s:#}");
    assert_eq!(s["apache"]["method"], "process_names");
}

#[test]
fn a_stale_pidfile_is_not_trusted() {
    // The pidfile names a live process that is not Apache (this test's own runner).
    let fa = FakeApache::start("burststalehttpd", 3);
    let dir = tempfile::tempdir().unwrap();
    let stale = write(
        dir.path(),
        "stale.pid",
        &format!("{}\n", std::process::id()),
    );
    let s = sample_json(&format!(
        "[agent]\ndry_run = true\n[sampling]\napache_pidfile = {stale:?}\n\
         apache_process_names = [\"burststalehttpd\"]\nmod_status_url = \"\"\n"
    ));
    assert_eq!(s["apache"]["method"], "process_names", "{s:#}");
    assert_eq!(s["apache"]["workers"], fa.workers);
}

#[test]
fn real_apache_with_mod_status() {
    let a = Apache::start(5, 150);
    let s = sample_json(&format!(
        "[agent]\ndry_run = true\n[sampling]\napache_pidfile = {:?}\nmod_status_url = {:?}\n\
         apache_max_workers = 256\n",
        a.pidfile,
        a.status_url()
    ));
    assert_eq!(s["apache"]["method"], "pidfile", "{s:#}\n{}", a.error_log());
    assert!(s["apache"]["workers"].as_u64().unwrap() >= 5, "{s:#}");
    // mod_status answered: its own request is one busy worker.
    assert!(s["apache"]["busy_workers"].as_u64().unwrap() >= 1, "{s:#}");
    assert!(s["apache"]["idle_workers"].is_number(), "{s:#}");
    // The scoreboard (ServerLimit 150) is smaller than the configured 256.
    assert_eq!(s["apache"]["max_workers"], 150, "{s:#}");
    assert_eq!(s["problems"].as_array().unwrap().len(), 0, "{s:#}");
}

#[test]
fn text_output_names_missing_parts() {
    let o = {
        let dir = tempfile::tempdir().unwrap();
        let cfg = write(
            dir.path(),
            "agent.toml",
            "[agent]\ndry_run = true\n[sampling]\nmod_status_url = \"http://127.0.0.1:9/server-status\"\n\
             disk_paths = [\"/\", \"/no/such/disk\"]\n",
        );
        agent(&["--config", cfg.to_str().unwrap(), "sample"])
    };
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("disk      /no/such/disk missing"), "{out}");
    assert!(
        out.contains("problem   mod_status at http://127.0.0.1:9/server-status?auto"),
        "{out}"
    );
    assert!(out.contains("problem   disk /no/such/disk"), "{out}");
}

#[test]
fn bad_config_stops_sample_with_the_problems() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(dir.path(), "agent.toml", "[sampling]\ninterval = 10\n");
    let o = agent(&["--config", cfg.to_str().unwrap(), "sample"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("sampling.interval"), "{}", stderr(&o));
}

/// `sample --every` prints as `vmstat 1` does (docs/operations.md promises the likeness): the
/// column heads once, then one line per sample with a value under each head.
#[test]
fn sampling_every_second_prints_one_line_per_sample_under_its_heads() {
    let fa = FakeApache::start("httpd", 7);
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        dir.path(),
        "agent.toml",
        &format!(
            "[agent]\ndry_run = true\n[sampling]\napache_pidfile = {:?}\nmod_status_url = \"\"\n",
            fa.pidfile
        ),
    );
    let o = agent(&[
        "--config",
        cfg.to_str().unwrap(),
        "sample",
        "--every",
        "1s",
        "--count",
        "3",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "heads and three samples:\n{out}");
    let heads: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(heads[0], "time", "{out}");
    let workers = heads.iter().position(|h| *h == "httpd").unwrap();
    for row in &lines[1..] {
        // (Anything after the columns is "!" and what could not be sampled.)
        let fields: Vec<&str> = row
            .split(" ! ")
            .next()
            .unwrap()
            .split_whitespace()
            .collect();
        assert_eq!(fields.len(), heads.len(), "{row:?} under {heads:?}");
        assert_eq!(fields[workers], "7", "{row:?}");
    }
}
