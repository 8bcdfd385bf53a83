//! One reconciler tick on the master: observe (the actuator's step, the fleet's metrics read
//! back, AWS's own evidence), decide (the pure policy), act (the actuator), then publish the
//! agent's own numbers, the status snapshot and the events.

use super::*;

impl Master<'_> {
    pub(super) async fn run(mut self) -> Result<(), DaemonError> {
        let actuator = match &self.aws {
            Some(aws) => {
                let cloud = AwsCloud::new(
                    aws.clone(),
                    &self.cfg.agent.group,
                    &self.cfg.elb.name,
                    &self.cfg.fleet,
                )
                .map_err(|e| DaemonError::Start(e.to_string()))?;
                // With the shared table, a live master acts only inside the site's lease
                // (lease.rs); a dry run changes nothing and never contends for it.
                let table_on = !self.cfg.agent.dry_run && !self.cfg.ledger.table.is_empty();
                let end = if table_on {
                    LeaseEnd::default()
                } else {
                    LeaseEnd::unbounded()
                };
                let fenced = Fenced::new(cloud.clone(), end.clone());
                let mut a = Actuator::open(fenced, &self.cfg, Timestamp::now())?;
                a.set_own_instance(self.own_ec2_id.clone());
                if table_on {
                    let table =
                        Table::new(aws.clone(), &self.cfg.ledger.table, &self.cfg.agent.group)
                            .with_lease_secs(self.cfg.ledger.lease_duration.get().as_secs());
                    a.set_guarantee(Arc::new(table.clone()), end.clone());
                    let me = lease::holder_id(self.own_ec2_id.as_deref(), &self.instance_id);
                    self.site = Some(site::SiteFeed::spawn(
                        table.clone(),
                        me.clone(),
                        end.clone(),
                    ));
                    tracing::info!(holder = %me, table = %self.cfg.ledger.table,
                        "the site's guarantee is in the ledger table; contending for its lease");
                    let shared = Arc::new(Mutex::new(lease::LeaseShared {
                        lease: crate::lease::Lease::new(me, lease::timing(&self.cfg)),
                        error: None,
                    }));
                    self.lease = Some(shared.clone());
                    let (release, released) = tokio::sync::oneshot::channel();
                    let task = tokio::spawn(lease::lease_loop(
                        table,
                        shared,
                        end,
                        cloud,
                        self.own_ec2_id.clone(),
                        self.state_dir.clone(),
                        released,
                    ));
                    self.lease_task = Some((task, release));
                }
                Some(a)
            }
            None => None,
        };
        // The agent's clock goes on from the state's mark after a restart in this boot.
        self.clock = crate::clock::AgentClock::resume(
            actuator.as_ref().and_then(|a| a.clock_mark()),
            &self.boot,
            Timestamp::now(),
            boottime(),
        );
        let mut l = self.start(actuator);
        let mut watchdog_usec = 0u64;
        if sd_notify::watchdog_enabled(false, &mut watchdog_usec)
            && Duration::from_micros(watchdog_usec / 2) < self.cfg.policy.evaluation_interval.get()
        {
            tracing::warn!(watchdog_secs = watchdog_usec / 1_000_000,
                evaluation_interval = %self.cfg.policy.evaluation_interval,
                "the unit's WatchdogSec is less than twice policy.evaluation_interval: systemd \
                 may restart a healthy agent; raise WatchdogSec or shorten the interval");
        }
        loop {
            let now = self.read_clock(&mut l.tick);
            if let Some(a) = l.actuator.as_mut() {
                a.set_clock_mark(self.clock.mark(&self.boot));
                a.set_clock_skew(now.as_second() - Timestamp::now().as_second(), now);
            }
            self.tick(&mut l, now).await;
            let wait = self.cfg.policy.evaluation_interval.get();
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.shutdown_rx.recv() => break,
            }
        }
        self.stop(&mut l).await;
        Ok(())
    }

    pub(super) fn start<C: Cloud, H: HookRunner>(
        &self,
        actuator: Option<Actuator<C, H>>,
    ) -> Loop<C, H> {
        let tick = Tick {
            // With an actuator, it keeps the policy's memory (state.json: cooldowns and the
            // last scaling survive a restart); this one is a local dry run's.
            local_history: History::new(),
            adopted: false,
            last_read: None,
            fleet_metrics: BTreeMap::new(),
            last_decision: None,
            last_reasons: Vec::new(),
            news: Vec::new(),
            evidence: policy::Evidence::default(),
            silent: BTreeSet::new(),
            standby: None,
            standby_for: None,
            errors: Vec::new(),
            api_errors_reported: 0,
            state: "starting",
            observed: false,
            bridge: super::bridge::Applier::new(),
            manual: None,
            manual_error: None,
        };
        Loop {
            actuator,
            stored_ledger: local_ledger(&self.cfg, Timestamp::now()),
            tick,
            ready_sent: false,
            events: Events::load(&self.state_dir),
        }
    }

    /// One tick at `now`: a new config, observe (adopt or step, read the fleet back), decide,
    /// act only on a fleet this tick observed, publish, status, watchdog. Returns the decision.
    pub(super) async fn tick<C: Cloud, H: HookRunner>(
        &mut self,
        l: &mut Loop<C, H>,
        now: Timestamp,
    ) -> Decision {
        self.take_new_config(l, now);
        self.note_standby(&mut l.tick);
        self.read_manual(&mut l.tick, now);
        // A switch that finished since the last tick, before this tick's sample is read.
        self.reap_bridge(&mut l.tick, now).await;
        if let Some(a) = l.actuator.as_mut() {
            if l.tick.standby.is_some() {
                // No fleet-changing call, no hook: adopt afresh (the table first) once it holds.
                l.tick.adopted = false;
                l.tick.observed = false;
                a.abort_hooks();
            } else {
                self.actuate_observe(a, &mut l.tick, now).await;
            }
        }
        let ledger = l.ledger();
        let decision = self.decide(&mut l.actuator, &ledger, &mut l.tick, now);
        let observed = l.tick.adopted && l.tick.observed;
        carry_out(l, &decision, observed, now).await;
        let after = l.ledger().status(now);
        self.record_site(l, &decision, &after, observed);
        self.apply_bridge(&mut l.tick, &decision, now);
        self.tell_events(l, &after, now);
        let own = take_own(&mut l.actuator);
        // A standby never writes the site's numbers (the master's): only its own host's.
        if l.tick.standby.is_none() {
            self.publish_own(&decision, &ledger, &own, &mut l.tick, now);
        }
        self.publish_status(l, &ledger, &decision, now);
        decision
    }

    /// A new config, when a reload sent one: the actuator (or the local dry run's stored
    /// ledger) takes it.
    fn take_new_config<C: Cloud, H: HookRunner>(&mut self, l: &mut Loop<C, H>, now: Timestamp) {
        if self.cfg_rx.has_changed().unwrap_or(false) {
            self.cfg = (**self.cfg_rx.borrow_and_update()).clone();
            match l.actuator.as_mut() {
                Some(a) => a.reconfigure(&self.cfg, now),
                // A local dry run reads the stored ledger under the new [cap].
                None => l.stored_ledger = local_ledger(&self.cfg, now),
            }
        }
    }

    /// The level an operator set by hand, if any: a file that cannot be read is said (once)
    /// and counts as none.
    fn read_manual(&self, tick: &mut Tick, now: Timestamp) {
        match super::bridge::read_manual(&self.state_dir) {
            Ok(m) => {
                // Written with the wall clock's time; the policy reads the agent's clock.
                tick.manual = m.map(|mut m| {
                    let left = m.until.duration_since(self.clock.wall());
                    m.until = now.checked_add(left).unwrap_or(now);
                    m
                });
                tick.manual_error = None;
            }
            Err(e) => {
                if tick.manual_error.as_deref() != Some(e.as_str()) {
                    tracing::warn!("the bridge level set by hand is ignored: {e}");
                    tick.errors
                        .push((now, format!("bridge level set by hand: {e}")));
                }
                tick.manual = None;
                tick.manual_error = Some(e);
            }
        }
    }

    /// The decided bridge level carried out on the master by `hooks.on_bridge`. A standby
    /// (another agent acts for the site) brings its own host back to full service.
    fn apply_bridge(&self, tick: &mut Tick, decision: &Decision, now: Timestamp) {
        let want = match tick.standby {
            Some(_) => 0,
            None => decision.explanation().bridge.level,
        };
        tick.bridge.step(&self.cfg, want, now);
    }

    /// A bridge switch that finished since the last tick: logged; a failure kept and told.
    async fn reap_bridge(&self, tick: &mut Tick, now: Timestamp) {
        use super::bridge::Applied;
        use crate::events::{Event, EventKind};
        match tick.bridge.reap(now).await {
            Some(Applied::Switched { from, to, secs }) => tracing::info!(
                level = to,
                previous = from,
                secs,
                "the master serves at bridge level {to} (hooks.on_bridge)"
            ),
            Some(Applied::Failed { from, to, error }) => {
                tracing::warn!(
                    level = to,
                    previous = from,
                    "hooks.on_bridge failed: {error}; \
                    the master serves at level {from}; tried again next tick"
                );
                let what = format!("hooks.on_bridge (level {from} -> {to}): {error}");
                tick.errors.push((now, what.clone()));
                tick.news
                    .push(Event::new(EventKind::BridgeHookFailed, None, what));
            }
            None => {}
        }
    }

    /// Whether this agent stands by (and for which holder) this tick; a change is said.
    fn note_standby(&self, tick: &mut Tick) {
        let (standby, holder) = match self.standby() {
            Some((line, holder)) => (Some(line), holder),
            None => (None, None),
        };
        // Said when this agent starts or stops acting, and when the holder it stands by for
        // changes (a takeover it did not make).
        if standby.is_some() != tick.standby.is_some() || holder != tick.standby_for {
            let (what, line) = match &standby {
                Some(line) => ("stands by", line.clone()),
                None => (
                    "acts for the site",
                    "this agent holds the site's lease".to_string(),
                ),
            };
            tracing::warn!(lease = %line, "this agent {what}");
            tick.news.push(crate::events::Event::new(
                crate::events::EventKind::LeaseChanged,
                None,
                format!("this agent {what}: {line}"),
            ));
        }
        tick.standby = standby;
        tick.standby_for = holder;
    }

    /// The tick's events (its news and the actuator's) handed to the notifier, with the levels
    /// they are told against.
    fn tell_events<C: Cloud, H: HookRunner>(
        &self,
        l: &mut Loop<C, H>,
        after: &crate::cap::CapStatus,
        now: Timestamp,
    ) {
        let levels = Levels {
            cap_used: after.used,
            cap_limit: after.limit,
            cap_remaining: after.remaining,
            day: after.day.to_string(),
            blocked: l
                .actuator
                .as_ref()
                .and_then(|a| a.needs_repair().map(str::to_string)),
        };
        let mut news = std::mem::take(&mut l.tick.news);
        news.extend(
            l.actuator
                .as_mut()
                .map(|a| a.take_events())
                .unwrap_or_default(),
        );
        for e in l
            .events
            .tick(&self.cfg, self.aws.as_ref(), levels, news, now)
        {
            l.tick.errors.push((now, e));
        }
    }

    /// The agent's state, the status snapshot, systemd's status line and watchdog, and READY
    /// after the first tick.
    fn publish_status<C: Cloud, H: HookRunner>(
        &self,
        l: &mut Loop<C, H>,
        ledger: &CapLedger,
        decision: &Decision,
        now: Timestamp,
    ) {
        l.tick.state = if l.actuator.is_some() && !l.tick.adopted {
            "waiting_for_aws"
        } else {
            "running"
        };
        self.snapshot(&l.actuator, ledger, &l.tick, &l.events, now);
        let line = status_line(&l.actuator, ledger, decision, now);
        notify(&[NotifyState::Watchdog, NotifyState::Status(&line)]);
        if !l.ready_sent {
            notify(&[NotifyState::Ready]);
            l.ready_sent = true;
            tracing::info!("ready: {line}");
        }
    }

    /// Shutdown: the loop only stops between ticks, so no launch or registration is half done;
    /// hooks under way get what is left of the deadline.
    pub(super) async fn stop<C: Cloud, H: HookRunner>(&mut self, l: &mut Loop<C, H>) {
        l.tick.state = "stopping";
        let deadline = self.cfg.agent.shutdown_timeout;
        let mut timed_out = false;
        if let Some(a) = l.actuator.as_mut() {
            a.flush(Timestamp::now());
            let left = a.wait_for_hooks(deadline.get()).await;
            if left > 0 {
                tracing::warn!(left, "shutdown: hooks still running at agent.shutdown_timeout were \
                    killed; their slaves are synced again (never registered unsynced) at the next start");
                timed_out = true;
            }
        }
        l.events.finish(Duration::from_secs(5)).await;
        // The desk's last records, still as the holder.
        if let Some(feed) = self.site.take() {
            let within = self.cfg.aws.call_timeout.get() + Duration::from_secs(5);
            feed.finish(Timestamp::now(), within).await;
        }
        // Only now, with no call under way and the hooks done, is the lease given up.
        if let Some((t, release)) = self.lease_task.take() {
            let _ = release.send(());
            let _ = tokio::time::timeout(self.cfg.aws.call_timeout.get(), t).await;
        }
        l.tick.state = "stopped";
        let ledger = l.ledger();
        self.snapshot(&l.actuator, &ledger, &l.tick, &l.events, Timestamp::now());
        if timed_out {
            tracing::warn!("{}", DaemonError::ShutdownTimedOut(deadline));
        }
    }

    /// Adopts (until it has worked once), steps the actuator, and reads the fleet back.
    pub(super) async fn actuate_observe<C: Cloud, H: HookRunner>(
        &self,
        a: &mut Actuator<C, H>,
        tick: &mut Tick,
        now: Timestamp,
    ) {
        if self.shared.sync_requested.swap(false, Ordering::SeqCst) {
            a.request_sync();
        }
        tick.observed = false;
        if !tick.adopted {
            if self.adopt_fleet(a, tick, now).await.is_break() {
                return;
            }
        } else {
            self.step_actuator(a, tick, now).await;
        }
        // Lost or unreadable state: today's count from CloudWatch's copy before any launch, once
        // adoption has counted what EC2 still lists (the read-back adds only what is missing).
        if a.cap_unverified().is_some() && tick.adopted {
            self.read_cap_back(a, now).await;
        }
        let ids: Vec<String> = a.slaves().map(|s| s.id.clone()).collect();
        let due = tick.last_read.is_none_or(|t| {
            now.as_second() - t.as_second()
                >= self.cfg.metrics.fleet_read_interval.get().as_secs() as i64
        });
        if let (Some(aws), true, false) = (&self.aws, due, ids.is_empty()) {
            self.read_fleet_back(aws, a, tick, &ids, now).await;
        }
        if ids.is_empty() {
            tick.fleet_metrics.clear();
            tick.silent.clear();
        }
        keep_errors(a, tick);
    }

    /// Reads the ledger table, then adopts the fleet. `Break` when either failed: the tick
    /// then observes nothing more.
    async fn adopt_fleet<C: Cloud, H: HookRunner>(
        &self,
        a: &mut Actuator<C, H>,
        tick: &mut Tick,
        now: Timestamp,
    ) -> std::ops::ControlFlow<()> {
        if let Err(e) = Box::pin(a.sync_from_table(now)).await {
            let msg = format!(
                "the ledger table could not be read, and nothing is changed until it is \
                 (a restored or copied state.json must not spend the day again): {e}"
            );
            tracing::error!("{msg}");
            tick.errors.push((now, msg));
            return std::ops::ControlFlow::Break(());
        }
        match a.adopt(now).await {
            Ok(r) => {
                tick.adopted = true;
                tick.observed = true;
                tracing::info!(adopted = ?r.adopted, launched = ?r.launched, cap = %a.ledger().status(now),
                    "adoption done: {} slave(s) of group {:?} re-attached", r.adopted.len(), self.cfg.agent.group);
                std::ops::ControlFlow::Continue(())
            }
            Err(e) => {
                let msg = format!("adoption failed, will retry; no scaling until it works: {e}");
                tracing::error!("{msg}");
                tick.errors.push((now, msg));
                std::ops::ControlFlow::Break(())
            }
        }
    }

    /// Steps the adopted actuator (resumed first if the operator asked), and measures the lead
    /// time of the slaves that came into service.
    async fn step_actuator<C: Cloud, H: HookRunner>(
        &self,
        a: &mut Actuator<C, H>,
        tick: &mut Tick,
        now: Timestamp,
    ) {
        // `burst-agent resume`: the operator fixed what broke the content sync.
        let resume = self.cfg.agent.state_dir.join(RESUME_FILE);
        if std::fs::remove_file(&resume).is_ok() {
            a.resume("burst-agent resume", now);
        }
        match a.step(now).await {
            Ok(r) => {
                tick.observed = true;
                for id in &r.in_service {
                    // Only a slave this agent saw from its launch: an adopted one's
                    // launch-to-InService time says nothing of the lead time.
                    let lead = a
                        .slave(id)
                        .filter(|s| s.first_seen.as_second() - s.launched_at.as_second() <= 60)
                        .map(|s| now.as_second() - s.launched_at.as_second());
                    tracing::info!(instance_id = %id, lead_secs = ?lead,
                        "slave {id} is in service");
                    // The forecast's lead time: launch to InService, measured.
                    if let Some(secs) = lead {
                        a.remember(now, |h| h.record_lead(secs));
                    }
                }
            }
            Err(e) => {
                let msg = format!(
                    "actuator step skipped, and no scaling this tick (the fleet could not be \
                     observed): {e}"
                );
                tracing::warn!("{msg}");
                tick.errors.push((now, msg));
            }
        }
    }

    /// Today's count read back from CloudWatch's copy (with AWS).
    async fn read_cap_back<C: Cloud, H: HookRunner>(&self, a: &mut Actuator<C, H>, now: Timestamp) {
        if let Some(aws) = &self.aws {
            let (_, since, _) = a.ledger().day_bounds(now);
            let read = cloudwatch::cap_used_since(
                aws,
                &self.cfg.metrics.namespace_for(&self.cfg.agent.group),
                &self.cfg.agent.group,
                since,
                now,
            )
            .await
            .map_err(|e| e.to_string());
            a.cap_read_back(read, now);
        }
    }

    /// Reads the fleet's metrics back, then AWS's own evidence; a failed read leaves every
    /// slave missing.
    async fn read_fleet_back<C: Cloud, H: HookRunner>(
        &self,
        aws: &Aws,
        a: &Actuator<C, H>,
        tick: &mut Tick,
        ids: &[String],
        now: Timestamp,
    ) {
        let stale = self.cfg.metrics.stale_after.get().as_secs() as i64;
        match cloudwatch::read_fleet(
            aws,
            &self.cfg.metrics.namespace_for(&self.cfg.agent.group),
            &self.cfg.agent.group,
            ids,
            self.cfg.metrics.storage_resolution,
            stale,
            // The query window and the slaves' timestamps are wall-clock time.
            self.clock.wall(),
        )
        .await
        {
            Ok(mut back) => {
                // Each datapoint's age by the wall clock, as the agent's time.
                for m in back.metrics.values_mut() {
                    m.at = self.clock.to_agent(m.at);
                }
                if !back.missing.is_empty() {
                    tracing::debug!(missing = ?back.missing, "fleet read-back: no fresh metrics for some slaves");
                }
                tick.fleet_metrics = back.metrics;
                tick.last_read = Some(now);
                self.note_silence(a.slaves(), tick, now);
                // No slave can write these; a failed read only means less evidence.
                match cloudwatch::read_evidence(aws, &self.cfg.elb.name, ids, self.clock.wall())
                    .await
                {
                    Ok(ev) => tick.evidence = ev,
                    Err(e) => {
                        tracing::debug!("AWS/ELB and AWS/EC2 evidence unread: {e}");
                        tick.evidence = policy::Evidence::default();
                    }
                }
            }
            Err(e) => {
                tracing::warn!("fleet read-back failed; slaves count as missing: {e}");
                tick.fleet_metrics.clear();
            }
        }
    }

    /// Serving slaves that stopped reporting (after a read that went through: a failed read
    /// says nothing of them): an event once each time one goes silent, a line when it is back.
    pub(super) fn note_silence<'a>(
        &self,
        slaves: impl IntoIterator<Item = &'a crate::actuator::Slave>,
        tick: &mut Tick,
        now: Timestamp,
    ) {
        let window = self.cfg.metrics.stale_after;
        let ns = self.cfg.metrics.namespace_for(&self.cfg.agent.group);
        let slaves: Vec<&crate::actuator::Slave> = slaves.into_iter().collect();
        let silent = crate::actuator::lifecycle::silent(
            slaves.iter().copied(),
            &tick.fleet_metrics,
            now,
            window.whole_secs(),
        );
        for id in silent.difference(&tick.silent) {
            let msg = format!(
                "slave {id} is in service but has not reported its samples for {window} \
                 (metrics.stale_after): the policy counts it idle for scale-out and at target \
                 for scale-in, so the fleet is never scaled in for it. On the slave: is \
                 burst-agent running with role = \"reporter\", dry_run = false, aws.region set \
                 and metrics.namespace = \"{ns}\"? (`systemctl status burst-agent`, \
                 `journalctl -u burst-agent`)"
            );
            tracing::warn!(instance_id = %id, "{msg}");
            tick.news.push(crate::events::Event::new(
                crate::events::EventKind::SlaveSilent,
                Some(id),
                msg,
            ));
        }
        for id in tick.silent.difference(&silent) {
            if slaves.iter().any(|s| &s.id == id) {
                tracing::info!(instance_id = %id, "slave {id} reports again");
            }
        }
        tick.silent = silent;
    }

    pub(super) fn decide<C: Cloud, H: HookRunner>(
        &self,
        actuator: &mut Option<Actuator<C, H>>,
        ledger: &CapLedger,
        tick: &mut Tick,
        now: Timestamp,
    ) -> Decision {
        let obs = self.fleet_observation(actuator, tick, now);
        let history = actuator
            .as_ref()
            .map_or(&tick.local_history, |a| a.history());
        let before = history.bridge.level;
        let decision = policy::decide(
            &self.cfg.policy,
            &self.cfg.bridge,
            &obs,
            ledger,
            history,
            now,
        );
        self.remember_decision(actuator, tick, &decision, now);
        note_suspect(&decision, tick);
        note_bridge(before, &decision, tick);
        self.log_decision(&decision, tick, now);
        decision
    }

    /// What the policy sees this tick: this host's sample, the slaves with their metrics read
    /// back, the actuator's holds, the probe, the schedule and AWS's evidence.
    fn fleet_observation<C: Cloud, H: HookRunner>(
        &self,
        actuator: &Option<Actuator<C, H>>,
        tick: &Tick,
        now: Timestamp,
    ) -> FleetObservation {
        let master = self
            .sample_rx
            .borrow()
            .as_ref()
            .map(HostMetrics::from_sample)
            .map(|mut m| {
                m.at = self.clock.to_agent(m.at);
                // The level the master served at when it sampled: read back at full cost.
                m.bridge_level = tick.bridge.level_at(m.at);
                m.bridge_change = tick.bridge.change_at(m.at);
                m
            });
        let slaves = match actuator {
            Some(a) => a
                .observation(now)
                .into_iter()
                .map(|mut s| {
                    s.metrics = tick.fleet_metrics.get(&s.id).copied();
                    s
                })
                .collect(),
            None => Vec::new(),
        };
        let no_capacity_until = actuator.as_ref().and_then(|a| a.no_capacity_until(now));
        let launch_refused = actuator.as_ref().and_then(|a| a.launch_refused(now));
        let probe_latency = crate::model::probe_latency(&self.probe_rx.borrow());
        let (scheduled, _) = self.windows(now);
        let warm_room = actuator.as_ref().map_or(0, |a| a.warm_room());
        let sync_broken = actuator.as_ref().and_then(|a| {
            a.sync_broken().map(|t| policy::SyncBroken {
                cause: t.cause.clone(),
                trial: a.brake_gate(now) == crate::actuator::brake::Gate::Trial,
                trial_in_secs: a
                    .next_trial(now)
                    .map_or(-1, |n| (n.as_second() - now.as_second()).max(0)),
            })
        });
        FleetObservation {
            master,
            slaves,
            no_capacity_until,
            launch_refused,
            probe_latency,
            scheduled,
            warm_room,
            drain_secs: self.cfg.elb.draining_timeout.whole_secs(),
            sync_broken,
            content_source_missing: actuator
                .as_ref()
                .and_then(|a| a.content_source_missing().map(str::to_string)),
            evidence: tick.evidence.clone(),
            bridge_manual: tick.manual.clone(),
        }
    }

    /// The decision in the policy's memory: as decided when this tick carries it out, else as
    /// a hold with the same numbers.
    fn remember_decision<C: Cloud, H: HookRunner>(
        &self,
        actuator: &mut Option<Actuator<C, H>>,
        tick: &mut Tick,
        decision: &Decision,
        now: Timestamp,
    ) {
        // A decision this tick will not carry out (the fleet could not be observed) starts no
        // cooldown: it is remembered as a hold with the same numbers.
        let carried_out = actuator.is_none() || (tick.adopted && tick.observed);
        // A scale-out the sync brake holds whole (no sync proven yet and two slaves already
        // syncing) launches nothing: no cooldown, so the rest go as soon as one has synced.
        let brake_holds = matches!(decision, Decision::ScaleOut { .. })
            && actuator.as_ref().is_some_and(|a| {
                a.brake_gate(now) == crate::actuator::brake::Gate::Unproven { room: 0 }
            });
        let carried_out = carried_out && !brake_holds;
        let remembered = if carried_out {
            decision.clone()
        } else {
            Decision::Hold {
                why: decision.explanation().clone(),
            }
        };
        let policy = &self.cfg.policy;
        match actuator.as_mut() {
            Some(a) => a.remember(now, |h| h.record(policy, now, &remembered)),
            None => tick.local_history.record(policy, now, &remembered),
        }
    }

    /// The decision logged (a hold for the same reasons as the last tick's only at debug) and
    /// kept for `status`.
    fn log_decision(&self, decision: &Decision, tick: &mut Tick, now: Timestamp) {
        let why = decision.explanation();
        let codes = decision.reason_codes();
        let changed = codes != tick.last_reasons;
        let fields = |d: &Decision| {
            tracing::info!(action = d.action(), current = why.current, in_service = why.in_service,
                on_the_way = why.on_the_way, draining = why.draining, target = why.final_count,
                utilization = ?why.utilization, reasons = ?codes, cap_used = why.cap.used,
                cap_remaining = why.cap.remaining, dry_run = self.cfg.agent.dry_run, "decision: {d}");
        };
        match decision {
            Decision::Hold { .. } if !changed => {
                tracing::debug!(action = "hold", reasons = ?codes, utilization = ?why.utilization, "decision: {decision}")
            }
            _ => fields(decision),
        }
        tick.last_reasons = codes.clone();
        tick.last_decision = Some(DecisionLine {
            at: now,
            action: decision.action().into(),
            text: decision.to_string(),
            reasons: codes.iter().map(|c| c.to_string()).collect(),
        });
    }

    /// The planned burst holding now, and the next one to prewarm.
    pub(super) fn windows(
        &self,
        now: Timestamp,
    ) -> (Option<schedule::Window>, Option<schedule::Window>) {
        let Ok(tz) = jiff::tz::TimeZone::get(&self.cfg.cap.time_zone) else {
            return (None, None);
        };
        let plans = schedule::plans(&self.cfg);
        (
            schedule::active(&plans, &tz, now),
            schedule::next(&plans, &tz, now),
        )
    }

    /// The agent's time now (clock.rs); a wall-clock step is logged and told once.
    pub(super) fn read_clock(&mut self, tick: &mut Tick) -> Timestamp {
        let (now, step) = self.clock.observe(Timestamp::now(), boottime());
        if let Some(s) = step {
            let msg = format!(
                "the wall clock stepped {}{}s against the monotonic clock (now {}; an NTP step, a \
                 VM pause or `date -s`): deadlines, cooldowns and the cap day follow the agent's \
                 own clock ({now}), which catches up at most {}% of the time that passes; no \
                 slave is ended and no cap day opens for it",
                if s.secs > 0 { "+" } else { "" },
                s.secs,
                s.wall,
                (crate::clock::SLEW * 100.0) as u32
            );
            tracing::warn!(step_secs = s.secs, wall = %s.wall, agent = %now, "{msg}");
            tick.news.push(crate::events::Event::new(
                crate::events::EventKind::ClockStep,
                None,
                msg,
            ));
        }
        now
    }

    pub(super) fn publish_own(
        &self,
        decision: &Decision,
        ledger: &CapLedger,
        own: &Own,
        tick: &mut Tick,
        now: Timestamp,
    ) {
        let Some(aws) = &self.aws else { return };
        let errors: u64 = aws.stats().snapshot().values().map(|s| s.errors).sum();
        let cap = ledger.status(now);
        let mut buf = self.shared.buffer.lock().unwrap_or_else(|p| p.into_inner());
        let dropped = buf.dropped_total();
        buf.push(metrics::agent_data(
            &metrics::AgentNumbers {
                decision: Some(decision),
                cap: &cap,
                api_errors: errors - tick.api_errors_reported,
                hook_seconds: &own.hooks,
                hook_failures: &own.failures.0,
                launch_failures: own.failures.1,
                fleet: own.fleet,
                silent: u32::try_from(tick.silent.len()).unwrap_or(u32::MAX),
                dropped,
            },
            &self.cfg.agent.group,
            // CloudWatch's timestamps are the wall clock's (shared with every other host).
            self.clock.wall().max(now),
        ));
        tick.api_errors_reported = errors;
    }

    pub(super) fn snapshot<C: Cloud, H: HookRunner>(
        &self,
        actuator: &Option<Actuator<C, H>>,
        ledger: &CapLedger,
        tick: &Tick,
        events: &Events,
        now: Timestamp,
    ) {
        let host = self.host_line();
        let slaves = slave_lines(actuator, tick);
        let cooldown_ends = self.cooldowns(actuator, tick, now);
        let cooldowns = cooldown_ends
            .iter()
            .map(|(what, until)| {
                let left = until.as_second() - now.as_second();
                format!("{what} cooldown: {left} s left")
            })
            .collect();
        let (scheduled, next_window) = self.windows(now);
        let buf = self.shared.buffer.lock().unwrap_or_else(|p| p.into_inner());
        let snap = Snapshot {
            written_at: now,
            pid: std::process::id(),
            state: tick.state.into(),
            started_at: self.started_at,
            group: self.cfg.agent.group.clone(),
            role: self.cfg.agent.role.name().into(),
            dry_run: self.cfg.agent.dry_run,
            aws_off: self.aws_off.clone(),
            host,
            slaves,
            foreign: actuator
                .as_ref()
                .map(|a| a.foreign().to_vec())
                .unwrap_or_default(),
            content_source_missing: actuator
                .as_ref()
                .and_then(|a| a.content_source_missing().map(str::to_string)),
            sync_broken: actuator.as_ref().and_then(|a| sync_broken_line(a, now)),
            lease: self.lease_line(tick),
            cap: Some(ledger.status(now)),
            last_decision: tick.last_decision.clone(),
            cooldowns,
            cooldown_ends,
            last_errors: tick.errors.clone(),
            aws_calls: self.aws_calls(),
            metrics_queued: buf.len(),
            metrics_dropped: buf.dropped_total(),
            events: events.recent().cloned().collect(),
            scheduled,
            next_window,
            probes: self.probe_rx.borrow().clone(),
            bridge: self.bridge_line(actuator, tick),
        };
        drop(buf);
        if let Err(e) = snap.write(&status::path_in(&self.state_dir)) {
            tracing::warn!("could not write the status snapshot: {e}");
        }
    }

    /// The bridge's line in the snapshot: when it is enabled, or a level is on or set by hand.
    fn bridge_line<C: Cloud, H: HookRunner>(
        &self,
        actuator: &Option<Actuator<C, H>>,
        tick: &Tick,
    ) -> Option<status::BridgeLine> {
        let history = actuator
            .as_ref()
            .map_or(&tick.local_history, |a| a.history());
        let state = &history.bridge;
        let b = &self.cfg.bridge;
        let on = b.enabled || state.level > 0 || tick.manual.is_some() || tick.bridge.applied() > 0;
        if !on {
            return None;
        }
        let not_applied = if self.cfg.hooks.on_bridge.is_none() {
            Some("hooks.on_bridge is unset".to_string())
        } else if self.cfg.agent.dry_run {
            Some("dry run".to_string())
        } else {
            None
        };
        Some(status::BridgeLine {
            enabled: b.enabled,
            level: state.level,
            top: b.top(),
            applied: tick.bridge.applied(),
            switching_to: tick.bridge.switching_to(),
            since: state.since,
            episode_start: state.episode_start,
            cooling_until: state.cooling_until,
            manual: tick.manual.clone(),
            not_applied,
            hook_failed: tick.bridge.failed.clone(),
        })
    }

    /// This host's line in the snapshot, from the newest sample.
    fn host_line(&self) -> HostLine {
        let sample = self.sample_rx.borrow().clone();
        HostLine {
            instance_id: self.instance_id.clone(),
            at: sample.as_ref().map(|s| s.timestamp),
            load_per_cpu: sample.as_ref().and_then(|s| s.load_per_cpu()),
            apache_busy_ratio: sample.as_ref().and_then(|s| s.apache_busy_ratio()),
            memory_used_ratio: sample.as_ref().and_then(|s| s.memory_used_ratio()),
            apache_workers: sample.as_ref().and_then(|s| s.apache.workers),
            problems: sample.map(|s| s.problems).unwrap_or_default(),
        }
    }

    /// The cooldowns still running, and when each ends.
    fn cooldowns<C: Cloud, H: HookRunner>(
        &self,
        actuator: &Option<Actuator<C, H>>,
        tick: &Tick,
        now: Timestamp,
    ) -> Vec<(String, Timestamp)> {
        let mut cooldowns = Vec::new();
        let p = &self.cfg.policy;
        let history = actuator
            .as_ref()
            .map_or(&tick.local_history, |a| a.history());
        for (what, last, d) in [
            ("scale-out", history.last_scale_out, p.scale_out_cooldown),
            ("scale-in", history.last_scale_in, p.scale_in_cooldown),
        ] {
            if let Some(t) = last {
                let until = t.as_second().saturating_add(d.whole_secs());
                if until > now.as_second() {
                    let until = Timestamp::from_second(until).unwrap_or(now);
                    cooldowns.push((what.to_string(), until));
                }
            }
        }
        cooldowns
    }

    /// The lease as `status` shows it: the standby's line, or held by this agent.
    fn lease_line(&self, tick: &Tick) -> Option<String> {
        match (&tick.standby, &self.lease) {
            (Some(line), _) => Some(line.clone()),
            (None, Some(_)) => Some(format!(
                "held by this agent ({}, ledger table {})",
                self.lease_holder().unwrap_or_default(),
                self.cfg.ledger.table
            )),
            (None, None) => None,
        }
    }

    /// The AWS calls made since the start, by operation.
    fn aws_calls(&self) -> BTreeMap<String, crate::aws::OpStats> {
        self.aws
            .as_ref()
            .map(|a| {
                a.stats()
                    .snapshot()
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Master<'_> {
    fn lease_holder(&self) -> Option<String> {
        let shared = self.lease.as_ref()?;
        let g = shared.lock().unwrap_or_else(|p| p.into_inner());
        Some(g.lease.me().to_string())
    }

    /// The desk's records (site.rs): the holder's status, runs and shortfalls, or a standby's
    /// mark, handed to their writer (never awaited here). Their times are the wall clock's:
    /// they are for people and invoices.
    fn record_site<C: Cloud, H: HookRunner>(
        &mut self,
        l: &Loop<C, H>,
        decision: &Decision,
        cap: &crate::cap::CapStatus,
        observed: bool,
    ) {
        let (Some(feed), Some(a)) = (self.site.as_mut(), l.actuator.as_ref()) else {
            return;
        };
        let wall = Timestamp::now();
        if l.tick.standby.is_some() {
            if let Some(holder) = &l.tick.standby_for {
                feed.standby(holder, wall);
            }
            return;
        }
        let why = decision.explanation();
        let holds = crate::usage::held(why);
        let (in_service, coming, draining) = fleet_counts(&l.actuator);
        let status = crate::usage::SiteStatus {
            holder: feed.me().to_string(),
            at: wall,
            action: decision.action().to_string(),
            text: decision.to_string(),
            // What held a launch back first: the desk's line shows the first reason.
            reasons: why
                .reasons
                .iter()
                .filter(|r| crate::usage::is_hold(r))
                .chain(why.reasons.iter().filter(|r| !crate::usage::is_hold(r)))
                .map(ToString::to_string)
                .collect(),
            holds: holds.iter().map(|(h, _)| *h).collect(),
            in_service,
            coming,
            draining,
            warm: a.pooled(),
            used: cap.used,
            limit: cap.limit,
            day: cap.day.to_string(),
            time_zone: cap.time_zone.clone(),
        };
        // Before adoption only the holds count (a table that cannot be read holds launches).
        let adopted = l.tick.adopted;
        feed.holder(
            &cap.day.to_string(),
            adopted.then_some(status),
            (adopted && observed).then(|| a.listed().to_vec()),
            holds,
            2 * self.cfg.policy.evaluation_interval.get().as_secs(),
            wall,
        );
    }

    /// Why this agent changes nothing now: another holds the site's lease, or it is not read
    /// yet. `None` when it holds the lease or runs without a table.
    /// With the holder it stands by for, when it knows one.
    fn standby(&self) -> Option<(String, Option<String>)> {
        let shared = self.lease.as_ref()?;
        let g = shared.lock().unwrap_or_else(|p| p.into_inner());
        let standing = g.lease.standing(boottime());
        let holder = match &standing {
            crate::lease::Standing::Holder { .. } => return None,
            crate::lease::Standing::Standby { holder, .. } => Some(holder.clone()),
            crate::lease::Standing::Unknown => None,
        };
        let mut line = lease::describe(&standing);
        if let Some(e) = &g.error {
            line = format!("{line} ({e})");
        }
        Some((line, holder))
    }
}

/// Carries the decision out, only on a fleet this tick observed; a local dry run says it did
/// nothing.
async fn carry_out<C: Cloud, H: HookRunner>(
    l: &mut Loop<C, H>,
    decision: &Decision,
    observed: bool,
    now: Timestamp,
) {
    if let (Some(a), true) = (l.actuator.as_mut(), observed) {
        let r = a.apply(decision, now).await;
        for e in r.errors {
            l.tick.errors.push((now, e));
        }
    } else if !matches!(decision, Decision::Hold { .. }) && l.actuator.is_none() {
        // The decision line above has the numbers; this only says nothing was done.
        tracing::info!(
            action = decision.action(),
            "dry run (no AWS): nothing launched or released"
        );
    }
}

/// The actuator's numbers since the last tick, taken for the agent's own metrics.
fn take_own<C: Cloud, H: HookRunner>(actuator: &mut Option<Actuator<C, H>>) -> Own {
    Own {
        hooks: actuator
            .as_mut()
            .map(|a| a.take_hook_seconds())
            .unwrap_or_default(),
        failures: actuator
            .as_mut()
            .map(|a| a.take_failures())
            .unwrap_or_default(),
        fleet: fleet_counts(actuator),
    }
}

/// The actuator's recent errors joined to the tick's, oldest first, the last ten kept.
fn keep_errors<C: Cloud, H: HookRunner>(a: &Actuator<C, H>, tick: &mut Tick) {
    for (t, e) in a.recent_errors() {
        if !tick.errors.iter().any(|(t2, e2)| t2 == t && e2 == e) {
            tick.errors.push((*t, e.clone()));
        }
    }
    tick.errors.sort_by_key(|(t, _)| *t);
    let n = tick.errors.len();
    if n > 10 {
        tick.errors.drain(..n - 10);
    }
}

/// An event for each change of the bridge's level, and for an episode that ran its maximum.
fn note_bridge(before: u8, decision: &Decision, tick: &mut Tick) {
    use crate::events::{Event, EventKind};
    let changed = decision.explanation().bridge.level != before;
    for r in &decision.explanation().reasons {
        let kind = match r {
            policy::Reason::BridgeManual { .. } if changed => EventKind::BridgeChanged,
            policy::Reason::BridgeOn { .. }
            | policy::Reason::BridgeRaised { .. }
            | policy::Reason::BridgeLowered { .. }
            | policy::Reason::BridgeOff { .. }
            | policy::Reason::BridgeDisabled { .. } => EventKind::BridgeChanged,
            policy::Reason::BridgeExpired { .. } => EventKind::BridgeExpired,
            _ => continue,
        };
        tick.news.push(Event::new(kind, None, r.to_string()));
    }
}

/// An event for each host whose metrics the decision did not trust (uncorroborated).
fn note_suspect(decision: &Decision, tick: &mut Tick) {
    let why = decision.explanation();
    for r in &why.reasons {
        if let policy::Reason::Uncorroborated { hosts, .. } = r {
            for h in hosts {
                tick.news.push(crate::events::Event::new(
                    crate::events::EventKind::MetricsSuspect,
                    Some(h),
                    r.to_string(),
                ));
            }
        }
    }
}

/// The slaves' lines in the snapshot, each with its metrics read back.
fn slave_lines<C: Cloud, H: HookRunner>(
    actuator: &Option<Actuator<C, H>>,
    tick: &Tick,
) -> Vec<SlaveLine> {
    actuator
        .iter()
        .flat_map(|a| a.slaves())
        .map(|s| {
            let m = tick.fleet_metrics.get(&s.id);
            SlaveLine {
                id: s.id.clone(),
                phase: phase_name(s.phase).into(),
                private_ip: s.private_ip.clone(),
                launched_at: s.launched_at,
                in_phase_since: s.since,
                sample_at: m.map(|m| m.at),
                load_per_cpu: m.and_then(|m| m.load_per_cpu),
                apache_busy_ratio: m.and_then(|m| m.apache_busy_ratio),
                last_sync: s.last_sync,
                last_sync_ok: s.last_sync_ok,
                silent: tick.silent.contains(&s.id),
                failure: s.failure.clone(),
            }
        })
        .collect()
}

/// Why launches are held when content sync keeps failing the same way, and what to do.
fn sync_broken_line<C: Cloud, H: HookRunner>(a: &Actuator<C, H>, now: Timestamp) -> Option<String> {
    a.sync_broken().map(|t| {
        format!(
            "content sync failed the same way {} times: {}; fix it, then \
             `systemctl reload burst-agent` or `sudo -u burst-agent burst-agent \
             resume`; {}; last error: {}",
            crate::actuator::brake::TRIP_AFTER,
            t.cause,
            match a.next_trial(now) {
                None => "a trial launch is syncing".to_string(),
                Some(n) => format!("next trial launch not before {n}"),
            },
            t.error
        )
    })
}
