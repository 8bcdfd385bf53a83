//! The records the desk reads (`burst-agent fleet`), written into the shared table by the agent
//! that holds the site's lease: the site's status (its fleet, cap and last decision), each
//! slave's runs (what EC2 bills) and the time held launches left the site short. An agent
//! standing by marks itself instead, so a copy of the master shows up on the desk.
//!
//! What to write is burst-core's (`usage`); this only carries it to the table. Nothing here
//! is read back to decide anything, and a table that cannot be written costs a warning and a
//! retry, never a tick.

use crate::model::{InstanceInfo, InstanceState};
use crate::table::Table;
use crate::usage::{self, Held, Run, RunChange, Shortfalls, SiteStatus};
use jiff::tz::TimeZone;
use jiff::Timestamp;

/// How often an unchanged status, a standby's mark and a lasting shortfall are written again.
pub(super) const REFRESH_SECS: i64 = 300;

pub(super) struct SiteRecorder {
    table: Table,
    /// This agent's lease holder id (`HOST/NONCE`).
    me: String,
    /// The site's runs as the table has them; `None`: read them again first (at the start, after
    /// a write that failed, after standing by while another agent wrote).
    runs: Option<Vec<Run>>,
    written: Option<SiteStatus>,
    shortfalls: Shortfalls,
    standby_marked: Option<(Timestamp, String)>,
}

/// What the holder's tick hands over.
pub(super) struct HolderTick<'a> {
    pub status: SiteStatus,
    /// This install's instances as the tick's observation listed them; `None` when the tick
    /// could not observe the fleet (runs wait for one that did).
    pub listed: Option<&'a [InstanceInfo]>,
    pub holds: Vec<(Held, u32)>,
    /// The time held ticks are credited with at most (a stalled agent does not invent hours).
    pub max_gap_secs: u64,
}

impl SiteRecorder {
    pub(super) fn new(table: Table, me: String) -> Self {
        SiteRecorder {
            table,
            me,
            runs: None,
            written: None,
            shortfalls: Shortfalls::default(),
            standby_marked: None,
        }
    }

    pub(super) fn me(&self) -> &str {
        &self.me
    }

    /// One tick of the lease holder at wall-clock `now`.
    pub(super) async fn holder(&mut self, t: HolderTick<'_>, now: Timestamp) {
        self.standby_marked = None;
        let tz = TimeZone::get(&t.status.time_zone).unwrap_or(TimeZone::UTC);
        if let Some(listed) = t.listed {
            self.runs(listed, &tz, now).await;
        }
        for s in self.shortfalls.tick(
            &t.status.day,
            t.holds,
            now,
            t.max_gap_secs,
            REFRESH_SECS as u64,
        ) {
            if let Err(e) = self.table.add_shortfall(&s).await {
                tracing::warn!(day = %s.day, held = s.held.name(),
                    "ledger table: shortfall record not written yet (retried): {e}");
                self.shortfalls.unwritten(s);
            }
        }
        let due = match &self.written {
            Some(w) => !w.same_as(&t.status) || now.as_second() - w.at.as_second() >= REFRESH_SECS,
            None => true,
        };
        if due {
            match self.table.put_status(&t.status).await {
                Ok(()) => self.written = Some(t.status),
                Err(e) => tracing::warn!("ledger table: the site's status not written yet: {e}"),
            }
        }
    }

    /// One tick of an agent standing by for `holder` (`None`: not known yet).
    pub(super) async fn standby(&mut self, holder: Option<&str>, now: Timestamp) {
        // Another agent writes the records now: read them afresh when this one holds again.
        self.runs = None;
        self.written = None;
        self.shortfalls = Shortfalls::default();
        let for_holder = holder.unwrap_or("(not read yet)").to_string();
        let due = match &self.standby_marked {
            Some((at, h)) => *h != for_holder || now.as_second() - at.as_second() >= REFRESH_SECS,
            None => true,
        };
        if due {
            match self.table.put_standby(&self.me, &for_holder, now).await {
                Ok(()) => self.standby_marked = Some((now, for_holder)),
                Err(e) => tracing::debug!("ledger table: standby mark not written: {e}"),
            }
        }
    }

    async fn runs(&mut self, listed: &[InstanceInfo], tz: &TimeZone, now: Timestamp) {
        if self.runs.is_none() {
            match self.table.read_site(now.as_second()).await {
                Ok(recs) => self.runs = Some(recs.runs),
                Err(e) => {
                    tracing::warn!(
                        "ledger table: the site's runs could not be read (retried): {e}"
                    );
                    return;
                }
            }
        }
        let Some(mut runs) = self.runs.take() else {
            return;
        };
        let seen: Vec<usage::Seen<'_>> = listed
            .iter()
            .map(|i| usage::Seen {
                id: &i.id,
                running: i.state == InstanceState::Running,
                launched_at: i.ec2_launched_at,
                ended_at: i.ended_at,
                instance_type: i.instance_type.as_deref(),
            })
            .collect();
        let day = |t: Timestamp| tz.to_datetime(t).date().to_string();
        for change in usage::runs_step(&runs, &seen, now) {
            let wrote = match &change {
                RunChange::Open(r) => self.table.open_run(r, &day(r.start)).await,
                RunChange::Close {
                    instance,
                    start,
                    end,
                } => {
                    self.table
                        .close_run(instance, *start, *end, &day(*end))
                        .await
                }
            };
            match wrote {
                Ok(()) => {
                    tracing::debug!(?change, "ledger table: run recorded");
                    match change {
                        RunChange::Open(r) => runs.push(r),
                        RunChange::Close {
                            instance,
                            start,
                            end,
                        } => {
                            for r in runs.iter_mut() {
                                if r.instance == instance && r.start == start {
                                    r.end = Some(end);
                                }
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!("ledger table: a run record not written yet (retried): {e}");
                    // Read the table again next tick and work out what is left from there.
                    return;
                }
            }
        }
        // Closed runs of instances EC2 no longer lists say nothing more.
        runs.retain(|r| r.end.is_none() || listed.iter().any(|i| i.id == r.instance));
        self.runs = Some(runs);
    }
}
