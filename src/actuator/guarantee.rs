//! The site's guarantee in the shared table (`ledger.table`, burst-edge's `table`): every unit
//! this actuator spends is reserved there first, under the lease, so a copy of the master, a
//! restored state.json or a wiped disk cannot spend it again. state.json stays the
//! write-ahead journal and the cache; the table is the record.
//!
//! - A launch's units are reserved after the local write-ahead and before RunInstances; a
//!   refusal (the day is full, the lease is not ours) or a table that cannot be written holds
//!   the launch: fail closed, no unit is spent.
//! - Only a launch EC2 refused (nothing launched, for sure) is refunded; a call that timed out
//!   never is.
//! - Each instance a launch gave is recorded with its intent and ClientToken.
//! - A warm start that costs a unit counts the instance for the day under the lease; an
//!   instance alive at midnight counts toward the new day, unconditionally.
//! - At adoption the local records are brought up to date from the table: the day's count
//!   never falls below the table's, and every instance the table names is ours.

use super::*;
use crate::table::{Counted, InstanceRecord, LedgerTable, Reserved, SiteRecords};
use burst_edge::fenced::LeaseEnd;

/// The key stem of a ledger attempt that stands for a launch the table names and EC2 has not
/// listed yet (`hold_table_floor`); "counted-" like the table's other counts.
const PENDING: &str = "counted-pending-";

impl<C: Cloud, H: HookRunner> Actuator<C, H> {
    /// Spends units through `table` under the lease `lease`.
    pub fn set_guarantee(&mut self, table: Arc<dyn LedgerTable>, lease: LeaseEnd) {
        self.hooks.cut_at(lease.clone());
        self.guarantee = Some((table, lease));
    }

    /// Kills every hook under way (this agent lost the site's lease: no content sync goes on
    /// outside it). Their slaves are synced again, never registered unsynced, once it holds it.
    pub fn abort_hooks(&mut self) {
        let ids: Vec<String> = self.slaves.keys().cloned().collect();
        for id in ids {
            if self.hooks.has(&id) {
                tracing::warn!(instance_id = %id, "hook killed: this agent does not hold the site's lease");
                self.hooks.abort(&id);
            }
        }
    }

    /// Reserves `units` for intent `id` in the table (nothing to do without one). `Err(why)`:
    /// the launch must not go, and no unit is spent.
    pub(super) async fn reserve(
        &mut self,
        id: &str,
        units: u32,
        now: Timestamp,
    ) -> Result<(), String> {
        let Some((table, lease)) = self.guarantee.clone() else {
            return Ok(());
        };
        let Some(fence) = lease.fence() else {
            return Err(
                "this agent does not hold the site's lease: another agent acts for \
                        the site (burst-agent status names it)"
                    .into(),
            );
        };
        let day = self.ledger.day_bounds(now).0.to_string();
        let limit = self.ledger.limit();
        match table
            .reserve(&fence, &day, id, units, limit, self.ledger.time_zone())
            .await
        {
            Ok(Reserved::Yes) => {
                tracing::info!(intent = %id, units, day = %day, table = %table.name(),
                    "reserved in the ledger table");
                if self.floor_intents.insert(id.to_string()) {
                    self.raise_floor(&day, units, None);
                }
                Ok(())
            }
            Ok(Reserved::CapSpent { used }) => {
                self.raise_floor(&day, 0, Some(used));
                for l in self.count_at_least(used, "the ledger table", now) {
                    tracing::warn!("cap ledger: {l}");
                }
                Err(format!(
                    "the ledger table counts {used} of {limit} unit(s) used on {day}: {units} more \
                     would pass the cap (another agent or an earlier run of this one spent them)"
                ))
            }
            Ok(Reserved::LeaseLost) => {
                lease.lose();
                Err(
                    "the ledger table refused: this agent's lease on the site is gone (another \
                     agent took it over)"
                        .into(),
                )
            }
            Err(e) => Err(format!(
                "the ledger table could not be written ({e}): no unit is spent while it cannot"
            )),
        }
    }

