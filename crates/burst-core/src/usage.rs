//! What a site used of its guarantee, as the desk reads it from the shared table (`burst-agent
//! fleet`): the slaves' billable runs, the time held launches left the site short, how fresh a
//! lease looks, and the month's rows per local day. Pure: the agent writes the records
//! (`daemon::site`), burst-edge's `table` reads them back, this module counts.
//!
//! - A **run** is one span an instance of the site was `running`, from EC2's launch time (the
//!   last start for a warm start) to the step that saw it stop, terminate or vanish: what EC2
//!   bills, to within a tick.
//! - A **shortfall** is a tick whose decision wanted more slaves than a hold let it launch
//!   (the cap, the ledger table, the sync brake, a missing content source, EC2's refusals),
//!   kept per local day and kind as seconds held and the largest number short. [`Shortfalls`]
//!   credits each held tick until the next and hands them out for writing when an episode
//!   ends or every `every` seconds (the daemon: 5 minutes).
//! - The **month** ([`month`]): per local day, units, distinct instances, instance-hours split
//!   at local midnight (EC2's minute minimum, one slave's overlapping runs merged), peak, days
//!   at the cap, seconds held short, and the cost at `[prices]`; [`heat`] is the heat map's
//!   cell. [`lease_look`] says how a person reads the lease item (held, lapsed, released).

use crate::lease;
use crate::policy::{Explanation, Reason};
use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// EC2 bills a Linux instance's run for at least a minute.
pub const MIN_BILLED_SECS: i64 = 60;

/// One span an instance of the site ran.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    pub instance: String,
    /// Empty where EC2 did not say.
    pub instance_type: String,
    pub start: Timestamp,
    /// `None` while it runs.
    pub end: Option<Timestamp>,
    /// The last step that saw it running (the table's copy is refreshed every 5 minutes): where
    /// a run whose end nobody saw ends, so an outage of the agent is never billed as a run.
    #[serde(default)]
    pub seen_at: Option<Timestamp>,
}

impl Run {
    /// Where the run ends for counting at `now`: its end; else, while a holder keeps seeing it
    /// (its `seen_at` within `fresh_secs`), `now`; else its last sighting (unconfirmed).
    pub fn counted_end(&self, now: Timestamp, fresh_secs: i64) -> (Timestamp, bool) {
        match (self.end, self.seen_at) {
            (Some(e), _) => (e, true),
            (None, Some(seen)) if now.as_second() - seen.as_second() > fresh_secs => {
                (seen.max(self.start), false)
            }
            (None, _) => (now.max(self.start), true),
        }
    }
}

/// What a step saw of one of the site's instances.
#[derive(Clone, Debug)]
pub struct Seen<'a> {
    pub id: &'a str,
    /// EC2 says `running`.
    pub running: bool,
    /// EC2's launch time (for a started instance, its last start), never a tag.
    pub launched_at: Option<Timestamp>,
    /// When it terminated or stopped, where EC2's state transition reason says.
    pub ended_at: Option<Timestamp>,
    pub instance_type: Option<&'a str>,
}

/// A run to write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunChange {
    Open(Run),
    /// Still running at `at`.
    Seen {
        instance: String,
        start: Timestamp,
        at: Timestamp,
    },
    Close {
        instance: String,
        start: Timestamp,
        end: Timestamp,
    },
}

