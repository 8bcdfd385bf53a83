//! `burst-agent fleet`: every site of the account's ledger table at a glance (who is bursting,
//! who holds which site, how fresh its lease is, its last decision), and with `--month` what
//! each site used of its guarantee in a month and what it cost. Read-only: one parallel scan of
//! the table (docs/aws.md has the desk's IAM policy, with no write action in it).
//!
//! The counting is burst-core's (`usage`); this reads, arranges and prints.

use super::*;
use crate::table::{SiteRecords, Standby, Table};
use crate::usage::{self, Held, LeaseLook, MonthUse, SiteStatus, SiteUse};
use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::Timestamp;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write;

/// Parallel scan segments: a 40-site table of 13 months is a few MiB, a few pages per segment.
const SEGMENTS: i32 = 4;
/// A standby's mark shows while it is younger than this (it is written every 5 minutes).
const STANDBY_FRESH_SECS: i64 = 900;
/// A status older than this while the lease is held is flagged (written at least every 5
/// minutes by a live holder).
const STATUS_STALE_SECS: i64 = 900;

/// What `fleet` read: each site's records or why they could not be read, and how long it took.
pub struct Read {
    pub sites: BTreeMap<String, SiteRecords>,
    pub at: Timestamp,
    pub secs: f64,
}

/// What `fleet` reads: now, or the month starting on this day.
pub fn wanted(month: Option<Date>, now: Timestamp) -> crate::table::Wanted {
    use crate::table::Wanted;
    let day = |d: jiff::civil::Date| d.to_string();
    let utc = |d: jiff::civil::Date| {
        TimeZone::UTC
            .to_timestamp(d.to_datetime(jiff::civil::Time::midnight()))
            .unwrap_or(now)
    };
    match month {
        None => {
            let today = TimeZone::UTC.to_datetime(now).date();
            Wanted::Now {
                since: day(today.yesterday().unwrap_or(today)),
            }
        }
        Some(first) => {
            let last = first.last_of_month();
            Wanted::Month {
                first: day(first),
                last: day(last),
                from: utc(first.yesterday().unwrap_or(first)),
                to: utc(last.tomorrow().and_then(|d| d.tomorrow()).unwrap_or(last)),
            }
        }
    }
}

/// Reads every site of the ledger table (`table`, else `ledger.table`), the items `wanted`.
pub fn read(
    cfg: Config,
    table: Option<String>,
    wanted: crate::table::Wanted,
) -> Result<Read, DaemonError> {
    let name = table.unwrap_or_else(|| cfg.ledger.table.clone());
    if name.is_empty() {
        return Err(DaemonError::Start(
            "no ledger table to read: set ledger.table in the config or pass --table NAME".into(),
        ));
    }
    with_aws(cfg, "fleet", |_, aws| async move {
        let started = std::time::Instant::now();
        let at = Timestamp::now();
        let sites = Table::read_all(&aws, &name, SEGMENTS, &wanted, at.as_second())
            .await
            .map_err(|e| {
                let fix = if e.is("ResourceNotFoundException") {
                    format!(
                        "; fix: no table {name:?} in this account and region (aws.region): name \
                         the masters' ledger.table, or pass --table NAME"
                    )
                } else if e.is("AccessDeniedException") {
                    "; fix: the desk's role needs dynamodb:Scan on the table (docs/aws.md, \
                     the desk's policy)"
                        .to_string()
                } else {
                    String::new()
                };
                DaemonError::Start(format!("reading ledger table {name}: {e}{fix}"))
            })?;
        Ok(Read {
            sites,
            at,
            secs: started.elapsed().as_secs_f64(),
        })
    })
}

