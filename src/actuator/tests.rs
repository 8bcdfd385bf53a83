//! The state machine's own rules, on an in-memory [`Cloud`] that does exactly what each test
//! scripts (time is passed in, so timeouts are tested without waiting). These tests claim
//! nothing about AWS: what EC2 and the ELB do is tested against moto in `tests/aws_*.rs`.

use super::cloud::{Cloud, InstanceInfo, InstanceState, LaunchRequest, MemberState};
use super::*;
use crate::aws::AwsError;
use crate::config::Dur;
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct World {
    instances: BTreeMap<String, InstanceInfo>,
    members: BTreeMap<String, MemberState>,
    next: u32,
    /// Instances each launch call gives at most (None: as asked).
    give_at_most: Option<u32>,
    /// The next launch fails with this; `launch_anyway` makes it fail after launching.
    launch_error: Option<AwsError>,
    launch_anyway: bool,
    /// New instances stay pending.
    never_boot: bool,
    /// Registered instances stay OutOfService.
    never_healthy: bool,
    /// DescribeInstanceHealth fails (a deleted ELB, a lost permission).
    health_fails: bool,
    /// New instances are not listed (EC2's eventual consistency) until this is cleared.
    hide_new: bool,
    hidden: BTreeSet<String>,
    /// Subnets where every launch gets InsufficientInstanceCapacity (None: EC2's choice).
    no_capacity_in: BTreeSet<Option<String>>,
    /// The next this-many launch calls get InsufficientInstanceCapacity, wherever they go.
    capacity_misses: u32,
    /// The subnet and client token of every launch call, in order.
    launch_subnets: Vec<Option<String>>,
    launch_tokens: Vec<String>,
    launch_types: Vec<Option<String>>,
    calls: Vec<String>,
    /// New instances have an instance-store root (they cannot stop).
    instance_store: bool,
    /// The next StartInstances is refused with InsufficientInstanceCapacity.
    start_no_capacity: bool,
    /// The next StopInstances is throttled (nothing happens).
    stop_throttled: bool,
    /// The next StopInstances takes effect but its answer is lost.
    stop_answer_lost: bool,
}

#[derive(Clone, Default)]
struct Fake(Arc<Mutex<World>>);

impl Fake {
    fn w(&self) -> std::sync::MutexGuard<'_, World> {
        self.0.lock().unwrap()
    }
}

fn err(retryable: bool) -> AwsError {
    AwsError {
        op: "RunInstances",
        code: if retryable {
            "Timeout"
        } else {
            "InvalidAMIID.NotFound"
        }
        .into(),
        message: "scripted".into(),
        retryable,
        not_applied: !retryable,
    }
}

