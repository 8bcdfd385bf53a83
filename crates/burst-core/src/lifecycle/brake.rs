//! The brake on content syncs (issue 19, part 3; issue 28, part 4): a circuit breaker with a
//! proof, pure (no clock, no I/O). A slave image without the master's ssh key fails every
//! `pre_register` with the same words, and one whose sync always runs past its timeout fails
//! every one slowly; without a brake the agent spent the whole day's cap on slaves that could
//! never serve.
//!
//! - **Proof before speed.** A sync is proven when one with the same hook config, slave image
//!   and ssh key (the caller's fingerprint) succeeded within [`PROOF_SECS`]: a launch's
//!   `pre_register`, or a periodic `content_sync` to a serving slave. A failure or a timeout of
//!   either revokes it. Without a proof at most [`UNPROVEN_IN_FLIGHT`] paid slaves sync at once
//!   ([`Gate::Unproven`]); with one, a burst launches at full speed.
//! - **Tripping.** The same cause ([`cause_of`]: the hook's `fix:` when it has one, else what
//!   rsync's or ssh's exit code says, else its words with what varies masked) on
//!   [`TRIP_AFTER`] different slaves in a row trips it. A timeout is a cause like any other. One
//!   slave failing twice (a retry, its content check) is one host's bad luck: it counts once
//!   and charges its cause one unit.
//! - **Tripped**, no launch spends a cap unit, except one trial after a back-off
//!   ([`BACKOFF_SECS`], doubling), and only while the cause has spent fewer than
//!   [`UNITS_PER_CAUSE_PER_DAY`] today; a warm slave the day already counts is free and may
//!   still be started.
//! - **Release.** A paid `pre_register` (or the trial's) that succeeds releases it; so does
//!   `burst-agent resume`, and a reload whose fingerprint differs from the one the brake
//!   tripped under (the hook, the image or the key changed). Waiting alone never does.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// Failures with the same cause, on as many different slaves in a row, that trip the brake.
pub const TRIP_AFTER: u32 = 2;
/// The first back-off before a trial launch, and the longest (each failed trial doubles it).
pub const BACKOFF_SECS: (i64, i64) = (15 * 60, 2 * 3600);
/// Cap units one cause may spend in a cap day, trials included.
pub const UNITS_PER_CAUSE_PER_DAY: u32 = 2;
/// How long a successful sync proves the content path for launches that follow.
pub const PROOF_SECS: i64 = 86_400;
/// Paid slaves that may sync at once while no sync is proven.
pub const UNPROVEN_IN_FLIGHT: u32 = 2;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncBrake {
    /// The cause of the last `pre_register` failures in a row, and on how many slaves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    streak: Option<(String, u32)>,
    /// Since the last sync that went through: each cause, and the slaves it failed on (one
    /// each). Causes that alternate (ssh's 255, then a timeout) do not reset each other.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    failing: Vec<(String, Vec<String>)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tripped: Option<Tripped>,
    /// Cap units spent on slaves whose sync failed: (cap day, cause, units).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    spent: Vec<(String, String, u32)>,
    /// The slaves a failure charged today: (cap day, slave), so a second failure of one slave
    /// charges nothing more.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    charged: Vec<(String, String)>,
    /// The last sync that proved the content path, if still standing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof: Option<Proof>,
}

/// A sync that went through: with which fingerprint, when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Proof {
    pub fingerprint: String,
    pub at: Timestamp,
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
    /// The hook, image and key it tripped under: a reload that changes none of them is no fix.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub fingerprint: String,
}

/// What the brake allows now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gate {
    Open,
    /// No sync is proven: this many more paid launches may go until one succeeds.
    Unproven {
        room: u32,
    },
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

/// What rsync's and ssh's exit codes say, where they say it (rsync(1) EXIT VALUES, ssh(1)).
fn exit_meaning(code: i64) -> Option<&'static str> {
    Some(match code {
        255 => "ssh could not connect or log in to the slave (exit 255)",
        5 => "rsync could not start its protocol on the slave (exit 5)",
        10 => "rsync's socket failed (exit 10)",
        11 => "rsync could not read or write a file (exit 11)",
        12 => "rsync's data stream broke (exit 12)",
        23 => "rsync transferred part of the content (exit 23)",
        30 => "rsync timed out sending or receiving data (exit 30)",
        35 => "rsync timed out waiting for the slave (exit 35)",
        _ => return None,
    })
}

