//! Launch intents and the cap ledger's evidence, pure: the write-ahead journal's types, what its
//! open intents mean given what EC2 lists ([`settle`]), which attempts a launch's instances are
//! bound to ([`bind_plan`]), what the ledger hears of each listed instance ([`seen`],
//! [`seen_all`]) and a blocked ledger rebuilt from the journal and the tags ([`rebuild_entries`]): it may
//! overcount, never undercount.
//!
//! An intent is written (with its cap-ledger attempts) **before** RunInstances and its outcome
//! after, so a crash between the two leaves an intent whose instances are found by their
//! `burst-agent:intent` tag, never launched twice; what EC2 has not listed [`SETTLE_SECS`] after
//! the last call was not launched. The agent keeps the journal in `state.json` (and reads the
//! `journal.json` of agents from before); everything else about a slave is observable from EC2
//! and the ELB.

use super::rules::{age, alive, stopped, SETTLE_SECS, STOP_DEADLINE_SECS};
use crate::cap::{Entry, Seen};
use crate::model::{InstanceInfo, InstanceState, Slave};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case", deny_unknown_fields)]
pub enum Outcome {
    /// Written before the call; the call's result is not known yet.
    Started,
    Launched {
        instance_ids: Vec<String>,
    },
    /// EC2 refused for good; nothing was launched.
    Failed {
        error: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Intent {
    /// Also the `burst-agent:intent` tag and the client tokens' stem.
    pub id: String,
    pub created_at: Timestamp,
    /// The cap-ledger attempts this launch stands for (`<id>#1` …).
    pub keys: Vec<String>,
    pub outcome: Outcome,
    /// The RunInstances call (1-based) whose outcome was unknown when the launch was left open:
    /// for the operator reading state.json (an open launch is never sent again). 0: call 1.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub open_call: u32,
    /// When a RunInstances call for it was last sent (written before sending): EC2 may take a
    /// while to list what that call launched. Absent: `created_at`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sent: Option<Timestamp>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Intent {
    /// A new intent for `keys`, not sent yet.
    pub fn started(id: &str, keys: Vec<String>, now: Timestamp) -> Self {
        Intent {
            id: id.to_string(),
            created_at: now,
            keys,
            outcome: Outcome::Started,
            open_call: 0,
            last_sent: None,
        }
    }

    /// Since when EC2 may still be about to list instances of this intent.
    pub fn settling_since(&self) -> Timestamp {
        self.last_sent
            .unwrap_or(self.created_at)
            .max(self.created_at)
    }

    /// The client token of the `n`-th RunInstances call for this intent (1-based).
    pub fn client_token(&self, n: u32) -> String {
        format!("{}-{n}", self.id)
    }
}

/// The launch intents the agent knows, open and resolved.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Journal {
    pub intents: Vec<Intent>,
}

impl Journal {
    pub fn new() -> Self {
        Journal::default()
    }

    pub fn with(intents: Vec<Intent>) -> Self {
        Journal { intents }
    }

    pub fn get_mut(&mut self, id: &str) -> Option<&mut Intent> {
        self.intents.iter_mut().find(|i| i.id == id)
    }

    /// Whether a resolved intent of this journal launched the instance `id`.
    pub fn launched(&self, id: &str) -> bool {
        self.intents.iter().any(|i| {
            matches!(&i.outcome, Outcome::Launched { instance_ids } if instance_ids.iter().any(|x| x == id))
        })
    }

    /// Whether this journal holds the intent `id` (resolved or not).
    pub fn knows(&self, id: &str) -> bool {
        self.intents.iter().any(|i| i.id == id)
    }

    pub fn unresolved(&self) -> impl Iterator<Item = &Intent> {
        self.intents
            .iter()
            .filter(|i| i.outcome == Outcome::Started)
    }