impl Cloud for Fake {
    async fn launch(&self, req: &LaunchRequest) -> Result<Vec<InstanceInfo>, AwsError> {
        let mut w = self.w();
        w.calls.push(format!("launch {}..{}", req.min, req.max));
        w.launch_subnets.push(req.subnet.clone());
        w.launch_tokens.push(req.client_token.clone());
        w.launch_types.push(req.instance_type.clone());
        let miss = w.capacity_misses > 0;
        w.capacity_misses = w.capacity_misses.saturating_sub(1);
        if miss || w.no_capacity_in.contains(&req.subnet) {
            return Err(AwsError {
                op: "RunInstances",
                code: "InsufficientInstanceCapacity".into(),
                message: "We currently do not have sufficient capacity in the Availability Zone you requested.".into(),
                retryable: true,
                not_applied: true,
            });
        }
        let failure = w.launch_error.take();
        if failure.is_some() && !w.launch_anyway {
            return Err(failure.unwrap_or_else(|| err(false)));
        }
        let n = w.give_at_most.map_or(req.max, |g| g.min(req.max));
        let mut out = Vec::new();
        for _ in 0..n {
            w.next += 1;
            let id = format!("i-{:04}", w.next);
            let i = InstanceInfo {
                id: id.clone(),
                state: InstanceState::Pending,
                private_ip: Some(format!("10.0.0.{}", w.next)),
                private_dns: None,
                launched_at: Some(req.launched_at),
                ec2_launched_at: Some(req.launched_at),
                client_token: Some(req.client_token.clone()),
                intent: Some(req.intent.clone()),
                group: Some("default".into()),
                owner: Some(req.owner.clone()),
                draining_since: None,
                pooled_since: None,
                ebs_root: !w.instance_store,
                ended_at: None,
                instance_type: None,
                stopped_at: None,
            };
            if w.hide_new {
                w.hidden.insert(id.clone());
            }
            w.instances.insert(id, i.clone());
            out.push(i);
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    async fn describe_group(&self) -> Result<Vec<InstanceInfo>, AwsError> {
        let mut w = self.w();
        w.calls.push("describe".into());
        let boot = !w.never_boot;
        for i in w.instances.values_mut() {
            if boot && i.state == InstanceState::Pending {
                i.state = InstanceState::Running;
            }
            // A stop takes one listing to finish.
            if i.state == InstanceState::Stopping {
                i.state = InstanceState::Stopped;
            }
        }
        // The group's tag filter: an instance whose group tag is gone is not listed.
        Ok(w.instances
            .values()
            .filter(|i| i.group.as_deref() == Some("default") && !w.hidden.contains(&i.id))
            .cloned()
            .collect())
    }

    async fn describe_named(
        &self,
        ids: &[String],
        intents: &[String],
    ) -> Result<Vec<InstanceInfo>, AwsError> {
        let mut w = self.w();
        w.calls.push("describe-named".into());
        Ok(w.instances
            .values()
            .filter(|i| !w.hidden.contains(&i.id))
            .filter(|i| {
                ids.contains(&i.id) || i.intent.as_ref().is_some_and(|t| intents.contains(t))
            })
            .cloned()
            .collect())
    }

    async fn elb_members(&self) -> Result<BTreeMap<String, MemberState>, AwsError> {
        let mut w = self.w();
        w.calls.push("health".into());
        if w.health_fails {
            return Err(AwsError {
                op: "DescribeInstanceHealth",
                code: "LoadBalancerNotFound".into(),
                message: "There is no ACTIVE Load Balancer named 'site-elb'".into(),
                retryable: false,
                not_applied: true,
            });
        }
        Ok(w.members.clone())
    }

    async fn register(&self, ids: &[String]) -> Result<(), AwsError> {
        let mut w = self.w();
        w.calls.push(format!("register {ids:?}"));
        let state = if w.never_healthy {
            MemberState::OutOfService
        } else {
            MemberState::InService
        };
        for id in ids {
            w.members.insert(id.clone(), state);
        }
        Ok(())
    }

    async fn deregister(&self, ids: &[String]) -> Result<(), AwsError> {
        let mut w = self.w();
        w.calls.push(format!("deregister {ids:?}"));
        for id in ids {
            w.members.remove(id);
        }
        Ok(())
    }

    async fn terminate(&self, ids: &[String]) -> Result<(), AwsError> {
        let mut w = self.w();
        w.calls.push(format!("terminate {ids:?}"));
        for id in ids {
            if let Some(i) = w.instances.get_mut(id) {
                i.state = InstanceState::Terminated;
            }
        }
        Ok(())
    }

    async fn tag(&self, ids: &[String], key: &str, value: &str) -> Result<(), AwsError> {
        let mut w = self.w();
        w.calls.push(format!("tag {ids:?} {key}"));
        for id in ids {
            if let Some(i) = w.instances.get_mut(id) {
                if key == cloud::TAG_DRAINING_SINCE {
                    i.draining_since = value.parse().ok();
                }
                if key == cloud::TAG_GROUP {
                    i.group = Some(value.into());
                }
                if key == cloud::TAG_POOLED_SINCE {
                    i.pooled_since = value.parse().ok();
                }
            }
        }
        Ok(())
    }

    async fn untag(&self, ids: &[String], keys: &[&str]) -> Result<(), AwsError> {
        let mut w = self.w();
        w.calls.push(format!("untag {ids:?}"));
        for id in ids {
            if let Some(i) = w.instances.get_mut(id) {
                if keys.contains(&cloud::TAG_DRAINING_SINCE) {
                    i.draining_since = None;
                }
                if keys.contains(&cloud::TAG_POOLED_SINCE) {
                    i.pooled_since = None;
                }
            }
        }
        Ok(())
    }

    async fn stop(&self, ids: &[String]) -> Result<(), AwsError> {
        let mut w = self.w();
        w.calls.push(format!("stop {ids:?}"));
        if std::mem::take(&mut w.stop_throttled) {
            return Err(AwsError {
                op: "StopInstances",
                code: "RequestLimitExceeded".into(),
                message: "Request limit exceeded.".into(),
                retryable: true,
                not_applied: true,
            });
        }
        let lost = std::mem::take(&mut w.stop_answer_lost);
        // EC2: an instance-store root cannot stop; the whole call fails.
        if ids
            .iter()
            .any(|id| w.instances.get(id).is_some_and(|i| !i.ebs_root))
        {
            return Err(AwsError {
                op: "StopInstances",
                code: "UnsupportedOperation".into(),
                message: "The instance does not have an 'ebs' root device type".into(),
                retryable: false,
                not_applied: true,
            });
        }
        for id in ids {
            if let Some(i) = w.instances.get_mut(id) {
                i.state = InstanceState::Stopping;
            }
        }
        if lost {
            return Err(err(true));
        }
        Ok(())
    }

    async fn start(&self, ids: &[String]) -> Result<(), AwsError> {
        let mut w = self.w();
        w.calls.push(format!("start {ids:?}"));
        if std::mem::take(&mut w.start_no_capacity) {
            return Err(AwsError {
                op: "StartInstances",
                code: "InsufficientInstanceCapacity".into(),
                message: "no capacity".into(),
                retryable: true,
                not_applied: true,
            });
        }
        for id in ids {
            if let Some(i) = w.instances.get_mut(id) {
                i.state = InstanceState::Pending;
            }
        }
        Ok(())
    }
}

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(ts("2026-11-25T01:00:00Z").as_second() + secs).unwrap()
}

fn setup(dir: &std::path::Path) -> (Fake, Actuator<Fake>) {
    setup_with(dir, |_| {})
}

/// [`setup`] with the warm pool off (the tests of termination), unless `edit` turns it on.
fn setup_with(dir: &std::path::Path, edit: impl FnOnce(&mut Config)) -> (Fake, Actuator<Fake>) {
    let mut cfg = Config::default();
    cfg.fleet.warm_pool = 0;
    cfg.agent.state_dir = dir.to_path_buf();
    cfg.cap.time_zone = "UTC".into();
    cfg.elb.name = "site-elb".into();
    cfg.hooks.pre_register.argv = vec!["true".into()];
    cfg.hooks.content_sync = None;
    cfg.fleet.boot_timeout = Dur::secs(60);
    cfg.elb.register_timeout = Dur::secs(60);
    cfg.elb.draining_timeout = Dur::secs(30);
    edit(&mut cfg);
    let fake = Fake::default();
    let mut act = Actuator::open(fake.clone(), &cfg, at(0)).unwrap();
    // A first start: CloudWatch's copy of today's count says nothing was launched.
    act.cap_read_back(Ok(None), at(0));
    // A site whose content path is proven (a sync went through with this hook, image and key):
    // the tests of the brake's proof start from an unproven one.
    act.prove_sync(at(0));
    (fake, act)
}

/// [`setup_with`], with no sync proven yet (a new install, a new image, a new key).
fn setup_unproven(dir: &std::path::Path, edit: impl FnOnce(&mut Config)) -> (Fake, Actuator<Fake>) {
    let (fake, act) = setup_with(dir, edit);
    let cfg = act.cfg.clone();
    drop(act);
    std::fs::remove_file(dir.join("state.json")).unwrap();
    let mut act = Actuator::open(fake.clone(), &cfg, at(0)).unwrap();
    act.cap_read_back(Ok(None), at(0));
    (fake, act)
}

fn decision(count: u32) -> Decision {
    let cap = crate::cap::CapLedger::new("UTC", 7, None)
        .unwrap()
        .status(at(0));
    let why = crate::policy::Explanation::bare(cap);
    Decision::ScaleOut { count, why }
}

/// Steps at `now` until the hooks it started have finished and been collected.
async fn settle(act: &mut Actuator<Fake>, now: Timestamp) {
    for _ in 0..200 {
        act.step(now).await.unwrap();
        if act.hooks_in_flight() == 0 {
            act.step(now).await.unwrap();
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("hooks did not finish");
}

#[tokio::test]
async fn a_slave_that_never_runs_is_terminated_at_the_boot_timeout_never_registered() {
    let d = tempfile::tempdir().unwrap();
    let (fake, mut act) = setup(d.path());
    fake.w().never_boot = true;
    let r = act.apply(&decision(1), at(0)).await;
    let id = r.launched[0].clone();
    act.step(at(59)).await.unwrap();
    assert_eq!(act.slave(&id).unwrap().phase, Phase::Pending);
    let r = act.step(at(61)).await.unwrap();
    assert_eq!(r.terminated, vec![id.clone()]);
    assert!(fake.w().members.is_empty());
    assert!(act
        .slave(&id)
        .unwrap()
        .failure
        .as_deref()
        .unwrap()
        .contains("not running"));
    // Once EC2 says terminated, it is gone and its ledger entry ended.
    act.step(at(70)).await.unwrap();
    assert!(act.slave(&id).is_none());
    assert!(act.ledger().entries()[0].ended_at.is_some());
}

#[tokio::test]
async fn a_slave_the_elb_never_calls_healthy_is_deregistered_and_terminated() {
    let d = tempfile::tempdir().unwrap();
    let (fake, mut act) = setup(d.path());
    fake.w().never_healthy = true;
    let id = act.apply(&decision(1), at(0)).await.launched[0].clone();
    settle(&mut act, at(1)).await;
    assert_eq!(act.slave(&id).unwrap().phase, Phase::Registering);
    let r = act.step(at(100)).await.unwrap();
    assert_eq!(r.deregistered, vec![id.clone()]);
    assert_eq!(r.terminated, vec![id.clone()]);
    let calls = fake.w().calls.join("\n");
    let dereg = calls.find("deregister").unwrap();
    let term = calls.find("terminate").unwrap();
    assert!(dereg < term, "deregistered before terminated:\n{calls}");
}

#[tokio::test]
async fn fewer_instances_than_asked_withdraw_the_unfilled_attempts() {
    let d = tempfile::tempdir().unwrap();
    let (fake, mut act) = setup(d.path());
    fake.w().give_at_most = Some(1);
    let r = act.apply(&decision(3), at(0)).await;
    // First call min 1..3 gives 1; the second asks for the other 2 all-or-nothing, gives 1.
    assert_eq!(r.launched.len(), 2);
    assert_eq!(fake.w().calls[..2], ["launch 1..3", "launch 2..2"]);
    assert_eq!(
        act.ledger().used(at(0)),
        2,
        "the unfilled attempt is withdrawn"
    );
    assert_eq!(act.journal().unresolved().count(), 0);
}

#[tokio::test]
async fn a_final_launch_error_launches_and_counts_nothing() {
    let d = tempfile::tempdir().unwrap();
    let (fake, mut act) = setup(d.path());
    fake.w().launch_error = Some(err(false));
    let r = act.apply(&decision(2), at(0)).await;
    assert!(r.launched.is_empty());
    assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
    assert_eq!(act.ledger().used(at(0)), 0);
    assert!(matches!(
        act.journal().intents[0].outcome,
        Outcome::Failed { .. }
    ));
}

#[tokio::test]
async fn an_ambiguous_launch_error_stays_counted_and_is_resolved_by_tag_not_relaunched() {
    let d = tempfile::tempdir().unwrap();
    let (fake, mut act) = setup(d.path());
    {
        let mut w = fake.w();
        w.launch_error = Some(err(true));
        w.launch_anyway = true; // the call timed out, but EC2 did launch
    }
    let r = act.apply(&decision(2), at(0)).await;
    assert!(r.launched.is_empty());
    assert_eq!(act.ledger().used(at(0)), 2, "still counted while unknown");
    assert_eq!(act.journal().unresolved().count(), 1);
    act.step(at(5)).await.unwrap();
    assert_eq!(act.journal().unresolved().count(), 0);
    assert_eq!(act.slaves().count(), 2, "adopted by intent tag");
    let launches = fake
        .w()
        .calls
        .iter()
        .filter(|c| c.starts_with("launch"))
        .count();
    assert_eq!(launches, 1, "never launched twice");
    assert_eq!(act.ledger().used(at(5)), 2);
}

#[tokio::test]
async fn a_slave_terminated_outside_the_agent_is_dropped_and_its_entry_ended() {
    let d = tempfile::tempdir().unwrap();
    let (fake, mut act) = setup(d.path());
    let id = act.apply(&decision(1), at(0)).await.launched[0].clone();
    settle(&mut act, at(1)).await;
    assert_eq!(act.slave(&id).unwrap().phase, Phase::InService);
    fake.w().instances.get_mut(&id).unwrap().state = InstanceState::Terminated;
    act.step(at(20)).await.unwrap();
    assert!(act.slave(&id).is_none());
    assert!(act
        .recent_errors()
        .any(|(_, e)| e.contains("terminated by someone else")));
    assert_eq!(fake.w().members.len(), 0, "deregistered from the ELB");
    assert_eq!(act.ledger().entries()[0].ended_at, Some(at(20)));
}

#[tokio::test]
async fn a_draining_slave_found_at_adoption_keeps_draining_and_is_never_registered_again() {
    let d = tempfile::tempdir().unwrap();
    let (fake, mut act) = setup(d.path());
    let id = act.apply(&decision(1), at(0)).await.launched[0].clone();
    settle(&mut act, at(1)).await;
    act.apply(
        &Decision::ScaleIn {
            instances: vec![id.clone()],
            why: decision(0).explanation().clone(),
        },
        at(10),
    )
    .await;
    act.step(at(10)).await.unwrap();
    assert!(fake.w().members.is_empty());
    // The agent restarts mid-drain.
    let mut again = Actuator::open(fake.clone(), &act.cfg, at(15)).unwrap();
    let r = again.adopt(at(15)).await.unwrap();
    assert_eq!(r.adopted, vec![id.clone()]);
    assert_eq!(again.slave(&id).unwrap().phase, Phase::Draining);
    again.step(at(20)).await.unwrap();
    assert!(fake.w().members.is_empty(), "not registered again");
    assert_eq!(again.slave(&id).unwrap().phase, Phase::Draining);
    // When it left the ELB is unknown (the tag was written before), so it drains the whole
    // timeout from the restart: in-flight requests are never cut short. 15 + 30 s.
    let r = again.step(at(41)).await.unwrap();
    assert!(r.terminated.is_empty(), "cut short: {r:?}");
    let r = again.step(at(46)).await.unwrap();
    assert_eq!(r.terminated, [id]);
}

#[tokio::test]
async fn a_tagged_slave_still_in_the_elb_at_adoption_is_deregistered_first() {
    let d = tempfile::tempdir().unwrap();
    let (fake, mut act) = setup(d.path());
    let id = act.apply(&decision(1), at(0)).await.launched[0].clone();
    settle(&mut act, at(1)).await;
    // Released (the record, then the tag); the agent died before deregistering.
    act.apply(&scale_in(std::slice::from_ref(&id)), at(10))
        .await;
    assert!(fake.w().instances[&id].draining_since.is_some());
    assert!(fake.w().members.contains_key(&id));
    let mut again = Actuator::open(fake.clone(), &act.cfg, at(15)).unwrap();
    again.adopt(at(15)).await.unwrap();
    assert_eq!(again.slave(&id).unwrap().phase, Phase::Releasing);
    let r = again.step(at(16)).await.unwrap();
    assert_eq!(r.deregistered, std::slice::from_ref(&id));
    assert!(fake.w().members.is_empty());
    assert!(again.step(at(40)).await.unwrap().terminated.is_empty());
    assert_eq!(again.step(at(47)).await.unwrap().terminated, [id]);
}

#[tokio::test]
async fn a_reload_applies_the_cap_at_once() {
    let d = tempfile::tempdir().unwrap();
    let (_fake, mut act) = setup(d.path());
    let mut cfg = act.cfg.clone();
    cfg.cap.daily_limit = 1;
    act.reconfigure(&cfg, at(0));
    assert_eq!(act.apply(&decision(1), at(0)).await.launched.len(), 1);
    assert_eq!(
        act.apply(&decision(1), at(1)).await.refused,
        1,
        "past a limit of 1"
    );
    // Raised: the next decision launches.
    cfg.cap.daily_limit = 3;
    act.reconfigure(&cfg, at(2));
    assert_eq!(act.apply(&decision(2), at(2)).await.launched.len(), 2);
    // Lowered to 0 to stop spending: nothing more, whatever the policy says.
    cfg.cap.daily_limit = 0;
    act.reconfigure(&cfg, at(3));
    let r = act.apply(&decision(1), at(3)).await;
    assert!(r.launched.is_empty() && r.refused == 1, "{r:?}");
    // And it is what the next start reads.
    let again = Actuator::open(_fake.clone(), &cfg, at(4)).unwrap();
    assert_eq!(again.ledger().remaining(at(4)), 0);
    assert_eq!(again.ledger().used(at(4)), 3);
}

fn tagged(id: &str, owner: Option<&str>, intent: Option<&str>) -> InstanceInfo {
    InstanceInfo {
        id: id.into(),
        state: InstanceState::Running,
        private_ip: Some("10.0.9.9".into()),
        private_dns: None,
        launched_at: Some(at(-3600)),
        ec2_launched_at: Some(at(-3600)),
        client_token: None,
        intent: intent.map(str::to_string),
        group: Some("default".into()),
        owner: owner.map(str::to_string),
        draining_since: None,
        pooled_since: None,
        ebs_root: true,
        ended_at: None,
        instance_type: None,
        stopped_at: None,
    }
}

#[test]
fn ownership_is_by_record_never_by_tag_and_never_the_master() {
    use Ownership::*;
    let own = Some("i-master");
    let none = Known::default();
    let elb = Known {
        in_our_elb: true,
        ..Known::default()
    };
    let intent = Known {
        intent: true,
        ..Known::default()
    };
    let open_intent = Known {
        open_intent: true,
        intent: true,
        ..Known::default()
    };
    let records = Known {
        instance: true,
        ..Known::default()
    };
    let upgraded = |k: Known| Known {
        trust_tags: true,
        ..k
    };
    // Tagged with this install's group, owner and an intent, but no record names it: anyone
    // with ec2:CreateTags can write those tags.
    let forged = tagged("i-1", Some("site-elb"), Some("bi-1"));
    assert!(matches!(
        ownership(&forged, "site-elb", own, none),
        Foreign(_)
    ));
    assert!(matches!(
        ownership(&forged, "site-elb", own, elb),
        Foreign(_)
    ));
    // A resolved intent it copied does not make it ours; an open one (the answer of its
    // RunInstances was lost) does, and the records name what the agent launched.
    assert!(matches!(
        ownership(&forged, "site-elb", own, intent),
        Foreign(_)
    ));
    assert_eq!(ownership(&forged, "site-elb", own, open_intent), Ours);
    assert_eq!(ownership(&forged, "site-elb", own, records), Ours);
    // Whatever its tags say, once the records name it (elb.name changed, tags removed).
    let other = tagged("i-2", Some("other-elb"), Some("bi-2"));
    assert_eq!(ownership(&other, "site-elb", own, records), Ours);
    assert!(matches!(
        ownership(&other, "site-elb", own, upgraded(elb)),
        Foreign(_)
    ));
    // The master's own instance, whatever its tags or the records say.
    let master = tagged("i-master", Some("site-elb"), Some("bi-3"));
    let all = Known {
        instance: true,
        open_intent: true,
        intent: true,
        in_our_elb: true,
        trust_tags: true,
    };
    assert!(matches!(
        ownership(&master, "site-elb", own, all),
        Foreign(_)
    ));
    // Once, after an upgrade from an agent before records: the owner tag claims it; a slave
    // from before owner tags needs its intent in the journal, or to serve from our ELB while
    // the master's id is known (else the master itself could be taken).
    assert_eq!(ownership(&forged, "site-elb", own, upgraded(none)), Legacy);
    let old = tagged("i-4", None, Some("bi-4"));
    assert_eq!(ownership(&old, "site-elb", own, upgraded(intent)), Legacy);
    assert_eq!(ownership(&old, "site-elb", own, upgraded(elb)), Legacy);
    assert!(matches!(
        ownership(&old, "site-elb", own, intent),
        Foreign(_)
    ));
    assert!(matches!(
        ownership(&old, "site-elb", None, upgraded(elb)),
        Foreign(_)
    ));
    assert!(matches!(
        ownership(&old, "site-elb", own, upgraded(none)),
        Foreign(_)
    ));
    // No owner and no intent: never launched by any burst-agent.
    let hand = tagged("i-5", None, None);
    assert!(matches!(
        ownership(&hand, "site-elb", own, upgraded(elb)),
        Foreign(_)
    ));
}

#[tokio::test]
async fn instances_that_are_not_ours_are_never_synced_registered_or_terminated() {
    let d = tempfile::tempdir().unwrap();
    let (fake, act) = setup(d.path());
    // An agent from before records has run here (version 2 of state.json): its slaves are
    // claimed by their tags once, at this adoption (a first start that finds tagged instances
    // waits for `burst-agent repair`: see lost_state_with_our_instances_in_ec2_...).
    state::save(&RealDisk, d.path(), act.ledger(), act.journal()).unwrap();
    let path = state::path_in(d.path());
    let v3 = std::fs::read_to_string(&path).unwrap();
    let v2 = v3.replace("\"version\": 3", "\"version\": 2");
    assert_ne!(v2, v3);
    std::fs::write(&path, v2).unwrap();
    let mut act = Actuator::open(fake.clone(), &act.cfg, at(0)).unwrap();
    act.set_own_instance(Some("i-master".into()));
    {
        let mut w = fake.w();
        for i in [
            // Another install's slave of the same group, running, not in our ELB.
            tagged("i-other", Some("other-elb"), Some("bi-other")),
            // The master itself, built from a slave's image: group and intent tags, in the ELB.
            tagged("i-master", None, Some("bi-copied")),
            // A slave of ours from before owner tags, in service in our ELB.
            tagged("i-legacy", None, Some("bi-legacy")),
            // Tagged with the group by hand.
            tagged("i-hand", None, None),
        ] {
            w.instances.insert(i.id.clone(), i);
        }
        w.members.insert("i-master".into(), MemberState::InService);
        w.members.insert("i-legacy".into(), MemberState::InService);
    }
    let r = act.adopt(at(0)).await.unwrap();
    assert_eq!(r.adopted, ["i-legacy"]);
    assert_eq!(r.foreign, ["i-hand", "i-master", "i-other"]);
    assert!(fake
        .w()
        .calls
        .contains(&format!("tag {:?} {}", ["i-legacy"], cloud::TAG_OWNER)));

    // Scale-out, a full sync round, and a scale-in naming every id the agent has ever seen.
    let new = act.apply(&decision(1), at(1)).await.launched[0].clone();
    settle(&mut act, at(2)).await;
    act.request_sync();
    settle(&mut act, at(3)).await;
    let everyone: Vec<String> = ["i-other", "i-master", "i-hand", "i-legacy", new.as_str()]
        .map(String::from)
        .to_vec();
    act.apply(
        &Decision::ScaleIn {
            instances: everyone,
            why: decision(0).explanation().clone(),
        },
        at(10),
    )
    .await;
    for t in [11, 50, 100] {
        act.step(at(t)).await.unwrap();
    }
    let w = fake.w();
    for foreign in ["i-other", "i-master", "i-hand"] {
        assert_eq!(
            w.instances[foreign].state,
            InstanceState::Running,
            "{foreign}"
        );
        let touched: Vec<&String> = w
            .calls
            .iter()
            .filter(|c| !c.starts_with("describe") && c.contains(foreign))
            .collect();
        assert!(touched.is_empty(), "{foreign} was touched: {touched:?}");
    }
    assert!(
        w.members.contains_key("i-master"),
        "the master left the ELB"
    );
    // Ours went the whole way.
    assert_eq!(w.instances["i-legacy"].state, InstanceState::Terminated);
    assert_eq!(w.instances[&new].state, InstanceState::Terminated);
}

/// Issue 19, part 1: someone with ec2:CreateTags tags an instance of theirs with this install's
/// group, owner and a copied intent. No record names it: it is foreign (an event, `status`),
/// never synced, registered or terminated, and not counted, until the operator's
/// `repair --adopt` says it is this install's.
#[tokio::test]
async fn an_instance_tagged_as_ours_by_someone_else_is_left_alone_until_an_operator_adopts_it() {
    let d = tempfile::tempdir().unwrap();
    let (fake, mut act) = setup(d.path());
    act.set_own_instance(Some("i-master".into()));
    act.adopt(at(0)).await.unwrap();
    let ours = act.apply(&decision(1), at(1)).await.launched[0].clone();
    settle(&mut act, at(2)).await;
    let copied = fake.w().instances[&ours].intent.clone();
    let mut forged = tagged("i-forged", Some("site-elb"), copied.as_deref());
    forged.launched_at = Some(at(2));
    fake.w().instances.insert(forged.id.clone(), forged);
    let r = act.step(at(3)).await.unwrap();
    assert!(r.foreign.contains(&"i-forged".to_string()), "{r:?}");
    assert!(r.adopted.is_empty(), "{r:?}");
    assert_eq!(act.foreign(), ["i-forged"]);
    assert_eq!(
        act.candidates()
            .iter()
            .map(|c| c.id.as_str())
            .collect::<Vec<_>>(),
        ["i-forged"]
    );
    let told = act.take_events();
    assert!(
        told.iter()
            .any(|e| e.kind == EventKind::ForeignInstance && e.detail.contains("i-forged")),
        "{told:?}"
    );
    assert_eq!(act.ledger().used(at(3)), 1, "the stranger is not charged");
    // Syncs, a scale-in naming it, and the drain: it is never touched.
    act.request_sync();
    settle(&mut act, at(4)).await;
    act.apply(
        &Decision::ScaleIn {
            instances: vec!["i-forged".into(), ours.clone()],
            why: decision(0).explanation().clone(),
        },
        at(10),
    )
    .await;
    for t in [11, 50, 100] {
        act.step(at(t)).await.unwrap();
    }
    {
        let w = fake.w();
        assert_eq!(w.instances["i-forged"].state, InstanceState::Running);
        assert_eq!(w.instances[&ours].state, InstanceState::Terminated);
        let touched: Vec<&String> = w
            .calls
            .iter()
            .filter(|c| !c.starts_with("describe") && c.contains("i-forged"))
            .collect();
        assert!(touched.is_empty(), "i-forged was touched: {touched:?}");
    }
    // The operator's word: only a listed candidate can be adopted, and nothing changes on a
    // typo.
    let e = act
        .repair(at(200), None, &["i-typo".into()])
        .await
        .unwrap_err();
    assert!(e.to_string().contains("not a candidate"), "{e}");
    assert!(!act.owned().contains("i-forged"));
    let lines = act.repair(at(200), None, &[]).await.unwrap();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("candidate, left alone: i-forged") && l.contains("launched")),
        "{lines:?}"
    );
    assert!(!act.owned().contains("i-forged"));
    let lines = act
        .repair(at(201), None, &["i-forged".into()])
        .await
        .unwrap();
    assert!(
        lines.iter().any(|l| l.starts_with("adopted i-forged")),
        "{lines:?}"
    );
    assert!(act.owned().contains("i-forged"));
    act.step(at(202)).await.unwrap();
    assert!(act.slave("i-forged").is_some(), "adopted, then tracked");
}

/// Issue 19, part 1: the records, not the tag, keep a slave: one whose group tag is removed is
/// found by id, still tracked and counted (across a restart too), and tagged again.
#[tokio::test]
async fn a_slave_whose_group_tag_is_removed_is_found_by_id_and_tagged_again() {
    let d = tempfile::tempdir().unwrap();
    let (fake, mut act) = setup(d.path());
    let id = act.apply(&decision(1), at(0)).await.launched[0].clone();
    settle(&mut act, at(1)).await;
    assert_eq!(act.slave(&id).unwrap().phase, Phase::InService);
    // Both removed: nothing but the records can find it.
    for key in ["group", "owner"] {
        let mut w = fake.w();
        let i = w.instances.get_mut(&id).unwrap();
        match key {
            "group" => i.group = None,
            _ => i.owner = None,
        }
    }
    // Long past the settle time in which an unlisted slave would still count.
    act.step(at(1000)).await.unwrap();
    assert_eq!(act.slave(&id).map(|s| s.phase), Some(Phase::InService));
    assert!(fake
        .w()
        .calls
        .contains(&format!("tag {:?} {}", [&id], cloud::TAG_GROUP)));
    assert_eq!(fake.w().instances[&id].group.as_deref(), Some("default"));
    // Removed again, and the agent restarts: the state's records still name it.
    fake.w().instances.get_mut(&id).unwrap().group = None;
    let cfg = act.cfg.clone();
    drop(act);
    let mut again = Actuator::open(fake.clone(), &cfg, at(1001)).unwrap();
    again.adopt(at(1001)).await.unwrap();
    assert!(again.slave(&id).is_some(), "lost at the restart");
    assert_eq!(again.ledger().used(at(1001)), 1);
    assert!(again.foreign().is_empty());
}

/// Issue 19, part 3: a sync that fails the same way twice trips the brake; launches that cost a
/// unit are refused (the last guard, whatever the policy asked), an alert says why; it survives
/// a restart; a reload releases it.
#[tokio::test]
async fn a_sync_that_fails_the_same_way_twice_holds_launches_until_a_reload() {
    let d = tempfile::tempdir().unwrap();
    let (fake, mut act) = setup_with(d.path(), |c| {
        c.hooks.pre_register.argv = vec![
            "sh".into(),
            "-c".into(),
            "echo 'burst-agent@10.0.0.9: Permission denied (publickey).' >&2; exit 255".into(),
        ];
        c.hooks.pre_register.retries = 0;
    });
    for n in 0..2 {
        let id = act.apply(&decision(1), at(n * 10)).await.launched[0].clone();
        settle(&mut act, at(n * 10 + 1)).await;
        assert!(
            !fake.w().members.contains_key(&id),
            "registered without content"
        );
    }
    let t = act.sync_broken().expect("not tripped after two");
    assert!(
        t.cause.contains("ssh") || t.cause.contains("publickey"),
        "{t:?}"
    );
    let told = act.take_events();
    assert!(
        told.iter().any(|e| e.kind == EventKind::SyncBroken),
        "{told:?}"
    );
    let r = act.apply(&decision(3), at(30)).await;
    assert!(r.launched.is_empty(), "{r:?}");
    assert_eq!(r.refused, 3);
    assert_eq!(act.ledger().used(at(30)), 2, "the third unit was spent");
    // Across a restart (a crash loop must not re-arm the cap).
    let cfg = act.cfg.clone();
    drop(act);
    let mut act = Actuator::open(fake.clone(), &cfg, at(40)).unwrap();
    assert!(act.sync_broken().is_some(), "lost at the restart");
    assert!(act.apply(&decision(1), at(41)).await.launched.is_empty());
    // A reload of the unchanged file fixes nothing: the brake stays on.
    act.reconfigure(&cfg.clone(), at(45));
    assert!(
        act.sync_broken().is_some(),
        "released by an unchanged reload"
    );
    assert!(act.apply(&decision(1), at(46)).await.launched.is_empty());
    // Fixed and reloaded: it launches at the next decision.
    let mut fixed = cfg.clone();
    fixed.hooks.pre_register.argv = vec!["true".into()];
    act.reconfigure(&fixed, at(50));
    assert!(act.sync_broken().is_none());
    let id = act.apply(&decision(1), at(51)).await.launched[0].clone();
    settle(&mut act, at(52)).await;
    act.step(at(53)).await.unwrap();
    assert!(fake.w().members.contains_key(&id));
}

/// Issue 28, part 4: proof before speed. With no sync proven for this hook, image and key, at
/// most two paid slaves sync at once; once one went through, a burst launches at full speed.
#[tokio::test]
async fn without_a_proven_sync_two_launch_and_the_rest_follow_once_one_syncs() {
    let d = tempfile::tempdir().unwrap();
    let (_fake, mut act) = setup_unproven(d.path(), |_| {});
    let r = act.apply(&decision(5), at(0)).await;
    assert_eq!(r.launched.len(), 2, "{r:?}");
    assert_eq!(r.refused, 3);
    // Still on their way: nothing more.
    let r = act.apply(&decision(3), at(1)).await;
    assert!(r.launched.is_empty(), "{r:?}");
    for t in 2..5 {
        settle(&mut act, at(t)).await;
    }
    // Proven: the rest at once.
    let r = act.apply(&decision(3), at(10)).await;
    assert_eq!(r.launched.len(), 3, "{r:?}");
}

/// Issue 28, part 4: a `pre_register` that always runs past its timeout (the content outgrew
/// it, or ssh hangs on the image) spent 7 of 7 units in 120 s. A timeout is a cause like any
/// other now: two units, then the brake.
#[tokio::test]
async fn a_sync_that_always_runs_past_its_timeout_spends_two_units_not_the_day() {
    let d = tempfile::tempdir().unwrap();
    let (fake, mut act) = setup_unproven(d.path(), |c| {
        c.hooks.pre_register.argv = vec!["sleep".into(), "30".into()];
        c.hooks.pre_register.timeout = Dur::millis(200);
        c.hooks.pre_register.retries = 0;
    });
    for n in 0..12 {
        act.apply(&decision(7), at(n * 10)).await;
        settle(&mut act, at(n * 10 + 1)).await;
    }
    assert!(fake.w().members.is_empty(), "registered without content");
    let t = act
        .sync_broken()
        .expect("a sync that always times out never tripped the brake");
    assert!(t.cause.contains("timeout"), "{t:?}");
    assert_eq!(
        act.ledger().used(at(200)),
        2,
        "units spent on slaves that cannot serve"
    );
}

/// Issue 28, part 4: a launch EC2 lists late. Its answer was lost, and EC2 listed nothing for
/// the 300 s after the call, so the intent was settled as "launched nothing"; its instance
/// appeared after that and became a foreign candidate: running, uncounted, never released.
/// Its EC2 ClientToken (which nobody can change after launch) is one of the intent's: claimed,
/// tracked and counted.
#[tokio::test]
async fn a_launch_ec2_lists_after_its_intent_was_settled_is_claimed_by_its_client_token() {
    let d = tempfile::tempdir().unwrap();
    let (fake, mut act) = setup(d.path());
    {
        let mut w = fake.w();
        w.launch_error = Some(err(true));
        w.launch_anyway = true;
        w.hide_new = true;
    }
    let r = act.apply(&decision(1), at(0)).await;
    assert!(r.launched.is_empty(), "{r:?}");
    act.step(at(10)).await.unwrap();
    act.step(at(400)).await.unwrap();
    assert_eq!(act.ledger().used(at(400)), 0, "settled as launched nothing");
    // EC2 lists it now.
    let id = {
        let mut w = fake.w();
        w.hide_new = false;
        let id = w.hidden.iter().next().unwrap().clone();
        w.hidden.clear();
        id
    };
    act.step(at(410)).await.unwrap();
    assert!(act.slave(&id).is_some(), "not tracked: {:?}", act.foreign());
    assert!(act.foreign().is_empty(), "{:?}", act.foreign());
    assert_eq!(act.ledger().used(at(410)), 1, "not counted");
}

/// Issue 28, part 4: tags anyone with `ec2:CreateTags` can write are not records. A far-future
/// `burst-agent:launched-at` used to make a slave never a scale-in victim (it ran and was charged
/// every day), and `burst-agent:draining-since` made a serving slave adopt as Releasing.
#[tokio::test]
async fn forged_launch_and_release_tags_change_nothing_at_adoption() {
    let d = tempfile::tempdir().unwrap();
    let (fake, mut act) = setup(d.path());
    let id = act.apply(&decision(1), at(0)).await.launched[0].clone();
    for t in 1..4 {
        settle(&mut act, at(t)).await;
    }
    assert_eq!(act.slave(&id).map(|s| s.phase), Some(Phase::InService));
    let launched = act.slave(&id).unwrap().launched_at;
    {
        let mut w = fake.w();
        let i = w.instances.get_mut(&id).unwrap();
        // What a describe reads back from the forged tags.
        i.launched_at = Some("2099-01-01T00:00:00Z".parse().unwrap());
        i.draining_since = Some(at(5));
    }
    let mut again = Actuator::open(fake.clone(), &act.cfg, at(20)).unwrap();
    again.adopt(at(20)).await.unwrap();
    let s = again.slave(&id).unwrap();
    assert_eq!(
        s.phase,
        Phase::InService,
        "adopted from a forged release tag"
    );
    assert_eq!(
        s.launched_at, launched,
        "launch time taken from a forged tag"
    );
    again.step(at(21)).await.unwrap();
    assert!(
        fake.w().members.contains_key(&id),
        "deregistered on a forged tag"
    );
}

/// Issue 28, part 4: a failed DescribeInstanceHealth (a deleted ELB, a lost permission) used to
/// fail the whole step: slaves ran on, never released. Now the step goes on; nothing is
/// registered, released or judged on the health it could not read.
#[tokio::test]
async fn an_elb_that_cannot_be_read_stops_no_step_and_judges_no_health() {
    let d = tempfile::tempdir().unwrap();
    let (fake, mut act) = setup(d.path());
    let a = act.apply(&decision(1), at(0)).await.launched[0].clone();
    for t in 1..4 {
        settle(&mut act, at(t)).await;
    }
    assert_eq!(act.slave(&a).map(|s| s.phase), Some(Phase::InService));
    fake.w().health_fails = true;
    let b = act.apply(&decision(1), at(10)).await.launched[0].clone();
    for t in 11..15 {
        settle(&mut act, at(t)).await;
    }
    // The new slave synced and waits; the serving one is not judged, even past the
    // register_timeout (60 s here) that would fail a slave the ELB calls unhealthy.
    assert_eq!(act.slave(&b).map(|s| s.phase), Some(Phase::Synced));
    let r = act.step(at(500)).await.expect("the step goes on");
    assert!(
        r.terminated.is_empty() && r.deregistered.is_empty(),
        "{r:?}"
    );
    assert_eq!(act.slave(&a).map(|s| s.phase), Some(Phase::InService));
    assert!(act
        .recent_errors()
        .any(|(_, e)| e.contains("instance health could not be read")));
    assert!(
        !fake
            .w()
            .calls
            .iter()
            .any(|c| c.starts_with("register") && c.contains(&b)),
        "registered on unknown health"
    );
    // Read again: registered, and serving.
    fake.w().health_fails = false;
    for t in 501..505 {
        settle(&mut act, at(t)).await;
    }
    assert_eq!(act.slave(&b).map(|s| s.phase), Some(Phase::InService));
    assert_eq!(act.slave(&a).map(|s| s.phase), Some(Phase::InService));
}

/// Issue 19, part 4: content is checked, not assumed. A slave whose content check fails after
/// its sync is never registered; a serving slave whose check fails after a periodic sync is
/// taken out.
#[tokio::test]
async fn a_slave_that_does_not_serve_the_site_is_never_registered_and_is_taken_out() {
    let d = tempfile::tempdir().unwrap();
    let fail = Hook {
        argv: [
            "sh",
            "-c",
            "echo 'GET http://10.0.0.1/index.html answered 404' >&2; exit 1",
        ]
        .map(String::from)
        .to_vec(),
        retries: 0,
        ..Hook::default()
    };
    let pass = Hook {
        argv: vec!["true".into()],
        ..Hook::default()
    };
    let failing = fail.clone();
    let (fake, mut act) = setup_with(d.path(), move |c| c.hooks.content_check = Some(failing));
    let id = act.apply(&decision(1), at(0)).await.launched[0].clone();
    for t in 1..4 {
        settle(&mut act, at(t)).await;
    }
    assert!(!fake.w().members.contains_key(&id), "registered unchecked");
    assert_eq!(fake.w().instances[&id].state, InstanceState::Terminated);
    assert!(act
        .recent_errors()
        .any(|(_, e)| e.contains("content check") && e.contains("answered 404")));
    // A checked slave serves; a later sync whose check fails takes it out.
    let mut cfg = act.cfg.clone();
    cfg.hooks.content_check = Some(pass);
    act.reconfigure(&cfg, at(10));
    let id = act.apply(&decision(1), at(11)).await.launched[0].clone();
    for t in 12..16 {
        settle(&mut act, at(t)).await;
    }
    assert_eq!(act.slave(&id).map(|s| s.phase), Some(Phase::InService));
    cfg.hooks.content_check = Some(fail);
    act.reconfigure(&cfg, at(20));
    act.request_sync();
    for t in 21..26 {
        settle(&mut act, at(t)).await;
    }
    assert!(!fake.w().members.contains_key(&id), "left serving");
    assert_eq!(fake.w().instances[&id].state, InstanceState::Terminated);
}

/// Issue 19, part 6: a wiped state directory an hour after the morning's slaves ended (EC2 no
/// longer lists them) must not grant a fresh day. Launches wait until CloudWatch's copy of
/// today's count is read back, and the ledger then counts at least that.
#[tokio::test]
async fn lost_state_waits_for_todays_count_from_cloudwatch_and_never_grants_a_fresh_day() {
    let d = tempfile::tempdir().unwrap();
    let mut cfg = Config::default();
    cfg.fleet.warm_pool = 0;
    cfg.agent.state_dir = d.path().to_path_buf();
    cfg.cap.time_zone = "UTC".into();
    cfg.elb.name = "site-elb".into();
    cfg.hooks.pre_register.argv = vec!["true".into()];
    cfg.hooks.content_sync = None;
    let fake = Fake::default();
    let mut act = Actuator::open(fake.clone(), &cfg, at(0)).unwrap();
    assert!(
        act.cap_unverified().is_some(),
        "no state: today's count is unknown"
    );
    let r = act.apply(&decision(1), at(1)).await;
    assert!(r.launched.is_empty() && r.refused == 1, "{r:?}");
    act.cap_read_back(Err("throttled".into()), at(2));
    let why = act.cap_unverified().unwrap().to_string();
    assert!(
        why.contains("throttled") && why.contains("repair --used-today"),
        "{why}"
    );
    assert!(act.apply(&decision(1), at(3)).await.launched.is_empty());
    // The morning's 5 of 7, as the agent published them before its state was wiped.
    act.cap_read_back(Ok(Some(5)), at(4));
    assert!(act.cap_unverified().is_none());
    assert_eq!(act.ledger().used(at(4)), 5);
    let r = act.apply(&decision(3), at(5)).await;
    assert_eq!(r.launched.len(), 2, "{r:?}");
    assert_eq!(r.refused, 1);
    // Written: a restart keeps the count.
    drop(act);
    let again = Actuator::open(fake.clone(), &cfg, at(6)).unwrap();
    assert!(again.cap_unverified().is_none());
    assert_eq!(again.ledger().used(at(6)), 7);
}

#[tokio::test]
async fn slaves_the_records_name_stay_ours_when_the_elb_is_renamed() {
    let d = tempfile::tempdir().unwrap();
    let (fake, mut act) = setup(d.path());
    let id = act.apply(&decision(1), at(0)).await.launched[0].clone();
    settle(&mut act, at(1)).await;
    // Restarted with elb.name changed: the slave's owner tag names the old ELB, but the ledger
    // and journal name the instance. It stays tracked (and counted), and gets the new tag.
    let mut cfg = act.cfg.clone();
    cfg.elb.name = "site-elb-2".into();
    let mut again = Actuator::open(fake.clone(), &cfg, at(5)).unwrap();
    let r = again.adopt(at(5)).await.unwrap();
    assert_eq!(r.adopted, std::slice::from_ref(&id));
    assert!(r.foreign.is_empty(), "{r:?}");
    assert!(again.foreign().is_empty());
    assert!(fake
        .w()
        .calls
        .contains(&format!("tag {:?} {}", [&id], cloud::TAG_OWNER)));
    assert_eq!(again.ledger().used(at(5)), 1);
}

#[tokio::test]
async fn adoption_forgets_the_host_keys_of_slaves_that_ended_while_no_agent_ran() {
    let d = tempfile::tempdir().unwrap();
    let (fake, mut act) = setup(d.path());
    let kept = act.apply(&decision(1), at(0)).await.launched[0].clone();
    settle(&mut act, at(1)).await;
    let dir = crate::hooks::known_hosts_dir(d.path());
    crate::hooks::prepare_known_hosts(d.path()).unwrap();
    for id in [kept.as_str(), "i-gone", "i-gone2"] {
        std::fs::write(dir.join(id), "10.0.0.9 ssh-ed25519 AAAA\n").unwrap();
    }
    std::fs::write(dir.join("i-gone.old"), "ssh's backup\n").unwrap();
    let mut again = Actuator::open(fake.clone(), &act.cfg, at(5)).unwrap();
    again.adopt(at(5)).await.unwrap();
    let mut left: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(left, [kept.as_str(), "i-gone.old"]);
}

fn subnets(act: &mut Actuator<Fake>, names: &[&str]) -> Vec<Option<String>> {
    act.cfg.fleet.subnet_ids = names.iter().map(|s| s.to_string()).collect();
    names.iter().map(|s| Some(s.to_string())).collect()
}

#[tokio::test]
async fn a_zone_without_capacity_is_left_for_the_next_subnet_in_the_same_decision() {
    let d = tempfile::tempdir().unwrap();
    let (fake, mut act) = setup(d.path());
    let all = subnets(&mut act, &["subnet-a", "subnet-b", "subnet-c"]);
    fake.w().no_capacity_in.insert(all[0].clone());
    fake.w().no_capacity_in.insert(all[1].clone());
    let r = act.apply(&decision(2), at(0)).await;
    assert_eq!(r.launched.len(), 2, "{r:?}");
    let w = fake.w();
    // Each subnet asked at most once for the first request, and the launch landed in c.
    let firsts: Vec<&Option<String>> = w.launch_subnets.iter().collect();
    assert!(firsts.len() <= 4, "{firsts:?}");
    let distinct: BTreeSet<&Option<String>> = firsts.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        firsts.len().min(3),
        "a subnet was asked twice: {firsts:?}"
    );
    assert_eq!(w.launch_subnets.last(), Some(&all[2]), "{firsts:?}");
    assert_eq!(w.instances.len(), 2);
    drop(w);
    assert_eq!(
        act.ledger().used(at(0)),
        2,
        "charged for what launched, once"
    );
}