/// The runs that start, go on or end at a step that saw `seen` (every instance of the site EC2
/// listed), given the site's `runs` (open and closed) at `now`.
///
/// - An open run whose instance is no longer running, or is not listed, ends: at EC2's end
///   time where it says one inside the run; else at the run's last sighting (a step of this
///   agent, or the table's, refreshed every 5 minutes: an agent that was down does not bill
///   its outage); else `now`.
/// - A running instance with no open run starts one: at EC2's launch time when that is after
///   the instance's last run ended (a launch, a warm start EC2 dated, a start while no agent
///   watched), else `now` (EC2 kept an older launch time).
/// - An open run still running is seen at `now`.
pub fn runs_step(runs: &[Run], seen: &[Seen<'_>], now: Timestamp) -> Vec<RunChange> {
    let mut out = Vec::new();
    let mut open = BTreeSet::new();
    for r in runs.iter().filter(|r| r.end.is_none()) {
        open.insert(r.instance.as_str());
        let listed = seen.iter().find(|s| s.id == r.instance);
        if let Some(s) = listed.filter(|s| s.running) {
            // Started again since it was last seen (a stop and start nobody watched): the run
            // ended where it was last seen, and a new one began when EC2 says it started.
            let last = r.seen_at.unwrap_or(r.start).max(r.start);
            if let Some(started) = s.launched_at.filter(|l| *l > last && *l <= now) {
                out.push(RunChange::Close {
                    instance: r.instance.clone(),
                    start: r.start,
                    end: last,
                });
                out.push(RunChange::Open(Run {
                    instance: r.instance.clone(),
                    instance_type: s.instance_type.unwrap_or_default().to_string(),
                    start: started,
                    end: None,
                    seen_at: Some(now),
                }));
                continue;
            }
            out.push(RunChange::Seen {
                instance: r.instance.clone(),
                start: r.start,
                at: now,
            });
            continue;
        }
        let inside = |t: &Timestamp| *t >= r.start && *t <= now;
        let end = listed
            .and_then(|s| s.ended_at)
            .filter(inside)
            .or(r.seen_at.filter(inside))
            .unwrap_or(now.max(r.start));
        out.push(RunChange::Close {
            instance: r.instance.clone(),
            start: r.start,
            end,
        });
    }
    for s in seen.iter().filter(|s| s.running && !open.contains(s.id)) {
        let last_end = runs
            .iter()
            .filter(|r| r.instance == s.id)
            .filter_map(|r| r.end)
            .max();
        let start = s
            .launched_at
            .filter(|l| *l <= now && last_end.is_none_or(|e| *l >= e))
            .unwrap_or(now);
        out.push(RunChange::Open(Run {
            instance: s.id.to_string(),
            instance_type: s.instance_type.unwrap_or_default().to_string(),
            start,
            end: None,
            seen_at: Some(now),
        }));
    }
    out
}

/// The site at a glance, as its holder last wrote it (the table's `status` item).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteStatus {
    /// The lease holder that wrote it (`HOST/NONCE`).
    pub holder: String,
    /// When, by the writer's wall clock.
    pub at: Timestamp,
    /// The last decision: `hold`, `scale_out` or `scale_in`, as the log line says it, and
    /// its reasons.
    pub action: String,
    pub text: String,
    pub reasons: Vec<String>,
    /// The kinds of hold that kept a launch back (`cap`, `brake`, ...), none when none did.
    #[serde(default)]
    pub holds: Vec<Held>,
    pub in_service: u32,
    /// Launched or syncing, not serving yet.
    pub coming: u32,
    pub draining: u32,
    /// Stopped in the warm pool.
    pub warm: u32,
    /// The day's burst units, as the writer's ledger counts them.
    pub used: u32,
    pub limit: u32,
    /// The writer's local day and its time zone (`cap.time_zone`).
    pub day: String,
    pub time_zone: String,
}

impl SiteStatus {
    /// Whether `other` says the same to a person: the decision, the kinds of hold, the
    /// fleet, the day's units and the holder. The reasons' numbers (a utilization, a count of
    /// seconds) change every tick and are written with the next change or refresh.
    pub fn same_as(&self, other: &SiteStatus) -> bool {
        let key = |s: &SiteStatus| {
            (
                s.holder.clone(),
                s.action.clone(),
                s.holds.clone(),
                (s.in_service, s.coming, s.draining, s.warm),
                (s.used, s.limit),
                (s.day.clone(), s.time_zone.clone()),
            )
        };
        key(self) == key(other)
    }
}

