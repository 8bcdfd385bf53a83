//! One reconcile pass: observe EC2 and the ELB, let the pure lifecycle decide, carry out its
//! actions (hooks, registration, deregistration, stops, terminations) and record what happened.

use super::*;
use std::ops::ControlFlow;

/// A warm slave picked to start: its instance id, the start's ledger key, and whether the
/// start is free (the day counts it already).
type Picked = (String, String, bool);

impl<C: Cloud, H: HookRunner> Actuator<C, H> {
    /// One reconcile pass: observe EC2 and the ELB (two calls), then move every slave along.
    pub async fn step(&mut self, now: Timestamp) -> Result<Report, ActuatorError> {
        let mut report = Report::default();
        // Results wait here until a step gets past the observation: a failed DescribeInstances
        // must not lose the news that a content sync finished.
        let mut finished = std::mem::take(&mut self.unheard);
        finished.extend(self.collect_hooks());
        self.unheard = finished;
        let (instances, members) = self.observe_loose(now).await?;
        // An ELB that cannot be read (deleted, a lost permission, throttled) stops nothing but
        // what needs its answer: the lifecycle registers, releases and judges health only on
        // health it knows.
        let members_known = members.is_ok();
        let members = self.members_or_empty(members, now, &mut report);
        let finished = std::mem::take(&mut self.unheard);
        let instances = self.claim(instances, &members, now, &mut report).await;

        if self.journal.unresolved().next().is_some() {
            self.resolve_intents(&instances, now, &mut report).await;
        }
        if self.prune_releasing(&instances) && !self.cfg.agent.dry_run {
            self.save_state(now, &mut report);
        }
        self.reconcile_ledger(&instances, now, &mut report);
        let dry = self.cfg.agent.dry_run;
        if !dry {
            // The shared table hears what the local ledger heard: launch records not
            // acknowledged yet, and the instances alive at midnight.
            // Boxed: the step's future stays small on a test thread's stack.
            Box::pin(self.flush_records()).await;
            Box::pin(self.carry_over(now)).await;
        }
        let forced = !dry && std::mem::take(&mut self.sync_requested);
        self.brake_hears(&finished, now, &mut report);
        Box::pin(self.check_sources(now, &mut report)).await;
        let plan = lifecycle::reconcile(
            &self.slaves,
            &lifecycle::Observed {
                instances: &instances,
                members: &members,
                members_known,
                sources: &self.sources,
            },
            &finished,
            &self.running_hooks(),
            forced,
            now,
            &self.cfg,
        );
        let calls = self.carry_out(plan, now, &mut report);
        if dry {
            if !calls.is_empty() {
                tracing::info!(calls = ?calls, "dry run: would act on adopted slaves");
            }
            return Ok(report);
        }
        let (mut to_register, mut to_deregister, mut to_terminate) = (vec![], vec![], vec![]);
        let mut to_stop = vec![];
        for c in calls {
            match c {
                lifecycle::Action::Register(ids) => to_register = ids,
                lifecycle::Action::Deregister(ids) => to_deregister = ids,
                lifecycle::Action::Terminate(ids) => to_terminate = ids,
                lifecycle::Action::Stop(ids) => to_stop = ids,
                lifecycle::Action::Repool(ids) => self.repool(ids, now, &mut report).await,
                lifecycle::Action::Untag(ids) => self.untag_started(&ids, now, &mut report).await,
                _ => {}
            }
        }
        // A stop EC2 refused (an instance-store root, a spot instance, no permission) is a
        // termination: a drained slave is never left running.
        to_terminate.extend(self.stop(now, &mut report, &to_stop).await);
        self.act(now, &mut report, to_register, to_deregister, to_terminate)
            .await;
        Ok(report)
    }

    /// The ELB's members as read, or none (an error said) when they could not be read.
    fn members_or_empty(
        &mut self,
        members: Result<BTreeMap<String, MemberState>, crate::aws::AwsError>,
        now: Timestamp,
        report: &mut Report,
    ) -> BTreeMap<String, MemberState> {
        match members {
            Ok(m) => m,
            Err(e) => {
                self.error(
                    now,
                    report,
                    format!(
                        "the ELB's instance health could not be read ({e}): this step registers \
                         and releases nothing and judges no slave's health; syncs, launches and \
                         deadlines go on"
                    ),
                );
                BTreeMap::new()
            }
        }
    }

