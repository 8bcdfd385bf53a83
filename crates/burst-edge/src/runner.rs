//! Where the actuator's hooks run: [`HookRunner`], a small trait, so the state machine never
//! spawns a process itself. [`ProcessHooks`] runs them as processes ([`crate::hooks::run`]) on
//! a tokio [`JoinSet`]; the agent's fault simulation (`faultsim`) has its own runner whose hooks
//! succeed, fail, hang or flood as its seed says.
//!
//! At most one attached hook runs per slave (starting another aborts the first, unreported).
//! Once the daemon calls `cut_at` with its lease's end, every attached hook is cut at that end
//! and never reported (its slave syncs again once the lease is held); a detached
//! `post_terminate` hook is not cut.

use crate::config::Hook;
use crate::fenced::LeaseEnd;
use crate::hooks::{self, HookVars};
use crate::model::HookKind;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::time::Duration;
use tokio::task::{AbortHandle, Id, JoinSet};

/// One hook run that ended.
#[derive(Clone, Debug, PartialEq)]
pub struct Finished {
    /// The slave it ran for.
    pub id: String,
    pub kind: HookKind,
    /// `Err` holds the hook's error as logged (with its `fix:` when one is known).
    pub result: Result<(), String>,
    pub secs: f64,
    /// A post_terminate hook: its slave is gone; the result is only logged.
    pub detached: bool,
}

pub trait HookRunner: Send + 'static {
    /// Starts `hook` for slave `id`. At most one attached hook per slave: a running one is
    /// aborted first and its result never reported.
    fn start(&mut self, id: &str, kind: HookKind, hook: &Hook, vars: HookVars);
    /// Starts a hook that outlives its slave (post_terminate).
    fn start_detached(&mut self, id: &str, kind: HookKind, hook: &Hook, vars: HookVars);
    /// Stops slave `id`'s attached hook, if any; its result is never reported.
    fn abort(&mut self, id: &str);
    /// Slave `id` has an attached hook whose result is not collected yet.
    fn has(&self, id: &str) -> bool;
    /// Hooks started and not collected yet, attached and detached.
    fn in_flight(&self) -> usize;
    /// The hooks that ended since the last call.
    fn finished(&mut self) -> Vec<Finished>;
    /// Waits up to `deadline` for every hook to end (shutdown), then aborts the rest; returns
    /// how many were aborted.
    fn drain(&mut self, deadline: Duration) -> impl Future<Output = usize> + Send;
    /// From now on, every hook is cut at this agent's lease end (a content sync is a
    /// fleet-changing act: none goes on outside the lease). A hook cut so is never reported:
    /// its slave is synced again once the lease is held.
    fn cut_at(&mut self, _end: LeaseEnd) {}
}

struct Running {
    slave: String,
    kind: HookKind,
    detached: bool,
}

/// Hooks as processes, each a task on one [`JoinSet`]; killing a task kills its process group
/// (see [`crate::hooks::run`]).
#[derive(Default)]
pub struct ProcessHooks {
    /// `None`: the hook was cut at the lease's end.
    set: JoinSet<Option<hooks::HookRun>>,
    tasks: HashMap<Id, Running>,
    /// Each slave's attached hook.
    attached: BTreeMap<String, (Id, AbortHandle)>,
    /// Hooks end no later than this agent's lease (`None`: no lease, a dry run or no table).
    lease: Option<LeaseEnd>,
}

impl ProcessHooks {
    fn spawn(&mut self, id: &str, kind: HookKind, hook: &Hook, vars: HookVars, detached: bool) {
        let hook = hook.clone();
        let name = kind.name();
        // A post_terminate hook concerns an instance already gone: it is not a content sync,
        // and is never run again if cut, so the lease does not cut it.
        let lease = if detached { None } else { self.lease.clone() };
        let handle = self.set.spawn(async move {
            let run = hooks::run(name, &hook, &vars);
            match lease {
                None => Some(run.await),
                // Dropping the run kills its process group (hooks::run's guard).
                Some(end) => tokio::select! {
                    r = run => Some(r),
                    () = end.ended() => None,
                },
            }
        });
        self.tasks.insert(
            handle.id(),
            Running {
                slave: id.to_string(),
                kind,
                detached,
            },
        );
        if !detached {
            self.attached.insert(id.to_string(), (handle.id(), handle));
        }
    }
}

impl HookRunner for ProcessHooks {
    fn start(&mut self, id: &str, kind: HookKind, hook: &Hook, vars: HookVars) {
        self.abort(id);
        self.spawn(id, kind, hook, vars, false);
    }

    fn start_detached(&mut self, id: &str, kind: HookKind, hook: &Hook, vars: HookVars) {
        self.spawn(id, kind, hook, vars, true);
    }

    fn abort(&mut self, id: &str) {
        if let Some((task, h)) = self.attached.remove(id) {
            h.abort();
            self.tasks.remove(&task);
        }
    }

