//! A throwaway Debian machine for the service tests: a real systemd as PID 1 of private PID,
//! mount and network namespaces, booted to `basic.target` (so only journald starts: none of this
//! host's enabled services, no apache2, no node_exporter, no sshd).
//!
//! `/etc`, `/usr`, `/var` and `/home` are overlays whose writes go to a tmpfs inside the mount
//! namespace, so installing the .deb, adding users and writing configs there leave the host as
//! it was; `/run` and `/tmp` are fresh tmpfs. The network namespace has only loopback: whatever
//! runs inside reaches nothing outside it. Dropping the `Machine` kills its PID 1 with SIGKILL,
//! which ends every process of the PID namespace and, with them, the mounts.

use super::SETUP;
use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub struct Machine {
    unshare: Child,
    /// The host's pid of the namespace's PID 1 (systemd).
    pub pid: u32,
    /// A directory of the test's, visible inside and outside the machine.
    pub share: PathBuf,
    /// Processes the test started inside (sshd, ...), killed before PID 1.
    children: Vec<Child>,
}

const BOOT: &str = r#"set -e
ovl="$1"
mount -t tmpfs -o mode=0700 burst-agent-test "$ovl"
for d in etc usr var home; do
  mkdir -p "$ovl/$d/upper" "$ovl/$d/work"
  mount -t overlay overlay -o "lowerdir=/$d,upperdir=$ovl/$d/upper,workdir=$ovl/$d/work" "/$d"
done
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
ip link set lo up
exec env container=other /usr/lib/systemd/systemd --system --unit=basic.target
"#;

/// The systemd the tests boot, and the tools they drive it with.
pub fn require_tools() {
    for (tool, package) in [
        ("unshare", "util-linux"),
        ("nsenter", "util-linux"),
        ("systemctl", "systemd"),
        ("journalctl", "systemd"),
        ("ip", "iproute2"),
        ("dpkg", "dpkg"),
        ("ssh", "openssh-client"),
        ("ssh-keygen", "openssh-client"),
        ("rsync", "rsync"),
    ] {
        super::require(tool, package);
    }
    assert!(
        Path::new("/usr/lib/systemd/systemd").is_file(),
        "/usr/lib/systemd/systemd is missing: `apt-get install -y systemd`, or run {SETUP}"
    );
    assert!(
        Path::new("/usr/sbin/sshd").is_file(),
        "/usr/sbin/sshd is missing: `apt-get install -y openssh-server`, or run {SETUP}"
    );
}

/// The package `cargo deb` built (the README's install path).
pub fn deb() -> PathBuf {
    let dir = super::root().join("target/debian");
    let newest = std::fs::read_dir(&dir).ok().and_then(|d| {
        d.filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("burst-agent_") && n.ends_with(".deb"))
            })
            .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
    });
    newest.unwrap_or_else(|| {
        panic!(
            "no target/debian/burst-agent_*.deb: build it with `cargo deb --locked` (cargo \
             install cargo-deb --locked), or run {SETUP}"
        )
    })
}

