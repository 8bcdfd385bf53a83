//! The site's lease, pure (the DynamoDB lock client's rules): one agent acts for a site at a
//! time, whatever copies of its host or its state directory run.
//!
//! - **Identity.** A holder is `HOST/NONCE`: the host's EC2 instance id and a random nonce made
//!   at each start. A configured `agent.instance_id` or `/etc/machine-id` never makes two
//!   agents one: a copy has both, never the nonce.
//! - **Renewal.** The holder bumps the item's record version at each renewal, every third of
//!   the lease duration.
//! - **The holder stops** at the send time of its last acknowledged renewal, plus the lease
//!   duration, minus a margin ([`margin`]): no fleet-changing call and no hook goes on past it.
//! - **A contender** may take over only after it has seen the same version for a whole lease
//!   duration plus the longest call deadline, timed on its own clock (CLOCK_BOOTTIME, which
//!   counts through suspend), or at once when the holder gave it up on a clean stop; and only
//!   when it runs on the holder's host, serves from the site's ELB, or an operator said
//!   `takeover --yes`. Anything else stands by. Only a table with no lease item at all (the
//!   site's first start) is acquired by whoever comes first.
//!
//! Every time here is the agent's own boot-time clock as a [`Duration`]: no wall clock crosses
//! hosts.

use std::time::Duration;

/// The lease item as one read of the table gave it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    /// `HOST/NONCE` of the agent that wrote it last.
    pub holder: String,
    /// The record version, bumped at every renewal and takeover.
    pub version: u64,
    /// The holder's wall-clock time of its last renewal, for people (never for timing).
    pub renewed_at: String,
    /// The holder gave the lease up on a clean stop. It is free at once, but only to the
    /// agents that could take a lapsed one: the same host's next start, a host that serves from
    /// the site's ELB, or an operator's `takeover --yes`. A staging copy running while
    /// production restarts must not take the site over.
    pub released: bool,
}

impl Item {
    /// The host part of the holder (`i-0abc` of `i-0abc/3f2a...`).
    pub fn host(&self) -> &str {
        self.holder.split('/').next().unwrap_or_default()
    }
}

/// The lease's timings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// `ledger.lease_duration`.
    pub duration: Duration,
    /// The longest a call may take, retries included (`aws.call_timeout`).
    pub call_deadline: Duration,
}

impl Timing {
    /// How long before its lease's end a holder stops: a sixth of the lease, at least a second.
    pub fn margin(&self) -> Duration {
        (self.duration / 6).max(Duration::from_secs(1))
    }

    /// How often the holder renews.
    pub fn renew_every(&self) -> Duration {
        self.duration / 3
    }

    /// How long a contender must see one version unchanged before the lease has lapsed.
    pub fn lapse_after(&self) -> Duration {
        self.duration + self.call_deadline
    }
}

/// What the lease lets this agent do now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Standing {
    /// This agent holds the lease until `until` (its own clock).
    Holder { version: u64, until: Duration },
    /// Another agent holds it; `fresh` while its version moved within the lapse time.
    Standby {
        holder: String,
        version: u64,
        /// How long this agent has seen the same version.
        unchanged_for: Duration,
        lapsed: bool,
        /// The holder gave it up on a clean stop.
        released: bool,
    },
    /// The table has not been read yet, or could not be.
    Unknown,
}

/// What to do with the table next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    /// No lease item: create one (`attribute_not_exists`).
    Acquire,
    /// This agent holds it: bump `version` (conditional on it and on the holder).
    Renew { version: u64 },
    /// The lease lapsed and this agent may take it: replace `version` (conditional on it).
    TakeOver { version: u64 },
    /// Nothing to write: read again later.
    Wait,
}

/// One agent's view of the lease, kept between reads.
#[derive(Clone, Debug)]
pub struct Lease {
    me: String,
    timing: Timing,
    held: Option<Held>,
    seen: Option<Seen>,
    /// The last read found no item at all.
    vacant: bool,
}