    /// The cap ledger reconciled with what EC2 lists (and held at the ledger table's count);
    /// each change logged, and the state written when there was one.
    fn reconcile_ledger(
        &mut self,
        instances: &[InstanceInfo],
        now: Timestamp,
        report: &mut Report,
    ) {
        let mut changes = self
            .ledger
            .reconcile(&self.seen_all(instances, now), now, SETTLE_SECS);
        if self.guarantee.is_some() {
            let before = self.ledger.used(now);
            self.hold_table_floor(now);
            if self.ledger.used(now) > before {
                changes.push("held at the ledger table's count".into());
            }
        }
        if !changes.is_empty() {
            for c in &changes {
                tracing::info!("cap ledger: {c}");
            }
            self.save_state(now, report);
        }
    }

    /// A warm slave whose pool tag is gone (removed by hand, or by an untag of a start that
    /// never happened): tagged again with when it went to the pool, so a restart of the agent
    /// adopts it with its age.
    async fn repool(&mut self, ids: Vec<String>, now: Timestamp, report: &mut Report) {
        for id in ids {
            let Some(since) = self.slaves.get(&id).map(|s| s.since) else {
                continue;
            };
            let one = std::slice::from_ref(&id);
            if let Err(e) = self
                .cloud
                .tag(one, cloud::TAG_POOLED_SINCE, &since.to_string())
                .await
            {
                let msg = format!("could not tag warm slave {id} again: {e}");
                self.error(now, report, msg);
            }
        }
    }

    /// The brake hears every `pre_register` that ended: the same cause twice in a row trips
    /// it (an alert), a success releases it.
    pub(super) fn brake_hears(
        &mut self,
        finished: &BTreeMap<String, (HookKind, Result<(), String>)>,
        now: Timestamp,
        report: &mut Report,
    ) {
        let day = self.ledger.day_bounds(now).0.to_string();
        let mut changed = false;
        for (id, (kind, res)) in finished {
            let Some(s) = self.slaves.get(id) else {
                continue;
            };
            // A periodic sync to a serving slave proves the content path, or revokes the proof.
            if *kind == HookKind::ContentSync {
                match res {
                    Ok(_) => self.brake.prove(&self.sync_print, now),
                    Err(_) => self.brake.revoke(),
                }
                changed = true;
                continue;
            }
            if !matches!(kind, HookKind::PreRegister | HookKind::ContentCheck) {
                continue;
            }
            // With a content check, a sync is proven by the check that follows it, not by the
            // rsync alone (a slave may get the files and still not serve the site).
            if *kind == HookKind::PreRegister
                && res.is_ok()
                && self.cfg.hooks.content_check.is_some()
            {
                continue;
            }
            // A content check that fails before registration is a sync that failed too.
            if *kind == HookKind::ContentCheck && s.phase != Phase::Syncing {
                continue;
            }
            let intent = s.intent.clone().unwrap_or_default();
            // A warm start the day counts already cost nothing; a launch cost a unit.
            let paid = s.restarted_at.is_none();
            let res = res.as_ref().map(|_| ()).map_err(String::as_str);
            changed = true;
            match self
                .brake
                .record(&[id, &intent], res, paid, &day, now, &self.sync_print)
            {
                brake::Change::None => {}
                brake::Change::Tripped(t) => {
                    let msg = format!(
                        "content sync failed on {} slaves in a row the same way: {}; launches that \
                         spend the cap stop (warm slaves the day counts may still start) until \
                         a reload that changes the hook, the slave image or the ssh key, or \
                         `burst-agent resume` after a fix elsewhere, or a trial launch from {} \
                         (a cap unit, at most {} per cause a day); last error: {}",
                        brake::TRIP_AFTER,
                        t.cause,
                        t.next_trial,
                        brake::UNITS_PER_CAUSE_PER_DAY,
                        t.error
                    );
                    self.events
                        .push(Event::new(EventKind::SyncBroken, None, msg.clone()));
                    self.error(now, report, msg);
                }
                brake::Change::TrialFailed(t) => {
                    tracing::warn!(cause = %t.cause, next_trial = %t.next_trial,
                        "the trial launch's content sync failed the same way; launches stay \
                         held: {}", t.error);
                }
                brake::Change::Released { cause } => {
                    tracing::info!(instance_id = %id, cause = %cause,
                        "a content sync went through: the brake on launches is released");
                }
            }
        }
        let (slaves, journal) = (&self.slaves, &self.journal);
        self.brake.trial_gone(|intent| {
            slaves.values().any(|s| s.intent.as_deref() == Some(intent))
                || journal.unresolved().any(|j| j.id == intent)
        });
        if changed && !self.cfg.agent.dry_run {
            self.save_state(now, report);
        }
    }

