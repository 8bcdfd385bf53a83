//! The brownout bridge (docs/bridge.md): degraded modes that keep the site answering while
//! capacity is short now and cannot come in time. Two stages of [`decide`](super::decide):
//!
//! - [`full_cost`], right after the serving hosts are read: a host that served at a level did
//!   cheaper work, so its load is read back to what full-cost requests would have made it (the
//!   busy ratio at the level's cost, the load average unmixed sample by sample, and a master with
//!   few workers busy by its request rate, [`RequestTrack`]). Scaling counts from that, so the
//!   bridge never delays a launch or hastens a release.
//! - [`bridge`], last: the level for the next tick, from the master's own newest sample.
//!
//! The model both read (the one `simulate` runs): a share s of the site's load L (in hosts'
//! capacity) only the master serves and no level degrades (`bridge.master_only_share`); the
//! rest is spread over the n serving hosts, at `cost(l)` of its full cost on a host at level l.
//! The master reads v = s·L + (1 − s)·L·cost(l)/n, so L = v / (s + (1 − s)·cost(l)/n), and at
//! level l with k more hosts it would read F(l, k) = s·L + (1 − s)·L·cost(l)/(n + k).
//!
//! The rule, every decision (a level is an integer 0..=top; 0 is full service):
//! 1. a level set by hand that has not expired wins (`bridge set N`, `bridge off`);
//! 2. an episode that reached `max_episode` ends: level 0 and `cooldown` without one;
//! 3. raise to the lowest level l with F(l, k) <= `enter_utilization`, where k counts the
//!    slaves on the way due to serve within `grace` by the lead time, and not overdue by more
//!    (none: the top level), at once;
//! 4. else lower to the lowest level l with F(l, 0) <= `exit_utilization` (only hosts that
//!    serve now), once the level has been held `min_dwell`.
//!
//! Architecture Invariant (14): scaling reads full-cost load; the bridge never changes what
//! the fleet's size is decided on.

use super::{Fleet, FleetObservation, History, HostMetrics, Reason, SlaveState};
use crate::config::{BridgeConfig, PolicyConfig};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// The bridge's state: the level in force and its episode. The policy returns the next one in
/// each [`Explanation`](super::Explanation); [`History`] keeps it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BridgeState {
    /// 0: full service.
    pub level: u8,
    /// When the level was last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Timestamp>,
    /// When the episode (the levels above 0 since the last 0) began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub episode_start: Option<Timestamp>,
    /// An episode ended by `bridge.max_episode`: none starts before then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooling_until: Option<Timestamp>,
    /// The level was set by hand.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub manual: bool,
    /// The master's load average as sampled and as it would read at full cost, kept from one
    /// decision to the next to read the next sample back ([`full_cost`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_load: Option<LoadTrack>,
    /// The master's requests, kept from one decision to the next ([`RequestTrack`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_requests: Option<RequestTrack>,
}

/// The master's request counter at one sample, its rate since the sample before, and what a
/// request costs at full cost in busy workers per request per second (learned at full service).
/// A level makes requests cheaper, never fewer: at a level the full-cost busy ratio is the
/// request rate times that cost. Read off a degraded host's busy ratio instead, a single busy
/// worker (mod_status's own request) would read as an overload at a level that costs a
/// hundredth, and the level would never come down.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct RequestTrack {
    pub at: Timestamp,
    pub total: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_request: Option<f64>,
}

impl RequestTrack {
    /// The next track from the master's sample `m` (its busy ratio as measured, `busy`): the
    /// rate over the two samples (none across a restart's reset or a gap of over 2 minutes),
    /// and the cost per request learned on samples at full service, settled a minute, neither
    /// idle nor saturated.
    fn next(prev: Option<RequestTrack>, m: &HostMetrics, busy: Option<f64>) -> Option<Self> {
        let total = m.total_accesses?;
        let rate = match prev {
            Some(p) if p.at == m.at => p.rate,
            Some(p) if p.at < m.at && p.total <= total => {
                let dt = m.at.as_second() - p.at.as_second();
                (dt <= 120).then(|| (total - p.total) as f64 / dt as f64)
            }
            _ => None,
        };
        let settled = m.bridge_level == 0
            && m.bridge_change
                .is_none_or(|c| m.at.as_second() - c.at.as_second() >= 60);
        let fresh = prev.is_none_or(|p| p.at < m.at);
        let learned = match (rate, busy) {
            (Some(r), Some(b)) if fresh && settled && r >= 1.0 && (0.05..=0.9).contains(&b) => {
                Some(b / r)
            }
            _ => None,
        };
        let per_request = match (prev.and_then(|p| p.per_request), learned) {
            (Some(d), Some(x)) => Some(0.8 * d + 0.2 * x),
            (d, x) => d.or(x),
        };
        Some(RequestTrack {
            at: m.at,
            total,
            rate,
            per_request,
        })
    }

