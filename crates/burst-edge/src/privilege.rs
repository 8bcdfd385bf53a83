//! Who the CLI runs as against the state directory.
//!
//! The state directory belongs to the agent's user (`burst-agent`, systemd's `StateDirectory=`),
//! who can put anything in it: a symbolic link named like a file the agent writes, a huge or
//! hostile `status.json`. An operator often runs `burst-agent repair` or `status` as root; as
//! root those would write and read whatever the links point at. So before either touches a
//! file there, a root CLI becomes the directory's owner ([`enter_state_dir`]): supplementary
//! groups, then real, effective and saved gid, then uid, so root cannot be regained. The
//! kernel's set*id calls act on the calling thread only, so this is done while the process has
//! one thread (before any runtime starts) and refused otherwise. `run` is never switched: as
//! root on a directory another user owns it refuses, naming the command to use
//! ([`check_run_state_dir`]).
//!
//! A directory every user may write (mode `o+w`) is refused by all three: anyone could remove
//! the cap ledger there and grant the site a fresh day.

use std::path::Path;

/// Owner, group and mode of a directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirOwner {
    pub uid: u32,
    pub gid: u32,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
}

/// The owner of `dir` (following a link that is `dir` itself: an operator may have moved the
/// state directory and linked it).
pub(crate) fn owner_of(dir: &Path) -> std::io::Result<DirOwner> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(dir)?;
    Ok(DirOwner {
        uid: m.uid(),
        gid: m.gid(),
        mode: m.mode() & 0o7777,
    })
}

/// A user account as `/etc/passwd` names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    /// The primary group.
    pub gid: u32,
}

/// The account with `uid` in `/etc/passwd` (an NSS-only account is not found).
pub fn account(uid: u32) -> Option<Account> {
    let text = std::fs::read_to_string("/etc/passwd").ok()?;
    find_account(&text, uid)
}

fn find_account(passwd: &str, uid: u32) -> Option<Account> {
    passwd.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        let _password = f.next()?;
        let u: u32 = f.next()?.parse().ok()?;
        let g: u32 = f.next()?.parse().ok()?;
        (u == uid && !name.is_empty()).then(|| Account {
            name: name.to_string(),
            uid: u,
            gid: g,
        })
    })
}

/// What a CLI command does about the state directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Go on as this user.
    AsIs,
    /// Become this user (uid, gid; the only group) first.
    Become { uid: u32, gid: u32 },
}

/// `sudo -u NAME burst-agent ARGS`, the way to run `command` as the directory's owner.
fn as_owner(owner_uid: u32, owner: Option<&Account>, args: &str) -> String {
    let who = owner.map_or_else(|| format!("'#{owner_uid}'"), |a| a.name.clone());
    format!("sudo -u {who} burst-agent {args}")
}

fn who(uid: u32, owner: Option<&Account>) -> String {
    owner.map_or_else(
        || format!("uid {uid}"),
        |a| format!("{} (uid {uid})", a.name),
    )
}

/// What `command` (`repair`, `status`, `run`) does as `euid` with the state directory `dir`
/// of `o` (its owner's account, when known): pure, for [`enter_state_dir`] and
/// [`check_run_state_dir`]. `args` is the command line again, for the error's advice.
pub fn plan(
    command: &str,
    dir: &Path,
    euid: u32,
    o: DirOwner,
    owner: Option<&Account>,
    args: &str,
) -> Result<Plan, String> {
    let dir_s = crate::text::printable(&dir.to_string_lossy()).into_owned();
    if o.mode & 0o002 != 0 {
        return Err(format!(
            "state directory {dir_s} may be written by every user (mode {:04o}): anyone could \
             change or remove the burst cap's ledger there; `burst-agent {command}` refuses it. \
             Make it the agent's alone: chown burst-agent:burst-agent {dir_s} && chmod 0750 {dir_s}",
            o.mode
        ));
    }
    if euid != 0 {
        return Ok(Plan::AsIs);
    }
    if o.uid == 0 {
        // Root's own directory, unless a group of users may write it.
        if o.mode & 0o020 != 0 && o.gid != 0 {
            return Err(format!(
                "state directory {dir_s} belongs to root but group {} may write it (mode \
                 {:04o}): `burst-agent {command}` as root would trust files that group can \
                 plant there. chmod g-w {dir_s}, or give it to the agent's user",
                o.gid, o.mode
            ));
        }
        return Ok(Plan::AsIs);
    }
    let advice = as_owner(o.uid, owner, args);
    let owned_by = who(o.uid, owner);
    if command == "run" {
        return Err(format!(
            "state directory {dir_s} belongs to {owned_by}, and `burst-agent run` runs as root: \
             root would trust files that user can plant there. Start the service \
             (systemctl start burst-agent), or run it as that user: {advice}"
        ));
    }
    // The owner's primary group, else the directory's group; never root's group.
    let gid = owner.map_or(o.gid, |a| a.gid);
    if gid == 0 {
        return Err(format!(
            "state directory {dir_s} belongs to {owned_by} and its group is root; \
             `burst-agent {command}` as root will not take root's group along. Run it as that \
             user: {advice}"
        ));
    }
    Ok(Plan::Become { uid: o.uid, gid })
}

