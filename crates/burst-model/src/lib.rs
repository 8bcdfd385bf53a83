//! The types every part agrees on: what a host sample holds ([`HostSample`]), the utilizations
//! the policy reads ([`HostMetrics`]), which signal it reads ([`Signal`]), a liveness probe's
//! answer ([`ProbeResult`]), and the slave's life (`fleet.rs`: [`Phase`], [`SlaveState`],
//! [`Slave`], [`InstanceInfo`], the agent's tags). Nothing here does I/O or depends on another
//! crate of the workspace (serde, jiff and serde_variant only): the edge fills these, burst-core
//! and the agent read them.
//!
//! - A part of a sample that could not be read is `None`, never zero: missing is not idle, and
//!   the policy treats the two differently.
//! - [`name_of`] and [`parse_name`] give every enum its one string form, serde's own
//!   (`rename_all`), so the config, state files, logs, events and `status` cannot disagree.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

mod fleet;

pub use fleet::*;

/// The one string form of an enum's variant: the name serde gives it (`rename_all`), so the
/// config, state files, logs, events and `status` cannot disagree. ("?" for a value serde does
/// not write as a variant, which no enum of this workspace is.)
pub fn name_of<T: Serialize>(v: &T) -> &'static str {
    serde_variant::to_variant_name(v).unwrap_or("?")
}

/// The variant whose [`name_of`] is `s`.
pub fn parse_name<T: serde::de::DeserializeOwned>(s: &str) -> Option<T> {
    use serde::de::IntoDeserializer;
    T::deserialize(IntoDeserializer::<serde::de::value::Error>::into_deserializer(s)).ok()
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    /// 1-minute load average divided by CPU count.
    LoadPerCpu,
    /// Apache busy workers (mod_status) or worker processes over max workers.
    ApacheBusyRatio,
    /// (total - available) / total memory.
    MemoryUsedRatio,
    /// The slowest `sampling.probe_urls` answer, in milliseconds: one value for the whole site,
    /// not a host's (the policy treats it as HPA treats an object metric).
    ProbeLatency,
}

impl Signal {
    pub fn name(self) -> &'static str {
        name_of(&self)
    }

    /// Read once for the whole site, not per host.
    pub fn site_wide(self) -> bool {
        matches!(self, Signal::ProbeLatency)
    }

    /// Its fleet total follows the offered load (the lead-time forecast reads its trend).
    /// Memory is not: every host carries its own baseline, whatever the load.
    pub fn forecastable(self) -> bool {
        matches!(self, Signal::LoadPerCpu | Signal::ApacheBusyRatio)
    }
}

/// One liveness probe of one URL.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProbeResult {
    pub url: String,
    pub at: Timestamp,
    /// The HTTP status, when an answer came.
    pub status: Option<u16>,
    /// Milliseconds to the whole answer, or to the timeout.
    pub latency_ms: f64,
    /// Why the probe failed: no answer, the timeout, or a status of 400 or more.
    pub error: Option<String>,
    /// It failed by running out of time (the site is slow, not down).
    #[serde(default)]
    pub timed_out: bool,
}

impl std::fmt::Display for ProbeResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.error, self.status) {
            (None, Some(code)) => write!(f, "{}: {code} in {:.0} ms", self.url, self.latency_ms),
            (None, None) => write!(f, "{}: answered in {:.0} ms", self.url, self.latency_ms),
            (Some(e), _) => write!(
                f,
                "{}: FAILED after {:.0} ms: {e}",
                self.url, self.latency_ms
            ),
        }
    }
}

