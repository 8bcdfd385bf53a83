//! The brake on a content sync that keeps failing the same way (issue 19, part 3): a circuit
//! breaker, pure (no clock, no I/O). A slave image without the master's ssh key fails every
//! `pre_register` with the same words; without a brake the agent spent the whole day's cap on
//! slaves that could never serve.
//!
//! - [`TRIP_AFTER`] failures in a row with the same cause ([`cause_of`]: the hook's `fix:` when
//!   it has one, else its words with the instance-specific parts masked) trip it; a timeout is
//!   one slow slave and never trips it (it breaks the run);
//! - tripped, no launch spends a cap unit, except one trial after a back-off ([`BACKOFF_SECS`],
//!   doubling), and only while the cause has spent fewer than [`UNITS_PER_CAUSE_PER_DAY`] today;
//!   a warm slave the day already counts is free and may still be started;
//! - any `pre_register` that succeeds releases it, and so do a reload and `burst-agent resume`
//!   (the operator fixed the cause); waiting alone never does.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// Failures in a row with the same cause that trip the brake.
pub const TRIP_AFTER: u32 = 2;
/// The first back-off before a trial launch, and the longest (each failed trial doubles it).
pub const BACKOFF_SECS: (i64, i64) = (15 * 60, 2 * 3600);
/// Cap units one cause may spend in a cap day, trials included.
pub const UNITS_PER_CAUSE_PER_DAY: u32 = 2;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncBrake {
    /// The cause of the last `pre_register` failures in a row, and how many.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    streak: Option<(String, u32)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tripped: Option<Tripped>,
    /// Cap units spent on slaves whose sync failed: (cap day, cause, units).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    spent: Vec<(String, String, u32)>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tripped {
    /// What the failures had in common (the fix, when the hook's words name one).
    pub cause: String,
    /// The last failure as the hook reported it.
    pub error: String,
    pub since: Timestamp,
    /// No trial launch before then.
    pub next_trial: Timestamp,
    pub backoff_secs: i64,
    /// The slave launched as the trial, while its sync is under way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trial: Option<String>,
}

/// What the brake allows now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gate {
    Open,
    /// One trial launch (a cap unit) may go.
    Trial,
    /// No launch spends a cap unit.
    Closed,
}

/// What a recorded result changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    None,
    Tripped(Tripped),
    /// The trial failed too: the next one waits longer.
    TrialFailed(Tripped),
    Released {
        cause: String,
    },
}

/// The cause a failed `pre_register` names, to tell one broken set-up from bad luck: its `fix:`
/// (the hook runner's diagnosis of ssh's and rsync's words) when there is one, else the error,
/// with digits and instance ids masked, so the same failure on two slaves reads the same.
/// `None` for the runner's own timeout (the hook was killed): one slow slave, not a broken
/// set-up. An ssh `Connection timed out` is a failure like any other (a security group that
/// blocks port 22 fails every slave the same way).
pub(crate) fn cause_of(error: &str) -> Option<String> {
    if error.starts_with("still running after") {
        return None;
    }
    // The fix names the slave's address or id too: masked like the rest.
    let text = error.split_once("; fix: ").map_or(error, |(_, fix)| fix);
    let masked: Vec<String> = text
        .split_whitespace()
        .map(|w| {
            if w.starts_with("i-") || w.starts_with("ip-") {
                "<host>".to_string()
            } else {
                // A run of digits is one '#': 10.0.1.7 and 10.0.2.19 read the same.
                let mut out = String::with_capacity(w.len());
                for c in w.chars() {
                    if !c.is_ascii_digit() {
                        out.push(c);
                    } else if !out.ends_with('#') {
                        out.push('#');
                    }
                }
                out
            }
        })
        .collect();
    Some(masked.join(" "))
}

