//! What the policy remembers between ticks, recorded by the caller after each decision
//! ([`History::record`]); `decide` only reads it:
//!
//! - past recommendations (stabilization windows) and utilization (sustain windows);
//! - the last scale-out and scale-in (cooldowns), and the last time every slave was needed;
//! - each forecastable signal's fleet total, for the forecast's trend;
//! - the measured launch-to-InService lead times (the median is used);
//! - the last time each fleet size was wanted (how long the slave that makes the fleet n strong
//!   has been unneeded);
//! - the slaves released beyond the warm pool's room in this lull, and the instance-time kept
//!   today for no signal (`policy.max_kept_per_day`).
//!
//! The actuator keeps it in `state.json` with the cap ledger: it survives a restart.

use super::Decision;
use crate::config::PolicyConfig;
use crate::model::Signal;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// (time, raw desired slaves): HPA records the unstabilized recommendation.
    recommendations: VecDeque<(Timestamp, u32)>,
    /// (time, fleet utilization) for sustain windows; `None` when metrics were missing.
    utilization: VecDeque<(Timestamp, Option<f64>)>,
    pub last_scale_out: Option<Timestamp>,
    pub last_scale_in: Option<Timestamp>,
    /// The last time every current slave was wanted (raw desired >= current).
    pub last_needed: Option<Timestamp>,
    /// (time, signal, the fleet's total of it, serving hosts): the forecast's input.
    #[serde(default)]
    load: VecDeque<(Timestamp, Signal, f64, u32)>,
    /// Seconds from launch to InService of the last slaves, newest last: the lead time.
    #[serde(default)]
    lead_times: VecDeque<i64>,
    /// `needed_at[n - 1]`: the last time at least n slaves were wanted (raw desired >= n); the
    /// slave that makes the fleet n strong has been unneeded since then.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    needed_at: Vec<Timestamp>,
    /// Slaves released since every slave was last needed, beyond the warm pool's room: each
    /// took the next cap unit's place in the keep rule's prices.
    #[serde(default)]
    released_beyond_pool: u32,
    /// Instance-seconds spent today keeping slaves no signal needed (`KeepingForCap`), and when
    /// the cap day they count in ends: `policy.max_kept_per_day` bounds them.
    #[serde(default)]
    kept_secs: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kept_day_ends: Option<Timestamp>,
    /// The brownout bridge's level and episode, as the last decision left them.
    #[serde(default, skip_serializing_if = "super::BridgeState::is_off")]
    pub bridge: super::BridgeState,
}

/// Lead times kept (the median of these is used).
const LEAD_TIMES: usize = 10;

/// Fleet sizes whose last need is remembered (`policy.max_slaves` is at most 1000).
const MAX_LEVELS: u32 = 1000;

impl History {
    pub fn new() -> Self {
        Self::default()
    }

    /// Remembers `decision` (made at `now`) and forgets what no window can reach any more.
    pub fn record(&mut self, cfg: &PolicyConfig, now: Timestamp, decision: &Decision) {
        let why = decision.explanation();
        self.bridge = why.bridge.clone();
        let previous = self.recommendations.back().map(|(t, _)| *t);
        self.recommendations.push_back((now, why.raw_desired));
        self.utilization.push_back((now, why.utilization));
        let hosts = why.in_service + 1;
        for r in &why.signals {
            if let (Some(u), 0, true) = (r.utilization, r.missing_hosts, r.signal.forecastable()) {
                self.load
                    .push_back((now, r.signal, u * f64::from(hosts), hosts));
            }
        }
        // The forecast looks back one window only.
        let since = now.as_second() - cfg.forecast.window.whole_secs();
        while self
            .load
            .front()
            .is_some_and(|(t, ..)| t.as_second() < since)
        {
            self.load.pop_front();
        }
        if why.raw_desired >= why.current {
            self.last_needed = Some(now);
            self.released_beyond_pool = 0;
        }
        self.released_beyond_pool = self
            .released_beyond_pool
            .saturating_add(why.released_beyond_pool);
        let wanted = why.raw_desired.min(MAX_LEVELS) as usize;
        let levels = self.needed_at.len().max(wanted);
        self.needed_at.resize(levels, now);
        self.needed_at[..wanted].fill(now);
        // Keeping is counted by the time since the last decision (at most two intervals: a
        // stopped agent kept nothing), per cap day.
        if self.kept_day_ends.is_none_or(|end| now >= end) {
            self.kept_secs = 0;
            self.kept_day_ends = Timestamp::from_second(now.as_second() + why.cap.resets_in_secs)
                .ok()
                .filter(|end| *end > now);
        }
        let kept = why.reasons.iter().find_map(|r| match r {
            super::Reason::KeepingForCap { kept, .. } => Some(i64::from(*kept)),
            _ => None,
        });
        if let Some(kept) = kept {
            let interval = cfg.evaluation_interval.whole_secs();
            let elapsed = previous.map_or(interval, |p| {
                (now.as_second() - p.as_second()).clamp(0, 2 * interval)
            });
            self.kept_secs = self.kept_secs.saturating_add(kept * elapsed);
        }
        match decision {
            Decision::ScaleOut { .. } => self.last_scale_out = Some(now),
            Decision::ScaleIn { .. } => self.last_scale_in = Some(now),
            Decision::Hold { .. } => {}
        }
        let horizon = [
            cfg.scale_out_stabilization,
            cfg.scale_in_stabilization,
            cfg.scale_out.sustain,
            cfg.scale_in.sustain,
        ]
        .iter()
        .map(|d| d.get().as_secs() as i64)
        .max()
        .unwrap_or(0)
            + cfg.evaluation_interval.get().as_secs() as i64;
        let cutoff = now.as_second() - horizon;
        while self
            .recommendations
            .front()
            .is_some_and(|(t, _)| t.as_second() < cutoff)
        {
            self.recommendations.pop_front();
        }
        while self
            .utilization
            .front()
            .is_some_and(|(t, _)| t.as_second() < cutoff)
        {
            self.utilization.pop_front();
        }
    }

