//! `burst-agent check-config` on good and bad files, run as an operator would.

mod common;
use common::*;

#[test]
fn example_config_is_ok() {
    let example = root().join("agent.toml.example");
    let o = agent(&["check-config", example.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains(": ok (group \"example-site\""),
        "{}",
        stdout(&o)
    );
    assert!(
        stdout(&o).contains("cap 7/day in Asia/Tokyo"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn every_problem_is_reported_with_line_column_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let bad = write(
        dir.path(),
        "bad.toml",
        r#"[agent]
group = "shop"
role = "boss"
state_dir = "var/lib/burst-agent"
dry_run = true

[sampling]
interval = "10 fortnights"
apache_procs = ["httpd"]

[policy]
min_slaves = 5
max_slaves = 2

[policy.scale_out]
threshold = 0.8

[policy.scale_in]
threshold = 0.9

[cap]
time_zone = "Asia/Tokio"

[metrics]
storage_resolution = 30

[hooks.pre_register]
argv = ["rsync", "-a", "/var/www/", "{privte_ip}:/var/www/"]

[hooks.content_sync]
argv = []
"#,
    );
    let o = agent(&["check-config", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "must exit non-zero");
    let err = stderr(&o);
    let f = bad.display().to_string();
    for want in [
        format!("{f}:3:1: agent.role: unknown variant `boss`"),
        format!("{f}:8:1: sampling.interval: invalid duration"),
        format!("{f}:9:1: sampling.apache_procs: unknown field `apache_procs`"),
        format!("{f}:4:1: agent.state_dir must be an absolute path"),
        format!("{f}:12:1: policy.min_slaves must be at most policy.max_slaves (5 > 2)"),
        format!("{f}:19:1: policy.scale_in.threshold must be below policy.scale_out.threshold (0.9 >= 0.8)"),
        format!("{f}:22:1: cap.time_zone must be an IANA time zone name"),
        format!("{f}:25:1: metrics.storage_resolution must be 1 (high resolution) or 60"),
        format!("{f}:28:1: hooks.pre_register.argv[3] uses unknown placeholder {{privte_ip}}"),
        format!("{f}:31:1: hooks.content_sync.argv must name a program to run"),
    ] {
        assert!(err.contains(&want), "missing\n  {want}\nin\n{err}");
    }
    assert!(err.contains("10 problem(s)"), "{err}");
}

#[test]
fn syntax_errors_point_at_the_spot() {
    let dir = tempfile::tempdir().unwrap();
    let bad = write(
        dir.path(),
        "syntax.toml",
        "[agent]\ngroup = \"unterminated\n",
    );
    let o = agent(&["check-config", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("syntax.toml:2:"), "{}", stderr(&o));
}

#[test]
fn missing_file_is_named() {
    let o = agent(&["check-config", "/nonexistent/agent.toml"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("cannot read config file /nonexistent/agent.toml"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn config_flag_is_used_when_no_path_given() {
    let example = root().join("agent.toml.example");
    let o = agent(&["--config", example.to_str().unwrap(), "check-config"]);
    assert!(o.status.success(), "{}", stderr(&o));
}

/// The slave's example passes clean (no warning: it is what a slave must set), and the two
/// mistakes that leave a slave silent are warned of by key: the master's example used as is on
/// a slave (dry run), and no region.
#[test]
fn the_reporter_example_is_clean_and_a_silent_reporter_is_warned_of() {
    let example = root().join("agent.reporter.toml.example");
    let o = agent(&["check-config", example.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("role reporter"), "{out}");
    assert!(!out.contains("warning"), "{out}");

    let text = std::fs::read_to_string(&example).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dry = write(
        dir.path(),
        "dry.toml",
        &text
            .replace("dry_run = false", "dry_run = true")
            .replace("region = \"us-east-1\"", "region = \"\""),
    );
    let o = agent(&["check-config", dry.to_str().unwrap()]);
    assert!(o.status.success(), "warnings do not fail: {}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("warning: agent.dry_run = true on a reporter"),
        "{out}"
    );
    assert!(
        out.contains("warning: aws.region is unset on a reporter"),
        "{out}"
    );
    // The master's example is no reporter: none of these.
    let master = root().join("agent.toml.example");
    let o = agent(&["check-config", master.to_str().unwrap()]);
    assert!(!stdout(&o).contains("on a reporter"), "{}", stdout(&o));
}

/// Issue 21, part 4: an operator who points `pre_register` at another tree and leaves
/// `content_sync` unset gets the periodic sync of that same tree (before, a second hard-coded
/// /var/www rsync kept running with --delete); `check-config` says which command each runs, and
/// a config that sets its own `content_sync` keeps it.
#[test]
fn content_sync_follows_pre_register_unless_set() {
    let dir = tempfile::tempdir().unwrap();
    let one = write(
        dir.path(),
        "one.toml",
        r#"[agent]
group = "shop"
dry_run = true

[hooks.pre_register]
argv = ["rsync", "-a", "--delete", "/srv/shop/", "{private_ip}:/srv/shop/"]
"#,
    );
    let o = agent(&["check-config", one.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains(
            "note: hooks.pre_register runs: rsync -a --delete /srv/shop/ {private_ip}:/srv/shop/"
        ),
        "{out}"
    );
    assert!(
        out.contains("note: hooks.content_sync is unset: it runs hooks.pre_register's command"),
        "{out}"
    );
    assert!(
        out.contains("hooks.content_sync syncs from /srv/shop/"),
        "{out}"
    );
    assert!(!out.contains("/var/www"), "{out}");

    let two = write(
        dir.path(),
        "two.toml",
        r#"[agent]
group = "shop"
dry_run = true

[hooks.pre_register]
argv = ["rsync", "-a", "--delete", "/srv/shop/", "{private_ip}:/srv/shop/"]

[hooks.content_sync]
argv = ["rsync", "-a", "/srv/shop/uploads/", "{private_ip}:/srv/shop/uploads/"]
"#,
    );
    let out = stdout(&agent(&["check-config", two.to_str().unwrap()]));
    assert!(
        out.contains("note: hooks.content_sync runs: rsync -a /srv/shop/uploads/"),
        "{out}"
    );
    assert!(
        out.contains("hooks.content_sync syncs from /srv/shop/uploads/"),
        "{out}"
    );
}
