//! `[[schedule]]` entries, parsed and checked (problems name `schedule[i].KEY`); what the windows
//! mean in time is `crate::schedule`'s.

use super::ScheduleEntry;
use jiff::civil::{DateTime, Time, Weekday};

/// One entry, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub name: String,
    pub when: When,
    pub min_slaves: u32,
    pub prewarm_secs: i64,
}

#[derive(Clone, Debug, PartialEq)]
pub enum When {
    Once {
        start: DateTime,
        end: DateTime,
    },
    Weekly {
        days: Vec<Weekday>,
        from: Time,
        to: Time,
    },
}

fn weekday(s: &str) -> Option<Weekday> {
    Some(match s.to_ascii_lowercase().as_str() {
        "mon" | "monday" => Weekday::Monday,
        "tue" | "tuesday" => Weekday::Tuesday,
        "wed" | "wednesday" => Weekday::Wednesday,
        "thu" | "thursday" => Weekday::Thursday,
        "fri" | "friday" => Weekday::Friday,
        "sat" | "saturday" => Weekday::Saturday,
        "sun" | "sunday" => Weekday::Sunday,
        _ => return None,
    })
}

/// The name of entry `i`'s key `k`, as problems give it: `schedule[i].k`.
fn key(i: usize, k: &str) -> String {
    format!("schedule[{i}].{k}")
}

/// Checks one entry; the problems name its keys (`schedule[i].start`, ...).
pub fn plan(i: usize, e: &ScheduleEntry) -> Result<Plan, Vec<(String, String)>> {
    let mut problems = Vec::new();
    let once = !e.start.is_empty() || !e.end.is_empty();
    let weekly = !e.days.is_empty() || !e.from.is_empty() || !e.to.is_empty();
    let when = match (once, weekly) {
        (true, true) | (false, false) => {
            problems.push((
                key(i, "start"),
                format!(
                    "schedule[{i}] ({:?}) must be one-off (start, end) or weekly (days, from, to), \
                     not {}",
                    e.name,
                    if once { "both" } else { "neither" }
                ),
            ));
            None
        }
        (true, false) => once_window(i, e, &mut problems),
        (false, true) => weekly_window(i, e, &mut problems),
    };
    check_floor_and_prewarm(i, e, &mut problems);
    match when {
        Some(when) if problems.is_empty() => Ok(Plan {
            name: if e.name.is_empty() {
                format!("schedule[{i}]")
            } else {
                e.name.clone()
            },
            when,
            min_slaves: e.min_slaves,
            prewarm_secs: e.prewarm.get().as_secs() as i64,
        }),
        _ => Err(problems),
    }
}

/// A one-off window (`start`, `end`): both local date-times, the end after the start.
fn once_window(i: usize, e: &ScheduleEntry, problems: &mut Vec<(String, String)>) -> Option<When> {
    let mut dt = |k: &str, v: &str| match v.parse::<DateTime>() {
        Ok(d) => Some(d),
        Err(err) => {
            problems.push((
                key(i, k),
                format!(
                    "{} must be a local date and time like \"2026-12-05T08:00\" (got {v:?}: {err})",
                    key(i, k)
                ),
            ));
            None
        }
    };
    match (dt("start", &e.start), dt("end", &e.end)) {
        (Some(start), Some(end)) if end > start => Some(When::Once { start, end }),
        (Some(_), Some(_)) => {
            problems.push((
                key(i, "end"),
                format!("{} must be after {}", key(i, "end"), key(i, "start")),
            ));
            None
        }
        _ => None,
    }
}

/// The weekly window's days, each named once, in the order given; a problem for each unknown
/// one and for none at all.
fn weekly_days(i: usize, e: &ScheduleEntry, problems: &mut Vec<(String, String)>) -> Vec<Weekday> {
    let mut days = Vec::new();
    for (j, d) in e.days.iter().enumerate() {
        match weekday(d) {
            Some(w) if !days.contains(&w) => days.push(w),
            Some(_) => {}
            None => problems.push((
                key(i, "days"),
                format!(
                    "{}[{j}] must be a day like \"sat\" (got {d:?})",
                    key(i, "days")
                ),
            )),
        }
    }
    if e.days.is_empty() {
        problems.push((
            key(i, "days"),
            format!("{} must list at least one day", key(i, "days")),
        ));
    }
    days
}

/// A weekly window (`days`, `from`, `to`): known days, and two different local times.
fn weekly_window(
    i: usize,
    e: &ScheduleEntry,
    problems: &mut Vec<(String, String)>,
) -> Option<When> {
    let days = weekly_days(i, e, problems);
    let mut tm = |k: &str, v: &str| match v.parse::<Time>() {
        Ok(t) => Some(t),
        Err(err) => {
            problems.push((
                key(i, k),
                format!(
                    "{} must be a local time like \"19:00\" (got {v:?}: {err})",
                    key(i, k)
                ),
            ));
            None
        }
    };
    match (tm("from", &e.from), tm("to", &e.to)) {
        (Some(from), Some(to)) if from != to && !days.is_empty() => {
            Some(When::Weekly { days, from, to })
        }
        (Some(_), Some(_)) if !days.is_empty() => {
            problems.push((
                key(i, "to"),
                format!("{} must differ from {}", key(i, "to"), key(i, "from")),
            ));
            None
        }
        _ => None,
    }
}

/// The floor (`min_slaves`, at least 1) and the prewarm (at most a day).
fn check_floor_and_prewarm(i: usize, e: &ScheduleEntry, problems: &mut Vec<(String, String)>) {
    if e.min_slaves == 0 {
        problems.push((
            key(i, "min_slaves"),
            format!("{} must be at least 1", key(i, "min_slaves")),
        ));
    }
    if e.prewarm.get().as_secs() > 24 * 3600 {
        problems.push((
            key(i, "prewarm"),
            format!(
                "{} must be at most 1day (got {})",
                key(i, "prewarm"),
                e.prewarm
            ),
        ));
    }
}