    /// Checks each sync hook's content source before the lifecycle may start it: a missing,
    /// empty or sentinel-less one is never synced (an alert when it goes bad, a line when it is
    /// back). The checks run off the runtime's thread, one at a time, each bounded by
    /// [`SOURCE_CHECK_TIMEOUT`]: a source on a hung mount counts as missing, and the tick goes on.
    pub(super) async fn check_sources(&mut self, now: Timestamp, report: &mut Report) {
        let h = &self.cfg.hooks;
        let sentinel = h.content_sentinel.clone();
        let dirs = [h.source_of(&h.pre_register), h.source_of(h.content_sync())];
        let mut found: Vec<Option<String>> = Vec::new();
        let mut seen: Vec<(std::path::PathBuf, Option<String>)> = Vec::new();
        for dir in dirs {
            let Some(dir) = dir else {
                found.push(None);
                continue;
            };
            // Both hooks usually sync one source: checked once.
            if let Some((_, r)) = seen.iter().find(|(d, _)| *d == dir) {
                found.push(r.clone());
                continue;
            }
            let what = format!("the check of content source {}", dir.display());
            let s = sentinel.clone();
            let d = dir.clone();
            let got = self
                .source_calls
                .run_async(&what, SOURCE_CHECK_TIMEOUT, move || {
                    hooks::check_source(&d, s.as_deref())
                })
                .await;
            let r = match got {
                Ok(r) => r.err(),
                Err(hung) => Some(format!(
                    "{hung}: content source {} counts as missing; nothing is synced from it and \
                     launches are held until it answers",
                    dir.display()
                )),
            };
            seen.push((dir, r.clone()));
            found.push(r);
        }
        let mut found = found.into_iter();
        let next = lifecycle::Sources {
            pre_register: found.next().flatten(),
            content_sync: found.next().flatten(),
        };
        match (self.sources.problem(), next.problem()) {
            (None, Some(why)) => {
                let why = why.to_string();
                self.events.push(Event::new(
                    EventKind::ContentSourceMissing,
                    None,
                    format!("{why}; launches are held until it is back"),
                ));
                self.error(now, report, why);
            }
            (Some(_), None) => {
                tracing::info!("the content source is back: syncs and launches go again");
            }
            _ => {}
        }
        self.sources = next;
    }

    /// The agent's clock as the state last had it (read at start: clock.rs).
    pub fn clock_mark(&self) -> Option<&crate::clock::Mark> {
        self.clock_mark.as_ref()
    }

    /// The agent's clock now, written with the next state write (at once when the state holds
    /// no mark of this boot yet: a restart must find one).
    /// How far the agent's clock (`now` of every call) is from the host's wall clock, which
    /// EC2's own times are on: the ledger counts a run that ended that close before a day began
    /// for that day too (overcount, never undercount).
    pub fn set_clock_skew(&mut self, secs: i64, now: Timestamp) {
        self.ledger.set_skew(secs, now);
    }

    pub fn set_clock_mark(&mut self, m: crate::clock::Mark) {
        let first_in_boot =
            self.clock_mark.as_ref().is_none_or(|o| o.boot != m.boot) || !self.clock_marked;
        self.clock_mark = Some(m);
        if first_in_boot && !self.cfg.agent.dry_run {
            self.clock_marked = self.save_state(self.ledger_now_hint(), &mut Report::default());
        }
    }

    /// A time for a state write outside a step (the mark's own agent time).
    pub(super) fn ledger_now_hint(&self) -> Timestamp {
        self.clock_mark
            .as_ref()
            .map_or_else(Timestamp::now, |m| m.agent)
    }

    /// Launches wait for today's count to be read back (the state was lost): why.
    pub fn cap_unverified(&self) -> Option<&str> {
        self.cap_unverified.as_deref()
    }

    /// Today's count read back from CloudWatch after lost state: the ledger counts at least
    /// `used` today from now on, and launches may go. `Err(why)`: it could not be read; launches
    /// keep waiting (a wiped state directory must never grant a fresh day).
    pub fn cap_read_back(&mut self, used: Result<Option<u32>, String>, now: Timestamp) {
        match used {
            Ok(n) => {
                let lines = self.count_at_least(n.unwrap_or(0), "CloudWatch BurstCapUsed", now);
                for l in &lines {
                    tracing::warn!("cap ledger after lost state: {l}");
                }
                tracing::info!(read_back = ?n, cap = %self.ledger.status(now),
                    "today's launches read back from CloudWatch after lost state");
                self.cap_unverified = None;
                self.save_state(now, &mut Report::default());
            }
            Err(e) => {
                let why = format!(
                    "the state was lost or unreadable and today's BurstCapUsed could not be read \
                     back from CloudWatch ({e}): launches wait (a wiped state must not grant a \
                     fresh day); it is tried again each tick, or run `burst-agent repair \
                     --used-today N`"
                );
                if self.cap_unverified.as_deref() != Some(why.as_str()) {
                    tracing::error!("{why}");
                }
                self.cap_unverified = Some(why);
            }
        }
    }

