//! Stages 2 to 4 of [`decide`](super::decide): stabilization (HPA's windows), rate limits
//! (cooldowns and the max step) and the fleet's bounds (`min_slaves`, `max_slaves`, a planned
//! burst's floor). Each takes the count the stage before it returned.

use super::{Direction, History, Reason};
use crate::config::PolicyConfig;
use crate::schedule::Window;
use jiff::Timestamp;

/// Stage 2, stabilization (HPA's rule): out on the window's lowest recommendation, in on its
/// highest.
pub(crate) fn stabilize(
    cfg: &PolicyConfig,
    hist: &History,
    now: Timestamp,
    current: u32,
    raw_desired: u32,
) -> (u32, Vec<Reason>) {
    let mut reasons = Vec::new();
    let out_since = now.as_second() - cfg.scale_out_stabilization.whole_secs();
    let in_since = now.as_second() - cfg.scale_in_stabilization.whole_secs();
    let up = hist
        .recommendations_after(out_since)
        .fold(raw_desired, u32::min);
    let down = hist
        .recommendations_after(in_since)
        .fold(raw_desired, u32::max);
    let mut stabilized = current;
    if stabilized < up {
        stabilized = up;
    }
    if stabilized > down {
        stabilized = down;
    }
    if raw_desired > current && stabilized < raw_desired {
        reasons.push(Reason::ScaleOutStabilizing {
            window_secs: cfg.scale_out_stabilization.whole_secs(),
            lowest: up,
        });
    }
    if raw_desired < current && stabilized > raw_desired {
        reasons.push(Reason::ScaleInStabilizing {
            window_secs: cfg.scale_in_stabilization.whole_secs(),
            highest: down,
        });
    }
    (stabilized, reasons)
}

/// Stage 3, rate limits: a cooldown holds the fleet where it is; otherwise at most
/// `max_step_out` / `max_step_in` slaves per decision. Scale-in waits out its cooldown after
/// any scaling, in either direction.
pub(crate) fn rate_limit(
    cfg: &PolicyConfig,
    hist: &History,
    now: Timestamp,
    current: u32,
    stabilized: u32,
) -> (u32, Vec<Reason>) {
    let since = |t: Option<Timestamp>| t.map(|t| now.as_second() - t.as_second());
    let (direction, cool, last, step, wanted) = if stabilized > current {
        let cool = cfg.scale_out_cooldown.whole_secs();
        let step = cfg.max_step_out;
        (
            Direction::Out,
            cool,
            hist.last_scale_out,
            step,
            stabilized - current,
        )
    } else if stabilized < current {
        let cool = cfg.scale_in_cooldown.whole_secs();
        let last = hist.last_scale_in.max(hist.last_scale_out);
        (
            Direction::In,
            cool,
            last,
            cfg.max_step_in,
            current - stabilized,
        )
    } else {
        return (stabilized, Vec::new());
    };
    match since(last) {
        Some(ago) if ago < cool => {
            let why = Reason::CooldownActive {
                direction,
                remaining_secs: cool - ago,
            };
            (current, vec![why])
        }
        _ if wanted > step => {
            let limited = match direction {
                Direction::Out => current + step,
                Direction::In => current - step,
            };
            (limited, vec![Reason::MaxStep { direction, step }])
        }
        _ => (stabilized, Vec::new()),
    }
}

/// Stage 4, min / max slaves, enforced even inside a cooldown; a planned burst raises the
/// floor. The floor and the bounded count.
pub(crate) fn bound(
    cfg: &PolicyConfig,
    scheduled: Option<&Window>,
    now: Timestamp,
    current: u32,
    raw_desired: u32,
    stabilized: u32,
    rate_limited: u32,
) -> ((u32, u32), Vec<Reason>) {
    let mut reasons = Vec::new();
    let floor = match scheduled {
        Some(w) if w.min_slaves > cfg.min_slaves => {
            let min = w.min_slaves.min(cfg.max_slaves);
            if rate_limited < min {
                reasons.push(Reason::Scheduled {
                    name: w.name.clone(),
                    min_slaves: min,
                    opens_in_secs: w.opens.as_second() - now.as_second(),
                    closes_in_secs: w.closes.as_second() - now.as_second(),
                });
            }
            min
        }
        _ => cfg.min_slaves,
    };
    let bounded = rate_limited.clamp(floor, cfg.max_slaves);
    if current > cfg.max_slaves {
        reasons.push(Reason::AboveMaxSlaves {
            max: cfg.max_slaves,
        });
    } else if stabilized > cfg.max_slaves && bounded == cfg.max_slaves {
        reasons.push(Reason::AtMaxSlaves {
            max: cfg.max_slaves,
        });
    } else if floor > cfg.min_slaves {
        // The planned burst's floor said so above (Scheduled).
    } else if current < cfg.min_slaves {
        reasons.push(Reason::BelowMinSlaves {
            min: cfg.min_slaves,
        });
    } else if raw_desired < cfg.min_slaves && bounded == cfg.min_slaves && current == cfg.min_slaves
    {
        reasons.push(Reason::AtMinSlaves {
            min: cfg.min_slaves,
        });
    }
    ((floor, bounded), reasons)
}

#[cfg(test)]
mod tests;
