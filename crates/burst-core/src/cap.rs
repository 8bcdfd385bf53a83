//! The daily burst-cap ledger: the promise sold to customers, at most N burst instances per
//! calendar day in a configured time zone.
//!
//! Pure accounting: every query takes `now`; no clock, no I/O (the agent keeps it in
//! `state.json`; its stored form is `actuator::ledger_store::Stored`).
//! What counts is **distinct burst instances that ran at any moment of the day**:
//! - a launch counts when it is *attempted* (a failed launch may still cost);
//! - a slave still running at midnight counts toward the new day too;
//! - terminating a slave and launching another later costs two;
//! - a slave stopped into the warm pool stops counting: started again the same day it costs
//!   nothing more (the day counts it already), started on a later day it counts once there.
//!   Its ledger holds one entry per run (launch or start), and a day counts instance ids.
//!
//! Days are the time zone's calendar days, so a day can be 23 or 25 hours long, and where
//! midnight does not exist (a DST gap at 00:00) the day starts at the first instant that does.
//!
//! The limits and the time zone can change while the agent runs (a reload): a new limit counts
//! at once; a new time zone never grants a fresh day, since the day under way in the old zone
//! ([`Carry`]) keeps counting until it ends, so the stricter of the two applies.
//!
//! The executor records every launch attempt here before RunInstances:
//! [`CapLedger::record_attempt`] refuses one past the cap whatever the policy said (the last
//! guard), [`CapLedger::bind`] ties it to the instance EC2 gave, and [`CapLedger::withdraw`]
//! drops it only when EC2 certainly launched nothing.

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{Timestamp, ZonedDateTime};
use serde::{Deserialize, Serialize};
use std::fmt;

/// One burst instance, from its launch attempt to its end.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The agent's launch intent id (`<intent>#<n>`): known before the instance id is.
    pub key: String,
    pub instance_id: Option<String>,
    /// When the launch was attempted.
    pub launched_at: Timestamp,
    /// Terminated, or the launch failed; `None` while it may be running.
    pub ended_at: Option<Timestamp>,
}

impl Entry {
    /// Whether the instance existed (or may have) at some moment of `[start, end)`.
    fn overlaps(&self, start: Timestamp, end: Timestamp) -> bool {
        self.launched_at < end && self.ended_at.is_none_or(|e| e > start)
    }

    /// [`Entry::overlaps`] as seen at `now`: nothing ran after `now`, so a time past it (EC2's
    /// wall clock ahead of the agent's: a host whose clock is behind, a copy started on a wrong
    /// one) reads as `now`. A run EC2 dates tomorrow by the agent's clock ran today.
    fn overlaps_at(&self, start: Timestamp, end: Timestamp, now: Timestamp) -> bool {
        let launched = self.launched_at.min(now);
        launched < end
            && self
                .ended_at
                .is_none_or(|e| e.min(now).max(launched) > start)
    }
}

/// The day that was under way in the previous time zone when `cap.time_zone` changed: it keeps
/// counting until `end`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Carry {
    pub time_zone: String,
    pub start: Timestamp,
    pub end: Timestamp,
}

/// What counts against today's cap at one instant ([`CapLedger::counted`]).
struct Counted {
    day: Date,
    used: u32,
    instance_hours: f64,
    resets_at: Timestamp,
}

/// A burst instance as EC2 lists it, for [`CapLedger::reconcile`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub instance_id: String,
    /// The `burst-agent:intent` tag.
    pub intent: Option<String>,
    pub launched_at: Timestamp,
    /// Set once EC2 says it is terminated.
    pub ended_at: Option<Timestamp>,
    /// EC2 says stopping or stopped (the warm pool): it does not run.
    pub stopped: bool,
    /// For a stopped one, the latest it can have stopped (its pool tag's time plus the stop's
    /// deadline), when known: a stopped instance the ledger does not know ran until then, not
    /// until now (after a restart past midnight it must not count on the new day).
    pub stopped_by: Option<Timestamp>,
}

impl Seen {
    /// When a stopped instance's run ended, at the latest: `stopped_by`, else now (never
    /// before its launch). `None` while it may run.
    pub(crate) fn ended_by(&self, now: Timestamp) -> Option<Timestamp> {
        self.stopped.then(|| {
            self.stopped_by
                .map_or(now, |t| t.min(now))
                .max(self.launched_at)
        })
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CapError {
    #[error("cap.time_zone {0:?} is not a known IANA time zone")]
    UnknownTimeZone(String),
    #[error("{0}")]
    Exhausted(String),
    #[error("burst cap ledger is unavailable ({0}); scale-out is refused until it is rebuilt")]
    Blocked(String),
    #[error("ledger already has an entry {0:?}")]
    Duplicate(String),
    #[error("ledger has no entry {0:?}")]
    Unknown(String),
}

#[derive(Clone, Debug)]
pub struct CapLedger {
    tz: TimeZone,
    tz_name: String,
    limit: u32,
    /// Instance-hours a day; `None` = no second budget.
    hours_budget: Option<f64>,
    entries: Vec<Entry>,
    /// The previous time zone's day, still counted (see [`Carry`]).
    carry: Option<Carry>,
    /// Set when the stored ledger was corrupt: nothing may be launched until it is rebuilt.
    blocked: Option<String>,
    /// How far the agent's clock is from the host's wall clock now, in seconds (either way):
    /// EC2 reports when an instance ended by its wall clock, and the day's start is the
    /// agent's. A run that ended within this much before the day began counts for the day too
    /// (an overcount, never an undercount). The largest seen since the day began (a clock that
    /// was ahead at midnight may have slewed back since). Not stored: the executor sets it each
    /// step.
    skew_secs: i64,
    skew_day: Option<Date>,
}

/// What the cap looks like at one instant, for logs, status and the policy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CapStatus {
    pub used: u32,
    pub limit: u32,
    pub remaining: u32,
    pub instance_hours: f64,
    pub hours_budget: Option<f64>,
    pub time_zone: String,
    /// The local day the numbers are for.
    pub day: Date,
    /// When the next day starts (local midnight, or the first instant after it in a DST gap).
    pub resets_at: Timestamp,
    pub resets_in_secs: i64,
    pub blocked: Option<String>,
}

impl fmt::Display for CapStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = self.resets_in_secs / 3600;
        let m = (self.resets_in_secs % 3600) / 60;
        write!(f, "{}/{} today", self.used, self.limit)?;
        if let Some(b) = self.hours_budget {
            write!(f, ", {:.1}/{b:.1} instance-hours", self.instance_hours)?;
        }
        let local = self
            .resets_at
            .to_zoned_datetime(TimeZone::get(&self.time_zone).unwrap_or(TimeZone::UTC));
        write!(
            f,
            ", resets {} {} in {h}h{m:02}m",
            local.strftime("%H:%M"),
            self.time_zone
        )?;
        if let Some(why) = &self.blocked {
            write!(f, " (ledger unavailable: {why})")?;
        }
        Ok(())
    }
}

