//! Fleet-changing calls only inside the lease: [`Fenced`] wraps a [`Cloud`] and refuses a
//! launch, start, stop, register, deregister, terminate, tag or untag once this agent's lease
//! has ended, and cuts a call under way at that moment, retries included (the SDK's retries run
//! inside the future that is dropped). Reads are never fenced: a standby observes too.
//!
//! The end is set by whoever renews the lease ([`LeaseEnd::set`]); burst-core's `lease` says
//! when it is. Nothing is set: nothing fleet-changing goes. The end is kept on tokio's clock and
//! on CLOCK_BOOTTIME ([`boottime`]), which counts through a suspend that stops tokio's; a
//! reservation the table refuses for the lease ends it at once ([`LeaseEnd::lose`]), and the
//! lease task hears of it.

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
pub struct LeaseEnd(Arc<Shared>);

#[derive(Debug, Default)]
struct Shared {
    held: Mutex<Held>,
    /// The table refused this agent's lease (a takeover): the lease task must forget it too.
    lost: std::sync::atomic::AtomicBool,
    /// Woken at every [`LeaseEnd::set`], so a call under way hears a lost lease at once.
    changed: tokio::sync::Notify,
}

/// The lease as this agent holds it; all `None`: it holds nothing.
#[derive(Debug, Default)]
struct Held {
    end: Option<Instant>,
    /// The same end on CLOCK_BOOTTIME, which counts through a suspend (tokio's clock does
    /// not): after a suspend or hibernation the holder's lease has ended by the clock its
    /// contender counts on, whatever tokio's says. `None`: tokio's end alone (tests).
    boot_end: Option<std::time::Duration>,
    fence: Option<Fence>,
}

/// CLOCK_BOOTTIME: the clock the lease is timed on (burst-core's `lease`).
pub fn boottime() -> std::time::Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    std::time::Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