    /// Makes the ledger count at least `n` instances today (instance-less entries from the day's
    /// start, ended now). Returns what it did.
    /// The ledger with `entries` in place of its own, still blocked if it was.
    pub(super) fn replace_entries(&mut self, entries: Vec<cap::Entry>) {
        let blocked = self.ledger.is_blocked().map(str::to_string);
        self.ledger = self.ledger.clone().rebuilt_from(entries);
        if let Some(why) = blocked {
            self.ledger = self.ledger.clone().blocked(why);
        }
    }

    pub(super) fn count_at_least(&mut self, n: u32, source: &str, now: Timestamp) -> Vec<String> {
        let known = self.ledger.used(now);
        if n <= known {
            return Vec::new();
        }
        let (_, day_start, _) = self.ledger.day_bounds(now);
        let mut entries = self.ledger.entries().to_vec();
        for k in 1..=(n - known) {
            entries.push(cap::Entry {
                key: format!("counted-{}#{k}", now.as_second()),
                instance_id: None,
                launched_at: day_start,
                ended_at: Some(now),
            });
        }
        self.replace_entries(entries);
        vec![format!(
            "counted {} more, as {source} says {n} were used today",
            n - known
        )]
    }

    /// Why no content can be synced now (a missing or empty source), if so.
    pub fn content_source_missing(&self) -> Option<&str> {
        self.sources.problem()
    }

    /// The brake on launches, tripped by a content sync that keeps failing: why, and when a
    /// trial may go.
    pub fn sync_broken(&self) -> Option<&brake::Tripped> {
        self.brake.tripped.as_ref()
    }

    /// When a trial launch may go at the earliest: after its back-off, and not before the cap
    /// day ends once the cause has spent its units today. `None`: none is held, or a trial is
    /// syncing now.
    pub fn next_trial(&self, now: Timestamp) -> Option<Timestamp> {
        let t = self.brake.tripped.as_ref().filter(|t| t.trial.is_none())?;
        let (date, _, day_end) = self.ledger.day_bounds(now);
        if self.brake.spent(&date.to_string(), &t.cause) >= brake::UNITS_PER_CAUSE_PER_DAY {
            Some(t.next_trial.max(day_end))
        } else {
            Some(t.next_trial)
        }
    }

    /// A sync with this config's hook, slave image and ssh key went through outside a launch
    /// (the drill, a test's seasoned site): launches that follow may go at full speed.
    pub fn prove_sync(&mut self, now: Timestamp) {
        self.brake.prove(&self.sync_print, now);
    }

    /// What the brake allows now (the policy reads it with [`Actuator::sync_broken`]).
    pub fn brake_gate(&self, now: Timestamp) -> brake::Gate {
        self.brake.gate(
            &self.ledger.day_bounds(now).0.to_string(),
            now,
            &self.sync_print,
            self.unproven_in_flight(now),
        )
    }

    /// Paid slaves whose first content sync has not ended yet: launched ones still pending or
    /// syncing, and launches on the way that no tracked slave stands for yet. While no sync is
    /// proven, at most two may be (lifecycle::brake).
    fn unproven_in_flight(&self, now: Timestamp) -> u32 {
        let slaves = self
            .slaves
            .values()
            .filter(|s| {
                s.restarted_at.is_none() && matches!(s.phase, Phase::Pending | Phase::Syncing)
            })
            .count();
        let tracked: BTreeSet<&str> = self.slaves.keys().map(String::as_str).collect();
        let on_the_way = self
            .observation(now)
            .iter()
            .filter(|o| o.state == SlaveState::Pending && !tracked.contains(o.id.as_str()))
            .count();
        u32::try_from(slaves + on_the_way).unwrap_or(u32::MAX)
    }

    /// The operator says the cause is fixed (`burst-agent resume`, a reload): launches go
    /// again. Returns whether the brake was on.
    pub fn resume(&mut self, by: &str, now: Timestamp) -> bool {
        // The operator fixed something: a launch EC2 refused may go again at once.
        self.refused = None;
        match self.brake.release() {
            Some(t) => {
                tracing::info!(by, cause = %t.cause,
                    "the brake on launches is released ({by}); the next decision may scale out");
                if !self.cfg.agent.dry_run {
                    self.save_state(now, &mut Report::default());
                }
                true
            }
            None => false,
        }
    }