#[derive(Clone, Debug)]
struct Held {
    version: u64,
    /// The send time of the renewal the table acknowledged.
    sent_at: Duration,
}

#[derive(Clone, Debug)]
struct Seen {
    item: Item,
    /// When this agent first saw `item.version`.
    since: Duration,
}

impl Lease {
    /// `me` is `HOST/NONCE`.
    pub fn new(me: impl Into<String>, timing: Timing) -> Self {
        Lease {
            me: me.into(),
            timing,
            held: None,
            seen: None,
            vacant: false,
        }
    }

    pub fn me(&self) -> &str {
        &self.me
    }

    /// The host part of this agent's identity.
    pub fn host(&self) -> &str {
        self.me.split('/').next().unwrap_or_default()
    }

    pub fn timing(&self) -> Timing {
        self.timing
    }

    pub fn set_timing(&mut self, timing: Timing) {
        self.timing = timing;
    }

    /// The end of this agent's right to act, if it holds the lease: the send time of its last
    /// acknowledged renewal, plus the duration, minus the margin.
    pub fn until(&self) -> Option<Duration> {
        self.held
            .as_ref()
            .map(|h| (h.sent_at + self.timing.duration).saturating_sub(self.timing.margin()))
    }

    /// Whether this agent may make a fleet-changing call at `now`.
    pub fn holds(&self, now: Duration) -> bool {
        self.until().is_some_and(|u| now < u)
    }

    /// A read of the item at `now`: `None` when the table has none.
    pub fn observe(&mut self, item: Option<Item>, now: Duration) {
        let Some(item) = item else {
            self.vacant = true;
            self.held = None;
            self.seen = None;
            return;
        };
        self.vacant = false;
        if item.holder == self.me {
            // Ours: the version we wrote (a read never extends the lease: only a renewal's
            // send time does).
            if self.held.as_ref().is_none_or(|h| h.version != item.version) {
                self.held = None;
            }
        } else {
            // Someone else wrote it after us: we hold nothing, whatever our clock says.
            self.held = None;
        }
        match &self.seen {
            Some(s) if s.item.version == item.version && s.item.holder == item.holder => {}
            _ => self.seen = Some(Seen { item, since: now }),
        }
    }

    /// The table acknowledged a write of `version` by this agent, sent at `sent_at`.
    pub fn acquired(&mut self, version: u64, sent_at: Duration, renewed_at: &str) {
        self.held = Some(Held { version, sent_at });
        self.vacant = false;
        self.seen = Some(Seen {
            item: Item {
                holder: self.me.clone(),
                version,
                renewed_at: renewed_at.to_string(),
                released: false,
            },
            since: sent_at,
        });
    }

    /// A conditional write was refused: someone else wrote the lease since this agent last
    /// read it. It holds nothing, and what it saw is stale: the next step reads the item
    /// again (trying the same write again would fail for ever).
    pub fn lost(&mut self) {
        self.held = None;
        self.seen = None;
        self.vacant = false;
    }

    /// Where this agent stands at `now`.
    pub fn standing(&self, now: Duration) -> Standing {
        if let (Some(h), Some(until)) = (&self.held, self.until()) {
            if now < until {
                return Standing::Holder {
                    version: h.version,
                    until,
                };
            }
        }
        match &self.seen {
            Some(s) => {
                let unchanged_for = now.saturating_sub(s.since);
                Standing::Standby {
                    holder: s.item.holder.clone(),
                    version: s.item.version,
                    unchanged_for,
                    lapsed: s.item.released || unchanged_for >= self.timing.lapse_after(),
                    released: s.item.released,
                }
            }
            None => Standing::Unknown,
        }
    }

