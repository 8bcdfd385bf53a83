//! The EC2 and classic-ELB edge of the actuator: a small trait ([`Cloud`]) with the eleven calls
//! the state machine needs, and its implementation on the shared [`Aws`] client layer.
//! Every list call is one request whatever the fleet size (pagination aside), so the calls per
//! steady-state tick do not grow with the slaves.
//!
//! [`AwsCloud`] is the one writer of the launch spec ([`AwsCloud::run_instances`], which
//! preflight also sends with DryRun) and of the agent's tags, and maps the SDK's types to the
//! model's [`InstanceInfo`] (a terminated instance's end read from EC2's transition reason).
//! In the daemon it is wrapped in `fenced::Fenced`, so nothing fleet-changing goes outside the
//! lease.

use crate::aws::{Aws, AwsError};
use crate::config::FleetConfig;
pub use crate::model::{
    InstanceInfo, InstanceState, MemberState, TAG_BURST, TAG_DRAINING_SINCE, TAG_GROUP, TAG_INTENT,
    TAG_LAUNCHED_AT, TAG_OWNER, TAG_POOLED_SINCE,
};
use aws_sdk_ec2::types::{
    DeviceType, Filter, IamInstanceProfileSpecification, Instance, InstanceStateName, InstanceType,
    LaunchTemplateSpecification, ResourceType, Tag, TagSpecification,
};
use aws_sdk_elasticloadbalancing::types::Instance as ElbInstance;
use jiff::Timestamp;
use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;

/// One RunInstances request: `min..=max` instances, all tagged with the same intent.
#[derive(Clone, Debug)]
pub struct LaunchRequest {
    pub intent: String,
    /// The `burst-agent:owner` tag every instance of this launch carries.
    pub owner: String,
    /// Idempotency token: the same token returns the same instances on real EC2.
    pub client_token: String,
    pub min: u32,
    pub max: u32,
    pub launched_at: Timestamp,
    /// The subnet (and so zone) to launch in; `None` lets EC2 choose.
    pub subnet: Option<String>,
    /// An instance type instead of `fleet.instance_type` (or the launch template's).
    pub instance_type: Option<String>,
}

pub trait Cloud: Clone + Send + Sync + 'static {
    fn launch(
        &self,
        req: &LaunchRequest,
    ) -> impl Future<Output = Result<Vec<InstanceInfo>, AwsError>> + Send;
    /// Every instance tagged with the group, terminated ones included while EC2 still lists them.
    /// Not all of them are this agent's: burst-core's `lifecycle::rules::ownership` decides.
    fn describe_group(&self) -> impl Future<Output = Result<Vec<InstanceInfo>, AwsError>> + Send;
    /// The instances with these ids, and those carrying these `burst-agent:intent` tags,
    /// whatever their group tag: this install's records name them (the owned instances, the
    /// journal's open intents), and a removed or changed group tag must not lose one. An id
    /// EC2 does not know is left out, not an error (a filter, not `InstanceIds`, so one
    /// unknown id does not fail the call).
    fn describe_named(
        &self,
        ids: &[String],
        intents: &[String],
    ) -> impl Future<Output = Result<Vec<InstanceInfo>, AwsError>> + Send;
    fn elb_members(
        &self,
    ) -> impl Future<Output = Result<BTreeMap<String, MemberState>, AwsError>> + Send;
    fn register(&self, ids: &[String]) -> impl Future<Output = Result<(), AwsError>> + Send;
    fn deregister(&self, ids: &[String]) -> impl Future<Output = Result<(), AwsError>> + Send;
    fn terminate(&self, ids: &[String]) -> impl Future<Output = Result<(), AwsError>> + Send;
    /// StopInstances (into the warm pool).
    fn stop(&self, ids: &[String]) -> impl Future<Output = Result<(), AwsError>> + Send;
    /// StartInstances (out of the warm pool).
    fn start(&self, ids: &[String]) -> impl Future<Output = Result<(), AwsError>> + Send;
    /// DeleteTags: the tags `keys`, whatever their values.
    fn untag(
        &self,
        ids: &[String],
        keys: &[&str],
    ) -> impl Future<Output = Result<(), AwsError>> + Send;
    fn tag(
        &self,
        ids: &[String],
        key: &str,
        value: &str,
    ) -> impl Future<Output = Result<(), AwsError>> + Send;
}

#[derive(Debug, thiserror::Error)]
#[error("fleet.user_data_file {path:?}: {why}")]
pub struct LaunchSpecError {
    pub path: PathBuf,
    pub why: String,
}

/// [`Cloud`] on real EC2 and a classic ELB (or an emulator at `aws.endpoint_url`).
#[derive(Clone)]
pub struct AwsCloud {
    aws: Aws,
    group: String,
    elb_name: String,
    fleet: FleetConfig,
    user_data_b64: Option<String>,
}

