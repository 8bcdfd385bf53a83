//! Apache mod_status over HTTP: a small blocking fetch around the pure parser in burst-core.

pub use burst_core::sampler::modstatus::*;
use std::time::Duration;

/// A reusable HTTP client for mod_status (keeps its connection pool across ticks).
pub struct ModStatusClient {
    agent: ureq::Agent,
    url: String,
}

impl ModStatusClient {
    pub fn new(url: &str, timeout: Duration) -> Self {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(true)
            .build()
            .into();
        ModStatusClient {
            agent,
            url: auto_url(url),
        }
    }

    pub fn fetch(&self) -> Result<ModStatus, ModStatusError> {
        let fail = |reason: String| ModStatusError::Fetch {
            url: self.url.clone(),
            reason,
        };
        let mut resp = self
            .agent
            .get(&self.url)
            .call()
            .map_err(|e| fail(e.to_string()))?;
        let body = resp
            .body_mut()
            .with_config()
            .limit(1 << 20)
            .read_to_string()
            .map_err(|e| fail(e.to_string()))?;
        parse(&body, &self.url)
    }
}
