//! The records the desk reads (`burst-agent fleet`), written into the shared table by the agent
//! that holds the site's lease: the site's status (its fleet, cap and last decision), each
//! slave's runs (what EC2 bills) and the time held launches left the site short. An agent
//! standing by marks itself instead, so a copy of the master shows up on the desk.
//!
//! What to write is burst-core's (`usage`); this carries it to the table on a task of its own,
//! fed by the tick through a small queue: a slow or unreachable table never holds up a tick or
//! the watchdog. A full queue keeps the tick's shortfalls for the next feed, so no held second
//! is lost; the runs are worked out again from the next listing. Nothing here is read back to
//! decide anything, and every write is idempotent (a retry after a lost answer counts once).

use crate::model::{InstanceInfo, InstanceState};
use crate::table::Table;
use crate::usage::{self, Held, Run, RunChange, Shortfall, Shortfalls, SiteStatus};
use burst_edge::fenced::LeaseEnd;
use jiff::tz::TimeZone;
use jiff::Timestamp;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::mpsc;

/// How often an unchanged status, a standby's mark, a lasting shortfall and a running slave's
/// sighting are written again.
pub(super) const REFRESH_SECS: i64 = 300;
/// Feeds waiting for the writer: a table that answers slowly for this many ticks makes the tick
/// keep its shortfalls and skip the rest until it catches up.
const QUEUE: usize = 8;

/// What one tick hands the writer.
enum Feed {
    Holder {
        /// `None` until the agent adopted the site (its holds are counted all the same).
        status: Option<Box<SiteStatus>>,
        /// This install's instances as the tick's observation listed them; `None` when the tick
        /// could not observe the fleet (runs wait for one that did).
        listed: Option<Vec<InstanceInfo>>,
        shortfalls: Vec<Shortfall>,
    },
    Standby {
        holder: String,
        /// What this agent held while it acted, written as its own (keyed by writer).
        shortfalls: Vec<Shortfall>,
    },
}

/// Shortfalls a dead writer left unsent are kept up to this many (then the oldest go).
const CARRY_MAX: usize = 1000;

/// The tick's side: the shortfalls' accounting (each tick's holds, on the tick's own clock) and
/// the queue to the writer task.
pub(super) struct SiteFeed {
    tx: Option<mpsc::Sender<(Timestamp, Feed)>>,
    task: tokio::task::JoinHandle<()>,
    me: String,
    shortfalls: Shortfalls,
    /// Shortfalls a full queue sent back: they go with the next feed.
    carry: Vec<Shortfall>,
    full_said: bool,
    /// The last tick's `max_gap`, for a flush.
    max_gap: u64,
}

impl SiteFeed {
    /// Starts the writer for `table` as `me`, writing the holder's records only while `lease`
    /// is this agent's.
    pub(super) fn spawn(table: Table, me: String, lease: LeaseEnd) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let writer = Writer {
            table,
            me: me.clone(),
            lease,
            runs: None,
            seen_written: BTreeMap::new(),
            written: None,
            standby_marked: None,
            retry: Vec::new(),
        };
        SiteFeed {
            tx: Some(tx),
            task: tokio::spawn(writer.run(rx)),
            me,
            shortfalls: Shortfalls::default(),
            carry: Vec::new(),
            full_said: false,
            max_gap: 30,
        }
    }

    pub(super) fn me(&self) -> &str {
        &self.me
    }

    /// The holder's tick at wall-clock `now` on local day `day`: its status (`None` before
    /// adoption), its listing, and this tick's holds (credited until the next tick, at most
    /// `max_gap` seconds).
    pub(super) fn holder(
        &mut self,
        day: &str,
        status: Option<SiteStatus>,
        listed: Option<Vec<InstanceInfo>>,
        holds: Vec<(Held, u32)>,
        max_gap: u64,
        now: Timestamp,
    ) {
        self.max_gap = max_gap;
        let mut shortfalls = std::mem::take(&mut self.carry);
        shortfalls.extend(
            self.shortfalls
                .tick(day, holds, now, max_gap, REFRESH_SECS as u64),
        );
        self.send(
            now,
            Feed::Holder {
                status: status.map(Box::new),
                listed,
                shortfalls,
            },
        );
    }

    /// A standby's tick: it stands by for `holder`. What it held while it acted is credited
    /// until now and written as its own.
    pub(super) fn standby(&mut self, holder: &str, now: Timestamp) {
        let mut shortfalls = std::mem::take(&mut self.carry);
        shortfalls.extend(self.shortfalls.flush(now, self.max_gap));
        self.send(
            now,
            Feed::Standby {
                holder: holder.to_string(),
                shortfalls,
            },
        );
    }

    fn send(&mut self, now: Timestamp, feed: Feed) {
        let Some(tx) = &self.tx else { return };
        match tx.try_send((now, feed)) {
            Ok(()) => self.full_said = false,
            Err(
                mpsc::error::TrySendError::Full((_, f)) | mpsc::error::TrySendError::Closed((_, f)),
            ) => {
                let (Feed::Holder { shortfalls, .. } | Feed::Standby { shortfalls, .. }) = f;
                self.carry = shortfalls;
                if self.carry.len() > CARRY_MAX {
                    let extra = self.carry.len() - CARRY_MAX;
                    self.carry.drain(..extra);
                }
                if !self.full_said {
                    tracing::warn!("ledger table: the desk's records fall behind (the table answers slowly); they catch up when it does");
                    self.full_said = true;
                }
            }
        }
    }

    /// At a clean stop, still as the holder: the last tick's holds credited until `now`, and
    /// everything queued written, for at most `within` (`aws.call_timeout` and more: a slow
    /// answer must not cut the last records).
    pub(super) async fn finish(mut self, now: Timestamp, within: Duration) {
        let mut shortfalls = std::mem::take(&mut self.carry);
        shortfalls.extend(self.shortfalls.flush(now, self.max_gap));
        let tx = self.tx.take();
        let task = &mut self.task;
        let left = async move {
            if let Some(tx) = tx {
                if !shortfalls.is_empty() {
                    let feed = Feed::Holder {
                        status: None,
                        listed: None,
                        shortfalls,
                    };
                    let _ = tx.send((now, feed)).await;
                }
            }
            let _ = task.await;
        };
        if tokio::time::timeout(within, left).await.is_err() {
            tracing::warn!("ledger table: the desk's last records were not all written at stop");
            self.task.abort();
        }
    }
}

