//! Stage 6 of [`decide`](super::decide): which slaves a scale-in releases. The k-th slave it
//! would release is the one that makes the fleet current - k + 1 strong; it has been unneeded
//! since the fleet last wanted that many. Each has a relaunch cost, should demand come back
//! today: the lead time (a host short while it boots and syncs) plus, unless the warm pool has
//! room for it (it comes back at no new unit), a share of a cap unit's value that grows as the
//! day's units run out (slaves released earlier in the same lull took the cheaper places). Not
//! knowing when demand returns, a slave is kept while it has been unneeded for less than its
//! relaunch cost: the ski-rental break-even (never more than twice the cost of the best choice
//! in hindsight; with a lull as likely to last as long again as it has lasted, the
//! expected-cost choice too). Never above max_slaves, in the last stretch before the cap
//! resets (a slave running at midnight counts toward tomorrow), with the instance-hours budget
//! spent, or past max_kept_per_day. Victims are old enough, in the configured order.

use super::holds::CapView;
use super::{to_u32, FleetObservation, History, Reason, SlaveObservation, SlaveState};
use crate::cap::CapStatus;
use crate::config::{PolicyConfig, VictimOrder};
use jiff::Timestamp;

/// What a scale-in releases: its victims, and how many of them go beyond the warm pool's room.
#[derive(Default)]
pub(crate) struct Release {
    pub victims: Vec<String>,
    pub beyond_pool: u32,
}

/// Stage 6: the slaves released when the limits leave fewer than `current` (`limited`).
pub(crate) fn release(
    cfg: &PolicyConfig,
    obs: &FleetObservation,
    hist: &History,
    cap: &CapView,
    now: Timestamp,
    current: u32,
    limited: u32,
) -> (Release, Vec<Reason>) {
    let mut reasons = Vec::new();
    if limited >= current {
        return (Release::default(), reasons);
    }
    let wanted = current - limited;
    let allowed = keep(cfg, obs, hist, cap, now, current, wanted, &mut reasons);
    let mut victims = Vec::new();
    if allowed > 0 {
        victims = pick_victims(cfg, obs, now, allowed);
        if to_u32(victims.len()) < allowed {
            reasons.push(Reason::NoVictimOldEnough {
                min_lifetime_secs: cfg.min_lifetime.whole_secs(),
            });
        }
    }
    let beyond_pool = to_u32(victims.len()).saturating_sub(obs.warm_room);
    (
        Release {
            victims,
            beyond_pool,
        },
        reasons,
    )
}

/// How many of the `wanted` slaves may go now; the rest are kept for their relaunch cost.
#[allow(clippy::too_many_arguments)]
fn keep(
    cfg: &PolicyConfig,
    obs: &FleetObservation,
    hist: &History,
    cap: &CapView,
    now: Timestamp,
    current: u32,
    wanted: u32,
    reasons: &mut Vec<Reason>,
) -> u32 {
    let cap_status = &cap.status;
    let keep = Keep::new(cfg, obs, hist, cap_status, now);
    let would_release = (1..=wanted)
        .take_while(|k| keep.relaunch(*k).0 <= hist.unneeded_for(current - k + 1, now))
        .count();
    let would_keep = wanted - to_u32(would_release);
    let over_max = current.saturating_sub(cfg.max_slaves);
    // Released in stages of max_step_in a scale-in cooldown apart, each draining first:
    // the last must be gone by midnight.
    let guard = cfg.midnight_guard.whole_secs();
    let stages = i64::from(would_keep.div_ceil(cfg.max_step_in.max(1)));
    let day_ending = cap_status.resets_in_secs
        <= guard.max(cfg.evaluation_interval.whole_secs())
            + obs.drain_secs.max(0)
            + (stages - 1).max(0) * cfg.scale_in_cooldown.whole_secs();
    if would_keep == 0 || !cap.hours_left {
        return wanted;
    }
    if day_ending {
        reasons.push(Reason::KeepEndsBeforeMidnight {
            released: would_keep,
            resets_in_secs: cap_status.resets_in_secs,
        });
        return wanted;
    }
    if keep.kept_today >= keep.limit {
        // (A limit of 0 turns keeping off: nothing to say.)
        if keep.limit > 0 {
            reasons.push(Reason::KeepLimitReached {
                released: would_keep,
                kept_today_secs: keep.kept_today,
                limit_secs: keep.limit,
            });
        }
        return wanted;
    }
    let allowed = (wanted - would_keep).max(over_max.min(wanted));
    if allowed < wanted {
        let first_kept = allowed + 1;
        let (relaunch_secs, unit_share) = keep.relaunch(first_kept);
        reasons.push(Reason::KeepingForCap {
            units: keep.units,
            kept: wanted - allowed,
            unneeded_secs: hist
                .unneeded_for(current - first_kept + 1, now)
                .min(i64::from(u32::MAX)),
            relaunch_secs,
            lead_secs: keep.lead,
            unit_share,
            unit_secs: keep.unit,
            kept_today_secs: keep.kept_today,
            limit_secs: keep.limit,
        });
    }
    allowed
}

