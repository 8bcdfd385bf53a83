//! The Debian package under a real systemd, as an operator installs and runs it
//! (docs/install.md), and the shipped rsync-over-ssh hook to a real sshd from inside the
//! unit's sandbox. Each test boots its own machine (tests/common/machine.rs): systemd as PID 1
//! of private PID, mount and network namespaces, with overlays that keep the host untouched.

mod common;
use common::machine::{deb, Machine};
use common::moto::Moto;
use common::*;
use std::time::{Duration, Instant};

const UNIT: &str = "burst-agent.service";

/// One test machine at a time: each boots a systemd of its own, and two at once would share
/// this process's cgroup.
static ONE_MACHINE: std::sync::Mutex<()> = std::sync::Mutex::new(());
const CONF: &str = "/etc/burst-agent/agent.toml";

fn install(m: &Machine) -> String {
    let deb = deb();
    m.ok(&format!("dpkg -i {} 2>&1", deb.display()))
}

/// Replaces the installed config with `text`, with the owner and mode the package gives it.
fn put_config(m: &Machine, text: &str) {
    let staged = m.share.join("agent.toml");
    std::fs::write(&staged, text).unwrap();
    m.ok(&format!(
        "install -m 0640 -o root -g burst-agent {} {CONF}",
        staged.display()
    ));
}

fn drop_in(m: &Machine, text: &str) {
    let staged = m.share.join("drop-in.conf");
    std::fs::write(&staged, text).unwrap();
    m.ok(&format!(
        "mkdir -p /etc/systemd/system/{UNIT}.d && \
         install -m 0644 {} /etc/systemd/system/{UNIT}.d/50-test.conf && systemctl daemon-reload",
        staged.display()
    ));
}

fn main_pid(m: &Machine) -> u32 {
    m.prop(UNIT, "MainPID").parse().unwrap_or(0)
}