#[tokio::test]
async fn a_capacity_brownout_spends_no_cap_and_launches_when_ec2_recovers() {
    let d = tempfile::tempdir().unwrap();
    let (fake, mut act) = setup(d.path());
    let all = subnets(&mut act, &["subnet-a", "subnet-b"]);
    act.cfg.cap.daily_limit = 3;
    act.reconfigure(&act.cfg.clone(), at(0));
    for s in &all {
        fake.w().no_capacity_in.insert(s.clone());
    }
    // A minute of decisions that each want 2 more slaves, every RunInstances refused.
    for t in 0..60 {
        let r = act.apply(&decision(2), at(t)).await;
        assert!(r.launched.is_empty());
        act.step(at(t)).await.unwrap();
    }
    assert_eq!(
        act.ledger().used(at(60)),
        0,
        "the cap was spent on launches that never happened"
    );
    assert!(
        act.journal().unresolved().next().is_none(),
        "refused launches stay open"
    );
    // Each decision tried each subnet once, never the same one twice in a row.
    let asked = fake.w().launch_subnets.clone();
    assert_eq!(asked.len(), 120, "{asked:?}");
    // EC2 recovers: the next decision launches, and the cap counts just that.
    fake.w().no_capacity_in.clear();
    let r = act.apply(&decision(2), at(61)).await;
    assert_eq!(r.launched.len(), 2);
    assert_eq!(act.ledger().used(at(61)), 2);
}

