//! The brownout bridge at the edge (the level is the policy's, policy/bridge.rs):
//! - [`Applier`]: the decided level carried out on the master by `hooks.on_bridge`, one run
//!   at a time on a task of its own; the level the master serves at, which its samples carry
//!   so the policy reads them back at full cost;
//! - the level an operator set by hand (`burst-agent bridge set N`, `bridge off`, `bridge
//!   auto`): a small file in the state directory the policy reads as an observation.

use crate::config::Config;
use crate::hooks::HookRun;
use crate::policy::ManualBridge;
use jiff::Timestamp;
use std::path::{Path, PathBuf};
use tokio::task::JoinHandle;

/// The level set by hand, in the state directory (JSON: level, until, by).
pub const MANUAL_FILE: &str = "bridge-manual.json";

/// What one step of the [`Applier`] came to, for the log, the events and `status`.
#[derive(Debug, PartialEq)]
pub(super) enum Applied {
    /// The master serves at `to` now.
    Switched { from: u8, to: u8, secs: f64 },
    /// The hook failed: the master serves at `from` still; the next tick tries again.
    Failed { from: u8, to: u8, error: String },
}

/// The master's level and the hook that changes it.
pub(super) struct Applier {
    /// The level the master serves at: what the last hook that succeeded switched it to (0
    /// when no hook ran: nothing was degraded).
    applied: u8,
    /// When `applied` took effect, and the level before (a sample taken earlier read at it).
    since: Option<Timestamp>,
    before: u8,
    /// A hook has brought the master to a known level since the agent started (until then,
    /// the first decided level is applied, 0 included: a restart mid-episode converges).
    known: bool,
    /// The run under way: the level it switches to, and when it started.
    running: Option<(u8, Timestamp, JoinHandle<HookRun>)>,
    /// The last failure, for `status`, until a run succeeds.
    pub failed: Option<(Timestamp, String)>,
    /// The level last said not to be applied (dry run, no hook), so it is logged once.
    told: Option<u8>,
}

impl Applier {
    pub fn new() -> Self {
        Applier {
            applied: 0,
            since: None,
            before: 0,
            known: false,
            running: None,
            failed: None,
            told: None,
        }
    }

    /// The level the master served at, at `t`.
    pub fn level_at(&self, t: Timestamp) -> u8 {
        match self.since {
            Some(s) if t < s => self.before,
            _ => self.applied,
        }
    }

    pub fn applied(&self) -> u8 {
        self.applied
    }

    /// The master's last level change as a sample taken at `t` saw it (none since the agent
    /// started, or none yet at `t`).
    pub fn change_at(&self, t: Timestamp) -> Option<crate::model::LevelChange> {
        self.since
            .filter(|s| t >= *s)
            .map(|at| crate::model::LevelChange {
                from: self.before,
                at,
            })
    }

    /// The level a hook is switching the master to now, if one runs.
    pub fn switching_to(&self) -> Option<u8> {
        self.running.as_ref().map(|(l, ..)| *l)
    }

    /// Starts a run when the master does not serve at `want` and none is under way. A dry run
    /// and a config without `hooks.on_bridge` switch nothing (logged once a level). The tick
    /// calls [`Applier::reap`] first, before its sample is read, so that the sample is read at
    /// the level it was taken at.
    pub fn step(&mut self, cfg: &Config, want: u8, now: Timestamp) {
        if self.running.is_some() || (self.known && want == self.applied) {
            return;
        }
        let Some(hook) = cfg.hooks.on_bridge.clone() else {
            if want != self.applied && self.told != Some(want) {
                tracing::info!(
                    level = want,
                    "bridge level {want} decided, not applied: hooks.on_bridge is unset"
                );
                self.told = Some(want);
            }
            return;
        };
        if cfg.agent.dry_run {
            if want != self.applied && self.told != Some(want) {
                tracing::info!(
                    level = want,
                    dry_run = true,
                    "dry run: would run hooks.on_bridge to switch the master to bridge level {want}"
                );
                self.told = Some(want);
            }
            return;
        }
        let (from, group) = (self.applied, cfg.agent.group.clone());
        let dir = cfg.agent.state_dir.to_string_lossy().into_owned();
        tracing::info!(level = want, previous = from, "running hooks.on_bridge");
        let task =
            tokio::spawn(
                async move { crate::hooks::run_bridge(&hook, want, from, &group, &dir).await },
            );
        self.running = Some((want, now, task));
    }

