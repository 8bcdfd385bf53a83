//! Host sampler: one [`HostSample`] per tick from `/proc`, sysinfo, statvfs and mod_status.
//!
//! A failed part of a sample is `None` plus a line in `problems`, never a zero: the policy treats
//! missing metrics differently from idle ones. Apache workers are counted the cheap way first
//! (pidfile → `/proc/PID/task/PID/children`), then by process name with a minimal sysinfo refresh.
//! One [`Sampler`] lives across ticks, keeping its `sysinfo::System` and mod_status's HTTP agent;
//! the statvfs of each disk runs off the thread (`stall::OffThread`). What the text says is
//! burst-core's parsers' (`procfs`, `modstatus`).

pub mod modstatus;
pub mod probe;
pub use burst_core::sampler::procfs;

use crate::config::SamplingConfig;
use jiff::Timestamp;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use sysinfo::{CpuRefreshKind, MemoryRefreshKind, ProcessRefreshKind, ProcessesToUpdate, System};

pub use modstatus::{ModStatus, ModStatusClient};

pub use crate::model::{
    ApacheSample, CountMethod, DiskSample, HostSample, LoadSample, MemorySample,
};

/// Samples the local host. Keep one alive across ticks: it reuses its sysinfo state and buffers.
pub struct Sampler {
    cfg: SamplingConfig,
    sys: System,
    cpus: u32,
    host: String,
    mod_status: Option<ModStatusClient>,
    proc_root: PathBuf,
    buf: String,
    /// statvfs on `disk_paths` (the document root among them): off this thread, bounded.
    disk_calls: crate::stall::OffThread,
}

/// How long the statvfs of `sampling.disk_paths` may take before the disks count as unreadable
/// for this sample (a hung NFS, EFS or sshfs mount).
pub const DISK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
#[error("cannot start the host sampler: {0}")]
pub struct SamplerInitError(String);

