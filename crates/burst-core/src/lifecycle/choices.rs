//! The executor's choices, made here: which of the policy's victims may be released, and which
//! warm slaves a scale-out starts first.

use crate::model::{Phase, Slave};
use jiff::Timestamp;
use std::collections::BTreeMap;

/// The victims that can be released now: in service (or registering), as the policy saw them.
/// Anything else (already on its way out, still syncing, unknown) is named in the second list
/// and left alone.
pub fn releasable(
    slaves: &BTreeMap<String, Slave>,
    victims: &[String],
) -> (Vec<String>, Vec<String>) {
    victims.iter().cloned().partition(|id| {
        slaves
            .get(id)
            .is_some_and(|s| matches!(s.phase, Phase::InService | Phase::Registering))
    })
}

/// Up to `count` slaves of the warm pool to start, in order: the ones today's cap counts
/// already first (`counts_today`: free), then the most recently stopped (the freshest content).
/// A slave that failed is never picked.
pub fn warm_pick(
    slaves: &BTreeMap<String, Slave>,
    counts_today: impl Fn(&str) -> bool,
    count: u32,
) -> Vec<String> {
    let mut pool: Vec<(bool, Timestamp, &str)> = slaves
        .values()
        .filter(|s| s.phase == Phase::Stopped && s.failure.is_none())
        .map(|s| (counts_today(&s.id), s.since, s.id.as_str()))
        .collect();
    // Free first, then the newest in the pool.
    pool.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)));
    pool.into_iter()
        .take(usize::try_from(count).unwrap_or(0))
        .map(|(_, _, id)| id.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_780_000_000 + secs).unwrap()
    }

    fn slave(id: &str, phase: Phase, since: i64) -> (String, Slave) {
        let s = Slave {
            id: id.into(),
            intent: None,
            private_ip: None,
            private_dns: None,
            launched_at: at(0),
            phase,
            since: at(since),
            last_sync: None,
            last_sync_ok: None,
            failure: None,
            unhealthy_since: None,
            healthy_since: None,
            first_seen: at(0),
            ebs_root: true,
            restarted_at: None,
        };
        (id.to_string(), s)
    }

    #[test]
    fn only_serving_slaves_are_released() {
        let slaves: BTreeMap<String, Slave> = [
            slave("i-in", Phase::InService, 0),
            slave("i-reg", Phase::Registering, 0),
            slave("i-sync", Phase::Syncing, 0),
            slave("i-drain", Phase::Draining, 0),
        ]
        .into();
        let victims: Vec<String> = ["i-drain", "i-in", "i-gone", "i-reg", "i-sync"]
            .map(String::from)
            .to_vec();
        let (go, left) = releasable(&slaves, &victims);
        assert_eq!(go, ["i-in", "i-reg"]);
        assert_eq!(left, ["i-drain", "i-gone", "i-sync"]);
    }

    #[test]
    fn warm_slaves_already_counted_today_go_first_then_the_newest() {
        let mut failed = slave("i-failed", Phase::Stopped, 90);
        failed.1.failure = Some("stopped outside this agent".into());
        let slaves: BTreeMap<String, Slave> = [
            slave("i-old", Phase::Stopped, 10),
            slave("i-new", Phase::Stopped, 50),
            slave("i-free", Phase::Stopped, 5),
            slave("i-serving", Phase::InService, 70),
            failed,
        ]
        .into();
        let free = |id: &str| id == "i-free";
        assert_eq!(warm_pick(&slaves, free, 5), ["i-free", "i-new", "i-old"]);
        assert_eq!(warm_pick(&slaves, free, 2), ["i-free", "i-new"]);
        assert_eq!(warm_pick(&slaves, |_| false, 1), ["i-new"]);
        assert!(warm_pick(&slaves, free, 0).is_empty());
    }
}
