//! The lease task: one agent acts for a site at a time (burst-core's `lease` decides; this
//! reads and writes the table's lease item and sets the [`LeaseEnd`] the fenced calls and the
//! reservations read). It runs beside the reconciler, every few seconds, so a long tick never
//! lets the lease lapse.
//!
//! It takes the lease over on `burst-agent takeover --yes` (a file in the state directory), and
//! gives it up (marked released) once a stop has finished the last tick and drained the hooks.
//! A tick that does not hold the lease stands by: no step, no decision carried out, hooks
//! aborted, no master numbers; `status` and the event `lease_changed` name the holder. Once it
//! holds the lease, the actuator adopts afresh, the table first.

use super::*;
use crate::lease::{Lease, Next, Standing, Timing};
use crate::table::{Fence, Table};
use burst_edge::fenced::LeaseEnd;

/// The file `burst-agent takeover --yes` leaves for the running agent (or the next start).
pub const TAKEOVER_FILE: &str = "takeover";

/// What the reconciler and `status` read of the lease.
#[derive(Clone, Debug)]
pub(super) struct LeaseShared {
    pub lease: Lease,
    /// The last read or write failed: why.
    pub error: Option<String>,
}

pub(super) type SharedLease = Arc<Mutex<LeaseShared>>;

/// This agent's identity on the lease: the host's EC2 instance id (else its host name) and a
/// nonce made now. Never the configured id alone: a copy of the host has it too.
pub(super) fn holder_id(own_ec2_id: Option<&str>, instance_id: &str) -> String {
    let host = own_ec2_id.unwrap_or(instance_id);
    format!("{host}/{}", uuid::Uuid::new_v4().simple())
}

pub(super) fn timing(cfg: &Config) -> Timing {
    Timing {
        duration: cfg.ledger.lease_duration.get(),
        call_deadline: cfg.aws.call_timeout.get() + Duration::from_secs(1),
    }
}

