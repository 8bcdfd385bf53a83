//! The scaling policy: a pure function from configuration, observation, cap ledger, history and
//! time to a [`Decision`] the actuator carries out, with an [`Explanation`] of every step.
//!
//! No clock, no I/O, no SDK types. The pipeline, in order:
//! 1. **raw desired** per signal (target tracking or threshold rules); the most demanding
//!    signal wins; missing metrics follow Kubernetes HPA's rule;
//! 2. **stabilization**: out takes the lowest recommendation of its window, in the highest;
//! 3. **rate limits**: cooldowns and the max step per decision;
//! 4. **min/max slaves**;
//! 5. **the daily burst cap** (and the optional instance-hours budget);
//! 6. **victims** for a scale-in: old enough, in the configured order; kept instead while
//!    bringing them back today (lead time, cap unit) would cost more than keeping them has.

mod corroborate;
mod history;
mod reason;

pub use corroborate::{
    corroborate, evidence, Reports, Suspect, CORROBORATION_FACTOR, CORROBORATION_SLACK,
};
pub use history::History;
pub use reason::{Direction, Reason};

use crate::cap::{CapLedger, CapStatus};
use crate::config::{PolicyConfig, PolicyMode, Signal, VictimOrder};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

pub use crate::model::{HostMetrics, SlaveState};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SlaveObservation {
    pub id: String,
    pub state: SlaveState,
    pub launched_at: Timestamp,
    /// The newest metrics read back for it; `None` when none have arrived.
    pub metrics: Option<HostMetrics>,
}

/// The actuator's backoff after a launch EC2 refused for good.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LaunchRefused {
    pub until: Timestamp,
    /// EC2's answer (`CODE: message`).
    pub cause: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FleetObservation {
    /// The master's own newest sample.
    pub master: Option<HostMetrics>,
    pub slaves: Vec<SlaveObservation>,
    /// EC2 had no capacity for any placement: no launch before then (the actuator's backoff).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_capacity_until: Option<Timestamp>,
    /// EC2 refused the last launch for good (a missing instance profile, a security group or
    /// AMI that does not exist, IAM, a limit): no launch before then (the actuator's backoff;
    /// a reload or `burst-agent resume` ends it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch_refused: Option<LaunchRefused>,
    /// The liveness probe's last round ([`crate::model::probe_latency`]): when, and the slowest
    /// answer in milliseconds; the `probe_latency` signal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_latency: Option<(Timestamp, f64)>,
    /// The planned burst whose window (prewarm included) holds now, if any: its `min_slaves`
    /// is a floor like `policy.min_slaves` (schedule.rs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled: Option<crate::schedule::Window>,
    /// Room left in the warm pool (`fleet.warm_pool` minus the slaves stopped or stopping in
    /// it): a slave released into it can come back today at no new cap unit.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub warm_room: u32,
    /// Seconds a released slave drains before it stops or terminates (`elb.draining_timeout`):
    /// kept slaves are released that much earlier before the cap resets.
    #[serde(default)]
    pub drain_secs: i64,
    /// Content sync keeps failing the same way (the actuator's brake): no launch spends a cap
    /// unit, except one trial when `trial` says so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_broken: Option<SyncBroken>,
    /// The content source on the master is missing or empty (why): a new slave could get no
    /// content, so nothing launches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_source_missing: Option<String>,
    /// What AWS itself measured, which no slave can write (`AWS/` namespaces).
    #[serde(default)]
    pub evidence: Evidence,
}

/// Evidence from AWS's own metrics (nobody can PutMetricData into an `AWS/` namespace).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// Each slave's newest `AWS/EC2` `CPUUtilization`, as a ratio (EC2's hypervisor measured it).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub cpu: BTreeMap<String, f64>,
    /// The ELB queues or spills requests (`AWS/ELB` `SurgeQueueLength`, `SpilloverCount`): its
    /// backends cannot keep up, so the slaves' reports of a busy fleet are backed. Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elb_saturated: Option<String>,
}

