//! A scale-out's launch, pure: whether it may go ([`gate`]) and, call by call, where to ask EC2
//! and what its answer means ([`Launch`]). The executor sends each [`Call`] and reports what
//! came back (the edge's classification of a failure, as a [`Failure`]); which subnet and type,
//! which MinCount, whether another call follows, whether the intent failed or stays open, and
//! which back-off starts are chosen here. (The cap ledger still has the last word on the count:
//! the executor records each attempt before any call, and stops where the ledger refuses.)
//!
//! A launch may go ([`gate`]) unless, first that applies, the content source is unusable,
//! today's cap use is not confirmed yet (a lost ledger read back), EC2 refused the last launch
//! for good and its back-off runs, or the sync brake holds it (only its trial goes).
//!
//! The rules: first ask for as many as EC2 can give (`MinCount` 1). No capacity in a zone: the
//! next placement at once (each subnet with the configured type, then each fallback type), each
//! once. EC2 gave fewer than asked: ask once more for the rest, all or nothing, and a refusal of
//! that call means EC2 launched fewer, for sure. A refusal (nothing took effect) ends the launch
//! with nothing charged, backing off when EC2 had no capacity anywhere or refused for good. Any
//! other failure, final or not, may have launched: the intent stays open, its attempts stay
//! charged, and its instances are found by their tag.

use super::brake;
use super::rules::{pick_placement, placements};

/// Whether the launches a decision asked for may go, after the warm pool took its share.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LaunchGate {
    /// `count` launches go; `trial`: the sync brake lets exactly this one go as its trial.
    Go { count: u32, trial: bool },
    /// None goes, for this reason (`brake`: the sync brake holds them).
    Held { why: String, brake: bool },
}

/// Why launches cannot spend a cap unit now, the first that applies: the content source is
/// unusable, today's cap use is not confirmed yet, EC2 refused the last launch for good (and its
/// back-off runs), or the sync brake holds them (one trial after its back-off).
pub fn gate(
    count: u32,
    source_missing: Option<&str>,
    cap_unverified: Option<&str>,
    refused: Option<(&str, jiff::Timestamp)>,
    brake: brake::Gate,
    brake_cause: Option<&str>,
) -> LaunchGate {
    let held = source_missing
        .map(str::to_string)
        .or_else(|| cap_unverified.map(str::to_string))
        .or_else(|| {
            refused.map(|(cause, until)| {
                format!(
                    "EC2 refused the last launch for good ({cause}); the next waits until {until}"
                )
            })
        });
    if let Some(why) = held {
        return LaunchGate::Held { why, brake: false };
    }
    match brake {
        brake::Gate::Open => LaunchGate::Go {
            count,
            trial: false,
        },
        brake::Gate::Unproven { room } if room > 0 => LaunchGate::Go {
            count: count.min(room),
            trial: false,
        },
        brake::Gate::Unproven { .. } => LaunchGate::Held {
            why: format!(
                "no content sync has gone through yet with this hook, slave image and ssh key: \
                 at most {} paid slaves sync at once until one does",
                brake::UNPROVEN_IN_FLIGHT
            ),
            brake: false,
        },
        brake::Gate::Trial => LaunchGate::Go {
            count: 1,
            trial: true,
        },
        brake::Gate::Closed => LaunchGate::Held {
            why: format!(
                "the content sync keeps failing ({}); fix it, then `systemctl reload \
                 burst-agent` or `burst-agent resume`",
                brake_cause.unwrap_or("")
            ),
            brake: true,
        },
    }
}

/// One RunInstances call to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    /// 1-based; with the intent, the client token.
    pub call: u32,
    /// `None`: EC2 chooses.
    pub subnet: Option<String>,
    /// `None`: the configured type (or the launch template's).
    pub instance_type: Option<String>,
    pub min: u32,
    pub max: u32,
}

/// A failed call, as the edge classified it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Failure {
    /// EC2 had no capacity for this placement.
    pub capacity: bool,
    /// The service refused: nothing took effect.
    pub not_applied: bool,
    /// Trying the same again may succeed.
    pub retryable: bool,
}

/// Which back-off a launch that failed for good starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackOff {
    /// No capacity anywhere this launch could ask.
    NoCapacity,
    /// EC2 refused for good (a missing profile, group or AMI, IAM, a limit).
    Refused,
}

/// What a failed call means for the launch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AfterFailure {
    /// The call for the rest was refused: EC2 launched fewer than asked, for sure. Done.
    Fewer,
    /// No capacity here: `next_call()` asks the next placement. `here` names this one.
    NextPlacement {
        here: String,
        next_subnet: Option<String>,
        next_type: Option<String>,
    },
    /// EC2 refused this call (nothing took effect) and no call follows: the intent failed,
    /// nothing charged. `no_capacity_elsewhere` lists the placements that had no capacity before.
    Failed {
        back_off: Option<BackOff>,
        no_capacity_elsewhere: Vec<String>,
    },
    /// The call may or may not have launched (a timeout, a lost answer, a 5xx, or a final error
    /// that is not a refusal): the intent stays open at this call.
    Unknown { open_call: u32 },
}

