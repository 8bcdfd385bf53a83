//! The one TOML file operators tune: its schema, defaults (written once, in the `Default` impls
//! below), loading with line:column diagnostics, and semantic validation.
//!
//! `load` never stops at the first problem: it collects every syntax, type, unknown-key and
//! semantic problem with its key path so `burst-agent check-config` can show them all at once.

mod duration;
mod load;
pub(crate) mod schedule;
mod validate;

pub use duration::{parse_duration, Dur};
pub use load::{parse_read, parse_read_only, parse_str, ConfigError, Problem};
pub use validate::validate;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where the agent looks for its configuration when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/burst-agent/agent.toml";

/// Placeholders a hook argument may contain; each is replaced inside one argument only.
pub const HOOK_PLACEHOLDERS: &[&str] = &[
    "instance_id",
    "private_ip",
    "private_dns",
    "group",
    "state_dir",
];

/// Placeholders a `hooks.on_bridge` argument may contain: the level to switch to (0: full
/// service) and the one the master served at.
pub const BRIDGE_PLACEHOLDERS: &[&str] = &["level", "previous", "group", "state_dir"];

/// Placeholders a `hooks.on_event` argument may contain (`{instance_id}` is empty for events of
/// no one instance; `{detail}` is one line of text).
pub const EVENT_PLACEHOLDERS: &[&str] = &["event", "group", "instance_id", "detail", "state_dir"];

/// `agent.state_dir` as it may stand in a hook argument (an ssh option inside rsync's `-e`, which
/// rsync splits on spaces): absolute, letters, digits and `/._-` only.
pub fn plain_path(v: &str) -> bool {
    v.starts_with('/')
        && v.len() <= 255
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '-' | '_'))
}

/// The ssh the default content-sync hooks run (rsync's `-e`): the agent's own key, never a
/// prompt (there is no tty under systemd), each slave's host key pinned in a file of its own
/// (`known_hosts/{instance_id}` in the state directory, removed when the slave is gone), so a
/// private IP reused by a later slave with a new host key still syncs, and a dead slave fails
/// in seconds, not minutes.
pub const DEFAULT_SSH: &str = "ssh -i {state_dir}/.ssh/id_ed25519 -o BatchMode=yes \
    -o StrictHostKeyChecking=accept-new -o UserKnownHostsFile={state_dir}/known_hosts/{instance_id} \
    -o ConnectTimeout=10";

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub agent: AgentConfig,
    pub sampling: SamplingConfig,
    pub metrics: MetricsConfig,
    pub policy: PolicyConfig,
    pub cap: CapConfig,
    pub ledger: LedgerConfig,
    pub fleet: FleetConfig,
    pub elb: ElbConfig,
    pub hooks: HooksConfig,
    pub aws: AwsConfig,
    pub log: LogConfig,
    pub alarms: AlarmsConfig,
    pub events: EventsConfig,
    /// Planned bursts (`[[schedule]]`): windows with a floor of slaves (schedule.rs).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub schedule: Vec<ScheduleEntry>,
    /// On-demand prices for `fleet --month`'s cost column (never read by the agent itself).
    pub prices: PricesConfig,
    /// The brownout bridge (docs/bridge.md): degraded modes that keep the site answering while
    /// capacity cannot come in time. Off by default.
    pub bridge: BridgeConfig,
}

/// `[bridge]`: the brownout bridge (docs/bridge.md). While the fleet is short now and no
/// capacity that serves within `grace` covers it (the first minutes of a burst, the cap spent,
/// launches held), the policy raises a level: a degraded mode `hooks.on_bridge` switches on
/// the master (cached snapshots for hot pages, images redirected, a shorter `Timeout`). Requests
/// cost less at a level, so the measured load falls; scaling and the bridge's own exit read the
/// hosts' load back to full-cost-equivalent demand with `costs`, so the bridge never delays a
/// launch or hastens a release.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct BridgeConfig {
    pub enabled: bool,
    /// One entry per level, 1 first: what the traffic a host shares with the others (every
    /// request but the master's own) costs at that level, against its full cost. Each level
    /// degrades more than the one before, so each cost is below the one before.
    pub costs: Vec<f64>,
    /// Share of the site's load only the master serves and no level degrades (forms, POSTs,
    /// logged-in users, the CMS): the rest is spread over every serving host.
    pub master_only_share: f64,
    /// The signal the bridge reads on the master's own newest sample: `apache_busy_ratio`
    /// (instantaneous) or `load_per_cpu` (a minute's average: slower both ways).
    pub signal: Signal,
    /// A level is raised when the master, at full cost, would be above this with the hosts
    /// serving now and those that serve within `grace`.
    pub enter_utilization: f64,
    /// A level is lowered when the level below would keep the master at or under this with
    /// the hosts serving now (below `enter_utilization`: the hysteresis).
    pub exit_utilization: f64,
    /// A level is held at least this long before it is lowered.
    pub min_dwell: Dur,
    /// An episode longer than this ends (level 0) with a `bridge_expired` event.
    pub max_episode: Dur,
    /// After an episode ended by `max_episode`, none starts again for this long.
    pub cooldown: Dur,
    /// Capacity that will serve within this long covers a shortfall: no level for it.
    pub grace: Dur,
}