/// The command line after the program's name, for advice in errors.
fn args_again() -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    crate::text::printable(&args.join(" ")).into_owned()
}

/// For `repair` and `status`: run as root on a state directory another user owns, become that
/// user before anything in it is touched (or refuse, naming the command to use); a directory
/// every user may write is refused. A directory that does not exist yet, or cannot be looked
/// at, is left to the command to report. Call it while the process has one thread.
pub fn enter_state_dir(dir: &Path, command: &str) -> Result<(), String> {
    let euid = rustix::process::geteuid().as_raw();
    let Ok(o) = owner_of(dir) else {
        return Ok(());
    };
    let owner = account(o.uid);
    let args = args_again();
    match plan(command, dir, euid, o, owner.as_ref(), &args)? {
        Plan::AsIs => Ok(()),
        Plan::Become { uid, gid } => become_user(uid, gid).map_err(|why| {
            format!(
                "state directory {} belongs to {}; `burst-agent {command}` as root could not \
                 become that user ({why}). Run it as that user: {}",
                crate::text::printable(&dir.to_string_lossy()),
                who(o.uid, owner.as_ref()),
                as_owner(o.uid, owner.as_ref(), &args)
            )
        }),
    }
}

/// For `run`: refuses a state directory every user may write, and, as root, one another user
/// owns.
pub fn check_run_state_dir(dir: &Path) -> Result<(), String> {
    let euid = rustix::process::geteuid().as_raw();
    let Ok(o) = owner_of(dir) else {
        return Ok(());
    };
    let owner = account(o.uid);
    plan("run", dir, euid, o, owner.as_ref(), &args_again()).map(|_| ())
}

/// Threads of this process (`/proc/self/status`).
pub fn threads() -> std::io::Result<usize> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| std::io::Error::other("no Threads: line in /proc/self/status"))
}