    /// The master's busy ratio at full cost: the request rate times a request's full cost.
    fn full_busy(&self) -> Option<f64> {
        Some(self.rate? * self.per_request?)
    }
}

/// Below this busy ratio a degraded host's busy workers are too few to scale by 1/cost (one
/// worker more or less, mod_status's own request among them, is a large share): its request
/// rate says its full-cost load instead. Above it the busy ratio does: it is instantaneous,
/// where the rate is a mean since the decision before.
pub const FEW_BUSY: f64 = 0.25;

/// What stage 0b keeps of the master for the next decision.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Tracks {
    pub load: Option<LoadTrack>,
    pub requests: Option<RequestTrack>,
    /// The master's busy ratio at full cost, not bounded by 1: how far past saturation the
    /// full-cost load is, for the bridge's own reading (scaling reads it bounded).
    pub busy: Option<f64>,
}

impl Tracks {
    /// The master's `signal` at full cost, as stage 0b read it; `None` without a fresh sample.
    fn master(&self, signal: crate::config::Signal) -> Option<f64> {
        match signal {
            crate::config::Signal::ApacheBusyRatio => self.busy,
            crate::config::Signal::LoadPerCpu => self.load.map(|t| t.full),
            _ => None,
        }
        .filter(|v| v.is_finite() && *v >= 0.0)
    }
}

/// The master's load average at one sample: as read, and at full cost.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoadTrack {
    pub at: Timestamp,
    pub raw: f64,
    pub full: f64,
}

impl BridgeState {
    pub fn is_off(&self) -> bool {
        *self == BridgeState::default()
    }
}

/// How long a load average keeps a level change in it, for [`full_cost`]: five time constants
/// (less than 1 % of the level left).
const LOAD_REMEMBERS_SECS: i64 = 300;

/// A level an operator set by hand (`burst-agent bridge set N` / `bridge off`): an observation
/// like any other, which expires.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ManualBridge {
    pub level: u8,
    pub until: Timestamp,
    /// Who or what set it (the user, the command).
    pub by: String,
}

/// The model above, with the configured costs.
struct Model<'a> {
    b: &'a BridgeConfig,
    s: f64,
}

impl Model<'_> {
    fn of(b: &BridgeConfig) -> Model<'_> {
        let s = b.master_only_share;
        let s = if s.is_finite() {
            s.clamp(0.0, 0.99)
        } else {
            0.0
        };
        Model { b, s }
    }

    /// The site's load L, in hosts' capacity, from the master's reading `v` while the spread
    /// part cost `cost`, with `n` serving hosts.
    fn load(&self, v: f64, cost: f64, n: u32) -> f64 {
        let n = f64::from(n.max(1));
        v / (self.s + (1.0 - self.s) * cost / n)
    }

    /// The master's reading at `level` with `n` serving hosts under load `l`.
    fn master(&self, l: f64, level: u8, n: u32) -> f64 {
        let n = f64::from(n.max(1));
        self.s * l + (1.0 - self.s) * l * self.b.cost(level) / n
    }
}

/// The time constant of the kernel's 1-minute load average, in seconds.
const LOAD_TAU_SECS: f64 = 60.0;