    fn has(&self, id: &str) -> bool {
        self.attached.contains_key(id)
    }

    fn in_flight(&self) -> usize {
        self.tasks.len()
    }

    fn finished(&mut self) -> Vec<Finished> {
        let mut out = Vec::new();
        while let Some(joined) = self.set.try_join_next_with_id() {
            let (task, res) = match joined {
                Ok((task, run)) => (task, Ok(run)),
                Err(e) => (e.id(), Err(e)),
            };
            // Aborted ones were forgotten when they were aborted.
            let Some(r) = self.tasks.remove(&task) else {
                continue;
            };
            if !r.detached {
                self.attached.remove(&r.slave);
            }
            let (result, secs) = match res {
                Ok(None) => {
                    tracing::warn!(instance_id = %r.slave, hook = r.kind.name(),
                        "hook cut at the end of this agent's lease on the site: it is run \
                         again once the lease is held");
                    continue;
                }
                Ok(Some(run)) => (
                    run.result.map_err(|e| e.to_string()),
                    run.duration.as_secs_f64(),
                ),
                Err(e) => (Err(format!("hook task ended abnormally: {e}")), 0.0),
            };
            out.push(Finished {
                id: r.slave,
                kind: r.kind,
                result,
                secs,
                detached: r.detached,
            });
        }
        out
    }

    fn cut_at(&mut self, end: LeaseEnd) {
        self.lease = Some(end);
    }

    async fn drain(&mut self, deadline: Duration) -> usize {
        let until = tokio::time::Instant::now() + deadline;
        while !self.set.is_empty() {
            match tokio::time::timeout_at(until, self.set.join_next()).await {
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        let left = self.set.len();
        // Their process groups die with the tasks (kill_on_drop in hooks::run).
        self.set.abort_all();
        self.tasks.clear();
        self.attached.clear();
        left
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Dur;
    use crate::fenced::tests::hold;
    use tokio::time::Instant;

    fn hook(script: &str) -> Hook {
        Hook {
            argv: vec!["sh".into(), "-c".into(), script.into()],
            timeout: Dur::secs(60),
            retries: 0,
            retry_delay: Dur::secs(1),
        }
    }

    fn vars() -> HookVars {
        HookVars {
            instance_id: "i-0abc".into(),
            ..HookVars::default()
        }
    }

    fn alive(pid_file: &std::path::Path) -> bool {
        let Ok(pid) = std::fs::read_to_string(pid_file) else {
            return false;
        };
        std::path::Path::new(&format!("/proc/{}", pid.trim())).exists()
    }

    /// Issue 28: a content sync is fleet-changing, so none goes on past the agent's lease end,
    /// renewals moving that end later; a hook inside the lease is reported as ever.
    #[test]
    fn hooks_are_cut_at_the_lease_end_as_renewals_move_it_and_never_reported() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let pid = dir.path().join("pid");
            let end = LeaseEnd::default();
            hold(&end, 1.0);
            let mut h = ProcessHooks::default();
            h.cut_at(end.clone());
            // Within the lease: reported.
            h.start("i-quick", HookKind::PreRegister, &hook("exit 0"), vars());
            let script = format!("echo $$ > {}; exec sleep 30", pid.display());
            h.start("i-0abc", HookKind::PreRegister, &hook(&script), vars());
            let t = Instant::now();
            let mut quick = Vec::new();
            // A renewal at 0.5 s moves the end to 2.5 s.
            while t.elapsed() < Duration::from_millis(500) {
                quick.extend(h.finished());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            assert_eq!(quick.len(), 1, "{quick:?}");
            assert_eq!(quick[0].id, "i-quick");
            assert_eq!(quick[0].result, Ok(()));
            hold(&end, 2.0);
            while t.elapsed() < Duration::from_millis(2000) {
                assert!(h.finished().is_empty());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            assert!(h.has("i-0abc"), "cut before its renewed end");
            assert!(alive(&pid), "the hook's process ended before the lease did");
            while h.has("i-0abc") && t.elapsed() < Duration::from_secs(10) {
                assert!(h.finished().is_empty(), "a cut hook was reported");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let cut = t.elapsed();
            assert!(!h.has("i-0abc"), "still running 10 s in");
            assert!(
                cut >= Duration::from_millis(2450) && cut < Duration::from_millis(3500),
                "cut at {cut:?}, the lease ended at 2.5 s"
            );
            // Its process group is gone with it.
            let gone = Instant::now();
            while alive(&pid) && gone.elapsed() < Duration::from_secs(5) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert!(!alive(&pid), "the cut hook's process still runs");
            // Without a lease, no hook starts a sync that outlives nothing: it is cut at once.
            end.set(None);
            h.start("i-late", HookKind::PreRegister, &hook("sleep 5"), vars());
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert!(h.finished().is_empty());
            assert!(!h.has("i-late"));
        });
    }
}