/// One site now.
#[derive(Clone, Debug, Serialize)]
pub struct SiteNow {
    pub site: String,
    /// Items of the site that did not read, each named with why: left out of the rest.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
    /// Its local day now, and the time zone that day is in.
    pub day: String,
    pub time_zone: String,
    pub units_used: u32,
    pub unit_limit: u32,
    /// Slaves as the holder's last status has them.
    pub in_service: u32,
    pub coming: u32,
    pub draining: u32,
    pub warm: u32,
    /// Slaves running now by the run records (what EC2 bills), seen by an agent in the last
    /// 15 minutes.
    pub running: u32,
    /// Slaves whose run is open but no agent has seen for 15 minutes: the site's agent is gone,
    /// and they may run unwatched (or be long gone).
    pub unseen: u32,
    pub holder: Option<String>,
    pub lease: Option<LeaseLook>,
    pub lease_secs: u64,
    /// Agents standing by, seen in the last 15 minutes.
    pub standbys: Vec<Standby>,
    pub status: Option<SiteStatus>,
    /// The status is older than 15 minutes while the lease looks held, or was written by
    /// another agent than the lease's holder.
    pub status_stale: bool,
}

impl SiteNow {
    pub fn bursting(&self) -> bool {
        self.running + self.in_service + self.coming > 0
    }
    pub fn at_cap(&self) -> bool {
        self.unit_limit > 0 && self.units_used >= self.unit_limit
    }
    fn lapsed(&self) -> bool {
        matches!(
            self.lease,
            Some(LeaseLook::Lapsed { .. } | LeaseLook::Unreadable { .. }) | None
        )
    }
}

/// The site's time zone: its status's, else its latest day's, else UTC.
fn zone_of(r: &SiteRecords) -> (String, TimeZone) {
    let name = r
        .status
        .as_ref()
        .map(|s| s.time_zone.clone())
        .filter(|z| !z.is_empty())
        .or_else(|| r.limits.values().next_back().map(|(_, z)| z.clone()))
        .filter(|z| !z.is_empty())
        .unwrap_or_else(|| "UTC".to_string());
    let tz = TimeZone::get(&name).unwrap_or(TimeZone::UTC);
    (name, tz)
}

/// The site's limit now: its holder's status says, else its latest day that says one.
fn site_limit(r: &SiteRecords) -> u32 {
    r.status
        .as_ref()
        .map(|s| s.limit)
        .or_else(|| r.limits.values().rev().find_map(|(l, _)| *l))
        .unwrap_or(0)
}

/// Every site now, from what `read` found, at `now`; `lease_secs` for leases written before
/// their items said their duration.
pub fn now_view(
    sites: &BTreeMap<String, SiteRecords>,
    lease_secs: u64,
    now: Timestamp,
) -> Vec<SiteNow> {
    sites
        .iter()
        .map(|(site, r)| site_now(site, r, lease_secs, now))
        .collect()
}

fn site_now(site: &str, r: &SiteRecords, lease_secs: u64, now: Timestamp) -> SiteNow {
    let (zone, tz) = zone_of(r);
    let day = tz.to_datetime(now).date().to_string();
    let lease_secs = r.lease_secs.unwrap_or(lease_secs);
    let lease = r
        .lease
        .as_ref()
        .map(|l| usage::lease_look(l, lease_secs, now));
    let holder = r.lease.as_ref().map(|l| l.holder.clone());
    let limit = r
        .limits
        .get(&day)
        .and_then(|(l, _)| *l)
        .unwrap_or_else(|| site_limit(r));
    let st = r.status.clone();
    let held = matches!(lease, Some(LeaseLook::Held { .. }));
    let status_stale = st.as_ref().is_some_and(|s| {
        (held && now.as_second() - s.at.as_second() > STATUS_STALE_SECS)
            || holder.as_deref().is_some_and(|h| h != s.holder)
    });
    let fleet = |f: fn(&SiteStatus) -> u32| st.as_ref().map_or(0, f);
    let (running, unseen) = usage::running_now(&r.runs, now);
    SiteNow {
        site: site.to_string(),
        problems: r.problems.clone(),
        units_used: r.days.get(&day).copied().unwrap_or(0),
        unit_limit: limit,
        day,
        time_zone: zone,
        in_service: fleet(|s| s.in_service),
        coming: fleet(|s| s.coming),
        draining: fleet(|s| s.draining),
        warm: fleet(|s| s.warm),
        running,
        unseen,
        standbys: r
            .standbys
            .iter()
            .filter(|s| now.as_second() - s.seen_at.as_second() <= STANDBY_FRESH_SECS)
            .filter(|s| holder.as_deref() != Some(s.holder.as_str()))
            .cloned()
            .collect(),
        holder,
        lease,
        lease_secs,
        status: st,
        status_stale,
    }
}

