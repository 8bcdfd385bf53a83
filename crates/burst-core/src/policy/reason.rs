//! Why a decision is what it is: structured for JSON logs, readable for people. Every
//! [`Reason`] has a stable code (logs, `status`, events and alerting read it; never rename
//! one) and a readable line. A new stage's reasons go here.

use crate::config::Signal;
use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Out,
    In,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "code")]
pub enum Reason {
    AboveTarget {
        signal: Signal,
        utilization: f64,
        target: f64,
    },
    BelowTarget {
        signal: Signal,
        utilization: f64,
        target: f64,
    },
    WithinTolerance {
        signal: Signal,
        ratio: f64,
        tolerance: f64,
    },
    /// The signal's trend, one lead time ahead, asks for more than its value now: scale out
    /// ahead of the load (never in).
    /// The master runs hotter than the slaves by work only it does (forms, the CMS): enough
    /// slaves to bring the master itself to the target.
    MasterBound {
        signal: Signal,
        master: f64,
        slaves: f64,
        /// The part of the master's excess counted as its own work.
        counted: f64,
        target: f64,
    },
    Forecast {
        signal: Signal,
        utilization: f64,
        forecast: f64,
        target: f64,
        horizon_secs: i64,
        /// The lead time is the fleet's own measured one, not the configured guess.
        measured: bool,
    },
    AboveThreshold {
        utilization: f64,
        threshold: f64,
        for_secs: i64,
    },
    BelowThreshold {
        utilization: f64,
        threshold: f64,
        for_secs: i64,
    },
    BetweenThresholds {
        utilization: f64,
        scale_in: f64,
        scale_out: f64,
    },
    ScaleOutSustaining {
        utilization: f64,
        threshold: f64,
        for_secs: i64,
        need_secs: i64,
    },
    ScaleInSustaining {
        utilization: f64,
        threshold: f64,
        for_secs: i64,
        need_secs: i64,
    },
    /// No usable metrics at all (or a signal unreadable while others ask to scale in): hold.
    MetricsMissing {
        hosts: Vec<String>,
    },
    /// Some hosts' metrics missing: idle for scale-out, at target for scale-in.
    SomeMetricsMissing {
        hosts: Vec<String>,
    },
    CapacityOnTheWay {
        on_the_way: u32,
    },
    ScaleOutStabilizing {
        window_secs: i64,
        lowest: u32,
    },
    ScaleInStabilizing {
        window_secs: i64,
        highest: u32,
    },
    CooldownActive {
        direction: Direction,
        remaining_secs: i64,
    },
    MaxStep {
        direction: Direction,
        step: u32,
    },
    BelowMinSlaves {
        min: u32,
    },
    AtMinSlaves {
        min: u32,
    },
    AboveMaxSlaves {
        max: u32,
    },
    AtMaxSlaves {
        max: u32,
    },
    DailyCapReached {
        used: u32,
        limit: u32,
        resets_in_secs: i64,
        message: String,
    },
    CapLimited {
        wanted: u32,
        allowed: u32,
        message: String,
    },
    LedgerUnavailable {
        why: String,
    },
    /// A launch in the last `midnight_guard` before the cap resets, on demand that is not
    /// acute, waits for the new day (it would count on both).
    MidnightDeferred {
        wanted: u32,
        resets_in_secs: i64,
        top: f64,
        acute_at: f64,
    },
    /// Warm slaves that ran today already start again at no new cap unit.
    WarmPool {
        free: u32,
    },
    /// Unneeded slaves kept because bringing them back today would cost more than keeping
    /// them has so far (the ski-rental break-even; README, step 6).
    KeepingForCap {
        /// Cap units a relaunch may take (remaining, less the configured margin).
        units: u32,
        kept: u32,
        /// How long the first kept slave has not been needed.
        unneeded_secs: i64,
        /// The cheapest kept slave's relaunch cost in instance-seconds: the lead time plus
        /// `unit_share` of `unit_secs`.
        relaunch_secs: i64,
        lead_secs: i64,
        unit_share: f64,
        unit_secs: i64,
        /// Instance-seconds kept so far today, and the day's limit.
        kept_today_secs: i64,
        limit_secs: i64,
    },
    /// Slaves the cap rule would keep are released: today's `max_kept_per_day` is spent.
    KeepLimitReached {
        released: u32,
        kept_today_secs: i64,
        limit_secs: i64,
    },
    /// Slaves the cap rule would keep are released before the cap resets: one running at
    /// midnight counts toward tomorrow's cap.
    KeepEndsBeforeMidnight {
        released: u32,
        resets_in_secs: i64,
    },
    NoVictimOldEnough {
        min_lifetime_secs: i64,
    },
    /// A planned burst (`[[schedule]]`) holds at least this many slaves.
    Scheduled {
        name: String,
        min_slaves: u32,
        /// Negative once the window is open.
        opens_in_secs: i64,
        closes_in_secs: i64,
    },
    /// EC2 answered the last launch with no capacity in every subnet for every type.
    NoCapacity {
        wanted: u32,
        retry_in_secs: i64,
    },
    /// EC2 refused the last launch for good (not capacity): launches wait out a backoff.
    LaunchRefused {
        wanted: u32,
        retry_in_secs: i64,
        cause: String,
    },
    /// The content source on the master is missing or empty: no launch (a new slave could not
    /// get the site).
    ContentSourceMissing {
        wanted: u32,
        why: String,
    },
    /// Slaves reported more than the master's own sample backs (policy::corroborate): their
    /// values were cut to what the evidence supports.
    Uncorroborated {
        hosts: Vec<String>,
        message: String,
    },
    /// Content sync failed the same way twice in a row (the actuator's brake): launches that
    /// spend a cap unit wait for the fix (a reload, `burst-agent resume`) or a trial.
    SyncBroken {
        wanted: u32,
        allowed: u32,
        cause: String,
        trial_in_secs: i64,
    },
    /// Brownout bridge: the fleet is short now and nothing serves in time: level 1 or more on.
    BridgeOn {
        level: u8,
        /// The master's full-cost utilization now, with the capacity that serves in time.
        utilization: f64,
        enter: f64,
        /// Slaves on the way that serve within `bridge.grace`, counted in `utilization`.
        arriving: u32,
    },
    /// Still short at the level in force: a deeper one.
    BridgeRaised {
        from: u8,
        to: u8,
        utilization: f64,
        enter: f64,
    },
    /// Serving capacity caught up enough for a lighter level.
    BridgeLowered {
        from: u8,
        to: u8,
        /// The master's full-cost utilization predicted at `to`.
        utilization: f64,
        exit: f64,
    },
    /// Serving capacity covers full-cost demand: back to full service.
    BridgeOff {
        from: u8,
        utilization: f64,
        exit: f64,
        episode_secs: i64,
    },
    /// A level is held: still needed, or not held `bridge.min_dwell` yet.
    BridgeHeld {
        level: u8,
        /// The master's full-cost utilization predicted one level lighter.
        lighter: f64,
        exit: f64,
        dwell_left_secs: i64,
    },
    /// Short now, but slaves that serve within `bridge.grace` cover it: no level.
    BridgeCovered {
        utilization: f64,
        arriving: u32,
        grace_secs: i64,
    },
    /// The episode reached `bridge.max_episode`: back to level 0, and none for `cooldown`.
    BridgeExpired {
        from: u8,
        episode_secs: i64,
        cooldown_secs: i64,
    },
    /// Short, but an episode ended by `bridge.max_episode` is cooling down.
    BridgeCooling {
        utilization: f64,
        left_secs: i64,
    },
    /// An operator set the level by hand (`burst-agent bridge set N` or `bridge off`).
    BridgeManual {
        level: u8,
        by: String,
        left_secs: i64,
    },
    /// No fresh sample of the master's own: the level in force is held.
    BridgeBlind {
        level: u8,
    },
    /// `bridge.enabled` is false (a reload turned it off) while a level was on.
    BridgeDisabled {
        from: u8,
    },
    /// Hosts that served at a bridge level were read back to full-cost-equivalent load, so
    /// scaling is not fooled by the cheaper requests.
    FullCost {
        hosts: Vec<String>,
        message: String,
    },
}