impl Machine {
    pub fn boot(name: &str) -> Machine {
        require_tools();
        // The machine mounts a fresh tmpfs on /tmp: a checkout under it (its package, its
        // binaries) is not there inside, and dpkg would only say "cannot access archive".
        let here = env!("CARGO_MANIFEST_DIR");
        assert!(
            !(here == "/tmp" || here.starts_with("/tmp/")),
            "this checkout is under /tmp ({here}), which the test machine replaces with an empty \
             tmpfs: clone it elsewhere (e.g. git clone {here} /var/tmp/burst-agent) and run the \
             tests there"
        );
        let share = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("machine-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&share);
        std::fs::create_dir_all(share.join("ovl")).unwrap();
        let log = File::create(share.join("boot.log")).unwrap();
        let unshare = Command::new("unshare")
            .args([
                "--pid",
                "--fork",
                "--mount",
                "--mount-proc",
                "--net",
                "--propagation",
                "private",
                "sh",
                "-c",
                BOOT,
                "boot",
            ])
            .arg(share.join("ovl"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start unshare");
        let mut m = Machine {
            pid: 0,
            unshare,
            share,
            children: Vec::new(),
        };
        let t = Instant::now();
        loop {
            if m.pid == 0 {
                let children = format!("/proc/{0}/task/{0}/children", m.unshare.id());
                if let Some(p) = std::fs::read_to_string(children)
                    .ok()
                    .and_then(|c| c.split_whitespace().next().and_then(|p| p.parse().ok()))
                {
                    m.pid = p;
                }
            }
            if m.pid != 0 {
                let comm =
                    std::fs::read_to_string(format!("/proc/{}/comm", m.pid)).unwrap_or_default();
                if comm.trim() == "systemd" {
                    let state = m.sh("systemctl is-system-running");
                    let state = super::stdout(&state);
                    if matches!(state.trim(), "running" | "degraded") {
                        return m;
                    }
                }
            }
            if let Ok(Some(status)) = m.unshare.try_wait() {
                panic!(
                    "the test machine did not boot ({status}):\n{}",
                    std::fs::read_to_string(m.share.join("boot.log")).unwrap_or_default()
                );
            }
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "systemd did not reach a running state within 60 s:\n{}",
                std::fs::read_to_string(m.share.join("boot.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `sh -c script` inside the machine (its PID, mount and network namespaces), as root.
    pub fn sh(&self, script: &str) -> Output {
        Command::new("nsenter")
            .args([
                "-t",
                &self.pid.to_string(),
                "-p",
                "-m",
                "-n",
                "--",
                "sh",
                "-c",
            ])
            .arg(script)
            .stdin(Stdio::null())
            .output()
            .expect("run nsenter")
    }

    /// Like [`Machine::sh`], and the script must succeed; returns its stdout.
    pub fn ok(&self, script: &str) -> String {
        let o = self.sh(script);
        assert!(
            o.status.success(),
            "in the test machine: `{script}` failed ({}):\n{}{}\njournal:\n{}",
            o.status,
            super::stdout(&o),
            super::stderr(&o),
            self.journal_tail()
        );
        super::stdout(&o)
    }

    /// A long-running program inside the machine's mount and network namespaces (not its PID
    /// namespace), killed when the machine goes.
    pub fn spawn(&mut self, argv: &[&str], log: &Path) -> usize {
        let out = File::create(log).unwrap();
        let child = Command::new("nsenter")
            .args(["-t", &self.pid.to_string(), "-m", "-n", "--"])
            .args(argv)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("spawn in the test machine");
        self.children.push(child);
        self.children.len() - 1
    }

    pub fn kill_child(&mut self, index: usize) {
        let c = &mut self.children[index];
        let _ = c.kill();
        let _ = c.wait();
    }

    /// A path inside the machine, seen from outside (through its PID 1's root).
    pub fn path(&self, inside: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root{inside}", self.pid))
    }

    /// One property of a unit (`systemctl show -p NAME --value`).
    pub fn prop(&self, unit: &str, name: &str) -> String {
        self.ok(&format!("systemctl show -p {name} --value {unit}"))
            .trim()
            .to_string()
    }

    /// The whole journal of the boot, one message a line.
    pub fn journal(&self) -> String {
        super::stdout(&self.sh("journalctl --no-pager -o cat -b"))
    }

    /// The service's lines of the journal.
    pub fn unit_journal(&self, unit: &str) -> String {
        super::stdout(&self.sh(&format!("journalctl --no-pager -o cat -u {unit}")))
    }

    fn journal_tail(&self) -> String {
        let j = self.journal();
        let lines: Vec<&str> = j.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Polls `check` every 200 ms until it returns `Some`, or fails naming `what` with the
    /// journal's tail.
    pub fn wait_for<T>(
        &self,
        what: &str,
        limit: Duration,
        mut check: impl FnMut() -> Option<T>,
    ) -> T {
        let t = Instant::now();
        loop {
            if let Some(v) = check() {
                return v;
            }
            assert!(
                t.elapsed() < limit,
                "timed out after {limit:?} waiting for {what}; journal:\n{}",
                self.journal_tail()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Moves the calling thread into the machine's network namespace (setns(2) acts on one
    /// thread): sockets it opens and processes it starts afterwards live there.
    pub fn enter_network(&self) {
        let ns = File::open(format!("/proc/{}/ns/net", self.pid)).expect("open the netns");
        rustix::thread::move_into_link_name_space(
            ns.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .expect("setns into the test machine's network namespace");
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        if self.pid != 0 {
            // SIGKILL to a PID namespace's init ends every process in it; `timeout` alone would
            // leave systemd running.
            let _ = Command::new("kill")
                .args(["-9", &self.pid.to_string()])
                .status();
        }
        let _ = self.unshare.kill();
        let _ = self.unshare.wait();
        if std::thread::panicking() {
            eprintln!(
                "kept the failed test machine's files in {}",
                self.share.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.share);
        }
    }
}