    /// A slave went from launch to InService in `secs`: the lead time is measured, not guessed.
    /// Bounded as `policy.forecast.lead_time` is (10 s to 1 h).
    pub fn record_lead(&mut self, secs: i64) {
        self.lead_times.push_back(secs.clamp(10, 3600));
        while self.lead_times.len() > LEAD_TIMES {
            self.lead_times.pop_front();
        }
    }

    /// The median of the measured lead times once there are three, else `default`; and
    /// whether it was measured.
    pub fn lead_time(&self, default: i64) -> (i64, bool) {
        if self.lead_times.len() < 3 {
            return (default, false);
        }
        let mut v: Vec<i64> = self.lead_times.iter().copied().collect();
        v.sort_unstable();
        (v[v.len() / 2], true)
    }

    /// The fleet's `signal` total trend, per second: the median of the slopes between every
    /// two points of the last `window` seconds taken with the same number of serving hosts as
    /// now (`hosts`), `current` (taken now) included. Theil-Sen: a few odd samples do not swing
    /// it; and a slave joining starts the series afresh, so what a host adds by itself (its
    /// baseline, a clipped busy ratio) is never read as growth. `None` with fewer than four
    /// points or less than a third of the window covered. At most 40 points are used.
    pub(crate) fn trend(
        &self,
        signal: Signal,
        now: Timestamp,
        window: i64,
        current: f64,
        hosts: u32,
    ) -> Option<f64> {
        let since = now.as_second() - window;
        let mut pts: Vec<(i64, f64)> = self
            .load
            .iter()
            .filter(|(t, s, _, h)| *s == signal && *h == hosts && t.as_second() > since && *t < now)
            .map(|(t, _, v, _)| (t.as_second(), *v))
            .collect();
        if pts.len() > 39 {
            let step = pts.len().div_ceil(39);
            pts = pts.into_iter().rev().step_by(step).collect();
            pts.reverse();
        }
        pts.push((now.as_second(), current));
        if pts.len() < 4 || now.as_second() - pts[0].0 < window / 3 {
            return None;
        }
        let mut slopes = Vec::with_capacity(pts.len() * (pts.len() - 1) / 2);
        for (i, a) in pts.iter().enumerate() {
            for b in &pts[i + 1..] {
                if b.0 > a.0 {
                    slopes.push((b.1 - a.1) / (b.0 - a.0) as f64);
                }
            }
        }
        slopes.retain(|s| s.is_finite());
        // Only a trend the points agree on (Kendall's tau at least 0.5: three pairs in four
        // rise): noise around a plateau has a median slope too, and must not launch slaves.
        let rising = slopes.iter().filter(|s| **s > 0.0).count();
        let falling = slopes.iter().filter(|s| **s < 0.0).count();
        if slopes.is_empty() || rising.abs_diff(falling) * 2 < slopes.len() {
            return None;
        }
        slopes.sort_by(f64::total_cmp);
        let m = slopes.len() / 2;
        Some(if slopes.len() % 2 == 1 {
            slopes[m]
        } else {
            (slopes[m - 1] + slopes[m]) / 2.0
        })
    }

    /// Seconds the slave that makes the fleet `level` strong has been unneeded: since raw
    /// desired was last at least `level` (`i64::MAX` if never).
    pub(crate) fn unneeded_for(&self, level: u32, now: Timestamp) -> i64 {
        level
            .checked_sub(1)
            .and_then(|i| self.needed_at.get(i as usize))
            .map_or(i64::MAX, |t| now.as_second() - t.as_second())
    }

    /// Slaves released since the fleet was last wholly needed, beyond the warm pool's room.
    pub(crate) fn released_beyond_pool(&self) -> u32 {
        self.released_beyond_pool
    }

    /// Instance-seconds spent keeping unneeded slaves on the cap day that holds `now`.
    pub(crate) fn kept_today(&self, now: Timestamp) -> i64 {
        match self.kept_day_ends {
            Some(end) if now < end => self.kept_secs,
            _ => 0,
        }
    }

    /// Recommendations made after `since` (exclusive), newest last.
    pub(crate) fn recommendations_after(&self, since: i64) -> impl Iterator<Item = u32> + '_ {
        self.recommendations
            .iter()
            .rev()
            .take_while(move |(t, _)| t.as_second() > since)
            .map(|(_, r)| *r)
    }

    /// When the current run of utilization samples satisfying `pred` began, counting `current`
    /// (taken now) as the newest sample; `None` if `current` does not satisfy it.
    pub(crate) fn streak_start(
        &self,
        now: Timestamp,
        current: Option<f64>,
        pred: impl Fn(f64) -> bool,
    ) -> Option<Timestamp> {
        if !current.is_some_and(&pred) {
            return None;
        }
        let mut start = now;
        for (t, u) in self.utilization.iter().rev() {
            if u.is_some_and(&pred) {
                start = *t;
            } else {
                break;
            }
        }
        Some(start)
    }

    pub fn len(&self) -> usize {
        self.recommendations.len()
    }

    pub fn is_empty(&self) -> bool {
        self.recommendations.is_empty()
    }
}