#[test]
fn the_package_installs_stopped_and_the_service_runs_as_an_operator_expects() {
    let _one = ONE_MACHINE.lock().unwrap_or_else(|p| p.into_inner());
    let m = Machine::boot("operator");
    let out = install(&m);

    // Installed, not started, not enabled: the agent can spend money.
    assert!(out.contains("installed but not started"), "{out}");
    assert_eq!(
        m.sh(&format!("systemctl is-active {UNIT}")).status.code(),
        Some(3)
    );
    assert_eq!(
        stdout(&m.sh(&format!("systemctl is-enabled {UNIT}"))).trim(),
        "disabled"
    );
    // The config is readable by the service through its group, by nobody else; a conffile.
    assert_eq!(
        m.ok(&format!("stat -c '%U:%G %a' /etc/burst-agent {CONF}")),
        "root:burst-agent 750\nroot:burst-agent 640\n"
    );
    assert!(m
        .ok("dpkg-query -W -f='${Conffiles}' burst-agent")
        .contains(CONF));
    assert!(m
        .ok("getent passwd burst-agent")
        .contains(":/var/lib/burst-agent:"));
    // The docs are installed, and every relative link among them resolves there too.
    let docs = m.path("/usr/share/doc/burst-agent");
    for f in [
        "README.md",
        "RELIABILITY.md",
        "docs/operations.md",
        "docs/simulate-tv-feature.svg",
        "examples/agent.reporter.toml",
    ] {
        assert!(docs.join(f).is_file(), "{f} is not in the package");
    }
    let bad = common::docs::broken(&docs);
    assert!(
        bad.is_empty(),
        "broken links in the package:\n{}",
        bad.join("\n")
    );

    // The shipped config, as it is: a dry run on this host alone.
    m.ok(&format!("systemctl start {UNIT}"));
    assert_eq!(m.prop(UNIT, "ActiveState"), "active");
    let status = m.wait_for(
        "the cap line in StatusText",
        Duration::from_secs(30),
        || {
            let s = m.prop(UNIT, "StatusText");
            s.contains("burst cap").then_some(s)
        },
    );
    assert!(status.contains("burst cap 0/7 used"), "{status}");
    let journal = m.journal();
    for bad in [
        "Permission denied",
        "already exists but the mode is different",
    ] {
        assert!(!journal.contains(bad), "journal says {bad:?}:\n{journal}");
    }
    assert!(m.unit_journal(UNIT).contains("dry run on this host alone"));

    // One agent per state directory: a second one, even a dry run, names the first's pid.
    let pid = main_pid(&m);
    let second = m.sh(&format!(
        "runuser -u burst-agent -- burst-agent --config {CONF} run --dry-run"
    ));
    assert_eq!(second.status.code(), Some(1), "{}", stderr(&second));
    assert!(
        stderr(&second).contains(&format!("another burst-agent (pid {pid})")),
        "{}",
        stderr(&second)
    );
    // ... while `status` still reads.
    let st = m.ok(&format!("burst-agent --config {CONF} status"));
    assert!(st.contains(&format!("running (pid {pid}")), "{st}");

    // An operator's edit survives reinstalling the package, and so do owner and mode.
    let shipped = std::fs::read_to_string(m.path(CONF)).unwrap();
    let fast = shipped
        .replace("interval = \"10s\"", "interval = \"1s\"")
        .replace(
            "mod_status_timeout = \"2s\"",
            "mod_status_timeout = \"500ms\"",
        )
        .replace(
            "evaluation_interval = \"15s\"",
            "evaluation_interval = \"1s\"",
        );
    assert_ne!(
        fast, shipped,
        "the shipped intervals moved: update this test"
    );
    put_config(&m, &fast);
    install(&m);
    assert_eq!(std::fs::read_to_string(m.path(CONF)).unwrap(), fast);
    assert_eq!(
        m.ok(&format!("stat -c '%U:%G %a' {CONF}")),
        "root:burst-agent 640\n"
    );

    // SIGHUP with a broken config: rejected with its problem, the agent keeps running.
    let pid = main_pid(&m);
    put_config(&m, &format!("{fast}\n[bogus_section]\nx = 1\n"));
    m.ok(&format!("systemctl reload {UNIT}"));
    m.wait_for(
        "the rejected reload in the journal",
        Duration::from_secs(20),
        || m.unit_journal(UNIT).contains("bogus_section").then_some(()),
    );
    assert_eq!(m.prop(UNIT, "ActiveState"), "active");
    assert_eq!(main_pid(&m), pid, "a bad reload restarted the agent");
    // An upgrade onto a config the new binary rejects leaves the running agent alone, and says so.
    let out = install(&m);
    assert!(out.contains("the new version rejects"), "{out}");
    assert_eq!(
        main_pid(&m),
        pid,
        "the upgrade restarted the agent onto a bad config"
    );
    assert_eq!(m.prop(UNIT, "ActiveState"), "active");
    put_config(&m, &fast);

    // A hung agent (SIGSTOP) is restarted by the watchdog.
    drop_in(
        &m,
        "[Service]\nWatchdogSec=4s\nRestartSec=1s\nTimeoutAbortSec=3s\n",
    );
    m.ok(&format!("systemctl restart {UNIT}"));
    let pid = main_pid(&m);
    // Healthy, it outlives several watchdog periods.
    std::thread::sleep(Duration::from_secs(9));
    assert_eq!(main_pid(&m), pid, "the watchdog restarted a healthy agent");
    assert_eq!(m.prop(UNIT, "NRestarts"), "0");
    m.ok(&format!("kill -STOP {pid}"));
    m.wait_for("a watchdog restart", Duration::from_secs(60), || {
        let new = main_pid(&m);
        (m.prop(UNIT, "NRestarts") == "1"
            && new != 0
            && new != pid
            && m.prop(UNIT, "ActiveState") == "active")
            .then_some(())
    });
    assert!(m.journal().contains("Watchdog timeout"));

    // `systemctl stop`: a clean exit, well within TimeoutStopSec.
    let limit = humantime::parse_duration(&m.prop(UNIT, "TimeoutStopUSec"))
        .expect("TimeoutStopUSec as a duration");
    let t = Instant::now();
    m.ok(&format!("systemctl stop {UNIT}"));
    let took = t.elapsed();
    assert_eq!(m.prop(UNIT, "ActiveState"), "inactive");
    assert_eq!(m.prop(UNIT, "Result"), "success");
    assert!(
        took < limit / 2,
        "stop took {took:?} of TimeoutStopSec {limit:?}"
    );
    assert!(m.unit_journal(UNIT).contains("burst-agent stopped cleanly"));

    // A config the service user cannot read: the start fails with one line naming the file
    // and the fix.
    m.ok(&format!("chmod 0600 {CONF}"));
    assert!(!m.sh(&format!("systemctl start {UNIT}")).status.success());
    let j = m.unit_journal(UNIT);
    let line = j
        .lines()
        .find(|l| {
            l.contains(&format!(
                "cannot read config file {CONF}: Permission denied"
            ))
        })
        .unwrap_or_else(|| panic!("no permission line in:\n{j}"));
    assert!(
        line.contains(&format!("chown root:burst-agent /etc/burst-agent {CONF}")),
        "{line}"
    );
    m.ok(&format!("chmod 0640 {CONF}"));

    // The installed unit, as the running systemd sees it.
    let sec = m.ok(&format!("systemd-analyze security --no-pager {UNIT}"));
    let score: f64 = sec
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .and_then(|l| l.split(':').nth(1))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no score in:\n{sec}"));
    assert!(score <= 2.0, "exposure {score}:\n{sec}");
}