/// The writer task's side.
struct Writer {
    table: Table,
    me: String,
    lease: LeaseEnd,
    /// The site's runs as the table has them; `None`: read them again first (at the start, after
    /// a write that failed, after standing by while another agent wrote).
    runs: Option<Vec<Run>>,
    /// When each open run's sighting was last written.
    seen_written: BTreeMap<(String, Timestamp), Timestamp>,
    written: Option<SiteStatus>,
    standby_marked: Option<(Timestamp, String)>,
    /// Shortfalls whose write failed: written again as they are.
    retry: Vec<Shortfall>,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<(Timestamp, Feed)>) {
        while let Some((now, feed)) = rx.recv().await {
            match feed {
                Feed::Holder {
                    status,
                    listed,
                    shortfalls,
                } => {
                    self.shortfalls(shortfalls).await;
                    if let Some(status) = status {
                        self.holder(*status, listed, now).await;
                    }
                }
                Feed::Standby { holder, shortfalls } => {
                    self.shortfalls(shortfalls).await;
                    self.standby(&holder, now).await;
                }
            }
        }
        // The queue is closed (a clean stop): one more try for what failed.
        self.shortfalls(Vec::new()).await;
        for s in &self.retry {
            tracing::warn!(day = %s.day, held = s.held.name(), secs = s.secs,
                "ledger table: a shortfall record could not be written before the stop");
        }
    }

    /// Writes `new` and the ones that failed before. Each is this agent's own record of the
    /// time it held (keyed by writer): written whether or not it still holds the lease.
    async fn shortfalls(&mut self, new: Vec<Shortfall>) {
        self.retry.extend(new);
        let mut left = Vec::new();
        for s in std::mem::take(&mut self.retry) {
            if let Err(e) = self.table.put_shortfall(&s, &self.me).await {
                tracing::warn!(day = %s.day, held = s.held.name(),
                    "ledger table: shortfall record not written yet (retried): {e}");
                left.push(s);
            }
        }
        self.retry = left;
    }

    async fn holder(
        &mut self,
        status: SiteStatus,
        listed: Option<Vec<InstanceInfo>>,
        now: Timestamp,
    ) {
        self.standby_marked = None;
        // A tick decided as holder; the lease may have ended since. Only the holder writes
        // the site's status and runs.
        if self.lease.fence().is_none() {
            self.runs = None;
            return;
        }
        if let Some(listed) = &listed {
            let tz = TimeZone::get(&status.time_zone).unwrap_or(TimeZone::UTC);
            self.runs(listed, &tz, now).await;
        }
        let due = match &self.written {
            Some(w) => !w.same_as(&status) || now.as_second() - w.at.as_second() >= REFRESH_SECS,
            None => true,
        };
        if due {
            match self.table.put_status(&status).await {
                Ok(()) => self.written = Some(status),
                Err(e) => tracing::warn!("ledger table: the site's status not written yet: {e}"),
            }
        }
    }

    async fn standby(&mut self, holder: &str, now: Timestamp) {
        // Another agent writes the records now: read them afresh when this one holds again.
        self.runs = None;
        self.written = None;
        let due = match &self.standby_marked {
            Some((at, h)) => h != holder || now.as_second() - at.as_second() >= REFRESH_SECS,
            None => true,
        };
        if due {
            match self.table.put_standby(&self.me, holder, now).await {
                Ok(()) => self.standby_marked = Some((now, holder.to_string())),
                Err(e) => tracing::debug!("ledger table: standby mark not written: {e}"),
            }
        }
    }

    /// Brings the site's runs in the table up to this listing: opened, sighted, closed.
    async fn runs(&mut self, listed: &[InstanceInfo], tz: &TimeZone, now: Timestamp) {
        if self.runs.is_none() && !self.read_runs(now).await {
            return;
        }
        let Some(mut runs) = self.runs.take() else {
            return;
        };
        let seen = seen_of(listed);
        for change in usage::runs_step(&runs, &seen, now) {
            // `Ok(true)`: a sighting was written.
            let wrote = self.write_change(&change, &runs, tz).await;
            let sighted = match wrote {
                Ok(sighted) => sighted,
                Err(e) => {
                    tracing::warn!("ledger table: a run record not written yet (retried): {e}");
                    // Read the table again next tick and work out what is left from there.
                    return;
                }
            };
            self.note_change(change, sighted, &mut runs, now);
        }
        // Closed runs of instances EC2 no longer lists say nothing more.
        runs.retain(|r| r.end.is_none() || listed.iter().any(|i| i.id == r.instance));
        self.runs = Some(runs);
    }

    /// Reads the site's runs (and when each open one's sighting was written) from the table;
    /// false when they could not be read.
    async fn read_runs(&mut self, now: Timestamp) -> bool {
        match self.table.read_runs(now.as_second()).await {
            Ok(recs) => {
                self.seen_written = recs
                    .runs
                    .iter()
                    .filter_map(|r| Some(((r.instance.clone(), r.start), r.seen_at?)))
                    .collect();
                self.runs = Some(recs.runs);
                true
            }
            Err(e) => {
                tracing::warn!("ledger table: the site's runs could not be read (retried): {e}");
                false
            }
        }
    }

    /// Writes one change of the runs to the table. `Ok(true)`: a sighting was written.
    async fn write_change(
        &self,
        change: &RunChange,
        runs: &[Run],
        tz: &TimeZone,
    ) -> Result<bool, crate::aws::AwsError> {
        let day = |t: Timestamp| tz.to_datetime(t).date().to_string();
        match change {
            RunChange::Open(r) => self.table.open_run(r, &day(r.start)).await.map(|()| false),
            RunChange::Seen {
                instance,
                start,
                at,
            } => {
                let key = (instance.clone(), *start);
                let stale = self
                    .seen_written
                    .get(&key)
                    .is_none_or(|w| at.as_second() - w.as_second() >= REFRESH_SECS);
                match runs
                    .iter()
                    .find(|r| r.instance == *instance && r.start == *start)
                {
                    Some(r) if stale => self.table.touch_run(r, *at).await.map(|()| true),
                    _ => Ok(false),
                }
            }
            RunChange::Close {
                instance,
                start,
                end,
            } => match runs
                .iter()
                .find(|r| r.instance == *instance && r.start == *start)
            {
                Some(r) => self
                    .table
                    .close_run(r, *end, &day(*end))
                    .await
                    .map(|()| false),
                None => Ok(false),
            },
        }
    }

    /// A change written: the runs and the sightings' times follow it.
    fn note_change(
        &mut self,
        change: RunChange,
        sighted: bool,
        runs: &mut Vec<Run>,
        now: Timestamp,
    ) {
        match change {
            RunChange::Open(r) => {
                self.seen_written.insert((r.instance.clone(), r.start), now);
                runs.push(r);
            }
            RunChange::Seen {
                instance,
                start,
                at,
            } => {
                let key = (instance, start);
                if sighted {
                    self.seen_written.insert(key.clone(), at);
                }
                for r in runs
                    .iter_mut()
                    .filter(|r| (&r.instance, r.start) == (&key.0, key.1))
                {
                    r.seen_at = Some(at);
                }
            }
            RunChange::Close {
                instance,
                start,
                end,
            } => {
                self.seen_written.remove(&(instance.clone(), start));
                for r in runs.iter_mut() {
                    if r.instance == instance && r.start == start {
                        r.end = Some(end);
                    }
                }
            }
        }
    }
}

/// The listed instances as the runs' step reads them.
fn seen_of(listed: &[InstanceInfo]) -> Vec<usage::Seen<'_>> {
    listed
        .iter()
        .map(|i| usage::Seen {
            id: &i.id,
            running: i.state == InstanceState::Running,
            launched_at: i.ec2_launched_at,
            ended_at: i.ended_at.or(i.stopped_at),
            instance_type: i.instance_type.as_deref(),
        })
        .collect()
}