/// What held a launch the policy wanted, as the report groups the reasons.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Held {
    /// The day's burst cap (`DailyCapReached`, `CapLimited`).
    Cap,
    /// The shared ledger table could not confirm the day's count (`LedgerUnavailable`).
    Ledger,
    /// The sync brake (`SyncBroken`).
    Brake,
    /// The content source is missing or empty (`ContentSourceMissing`).
    Source,
    /// EC2 had no capacity or refused the launch (`NoCapacity`, `LaunchRefused`).
    Ec2,
}

impl Held {
    pub const ALL: [Held; 5] = [
        Held::Cap,
        Held::Ledger,
        Held::Brake,
        Held::Source,
        Held::Ec2,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Held::Cap => "cap",
            Held::Ledger => "ledger",
            Held::Brake => "brake",
            Held::Source => "source",
            Held::Ec2 => "ec2",
        }
    }

    pub fn parse(s: &str) -> Option<Held> {
        Held::ALL.into_iter().find(|h| h.name() == s)
    }
}

/// Whether `r` held back a launch the policy wanted (what [`held`] counts).
pub fn is_hold(r: &Reason) -> bool {
    matches!(
        r,
        Reason::DailyCapReached { .. }
            | Reason::CapLimited { .. }
            | Reason::LedgerUnavailable { .. }
            | Reason::SyncBroken { .. }
            | Reason::ContentSourceMissing { .. }
            | Reason::NoCapacity { .. }
            | Reason::LaunchRefused { .. }
    )
}

/// The slaves a decision wanted and a hold kept from launching, by kind of hold (each kind
/// once, its largest shortfall). Empty when nothing was held.
pub fn held(why: &Explanation) -> Vec<(Held, u32)> {
    let mut out: BTreeMap<Held, u32> = BTreeMap::new();
    let want = why.bounded.saturating_sub(why.current);
    for r in &why.reasons {
        let (kind, short) = match r {
            Reason::DailyCapReached { .. } => (Held::Cap, want),
            Reason::CapLimited {
                wanted, allowed, ..
            } => (Held::Cap, wanted.saturating_sub(*allowed)),
            Reason::LedgerUnavailable { .. } => (
                Held::Ledger,
                why.bounded.saturating_sub(why.cap_limited.max(why.current)),
            ),
            Reason::SyncBroken {
                wanted, allowed, ..
            } => (Held::Brake, wanted.saturating_sub(*allowed)),
            Reason::ContentSourceMissing { wanted, .. } => (Held::Source, *wanted),
            Reason::NoCapacity { wanted, .. } | Reason::LaunchRefused { wanted, .. } => {
                (Held::Ec2, *wanted)
            }
            _ => continue,
        };
        if short > 0 {
            let e = out.entry(kind).or_default();
            *e = (*e).max(short);
        }
    }
    out.into_iter().collect()
}

/// Seconds held and the largest shortfall, for one local day and kind of hold, credited from
/// `from` on: one write of one agent (the table keeps each as an item of its own, keyed by
/// `from` and the writer, so a retried write after a lost answer counts once).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shortfall {
    pub day: String,
    pub held: Held,
    pub from: Timestamp,
    pub secs: u64,
    pub max_short: u32,
}

/// A tick's holds on its local day: (when, day, (kind, short)...).
type LastTick = (Timestamp, String, Vec<(Held, u32)>);

/// Credited and not handed out yet: (seconds, largest shortfall, first credited at).
type Pending = (u64, u32, Timestamp);

/// The shortfalls a running agent has not written yet: each tick's holds are credited with the
/// time until the next tick (at most `max_gap` seconds: a stalled agent does not invent hours),
/// and handed out for writing when an episode ends or every `every` seconds while it lasts.
#[derive(Clone, Debug, Default)]
pub struct Shortfalls {
    /// The last tick's holds and when it was.
    last: Option<LastTick>,
    pending: BTreeMap<(String, Held), Pending>,
    written_at: BTreeMap<(String, Held), Timestamp>,
}

