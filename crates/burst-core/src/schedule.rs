//! Planned bursts (`[[schedule]]`), pure: which window holds a floor of slaves now, the next
//! one for `status`, and what a day of windows needs of the burst cap (`check-config` warns).
//! Anchors: EC2 Auto Scaling scheduled actions, KEDA's cron scaler. Times are local to
//! `cap.time_zone`; a window is active from `prewarm` before it opens until it closes. The
//! daemon and `simulate` put the active window in the policy's `FleetObservation`
//! (`scheduled`), where its floor counts like `policy.min_slaves`.

pub use crate::config::schedule::{plan, Plan, When};
use crate::config::Config;
use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};
use serde::{Deserialize, Serialize};

/// A window, in absolute time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Window {
    pub name: String,
    pub min_slaves: u32,
    /// When its slaves start launching (`prewarm` before it opens).
    pub from: Timestamp,
    pub opens: Timestamp,
    pub closes: Timestamp,
}

/// Every entry of the config, checked; entries with problems are left out (validation reports
/// them).
pub fn plans(cfg: &Config) -> Vec<Plan> {
    cfg.schedule
        .iter()
        .enumerate()
        .filter_map(|(i, e)| plan(i, e).ok())
        .collect()
}

/// A local date-time in `tz` (in a gap, the instant after it; in a fold, the earlier one).
fn instant(tz: &TimeZone, dt: DateTime) -> Option<Timestamp> {
    dt.to_zoned_datetime(tz.clone()).ok().map(|z| z.timestamp())
}

/// The windows of `p` that touch [from, to).
fn windows_between(p: &Plan, tz: &TimeZone, from: Timestamp, to: Timestamp) -> Vec<Window> {
    let mk = |opens: Timestamp, closes: Timestamp| Window {
        name: p.name.clone(),
        min_slaves: p.min_slaves,
        from: opens - p.prewarm_secs.seconds(),
        opens,
        closes,
    };
    let mut out = Vec::new();
    match &p.when {
        When::Once { start, end } => {
            if let (Some(a), Some(b)) = (instant(tz, *start), instant(tz, *end)) {
                out.push(mk(a, b));
            }
        }
        When::Weekly {
            days,
            from: f,
            to: t,
        } => {
            let first: Date = tz.to_datetime(from).date();
            // A window opening tomorrow may be prewarming now (prewarm is at most a day).
            let last: Date = tz.to_datetime(to).date();
            let last = last.tomorrow().unwrap_or(last);
            let mut d = first.checked_sub(2.days()).unwrap_or(first);
            while d <= last {
                if days.contains(&d.weekday()) {
                    let end_day = if t <= f { d.tomorrow().unwrap_or(d) } else { d };
                    if let (Some(a), Some(b)) = (
                        instant(tz, d.to_datetime(*f)),
                        instant(tz, end_day.to_datetime(*t)),
                    ) {
                        out.push(mk(a, b));
                    }
                }
                match d.tomorrow() {
                    Ok(n) => d = n,
                    Err(_) => break,
                }
            }
        }
    }
    // A window a DST change made empty (02:30 to 03:15 on a spring-forward night) holds nothing.
    out.retain(|w| w.opens < w.closes && w.from < to && w.closes > from);
    out
}

/// The window holding the highest floor at `now` (prewarm included), if any.
pub fn active(plans: &[Plan], tz: &TimeZone, now: Timestamp) -> Option<Window> {
    let until = now + 1.second();
    plans
        .iter()
        .flat_map(|p| windows_between(p, tz, now, until))
        .filter(|w| w.from <= now && now < w.closes)
        .max_by_key(|w| (w.min_slaves, std::cmp::Reverse(w.opens)))
}

/// The next window to start prewarming after `now`, within eight days.
pub fn next(plans: &[Plan], tz: &TimeZone, now: Timestamp) -> Option<Window> {
    let until = now + 192.hours();
    plans
        .iter()
        .flat_map(|p| windows_between(p, tz, now, until))
        .filter(|w| w.from > now)
        .min_by_key(|w| w.from)
}

