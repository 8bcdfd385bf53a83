//! Carrying out a decision: a scale-out launches (the warm pool first, every attempt in the
//! ledger and journal before RunInstances), a scale-in tags its victims and starts their
//! release. The executor never second-guesses the policy's count. The core makes the choices
//! (`lifecycle::launch`: the gate, each call's placement, what an answer means; `warm_pick`,
//! `releasable`); what stays here:
//!
//! - the write-ahead order: each attempt recorded in the ledger (stopping where it refuses one)
//!   and the intent journaled in one `state.json` write, then its units reserved in the ledger
//!   table, before any call; a failed write or reservation takes the launch back and nothing
//!   is sent;
//! - sorting the edge's `AwsError` into the core's `launch::Failure`: an attempt is withdrawn
//!   only when EC2 certainly launched nothing (`not_applied`, or fewer instances than asked);
//!   an ambiguous one stays counted with its intent open (found later by its tag, or settled
//!   after `SETTLE_SECS`), and is never sent again;
//! - the back-offs' clocks (no capacity anywhere, a launch refused for good), cleared by a
//!   launch that gave instances, and the events and log lines of each outcome.

use super::*;
use lifecycle::launch::{AfterFailure, BackOff, LaunchGate};

impl<C: Cloud, H: HookRunner> Actuator<C, H> {
    /// Starts carrying out a decision. Scale-out launches at once (after the ledger and journal
    /// are on disk); scale-in tags the victims and starts their release. The rest happens in
    /// [`Actuator::step`].
    pub async fn apply(&mut self, decision: &Decision, now: Timestamp) -> Report {
        let mut report = Report::default();
        match decision {
            Decision::Hold { .. } => {}
            Decision::ScaleOut { count, .. } if self.cfg.agent.dry_run => {
                tracing::info!(count, "dry run: would launch {count} slave(s)");
            }
            Decision::ScaleIn { instances, .. } if self.cfg.agent.dry_run => {
                tracing::info!(instances = ?instances, "dry run: would release {}", instances.join(", "));
            }
            Decision::ScaleOut { count, .. } => self.launch(*count, now, &mut report).await,
            Decision::ScaleIn { instances, .. } => self.release(instances, now, &mut report).await,
        }
        report
    }

    pub(super) async fn launch(&mut self, count: u32, now: Timestamp, report: &mut Report) {
        // The warm pool first: faster than a launch, and free when it ran today already.
        let started = self.start_warm(count, now, report).await;
        let count = count.saturating_sub(started);
        if count == 0 {
            return;
        }
        let Some((count, trial)) = self.launch_gate(count, now, report) else {
            return;
        };
        let id = (self.intent_ids)();
        let keys = self.record_attempts(&id, count, now, report);
        if keys.is_empty() {
            return;
        }
        let intent = Intent::started(&id, keys.clone(), now);
        self.journal.intents.push(intent.clone());
        // Write-ahead: no RunInstances unless the attempt is durably counted and journaled.
        if !self.save_state(now, report) {
            self.withdraw_launch(&id, &keys);
            return;
        }
        let n = u32::try_from(keys.len()).unwrap_or(u32::MAX);
        // The shared table next (fail closed): no RunInstances unless its units are reserved
        // there under this agent's lease.
        if let Err(why) = Box::pin(self.reserve(&id, n, now)).await {
            self.withdraw_launch(&id, &keys);
            self.save_state(now, report);
            report.refused += n;
            tracing::warn!(intent = %id, asked = n, "launches are held: {why}");
            self.events.push(Event::new(
                EventKind::LedgerBlocked,
                None,
                format!("launch of {n} held: {why}"),
            ));
            return;
        }
        if trial {
            self.brake.trial_started(&id, now);
            tracing::warn!(intent = %id,
                "one trial launch while content sync is broken: if its sync fails the same way, \
                 the next trial waits twice as long");
        }
        let t = std::time::Instant::now();
        let Some(got) = self.call_run_instances(&intent, n, now, report).await else {
            return;
        };
        self.finish_launch(&intent, got, n, t, now, report).await;
    }

    /// The launch gate (content source, cap read-back, EC2's refusal, the sync brake): how
    /// many of `count` may launch and whether as the brake's trial, or `None` when launches are
    /// held. What it keeps back is refused in `report`.
    fn launch_gate(&self, count: u32, now: Timestamp, report: &mut Report) -> Option<(u32, bool)> {
        let refused = self.launch_refused(now);
        let gate = lifecycle::launch::gate(
            count,
            self.sources.pre_register.as_deref(),
            self.cap_unverified.as_deref(),
            refused.as_ref().map(|r| (r.cause.as_str(), r.until)),
            self.brake_gate(now),
            self.brake.tripped.as_ref().map(|t| t.cause.as_str()),
        );
        match gate {
            LaunchGate::Held { why, .. } => {
                report.refused = count;
                tracing::warn!(asked = count, "launches are held: {why}");
                report.held = Some(format!("launches are held: {why}"));
                None
            }
            LaunchGate::Go { count: n, trial } => {
                if n < count {
                    // What the brake keeps back (two at a time unproven, one trial) is refused.
                    report.refused = count - n;
                    let why = format!(
                        "launches limited by the sync brake to {n} of {count}: {}",
                        if trial {
                            "one trial launch"
                        } else {
                            "no sync proven yet: at most two paid slaves sync at once"
                        }
                    );
                    tracing::info!(asked = count, allowed = n, "{why}");
                    report.held = Some(why);
                }
                Some((n, trial))
            }
        }
    }

