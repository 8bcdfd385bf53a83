//! `burst-agent preflight` against moto and this host, run as an operator would: a correct
//! set-up passes, and each broken one fails with its key and its fix (issue 21, part 1).
//! Moto's RunInstances DryRun checks only the instance profile, so the AMI, the subnets and the
//! security groups are shown by preflight's own lookups (real EC2's dry run checks them all).

mod common;

use burst_agent::config::{Config, Role};
use common::apache::Apache;
use common::moto::Moto;
use common::*;
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

struct World {
    moto: Moto,
    aws: burst_agent::aws::Aws,
    rt: tokio::runtime::Runtime,
    dir: tempfile::TempDir,
    _apache: Apache,
    good: Config,
    /// A subnet of the slaves' VPC in a zone the ELB does not serve.
    subnet_b: String,
    /// A security group of another VPC.
    foreign_sg: String,
}

fn sg(rt: &tokio::runtime::Runtime, aws: &burst_agent::aws::Aws, vpc: &str, name: &str) -> String {
    rt.block_on(async {
        aws.ec2
            .create_security_group()
            .group_name(name)
            .description("web")
            .vpc_id(vpc)
            .send()
            .await
            .unwrap()
            .group_id()
            .unwrap()
            .to_string()
    })
}

impl World {
    fn new() -> World {
        require("rsync", "rsync");
        require("ssh-keygen", "openssh-client");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let moto = Moto::start();
        let aws = rt.block_on(moto.aws());
        let (vpc, subnets) = rt.block_on(moto.create_vpc(
            &aws,
            "10.30.0.0/16",
            &[
                ("10.30.1.0/24", "us-east-1a"),
                ("10.30.2.0/24", "us-east-1b"),
            ],
        ));
        let (other_vpc, _) = rt.block_on(moto.create_vpc(&aws, "10.40.0.0/16", &[]));
        let web = sg(&rt, &aws, &vpc, "web");
        let foreign_sg = sg(&rt, &aws, &other_vpc, "elsewhere");
        rt.block_on(moto.create_elb(&aws, "shop-elb"));
        let topic = rt.block_on(moto.create_topic(&aws, "shop-ops"));
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let docroot = dir.path().join("www");
        std::fs::create_dir_all(&docroot).unwrap();
        std::fs::write(docroot.join("index.html"), "tee times\n").unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir_all(state.join(".ssh")).unwrap();
        let key = state.join(".ssh/id_ed25519");
        let o = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        let apache = Apache::start(1, 8);

        let mut c = Config::default();
        c.agent.group = "shop".into();
        c.agent.state_dir = state;
        c.aws = moto.aws_config();
        c.fleet.ami = "ami-12c6146b".into();
        c.fleet.instance_type = "t3.small".into();
        c.fleet.fallback_instance_types = vec!["t3.medium".into()];
        c.fleet.subnet_ids = vec![subnets[0].clone()];
        c.fleet.security_group_ids = vec![web];
        c.fleet.instance_profile = String::new();
        c.elb.name = "shop-elb".into();
        c.ledger.table = common::moto::LEDGER_TABLE.into();
        c.events.topic_arn = topic;
        // The shipped rsync over ssh, from this test's document root.
        let n = c.hooks.pre_register.argv.len();
        c.hooks.pre_register.argv[n - 2] = format!("{}/", docroot.display());
        c.sampling.apache_pidfile = apache.pidfile.clone();
        c.sampling.mod_status_url = format!("{}?auto", apache.status_url());
        World {
            moto,
            aws,
            rt,
            dir,
            _apache: apache,
            good: c,
            subnet_b: subnets[1].clone(),
            foreign_sg,
        }
    }