impl CapLedger {
    pub fn new(time_zone: &str, limit: u32, hours_budget: Option<f64>) -> Result<Self, CapError> {
        let tz =
            TimeZone::get(time_zone).map_err(|_| CapError::UnknownTimeZone(time_zone.into()))?;
        Ok(CapLedger {
            tz,
            tz_name: time_zone.to_string(),
            limit,
            hours_budget: hours_budget.filter(|h| *h > 0.0),
            entries: Vec::new(),
            carry: None,
            blocked: None,
            skew_secs: 0,
            skew_day: None,
        })
    }

    /// How far the agent's clock is from the wall clock EC2's times are on, at `now` (see
    /// `skew_secs`).
    pub fn set_skew(&mut self, secs: i64, now: Timestamp) {
        let day = self.day_bounds(now).0;
        let secs = secs.saturating_abs();
        if self.skew_day == Some(day) {
            self.skew_secs = self.skew_secs.max(secs);
        } else {
            self.skew_day = Some(day);
            self.skew_secs = secs;
        }
    }

    /// A day's start, as far back as the clocks may disagree: what counts as "ran during it".
    fn counted_from(&self, start: Timestamp) -> Timestamp {
        Timestamp::from_second(start.as_second().saturating_sub(self.skew_secs)).unwrap_or(start)
    }

    /// A ledger that refuses every launch: the stored one could not be read.
    pub fn blocked(mut self, why: impl Into<String>) -> Self {
        self.blocked = Some(why.into());
        self
    }

    pub fn with_entries(mut self, entries: Vec<Entry>) -> Self {
        self.entries = entries;
        self
    }

    pub fn with_carry(mut self, carry: Option<Carry>) -> Self {
        self.carry = carry;
        self
    }

    /// The previous time zone's day as it is kept (the stored form writes it whole; pruning
    /// drops it once over).
    pub fn kept_carry(&self) -> Option<&Carry> {
        self.carry.as_ref()
    }

    /// The previous time zone's day, while it still counts at `now`.
    pub fn carry(&self, now: Timestamp) -> Option<&Carry> {
        self.carry.as_ref().filter(|c| c.end > now)
    }

    /// A new daily limit and instance-hours budget, counted from now on (a reload).
    pub fn set_limits(&mut self, limit: u32, hours_budget: Option<f64>) {
        self.limit = limit;
        self.hours_budget = hours_budget.filter(|h| *h > 0.0);
    }

    /// Switches to the time zone `name` at `now`. The day under way in the old zone keeps
    /// counting until it ends (merged with any earlier carry still running), so a change never
    /// grants a fresh day. Returns whether anything changed.
    pub fn set_time_zone(&mut self, name: &str, now: Timestamp) -> Result<bool, CapError> {
        if name == self.tz_name {
            return Ok(false);
        }
        let tz = TimeZone::get(name).map_err(|_| CapError::UnknownTimeZone(name.into()))?;
        let (_, start, end) = self.day_bounds(now);
        let carry = match self.carry.take().filter(|c| c.end > now) {
            Some(c) => Carry {
                time_zone: c.time_zone,
                start: c.start.min(start),
                end: c.end.max(end),
            },
            None => Carry {
                time_zone: self.tz_name.clone(),
                start,
                end,
            },
        };
        self.carry = Some(carry);
        self.tz = tz;
        self.tz_name = name.to_string();
        Ok(true)
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }
    pub fn limit(&self) -> u32 {
        self.limit
    }
    pub fn time_zone(&self) -> &str {
        &self.tz_name
    }
    pub fn is_blocked(&self) -> Option<&str> {
        self.blocked.as_deref()
    }

    /// `[start, end)` of the local day holding `now`.
    pub fn day_bounds(&self, now: Timestamp) -> (Date, Timestamp, Timestamp) {
        let date = self.tz.to_datetime(now).date();
        let start = day_start(date, &self.tz).unwrap_or(now);
        let end = date
            .tomorrow()
            .ok()
            .and_then(|d| day_start(d, &self.tz))
            .unwrap_or(now);
        (date, start, end)
    }

    /// Distinct burst instances that ran (or were attempted) at any moment of today.
    pub fn used(&self, now: Timestamp) -> u32 {
        self.counted(now).used
    }