impl Reason {
    /// The stable name of the reason (`AboveTarget`, `DailyCapReached`, ...).
    pub fn code(&self) -> &'static str {
        match self {
            Reason::AboveTarget { .. } => "AboveTarget",
            Reason::BelowTarget { .. } => "BelowTarget",
            Reason::WithinTolerance { .. } => "WithinTolerance",
            Reason::Scheduled { .. } => "Scheduled",
            Reason::Forecast { .. } => "Forecast",
            Reason::MasterBound { .. } => "MasterBound",
            Reason::AboveThreshold { .. } => "AboveThreshold",
            Reason::BelowThreshold { .. } => "BelowThreshold",
            Reason::BetweenThresholds { .. } => "BetweenThresholds",
            Reason::ScaleOutSustaining { .. } => "ScaleOutSustaining",
            Reason::ScaleInSustaining { .. } => "ScaleInSustaining",
            Reason::MetricsMissing { .. } => "MetricsMissing",
            Reason::SomeMetricsMissing { .. } => "SomeMetricsMissing",
            Reason::CapacityOnTheWay { .. } => "CapacityOnTheWay",
            Reason::ScaleOutStabilizing { .. } => "ScaleOutStabilizing",
            Reason::ScaleInStabilizing { .. } => "ScaleInStabilizing",
            Reason::CooldownActive { .. } => "CooldownActive",
            Reason::MaxStep { .. } => "MaxStep",
            Reason::BelowMinSlaves { .. } => "BelowMinSlaves",
            Reason::AtMinSlaves { .. } => "AtMinSlaves",
            Reason::AboveMaxSlaves { .. } => "AboveMaxSlaves",
            Reason::AtMaxSlaves { .. } => "AtMaxSlaves",
            Reason::DailyCapReached { .. } => "DailyCapReached",
            Reason::CapLimited { .. } => "CapLimited",
            Reason::LedgerUnavailable { .. } => "LedgerUnavailable",
            Reason::WarmPool { .. } => "WarmPool",
            Reason::MidnightDeferred { .. } => "MidnightDeferred",
            Reason::KeepingForCap { .. } => "KeepingForCap",
            Reason::KeepLimitReached { .. } => "KeepLimitReached",
            Reason::KeepEndsBeforeMidnight { .. } => "KeepEndsBeforeMidnight",
            Reason::NoVictimOldEnough { .. } => "NoVictimOldEnough",
            Reason::NoCapacity { .. } => "NoCapacity",
            Reason::LaunchRefused { .. } => "LaunchRefused",
            Reason::SyncBroken { .. } => "SyncBroken",
            Reason::Uncorroborated { .. } => "Uncorroborated",
            Reason::ContentSourceMissing { .. } => "ContentSourceMissing",
            Reason::BridgeOn { .. } => "BridgeOn",
            Reason::BridgeRaised { .. } => "BridgeRaised",
            Reason::BridgeLowered { .. } => "BridgeLowered",
            Reason::BridgeOff { .. } => "BridgeOff",
            Reason::BridgeHeld { .. } => "BridgeHeld",
            Reason::BridgeCovered { .. } => "BridgeCovered",
            Reason::BridgeExpired { .. } => "BridgeExpired",
            Reason::BridgeCooling { .. } => "BridgeCooling",
            Reason::BridgeManual { .. } => "BridgeManual",
            Reason::BridgeBlind { .. } => "BridgeBlind",
            Reason::BridgeDisabled { .. } => "BridgeDisabled",
            Reason::FullCost { .. } => "FullCost",
        }
    }
}