    fn write(&self, name: &str, cfg: &Config) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, toml::to_string(cfg).unwrap()).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        p
    }

    /// `burst-agent --config CFG preflight --json`, as root or (`as_nobody`) as another user;
    /// its exit code and its checks.
    fn preflight(&self, name: &str, cfg: &Config, as_nobody: bool) -> (i32, Vec<Value>) {
        self.preflight_with(name, cfg, as_nobody, true)
    }

    /// As [`World::preflight`]; without `credentials`, the agent finds none anywhere the SDK
    /// looks (no environment, no profile, no instance metadata), as on a build host.
    fn preflight_with(
        &self,
        name: &str,
        cfg: &Config,
        as_nobody: bool,
        credentials: bool,
    ) -> (i32, Vec<Value>) {
        let path = self.write(name, cfg);
        let mut cmd = if as_nobody {
            let mut c = std::process::Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
                .arg(bin());
            c
        } else {
            std::process::Command::new(bin())
        };
        cmd.arg("--config")
            .arg(&path)
            .args(["preflight", "--json"])
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env_remove("AWS_REGION");
        if credentials {
            cmd.env("AWS_ACCESS_KEY_ID", "testing")
                .env("AWS_SECRET_ACCESS_KEY", "testing");
        } else {
            let nowhere = self.dir.path().join("no-such-aws-file");
            cmd.env_remove("AWS_ACCESS_KEY_ID")
                .env_remove("AWS_SECRET_ACCESS_KEY")
                .env_remove("AWS_SESSION_TOKEN")
                .env_remove("AWS_PROFILE")
                .env("AWS_SHARED_CREDENTIALS_FILE", &nowhere)
                .env("AWS_CONFIG_FILE", &nowhere)
                .env("HOME", self.dir.path());
        }
        let o = cmd.output().expect("run burst-agent preflight");
        let v: Value = serde_json::from_str(&stdout(&o))
            .unwrap_or_else(|e| panic!("{e}: {}\n{}", stdout(&o), stderr(&o)));
        (
            o.status.code().unwrap_or(-1),
            v["checks"].as_array().cloned().unwrap_or_default(),
        )
    }
}

fn failures(checks: &[Value]) -> Vec<&Value> {
    checks.iter().filter(|c| c["outcome"] == "fail").collect()
}

/// A broken set-up: exit 1, and every failing check (one, or one per subnet and type for a
/// refused launch) is on `key`, says `what` and has `fix` in its fix.
fn fails_once(got: (i32, Vec<Value>), key: &str, what: &str, fix: &str) {
    let (code, checks) = got;
    let f = failures(&checks);
    assert_eq!(code, 1, "{checks:#?}");
    assert!(!f.is_empty(), "{checks:#?}");
    for c in &f {
        assert_eq!(c["key"], key, "{f:#?}");
        let w = c["what"].as_str().unwrap_or("");
        let x = c["fix"].as_str().unwrap_or("");
        assert!(w.contains(what), "{w}");
        assert!(x.contains(fix), "{x}");
    }
}