impl Default for BridgeConfig {
    fn default() -> Self {
        BridgeConfig {
            enabled: false,
            costs: vec![0.15, 0.05],
            master_only_share: 0.1,
            signal: Signal::ApacheBusyRatio,
            enter_utilization: 0.81,
            exit_utilization: 0.8,
            min_dwell: Dur::secs(15),
            max_episode: Dur::secs(3 * 3600),
            cooldown: Dur::secs(900),
            grace: Dur::secs(30),
        }
    }
}

impl BridgeConfig {
    /// The highest level (0 when off).
    pub fn top(&self) -> u8 {
        if self.enabled {
            u8::try_from(self.costs.len()).unwrap_or(u8::MAX)
        } else {
            0
        }
    }

    /// What shared traffic costs at `level` against full cost: 1 at level 0, and at a level
    /// past the configured ones (a host that reports one) the last one's.
    pub fn cost(&self, level: u8) -> f64 {
        match level {
            0 => 1.0,
            l => self
                .costs
                .get(usize::from(l) - 1)
                .or(self.costs.last())
                .copied()
                .filter(|c| c.is_finite() && *c > 0.0 && *c <= 1.0)
                .unwrap_or(1.0),
        }
    }
}

/// `[prices]`: what an instance-hour of each type costs, in the currency the site is invoiced
/// in. The monthly report (`burst-agent fleet --month`) prices each slave's hours with it; the
/// Pricing API is not needed, and a type with no price leaves the cost blank, named.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PricesConfig {
    /// `JPY`, `USD`, ...: printed beside the cost.
    pub currency: String,
    /// Instance type to its on-demand price per hour (`"c5.large" = 15.2`).
    pub hourly: std::collections::BTreeMap<String, f64>,
}

/// A ratio as a percent, without binary noise (0.9 is 90, not 90.00000000000001).
fn percent_of(r: f64) -> f64 {
    (r * 100.0 * 1e6).round() / 1e6
}

impl Config {
    /// Keys a later version renamed, still read so an upgrade whose config was kept (a dpkg
    /// conffile) keeps running: `alarms.memory_used_ratio` becomes `memory_used_percent` when
    /// that is not written. [`Config::deprecations`] says so; both written and disagreeing is
    /// a problem (validate).
    pub(crate) fn carry_renamed_keys(&mut self) {
        if let Some(r) = self.alarms.memory_used_ratio {
            if self.alarms.memory_used_percent == AlarmsConfig::default().memory_used_percent {
                self.alarms.memory_used_percent = percent_of(r);
            }
        }
    }

    /// What `check-config` warns of: renamed keys still in the file.
    pub fn deprecations(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(r) = self.alarms.memory_used_ratio {
            out.push(format!(
                "alarms.memory_used_ratio is renamed alarms.memory_used_percent, in percent like \
                 alarms.disk_used_percent: write memory_used_percent = {} instead (read as that \
                 now)",
                percent_of(r)
            ));
        }
        out
    }

    /// What `check-config` warns of in `[bridge]`: levels decided that nothing applies.
    pub fn bridge_warnings(&self) -> Vec<String> {
        if self.bridge.enabled && self.hooks.on_bridge.is_none() && self.agent.role == Role::Master
        {
            vec![
                "bridge.enabled is true but hooks.on_bridge is unset: levels are decided, shown \
                  and published, never applied on the master (docs/bridge.md)"
                    .into(),
            ]
        } else {
            Vec::new()
        }
    }

    /// What `check-config` warns of on a reporter (a slave): one that publishes nothing is
    /// counted idle for scale-out and at target for scale-in, so the fleet never shrinks for
    /// it. Empty on a master.
    pub fn reporter_warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.agent.role != Role::Reporter {
            return out;
        }
        if self.agent.dry_run {
            out.push(
                "agent.dry_run = true on a reporter: a reporter launches nothing, so there is \
                 nothing to rehearse, and in dry run with no region found it publishes nothing \
                 (the master then marks this slave SILENT and never scales in for it); set \
                 dry_run = false (agent.reporter.toml.example)"
                    .to_string(),
            );
        }
        if self.aws.region.is_empty() {
            out.push(
                "aws.region is unset on a reporter: its samples go to whatever region \
                 AWS_REGION, a profile or the instance metadata service gives, and the master \
                 reads its own; set the master's region"
                    .to_string(),
            );
        }
        out
    }
}