impl AwsCloud {
    /// DescribeInstances with one filter, every page (the SDK's paginator; each page is one
    /// call through the shared rate limit).
    async fn describe(&self, filter: Filter) -> Result<Vec<InstanceInfo>, AwsError> {
        let mut out = Vec::new();
        let mut pages = self
            .aws
            .ec2
            .describe_instances()
            .filters(filter)
            .into_paginator()
            .send();
        while let Some(page) = self.aws.page("DescribeInstances", pages.next()).await? {
            for r in page.reservations() {
                out.extend(r.instances().iter().filter_map(info));
            }
        }
        Ok(out)
    }

    /// Reads the user-data file now, so a bad path fails at start, not at the first burst.
    pub fn new(
        aws: Aws,
        group: &str,
        elb_name: &str,
        fleet: &FleetConfig,
    ) -> Result<Self, LaunchSpecError> {
        let user_data_b64 = match &fleet.user_data_file {
            None => None,
            Some(path) => {
                let bytes = std::fs::read(path).map_err(|e| LaunchSpecError {
                    path: path.clone(),
                    why: e.to_string(),
                })?;
                if bytes.len() > 16 * 1024 {
                    return Err(LaunchSpecError {
                        path: path.clone(),
                        why: format!(
                            "{} bytes; EC2 takes at most 16 KiB of user data",
                            bytes.len()
                        ),
                    });
                }
                Some(aws_smithy_types::base64::encode(bytes))
            }
        };
        Ok(AwsCloud {
            aws,
            group: group.into(),
            elb_name: elb_name.into(),
            fleet: fleet.clone(),
            user_data_b64,
        })
    }

    pub fn aws(&self) -> &Aws {
        &self.aws
    }
}

fn tag_of<'a>(i: &'a Instance, key: &str) -> Option<&'a str> {
    i.tags()
        .iter()
        .find(|t| t.key() == Some(key))
        .and_then(|t| t.value())
}

fn parse_ts(s: &str) -> Option<Timestamp> {
    s.parse().ok()
}

/// "User initiated (2026-11-25 09:16:37 UTC)" / "(… GMT)" → the timestamp in it.
pub(crate) fn transition_time(reason: &str) -> Option<Timestamp> {
    let inner = reason.rsplit_once('(')?.1.strip_suffix(')')?;
    let inner = inner
        .strip_suffix(" UTC")
        .or_else(|| inner.strip_suffix(" GMT"))?;
    let dt: jiff::civil::DateTime = inner.parse().ok()?;
    dt.to_zoned_datetime(jiff::tz::TimeZone::UTC)
        .ok()
        .map(|z| z.timestamp())
}

fn info(i: &Instance) -> Option<InstanceInfo> {
    let id = i.instance_id()?.to_string();
    let state = match i.state().and_then(|s| s.name()) {
        Some(InstanceStateName::Pending) => InstanceState::Pending,
        Some(InstanceStateName::Running) => InstanceState::Running,
        Some(InstanceStateName::Stopping) => InstanceState::Stopping,
        Some(InstanceStateName::Stopped) => InstanceState::Stopped,
        Some(InstanceStateName::ShuttingDown) => InstanceState::ShuttingDown,
        Some(InstanceStateName::Terminated) => InstanceState::Terminated,
        // An unknown or missing state: assume it may be running (it may cost money).
        _ => InstanceState::Pending,
    };
    let launch_time = i
        .launch_time()
        .and_then(|t| t.to_millis().ok())
        .and_then(|ms| Timestamp::from_millisecond(ms).ok());
    Some(InstanceInfo {
        state,
        private_ip: i.private_ip_address().map(str::to_string),
        private_dns: i
            .private_dns_name()
            .filter(|s| !s.is_empty())
            .map(str::to_string),
        launched_at: tag_of(i, TAG_LAUNCHED_AT)
            .and_then(parse_ts)
            .or(launch_time),
        ec2_launched_at: launch_time,
        client_token: i.client_token().map(str::to_string),
        intent: tag_of(i, TAG_INTENT).map(str::to_string),
        group: tag_of(i, TAG_GROUP).map(str::to_string),
        owner: tag_of(i, TAG_OWNER).map(str::to_string),
        draining_since: tag_of(i, TAG_DRAINING_SINCE).and_then(parse_ts),
        pooled_since: tag_of(i, TAG_POOLED_SINCE).and_then(parse_ts),
        // Unsaid (an emulator): EBS, as every current-generation AMI is; a refused
        // StopInstances falls back to termination anyway.
        ebs_root: i.root_device_type() != Some(&DeviceType::InstanceStore),
        ended_at: (state == InstanceState::Terminated)
            .then(|| i.state_transition_reason().and_then(transition_time))
            .flatten(),
        instance_type: i.instance_type().map(|t| t.as_str().to_string()),
        stopped_at: (state == InstanceState::Stopped)
            .then(|| i.state_transition_reason().and_then(transition_time))
            .flatten(),
        id,
    })
}

