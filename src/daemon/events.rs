//! The daemon's side of event notifications: levels watched tick to tick, the notifier's memory
//! kept in `state_dir/events.json`, and the sending (the `hooks.on_event` program, the SNS
//! topic) on tasks of their own so a slow receiver never holds up a tick. What to send is
//! decided in `crate::events`, purely.

use crate::aws::Aws;
use crate::config::Config;
use crate::events::{edges, Event, Levels, Message, Notifier, Record};
use crate::fsutil;
use crate::hooks::{self, EventVars};
use aws_sdk_sns::types::MessageAttributeValue;
use jiff::Timestamp;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::task::JoinSet;

pub struct Events {
    notifier: Notifier,
    path: PathBuf,
    levels: Option<Levels>,
    /// Each send ends with its message and, if it failed, why.
    sends: JoinSet<(Message, Option<String>)>,
}

/// `events.json`: version 1 since issue 20; the files agents wrote before it had no version.
const FORMAT: crate::store::Format = crate::store::Format {
    name: "events.json",
    version: 1,
    oldest: 1,
    unversioned: Some(1),
};

impl Events {
    /// The notifier's memory from `state_dir/events.json`. A damaged file is set aside (never
    /// deleted) and the agent starts with an empty memory: at worst a condition is told twice.
    pub fn load(state_dir: &Path) -> Self {
        use crate::store::Read;
        let path = state_dir.join("events.json");
        let notifier = match FORMAT.read::<Notifier>(&fsutil::RealDisk, &path) {
            Read::Found { value, .. } => value,
            Read::Missing => Notifier::default(),
            Read::Damaged(e) => {
                let aside = fsutil::quarantine(&path, Timestamp::now().as_second());
                tracing::warn!(path = %path.display(), moved_to = %fsutil::aside_text(&aside),
                    "events.json is not the notifier's memory ({e}); set aside, starting \
                     afresh (a condition may be told once more)");
                Notifier::default()
            }
            Read::Unreadable(e) => {
                tracing::warn!(path = %path.display(), "cannot read events.json ({e}); starting \
                    with an empty memory (a condition may be told once more)");
                Notifier::default()
            }
        };
        Events {
            notifier,
            path,
            levels: None,
            sends: JoinSet::new(),
        }
    }

    pub fn recent(&self) -> impl Iterator<Item = &Record> {
        self.notifier.recent()
    }

    /// One tick's events: the actuator's, and the levels' crossings. Each is offered to the
    /// notifier; what it lets through is sent, and so are the summaries of what it held back
    /// that are due. Returns the sends that failed since the last tick (for `status`).
    pub fn tick(
        &mut self,
        cfg: &Config,
        aws: Option<&Aws>,
        levels: Levels,
        mut events: Vec<Event>,
        now: Timestamp,
    ) -> Vec<String> {
        let failed = self.reap(now);
        events.extend(edges(
            self.levels.as_ref(),
            &levels,
            cfg.alarms.cap_remaining_at_most,
        ));
        self.levels = Some(levels);
        let (group, dry) = (&cfg.agent.group, cfg.agent.dry_run);
        let mut out = Vec::new();
        for ev in events {
            tracing::info!(event = ev.kind.name(), instance_id = ?ev.instance_id,
                "event: {}", ev.detail);
            out.extend(self.notifier.offer(&cfg.events, group, dry, ev, now));
        }
        out.extend(self.notifier.due(&cfg.events, group, dry, now));
        let changed = !out.is_empty() || !failed.is_empty();
        for m in out {
            self.send(cfg, aws, m);
        }
        if changed {
            self.save();
        }
        failed
    }

    fn save(&self) {
        let saved = FORMAT.write(&fsutil::RealDisk, &self.path, &self.notifier);
        if let Err(e) = saved {
            tracing::warn!(path = %self.path.display(), "could not keep the notifier's memory \
                ({e}); after a restart a condition may be told once more");
        }
    }