impl SyncBrake {
    /// A `pre_register` of slave `id` (its instance id, and its launch intent's) ended. `paid`:
    /// the slave cost a cap unit (a launch, not a warm start); `day`: the cap's local day.
    pub fn record(
        &mut self,
        id: &[&str],
        result: Result<(), &str>,
        paid: bool,
        day: &str,
        now: Timestamp,
    ) -> Change {
        let error = match result {
            Ok(()) => {
                self.streak = None;
                // Only a launch like the ones that failed (or the trial) proves the cause gone:
                // a warm slave from the pool may sync where a new one cannot.
                let trial = self
                    .tripped
                    .as_ref()
                    .and_then(|t| t.trial.as_deref())
                    .is_some_and(|x| id.contains(&x));
                if !(paid || trial) {
                    return Change::None;
                }
                return match self.tripped.take() {
                    Some(t) => Change::Released { cause: t.cause },
                    None => Change::None,
                };
            }
            Err(e) => e,
        };
        let Some(cause) = cause_of(error) else {
            self.streak = None;
            if let Some(t) = self
                .tripped
                .as_mut()
                .filter(|t| t.trial.as_deref().is_some_and(|x| id.contains(&x)))
            {
                t.trial = None;
            }
            return Change::None;
        };
        if paid {
            self.spend(day, &cause);
        }
        if let Some(t) = self.tripped.as_mut() {
            if t.trial.as_deref().is_some_and(|x| id.contains(&x)) {
                t.trial = None;
                t.error = error.to_string();
                return Change::TrialFailed(t.clone());
            }
            return Change::None;
        }
        let count = match &self.streak {
            Some((c, n)) if *c == cause => n + 1,
            _ => 1,
        };
        self.streak = Some((cause.clone(), count));
        if count < TRIP_AFTER {
            return Change::None;
        }
        let t = Tripped {
            cause,
            error: error.to_string(),
            since: now,
            next_trial: at(now, BACKOFF_SECS.0),
            backoff_secs: BACKOFF_SECS.0,
            trial: None,
        };
        self.tripped = Some(t.clone());
        Change::Tripped(t)
    }

    fn spend(&mut self, day: &str, cause: &str) {
        self.spent.retain(|(d, _, _)| d == day);
        match self.spent.iter_mut().find(|(_, c, _)| c == cause) {
            Some(s) => s.2 += 1,
            None => self.spent.push((day.to_string(), cause.to_string(), 1)),
        }
    }

    /// Units the cause has spent in `day`.
    pub fn spent(&self, day: &str, cause: &str) -> u32 {
        self.spent
            .iter()
            .filter(|(d, c, _)| d == day && c == cause)
            .map(|s| s.2)
            .sum()
    }

    /// What may launch now.
    pub fn gate(&self, day: &str, now: Timestamp) -> Gate {
        match &self.tripped {
            None => Gate::Open,
            Some(t)
                if t.trial.is_none()
                    && now >= t.next_trial
                    && self.spent(day, &t.cause) < UNITS_PER_CAUSE_PER_DAY =>
            {
                Gate::Trial
            }
            Some(_) => Gate::Closed,
        }
    }

    /// The trial launch goes out (`id`: its launch intent, written before RunInstances): the
    /// next one, if this fails too, waits twice as long.
    pub fn trial_started(&mut self, id: &str, now: Timestamp) {
        if let Some(t) = self.tripped.as_mut() {
            t.backoff_secs = (t.backoff_secs * 2).min(BACKOFF_SECS.1);
            t.next_trial = at(now, t.backoff_secs);
            t.trial = Some(id.to_string());
        }
    }

    /// The trial is gone before its sync ended (its launch failed, or its slave was ended):
    /// `live` says whether a launch intent still has a slave or an open call.
    pub fn trial_gone(&mut self, live: impl Fn(&str) -> bool) {
        if let Some(t) = self.tripped.as_mut() {
            if t.trial.as_deref().is_some_and(|id| !live(id)) {
                t.trial = None;
            }
        }
    }

    /// The operator fixed the cause (a reload, `burst-agent resume`): launches go again.
    pub fn release(&mut self) -> Option<Tripped> {
        self.streak = None;
        self.tripped.take()
    }
}

