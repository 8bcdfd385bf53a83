//! Event notifications (README: events): what happened that an operator should hear of, and the
//! pure rule for whether to tell them now. [`edges`] turns levels (the cap's remaining launches,
//! the repair block) into events when they are crossed; the actuator reports the rest
//! ([`crate::actuator::Actuator::take_events`]). [`Notifier::offer`] deduplicates by condition
//! (one message per condition per `events.window`, with a count of what it held back) and limits
//! the total (`events.max_per_hour`), so a flapping condition never becomes a storm. Sending is
//! the daemon's (the `hooks.on_event` program, the SNS topic); nothing here does I/O.

use crate::config::EventsConfig;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::fmt;

/// Events kept for `status`, newest last.
const RECENT: usize = 20;
/// Longest detail sent, in characters (an SNS subject is 100; the message body has room).
const MAX_DETAIL: usize = 1000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// Slaves were launched.
    ScaleOut,
    /// Slaves were taken out of service.
    ScaleIn,
    /// The day's burst cap has at most `alarms.cap_remaining_at_most` launches left.
    CapLow,
    /// The day's burst cap is used up: no launch until local midnight.
    CapExhausted,
    /// A new slave's `pre_register` content sync failed for good: it is terminated, never
    /// registered.
    SyncFailed,
    /// EC2 refused a launch (nothing was charged to the cap), or had no capacity anywhere.
    LaunchFailed,
    /// EC2 had no capacity for a placement and the launch moved to the next subnet or type.
    CapacityFallback,
    /// An instance carries this group's tag but is not this agent's; it is left alone.
    ForeignInstance,
    /// Scale-out is blocked until `burst-agent repair` (damaged or missing state).
    LedgerBlocked,
}

pub const EVENT_KINDS: [EventKind; 9] = [
    EventKind::ScaleOut,
    EventKind::ScaleIn,
    EventKind::CapLow,
    EventKind::CapExhausted,
    EventKind::SyncFailed,
    EventKind::LaunchFailed,
    EventKind::CapacityFallback,
    EventKind::ForeignInstance,
    EventKind::LedgerBlocked,
];

impl EventKind {
    pub fn name(self) -> &'static str {
        match self {
            EventKind::ScaleOut => "scale_out",
            EventKind::ScaleIn => "scale_in",
            EventKind::CapLow => "cap_low",
            EventKind::CapExhausted => "cap_exhausted",
            EventKind::SyncFailed => "sync_failed",
            EventKind::LaunchFailed => "launch_failed",
            EventKind::CapacityFallback => "capacity_fallback",
            EventKind::ForeignInstance => "foreign_instance",
            EventKind::LedgerBlocked => "ledger_blocked",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        EVENT_KINDS.into_iter().find(|k| k.name() == s)
    }

    /// One condition per kind, except foreign instances: each is its own (one message each).
    fn per_instance(self) -> bool {
        matches!(self, EventKind::ForeignInstance)
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Something that happened.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub kind: EventKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    pub detail: String,
}

impl Event {
    pub fn new(kind: EventKind, instance_id: Option<&str>, detail: impl Into<String>) -> Self {
        Event {
            kind,
            instance_id: instance_id.map(str::to_string),
            detail: detail.into(),
        }
    }

    fn key(&self) -> String {
        match (&self.instance_id, self.kind.per_instance()) {
            (Some(id), true) => format!("{}:{id}", self.kind),
            _ => self.kind.name().to_string(),
        }
    }
}

/// What became of an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Sent,
    /// The same condition was sent less than `events.window` ago.
    Deduplicated,
    /// `events.max_per_hour` messages were sent in the last hour.
    RateLimited,
    /// Its kind is in `events.disabled`.
    Disabled,
}

/// One event as `status` shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub at: Timestamp,
    pub kind: EventKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    pub detail: String,
    pub outcome: Outcome,
}

/// A message to send: one event, with what was held back of its condition since the last one.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    pub at: Timestamp,
    pub kind: EventKind,
    pub group: String,
    pub instance_id: Option<String>,
    /// The event's detail, then what was held back, if anything.
    pub detail: String,
    pub dry_run: bool,
}

impl Message {
    /// An SNS subject: ASCII, at most 100 characters.
    pub fn subject(&self) -> String {
        let s = format!(
            "burst-agent {}: {}{}{}",
            self.group,
            self.kind,
            self.instance_id
                .as_deref()
                .map(|i| format!(" {i}"))
                .unwrap_or_default(),
            if self.dry_run { " (dry run)" } else { "" }
        );
        s.chars()
            .map(|c| {
                if c.is_ascii_graphic() || c == ' ' {
                    c
                } else {
                    '?'
                }
            })
            .take(100)
            .collect()
    }

    /// The message body: one `key: value` line each, for people and for filters alike.
    pub fn body(&self) -> String {
        let mut b = format!(
            "event: {}\ngroup: {}\nat: {}\n",
            self.kind, self.group, self.at
        );
        if let Some(id) = &self.instance_id {
            b.push_str(&format!("instance_id: {id}\n"));
        }
        if self.dry_run {
            b.push_str("dry_run: true (nothing was launched or released)\n");
        }
        b.push_str(&format!("detail: {}\n", self.detail));
        b
    }
}