impl Shortfalls {
    /// One tick at `now` on local day `day`, with this tick's `holds`. Returns what is due for
    /// writing, each once: a write that fails is retried as it is, never merged into the next.
    pub fn tick(
        &mut self,
        day: &str,
        holds: Vec<(Held, u32)>,
        now: Timestamp,
        max_gap: u64,
        every: u64,
    ) -> Vec<Shortfall> {
        if let Some((then, d, prev)) = self.last.take() {
            let secs = u64::try_from(now.as_second() - then.as_second())
                .unwrap_or(0)
                .min(max_gap);
            for (h, short) in prev {
                let e = self.pending.entry((d.clone(), h)).or_insert((0, 0, then));
                e.0 += secs;
                e.1 = e.1.max(short);
            }
        }
        let holding: BTreeSet<(String, Held)> =
            holds.iter().map(|(h, _)| (day.to_string(), *h)).collect();
        self.last = Some((now, day.to_string(), holds));
        let mut due = Vec::new();
        let keys: Vec<(String, Held)> = self.pending.keys().cloned().collect();
        for k in keys {
            let since = self
                .written_at
                .get(&k)
                .map_or(i64::MAX, |t| now.as_second() - t.as_second());
            let ended = !holding.contains(&k);
            if ended || since >= i64::try_from(every).unwrap_or(i64::MAX) {
                if let Some((secs, max_short, from)) = self.pending.remove(&k) {
                    self.written_at.insert(k.clone(), now);
                    due.push(Shortfall {
                        day: k.0,
                        held: k.1,
                        from,
                        secs,
                        max_short,
                    });
                }
            }
        }
        // Keys no longer held and written have nothing more to say.
        self.written_at
            .retain(|k, _| holding.contains(k) || self.pending.contains_key(k));
        due
    }

    /// Everything not written yet, the last tick's holds credited until `now` (at most
    /// `max_gap` seconds): at a stop, or when another agent takes the site over.
    pub fn flush(&mut self, now: Timestamp, max_gap: u64) -> Vec<Shortfall> {
        let day = self
            .last
            .as_ref()
            .map(|(_, d, _)| d.clone())
            .unwrap_or_default();
        let mut out = self.tick(&day, Vec::new(), now, max_gap, 0);
        out.retain(|s| s.secs > 0);
        *self = Shortfalls::default();
        out
    }
}

/// How a lease item looks to someone reading the table at `now` (a person's question: the
/// agents themselves time a lease on their own clocks, lease.rs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum LeaseLook {
    /// Renewed `age_secs` ago by its holder's clock, within its duration.
    Held { age_secs: i64 },
    /// Not renewed for longer than its duration: its holder is gone, stopped or cut off; a
    /// standby takes it over.
    Lapsed { age_secs: i64 },
    /// Given up on a clean stop.
    Released { age_secs: i64 },
    /// `renewed_at` does not read as a time.
    Unreadable { renewed_at: String },
}

/// How `item`, renewed for `duration_secs` at a time, looks at `now`.
pub fn lease_look(item: &lease::Item, duration_secs: u64, now: Timestamp) -> LeaseLook {
    let Ok(at) = item.renewed_at.parse::<Timestamp>() else {
        return LeaseLook::Unreadable {
            renewed_at: item.renewed_at.clone(),
        };
    };
    let age_secs = now.as_second() - at.as_second();
    if item.released {
        LeaseLook::Released { age_secs }
    } else if age_secs > i64::try_from(duration_secs).unwrap_or(i64::MAX) {
        LeaseLook::Lapsed { age_secs }
    } else {
        LeaseLook::Held { age_secs }
    }
}

/// One local day's numbers (or a month's, in its total).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct DayUse {
    /// The local day; `None` in a month's total.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub day: Option<Date>,
    pub units_used: u32,
    pub unit_limit: u32,
    pub at_cap: bool,
    /// Distinct instances that ran or were counted that day.
    pub instances: u32,
    pub instance_hours: f64,
    /// The most slaves running at once.
    pub peak_slaves: u32,
    /// Seconds a held launch left the site short, by kind.
    pub held_secs: BTreeMap<Held, u64>,
    /// The most slaves a hold kept from launching at once.
    pub max_short: u32,
    /// At the price table's hourly prices; `None` where a type has no price.
    pub cost: Option<f64>,
    /// Instances whose hours that day (or month) are counted only until they were last seen:
    /// their run is open and no agent has seen them for 15 minutes.
    pub unconfirmed: u32,
}