    /// Sends one message to the hook and the topic, on a task of its own; it fails if either
    /// fails.
    fn send(&mut self, cfg: &Config, aws: Option<&Aws>, m: Message) {
        let hook = cfg.hooks.on_event.clone();
        let vars = EventVars {
            event: m.kind.name().into(),
            group: m.group.clone(),
            instance_id: m.instance_id.clone().unwrap_or_default(),
            detail: m.detail.clone(),
            state_dir: cfg.agent.state_dir.to_string_lossy().into_owned(),
            dry_run: m.dry_run,
        };
        let topic = cfg.events.topic_arn.clone();
        let aws = match (topic.is_empty(), aws) {
            (true, _) => None,
            (false, None) => {
                tracing::warn!(event = m.kind.name(), topic = %topic,
                    "event not published: no AWS (dry run on this host alone)");
                None
            }
            (false, Some(aws)) => Some(aws.clone()),
        };
        self.sends.spawn(async move {
            let mut why = Vec::new();
            if let Some(hook) = hook {
                let run = hooks::run_event(&hook, &vars).await;
                match run.result {
                    Ok(()) => tracing::info!(
                        event = m.kind.name(),
                        hook = "on_event",
                        secs = run.duration.as_secs_f64(),
                        "event told to hooks.on_event"
                    ),
                    Err(e) => {
                        tracing::warn!(
                            event = m.kind.name(),
                            hook = "on_event",
                            attempts = run.attempts,
                            "hooks.on_event failed: {e}"
                        );
                        why.push(format!("hooks.on_event: {e}"));
                    }
                }
            }
            if let Some(aws) = aws {
                match publish(&aws, &topic, &m).await {
                    Ok(id) => tracing::info!(event = m.kind.name(), topic = %topic,
                        message_id = %id, "event published"),
                    Err(e) => {
                        tracing::warn!(event = m.kind.name(), topic = %topic,
                            "could not publish the event to events.topic_arn: {e}");
                        why.push(format!("events.topic_arn: {e}"));
                    }
                }
            }
            let why = (!why.is_empty()).then(|| why.join("; "));
            (m, why)
        });
    }

    /// Sends that finished; a failed one is shown by `status` and told again after its window.
    fn reap(&mut self, now: Timestamp) -> Vec<String> {
        let mut failed = Vec::new();
        while let Some(r) = self.sends.try_join_next() {
            match r {
                Ok((m, Some(why))) => {
                    self.notifier.failed(&m, &why, now);
                    failed.push(format!("event {} not delivered: {why}", m.kind));
                }
                Ok((_, None)) => {}
                Err(e) => tracing::warn!("an event send ended abnormally: {e}"),
            }
        }
        failed
    }

    /// At shutdown: sends under way get until `deadline`, then are dropped.
    pub async fn finish(&mut self, deadline: Duration) {
        let _ = tokio::time::timeout(deadline, async {
            while let Some(r) = self.sends.join_next().await {
                if let Ok((m, Some(why))) = r {
                    self.notifier.failed(&m, &why, Timestamp::now());
                }
            }
        })
        .await;
        self.sends.abort_all();
        self.save();
    }
}

/// Publishes one message; its `event` attribute lets subscriptions filter by kind.
pub async fn publish(aws: &Aws, topic: &str, m: &Message) -> Result<String, crate::aws::AwsError> {
    let attr = |v: &str| {
        MessageAttributeValue::builder()
            .data_type("String")
            .string_value(v)
            .build()
    };
    let mut req = aws
        .sns
        .publish()
        .topic_arn(topic)
        .subject(m.subject())
        .message(m.body());
    for (k, v) in [("event", m.kind.name()), ("group", m.group.as_str())] {
        if let Ok(a) = attr(v) {
            req = req.message_attributes(k, a);
        }
    }
    let out = aws.call("Publish", req.send()).await?;
    Ok(out.message_id().unwrap_or_default().to_string())
}