#[tokio::test]
async fn throttling_and_limits_launch_nothing_and_cost_nothing_but_a_timeout_stays_counted() {
    let d = tempfile::tempdir().unwrap();
    let (fake, mut act) = setup(d.path());
    // Each past the backoff the one before started (a limit is refused for good: 1 min, 2).
    for (code, t) in [
        ("RequestLimitExceeded", 0),
        ("InstanceLimitExceeded", 0),
        ("VcpuLimitExceeded", 100),
    ] {
        fake.w().launch_error = Some(AwsError {
            op: "RunInstances",
            code: code.into(),
            message: "scripted".into(),
            retryable: code == "RequestLimitExceeded",
            not_applied: true,
        });
        let before = fake.w().calls.len();
        let r = act.apply(&decision(1), at(t)).await;
        assert!(fake.w().calls.len() > before, "{code}: not sent");
        assert!(r.launched.is_empty());
        assert_eq!(act.ledger().used(at(t)), 0, "{code} was charged to the cap");
    }
    // A timeout may have launched: counted until tags or a same-token retry resolve it.
    fake.w().launch_error = Some(err(true));
    act.apply(&decision(1), at(300)).await;
    assert_eq!(act.ledger().used(at(300)), 1);
}

#[tokio::test]
async fn an_ambiguous_launch_is_never_sent_again_and_is_withdrawn_once_ec2_has_had_time_to_list_it()
{
    let d = tempfile::tempdir().unwrap();
    let (fake, mut act) = setup(d.path());
    subnets(&mut act, &["subnet-a", "subnet-b"]);
    // The first call finds no capacity; the second, in the other subnet, times out (and, as it
    // turns out, launched nothing).
    fake.w().capacity_misses = 1;
    fake.w().launch_error = Some(err(true));
    let r = act.apply(&decision(1), at(0)).await;
    assert!(r.launched.is_empty());
    let calls = |f: &Fake| f.w().launch_tokens.clone();
    let sent = calls(&fake);
    assert_eq!(sent.len(), 2);
    assert!(sent[1].ends_with("-2"), "{sent:?}");
    let subnets_asked = fake.w().launch_subnets.clone();
    assert_ne!(
        subnets_asked[0], subnets_asked[1],
        "the capacity miss was asked again in place"
    );
    assert_eq!(
        act.ledger().used(at(0)),
        1,
        "the outcome is unknown: still counted"
    );
    // EC2 may not list what the call launched yet: the agent waits, never sends it again (a
    // repeat minutes later could launch what nobody wants any more).
    for t in [5, 100, 300] {
        act.step(at(t)).await.unwrap();
        assert_eq!(calls(&fake), sent, "sent again at {t}");
        assert_eq!(act.ledger().used(at(t)), 1);
    }
    // 300 s after the call, EC2 still lists nothing with its intent tag: nothing was launched.
    let r = act.step(at(301)).await.unwrap();
    assert!(
        r.errors.iter().any(|e| e.contains("nothing was launched")),
        "{r:?}"
    );
    assert_eq!(act.ledger().used(at(301)), 0, "withdrawn");
    assert!(act.journal().unresolved().next().is_none());
    assert_eq!(calls(&fake), sent);
}

