//! Time that cannot jump (issue 19, part 5), pure: the agent's clock advances by the monotonic
//! clock's elapsed time and follows the wall clock only at a bounded rate. A wall-clock step (an
//! NTP step after a VM resume, an operator's `date -s`) of 30 minutes once read as "content
//! sync under way for more than 1808s", ended a healthy slave and launched a replacement: 2 cap
//! units for a floor of 1. With this clock a step changes durations by at most [`SLEW`] of the
//! time that passes while it is absorbed, so no deadline, cooldown or lead time jumps, and no
//! cap day opens early (the ledger's day is the agent's clock's too).
//!
//! - every reading advances by the monotonic time elapsed since the last one, plus at most
//!   `SLEW ×` that toward the wall clock (never backwards: a step back slows the clock, a step
//!   forward speeds it up, by at most 10 %);
//! - a reading whose wall clock moved more than [`STEP_SECS`] away from the monotonic time
//!   elapsed is a [`Step`]: the caller logs it and tells the operator once;
//! - at start it is the wall clock, except after a restart within the same boot: then it goes
//!   on from the [`Mark`] kept in state.json by the boot-time clock's time since.
//!
//! The wall clock stays the one for what other hosts and AWS share: metric timestamps and
//! CloudWatch's query windows, and the times shown to people. The daemon converts the age of
//! what another host stamped (its wall clock against ours) into the agent's time
//! ([`AgentClock::to_agent`]), and passes the agent's time as every `now` of the core.

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The agent's clock as last written (state.json): a restart within the same boot goes on from
/// it by the monotonic time since, so a restart while the wall clock is wrong neither ends a
/// slave nor opens a cap day early. After a reboot the wall clock is all there is.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mark {
    pub agent: Timestamp,
    /// The kernel's boot id (`/proc/sys/kernel/random/boot_id`).
    pub boot: String,
    /// The boot-time clock (CLOCK_BOOTTIME) then, in seconds.
    pub boottime_secs: f64,
}

/// A wall clock that moves this far from the monotonic time elapsed is a step.
pub const STEP_SECS: i64 = 30;
/// At most this share of the elapsed time is added or taken to follow the wall clock.
pub const SLEW: f64 = 0.1;

#[derive(Clone, Debug)]
pub struct AgentClock {
    now: Timestamp,
    /// The last monotonic reading (time since some fixed point).
    mono: Duration,
    /// The last wall reading.
    wall: Timestamp,
}

/// The wall clock moved this much more (or less) than the monotonic clock between two readings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub secs: i64,
    /// The wall clock after the step.
    pub wall: Timestamp,
    /// The agent's clock at that reading.
    pub agent: Timestamp,
}

impl AgentClock {
    pub fn new(wall: Timestamp, mono: Duration) -> Self {
        AgentClock {
            now: wall,
            mono,
            wall,
        }
    }

    /// At start: from `mark` when it was written in this boot (`mono` is the boot-time clock),
    /// going on by the monotonic time since; else from the wall clock.
    pub fn resume(mark: Option<&Mark>, boot: &str, wall: Timestamp, mono: Duration) -> Self {
        let mut c = AgentClock::new(wall, mono);
        if let Some(m) = mark.filter(|m| m.boot == boot && m.boottime_secs <= mono.as_secs_f64()) {
            let since = SignedDuration::from_secs_f64(mono.as_secs_f64() - m.boottime_secs);
            if let Ok(t) = m.agent.checked_add(since) {
                c.now = t;
            }
        }
        c
    }

    /// What to write down, to [`AgentClock::resume`] from after a restart.
    pub fn mark(&self, boot: &str) -> Mark {
        Mark {
            agent: self.now,
            boot: boot.to_string(),
            boottime_secs: self.mono.as_secs_f64(),
        }
    }

    /// The agent's time now, and the step this reading found, if any.
    pub fn observe(&mut self, wall: Timestamp, mono: Duration) -> (Timestamp, Option<Step>) {
        let elapsed = mono.saturating_sub(self.mono);
        let elapsed_s = SignedDuration::try_from(elapsed).unwrap_or(SignedDuration::MAX);
        let walked = wall.duration_since(self.wall);
        let jump = walked - elapsed_s;
        self.mono = mono;
        self.wall = wall;
        let base = self.now.checked_add(elapsed_s).unwrap_or(self.now);
        // Follow the wall clock at most SLEW of the elapsed time, either way.
        let off = wall.duration_since(base).as_secs_f64();
        let most = elapsed.as_secs_f64() * SLEW;
        let take = off.clamp(-most, most);
        let next = base
            .checked_add(SignedDuration::from_secs_f64(take))
            .unwrap_or(base);
        // Never backwards.
        self.now = next.max(self.now);
        let step = (jump.as_secs().abs() > STEP_SECS).then(|| Step {
            secs: jump.as_secs(),
            wall,
            agent: self.now,
        });
        (self.now, step)
    }