/// One launch of `n` slaves for one intent, call by call.
#[derive(Clone, Debug)]
pub struct Launch {
    intent: String,
    n: u32,
    got: u32,
    call: u32,
    /// The first call succeeded with fewer than asked: the next asks for the rest, all or none.
    shortfall: bool,
    no_capacity: Vec<String>,
    subnets: Vec<String>,
    fallbacks: Vec<String>,
}

impl Launch {
    pub fn new(intent: &str, n: u32, subnets: &[String], fallbacks: &[String]) -> Self {
        Launch {
            intent: intent.to_string(),
            n,
            got: 0,
            call: 0,
            shortfall: false,
            no_capacity: Vec::new(),
            subnets: subnets.to_vec(),
            fallbacks: fallbacks.to_vec(),
        }
    }

    /// The next call to send, or `None`: the launch is done.
    pub fn next_call(&mut self) -> Option<Call> {
        let want = self.n.saturating_sub(self.got);
        if want == 0 {
            return None;
        }
        self.call += 1;
        let (subnet, instance_type) =
            pick_placement(&self.subnets, &self.fallbacks, &self.intent, self.call);
        Some(Call {
            call: self.call,
            subnet,
            instance_type,
            min: if self.shortfall { want } else { 1 },
            max: want,
        })
    }

    /// The last call launched `count` instances. Returns whether the launch is done (the call
    /// for the rest answered, so none follows).
    pub fn launched(&mut self, count: u32) -> bool {
        self.got = self.got.saturating_add(count);
        if self.shortfall {
            self.n = self.got;
            return true;
        }
        self.shortfall = true;
        false
    }