/// Drops root for good: groups = [gid], then gid, then uid (real, effective and saved), and
/// checks root cannot be regained. Only while the process has one thread: the raw syscalls
/// change the calling thread alone, and a thread left as root would keep root.
fn become_user(uid: u32, gid: u32) -> Result<(), String> {
    use rustix::process::{Gid, Uid};
    use rustix::thread::{set_thread_groups, set_thread_res_gid, set_thread_res_uid};
    let n = threads().map_err(|e| format!("cannot count this process's threads: {e}"))?;
    if n != 1 {
        return Err(format!(
            "{n} threads are running; the user can only be switched with one"
        ));
    }
    let (u, g) = (Uid::from_raw(uid), Gid::from_raw(gid));
    set_thread_groups(&[g]).map_err(|e| format!("setgroups: {e}"))?;
    set_thread_res_gid(g, g, g).map_err(|e| format!("setresgid({gid}): {e}"))?;
    set_thread_res_uid(u, u, u).map_err(|e| format!("setresuid({uid}): {e}"))?;
    let now = (
        rustix::process::getuid().as_raw(),
        rustix::process::geteuid().as_raw(),
        rustix::process::getgid().as_raw(),
        rustix::process::getegid().as_raw(),
    );
    if now != (uid, uid, gid, gid) {
        return Err(format!("still uid/euid/gid/egid {now:?} after the switch"));
    }
    if set_thread_res_uid(Uid::ROOT, Uid::ROOT, Uid::ROOT).is_ok() {
        return Err("root could be regained after the switch".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIR: &str = "/var/lib/burst-agent";

    fn agent() -> Account {
        Account {
            name: "burst-agent".into(),
            uid: 998,
            gid: 997,
        }
    }

    fn owned(uid: u32, gid: u32, mode: u32) -> DirOwner {
        DirOwner { uid, gid, mode }
    }

    fn plan_for(
        command: &str,
        euid: u32,
        o: DirOwner,
        a: Option<&Account>,
    ) -> Result<Plan, String> {
        plan(command, Path::new(DIR), euid, o, a, command)
    }

    #[test]
    fn root_becomes_the_owner_of_the_agents_directory_for_repair_and_status() {
        for command in ["repair", "status"] {
            assert_eq!(
                plan_for(command, 0, owned(998, 997, 0o750), Some(&agent())),
                Ok(Plan::Become { uid: 998, gid: 997 })
            );
        }
        // Not in /etc/passwd: the directory's group.
        assert_eq!(
            plan_for("repair", 0, owned(998, 996, 0o750), None),
            Ok(Plan::Become { uid: 998, gid: 996 })
        );
    }

    #[test]
    fn its_own_directory_or_roots_is_used_as_it_is() {
        assert_eq!(
            plan_for("repair", 0, owned(0, 0, 0o700), None),
            Ok(Plan::AsIs)
        );
        assert_eq!(
            plan_for("repair", 998, owned(998, 997, 0o750), Some(&agent())),
            Ok(Plan::AsIs)
        );
        // Another user's directory without root: the kernel's permissions decide.
        assert_eq!(
            plan_for("status", 1000, owned(998, 997, 0o750), Some(&agent())),
            Ok(Plan::AsIs)
        );
        assert_eq!(plan_for("run", 0, owned(0, 0, 0o755), None), Ok(Plan::AsIs));
    }

    #[test]
    fn root_refuses_its_own_directory_when_another_group_may_write_it() {
        let e = plan_for("status", 0, owned(0, 997, 0o770), None).unwrap_err();
        assert!(e.contains(DIR) && e.contains("group 997"), "{e}");
        assert_eq!(
            plan_for("status", 0, owned(0, 0, 0o770), None),
            Ok(Plan::AsIs)
        );
        assert_eq!(
            plan_for("status", 0, owned(0, 997, 0o750), None),
            Ok(Plan::AsIs)
        );
    }

    #[test]
    fn root_never_keeps_roots_group() {
        let e = plan_for("repair", 0, owned(998, 0, 0o750), None).unwrap_err();
        assert!(
            e.contains(DIR) && e.contains("sudo -u '#998' burst-agent repair"),
            "{e}"
        );
    }

    #[test]
    fn run_as_root_on_the_agents_directory_is_refused_naming_the_way() {
        let e = plan_for("run", 0, owned(998, 997, 0o750), Some(&agent())).unwrap_err();
        assert!(e.contains(DIR), "{e}");
        assert!(e.contains("burst-agent (uid 998)"), "{e}");
        assert!(e.contains("systemctl start burst-agent"), "{e}");
        assert!(e.contains("sudo -u burst-agent burst-agent run"), "{e}");
    }

    #[test]
    fn a_directory_anyone_may_write_is_refused_by_every_command() {
        for command in ["run", "repair", "status"] {
            for euid in [0, 998] {
                let e =
                    plan_for(command, euid, owned(998, 997, 0o1777), Some(&agent())).unwrap_err();
                assert!(e.contains(DIR) && e.contains("1777"), "{e}");
                assert!(e.contains("chmod 0750"), "{e}");
            }
        }
    }

    #[test]
    fn accounts_are_read_from_passwd_lines() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\n\
                      garbage line\n\
                      burst-agent:x:998:997::/var/lib/burst-agent:/usr/sbin/nologin\n";
        assert_eq!(find_account(passwd, 998), Some(agent()));
        assert_eq!(find_account(passwd, 0).unwrap().name, "root");
        assert_eq!(find_account(passwd, 5), None);
    }

    #[test]
    fn the_owner_of_a_directory_is_read() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o750)).unwrap();
        let o = owner_of(d.path()).unwrap();
        assert_eq!(o.uid, rustix::process::geteuid().as_raw());
        assert_eq!(o.mode, 0o750);
    }

    /// The switch is refused while a second thread runs (it would stay root); the test
    /// harness itself has several, and this test holds one more to be sure.
    #[test]
    fn the_user_is_never_switched_with_other_threads_running() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || rx.recv());
        assert!(threads().unwrap() >= 2);
        let e = become_user(65534, 65534).unwrap_err();
        assert!(e.contains("threads are running"), "{e}");
        assert_eq!(rustix::process::geteuid().as_raw(), {
            // Unchanged: whoever runs the tests.
            rustix::process::getuid().as_raw()
        });
        drop(tx);
        let _ = t.join();
    }
}