/// The actuator's brake on a content sync that keeps failing, as the policy sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SyncBroken {
    /// What the failures had in common (the fix, when the hook's words name one).
    pub cause: String,
    /// One trial launch may go now.
    pub trial: bool,
    /// Seconds until a trial may go (0 when one may go now; negative while a trial syncs).
    pub trial_in_secs: i64,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// What one signal said this tick.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SignalReading {
    pub signal: Signal,
    /// Mean over serving hosts with fresh metrics; `None` when none had it.
    pub utilization: Option<f64>,
    /// The target (target tracking) or scale-out threshold (threshold mode) it is held to.
    pub goal: f64,
    /// Serving hosts whose metrics were missing or stale.
    pub missing_hosts: u32,
    /// Slaves this signal asks for; `None` when it could not say.
    pub desired: Option<u32>,
    /// Its utilization forecast one lead time ahead, when the trend was used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forecast: Option<f64>,
}

/// How a decision came about: every count along the pipeline and every reason.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Explanation {
    pub mode: PolicyMode,
    pub in_service: u32,
    /// Pending + syncing.
    pub on_the_way: u32,
    pub draining: u32,
    /// Slaves counted as capacity: in service + on the way.
    pub current: u32,
    /// The most demanding signal's utilization (threshold mode compares it to thresholds).
    pub utilization: Option<f64>,
    pub signals: Vec<SignalReading>,
    pub raw_desired: u32,
    pub stabilized: u32,
    pub rate_limited: u32,
    pub bounded: u32,
    pub cap_limited: u32,
    pub final_count: u32,
    pub reasons: Vec<Reason>,
    pub cap: CapStatus,
    /// Of a scale-in's victims, those beyond the warm pool's room: the history counts them so
    /// the next release is priced at the next cap unit (step 6).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub released_beyond_pool: u32,
}

/// A [`Decision`]'s variant without its data, named as serde names the decision's `action`
/// tag (both `rename_all = "snake_case"`; a test holds them together).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DecisionKind {
    Hold,
    ScaleOut,
    ScaleIn,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Decision {
    Hold {
        why: Explanation,
    },
    ScaleOut {
        count: u32,
        why: Explanation,
    },
    ScaleIn {
        instances: Vec<String>,
        why: Explanation,
    },
}

impl Explanation {
    /// An explanation with no numbers and no reasons, only the cap: for a decision made by
    /// something other than the policy (a test, the fault simulation), which the actuator carries
    /// out by its count or victims alone.
    pub fn bare(cap: CapStatus) -> Self {
        Explanation {
            mode: PolicyMode::TargetTracking,
            in_service: 0,
            on_the_way: 0,
            draining: 0,
            current: 0,
            utilization: None,
            signals: Vec::new(),
            raw_desired: 0,
            stabilized: 0,
            rate_limited: 0,
            bounded: 0,
            cap_limited: 0,
            final_count: 0,
            reasons: Vec::new(),
            cap,
            released_beyond_pool: 0,
        }
    }
}

impl Decision {
    pub fn explanation(&self) -> &Explanation {
        match self {
            Decision::Hold { why }
            | Decision::ScaleOut { why, .. }
            | Decision::ScaleIn { why, .. } => why,
        }
    }
    /// What it does, by the name serde gives it (its `action` tag in JSON): the logs'
    /// `action` field and the JSON cannot disagree.
    pub fn action(&self) -> &'static str {
        crate::model::name_of(&self.kind())
    }

    pub fn kind(&self) -> DecisionKind {
        match self {
            Decision::Hold { .. } => DecisionKind::Hold,
            Decision::ScaleOut { .. } => DecisionKind::ScaleOut,
            Decision::ScaleIn { .. } => DecisionKind::ScaleIn,
        }
    }
    /// The reason codes, for log fields and tests.
    pub fn reason_codes(&self) -> Vec<&'static str> {
        self.explanation()
            .reasons
            .iter()
            .map(Reason::code)
            .collect()
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let why = self.explanation();
        match self {
            Decision::Hold { .. } => write!(f, "hold at {} slaves", why.current)?,
            Decision::ScaleOut { count, .. } => write!(
                f,
                "scale out by {count} ({} -> {} slaves)",
                why.current, why.final_count
            )?,
            Decision::ScaleIn { instances, .. } => write!(
                f,
                "scale in by {} ({} -> {} slaves: {})",
                instances.len(),
                why.current,
                why.final_count,
                instances.join(", ")
            )?,
        }
        write!(
            f,
            " [desired {}, stabilized {}, rate-limited {}, bounded {}, cap-limited {}; burst cap {}]",
            why.raw_desired, why.stabilized, why.rate_limited, why.bounded, why.cap_limited, why.cap
        )?;
        for r in &why.reasons {
            write!(f, "; {r}")?;
        }
        Ok(())
    }
}

