//! Event notifications (README: events): what happened that an operator should hear of, and the
//! pure rule for whether to tell them now. [`edges`] turns levels (the cap's remaining launches,
//! the repair block) into events when they are crossed; the agent's actuator reports the rest
//! (`Actuator::take_events`). [`Notifier::offer`] deduplicates by condition
//! (one message per condition per `events.window`) and limits the total
//! (`events.max_per_hour`), so a flapping condition never becomes a storm; nothing held back is
//! lost: [`Notifier::due`] sends a summary of it once its window has passed and the hour has
//! room, and a send that failed is told again the same way. Sending is the daemon's (the
//! `hooks.on_event` program, the SNS topic); nothing here does I/O. The last 20 events are kept
//! for `status`; the notifier's memory survives restarts in `events.json` (the daemon's).

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
    /// Content sync failed the same way twice in a row: launches that spend the cap stop
    /// until a reload, `burst-agent resume` or a trial after the back-off.
    SyncBroken,
    /// A slave reported more than the master's own sample backs: its value was not trusted
    /// past the evidence (a forged metric, or a host that really differs).
    MetricsSuspect,
    /// The content source on the master is missing, empty or lacks its sentinel: nothing is
    /// synced from it (serving slaves keep their content) and launches are held.
    ContentSourceMissing,
    /// The wall clock stepped (NTP after a VM resume, `date -s`): the agent's own clock keeps
    /// durations and the cap day steady.
    ClockStep,
    /// A serving slave has not reported its samples for `metrics.stale_after`: the policy
    /// counts it idle for scale-out and at target for scale-in, so the fleet never shrinks for
    /// it (its reporter is down, in dry run without a region, or in another namespace).
    SlaveSilent,
    /// Another agent holds the site's lease (a copy of this host, a restored master, the old
    /// master still alive): this one stands by and changes nothing; or this one took it over.
    LeaseChanged,
    /// The brownout bridge's level changed (on, raised, lowered, off, by hand).
    BridgeChanged,
    /// A bridge episode ran `bridge.max_episode`: full service again while the fleet may still
    /// be short, and no bridge for `bridge.cooldown`.
    BridgeExpired,
    /// `hooks.on_bridge` failed: the master serves at the level it had; retried next tick.
    BridgeHookFailed,
}

pub const EVENT_KINDS: [EventKind; 18] = [
    EventKind::ScaleOut,
    EventKind::ScaleIn,
    EventKind::CapLow,
    EventKind::CapExhausted,
    EventKind::SyncFailed,
    EventKind::LaunchFailed,
    EventKind::CapacityFallback,
    EventKind::ForeignInstance,
    EventKind::LedgerBlocked,
    EventKind::SyncBroken,
    EventKind::MetricsSuspect,
    EventKind::ContentSourceMissing,
    EventKind::ClockStep,
    EventKind::SlaveSilent,
    EventKind::LeaseChanged,
    EventKind::BridgeChanged,
    EventKind::BridgeExpired,
    EventKind::BridgeHookFailed,
];