    /// Forgets resolved intents older than `keep_secs`. Returns how many.
    pub fn prune(&mut self, now: Timestamp, keep_secs: i64) -> usize {
        let before = self.intents.len();
        self.intents.retain(|i| {
            i.outcome == Outcome::Started || now.as_second() - i.created_at.as_second() <= keep_secs
        });
        before - self.intents.len()
    }
}

/// What an open intent means, given what EC2 lists now.
#[derive(Clone, Debug, PartialEq)]
pub enum Settle {
    /// EC2 lists some of its instances, fewer than its attempts, and may still be listing the
    /// rest: track the live ones (`born`), wait.
    Partial {
        intent: Intent,
        ids: Vec<String>,
        born: Vec<InstanceInfo>,
    },
    /// What EC2 lists is all it launched: track the live ones, bind the attempts to `ids`,
    /// withdraw the rest.
    Resolved {
        intent: Intent,
        ids: Vec<String>,
        born: Vec<InstanceInfo>,
    },
    /// EC2 lists nothing of it [`SETTLE_SECS`] after its last call: nothing was launched.
    NothingLaunched { intent: Intent, why: String },
}

/// What each open intent of `journal` means, given `instances` (every instance EC2 lists for
/// this group, by tag). EC2 is eventually consistent: fewer instances than attempts may be all it
/// launched, or all it lists yet; only once it has had time to list them all are the missing
/// attempts known to have launched nothing. An intent EC2 lists nothing of is never sent again
/// (a launch asked for minutes ago may no longer be wanted); a dry run settles nothing as not
/// launched, as it launches nothing.
pub fn settle(
    journal: &Journal,
    instances: &[InstanceInfo],
    now: Timestamp,
    dry_run: bool,
) -> Vec<Settle> {
    let mut out = Vec::new();
    for intent in journal.unresolved() {
        let found: Vec<&InstanceInfo> = instances
            .iter()
            .filter(|i| i.intent.as_deref() == Some(intent.id.as_str()))
            .collect();
        let waited = age(now, intent.settling_since());
        if !found.is_empty() {
            let ids: Vec<String> = found.iter().map(|i| i.id.clone()).collect();
            let born: Vec<InstanceInfo> = found
                .iter()
                .filter(|i| alive(i.state))
                .map(|i| (*i).clone())
                .collect();
            let intent = intent.clone();
            out.push(if ids.len() < intent.keys.len() && waited <= SETTLE_SECS {
                Settle::Partial { intent, ids, born }
            } else {
                Settle::Resolved { intent, ids, born }
            });
        } else if !dry_run && waited > SETTLE_SECS {
            out.push(Settle::NothingLaunched {
                intent: intent.clone(),
                why: format!(
                    "EC2 lists no instance of this launch {waited}s after its last RunInstances: \
                     nothing was launched"
                ),
            });
        }
    }
    out
}

/// Which ledger attempts a launch's instances take.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Binding {
    /// (attempt key, instance id) to bind.
    pub bind: Vec<(String, String)>,
    /// The intent's attempts no instance took, in order.
    pub free: VecDeque<String>,
    /// Instances beyond the intent's attempts (logged; never charged twice).
    pub extra: Vec<String>,
}

/// Binds each of `ids` to one attempt of `intent`: attempts already bound (the ledger's
/// reconcile binds by intent tag) stay; the others take the free attempts in order.
pub fn bind_plan(intent: &Intent, entries: &[Entry], ids: &[String]) -> Binding {
    let bound: BTreeSet<&str> = entries
        .iter()
        .filter(|e| intent.keys.contains(&e.key))
        .filter_map(|e| e.instance_id.as_deref())
        .collect();
    let mut free: VecDeque<String> = intent
        .keys
        .iter()
        .filter(|k| {
            entries
                .iter()
                .any(|e| &e.key == *k && e.instance_id.is_none())
        })
        .cloned()
        .collect();
    let mut b = Binding::default();
    for id in ids.iter().filter(|id| !bound.contains(id.as_str())) {
        match free.pop_front() {
            Some(key) => b.bind.push((key, id.clone())),
            None => b.extra.push(id.clone()),
        }
    }
    b.free = free;
    b
}

/// What the ledger hears of one listed instance. Shutting down is ended (it runs no more, and
/// must not count as running again); stopping or stopped is not running.
pub fn seen(i: &InstanceInfo, now: Timestamp) -> Seen {
    let ended = matches!(
        i.state,
        InstanceState::Terminated | InstanceState::ShuttingDown
    );
    Seen {
        instance_id: i.id.clone(),
        intent: i.intent.clone(),
        launched_at: i.launched_at.unwrap_or(now),
        ended_at: ended.then(|| i.ended_at.unwrap_or(now)),
        stopped: stopped(i.state),
        stopped_by: i
            .pooled_since
            .and_then(|t| Timestamp::from_second(t.as_second() + STOP_DEADLINE_SECS).ok()),
    }
}