/// One planned burst: a one-off window (`start`, `end`) or a weekly one (`days`, `from`, `to`),
/// in `cap.time_zone`, during which at least `min_slaves` serve; they are launched `prewarm`
/// before it opens so they are in service when it does.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ScheduleEntry {
    pub name: String,
    /// One-off: local date and time, "2026-12-05T08:00".
    pub start: String,
    pub end: String,
    /// Weekly: "mon" ... "sun", and local times "19:00" (`to` before `from`: past midnight).
    pub days: Vec<String>,
    pub from: String,
    pub to: String,
    pub min_slaves: u32,
    pub prewarm: Dur,
}

/// Event notifications (README: events): where they go besides `hooks.on_event`, and how
/// often one condition may be told.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct EventsConfig {
    /// SNS topic each event is published to (`arn:aws:sns:REGION:ACCOUNT:NAME`); empty: none.
    pub topic_arn: String,
    /// One message per condition (cap exhausted, sync failing, ...) per window; what was held
    /// back is counted in the next one.
    pub window: Dur,
    /// At most this many messages in any hour, all conditions together.
    pub max_per_hour: u32,
    /// Event kinds never sent (still shown by `status`).
    pub disabled: Vec<String>,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            topic_arn: String::new(),
            window: Dur::secs(1800),
            max_per_hour: 12,
            disabled: Vec::new(),
        }
    }
}

/// `burst-agent alarms`: the CloudWatch alarms for this group (README: alarms). Thresholds
/// default to what an operator of many small sites would want to be woken for.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AlarmsConfig {
    /// SNS topics told when an alarm goes to ALARM (`arn:aws:sns:REGION:ACCOUNT:NAME`).
    pub alarm_actions: Vec<String>,
    /// SNS topics told when it goes back to OK.
    pub ok_actions: Vec<String>,
    /// Any host's disk (each `sampling.disk_paths`) used at or above this, in percent.
    pub disk_used_percent: f64,
    /// Any host's memory used at or above this, in percent (as `disk_used_percent`).
    pub memory_used_percent: f64,
    /// Replaced by `memory_used_percent` (one unit in `[alarms]`); only read to say so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_used_ratio: Option<f64>,
    /// Apache on any host with every worker busy for this long.
    pub apache_saturated_for: Dur,
    /// The day's burst cap with at most this many launches left (`cap_exhausted` is 0).
    pub cap_remaining_at_most: u32,
    /// The agent publishing nothing for this long (stopped, hung, or cut off from CloudWatch).
    pub heartbeat_missing_for: Dur,
    /// AWS API errors in five minutes.
    pub api_errors: u32,
    /// The ELB's unhealthy hosts at or above this for five minutes.
    pub elb_unhealthy_hosts: u32,
    /// The ELB's surge queue at or above this for five minutes (requests waiting for a host).
    pub elb_surge_queue_length: u32,
    /// Any probe URL slower than this, in milliseconds, on average for five minutes.
    pub probe_latency_ms: f64,
    /// The brownout bridge on (a level above 0) for this long without a break (with
    /// `bridge.enabled` only).
    pub bridge_on_for: Dur,
    /// Alarms switched off, by name (`burst-agent alarms --print` lists them).
    pub disabled: Vec<String>,
}

impl Default for AlarmsConfig {
    fn default() -> Self {
        AlarmsConfig {
            alarm_actions: Vec::new(),
            ok_actions: Vec::new(),
            disk_used_percent: 90.0,
            memory_used_percent: 95.0,
            memory_used_ratio: None,
            apache_saturated_for: Dur::secs(300),
            cap_remaining_at_most: 1,
            heartbeat_missing_for: Dur::secs(300),
            api_errors: 20,
            elb_unhealthy_hosts: 1,
            elb_surge_queue_length: 50,
            probe_latency_ms: 2000.0,
            bridge_on_for: Dur::secs(3600),
            disabled: Vec::new(),
        }
    }
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Samples, publishes, reads the fleet back, decides and acts.
    Master,
    /// Runs on slaves: samples and publishes only.
    Reporter,
}