impl EventKind {
    pub fn name(self) -> &'static str {
        crate::model::name_of(&self)
    }

    pub fn parse(s: &str) -> Option<Self> {
        crate::model::parse_name(s)
    }

    /// Routine news, sent after every alert that is due.
    fn routine(self) -> bool {
        matches!(
            self,
            EventKind::ScaleOut
                | EventKind::ScaleIn
                | EventKind::CapacityFallback
                | EventKind::BridgeChanged
        )
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
    /// Narrows the condition: the cap's local day for cap events (a new day's exhausted cap is
    /// news, however soon after the last day's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

impl Event {
    pub fn new(kind: EventKind, instance_id: Option<&str>, detail: impl Into<String>) -> Self {
        Event {
            kind,
            instance_id: instance_id.map(str::to_string),
            detail: detail.into(),
            scope: None,
        }
    }

    /// One condition per kind (and scope): many slaves failing their sync, many foreign
    /// instances, are one condition, told once with the instances named.
    fn key(&self) -> String {
        match &self.scope {
            Some(s) => format!("{}:{s}", self.kind),
            None => self.kind.name().to_string(),
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
    /// Sent, but the hook or SNS failed; told again after the window.
    Failed,
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
    #[serde(default)]
    key: String,
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
    /// The condition, for [`Notifier::failed`].
    pub key: String,
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
    kind: Option<EventKind>,
    sent_at: Option<Timestamp>,
    held: u32,
    held_since: Option<Timestamp>,
    /// The newest held-back detail, and the instances held back (at most ten).
    #[serde(default)]
    held_detail: String,
    #[serde(default)]
    held_ids: Vec<String>,
}

impl Condition {
    /// Just sent: nothing held back.
    fn sent(kind: EventKind, now: Timestamp) -> Self {
        Condition {
            kind: Some(kind),
            sent_at: Some(now),
            ..Condition::default()
        }
    }
}

/// Instances named in one summary, at most.
const HELD_IDS: usize = 10;

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

    fn remember(&mut self, r: Record) {
        self.recent.push_back(r);
        while self.recent.len() > RECENT {
            self.recent.pop_front();
        }
    }

    fn room(&mut self, cfg: &EventsConfig, now: Timestamp) -> bool {
        let secs = now.as_second();
        self.sent.retain(|t| secs - t.as_second() < 3600);
        self.sent.len() < cfg.max_per_hour as usize
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
        // Forget conditions quiet for a whole window with nothing held back.
        self.conditions
            .retain(|_, c| c.held > 0 || c.sent_at.is_some_and(|t| secs - t.as_second() < window));
        let detail = clean(&ev.detail);
        let key = ev.key();
        let outcome = if cfg.disabled.iter().any(|d| d == ev.kind.name()) {
            Outcome::Disabled
        } else if self
            .conditions
            .get(&key)
            .and_then(|c| c.sent_at)
            .is_some_and(|t| secs - t.as_second() < window)
        {
            Outcome::Deduplicated
        } else if !self.room(cfg, now) {
            Outcome::RateLimited
        } else {
            Outcome::Sent
        };
        self.remember(Record {
            at: now,
            kind: ev.kind,
            instance_id: ev.instance_id.clone(),
            detail: detail.clone(),
            outcome,
            key: key.clone(),
        });
        let c = self.conditions.entry(key.clone()).or_default();
        c.kind = Some(ev.kind);
        match outcome {
            Outcome::Disabled | Outcome::Failed => None,
            Outcome::Deduplicated | Outcome::RateLimited => {
                c.held += 1;
                c.held_since.get_or_insert(now);
                c.held_detail = detail;
                if let Some(id) = ev.instance_id {
                    if !c.held_ids.contains(&id) && c.held_ids.len() < HELD_IDS {
                        c.held_ids.push(id);
                    }
                }
                None
            }
            Outcome::Sent => {
                let mut detail = detail;
                if c.held > 0 {
                    detail.push_str(&held_note(c, ev.kind, now));
                }
                *c = Condition::sent(ev.kind, now);
                self.sent.push_back(now);
                Some(Message {
                    at: now,
                    kind: ev.kind,
                    group: group.to_string(),
                    instance_id: ev.instance_id,
                    detail,
                    dry_run,
                    key,
                })
            }
        }
    }

    /// Summaries of what was held back, for each condition whose window has passed, alerts
    /// before routine news, as far as the hour has room: nothing held back is lost.
    pub fn due(
        &mut self,
        cfg: &EventsConfig,
        group: &str,
        dry_run: bool,
        now: Timestamp,
    ) -> Vec<Message> {
        let window = cfg.window.get().as_secs() as i64;
        let secs = now.as_second();
        let mut ready: Vec<(bool, String)> = self
            .conditions
            .iter()
            .filter(|(_, c)| c.held > 0 && c.sent_at.is_none_or(|t| secs - t.as_second() >= window))
            .map(|(k, c)| (c.kind.is_some_and(EventKind::routine), k.clone()))
            .collect();
        ready.sort();
        let mut out = Vec::new();
        for (_, key) in ready {
            if !self.room(cfg, now) {
                break;
            }
            let Some(c) = self.conditions.get_mut(&key) else {
                continue;
            };
            let Some(kind) = c.kind else { continue };
            let detail = format!("{}{}", c.held_detail, held_note(c, kind, now));
            let instance_id = (c.held_ids.len() == 1).then(|| c.held_ids[0].clone());
            *c = Condition::sent(kind, now);
            self.sent.push_back(now);
            self.remember(Record {
                at: now,
                kind,
                instance_id: instance_id.clone(),
                detail: detail.clone(),
                outcome: Outcome::Sent,
                key: key.clone(),
            });
            out.push(Message {
                at: now,
                kind,
                group: group.to_string(),
                instance_id,
                detail,
                dry_run,
                key,
            });
        }
        out
    }

    /// A message could not be delivered: `status` says so, and its condition is told again
    /// (as held back) once its window has passed.
    pub fn failed(&mut self, m: &Message, why: &str, now: Timestamp) {
        if let Some(r) = self
            .recent
            .iter_mut()
            .rev()
            .find(|r| r.key == m.key && r.outcome == Outcome::Sent)
        {
            r.outcome = Outcome::Failed;
            r.detail = format!("{} (not delivered: {why})", r.detail);
        }
        let c = self.conditions.entry(m.key.clone()).or_default();
        c.kind = Some(m.kind);
        c.held += 1;
        c.held_since.get_or_insert(m.at.min(now));
        if c.held_detail.is_empty() {
            c.held_detail = m.detail.clone();
        }
    }
}

/// " (N more KIND since T, instances a, b, not sent ...)".
fn held_note(c: &Condition, kind: EventKind, now: Timestamp) -> String {
    let ids = if c.held_ids.is_empty() {
        String::new()
    } else {
        format!(" ({})", c.held_ids.join(", "))
    };
    format!(
        " [{} more {kind}{ids} since {} held back: one message per condition per events.window, \
         at most events.max_per_hour]",
        c.held,
        c.held_since.unwrap_or(now)
    )
}

/// Levels the daemon watches each tick; an event is their crossing, not their staying.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Levels {
    pub cap_used: u32,
    pub cap_limit: u32,
    pub cap_remaining: u32,
    /// The cap's local day (its events are per day).
    pub day: String,
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
    // A new day starts from a full cap, whatever the last one ended at.
    let same_day = |p: &&Levels| p.day == cur.day;
    let was_exhausted = prev.filter(same_day).is_some_and(|p| p.cap_remaining == 0);
    let was_low = prev
        .filter(same_day)
        .is_some_and(|p| p.cap_remaining <= low_at);
    let mut ev = if cur.cap_remaining == 0 && !was_exhausted {
        Some(Event::new(
            EventKind::CapExhausted,
            None,
            format!("{cap}: no more slaves until local midnight"),
        ))
    } else if cur.cap_remaining > 0 && cur.cap_remaining <= low_at && !was_low {
        Some(Event::new(EventKind::CapLow, None, cap))
    } else {
        None
    };
    if let Some(e) = ev.as_mut() {
        e.scope = Some(cur.day.clone());
    }
    out.extend(ev);
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
        on_day(remaining, "2026-11-25")
    }

    fn on_day(remaining: u32, day: &str) -> Levels {
        Levels {
            cap_used: 7 - remaining,
            cap_limit: 7,
            cap_remaining: remaining,
            day: day.into(),
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
            sent.extend(n.due(&cfg, "golf", false, at(i * 5)));
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
            sent[1].detail.contains("[5 more cap_exhausted since"),
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
    fn what_was_held_back_is_told_when_its_window_passes_even_with_no_new_crossing() {
        let (cfg, mut n) = (cfg(), Notifier::default());
        let ev = |id: &str| Event::new(EventKind::SyncFailed, Some(id), format!("{id}: no rsync"));
        assert!(n.offer(&cfg, "golf", false, ev("i-1"), at(0)).is_some());
        for (t, id) in [(10, "i-2"), (20, "i-3")] {
            assert!(n.offer(&cfg, "golf", false, ev(id), at(t)).is_none());
        }
        assert!(n.due(&cfg, "golf", false, at(599)).is_empty());
        let due = n.due(&cfg, "golf", false, at(600));
        assert_eq!(due.len(), 1, "{due:#?}");
        assert!(
            due[0]
                .detail
                .starts_with("i-3: no rsync [2 more sync_failed (i-2, i-3) since"),
            "{}",
            due[0].detail
        );
        // Told once: nothing is due any more.
        assert!(n.due(&cfg, "golf", false, at(1300)).is_empty());
    }

    #[test]
    fn a_new_days_exhausted_cap_is_news_however_soon_after_the_last_days() {
        let (cfg, mut n) = (cfg(), Notifier::default());
        let mut sent = 0;
        let mut prev: Option<Levels> = None;
        // 23:55 the cap runs out; 00:00 a new day (7 left); 00:05 it runs out again.
        for (t, l) in [
            (0, on_day(0, "2026-11-25")),
            (300, on_day(7, "2026-11-26")),
            (600, on_day(0, "2026-11-26")),
        ] {
            for ev in edges(prev.as_ref(), &l, 1) {
                sent += usize::from(n.offer(&cfg, "golf", false, ev, at(t)).is_some());
            }
            prev = Some(l);
        }
        assert_eq!(sent, 2);
        // Same day, a cap raised and used up again (1 → 0 with a reload in between): held, then
        // told when the window passes.
        let prev = on_day(1, "2026-11-26");
        let again = edges(Some(&prev), &on_day(0, "2026-11-26"), 1);
        assert!(n
            .offer(&cfg, "golf", false, again[0].clone(), at(700))
            .is_none());
        assert_eq!(n.due(&cfg, "golf", false, at(1200)).len(), 1);
    }

    #[test]
    fn the_hour_limit_holds_back_routine_news_first_and_loses_nothing() {
        let (cfg, mut n) = (cfg(), Notifier::default());
        let kinds = [
            EventKind::ScaleOut,
            EventKind::CapacityFallback,
            EventKind::SyncFailed,
            EventKind::LaunchFailed,
            EventKind::ForeignInstance,
            EventKind::LedgerBlocked,
        ];
        let mut sent = Vec::new();
        for (i, k) in kinds.into_iter().enumerate() {
            let ev = Event::new(k, None, k.name());
            sent.extend(n.offer(&cfg, "golf", false, ev, at(i as i64)));
        }
        // Three an hour: the first three went out, three were held back.
        assert_eq!(sent.len(), 3);
        assert!(n.due(&cfg, "golf", false, at(3599)).is_empty());
        // An hour after the first three, the three held back go out as summaries.
        let later: Vec<EventKind> = n
            .due(&cfg, "golf", false, at(3602))
            .iter()
            .map(|m| m.kind)
            .collect();
        assert_eq!(
            later,
            [
                EventKind::ForeignInstance,
                EventKind::LaunchFailed,
                EventKind::LedgerBlocked
            ]
        );
        // With room for one only, an alert goes before routine news.
        let mut n = Notifier::default();
        let one = EventsConfig {
            max_per_hour: 1,
            ..cfg.clone()
        };
        for (t, k) in [
            (0, EventKind::SyncFailed),
            (1, EventKind::ScaleOut),
            (2, EventKind::LaunchFailed),
        ] {
            n.offer(&one, "golf", false, Event::new(k, None, k.name()), at(t));
        }
        let first = n.due(&one, "golf", false, at(3600));
        assert_eq!(
            first.iter().map(|m| m.kind).collect::<Vec<_>>(),
            [EventKind::LaunchFailed]
        );
    }

    #[test]
    fn a_failed_send_is_shown_and_told_again_after_its_window() {
        let (cfg, mut n) = (cfg(), Notifier::default());
        let m = n
            .offer(
                &cfg,
                "golf",
                false,
                Event::new(EventKind::LedgerBlocked, None, "state.json unreadable"),
                at(0),
            )
            .unwrap();
        n.failed(&m, "AuthorizationError", at(1));
        let r = n.recent().last().unwrap();
        assert_eq!(r.outcome, Outcome::Failed);
        assert!(
            r.detail.contains("not delivered: AuthorizationError"),
            "{}",
            r.detail
        );
        assert!(n.due(&cfg, "golf", false, at(599)).is_empty());
        let again = n.due(&cfg, "golf", false, at(600));
        assert_eq!(again.len(), 1);
        assert!(
            again[0].detail.starts_with("state.json unreadable"),
            "{}",
            again[0].detail
        );
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
            key: "sync_failed".into(),
        };
        let s = m.subject();
        assert!(s.len() <= 100 && s.is_ascii(), "{s}");
        assert!(m.body().contains("event: sync_failed\n"));
        assert!(clean(&"a\nb".repeat(2000)).chars().count() == MAX_DETAIL + 1);
    }
}