fn ago(secs: i64) -> String {
    let s = secs.max(0);
    if s < 120 {
        format!("{s}s ago")
    } else if s < 7200 {
        format!("{}m ago", s / 60)
    } else if s < 172_800 {
        format!("{}h ago", s / 3600)
    } else {
        format!("{}d ago", s / 86_400)
    }
}

fn lease_text(s: &SiteNow) -> String {
    let host = s
        .holder
        .as_deref()
        .map(|h| h.split('/').next().unwrap_or(h))
        .unwrap_or("-");
    match &s.lease {
        None => "NO LEASE (no agent has held it)".into(),
        Some(LeaseLook::Held { age_secs }) => format!("{host}, renewed {}", ago(*age_secs)),
        Some(LeaseLook::Lapsed { age_secs }) => {
            format!("LAPSED: {host}, last renewed {}", ago(*age_secs))
        }
        Some(LeaseLook::Released { age_secs }) => {
            format!("released by {host} on a clean stop {}", ago(*age_secs))
        }
        Some(LeaseLook::Unreadable { renewed_at }) => {
            format!("{host}, renewed at {renewed_at:?} (not a time)")
        }
    }
}

fn cut(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// Pads `cells` to `widths` (the last cell is not padded).
fn row(out: &mut String, widths: &[usize], cells: &[String]) {
    let mut line = String::new();
    for (i, c) in cells.iter().enumerate() {
        if i + 1 == cells.len() {
            line.push_str(c);
        } else {
            let w = widths.get(i).copied().unwrap_or(0);
            let _ = write!(line, "{c:<w$}  ");
        }
    }
    let _ = writeln!(out, "{}", line.trim_end());
}

fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let mut out = String::new();
    row(
        &mut out,
        &widths,
        &header.iter().map(|h| h.to_string()).collect::<Vec<_>>(),
    );
    for r in rows {
        row(&mut out, &widths, r);
    }
    out
}