/// `m` if it is at most `stale_after` seconds old at `now`: older metrics count as missing.
pub fn fresh(m: Option<&HostMetrics>, now: Timestamp, stale_after: i64) -> Option<&HostMetrics> {
    m.filter(|m| now.as_second() - m.at.as_second() <= stale_after)
}

/// ceil, forgiving float noise (3.0000000001 is 3).
fn ceil(x: f64) -> u32 {
    let c = (x - 1e-9).ceil();
    if c <= 0.0 {
        0
    } else if c >= f64::from(u32::MAX) {
        u32::MAX
    } else {
        c as u32
    }
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Decides what to do now. Pure: the same inputs give the same decision.
pub fn decide(
    cfg: &PolicyConfig,
    obs: &FleetObservation,
    cap: &CapLedger,
    hist: &History,
    now: Timestamp,
) -> Decision {
    let count = |s: SlaveState| to_u32(obs.slaves.iter().filter(|x| x.state == s).count());
    let in_service = count(SlaveState::InService);
    let on_the_way = count(SlaveState::Pending) + count(SlaveState::Syncing);
    let draining = count(SlaveState::Draining);
    let current = in_service + on_the_way;
    let mut reasons = Vec::new();

    // Serving hosts: the master and the slaves in service. Metrics older than stale_after are
    // missing.
    let stale_after = cfg.stale_after.whole_secs();
    let fresh = |m| fresh(m, now, stale_after);
    let master = fresh(obs.master.as_ref());
    // Each slave's report as far as the master's own evidence backs it (corroborate).
    let mut suspects = Vec::new();
    let reported: Vec<(&str, Option<&HostMetrics>)> = obs
        .slaves
        .iter()
        .filter(|s| s.state == SlaveState::InService)
        .map(|s| (s.id.as_str(), fresh(s.metrics.as_ref())))
        .collect();
    let reports = corroborate::Reports::new(reported.iter().filter_map(|(_, m)| *m));
    let slaves: Vec<(&str, Option<HostMetrics>)> = reported
        .iter()
        .map(|(id, m)| {
            let m = m.map(|m| {
                let (m, cut) = corroborate(master, &reports, id, m, &cfg.targets, &obs.evidence);
                suspects.extend(cut);
                m
            });
            (*id, m)
        })
        .collect();
    if !suspects.is_empty() {
        reasons.push(Reason::Uncorroborated {
            hosts: suspects.iter().map(|s| s.host.clone()).collect(),
            message: suspects
                .iter()
                .map(|s| {
                    format!(
                        "{} reported {} {:.2}, {} backs at most {:.2}",
                        s.host,
                        s.signal.name(),
                        s.reported,
                        s.source,
                        s.bound
                    )
                })
                .collect::<Vec<_>>()
                .join("; "),
        });
    }
    let mut serving: Vec<(&str, Option<&HostMetrics>)> = vec![("master", master)];
    serving.extend(slaves.iter().map(|(id, m)| (*id, m.as_ref())));

    // The site-wide probe, if fresh.
    let probe = obs
        .probe_latency
        .filter(|(at, _)| now.as_second() - at.as_second() <= stale_after)
        .map(|(_, ms)| ms);

    // 1. Raw desired.
    let (raw_desired, utilization, signals) = match cfg.mode {
        PolicyMode::TargetTracking => target_tracking(
            cfg,
            &serving,
            &Ahead {
                probe,
                hist,
                now,
                cap_remaining: cap.remaining(now),
            },
            (current, on_the_way, in_service),
            &mut reasons,
        ),
        PolicyMode::Threshold => {
            threshold(cfg, &serving, current, on_the_way, hist, now, &mut reasons)
        }
    };

    // 2. Stabilization (HPA's rule: out on the window's lowest, in on its highest).
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

    // 3. Rate limits: cooldowns and max step.
    let since = |t: Option<Timestamp>| t.map(|t| now.as_second() - t.as_second());
    let mut rate_limited = stabilized;
    if stabilized > current {
        let cool = cfg.scale_out_cooldown.whole_secs();
        match since(hist.last_scale_out) {
            Some(ago) if ago < cool => {
                rate_limited = current;
                reasons.push(Reason::CooldownActive {
                    direction: Direction::Out,
                    remaining_secs: cool - ago,
                });
            }
            _ if stabilized - current > cfg.max_step_out => {
                rate_limited = current + cfg.max_step_out;
                reasons.push(Reason::MaxStep {
                    direction: Direction::Out,
                    step: cfg.max_step_out,
                });
            }
            _ => {}
        }
    } else if stabilized < current {
        // Scale-in waits out its cooldown after any scaling, in either direction.
        let cool = cfg.scale_in_cooldown.whole_secs();
        let last = hist.last_scale_in.max(hist.last_scale_out);
        match since(last) {
            Some(ago) if ago < cool => {
                rate_limited = current;
                reasons.push(Reason::CooldownActive {
                    direction: Direction::In,
                    remaining_secs: cool - ago,
                });
            }
            _ if current - stabilized > cfg.max_step_in => {
                rate_limited = current - cfg.max_step_in;
                reasons.push(Reason::MaxStep {
                    direction: Direction::In,
                    step: cfg.max_step_in,
                });
            }
            _ => {}
        }
    }

    // 4. Min / max slaves (enforced even inside a cooldown); a planned burst raises the floor.
    let floor = match &obs.scheduled {
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

    // 5. The daily burst cap. A warm slave that ran today already starts again at no new
    //    unit (while the ledger is usable and the hours budget is not spent).
    let cap_status = cap.status(now);
    let hours_left = cap_status
        .hours_budget
        .is_none_or(|b| cap_status.instance_hours < b);
    // (Only within the limit: an overcounted ledger may count one that did not run today.)
    let free_warm =
        if cap_status.blocked.is_none() && hours_left && cap_status.used <= cap_status.limit {
            to_u32(
                obs.slaves
                    .iter()
                    .filter(|s| s.state == SlaveState::Stopped && cap.counts_today(&s.id, now))
                    .count(),
            )
        } else {
            0
        };
    let mut cap_limited = bounded;
    if bounded > current {
        let want = bounded - current;
        let allowed = want.min(cap_status.remaining.saturating_add(free_warm));
        if free_warm > 0 && want > cap_status.remaining {
            reasons.push(Reason::WarmPool {
                free: free_warm.min(want),
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
        cap_limited = current + allowed;
    }
    // 5b. EC2 had no capacity in any subnet for any type: launches wait out the backoff.
    if let Some(until) = obs.no_capacity_until.filter(|u| *u > now) {
        if cap_limited > current {
            reasons.push(Reason::NoCapacity {
                wanted: cap_limited - current,
                retry_in_secs: until.as_second() - now.as_second(),
            });
            cap_limited = current;
        }
    }

    // 5b''. EC2 refused the last launch for good: asking again every tick gets the same answer.
    if let Some(r) = obs.launch_refused.as_ref().filter(|r| r.until > now) {
        if cap_limited > current {
            reasons.push(Reason::LaunchRefused {
                wanted: cap_limited - current,
                retry_in_secs: r.until.as_second() - now.as_second(),
                cause: r.cause.clone(),
            });
            cap_limited = current;
        }
    }

    // 5b'. Content sync keeps failing the same way: only what costs no cap unit (warm slaves
    //      the day counts) and one trial after the back-off may go.
    if let Some(b) = &obs.sync_broken {
        if cap_limited > current {
            let want = cap_limited - current;
            let allowed = want.min(free_warm.saturating_add(u32::from(b.trial)));
            if allowed < want {
                reasons.push(Reason::SyncBroken {
                    wanted: want,
                    allowed,
                    cause: b.cause.clone(),
                    trial_in_secs: b.trial_in_secs,
                });
                cap_limited = current + allowed;
            }
        }
    }

    // 5b''. No content to give a new slave (the master's source is missing or empty).
    if let Some(why) = &obs.content_source_missing {
        if cap_limited > current {
            reasons.push(Reason::ContentSourceMissing {
                wanted: cap_limited - current,
                why: why.clone(),
            });
            cap_limited = current;
        }
    }

    // 5c. Just before the cap resets: a slave launched now and running past midnight counts on
    //     both days. Unless demand is acute (a signal far over its goal, or the fleet below its
    //     floor), the launch waits for the new day.
    let guard = cfg.midnight_guard.whole_secs();
    if cap_limited > current && cap_status.resets_in_secs < guard && current >= floor {
        // How far over its goal the most demanding signal is (1.0 = at its goal).
        let top = signals
            .iter()
            .filter_map(|r| Some(r.utilization? / r.goal).filter(|x| x.is_finite()))
            .fold(0.0_f64, f64::max);
        if top < cfg.acute_factor {
            reasons.push(Reason::MidnightDeferred {
                wanted: cap_limited - current,
                resets_in_secs: cap_status.resets_in_secs,
                top,
                acute_at: cfg.acute_factor,
            });
            cap_limited = current;
        }
    }

    // 6. Scale-in. The k-th slave it would release is the one that makes the fleet
    //    current - k + 1 strong; it has been unneeded since the fleet last wanted that many.
    //    Each has a relaunch cost, should demand come back today: the lead time (a host short
    //    while it boots and syncs) plus, unless the warm pool has room for it (it comes back at
    //    no new unit), a share of a cap unit's value that grows as the day's units run out
    //    (slaves released earlier in the same lull took the cheaper places). Not knowing when
    //    demand returns, a slave is kept while it has been unneeded for less than its relaunch
    //    cost: the ski-rental break-even (never more than twice the cost of the best choice in
    //    hindsight; with a lull as likely to last as long again as it has lasted, the
    //    expected-cost choice too). Never above max_slaves, in the last stretch before the cap
    //    resets (a slave running at midnight counts toward tomorrow), with the instance-hours
    //    budget spent, or past max_kept_per_day.
    let mut final_count = cap_limited;
    let mut victims = Vec::new();
    let mut released_beyond_pool = 0;
    if cap_limited < current {
        let wanted = current - cap_limited;
        let keep = Keep::new(cfg, obs, hist, &cap_status, now);
        let would_release = (1..=wanted)
            .take_while(|k| keep.relaunch(*k).0 <= hist.unneeded_for(current - k + 1, now))
            .count();
        let would_keep = wanted - to_u32(would_release);
        let over_max = current.saturating_sub(cfg.max_slaves);
        // Released in stages of max_step_in a scale-in cooldown apart, each draining first:
        // the last must be gone by midnight.
        let stages = i64::from(would_keep.div_ceil(cfg.max_step_in.max(1)));
        let day_ending = cap_status.resets_in_secs
            <= guard.max(cfg.evaluation_interval.whole_secs())
                + obs.drain_secs.max(0)
                + (stages - 1).max(0) * cfg.scale_in_cooldown.whole_secs();
        let allowed = if would_keep == 0 || !hours_left {
            wanted
        } else if day_ending {
            reasons.push(Reason::KeepEndsBeforeMidnight {
                released: would_keep,
                resets_in_secs: cap_status.resets_in_secs,
            });
            wanted
        } else if keep.kept_today >= keep.limit {
            // (A limit of 0 turns keeping off: nothing to say.)
            if keep.limit > 0 {
                reasons.push(Reason::KeepLimitReached {
                    released: would_keep,
                    kept_today_secs: keep.kept_today,
                    limit_secs: keep.limit,
                });
            }
            wanted
        } else {
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
        };
        if allowed > 0 {
            victims = pick_victims(cfg, obs, now, allowed);
            if to_u32(victims.len()) < allowed {
                reasons.push(Reason::NoVictimOldEnough {
                    min_lifetime_secs: cfg.min_lifetime.whole_secs(),
                });
            }
        }
        final_count = current - to_u32(victims.len());
        released_beyond_pool = to_u32(victims.len()).saturating_sub(obs.warm_room);
    }

    let why = Explanation {
        mode: cfg.mode,
        in_service,
        on_the_way,
        draining,
        current,
        utilization,
        signals,
        raw_desired,
        stabilized,
        rate_limited,
        bounded,
        cap_limited,
        final_count,
        reasons,
        cap: cap_status,
        released_beyond_pool,
    };
    if final_count > current {
        Decision::ScaleOut {
            count: final_count - current,
            why,
        }
    } else if !victims.is_empty() {
        Decision::ScaleIn {
            instances: victims,
            why,
        }
    } else {
        Decision::Hold { why }
    }
}

/// What keeping an unneeded slave is weighed against (step 6).
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

/// One signal's values on the serving hosts that have it, and how many lack it; the names of
/// those that lack it are added to `missing_names` (once each).
fn read_signal(
    serving: &[(&str, Option<&HostMetrics>)],
    signal: Signal,
    missing_names: &mut Vec<String>,
) -> (Vec<f64>, usize) {
    let mut present = Vec::with_capacity(serving.len());
    for (name, m) in serving {
        match m.and_then(|m| m.get(signal)) {
            Some(v) => present.push(v),
            None if !missing_names.iter().any(|x| x == name) => {
                missing_names.push((*name).to_string())
            }
            None => {}
        }
    }
    let missing = serving.len() - present.len();
    (present, missing)
}

/// Hosts that bring the master to `target` when it runs hotter than the slaves by work only it
/// does. `present[0]` is the master, the rest in-service slaves (all fresh: `missing` is 0). The
/// shared part each host carries is the slaves' mean s; the master's excess e = m - s, less
/// twice the tolerance, is counted as its own; with n hosts now the shared total is n*s, so
/// n' = ceil(n*s / (target - e)). Returns n' and e. When the
/// excess alone reaches the target, no count brings it there: n' = n*s / (a tenth of the
/// target), bounded later by max_slaves and the cap. `None` when it does not apply: no slave to
/// compare with, a signal that is not a share of the load, or a master within tolerance.
fn master_bound(
    signal: Signal,
    present: &[f64],
    missing: usize,
    target: f64,
    tolerance: f64,
) -> Option<(u32, f64)> {
    if !signal.forecastable() || signal.site_wide() || missing > 0 || present.len() < 2 {
        return None;
    }
    let master = present[0];
    let slaves = present[1..].iter().sum::<f64>() / (present.len() - 1) as f64;
    // The slaves' numbers come later than the master's (CloudWatch), so on a rise and in noise
    // the master looks hotter than it is by some: only an excess past twice the tolerance is
    // taken, and only that part of it.
    let excess = master - slaves - 2.0 * target * tolerance;
    if master <= target * (1.0 + 2.0 * tolerance) || excess <= 0.0 {
        return None;
    }
    let room = (target - excess).max(target * 0.1);
    Some((ceil(present.len() as f64 * slaves / room), excess))
}

/// What target tracking reads besides the hosts: the site-wide probe, and for the forecast the
/// history, the time and the cap left.
#[derive(Clone, Copy)]
struct Ahead<'a> {
    probe: Option<f64>,
    hist: &'a History,
    now: Timestamp,
    cap_remaining: u32,
}

/// desired hosts = ceil(Σ utilization / target), with HPA's tolerance and missing-metrics rules.
///
/// A site-wide signal (the probe's latency) stands for every serving host: desired hosts =
/// ceil(serving × value / target), as HPA scales on an object metric.
fn target_tracking(
    cfg: &PolicyConfig,
    serving: &[(&str, Option<&HostMetrics>)],
    ahead: &Ahead<'_>,
    (current, on_the_way, in_service): (u32, u32, u32),
    reasons: &mut Vec<Reason>,
) -> (u32, Option<f64>, Vec<SignalReading>) {
    let Ahead {
        probe,
        hist,
        now,
        cap_remaining,
    } = *ahead;
    let n = serving.len() as f64;
    let current_hosts = current + 1;
    let mut readings = Vec::new();
    let mut best: Option<(u32, Reason)> = None;
    let mut top_util: Option<f64> = None;
    let mut any_unreadable = false;
    let mut missing_names: Vec<String> = Vec::new();
    for &signal in &cfg.signals {
        let target = cfg.targets.get(signal);
        let (present, missing) = if signal.site_wide() {
            match probe {
                // At most twice the target: latency that hosts cannot cure (a slow database)
                // must not spend the cap in one decision; each decision at most doubles.
                Some(v) => (vec![v.min(2.0 * target); serving.len()], 0),
                None => {
                    if !missing_names.iter().any(|x| x == "probe") {
                        missing_names.push("probe".into());
                    }
                    (Vec::new(), serving.len())
                }
            }
        } else {
            read_signal(serving, signal, &mut missing_names)
        };
        if present.is_empty() {
            any_unreadable = true;
            readings.push(SignalReading {
                signal,
                utilization: None,
                goal: target,
                missing_hosts: to_u32(missing),
                desired: None,
                forecast: None,
            });
            continue;
        }
        let sum: f64 = present.iter().sum();
        let mean = sum / present.len() as f64;
        top_util = Some(top_util.map_or(mean, |u: f64| u.max(mean)));
        let ratio = mean / target;
        let hold = (
            current,
            Reason::WithinTolerance {
                signal,
                ratio,
                tolerance: cfg.tolerance,
            },
        );
        let (desired_hosts_or_hold, why) = if missing == 0 {
            if (1.0 - ratio).abs() <= cfg.tolerance {
                (None, hold.1)
            } else {
                (
                    Some(ceil(sum / target)),
                    direction_reason(signal, mean, target),
                )
            }
        } else {
            // Missing hosts: idle when scaling up, at target when scaling down.
            let assumed = if ratio < 1.0 { target } else { 0.0 };
            let sum2 = sum + missing as f64 * assumed;
            let ratio2 = sum2 / n / target;
            if (1.0 - ratio2).abs() <= cfg.tolerance
                || (ratio < 1.0 && ratio2 > 1.0)
                || (ratio > 1.0 && ratio2 < 1.0)
            {
                (None, hold.1)
            } else {
                let d = ceil(sum2 / target);
                if (ratio2 < 1.0 && d > current_hosts) || (ratio2 > 1.0 && d < current_hosts) {
                    (None, hold.1)
                } else {
                    (Some(d), direction_reason(signal, mean, target))
                }
            }
        };
        let mut desired = desired_hosts_or_hold.map_or(current, |h| h.saturating_sub(1));
        let mut why = why;
        // The master does work no slave can take (forms, the CMS): it runs hotter than the
        // slaves by that much, and the mean hides it. With slaves in service to compare with,
        // the hosts that bring the master itself to the target: the shared part per host
        // (the slaves' level) must fall to target - excess.
        if let Some((hosts, counted)) =
            master_bound(signal, &present, missing, target, cfg.tolerance)
        {
            let slaves_wanted = hosts.saturating_sub(1);
            if slaves_wanted > desired {
                desired = slaves_wanted;
                let slaves = present[1..].iter().sum::<f64>() / (present.len() - 1) as f64;
                why = Reason::MasterBound {
                    signal,
                    master: present[0],
                    slaves,
                    counted,
                    target,
                };
            }
        }
        // One lead time ahead, on the fleet's own trend: only ever more.
        let mut forecast = None;
        let f = &cfg.forecast;
        if f.enabled && missing == 0 && signal.forecastable() {
            let (lead, measured) = hist.lead_time(f.lead_time.whole_secs());
            let hosts = to_u32(serving.len());
            if let Some(slope) = hist.trend(signal, now, f.window.whole_secs(), sum, hosts) {
                let ahead = (sum + slope * lead as f64).min(sum * f.max_factor);
                let ratio_ahead = ahead / n / target;
                if ahead > sum && ratio_ahead > 1.0 + cfg.tolerance {
                    // A forecast is a bet: it may spend at most a third of the cap that is left
                    // once what the load asks for now is launched (a wave that fades early
                    // leaves the rest for the next; measured on traces/double-spike.csv).
                    let spare = cap_remaining.saturating_sub(desired.saturating_sub(current));
                    let wanted = ceil(ahead / target).saturating_sub(1);
                    let ahead_slaves = wanted.min(desired + spare / 3);
                    forecast = Some(ahead / n);
                    if ahead_slaves > desired {
                        desired = ahead_slaves;
                        why = Reason::Forecast {
                            signal,
                            utilization: mean,
                            forecast: ahead / n,
                            target,
                            horizon_secs: lead,
                            measured,
                        };
                    }
                }
            }
        }
        readings.push(SignalReading {
            signal,
            utilization: Some(mean),
            goal: target,
            missing_hosts: to_u32(missing),
            desired: Some(desired),
            forecast,
        });
        if best.as_ref().is_none_or(|(d, _)| desired > *d) {
            best = Some((desired, why));
        }
    }
    if !missing_names.is_empty() && best.is_some() {
        reasons.push(Reason::SomeMetricsMissing {
            hosts: missing_names.clone(),
        });
    }
    let Some((mut raw, why)) = best else {
        reasons.push(Reason::MetricsMissing {
            hosts: missing_names,
        });
        return (current, None, readings);
    };
    reasons.push(why);
    // A signal that could not be read may not let the others scale in (HPA's rule).
    if any_unreadable && raw < current {
        reasons.push(Reason::MetricsMissing {
            hosts: missing_names,
        });
        raw = current;
    }
    if raw > in_service && raw <= current && on_the_way > 0 {
        reasons.push(Reason::CapacityOnTheWay { on_the_way });
    }
    (raw, top_util, readings)
}

fn direction_reason(signal: Signal, utilization: f64, target: f64) -> Reason {
    if utilization > target {
        Reason::AboveTarget {
            signal,
            utilization,
            target,
        }
    } else {
        Reason::BelowTarget {
            signal,
            utilization,
            target,
        }
    }
}

/// Step rules: breach a threshold for its sustain window, then add or remove a step. Slaves on
/// their way count as capacity: the load the serving hosts carry is spread over them too before
/// it is held to the scale-out threshold, so one spike is answered once, not once a tick while
/// the first slave boots.
fn threshold(
    cfg: &PolicyConfig,
    serving: &[(&str, Option<&HostMetrics>)],
    current: u32,
    on_the_way: u32,
    hist: &History,
    now: Timestamp,
    reasons: &mut Vec<Reason>,
) -> (u32, Option<f64>, Vec<SignalReading>) {
    let n = serving.len() as f64;
    let mut readings = Vec::new();
    let mut util: Option<f64> = None;
    let mut missing_names: Vec<String> = Vec::new();
    for &signal in &cfg.signals {
        let (present, missing) = read_signal(serving, signal, &mut missing_names);
        // Missing hosts count as idle here: they can only delay a scale-out, never cause a scale-in.
        let u = (!present.is_empty()).then(|| present.iter().sum::<f64>() / n);
        if let Some(u) = u {
            util = Some(util.map_or(u, |x: f64| x.max(u)));
        }
        readings.push(SignalReading {
            signal,
            utilization: u,
            goal: cfg.scale_out.threshold,
            missing_hosts: to_u32(missing),
            desired: None,
            forecast: None,
        });
    }
    let Some(u) = util else {
        reasons.push(Reason::MetricsMissing {
            hosts: missing_names,
        });
        return (current, None, readings);
    };
    let since = |start: Timestamp| now.as_second() - start.as_second();
    let out = &cfg.scale_out;
    let inn = &cfg.scale_in;
    let raw = if let Some(start) = hist.streak_start(now, Some(u), |x| x > out.threshold) {
        let (for_secs, need) = (since(start), out.sustain.whole_secs());
        // The same load over the serving hosts and those on their way.
        let spread = u * n / (n + f64::from(on_the_way));
        if for_secs >= need && on_the_way > 0 && spread <= out.threshold {
            reasons.push(Reason::CapacityOnTheWay { on_the_way });
            current
        } else if for_secs >= need {
            reasons.push(Reason::AboveThreshold {
                utilization: u,
                threshold: out.threshold,
                for_secs,
            });
            current + out.step
        } else {
            reasons.push(Reason::ScaleOutSustaining {
                utilization: u,
                threshold: out.threshold,
                for_secs,
                need_secs: need,
            });
            current
        }
    } else if !missing_names.is_empty() {
        reasons.push(Reason::SomeMetricsMissing {
            hosts: missing_names,
        });
        current
    } else if let Some(start) = hist.streak_start(now, Some(u), |x| x < inn.threshold) {
        let (for_secs, need) = (since(start), inn.sustain.whole_secs());
        if for_secs >= need {
            reasons.push(Reason::BelowThreshold {
                utilization: u,
                threshold: inn.threshold,
                for_secs,
            });
            current.saturating_sub(inn.step)
        } else {
            reasons.push(Reason::ScaleInSustaining {
                utilization: u,
                threshold: inn.threshold,
                for_secs,
                need_secs: need,
            });
            current
        }
    } else {
        reasons.push(Reason::BetweenThresholds {
            utilization: u,
            scale_in: inn.threshold,
            scale_out: out.threshold,
        });
        current
    };
    (raw, Some(u), readings)
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
