//! The daemon's background tasks (mini-redis style: each takes the shutdown signal): the
//! sampler, the liveness probe, the publisher and the signal handler.

use super::*;

pub(super) async fn sampler_loop(
    mut sampler: Sampler,
    cfg_rx: watch::Receiver<Arc<Config>>,
    mut shutdown: Shutdown,
    tx: watch::Sender<Option<HostSample>>,
    buffer: Option<Arc<Mutex<Buffer>>>,
    instance_id: String,
) {
    let mut cfg = cfg_rx.borrow().clone();
    let mut reported_problems: Vec<String> = Vec::new();
    loop {
        let latest = cfg_rx.borrow().clone();
        if latest.sampling != cfg.sampling {
            match Sampler::new(&latest.sampling) {
                Ok(s) => sampler = s,
                Err(e) => tracing::error!("sampling config not applied: {e}"),
            }
        }
        cfg = latest;
        let t = std::time::Instant::now();
        let joined = tokio::task::spawn_blocking(move || {
            let s = sampler.sample();
            (sampler, s)
        })
        .await;
        let Ok((back, sample)) = joined else {
            tracing::error!("the sampling thread panicked; stopping the sampler");
            return;
        };
        sampler = back;
        // Problems are warned once when they appear, and once when they clear.
        if sample.problems != reported_problems {
            for p in &sample.problems {
                if !reported_problems.contains(p) {
                    tracing::warn!(problem = %p, "sampling: {p}");
                }
            }
            if sample.problems.is_empty() {
                tracing::info!("sampling: every part of this host is readable again");
            }
            reported_problems = sample.problems.clone();
        }
        tracing::debug!(secs = t.elapsed().as_secs_f64(), load_per_cpu = ?sample.load_per_cpu(),
            apache_busy_ratio = ?sample.apache_busy_ratio(), "sampled");
        if let Some(buf) = &buffer {
            let (data, bad) = metrics::host_data(&sample, &cfg.agent.group, &instance_id);
            for b in bad {
                tracing::warn!("not published: {b}");
            }
            let dropped = buf.lock().unwrap_or_else(|p| p.into_inner()).push(data);
            if dropped > 0 {
                tracing::warn!(
                    dropped,
                    "metrics buffer full (CloudWatch unreachable?): dropped \
                    the oldest datapoints; raise metrics.buffer_limit to keep more"
                );
            }
        }
        if cfg.agent.role == Role::Reporter {
            notify(&[NotifyState::Watchdog]);
        }
        let _ = tx.send(Some(sample));
        tokio::select! {
            _ = tokio::time::sleep(cfg.sampling.interval.get().saturating_sub(t.elapsed())) => {}
            _ = shutdown.recv() => return,
        }
    }
}