/// One attempt, no SDK retry: for the calls whose refusal the agent takes back from the cap
/// (RunInstances, StartInstances). After the SDK's retry, the last answer alone is seen: a
/// throttled retry of an attempt that did launch (its answer lost) would read as "nothing
/// happened", and the cap unit would be given back for an instance that runs. With one attempt
/// a refusal is the whole story, and a lost answer stays ambiguous (the journal and the tags
/// settle it; the agent's own next tick is the retry).
fn one_attempt() -> aws_sdk_ec2::config::Builder {
    aws_sdk_ec2::config::Builder::default()
        .retry_config(aws_smithy_types::retry::RetryConfig::standard().with_max_attempts(1))
}

fn tag(k: &str, v: &str) -> Tag {
    Tag::builder().key(k).value(v).build()
}

impl AwsCloud {
    /// The RunInstances call of a launch, the one place that writes the launch spec: `launch`
    /// sends it, `preflight` sends it with DryRun (so what it proves is what a burst sends).
    pub fn run_instances(
        &self,
        req: &LaunchRequest,
    ) -> aws_sdk_ec2::operation::run_instances::builders::RunInstancesFluentBuilder {
        let f = &self.fleet;
        let mut tags = vec![
            tag(TAG_GROUP, &self.group),
            tag(TAG_INTENT, &req.intent),
            tag(TAG_OWNER, &req.owner),
            tag(TAG_LAUNCHED_AT, &req.launched_at.to_string()),
            tag(TAG_BURST, "true"),
        ];
        if !f.tags.contains_key("Name") {
            tags.push(tag("Name", &format!("burst-agent-{}", self.group)));
        }
        tags.extend(f.tags.iter().map(|(k, v)| tag(k, v)));
        let spec = |rt: ResourceType| {
            TagSpecification::builder()
                .resource_type(rt)
                .set_tags(Some(tags.clone()))
                .build()
        };
        let mut call = self
            .aws
            .ec2
            .run_instances()
            .min_count(i32::try_from(req.min).unwrap_or(1))
            .max_count(i32::try_from(req.max).unwrap_or(1))
            .client_token(&req.client_token)
            .tag_specifications(spec(ResourceType::Instance))
            .tag_specifications(spec(ResourceType::Volume));
        if let Some(lt) = &f.launch_template {
            let mut s = LaunchTemplateSpecification::builder().version(&lt.version);
            s = if lt.id.is_empty() {
                s.launch_template_name(&lt.name)
            } else {
                s.launch_template_id(&lt.id)
            };
            call = call.launch_template(s.build());
        } else {
            call = call
                .image_id(&f.ami)
                .instance_type(InstanceType::from(f.instance_type.as_str()));
        }
        if let Some(subnet) = &req.subnet {
            call = call.subnet_id(subnet);
        }
        if let Some(t) = &req.instance_type {
            call = call.instance_type(InstanceType::from(t.as_str()));
        }
        if !f.security_group_ids.is_empty() {
            call = call.set_security_group_ids(Some(f.security_group_ids.clone()));
        }
        if !f.instance_profile.is_empty() {
            let p = IamInstanceProfileSpecification::builder();
            let p = if f.instance_profile.starts_with("arn:") {
                p.arn(&f.instance_profile)
            } else {
                p.name(&f.instance_profile)
            };
            call = call.iam_instance_profile(p.build());
        }
        if !f.key_name.is_empty() {
            call = call.key_name(&f.key_name);
        }
        if let Some(ud) = &self.user_data_b64 {
            call = call.user_data(ud);
        }
        call
    }
}

impl Cloud for AwsCloud {
    async fn launch(&self, req: &LaunchRequest) -> Result<Vec<InstanceInfo>, AwsError> {
        let call = self.run_instances(req);
        let out = self
            .aws
            .call(
                "RunInstances",
                call.customize().config_override(one_attempt()).send(),
            )
            .await?;
        Ok(out.instances().iter().filter_map(info).collect())
    }

    async fn describe_group(&self) -> Result<Vec<InstanceInfo>, AwsError> {
        let filter = Filter::builder()
            .name(format!("tag:{TAG_GROUP}"))
            .values(&self.group)
            .build();
        self.describe(filter).await
    }

    async fn describe_named(
        &self,
        ids: &[String],
        intents: &[String],
    ) -> Result<Vec<InstanceInfo>, AwsError> {
        let mut out: Vec<InstanceInfo> = Vec::new();
        let by_intent = format!("tag:{TAG_INTENT}");
        // A filter takes at most 200 values.
        for (name, values) in [("instance-id", ids), (by_intent.as_str(), intents)] {
            for chunk in values.chunks(200) {
                let filter = Filter::builder()
                    .name(name)
                    .set_values(Some(chunk.to_vec()))
                    .build();
                for i in self.describe(filter).await? {
                    if !out.iter().any(|o| o.id == i.id) {
                        out.push(i);
                    }
                }
            }
        }
        Ok(out)
    }