    /// Today's use at `now`, with the day's bounds resolved once. After a change of time zone
    /// the old zone's day counts too until it ends: the stricter of the two.
    fn counted(&self, now: Timestamp) -> Counted {
        let (day, start, end) = self.day_bounds(now);
        let mut c = Counted {
            day,
            used: self.used_in(start, end, now),
            instance_hours: self.hours_since(start, now),
            resets_at: end,
        };
        if let Some(carry) = self.carry(now) {
            let carried = self.used_in(carry.start, carry.end, now);
            if carried > c.used {
                // The old zone's day binds: it is what ends first and frees launches.
                c.used = carried;
                c.resets_at = carry.end;
            }
            c.instance_hours = c.instance_hours.max(self.hours_since(carry.start, now));
        }
        c
    }

    /// Distinct instances with a run in `[start, end)`: an instance stopped and started again
    /// counts once (an attempt not yet bound to an instance counts on its own).
    fn used_in(&self, start: Timestamp, end: Timestamp, now: Timestamp) -> u32 {
        let start = self.counted_from(start);
        let mut ids = std::collections::BTreeSet::new();
        let mut unbound = 0usize;
        for e in self
            .entries
            .iter()
            .filter(|e| e.overlaps_at(start, end, now))
        {
            match &e.instance_id {
                Some(id) => {
                    ids.insert(id.as_str());
                }
                None => unbound += 1,
            }
        }
        u32::try_from(ids.len() + unbound).unwrap_or(u32::MAX)
    }

    /// Whether `instance_id` already counts against the day under way (and the previous time
    /// zone's, while that is carried): starting it again now costs no new unit.
    pub fn counts_today(&self, instance_id: &str, now: Timestamp) -> bool {
        let (_, start, end) = self.day_bounds(now);
        let start = self.counted_from(start);
        let counted = |start, end| {
            self.entries
                .iter()
                .any(|e| e.instance_id.as_deref() == Some(instance_id) && e.overlaps(start, end))
        };
        counted(start, end) && self.carry(now).is_none_or(|c| counted(c.start, c.end))
    }

    /// Records that a stopped slave of the warm pool is being started again, before the
    /// StartInstances call: a new run of `instance_id` under `key`. Free when the instance
    /// already counts today (and the day is within its limit); otherwise it needs a unit like a
    /// launch, and is refused past the cap. Returns whether it was free.
    pub fn record_restart(
        &mut self,
        key: &str,
        instance_id: &str,
        now: Timestamp,
    ) -> Result<bool, CapError> {
        if let Some(why) = &self.blocked {
            return Err(CapError::Blocked(why.clone()));
        }
        if self.entries.iter().any(|e| e.key == key) {
            return Err(CapError::Duplicate(key.into()));
        }
        // Free only while the day's count is within the limit: an overcounted ledger (rebuilt
        // from tags, say) may count an instance that did not run today, and starting that one
        // "free" could then make the truth exceed the cap. Within the limit it cannot: the
        // truth is at most the count less the one spurious entry, plus the start.
        let status = self.status(now);
        let free = self.counts_today(instance_id, now) && status.used <= self.limit;
        // The instance-hours budget binds a free start too: it runs hours like any other.
        if self
            .hours_budget
            .is_some_and(|b| status.instance_hours >= b)
        {
            return Err(CapError::Exhausted(format!(
                "instance-hours budget spent: {status}"
            )));
        }
        if !free && status.remaining == 0 {
            return Err(CapError::Exhausted(format!("burst cap reached: {status}")));
        }
        self.entries.push(Entry {
            key: key.to_string(),
            instance_id: Some(instance_id.to_string()),
            launched_at: now,
            ended_at: None,
        });
        Ok(free)
    }

    /// Instance-hours spent today, up to `now`.
    pub fn instance_hours(&self, now: Timestamp) -> f64 {
        self.counted(now).instance_hours
    }

    fn hours_since(&self, start: Timestamp, now: Timestamp) -> f64 {
        self.entries
            .iter()
            .map(|e| {
                let from = e.launched_at.max(start);
                let to = e.ended_at.unwrap_or(now).min(now);
                (to.as_second() - from.as_second()).max(0) as f64 / 3600.0
            })
            // From +0.0: an empty day is 0, not the -0.0 `sum` starts from.
            .fold(0.0, |total, h| total + h)
    }

    /// Launches still allowed today (0 when blocked or the hours budget is spent).
    pub fn remaining(&self, now: Timestamp) -> u32 {
        self.status(now).remaining
    }

    /// Everything about today's cap, with the day's bounds resolved once.
    pub fn status(&self, now: Timestamp) -> CapStatus {
        let Counted {
            day,
            used,
            instance_hours,
            resets_at: end,
        } = self.counted(now);
        let remaining =
            if self.blocked.is_some() || self.hours_budget.is_some_and(|b| instance_hours >= b) {
                0
            } else {
                self.limit.saturating_sub(used)
            };
        CapStatus {
            used,
            limit: self.limit,
            remaining,
            instance_hours,
            hours_budget: self.hours_budget,
            time_zone: self.tz_name.clone(),
            day,
            resets_at: end,
            resets_in_secs: (end.as_second() - now.as_second()).max(0),
            blocked: self.blocked.clone(),
        }
    }

    /// Records a launch attempt before it is made. Refuses when it would break the cap: this is
    /// the last guard, whatever the policy decided.
    pub fn record_attempt(&mut self, key: &str, now: Timestamp) -> Result<(), CapError> {
        if let Some(why) = &self.blocked {
            return Err(CapError::Blocked(why.clone()));
        }
        if self.entries.iter().any(|e| e.key == key) {
            return Err(CapError::Duplicate(key.into()));
        }
        if self.remaining(now) == 0 {
            return Err(CapError::Exhausted(format!(
                "burst cap reached: {}",
                self.status(now)
            )));
        }
        self.entries.push(Entry {
            key: key.to_string(),
            instance_id: None,
            launched_at: now,
            ended_at: None,
        });
        Ok(())
    }