    /// Gives a refused launch's units back (EC2 launched nothing, for sure).
    pub(super) async fn refund(&mut self, id: &str) {
        let Some((table, _)) = self.guarantee.clone() else {
            return;
        };
        match table.refund(id).await {
            Ok(true) => {
                tracing::info!(intent = %id, "refunded in the ledger table");
                self.lower_floor(id);
            }
            Ok(false) => {}
            // Spent until a retry goes through (an answer lost after the refund applied finds
            // it refunded already): an overcount meanwhile, never an undercount. A restart
            // forgets it, and the units stay spent.
            Err(e) => {
                tracing::warn!(intent = %id,
                    "could not refund in the ledger table yet (retried each step): {e}");
                self.unrefunded.push(id.to_string());
            }
        }
    }

    /// Records the instances a launch gave (retried each step until the table has them).
    pub(super) async fn record_launched(
        &mut self,
        intent: &Intent,
        got: &[InstanceInfo],
        now: Timestamp,
    ) {
        if self.guarantee.is_none() {
            return;
        }
        let day = self.ledger.day_bounds(now).0.to_string();
        for i in got {
            self.unrecorded.push(InstanceRecord {
                id: i.id.clone(),
                intent: intent.id.clone(),
                client_token: i.client_token.clone().unwrap_or_default(),
                day: day.clone(),
                launched_at: i
                    .ec2_launched_at
                    .or(i.launched_at)
                    .map(|t| t.to_string())
                    .unwrap_or_default(),
            });
        }
        self.flush_records().await;
    }

    /// Writes the launch records and the refunds the table has not acknowledged yet.
    pub(super) async fn flush_records(&mut self) {
        let Some((table, _)) = self.guarantee.clone() else {
            return;
        };
        let mut left = Vec::new();
        for r in std::mem::take(&mut self.unrecorded) {
            if let Err(e) = table.record_instance(&r).await {
                tracing::warn!(instance_id = %r.id, "ledger table: launch record not written yet: {e}");
                left.push(r);
            }
        }
        self.unrecorded = left;
        let mut left = Vec::new();
        for id in std::mem::take(&mut self.unrefunded) {
            match table.refund(&id).await {
                Ok(true) => {
                    tracing::info!(intent = %id, "refunded in the ledger table");
                    self.lower_floor(&id);
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::debug!(intent = %id, "ledger table: refund not written yet: {e}");
                    left.push(id);
                }
            }
        }
        self.unrefunded = left;
    }

    /// A warm start that costs a unit: counted in the table under the lease first.
    pub(super) async fn count_start(&mut self, id: &str, now: Timestamp) -> Result<(), String> {
        let Some((table, lease)) = self.guarantee.clone() else {
            return Ok(());
        };
        let Some(fence) = lease.fence() else {
            return Err("this agent does not hold the site's lease".into());
        };
        let day = self.ledger.day_bounds(now).0.to_string();
        let limit = self.ledger.limit();
        match table
            .count(Some(&fence), &day, id, Some(limit), self.ledger.time_zone())
            .await
        {
            Ok(Counted::Yes) => {
                self.raise_floor(&day, 1, None);
                Ok(())
            }
            Ok(Counted::Already) => Ok(()),
            Ok(Counted::CapSpent { used }) => {
                for l in self.count_at_least(used, "the ledger table", now) {
                    tracing::warn!("cap ledger: {l}");
                }
                Err(format!("the ledger table counts {used} of {limit} today"))
            }
            Ok(Counted::LeaseLost) => {
                lease.lose();
                Err("this agent's lease on the site is gone".into())
            }
            Err(e) => Err(format!("the ledger table could not be written ({e})")),
        }
    }

    /// Instances alive at midnight count toward the new day in the table too (they run, so
    /// they count: an unconditional count, once per instance and day).
    pub(super) async fn carry_over(&mut self, now: Timestamp) {
        let Some((table, _)) = self.guarantee.clone() else {
            return;
        };
        let (day, start, _) = self.ledger.day_bounds(now);
        let day = day.to_string();
        let alive: Vec<String> = self
            .slaves
            .values()
            .filter(|s| {
                s.launched_at < start
                    && !matches!(s.phase, Phase::Stopped | Phase::Terminating)
                    && !self.carried.contains(&(day.clone(), s.id.clone()))
            })
            .map(|s| s.id.clone())
            .collect();
        for id in alive {
            match table
                .count(None, &day, &id, None, self.ledger.time_zone())
                .await
            {
                Ok(c) => {
                    if c == Counted::Yes {
                        self.raise_floor(&day, 1, None);
                    }
                    self.carried.insert((day.clone(), id));
                }
                Err(e) => {
                    tracing::warn!(instance_id = %id, "ledger table: midnight carry-over not written yet: {e}");
                    break;
                }
            }
        }
    }