/// One condition's memory: when it was last sent, and what was held back since.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Condition {
    sent_at: Option<Timestamp>,
    held: u32,
    held_since: Option<Timestamp>,
}

/// The dedup and rate-limit memory. It is kept in `state_dir/events.json` so a restarting agent
/// (a crash loop included) does not send again what it sent a moment ago.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Notifier {
    conditions: BTreeMap<String, Condition>,
    /// When each message of the last hour was sent.
    sent: VecDeque<Timestamp>,
    recent: VecDeque<Record>,
}

/// Only the detail's printable characters, bounded.
fn clean(detail: &str) -> String {
    let mut s: String = detail
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_DETAIL)
        .collect();
    if detail.chars().count() > MAX_DETAIL {
        s.push('…');
    }
    s
}

impl Notifier {
    /// The last events, oldest first (sent or held back), for `status`.
    pub fn recent(&self) -> impl Iterator<Item = &Record> {
        self.recent.iter()
    }

    /// Whether to send `ev` now; records it either way.
    pub fn offer(
        &mut self,
        cfg: &EventsConfig,
        group: &str,
        dry_run: bool,
        ev: Event,
        now: Timestamp,
    ) -> Option<Message> {
        let window = cfg.window.get().as_secs() as i64;
        let secs = now.as_second();
        self.sent.retain(|t| secs - t.as_second() < 3600);
        // Forget conditions quiet for a whole window with nothing held back.
        self.conditions
            .retain(|_, c| c.held > 0 || c.sent_at.is_some_and(|t| secs - t.as_second() < window));
        let detail = clean(&ev.detail);
        let outcome = if cfg.disabled.iter().any(|d| d == ev.kind.name()) {
            Outcome::Disabled
        } else {
            let c = self.conditions.entry(ev.key()).or_default();
            if c.sent_at.is_some_and(|t| secs - t.as_second() < window) {
                Outcome::Deduplicated
            } else if self.sent.len() >= cfg.max_per_hour as usize {
                Outcome::RateLimited
            } else {
                Outcome::Sent
            }
        };
        self.recent.push_back(Record {
            at: now,
            kind: ev.kind,
            instance_id: ev.instance_id.clone(),
            detail: detail.clone(),
            outcome,
        });
        while self.recent.len() > RECENT {
            self.recent.pop_front();
        }
        match outcome {
            Outcome::Disabled => None,
            Outcome::Deduplicated | Outcome::RateLimited => {
                let c = self.conditions.entry(ev.key()).or_default();
                c.held += 1;
                c.held_since.get_or_insert(now);
                None
            }
            Outcome::Sent => {
                let c = self.conditions.entry(ev.key()).or_default();
                let mut detail = detail;
                if c.held > 0 {
                    detail.push_str(&format!(
                        " ({} more {} since {} not sent: {} per events.window, {} per hour at most)",
                        c.held,
                        ev.kind,
                        c.held_since.unwrap_or(now),
                        cfg.window,
                        cfg.max_per_hour
                    ));
                }
                *c = Condition {
                    sent_at: Some(now),
                    held: 0,
                    held_since: None,
                };
                self.sent.push_back(now);
                Some(Message {
                    at: now,
                    kind: ev.kind,
                    group: group.to_string(),
                    instance_id: ev.instance_id,
                    detail,
                    dry_run,
                })
            }
        }
    }
}

/// Levels the daemon watches each tick; an event is their crossing, not their staying.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Levels {
    pub cap_used: u32,
    pub cap_limit: u32,
    pub cap_remaining: u32,
    /// Why scale-out is blocked until `burst-agent repair`, if it is.
    pub blocked: Option<String>,
}

