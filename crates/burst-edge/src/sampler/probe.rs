//! The site liveness probe (`sampling.probe_urls`): one GET per URL, timed to the whole answer
//! (the first 4 MiB of the body), under `sampling.probe_timeout`. Redirects are not followed (a
//! 301 to https is an answer, but no latency for the policy: probe the final URL); a status of
//! 400 or more, no answer, or the timeout is a failure. Only a timeout after the connection was
//! made means a slow site; one while resolving or connecting means an unreachable one. Blocking
//! (ureq): the daemon runs it on a blocking thread.

use crate::model::ProbeResult;
use jiff::Timestamp;
use std::io::Read;
use std::time::{Duration, Instant};

/// Body bytes read at most: enough to time a real page, never a memory risk.
const MAX_BODY: u64 = 4 << 20;

pub struct Prober {
    agent: ureq::Agent,
    urls: Vec<String>,
    timeout: Duration,
}

impl Prober {
    pub fn new(urls: &[String], timeout: Duration) -> Self {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .timeout_resolve(Some(timeout))
            .timeout_connect(Some(timeout))
            .http_status_as_error(false)
            .max_redirects(0)
            .user_agent(concat!("burst-agent-probe/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Prober {
            agent,
            urls: urls.to_vec(),
            timeout,
        }
    }

    /// One round: every URL once, in order; errors name the URL by its config key.
    pub fn round(&self) -> Vec<ProbeResult> {
        self.urls
            .iter()
            .enumerate()
            .map(|(i, url)| self.one(i, url))
            .collect()
    }

    fn one(&self, i: usize, url: &str) -> ProbeResult {
        let at = Timestamp::now();
        let started = Instant::now();
        let result = self.agent.get(url).call().and_then(|mut resp| {
            let status = resp.status().as_u16();
            // The whole body, as a visitor waits for it (bounded).
            // Its first MAX_BODY bytes: a bigger page is timed that far, not failed.
            let mut reader = resp.body_mut().as_reader().take(MAX_BODY);
            std::io::copy(&mut reader, &mut std::io::sink()).map_err(ureq::Error::from)?;
            Ok(status)
        });
        let elapsed = started.elapsed();
        let ms = elapsed.as_secs_f64() * 1000.0;
        let key = format!("sampling.probe_urls[{i}]");
        match result {
            Ok(code) if code < 400 => ProbeResult {
                url: url.to_string(),
                at,
                status: Some(code),
                latency_ms: ms,
                error: None,
                timed_out: false,
            },
            Ok(code) => ProbeResult {
                url: url.to_string(),
                at,
                status: Some(code),
                latency_ms: ms,
                error: Some(format!("{key}: the site answered HTTP {code}")),
                timed_out: false,
            },
            Err(e) => {
                // Resolving or connecting timed out: unreachable, not slow.
                let timed_out = matches!(
                    e,
                    ureq::Error::Timeout(t) if !matches!(t, ureq::Timeout::Resolve | ureq::Timeout::Connect)
                );
                let why = if timed_out {
                    format!(
                        "no whole answer within sampling.probe_timeout ({:?})",
                        self.timeout
                    )
                } else {
                    format!("unreachable: {e}")
                };
                ProbeResult {
                    url: url.to_string(),
                    at,
                    status: None,
                    latency_ms: if timed_out {
                        self.timeout.as_secs_f64() * 1000.0
                    } else {
                        ms
                    },
                    error: Some(format!("{key}: {why}")),
                    timed_out,
                }
            }
        }
    }
}