    /// The table's count for `day` is `units` more, or at least `at_least`.
    fn raise_floor(&mut self, day: &str, units: u32, at_least: Option<u32>) {
        let n = match &self.table_floor {
            Some((d, n)) if d == day => *n,
            _ => 0,
        };
        let n = (n + units).max(at_least.unwrap_or(0));
        self.table_floor = Some((day.to_string(), n));
    }

    /// A refund gave intent `id`'s units back.
    fn lower_floor(&mut self, id: &str) {
        let Some((units, day)) = self.journal.intents.iter().find(|j| j.id == id).map(|j| {
            (
                u32::try_from(j.keys.len()).unwrap_or(u32::MAX),
                self.ledger.day_bounds(j.created_at).0.to_string(),
            )
        }) else {
            return;
        };
        // Only a unit the floor counts: this day's, reserved or read with it.
        if !self.floor_intents.remove(id) {
            return;
        }
        if let Some((d, n)) = self.table_floor.as_mut() {
            if *d == day {
                *n = n.saturating_sub(units);
            }
        }
    }

    /// The local ledger never counts less today than the table did when last read or written
    /// (a bare count made up at adoption by runs that end later would fall short again).
    pub(super) fn hold_table_floor(&mut self, now: Timestamp) {
        let today = self.ledger.day_bounds(now).0.to_string();
        self.table_pending
            .retain(|_, (_, since, _)| now.as_second() - since.as_second() <= SETTLE_SECS);
        // Another day's launch not seen yet: an attempt of its own, as an unresolved launch of
        // this agent's would be (its instance, if it still runs, runs today), until EC2 lists
        // it or SETTLE_SECS pass.
        let want: BTreeSet<String> = self
            .table_pending
            .iter()
            .filter(|(_, (_, _, day))| *day != today)
            .flat_map(|(id, (units, _, _))| (1..=*units).map(move |k| format!("{PENDING}{id}#{k}")))
            .collect();
        let have: BTreeSet<String> = self
            .ledger
            .entries()
            .iter()
            .filter(|e| e.key.starts_with(PENDING))
            .map(|e| e.key.clone())
            .collect();
        if want != have {
            let mut entries: Vec<cap::Entry> = self
                .ledger
                .entries()
                .iter()
                .filter(|e| !e.key.starts_with(PENDING) || want.contains(&e.key))
                .cloned()
                .collect();
            for k in want.difference(&have) {
                entries.push(cap::Entry {
                    key: k.clone(),
                    instance_id: None,
                    launched_at: now,
                    ended_at: None,
                });
            }
            self.replace_entries(entries);
        }
        let n = match &self.table_floor {
            Some((day, n)) if *day == today => *n,
            _ => return,
        };
        for l in self.count_at_least(n, "the ledger table", now) {
            tracing::info!("cap ledger: {l}");
        }
    }

    /// Brings the local records up to date from the table (at adoption: a restored or stale
    /// state.json, a copy's): today's count never below the table's; every instance the table
    /// names is ours. On the first start with a table, today's local count is imported once.
    pub async fn sync_from_table(&mut self, now: Timestamp) -> Result<(), String> {
        let Some((table, _)) = self.guarantee.clone() else {
            return Ok(());
        };
        let site = table
            .read_site(jiff::Timestamp::now().as_second())
            .await
            .map_err(|e| format!("the ledger table could not be read: {e}"))?;
        let day = self.ledger.day_bounds(now).0.to_string();
        let local = self.ledger.used(now);
        let mut used = site.days.get(&day).copied().unwrap_or(0);
        if !site.days.contains_key(&day) && local > 0 {
            used = self.import_local_day(&*table, &day, now).await?;
        }
        let (_, start, _) = self.ledger.day_bounds(now);
        self.count_table_instances(&site, &day, start);
        self.table_floor = Some((day.clone(), used));
        self.floor_intents = site.intents.iter().map(|i| i.id.clone()).collect();
        let yesterday = self
            .ledger
            .day_bounds(Timestamp::from_second(start.as_second() - 1).unwrap_or(start))
            .0
            .to_string();
        self.table_pending = self.table_pending_of(&site, &day, &yesterday, now);
        for l in self.count_at_least(used, "the ledger table", now) {
            tracing::warn!("cap ledger: {l}");
        }
        // Today's and yesterday's (an older launch's instances are recorded by now).
        self.table_intents = site
            .intents
            .iter()
            .filter(|i| !i.refunded && (i.day == day || i.day == yesterday))
            .map(|i| i.id.clone())
            .collect();
        let mut named = Vec::new();
        for r in &site.instances {
            if self.owned.insert(r.id.clone()) {
                named.push(r.id.clone());
            }
        }
        if !named.is_empty() {
            tracing::warn!(instances = ?named,
                "the ledger table names launches this state directory did not know (a restored \
                 or copied state.json): they are ours and tracked from now on");
        }
        self.cap_unverified = None;
        self.save_state(now, &mut Report::default());
        Ok(())
    }

