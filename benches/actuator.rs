//! The actuator against a real moto server, driven as the daemon drives it: the ledger table and
//! the site's lease (every launch reserved there first, every fleet-changing call fenced),
//! the table's count read before the first launch, adoption, then a decision every step until
//! the slaves serve (the sync brake lets two unproven slaves sync at once, so a scale-out of 5
//! takes more than one decision, as in the daemon). Wall time and AWS calls for a scale-out of
//! 1, 5 and 20 slaves up to registered with the ELB (sync hook `true`, so rsync is excluded),
//! and for one steady-state master tick at 100 slaves (reconcile + own publish + fleet
//! read-back). "agent" is the time not spent inside AWS calls or idle between steps: the
//! agent's own share. A scale-out that does not finish says where each slave is and why the
//! last launch was held.
//!
//!     cargo bench --bench actuator            # 5 runs each, medians
//!     cargo bench --bench actuator -- --quick # 1 run each (scripts/test.sh runs this)
//!
//! Needs moto: scripts/test.sh installs it into .venv-test/.

#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod testutil;

use burst_agent::actuator::cloud::AwsCloud;
use burst_agent::actuator::{Actuator, Phase};
use burst_agent::aws::{calls_between, Aws, OpStats};
use burst_agent::metrics::{self, cloudwatch, Buffer};
use burst_agent::table::{Fence, Table};
use burst_edge::fenced::{Fenced, LeaseEnd};
use jiff::Timestamp;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use testutil::moto::{actuator_config, scale_out, Moto};

struct Run {
    wall: Duration,
    aws: Duration,
    idle: Duration,
    calls: BTreeMap<&'static str, u64>,
}

fn aws_secs(s: &BTreeMap<&'static str, OpStats>) -> f64 {
    s.values().map(|o| o.seconds).sum()
}

type Act = Actuator<Fenced<AwsCloud>>;

/// The site's lease taken in the table as the lease task takes it, and held for the bench.
async fn lease(table: &Table) -> LeaseEnd {
    let holder = "i-bench/1";
    assert!(
        table
            .write_lease(holder, None, &Timestamp::now().to_string())
            .await
            .expect("lease"),
        "the bench's site has a lease already"
    );
    let version = table
        .read_lease()
        .await
        .expect("lease")
        .expect("lease")
        .version;
    let end = LeaseEnd::default();
    end.set(Some((
        tokio::time::Instant::now() + Duration::from_secs(3600),
        Fence {
            holder: holder.into(),
            version,
        },
    )));
    end
}

async fn fleet(moto: &Moto, aws: &Aws, group: &str, n: u32, dir: &std::path::Path) -> (Act, Run) {
    let mut cfg = actuator_config(moto, group, dir, dir, dir);
    cfg.cap.daily_limit = 1000;
    cfg.policy.max_slaves = n.max(cfg.policy.max_slaves);
    cfg.hooks.pre_register.argv = vec!["true".into()];
    moto.create_elb(aws, &cfg.elb.name).await;
    let table = Table::new(aws.clone(), &cfg.ledger.table, group);
    let end = lease(&table).await;
    let cloud = AwsCloud::new(aws.clone(), group, &cfg.elb.name, &cfg.fleet).expect("cloud");
    let mut act =
        Actuator::open(Fenced::new(cloud, end.clone()), &cfg, Timestamp::now()).expect("actuator");
    act.set_guarantee(std::sync::Arc::new(table), end);
    let before = aws.stats().snapshot();
    let t = Instant::now();
    let mut idle = Duration::ZERO;
    // As the daemon's first tick: the table's count, then adoption.
    act.sync_from_table(Timestamp::now())
        .await
        .unwrap_or_else(|e| panic!("the ledger table could not be read: {e}"));
    act.adopt(Timestamp::now()).await.expect("adopt");
    let mut last_refused = None;
    loop {
        // A decision every step, as the policy's: launch what is missing.
        let have = u32::try_from(act.slaves().count()).unwrap_or(u32::MAX);
        if have < n {
            let r = act.apply(&scale_out(n - have), Timestamp::now()).await;
            if r.refused > 0 || !r.errors.is_empty() {
                last_refused = Some(format!(
                    "{} of {} held back ({}); errors {:?}",
                    r.refused,
                    n - have,
                    r.held.as_deref().unwrap_or("the cap ledger refused"),
                    r.errors
                ));
            }
        }
        act.step(Timestamp::now()).await.expect("step");
        let registered = act
            .slaves()
            .filter(|s| matches!(s.phase, Phase::Registering | Phase::InService))
            .count();
        if registered == n as usize {
            break;
        }
        let i = Instant::now();
        tokio::time::sleep(Duration::from_millis(5)).await;
        idle += i.elapsed();
        if t.elapsed() > Duration::from_secs(300) {
            let phases: Vec<String> = act
                .slaves()
                .map(|s| format!("{} {:?}", s.id, s.phase))
                .collect();
            panic!(
                "scale-out of {n}: {registered} registered after 300 s; slaves: {phases:?}; \
                 last launch: {}; recent errors: {:?}",
                last_refused.as_deref().unwrap_or("nothing held back"),
                act.recent_errors().collect::<Vec<_>>()
            );
        }
    }
    let wall = t.elapsed();
    let after = aws.stats().snapshot();
    let run = Run {
        wall,
        aws: Duration::from_secs_f64(aws_secs(&after) - aws_secs(&before)),
        idle,
        calls: calls_between(&before, &after),
    };
    (act, run)
}

