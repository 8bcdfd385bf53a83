//! `burst-agent drill --yes`: one slave through its whole life before the real burst (issue 21,
//! part 2). With the agent stopped (the drill takes its state directory's lock, so the cap unit
//! it may spend is counted in the same ledger), it starts a warm slave if the pool has one, else
//! launches one (a cap unit, said before it starts), and drives the real actuator tick by tick:
//! boot, sync, content check, registration, InService, then release: deregistration, draining,
//! and a stop into the pool or termination. It prints how long each phase took and keeps the
//! launch-to-InService time as a measured lead time for the forecast. A slave the lifecycle
//! fails (a sync that cannot work, a registration the ELB never answers) is named with its phase
//! and the failure's own `fix:`, and is cleaned up by the same lifecycle.

use super::*;
use crate::actuator::Phase;
use crate::daemon::*;
use crate::metrics::cloudwatch;
use crate::policy::{self, Decision};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;
use std::time::Instant;

/// What the drill did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Drill {
    pub instance: Option<String>,
    /// Started from the warm pool (no cap unit) rather than launched.
    pub warm: bool,
    /// Each phase the slave went through and its seconds there, in order.
    pub phases: Vec<(String, i64)>,
    /// Launch (or start) to InService, kept as a lead-time sample.
    pub lead_secs: Option<i64>,
    /// The phase it failed in, and why (with the hook's `fix:` when there is one).
    pub failed: Option<(String, String)>,
    /// How it ended: "terminated", "stopped into the warm pool", or what is still under way.
    pub end: String,
}

/// How a drill ends whose slave went into the warm pool.
const POOLED: &str = "stopped into the warm pool";

/// Ticks of the drill: short, so a phase's time is measured to a second or two.
const TICK: Duration = Duration::from_secs(1);
/// A drill never runs longer than this, whatever the deadlines say.
const MOST: Duration = Duration::from_secs(3600);

pub fn drill(cfg: Config, yes: bool, say: &mut dyn FnMut(&str)) -> Result<Drill, DaemonError> {
    // (with_aws clears dry_run: the drill's calls are real whatever the config says.)
    let configured_dry = cfg.agent.dry_run;
    with_aws(cfg, "drill", |mut cfg, aws| async move {
        let state_dir = prepare_state_dir(&mut cfg)?;
        let _lock = lock::StateLock::acquire(&state_dir)?;
        let (mut a, now) = open_actuator(&cfg, aws).await?;
        let (cap, warm) = plan(&a, now, say)?;
        if configured_dry {
            say(
                "drill: agent.dry_run = true does not make the drill a rehearsal on paper: it \
                 launches a real slave, syncs, registers and releases it (that is what it \
                 proves); `run` stays a dry run",
            );
        }
        if !yes {
            say("drill: nothing done; run the same command with --yes to do it");
            return Ok(Drill {
                end: "not started (no --yes)".into(),
                ..Drill::default()
            });
        }

        let launch = scale_out(&mut a, cap).await?;
        let mut d = Drill {
            warm,
            ..Drill::default()
        };
        let Some(id) = launch.id else {
            d.failed = Some(("launch".into(), why_nothing_launched(&a, &launch.report)));
            d.end = "nothing launched".into();
            return Ok(d);
        };
        say(&format!(
            "drill: {id} {}",
            if warm { "started" } else { "launched" }
        ));
        d.instance = Some(id.clone());

        let (up, w) = wait_until_in_service(&mut a, &mut d, &id, launch.started, say).await;
        record_up(&mut a, &mut d, &id, launch.started, up, &w, say);
        release(&mut a, &mut d, &id, &w).await;
        d.end = wait_until_down(&mut a, &mut d, &id, say).await;
        if d.end == POOLED {
            say(&format!(
                "drill: {id} stays stopped in the warm pool, costing its volume, until a running \
                 agent starts it for a burst or ends it (after fleet.warm_pool_max_age, {}); to \
                 end it now: `aws ec2 terminate-instances --instance-ids {id}`",
                cfg.fleet.warm_pool_max_age
            ));
        }
        a.flush(Timestamp::now());
        Ok(d)
    })
}

/// The slave's phase as the drill last saw it, and since when.
struct Watch {
    phase: Phase,
    since: Instant,
}

impl Watch {
    /// The slave went on to `next`: the phase it left is timed and said.
    fn advance(&mut self, d: &mut Drill, id: &str, next: Phase, say: &mut dyn FnMut(&str)) {
        d.lap(self.phase, self.since);
        say(&format!(
            "drill: {id} {} -> {} after {} s",
            phase_name(self.phase),
            phase_name(next),
            self.since.elapsed().as_secs()
        ));
        self.phase = next;
        self.since = Instant::now();
    }
}

