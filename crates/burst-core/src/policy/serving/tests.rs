//! Stage tests: serving.

use crate::policy::tests::*;

/// Issue 19, part 2: one slave's forged report (anything with its instance credentials can
/// PutMetricData for its InstanceId) cannot raise the fleet's demand past what the master's own
/// sample backs; the decision names it. A real burst, which the master sees too, still scales.
#[test]
fn one_slaves_report_cannot_raise_demand_past_the_masters_evidence() {
    // The master idle at 0.1, one slave claims 50 per CPU (inside the range check), one honest.
    let mut o = fleet(0.1, in_service(2, 0.1));
    o.slaves[0].metrics.as_mut().unwrap().load_per_cpu = Some(50.0);
    o.slaves[0].metrics.as_mut().unwrap().apache_busy_ratio = Some(1.0);
    let d = run(&cfg(), &o);
    assert!(!matches!(d, Decision::ScaleOut { .. }), "{d}");
    assert!(has(&d, "Uncorroborated"), "{d}");
    let line = d.to_string();
    assert!(line.contains("i-0 reported"), "{line}");
    assert!(!line.contains("i-1 reported"), "{line}");
    // Without the cut, the same numbers would launch: the rule is what holds them.
    let honest = fleet(0.1, in_service(2, 0.1));
    let mut lie_alone = honest.clone();
    lie_alone.master = None;
    lie_alone.slaves[0].metrics.as_mut().unwrap().load_per_cpu = Some(50.0);
    let d = run(&cfg(), &lie_alone);
    assert!(
        !matches!(d, Decision::ScaleOut { .. }),
        "no master sample: {d}"
    );
    // The master sees the burst too: the slaves' reports are backed, and it scales out.
    let burst = fleet(0.95, in_service(2, 1.2));
    let d = run(&cfg(), &burst);
    assert!(matches!(d, Decision::ScaleOut { .. }), "{d}");
    assert!(!has(&d, "Uncorroborated"), "{d}");
    // The bound itself: 1.5 x the master's reading plus 0.1.
    let (cut, why) = crate::policy::corroborate(
        Some(&m(0.4, 0)),
        &crate::policy::Reports::default(),
        "i-9",
        &m(2.0, 0),
        &cfg().targets,
        &Default::default(),
    );
    assert_eq!(why.len(), 2, "{why:?}");
    assert!((cut.load_per_cpu.unwrap() - 0.7).abs() < 1e-9);
    assert_eq!(cut.memory_used_ratio, Some(0.3), "backed values are kept");
    // No master reading (mod_status timed out on a saturated master): the other slaves'
    // median backs a real burst; one forger among honest idle slaves is still cut.
    let mut o = fleet(0.9, in_service(3, 0.95));
    o.master.as_mut().unwrap().apache_busy_ratio = None;
    o.master.as_mut().unwrap().load_per_cpu = None;
    let d = run(&cfg(), &o);
    assert!(matches!(d, Decision::ScaleOut { .. }), "{d}");
    assert!(!has(&d, "Uncorroborated"), "{d}");
    let mut o = fleet(0.1, in_service(3, 0.1));
    o.master.as_mut().unwrap().apache_busy_ratio = None;
    o.master.as_mut().unwrap().load_per_cpu = None;
    o.slaves[0].metrics.as_mut().unwrap().load_per_cpu = Some(50.0);
    let d = run(&cfg(), &o);
    assert!(!matches!(d, Decision::ScaleOut { .. }), "{d}");
    assert!(d.to_string().contains("the other slaves' median"), "{d}");
}

/// The rest of the evidence no slave can write: its own CPU as EC2 measured it backs its
/// report, and an ELB that queues or spills requests backs a busy fleet.
#[test]
fn aws_own_metrics_back_a_slaves_report_the_master_does_not() {
    // The master idle (its own work elsewhere), one slave really busy.
    let mut o = fleet(0.1, in_service(2, 0.1));
    o.slaves[0].metrics.as_mut().unwrap().apache_busy_ratio = Some(1.0);
    o.slaves[0].metrics.as_mut().unwrap().load_per_cpu = Some(1.0);
    let d = run(&cfg(), &o);
    assert!(has(&d, "Uncorroborated"), "{d}");
    let cut = d.explanation().final_count;
    // EC2 measured its CPU at 90 %: backed.
    o.evidence.cpu.insert("i-0".into(), 0.9);
    let d = run(&cfg(), &o);
    assert!(!has(&d, "Uncorroborated"), "{d}");
    assert!(d.explanation().final_count > cut, "{d}");
    // Another slave's CPU backs nothing of this one's.
    o.evidence.cpu.clear();
    o.evidence.cpu.insert("i-1".into(), 0.9);
    assert!(has(&run(&cfg(), &o), "Uncorroborated"));
    // The ELB queues requests: its backends cannot keep up.
    o.evidence.elb_saturated = Some("SurgeQueueLength 57".into());
    let d = run(&cfg(), &o);
    assert!(!has(&d, "Uncorroborated"), "{d}");
}

#[test]
fn stage_serving_reads_fresh_in_service_hosts_and_names_what_it_cut() {
    use crate::policy::serving::serving;
    let c = cfg();
    let o = fleet(
        0.1,
        vec![
            slave("i-a", SlaveState::InService, -3600, Some(5.0)),
            slave("i-b", SlaveState::Pending, -10, Some(0.1)),
        ],
    );
    let (s, why) = serving(&c, &o, at(0));
    let hosts = s.hosts();
    // The master and the one slave in service; a pending slave serves nothing yet.
    let names: Vec<&str> = hosts.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, ["master", "i-a"]);
    // The forged 5.0 counts for no more than the master's 0.1 backs (1.5 x 0.1 + 0.1).
    let busy = hosts[1].1.and_then(|m| m.apache_busy_ratio).unwrap();
    assert!((busy - 0.25).abs() < 1e-9, "{busy}");
    assert!(
        // (Named once per signal cut: load and Apache both.)
        matches!(why.as_slice(), [Reason::Uncorroborated { hosts, .. }] if hosts == &["i-a", "i-a"]),
        "{why:?}"
    );
    // Past stale_after every sample is missing, and nothing is cut.
    let later = at(c.stale_after.whole_secs() + 1);
    let (s, why) = serving(&c, &o, later);
    assert!(s.hosts().iter().all(|(_, m)| m.is_none()));
    assert!(why.is_empty(), "{why:?}");
}