/// The liveness probe: a round every `sampling.probe_interval` (none while `probe_urls` is
/// empty), published and handed to the policy. A URL's failure is warned when it starts and
/// told when it ends, not every round.
pub(super) async fn probe_loop(
    cfg_rx: watch::Receiver<Arc<Config>>,
    mut shutdown: Shutdown,
    tx: watch::Sender<Vec<ProbeResult>>,
    buffer: Option<Arc<Mutex<Buffer>>>,
) {
    let mut failing: BTreeMap<String, String> = BTreeMap::new();
    loop {
        let cfg = cfg_rx.borrow().clone();
        let s = &cfg.sampling;
        let started = std::time::Instant::now();
        if !s.probe_urls.is_empty() {
            let prober = Prober::new(&s.probe_urls, s.probe_timeout.get());
            // Shutdown does not wait for a round of slow URLs (the thread ends on its own).
            let round = tokio::select! {
                r = tokio::task::spawn_blocking(move || prober.round()) => r,
                _ = shutdown.recv() => return,
            };
            let Ok(round) = round else {
                tracing::error!("the probe thread panicked; stopping the probe");
                return;
            };
            for r in &round {
                match (&r.error, failing.contains_key(&r.url)) {
                    (Some(e), false) => {
                        tracing::warn!(url = %r.url, status = ?r.status, latency_ms = r.latency_ms,
                            "probe failed: {e}");
                        failing.insert(r.url.clone(), e.clone());
                    }
                    (None, true) => {
                        tracing::info!(url = %r.url, status = ?r.status, latency_ms = r.latency_ms,
                            "probe answers again");
                        failing.remove(&r.url);
                    }
                    _ => tracing::debug!(url = %r.url, status = ?r.status,
                        latency_ms = r.latency_ms, "probed"),
                }
            }
            failing.retain(|u, _| s.probe_urls.contains(u));
            if let Some(buf) = &buffer {
                let data = metrics::probe_data(&round, &cfg.agent.group);
                buf.lock().unwrap_or_else(|p| p.into_inner()).push(data);
            }
            let _ = tx.send(round);
        } else if !tx.borrow().is_empty() {
            let _ = tx.send(Vec::new());
        }
        let wait = s.probe_interval.get().saturating_sub(started.elapsed());
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.recv() => return,
        }
    }
}

pub(super) async fn publisher_loop(
    aws: Aws,
    cfg_rx: watch::Receiver<Arc<Config>>,
    mut shutdown: Shutdown,
    buffer: Arc<Mutex<Buffer>>,
) {
    loop {
        let cfg = cfg_rx.borrow().clone();
        let stop = tokio::select! {
            _ = tokio::time::sleep(cfg.metrics.publish_interval.get()) => false,
            _ = shutdown.recv() => true,
        };
        let namespace = cfg.metrics.namespace_for(&cfg.agent.group);
        let flush = cloudwatch::flush(&aws, &namespace, cfg.metrics.storage_resolution, &buffer);
        if stop {
            // One last flush on the way out, bounded.
            let _ = tokio::time::timeout(Duration::from_secs(5), flush).await;
            return;
        }
        let f = flush.await;
        if let Some(e) = f.stopped_by {
            let queued = buffer.lock().unwrap_or_else(|p| p.into_inner()).len();
            tracing::warn!(
                queued,
                "metrics not published this round, kept for the next: {e}"
            );
        } else {
            tracing::debug!(sent = f.sent, calls = f.calls, "metrics published");
        }
    }
}

pub(super) async fn signal_loop(
    opts: RunOptions,
    cfg_tx: watch::Sender<Arc<Config>>,
    shutdown_tx: Notice,
    sync_requested: Arc<AtomicBool>,
) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int), Ok(mut hup), Ok(mut usr1)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
        signal(SignalKind::user_defined1()),
    ) else {
        tracing::error!("cannot install signal handlers; stop the agent with SIGKILL");
        return;
    };
    loop {
        let stop = tokio::select! {
            _ = term.recv() => Some("SIGTERM"),
            _ = int.recv() => Some("SIGINT"),
            _ = hup.recv() => None,
            _ = usr1.recv() => {
                tracing::info!("SIGUSR1: content sync to every in-service slave requested");
                sync_requested.store(true, Ordering::SeqCst);
                continue;
            }
        };
        match stop {
            Some(sig) if shutdown_tx.sent() => {
                tracing::error!(
                    "{sig} again: forcing exit now; state on disk is what the last \
                    completed step wrote, and the next start reconciles it"
                );
                std::process::exit(1);
            }
            Some(sig) => {
                tracing::info!(
                    "{sig}: stopping; in-flight steps finish first (send it again to force)"
                );
                shutdown_tx.send();
            }
            None => {
                notify(&[NotifyState::Reloading]);
                let current = cfg_tx.borrow().clone();
                if let Some(new) = reload(&opts, &current) {
                    let _ = cfg_tx.send(Arc::new(new));
                }
                notify(&[NotifyState::Ready]);
            }
        }
    }
}