/// One word with what varies between slaves and runs masked: instance ids and host names,
/// UUIDs and long hex, temp names (`.index.html.Ab3xYz`, `tmp.XXXXXXXXXX`), and every run of
/// digits (addresses, ports, sizes, pids).
fn mask_word(w: &str) -> String {
    if w.starts_with("i-") || w.starts_with("ip-") {
        return "<host>".to_string();
    }
    let bare = w.trim_matches(|c: char| "\"'`()[]{}<>,;".contains(c));
    let segments: Vec<&str> = bare.split(['/', '.', '-', '_', ':']).collect();
    let last = segments.len().saturating_sub(1);
    let dot_file = bare.starts_with('.') || bare.contains("/.") || bare.contains("tmp.");
    let mut varying = false;
    for (n, seg) in segments.iter().enumerate() {
        let alnum = !seg.is_empty() && seg.chars().all(|c| c.is_ascii_alphanumeric());
        let digits = seg.chars().any(|c| c.is_ascii_digit());
        let letters = seg.chars().any(|c| c.is_ascii_alphabetic());
        let hex = seg.len() >= 8 && digits && seg.chars().all(|c| c.is_ascii_hexdigit());
        // mkstemp's XXXXXX: the last dotted part of a dot-file, or after `tmp.`.
        let temp = n == last && n > 0 && alnum && (6..=12).contains(&seg.len()) && dot_file;
        if hex || temp || (alnum && digits && letters && seg.len() >= 6) {
            varying = true;
        }
    }
    if varying {
        return "<var>".to_string();
    }
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

/// The cause a failed `pre_register` names, to tell one broken set-up from bad luck: its `fix:`
/// (the hook runner's diagnosis of ssh's and rsync's words) when there is one, else what its
/// exit code means, else its words; what varies from slave to slave is masked, so the same
/// failure on two slaves reads the same. The runner's own timeout is a cause too: a sync that
/// outgrew its timeout fails every slave the same slow way.
pub(crate) fn cause_of(error: &str) -> String {
    if error.starts_with("still running after") {
        return "the sync ran past its timeout (hooks.pre_register.timeout)".to_string();
    }
    let text = match error.split_once("; fix: ") {
        Some((_, fix)) => fix,
        None => {
            let code = error
                .split_once("exit status: ")
                .and_then(|(_, rest)| rest.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|n| n.parse::<i64>().ok());
            if let Some(m) = code.and_then(exit_meaning) {
                return m.to_string();
            }
            error
        }
    };
    text.split_whitespace()
        .map(mask_word)
        .collect::<Vec<_>>()
        .join(" ")
}

impl SyncBrake {
    /// A `pre_register` of slave `id` (its instance id, and its launch intent's) ended. `paid`:
    /// the slave cost a cap unit (a launch, not a warm start); `day`: the cap's local day;
    /// `fingerprint`: the hook config, slave image and ssh key it ran with.
    pub fn record(
        &mut self,
        id: &[&str],
        result: Result<(), &str>,
        paid: bool,
        day: &str,
        now: Timestamp,
        fingerprint: &str,
    ) -> Change {
        let host = id.first().copied().unwrap_or("");
        let error = match result {
            Ok(()) => {
                self.streak = None;
                self.failing.clear();
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
                self.prove(fingerprint, now);
                return match self.tripped.take() {
                    Some(t) => Change::Released { cause: t.cause },
                    None => Change::None,
                };
            }
            Err(e) => e,
        };
        self.proof = None;
        let cause = cause_of(error);
        // A failed trial is charged to the cause it was a trial of, whatever it says now: the
        // gate counts that cause's units.
        let trial_of = self
            .tripped
            .as_ref()
            .filter(|t| t.trial.as_deref().is_some_and(|x| id.contains(&x)))
            .map(|t| t.cause.clone());
        let first_failure = !self.charged.iter().any(|(d, h)| d == day && h == host);
        if paid && first_failure {
            self.charged.retain(|(d, _)| d == day);
            self.charged.push((day.to_string(), host.to_string()));
            let charged = trial_of.clone().unwrap_or_else(|| cause.clone());
            self.spend(day, &charged);
        }
        if let Some(t) = self.tripped.as_mut() {
            if trial_of.is_some() {
                t.trial = None;
                t.error = error.to_string();
                return Change::TrialFailed(t.clone());
            }
            return Change::None;
        }
        let slot = match self.failing.iter().position(|(c, _)| *c == cause) {
            Some(n) => n,
            None => {
                self.failing.push((cause.clone(), Vec::new()));
                self.failing.len() - 1
            }
        };
        let hosts = &mut self.failing[slot].1;
        if !hosts.iter().any(|h| h == host) {
            hosts.push(host.to_string());
        }
        let count = u32::try_from(hosts.len()).unwrap_or(u32::MAX);
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
            fingerprint: fingerprint.to_string(),
        };
        self.tripped = Some(t.clone());
        Change::Tripped(t)
    }

    /// A sync went through with `fingerprint` (a paid `pre_register`, a periodic
    /// `content_sync` to a serving slave): launches that follow may go at full speed.
    pub fn prove(&mut self, fingerprint: &str, now: Timestamp) {
        self.proof = Some(Proof {
            fingerprint: fingerprint.to_string(),
            at: now,
        });
    }

    /// A periodic `content_sync` failed or ran past its timeout: the path is no longer proven.
    pub fn revoke(&mut self) {
        self.proof = None;
    }

    /// Whether a sync with `fingerprint` succeeded within [`PROOF_SECS`] of `now`.
    pub fn proven(&self, fingerprint: &str, now: Timestamp) -> bool {
        self.proof.as_ref().is_some_and(|p| {
            p.fingerprint == fingerprint
                && p.at <= now
                && now.as_second() - p.at.as_second() < PROOF_SECS
        })
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

    /// What may launch now: `fingerprint` is what a launch would sync with, `in_flight` the
    /// paid slaves (and launches) whose first sync has not ended yet.
    pub fn gate(&self, day: &str, now: Timestamp, fingerprint: &str, in_flight: u32) -> Gate {
        match &self.tripped {
            None if self.proven(fingerprint, now) => Gate::Open,
            None => Gate::Unproven {
                room: UNPROVEN_IN_FLIGHT.saturating_sub(in_flight),
            },
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

    /// The operator fixed the cause (`burst-agent resume`): launches go again.
    pub fn release(&mut self) -> Option<Tripped> {
        self.streak = None;
        self.failing.clear();
        self.tripped.take()
    }

    /// A reload: releases the brake only when the hook, the image or the key changed since it
    /// tripped (`fingerprint` is the reloaded one); an unchanged file fixes nothing. `Err`: the
    /// brake stays on, with its cause.
    pub fn reload(&mut self, fingerprint: &str) -> Result<Option<Tripped>, String> {
        match &self.tripped {
            Some(t) if !t.fingerprint.is_empty() && t.fingerprint == fingerprint => {
                Err(t.cause.clone())
            }
            _ => Ok(self.release()),
        }
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

    const FP: &str = "hook-image-key";

    const KEY: &str = "exited with exit status: 255; stderr: burst-agent@10.0.1.7: Permission \
                       denied (publickey). | rsync: connection unexpectedly closed; fix: the \
                       slave image lacks the master's ssh key";

    const TIMEOUT: &str = "still running after 300s; killed with its process group";

    #[test]
    fn the_same_cause_on_two_slaves_trips_it_and_only_a_success_or_the_operator_releases_it() {
        let mut b = SyncBrake::default();
        let day = "2026-12-02";
        b.prove(FP, t(-1));
        assert_eq!(
            b.record(&["i-1"], Err(KEY), true, day, t(0), FP),
            Change::None
        );
        let Change::Tripped(tr) = b.record(&["i-2"], Err(KEY), true, day, t(60), FP) else {
            panic!("not tripped");
        };
        assert_eq!(tr.cause, "the slave image lacks the master's ssh key");
        assert_eq!(
            cause_of("exited; fix: add the key to i-0abc at 10.0.1.7"),
            cause_of("exited; fix: add the key to i-0def at 10.0.2.19"),
        );
        assert_eq!(b.gate(day, t(61), FP, 0), Gate::Closed);
        // Waiting is no release: at the back-off the cause has spent its 2 units today.
        assert_eq!(b.gate(day, t(60 + 15 * 60), FP, 0), Gate::Closed);
        assert_eq!(b.gate(day, t(10 * 3600), FP, 0), Gate::Closed);
        // The next cap day has room for one trial, after the back-off.
        let next = "2026-12-03";
        assert_eq!(b.gate(next, t(60 + 15 * 60 - 1), FP, 0), Gate::Closed);
        assert_eq!(b.gate(next, t(60 + 15 * 60), FP, 0), Gate::Trial);
        b.trial_started("i-3", t(1000));
        assert_eq!(
            b.gate(next, t(1001), FP, 0),
            Gate::Closed,
            "one trial at a time"
        );
        assert!(matches!(
            b.record(&["i-3"], Err(KEY), true, next, t(1100), FP),
            Change::TrialFailed(_)
        ));
        // Doubled: 30 minutes after the trial started.
        assert_eq!(b.gate(next, t(1000 + 1799), FP, 0), Gate::Closed);
        assert_eq!(b.gate(next, t(1000 + 1800), FP, 0), Gate::Trial);
        b.trial_started("i-4", t(3000));
        assert_eq!(
            b.record(&["i-4"], Ok(()), true, next, t(3100), FP),
            Change::Released {
                cause: tr.cause.clone()
            }
        );
        // The trial's success is the proof too: full speed.
        assert_eq!(b.gate(next, t(3101), FP, 0), Gate::Open);
        // The operator's release.
        b.record(&["i-5"], Err(KEY), true, next, t(4000), FP);
        b.record(&["i-6"], Err(KEY), true, next, t(4001), FP);
        assert_eq!(b.gate(next, t(4002), FP, 0), Gate::Closed);
        assert!(b.release().is_some());
        // Released, but the failures revoked the proof: two at a time until one syncs.
        assert_eq!(b.gate(next, t(4002), FP, 0), Gate::Unproven { room: 2 });
    }

    #[test]
    fn a_cause_counts_its_slaves_since_the_last_success_and_a_timeout_is_a_cause_like_any_other() {
        let mut b = SyncBrake::default();
        let day = "d";
        // Alternating causes do not reset each other: ssh's failure on a second slave trips it.
        b.record(&["i-1"], Err(KEY), true, day, t(0), FP);
        b.record(&["i-2"], Err(TIMEOUT), true, day, t(1), FP);
        assert!(b.tripped.is_none());
        let Change::Tripped(tr) = b.record(&["i-3"], Err(KEY), true, day, t(2), FP) else {
            panic!("the same cause on two slaves, with another between, did not trip it");
        };
        assert_eq!(tr.cause, "the slave image lacks the master's ssh key");
        // A sync that went through in between starts the count again.
        let mut b = SyncBrake::default();
        b.record(&["i-1"], Err(KEY), true, day, t(0), FP);
        b.record(&["i-2"], Ok(()), true, day, t(1), FP);
        b.record(&["i-3"], Err(KEY), true, day, t(2), FP);
        assert!(b.tripped.is_none(), "a success between the failures");
        // A sync that outgrew its timeout fails every slave the same slow way.
        let mut b = SyncBrake::default();
        b.record(&["i-4"], Err(TIMEOUT), true, day, t(3), FP);
        let Change::Tripped(tr) = b.record(
            &["i-5"],
            Err(&TIMEOUT.replace("300", "301")),
            true,
            day,
            t(4),
            FP,
        ) else {
            panic!("two timeouts on two slaves did not trip it");
        };
        assert!(tr.cause.contains("timeout"), "{}", tr.cause);
        assert_eq!(b.spent(day, &tr.cause), 2, "i-4 and i-5 each cost a unit");
        // A trial that fails another way is charged to the cause it was a trial of.
        let next = "e";
        b.trial_started("i-6", t(5000));
        b.record(&["i-6"], Err(KEY), true, next, t(5100), FP);
        assert_eq!(b.spent(next, &tr.cause), 1);
        assert_eq!(b.spent(next, &cause_of(KEY)), 0);
        // The same words on two slaves, told apart only by their addresses, are one cause.
        let mut b = SyncBrake::default();
        b.record(
            &["i-5"],
            Err("exited with exit status: 2; stderr: protocol error at 10.0.1.7"),
            true,
            day,
            t(6),
            FP,
        );
        assert!(matches!(
            b.record(
                &["i-6"],
                Err("exited with exit status: 2; stderr: protocol error at 10.0.2.9"),
                true,
                day,
                t(7),
                FP,
            ),
            Change::Tripped(_)
        ));
    }

    #[test]
    fn one_slave_failing_twice_is_one_hosts_bad_luck_and_one_unit() {
        let ssh = "exited with exit status: 255; stderr: ssh: connect to host 10.0.1.7 port 22: \
                   Connection timed out; fix: 10.0.1.7 does not answer on ssh";
        let mut b = SyncBrake::default();
        // Its pre_register, then its content check, fail the same way: one host, one unit.
        assert_eq!(
            b.record(&["i-1", "x1"], Err(ssh), true, "d", t(0), FP),
            Change::None
        );
        assert_eq!(
            b.record(&["i-1", "x1"], Err(ssh), true, "d", t(1), FP),
            Change::None
        );
        assert!(b.tripped.is_none());
        assert_eq!(b.spent("d", &cause_of(ssh)), 1);
        // A second slave the same way is a broken set-up.
        assert!(matches!(
            b.record(
                &["i-2", "x2"],
                Err(&ssh.replace("10.0.1.7", "10.0.2.9")),
                true,
                "d",
                t(2),
                FP
            ),
            Change::Tripped(_)
        ));
        assert_eq!(b.spent("d", &cause_of(ssh)), 2);
        // A warm slave that syncs proves nothing of new launches; a launch that syncs does.
        assert_eq!(
            b.record(&["i-3"], Ok(()), false, "d", t(3), FP),
            Change::None
        );
        assert_eq!(b.gate("d", t(4), FP, 0), Gate::Closed);
        assert!(matches!(
            b.record(&["i-4"], Ok(()), true, "d", t(5), FP),
            Change::Released { .. }
        ));
    }

    #[test]
    fn the_cause_comes_from_the_exit_code_and_words_that_vary_are_masked() {
        // rsync's and ssh's exit codes say the cause where the words differ.
        let a = cause_of(
            "exited with exit status: 30; stderr: [sender] io timeout after 60 seconds -- exiting",
        );
        assert_eq!(a, "rsync timed out sending or receiving data (exit 30)");
        assert_eq!(
            cause_of("exited with exit status: 255; stderr: kex_exchange_identification: read: Connection reset by peer"),
            cause_of("exited with exit status: 255; stderr: Connection closed by 10.0.1.9 port 22"),
        );
        // Temp names, UUIDs and hex differ from run to run; the failure does not.
        assert_eq!(
            cause_of("exited with exit status: 3; stderr: mkstemp \"/var/www/.index.html.Ab3xYz\" failed: No space left on device (28)"),
            cause_of("exited with exit status: 3; stderr: mkstemp \"/var/www/.index.html.QwertY\" failed: No space left on device (28)"),
        );
        assert_eq!(
            cause_of("exited with exit status: 1; stderr: sync 3f2b8c1e-9a4d-4e1b-8f7a-2c6d9e0b1a3f refused, token deadbeef01"),
            cause_of("exited with exit status: 1; stderr: sync 9e0b1a3f-2c6d-4e1b-8f7a-3f2b8c1e9a4d refused, token 0123abcdef"),
        );
        assert_eq!(
            cause_of("exited with exit status: 1; stderr: cannot write /tmp/tmp.k2J9xQ7pLm"),
            cause_of("exited with exit status: 1; stderr: cannot write /tmp/tmp.Zz81bQ0wEr"),
        );
        // Different words are different causes.
        assert_ne!(
            cause_of("exited with exit status: 3; stderr: No space left on device"),
            cause_of("exited with exit status: 3; stderr: Permission denied"),
        );
    }

    #[test]
    fn without_a_proof_two_sync_at_once_and_with_one_a_burst_goes_at_full_speed() {
        let mut b = SyncBrake::default();
        assert_eq!(b.gate("d", t(0), FP, 0), Gate::Unproven { room: 2 });
        assert_eq!(b.gate("d", t(0), FP, 1), Gate::Unproven { room: 1 });
        assert_eq!(b.gate("d", t(0), FP, 2), Gate::Unproven { room: 0 });
        // A warm slave's sync proves nothing of new launches.
        b.record(&["i-0"], Ok(()), false, "d", t(1), FP);
        assert_eq!(b.gate("d", t(2), FP, 2), Gate::Unproven { room: 0 });
        b.record(&["i-1"], Ok(()), true, "d", t(3), FP);
        assert_eq!(b.gate("d", t(4), FP, 2), Gate::Open);
        // Another hook, image or key: not proven.
        assert_eq!(b.gate("d", t(4), "other", 2), Gate::Unproven { room: 0 });
        // A day later the proof is stale; a periodic sync to a serving slave renews it.
        assert_eq!(
            b.gate("d", t(3 + PROOF_SECS), FP, 0),
            Gate::Unproven { room: 2 }
        );
        b.prove(FP, t(3 + PROOF_SECS));
        assert_eq!(b.gate("d", t(4 + PROOF_SECS), FP, 0), Gate::Open);
        // ... and its failure revokes it, as a failed launch's sync does.
        b.revoke();
        assert_eq!(
            b.gate("d", t(5 + PROOF_SECS), FP, 0),
            Gate::Unproven { room: 2 }
        );
        b.prove(FP, t(6 + PROOF_SECS));
        b.record(&["i-2"], Err(TIMEOUT), true, "d", t(7 + PROOF_SECS), FP);
        assert_eq!(
            b.gate("d", t(8 + PROOF_SECS), FP, 1),
            Gate::Unproven { room: 1 }
        );
    }

    #[test]
    fn a_reload_releases_it_only_when_the_hook_the_image_or_the_key_changed() {
        let mut b = SyncBrake::default();
        b.record(&["i-1"], Err(KEY), true, "d", t(0), FP);
        b.record(&["i-2"], Err(KEY), true, "d", t(1), FP);
        assert_eq!(b.gate("d", t(2), FP, 0), Gate::Closed);
        assert_eq!(
            b.reload(FP),
            Err("the slave image lacks the master's ssh key".to_string())
        );
        assert_eq!(
            b.gate("d", t(2), FP, 0),
            Gate::Closed,
            "an unchanged reload"
        );
        assert!(matches!(b.reload("new-image"), Ok(Some(_))));
        assert_eq!(
            b.gate("d", t(3), "new-image", 0),
            Gate::Unproven { room: 2 }
        );
        // Nothing tripped: a reload has nothing to release.
        assert_eq!(b.reload("new-image"), Ok(None));
    }

    #[test]
    fn a_trial_that_vanishes_frees_the_next_one_after_its_back_off() {
        let mut b = SyncBrake::default();
        b.record(&["i-1"], Err(KEY), false, "d", t(0), FP);
        b.record(&["i-2"], Err(KEY), false, "d", t(1), FP);
        // Warm slaves cost no unit: the cause has spent nothing, so a trial may go.
        assert_eq!(b.gate("d", t(1 + 900), FP, 0), Gate::Trial);
        b.trial_started("i-3", t(1000));
        b.trial_gone(|_| false);
        assert_eq!(b.gate("d", t(1000 + 1799), FP, 0), Gate::Closed);
        assert_eq!(b.gate("d", t(1000 + 1800), FP, 0), Gate::Trial);
    }
}