/// One line for `status` and the log: who holds the lease, how fresh it is.
pub(super) fn describe(standing: &Standing) -> String {
    match standing {
        Standing::Holder { version, .. } => format!("held by this agent (version {version})"),
        Standing::Standby {
            holder,
            version,
            unchanged_for,
            lapsed,
            released,
        } => format!(
            "STANDBY: {} {holder} (version {version}, {} s since it last changed{}); \
             this agent samples and publishes its own numbers, and changes nothing",
            if *released {
                "given up on a clean stop by"
            } else {
                "held by"
            },
            unchanged_for.as_secs(),
            if *lapsed {
                ": LAPSED; this host does not serve from the site's ELB, so it takes over \
                 only on `burst-agent takeover --yes`"
            } else {
                ""
            }
        ),
        Standing::Unknown => "not read yet: nothing is changed until it is".into(),
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn lease_loop(
    table: Table,
    shared: SharedLease,
    end: LeaseEnd,
    cloud: AwsCloud,
    own_ec2_id: Option<String>,
    state_dir: PathBuf,
    mut release: tokio::sync::oneshot::Receiver<()>,
) {
    loop {
        round(
            &table,
            &shared,
            &end,
            &cloud,
            own_ec2_id.as_deref(),
            &state_dir,
        )
        .await;
        let wait = {
            let g = shared.lock().unwrap_or_else(|p| p.into_inner());
            (g.lease.timing().renew_every() / 2)
                .clamp(Duration::from_secs(1), Duration::from_secs(5))
        };
        // Not on the shutdown signal: the stopping agent finishes its tick and drains its
        // hooks under the lease, and says when it is done.
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = &mut release => break,
        }
    }
    // Stopping: nothing fleet-changing goes after this, and the lease is given up so this
    // host's next start (or a host in the site's ELB) takes it at once; a staging copy still
    // waits for `takeover --yes`. After a crash, a successor waits it out instead.
    end.set(None);
    let held = {
        let g = shared.lock().unwrap_or_else(|p| p.into_inner());
        match g.lease.standing(boottime()) {
            Standing::Holder { version, .. } => Some((g.lease.me().to_string(), version)),
            _ => None,
        }
    };
    if let Some((me, version)) = held {
        match table
            .release_lease(&me, version, &Timestamp::now().to_string())
            .await
        {
            Ok(true) => tracing::info!(holder = %me, "the site's lease is given up"),
            Ok(false) => {}
            Err(e) => tracing::warn!(holder = %me,
                "could not give the site's lease up; a successor waits for it to lapse: {e}"),
        }
    }
}

/// One read or write of the lease item.
async fn round(
    table: &Table,
    shared: &SharedLease,
    end: &LeaseEnd,
    cloud: &AwsCloud,
    own_ec2_id: Option<&str>,
    state_dir: &std::path::Path,
) {
    let now = boottime();
    let (next, me, holding, lapsed) = {
        let g = shared.lock().unwrap_or_else(|p| p.into_inner());
        let standing = g.lease.standing(now);
        let lapsed = matches!(standing, Standing::Standby { lapsed: true, .. });
        (
            g.lease.next(now, false, false),
            g.lease.me().to_string(),
            g.lease.holds(now),
            lapsed,
        )
    };
    let forced = state_dir.join(TAKEOVER_FILE).exists();
    let mut next = next;
    if !holding && matches!(next, Next::Wait) {
        // Read: a standby's clock on the version starts at its first sight of it.
        match table.read_lease().await {
            Ok(item) => {
                let mut g = shared.lock().unwrap_or_else(|p| p.into_inner());
                g.lease.observe(item, boottime());
                g.error = None;
            }
            Err(e) => {
                shared.lock().unwrap_or_else(|p| p.into_inner()).error =
                    Some(format!("the lease could not be read: {e}"));
                return;
            }
        }
        let serves = if lapsed && !forced {
            // Only the master serves from the site's ELB; a staging copy does not.
            match (own_ec2_id, cloud.elb_members().await) {
                (Some(id), Ok(m)) => m.contains_key(id),
                _ => false,
            }
        } else {
            false
        };
        let g = shared.lock().unwrap_or_else(|p| p.into_inner());
        next = g.lease.next(boottime(), serves, forced);
    }
    let wall = Timestamp::now().to_string();
    let sent = boottime();
    let write = match next {
        Next::Wait => return publish(shared, end),
        Next::Acquire => table.write_lease(&me, None, &wall).await,
        Next::Renew { version } | Next::TakeOver { version } => {
            table.write_lease(&me, Some(version), &wall).await
        }
    };
    let version = match next {
        Next::Acquire => 1,
        Next::Renew { version } | Next::TakeOver { version } => version + 1,
        Next::Wait => 0,
    };
    {
        let mut g = shared.lock().unwrap_or_else(|p| p.into_inner());
        match write {
            Ok(true) => {
                let was = g.lease.holds(sent);
                g.lease.acquired(version, sent, &wall);
                g.error = None;
                if !was && !matches!(next, Next::Renew { .. }) {
                    tracing::warn!(holder = %me, version, took_over = matches!(next, Next::TakeOver { .. }),
                        forced, "this agent holds the site's lease now: it acts for the site");
                    if forced {
                        let _ = std::fs::remove_file(state_dir.join(TAKEOVER_FILE));
                    }
                }
            }
            Ok(false) => {
                if g.lease.until().is_some() {
                    tracing::error!(holder = %me, held_until_now = g.lease.holds(sent),
                        "the site's lease was taken by another agent (this one could not renew \
                         in time, or was paused past its lease): it changes nothing from now on");
                }
                g.lease.lost();
            }
            // Unknown: the lease runs out on its own at its end unless a renewal goes through.
            Err(e) => g.error = Some(format!("the lease could not be written: {e}")),
        }
    }
    publish(shared, end);
}

/// Sets the fence from the lease: its end on the tokio clock, the version it holds.
fn publish(shared: &SharedLease, end: &LeaseEnd) {
    let mut g = shared.lock().unwrap_or_else(|p| p.into_inner());
    // A reservation the table refused for the lease: it is gone, whatever this task's view.
    if end.take_lost() {
        g.lease.lost();
    }
    let now = boottime();
    match g.lease.standing(now) {
        Standing::Holder { version, until } => {
            let left = until.saturating_sub(now);
            end.set_on_boottime(
                tokio::time::Instant::now() + left,
                until,
                Fence {
                    holder: g.lease.me().to_string(),
                    version,
                },
            );
        }
        _ => end.set(None),
    }
}