    /// Slaves with a hook under way.
    pub(super) fn running_hooks(&self) -> BTreeSet<String> {
        self.slaves
            .keys()
            .filter(|id| self.hooks.has(id))
            .cloned()
            .collect()
    }

    /// Takes the lifecycle's next state and carries out what needs no cloud call (hooks, gone
    /// slaves); returns the cloud calls.
    pub(super) fn carry_out(
        &mut self,
        plan: lifecycle::Plan,
        now: Timestamp,
        report: &mut Report,
    ) -> Vec<lifecycle::Action> {
        self.slaves = plan.slaves;
        report.adopted.extend(plan.adopted);
        report.in_service.extend(plan.in_service);
        for e in plan.errors {
            self.error(now, report, e);
        }
        let mut calls = Vec::new();
        // The warm pool's ledger changes this pass: written once, after them all.
        let mut pool_changed = false;
        for a in plan.actions {
            match a {
                lifecycle::Action::StartHook { id, kind } => {
                    let hook = match kind {
                        HookKind::PreRegister => Some(self.cfg.hooks.pre_register.clone()),
                        HookKind::ContentSync => Some(self.cfg.hooks.content_sync().clone()),
                        HookKind::ContentCheck => self.cfg.hooks.content_check.clone(),
                        HookKind::PreDeregister => self.cfg.hooks.pre_deregister.clone(),
                        HookKind::PostTerminate => self.cfg.hooks.post_terminate.clone(),
                    };
                    if let Some(hook) = hook {
                        self.spawn_hook(&id, kind, hook);
                    }
                }
                lifecycle::Action::AbortHook(id) => self.hooks.abort(&id),
                lifecycle::Action::Unstarted(id) => {
                    // Still stopped long after its StartInstances (whose answer was lost): it
                    // never started, so its start is withdrawn; it is back in the pool.
                    let prefix = restart_prefix(&id);
                    let keys: Vec<String> = self
                        .ledger
                        .entries()
                        .iter()
                        .filter(|e| e.key.starts_with(&prefix) && e.ended_at.is_none())
                        .map(|e| e.key.clone())
                        .collect();
                    for k in keys {
                        let _ = self.ledger.withdraw_restart(&k);
                    }
                    tracing::warn!(instance_id = %id,
                        "warm slave {id} did not start; back in the pool, its start withdrawn");
                    pool_changed = true;
                }
                lifecycle::Action::Parked(id) => {
                    // Stopped: it runs no more, so its run ends (started again today it costs
                    // nothing more; on a later day, one unit then).
                    let _ = self.ledger.record_ended(&id, now);
                    tracing::info!(instance_id = %id, pool = self.pooled(),
                        "slave {id} stopped into the warm pool");
                    pool_changed = true;
                }
                lifecycle::Action::Gone(id) => {
                    let _ = self.ledger.record_ended(&id, now);
                    self.hooks.abort(&id);
                    // Its address may come back with another slave and another host key.
                    hooks::forget_host_key(&self.cfg.agent.state_dir, &id);
                }
                call => calls.push(call),
            }
        }
        if pool_changed {
            self.save_state(now, report);
        }
        calls
    }

    pub(super) async fn act(
        &mut self,
        now: Timestamp,
        report: &mut Report,
        to_register: Vec<String>,
        to_deregister: Vec<String>,
        to_terminate: Vec<String>,
    ) {
        if !to_deregister.is_empty() {
            let (done, errors) = self.batch(Batch::Deregister, &to_deregister).await;
            lifecycle::called(&mut self.slaves, lifecycle::Call::Deregister, &done, now);
            report.deregistered.extend(done);
            for e in errors {
                self.error(now, report, e);
            }
        }
        if !to_register.is_empty() {
            let (done, errors) = self.batch(Batch::Register, &to_register).await;
            lifecycle::called(&mut self.slaves, lifecycle::Call::Register, &done, now);
            report.registered.extend(done);
            for e in errors {
                self.error(now, report, e);
            }
        }
        if !to_terminate.is_empty() {
            let (done, errors) = self.terminate(&to_terminate).await;
            for e in errors {
                self.error(now, report, e);
            }
            if !done.is_empty() {
                lifecycle::called(&mut self.slaves, lifecycle::Call::Terminate, &done, now);
                for id in &done {
                    let _ = self.ledger.record_ended(id, now);
                    self.hooks.abort(id);
                    if let Some(hook) = self.cfg.hooks.post_terminate.clone() {
                        if let Some(s) = self.slaves.get(id) {
                            let vars = self.vars(s);
                            self.hooks
                                .start_detached(id, HookKind::PostTerminate, &hook, vars);
                        }
                    }
                }
                report.terminated.extend(done);
                self.save_state(now, report);
            }
        }
    }