/// What keeping an unneeded slave is weighed against.
struct Keep {
    lead: i64,
    unit: i64,
    /// Cap units a relaunch may take (remaining, less the configured margin).
    units: u32,
    warm_room: u32,
    /// Released earlier in this lull beyond the pool's room: they took the first places.
    released: u32,
    kept_today: i64,
    limit: i64,
}

impl Keep {
    fn new(
        cfg: &PolicyConfig,
        obs: &FleetObservation,
        hist: &History,
        cap: &CapStatus,
        now: Timestamp,
    ) -> Self {
        Keep {
            lead: hist.lead_time(cfg.forecast.lead_time.whole_secs()).0,
            unit: cfg.cap_unit_value.whole_secs(),
            units: cap
                .remaining
                .saturating_sub(cfg.keep_slaves_when_cap_remaining_at_most),
            warm_room: obs.warm_room,
            released: hist.released_beyond_pool(),
            kept_today: hist.kept_today(now),
            limit: cfg.max_kept_per_day.whole_secs(),
        }
    }

    /// The relaunch cost, in instance-seconds, of the `k`-th slave released now (from 1), and
    /// the share of a cap unit in it: the first `warm_room` go to the pool (no unit); the next
    /// take the j-th of `units` left (after those released earlier in the lull), at
    /// j / (units + 1) of a unit's value (the last units are dearest), and a whole unit once
    /// the cap could not bring them back.
    fn relaunch(&self, k: u32) -> (i64, f64) {
        if k <= self.warm_room {
            return (self.lead, 0.0);
        }
        let j = (k - self.warm_room).saturating_add(self.released);
        let share = if j > self.units {
            1.0
        } else {
            f64::from(j) / f64::from(self.units + 1)
        };
        (self.lead + (self.unit as f64 * share).round() as i64, share)
    }
}

/// In-service slaves at least `min_lifetime` old, in the configured order; at most `n`.
fn pick_victims(cfg: &PolicyConfig, obs: &FleetObservation, now: Timestamp, n: u32) -> Vec<String> {
    let min_age = cfg.min_lifetime.whole_secs();
    let age = |s: &SlaveObservation| now.as_second() - s.launched_at.as_second();
    let mut candidates: Vec<&SlaveObservation> = obs
        .slaves
        .iter()
        .filter(|s| s.state == SlaveState::InService && age(s) >= min_age)
        .collect();
    match cfg.victim_order {
        VictimOrder::NewestFirst => {
            candidates.sort_by_key(|s| (std::cmp::Reverse(s.launched_at), s.id.clone()))
        }
        VictimOrder::OldestFirst => candidates.sort_by_key(|s| (s.launched_at, s.id.clone())),
        VictimOrder::ClosestToBillingHour => {
            candidates.sort_by_key(|s| (3600 - age(s).rem_euclid(3600), s.id.clone()))
        }
    }
    candidates
        .into_iter()
        .take(n as usize)
        .map(|s| s.id.clone())
        .collect()
}

#[cfg(test)]
mod tests;