/// What the table holds for one site, as the month report counts it.
#[derive(Clone, Debug, Default)]
pub struct SiteUse {
    /// By local day: units used and the day's limit (`None`: the day's item does not say).
    pub days: BTreeMap<String, (u32, Option<u32>)>,
    /// The limit of a day whose item does not say one: the site's current one.
    pub limit: u32,
    /// `(day, instance)` counted by a launch, a warm start or the midnight carry-over.
    pub counted: Vec<(String, String)>,
    pub runs: Vec<Run>,
    pub shortfalls: Vec<Shortfall>,
}

/// A month's rows for one site: one per local day of `month` up to `now`'s day, and the total.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MonthUse {
    pub days: Vec<DayUse>,
    pub total: DayUse,
    /// Days at the cap.
    pub cap_days: u32,
    /// Days a held launch left the site short.
    pub short_days: u32,
    /// Instance types that ran with no price in the table.
    pub unpriced: Vec<String>,
    /// Instances whose run nobody has seen end or go on for a while (no agent holds the site):
    /// counted until they were last seen running.
    pub unconfirmed: Vec<String>,
}

/// A run open for longer than this since it was last seen counts only until then.
pub const SEEN_FRESH_SECS: i64 = 900;

/// The distinct instances running now by the open runs: those some agent saw in the last
/// [`SEEN_FRESH_SECS`] (a run written before sightings were counts as seen), and those nobody
/// has seen since (their site's agent is gone: they may run unwatched, or be long gone).
pub fn running_now(runs: &[Run], now: Timestamp) -> (u32, u32) {
    let (mut seen, mut unseen) = (BTreeSet::new(), BTreeSet::new());
    for r in runs.iter().filter(|r| r.end.is_none()) {
        if r.counted_end(now, SEEN_FRESH_SECS).1 {
            seen.insert(r.instance.as_str());
        } else {
            unseen.insert(r.instance.as_str());
        }
    }
    let unseen = unseen.difference(&seen).count();
    let n = |x: usize| u32::try_from(x).unwrap_or(u32::MAX);
    (n(seen.len()), n(unseen))
}

/// Each instance's billed spans (a run's minimum billing applied), overlapping runs of one
/// instance merged: two agents that each recorded a run of it (a takeover) bill it once.
fn billed_spans(runs: &[Run], now: Timestamp) -> Vec<Span> {
    let mut by_instance: BTreeMap<&str, Vec<Span>> = BTreeMap::new();
    for r in runs {
        let (end, sure) = r.counted_end(now, SEEN_FRESH_SECS);
        let billed = end.max(r.start + jiff::SignedDuration::from_secs(MIN_BILLED_SECS));
        by_instance.entry(&r.instance).or_default().push(Span {
            instance: r.instance.clone(),
            instance_type: r.instance_type.clone(),
            start: r.start,
            ran_end: end,
            billed_end: billed,
            sure,
        });
    }
    let mut out = Vec::new();
    for (_, mut spans) in by_instance {
        spans.sort_by_key(|s| s.start);
        let mut merged: Vec<Span> = Vec::new();
        for sp in spans {
            match merged.last_mut() {
                Some(m) if sp.start < m.billed_end => {
                    m.billed_end = m.billed_end.max(sp.billed_end);
                    m.ran_end = m.ran_end.max(sp.ran_end);
                    m.sure &= sp.sure;
                    if m.instance_type.is_empty() {
                        m.instance_type = sp.instance_type;
                    }
                }
                _ => merged.push(sp),
            }
        }
        out.extend(merged);
    }
    out
}

/// One instance's time running, as billed.
#[derive(Clone, Debug)]
struct Span {
    instance: String,
    instance_type: String,
    start: Timestamp,
    /// Where it stopped running.
    ran_end: Timestamp,
    /// With EC2's minimum of a minute.
    billed_end: Timestamp,
    /// Its end was seen (or it is still seen running), not cut at its last sighting.
    sure: bool,
}

