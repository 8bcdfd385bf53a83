//! One agent per state directory: `run` holds an exclusive `flock` on `agent.lock` in
//! `agent.state_dir` for as long as it runs. Two agents on one ledger and journal would each
//! spend the daily burst cap and adopt each other's launches; the second one therefore exits,
//! naming the first one's pid. The kernel drops the lock when the holder dies (kill -9
//! included), so a stale lock file never blocks a restart. `status` reads without the lock.

use rustix::fs::{flock, FlockOperation};
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

pub const FILE_NAME: &str = "agent.lock";

/// Held while the agent runs; dropping it (or the process ending) releases the lock.
#[derive(Debug)]
pub struct StateLock {
    _file: File,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "another burst-agent (pid {pid}) is running with state directory {dir}: one agent per \
         state directory (stop it first: `systemctl stop burst-agent`, or give this one another \
         agent.state_dir)",
        pid = .pid.map_or_else(|| "unknown".to_string(), |p| p.to_string()),
        dir = .dir.display()
    )]
    Held { dir: PathBuf, pid: Option<u32> },
    #[error("cannot lock {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl StateLock {
    /// Takes the lock without waiting, then writes this process's pid into the file.
    pub fn acquire(state_dir: &Path) -> Result<StateLock, LockError> {
        let path = state_dir.join(FILE_NAME);
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        let nofollow = rustix::fs::OFlags::NOFOLLOW.bits() as i32;
        let opened = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o640)
            .custom_flags(nofollow)
            .open(&path);
        // Left behind by a `run` as another user (root, by hand): flock needs no write access,
        // so lock it read-only and leave the pid out.
        let (mut file, writable) = match opened {
            Ok(f) => (f, true),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => (
                std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(nofollow)
                    .open(&path)
                    .map_err(io)?,
                false,
            ),
            Err(e) => return Err(io(e)),
        };
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(LockError::Held {
                    dir: state_dir.to_path_buf(),
                    pid: text.trim().parse().ok(),
                });
            }
            Err(e) => return Err(io(e.into())),
        }
        if writable {
            file.set_len(0).map_err(io)?;
            file.rewind().map_err(io)?;
            writeln!(file, "{}", std::process::id()).map_err(io)?;
            file.sync_data().map_err(io)?;
        } else {
            tracing::warn!(path = %path.display(),
                "the lock file is not writable by this user (left by a run as another user?): \
                 locked, but without this agent's pid in it");
        }
        Ok(StateLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid_and_the_lock_dies_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let first = StateLock::acquire(dir.path()).unwrap();
        // flock locks belong to the open file description: a second open in this same process
        // conflicts just as another process would.
        match StateLock::acquire(dir.path()) {
            Err(LockError::Held { pid, dir: d }) => {
                assert_eq!(pid, Some(std::process::id()));
                assert_eq!(d, dir.path());
            }
            other => panic!("second acquire: {other:?}"),
        }
        let msg = StateLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(
            msg.contains(&format!("(pid {})", std::process::id())),
            "{msg}"
        );
        drop(first);
        // The file stays behind; it blocks nobody once its holder is gone.
        assert!(dir.path().join(FILE_NAME).exists());
        // Free again. A child another test forks this instant shares the lock's open file
        // until it execs (the descriptor is close-on-exec): give that a moment.
        let t = std::time::Instant::now();
        let mut again = StateLock::acquire(dir.path());
        while again.is_err() && t.elapsed() < std::time::Duration::from_secs(2) {
            std::thread::sleep(std::time::Duration::from_millis(20));
            again = StateLock::acquire(dir.path());
        }
        again.expect("lock free again after the holder dropped it");
    }

    #[test]
    fn a_symlink_in_place_of_the_lock_file_is_refused_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious\n").unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join(FILE_NAME)).unwrap();
        assert!(matches!(
            StateLock::acquire(dir.path()),
            Err(LockError::Io { .. })
        ));
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    }
}