/// Days on which the schedule may need more distinct slaves than the cap allows: every window
/// that opens on a local day counted in full (its slaves may have been released between two
/// windows), within the next `days` days. Each: (day, instances, names).
pub(crate) fn over_cap(
    plans: &[Plan],
    tz: &TimeZone,
    daily_limit: u32,
    now: Timestamp,
    days: i64,
) -> Vec<(Date, u32, Vec<String>)> {
    let until = now + (days * 24).hours();
    let mut by_day: std::collections::BTreeMap<Date, (u32, Vec<String>)> = Default::default();
    for w in plans
        .iter()
        .flat_map(|p| windows_between(p, tz, now, until))
    {
        // Its slaves count on every local day they are alive, prewarm to close (one alive at
        // midnight counts toward both days).
        let mut day = tz.to_datetime(w.from).date();
        let last = tz.to_datetime(w.closes - 1.second()).date();
        while day <= last {
            let e = by_day.entry(day).or_default();
            e.0 += w.min_slaves;
            if !e.1.contains(&w.name) {
                e.1.push(w.name.clone());
            }
            match day.tomorrow() {
                Ok(d) => day = d,
                Err(_) => break,
            }
        }
    }
    by_day
        .into_iter()
        .filter(|(_, (n, _))| *n > daily_limit)
        .map(|(d, (n, names))| (d, n, names))
        .collect()
}