#[tokio::test]
async fn with_no_capacity_for_the_type_anywhere_the_fallback_types_are_tried_in_order() {
    let d = tempfile::tempdir().unwrap();
    let (fake, mut act) = setup(d.path());
    subnets(&mut act, &["subnet-a", "subnet-b"]);
    act.cfg.fleet.fallback_instance_types = vec!["t3.medium".into(), "m5.large".into()];
    // The configured type has no capacity in either subnet, nor does the first fallback in one.
    fake.w().capacity_misses = 3;
    let r = act.apply(&decision(1), at(0)).await;
    assert_eq!(r.launched.len(), 1, "{r:?}");
    {
        let w = fake.w();
        let t = |s: &str| Some(s.to_string());
        assert_eq!(w.launch_types, [None, None, t("t3.medium"), t("t3.medium")]);
        // Every type in both subnets before the next type.
        assert_ne!(w.launch_subnets[0], w.launch_subnets[1]);
        assert_ne!(w.launch_subnets[2], w.launch_subnets[3]);
    }
    assert_eq!(act.ledger().used(at(0)), 1);

    // No capacity for any type anywhere: 2 subnets x 3 types, then the launch is refused,
    // uncharged, its reasons naming what was tried.
    fake.w().capacity_misses = 6;
    fake.w().launch_types.clear();
    let r = act.apply(&decision(1), at(1)).await;
    assert!(r.launched.is_empty());
    assert_eq!(fake.w().launch_types.len(), 6);
    assert_eq!(
        act.ledger().used(at(1)),
        1,
        "the refused launch was charged"
    );
    assert!(
        r.errors.iter().any(|e| e.contains("m5.large in subnet-")),
        "{:?}",
        r.errors
    );
}