    async fn elb_members(&self) -> Result<BTreeMap<String, MemberState>, AwsError> {
        let out = self
            .aws
            .call(
                "DescribeInstanceHealth",
                self.aws
                    .elb
                    .describe_instance_health()
                    .load_balancer_name(&self.elb_name)
                    .send(),
            )
            .await?;
        Ok(out
            .instance_states()
            .iter()
            .filter_map(|s| {
                let state = match s.state() {
                    Some("InService") => MemberState::InService,
                    Some("OutOfService") => MemberState::OutOfService,
                    _ => MemberState::Unknown,
                };
                Some((s.instance_id()?.to_string(), state))
            })
            .collect())
    }

    async fn register(&self, ids: &[String]) -> Result<(), AwsError> {
        let instances = ids
            .iter()
            .map(|id| ElbInstance::builder().instance_id(id).build())
            .collect();
        self.aws
            .call(
                "RegisterInstancesWithLoadBalancer",
                self.aws
                    .elb
                    .register_instances_with_load_balancer()
                    .load_balancer_name(&self.elb_name)
                    .set_instances(Some(instances))
                    .send(),
            )
            .await
            .map(|_| ())
    }

    async fn deregister(&self, ids: &[String]) -> Result<(), AwsError> {
        let instances = ids
            .iter()
            .map(|id| ElbInstance::builder().instance_id(id).build())
            .collect();
        match self
            .aws
            .call(
                "DeregisterInstancesFromLoadBalancer",
                self.aws
                    .elb
                    .deregister_instances_from_load_balancer()
                    .load_balancer_name(&self.elb_name)
                    .set_instances(Some(instances))
                    .send(),
            )
            .await
        {
            // Already gone from the ELB: that is what we wanted. In a batch the whole call
            // failed: the caller goes one by one.
            Err(e) if e.is("InvalidInstance") && ids.len() == 1 => Ok(()),
            other => other.map(|_| ()),
        }
    }

    async fn terminate(&self, ids: &[String]) -> Result<(), AwsError> {
        match self
            .aws
            .call(
                "TerminateInstances",
                self.aws
                    .ec2
                    .terminate_instances()
                    .set_instance_ids(Some(ids.to_vec()))
                    .send(),
            )
            .await
        {
            // One unknown id is already gone; in a batch EC2 terminated none of them, and the
            // caller goes one by one.
            Err(e) if e.is("InvalidInstanceID.NotFound") && ids.len() == 1 => Ok(()),
            other => other.map(|_| ()),
        }
    }

    async fn stop(&self, ids: &[String]) -> Result<(), AwsError> {
        self.aws
            .call(
                "StopInstances",
                self.aws
                    .ec2
                    .stop_instances()
                    .set_instance_ids(Some(ids.to_vec()))
                    .send(),
            )
            .await
            .map(|_| ())
    }

    async fn start(&self, ids: &[String]) -> Result<(), AwsError> {
        self.aws
            .call(
                "StartInstances",
                self.aws
                    .ec2
                    .start_instances()
                    .set_instance_ids(Some(ids.to_vec()))
                    .customize()
                    .config_override(one_attempt())
                    .send(),
            )
            .await
            .map(|_| ())
    }

    async fn untag(&self, ids: &[String], keys: &[&str]) -> Result<(), AwsError> {
        let mut call = self.aws.ec2.delete_tags().set_resources(Some(ids.to_vec()));
        for k in keys {
            call = call.tags(Tag::builder().key(*k).build());
        }
        self.aws.call("DeleteTags", call.send()).await.map(|_| ())
    }

    async fn tag(&self, ids: &[String], key: &str, value: &str) -> Result<(), AwsError> {
        self.aws
            .call(
                "CreateTags",
                self.aws
                    .ec2
                    .create_tags()
                    .set_resources(Some(ids.to_vec()))
                    .tags(tag(key, value))
                    .send(),
            )
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn termination_time_is_read_from_the_transition_reason() {
        assert_eq!(
            transition_time("User initiated (2026-11-25 09:16:37 UTC)"),
            Some("2026-11-25T09:16:37Z".parse().unwrap())
        );
        assert_eq!(
            transition_time("User initiated (2026-11-25 09:16:37 GMT)"),
            Some("2026-11-25T09:16:37Z".parse().unwrap())
        );
        assert_eq!(transition_time("Server.SpotInstanceTermination"), None);
        assert_eq!(transition_time(""), None);
    }
}