    /// What to write next at `now`. `serves` is whether this host is a member of the site's
    /// ELB; `forced` whether an operator said `takeover --yes`.
    pub fn next(&self, now: Duration, serves: bool, forced: bool) -> Next {
        if self.vacant {
            return Next::Acquire;
        }
        if let Some(h) = &self.held {
            // Renew while the lease holds, and also just after it lapsed on our side: the
            // conditional write fails if anyone else took it meanwhile.
            return if now >= h.sent_at + self.timing.renew_every()
                || now + self.timing.margin() >= h.sent_at + self.timing.duration
            {
                Next::Renew { version: h.version }
            } else {
                Next::Wait
            };
        }
        match &self.seen {
            // Our own item from before a lost answer: take it back only as a takeover.
            Some(s) => {
                let lapsed =
                    s.item.released || now.saturating_sub(s.since) >= self.timing.lapse_after();
                // The same host's earlier agent (killed, restarted by systemd) is no copy: this
                // host is the one it ran on, and its lease has run out on its own clock too.
                let same_host = s.item.host() == self.host();
                if forced || (lapsed && (serves || same_host)) {
                    Next::TakeOver {
                        version: s.item.version,
                    }
                } else {
                    Next::Wait
                }
            }
            None => Next::Wait,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timing = Timing {
        duration: Duration::from_secs(30),
        call_deadline: Duration::from_secs(10),
    };

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn item(holder: &str, version: u64) -> Option<Item> {
        Some(Item {
            holder: holder.into(),
            version,
            renewed_at: String::new(),
            released: false,
        })
    }

    fn released(holder: &str, version: u64) -> Option<Item> {
        Some(Item {
            released: true,
            ..item(holder, version)?
        })
    }

    #[test]
    fn an_empty_table_is_acquired_and_the_holder_stops_before_its_lease_ends() {
        let mut l = Lease::new("i-a/1", T);
        assert_eq!(l.standing(s(0)), Standing::Unknown);
        assert_eq!(l.next(s(0), false, false), Next::Wait);
        l.observe(None, s(100));
        assert_eq!(l.next(s(100), false, false), Next::Acquire);
        l.acquired(1, s(100), "");
        // The margin is a sixth of 30 s: the holder stops at 100 + 30 - 5.
        assert!(l.holds(s(124)));
        assert!(!l.holds(s(125)));
        assert!(matches!(l.standing(s(126)), Standing::Standby { .. }));
    }

    #[test]
    fn the_holder_renews_every_third_of_the_lease_from_the_send_time() {
        let mut l = Lease::new("i-a/1", T);
        l.observe(None, s(0));
        l.acquired(1, s(0), "");
        assert_eq!(l.next(s(9), true, false), Next::Wait);
        assert_eq!(l.next(s(10), true, false), Next::Renew { version: 1 });
        l.acquired(2, s(10), "");
        assert_eq!(l.until(), Some(s(35)));
        // A read of its own item never extends the lease.
        l.observe(item("i-a/1", 2), s(20));
        assert_eq!(l.until(), Some(s(35)));
    }

    #[test]
    fn another_writer_ends_the_lease_at_once_whatever_the_clock_says() {
        let mut l = Lease::new("i-a/1", T);
        l.observe(None, s(0));
        l.acquired(1, s(0), "");
        l.observe(item("i-b/2", 2), s(5));
        assert!(!l.holds(s(5)));
        assert_eq!(l.next(s(5), true, false), Next::Wait);
    }

    #[test]
    fn a_contender_waits_the_lease_plus_the_call_deadline_on_its_own_clock() {
        let mut b = Lease::new("i-b/2", T);
        b.observe(item("i-a/1", 7), s(1000));
        // The same version for 39 s: not lapsed (30 + 10).
        b.observe(item("i-a/1", 7), s(1039));
        assert_eq!(b.next(s(1039), true, false), Next::Wait);
        match b.standing(s(1039)) {
            Standing::Standby {
                holder,
                lapsed,
                unchanged_for,
                ..
            } => {
                assert_eq!(holder, "i-a/1");
                assert!(!lapsed);
                assert_eq!(unchanged_for, s(39));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(b.next(s(1040), true, false), Next::TakeOver { version: 7 });
        // A renewal seen meanwhile starts the wait again.
        b.observe(item("i-a/1", 8), s(1040));
        assert_eq!(b.next(s(1079), true, false), Next::Wait);
        assert_eq!(b.next(s(1080), true, false), Next::TakeOver { version: 8 });
    }

    #[test]
    fn a_host_outside_the_elb_stands_by_after_the_lapse_until_an_operator_forces_it() {
        let mut b = Lease::new("i-copy/9", T);
        b.observe(item("i-a/1", 3), s(0));
        assert_eq!(b.next(s(3600), false, false), Next::Wait);
        assert!(matches!(
            b.standing(s(3600)),
            Standing::Standby { lapsed: true, .. }
        ));
        assert_eq!(b.next(s(3600), false, true), Next::TakeOver { version: 3 });
        // Forced, it need not wait for the lapse either: the operator knows the old one is gone.
        assert_eq!(b.next(s(1), false, true), Next::TakeOver { version: 3 });
    }

    #[test]
    fn a_restart_on_the_same_host_is_a_new_holder_and_waits_the_lapse_even_outside_the_elb() {
        let mut b = Lease::new("i-a/2", T);
        b.observe(item("i-a/1", 3), s(0));
        assert_eq!(b.next(s(39), false, false), Next::Wait);
        assert_eq!(b.next(s(40), false, false), Next::TakeOver { version: 3 });
        // Another host outside the ELB would wait for good.
        let mut c = Lease::new("i-b/2", T);
        c.observe(item("i-a/1", 3), s(0));
        assert_eq!(c.next(s(4000), false, false), Next::Wait);
    }

    #[test]
    fn a_holder_past_its_end_renews_and_the_table_decides() {
        // Paused past its lease (SIGSTOP, a suspended VM): it does not act, it asks the table.
        let mut l = Lease::new("i-a/1", T);
        l.observe(None, s(0));
        l.acquired(1, s(0), "");
        assert!(!l.holds(s(100)));
        assert_eq!(l.next(s(100), true, false), Next::Renew { version: 1 });
        l.lost();
        assert!(!l.holds(s(100)));
        // What it saw is stale: it reads again before it writes anything (its own old item,
        // lapsed on its own host, would otherwise be "taken over" at a version long gone).
        assert_eq!(l.standing(s(100)), Standing::Unknown);
        assert_eq!(l.next(s(100), true, false), Next::Wait);
        l.observe(item("i-b/2", 3), s(101));
        assert!(matches!(
            l.standing(s(101)),
            Standing::Standby { ref holder, lapsed: false, .. } if holder == "i-b/2"
        ));
    }

    #[test]
    fn a_lease_given_up_is_free_at_once_only_to_those_that_could_take_a_lapsed_one() {
        // Production's agent restarts (an upgrade): it gave the lease up on its clean stop.
        let gone = released("i-a/1", 4);
        // A staging copy outside the ELB must not take the site over meanwhile.
        let mut copy = Lease::new("i-copy/9", T);
        copy.observe(gone.clone(), s(0));
        assert_eq!(copy.next(s(1), false, false), Next::Wait);
        assert_eq!(copy.next(s(3600), false, false), Next::Wait);
        assert_eq!(copy.next(s(1), false, true), Next::TakeOver { version: 4 });
        // The same host's next start, and a host in the ELB, take it without the wait.
        let mut next = Lease::new("i-a/2", T);
        next.observe(gone.clone(), s(0));
        assert_eq!(next.next(s(0), false, false), Next::TakeOver { version: 4 });
        let mut serving = Lease::new("i-b/3", T);
        serving.observe(gone, s(0));
        assert_eq!(
            serving.next(s(0), true, false),
            Next::TakeOver { version: 4 }
        );
        assert!(matches!(
            serving.standing(s(0)),
            Standing::Standby {
                lapsed: true,
                released: true,
                ..
            }
        ));
    }
}