#[tokio::test]
async fn lost_state_with_our_instances_in_ec2_blocks_launches_until_repair() {
    let d = tempfile::tempdir().unwrap();
    let (fake, mut act) = setup(d.path());
    let id = act.apply(&decision(2), at(0)).await.launched[0].clone();
    settle(&mut act, at(1)).await;
    drop(act);
    std::fs::remove_file(state::path_in(d.path())).unwrap();

    let mut cfg = Config::default();
    cfg.agent.state_dir = d.path().to_path_buf();
    cfg.cap.time_zone = "UTC".into();
    cfg.elb.name = "site-elb".into();
    let mut again = Actuator::open(fake.clone(), &cfg, at(100)).unwrap();
    let r = again.adopt(at(100)).await.unwrap();
    assert!(
        r.errors
            .iter()
            .any(|e| e.contains("burst-agent repair") && e.contains(&id)),
        "{r:?}"
    );
    let refused = again.apply(&decision(1), at(101)).await;
    assert_eq!(refused.refused, 1, "blocked until an operator repairs");
    // Still blocked after a restart: the block is in state.json, not in memory.
    drop(again);
    let mut again = Actuator::open(fake.clone(), &cfg, at(102)).unwrap();
    again.adopt(at(102)).await.unwrap();
    assert!(again.needs_repair().is_some());
    assert_eq!(again.apply(&decision(1), at(103)).await.refused, 1);

    // The operator knows 5 were used today (billing): the ledger counts at least that.
    let lines = again.repair(at(104), Some(5), &[]).await.unwrap();
    assert!(lines.iter().any(|l| l.contains("known: 2")), "{lines:?}");
    assert!(again.needs_repair().is_none());
    assert_eq!(again.ledger().used(at(105)), 5);
    assert_eq!(again.apply(&decision(1), at(105)).await.launched.len(), 1);
    assert_eq!(again.ledger().used(at(106)), 6);
}