impl Sampler {
    pub fn new(cfg: &SamplingConfig) -> Result<Self, SamplerInitError> {
        let mut sys = System::new().map_err(|e| SamplerInitError(e.to_string()))?;
        sys.refresh_cpu_list(CpuRefreshKind::nothing());
        let cpus = match sys.cpus().len() {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let host = System::host_name().unwrap_or_else(|_| "localhost".into());
        let mod_status = (!cfg.mod_status_url.is_empty())
            .then(|| ModStatusClient::new(&cfg.mod_status_url, cfg.mod_status_timeout.get()));
        Ok(Sampler {
            cfg: cfg.clone(),
            sys,
            cpus: u32::try_from(cpus).unwrap_or(u32::MAX),
            host,
            mod_status,
            proc_root: PathBuf::from("/proc"),
            buf: String::with_capacity(8192),
            disk_calls: Default::default(),
        })
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    /// One full sample. Never fails as a whole: missing parts are `None` with a problem line.
    pub fn sample(&mut self) -> HostSample {
        let mut problems = Vec::new();
        let load = self.load().map_err(|e| problems.push(e)).ok();
        let (workers, method) = match self.count_apache_workers() {
            Ok((n, m)) => (Some(n), Some(m)),
            Err(e) => {
                problems.push(e);
                (None, None)
            }
        };
        let mut apache = ApacheSample {
            workers,
            method,
            busy_workers: None,
            idle_workers: None,
            max_workers: self.cfg.apache_max_workers,
            total_accesses: None,
        };
        if let Some(client) = &self.mod_status {
            match client.fetch() {
                Ok(s) => {
                    apache.busy_workers = Some(s.busy_workers);
                    apache.idle_workers = Some(s.idle_workers);
                    apache.total_accesses = s.total_accesses;
                    if let Some(slots) = s.scoreboard_slots.filter(|&n| n > 0) {
                        apache.max_workers = apache.max_workers.min(slots);
                    }
                }
                Err(e) => problems.push(e.to_string()),
            }
        }
        self.sys
            .refresh_memory_specifics(MemoryRefreshKind::nothing().with_ram().with_swap());
        let memory = match self.sys.total_memory() {
            0 => {
                problems.push("memory: total memory reads as 0".into());
                None
            }
            total => Some(MemorySample {
                total_bytes: total,
                available_bytes: self.sys.available_memory(),
                swap_total_bytes: self.sys.total_swap(),
                swap_used_bytes: self.sys.used_swap(),
            }),
        };
        let paths = self.cfg.disk_paths.clone();
        let got = if paths.is_empty() {
            Ok(Vec::new())
        } else {
            let p = paths.clone();
            self.disk_calls
                .run("statvfs of sampling.disk_paths", DISK_TIMEOUT, move || {
                    p.iter().map(|p| disk_used_percent(p)).collect::<Vec<_>>()
                })
        };
        let used: Vec<Result<f64, String>> = match got {
            Ok(v) => v,
            Err(hung) => {
                problems.push(format!("disk: {hung}"));
                vec![Err(String::new()); paths.len()]
            }
        };
        let disks = paths
            .into_iter()
            .zip(used)
            .map(|(path, r)| DiskSample {
                path,
                used_percent: r
                    .map_err(|e| {
                        if !e.is_empty() {
                            problems.push(e)
                        }
                    })
                    .ok(),
            })
            .collect();
        HostSample {
            timestamp: Timestamp::now(),
            host: self.host.clone(),
            cpus: self.cpus,
            load,
            apache,
            memory,
            disks,
            problems,
        }
    }

    fn read(&mut self, path: &Path) -> std::io::Result<&str> {
        self.buf.clear();
        File::open(path)?.read_to_string(&mut self.buf)?;
        Ok(&self.buf)
    }

    fn load(&mut self) -> Result<LoadSample, String> {
        let path = self.proc_root.join("loadavg");
        let text = self
            .read(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let l = procfs::parse_loadavg(text).map_err(|e| e.to_string())?;
        Ok(LoadSample {
            one: l.one,
            five: l.five,
            fifteen: l.fifteen,
            runnable_tasks: l.runnable,
            total_tasks: l.total,
        })
    }

    /// Apache worker processes: pidfile first, process names second.
    pub fn count_apache_workers(&mut self) -> Result<(u32, CountMethod), String> {
        let via_pidfile = if self.cfg.apache_pidfile.as_os_str().is_empty() {
            Err("no apache_pidfile configured".to_string())
        } else {
            self.workers_from_pidfile()
        };
        match via_pidfile {
            Ok(n) => Ok((n, CountMethod::Pidfile)),
            Err(why) => {
                tracing::debug!(reason = %why, "counting Apache workers by process name");
                Ok((self.workers_by_name(), CountMethod::ProcessNames))
            }
        }
    }

    fn workers_from_pidfile(&mut self) -> Result<u32, String> {
        let pidfile = self.cfg.apache_pidfile.clone();
        let text = self
            .read(&pidfile)
            .map_err(|e| format!("{}: {e}", pidfile.display()))?;
        let pid = procfs::parse_pidfile(text).map_err(|e| format!("{}: {e}", pidfile.display()))?;
        // A stale pidfile may name a reused pid: the process must be called like Apache.
        let comm_path = self.proc_root.join(format!("{pid}/comm"));
        let comm = self
            .read(&comm_path)
            .map_err(|e| format!("{}: {e}", comm_path.display()))?;
        let comm = procfs::parse_comm(comm).to_string();
        if !self.cfg.apache_process_names.contains(&comm) {
            return Err(format!(
                "pid {pid} from {} is {comm:?}, not one of {:?} (stale pidfile?)",
                pidfile.display(),
                self.cfg.apache_process_names
            ));
        }
        let children = self.proc_root.join(format!("{pid}/task/{pid}/children"));
        let text = self
            .read(&children)
            .map_err(|e| format!("{}: {e}", children.display()))?;
        procfs::count_children(text).map_err(|e| format!("{}: {e}", children.display()))
    }

    /// Processes named like Apache whose parent is also named like Apache (the workers); if
    /// none have such a parent, every matching process counts.
    fn workers_by_name(&mut self) -> u32 {
        self.sys.refresh_processes_specifics(
            ProcessesToUpdate::All,
            true,
            ProcessRefreshKind::nothing().without_tasks(),
        );
        let names = &self.cfg.apache_process_names;
        let procs = self.sys.processes();
        let is_apache = |p: &sysinfo::Process| names.iter().any(|n| p.name() == n.as_str());
        let mut matching = 0u32;
        let mut workers = 0u32;
        for p in procs.values().filter(|p| is_apache(p)) {
            matching += 1;
            if p.parent()
                .and_then(|pp| procs.get(&pp))
                .is_some_and(is_apache)
            {
                workers += 1;
            }
        }
        if workers == 0 {
            matching
        } else {
            workers
        }
    }
}

/// Used % of the filesystem holding `path`, as `df` computes it (reserved blocks excluded).
pub fn disk_used_percent(path: &Path) -> Result<f64, String> {
    let st = rustix::fs::statvfs(path).map_err(|e| format!("disk {}: {e}", path.display()))?;
    let used = st.f_blocks.saturating_sub(st.f_bfree);
    let usable = used + st.f_bavail;
    if usable == 0 {
        return Err(format!(
            "disk {}: filesystem reports no blocks",
            path.display()
        ));
    }
    Ok(used as f64 * 100.0 / usable as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Signal;

    fn sample() -> HostSample {
        HostSample {
            timestamp: Timestamp::UNIX_EPOCH,
            host: "h".into(),
            cpus: 4,
            load: Some(LoadSample {
                one: 2.0,
                five: 1.0,
                fifteen: 0.5,
                runnable_tasks: 3,
                total_tasks: 100,
            }),
            apache: ApacheSample {
                workers: Some(64),
                method: Some(CountMethod::Pidfile),
                busy_workers: None,
                idle_workers: None,
                max_workers: 256,
                total_accesses: None,
            },
            memory: Some(MemorySample {
                total_bytes: 1000,
                available_bytes: 250,
                swap_total_bytes: 0,
                swap_used_bytes: 0,
            }),
            disks: vec![],
            problems: vec![],
        }
    }

    #[test]
    fn signals() {
        let mut s = sample();
        assert_eq!(s.signal(Signal::LoadPerCpu), Some(0.5));
        assert_eq!(s.signal(Signal::ApacheBusyRatio), Some(0.25));
        assert_eq!(s.signal(Signal::MemoryUsedRatio), Some(0.75));
        s.apache.busy_workers = Some(128);
        assert_eq!(
            s.signal(Signal::ApacheBusyRatio),
            Some(0.5),
            "mod_status wins"
        );
        s.load = None;
        s.memory = None;
        s.apache.workers = None;
        s.apache.busy_workers = None;
        for sig in [
            Signal::LoadPerCpu,
            Signal::ApacheBusyRatio,
            Signal::MemoryUsedRatio,
        ] {
            assert_eq!(s.signal(sig), None, "missing is None, never 0");
        }
    }

    #[test]
    fn json_round_trip() {
        let s = sample();
        let j = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<HostSample>(&j).unwrap(), s);
    }

    #[test]
    fn samples_this_host() {
        let mut cfg = SamplingConfig::default();
        cfg.mod_status_url.clear();
        cfg.apache_pidfile = PathBuf::from("/nonexistent/apache2.pid");
        let mut s = Sampler::new(&cfg).unwrap();
        let x = s.sample();
        assert!(x.cpus >= 1);
        assert!(x.load.is_some(), "{:?}", x.problems);
        assert!(x.memory.is_some());
        assert_eq!(x.apache.method, Some(CountMethod::ProcessNames));
        assert!(x.disks[0].used_percent.is_some());
    }

    #[test]
    fn disk_errors_name_the_path() {
        let e = disk_used_percent(Path::new("/no/such/dir")).unwrap_err();
        assert!(e.contains("/no/such/dir"), "{e}");
    }
}
