//! The clairvoyant reference ("oracle"): it knows the whole trace, and has the same model, delays
//! and burst cap as every other run. It launches for the demand one lead time (boot + sync +
//! registration) ahead, and releases a slave only when nothing needs it before a new one could
//! arrive and the day's remaining cap could bring it back for the rest of the day's demand. What
//! it reaches is near the best θU any autoscaler could with this cap: every policy is printed with
//! its gap to it. It is a reference, not proven optimal: it never trades a later, larger need
//! for an earlier one when the cap cannot cover both.

use super::trace::Trace;
use super::{newest, slaves_now, Action, Autoscaler, Model};
use crate::cap::CapLedger;
use crate::policy::FleetObservation;
use jiff::Timestamp;

pub struct Oracle {
    /// Slaves needed at each second of the trace: the model's demand ([`Model::demand`], the
    /// master-only share included) less the master, at most `max_slaves`.
    need: Vec<u32>,
    /// The most slaves needed from each second to the end of its local day.
    day_peak: Vec<u32>,
    start: i64,
    lead: i64,
    interval: i64,
    max_slaves: u32,
}

impl Oracle {
    pub fn new(trace: &Trace, model: &Model, days: &CapLedger, max_slaves: u32) -> Self {
        let end = trace.duration_secs().max(0);
        let start = trace.start.as_second();
        let mut cursor = trace.cursor();
        let need: Vec<u32> = (0..=end)
            .map(|t| {
                let load = cursor.at(t as f64) / model.host_capacity;
                model
                    .demand(load, max_slaves)
                    .saturating_sub(1)
                    .min(max_slaves)
            })
            .collect();
        let mut day_peak = vec![0; need.len()];
        let (mut peak, mut day_start) = (0, i64::MAX);
        for t in (0..need.len()).rev() {
            let abs = start + t as i64;
            if abs < day_start {
                // An earlier local day: its peak starts afresh.
                let (_, ds, _) = days.day_bounds(Timestamp::from_second(abs).unwrap_or_default());
                day_start = ds.as_second();
                peak = 0;
            }
            peak = peak.max(need[t]);
            day_peak[t] = peak;
        }
        Oracle {
            need,
            day_peak,
            start,
            lead: model.boot_delay + model.sync_time + model.register_delay,
            interval: 5,
            max_slaves,
        }
    }

    fn max_need(&self, from: i64, to: i64) -> u32 {
        let last = self.need.len() as i64 - 1;
        let (a, b) = (from.clamp(0, last), to.clamp(0, last));
        self.need[a as usize..=b as usize]
            .iter()
            .copied()
            .max()
            .unwrap_or(0)
    }
}

impl Autoscaler for Oracle {
    fn interval(&self) -> i64 {
        self.interval
    }

    fn act(&mut self, now: Timestamp, obs: &FleetObservation, ledger: &CapLedger) -> Action {
        let t = now.as_second() - self.start;
        let alive = slaves_now(obs);
        // What must be serving by the time a launch now could serve.
        let up = self.max_need(t + self.lead, t + self.lead + self.interval);
        if up > alive {
            return Action::Launch((up - alive).min(self.max_slaves.saturating_sub(alive)));
        }
        // Needed before a relaunch could arrive; and the day's later peak, as far as the
        // remaining cap cannot bring slaves back for it.
        let soon = self.max_need(t, t + self.lead + self.interval);
        let today = self.day_peak.get(t.max(0) as usize).copied().unwrap_or(0);
        let keep = soon.max(today.saturating_sub(ledger.remaining(now)));
        if alive > keep {
            Action::Terminate(newest(obs, alive - keep))
        } else {
            Action::Hold
        }
    }
}