#[tokio::test]
async fn a_first_start_with_no_instances_of_ours_is_not_blocked() {
    let d = tempfile::tempdir().unwrap();
    let (_fake, mut act) = setup(d.path());
    let r = act.adopt(at(0)).await.unwrap();
    assert!(r.errors.is_empty(), "{r:?}");
    assert!(act.needs_repair().is_none());
    assert_eq!(act.apply(&decision(1), at(1)).await.launched.len(), 1);
}

#[tokio::test]
async fn the_policys_cooldowns_survive_a_restart() {
    let d = tempfile::tempdir().unwrap();
    let (fake, mut act) = setup(d.path());
    assert_eq!(act.history().last_scale_out, None);
    let cfg = act.cfg.clone();
    act.remember(at(10), |h| h.record(&cfg.policy, at(10), &decision(1)));
    drop(act);
    let again = Actuator::open(fake, &cfg, at(20)).unwrap();
    assert_eq!(again.history().last_scale_out, Some(at(10)));
}

#[tokio::test]
async fn a_launch_whose_outcome_is_unknown_is_capacity_on_the_way_until_the_boot_timeout() {
    let d = tempfile::tempdir().unwrap();
    let (fake, mut act) = setup(d.path());
    {
        let mut w = fake.w();
        w.launch_error = Some(err(true));
        w.launch_anyway = false; // timed out; EC2 launched nothing, nobody knows yet
    }
    act.apply(&decision(2), at(0)).await;
    let pending = |act: &Actuator<Fake>, t| {
        act.observation(at(t))
            .into_iter()
            .filter(|o| o.state == SlaveState::Pending)
            .count()
    };
    assert_eq!(pending(&act, 10), 2, "both attempts are on the way");
    // boot_timeout is 60 s in setup(): past it, no longer counted as coming.
    assert_eq!(pending(&act, 61), 0);
    assert_eq!(
        act.ledger().used(at(61)),
        2,
        "but still charged until resolved"
    );
}

#[tokio::test]
async fn no_capacity_anywhere_backs_off_longer_each_time_and_a_launch_resets_it() {
    let d = tempfile::tempdir().unwrap();
    let (fake, mut act) = setup(d.path());
    let all = subnets(&mut act, &["subnet-a", "subnet-b"]);
    for s in &all {
        fake.w().no_capacity_in.insert(s.clone());
    }
    act.apply(&decision(1), at(0)).await;
    assert_eq!(act.no_capacity_until(at(0)), Some(at(60)));
    assert_eq!(act.no_capacity_until(at(60)), None, "over at its end");
    act.apply(&decision(1), at(60)).await;
    assert_eq!(act.no_capacity_until(at(60)), Some(at(180)), "doubled");
    act.apply(&decision(1), at(180)).await;
    assert_eq!(act.no_capacity_until(at(180)), Some(at(420)));
    // A capacity error in one subnet only is answered by the next subnet: no backoff.
    fake.w().no_capacity_in.remove(&all[1]);
    assert_eq!(act.apply(&decision(1), at(420)).await.launched.len(), 1);
    assert_eq!(act.no_capacity_until(at(420)), None, "reset by a launch");
}

fn scale_in(ids: &[String]) -> Decision {
    Decision::ScaleIn {
        instances: ids.to_vec(),
        why: decision(0).explanation().clone(),
    }
}

/// Slaves released and still draining take the pool's room they will stop into: the policy
/// must not price more victims as free restarts than the pool can hold.
#[tokio::test]
async fn slaves_draining_toward_the_pool_take_its_room() {
    let d = tempfile::tempdir().unwrap();
    let (_fake, mut act) = setup_with(d.path(), |c| c.fleet.warm_pool = 2);
    let ids = act.apply(&decision(3), at(0)).await.launched;
    assert_eq!(ids.len(), 3);
    settle(&mut act, at(1)).await;
    assert_eq!(act.warm_room(), 2);
    act.apply(&scale_in(&ids[..2]), at(10)).await;
    act.step(at(10)).await.unwrap();
    assert_eq!(act.slave(&ids[0]).unwrap().phase, Phase::Draining);
    assert_eq!(act.pooled(), 0, "none stopped yet");
    assert_eq!(act.warm_room(), 0, "both places taken by the two draining");
}