/// The table for people: a summary line, then one line per site.
pub fn render_now(sites: &[SiteNow], now: Timestamp, secs: f64) -> String {
    let age = |t: Timestamp| ago(now.as_second() - t.as_second());
    if sites.is_empty() {
        return format!(
            "no site in the ledger table yet (read in {secs:.2} s): a master writes its site's \
             items from its first start with ledger.table set and dry_run = false\n"
        );
    }
    let bursting = sites.iter().filter(|s| s.bursting()).count();
    let capped = sites.iter().filter(|s| s.at_cap()).count();
    let lapsed = sites.iter().filter(|s| s.lapsed()).count();
    let standby = sites.iter().filter(|s| !s.standbys.is_empty()).count();
    let broken = sites.iter().filter(|s| !s.problems.is_empty()).count();
    let mut out = format!(
        "{} site(s): {bursting} bursting, {capped} at the day's cap, {lapsed} without a live \
         lease, {standby} with an agent standing by{} (read in {secs:.2} s)\n\n",
        sites.len(),
        if broken > 0 {
            format!(", {broken} with items that do not read (!, below)")
        } else {
            String::new()
        }
    );
    let rows: Vec<Vec<String>> = sites
        .iter()
        .map(|s| {
            let mut lease = lease_text(s);
            for sb in &s.standbys {
                let host = sb.holder.split('/').next().unwrap_or(&sb.holder);
                let _ = write!(lease, "; STANDBY {host} (seen {})", age(sb.seen_at));
            }
            let decision = match &s.status {
                None => "(no status written yet)".to_string(),
                Some(st) => {
                    let mut d = format!("{} ({})", st.action, age(st.at));
                    if let Some(r) = st.reasons.first() {
                        let _ = write!(d, ": {}", cut(r, 70));
                    }
                    if s.status_stale {
                        d = format!("STALE {d}");
                    }
                    d
                }
            };
            vec![
                if s.problems.is_empty() {
                    s.site.clone()
                } else {
                    format!("{} !", s.site)
                },
                format!("{} {}", s.day, s.time_zone),
                format!(
                    "{}/{}{}",
                    s.units_used,
                    s.unit_limit,
                    if s.at_cap() { " CAP" } else { "" }
                ),
                format!("{}+{}", s.in_service, s.coming),
                s.warm.to_string(),
                if s.unseen > 0 {
                    format!("{} (+{} UNSEEN)", s.running, s.unseen)
                } else {
                    s.running.to_string()
                },
                lease,
                decision,
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "SITE",
            "DAY (LOCAL)",
            "UNITS",
            "SERVING+COMING",
            "WARM",
            "RUNNING",
            "LEASE",
            "LAST DECISION",
        ],
        &rows,
    ));
    for s in sites {
        for p in &s.problems {
            let _ = writeln!(out, "! {}: {p}", s.site);
        }
    }
    out
}

/// `YYYY-MM` as the month's first day.
pub fn parse_month(m: &str) -> Result<Date, String> {
    let bad = || format!("--month {m:?}: expected a month as YYYY-MM, such as 2026-11");
    let (y, mo) = m.split_once('-').ok_or_else(bad)?;
    let y: i16 = y.parse().map_err(|_| bad())?;
    let mo: i8 = mo.parse().map_err(|_| bad())?;
    Date::new(y, mo, 1).map_err(|_| bad())
}

/// One site's month.
#[derive(Clone, Debug, Serialize)]
pub struct SiteMonth {
    pub site: String,
    pub time_zone: String,
    /// Items that did not read, left out of the numbers.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
    pub usage: MonthUse,
}

/// Every site's month starting on `first`, priced at `[prices]`.
pub fn month_view(
    sites: &BTreeMap<String, SiteRecords>,
    first: Date,
    prices: &crate::config::PricesConfig,
    now: Timestamp,
) -> Vec<SiteMonth> {
    sites
        .iter()
        .map(|(site, r)| {
            let (zone, tz) = zone_of(r);
            let u = SiteUse {
                limit: site_limit(r),
                days: r
                    .days
                    .iter()
                    .map(|(d, used)| {
                        let limit = r.limits.get(d).and_then(|(l, _)| *l);
                        (d.clone(), (*used, limit))
                    })
                    .collect(),
                counted: r.counted.clone(),
                runs: r.runs.clone(),
                shortfalls: r.shortfalls.clone(),
            };
            SiteMonth {
                site: site.clone(),
                time_zone: zone,
                problems: r.problems.clone(),
                usage: usage::month(&u, first, &tz, &prices.hourly, now),
            }
        })
        .collect()
}

fn date_of(u: &usage::DayUse) -> String {
    u.day.map(|d| d.to_string()).unwrap_or_default()
}

fn money(c: Option<f64>) -> String {
    c.map_or_else(|| "?".into(), |v| format!("{v:.2}"))
}

fn held_secs(u: &usage::DayUse) -> u64 {
    u.held_secs.values().sum()
}

