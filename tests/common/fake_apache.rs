//! Real processes that look like Apache to the sampler: a parent named `httpd` (a link to `sh`,
//! running the script below with `-c`) whose N children are named `httpd` too (a link to
//! `sleep`), and a pidfile naming the parent. Shared by the integration tests and the sampler
//! benchmark.
//!
//! Nothing executable is written: exec'ing a freshly written file races with other test threads'
//! forks holding its write descriptor (ETXTBSY). The kernel names a process after the path it was
//! exec'd by, so links are enough.

use std::os::unix::fs::symlink;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

pub struct FakeApache {
    pub pidfile: PathBuf,
    pub workers: u32,
    child: Child,
    _dir: tempfile::TempDir,
}

/// Run as `httpd -c PARENT httpd WORKERS WORKER_BIN PIDFILE`.
const PARENT: &str = r#"
i=0
while [ "$i" -lt "$1" ]; do "$2" 100000 & i=$((i+1)); done
echo $$ > "$3.tmp" && mv "$3.tmp" "$3"
wait
"#;

impl FakeApache {
    /// Starts the parent and its `workers` children and waits until all are up.
    pub fn start(name: &str, workers: u32) -> FakeApache {
        let dir = tempfile::tempdir().expect("temp dir");
        let bin = dir.path().join("bin");
        let sbin = dir.path().join("sbin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(&sbin).unwrap();
        let sleep = which("sleep").expect("sleep(1) must be installed (coreutils)");
        let worker = bin.join(name);
        symlink(&sleep, &worker).unwrap();
        let parent = sbin.join(name);
        symlink(which("sh").expect("sh must be installed"), &parent).unwrap();
        let pidfile = dir.path().join("httpd.pid");
        let child = Command::new(&parent)
            .arg("-c")
            .arg(PARENT)
            .arg(name)
            .arg(workers.to_string())
            .arg(&worker)
            .arg(&pidfile)
            .process_group(0)
            .spawn()
            .expect("spawn fake Apache parent");
        let parent_pid = child.id();
        let fa = FakeApache {
            pidfile,
            workers,
            child,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60 + u64::from(workers) / 20);
        let children = format!("/proc/{parent_pid}/task/{parent_pid}/children");
        loop {
            let n = std::fs::read_to_string(&children)
                .map(|t| t.split_whitespace().count())
                .unwrap_or(0);
            if n as u32 == workers && fa.pidfile.exists() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "fake Apache: {n} of {workers} workers after the deadline"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        fa
    }
}

impl Drop for FakeApache {
    fn drop(&mut self) {
        // The parent and its workers share a process group: end them all.
        kill_group(self.child.id());
        let _ = self.child.wait();
    }
}

fn kill_group(pgid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .status();
}

pub fn which(cmd: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(cmd))
            .find(|p| p.is_file())
    })
}