#[test]
fn a_correct_set_up_passes_and_each_broken_one_fails_with_its_key_and_fix() {
    let w = World::new();
    let (code, checks) = w.preflight("good.toml", &w.good, false);
    assert_eq!(failures(&checks), Vec::<&Value>::new());
    assert_eq!(code, 0);
    let passed = |what: &str| {
        checks
            .iter()
            .any(|c| c["outcome"] == "pass" && c["what"].as_str().unwrap_or("").contains(what))
    };
    // moto does not enforce dynamodb:LeadingKeys: the probe of another site's items is not
    // run against it, and preflight says so.
    assert!(
        checks.iter().any(|c| c["outcome"] == "skip"
            && c["key"] == "ledger.table"
            && c["what"]
                .as_str()
                .unwrap_or("")
                .contains("does not enforce dynamodb:LeadingKeys")),
        "{checks:#?}"
    );
    for what in [
        "ami-12c6146b exists",
        "as t3.small: EC2 would launch it",
        "as t3.medium: EC2 would launch it",
        "is served by shop-elb",
        "the topic arn:aws:sns:",
        "PutMetricData into BurstAgent/shop/Agent went through",
        "the table burst-agent is ACTIVE with keys site and item",
        "site shop reads back: nobody holds the lease yet; no unit spent yet",
        "a conditional write of this site's items is weighed",
        "is readable by this user only",
        "holds the site",
        "Apache runs as pid",
        "busy,",
    ] {
        assert!(passed(what), "no pass for {what:?}: {checks:#?}");
    }

    let mut c = w.good.clone();
    c.fleet.ami = "ami-0000000000000dead".into();
    fails_once(
        w.preflight("ami.toml", &c, false),
        "fleet.ami",
        "ami-0000000000000dead",
        "describe-images",
    );

    let mut c = w.good.clone();
    c.fleet.subnet_ids = vec![w.subnet_b.clone()];
    fails_once(
        w.preflight("zone.toml", &c, false),
        "fleet.subnet_ids",
        "which shop-elb does not serve",
        "attach-load-balancer-to-subnets",
    );

    let mut c = w.good.clone();
    c.fleet.security_group_ids = vec![w.foreign_sg.clone()];
    fails_once(
        w.preflight("sg.toml", &c, false),
        "fleet.security_group_ids",
        "EC2 refuses the launch",
        "use a security group of vpc-",
    );

    let mut c = w.good.clone();
    c.fleet.instance_profile = "shop-slave".into();
    fails_once(
        w.preflight("profile.toml", &c, false),
        "fleet.instance_profile",
        "shop-slave",
        "create the slaves' instance profile",
    );

    let mut c = w.good.clone();
    c.hooks.pre_register.argv[0] = "/usr/local/bin/no-such-sync".into();
    fails_once(
        w.preflight("prog.toml", &c, false),
        "hooks.pre_register.argv",
        "/usr/local/bin/no-such-sync is not an executable file",
        "full path",
    );

    let key = w.good.agent.state_dir.join(".ssh/id_ed25519");
    let mut c = w.good.clone();
    c.agent.state_dir = w.dir.path().join("no-key-state");
    let missing = c.agent.state_dir.join(".ssh/id_ed25519");
    fails_once(
        w.preflight("nokey.toml", &c, false),
        "hooks.pre_register.argv",
        &format!("the ssh key {} does not exist", missing.display()),
        &format!(
            "sudo -u burst-agent ssh-keygen -t ed25519 -N '' -f {}",
            missing.display()
        ),
    );

    // The key made by root for root (0600, root's): the service user cannot read it.
    let (code, checks) = w.preflight("unreadable.toml", &w.good, true);
    assert_eq!(code, 1);
    let f = failures(&checks);
    let unreadable = f
        .iter()
        .find(|c| {
            c["what"]
                .as_str()
                .unwrap_or("")
                .contains("cannot read the ssh key")
        })
        .unwrap_or_else(|| panic!("{f:#?}"));
    assert_eq!(unreadable["key"], "hooks.pre_register.argv");
    assert_eq!(
        unreadable["fix"],
        format!("chown burst-agent: {0} && chmod 600 {0}", key.display())
    );
    // ... and one others may read, which ssh refuses.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    fails_once(
        w.preflight("open.toml", &w.good, false),
        "hooks.pre_register.argv",
        "is mode 644",
        "chmod 600",
    );
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();

    let mut c = w.good.clone();
    let empty = w.dir.path().join("empty-www");
    std::fs::create_dir_all(&empty).unwrap();
    let n = c.hooks.pre_register.argv.len();
    c.hooks.pre_register.argv[n - 2] = format!("{}/", empty.display());
    fails_once(
        w.preflight("empty.toml", &c, false),
        "hooks.pre_register.argv",
        "is empty",
        "mount the content's volume",
    );

    // The guarantee's table: missing, shaped for something else, holding an item the agent
    // did not write. The probe wrote nothing: the site still has no item.
    let mut c = w.good.clone();
    c.ledger.table = "shop-guarantee".into();
    fails_once(
        w.preflight("notable.toml", &c, false),
        "ledger.table",
        "shop-guarantee: ResourceNotFoundException",
        "burst-agent table create shop-guarantee",
    );
    w.rt.block_on(async {
        use aws_sdk_dynamodb::types::*;
        w.aws
            .dynamodb
            .create_table()
            .table_name("sessions")
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name("id")
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .unwrap(),
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name("id")
                    .key_type(KeyType::Hash)
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .unwrap();
    });
    let mut c = w.good.clone();
    c.ledger.table = "sessions".into();
    fails_once(
        w.preflight("sessions.toml", &c, false),
        "ledger.table",
        "its keys are id (HASH, S), not site (HASH, S) and item (RANGE, S)",
        "burst-agent table create",
    );
    let items = w.rt.block_on(async {
        w.aws
            .dynamodb
            .query()
            .table_name(common::moto::LEDGER_TABLE)
            .key_condition_expression("site = :s")
            .expression_attribute_values(
                ":s",
                aws_sdk_dynamodb::types::AttributeValue::S("shop".into()),
            )
            .send()
            .await
            .unwrap()
            .count()
    });
    assert_eq!(items, 0, "the write probe changed the table");
    w.rt.block_on(async {
        use aws_sdk_dynamodb::types::AttributeValue as A;
        w.aws
            .dynamodb
            .put_item()
            .table_name(common::moto::LEDGER_TABLE)
            .item("site", A::S("shop".into()))
            .item("item", A::S("day#2026-12-07".into()))
            .item("used", A::S("three".into()))
            .send()
            .await
            .unwrap();
    });
    fails_once(
        w.preflight("baditem.toml", &w.good, false),
        "ledger.table",
        "ledger table item shop/day#2026-12-07: no used count",
        "point-in-time recovery",
    );
    w.rt.block_on(async {
        use aws_sdk_dynamodb::types::AttributeValue as A;
        w.aws
            .dynamodb
            .delete_item()
            .table_name(common::moto::LEDGER_TABLE)
            .key("site", A::S("shop".into()))
            .key("item", A::S("day#2026-12-07".into()))
            .send()
            .await
            .unwrap();
    });

    let mut c = w.good.clone();
    c.events.topic_arn = "arn:aws:sns:us-east-1:123456789012:nobody-listens".into();
    fails_once(
        w.preflight("topic.toml", &c, false),
        "events.topic_arn",
        "nobody-listens",
        "aws sns list-topics",
    );

    // No credentials (run on a build host, or the instance profile is missing): one failure
    // that says so with its fix, not the SDK's whole provider chain on every account check.
    let (code, checks) = w.preflight_with("nocreds.toml", &w.good, false, false);
    fails_once(
        (code, checks.clone()),
        "aws",
        "no AWS credentials",
        "instance profile",
    );
    assert_eq!(failures(&checks).len(), 1, "{checks:#?}");
    assert!(
        checks.iter().all(|c| !c["what"]
            .as_str()
            .unwrap_or("")
            .contains("ProviderChainError")),
        "{checks:#?}"
    );

    // The same on a slave: its credentials come from the slave's instance profile, which the
    // master's launch spec names, and the fix says so.
    let mut c = w.good.clone();
    c.agent.role = Role::Reporter;
    c.agent.instance_id = "i-0slave".into();
    let (code, checks) = w.preflight_with("nocreds-reporter.toml", &c, false, false);
    fails_once(
        (code, checks),
        "aws",
        "no AWS credentials",
        "fleet.instance_profile on the master",
    );

    // A slave set up from the master's example: a reporter in dry run. (Its own datapoint is
    // read back too: none was published, so that fails as well, naming the namespace.)
    let mut c = w.good.clone();
    c.agent.role = Role::Reporter;
    c.agent.dry_run = true;
    c.agent.instance_id = "i-0slave".into();
    let (code, checks) = w.preflight("reporter.toml", &c, false);
    assert_eq!(code, 1);
    let keys: Vec<&str> = failures(&checks)
        .iter()
        .map(|c| c["key"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(keys, ["agent.dry_run", "metrics.namespace"], "{checks:#?}");
    let _ = (&w.moto, &w.aws, &w.rt, Path::new("/"));
}
