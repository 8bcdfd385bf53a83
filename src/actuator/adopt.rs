//! Adoption: at start (and after a crash), the live slaves re-attached, the launches a crash
//! left open resolved, and the cap ledger brought in line with what EC2 lists. It carries out
//! burst-core's `lifecycle::adopt`, `intents::settle` and, for a blocked ledger,
//! `intents::rebuild_entries` (may overcount, never undercount). With the ledger table, the
//! daemon brings the local records up from the table before adopting (`sync_from_table`,
//! guarantee.rs).

use super::*;
use lifecycle::intents::{self, Settle};

impl<C: Cloud, H: HookRunner> Actuator<C, H> {
    /// At start: lists the group's instances and the ELB's members, re-attaches to every live
    /// slave, resolves launches a crash left open, and brings the cap ledger in line with the
    /// tags (rebuilding it when the stored one was unreadable). Nothing is launched twice and
    /// nothing running is forgotten.
    pub async fn adopt(&mut self, now: Timestamp) -> Result<Report, ActuatorError> {
        let mut report = Report::default();
        let (instances, members) = self.observe(now).await?;
        let instances = self.claim(instances, &members, now, &mut report).await;
        if std::mem::take(&mut self.fresh) && !self.candidates.is_empty() {
            let ids: Vec<&str> = self.candidates.iter().map(|i| i.id.as_str()).collect();
            let why = format!(
                "no state in {} but EC2 lists {} instance(s) tagged as this install's ({}): the \
                 state was lost (or someone tagged them), launches EC2 no longer lists cannot \
                 be counted, and none of them is touched until an operator says it is ours; \
                 stop the agent, run `sudo -u burst-agent burst-agent repair` to see them, then \
                 `repair --adopt ID` for each that is this install's (with `--used-today N` \
                 from billing or CloudTrail)",
                self.cfg.agent.state_dir.display(),
                ids.len(),
                ids.join(", ")
            );
            self.error(now, &mut report, why.clone());
            self.needs_repair = Some(why.clone());
            self.ledger = self.ledger.clone().blocked(why);
        }
        if let (Some(why), None) = (
            self.ledger.is_blocked().map(str::to_string),
            &self.needs_repair,
        ) {
            let rebuilt = self.ledger.clone().rebuilt_from(intents::rebuild_entries(
                self.ledger.entries(),
                &self.journal,
                &instances,
                now,
            ));
            tracing::warn!(was = %why, used = rebuilt.used(now),
                "cap ledger rebuilt from what could still be read, the launch journal and the \
                 instances' tags (EC2 lists terminated instances for about an hour only)");
            self.ledger = rebuilt;
            self.save_state(now, &mut report);
        }
        Box::pin(self.check_sources(now, &mut report)).await;
        let plan = lifecycle::adopt(
            &self.slaves,
            &lifecycle::Observed {
                instances: &instances,
                members: &members,
                members_known: true,
                sources: &self.sources,
            },
            &self.running_hooks(),
            now,
            &self.cfg,
        );
        self.carry_out(plan, now, &mut report);
        // After the loop above, so slaves found by their intent tag keep the phase it gave them.
        self.resolve_intents(&instances, now, &mut report).await;
        let changes = self
            .ledger
            .reconcile(&self.seen_all(&instances, now), now, SETTLE_SECS);
        for c in &changes {
            tracing::info!("cap ledger: {c}");
        }
        if self.guarantee.is_some() {
            self.hold_table_floor(now);
        }
        self.ledger.prune(now);
        self.journal.prune(now, JOURNAL_KEEP_SECS);
        self.save_state(now, &mut report);
        // Host keys of slaves that ended while no agent ran.
        let live: BTreeSet<&str> = self.slaves.keys().map(String::as_str).collect();
        let gone = hooks::forget_host_keys_except(&self.cfg.agent.state_dir, &live);
        if gone > 0 {
            tracing::info!(
                removed = gone,
                "removed the pinned ssh host keys of slaves that are gone"
            );
        }
        Ok(report)
    }