/// The month starting on `first` (its first day), for one site in time zone `tz`, at `now`
/// (runs still open count until `now`, or until last seen), priced at `hourly` (by type).
pub fn month(
    site: &SiteUse,
    first: Date,
    tz: &TimeZone,
    hourly: &BTreeMap<String, f64>,
    now: Timestamp,
) -> MonthUse {
    let today = tz.to_datetime(now).date();
    let spans = billed_spans(&site.runs, now);
    let mut tally = MonthTally {
        days: Vec::new(),
        total: DayUse::default(),
        instances: BTreeSet::new(),
        unpriced: BTreeSet::new(),
        unconfirmed: BTreeSet::new(),
        cap_days: 0,
        short_days: 0,
        all_priced: true,
    };
    let mut d = first;
    while d.month() == first.month() && d <= today {
        let mut day = open_day(site, d, tz);
        let runs = tally.count_runs(&mut day, &spans, hourly);
        peak_slaves(&mut day.u, runs.events);
        add_shortfalls(&mut day.u, site, &day.key);
        tally.close_day(day, runs.cost, runs.priced);
        match d.tomorrow() {
            Ok(n) => d = n,
            Err(_) => break,
        }
    }
    tally.finish()
}

/// The month's rows and counts as `month` goes through its days.
struct MonthTally {
    days: Vec<DayUse>,
    total: DayUse,
    /// Distinct instances over the month.
    instances: BTreeSet<String>,
    unpriced: BTreeSet<String>,
    unconfirmed: BTreeSet<String>,
    cap_days: u32,
    short_days: u32,
    all_priced: bool,
}

/// One local day being counted: its row, its bounds and the instances that ran or were counted.
struct Day<'a> {
    key: String,
    start: Timestamp,
    end: Timestamp,
    u: DayUse,
    ids: BTreeSet<&'a str>,
}

/// What a day's billed spans cost, and when slaves started and stopped in it.
struct DayRuns {
    cost: f64,
    /// Every span that day had a price.
    priced: bool,
    events: Vec<(Timestamp, i32)>,
}

/// Day `d`'s bounds in `tz`, its units and limit as its item says, and its counted instances.
fn open_day<'a>(site: &'a SiteUse, d: Date, tz: &TimeZone) -> Day<'a> {
    let key = d.to_string();
    let (start, end) = (day_start(d, tz), day_start(d.tomorrow().unwrap_or(d), tz));
    let mut u = DayUse {
        day: Some(d),
        unit_limit: site.limit,
        ..DayUse::default()
    };
    if let Some((used, limit)) = site.days.get(&key) {
        u.units_used = *used;
        u.unit_limit = limit.unwrap_or(site.limit);
        u.at_cap = u.unit_limit > 0 && u.units_used >= u.unit_limit;
    }
    let ids: BTreeSet<&str> = site
        .counted
        .iter()
        .filter(|(day, _)| *day == key)
        .map(|(_, id)| id.as_str())
        .collect();
    Day {
        key,
        start,
        end,
        u,
        ids,
    }
}

/// Slaves running at once at their peak, from the day's starts (+1) and ends (-1).
fn peak_slaves(u: &mut DayUse, mut events: Vec<(Timestamp, i32)>) {
    // Ends before starts at the same second: a replacement is not an overlap.
    events.sort();
    let mut at_once = 0i32;
    for (_, step) in events {
        at_once += step;
        u.peak_slaves = u.peak_slaves.max(u32::try_from(at_once).unwrap_or(0));
    }
}

/// The day's shortfalls: seconds held by kind, and the most slaves a hold kept out at once.
fn add_shortfalls(u: &mut DayUse, site: &SiteUse, key: &str) {
    for s in site.shortfalls.iter().filter(|s| s.day == key) {
        *u.held_secs.entry(s.held).or_default() += s.secs;
        u.max_short = u.max_short.max(s.max_short);
    }
}