/// Stage 0b: each serving host's load-proportional signals read back to full cost when it
/// served at a level (`hosts`: the master first); `serving` counts the hosts behind the ELB.
/// The busy ratio is instantaneous: read at the level of the sample, and at most 1, as the host
/// would have shown it. The load average is a minute's exponential mean: after a change it
/// mixes the two levels' costs, weighed as the kernel weighs them (the level left counts
/// e^(-t/60) t seconds on), level 0 after an episode included, so it neither delays a launch
/// nor hastens a release.
pub(crate) fn full_cost(
    b: &BridgeConfig,
    hosts: &mut [(&str, Option<HostMetrics>)],
    serving: u32,
    prev: &BridgeState,
) -> (Tracks, Vec<Reason>) {
    let model = Model::of(b);
    let track = prev.master_load;
    let (mut read, mut names) = (Vec::new(), Vec::new());
    let mut tracked = None;
    let mut requests = None;
    let mut busy = None;
    for (i, (name, m)) in hosts.iter_mut().enumerate() {
        let Some(m) = m.as_mut() else {
            continue;
        };
        let now_cost = b.cost(m.bridge_level);
        let load_cost = match m.bridge_change {
            Some(c) => {
                let t = (m.at.as_second() - c.at.as_second()).max(0) as f64;
                let left = (-t / LOAD_TAU_SECS).exp();
                now_cost * (1.0 - left) + b.cost(c.from) * left
            }
            None => now_cost,
        };
        // The master: its own share is never degraded, the spread part is.
        let back = |v: f64, cost: f64| {
            if i == 0 {
                let l = model.load(v, cost, serving);
                model.master(l, 0, serving)
            } else {
                v / cost
            }
        };
        let before = *m;
        if i == 0 && b.enabled {
            requests = RequestTrack::next(prev.master_requests, m, m.apache_busy_ratio);
        }
        // The master at a level, with few workers busy: the busy ratio its request rate gives,
        // when it gives one.
        let few = m.apache_busy_ratio.is_some_and(|v| v < FEW_BUSY);
        let by_rate = requests
            .and_then(|r| r.full_busy())
            .filter(|_| i == 0 && few);
        if now_cost < 1.0 {
            let full = m
                .apache_busy_ratio
                .map(|v| by_rate.unwrap_or_else(|| back(v, now_cost)));
            if i == 0 {
                busy = full;
            }
            // Scaling reads it bounded, as the host would have shown it.
            m.apache_busy_ratio = full.map(|v| v.min(1.0));
        } else if i == 0 {
            busy = m.apache_busy_ratio;
        }
        let recent = m
            .bridge_change
            .is_some_and(|c| m.at.as_second() - c.at.as_second() < LOAD_REMEMBERS_SECS);
        match (i, m.load_per_cpu) {
            (0, Some(v)) if b.enabled || now_cost < 1.0 || recent => {
                // The master's load average, unmixed sample by sample: between two samples Δ
                // apart the kernel's mean moved as v = v0·e + u·(1 − e), e = e^(−Δ/60); u is
                // what ran meanwhile at this sample's cost, and at full cost it adds to the
                // full-cost mean the same way. Without the sample before (a start, a gap), the
                // mix of the two costs by time stands in.
                let full = match track {
                    Some(p) if p.at == m.at => p.full,
                    Some(p) if p.at < m.at && m.at.as_second() - p.at.as_second() <= 120 => {
                        let dt = (m.at.as_second() - p.at.as_second()) as f64;
                        let e = (-dt / LOAD_TAU_SECS).exp();
                        let u = ((v - p.raw * e) / (1.0 - e)).max(0.0);
                        p.full * e + back(u, now_cost) * (1.0 - e)
                    }
                    _ => back(v, load_cost),
                };
                // Settled at full service, the mean is the full-cost one: no drift kept.
                let full = if now_cost < 1.0 || recent { full } else { v };
                tracked = Some(LoadTrack {
                    at: m.at,
                    raw: v,
                    full,
                });
                m.load_per_cpu = Some(full);
            }
            (_, Some(v)) if load_cost < 1.0 - 1e-3 => m.load_per_cpu = Some(back(v, load_cost)),
            _ => {}
        }
        m.bridge_level = 0;
        m.bridge_change = None;
        let pairs = [
            (
                "busy",
                before.apache_busy_ratio,
                m.apache_busy_ratio,
                now_cost,
            ),
            ("load/CPU", before.load_per_cpu, m.load_per_cpu, load_cost),
        ];
        let lines = read.len();
        for (what, from, to, cost) in pairs {
            if let (Some(f), Some(t)) = (from, to) {
                if (f - t).abs() > 0.005 {
                    read.push(format!("{name} {what} {f:.2} at cost {cost:.2} is {t:.2}"));
                }
            }
        }
        if read.len() > lines {
            names.push(name.to_string());
        }
    }
    let tracks = Tracks {
        load: tracked,
        requests,
        busy,
    };
    if read.is_empty() {
        return (tracks, Vec::new());
    }
    let message = read.join("; ");
    (
        tracks,
        vec![Reason::FullCost {
            hosts: names,
            message,
        }],
    )
}