impl Role {
    pub fn name(self) -> &'static str {
        crate::model::name_of(&self)
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AgentConfig {
    /// Names the site's fleet: the `Group` metric dimension and the `burst-agent:group` tag.
    pub group: String,
    pub role: Role,
    /// Cap ledger, actuator journal and status snapshot live here.
    pub state_dir: PathBuf,
    /// Decide and log everything, launch/register/terminate nothing.
    pub dry_run: bool,
    /// This host's `InstanceId` metric dimension. Empty: ask the EC2 instance metadata service,
    /// falling back to the host name off EC2.
    pub instance_id: String,
    /// On SIGTERM, in-flight actuator steps and hooks get this long to reach a safe point.
    pub shutdown_timeout: Dur,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            group: "default".into(),
            role: Role::Master,
            state_dir: PathBuf::from("/var/lib/burst-agent"),
            dry_run: false,
            instance_id: String::new(),
            shutdown_timeout: Dur::secs(60),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SamplingConfig {
    pub interval: Dur,
    /// Process names that count as Apache workers when the pidfile can't be used.
    pub apache_process_names: Vec<String>,
    /// Apache parent's pidfile; its children are the workers (the cheap path). Empty: names only.
    pub apache_pidfile: PathBuf,
    /// Apache's MaxClients / MaxRequestWorkers: the denominator of the busy-worker ratio.
    pub apache_max_workers: u32,
    /// mod_status URL (the `?auto` form is requested); empty to skip.
    pub mod_status_url: String,
    pub mod_status_timeout: Dur,
    /// Filesystems whose used % is sampled (absolute paths).
    pub disk_paths: Vec<PathBuf>,
    /// Site liveness probe: URLs fetched every `probe_interval` (the site through the ELB's DNS
    /// name, the master's own vhost), their status and latency published, alarmed and usable as
    /// the `probe_latency` policy signal. Empty: no probe.
    pub probe_urls: Vec<String>,
    pub probe_interval: Dur,
    /// A probe slower than this fails (and counts as this slow).
    pub probe_timeout: Dur,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        SamplingConfig {
            interval: Dur::secs(10),
            apache_process_names: vec!["apache2".into(), "httpd".into()],
            apache_pidfile: PathBuf::from("/var/run/apache2/apache2.pid"),
            apache_max_workers: 256,
            mod_status_url: "http://127.0.0.1/server-status?auto".into(),
            mod_status_timeout: Dur::secs(2),
            disk_paths: vec![PathBuf::from("/")],
            probe_urls: Vec::new(),
            probe_interval: Dur::secs(30),
            probe_timeout: Dur::secs(5),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Empty (the default): `BurstAgent/GROUP`, a namespace of the site's own
    /// ([`MetricsConfig::namespace_for`]).
    pub namespace: String,
    pub publish_interval: Dur,
    /// 60 (standard) or 1 (high resolution, billed more).
    pub storage_resolution: u32,
    /// How often the master reads the fleet's samples back.
    pub fleet_read_interval: Dur,
    /// A host whose newest sample is older than this counts as missing.
    pub stale_after: Dur,
    /// Datapoints kept while CloudWatch is unreachable; the oldest are dropped past this.
    pub buffer_limit: usize,
}

impl MetricsConfig {
    /// The CloudWatch namespace: `namespace`, or by default one of the site's own,
    /// `BurstAgent/GROUP`, so the slaves' IAM policy can allow PutMetricData there only (the
    /// `cloudwatch:namespace` condition): one site's slave cannot write another site's metrics.
    pub fn namespace_for(&self, group: &str) -> String {
        if self.namespace.is_empty() {
            format!("BurstAgent/{group}")
        } else {
            self.namespace.clone()
        }
    }
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            namespace: String::new(),
            publish_interval: Dur::secs(60),
            storage_resolution: 60,
            fleet_read_interval: Dur::secs(60),
            stale_after: Dur::secs(180),
            buffer_limit: 10_000,
        }
    }
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PolicyMode {
    /// desired = ceil(current × utilization / target), with a tolerance band.
    TargetTracking,
    /// Step rules: breach a threshold for `sustain` before acting.
    Threshold,
}

pub use crate::model::Signal;

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum VictimOrder {
    NewestFirst,
    OldestFirst,
    /// The slave whose next whole billing hour comes soonest.
    ClosestToBillingHour,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Targets {
    pub load_per_cpu: f64,
    pub apache_busy_ratio: f64,
    pub memory_used_ratio: f64,
    /// For the `probe_latency` signal: the slowest probe answer, in milliseconds.
    pub probe_latency_ms: f64,
}

impl Default for Targets {
    fn default() -> Self {
        Targets {
            load_per_cpu: 0.7,
            apache_busy_ratio: 0.6,
            memory_used_ratio: 0.8,
            probe_latency_ms: 800.0,
        }
    }
}

impl Targets {
    pub fn get(&self, s: Signal) -> f64 {
        match s {
            Signal::LoadPerCpu => self.load_per_cpu,
            Signal::ApacheBusyRatio => self.apache_busy_ratio,
            Signal::MemoryUsedRatio => self.memory_used_ratio,
            Signal::ProbeLatency => self.probe_latency_ms,
        }
    }
}

/// A threshold rule: act when utilization (fraction of the signal's capacity, 1.0 = saturated)
/// stays beyond `threshold` for `sustain`, by `step` slaves. Scale-out and scale-in have their own
/// types only so each keeps its own defaults when a section is written in part.
macro_rules! threshold_rule {
    ($name:ident, $threshold:expr, $sustain:expr) => {
        #[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
        #[serde(default, deny_unknown_fields)]
        pub struct $name {
            pub threshold: f64,
            pub sustain: Dur,
            pub step: u32,
        }
        impl Default for $name {
            fn default() -> Self {
                $name {
                    threshold: $threshold,
                    sustain: $sustain,
                    step: 1,
                }
            }
        }
    };
}
threshold_rule!(ScaleOutRule, 0.8, Dur::secs(60));
threshold_rule!(ScaleInRule, 0.3, Dur::secs(600));

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    pub evaluation_interval: Dur,
    pub mode: PolicyMode,
    /// Several at once: the most demanding wins.
    pub signals: Vec<Signal>,
    pub targets: Targets,
    /// Target tracking does nothing while |utilization/target - 1| <= tolerance.
    pub tolerance: f64,
    pub scale_out: ScaleOutRule,
    pub scale_in: ScaleInRule,
    pub min_slaves: u32,
    pub max_slaves: u32,
    /// The most slaves one decision may add / remove.
    pub max_step_out: u32,
    pub max_step_in: u32,
    pub scale_out_cooldown: Dur,
    pub scale_in_cooldown: Dur,
    /// Desired counts are smoothed over these windows: out takes the lowest, in the highest.
    pub scale_out_stabilization: Dur,
    pub scale_in_stabilization: Dur,
    /// A slave younger than this is never scaled in.
    pub min_lifetime: Dur,
    pub victim_order: VictimOrder,
    /// Metrics older than this count as missing.
    pub stale_after: Dur,
    /// Cap units the keep rule counts as spent already: a relaunch is priced against the
    /// units remaining less this margin (step 6).
    pub keep_slaves_when_cap_remaining_at_most: u32,
    /// What one burst-cap unit is worth in instance-time: an unneeded slave whose relaunch
    /// today would take a unit is kept while it has been unneeded for less than its relaunch
    /// cost (the lead time plus this, scaled by how scarce the day's units are).
    pub cap_unit_value: Dur,
    /// At most this much instance-time a day is spent keeping slaves no signal needs.
    pub max_kept_per_day: Dur,
    /// Replaced by `cap_unit_value` and `max_kept_per_day`; only read to say so.
    #[serde(default, skip_serializing)]
    pub cap_keep_for: Option<Dur>,
    /// Launches in this last stretch before the cap resets wait for midnight unless demand is
    /// acute: a slave launched at 23:55 and running past midnight counts on both days. 0 = off.
    pub midnight_guard: Dur,
    /// Demand is acute when a signal is at or above this many times its goal (target or
    /// scale-out threshold), or the fleet is below its floor.
    pub acute_factor: f64,
    pub forecast: ForecastConfig,
}

/// Lead-time forecasting (target tracking): every new slave needs boot + sync + registration
/// before it serves, so scale-out answers the load forecast that far ahead. Never scale-in.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ForecastConfig {
    pub enabled: bool,
    /// The trend is the median slope of the fleet's load over this window (Theil-Sen).
    pub window: Dur,
    /// The forecast is at most this many times the load now.
    pub max_factor: f64,
    /// The lead time until the fleet has measured its own (launch to InService, the median of
    /// the last ones, kept in the state).
    pub lead_time: Dur,
}

impl Default for ForecastConfig {
    fn default() -> Self {
        ForecastConfig {
            enabled: true,
            window: Dur::secs(300),
            max_factor: 2.0,
            lead_time: Dur::secs(150),
        }
    }
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            evaluation_interval: Dur::secs(15),
            mode: PolicyMode::TargetTracking,
            signals: vec![Signal::LoadPerCpu, Signal::ApacheBusyRatio],
            targets: Targets::default(),
            tolerance: 0.1,
            scale_out: ScaleOutRule::default(),
            scale_in: ScaleInRule::default(),
            min_slaves: 0,
            max_slaves: 7,
            max_step_out: 4,
            max_step_in: 2,
            scale_out_cooldown: Dur::secs(15),
            scale_in_cooldown: Dur::secs(120),
            scale_out_stabilization: Dur::secs(0),
            scale_in_stabilization: Dur::secs(300),
            min_lifetime: Dur::secs(600),
            victim_order: VictimOrder::NewestFirst,
            stale_after: Dur::secs(180),
            keep_slaves_when_cap_remaining_at_most: 0,
            cap_unit_value: Dur::secs(600),
            max_kept_per_day: Dur::secs(4 * 3600),
            cap_keep_for: None,
            midnight_guard: Dur::secs(600),
            acute_factor: 1.5,
            forecast: ForecastConfig::default(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CapConfig {
    /// Distinct burst instances that may run on one calendar day.
    pub daily_limit: u32,
    /// IANA time zone whose midnight starts a new day.
    pub time_zone: String,
    /// Optional second budget: burst instance-hours per day (0 = off).
    pub daily_instance_hours: f64,
}

impl Default for CapConfig {
    fn default() -> Self {
        CapConfig {
            daily_limit: 7,
            time_zone: "Asia/Tokyo".into(),
            daily_instance_hours: 0.0,
        }
    }
}

/// `[ledger]`: the site's guarantee in a shared DynamoDB table (docs/configuration.md#ledger):
/// the day's units, every launch's record and the lease that lets one agent act for the site.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LedgerConfig {
    /// The table's name (`burst-agent table create NAME` makes it). Empty: no table, which only
    /// a dry run, `simulate` and `faultsim` may run without.
    pub table: String,
    /// How long one renewal of the lease lets its holder act. A standby takes over a lease it
    /// has seen unchanged for this long plus `aws.call_timeout`.
    pub lease_duration: Dur,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        LedgerConfig {
            table: String::new(),
            lease_duration: Dur::secs(30),
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LaunchTemplate {
    pub id: String,
    pub name: String,
    /// `$Default`, `$Latest` or a number.
    pub version: String,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct FleetConfig {
    /// Either a launch template ...
    pub launch_template: Option<LaunchTemplate>,
    /// ... or the launch spec written out.
    pub ami: String,
    pub instance_type: String,
    /// Tried in order when no subnet has capacity for `instance_type` (or the template's type).
    pub fallback_instance_types: Vec<String>,
    pub subnet_ids: Vec<String>,
    pub security_group_ids: Vec<String>,
    pub instance_profile: String,
    pub key_name: String,
    pub user_data_file: Option<PathBuf>,
    /// Extra tags on every slave (the agent's own `burst-agent:*` tags are always added).
    pub tags: BTreeMap<String, String>,
    /// A launched slave must be `running` within this, or it is terminated.
    pub boot_timeout: Dur,
    /// The warm pool: scale-in **stops** up to this many EBS-backed slaves instead of
    /// terminating them, and scale-out starts a stopped one before it launches (faster, and free
    /// of a new cap unit when it already ran today). 0 turns it off.
    pub warm_pool: u32,
    /// A stopped slave older than this is terminated (its content is stale, its volume costs).
    pub warm_pool_max_age: Dur,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            launch_template: None,
            ami: String::new(),
            instance_type: "t3.small".into(),
            fallback_instance_types: Vec::new(),
            subnet_ids: Vec::new(),
            security_group_ids: Vec::new(),
            instance_profile: String::new(),
            key_name: String::new(),
            user_data_file: None,
            tags: BTreeMap::new(),
            boot_timeout: Dur::secs(600),
            warm_pool: 3,
            warm_pool_max_age: Dur::secs(6 * 3600),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ElbConfig {
    /// Classic ELB name.
    pub name: String,
    /// Time given to in-flight requests after deregistration.
    pub draining_timeout: Dur,
    /// A registered slave must be `InService` within this.
    pub register_timeout: Dur,
}

impl Default for ElbConfig {
    fn default() -> Self {
        ElbConfig {
            name: String::new(),
            draining_timeout: Dur::secs(300),
            register_timeout: Dur::secs(300),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Hook {
    /// Program and arguments; never run through a shell. Placeholders: see HOOK_PLACEHOLDERS.
    pub argv: Vec<String>,
    pub timeout: Dur,
    /// Further attempts after the first fails.
    pub retries: u32,
    pub retry_delay: Dur,
}

impl Default for Hook {
    fn default() -> Self {
        Hook {
            argv: Vec::new(),
            timeout: Dur::secs(600),
            retries: 2,
            retry_delay: Dur::secs(10),
        }
    }
}

fn rsync_docroot() -> Hook {
    Hook {
        argv: [
            "rsync",
            "-az",
            "--delete",
            "--timeout=60",
            "-e",
            DEFAULT_SSH,
            "/var/www/",
            "{private_ip}:/var/www/",
        ]
        .map(String::from)
        .to_vec(),
        ..Hook::default()
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HooksConfig {
    /// Must succeed before a new slave is registered with the ELB (content sync).
    pub pre_register: Hook,
    /// Run against every in-service slave each `content_sync_interval`. Unset: the same
    /// command as `pre_register` ([`HooksConfig::content_sync`]), so the tree an operator
    /// points `pre_register` at is the one kept in sync (a second, hard-coded one would be
    /// synced with --delete every interval).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_sync: Option<Hook>,
    pub content_sync_interval: Dur,
    /// Optional, run before a slave is deregistered.
    pub pre_deregister: Option<Hook>,
    /// Optional, run after a slave is terminated.
    pub post_terminate: Option<Hook>,
    /// Optional, run for each event notification ([events]); placeholders: EVENT_PLACEHOLDERS.
    pub on_event: Option<Hook>,
    /// Switches the master to a brownout bridge level (`[bridge]`); placeholders:
    /// BRIDGE_PLACEHOLDERS. Unset: levels are decided and shown, never applied.
    pub on_bridge: Option<Hook>,
    /// The content's source on the master, checked before every `pre_register` and
    /// `content_sync`: one that is missing, empty, or lacks `content_sentinel` is never synced
    /// (an rsync --delete from an unmounted volume wipes every slave). Unset: each hook's own
    /// local source path, read from its rsync argv ([`HooksConfig::source_of`]).
    pub content_source: Option<PathBuf>,
    /// A file that must exist in the content source before it is synced (a marker only the
    /// real content has; a volume that is not mounted has none). Unset: none checked.
    pub content_sentinel: Option<String>,
    /// Proves a slave serves the site: run after `pre_register` succeeds (a slave whose check
    /// fails is never registered) and after each periodic `content_sync` (a serving slave whose
    /// check fails is taken out). Unset: content is assumed once rsync exits 0 (check-config
    /// warns). The shipped config compares the slave's page with the master's own copy
    /// (`burst-agent check-content`).
    pub content_check: Option<Hook>,
}

impl HooksConfig {
    /// What `check-config` warns of in `[hooks]`: content that is assumed, not checked.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.content_check.is_none() {
            out.push(
                "hooks.content_check is unset: a slave counts as having the site once its sync \
                 exits 0, and an rsync from an empty source exits 0 too; the shipped example \
                 compares the slave's page with the master's own copy (burst-agent \
                 check-content)"
                    .to_string(),
            );
        }
        for (key, hook) in [
            ("hooks.pre_register", &self.pre_register),
            ("hooks.content_sync", self.content_sync()),
        ] {
            match self.source_of(hook) {
                Some(p) => out.push(format!(
                    "{key} syncs from {} (checked before each run: never synced when missing, \
                     empty{})",
                    p.display(),
                    self.content_sentinel
                        .as_deref()
                        .map(|s| format!(" or without {s}"))
                        .unwrap_or_default()
                )),
                None => out.push(format!(
                    "{key}: its content source cannot be read from its argv and \
                     hooks.content_source is unset, so the source is not checked before it runs \
                     (an empty one would be synced, and an rsync --delete wipes the slave)"
                )),
            }
        }
        out
    }

    /// The periodic sync's command: `content_sync` when set, else `pre_register`'s.
    pub fn content_sync(&self) -> &Hook {
        self.content_sync.as_ref().unwrap_or(&self.pre_register)
    }

    /// What each sync hook runs, for `check-config`: one line each.
    pub fn commands(&self) -> Vec<String> {
        let show = |h: &Hook| h.argv.join(" ");
        let mut out = vec![format!(
            "hooks.pre_register runs: {}",
            show(&self.pre_register)
        )];
        out.push(match &self.content_sync {
            Some(h) => format!("hooks.content_sync runs: {}", show(h)),
            None => "hooks.content_sync is unset: it runs hooks.pre_register's command".into(),
        });
        out
    }

    /// The local content source a sync hook reads: `content_source` when set, else the last
    /// local absolute path among an rsync argv's operands (not an option's value, not a
    /// `host:path`, not a placeholder). `None` when neither says (a script of the operator's:
    /// set `content_source`).
    pub fn source_of(&self, hook: &Hook) -> Option<PathBuf> {
        if let Some(p) = &self.content_source {
            return Some(p.clone());
        }
        let prog = hook.argv.first()?;
        if Path::new(prog).file_name().and_then(|n| n.to_str()) != Some("rsync") {
            return None;
        }
        let mut operands = Vec::new();
        let mut skip = false;
        for a in &hook.argv[1..] {
            if std::mem::take(&mut skip) {
                continue;
            }
            if matches!(
                a.as_str(),
                "-e" | "--rsh"
                    | "-T"
                    | "--temp-dir"
                    | "--exclude-from"
                    | "--include-from"
                    | "--files-from"
                    | "--filter"
                    | "-f"
                    | "--exclude"
                    | "--include"
                    | "--password-file"
                    | "--log-file"
            ) {
                skip = true;
                continue;
            }
            if a.starts_with('-') {
                continue;
            }
            operands.push(a);
        }
        // The last operand is the destination; the sources come before it.
        operands.pop();
        operands
            .into_iter()
            .rev()
            .find(|a| a.starts_with('/') && !a.contains(':') && !a.contains('{'))
            .map(PathBuf::from)
    }
}

impl Default for HooksConfig {
    fn default() -> Self {
        HooksConfig {
            pre_register: rsync_docroot(),
            content_sync: None,
            content_sync_interval: Dur::secs(300),
            pre_deregister: None,
            post_terminate: None,
            on_event: None,
            on_bridge: None,
            content_source: None,
            content_sentinel: None,
            content_check: None,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AwsConfig {
    /// Empty: the standard chain (AWS_REGION, profile, instance metadata).
    pub region: String,
    /// Points every AWS client at an emulator (tests); empty for real AWS.
    pub endpoint_url: String,
    /// Shared by every task: the agent's AWS calls per second.
    pub max_calls_per_second: u32,
    pub call_timeout: Dur,
    /// SDK attempts per call (throttling and 5xx are retried with backoff).
    pub max_attempts: u32,
}

impl Default for AwsConfig {
    fn default() -> Self {
        AwsConfig {
            region: String::new(),
            endpoint_url: String::new(),
            max_calls_per_second: 5,
            call_timeout: Dur::secs(30),
            max_attempts: 4,
        }
    }
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A level (`info`) or a filter (`burst_agent=debug,info`); `RUST_LOG` wins when set.
    pub level: String,
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../../../agent.toml.example");

    #[test]
    fn a_sync_hooks_content_source_is_read_from_its_rsync_argv_or_set() {
        let mut h = HooksConfig::default();
        assert_eq!(
            h.source_of(&h.pre_register),
            Some(PathBuf::from("/var/www/")),
            "the shipped rsync: -e's ssh command and the host:path destination are not it"
        );
        let local = Hook {
            argv: [
                "/usr/bin/rsync",
                "-a",
                "--delete",
                "/srv/site/",
                "/tmp/{instance_id}/",
            ]
            .map(String::from)
            .to_vec(),
            ..Hook::default()
        };
        assert_eq!(h.source_of(&local), Some(PathBuf::from("/srv/site/")));
        let script = Hook {
            argv: ["/usr/local/bin/site-sync", "{private_ip}"]
                .map(String::from)
                .to_vec(),
            ..Hook::default()
        };
        assert_eq!(h.source_of(&script), None);
        assert!(h
            .warnings()
            .iter()
            .any(|w| w.contains("hooks.content_check is unset")));
        h.content_source = Some("/data/www".into());
        assert_eq!(h.source_of(&script), Some(PathBuf::from("/data/www")));
    }

    fn leaf_paths(v: &toml::Value, prefix: &str, out: &mut Vec<String>) {
        if let toml::Value::Table(t) = v {
            for (k, v) in t {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                match v {
                    // fleet.tags is free-form: its defaults are empty.
                    toml::Value::Table(_) if path != "fleet.tags" => leaf_paths(v, &path, out),
                    _ => out.push(path),
                }
            }
        }
    }

    #[test]
    fn example_is_valid_and_writes_every_key() {
        let cfg = parse_str(EXAMPLE, "agent.toml.example").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.cap.daily_limit, 7);
        assert_eq!(cfg.cap.time_zone, "Asia/Tokyo");
        assert_eq!(cfg.sampling.apache_max_workers, 256);
        let example: toml::Value = toml::from_str(EXAMPLE).unwrap();
        let defaults = toml::Value::try_from(Config::default()).unwrap();
        let (mut want, mut have) = (Vec::new(), Vec::new());
        leaf_paths(&defaults, "", &mut want);
        leaf_paths(&example, "", &mut have);
        let missing: Vec<_> = want.iter().filter(|p| !have.contains(p)).collect();
        assert!(
            missing.is_empty(),
            "agent.toml.example does not document {missing:?}"
        );
        for optional in [
            "fleet.launch_template",
            "hooks.pre_deregister",
            "hooks.post_terminate",
            "fleet.user_data_file",
            "schedule",
            "hooks.content_source",
            "hooks.content_sentinel",
        ] {
            let key = optional.rsplit('.').next().unwrap();
            assert!(
                EXAMPLE.contains(key),
                "agent.toml.example does not mention {optional}"
            );
        }
    }

    #[test]
    fn example_values_are_the_defaults_but_the_site_specific_ones() {
        let mut cfg = parse_str(EXAMPLE, "agent.toml.example").unwrap();
        // Site-specific keys the example fills in for illustration; all others show the default.
        let d = Config::default();
        cfg.agent.group = d.agent.group.clone();
        cfg.agent.dry_run = d.agent.dry_run;
        cfg.sampling.disk_paths = d.sampling.disk_paths.clone();
        cfg.fleet.ami = d.fleet.ami.clone();
        cfg.fleet.subnet_ids = d.fleet.subnet_ids.clone();
        cfg.fleet.security_group_ids = d.fleet.security_group_ids.clone();
        cfg.fleet.instance_profile = d.fleet.instance_profile.clone();
        cfg.fleet.tags = d.fleet.tags.clone();
        cfg.elb.name = d.elb.name.clone();
        // What the site is invoiced in, and what its slaves cost: the operator's to say.
        cfg.prices = d.prices.clone();
        // The shipped config checks content; the default cannot know a page of the site.
        assert!(cfg.hooks.content_check.is_some());
        cfg.hooks.content_check = d.hooks.content_check.clone();
        assert_eq!(cfg, d);
    }
}