    /// Records each of the `count` attempts of intent `id` in the cap ledger, until it refuses
    /// one; returns the keys it took.
    fn record_attempts(
        &mut self,
        id: &str,
        count: u32,
        now: Timestamp,
        report: &mut Report,
    ) -> Vec<String> {
        let mut keys = Vec::new();
        for n in 1..=count {
            let key = format!("{id}#{n}");
            match self.ledger.record_attempt(&key, now) {
                Ok(()) => keys.push(key),
                Err(e) => {
                    report.refused += count - (n - 1);
                    tracing::error!(
                        asked = count,
                        allowed = keys.len(),
                        "the cap ledger refused a launch the policy asked for: {e}"
                    );
                    break;
                }
            }
        }
        keys
    }

    /// Takes back a launch that did not go: its attempts from the ledger, its intent from the
    /// journal.
    fn withdraw_launch(&mut self, id: &str, keys: &[String]) {
        for k in keys {
            let _ = self.ledger.withdraw(k);
        }
        self.journal.intents.retain(|i| i.id != id);
    }

    /// Each call as the core's launch plan says (lifecycle/launch.rs: placements, the
    /// shortfall call, back-offs); moto launches only MinCount, so tests see two calls.
    /// Returns what EC2 launched, or `None` when the launch ended here (refused for good, or
    /// its outcome unknown).
    async fn call_run_instances(
        &mut self,
        intent: &Intent,
        n: u32,
        now: Timestamp,
        report: &mut Report,
    ) -> Option<Vec<InstanceInfo>> {
        let id = intent.id.as_str();
        let mut got: Vec<InstanceInfo> = Vec::new();
        let mut plan = lifecycle::launch::Launch::new(
            id,
            n,
            &self.cfg.fleet.subnet_ids,
            &self.cfg.fleet.fallback_instance_types,
        );
        while let Some(call) = plan.next_call() {
            let req = LaunchRequest {
                intent: id.to_string(),
                owner: self.owner().to_string(),
                client_token: intent.client_token(call.call),
                min: call.min,
                max: call.max,
                launched_at: now,
                subnet: call.subnet.clone(),
                instance_type: call.instance_type.clone(),
            };
            let e = match self.cloud.launch(&req).await {
                Ok(more) => {
                    let count = u32::try_from(more.len()).unwrap_or(u32::MAX);
                    got.extend(more);
                    if plan.launched(count) {
                        break;
                    }
                    continue;
                }
                Err(e) => e,
            };
            let failure = lifecycle::launch::Failure {
                capacity: e.is_capacity(),
                not_applied: e.not_applied,
                retryable: e.retryable,
            };
            match plan.failed(failure) {
                AfterFailure::Fewer => {
                    tracing::warn!(intent = %id, launched = got.len(), asked = n,
                        "EC2 launched fewer slaves than asked: {e}");
                    break;
                }
                AfterFailure::NextPlacement {
                    here,
                    next_subnet,
                    next_type,
                } => self.next_placement(id, &e, here, next_subnet, next_type),
                AfterFailure::Failed {
                    back_off,
                    no_capacity_elsewhere,
                } => {
                    self.launch_failed(intent, &e, back_off, &no_capacity_elsewhere, now, report)
                        .await;
                    return None;
                }
                AfterFailure::Unknown { open_call } => {
                    self.leave_open(intent, open_call, &got, now, report).await;
                    let msg = format!("launch {id} of {n}: {e}; will resolve from tags");
                    self.error(now, report, msg);
                    return None;
                }
            }
        }
        Some(got)
    }

    /// No capacity for this placement: said (a line and an event); the plan's next call asks
    /// the next one.
    fn next_placement(
        &mut self,
        id: &str,
        e: &crate::aws::AwsError,
        here: String,
        next_subnet: Option<String>,
        next_type: Option<String>,
    ) {
        tracing::warn!(intent = %id, code = %e.code, next_subnet = ?next_subnet,
            next_type = ?next_type, "no EC2 capacity for {here}; trying the next placement");
        self.events.push(Event::new(
            EventKind::CapacityFallback,
            None,
            format!(
                "no EC2 capacity for {here} ({}); trying {} in {}",
                e.code,
                next_type.as_deref().unwrap_or("the configured type"),
                next_subnet.as_deref().unwrap_or("EC2's choice of subnet")
            ),
        ));
    }