/// Stage 7: the bridge's level for the next tick, and why.
pub(crate) fn bridge(
    b: &BridgeConfig,
    cfg: &PolicyConfig,
    obs: &FleetObservation,
    hist: &History,
    fleet: Fleet,
    tracks: Tracks,
    now: Timestamp,
) -> (BridgeState, Vec<Reason>) {
    let prev = hist.bridge.clone();
    let secs = |since: Option<Timestamp>| since.map_or(0, |t| now.as_second() - t.as_second());
    let mut next = prev.clone();
    next.manual = false;
    next.master_load = tracks.load;
    next.master_requests = tracks.requests;
    next.cooling_until = prev.cooling_until.filter(|u| *u > now);
    if !b.enabled {
        if prev.level > 0 {
            let why = vec![Reason::BridgeDisabled { from: prev.level }];
            return (BridgeState::default(), why);
        }
        return (BridgeState::default(), Vec::new());
    }
    let top = b.top();
    let set = |next: &mut BridgeState, level: u8| {
        if level != next.level {
            next.since = Some(now);
            if next.level == 0 {
                next.episode_start = Some(now);
            }
            if level == 0 {
                next.episode_start = None;
            }
            next.level = level;
        }
    };
    // 1. By hand.
    if let Some(hand) = obs.bridge_manual.as_ref().filter(|h| h.until > now) {
        set(&mut next, hand.level.min(top));
        next.manual = true;
        let why = Reason::BridgeManual {
            level: next.level,
            by: hand.by.clone(),
            left_secs: hand.until.as_second() - now.as_second(),
        };
        return (next, vec![why]);
    }
    // 2. The episode's limit (a level set by hand counted too, once the hand let go).
    let episode = secs(prev.episode_start);
    if prev.level > 0 && episode >= b.max_episode.whole_secs() {
        let cooldown = b.cooldown.whole_secs();
        set(&mut next, 0);
        next.cooling_until = Timestamp::from_second(now.as_second() + cooldown).ok();
        let why = Reason::BridgeExpired {
            from: prev.level,
            episode_secs: episode,
            cooldown_secs: cooldown,
        };
        return (next, vec![why]);
    }
    // The master's own fresh sample at full cost, as stage 0b read it.
    let Some(full) = tracks.master(b.signal) else {
        let why = (prev.level > 0).then_some(Reason::BridgeBlind { level: prev.level });
        return (next, why.into_iter().collect());
    };
    let model = Model::of(b);
    let n = 1 + fleet.in_service;
    let load = model.load(full, 1.0, n);
    let at = |level: u8, k: u32| {
        let n = f64::from(n);
        model.s * load + (1.0 - model.s) * load * b.cost(level) / (n + f64::from(k))
    };
    // 3. Raise: short with the capacity that serves in time.
    // A slave on its way counts when it should serve within the grace by the lead time; one
    // overdue by more than the grace (a slow boot, a sync that keeps failing) does not: when it
    // will serve is anyone's guess.
    let (lead, _) = hist.lead_time(cfg.forecast.lead_time.whole_secs());
    let grace = b.grace.whole_secs();
    let in_time = |s: &&super::SlaveObservation| {
        let due = s.launched_at.as_second() + lead - now.as_second();
        (-grace..=grace).contains(&due)
    };
    let arriving = super::to_u32(
        obs.slaves
            .iter()
            .filter(|s| matches!(s.state, SlaveState::Pending | SlaveState::Syncing))
            .filter(in_time)
            .count(),
    );
    let enter = b.enter_utilization;
    let wanted = (0..=top).find(|&l| at(l, arriving) <= enter).unwrap_or(top);
    let mut why = Vec::new();
    if wanted > prev.level {
        let cooling = prev.cooling_until.filter(|u| *u > now);
        if let (0, Some(until)) = (prev.level, cooling) {
            why.push(Reason::BridgeCooling {
                utilization: at(0, arriving),
                left_secs: until.as_second() - now.as_second(),
            });
            return (next, why);
        }
        set(&mut next, wanted);
        why.push(if prev.level == 0 {
            Reason::BridgeOn {
                level: wanted,
                utilization: at(0, arriving),
                enter,
                arriving,
            }
        } else {
            Reason::BridgeRaised {
                from: prev.level,
                to: wanted,
                utilization: at(prev.level, arriving),
                enter,
            }
        });
        return (next, why);
    }
    if prev.level == 0 {
        if arriving > 0 && at(0, 0) > enter {
            why.push(Reason::BridgeCovered {
                utilization: at(0, 0),
                arriving,
                grace_secs: b.grace.whole_secs(),
            });
        }
        return (next, why);
    }
    // 4. Lower: the serving hosts carry a lighter level.
    let exit = b.exit_utilization;
    let lighter = (0..prev.level).find(|&l| at(l, 0) <= exit);
    let dwell_left = b.min_dwell.whole_secs() - secs(prev.since);
    match lighter {
        Some(to) if dwell_left <= 0 => {
            set(&mut next, to);
            why.push(if to == 0 {
                Reason::BridgeOff {
                    from: prev.level,
                    utilization: at(0, 0),
                    exit,
                    episode_secs: episode,
                }
            } else {
                Reason::BridgeLowered {
                    from: prev.level,
                    to,
                    utilization: at(to, 0),
                    exit,
                }
            });
        }
        _ => why.push(Reason::BridgeHeld {
            level: prev.level,
            lighter: at(prev.level - 1, 0),
            exit,
            dwell_left_secs: dwell_left.max(0),
        }),
    }
    (next, why)
}

#[cfg(test)]
mod tests;