/// What the `probe_latency` signal reads from one round of probes: the slowest answer, a timeout
/// after connecting counting as its full time. `None` when any URL failed otherwise (refused,
/// unreachable, 4xx, 5xx) or redirected (3xx): an error page or a redirect is fast and must not
/// look like an idle site, so the signal is missing (it can then hold a scale-in, never cause
/// one) and the probe alarm tells the operator.
pub fn probe_latency(round: &[ProbeResult]) -> Option<(Timestamp, f64)> {
    let mut worst: Option<(Timestamp, f64)> = None;
    for r in round {
        if r.error.is_some() && !r.timed_out {
            return None;
        }
        if r.status.is_some_and(|s| (300..400).contains(&s)) {
            return None;
        }
        if !(r.latency_ms.is_finite() && r.latency_ms >= 0.0) {
            return None;
        }
        let at = worst.map_or(r.at, |(t, _)| t.min(r.at));
        worst = Some((at, worst.map_or(r.latency_ms, |(_, w)| w.max(r.latency_ms))));
    }
    worst
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoadSample {
    pub one: f64,
    pub five: f64,
    pub fifteen: f64,
    pub runnable_tasks: u32,
    pub total_tasks: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CountMethod {
    /// Children of the parent named in Apache's pidfile.
    Pidfile,
    /// Processes matching `sampling.apache_process_names`.
    ProcessNames,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApacheSample {
    /// Worker processes (the parent not included).
    pub workers: Option<u32>,
    pub method: Option<CountMethod>,
    /// From mod_status, when a URL is set and answered.
    pub busy_workers: Option<u32>,
    pub idle_workers: Option<u32>,
    /// MaxClients from config, lowered to the scoreboard size when mod_status reports fewer slots.
    pub max_workers: u32,
    /// Requests served since Apache started (mod_status's `Total Accesses`, ExtendedStatus On).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_accesses: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemorySample {
    pub total_bytes: u64,
    pub available_bytes: u64,
    pub swap_total_bytes: u64,
    pub swap_used_bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DiskSample {
    pub path: PathBuf,
    pub used_percent: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HostSample {
    pub timestamp: Timestamp,
    pub host: String,
    pub cpus: u32,
    pub load: Option<LoadSample>,
    pub apache: ApacheSample,
    pub memory: Option<MemorySample>,
    pub disks: Vec<DiskSample>,
    /// What could not be sampled this tick, and why.
    pub problems: Vec<String>,
}

impl HostSample {
    pub fn load_per_cpu(&self) -> Option<f64> {
        let l = self.load?;
        (self.cpus > 0).then(|| l.one / f64::from(self.cpus))
    }

    /// Busy workers over max workers; worker processes stand in without mod_status.
    pub fn apache_busy_ratio(&self) -> Option<f64> {
        let a = &self.apache;
        let busy = a.busy_workers.or(a.workers)?;
        (a.max_workers > 0).then(|| f64::from(busy) / f64::from(a.max_workers))
    }

    pub fn memory_used_ratio(&self) -> Option<f64> {
        let m = self.memory?;
        (m.total_bytes > 0)
            .then(|| m.total_bytes.saturating_sub(m.available_bytes) as f64 / m.total_bytes as f64)
    }

    /// The utilization a policy signal reads from this sample (1.0 = saturated).
    pub fn signal(&self, s: Signal) -> Option<f64> {
        match s {
            Signal::LoadPerCpu => self.load_per_cpu(),
            Signal::ApacheBusyRatio => self.apache_busy_ratio(),
            Signal::MemoryUsedRatio => self.memory_used_ratio(),
            Signal::ProbeLatency => None,
        }
        .filter(|v| v.is_finite() && *v >= 0.0)
    }
}

/// The utilizations one host reported, and when.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct HostMetrics {
    pub at: Timestamp,
    pub load_per_cpu: Option<f64>,
    pub apache_busy_ratio: Option<f64>,
    pub memory_used_ratio: Option<f64>,
    /// The brownout bridge's level the host served at when it sampled (0: full cost): its load
    /// is read back to full-cost-equivalent demand with that level's cost (policy/bridge.rs).
    #[serde(default, skip_serializing_if = "is_zero_level")]
    pub bridge_level: u8,
    /// The host's last bridge level change: an average over a window that spans it (the load
    /// average) mixes the two levels' costs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge_change: Option<LevelChange>,
    /// Requests the host's Apache served since it started: the bridge reads the request rate
    /// off it, which a degraded level does not make cheaper (policy/bridge.rs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_accesses: Option<u64>,
}

/// A host's bridge level change: the level it left, and when.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LevelChange {
    pub from: u8,
    pub at: Timestamp,
}

fn is_zero_level(l: &u8) -> bool {
    *l == 0
}

impl HostMetrics {
    pub fn get(&self, s: Signal) -> Option<f64> {
        match s {
            Signal::LoadPerCpu => self.load_per_cpu,
            Signal::ApacheBusyRatio => self.apache_busy_ratio,
            Signal::MemoryUsedRatio => self.memory_used_ratio,
            Signal::ProbeLatency => None,
        }
        .filter(|v| v.is_finite() && *v >= 0.0)
    }

    pub fn from_sample(s: &HostSample) -> Self {
        HostMetrics {
            at: s.timestamp,
            load_per_cpu: s.signal(Signal::LoadPerCpu),
            apache_busy_ratio: s.signal(Signal::ApacheBusyRatio),
            memory_used_ratio: s.signal(Signal::MemoryUsedRatio),
            bridge_level: 0,
            bridge_change: None,
            total_accesses: s.apache.total_accesses,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_spellings_operators_write_and_read() {
        // As the config, state.json, logs and `status` have always spelled them.
        assert_eq!(Signal::LoadPerCpu.name(), "load_per_cpu");
        assert_eq!(Signal::ProbeLatency.name(), "probe_latency");
        assert_eq!(HookKind::PreRegister.name(), "pre_register");
        assert_eq!(HookKind::ContentCheck.name(), "content_check");
        assert_eq!(name_of(&Phase::InService), "in_service");
        assert_eq!(name_of(&SlaveState::Stopped), "stopped");
    }

    #[test]
    fn a_name_parses_back_and_nothing_else_does() {
        for s in [
            Signal::LoadPerCpu,
            Signal::ApacheBusyRatio,
            Signal::MemoryUsedRatio,
            Signal::ProbeLatency,
        ] {
            assert_eq!(parse_name::<Signal>(s.name()), Some(s));
        }
        assert_eq!(parse_name::<Signal>("LoadPerCpu"), None);
        assert_eq!(parse_name::<Signal>("load per cpu"), None);
        assert_eq!(parse_name::<Signal>(""), None);
    }
}