    /// EC2 refused the launch for good: nothing was launched, so nothing is charged to the cap.
    async fn launch_failed(
        &mut self,
        intent: &Intent,
        e: &crate::aws::AwsError,
        back_off: Option<BackOff>,
        no_capacity_elsewhere: &[String],
        now: Timestamp,
        report: &mut Report,
    ) {
        match back_off {
            Some(BackOff::NoCapacity) => self.back_off(now),
            Some(BackOff::Refused) => self.refuse_back_off(now, e),
            None => {}
        }
        let mut why = e.to_string();
        if !no_capacity_elsewhere.is_empty() {
            why = format!(
                "{why} (no capacity for {} either)",
                no_capacity_elsewhere.join(", ")
            );
        }
        // Refused before launch: the table's units go back too.
        Box::pin(self.refund(&intent.id)).await;
        self.fail_intent(intent, &why, now, report);
    }

    /// The call may or may not have launched: leave the intent open (its attempts stay charged
    /// and count as on the way); the next steps find its instances by tag, or settle it as not
    /// launched once EC2 had time to list them. What earlier calls of this launch gave is
    /// tracked now.
    async fn leave_open(
        &mut self,
        intent: &Intent,
        open_call: u32,
        got: &[InstanceInfo],
        now: Timestamp,
        report: &mut Report,
    ) {
        if let Some(j) = self.journal.get_mut(&intent.id) {
            j.open_call = open_call;
            j.last_sent = Some(now);
        }
        let ids: Vec<String> = got.iter().map(|i| i.id.clone()).collect();
        for i in got {
            self.slaves
                .insert(i.id.clone(), slave_from(i, Phase::Pending, now, now));
        }
        report.launched.extend(ids.iter().cloned());
        Box::pin(self.record_launched(intent, got, now)).await;
        self.bind_free(intent, &ids);
        self.save_state(now, report);
    }

    /// What EC2 launched is tracked, recorded in the table, and its intent settled.
    async fn finish_launch(
        &mut self,
        intent: &Intent,
        got: Vec<InstanceInfo>,
        n: u32,
        t: std::time::Instant,
        now: Timestamp,
        report: &mut Report,
    ) {
        let id = intent.id.as_str();
        let ids: Vec<String> = got.iter().map(|i| i.id.clone()).collect();
        if !ids.is_empty() {
            self.no_capacity = None;
            self.refused = None;
        }
        tracing::info!(intent = %id, asked = n, launched = ids.len(), instances = ?ids,
            secs = t.elapsed().as_secs_f64(), "launched {} slave(s)", ids.len());
        if !ids.is_empty() {
            self.events.push(Event::new(
                EventKind::ScaleOut,
                None,
                format!(
                    "launched {} of {n} slave(s) {ids:?}; cap {}",
                    ids.len(),
                    self.ledger.status(now)
                ),
            ));
        }
        for i in &got {
            self.slaves
                .insert(i.id.clone(), slave_from(i, Phase::Pending, now, now));
        }
        report.launched.extend(ids.iter().cloned());
        Box::pin(self.record_launched(intent, &got, now)).await;
        self.finish_intent(intent, &ids, now, report);
    }

    pub(super) async fn release(
        &mut self,
        victims: &[String],
        now: Timestamp,
        report: &mut Report,
    ) {
        let (ids, left) = lifecycle::releasable(&self.slaves, victims);
        for id in &left {
            tracing::warn!(instance_id = %id, "not releasing: not an in-service slave");
        }
        if ids.is_empty() {
            return;
        }
        // The record first, then the tag: after a crash, the record tells adoption this slave
        // is on its way out and must not be registered again (the tag only mirrors it, for
        // people; one without a record is ignored). No record on disk, no release.
        for id in &ids {
            self.releasing.insert(id.clone(), now);
        }
        if !self.cfg.agent.dry_run && !self.save_state(now, report) {
            for id in &ids {
                self.releasing.remove(id);
            }
            return;
        }
        if let Err(e) = self
            .cloud
            .tag(&ids, TAG_DRAINING_SINCE, &now.to_string())
            .await
        {
            self.error(
                now,
                report,
                format!("could not tag {ids:?} for release: {e}"),
            );
            return;
        }
        self.events.push(Event::new(
            EventKind::ScaleIn,
            None,
            format!("releasing {} slave(s) {ids:?}", ids.len()),
        ));
        lifecycle::called(&mut self.slaves, lifecycle::Call::Release, &ids, now);
        for id in &ids {
            if let Some(hook) = self.cfg.hooks.pre_deregister.clone() {
                self.spawn_hook(id, HookKind::PreDeregister, hook);
            }
        }
    }
}