fn dir(d: Direction) -> &'static str {
    match d {
        Direction::Out => "scale-out",
        Direction::In => "scale-in",
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::AboveTarget { .. }
            | Reason::BelowTarget { .. }
            | Reason::WithinTolerance { .. }
            | Reason::AboveThreshold { .. }
            | Reason::BelowThreshold { .. }
            | Reason::BetweenThresholds { .. }
            | Reason::ScaleOutSustaining { .. }
            | Reason::ScaleInSustaining { .. } => self.fmt_load(f),
            Reason::MetricsMissing { .. }
            | Reason::SomeMetricsMissing { .. }
            | Reason::Uncorroborated { .. } => self.fmt_metrics(f),
            Reason::MasterBound { .. } | Reason::Forecast { .. } | Reason::Scheduled { .. } => {
                self.fmt_demand(f)
            }
            Reason::CapacityOnTheWay { .. }
            | Reason::ScaleOutStabilizing { .. }
            | Reason::ScaleInStabilizing { .. }
            | Reason::CooldownActive { .. }
            | Reason::MaxStep { .. }
            | Reason::BelowMinSlaves { .. }
            | Reason::AtMinSlaves { .. }
            | Reason::AboveMaxSlaves { .. }
            | Reason::AtMaxSlaves { .. }
            | Reason::NoVictimOldEnough { .. } => self.fmt_limits(f),
            Reason::DailyCapReached { .. }
            | Reason::CapLimited { .. }
            | Reason::LedgerUnavailable { .. }
            | Reason::MidnightDeferred { .. }
            | Reason::WarmPool { .. } => self.fmt_cap(f),
            Reason::KeepingForCap { .. }
            | Reason::KeepLimitReached { .. }
            | Reason::KeepEndsBeforeMidnight { .. } => self.fmt_keep(f),
            Reason::NoCapacity { .. }
            | Reason::LaunchRefused { .. }
            | Reason::ContentSourceMissing { .. }
            | Reason::SyncBroken { .. } => self.fmt_launch(f),
            Reason::BridgeOn { .. }
            | Reason::BridgeRaised { .. }
            | Reason::BridgeLowered { .. }
            | Reason::BridgeOff { .. }
            | Reason::BridgeHeld { .. }
            | Reason::BridgeCovered { .. }
            | Reason::BridgeExpired { .. }
            | Reason::BridgeCooling { .. }
            | Reason::BridgeManual { .. }
            | Reason::BridgeBlind { .. }
            | Reason::BridgeDisabled { .. }
            | Reason::FullCost { .. } => self.fmt_bridge(f),
        }
    }
}