/// What the scale-out of one slave gave.
struct Launch {
    /// The slave launched, started from the pool, or newly pending; none if none came.
    id: Option<String>,
    /// The actuator's report of the scale-out.
    report: crate::actuator::Report,
    /// Just before the scale-out: the start of the lead time.
    started: Instant,
}

/// The actuator as the agent opens it at start, its slaves adopted, and the instant it was
/// opened at.
async fn open_actuator(
    cfg: &Config,
    aws: Aws,
) -> Result<(Actuator<AwsCloud>, Timestamp), DaemonError> {
    let (_, own) = identity(cfg, true).await;
    let aws_for_read = aws.clone();
    let cloud = AwsCloud::new(aws, &cfg.agent.group, &cfg.elb.name, &cfg.fleet)
        .map_err(|e| DaemonError::Start(e.to_string()))?;
    let now = Timestamp::now();
    let mut a = Actuator::open(cloud, cfg, now)?;
    a.set_own_instance(own);
    a.adopt(now).await?;
    // As the agent does at start: lost state waits for today's count from CloudWatch (a
    // read); the step that checks the content source comes after --yes, since a step acts
    // (a periodic sync is due on every slave just re-attached).
    if a.cap_unverified().is_some() {
        let (_, since, _) = a.ledger().day_bounds(now);
        let read = cloudwatch::cap_used_since(
            &aws_for_read,
            &cfg.metrics.namespace_for(&cfg.agent.group),
            &cfg.agent.group,
            since,
            now,
        )
        .await
        .map_err(|e| e.to_string());
        a.cap_read_back(read, now);
    }
    Ok((a, now))
}

/// What the drill will do, said before it does it: a start from the warm pool, or a launch
/// that spends a cap unit (refused when launches wait for `repair` or no unit is left). The cap
/// and whether it is a warm start.
fn plan(
    a: &Actuator<AwsCloud>,
    now: Timestamp,
    say: &mut dyn FnMut(&str),
) -> Result<(crate::cap::CapStatus, bool), DaemonError> {
    if let Some(why) = a.needs_repair() {
        return Err(DaemonError::Start(format!(
            "launches are blocked until `burst-agent repair`: {why}"
        )));
    }
    let cap = a.ledger().status(now);
    let warm = a.pooled() > 0;
    if warm {
        say("drill: starting a slave from the warm pool (no cap unit), then releasing it");
    } else if cap.remaining == 0 {
        return Err(DaemonError::Start(format!(
            "no burst-cap unit left today ({}/{} used): the drill would launch one; run it \
             after the cap resets",
            cap.used, cap.limit
        )));
    } else {
        say(&format!(
            "drill: launching one slave, which spends 1 burst-cap unit of today's {} ({} \
             left, {} after), then releasing it",
            cap.limit,
            cap.remaining,
            cap.remaining - 1
        ));
    }
    Ok((cap, warm))
}

/// Out: a step, then a scale-out of one, and the slave it gave (launched, started, or a new
/// pending one).
async fn scale_out(
    a: &mut Actuator<AwsCloud>,
    cap: crate::cap::CapStatus,
) -> Result<Launch, DaemonError> {
    a.step(Timestamp::now()).await?;
    let before: BTreeMap<String, Phase> = a.slaves().map(|s| (s.id.clone(), s.phase)).collect();
    let decision = Decision::ScaleOut {
        count: 1,
        why: policy::Explanation::bare(cap),
    };
    let started = Instant::now();
    let report = a.apply(&decision, Timestamp::now()).await;
    let id = report
        .launched
        .first()
        .or(report.started.first())
        .cloned()
        .or_else(|| {
            a.slaves()
                .find(|s| {
                    s.phase == Phase::Pending
                        && before.get(&s.id).is_none_or(|p| *p == Phase::Stopped)
                })
                .map(|s| s.id.clone())
        });
    Ok(Launch {
        id,
        report,
        started,
    })
}

/// Why no slave came: held (the reason the agent would give) or refused by EC2.
fn why_nothing_launched(a: &Actuator<AwsCloud>, report: &crate::actuator::Report) -> String {
    a.content_source_missing()
        .map(str::to_string)
        .or_else(|| a.cap_unverified().map(str::to_string))
        .or_else(|| {
            a.sync_broken()
                .map(|t| format!("content sync is broken: {}", t.cause))
        })
        .or_else(|| report.errors.last().cloned())
        .or_else(|| a.recent_errors().last().map(|(_, e)| e.clone()))
        .unwrap_or_else(|| "EC2 launched nothing".into())
}