/// Adds one day's row to the month's total.
fn add_to_total(total: &mut DayUse, u: &DayUse) {
    total.units_used += u.units_used;
    total.unit_limit += u.unit_limit;
    total.instance_hours += u.instance_hours;
    total.peak_slaves = total.peak_slaves.max(u.peak_slaves);
    for (h, s) in &u.held_secs {
        *total.held_secs.entry(*h).or_default() += s;
    }
    total.max_short = total.max_short.max(u.max_short);
    total.cost = Some(total.cost.unwrap_or(0.0) + u.cost.unwrap_or(0.0));
}

impl MonthTally {
    /// The day's part of every billed span: its instances, hours and cost, and the starts and
    /// ends of the time each really ran.
    fn count_runs<'a>(
        &mut self,
        day: &mut Day<'a>,
        spans: &'a [Span],
        hourly: &BTreeMap<String, f64>,
    ) -> DayRuns {
        let mut events = Vec::new();
        let mut cost = 0.0;
        let mut priced = true;
        for sp in spans {
            let (a, b) = (sp.start.max(day.start), sp.billed_end.min(day.end));
            if a >= b {
                continue;
            }
            day.ids.insert(sp.instance.as_str());
            if !sp.sure {
                day.u.unconfirmed += 1;
                self.unconfirmed.insert(sp.instance.clone());
            }
            let hours = (b.as_second() - a.as_second()) as f64 / 3600.0;
            day.u.instance_hours += hours;
            match hourly.get(&sp.instance_type) {
                Some(p) => cost += hours * p,
                None => {
                    priced = false;
                    self.unpriced.insert(if sp.instance_type.is_empty() {
                        "(unknown type)".to_string()
                    } else {
                        sp.instance_type.clone()
                    });
                }
            }
            // Only the time it really ran counts toward the peak, not the minimum billing.
            let ran_end = sp.ran_end.min(day.end);
            if a < ran_end {
                events.push((a, 1i32));
                events.push((ran_end, -1));
            }
        }
        DayRuns {
            cost,
            priced,
            events,
        }
    }

    /// Finishes the day's row (instances, cost) and adds it to the month's counts and total.
    fn close_day(&mut self, day: Day<'_>, cost: f64, priced: bool) {
        let Day { mut u, ids, .. } = day;
        u.instances = u32::try_from(ids.len()).unwrap_or(u32::MAX);
        u.cost = priced.then_some(cost);
        self.all_priced &= priced;
        self.instances.extend(ids.iter().map(|s| s.to_string()));
        self.cap_days += u32::from(u.at_cap);
        self.short_days += u32::from(!u.held_secs.is_empty());
        add_to_total(&mut self.total, &u);
        self.days.push(u);
    }

    /// The month's rows, with the total's instances, unconfirmed, cap and cost settled.
    fn finish(self) -> MonthUse {
        let MonthTally {
            days,
            mut total,
            instances,
            unpriced,
            unconfirmed,
            cap_days,
            short_days,
            all_priced,
        } = self;
        total.instances = u32::try_from(instances.len()).unwrap_or(u32::MAX);
        total.unconfirmed = u32::try_from(unconfirmed.len()).unwrap_or(u32::MAX);
        total.at_cap = cap_days > 0;
        if !all_priced {
            total.cost = None;
        }
        MonthUse {
            days,
            total,
            cap_days,
            short_days,
            unpriced: unpriced.into_iter().collect(),
            unconfirmed: unconfirmed.into_iter().collect(),
        }
    }
}

fn day_start(d: Date, tz: &TimeZone) -> Timestamp {
    crate::cap::day_start(d, tz).unwrap_or_default()
}

/// A heat map cell: nothing used, a share of the limit, or the cap reached.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Heat {
    None,
    /// Units used over the limit, in (0, 1).
    Part(f64),
    AtCap,
}

pub fn heat(u: &DayUse) -> Heat {
    if u.at_cap {
        Heat::AtCap
    } else if u.units_used == 0 || u.unit_limit == 0 {
        Heat::None
    } else {
        Heat::Part(f64::from(u.units_used) / f64::from(u.unit_limit))
    }
}

#[cfg(test)]
mod tests;