impl LeaseEnd {
    /// A lease end that never comes: for an agent that runs without a table (a dry run with
    /// AWS, the tests of the executor alone).
    pub fn unbounded() -> Self {
        let far = Instant::now() + std::time::Duration::from_secs(100 * 365 * 86_400);
        let end = LeaseEnd::default();
        end.lock().end = Some(far);
        end
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        self.0.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn put(&self, held: Held) {
        *self.lock() = held;
        self.0.changed.notify_waiters();
    }

    /// This agent holds the lease at `fence` until `end`; `None`: it holds nothing.
    pub fn set(&self, held: Option<(Instant, Fence)>) {
        self.put(match held {
            Some((end, fence)) => Held {
                end: Some(end),
                boot_end: None,
                fence: Some(fence),
            },
            None => Held::default(),
        });
    }

    /// As [`LeaseEnd::set`], with the end on CLOCK_BOOTTIME too ([`boottime`]): the lease
    /// task's.
    pub fn set_on_boottime(&self, end: Instant, boot_end: std::time::Duration, fence: Fence) {
        self.put(Held {
            end: Some(end),
            boot_end: Some(boot_end),
            fence: Some(fence),
        });
    }

    /// The table refused a write under this lease: it is gone now, and the lease task hears
    /// of it ([`LeaseEnd::take_lost`]) before it sets the end again.
    pub fn lose(&self) {
        self.0.lost.store(true, std::sync::atomic::Ordering::SeqCst);
        self.set(None);
    }

    /// Whether the table refused this lease since the last call.
    pub fn take_lost(&self) -> bool {
        self.0.lost.swap(false, std::sync::atomic::Ordering::SeqCst)
    }

    /// Within the boot-time end, when there is one.
    fn boot_holds(&self) -> bool {
        self.lock().boot_end.is_none_or(|b| boottime() < b)
    }

    pub fn get(&self) -> Option<Instant> {
        self.lock().end
    }

    /// The lease this agent holds now, for a reservation's transaction.
    pub fn fence(&self) -> Option<Fence> {
        if !self.boot_holds() {
            return None;
        }
        let g = self.lock();
        g.end.filter(|e| Instant::now() < *e).and(g.fence.clone())
    }

    /// Whether a call may start now.
    pub fn holds(&self) -> bool {
        self.get().is_some_and(|e| Instant::now() < e) && self.boot_holds()
    }

    /// Returns when the lease has ended: at its end as it stands then, read again there (a
    /// renewal meanwhile moves it later; losing it ends it there).
    pub async fn ended(&self) {
        loop {
            // Registered before the read, so a set() between the two is not missed.
            let changed = self.0.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let Some(until) = self.get().filter(|e| Instant::now() < *e) else {
                return;
            };
            if !self.boot_holds() {
                return;
            }
            // A suspend stops tokio's clock, not the boot-time one: look again each second.
            let until = until.min(Instant::now() + std::time::Duration::from_secs(1));
            tokio::select! {
                () = tokio::time::sleep_until(until) => {}
                () = changed => {}
            }
        }
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
    if !end.holds() {
        return Err(ended(op, false));
    }
    tokio::select! {
        r = call => r,
        () = end.ended() => Err(ended(op, true)),
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    /// A cloud whose terminate takes `secs` and counts the calls that reached it.
    #[derive(Clone)]
    struct Slow(Arc<AtomicU32>, f64);

    impl Cloud for Slow {
        async fn launch(&self, _: &LaunchRequest) -> Result<Vec<InstanceInfo>, AwsError> {
            Ok(Vec::new())
        }
        async fn describe_group(&self) -> Result<Vec<InstanceInfo>, AwsError> {
            self.0.fetch_add(100, Ordering::SeqCst);
            Ok(Vec::new())
        }
        async fn describe_named(
            &self,
            _: &[String],
            _: &[String],
        ) -> Result<Vec<InstanceInfo>, AwsError> {
            Ok(Vec::new())
        }
        async fn elb_members(&self) -> Result<BTreeMap<String, MemberState>, AwsError> {
            Ok(BTreeMap::new())
        }
        async fn register(&self, _: &[String]) -> Result<(), AwsError> {
            Ok(())
        }
        async fn deregister(&self, _: &[String]) -> Result<(), AwsError> {
            Ok(())
        }
        async fn terminate(&self, _: &[String]) -> Result<(), AwsError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs_f64(self.1)).await;
            Ok(())
        }
        async fn stop(&self, _: &[String]) -> Result<(), AwsError> {
            Ok(())
        }
        async fn start(&self, _: &[String]) -> Result<(), AwsError> {
            Ok(())
        }
        async fn untag(&self, _: &[String], _: &[&str]) -> Result<(), AwsError> {
            Ok(())
        }
        async fn tag(&self, _: &[String], _: &str, _: &str) -> Result<(), AwsError> {
            Ok(())
        }
    }

    /// Holds the lease `end` for `secs` from now (the runner's tests share it).
    pub(crate) fn hold(end: &LeaseEnd, secs: f64) {
        end.set(Some((
            Instant::now() + Duration::from_secs_f64(secs),
            Fence {
                holder: "i-a/1".into(),
                version: 1,
            },
        )));
    }

    /// Issue 28: a fleet-changing call is never sent outside the lease, a call under way is cut
    /// at the lease's end as renewals leave it, and reads go on for a standby.
    #[tokio::test(start_paused = true)]
    async fn fleet_changing_calls_stop_at_the_lease_end_and_reads_go_on() {
        let sent = Arc::new(AtomicU32::new(0));
        let end = LeaseEnd::default();
        let c = Fenced::new(Slow(sent.clone(), 10.0), end.clone());
        let ids = vec!["i-1".to_string()];
        // Nothing held: not sent, and certainly not applied.
        let e = c.terminate(&ids).await.unwrap_err();
        assert_eq!(e.code, "LeaseEnded");
        assert!(e.not_applied);
        assert_eq!(sent.load(Ordering::SeqCst), 0);
        c.describe_group().await.unwrap();
        assert_eq!(sent.load(Ordering::SeqCst), 100);
        // Held for 3 s, renewed at 2 s to 6 s: a 10 s call is cut at 6 s, outcome unknown.
        hold(&end, 3.0);
        let t = Instant::now();
        let renew = {
            let end = end.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(2)).await;
                hold(&end, 4.0);
            })
        };
        let e = c.terminate(&ids).await.unwrap_err();
        renew.await.unwrap();
        assert_eq!(t.elapsed(), Duration::from_secs(6));
        assert!(!e.not_applied, "a call cut under way may have taken effect");
        assert_eq!(sent.load(Ordering::SeqCst), 101);
        // Inside the lease, a call that ends in time goes through.
        hold(&end, 30.0);
        c.terminate(&ids).await.unwrap();
        // Lost (another agent wrote the lease): cut at once, whatever the old end said.
        hold(&end, 30.0);
        let t = Instant::now();
        let lose = {
            let end = end.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(1)).await;
                end.set(None);
            })
        };
        assert!(c.terminate(&ids).await.is_err());
        lose.await.unwrap();
        assert!(t.elapsed() <= Duration::from_secs(2), "{:?}", t.elapsed());
        // A write the table refused for the lease: gone at once, and the lease task hears of
        // it once (it must not set the end again from its own older view).
        hold(&end, 30.0);
        end.lose();
        assert!(!end.holds());
        assert!(end.take_lost());
        assert!(!end.take_lost());
        // An end on the boot-time clock that has passed (a suspend tokio's clock did not
        // count) ends the lease whatever tokio's end says.
        end.set_on_boottime(
            Instant::now() + Duration::from_secs(30),
            boottime().saturating_sub(Duration::from_secs(1)),
            Fence {
                holder: "i-a/1".into(),
                version: 2,
            },
        );
        assert!(!end.holds());
        assert!(c.terminate(&ids).await.unwrap_err().not_applied);
    }
}
