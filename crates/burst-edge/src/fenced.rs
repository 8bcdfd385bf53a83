//! Fleet-changing calls only inside the lease: [`Fenced`] wraps a [`Cloud`] and refuses a
//! launch, start, stop, register, deregister, terminate, tag or untag once this agent's lease
//! has ended, and cuts a call under way at that moment, retries included (the SDK's retries run
//! inside the future that is dropped). Reads are never fenced: a standby observes too.
//!
//! The end is set by whoever renews the lease ([`LeaseEnd::set`]); burst-core's `lease` says
//! when it is. Nothing is set: nothing fleet-changing goes.

use crate::aws::AwsError;
use crate::cloud::{Cloud, LaunchRequest};
use crate::table::Fence;
use burst_model::{InstanceInfo, MemberState};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use tokio::time::Instant;

/// The end of this agent's lease and the version it holds, shared by every clone (the lease
/// task sets them; the fenced calls and the table's reservations read them).
#[derive(Clone, Debug, Default)]
pub struct LeaseEnd(Arc<Mutex<(Option<Instant>, Option<Fence>)>>);

impl LeaseEnd {
    /// A lease end that never comes: for an agent that runs without a table (a dry run with
    /// AWS, the tests of the executor alone).
    pub fn unbounded() -> Self {
        let far = Instant::now() + std::time::Duration::from_secs(100 * 365 * 86_400);
        LeaseEnd(Arc::new(Mutex::new((Some(far), None))))
    }

    /// This agent holds the lease at `fence` until `end`; `None`: it holds nothing.
    pub fn set(&self, held: Option<(Instant, Fence)>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = match held {
            Some((end, fence)) => (Some(end), Some(fence)),
            None => (None, None),
        };
    }

    pub fn get(&self) -> Option<Instant> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).0
    }

    /// The lease this agent holds now, for a reservation's transaction.
    pub fn fence(&self) -> Option<Fence> {
        let g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        g.0.filter(|e| Instant::now() < *e).and(g.1.clone())
    }

    /// Whether a call may start now.
    pub fn holds(&self) -> bool {
        self.get().is_some_and(|e| Instant::now() < e)
    }
}

/// A [`Cloud`] whose fleet-changing calls stop at the lease's end.
#[derive(Clone)]
pub struct Fenced<C> {
    inner: C,
    end: LeaseEnd,
}

impl<C> Fenced<C> {
    pub fn new(inner: C, end: LeaseEnd) -> Self {
        Fenced { inner, end }
    }

    pub fn inner(&self) -> &C {
        &self.inner
    }
}

fn ended(op: &'static str, under_way: bool) -> AwsError {
    AwsError {
        op,
        code: "LeaseEnded".into(),
        message: if under_way {
            "cut at the end of this agent's lease on the site: whether it took effect is unknown"
                .into()
        } else {
            "not sent: this agent does not hold the site's lease (another agent acts for it)".into()
        },
        retryable: true,
        // Cut under way: unknown. Never sent: certainly not.
        not_applied: !under_way,
    }
}

async fn fenced<T, F>(end: &LeaseEnd, op: &'static str, call: F) -> Result<T, AwsError>
where
    F: Future<Output = Result<T, AwsError>>,
{
    let Some(until) = end.get().filter(|e| Instant::now() < *e) else {
        return Err(ended(op, false));
    };
    match tokio::time::timeout_at(until, call).await {
        Ok(r) => r,
        Err(_) => Err(ended(op, true)),
    }
}

impl<C: Cloud> Cloud for Fenced<C> {
    async fn launch(&self, req: &LaunchRequest) -> Result<Vec<InstanceInfo>, AwsError> {
        fenced(&self.end, "RunInstances", self.inner.launch(req)).await
    }
    async fn describe_group(&self) -> Result<Vec<InstanceInfo>, AwsError> {
        self.inner.describe_group().await
    }
    async fn describe_named(
        &self,
        ids: &[String],
        intents: &[String],
    ) -> Result<Vec<InstanceInfo>, AwsError> {
        self.inner.describe_named(ids, intents).await
    }
    async fn elb_members(&self) -> Result<BTreeMap<String, MemberState>, AwsError> {
        self.inner.elb_members().await
    }
    async fn register(&self, ids: &[String]) -> Result<(), AwsError> {
        fenced(
            &self.end,
            "RegisterInstancesWithLoadBalancer",
            self.inner.register(ids),
        )
        .await
    }
    async fn deregister(&self, ids: &[String]) -> Result<(), AwsError> {
        fenced(
            &self.end,
            "DeregisterInstancesFromLoadBalancer",
            self.inner.deregister(ids),
        )
        .await
    }
    async fn terminate(&self, ids: &[String]) -> Result<(), AwsError> {
        fenced(&self.end, "TerminateInstances", self.inner.terminate(ids)).await
    }
    async fn stop(&self, ids: &[String]) -> Result<(), AwsError> {
        fenced(&self.end, "StopInstances", self.inner.stop(ids)).await
    }
    async fn start(&self, ids: &[String]) -> Result<(), AwsError> {
        fenced(&self.end, "StartInstances", self.inner.start(ids)).await
    }
    async fn untag(&self, ids: &[String], keys: &[&str]) -> Result<(), AwsError> {
        fenced(&self.end, "DeleteTags", self.inner.untag(ids, keys)).await
    }
    async fn tag(&self, ids: &[String], key: &str, value: &str) -> Result<(), AwsError> {
        fenced(&self.end, "CreateTags", self.inner.tag(ids, key, value)).await
    }
}