    /// `at`, stamped by a wall clock (this host's or another's), as the agent's time: its age by
    /// the wall clock, counted back from the agent's now. A timestamp from the future is now.
    pub fn to_agent(&self, at: Timestamp) -> Timestamp {
        let age = self.wall.duration_since(at).max(SignedDuration::ZERO);
        self.now.checked_sub(age).unwrap_or(self.now)
    }

    /// The last wall reading.
    pub fn wall(&self) -> Timestamp {
        self.wall
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn a_step_forward_is_reported_and_absorbed_at_a_tenth_of_the_time_that_passes() {
        let mut c = AgentClock::new(t(0), secs(0));
        assert_eq!(c.observe(t(10), secs(10)), (t(10), None));
        // 30 minutes forward between two 10 s ticks.
        let (now, step) = c.observe(t(20 + 1800), secs(20));
        assert_eq!(step.map(|s| s.secs), Some(1800));
        // 10 s passed; at most 1 s more of the step.
        assert_eq!(now, t(21));
        // A deadline measured in agent time sees 11 s, not 1811 s.
        assert_eq!(now.duration_since(t(10)).as_secs(), 11);
        // It catches up, never faster than 10 %: 1799 s left after 17,990 s of ticks.
        let mut now = now;
        for k in 1..=1799 {
            now = c.observe(t(20 + 1800 + 10 * k), secs(20 + 10 * k as u64)).0;
        }
        assert_eq!(now, t(20 + 1800 + 17_990));
        assert!(c.observe(t(20 + 1800 + 18_000), secs(18_010)).1.is_none());
    }

    #[test]
    fn a_step_back_never_turns_the_clock_back() {
        let mut c = AgentClock::new(t(0), secs(0));
        c.observe(t(100), secs(100));
        let (now, step) = c.observe(t(110 - 3600), secs(110));
        assert_eq!(step.map(|s| s.secs), Some(-3600));
        // 10 s passed: 9 s of them count (slowed by 10 %), not -3590.
        assert_eq!(now, t(109));
        // A cooldown of 300 s measured from t(100) ends after about 333 s of real time, not
        // an hour later.
        let mut m = 110;
        let mut now = now;
        while now < t(400) {
            m += 10;
            now = c.observe(t(m as i64 - 3600), secs(m)).0;
        }
        assert!(m <= 100 + 340, "the cooldown held for {m} s");
    }

    #[test]
    fn what_another_host_stamped_keeps_its_wall_clock_age() {
        let mut c = AgentClock::new(t(0), secs(0));
        c.observe(t(10), secs(10));
        c.observe(t(20 + 1800), secs(20));
        // A slave's datapoint stamped 5 s ago by the (right) wall clock is 5 s old.
        assert_eq!(c.to_agent(t(15 + 1800)), t(21 - 5));
        // One from the future is now.
        assert_eq!(c.to_agent(t(99_999)), t(21));
    }

    #[test]
    fn a_restart_in_the_same_boot_goes_on_from_the_mark_not_the_wrong_wall_clock() {
        let mut c = AgentClock::new(t(0), secs(100));
        c.observe(t(10), secs(110));
        // The wall clock steps 3 h forward, the agent writes its mark and dies.
        c.observe(t(20 + 10_800), secs(120));
        let m = c.mark("boot-1");
        // Back 30 s later (boot-time clock 150): 30 s on from the mark, not the wall's +3 h.
        let r = AgentClock::resume(Some(&m), "boot-1", t(50 + 10_800), secs(150));
        let (now, _) = r.clone().observe(t(50 + 10_800), secs(150));
        assert!(now <= t(21 + 30 + 3), "{now}");
        // After a reboot the mark says nothing.
        let fresh = AgentClock::resume(Some(&m), "boot-2", t(50 + 10_800), secs(5));
        assert_eq!(
            fresh.clone().observe(t(50 + 10_800), secs(5)).0,
            t(50 + 10_800)
        );
    }

    #[test]
    fn a_vm_pause_is_a_forward_step() {
        // The monotonic clock stood still for 20 minutes while the wall clock ran on.
        let mut c = AgentClock::new(t(0), secs(0));
        let (now, step) = c.observe(t(1200), secs(1));
        assert!(step.is_some());
        assert!(now <= t(2), "{now}");
    }
}