    /// The run that finished since the last tick, if one did. The master serves at its level
    /// from when it finished (its start plus its duration): a sample taken after that is read
    /// at the new level, one taken before at the old.
    pub async fn reap(&mut self, now: Timestamp) -> Option<Applied> {
        if !self.running.as_ref().is_some_and(|(.., t)| t.is_finished()) {
            return None;
        }
        let (to, started, task) = self.running.take()?;
        let from = self.applied;
        let result = match task.await {
            Ok(run) => run
                .result
                .map(|()| run.duration)
                .map_err(|e| format!("{e} (after {} attempt(s))", run.attempts)),
            Err(e) => Err(format!("the hook's task ended: {e}")),
        };
        match result {
            Ok(took) => {
                let done = jiff::SignedDuration::try_from(took)
                    .ok()
                    .and_then(|d| started.checked_add(d).ok())
                    .map_or(now, |t| t.min(now));
                // A run that confirms the level in force (after a start) changes nothing: the
                // samples' costs did not change.
                if to != self.applied {
                    self.before = self.applied;
                    self.applied = to;
                    self.since = Some(done);
                }
                self.known = true;
                self.failed = None;
                let secs = took.as_secs_f64();
                Some(Applied::Switched { from, to, secs })
            }
            Err(error) => {
                self.failed = Some((now, error.clone()));
                Some(Applied::Failed { from, to, error })
            }
        }
    }
}

pub fn manual_path(state_dir: &Path) -> PathBuf {
    state_dir.join(MANUAL_FILE)
}

/// The level set by hand, if a file says one. A file that cannot be read is an error naming
/// it (and is left as it is).
pub fn read_manual(state_dir: &Path) -> Result<Option<ManualBridge>, String> {
    let path = manual_path(state_dir);
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    if text.len() > 4096 {
        return Err(format!(
            "{}: {} bytes, more than a level set by hand takes; `burst-agent bridge auto` removes it",
            path.display(),
            text.len()
        ));
    }
    serde_json::from_slice(&text).map(Some).map_err(|e| {
        format!(
            "{}: not a level set by `burst-agent bridge` ({e}); `burst-agent bridge auto` removes it",
            path.display()
        )
    })
}

/// `burst-agent bridge set N` / `bridge off`: writes the level for the running agent.
pub fn write_manual(state_dir: &Path, m: &ManualBridge) -> std::io::Result<PathBuf> {
    let path = manual_path(state_dir);
    let mut text = serde_json::to_vec_pretty(m).map_err(std::io::Error::other)?;
    text.push(b'\n');
    crate::fsutil::atomic_write(&path, &text)
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    Ok(path)
}

/// `burst-agent bridge auto`: hands the level back to the policy. Whether there was one.
pub fn clear_manual(state_dir: &Path) -> std::io::Result<bool> {
    let path = manual_path(state_dir);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(std::io::Error::new(
            e.kind(),
            format!("{}: {e}", path.display()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_level_by_hand_that_cannot_be_read_is_named_and_left_where_it_is() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_manual(dir.path()), Ok(None));
        let path = manual_path(dir.path());
        std::fs::write(&path, "level = 2\n").unwrap();
        let e = read_manual(dir.path()).unwrap_err();
        assert!(e.contains(&path.display().to_string()), "{e}");
        assert!(e.contains("burst-agent bridge auto"), "{e}");
        assert!(path.exists(), "an unreadable level by hand was removed");
        std::fs::write(&path, vec![b'x'; 5000]).unwrap();
        assert!(read_manual(dir.path()).unwrap_err().contains("5000 bytes"));
        let m = ManualBridge {
            level: 1,
            until: Timestamp::UNIX_EPOCH,
            by: "ops".into(),
        };
        write_manual(dir.path(), &m).unwrap();
        assert_eq!(read_manual(dir.path()), Ok(Some(m)));
        assert!(clear_manual(dir.path()).unwrap());
        assert!(!clear_manual(dir.path()).unwrap());
    }
}