    /// The last call failed, as `f` says.
    pub fn failed(&mut self, f: Failure) -> AfterFailure {
        if self.shortfall && f.not_applied {
            self.n = self.got;
            return AfterFailure::Fewer;
        }
        let more = usize::try_from(self.call).unwrap_or(usize::MAX)
            < placements(&self.subnets, &self.fallbacks);
        if f.capacity && more {
            let (subnet, instance_type) =
                pick_placement(&self.subnets, &self.fallbacks, &self.intent, self.call);
            let here = format!(
                "{} in {}",
                instance_type.as_deref().unwrap_or("the configured type"),
                subnet.as_deref().unwrap_or("EC2's choice of subnet")
            );
            let (next_subnet, next_type) =
                pick_placement(&self.subnets, &self.fallbacks, &self.intent, self.call + 1);
            self.no_capacity.push(here.clone());
            return AfterFailure::NextPlacement {
                here,
                next_subnet,
                next_type,
            };
        }
        if f.not_applied {
            let back_off = if f.capacity {
                Some(BackOff::NoCapacity)
            } else if !f.retryable {
                Some(BackOff::Refused)
            } else {
                None
            };
            return AfterFailure::Failed {
                back_off,
                no_capacity_elsewhere: std::mem::take(&mut self.no_capacity),
            };
        }
        AfterFailure::Unknown {
            open_call: self.call,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAPACITY: Failure = Failure {
        capacity: true,
        not_applied: true,
        retryable: true,
    };

    fn subnets() -> Vec<String> {
        vec!["subnet-a".into(), "subnet-b".into()]
    }

    #[test]
    fn a_short_first_answer_asks_once_more_for_the_rest_all_or_nothing() {
        let mut l = Launch::new("bi-x", 3, &subnets(), &[]);
        let c = l.next_call().unwrap();
        assert_eq!((c.call, c.min, c.max), (1, 1, 3));
        assert!(!l.launched(1));
        let c = l.next_call().unwrap();
        assert_eq!((c.call, c.min, c.max), (2, 2, 2));
        // Refused: EC2 launched one of three, for sure; no third call.
        assert_eq!(l.failed(CAPACITY), AfterFailure::Fewer);
        assert_eq!(l.next_call(), None);
    }

    #[test]
    fn no_capacity_moves_through_every_subnet_then_each_fallback_type_then_backs_off() {
        let fallbacks = vec!["m5.large".to_string()];
        let mut l = Launch::new("bi-y", 1, &subnets(), &fallbacks);
        let mut seen = Vec::new();
        loop {
            let c = l.next_call().unwrap();
            seen.push((c.subnet.clone().unwrap(), c.instance_type.clone()));
            match l.failed(CAPACITY) {
                AfterFailure::NextPlacement { .. } => continue,
                AfterFailure::Failed {
                    back_off,
                    no_capacity_elsewhere,
                } => {
                    assert_eq!(back_off, Some(BackOff::NoCapacity));
                    assert_eq!(no_capacity_elsewhere.len(), 3, "{no_capacity_elsewhere:?}");
                    break;
                }
                other => panic!("{other:?}"),
            }
        }
        // Four placements, each once: two subnets with the configured type, two with m5.large.
        assert_eq!(seen.len(), 4, "{seen:?}");
        let distinct: std::collections::BTreeSet<_> = seen.iter().collect();
        assert_eq!(distinct.len(), 4, "{seen:?}");
        assert_eq!(seen[2].1.as_deref(), Some("m5.large"));
    }

    #[test]
    fn a_final_refusal_backs_off_and_a_lost_answer_leaves_the_intent_open() {
        let mut l = Launch::new("bi-z", 2, &subnets(), &[]);
        l.next_call();
        let refused = Failure {
            capacity: false,
            not_applied: true,
            retryable: false,
        };
        assert!(matches!(
            l.failed(refused),
            AfterFailure::Failed {
                back_off: Some(BackOff::Refused),
                ..
            }
        ));
        // Throttled, refused: nothing took effect, no back-off (the policy asks again).
        let mut l = Launch::new("bi-z", 2, &subnets(), &[]);
        l.next_call();
        let throttled = Failure {
            capacity: false,
            not_applied: true,
            retryable: true,
        };
        assert!(matches!(
            l.failed(throttled),
            AfterFailure::Failed { back_off: None, .. }
        ));
        // A reset after sending: it may have launched.
        let mut l = Launch::new("bi-z", 2, &subnets(), &[]);
        l.next_call();
        l.launched(1);
        l.next_call();
        let lost = Failure {
            capacity: false,
            not_applied: false,
            retryable: true,
        };
        assert_eq!(l.failed(lost), AfterFailure::Unknown { open_call: 2 });
        // A final error that is not a refusal (an odd status) may still have launched: open,
        // never "failed, nothing charged".
        let mut l = Launch::new("bi-z", 2, &subnets(), &[]);
        l.next_call();
        let odd = Failure {
            capacity: false,
            not_applied: false,
            retryable: false,
        };
        assert_eq!(l.failed(odd), AfterFailure::Unknown { open_call: 1 });
    }

    #[test]
    fn the_next_placement_still_asks_for_at_least_one_and_the_shortfall_call_ends_the_launch() {
        let mut l = Launch::new("bi-w", 4, &subnets(), &[]);
        let first = l.next_call().unwrap();
        assert!(matches!(
            l.failed(CAPACITY),
            AfterFailure::NextPlacement { .. }
        ));
        let c = l.next_call().unwrap();
        assert_eq!((c.call, c.min, c.max), (2, 1, 4));
        assert_ne!(c.subnet, first.subnet);
        assert!(!l.launched(2));
        let c = l.next_call().unwrap();
        assert_eq!((c.call, c.min, c.max), (3, 2, 2));
        assert!(l.launched(2));
        assert_eq!(l.next_call(), None);
    }

    #[test]
    fn the_gate_names_the_first_reason_and_the_brake_lets_one_trial_go() {
        assert_eq!(
            gate(3, None, None, None, brake::Gate::Open, None),
            LaunchGate::Go {
                count: 3,
                trial: false
            }
        );
        assert_eq!(
            gate(3, None, None, None, brake::Gate::Trial, Some("ssh key")),
            LaunchGate::Go {
                count: 1,
                trial: true
            }
        );
        // No sync proven yet: only the room left of two in flight.
        assert_eq!(
            gate(3, None, None, None, brake::Gate::Unproven { room: 1 }, None),
            LaunchGate::Go {
                count: 1,
                trial: false
            }
        );
        match gate(3, None, None, None, brake::Gate::Unproven { room: 0 }, None) {
            LaunchGate::Held { why, brake: false } => {
                assert!(why.contains("at most 2 paid slaves"), "{why}")
            }
            other => panic!("{other:?}"),
        }
        match gate(3, None, None, None, brake::Gate::Closed, Some("ssh key")) {
            LaunchGate::Held { why, brake: true } => assert!(why.contains("ssh key"), "{why}"),
            other => panic!("{other:?}"),
        }
        let until: jiff::Timestamp = "2026-12-06T12:00:00Z".parse().unwrap();
        match gate(
            3,
            None,
            None,
            Some(("AccessDenied", until)),
            brake::Gate::Open,
            None,
        ) {
            LaunchGate::Held { why, brake: false } => {
                assert!(
                    why.contains("AccessDenied") && why.contains("12:00"),
                    "{why}"
                )
            }
            other => panic!("{other:?}"),
        }
        match gate(
            3,
            Some("/var/www is empty"),
            Some("cap not read back"),
            None,
            brake::Gate::Open,
            None,
        ) {
            LaunchGate::Held { why, brake: false } => assert_eq!(why, "/var/www is empty"),
            other => panic!("{other:?}"),
        }
        match gate(
            3,
            None,
            Some("cap not read back"),
            Some(("AccessDenied", until)),
            brake::Gate::Closed,
            None,
        ) {
            LaunchGate::Held { why, brake: false } => assert_eq!(why, "cap not read back"),
            other => panic!("{other:?}"),
        }
    }
}