/// Up: until InService, or until the lifecycle fails it; how it went, and the phase it was
/// last seen in.
async fn wait_until_in_service(
    a: &mut Actuator<AwsCloud>,
    d: &mut Drill,
    id: &str,
    started: Instant,
    say: &mut dyn FnMut(&str),
) -> (Result<(), String>, Watch) {
    let mut w = Watch {
        phase: Phase::Pending,
        since: Instant::now(),
    };
    let up = loop {
        tokio::time::sleep(TICK).await;
        let now = Timestamp::now();
        let r = a.step(now).await;
        let Some(s) = a.slave(id) else {
            break Err(format!("{id} is gone (terminated outside the drill?)"));
        };
        if s.phase != w.phase {
            w.advance(d, id, s.phase, say);
        }
        if let Some(f) = &s.failure {
            break Err(f.clone());
        }
        if r.as_ref()
            .is_ok_and(|r| r.in_service.iter().any(|i| i == id))
            || w.phase == Phase::InService
        {
            break Ok(());
        }
        if started.elapsed() > MOST {
            break Err(format!("not in service after {} s", MOST.as_secs()));
        }
    };
    (up, w)
}

/// The way up's end: the lead time, kept for the forecast, or the phase it failed in and why.
fn record_up(
    a: &mut Actuator<AwsCloud>,
    d: &mut Drill,
    id: &str,
    started: Instant,
    up: Result<(), String>,
    w: &Watch,
    say: &mut dyn FnMut(&str),
) {
    let failed_in = d
        .phases
        .last()
        .map(|(p, _)| p.clone())
        .unwrap_or_else(|| "pending".into());
    match up {
        Ok(()) => {
            let lead = started.elapsed().as_secs() as i64;
            d.lead_secs = Some(lead);
            say(&format!("drill: {id} in service {lead} s after its launch"));
            a.remember(Timestamp::now(), |h| h.record_lead(lead));
        }
        Err(why) => {
            let at = if w.phase == Phase::InService || w.phase == Phase::Terminating {
                failed_in
            } else {
                phase_name(w.phase).to_string()
            };
            say(&format!("drill: FAILED in {at}: {why}"));
            d.failed = Some((at, why));
        }
    }
}

/// Down: release it (a failed one is already on its way out).
async fn release(a: &mut Actuator<AwsCloud>, d: &mut Drill, id: &str, up: &Watch) {
    if d.failed.is_none() {
        d.lap(up.phase, up.since);
        let cap = a.ledger().status(Timestamp::now());
        let decision = Decision::ScaleIn {
            instances: vec![id.to_string()],
            why: policy::Explanation::bare(cap),
        };
        a.apply(&decision, Timestamp::now()).await;
    }
}

/// Down: until it is gone or stopped into the pool (or the drill's time is up); how it ended.
async fn wait_until_down(
    a: &mut Actuator<AwsCloud>,
    d: &mut Drill,
    id: &str,
    say: &mut dyn FnMut(&str),
) -> String {
    let down = Instant::now();
    let mut w = Watch {
        phase: a.slave(id).map_or(Phase::Terminating, |s| s.phase),
        since: Instant::now(),
    };
    loop {
        tokio::time::sleep(TICK).await;
        let _ = a.step(Timestamp::now()).await;
        match a.slave(id).map(|s| s.phase) {
            None => {
                d.lap(w.phase, w.since);
                break "terminated".into();
            }
            Some(Phase::Stopped) => {
                d.lap(w.phase, w.since);
                break POOLED.into();
            }
            Some(p) if p != w.phase => w.advance(d, id, p, say),
            Some(_) => {}
        }
        if down.elapsed() > MOST {
            break format!(
                "still {} after {} s: the agent finishes it at its next start",
                phase_name(w.phase),
                MOST.as_secs()
            );
        }
    }
}

impl Drill {
    /// `phase` is over: its seconds since `since`.
    fn lap(&mut self, phase: Phase, since: Instant) {
        self.phases
            .push((phase_name(phase).into(), since.elapsed().as_secs() as i64));
    }

    /// The phases and their seconds as a table, then how it ended.
    pub fn render(&self) -> String {
        let mut o = String::new();
        if let Some(id) = &self.instance {
            let _ = writeln!(o, "phase         seconds   ({id})");
            for (p, s) in &self.phases {
                let _ = writeln!(o, "{p:<13} {s:>7}");
            }
        }
        if let Some(l) = self.lead_secs {
            let _ = writeln!(
                o,
                "lead time     {l:>7}   launch to InService, kept for the forecast"
            );
        }
        if let Some((phase, why)) = &self.failed {
            let _ = writeln!(o, "FAILED in {phase}: {}", crate::text::printable(why));
        }
        let _ = writeln!(o, "end: {}", self.end);
        o
    }
}
