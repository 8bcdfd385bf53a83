//! A real moto server (EC2, classic ELB, CloudWatch) on a free loopback port, one per test, and
//! the agent's AWS client layer pointed at it.
//!
//! Moto is installed by the README's test command into `.venv-test/` (`scripts/test.sh`); set
//! `BURST_AGENT_MOTO_SERVER` to use another `moto_server`. Known limits of moto the tests do not
//! rely on: it ignores RunInstances' ClientToken, launches only MinCount instances, reports every
//! registered instance InService at once, and its instances never boot.

use super::apache::free_port;
use burst_agent::aws::Aws;
use burst_agent::config::{AwsConfig, Config, Dur};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const SETUP_MOTO: &str = "python3 -m venv .venv-test && .venv-test/bin/pip install -r \
     scripts/requirements-test.txt (or run scripts/test.sh, the README's test command)";

/// The ledger table every test site shares (`ledger.table`).
pub const LEDGER_TABLE: &str = "burst-agent";

pub struct Moto {
    child: Child,
    pub endpoint: String,
    pub log: PathBuf,
}

fn server_path() -> PathBuf {
    if let Some(p) = std::env::var_os("BURST_AGENT_MOTO_SERVER") {
        return PathBuf::from(p);
    }
    super::root().join(".venv-test/bin/moto_server")
}

fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

impl Moto {
    pub fn start() -> Moto {
        let server = server_path();
        assert!(
            server.is_file(),
            "moto_server not found at {}: {SETUP_MOTO}",
            server.display()
        );
        let port = free_port();
        let log = std::env::temp_dir().join(format!("burst-agent-moto-{port}.log"));
        let out = std::fs::File::create(&log).expect("moto log file");
        let child = Command::new(&server)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(out.try_clone().expect("dup log"))
            .stderr(out)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("could not start {}: {e}; {SETUP_MOTO}", server.display()));
        let mut moto = Moto {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            log,
        };
        let t = Instant::now();
        loop {
            if http_get(port, "/moto-api/data.json").is_some_and(|r| r.starts_with("HTTP/1.1 200"))
            {
                return moto;
            }
            if let Ok(Some(status)) = moto.child.try_wait() {
                panic!(
                    "moto_server exited ({status}); its log {}:\n{}",
                    moto.log.display(),
                    std::fs::read_to_string(&moto.log).unwrap_or_default()
                );
            }
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "moto_server did not answer on port {port} within 60 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn aws_config(&self) -> AwsConfig {
        AwsConfig {
            region: "us-east-1".into(),
            endpoint_url: self.endpoint.clone(),
            max_calls_per_second: 200,
            call_timeout: Dur::secs(20),
            max_attempts: 3,
        }
    }

    /// The agent's client layer on moto, with static test credentials (the process
    /// environment is left alone).
    pub async fn aws(&self) -> Aws {
        let creds = aws_sdk_ec2::config::Credentials::new("testing", "testing", None, None, "moto");
        let loader =
            aws_config::defaults(aws_config::BehaviorVersion::latest()).credentials_provider(creds);
        Aws::from_loader(&self.aws_config(), loader).await
    }

    /// An SNS topic named `name`; its ARN.
    pub async fn create_topic(&self, aws: &Aws, name: &str) -> String {
        aws.sns
            .create_topic()
            .name(name)
            .send()
            .await
            .expect("create an SNS topic in moto")
            .topic_arn()
            .expect("the topic's ARN")
            .to_string()
    }

    /// A VPC of `cidr` with a subnet for each (cidr, zone); the VPC's id and the subnets' ids.
    pub async fn create_vpc(
        &self,
        aws: &Aws,
        cidr: &str,
        subnets: &[(&str, &str)],
    ) -> (String, Vec<String>) {
        let vpc = aws.ec2.create_vpc().cidr_block(cidr).send().await.unwrap();
        let vpc = vpc.vpc().and_then(|v| v.vpc_id()).unwrap().to_string();
        let mut ids = Vec::new();
        for (c, az) in subnets {
            let s = aws
                .ec2
                .create_subnet()
                .vpc_id(&vpc)
                .cidr_block(*c)
                .availability_zone(*az)
                .send()
                .await
                .unwrap();
            ids.push(s.subnet().and_then(|s| s.subnet_id()).unwrap().to_string());
        }
        (vpc, ids)
    }

