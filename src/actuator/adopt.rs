//! Adoption: at start (and after a crash), the live slaves re-attached, the launches a crash
//! left open resolved, and the cap ledger brought in line with what EC2 lists.

use super::*;

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
            let rebuilt = self.ledger.clone().rebuilt_from(rebuild_entries(
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
        self.check_sources(now, &mut report);
        let plan = lifecycle::adopt(
            &self.slaves,
            &lifecycle::Observed {
                instances: &instances,
                members: &members,
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
        let open: Vec<Intent> = self.journal.unresolved().cloned().collect();
        for intent in open {
            let found: Vec<&InstanceInfo> = instances
                .iter()
                .filter(|i| i.intent.as_deref() == Some(intent.id.as_str()))
                .collect();
            if !found.is_empty() {
                let ids: Vec<String> = found.iter().map(|i| i.id.clone()).collect();
                for i in found.iter().filter(|i| alive(i.state)) {
                    self.slaves
                        .entry(i.id.clone())
                        .or_insert_with(|| slave_from(i, Phase::Pending, now, now));
                }
                // EC2 is eventually consistent: fewer instances than attempts may be all it
                // launched, or all it lists yet. Only once it has had time to list them all are
                // the missing attempts known to have launched nothing.
                if ids.len() < intent.keys.len() && age(now, intent.settling_since()) <= SETTLE_SECS
                {
                    tracing::info!(intent = %intent.id, instances = ?ids, of = intent.keys.len(),
                        "launch intent partly found by tag; waiting for EC2 to list the rest");
                    continue;
                }
                tracing::info!(intent = %intent.id, instances = ?ids,
                    "launch intent resolved from tags");
                self.finish_intent(&intent, &ids, now, report);
                continue;
            }
            if self.cfg.agent.dry_run {
                continue;
            }
            // Nothing lists it. Every instance of a launch carries its intent tag from the
            // moment it exists (RunInstances tags atomically), so once EC2 has had time to list
            // what the last call launched, nothing was launched: the attempts are withdrawn and
            // the policy decides anew. Never sent again: a launch asked for minutes ago may no
            // longer be wanted, and a repeat could launch what nobody decided.
            if age(now, intent.settling_since()) <= SETTLE_SECS {
                continue;
            }
            let why = format!(
                "EC2 lists no instance of this launch {}s after its last RunInstances: nothing \
                 was launched",
                age(now, intent.settling_since())
            );
            self.fail_intent(&intent, &why, now, report);
        }
    }

    /// What the ledger is reconciled with: every instance EC2 lists, and the slaves this agent
    /// started tracking too recently for EC2 to list them yet (alive, not ended).
    pub(super) fn seen_all(&self, instances: &[InstanceInfo], now: Timestamp) -> Vec<Seen> {
        let mut out: Vec<Seen> = instances.iter().map(|i| seen(i, now)).collect();
        for s in self.slaves.values() {
            if age(now, s.first_seen) <= SETTLE_SECS && !instances.iter().any(|i| i.id == s.id) {
                out.push(Seen {
                    instance_id: s.id.clone(),
                    intent: s.intent.clone(),
                    launched_at: s.launched_at,
                    ended_at: None,
                    stopped: false,
                    stopped_by: None,
                });
            }
        }
        out
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
        let entries = self.ledger.entries();
        let bound: BTreeSet<String> = entries
            .iter()
            .filter(|e| intent.keys.contains(&e.key))
            .filter_map(|e| e.instance_id.clone())
            .collect();
        let mut free: VecDeque<String> = intent
            .keys
            .iter()
            .filter(|k| {
                entries
                    .iter()
                    .any(|e| &e.key == *k && e.instance_id.is_none())
            })
            .cloned()
            .collect();
        // Launched by this install: its records name them from now on, whatever their tags.
        self.owned.extend(ids.iter().cloned());
        for id in ids.iter().filter(|id| !bound.contains(*id)) {
            match free.pop_front() {
                Some(key) => {
                    if let Err(e) = self.ledger.bind(&key, id) {
                        tracing::warn!(key, instance_id = %id, "cap ledger: {e}");
                    }
                }
                None => tracing::warn!(intent = %intent.id, instance_id = %id,
                    "more instances than launch attempts for this intent"),
            }
        }
        free
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

/// A blocked ledger's entries, rebuilt: what could still be read of the old file, then each
/// launch the journal knows (an instance it launched counts from its intent; an intent still
/// open counts as an attempt), then every instance of ours EC2 still lists. Nothing is
/// counted twice; an entry that cannot be shown to have ended counts as running, so the
/// rebuilt ledger may overcount, never undercount, what the journal and tags show.
pub(super) fn rebuild_entries(
    readable: &[cap::Entry],
    journal: &Journal,
    instances: &[InstanceInfo],
    now: Timestamp,
) -> Vec<cap::Entry> {
    let mut out: Vec<cap::Entry> = readable.to_vec();
    let known = |out: &[cap::Entry], key: &str, id: Option<&str>| {
        out.iter()
            .any(|e| e.key == key || (id.is_some() && e.instance_id.as_deref() == id))
    };
    for intent in &journal.intents {
        let ids: Vec<Option<&str>> = match &intent.outcome {
            Outcome::Launched { instance_ids } => {
                instance_ids.iter().map(|i| Some(i.as_str())).collect()
            }
            Outcome::Started => vec![None; intent.keys.len()],
            Outcome::Failed { .. } => continue,
        };
        for (key, id) in intent.keys.iter().zip(ids) {
            if !known(&out, key, id) {
                out.push(cap::Entry {
                    key: key.clone(),
                    instance_id: id.map(str::to_string),
                    launched_at: intent.created_at,
                    ended_at: None,
                });
            }
        }
    }
    for s in instances.iter().map(|i| seen(i, now)) {
        let key = format!(
            "{}#{}",
            s.intent.as_deref().unwrap_or("adopted"),
            s.instance_id
        );
        let ended = s.ended_at.or_else(|| s.ended_by(now));
        if let Some(e) = out
            .iter_mut()
            .find(|e| e.instance_id.as_deref() == Some(s.instance_id.as_str()))
        {
            if e.ended_at.is_none() {
                e.ended_at = ended.map(|end| end.max(e.launched_at));
            }
        } else if !known(&out, &key, None) {
            out.push(cap::Entry {
                key,
                instance_id: Some(s.instance_id),
                launched_at: s.launched_at,
                ended_at: ended,
            });
        }
    }
    out
}

/// What the ledger hears of one listed instance. Shutting down is ended (it runs no more, and
/// must not count as running again); stopping or stopped is not running.
pub(super) fn seen(i: &InstanceInfo, now: Timestamp) -> Seen {
    let ended = matches!(
        i.state,
        InstanceState::Terminated | InstanceState::ShuttingDown
    );
    Seen {
        instance_id: i.id.clone(),
        intent: i.intent.clone(),
        launched_at: i.launched_at.unwrap_or(now),
        ended_at: ended.then(|| i.ended_at.unwrap_or(now)),
        stopped: stopped(i.state),
        stopped_by: i
            .pooled_since
            .and_then(|t| Timestamp::from_second(t.as_second() + STOP_DEADLINE_SECS).ok()),
    }
}