impl Reason {
    /// The brownout bridge's level, and the full-cost reading scaling sees through it.
    fn fmt_bridge(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::BridgeOn {
                level,
                utilization,
                enter,
                arriving,
            } => write!(
                f,
                "bridge on at level {level}: the master at full cost reads {utilization:.2} \
                 (above {enter:.2}) with the hosts serving now{}, and nothing more serves in time",
                if *arriving > 0 {
                    format!(" and {arriving} arriving within the grace")
                } else {
                    String::new()
                }
            ),
            Reason::BridgeRaised {
                from,
                to,
                utilization,
                enter,
            } => write!(
                f,
                "bridge raised {from} -> {to}: the master at level {from} would still read \
                 {utilization:.2} (above {enter:.2})"
            ),
            Reason::BridgeLowered {
                from,
                to,
                utilization,
                exit,
            } => write!(
                f,
                "bridge lowered {from} -> {to}: the master at level {to} reads {utilization:.2} \
                 (at most {exit:.2}) with the hosts serving now"
            ),
            Reason::BridgeOff {
                from,
                utilization,
                exit,
                episode_secs,
            } => write!(
                f,
                "bridge off (was level {from}, on for {episode_secs}s): the serving hosts carry \
                 full cost at {utilization:.2} (at most {exit:.2})"
            ),
            Reason::BridgeHeld {
                level,
                lighter,
                exit,
                dwell_left_secs,
            } => {
                if *dwell_left_secs > 0 && lighter <= exit {
                    write!(
                        f,
                        "bridge held at level {level} for {dwell_left_secs}s more (bridge.min_dwell), \
                         though a lighter level would read {lighter:.2}"
                    )
                } else {
                    write!(
                        f,
                        "bridge held at level {level}: a lighter level would read {lighter:.2} \
                         (above {exit:.2})"
                    )
                }
            }
            Reason::BridgeCovered {
                utilization,
                arriving,
                grace_secs,
            } => write!(
                f,
                "no bridge: the master reads {utilization:.2} at full cost, but {arriving} \
                 slave(s) serve within {grace_secs}s (bridge.grace)"
            ),
            Reason::BridgeExpired {
                from,
                episode_secs,
                cooldown_secs,
            } => write!(
                f,
                "bridge expired at level {from} after {episode_secs}s (bridge.max_episode): \
                 full service again, and no bridge for {cooldown_secs}s"
            ),
            Reason::BridgeCooling {
                utilization,
                left_secs,
            } => write!(
                f,
                "no bridge for {left_secs}s more (bridge.cooldown after an episode that ran its \
                 maximum), though the master reads {utilization:.2} at full cost"
            ),
            Reason::BridgeManual {
                level,
                by,
                left_secs,
            } => write!(
                f,
                "bridge at level {level} by hand ({by}) for {left_secs}s more"
            ),
            Reason::BridgeBlind { level } => write!(
                f,
                "bridge held at level {level}: no fresh sample of the master's own"
            ),
            Reason::BridgeDisabled { from } => {
                write!(f, "bridge off (was level {from}): bridge.enabled is false")
            }
            Reason::FullCost { message, .. } => {
                write!(f, "read at full cost (hosts served degraded): {message}")
            }
            _ => unreachable!("Reason::fmt_bridge called for {}", self.code()),
        }
    }

    /// The signals against their targets or thresholds, and how long they have held.
    fn fmt_load(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::AboveTarget { signal, utilization, target } => {
                write!(f, "{} {utilization:.2} above target {target:.2}", signal.name())
            }
            Reason::BelowTarget { signal, utilization, target } => {
                write!(f, "{} {utilization:.2} below target {target:.2}", signal.name())
            }
            Reason::WithinTolerance { signal, ratio, tolerance } => write!(
                f,
                "{} at {ratio:.2}x its target, within the tolerance of {tolerance}",
                signal.name()
            ),
            Reason::AboveThreshold { utilization, threshold, for_secs } => {
                write!(f, "utilization {utilization:.2} above {threshold} for {for_secs}s")
            }
            Reason::BelowThreshold { utilization, threshold, for_secs } => {
                write!(f, "utilization {utilization:.2} below {threshold} for {for_secs}s")
            }
            Reason::BetweenThresholds { utilization, scale_in, scale_out } => {
                write!(f, "utilization {utilization:.2} between {scale_in} and {scale_out}")
            }
            Reason::ScaleOutSustaining { utilization, threshold, for_secs, need_secs } => write!(
                f,
                "utilization {utilization:.2} above {threshold} for {for_secs}s of the {need_secs}s needed"
            ),
            Reason::ScaleInSustaining { utilization, threshold, for_secs, need_secs } => write!(
                f,
                "utilization {utilization:.2} below {threshold} for {for_secs}s of the {need_secs}s needed"
            ),
            _ => unreachable!("Reason::fmt_load called for {}", self.code()),
        }
    }

    /// Metrics missing, stale or not trusted past the evidence.
    fn fmt_metrics(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::MetricsMissing { hosts } if hosts.is_empty() => {
                write!(f, "metrics missing: holding (missing metrics never cause a scale-in)")
            }
            Reason::MetricsMissing { hosts } => write!(
                f,
                "metrics missing or stale for {}: holding (missing metrics never cause a scale-in)",
                hosts.join(", ")
            ),
            Reason::SomeMetricsMissing { hosts } => write!(
                f,
                "metrics missing or stale for {}: counted idle for scale-out, at target for scale-in",
                hosts.join(", ")
            ),
            Reason::Uncorroborated { message, .. } => write!(
                f,
                "metrics suspect, not trusted past the evidence: {message} (a slave's report is \
                 a claim; the master serves through the same ELB)"
            ),
            _ => unreachable!("Reason::fmt_metrics called for {}", self.code()),
        }
    }

    /// Scale-out beyond the fleet's average: the master's own work, a forecast, a planned burst.
    fn fmt_demand(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::MasterBound {
                signal,
                master,
                slaves,
                counted,
                target,
            } => write!(
                f,
                "{} on the master {master:.2}, on the slaves {slaves:.2}: {counted:.2} of it \
                 counted as work only the master does, so the shared part must fall to {:.2} \
                 for the master to reach target {target:.2}",
                signal.name(),
                (target - counted).max(0.0)
            ),
            Reason::Forecast {
                signal,
                utilization,
                forecast,
                target,
                horizon_secs,
                measured,
            } => write!(
                f,
                "{} {utilization:.2} now, forecast {forecast:.2} in {horizon_secs}s ({} lead time) \
                 above target {target:.2}: scaling out ahead",
                signal.name(),
                if *measured { "measured" } else { "configured" }
            ),
            Reason::Scheduled {
                name,
                min_slaves,
                opens_in_secs,
                closes_in_secs,
            } => {
                if *opens_in_secs > 0 {
                    write!(f, "planned burst {name:?} opens in {opens_in_secs}s: prewarming {min_slaves} slave(s)")
                } else {
                    write!(f, "planned burst {name:?} holds at least {min_slaves} slave(s) for {closes_in_secs}s more")
                }
            }
            _ => unreachable!("Reason::fmt_demand called for {}", self.code()),
        }
    }

    /// Holds and limits: capacity on the way, stabilization, cooldowns, steps, min/max, lifetime.
    fn fmt_limits(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::CapacityOnTheWay { on_the_way } => {
                write!(
                    f,
                    "{on_the_way} slave(s) still launching or syncing count as capacity"
                )
            }
            Reason::ScaleOutStabilizing {
                window_secs,
                lowest,
            } => {
                write!(
                    f,
                    "scale-out stabilizing: lowest recommendation in {window_secs}s is {lowest}"
                )
            }
            Reason::ScaleInStabilizing {
                window_secs,
                highest,
            } => {
                write!(
                    f,
                    "scale-in stabilizing: highest recommendation in {window_secs}s is {highest}"
                )
            }
            Reason::CooldownActive {
                direction,
                remaining_secs,
            } => {
                write!(f, "{} cooldown: {remaining_secs}s left", dir(*direction))
            }
            Reason::MaxStep { direction, step } => {
                write!(f, "{} limited to {step} per decision", dir(*direction))
            }
            Reason::BelowMinSlaves { min } => write!(f, "below min_slaves {min}"),
            Reason::AtMinSlaves { min } => write!(f, "at min_slaves {min}"),
            Reason::AboveMaxSlaves { max } => write!(f, "above max_slaves {max}"),
            Reason::AtMaxSlaves { max } => write!(f, "at max_slaves {max}"),
            Reason::NoVictimOldEnough { min_lifetime_secs } => {
                write!(
                    f,
                    "not enough slaves older than min_lifetime ({min_lifetime_secs}s) to remove"
                )
            }
            _ => unreachable!("Reason::fmt_limits called for {}", self.code()),
        }
    }

    /// The burst cap: reached, limiting, its ledger unavailable, the midnight guard, warm slaves.
    fn fmt_cap(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::DailyCapReached { message, .. } => f.write_str(message),
            Reason::CapLimited { message, .. } => f.write_str(message),
            Reason::LedgerUnavailable { why } => write!(
                f,
                "no scale-out: the burst cap ledger is unavailable ({why}); it is rebuilt at the next adoption, or by `burst-agent repair` when the log says so"
            ),
            Reason::MidnightDeferred { wanted, resets_in_secs, top, acute_at } => write!(
                f,
                "not launching {wanted} slave(s) {resets_in_secs}s before the cap resets: one \
                 still running at midnight counts on tomorrow's cap too, and a need this mild \
                 may pass by then (at {top:.2} of a goal, acute from {acute_at:.2})"
            ),
            Reason::WarmPool { free } => write!(
                f,
                "{free} warm slave(s) that ran today start again at no new cap unit"
            ),
            _ => unreachable!("Reason::fmt_cap called for {}", self.code()),
        }
    }

    /// Keeping unneeded slaves for the cap, and releasing them.
    fn fmt_keep(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::KeepingForCap {
                units,
                kept,
                unneeded_secs,
                relaunch_secs,
                lead_secs,
                unit_share,
                unit_secs,
                kept_today_secs,
                limit_secs,
            } => write!(
                f,
                "keeping {kept} slave(s): the next one out has been unneeded for {}, less than \
                 bringing it back today would cost ({} of instance time: lead {lead_secs}s + \
                 {unit_share:.2} of a cap unit worth {}, {units} unit(s) left to spend); kept {} \
                 of max_kept_per_day {} today",
                dur(*unneeded_secs),
                dur(*relaunch_secs),
                dur(*unit_secs),
                dur(*kept_today_secs),
                dur(*limit_secs)
            ),
            Reason::KeepLimitReached { released, kept_today_secs, limit_secs } => write!(
                f,
                "releasing {released} slave(s) the cap would keep: {} of instance time already kept \
                 today (max_kept_per_day {})",
                dur(*kept_today_secs),
                dur(*limit_secs)
            ),
            Reason::KeepEndsBeforeMidnight { released, resets_in_secs } => write!(
                f,
                "releasing {released} slave(s) the cap would keep: the cap resets in \
                 {resets_in_secs}s, and one running at midnight counts toward tomorrow's cap"
            ),
            _ => unreachable!("Reason::fmt_keep called for {}", self.code()),
        }
    }

    /// Launches that wait: no capacity, refused, no content source, content sync broken.
    fn fmt_launch(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::NoCapacity { wanted, retry_in_secs } => write!(
                f,
                "EC2 had no capacity in any subnet for any instance type at the last launch: {wanted} \
                 slave(s) wait, next launch in {retry_in_secs}s (fleet.subnet_ids, fleet.fallback_instance_types)"
            ),
            Reason::LaunchRefused {
                wanted,
                retry_in_secs,
                cause,
            } => write!(
                f,
                "EC2 refused the last launch for good ({cause}): {wanted} slave(s) wait, next try \
                 in {retry_in_secs}s, or at once after the fix and `systemctl reload burst-agent` \
                 (`burst-agent preflight` names the key)"
            ),
            Reason::ContentSourceMissing { wanted, why } => write!(
                f,
                "{wanted} launch(es) wait: {why} (hooks.content_source, hooks.content_sentinel)"
            ),
            Reason::SyncBroken {
                wanted,
                allowed,
                cause,
                trial_in_secs,
            } => write!(
                f,
                "content sync keeps failing the same way, so {} of {wanted} launch(es) wait \
                 (a slave that cannot get the content must not spend the cap): {cause}; fix it, \
                 then `systemctl reload burst-agent` or `burst-agent resume`; {}",
                wanted - allowed,
                match *trial_in_secs {
                    s if s > 0 => format!("a trial launch in {} at the earliest", dur(s)),
                    0 => "one trial launch may go now".to_string(),
                    _ => "a trial launch is syncing".to_string(),
                }
            ),
            _ => unreachable!("Reason::fmt_launch called for {}", self.code()),
        }
    }
}

/// Seconds as a duration people read ("1h 5m"); negative as 0.
fn dur(secs: i64) -> crate::config::Dur {
    crate::config::Dur::secs(u64::try_from(secs).unwrap_or(0))
}