/// The shipped `hooks.pre_register` argv with the document root and the destination changed,
/// and nothing else.
fn shipped_sync_argv(m: &Machine, source: &str, dest: &str) -> Vec<String> {
    let text = std::fs::read_to_string(m.path(CONF)).unwrap();
    let cfg = burst_agent::config::parse_str(&text, CONF).expect("the shipped config parses");
    let mut argv = cfg.hooks.pre_register.argv.clone();
    let n = argv.len();
    assert_eq!(argv[n - 2], "/var/www/", "{argv:?}");
    assert_eq!(argv[n - 1], "{private_ip}:/var/www/", "{argv:?}");
    argv[n - 2] = source.into();
    argv[n - 1] = dest.into();
    argv
}

fn start_sshd(m: &mut Machine, key: &str) -> usize {
    let dir = m.share.clone();
    let key_path = dir.join(key);
    if !key_path.exists() {
        let o = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key_path)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let conf = dir.join(format!("sshd-{key}.conf"));
    std::fs::write(
        &conf,
        format!(
            "Port 22\nListenAddress 0.0.0.0\nHostKey {}\nAuthorizedKeysFile {}\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM yes\n\
             StrictModes no\nPidFile none\nLogLevel VERBOSE\n",
            key_path.display(),
            dir.join("authorized_keys").display()
        ),
    )
    .unwrap();
    let log = dir.join(format!("sshd-{key}.log"));
    let i = m.spawn(
        &["/usr/sbin/sshd", "-D", "-e", "-f", conf.to_str().unwrap()],
        &log,
    );
    m.wait_for("sshd listening on port 22", Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", 22))
            .ok()
            .map(|_| ())
    });
    i
}

fn host_key_blob(m: &Machine, key: &str) -> String {
    let pubkey = std::fs::read_to_string(m.share.join(format!("{key}.pub"))).unwrap();
    pubkey.split_whitespace().nth(1).unwrap().to_string()
}

/// Waits for a slave other than `not` in the ELB; at every look, every member must already hold
/// the master's content.
fn watch_until_member(
    m: &Machine,
    rt: &tokio::runtime::Runtime,
    aws: &burst_agent::aws::Aws,
    not: Option<&str>,
) -> String {
    m.wait_for(
        "a slave registered with the ELB",
        Duration::from_secs(120),
        || {
            let members = rt.block_on(moto::elb_members(aws, "ramen-elb"));
            for id in &members {
                let content =
                    std::fs::read_to_string(m.path(&format!("/var/www/slaves/{id}/index.html")));
                assert_eq!(
                    content.ok().as_deref(),
                    Some("tonkotsu, 980 yen\n"),
                    "{id} is in the ELB without the master's content"
                );
            }
            members.into_iter().find(|id| Some(id.as_str()) != not)
        },
    )
}

/// EC2's (moto's) description of instance `id`.
fn describe(
    rt: &tokio::runtime::Runtime,
    aws: &burst_agent::aws::Aws,
    id: &str,
) -> aws_sdk_ec2::types::Instance {
    rt.block_on(async {
        let d = aws
            .ec2
            .describe_instances()
            .instance_ids(id)
            .send()
            .await
            .unwrap();
        d.reservations()[0].instances()[0].clone()
    })
}

fn ip_of(rt: &tokio::runtime::Runtime, aws: &burst_agent::aws::Aws, id: &str) -> String {
    describe(rt, aws, id)
        .private_ip_address()
        .unwrap()
        .to_string()
}

fn ec2_state(rt: &tokio::runtime::Runtime, aws: &burst_agent::aws::Aws, id: &str) -> String {
    describe(rt, aws, id)
        .state()
        .and_then(|s| s.name())
        .map(|n| n.as_str().to_string())
        .unwrap_or_default()
}

/// `status`'s burst cap line ("burst cap 3/7 today, resets ...").
fn cap_line(status: &str) -> String {
    let line = status
        .lines()
        .find(|l| l.starts_with("burst cap "))
        .unwrap_or_else(|| panic!("no burst cap line in:\n{status}"));
    line.split(", resets").next().unwrap_or(line).to_string()
}