fn row(what: &str, runs: &mut [Run]) {
    runs.sort_by_key(|r| r.wall);
    let r = &runs[runs.len() / 2];
    let agent = r.wall.saturating_sub(r.aws).saturating_sub(r.idle);
    let calls: u64 = r.calls.values().sum();
    println!(
        "{what:<34} {:>9.1} {:>9.1} {:>9.1} {:>6.1}% {:>6}  {}",
        r.wall.as_secs_f64() * 1e3,
        r.aws.as_secs_f64() * 1e3,
        agent.as_secs_f64() * 1e3,
        100.0 * agent.as_secs_f64() / r.wall.as_secs_f64(),
        calls,
        r.calls
            .iter()
            .map(|(op, n)| format!("{op}×{n}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let reps = if quick { 1 } else { 5 };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        let moto = Moto::start();
        let aws = moto.aws().await;
        let dir = tempfile::tempdir().expect("tempdir");
        println!(
            "actuator against moto ({} run(s) each, median by wall time)",
            reps
        );
        println!(
            "{:<34} {:>9} {:>9} {:>9} {:>7} {:>6}  calls",
            "", "wall ms", "in AWS ms", "agent ms", "agent", "calls"
        );
        let mut k = 0;
        for n in [1u32, 5, 20] {
            let mut runs = Vec::new();
            for _ in 0..reps {
                k += 1;
                let (_, run) = fleet(&moto, &aws, &format!("b{k}"), n, dir.path()).await;
                runs.push(run);
            }
            row(&format!("scale-out of {n} to registered"), &mut runs);
        }
        k += 1;
        let group = format!("b{k}");
        let (mut act, _) = fleet(&moto, &aws, &group, 100, dir.path()).await;
        let ids: Vec<String> = act.slaves().map(|s| s.id.clone()).collect();
        let mut runs = Vec::new();
        for _ in 0..reps.max(3) {
            let buf = Mutex::new(Buffer::new(10_000));
            let now = Timestamp::now();
            let sample = burst_agent::sampler::Sampler::new(&Default::default())
                .map(|mut s| s.sample())
                .expect("sampler");
            let before = aws.stats().snapshot();
            let t = Instant::now();
            act.step(now).await.expect("step");
            let (mine, _) = metrics::host_data(&sample, &group, "i-master");
            buf.lock().unwrap_or_else(|p| p.into_inner()).push(mine);
            cloudwatch::flush(&aws, "BurstAgentBench", 60, &buf).await;
            cloudwatch::read_fleet(&aws, "BurstAgentBench", &group, &ids, 60, 180, now)
                .await
                .expect("read fleet");
            let wall = t.elapsed();
            let after = aws.stats().snapshot();
            runs.push(Run {
                wall,
                aws: Duration::from_secs_f64(aws_secs(&after) - aws_secs(&before)),
                idle: Duration::ZERO,
                calls: calls_between(&before, &after),
            });
        }
        row("steady tick at 100 slaves", &mut runs);
        println!(
            "(moto launches only MinCount, so a scale-out makes two RunInstances calls here; \
                  real EC2 fills MaxCount in the first)"
        );
    });
}
