//! Stage 5 of [`decide`](super::decide): what may launch. The daily burst cap (and the
//! instance-hours budget), with the warm slaves that come back at no new unit; then each hold
//! that keeps launches back for now (no EC2 capacity, a refused launch, a broken sync, no
//! content to give, the last minutes before the cap resets). Each takes the count the one
//! before it returned, and only ever lowers a scale-out to `current`; none touches a scale-in.

use super::{to_u32, FleetObservation, Reason, SignalReading, SlaveState};
use crate::cap::{CapLedger, CapStatus};
use crate::config::PolicyConfig;
use jiff::Timestamp;

/// The day's cap as the stages from here on read it.
pub(crate) struct CapView {
    pub status: CapStatus,
    /// The instance-hours budget (if any) is not spent.
    pub hours_left: bool,
    /// Stopped warm slaves that ran today already: they start again at no new unit (while the
    /// ledger is usable and the hours budget is not spent; and only within the limit, as an
    /// overcounted ledger may count one that did not run today).
    pub free_warm: u32,
}

impl CapView {
    pub fn of(obs: &FleetObservation, cap: &CapLedger, now: Timestamp) -> Self {
        let status = cap.status(now);
        let hours_left = status
            .hours_budget
            .is_none_or(|b| status.instance_hours < b);
        let free_warm = if status.blocked.is_none() && hours_left && status.used <= status.limit {
            to_u32(
                obs.slaves
                    .iter()
                    .filter(|s| s.state == SlaveState::Stopped && cap.counts_today(&s.id, now))
                    .count(),
            )
        } else {
            0
        };
        CapView {
            status,
            hours_left,
            free_warm,
        }
    }
}

/// Stage 5a, the daily burst cap: launches beyond the units left (and the free warm slaves)
/// wait, and the decision says which limit held them.
pub(crate) fn cap_limit(cap: &CapView, current: u32, bounded: u32) -> (u32, Vec<Reason>) {
    let mut reasons = Vec::new();
    if bounded <= current {
        return (bounded, reasons);
    }
    let cap_status = &cap.status;
    let want = bounded - current;
    let allowed = want.min(cap_status.remaining.saturating_add(cap.free_warm));
    if cap.free_warm > 0 && want > cap_status.remaining {
        reasons.push(Reason::WarmPool {
            free: cap.free_warm.min(want),
        });
    }
    if allowed < want {
        if let Some(why) = &cap_status.blocked {
            reasons.push(Reason::LedgerUnavailable { why: why.clone() });
        } else if allowed == 0 {
            reasons.push(Reason::DailyCapReached {
                used: cap_status.used,
                limit: cap_status.limit,
                resets_in_secs: cap_status.resets_in_secs,
                message: format!("burst cap reached: {cap_status}"),
            });
        } else {
            reasons.push(Reason::CapLimited {
                wanted: want,
                allowed,
                message: format!("burst cap allows {allowed} of {want}: {cap_status}"),
            });
        }
    }
    (current + allowed, reasons)
}

/// Stage 5b: EC2 had no capacity in any subnet for any type: launches wait out the backoff.
pub(crate) fn no_capacity(
    obs: &FleetObservation,
    now: Timestamp,
    current: u32,
    limited: u32,
) -> (u32, Vec<Reason>) {
    match obs.no_capacity_until.filter(|u| *u > now) {
        Some(until) if limited > current => {
            let why = Reason::NoCapacity {
                wanted: limited - current,
                retry_in_secs: until.as_second() - now.as_second(),
            };
            (current, vec![why])
        }
        _ => (limited, Vec::new()),
    }
}

/// Stage 5c: EC2 refused the last launch for good: asking again every tick gets the same
/// answer.
pub(crate) fn launch_refused(
    obs: &FleetObservation,
    now: Timestamp,
    current: u32,
    limited: u32,
) -> (u32, Vec<Reason>) {
    match obs.launch_refused.as_ref().filter(|r| r.until > now) {
        Some(r) if limited > current => {
            let why = Reason::LaunchRefused {
                wanted: limited - current,
                retry_in_secs: r.until.as_second() - now.as_second(),
                cause: r.cause.clone(),
            };
            (current, vec![why])
        }
        _ => (limited, Vec::new()),
    }
}

/// Stage 5d: content sync keeps failing the same way: only what costs no cap unit (warm slaves
/// the day counts) and one trial after the back-off may go.
pub(crate) fn sync_broken(
    obs: &FleetObservation,
    free_warm: u32,
    current: u32,
    limited: u32,
) -> (u32, Vec<Reason>) {
    let Some(b) = obs.sync_broken.as_ref().filter(|_| limited > current) else {
        return (limited, Vec::new());
    };
    let want = limited - current;
    let allowed = want.min(free_warm.saturating_add(u32::from(b.trial)));
    if allowed >= want {
        return (limited, Vec::new());
    }
    let why = Reason::SyncBroken {
        wanted: want,
        allowed,
        cause: b.cause.clone(),
        trial_in_secs: b.trial_in_secs,
    };
    (current + allowed, vec![why])
}

/// Stage 5e: no content to give a new slave (the master's source is missing or empty).
pub(crate) fn source_missing(
    obs: &FleetObservation,
    current: u32,
    limited: u32,
) -> (u32, Vec<Reason>) {
    match &obs.content_source_missing {
        Some(why) if limited > current => {
            let why = Reason::ContentSourceMissing {
                wanted: limited - current,
                why: why.clone(),
            };
            (current, vec![why])
        }
        _ => (limited, Vec::new()),
    }
}

/// Stage 5f, just before the cap resets: a slave launched now and running past midnight counts
/// on both days. Unless demand is acute (a signal far over its goal, or the fleet below its
/// floor), the launch waits for the new day.
pub(crate) fn midnight(
    cfg: &PolicyConfig,
    cap: &CapStatus,
    signals: &[SignalReading],
    current: u32,
    floor: u32,
    limited: u32,
) -> (u32, Vec<Reason>) {
    let guard = cfg.midnight_guard.whole_secs();
    if limited <= current || cap.resets_in_secs >= guard || current < floor {
        return (limited, Vec::new());
    }
    // How far over its goal the most demanding signal is (1.0 = at its goal).
    let top = signals
        .iter()
        .filter_map(|r| Some(r.utilization? / r.goal).filter(|x| x.is_finite()))
        .fold(0.0_f64, f64::max);
    if top < cfg.acute_factor {
        let why = Reason::MidnightDeferred {
            wanted: limited - current,
            resets_in_secs: cap.resets_in_secs,
            top,
            acute_at: cfg.acute_factor,
        };
        return (current, vec![why]);
    }
    (limited, Vec::new())
}

#[cfg(test)]
mod tests;