/// The events of going from `prev` to `cur` (from nothing, at start: whatever holds now).
/// `low_at` is `alarms.cap_remaining_at_most`.
pub fn edges(prev: Option<&Levels>, cur: &Levels, low_at: u32) -> Vec<Event> {
    let mut out = Vec::new();
    let cap = format!(
        "burst cap {}/{} used today, {} left",
        cur.cap_used, cur.cap_limit, cur.cap_remaining
    );
    let was_exhausted = prev.is_some_and(|p| p.cap_remaining == 0);
    let was_low = prev.is_some_and(|p| p.cap_remaining <= low_at);
    if cur.cap_remaining == 0 && !was_exhausted {
        out.push(Event::new(
            EventKind::CapExhausted,
            None,
            format!("{cap}: no more slaves until local midnight"),
        ));
    } else if cur.cap_remaining > 0 && cur.cap_remaining <= low_at && !was_low {
        out.push(Event::new(EventKind::CapLow, None, cap));
    }
    if let (Some(why), false) = (&cur.blocked, prev.is_some_and(|p| p.blocked.is_some())) {
        out.push(Event::new(
            EventKind::LedgerBlocked,
            None,
            format!("scale-out blocked until `burst-agent repair`: {why}"),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Dur;

    fn cfg() -> EventsConfig {
        EventsConfig {
            window: Dur::secs(600),
            max_per_hour: 3,
            ..EventsConfig::default()
        }
    }

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    fn levels(remaining: u32) -> Levels {
        Levels {
            cap_used: 7 - remaining,
            cap_limit: 7,
            cap_remaining: remaining,
            blocked: None,
        }
    }

    #[test]
    fn a_flapping_condition_is_sent_once_per_window_with_what_was_held_back() {
        let (cfg, mut n) = (cfg(), Notifier::default());
        let mut sent = Vec::new();
        let mut prev: Option<Levels> = None;
        // The cap flaps between 0 and 1 left every 5 s for a minute, then again after the window.
        for i in 0..12 {
            let cur = levels(if i % 2 == 0 { 0 } else { 1 });
            for ev in edges(prev.as_ref(), &cur, 0) {
                sent.extend(n.offer(&cfg, "golf", false, ev, at(i * 5)));
            }
            prev = Some(cur);
        }
        assert_eq!(sent.len(), 1, "{sent:#?}");
        assert_eq!(sent[0].kind, EventKind::CapExhausted);
        prev = Some(levels(1));
        for ev in edges(prev.as_ref(), &levels(0), 0) {
            sent.extend(n.offer(&cfg, "golf", false, ev, at(700)));
        }
        assert_eq!(sent.len(), 2);
        assert!(
            sent[1].detail.contains("(5 more cap_exhausted since"),
            "{}",
            sent[1].detail
        );
        let held = n
            .recent()
            .filter(|r| r.outcome == Outcome::Deduplicated)
            .count();
        assert_eq!(held, 5);
    }

    #[test]
    fn many_conditions_at_once_are_limited_per_hour() {
        let (cfg, mut n) = (cfg(), Notifier::default());
        let mut sent = 0;
        for i in 0..10 {
            let ev = Event::new(
                EventKind::ForeignInstance,
                Some(&format!("i-{i}")),
                "not ours",
            );
            sent += usize::from(n.offer(&cfg, "golf", false, ev, at(i)).is_some());
        }
        assert_eq!(sent, 3);
        // An hour after the first, there is room again.
        let ev = Event::new(EventKind::ForeignInstance, Some("i-3"), "not ours");
        assert!(n.offer(&cfg, "golf", false, ev, at(3601)).is_some());
        assert_eq!(n.recent().last().map(|r| r.outcome), Some(Outcome::Sent));
    }

    #[test]
    fn disabled_kinds_are_recorded_not_sent() {
        let mut cfg = cfg();
        cfg.disabled = vec!["scale_out".into()];
        let mut n = Notifier::default();
        let ev = Event::new(EventKind::ScaleOut, None, "launched 2");
        assert!(n.offer(&cfg, "golf", false, ev, at(0)).is_none());
        let ev = Event::new(EventKind::ScaleIn, None, "released 1");
        assert!(n.offer(&cfg, "golf", false, ev, at(1)).is_some());
        assert_eq!(
            n.recent().next().map(|r| r.outcome),
            Some(Outcome::Disabled)
        );
    }

    #[test]
    fn edges_fire_on_crossing_not_on_staying() {
        assert_eq!(edges(Some(&levels(3)), &levels(3), 1), vec![]);
        let low = edges(Some(&levels(2)), &levels(1), 1);
        assert_eq!(low.len(), 1);
        assert_eq!(low[0].kind, EventKind::CapLow);
        assert!(low[0].detail.contains("6/7 used"), "{}", low[0].detail);
        assert_eq!(edges(Some(&levels(1)), &levels(1), 1), vec![]);
        let out = edges(Some(&levels(1)), &levels(0), 1);
        assert_eq!(out[0].kind, EventKind::CapExhausted);
        // At start, what holds now is news; a new day (7 left) is not.
        assert_eq!(edges(None, &levels(0), 1)[0].kind, EventKind::CapExhausted);
        assert_eq!(edges(Some(&levels(0)), &levels(7), 1), vec![]);
        let mut blocked = levels(7);
        blocked.blocked = Some("state.json unreadable".into());
        let b = edges(Some(&levels(7)), &blocked, 1);
        assert_eq!(b[0].kind, EventKind::LedgerBlocked);
        assert!(edges(Some(&blocked), &blocked, 1).is_empty());
    }

    #[test]
    fn subjects_fit_sns() {
        let m = Message {
            at: at(0),
            kind: EventKind::SyncFailed,
            group: "ramen-shop\u{e9}".repeat(20),
            instance_id: Some("i-0123".into()),
            detail: "x".into(),
            dry_run: true,
        };
        let s = m.subject();
        assert!(s.len() <= 100 && s.is_ascii(), "{s}");
        assert!(m.body().contains("event: sync_failed\n"));
        assert!(clean(&"a\nb".repeat(2000)).chars().count() == MAX_DETAIL + 1);
    }
}
