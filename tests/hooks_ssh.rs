//! The default content-sync hook with the real ssh and rsync binaries: what an operator reads
//! when the set-up is incomplete. The wording is ssh's own, so a new OpenSSH that words it
//! differently fails here, not in the field.

mod common;
use burst_agent::config::{Config, Dur};
use burst_agent::hooks::{self, HookVars};
use common::apache::free_port;
use common::*;

/// The shipped pre_register hook, aimed at `port` on loopback, from `docroot`.
fn default_hook(port: u16, docroot: &str) -> burst_agent::config::Hook {
    let mut hook = Config::default().hooks.pre_register;
    let e = hook
        .argv
        .iter()
        .position(|a| a == "-e")
        .expect("the default hook passes ssh options with -e");
    hook.argv[e + 1] = format!("{} -p {port}", hook.argv[e + 1]);
    let n = hook.argv.len();
    hook.argv[n - 2] = docroot.into();
    hook.retries = 0;
    hook.timeout = Dur::secs(30);
    hook
}

fn vars(state_dir: &str) -> HookVars {
    HookVars {
        instance_id: "i-0test".into(),
        private_ip: "127.0.0.1".into(),
        private_dns: String::new(),
        group: "site".into(),
        state_dir: state_dir.into(),
    }
}

#[tokio::test]
async fn a_missing_key_and_a_dead_slave_are_named_with_their_fix() {
    require("ssh", "openssh-client");
    require("rsync", "rsync");
    let state = tempfile::tempdir().unwrap();
    let docroot = tempfile::tempdir().unwrap();
    let state_dir = state.path().to_str().unwrap();
    hooks::prepare_known_hosts(state.path()).unwrap();

    // No key in {state_dir}/.ssh and nothing listening: ssh says both, the key is named.
    let port = free_port();
    let hook = default_hook(port, &format!("{}/", docroot.path().display()));
    let run = hooks::run("pre_register", &hook, &vars(state_dir)).await;
    let msg = run.result.unwrap_err().to_string();
    let key = format!("{state_dir}/.ssh/id_ed25519");
    assert!(
        msg.contains(&format!("fix: the ssh key {key} is missing")),
        "{msg}"
    );
    assert!(
        msg.contains(&format!("ssh-keygen -t ed25519 -N '' -f {key}")),
        "{msg}"
    );

    // With a key, the same dead slave is named as unreachable.
    std::fs::create_dir_all(state.path().join(".ssh")).unwrap();
    let o = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f", &key])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let run = hooks::run("pre_register", &hook, &vars(state_dir)).await;
    let msg = run.result.unwrap_err().to_string();
    assert!(
        msg.contains("fix: 127.0.0.1 refuses the connection on ssh"),
        "{msg}"
    );
}