/// The warm pool end to end on the state machine: a released slave is tagged and stopped after
/// its drain (its ledger run ends); the next scale-out starts it (untagged first, no new cap
/// unit the same day, no launch), syncs it again and registers it only after that sync.
#[tokio::test]
async fn a_released_slave_waits_stopped_and_comes_back_before_any_launch() {
    let d = tempfile::tempdir().unwrap();
    let (fake, mut act) = setup_with(d.path(), |c| {
        c.fleet.warm_pool = 2;
        c.cap.daily_limit = 1;
    });
    let id = act.apply(&decision(1), at(0)).await.launched[0].clone();
    settle(&mut act, at(1)).await;
    assert_eq!(act.slave(&id).unwrap().phase, Phase::InService);
    act.apply(&scale_in(std::slice::from_ref(&id)), at(10))
        .await;
    act.step(at(10)).await.unwrap();
    assert_eq!(act.slave(&id).unwrap().phase, Phase::Draining);
    let r = act.step(at(41)).await.unwrap();
    assert_eq!(r.stopped, std::slice::from_ref(&id));
    assert!(r.terminated.is_empty());
    assert_eq!(act.slave(&id).unwrap().phase, Phase::Stopping);
    act.step(at(50)).await.unwrap();
    assert_eq!(act.slave(&id).unwrap().phase, Phase::Stopped);
    assert_eq!(act.ledger().entries()[0].ended_at, Some(at(50)));
    assert_eq!(act.pooled(), 1);
    // Room for one more, but no in-service slave that could go there: the policy counts none.
    assert_eq!(act.warm_room(), 0);
    {
        let w = fake.w();
        assert!(w.instances[&id].pooled_since.is_some());
        let calls = w.calls.join("\n");
        let tag = calls.find("burst-agent:pooled-since").unwrap();
        let stop = calls.find("stop [").unwrap();
        assert!(tag < stop, "tagged before the stop:\n{calls}");
    }
    // The cap is spent (1 of 1): a launch would be refused, the warm slave is free.
    assert_eq!(act.ledger().remaining(at(100)), 0);
    let r = act.apply(&decision(1), at(100)).await;
    assert_eq!(r.started, std::slice::from_ref(&id));
    assert!(r.launched.is_empty() && r.refused == 0, "{r:?}");
    assert_eq!(act.ledger().used(at(100)), 1, "no new unit the same day");
    assert_eq!(act.slave(&id).unwrap().phase, Phase::Pending);
    {
        let w = fake.w();
        assert!(w.instances[&id].pooled_since.is_none());
        assert!(w.instances[&id].draining_since.is_none());
        let calls = w.calls.join("\n");
        // Started first, then untagged: a stopped slave always carries its pool tag.
        let untag = calls.rfind("untag").unwrap();
        let start = calls.rfind("start [").unwrap();
        assert!(start < untag, "untagged after the start:\n{calls}");
        assert!(!calls.contains("launch 1..1\nlaunch"), "{calls}");
    }
    // Running → synced again → registered.
    act.step(at(101)).await.unwrap();
    assert_eq!(act.slave(&id).unwrap().phase, Phase::Syncing);
    assert!(!fake.w().members.contains_key(&id), "not before its sync");
    settle(&mut act, at(102)).await;
    assert_eq!(act.slave(&id).unwrap().phase, Phase::InService);
    let registers = fake
        .w()
        .calls
        .iter()
        .filter(|c| c.starts_with("register"))
        .count();
    assert_eq!(registers, 2);
}

/// A start EC2 refuses (no capacity for the type) costs nothing: the slave stays in the pool
/// with its tag, and the decision is carried out by a launch. A stop EC2 refuses (an
/// instance-store root) ends in termination: a drained slave is never left running.
#[tokio::test]
async fn refused_starts_and_stops_fall_back_to_launch_and_termination() {
    let d = tempfile::tempdir().unwrap();
    let (fake, mut act) = setup_with(d.path(), |c| c.fleet.warm_pool = 2);
    let ids = act.apply(&decision(2), at(0)).await.launched;
    settle(&mut act, at(1)).await;
    fake.w().instances.get_mut(&ids[1]).unwrap().ebs_root = false;
    act.apply(&scale_in(&ids), at(10)).await;
    act.step(at(10)).await.unwrap();
    let r = act.step(at(41)).await.unwrap();
    assert_eq!(r.stopped, [ids[0].clone()]);
    assert_eq!(r.terminated, [ids[1].clone()], "{r:?}");
    act.step(at(50)).await.unwrap();
    assert_eq!(act.slave(&ids[0]).unwrap().phase, Phase::Stopped);
    let used = act.ledger().used(at(60));
    fake.w().start_no_capacity = true;
    let r = act.apply(&decision(1), at(60)).await;
    assert!(r.started.is_empty());
    assert_eq!(r.launched.len(), 1, "{r:?}");
    assert_eq!(act.slave(&ids[0]).unwrap().phase, Phase::Stopped);
    assert_eq!(
        act.slave(&ids[0]).unwrap().since,
        at(50),
        "its pool age kept"
    );
    assert!(
        fake.w().instances[&ids[0]].pooled_since.is_some(),
        "still tagged: a start never untags first"
    );
    assert_eq!(act.ledger().used(at(60)), used + 1, "the launch only");
}

/// Stopped slaves survive a restart of the agent: adopted into the pool by their tag, and
/// started by the next scale-out.
#[tokio::test]
async fn the_pool_is_adopted_after_a_restart() {
    let d = tempfile::tempdir().unwrap();
    let (fake, mut act) = setup_with(d.path(), |c| c.fleet.warm_pool = 1);
    let id = act.apply(&decision(1), at(0)).await.launched[0].clone();
    settle(&mut act, at(1)).await;
    act.apply(&scale_in(std::slice::from_ref(&id)), at(10))
        .await;
    act.step(at(10)).await.unwrap();
    act.step(at(41)).await.unwrap();
    act.step(at(50)).await.unwrap();
    let mut again = Actuator::open(fake.clone(), &act.cfg, at(60)).unwrap();
    let r = again.adopt(at(60)).await.unwrap();
    assert_eq!(r.adopted, std::slice::from_ref(&id));
    assert_eq!(again.slave(&id).unwrap().phase, Phase::Stopped);
    assert!(again.slave(&id).unwrap().failure.is_none());
    let r = again.apply(&decision(1), at(70)).await;
    assert_eq!(r.started, [id]);
}

/// Throttling is not a refusal: a throttled stop leaves the slave drained and stopped at the
/// next step (never terminated for it); a stop whose answer was lost is seen as done, not as
/// a slave "stopped outside the agent".
#[tokio::test]
async fn a_throttled_or_unanswered_stop_still_ends_in_the_pool() {
    let d = tempfile::tempdir().unwrap();
    let (fake, mut act) = setup_with(d.path(), |c| c.fleet.warm_pool = 2);
    let ids = act.apply(&decision(2), at(0)).await.launched;
    settle(&mut act, at(1)).await;
    act.apply(&scale_in(&ids[..1]), at(10)).await;
    act.step(at(10)).await.unwrap();
    fake.w().stop_throttled = true;
    let r = act.step(at(41)).await.unwrap();
    assert!(r.terminated.is_empty() && r.stopped.is_empty(), "{r:?}");
    assert_eq!(act.slave(&ids[0]).unwrap().phase, Phase::Draining);
    let r = act.step(at(45)).await.unwrap();
    assert_eq!(r.stopped, ids[..1]);
    // The other one: its stop goes through, the answer is lost.
    act.apply(&scale_in(&ids[1..]), at(50)).await;
    act.step(at(50)).await.unwrap();
    fake.w().stop_answer_lost = true;
    let r = act.step(at(81)).await.unwrap();
    assert!(r.stopped.is_empty() && r.terminated.is_empty(), "{r:?}");
    act.step(at(90)).await.unwrap();
    let s = act.slave(&ids[1]).unwrap();
    assert_eq!(s.phase, Phase::Stopped, "{s:?}");
    assert!(s.failure.is_none());
    assert!(!fake.w().calls.iter().any(|c| c.starts_with("terminate")));
}

/// Found by an operator's run: a launch EC2 refused for good (a missing instance profile) was
/// sent again at every decision, every 15 s. Now the next waits (1 min, then 2), nothing is
/// charged, and a reload ends the wait at once; a launch that goes through ends the streak.
#[tokio::test]
async fn a_launch_refused_for_good_is_not_sent_again_until_its_backoff_or_a_reload() {
    let d = tempfile::tempdir().unwrap();
    let (fake, mut act) = setup(d.path());
    let launches = |f: &Fake| {
        f.w()
            .calls
            .iter()
            .filter(|c| c.starts_with("launch"))
            .count()
    };
    fake.w().launch_error = Some(err(false));
    act.apply(&decision(1), at(0)).await;
    assert_eq!(launches(&fake), 1);
    let r = act.launch_refused(at(1)).expect("a backoff");
    assert_eq!(r.until, at(60));
    assert!(r.cause.starts_with("InvalidAMIID.NotFound"), "{}", r.cause);
    // Within it: no call, nothing charged.
    let rep = act.apply(&decision(1), at(15)).await;
    assert_eq!(launches(&fake), 1, "RunInstances again within the backoff");
    assert_eq!(rep.refused, 1);
    assert_eq!(act.ledger().used(at(15)), 0);
    // Past it, refused again: twice as long.
    fake.w().launch_error = Some(err(false));
    act.apply(&decision(1), at(61)).await;
    assert_eq!(launches(&fake), 2);
    assert_eq!(act.launch_refused(at(62)).unwrap().until, at(181));
    // A reload (the operator fixed it): at once, and it goes through.
    let cfg = act.cfg.clone();
    act.reconfigure(&cfg, at(70));
    assert!(act.launch_refused(at(70)).is_none());
    let rep = act.apply(&decision(1), at(70)).await;
    assert_eq!(rep.launched.len(), 1);
    // A throttled launch is no refusal for good: no backoff.
    let mut throttled = err(true);
    throttled.code = "RequestLimitExceeded".into();
    throttled.not_applied = true;
    fake.w().launch_error = Some(throttled);
    act.apply(&decision(1), at(80)).await;
    assert!(act.launch_refused(at(81)).is_none());
}
