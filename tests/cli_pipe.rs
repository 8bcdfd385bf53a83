//! A reader that goes away (`| head -1`) ends a command quietly: exit 0, nothing on stderr,
//! no panic. The pipe is closed the way `head` closes it, before or after the first line.

mod common;
use common::*;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs the agent with `args`, its stdout a pipe whose reader takes `lines` lines and closes;
/// the exit status and stderr.
fn closed_after(args: &[&str], lines: usize) -> (std::process::ExitStatus, String) {
    let mut child = Command::new(bin())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let mut reader = BufReader::new(out);
    for _ in 0..lines {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
    }
    drop(reader);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{args:?} still runs 60 s after its reader went away");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    (status, err)
}

fn quiet(args: &[&str], lines: usize) {
    let (status, err) = closed_after(args, lines);
    assert!(
        status.success() && !err.contains("panicked"),
        "{args:?} | head -{lines}: {status}, stderr: {err}"
    );
}

#[test]
fn sample_every_second_ends_when_its_reader_goes() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(dir.path(), "agent.toml", "[agent]\ndry_run = true\n");
    let cfg = cfg.to_str().unwrap();
    quiet(&["-c", cfg, "sample", "--every", "1s"], 1);
}

#[test]
fn dashboard_and_simulate_end_quietly_into_a_closed_pipe() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(dir.path(), "agent.toml", "[agent]\ndry_run = true\n");
    let cfg = cfg.to_str().unwrap();
    quiet(&["-c", cfg, "dashboard", "--print"], 0);
    let trace = concat!(env!("CARGO_MANIFEST_DIR"), "/traces/tv-feature.csv");
    quiet(&["-c", cfg, "simulate", trace], 0);
}
