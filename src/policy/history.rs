//! What the policy remembers between ticks: past recommendations (stabilization windows), past
//! utilization (sustain windows) and the last scaling times (cooldowns). The caller records each
//! decision; `decide` only reads.

use super::Decision;
use crate::config::PolicyConfig;
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
}

impl History {
    pub fn new() -> Self {
        Self::default()
    }

    /// Remembers `decision` (made at `now`) and forgets what no window can reach any more.
    pub fn record(&mut self, cfg: &PolicyConfig, now: Timestamp, decision: &Decision) {
        let why = decision.explanation();
        self.recommendations.push_back((now, why.raw_desired));
        self.utilization.push_back((now, why.utilization));
        if why.raw_desired >= why.current {
            self.last_needed = Some(now);
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

    /// Recommendations made after `since` (exclusive), newest last.
    pub fn recommendations_after(&self, since: i64) -> impl Iterator<Item = u32> + '_ {
        self.recommendations
            .iter()
            .rev()
            .take_while(move |(t, _)| t.as_second() > since)
            .map(|(_, r)| *r)
    }

    /// When the current run of utilization samples satisfying `pred` began, counting `current`
    /// (taken now) as the newest sample; `None` if `current` does not satisfy it.
    pub fn streak_start(
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
