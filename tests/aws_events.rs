//! Event notifications against a real moto server (SNS delivering to SQS): a burst cap that
//! flaps between exhausted and one left for a whole minute reaches a subscribed queue exactly
//! once, with the attributes a subscription filter reads; and the liveness probe against
//! Debian's apache2 reports latency, a 5xx, an unreachable URL and a timeout by key.

mod common;

use burst_agent::config::{Config, Dur};
use burst_agent::daemon::events::Events;
use burst_agent::events::{Levels, Outcome};
use common::moto::Moto;
use jiff::Timestamp;
use std::process::Command;
use std::time::Duration;

/// Runs a boto3 script against moto (the test venv has boto3, moto's own dependency); its
/// stdout.
fn boto3(moto: &Moto, script: &str) -> String {
    let python = common::root().join(".venv-test/bin/python");
    assert!(python.is_file(), "{}", common::moto::SETUP_MOTO);
    let out = Command::new(&python)
        .arg("-c")
        .arg(script)
        .env("MOTO_ENDPOINT", &moto.endpoint)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "boto3 script failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

const SETUP_TOPIC: &str = r#"
import boto3, os
e = os.environ["MOTO_ENDPOINT"]
sns = boto3.client("sns", endpoint_url=e)
sqs = boto3.client("sqs", endpoint_url=e)
topic = sns.create_topic(Name="ops")["TopicArn"]
q = sqs.create_queue(QueueName="ops-events")["QueueUrl"]
arn = sqs.get_queue_attributes(QueueUrl=q, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn)
print(topic)
"#;

const DRAIN_QUEUE: &str = r#"
import boto3, json, os
e = os.environ["MOTO_ENDPOINT"]
sqs = boto3.client("sqs", endpoint_url=e)
q = sqs.get_queue_url(QueueName="ops-events")["QueueUrl"]
while True:
    got = sqs.receive_message(QueueUrl=q, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
    if not got:
        break
    for m in got:
        env = json.loads(m["Body"])
        attrs = {k: v["Value"] for k, v in env.get("MessageAttributes", {}).items()}
        print(json.dumps({"subject": env.get("Subject"), "message": env["Message"], "attrs": attrs}))
        sqs.delete_message(QueueUrl=q, ReceiptHandle=m["ReceiptHandle"])
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cap_exhausted_reaches_a_subscribed_queue_once_across_a_flapping_minute() {
    let moto = Moto::start();
    let aws = moto.aws().await;
    let topic = boto3(&moto, SETUP_TOPIC).trim().to_string();
    assert!(topic.starts_with("arn:aws:sns:"), "{topic}");

    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config::default();
    cfg.agent.group = "golf".into();
    cfg.agent.state_dir = dir.path().to_path_buf();
    cfg.aws = moto.aws_config();
    cfg.events.topic_arn = topic;
    cfg.events.window = Dur::secs(600);
    let levels = |remaining: u32| Levels {
        cap_used: 7 - remaining,
        cap_limit: 7,
        cap_remaining: remaining,
        day: "2026-11-25".into(),
        blocked: None,
    };
    let t0 = Timestamp::now();
    let mut events = Events::load(dir.path());
    // A minute of ticks, the last launch of the day failing and succeeding in turn: the cap
    // reads 0, 1, 0, 1, ... left.
    for s in 0..60 {
        let now = t0 + jiff::SignedDuration::from_secs(s);
        events.tick(&cfg, Some(&aws), levels((s % 2) as u32), vec![], now);
    }
    events.finish(Duration::from_secs(20)).await;

    let got = boto3(&moto, DRAIN_QUEUE);
    let messages: Vec<serde_json::Value> = got
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let exhausted: Vec<&serde_json::Value> = messages
        .iter()
        .filter(|m| m["attrs"]["event"] == "cap_exhausted")
        .collect();
    assert_eq!(exhausted.len(), 1, "{got}");
    let m = exhausted[0];
    assert_eq!(m["attrs"]["group"], "golf");
    assert_eq!(m["subject"], "burst-agent golf: cap_exhausted");
    let body = m["message"].as_str().unwrap();
    assert!(body.contains("event: cap_exhausted\n"), "{body}");
    assert!(body.contains("burst cap 7/7 used today, 0 left"), "{body}");
    // Nothing else was sent (1 left after 0 is no news: cap_low is crossed going down).
    assert_eq!(messages.len(), 1, "{got}");
    // The other 29 crossings into exhausted were held back (status shows the last 20).
    let held: Vec<_> = events.recent().map(|r| r.outcome).collect();
    assert_eq!(held.len(), 20);
    assert!(held.iter().all(|o| *o == Outcome::Deduplicated), "{held:?}");

    // A restarted agent remembers what it sent: the same condition again is held back.
    drop(events);
    let mut again = Events::load(dir.path());
    let now = t0 + jiff::SignedDuration::from_secs(90);
    again.tick(&cfg, Some(&aws), levels(0), vec![], now);
    again.finish(Duration::from_secs(20)).await;
    assert_eq!(boto3(&moto, DRAIN_QUEUE), "", "sent again after a restart");
}

mod probe {
    use super::common::apache::{free_port, Apache};
    use burst_agent::sampler::probe::Prober;
    use std::time::Duration;

    #[test]
    fn the_probe_reports_latency_a_5xx_a_redirect_an_unreachable_url_and_a_timeout_by_key() {
        let apache = Apache::start(2, 4);
        // A listener that accepts and never answers.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let silent_port = silent.local_addr().unwrap().port();
        let urls = vec![
            format!("http://127.0.0.1:{}/", apache.port),
            format!("http://127.0.0.1:{}/broken", apache.port),
            format!("http://127.0.0.1:{}/", free_port()),
            format!("http://127.0.0.1:{silent_port}/"),
        ];
        let round = Prober::new(&urls, Duration::from_millis(1500)).round();
        assert_eq!(round.len(), 4);

        let ok = &round[0];
        assert_eq!((ok.status, &ok.error), (Some(200), &None), "{ok}");
        assert!(ok.latency_ms > 0.0 && ok.latency_ms < 1500.0, "{ok}");

        let broken = &round[1];
        assert_eq!(broken.status, Some(503), "{broken}");
        let e = broken.error.as_deref().unwrap();
        assert!(
            e.starts_with("sampling.probe_urls[1]: ") && e.contains("503"),
            "{e}"
        );
        assert!(!broken.timed_out);

        let refused = &round[2];
        let e = refused.error.as_deref().unwrap();
        assert!(e.starts_with("sampling.probe_urls[2]: unreachable"), "{e}");
        assert!(!refused.timed_out);

        let slow = &round[3];
        assert!(slow.timed_out, "{slow}");
        assert_eq!(slow.latency_ms, 1500.0);
        assert!(slow
            .error
            .as_deref()
            .unwrap()
            .starts_with("sampling.probe_urls[3]: "));

        // A redirect is an answer, not a failure; but no latency for the policy either.
        let moved = &Prober::new(
            &[format!("http://127.0.0.1:{}/moved", apache.port)],
            Duration::from_millis(1500),
        )
        .round()[0];
        assert_eq!((moved.status, &moved.error), (Some(301), &None), "{moved}");
        assert_eq!(
            burst_agent::model::probe_latency(std::slice::from_ref(moved)),
            None
        );

        // What the policy reads: an error page is no latency at all.
        assert_eq!(burst_agent::model::probe_latency(&round), None);
        assert_eq!(
            burst_agent::model::probe_latency(&round[..1]).map(|(_, ms)| ms),
            Some(ok.latency_ms)
        );
        drop(silent);
    }
}
