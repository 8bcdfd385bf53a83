//! Where the actuator's hooks run: [`HookRunner`], a small trait, so the state machine never
//! spawns a process itself. [`ProcessHooks`] runs them as processes ([`crate::hooks::run`]) on
//! a tokio [`JoinSet`]; the agent's fault simulation (`faultsim`) has its own runner whose hooks
//! succeed, fail, hang or flood as its seed says.

use crate::config::Hook;
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
    set: JoinSet<hooks::HookRun>,
    tasks: HashMap<Id, Running>,
    /// Each slave's attached hook.
    attached: BTreeMap<String, (Id, AbortHandle)>,
}

impl ProcessHooks {
    fn spawn(&mut self, id: &str, kind: HookKind, hook: &Hook, vars: HookVars, detached: bool) {
        let hook = hook.clone();
        let name = kind.name();
        let handle = self
            .set
            .spawn(async move { hooks::run(name, &hook, &vars).await });
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
                Ok(run) => (
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