    /// A classic ELB named `name` listening on port 80.
    pub async fn create_elb(&self, aws: &Aws, name: &str) {
        use aws_sdk_elasticloadbalancing::types::Listener;
        aws.elb
            .create_load_balancer()
            .load_balancer_name(name)
            .listeners(
                Listener::builder()
                    .protocol("HTTP")
                    .load_balancer_port(80)
                    .instance_protocol("HTTP")
                    .instance_port(80)
                    .build()
                    .expect("listener"),
            )
            .availability_zones("us-east-1a")
            .send()
            .await
            .expect("create classic ELB in moto");
        // A site's ELB comes with the account's ledger table (`ledger.table`, which a live
        // master needs), made as the operator makes it: `burst-agent table create`.
        burst_agent::table::Table::create(aws, LEDGER_TABLE)
            .await
            .expect("create the ledger table in moto");
    }
}

/// The instance ids registered with the classic ELB `name` (as the ELB lists them, not as
/// DescribeInstanceHealth reports them).
pub async fn elb_members(aws: &Aws, name: &str) -> std::collections::BTreeSet<String> {
    let out = aws
        .elb
        .describe_load_balancers()
        .load_balancer_names(name)
        .send()
        .await
        .expect("DescribeLoadBalancers");
    out.load_balancer_descriptions()[0]
        .instances()
        .iter()
        .filter_map(|i| i.instance_id().map(str::to_string))
        .collect()
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// A master's config for actuator tests on moto: group `group`, state in `state_dir`, ELB
/// `elb`, content sync by real rsync from `docroot` into `slaves/<instance id>/`.
pub fn actuator_config(
    moto: &Moto,
    group: &str,
    state_dir: &Path,
    docroot: &Path,
    slaves: &Path,
) -> Config {
    let mut cfg = Config::default();
    cfg.agent.group = group.into();
    cfg.agent.state_dir = state_dir.into();
    cfg.aws = moto.aws_config();
    cfg.ledger.table = LEDGER_TABLE.into();
    cfg.fleet.ami = "ami-12c6146b".into();
    cfg.fleet.instance_type = "t3.small".into();
    cfg.fleet.tags.insert("customer".into(), "golf-club".into());
    cfg.elb.name = format!("{group}-elb");
    cfg.elb.draining_timeout = Dur::secs(2);
    cfg.elb.register_timeout = Dur::secs(30);
    // Off: these tests release by termination; the warm pool's test turns it on.
    cfg.fleet.warm_pool = 0;
    cfg.cap.daily_limit = 7;
    cfg.cap.time_zone = "UTC".into();
    cfg.hooks.pre_register.argv = vec![
        "rsync".to_string(),
        "-a".into(),
        "--delete".into(),
        format!("{}/", docroot.display()),
        format!("{}/{{instance_id}}/", slaves.display()),
    ];
    cfg.hooks.pre_register.timeout = Dur::secs(30);
    cfg.hooks.pre_register.retries = 1;
    cfg.hooks.pre_register.retry_delay = Dur::millis(100);
    // Unset: the periodic sync runs pre_register's command.
    cfg.hooks.content_sync = None;
    cfg.hooks.content_sync_interval = Dur::secs(3600);
    cfg
}

/// A scale-out decision as the policy would hand it over (the explanation is not read by the
/// actuator).
pub fn scale_out(count: u32) -> burst_agent::policy::Decision {
    burst_agent::policy::Decision::ScaleOut {
        count,
        why: explanation(),
    }
}

pub fn scale_in(instances: Vec<String>) -> burst_agent::policy::Decision {
    burst_agent::policy::Decision::ScaleIn {
        instances,
        why: explanation(),
    }
}

fn explanation() -> burst_agent::policy::Explanation {
    let now = jiff::Timestamp::now();
    let cap = burst_agent::cap::CapLedger::new("UTC", 7, None)
        .expect("UTC is a time zone")
        .status(now);
    burst_agent::policy::Explanation::bare(cap)
}