    /// Slaves stopped or stopping in the warm pool.
    pub fn pooled(&self) -> u32 {
        to_u32(
            self.slaves
                .values()
                .filter(|s| matches!(s.phase, Phase::Stopping | Phase::Stopped))
                .count(),
        )
    }

    /// Room in the warm pool the policy may count on when it releases slaves: none while EC2
    /// refuses this agent's stops or starts for good (no permission, say: the slaves would be
    /// terminated, or never come back), and no more than the in-service slaves that can stop.
    pub fn warm_room(&self) -> u32 {
        if self.pool_refused.is_some() {
            return 0;
        }
        let stoppable = self
            .slaves
            .values()
            .filter(|s| s.phase == Phase::InService && s.ebs_root)
            .count();
        // Slaves already released and still draining take the room they will stop into.
        let bound = self
            .slaves
            .values()
            .filter(|s| matches!(s.phase, Phase::Releasing | Phase::Draining) && s.ebs_root)
            .count();
        self.cfg
            .fleet
            .warm_pool
            .saturating_sub(self.pooled())
            .saturating_sub(to_u32(bound))
            .min(to_u32(stoppable))
    }

    /// Why EC2 refuses this agent's stops or starts for good, if it does (for `status`).
    pub fn pool_refused(&self) -> Option<&str> {
        self.pool_refused.as_deref()
    }

    /// Drained slaves into the warm pool: the `burst-agent:pooled-since` tag first (a stopped
    /// slave without it is one someone else stopped, and is terminated), then StopInstances.
    /// Returns the ones EC2 refused to stop for good (an instance-store root, a spot instance,
    /// no permission), for termination; throttling or a call whose outcome is unknown leaves
    /// them Draining, to be stopped again next step (both calls are idempotent; a stop that did
    /// go through is seen as such: `lifecycle::reconcile`).
    pub(super) async fn stop(
        &mut self,
        now: Timestamp,
        report: &mut Report,
        ids: &[String],
    ) -> Vec<String> {
        if ids.is_empty() {
            return Vec::new();
        }
        if let Err(e) = self
            .cloud
            .tag(ids, cloud::TAG_POOLED_SINCE, &now.to_string())
            .await
        {
            self.error(
                now,
                report,
                format!("could not tag {ids:?} for the warm pool: {e}"),
            );
            return Vec::new();
        }
        let mut refused = Vec::new();
        let mut done = Vec::new();
        match self.cloud.stop(ids).await {
            Ok(()) => done = ids.to_vec(),
            Err(e) if refuses_for_good(&e) => {
                // One instance that cannot stop fails the batch: one by one.
                for id in ids {
                    match self.cloud.stop(std::slice::from_ref(id)).await {
                        Ok(()) => done.push(id.clone()),
                        Err(e) if refuses_for_good(&e) => {
                            tracing::warn!(instance_id = %id, code = %e.code,
                                "EC2 will not stop {id} ({e}); terminating it instead");
                            if e.is("UnauthorizedOperation") {
                                let why = format!(
                                    "the warm pool is not used: StopInstances refused ({e}): \
                                     grant ec2:StopInstances, ec2:StartInstances and \
                                     ec2:DeleteTags (docs/aws.md) or set fleet.warm_pool = 0"
                                );
                                self.error(now, report, why.clone());
                                self.pool_refused = Some(why);
                            }
                            refused.push(id.clone());
                        }
                        Err(e) => self.error(now, report, format!("stopping {id}: {e}")),
                    }
                }
            }
            Err(e) => self.error(now, report, format!("stopping {ids:?}: {e}")),
        }
        if !done.is_empty() && refused.is_empty() {
            self.pool_refused = None;
        }
        lifecycle::called(&mut self.slaves, lifecycle::Call::Stop, &done, now);
        report.stopped.extend(done);
        refused
    }