    /// Ties a launch attempt to the instance it produced.
    pub fn bind(&mut self, key: &str, instance_id: &str) -> Result<(), CapError> {
        let e = self
            .entries
            .iter_mut()
            .find(|e| e.key == key)
            .ok_or_else(|| CapError::Unknown(key.into()))?;
        e.instance_id = Some(instance_id.to_string());
        Ok(())
    }

    /// The instance (by key or instance id) has ended: terminated, its launch failed, or it was
    /// stopped into the warm pool (every open run of it ends).
    pub fn record_ended(&mut self, key_or_id: &str, now: Timestamp) -> Result<(), CapError> {
        let mut found = false;
        for e in self
            .entries
            .iter_mut()
            .filter(|e| e.key == key_or_id || e.instance_id.as_deref() == Some(key_or_id))
        {
            found = true;
            if e.ended_at.is_none() {
                e.ended_at = Some(now.max(e.launched_at));
            }
        }
        if found {
            Ok(())
        } else {
            Err(CapError::Unknown(key_or_id.into()))
        }
    }

    /// Takes back an attempt that certainly launched nothing (EC2 refused the call for good, or
    /// launched fewer than asked). Refuses for an attempt already tied to an instance.
    pub fn withdraw(&mut self, key: &str) -> Result<(), CapError> {
        let i = self
            .entries
            .iter()
            .position(|e| e.key == key)
            .ok_or_else(|| CapError::Unknown(key.into()))?;
        if let Some(id) = &self.entries[i].instance_id {
            return Err(CapError::Duplicate(format!(
                "{key} (already instance {id})"
            )));
        }
        self.entries.remove(i);
        Ok(())
    }

    /// Takes back a warm slave's start ([`CapLedger::record_restart`]) that certainly did not
    /// happen (EC2 refused it, or it was never sent).
    pub fn withdraw_restart(&mut self, key: &str) -> Result<(), CapError> {
        let before = self.entries.len();
        self.entries.retain(|e| e.key != key);
        if self.entries.len() == before {
            return Err(CapError::Unknown(key.into()));
        }
        Ok(())
    }

    /// Brings the ledger in line with what EC2 lists for the group (tags are the source of
    /// truth for what ran): binds attempts to the instances their intent produced, adds burst
    /// instances it did not know, and ends entries whose instance has ended. An entry whose
    /// instance EC2 no longer lists at all (terminated long ago) is ended at `now` once it is
    /// older than `settle`, which overcounts rather than undercounts. Returns what changed.
    pub fn reconcile(&mut self, seen: &[Seen], now: Timestamp, settle_secs: i64) -> Vec<String> {
        let mut changes = Vec::new();
        for s in seen {
            let id = Some(s.instance_id.as_str());
            if self.entries.iter().any(|e| e.instance_id.as_deref() == id) {
                let open = self
                    .entries
                    .iter_mut()
                    .find(|e| e.instance_id.as_deref() == id && e.ended_at.is_none());
                match (open, s.ended_at) {
                    (Some(e), Some(end)) => {
                        e.ended_at = Some(end_of(e.launched_at, end, now));
                        changes.push(format!("{} ended", s.instance_id));
                    }
                    // Stopped, and not just asked to start (EC2 may list a start late).
                    (Some(e), None)
                        if s.stopped
                            && now.as_second() - e.launched_at.as_second() > settle_secs =>
                    {
                        e.ended_at = Some(now.max(e.launched_at));
                        changes.push(format!("{} stopped: its run ended", s.instance_id));
                    }
                    // Running again with no run open: started outside this agent, or its
                    // start's entry was lost. It counts from now (never less than it ran).
                    (None, None) if !s.stopped => {
                        self.entries.push(Entry {
                            key: format!("started#{}@{}", s.instance_id, now.as_second()),
                            instance_id: Some(s.instance_id.clone()),
                            launched_at: now,
                            ended_at: None,
                        });
                        changes.push(format!("{} runs again: counted from now", s.instance_id));
                    }
                    _ => {}
                }
                continue;
            }
            let prefix = s.intent.as_ref().map(|i| format!("{i}#"));
            let unbound = prefix.as_ref().and_then(|p| {
                self.entries
                    .iter_mut()
                    .find(|e| e.instance_id.is_none() && e.key.starts_with(p.as_str()))
            });
            match unbound {
                Some(e) => {
                    e.instance_id = Some(s.instance_id.clone());
                    if let Some(end) = s.ended_at {
                        e.ended_at = Some(end_of(e.launched_at, end, now));
                    }
                    changes.push(format!("{} bound to {}", s.instance_id, e.key));
                }
                None => {
                    let key = format!(
                        "{}#{}",
                        s.intent.as_deref().unwrap_or("adopted"),
                        s.instance_id
                    );
                    self.entries.push(Entry {
                        key,
                        instance_id: Some(s.instance_id.clone()),
                        launched_at: s.launched_at,
                        ended_at: s.ended_at.or_else(|| s.ended_by(now)),
                    });
                    changes.push(format!("{} added from its tags", s.instance_id));
                }
            }
        }
        for e in self.entries.iter_mut() {
            let Some(id) = &e.instance_id else { continue };
            if e.ended_at.is_none()
                && now.as_second() - e.launched_at.as_second() > settle_secs
                && !seen.iter().any(|s| &s.instance_id == id)
            {
                e.ended_at = Some(now);
                changes.push(format!(
                    "{id} no longer listed by EC2; counted as ended now"
                ));
            }
        }
        changes
    }

    /// Drops entries that cannot count any more (ended before today began). Returns how many.
    pub fn prune(&mut self, now: Timestamp) -> usize {
        let (_, start, _) = self.day_bounds(now);
        let start = self.carry(now).map_or(start, |c| c.start.min(start));
        if self.carry.as_ref().is_some_and(|c| c.end <= now) {
            self.carry = None;
        }
        let before = self.entries.len();
        self.entries
            .retain(|e| e.ended_at.is_none_or(|end| end > start));
        before - self.entries.len()
    }