    /// Upgrade day: what this agent spent today before the table, once (each instance or
    /// attempt counted by its own marker, so a second import adds nothing). Returns the
    /// table's count for `day` after.
    async fn import_local_day(
        &mut self,
        table: &dyn LedgerTable,
        day: &str,
        now: Timestamp,
    ) -> Result<u32, String> {
        let (_, start, _) = self.ledger.day_bounds(now);
        let keys: Vec<String> = self
            .ledger
            .entries()
            .iter()
            .filter(|e| e.ended_at.is_none_or(|t| t >= start))
            .map(|e| e.instance_id.clone().unwrap_or_else(|| e.key.clone()))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        for k in &keys {
            table
                .count(None, day, k, None, self.ledger.time_zone())
                .await
                .map_err(|e| format!("today's local ledger could not be imported: {e}"))?;
        }
        let used = table.day_used(day).await.map_err(|e| e.to_string())?;
        tracing::warn!(day = %day, imported = keys.len(), used,
            "ledger table: today's local ledger imported once (upgrade day)");
        Ok(used)
    }

    /// Each launch the table records for today counts by its own instance (what else the
    /// local ledger counts now, a slave from yesterday that ended before midnight, say, may
    /// drop out later; a bare count would then fall short).
    fn count_table_instances(&mut self, site: &SiteRecords, day: &str, start: Timestamp) {
        let missing: Vec<cap::Entry> = site
            .instances
            .iter()
            .filter(|r| r.day == day)
            // A launch this state directory's journal knows is counted by its own attempt.
            .filter(|r| !self.journal.knows(&r.intent))
            .filter(|r| {
                !self
                    .ledger
                    .entries()
                    .iter()
                    .any(|e| e.instance_id.as_deref() == Some(r.id.as_str()))
            })
            .map(|r| cap::Entry {
                key: format!("{}#{}", r.intent, r.id),
                instance_id: Some(r.id.clone()),
                launched_at: r
                    .launched_at
                    .parse::<Timestamp>()
                    .unwrap_or(start)
                    .max(start),
                ended_at: None,
            })
            .collect();
        if !missing.is_empty() {
            tracing::warn!(instances = ?missing.iter().map(|e| e.instance_id.clone()).collect::<Vec<_>>(),
                "cap ledger: launches the ledger table records for today, counted here too");
            let mut entries = self.ledger.entries().to_vec();
            entries.extend(missing);
            self.replace_entries(entries);
        }
    }

    /// The table's launches of `day` and `yesterday`, not refunded, that this state directory
    /// does not know as launched and no instance of which the table records for today yet.
    fn table_pending_of(
        &self,
        site: &SiteRecords,
        day: &str,
        yesterday: &str,
        now: Timestamp,
    ) -> BTreeMap<String, (u32, Timestamp, String)> {
        site.intents
            .iter()
            .filter(|i| !i.refunded && (i.day == yesterday || i.day == day))
            // Whatever a stale journal says of it short of its instances: a copy's may hold it
            // as not sent yet, and settle it as having launched nothing.
            .filter(|i| {
                !self
                    .journal
                    .intents
                    .iter()
                    .any(|j| j.id == i.id && matches!(j.outcome, Outcome::Launched { .. }))
            })
            // Today's records count by their instances above; yesterday's instances count
            // today only if they still ran at midnight, which shows when EC2 lists them.
            .filter(|i| i.day != day || !site.instances.iter().any(|r| r.intent == i.id))
            .map(|i| (i.id.clone(), (i.units, now, i.day.clone())))
            .collect()
    }
}