    /// Starts up to `count` slaves of the warm pool: the ones today's cap counts already first
    /// (free), then the most recently stopped (the freshest content). Each start is in the
    /// ledger before StartInstances (a unit, unless free; refused past the cap). The pool's
    /// tags are removed only after the start (the lifecycle removes them from a started slave
    /// until they are gone), so a stopped slave always carries them. A start EC2 refused for
    /// sure (no capacity for the type, wrong state, no permission) is withdrawn and the slave
    /// stays in the pool; anything else (throttling, no answer) stays counted, the slave
    /// Pending, and EC2's listing tells: still stopped after a while, it goes back to the pool
    /// and the start is withdrawn. Returns how many started (or may have).
    pub(super) async fn start_warm(
        &mut self,
        count: u32,
        now: Timestamp,
        report: &mut Report,
    ) -> u32 {
        if self.pool_refused.is_some() {
            return 0;
        }
        let picked = self.pick_warm(count, now);
        if picked.is_empty() {
            return 0;
        }
        // Write-ahead, as for a launch.
        if !self.save_state(now, report) {
            self.withdraw_restarts(&picked);
            return 0;
        }
        let picked = self.count_starts(picked, now).await;
        if picked.is_empty() {
            self.save_state(now, report);
            return 0;
        }
        let ids: Vec<String> = picked.iter().map(|(id, _, _)| id.clone()).collect();
        if let ControlFlow::Break(n) = self.start_picked(&picked, &ids, now, report).await {
            return n;
        }
        let free = picked.iter().filter(|p| p.2).count();
        tracing::info!(instances = ?ids, free,
            "started {} warm slave(s) ({free} at no new cap unit); burst cap {}",
            ids.len(), self.ledger.status(now));
        self.events.push(Event::new(
            EventKind::ScaleOut,
            None,
            format!(
                "started {} warm slave(s) {ids:?} from the pool; cap {}",
                ids.len(),
                self.ledger.status(now)
            ),
        ));
        report.started.extend(ids.iter().cloned());
        self.untag_started(&ids, now, report).await;
        to_u32(ids.len())
    }

    /// Picks up to `count` warm slaves and records each start in the ledger, until it refuses
    /// one.
    fn pick_warm(&mut self, count: u32, now: Timestamp) -> Vec<Picked> {
        let pool =
            lifecycle::warm_pick(&self.slaves, |id| self.ledger.counts_today(id, now), count);
        let mut picked: Vec<Picked> = Vec::new();
        for id in pool {
            let key = restart_key(&id, now);
            match self.ledger.record_restart(&key, &id, now) {
                Ok(free) => picked.push((id, key, free)),
                Err(e) => {
                    tracing::info!(instance_id = %id, "not starting warm slave {id}: {e}");
                    break;
                }
            }
        }
        picked
    }

    /// Takes the picked starts back out of the ledger.
    fn withdraw_restarts(&mut self, picked: &[Picked]) {
        for (_, key, _) in picked {
            if let Err(e) = self.ledger.withdraw_restart(key) {
                tracing::warn!(key, "cap ledger: {e}");
            }
        }
    }

    /// Every start is counted in the shared table first (fail closed): the table, not this
    /// state directory, says whether the instance counts today already (free) or costs a
    /// unit; a later holder with a stale state trusts the table's count. Returns the starts
    /// it counted; the others are withdrawn from the ledger.
    async fn count_starts(&mut self, picked: Vec<Picked>, now: Timestamp) -> Vec<Picked> {
        let mut counted = Vec::new();
        for (id, key, free) in picked {
            match Box::pin(self.count_start(&id, now)).await {
                Ok(()) => counted.push((id, key, free)),
                Err(why) => {
                    tracing::warn!(instance_id = %id, "not starting warm slave {id}: {why}");
                    if let Err(e) = self.ledger.withdraw_restart(&key) {
                        tracing::warn!(key, "cap ledger: {e}");
                    }
                }
            }
        }
        counted
    }

    /// StartInstances for the picked slaves `ids`. `Break(n)`: [`Actuator::start_warm`]
    /// returns `n` (EC2 refused for sure: 0; an unknown outcome: all of them, counted).
    async fn start_picked(
        &mut self,
        picked: &[Picked],
        ids: &[String],
        now: Timestamp,
        report: &mut Report,
    ) -> ControlFlow<u32> {
        match self.cloud.start(ids).await {
            Err(e) if refuses_for_good(&e) => {
                // Nothing started: still in the pool, as it was, tags and age included.
                self.withdraw_restarts(picked);
                if e.is("UnauthorizedOperation") {
                    self.pool_refused = Some(format!(
                        "the warm pool is not used: StartInstances refused ({e}): grant \
                         ec2:StartInstances and ec2:DeleteTags (docs/aws.md) or set \
                         fleet.warm_pool = 0"
                    ));
                }
                self.save_state(now, report);
                self.error(
                    now,
                    report,
                    format!("EC2 would not start warm slaves {ids:?}: {e}; launching instead"),
                );
                ControlFlow::Break(0)
            }
            res => {
                lifecycle::called(&mut self.slaves, lifecycle::Call::Start, ids, now);
                if let Err(e) = res {
                    // May have started: counted, Pending; EC2's next listings tell.
                    self.error(now, report, format!("starting warm slaves {ids:?}: {e}"));
                    return ControlFlow::Break(to_u32(ids.len()));
                }
                ControlFlow::Continue(())
            }
        }
    }