fn at(t: Timestamp, secs: i64) -> Timestamp {
    Timestamp::from_second(t.as_second().saturating_add(secs)).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).unwrap()
    }

    const KEY: &str = "exited with exit status: 255; stderr: burst-agent@10.0.1.7: Permission \
                       denied (publickey). | rsync: connection unexpectedly closed; fix: the \
                       slave image lacks the master's ssh key";

    #[test]
    fn the_same_cause_twice_trips_it_and_only_a_success_or_the_operator_releases_it() {
        let mut b = SyncBrake::default();
        let day = "2026-12-02";
        assert_eq!(b.record(&["i-1"], Err(KEY), true, day, t(0)), Change::None);
        assert_eq!(b.gate(day, t(0)), Gate::Open);
        let Change::Tripped(tr) = b.record(&["i-2"], Err(KEY), true, day, t(60)) else {
            panic!("not tripped");
        };
        assert_eq!(tr.cause, "the slave image lacks the master's ssh key");
        assert_eq!(
            cause_of("exited; fix: add the key to i-0abc at 10.0.1.7"),
            cause_of("exited; fix: add the key to i-0def at 10.0.2.19"),
        );
        assert_eq!(b.gate(day, t(61)), Gate::Closed);
        // Waiting is no release: at the back-off the cause has spent its 2 units today.
        assert_eq!(b.gate(day, t(60 + 15 * 60)), Gate::Closed);
        assert_eq!(b.gate(day, t(10 * 3600)), Gate::Closed);
        // The next cap day has room for one trial, after the back-off.
        let next = "2026-12-03";
        assert_eq!(b.gate(next, t(60 + 15 * 60 - 1)), Gate::Closed);
        assert_eq!(b.gate(next, t(60 + 15 * 60)), Gate::Trial);
        b.trial_started("i-3", t(1000));
        assert_eq!(b.gate(next, t(1001)), Gate::Closed, "one trial at a time");
        assert!(matches!(
            b.record(&["i-3"], Err(KEY), true, next, t(1100)),
            Change::TrialFailed(_)
        ));
        // Doubled: 30 minutes after the trial started.
        assert_eq!(b.gate(next, t(1000 + 1799)), Gate::Closed);
        assert_eq!(b.gate(next, t(1000 + 1800)), Gate::Trial);
        b.trial_started("i-4", t(3000));
        assert_eq!(
            b.record(&["i-4"], Ok(()), true, next, t(3100)),
            Change::Released {
                cause: tr.cause.clone()
            }
        );
        assert_eq!(b.gate(next, t(3101)), Gate::Open);
        // The operator's release.
        b.record(&["i-5"], Err(KEY), true, next, t(4000));
        b.record(&["i-6"], Err(KEY), true, next, t(4001));
        assert_eq!(b.gate(next, t(4002)), Gate::Closed);
        assert!(b.release().is_some());
        assert_eq!(b.gate(next, t(4002)), Gate::Open);
    }

    #[test]
    fn a_different_failure_or_a_timeout_does_not_trip_it() {
        let mut b = SyncBrake::default();
        let day = "d";
        b.record(&["i-1"], Err(KEY), true, day, t(0));
        b.record(
            &["i-2"],
            Err("still running after 300s; killed with its process group"),
            true,
            day,
            t(1),
        );
        b.record(&["i-3"], Err(KEY), true, day, t(2));
        assert_eq!(b.gate(day, t(3)), Gate::Open, "a timeout breaks the run");
        b.record(
            &["i-4"],
            Err("exited with exit status: 23"),
            true,
            day,
            t(4),
        );
        assert_eq!(b.gate(day, t(5)), Gate::Open, "another cause breaks it too");
        // The same words on two slaves, told apart only by their addresses, are one cause.
        b.record(
            &["i-5"],
            Err("exited with exit status: 12; stderr: rsync error at 10.0.1.7"),
            true,
            day,
            t(6),
        );
        assert!(matches!(
            b.record(
                &["i-6"],
                Err("exited with exit status: 12; stderr: rsync error at 10.0.2.9"),
                true,
                day,
                t(7),
            ),
            Change::Tripped(_)
        ));
    }

    #[test]
    fn an_ssh_timeout_is_a_cause_the_runners_own_timeout_is_not() {
        let ssh = "exited with exit status: 255; stderr: ssh: connect to host 10.0.1.7 port 22: \
                   Connection timed out; fix: 10.0.1.7 does not answer on ssh";
        assert!(cause_of(ssh).is_some());
        assert_eq!(
            cause_of("still running after 300s; killed with its process group"),
            None
        );
        let mut b = SyncBrake::default();
        b.record(&["i-1"], Err(ssh), true, "d", t(0));
        assert!(matches!(
            b.record(
                &["i-2"],
                Err(&ssh.replace("10.0.1.7", "10.0.2.9")),
                true,
                "d",
                t(1)
            ),
            Change::Tripped(_)
        ));
        // A warm slave that syncs proves nothing of new launches; a launch that syncs does.
        assert_eq!(b.record(&["i-3"], Ok(()), false, "d", t(2)), Change::None);
        assert_eq!(b.gate("d", t(3)), Gate::Closed);
        assert!(matches!(
            b.record(&["i-4"], Ok(()), true, "d", t(4)),
            Change::Released { .. }
        ));
    }

    #[test]
    fn a_trial_that_vanishes_frees_the_next_one_after_its_back_off() {
        let mut b = SyncBrake::default();
        b.record(&["i-1"], Err(KEY), false, "d", t(0));
        b.record(&["i-2"], Err(KEY), false, "d", t(1));
        // Warm slaves cost no unit: the cause has spent nothing, so a trial may go.
        assert_eq!(b.gate("d", t(1 + 900)), Gate::Trial);
        b.trial_started("i-3", t(1000));
        b.trial_gone(|_| false);
        assert_eq!(b.gate("d", t(1000 + 1799)), Gate::Closed);
        assert_eq!(b.gate("d", t(1000 + 1800)), Gate::Trial);
    }
}