/// The month for people: per site, its days and a total line.
pub fn render_month(months: &[SiteMonth], first: Date, currency: &str) -> String {
    let label = first.strftime("%Y-%m").to_string();
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    for m in months {
        let u = &m.usage;
        for day in &u.days {
            rows.push(day_cells(&m.site, &date_of(day), day, None));
        }
        rows.push(day_cells(
            &m.site,
            &format!("{label} total"),
            &u.total,
            Some((u.cap_days, u.short_days)),
        ));
        for p in &m.problems {
            notes.push(format!("{}: {p}: its numbers leave it out", m.site));
        }
        if !u.unconfirmed.is_empty() {
            notes.push(format!(
                "{}: {} still running by its records but not seen by any agent for 15 minutes: \
                 counted until last seen (unconfirmed; check the site's master and EC2)",
                m.site,
                u.unconfirmed.join(", ")
            ));
        }
        if !u.unpriced.is_empty() {
            notes.push(format!(
                "{}: no price for {} under [prices] hourly: its cost is left out (?)",
                m.site,
                u.unpriced.join(", ")
            ));
        }
    }
    let cost = if currency.is_empty() {
        "COST".to_string()
    } else {
        format!("COST ({currency})")
    };
    let mut out = table(
        &[
            "SITE",
            "DAY",
            "UNITS",
            "INSTANCES",
            "INSTANCE-HOURS",
            "PEAK",
            "AT CAP",
            "HELD SHORT",
            &cost,
        ],
        &rows,
    );
    for n in notes {
        let _ = writeln!(out, "note: {n}");
    }
    out
}

fn day_cells(site: &str, day: &str, u: &usage::DayUse, days: Option<(u32, u32)>) -> Vec<String> {
    let short = held_secs(u);
    let (cap, held) = match days {
        Some((c, s)) => (format!("{c} day(s)"), format!("{s} day(s)")),
        None => (
            if u.at_cap { "yes" } else { "" }.to_string(),
            if short > 0 {
                format!("{}m, up to {}", short.div_ceil(60), u.max_short)
            } else {
                String::new()
            },
        ),
    };
    vec![
        site.to_string(),
        day.to_string(),
        format!("{}/{}", u.units_used, u.unit_limit),
        u.instances.to_string(),
        format!("{:.2}", u.instance_hours),
        u.peak_slaves.to_string(),
        cap,
        held,
        money(u.cost),
    ]
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The month as CSV for the invoice spreadsheet: a row per site and local day, then the site's
/// month total (`day` = `YYYY-MM`). Cost is empty where a type has no price.
pub fn render_csv(months: &[SiteMonth], first: Date, currency: &str) -> String {
    let mut out = String::from(
        "site,day,units_used,unit_limit,days_at_cap,days_short,instances,instance_hours,\
         peak_slaves,held_cap_secs,held_ledger_secs,held_brake_secs,held_source_secs,\
         held_ec2_secs,max_short,cost,currency,unconfirmed\n",
    );
    let label = first.strftime("%Y-%m").to_string();
    for m in months {
        let u = &m.usage;
        let mut line = |day: &str, d: &usage::DayUse, cap: u32, short: u32| {
            let held: Vec<String> = Held::ALL
                .iter()
                .map(|h| d.held_secs.get(h).copied().unwrap_or(0).to_string())
                .collect();
            let _ = writeln!(
                out,
                "{},{day},{},{},{cap},{short},{},{:.4},{},{},{},{},{},{}",
                csv_field(&m.site),
                d.units_used,
                d.unit_limit,
                d.instances,
                d.instance_hours,
                d.peak_slaves,
                held.join(","),
                d.max_short,
                d.cost.map(|c| format!("{c:.2}")).unwrap_or_default(),
                csv_field(currency),
                d.unconfirmed,
            );
        };
        for day in &u.days {
            line(
                &date_of(day),
                day,
                u32::from(day.at_cap),
                u32::from(held_secs(day) > 0),
            );
        }
        line(&label, &u.total, u.cap_days, u.short_days);
    }
    out
}

#[cfg(test)]
mod tests;