    /// Rebuilds a ledger from what the cloud says (instances tagged as this group's bursts),
    /// replacing whatever was stored. Clears a block.
    pub fn rebuilt_from(mut self, entries: Vec<Entry>) -> Self {
        self.entries = entries;
        self.blocked = None;
        self
    }
}

pub(crate) fn day_start(date: Date, tz: &TimeZone) -> Option<Timestamp> {
    date.to_zoned_datetime(tz.clone())
        .ok()
        .map(|z: ZonedDateTime| z.timestamp())
}

/// When a run that began at `launched_at` (the agent's clock) ended, as EC2 says `end` (EC2's
/// wall clock). An end before the run began means the two clocks disagree (a wall-clock step,
/// a drifted host): the run counts until `now`, the agent's time it learned of the end, so the
/// ledger may overcount, never undercount, the days it ran.
pub fn end_of(launched_at: Timestamp, end: Timestamp, now: Timestamp) -> Timestamp {
    if end < launched_at {
        now.max(launched_at)
    } else {
        end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_end_before_its_run_began_counts_until_the_agent_learned_of_it() {
        let t = |s: i64| Timestamp::from_second(1_800_000_000 + s).unwrap();
        // EC2's wall clock says it ended before the agent's clock says it was launched (a
        // wall-clock step): the run counts until now, never zero seconds.
        assert_eq!(end_of(t(100), t(40), t(500)), t(500));
        // Clocks that agree: EC2's word.
        assert_eq!(end_of(t(100), t(300), t(500)), t(300));
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn tokyo() -> CapLedger {
        CapLedger::new("Asia/Tokyo", 7, None).unwrap()
    }

    #[test]
    fn counts_attempts_and_refuses_past_the_cap() {
        let mut l = tokyo();
        let now = ts("2026-05-20T01:00:00Z"); // 10:00 in Tokyo
        for i in 0..7 {
            l.record_attempt(&format!("i#{i}"), now).unwrap();
        }
        assert_eq!(l.used(now), 7);
        assert_eq!(l.remaining(now), 0);
        let err = l.record_attempt("i#7", now).unwrap_err().to_string();
        assert!(
            err.starts_with("burst cap reached: 7/7 today, resets 00:00 Asia/Tokyo in 14h00m"),
            "{err}"
        );
    }

    #[test]
    fn terminate_and_relaunch_costs_two() {
        let mut l = tokyo();
        let t0 = ts("2026-05-20T01:00:00Z");
        l.record_attempt("a", t0).unwrap();
        l.record_ended("a", ts("2026-05-20T02:00:00Z")).unwrap();
        l.record_attempt("b", ts("2026-05-20T03:00:00Z")).unwrap();
        assert_eq!(l.used(ts("2026-05-20T04:00:00Z")), 2);
    }

    #[test]
    fn failed_launch_still_counts() {
        let mut l = tokyo();
        let t = ts("2026-05-20T01:00:00Z");
        l.record_attempt("x", t).unwrap();
        l.record_ended("x", t).unwrap();
        assert_eq!(l.used(t), 1);
    }

    #[test]
    fn running_at_midnight_counts_toward_the_new_day() {
        let mut l = tokyo();
        // 23:00 Tokyo on the 20th = 14:00Z.
        l.record_attempt("late", ts("2026-05-20T14:00:00Z"))
            .unwrap();
        l.record_attempt("ended-before-midnight", ts("2026-05-20T14:00:00Z"))
            .unwrap();
        l.record_ended("ended-before-midnight", ts("2026-05-20T14:30:00Z"))
            .unwrap();
        let next_day = ts("2026-05-20T15:30:00Z"); // 00:30 Tokyo on the 21st
        assert_eq!(
            l.used(next_day),
            1,
            "only the one still running carries over"
        );
        // Ended 5 minutes into the new day: it ran at a moment of that day.
        l.record_ended("late", ts("2026-05-20T15:05:00Z")).unwrap();
        assert_eq!(l.used(ts("2026-05-20T20:00:00Z")), 1);
        // The day after, it no longer counts.
        assert_eq!(l.used(ts("2026-05-21T16:00:00Z")), 0);
    }

    #[test]
    fn ended_exactly_at_midnight_does_not_carry_over() {
        let mut l = tokyo();
        l.record_attempt("a", ts("2026-05-20T14:00:00Z")).unwrap();
        l.record_ended("a", ts("2026-05-20T15:00:00Z")).unwrap(); // 00:00 Tokyo
        assert_eq!(l.used(ts("2026-05-20T15:00:01Z")), 0);
    }

    #[test]
    fn day_boundaries_follow_the_time_zone_not_utc() {
        let l = tokyo();
        let (date, start, end) = l.day_bounds(ts("2026-05-20T15:00:00Z"));
        assert_eq!(date.to_string(), "2026-05-21");
        assert_eq!(start, ts("2026-05-20T15:00:00Z"));
        assert_eq!(end, ts("2026-05-21T15:00:00Z"));
    }

    #[test]
    fn daylight_saving_days_are_23_and_25_hours() {
        let l = CapLedger::new("America/New_York", 7, None).unwrap();
        let (_, s, e) = l.day_bounds(ts("2026-03-08T12:00:00Z")); // spring forward
        assert_eq!(e.as_second() - s.as_second(), 23 * 3600);
        let (_, s, e) = l.day_bounds(ts("2026-11-01T12:00:00Z")); // fall back
        assert_eq!(e.as_second() - s.as_second(), 25 * 3600);
        let l = CapLedger::new("Europe/London", 7, None).unwrap();
        let (_, s, e) = l.day_bounds(ts("2026-03-29T12:00:00Z"));
        assert_eq!(e.as_second() - s.as_second(), 23 * 3600);
    }

    #[test]
    fn a_midnight_that_does_not_exist_starts_the_day_at_the_first_instant_that_does() {
        // Havana springs forward at 00:00 (to 01:00) on 2025-03-09.
        let l = CapLedger::new("America/Havana", 7, None).unwrap();
        let (date, start, end) = l.day_bounds(ts("2025-03-09T12:00:00Z"));
        assert_eq!(date.to_string(), "2025-03-09");
        let local = start.to_zoned_datetime(TimeZone::get("America/Havana").unwrap());
        assert_eq!(local.strftime("%H:%M").to_string(), "01:00");
        assert_eq!(end.as_second() - start.as_second(), 23 * 3600);
    }

    #[test]
    fn a_new_limit_counts_at_once_down_and_up() {
        let now = ts("2026-05-20T03:00:00Z");
        let mut l = CapLedger::new("Asia/Tokyo", 3, None).unwrap();
        l.record_attempt("a", now).unwrap();
        // The operator stops all spending.
        l.set_limits(0, None);
        assert_eq!(l.remaining(now), 0);
        assert!(matches!(
            l.record_attempt("b", now),
            Err(CapError::Exhausted(_))
        ));
        // And allows more.
        l.set_limits(5, None);
        assert_eq!(l.remaining(now), 4);
        l.record_attempt("b", now).unwrap();
        assert_eq!(l.used(now), 2);
    }

    #[test]
    fn a_new_time_zone_never_grants_a_fresh_day() {
        let mut l = CapLedger::new("Asia/Tokyo", 3, None).unwrap();
        for k in ["a", "b", "c"] {
            l.record_attempt(k, ts("2026-05-20T01:00:00Z")).unwrap();
            l.record_ended(k, ts("2026-05-20T04:00:00Z")).unwrap();
        }
        // 08:00 UTC: Tokyo's May 20 (15:00 UTC May 19 .. 15:00 UTC May 20) is spent. In
        // Los Angeles, May 20 began at 07:00 UTC, after those three ended.
        let at8 = ts("2026-05-20T08:00:00Z");
        assert_eq!(l.remaining(at8), 0);
        assert!(l.set_time_zone("America/Los_Angeles", at8).unwrap());
        assert_eq!(l.used(at8), 3);
        assert_eq!(l.remaining(at8), 0);
        assert!(l.record_attempt("d", at8).is_err());
        let st = l.status(at8);
        assert_eq!(st.time_zone, "America/Los_Angeles");
        assert_eq!(
            st.resets_at,
            ts("2026-05-20T15:00:00Z"),
            "Tokyo's day binds"
        );
        // A second switch does not shed it either (the carried windows merge).
        let mut twice = l.clone();
        assert!(twice.set_time_zone("Pacific/Honolulu", at8).unwrap());
        assert_eq!(twice.remaining(at8), 0);
        // After Tokyo's day, only the new zone's own day counts.
        let at16 = ts("2026-05-20T16:00:00Z");
        assert_eq!(l.remaining(at16), 3);
        l.prune(at16);
        assert!(l.carry(at16).is_none());
        // The same zone again is no change.
        assert!(!l.set_time_zone("America/Los_Angeles", at16).unwrap());
    }

    /// The warm pool's rule: a slave stopped and started again the same local day costs one
    /// unit in all; started on a later day it counts once on that day; stopped across midnight
    /// it does not count on the new day. Past the cap only a free restart is allowed.
    #[test]
    fn a_warm_slave_started_again_the_same_day_costs_nothing_more() {
        let mut l = CapLedger::new("UTC", 2, None).unwrap();
        l.record_attempt("a#1", ts("2026-05-20T10:00:00Z")).unwrap();
        l.bind("a#1", "i-1").unwrap();
        l.record_attempt("b#1", ts("2026-05-20T10:00:00Z")).unwrap();
        l.bind("b#1", "i-2").unwrap();
        // Both stopped at noon: the day has spent both units.
        l.record_ended("i-1", ts("2026-05-20T12:00:00Z")).unwrap();
        l.record_ended("i-2", ts("2026-05-20T12:00:00Z")).unwrap();
        let at18 = ts("2026-05-20T18:00:00Z");
        assert_eq!(l.remaining(at18), 0);
        assert!(
            l.record_attempt("c#1", at18).is_err(),
            "a launch is refused"
        );
        assert_eq!(l.record_restart("r1", "i-1", at18), Ok(true), "free");
        assert_eq!(l.used(at18), 2, "i-1 counts once today");
        // Stopped again before midnight: nothing on the 21st.
        l.record_ended("i-1", ts("2026-05-20T20:00:00Z")).unwrap();
        let next = ts("2026-05-21T09:00:00Z");
        assert_eq!(l.used(next), 0);
        // Started on the 21st: one unit there, refused once the day is spent.
        assert_eq!(l.record_restart("r2", "i-1", next), Ok(false));
        assert_eq!(l.record_restart("r3", "i-2", next), Ok(false));
        assert_eq!(l.used(next), 2);
        l.record_ended("i-2", ts("2026-05-21T10:00:00Z")).unwrap();
        assert!(matches!(
            l.record_restart("r4", "i-3", ts("2026-05-21T11:00:00Z")),
            Err(CapError::Exhausted(_))
        ));
        assert_eq!(
            l.record_restart("r5", "i-2", ts("2026-05-21T11:00:00Z")),
            Ok(true)
        );
        // An overcounted day (rebuilt from tags: 3 counted, limit 2) grants no free start: the
        // instance may be counted without having run.
        let mut over = CapLedger::new("UTC", 2, None).unwrap();
        for (k, id) in [("a#1", "i-1"), ("a#2", "i-2"), ("a#3", "i-3")] {
            over.record_attempt(k, ts("2026-05-20T01:00:00Z")).ok();
            over.entries.push(Entry {
                key: format!("{k}-rebuilt"),
                instance_id: Some(id.into()),
                launched_at: ts("2026-05-20T01:00:00Z"),
                ended_at: Some(ts("2026-05-20T02:00:00Z")),
            });
        }
        over.entries.retain(|e| e.instance_id.is_some());
        assert_eq!(over.used(ts("2026-05-20T03:00:00Z")), 3);
        assert!(over
            .record_restart("r6", "i-1", ts("2026-05-20T03:00:00Z"))
            .is_err());
        // Running at midnight still counts on the new day, as a launched slave does.
        assert_eq!(l.used(ts("2026-05-22T01:00:00Z")), 2);
        // Hours are the runs' sum, not the span from the first launch.
        let mut h = CapLedger::new("UTC", 7, None).unwrap();
        h.record_attempt("a#1", ts("2026-05-20T10:00:00Z")).unwrap();
        h.bind("a#1", "i-1").unwrap();
        h.record_ended("i-1", ts("2026-05-20T11:00:00Z")).unwrap();
        h.record_restart("r", "i-1", ts("2026-05-20T15:00:00Z"))
            .unwrap();
        let hrs = h.instance_hours(ts("2026-05-20T15:30:00Z"));
        assert!((hrs - 1.5).abs() < 1e-9, "{hrs}");
    }

    /// What EC2 lists settles a warm slave's runs: stopped long enough ends its run; running
    /// again with no run open (started outside the agent, or the start's entry lost) opens one.
    #[test]
    fn reconcile_follows_stops_and_starts() {
        let mut l = CapLedger::new("UTC", 7, None).unwrap();
        l.record_attempt("a#1", ts("2026-05-20T10:00:00Z")).unwrap();
        l.bind("a#1", "i-1").unwrap();
        let seen = |stopped| Seen {
            instance_id: "i-1".into(),
            intent: Some("a".into()),
            launched_at: ts("2026-05-20T10:00:00Z"),
            ended_at: None,
            stopped,
            stopped_by: None,
        };
        let at = ts("2026-05-20T12:00:00Z");
        assert_eq!(l.reconcile(&[seen(true)], at, 300).len(), 1);
        assert_eq!(l.entries()[0].ended_at, Some(at));
        assert!(l.reconcile(&[seen(true)], at, 300).is_empty(), "once");
        let later = ts("2026-05-21T12:00:00Z");
        assert_eq!(l.used(later), 0);
        assert_eq!(l.reconcile(&[seen(false)], later, 300).len(), 1);
        assert_eq!(l.used(later), 1, "running again counts on the day it runs");
        // A start just asked for is not ended by a listing that still says stopped.
        l.record_ended("i-1", ts("2026-05-21T13:00:00Z")).unwrap();
        let t = ts("2026-05-21T14:00:00Z");
        l.record_restart("r", "i-1", t).unwrap();
        assert!(l
            .reconcile(&[seen(true)], ts("2026-05-21T14:01:00Z"), 300)
            .is_empty());
        // A restart past midnight with yesterday's entries pruned: a slave pooled at 23:00 is
        // added from its tags as having run until its pool tag's stop deadline, not until now,
        // so it does not count on the new day.
        let mut fresh = CapLedger::new("UTC", 7, None).unwrap();
        let pooled = Seen {
            stopped_by: Some(ts("2026-05-20T23:10:00Z")),
            ..seen(true)
        };
        let after = ts("2026-05-21T01:00:00Z");
        assert_eq!(
            fresh
                .reconcile(std::slice::from_ref(&pooled), after, 300)
                .len(),
            1
        );
        assert_eq!(fresh.used(after), 0);
        assert_eq!(
            fresh.used(ts("2026-05-20T23:30:00Z")),
            1,
            "it ran on the 20th"
        );
        // Without the tag's time: counted until now (more, never less).
        let mut blind = CapLedger::new("UTC", 7, None).unwrap();
        blind.reconcile(&[seen(true)], after, 300);
        assert_eq!(blind.used(after), 1);
    }

    #[test]
    fn hours_budget_is_a_second_limit() {
        let mut l = CapLedger::new("UTC", 7, Some(2.0)).unwrap();
        l.record_attempt("a", ts("2026-05-20T00:00:00Z")).unwrap();
        assert_eq!(l.remaining(ts("2026-05-20T01:00:00Z")), 6);
        assert!((l.instance_hours(ts("2026-05-20T01:30:00Z")) - 1.5).abs() < 1e-9);
        assert_eq!(l.remaining(ts("2026-05-20T02:00:00Z")), 0, "2 h spent");
        // Hours from before midnight don't count toward the new day.
        assert!((l.instance_hours(ts("2026-05-21T00:30:00Z")) - 0.5).abs() < 1e-9);
    }

    #[test]
    fn blocked_ledger_refuses_every_launch() {
        let mut l = tokyo().blocked("cap-ledger.json: line 3 column 7: expected value");
        let now = ts("2026-05-20T01:00:00Z");
        assert_eq!(l.remaining(now), 0);
        assert!(matches!(
            l.record_attempt("a", now),
            Err(CapError::Blocked(_))
        ));
        assert!(l.status(now).to_string().contains("ledger unavailable"));
        let l = l.rebuilt_from(vec![]);
        assert_eq!(l.remaining(now), 7);
    }

    #[test]
    fn prune_keeps_what_still_counts() {
        let mut l = tokyo();
        l.record_attempt("old", ts("2026-05-18T01:00:00Z")).unwrap();
        l.record_ended("old", ts("2026-05-18T02:00:00Z")).unwrap();
        l.record_attempt("running", ts("2026-05-18T01:00:00Z"))
            .unwrap();
        assert_eq!(l.prune(ts("2026-05-20T01:00:00Z")), 1);
        assert_eq!(l.entries().len(), 1);
        assert_eq!(l.used(ts("2026-05-20T01:00:00Z")), 1);
    }

    #[test]
    fn bind_and_end_by_instance_id() {
        let mut l = tokyo();
        let t = ts("2026-05-20T01:00:00Z");
        l.record_attempt("intent-1#0", t).unwrap();
        l.bind("intent-1#0", "i-0abc").unwrap();
        l.record_ended("i-0abc", t).unwrap();
        assert!(l.entries()[0].ended_at.is_some());
        assert_eq!(
            l.record_attempt("intent-1#0", t),
            Err(CapError::Duplicate("intent-1#0".into()))
        );
        assert!(l.record_ended("i-unknown", t).is_err());
    }

    #[test]
    fn withdraw_takes_back_only_attempts_that_launched_nothing() {
        let mut l = tokyo();
        let now = ts("2026-05-20T03:00:00Z");
        l.record_attempt("x#1", now).unwrap();
        l.record_attempt("x#2", now).unwrap();
        l.bind("x#1", "i-1").unwrap();
        assert!(l.withdraw("x#1").is_err(), "bound to an instance");
        l.withdraw("x#2").unwrap();
        assert_eq!(l.used(now), 1);
        assert!(matches!(l.withdraw("x#9"), Err(CapError::Unknown(_))));
    }

    #[test]
    fn reconcile_binds_adds_and_ends_from_what_ec2_lists() {
        let mut l = tokyo();
        let t0 = ts("2026-05-20T03:00:00Z");
        l.record_attempt("a#1", t0).unwrap();
        l.record_attempt("a#2", t0).unwrap();
        l.record_attempt("old#1", t0).unwrap();
        l.bind("old#1", "i-gone").unwrap();
        let now = ts("2026-05-20T04:00:00Z");
        let seen = vec![
            Seen {
                instance_id: "i-1".into(),
                intent: Some("a".into()),
                launched_at: t0,
                ended_at: None,
                stopped: false,
                stopped_by: None,
            },
            Seen {
                instance_id: "i-2".into(),
                intent: Some("a".into()),
                launched_at: t0,
                ended_at: Some(ts("2026-05-20T03:30:00Z")),
                stopped: false,
                stopped_by: None,
            },
            Seen {
                instance_id: "i-stranger".into(),
                intent: Some("b".into()),
                launched_at: t0,
                ended_at: None,
                stopped: false,
                stopped_by: None,
            },
        ];
        let changes = l.reconcile(&seen, now, 600);
        assert_eq!(changes.len(), 4, "{changes:?}");
        let by_id = |id: &str| {
            l.entries()
                .iter()
                .find(|e| e.instance_id.as_deref() == Some(id))
                .cloned()
                .unwrap()
        };
        assert_eq!(by_id("i-1").key, "a#1");
        assert_eq!(by_id("i-2").ended_at, Some(ts("2026-05-20T03:30:00Z")));
        assert_eq!(by_id("i-stranger").key, "b#i-stranger");
        assert_eq!(by_id("i-gone").ended_at, Some(now));
        assert_eq!(l.used(now), 4);
        // Idempotent: a second pass changes nothing.
        assert!(l.reconcile(&seen, now, 600).is_empty());
    }

    #[test]
    fn a_run_ended_by_ec2s_clock_just_before_a_day_the_agent_entered_early_counts_for_it() {
        // UTC day 2026-05-21. The agent's clock was 90 s ahead of the wall (EC2's) clock at
        // midnight, and has slewed back to 50 s since: a run EC2 says ended at 23:59:05 was
        // still running when the agent's day began (at 23:58:30 by EC2's clock).
        let mut l = CapLedger::new("UTC", 3, None).unwrap();
        l.entries.push(Entry {
            key: "bi-1#i-1".into(),
            instance_id: Some("i-1".into()),
            launched_at: ts("2026-05-20T23:10:00Z"),
            ended_at: Some(ts("2026-05-20T23:59:05Z")),
        });
        let now = ts("2026-05-21T00:20:00Z");
        assert_eq!(l.used(now), 0, "without the skew it does not count");
        l.set_skew(90, ts("2026-05-21T00:00:30Z"));
        l.set_skew(-50, now);
        assert_eq!(l.used(now), 1);
        assert!(l.counts_today("i-1", now));
        // The next day starts from the skew seen in it.
        let tomorrow = ts("2026-05-22T00:20:00Z");
        l.set_skew(0, tomorrow);
        assert_eq!(l.used(tomorrow), 0);
    }

    #[test]
    fn a_run_ec2_dates_after_the_agents_now_ran_today() {
        // The agent's clock is an hour behind EC2's (a copy started on a host whose clock is
        // wrong, with nothing to go on): what EC2 launched at 00:03 on the 22nd runs now, at
        // 23:40 on the 21st by the agent's clock, and counts today.
        let mut l = CapLedger::new("UTC", 3, None).unwrap();
        l.entries.push(Entry {
            key: "bi-1#i-1".into(),
            instance_id: Some("i-1".into()),
            launched_at: ts("2026-05-22T00:03:00Z"),
            ended_at: None,
        });
        l.entries.push(Entry {
            key: "bi-1#i-2".into(),
            instance_id: Some("i-2".into()),
            launched_at: ts("2026-05-22T00:03:00Z"),
            ended_at: Some(ts("2026-05-22T00:20:00Z")),
        });
        let now = ts("2026-05-21T23:40:00Z");
        assert_eq!(l.used(now), 2);
    }
}