/// The host key the agent pinned for slave `id`, if any.
fn pinned(m: &Machine, id: &str) -> Option<String> {
    std::fs::read_to_string(m.path(&format!("/var/lib/burst-agent/known_hosts/{id}"))).ok()
}

#[test]
fn the_shipped_ssh_hook_syncs_every_slave_before_it_takes_traffic_under_the_unit_sandbox() {
    let _one = ONE_MACHINE.lock().unwrap_or_else(|p| p.into_inner());
    let mut m = Machine::boot("ssh");
    install(&m);
    // This thread (and moto, which it starts) lives in the machine's network namespace from
    // here on.
    m.enter_network();
    let moto = Moto::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let aws = rt.block_on(moto.aws());

    // The slaves' subnet, made local inside the machine: every address EC2 (moto) hands out
    // there is this machine's own loopback, where sshd answers.
    let subnet = slave_subnet(&rt, &moto, &aws);
    rt.block_on(moto.create_elb(&aws, "ramen-elb"));
    m.ok("ip route add local 10.211.0.0/24 dev lo table local");

    // The operator's set-up (README): the agent's key, the receiving user on the "slave", the
    // document root under /home.
    m.ok("runuser -u burst-agent -- ssh-keygen -q -t ed25519 -N '' -f /var/lib/burst-agent/.ssh/id_ed25519");
    std::fs::copy(
        m.path("/var/lib/burst-agent/.ssh/id_ed25519.pub"),
        m.share.join("authorized_keys"),
    )
    .unwrap();
    // basic.target leaves /run/nologin (pam_nologin: "System is booting up"): this "slave" has
    // finished booting.
    m.ok(
        "usermod -s /bin/sh burst-agent && mkdir -p /run/sshd && rm -f /run/nologin \
          && install -d -o burst-agent -g burst-agent /var/www/slaves \
          && mkdir -p /home/ramen/www /var/lib/ramen-volume \
          && echo 'tonkotsu, 980 yen' > /var/lib/ramen-volume/index.html \
          && chmod -R a+rX /home/ramen /var/lib/ramen-volume",
    );
    // The site's content is a volume mounted at the document root (here a bind mount), and the
    // mounts propagate into the unit's own mount namespace as on a real host: systemd makes /
    // shared there, but not in a container such as this machine.
    m.ok("mount --make-rshared / && mount --bind /var/lib/ramen-volume /home/ramen/www");
    let sshd = start_sshd(&mut m, "hostkey-1");

    let mut cfg = burst_agent::config::Config::default();
    cfg.agent.group = "ramen-shop".into();
    cfg.agent.dry_run = false;
    cfg.agent.instance_id = "i-0master".into();
    cfg.agent.shutdown_timeout = burst_agent::config::Dur::secs(10);
    cfg.sampling.interval = burst_agent::config::Dur::secs(1);
    cfg.sampling.mod_status_url = String::new();
    cfg.sampling.mod_status_timeout = burst_agent::config::Dur::millis(500);
    cfg.metrics.publish_interval = burst_agent::config::Dur::secs(5);
    cfg.metrics.fleet_read_interval = burst_agent::config::Dur::secs(5);
    cfg.metrics.stale_after = burst_agent::config::Dur::secs(30);
    cfg.policy.evaluation_interval = burst_agent::config::Dur::secs(1);
    cfg.policy.min_slaves = 1;
    cfg.policy.max_slaves = 1;
    cfg.policy.scale_out_cooldown = burst_agent::config::Dur::secs(1);
    cfg.policy.scale_out_stabilization = burst_agent::config::Dur::secs(0);
    cfg.cap.time_zone = "UTC".into();
    cfg.aws = moto.aws_config();
    // The site's own ledger table, made below with the documented command.
    cfg.ledger.table = "ramen-guarantee".into();
    cfg.ledger.lease_duration = burst_agent::config::Dur::secs(10);
    cfg.fleet.ami = "ami-12c6146b".into();
    cfg.fleet.instance_type = "t3.small".into();
    cfg.fleet.subnet_ids = vec![subnet];
    cfg.elb.name = "ramen-elb".into();
    cfg.elb.draining_timeout = burst_agent::config::Dur::secs(2);
    cfg.hooks.pre_register.argv = shipped_sync_argv(
        &m,
        "/home/ramen/www/",
        "{private_ip}:/var/www/slaves/{instance_id}/",
    );
    cfg.hooks.pre_register.timeout = burst_agent::config::Dur::secs(60);
    cfg.hooks.pre_register.retry_delay = burst_agent::config::Dur::secs(1);
    // A hook that shows what it was given: the environment, and so any secret in it.
    cfg.hooks.content_sync = Some(burst_agent::config::Hook {
        argv: vec![
            "/bin/sh".into(),
            "-c".into(),
            "env > {state_dir}/hook-env".into(),
        ],
        ..cfg.hooks.pre_register.clone()
    });
    cfg.hooks.content_sync_interval = burst_agent::config::Dur::secs(10);
    // Events, as the README's operator sets them up: an SNS topic and a program, under the
    // unit's sandbox.
    let topic = rt.block_on(moto.create_topic(&aws, "ramen-ops"));
    cfg.events.topic_arn = topic;
    cfg.hooks.on_event = Some(burst_agent::config::Hook {
        argv: vec![
            "/bin/sh".into(),
            "-c".into(),
            "echo \"$1 $2\" >> \"$0\"".into(),
            "{state_dir}/events-told".into(),
            "{event}".into(),
            "{detail}".into(),
        ],
        timeout: burst_agent::config::Dur::secs(10),
        ..burst_agent::config::Hook::default()
    });
    put_config(&m, &toml::to_string(&cfg).expect("config as TOML"));
    m.ok(&format!("burst-agent check-config {CONF}"));
    // The guarantee's table, made once by an operator (docs/operations.md), not the master's
    // role; a second run leaves it as it is.
    let creds =
        "AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_EC2_METADATA_DISABLED=true";
    let made = m.sh(&format!(
        "env {creds} burst-agent table create ramen-guarantee"
    ));
    assert!(
        made.status.success() && stdout(&made).contains("created the ledger table ramen-guarantee"),
        "{}{}",
        stdout(&made),
        stderr(&made)
    );
    let again = m.sh(&format!(
        "env {creds} burst-agent table create ramen-guarantee"
    ));
    assert!(
        again.status.success() && stdout(&again).contains("is there already"),
        "{}{}",
        stdout(&again),
        stderr(&again)
    );
    // Preflight as the service user, from the package, as the README says to run it: the
    // launch spec, the ELB's zone, the topic, CloudWatch and the ssh key the agent's user made
    // all pass; this machine runs no Apache, which is the one failure.
    let o = m.sh(
        "runuser -u burst-agent -- env AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing \
         AWS_EC2_METADATA_DISABLED=true burst-agent preflight --json",
    );
    let v: serde_json::Value = serde_json::from_str(&stdout(&o))
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", stdout(&o), stderr(&o)));
    let checks = v["checks"].as_array().cloned().unwrap_or_default();
    let failed: Vec<&str> = checks
        .iter()
        .filter(|c| c["outcome"] == "fail")
        .map(|c| c["key"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(failed, ["sampling.apache_pidfile"], "{checks:#?}");
    assert_eq!(o.status.code(), Some(1));
    let passed = |what: &str| {
        checks
            .iter()
            .any(|c| c["outcome"] == "pass" && c["what"].as_str().unwrap_or("").contains(what))
    };
    for what in [
        "EC2 would launch it",
        "is served by ramen-elb",
        "the ssh key /var/lib/burst-agent/.ssh/id_ed25519 is readable by this user only",
        "the content source /home/ramen/www/ holds the site",
        "the topic arn:aws:sns:",
        "the table ramen-guarantee is ACTIVE with keys site and item",
        "a conditional write of this site's items is weighed",
    ] {
        assert!(passed(what), "no pass for {what:?}: {checks:#?}");
    }

    drop_in(
        &m,
        "[Service]\nEnvironment=AWS_ACCESS_KEY_ID=testing \
         AWS_SECRET_ACCESS_KEY=sekrit-never-in-hooks AWS_EC2_METADATA_DISABLED=true\n",
    );
    m.ok(&format!("systemctl start {UNIT}"));

    let a = watch_until_member(&m, &rt, &aws, None);
    let a_ip = ip_of(&rt, &aws, &a);
    assert!(a_ip.starts_with("10.211.0."), "{a_ip}");
    let a_pin = pinned(&m, &a).expect("the slave's host key pinned in a file of its own");
    assert!(a_pin.contains(&host_key_blob(&m, "hostkey-1")), "{a_pin}");

    // The hook saw the placeholders and none of the agent's AWS variables.
    let env = m.wait_for(
        "the content_sync hook's env",
        Duration::from_secs(30),
        || std::fs::read_to_string(m.path("/var/lib/burst-agent/hook-env")).ok(),
    );
    assert!(
        env.contains(&format!("BURST_AGENT_INSTANCE_ID={a}\n")),
        "{env}"
    );
    assert!(
        env.contains("BURST_AGENT_STATE_DIR=/var/lib/burst-agent\n"),
        "{env}"
    );
    for secret in [
        "AWS_SECRET_ACCESS_KEY",
        "AWS_ACCESS_KEY_ID",
        "sekrit",
        "NOTIFY_SOCKET",
    ] {
        assert!(!env.contains(secret), "a hook saw {secret}:\n{env}");
    }

    // The launch was told: to the program, and to the topic (the journal has SNS's message id).
    let told = m.wait_for(
        "the scale_out event told to hooks.on_event",
        Duration::from_secs(30),
        || {
            std::fs::read_to_string(m.path("/var/lib/burst-agent/events-told"))
                .ok()
                .filter(|t| t.contains("scale_out launched 1 of 1 slave(s)"))
        },
    );
    assert!(told.contains(&a), "{told}");
    m.wait_for(
        "the scale_out event published to SNS",
        Duration::from_secs(30),
        || {
            m.unit_journal(UNIT)
                .contains("event published")
                .then_some(())
        },
    );
    let status = m.ok("burst-agent status");
    assert!(
        status.contains("scale_out") && status.contains("[sent]"),
        "{status}"
    );

    // The slave dies outside the agent: it is replaced, and its pinned key goes with it.
    rt.block_on(async {
        aws.ec2
            .terminate_instances()
            .instance_ids(&a)
            .send()
            .await
            .unwrap()
    });
    let b = watch_until_member(&m, &rt, &aws, Some(&a));
    assert!(pinned(&m, &b).is_some_and(|p| p.contains(&host_key_blob(&m, "hostkey-1"))));
    m.wait_for(
        "the dead slave's pinned key removed",
        Duration::from_secs(30),
        || pinned(&m, &a).is_none().then_some(()),
    );

    // A's address comes back with a later slave, behind a new host key. Moto never hands an
    // address out twice, so the account starts over (as after a restart of the agent): moto's
    // state is reset, the subnet made anew (its first address again), sshd restarted with
    // another key.
    m.ok(&format!("systemctl stop {UNIT}"));
    assert!(pinned(&m, &a).is_none());
    moto_reset(&moto);
    let subnet = slave_subnet(&rt, &moto, &aws);
    rt.block_on(moto.create_elb(&aws, "ramen-elb"));
    // The account starts over: its ledger table too, made again by the operator's command.
    m.ok(&format!(
        "env {creds} burst-agent table create ramen-guarantee"
    ));
    cfg.fleet.subnet_ids = vec![subnet];
    put_config(&m, &toml::to_string(&cfg).expect("config as TOML"));
    m.kill_child(sshd);
    start_sshd(&mut m, "hostkey-2");
    m.ok(&format!("systemctl start {UNIT}"));
    let c = watch_until_member(&m, &rt, &aws, None);
    assert_eq!(
        ip_of(&rt, &aws, &c),
        a_ip,
        "moto did not hand out A's address again"
    );
    let c_pin = pinned(&m, &c).expect("the new slave's host key pinned");
    assert!(c_pin.contains(&host_key_blob(&m, "hostkey-2")), "{c_pin}");
    let j = m.unit_journal(UNIT);
    for bad in ["Host key verification failed", "IDENTIFICATION HAS CHANGED"] {
        assert!(!j.contains(bad), "{bad}:\n{j}");
    }
    assert!(j.contains("hook succeeded"), "{j}");

    // content_sync unset: the periodic sync is pre_register's shipped rsync --delete (one
    // source for the content); a new page reaches C by it.
    cfg.hooks.content_sync = None;
    cfg.hooks.content_sync_interval = burst_agent::config::Dur::secs(10);
    put_config(&m, &toml::to_string(&cfg).expect("config as TOML"));
    m.ok(&format!("systemctl reload {UNIT}"));
    m.ok("echo 'gyoza, 400 yen' > /var/lib/ramen-volume/sides.html");
    let c_sides = m.path(&format!("/var/www/slaves/{c}/sides.html"));
    m.wait_for(
        "the new page synced to C by content_sync",
        Duration::from_secs(60),
        || std::fs::read_to_string(&c_sides).ok(),
    );
    // The volume is unmounted while C serves: the document root is an empty directory, from
    // which rsync --delete exits 0 and wipes the slave. Nothing is synced from it: C keeps its
    // content and stays in the ELB, nothing else is launched, and `status` says why launches
    // are held.
    // A sync or the agent's source check may be reading the volume that instant ("target is
    // busy"): the operator's umount is tried again, for at most 10 s.
    m.ok(
        "for i in $(seq 50); do umount /home/ramen/www 2>/dev/null && break; sleep 0.2; done; \
         ! mountpoint -q /home/ramen/www && test -z \"$(ls -A /home/ramen/www)\"",
    );
    m.wait_for(
        "the empty source named in the journal",
        Duration::from_secs(30),
        || {
            m.unit_journal(UNIT)
                .contains("content source /home/ramen/www/ is empty")
                .then_some(())
        },
    );
    let syncs = |j: &str| {
        j.lines()
            .filter(|l| l.contains("hook succeeded") && l.contains("content_sync"))
            .count()
    };
    let runs_before = syncs(&m.unit_journal(UNIT));
    // Two content_sync intervals and a half.
    std::thread::sleep(Duration::from_secs(25));
    let members = rt.block_on(moto::elb_members(&aws, "ramen-elb"));
    assert_eq!(members.into_iter().collect::<Vec<_>>(), vec![c.clone()]);
    for page in ["index.html", "sides.html"] {
        assert!(
            m.path(&format!("/var/www/slaves/{c}/{page}")).exists(),
            "C lost {page} to a sync from the empty source:\n{}",
            m.unit_journal(UNIT)
        );
    }
    let j = m.unit_journal(UNIT);
    assert_eq!(
        syncs(&j),
        runs_before,
        "a sync ran from the empty source:\n{j}"
    );
    let status = m.ok("burst-agent status");
    assert!(
        status.contains("launches  HELD: content source /home/ramen/www/ is empty"),
        "{status}"
    );
    let launched = rt.block_on(async {
        aws.ec2
            .describe_instances()
            .send()
            .await
            .unwrap()
            .reservations()
            .iter()
            .map(|r| r.instances().len())
            .sum::<usize>()
    });
    assert_eq!(launched, 1, "launched while the source was empty");
    // Mounted again: syncs go on, and the hold is lifted.
    m.ok("mount --bind /var/lib/ramen-volume /home/ramen/www");
    m.wait_for(
        "the source back in the journal",
        Duration::from_secs(30),
        || {
            m.unit_journal(UNIT)
                .contains("the content source is back")
                .then_some(())
        },
    );
    m.wait_for(
        "a content_sync after the remount",
        Duration::from_secs(30),
        || (syncs(&m.unit_journal(UNIT)) > runs_before).then_some(()),
    );
    let status = m.ok("burst-agent status");
    assert!(!status.contains("launches  HELD"), "{status}");

    // The burst passes; the operator lowers the floor and reloads. The slave is drained and
    // stopped into the warm pool (moto's instances have EBS roots), and `status` shows it warm.
    cfg.policy.min_slaves = 0;
    cfg.policy.min_lifetime = burst_agent::config::Dur::secs(1);
    cfg.policy.scale_in_cooldown = burst_agent::config::Dur::secs(1);
    cfg.policy.scale_in_stabilization = burst_agent::config::Dur::secs(0);
    // A slave with room in the pool is kept only the lead time (README, step 6).
    cfg.policy.forecast.lead_time = burst_agent::config::Dur::secs(10);
    // This machine is the master and its load is the test machine's (a build may be running):
    // a target it never reaches, so the slave is not needed whatever else the machine does.
    let target = cfg.policy.targets.load_per_cpu;
    cfg.policy.targets.load_per_cpu = 100.0;
    put_config(&m, &toml::to_string(&cfg).expect("config as TOML"));
    // The slave reports its own metrics, as every slave does (role "reporter"); without them
    // the policy never scales in (missing metrics count as at target).
    let mut rc = cfg.clone();
    rc.agent.role = burst_agent::config::Role::Reporter;
    rc.agent.instance_id = c.clone();
    rc.agent.state_dir = "/tmp/reporter".into();
    let rc_path = m.share.join("reporter.toml");
    std::fs::write(&rc_path, toml::to_string(&rc).expect("config as TOML")).unwrap();
    let reporter = m.spawn(
        &[
            "env",
            "AWS_ACCESS_KEY_ID=testing",
            "AWS_SECRET_ACCESS_KEY=testing",
            "AWS_EC2_METADATA_DISABLED=true",
            "/usr/bin/burst-agent",
            "--config",
            rc_path.to_str().unwrap(),
            "run",
        ],
        &m.share.join("reporter.log"),
    );
    m.ok(&format!("systemctl reload {UNIT}"));
    m.wait_for(
        "the slave stopped into the warm pool",
        Duration::from_secs(120),
        || {
            let status = m.ok("burst-agent status");
            (status.contains("warm (stopped)")
                && ec2_state(&rt, &aws, &c) == "stopped"
                && !rt
                    .block_on(moto::elb_members(&aws, "ramen-elb"))
                    .contains(&c))
            .then_some(())
        },
    );
    m.kill_child(reporter);
    let status = m.ok("burst-agent status");
    println!("status with the slave in the warm pool:\n{status}");
    let cap_before = cap_line(&status);

    // The site changes while the slave is stopped; a new burst (the floor back to 1, reload)
    // starts the same instance again at no new cap unit, syncs it and registers it.
    m.ok("echo 'shoyu, 880 yen' > /home/ramen/www/index.html");
    cfg.policy.min_slaves = 1;
    cfg.policy.targets.load_per_cpu = target;
    put_config(&m, &toml::to_string(&cfg).expect("config as TOML"));
    m.ok(&format!("systemctl reload {UNIT}"));
    m.wait_for(
        "the warm slave started, synced and registered again",
        Duration::from_secs(120),
        || {
            rt.block_on(moto::elb_members(&aws, "ramen-elb"))
                .contains(&c)
                .then_some(())
        },
    );
    assert_eq!(
        std::fs::read_to_string(m.path(&format!("/var/www/slaves/{c}/index.html"))).unwrap(),
        "shoyu, 880 yen\n",
        "the restarted slave is in the ELB with the content from before its stop"
    );
    let j = m.unit_journal(UNIT);
    assert!(
        j.contains("started 1 warm slave(s) (1 at no new cap unit)"),
        "{j}"
    );
    assert!(j.contains("Draining -> Stopping"), "{j}");
    let status = m.ok("burst-agent status");
    println!("status after the warm start:\n{status}");
    assert_eq!(
        cap_line(&status),
        cap_before,
        "the restart took no new cap unit:\n{status}"
    );

    m.ok(&format!("systemctl stop {UNIT}"));
    assert_eq!(m.prop(UNIT, "Result"), "success");

    // A drill, as the service user with the agent stopped, through the shipped hook to the
    // real sshd: one slave launched (the pool is empty: its slave serves again), every phase
    // timed, and out again (terminated: no pool in the drill's config).
    let mut dc = cfg.clone();
    dc.fleet.warm_pool = 0;
    let staged = m.share.join("drill.toml");
    std::fs::write(&staged, toml::to_string(&dc).unwrap()).unwrap();
    m.ok(&format!(
        "install -m 0640 -o root -g burst-agent {} /etc/burst-agent/drill.toml",
        staged.display()
    ));
    let drill = "runuser -u burst-agent -- env AWS_ACCESS_KEY_ID=testing \
                 AWS_SECRET_ACCESS_KEY=testing AWS_EC2_METADATA_DISABLED=true burst-agent \
                 --config /etc/burst-agent/drill.toml drill --yes 2>/dev/null";
    let o = m.sh(drill);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{}", stderr(&o));
    for want in [
        "spends 1 burst-cap unit of today's 7",
        "syncing",
        "in_service",
        "draining",
        "lead time",
        "end: terminated",
    ] {
        assert!(out.contains(want), "no {want:?} in:\n{out}");
    }
    println!("drill:\n{out}");
    // With a key the slave does not accept, it fails at the sync, saying the fix.
    let keys = m.share.join("authorized_keys");
    let good_keys = std::fs::read_to_string(&keys).unwrap();
    let other = m.share.join("other-key");
    let o = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    std::fs::copy(other.with_extension("pub"), &keys).unwrap();
    let o = m.sh(drill);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}\n{}", stderr(&o));
    assert!(out.contains("FAILED in syncing:"), "{out}");
    assert!(out.contains("refused the agent's ssh key"), "{out}");
    assert!(out.contains("end: terminated"), "{out}");
    std::fs::write(&keys, good_keys).unwrap();
}

/// A VPC and a /28 subnet for the slaves in moto; returns the subnet's id.
fn slave_subnet(rt: &tokio::runtime::Runtime, moto: &Moto, aws: &burst_agent::aws::Aws) -> String {
    let (_, subnets) =
        rt.block_on(moto.create_vpc(aws, "10.211.0.0/16", &[("10.211.0.0/28", "us-east-1a")]));
    subnets[0].clone()
}

/// Moto forgets everything (`POST /moto-api/reset`).
fn moto_reset(moto: &Moto) {
    use std::io::{Read, Write};
    let addr = moto.endpoint.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "POST /moto-api/reset HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "moto reset: {out}");
}