/// What the ledger is reconciled with: every instance EC2 lists, and the slaves tracked too
/// recently for EC2 to list them yet (alive, not ended).
pub fn seen_all(
    slaves: &BTreeMap<String, Slave>,
    instances: &[InstanceInfo],
    now: Timestamp,
) -> Vec<Seen> {
    let mut out: Vec<Seen> = instances.iter().map(|i| seen(i, now)).collect();
    for s in slaves.values() {
        if age(now, s.first_seen) <= SETTLE_SECS && !instances.iter().any(|i| i.id == s.id) {
            out.push(Seen {
                instance_id: s.id.clone(),
                intent: s.intent.clone(),
                launched_at: s.launched_at,
                ended_at: None,
                stopped: false,
                stopped_by: None,
            });
        }
    }
    out
}

/// A blocked ledger's entries, rebuilt: what could still be read of the old file, then each
/// launch the journal knows (an instance it launched counts from its intent; an intent still
/// open counts as an attempt), then every instance of ours EC2 still lists. Nothing is
/// counted twice; an entry that cannot be shown to have ended counts as running, so the
/// rebuilt ledger may overcount, never undercount, what the journal and tags show.
pub fn rebuild_entries(
    readable: &[Entry],
    journal: &Journal,
    instances: &[InstanceInfo],
    now: Timestamp,
) -> Vec<Entry> {
    let mut out: Vec<Entry> = readable.to_vec();
    let known = |out: &[Entry], key: &str, id: Option<&str>| {
        out.iter()
            .any(|e| e.key == key || (id.is_some() && e.instance_id.as_deref() == id))
    };
    for intent in &journal.intents {
        let ids: Vec<Option<&str>> = match &intent.outcome {
            Outcome::Launched { instance_ids } => {
                instance_ids.iter().map(|i| Some(i.as_str())).collect()
            }
            Outcome::Started => vec![None; intent.keys.len()],
            Outcome::Failed { .. } => continue,
        };
        for (key, id) in intent.keys.iter().zip(ids) {
            if !known(&out, key, id) {
                out.push(Entry {
                    key: key.clone(),
                    instance_id: id.map(str::to_string),
                    launched_at: intent.created_at,
                    ended_at: None,
                });
            }
        }
    }
    for s in instances.iter().map(|i| seen(i, now)) {
        let key = format!(
            "{}#{}",
            s.intent.as_deref().unwrap_or("adopted"),
            s.instance_id
        );
        let ended = s.ended_at.or_else(|| s.ended_by(now));
        if let Some(e) = out
            .iter_mut()
            .find(|e| e.instance_id.as_deref() == Some(s.instance_id.as_str()))
        {
            if e.ended_at.is_none() {
                e.ended_at = ended.map(|end| crate::cap::end_of(e.launched_at, end, now));
            }
        } else if !known(&out, &key, None) {
            out.push(Entry {
                key,
                instance_id: Some(s.instance_id),
                launched_at: s.launched_at,
                ended_at: ended,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_790_000_000 + s).unwrap()
    }

    fn instance(id: &str, intent: &str, state: InstanceState) -> InstanceInfo {
        InstanceInfo {
            id: id.into(),
            group: Some("g".into()),
            state,
            private_ip: None,
            private_dns: None,
            launched_at: Some(at(0)),
            ec2_launched_at: Some(at(0)),
            client_token: None,
            intent: Some(intent.into()),
            owner: Some("o".into()),
            draining_since: None,
            pooled_since: None,
            ebs_root: true,
            ended_at: None,
            instance_type: None,
            stopped_at: None,
        }
    }

    fn open(id: &str, n: usize, sent: i64) -> Intent {
        let keys = (1..=n).map(|k| format!("{id}#{k}")).collect();
        let mut i = Intent::started(id, keys, at(0));
        i.last_sent = Some(at(sent));
        i
    }

    #[test]
    fn an_intent_found_in_part_waits_for_ec2_to_list_the_rest_then_resolves_with_what_it_lists() {
        let j = Journal::with(vec![open("bi-1", 2, 10)]);
        let listed = [instance("i-1", "bi-1", InstanceState::Pending)];
        // 300 s after the last call EC2 may still be listing the second instance.
        match &settle(&j, &listed, at(10 + SETTLE_SECS), false)[..] {
            [Settle::Partial { ids, born, .. }] => {
                assert_eq!(ids, &["i-1"]);
                assert_eq!(born.len(), 1);
            }
            other => panic!("{other:?}"),
        }
        // One second later it is all EC2 launched.
        match &settle(&j, &listed, at(11 + SETTLE_SECS), false)[..] {
            [Settle::Resolved { ids, .. }] => assert_eq!(ids, &["i-1"]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_intent_ec2_never_lists_launched_nothing_but_only_after_its_last_call_settled() {
        // Created long ago, but its last call went out 100 s ago: not settled yet.
        let mut i = open("bi-2", 1, 0);
        i.created_at = at(-10_000);
        i.last_sent = Some(at(0));
        let j = Journal::with(vec![i]);
        assert!(settle(&j, &[], at(100), false).is_empty());
        match &settle(&j, &[], at(SETTLE_SECS + 1), false)[..] {
            [Settle::NothingLaunched { why, .. }] => assert!(why.contains("nothing"), "{why}"),
            other => panic!("{other:?}"),
        }
        // A dry run launched nothing and settles nothing as failed.
        assert!(settle(&j, &[], at(SETTLE_SECS + 1), true).is_empty());
        // A resolved intent is not looked at again.
        let mut done = j.clone();
        done.intents[0].outcome = Outcome::Launched {
            instance_ids: vec![],
        };
        assert!(settle(&done, &[], at(SETTLE_SECS + 1), false).is_empty());
    }

    #[test]
    fn a_terminated_instance_of_an_intent_resolves_it_but_is_not_tracked_as_a_slave() {
        let j = Journal::with(vec![open("bi-3", 1, 0)]);
        let listed = [instance("i-9", "bi-3", InstanceState::Terminated)];
        match &settle(&j, &listed, at(5), false)[..] {
            [Settle::Resolved { ids, born, .. }] => {
                assert_eq!(ids, &["i-9"]);
                assert!(born.is_empty());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn binding_keeps_attempts_already_bound_and_never_binds_more_than_the_intent_has() {
        let i = open("bi-4", 2, 0);
        let entries = vec![
            Entry {
                key: "bi-4#1".into(),
                instance_id: Some("i-a".into()),
                launched_at: at(0),
                ended_at: None,
            },
            Entry {
                key: "bi-4#2".into(),
                instance_id: None,
                launched_at: at(0),
                ended_at: None,
            },
        ];
        let b = bind_plan(&i, &entries, &["i-a".into(), "i-b".into(), "i-c".into()]);
        assert_eq!(b.bind, vec![("bi-4#2".to_string(), "i-b".to_string())]);
        assert_eq!(b.extra, vec!["i-c".to_string()]);
        assert!(b.free.is_empty());
        let b = bind_plan(&i, &entries, &[]);
        assert_eq!(b.free, VecDeque::from(vec!["bi-4#2".to_string()]));
    }

    #[test]
    fn a_rebuilt_ledger_counts_each_launch_once_from_journal_and_tags() {
        let mut launched = open("bi-5", 1, 0);
        launched.outcome = Outcome::Launched {
            instance_ids: vec!["i-1".into()],
        };
        let mut failed = open("bi-6", 1, 0);
        failed.outcome = Outcome::Failed { error: "x".into() };
        let j = Journal::with(vec![launched, failed, open("bi-7", 2, 0)]);
        let listed = [
            // Launched by bi-5: already counted from the journal, and now gone.
            instance("i-1", "bi-5", InstanceState::Terminated),
            // Not in the journal (launched before it was lost): counted from its tag.
            instance("i-2", "bi-0", InstanceState::Running),
        ];
        let out = rebuild_entries(&[], &j, &listed, at(100));
        let keys: Vec<&str> = out.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["bi-5#1", "bi-7#1", "bi-7#2", "bi-0#i-2"]);
        assert!(out[0].ended_at.is_some(), "{out:?}");
        assert!(out[1].ended_at.is_none() && out[3].ended_at.is_none());
    }
}