    /// Intents written before a RunInstances whose answer never made it to the journal: their
    /// instances are found by the intent tag; an intent EC2 still lists nothing of, 300 s after
    /// its last call, launched nothing.
    pub(super) async fn resolve_intents(
        &mut self,
        instances: &[InstanceInfo],
        now: Timestamp,
        report: &mut Report,
    ) {
        let dry_run = self.cfg.agent.dry_run;
        for settled in intents::settle(&self.journal, instances, now, dry_run) {
            match settled {
                Settle::Partial { intent, ids, born } => {
                    self.born(&born, now);
                    tracing::info!(intent = %intent.id, instances = ?ids, of = intent.keys.len(),
                        "launch intent partly found by tag; waiting for EC2 to list the rest");
                }
                Settle::Resolved { intent, ids, born } => {
                    self.born(&born, now);
                    tracing::info!(intent = %intent.id, instances = ?ids,
                        "launch intent resolved from tags");
                    self.finish_intent(&intent, &ids, now, report);
                }
                Settle::NothingLaunched { intent, why } => {
                    self.fail_intent(&intent, &why, now, report)
                }
            }
        }
    }

    /// Starts tracking the live instances a launch intent was found to have launched (the one
    /// thing the executor records itself: a birth, in phase Pending).
    fn born(&mut self, born: &[InstanceInfo], now: Timestamp) {
        for i in born {
            self.slaves
                .entry(i.id.clone())
                .or_insert_with(|| slave_from(i, Phase::Pending, now, now));
        }
    }

    /// What the ledger is reconciled with ([`intents::seen_all`]).
    pub(super) fn seen_all(&self, instances: &[InstanceInfo], now: Timestamp) -> Vec<Seen> {
        intents::seen_all(&self.slaves, instances, now)
    }

    /// Binds an intent's ledger attempts to its instances, withdraws the ones EC2 did not fill.
    pub(super) fn finish_intent(
        &mut self,
        intent: &Intent,
        ids: &[String],
        now: Timestamp,
        r: &mut Report,
    ) {
        let free = self.bind_free(intent, ids);
        // What is left launched nothing: EC2 answered with fewer, or has listed all there is.
        for key in free {
            if let Err(e) = self.ledger.withdraw(&key) {
                tracing::warn!(key, "cap ledger: {e}");
            }
        }
        if let Some(j) = self.journal.get_mut(&intent.id) {
            j.outcome = Outcome::Launched {
                instance_ids: ids.to_vec(),
            };
        }
        self.save_state(now, r);
    }

    /// Binds each of `ids` to one attempt of `intent`: attempts already bound (the ledger's
    /// reconcile binds by intent tag) stay; the others take the free attempts in order. Returns
    /// the attempts still free.
    pub(super) fn bind_free(&mut self, intent: &Intent, ids: &[String]) -> VecDeque<String> {
        let plan = intents::bind_plan(intent, self.ledger.entries(), ids);
        // Launched by this install: its records name them from now on, whatever their tags.
        self.owned.extend(ids.iter().cloned());
        for (key, id) in &plan.bind {
            if let Err(e) = self.ledger.bind(key, id) {
                tracing::warn!(key, instance_id = %id, "cap ledger: {e}");
            }
        }
        for id in &plan.extra {
            tracing::warn!(intent = %intent.id, instance_id = %id,
                "more instances than launch attempts for this intent");
        }
        plan.free
    }

    pub(super) fn fail_intent(
        &mut self,
        intent: &Intent,
        error: &str,
        now: Timestamp,
        r: &mut Report,
    ) {
        self.launch_failures += 1;
        self.events.push(Event::new(
            EventKind::LaunchFailed,
            None,
            format!(
                "launch {} of {} slave(s) failed, nothing charged to the cap: {error}",
                intent.id,
                intent.keys.len()
            ),
        ));
        for key in &intent.keys {
            let _ = self.ledger.withdraw(key);
        }
        if let Some(j) = self.journal.get_mut(&intent.id) {
            j.outcome = Outcome::Failed {
                error: error.to_string(),
            };
        }
        self.save_state(now, r);
        self.error(
            now,
            r,
            format!("launch {} failed for good: {error}", intent.id),
        );
    }
}