/// What `check-config` warns of (the config is valid, but an operator should know): days in
/// the next eight weeks on which the schedule may need more distinct slaves than the cap
/// allows, floors above `policy.max_slaves`, and a prewarm shorter than the launch lead time.
pub fn warnings(cfg: &Config, now: Timestamp) -> Vec<String> {
    let Ok(tz) = TimeZone::get(&cfg.cap.time_zone) else {
        return Vec::new();
    };
    let plans = plans(cfg);
    let mut out = Vec::new();
    let lead = cfg.policy.forecast.lead_time.get().as_secs() as i64;
    for (i, p) in plans.iter().enumerate() {
        if p.min_slaves > cfg.policy.max_slaves {
            out.push(format!(
                "schedule[{i}] ({:?}) asks for {} slaves but policy.max_slaves is {}: it gets {}",
                p.name, p.min_slaves, cfg.policy.max_slaves, cfg.policy.max_slaves
            ));
        }
        if p.prewarm_secs < lead {
            out.push(format!(
                "schedule[{i}] ({:?}) prewarms {}s before it opens, less than a launch takes \
                 (policy.forecast.lead_time, {lead}s): its slaves will not all serve when it opens",
                p.name, p.prewarm_secs
            ));
        }
    }
    // A weekly pattern repeats: one line for each (weekday, need, windows), with its first day.
    let mut seen: Vec<(String, u32, Vec<String>, Date, usize)> = Vec::new();
    for (day, n, names) in over_cap(&plans, &tz, cfg.cap.daily_limit, now, 56) {
        let weekday = format!("{:?}", day.weekday());
        match seen
            .iter_mut()
            .find(|s| s.0 == weekday && s.1 == n && s.2 == names)
        {
            Some(s) => s.4 += 1,
            None => seen.push((weekday, n, names, day, 1)),
        }
    }
    for (weekday, n, names, first, count) in seen {
        let when = if count > 1 {
            format!(
                "on {first} ({weekday}) and {} more {weekday}s in the next 8 weeks",
                count - 1
            )
        } else {
            format!("on {first} ({weekday})")
        };
        out.push(format!(
            "schedule: {when} the windows of {} may need up to {n} distinct slaves (each window \
             counted in full) but cap.daily_limit is {}: later windows may get fewer",
            names.join(", "),
            cfg.cap.daily_limit
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Dur, ScheduleEntry};

    fn tz() -> TimeZone {
        TimeZone::get("Asia/Tokyo").unwrap()
    }

    fn local(s: &str) -> Timestamp {
        instant(&tz(), s.parse().unwrap()).unwrap()
    }

    fn weekly(days: &[&str], from: &str, to: &str, min: u32) -> ScheduleEntry {
        ScheduleEntry {
            name: "tv".into(),
            days: days.iter().map(|d| d.to_string()).collect(),
            from: from.into(),
            to: to.into(),
            min_slaves: min,
            prewarm: Dur::secs(900),
            ..ScheduleEntry::default()
        }
    }

    #[test]
    fn a_weekly_window_is_active_from_its_prewarm_until_it_closes() {
        let p = [plan(0, &weekly(&["sat"], "19:00", "21:00", 3)).unwrap()];
        // 2026-11-28 is a Saturday.
        assert_eq!(active(&p, &tz(), local("2026-11-28T18:44")), None);
        let w = active(&p, &tz(), local("2026-11-28T18:45")).unwrap();
        assert_eq!((w.min_slaves, w.opens), (3, local("2026-11-28T19:00")));
        assert!(active(&p, &tz(), local("2026-11-28T20:59")).is_some());
        assert_eq!(active(&p, &tz(), local("2026-11-28T21:00")), None);
        assert_eq!(
            active(&p, &tz(), local("2026-11-27T19:30")),
            None,
            "a Friday"
        );
        let n = next(&p, &tz(), local("2026-11-25T12:00")).unwrap();
        assert_eq!(n.from, local("2026-11-28T18:45"));
    }

    #[test]
    fn a_window_past_midnight_and_a_one_off_with_the_higher_floor_winning() {
        let late = plan(0, &weekly(&["fri"], "22:00", "02:00", 2)).unwrap();
        let golf = plan(
            1,
            &ScheduleEntry {
                name: "golf final".into(),
                start: "2026-11-28T00:30".into(),
                end: "2026-11-28T18:00".into(),
                min_slaves: 5,
                prewarm: Dur::secs(600),
                ..ScheduleEntry::default()
            },
        )
        .unwrap();
        let p = [late, golf];
        // Friday 22:00 to Saturday 02:00; the one-off from 00:20 (prewarm) outranks it.
        assert_eq!(
            active(&p, &tz(), local("2026-11-28T00:10"))
                .unwrap()
                .min_slaves,
            2
        );
        let w = active(&p, &tz(), local("2026-11-28T00:25")).unwrap();
        assert_eq!((w.name.as_str(), w.min_slaves), ("golf final", 5));
        assert_eq!(active(&p, &tz(), local("2026-11-28T18:00")), None);
    }

    #[test]
    fn bad_entries_name_their_keys() {
        let mut e = weekly(&["sat", "caturday"], "19:00", "25:00", 0);
        e.start = "2026-11-28T10:00".into();
        let keys: Vec<String> = plan(3, &e).unwrap_err().into_iter().map(|p| p.0).collect();
        assert!(keys.contains(&"schedule[3].start".to_string()), "{keys:?}");
        assert!(
            keys.contains(&"schedule[3].min_slaves".to_string()),
            "{keys:?}"
        );
        let e = weekly(&["sat", "caturday"], "19:00", "25:00", 2);
        let keys: Vec<String> = plan(0, &e).unwrap_err().into_iter().map(|p| p.0).collect();
        assert_eq!(keys, ["schedule[0].days", "schedule[0].to"]);
        let once = ScheduleEntry {
            start: "2026-11-28T10:00".into(),
            end: "2026-11-28T09:00".into(),
            min_slaves: 1,
            ..ScheduleEntry::default()
        };
        assert_eq!(plan(0, &once).unwrap_err()[0].0, "schedule[0].end");
    }

    #[test]
    fn a_prewarm_that_starts_the_day_before_holds_from_then() {
        // Saturday 00:10, prewarm 15 min: from Friday 23:55.
        let mut e = weekly(&["sat"], "00:10", "02:00", 3);
        e.prewarm = Dur::secs(900);
        let p = [plan(0, &e).unwrap()];
        assert_eq!(active(&p, &tz(), local("2026-11-27T23:54")), None);
        let w = active(&p, &tz(), local("2026-11-27T23:56")).unwrap();
        assert_eq!(w.opens, local("2026-11-28T00:10"));
    }

    #[test]
    fn a_window_past_midnight_counts_on_both_days() {
        // Friday 22:00-02:00 of 4 and Saturday 19:00 of 4: Saturday may need 8.
        let p = [
            plan(0, &weekly(&["fri"], "22:00", "02:00", 4)).unwrap(),
            plan(1, &weekly(&["sat"], "19:00", "21:00", 4)).unwrap(),
        ];
        let over = over_cap(&p, &tz(), 7, local("2026-11-25T00:00"), 7);
        assert_eq!(over.len(), 1, "{over:?}");
        assert_eq!(
            (over[0].0.to_string().as_str(), over[0].1),
            ("2026-11-28", 8)
        );
    }

    #[test]
    fn a_window_a_dst_change_empties_holds_nothing() {
        // New York springs forward at 02:00 on 2027-03-14: 02:30 to 03:15 is 03:30 to 03:15.
        let ny = TimeZone::get("America/New_York").unwrap();
        let p = [plan(0, &weekly(&["sun"], "02:30", "03:15", 2)).unwrap()];
        let at = |s: &str| instant(&ny, s.parse().unwrap()).unwrap();
        assert_eq!(active(&p, &ny, at("2027-03-14T03:20")), None);
        // A week later it is a window again.
        assert!(active(&p, &ny, at("2027-03-21T02:40")).is_some());
    }

    #[test]
    fn check_config_warns_once_per_weekly_pattern_and_of_a_short_prewarm() {
        let mut cfg = Config {
            schedule: vec![
                weekly(&["sat"], "10:00", "12:00", 4),
                ScheduleEntry {
                    prewarm: Dur::secs(60),
                    ..weekly(&["sat"], "19:00", "21:00", 4)
                },
            ],
            ..Config::default()
        };
        let w = warnings(&cfg, local("2026-11-25T00:00"));
        assert_eq!(w.len(), 2, "{w:#?}");
        assert!(
            w[0].starts_with("schedule[1] (\"tv\") prewarms 60s"),
            "{}",
            w[0]
        );
        assert!(
            w[1].starts_with(
                "schedule: on 2026-11-28 (Saturday) and 7 more Saturdays in the next 8 weeks"
            ),
            "{}",
            w[1]
        );
        assert!(w[1].contains("up to 8 distinct slaves"), "{}", w[1]);
        cfg.cap.daily_limit = 8;
        cfg.schedule[1].prewarm = Dur::secs(900);
        assert_eq!(
            warnings(&cfg, local("2026-11-25T00:00")),
            Vec::<String>::new()
        );
    }

    #[test]
    fn a_day_of_windows_beyond_the_cap_is_found() {
        // Two windows on Saturday of 4 each: 8 distinct instances may be needed, cap 7.
        let p = [
            plan(0, &weekly(&["sat"], "10:00", "12:00", 4)).unwrap(),
            plan(1, &weekly(&["sat"], "19:00", "21:00", 4)).unwrap(),
        ];
        let over = over_cap(&p, &tz(), 7, local("2026-11-25T00:00"), 7);
        assert_eq!(over.len(), 1, "{over:?}");
        assert_eq!(
            (over[0].0.to_string().as_str(), over[0].1),
            ("2026-11-28", 8)
        );
        assert!(over_cap(&p, &tz(), 8, local("2026-11-25T00:00"), 7).is_empty());
    }
}