    /// Removes the pool's tags from started slaves (the lifecycle asks again until they are
    /// gone: a restart of the agent must not take a running slave for a pooled or draining one).
    pub(super) async fn untag_started(
        &mut self,
        ids: &[String],
        now: Timestamp,
        report: &mut Report,
    ) {
        let tags = [cloud::TAG_POOLED_SINCE, TAG_DRAINING_SINCE];
        if let Err(e) = self.cloud.untag(ids, &tags).await {
            let msg =
                format!("could not remove the pool's tags from {ids:?} (again next step): {e}");
            self.error(now, report, msg);
        }
    }

    /// One ELB call for all of `ids`; when the ELB refuses the batch (one instance it will not
    /// take poisons the whole call), one call per instance, so the others go ahead. Returns the
    /// ids the ELB accepted and the errors, for the log.
    pub(super) async fn batch(&self, op: Batch, ids: &[String]) -> (Vec<String>, Vec<String>) {
        let call = |ids: Vec<String>| {
            let cloud = self.cloud.clone();
            async move {
                match op {
                    Batch::Register => cloud.register(&ids).await,
                    Batch::Deregister => cloud.deregister(&ids).await,
                }
            }
        };
        let what = match op {
            Batch::Register => "registering",
            Batch::Deregister => "deregistering",
        };
        match call(ids.to_vec()).await {
            Ok(()) => (ids.to_vec(), Vec::new()),
            Err(e) if e.not_applied && ids.len() > 1 => {
                let (mut done, mut errors) = (Vec::new(), Vec::new());
                for id in ids {
                    match call(vec![id.clone()]).await {
                        Ok(()) => done.push(id.clone()),
                        Err(e) => errors.push(format!("{what} {id} (ELB): {e}")),
                    }
                }
                (done, errors)
            }
            Err(e) => (Vec::new(), vec![format!("{what} {ids:?} (ELB): {e}")]),
        }
    }

    /// TerminateInstances for all at once; if EC2 refuses the batch (one id it does not know
    /// fails the whole call), one by one so the others are not left running. Returns the ids
    /// EC2 accepted and the errors.
    pub(super) async fn terminate(&self, ids: &[String]) -> (Vec<String>, Vec<String>) {
        match self.cloud.terminate(ids).await {
            Ok(()) => (ids.to_vec(), Vec::new()),
            Err(e) if e.not_applied && ids.len() > 1 => {
                let (mut done, mut errors) = (Vec::new(), Vec::new());
                for id in ids {
                    match self.cloud.terminate(std::slice::from_ref(id)).await {
                        Ok(()) => done.push(id.clone()),
                        Err(e) => errors.push(format!("terminating {id}: {e}")),
                    }
                }
                (done, errors)
            }
            Err(e) => (Vec::new(), vec![format!("terminating {ids:?}: {e}")]),
        }
    }

    /// Finished hooks, by slave: their kind and result (post_terminate ones are only logged).
    pub(super) fn collect_hooks(&mut self) -> BTreeMap<String, (HookKind, Result<(), String>)> {
        let mut out = BTreeMap::new();
        for f in self.hooks.finished() {
            self.hook_seconds.push((f.kind.name(), f.secs));
            if let Err(e) = &f.result {
                self.hook_failures.push(f.kind.name());
                if f.kind == HookKind::PreRegister {
                    self.events.push(Event::new(
                        EventKind::SyncFailed,
                        Some(&f.id),
                        format!("pre_register (content sync) failed; never registered: {e}"),
                    ));
                }
            }
            if f.detached {
                if let Err(e) = &f.result {
                    tracing::warn!(instance_id = %f.id, "{} hook failed: {e}", f.kind.name());
                }
                continue;
            }
            out.insert(f.id, (f.kind, f.result));
        }
        out
    }

    /// Waits up to `deadline` for hooks under way to finish (shutdown); returns how many were
    /// still running and were abandoned (their process groups die with the tasks).
    pub async fn wait_for_hooks(&mut self, deadline: std::time::Duration) -> usize {
        self.hooks.drain(deadline).await
    }
}
