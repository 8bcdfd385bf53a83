//! The `burst-agent` command line: the binary's edge, where errors become `anyhow` with context.
//!
//! Each command's work lives in its module: `run` in `daemon`, `simulate` in `sim`, `faultsim`
//! in `faultsim`, the operator's commands (`repair`, `preflight`, `drill`, `alarms`,
//! `dashboard`, `table`, `fleet`, `takeover`, `resume`) in `ops`. This file parses, loads the
//! config, and turns errors into exit codes.

use anyhow::{Context, Result};
use burst_agent::config::{self, Config, ConfigError, DEFAULT_CONFIG_PATH};
use burst_agent::{logging, report, sampler::Sampler};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Prints to stdout like `print!`. A reader that went away (`burst-agent fleet | head -1`) ends
/// the command quietly with exit 0, as ripgrep does, where `print!` panics.
macro_rules! out {
    ($($arg:tt)*) => {
        stdout_write(format_args!($($arg)*))
    };
}

/// [`out!`] with a newline, like `println!`.
macro_rules! outln {
    () => {
        stdout_write(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        stdout_write(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// Writes to stdout and flushes (so a closed pipe is seen at the write that meets it).
fn stdout_write(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        // Anything else fails the way print! does.
        panic!("failed printing to stdout: {e}");
    }
}

#[derive(Parser)]
#[command(
    name = "burst-agent",
    version,
    about = "Keeps a web site alive through traffic bursts"
)]
struct Cli {
    /// Config file [default: /etc/burst-agent/agent.toml]
    #[arg(long, short = 'c', global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum TableAction {
    /// Create the table NAME: on-demand, deletion protection, point-in-time recovery, TTL on
    /// `expires_at`. An existing table is left as it is.
    Create { name: String },
}

#[derive(Subcommand)]
enum Command {
    /// Parse and validate a config file; print every problem; exit 1 if there is any.
    CheckConfig {
        /// The file to check [default: --config, else /etc/burst-agent/agent.toml]
        path: Option<PathBuf>,
    },
    /// Run the agent: sample, publish, decide, act (a systemd service; see README).
    Run {
        /// Decide and log everything, launch/register/terminate nothing (overrides the file).
        #[arg(long)]
        dry_run: bool,
    },
    /// Read-only checks of the config against this host and the AWS account before the first
    /// burst: the launch spec (RunInstances with DryRun in every subnet and type), the ELB and
    /// its zones, topics, CloudWatch, the hooks' programs, the ssh key, the content source,
    /// Apache. Each line passes or fails naming its key and the fix; exits 1 on any failure.
    /// Run it as the service user: `sudo -u burst-agent burst-agent preflight`.
    Preflight {
        /// Print the checks as JSON.
        #[arg(long)]
        json: bool,
    },
    /// A rehearsal of one slave with the agent stopped: start a warm one or launch one (a
    /// burst-cap unit, said first), sync, check, register, wait for InService, then drain,
    /// deregister and stop or terminate it; prints each phase's seconds and keeps the lead time.
    /// Without --yes it only says what it would do.
    Drill {
        /// Do it (it may spend a cap unit).
        #[arg(long)]
        yes: bool,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show the agent's fleet, burst cap, last decision and errors (running or stopped).
    Status {
        /// Print the snapshot as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The shipped hooks.content_check: exit 0 when a GET of --url answers 200 with exactly the
    /// bytes of --file (the master's own copy of that page), 1 saying what differed.
    CheckContent {
        #[arg(long)]
        url: String,
        #[arg(long)]
        file: PathBuf,
        /// Give up after this long.
        #[arg(long, default_value = "10s", value_parser = parse_every)]
        timeout: std::time::Duration,
    },
    /// The account's ledger table (`ledger.table`), where every site's burst units, launch
    /// records and lease live. Run once per account as an operator (not the master's role).
    Table {
        #[command(subcommand)]
        action: TableAction,
    },
    /// Every site in the ledger table at a glance: today's units against the limit, slaves
    /// serving, coming, warm and running, the lease holder and how fresh its lease is, standbys,
    /// the last decision. With --month: what each site used per local day and what it cost.
    /// Read-only (docs/aws.md: the desk's IAM policy).
    Fleet {
        /// Print JSON for scripts.
        #[arg(long, conflicts_with = "csv")]
        json: bool,
        /// The month to report, per site and local day (units, instances, instance-hours,
        /// peak, days at cap, days held short, cost at [prices]).
        #[arg(long, value_name = "YYYY-MM")]
        month: Option<String>,
        /// With --month: CSV for the invoice spreadsheet.
        #[arg(long, requires = "month")]
        csv: bool,
        /// With --month: draw units per site and day as a heat map to this SVG file.
        #[arg(long, requires = "month", value_name = "FILE.svg")]
        plot: Option<PathBuf>,
        /// The table to read [default: ledger.table of the config].
        #[arg(long, value_name = "NAME")]
        table: Option<String>,
    },
    /// Take the site's lease from the agent that holds it, for an operator who knows the old
    /// master is gone: this host's running agent (or its next start) acts for the site.
    Takeover {
        /// Do it (without: say who holds the lease and what this would do).
        #[arg(long)]
        yes: bool,
    },
    /// Release the brake on launches after fixing what broke the content sync outside the
    /// config (the running agent picks it up at its next tick; `systemctl reload burst-agent`
    /// does the same only when the hook, the slave image or the ssh key changed).
    Resume,
    /// The brownout bridge by hand ([bridge], docs/bridge.md): force a level, end one, or hand
    /// it back to the policy. The running agent reads it at its next tick; `status` shows it.
    Bridge {
        #[command(subcommand)]
        action: BridgeAction,
    },
    /// Replay a load trace through the real policy and cap ledger next to baselines.
    Simulate(SimulateArgs),
    /// With the agent stopped: rebuild the burst cap ledger from the state, the launch journal
    /// and the instances' tags, and lift a block that waits for an operator
    /// (docs/operations.md, "Troubleshooting").
    Repair {
        /// Instances used today, if you know more were than the agent can see (billing,
        /// CloudTrail): the ledger counts at least this many until the day ends.
        #[arg(long, value_name = "N")]
        used_today: Option<u32>,
        /// Adopt this instance as this install's (repeat for more): only a candidate that
        /// `repair` lists (tagged as this install's, named by no record). Tags alone never
        /// make an instance ours; this is the operator's word.
        #[arg(long, value_name = "INSTANCE_ID")]
        adopt: Vec<String>,
    },
    /// The CloudWatch alarms for this group ([alarms]): print the plan (default), or put them.
    Alarms {
        /// Put the alarms in CloudWatch (idempotent: an alarm of the same name is replaced).
        #[arg(long)]
        apply: bool,
        /// With --apply: delete this group's alarms (burst-agent/GROUP/...) no longer planned.
        #[arg(long, requires = "apply")]
        prune: bool,
        /// Print the plan as a table and change nothing (the default; for scripts that say so).
        #[arg(long, conflicts_with = "apply")]
        print: bool,
    },
    /// The CloudWatch dashboard for this group, or across sites: print its JSON (default), or
    /// put it.
    Dashboard {
        /// Put the dashboard in CloudWatch (one of the same name is replaced).
        #[arg(long)]
        apply: bool,
        /// One dashboard across these groups (comma-separated) instead of this one's.
        #[arg(long, value_delimiter = ',', value_name = "GROUP,...")]
        groups: Vec<String>,
        /// Print the body as JSON and change nothing (the default; for scripts that say so).
        #[arg(long, conflicts_with = "apply")]
        print: bool,
    },
    /// Seeded fault and crash simulation of the actuator: check the promises (RELIABILITY.md).
    Faultsim {
        /// How many seeds to run, from --first.
        #[arg(long, default_value_t = 10_000)]
        seeds: u64,
        /// The first seed.
        #[arg(long, default_value_t = 0)]
        first: u64,
        /// Run this one seed only (replay).
        #[arg(long, conflicts_with_all = ["seeds", "first"])]
        seed: Option<u64>,
        /// Log everything the actuator does (for replaying one seed).
        #[arg(long)]
        verbose: bool,
    },
    /// Take one sample of this host and print it.
    Sample {
        /// Print JSON instead of text (one object per line with --every).
        #[arg(long)]
        json: bool,
        /// Keep sampling at this interval ("1s", "10s"), like vmstat.
        #[arg(long, value_name = "DURATION", value_parser = parse_every)]
        every: Option<std::time::Duration>,
        /// With --every: stop after this many samples.
        #[arg(long, value_name = "N", requires = "every")]
        count: Option<u64>,
    },
}

#[derive(Subcommand)]
enum BridgeAction {
    /// Hold the bridge at LEVEL (1 to the number of bridge.costs) for --for, whatever the load.
    Set {
        level: u8,
        /// How long; then the policy decides again (at most 24h).
        #[arg(long = "for", default_value = "30m", value_name = "DURATION", value_parser = parse_every)]
        duration: std::time::Duration,
    },
    /// Full service for --for, whatever the load (an episode the operator ends).
    Off {
        #[arg(long = "for", default_value = "30m", value_name = "DURATION", value_parser = parse_every)]
        duration: std::time::Duration,
    },
    /// Hand the level back to the policy now.
    Auto,
}

#[derive(clap::Args)]
struct SimulateArgs {
    /// CSV `time,offered_load` (seconds or RFC 3339; load in host-equivalents)
    trace: PathBuf,
    /// Print JSON instead of the table.
    #[arg(long)]
    json: bool,
    /// Draw offered load, demand, capacity and cap use to this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
    /// With --plot: draw from this long after the trace's start (e.g. "5h30m"); the run and its
    /// table still cover the whole trace.
    #[arg(long, requires = "plot", value_name = "DURATION", value_parser = parse_duration_arg)]
    from: Option<std::time::Duration>,
    /// With --plot: draw up to this long after the trace's start.
    #[arg(long, requires = "plot", value_name = "DURATION", value_parser = parse_duration_arg)]
    to: Option<std::time::Duration>,
    /// Launch to running.
    #[arg(long, default_value = "90s", value_parser = parse_duration_arg)]
    boot_delay: std::time::Duration,
    /// Content sync (pre_register hook) on a new slave.
    #[arg(long, default_value = "30s", value_parser = parse_duration_arg)]
    sync_time: std::time::Duration,
    /// ELB registration until InService.
    #[arg(long, default_value = "30s", value_parser = parse_duration_arg)]
    register_delay: std::time::Duration,
    /// How late slaves' metrics reach the master through CloudWatch.
    #[arg(long, default_value = "60s", value_parser = parse_duration_arg)]
    metrics_delay: std::time::Duration,
    /// Demand keeps every host at or below this utilization (0-1].
    #[arg(long, default_value_t = 0.8)]
    slo_utilization: f64,
    /// Trace units one host serves at saturation (e.g. requests/s); 1 = host-equivalents.
    #[arg(long, default_value_t = 1.0)]
    host_capacity: f64,
    /// Share of the load only the master serves (forms, the CMS) [0-1]; the rest is spread
    /// over every serving host, the master included.
    #[arg(long, default_value_t = 0.1, value_name = "SHARE")]
    master_share: f64,
    /// Slaves of the static baseline: a fleet planned in advance, in service for the whole trace.
    #[arg(long, default_value_t = 5, value_name = "N")]
    static_slaves: u32,
    /// The policy every run's elastic speedup (η) is against (its run with the cap): burst-agent,
    /// burst-agent+bridge (with --bridge), k8s-hpa, aws-simple, static, oracle or none.
    #[arg(long, default_value = "k8s-hpa", value_name = "POLICY", value_parser = parse_policy)]
    reference: burst_agent::sim::Kind,
    /// Start time for traces written in second offsets (RFC 3339).
    #[arg(long, default_value = "2026-01-05T00:00:00+09:00")]
    start: String,
    /// Run burst-agent with its brownout bridge too ([bridge] as configured, turned on), as
    /// `burst-agent+bridge` beside the agent without it; `bridge.enabled = true` does the same.
    #[arg(long)]
    bridge: bool,
}

fn parse_policy(s: &str) -> Result<burst_agent::sim::Kind, String> {
    use burst_agent::sim::Kind;
    Kind::from_name(s).ok_or_else(|| {
        let names: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
        format!("no policy {s:?}; one of {}", names.join(", "))
    })
}

fn parse_duration_arg(s: &str) -> Result<std::time::Duration, String> {
    config::parse_duration(s).map(|d| d.get())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("burst-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    let config = cli.config;
    match cli.command {
        Command::CheckConfig { path } => {
            let path = path
                .or(config)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH));
            Ok(check_config(&path))
        }
        Command::Run { dry_run } => run_agent(config.as_deref(), dry_run),
        Command::CheckContent { url, file, timeout } => Ok(check_content(&url, &file, timeout)),
        Command::Drill { yes, json } => drill(config.as_deref(), yes, json),
        Command::Preflight { json } => preflight(config.as_deref(), json),
        Command::Table {
            action: TableAction::Create { name },
        } => create_table(config.as_deref(), &name),
        Command::Fleet {
            json,
            month,
            csv,
            plot,
            table,
        } => fleet_report(config.as_deref(), json, month, csv, plot, table),
        Command::Takeover { yes } => takeover(config.as_deref(), yes),
        Command::Resume => resume(config.as_deref()),
        Command::Bridge { action } => bridge(config.as_deref(), action),
        Command::Status { json } => show_status(config.as_deref(), json),
        Command::Simulate(args) => {
            let cfg = load_config_or_defaults(config.as_deref())?;
            simulate(&cfg, &args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Repair { used_today, adopt } => repair(config.as_deref(), used_today, &adopt),
        Command::Alarms { apply, prune, .. } => alarms(config.as_deref(), apply, prune),
        Command::Dashboard { apply, groups, .. } => dashboard(config.as_deref(), apply, groups),
        Command::Faultsim {
            seeds,
            first,
            seed,
            verbose,
        } => Ok(faultsim(seeds, first, seed, verbose)),
        Command::Sample { json, every, count } => sample(config.as_deref(), json, every, count),
    }
}

/// `run`: the agent itself, until it is stopped.
fn run_agent(config: Option<&Path>, dry_run: bool) -> Result<ExitCode> {
    let cfg = load_config_or_defaults(config)?;
    burst_agent::privilege::check_run_state_dir(&cfg.agent.state_dir)
        .map_err(anyhow::Error::msg)?;
    logging::init(&cfg.log).map_err(anyhow::Error::msg)?;
    let config_path = match config {
        Some(p) => Some(p.to_path_buf()),
        None => Some(PathBuf::from(DEFAULT_CONFIG_PATH)).filter(|p| p.exists()),
    };
    burst_agent::daemon::run(
        cfg,
        burst_agent::daemon::RunOptions {
            config_path,
            force_dry_run: dry_run,
        },
    )
    .context("run")?;
    Ok(ExitCode::SUCCESS)
}

/// `check-content`: whether `url` serves exactly the bytes of `file`.
fn check_content(url: &str, file: &Path, timeout: std::time::Duration) -> ExitCode {
    match burst_agent::hooks::check_content(url, file, timeout) {
        Ok(()) => {
            outln!("{url} serves {}", file.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("content check failed: {}", burst_agent::text::printable(&e));
            ExitCode::FAILURE
        }
    }
}

/// `drill`: a rehearsal of one slave, or with no `yes` what it would do.
fn drill(config: Option<&Path>, yes: bool, json: bool) -> Result<ExitCode> {
    let cfg = load_config_or_defaults(config)?;
    logging::init(&cfg.log).map_err(anyhow::Error::msg)?;
    let d = burst_agent::daemon::drill(cfg, yes, &mut |l| {
        if !json {
            outln!("{l}");
        }
    })
    .context("drill")?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&d)?);
    } else {
        out!("{}", d.render());
    }
    if !yes && !json {
        // The exact command again, with the config this one was given.
        let c = config
            .map(|p| format!(" -c {}", p.display()))
            .unwrap_or_default();
        outln!("to do it: burst-agent{c} drill --yes");
    }
    Ok(if !yes {
        // Nothing done: not a failure of the set-up, not a pass either.
        ExitCode::from(2)
    } else if d.failed.is_some() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// `preflight`: the read-only checks of the config against this host and the account.
fn preflight(config: Option<&Path>, json: bool) -> Result<ExitCode> {
    let cfg = load_config_or_defaults(config)?;
    let report = burst_agent::daemon::preflight(cfg).context("preflight")?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        out!("{}", report.render());
    }
    Ok(if report.failed() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// `table create`: the account's ledger table `name`.
fn create_table(config: Option<&Path>, name: &str) -> Result<ExitCode> {
    // An operator's command: it needs [aws], not a master's AMI or ELB.
    let cfg = load_config_read_only(config)?;
    let created = burst_agent::daemon::create_table(cfg, name).context("table create")?;
    outln!(
        "{} {name}: set `table = \"{name}\"` under [ledger] in every master's config",
        if created {
            "created the ledger table"
        } else {
            "the ledger table is there already, left as it is:"
        }
    );
    Ok(ExitCode::SUCCESS)
}

/// `fleet`: every site in the ledger table now, or with `month` per local day of that month.
fn fleet_report(
    config: Option<&Path>,
    json: bool,
    month: Option<String>,
    csv: bool,
    plot: Option<PathBuf>,
    table: Option<String>,
) -> Result<ExitCode> {
    use burst_agent::ops::fleet;
    // Read-only: a desk's file needs no AMI or ELB (docs/operations.md).
    let cfg = load_config_read_only(config)?;
    let first = month
        .as_deref()
        .map(fleet::parse_month)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let prices = cfg.prices.clone();
    let lease_secs = cfg.ledger.lease_duration.get().as_secs();
    let wanted = fleet::wanted(first, jiff::Timestamp::now());
    let read = fleet::read(cfg, table, wanted).context("fleet")?;
    // Items that did not read are named in the output and left out of the numbers;
    // the exit status says so to a script (the CSV's reader sees them on stderr).
    let problems: Vec<String> = read
        .sites
        .iter()
        .flat_map(|(site, r)| r.problems.iter().map(move |p| format!("{site}: {p}")))
        .collect();
    let done = if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    };
    let Some(first) = first else {
        let sites = fleet::now_view(&read.sites, lease_secs, read.at);
        if json {
            outln!("{}", serde_json::to_string_pretty(&sites)?);
        } else {
            out!("{}", fleet::render_now(&sites, read.at, read.secs));
        }
        return Ok(done);
    };
    let months = fleet::month_view(&read.sites, first, &prices, read.at);
    // Hours cut at a last sighting are provisional: said, and the exit status says so.
    let done = if months.iter().any(|m| m.usage.total.unconfirmed > 0) {
        ExitCode::FAILURE
    } else {
        done
    };
    print_fleet_month(
        &months,
        first,
        &prices.currency,
        &problems,
        json,
        csv,
        plot.as_deref(),
    )?;
    Ok(done)
}

/// `fleet --month`: the heat map if asked for, then the month as CSV, JSON or a table.
fn print_fleet_month(
    months: &[burst_agent::ops::fleet::SiteMonth],
    first: jiff::civil::Date,
    currency: &str,
    problems: &[String],
    json: bool,
    csv: bool,
    plot: Option<&Path>,
) -> Result<()> {
    use burst_agent::ops::{fleet, fleet_plot};
    if let Some(p) = plot {
        fleet_plot::draw(p, months, first).map_err(anyhow::Error::msg)?;
        eprintln!("burst-agent fleet: heat map written to {}", p.display());
    }
    if csv {
        out!("{}", fleet::render_csv(months, first, currency));
        for p in problems {
            eprintln!("burst-agent fleet: left out of the numbers: {p}");
        }
        for m in months.iter().filter(|m| !m.usage.unconfirmed.is_empty()) {
            eprintln!(
                "burst-agent fleet: {}: {} not seen running by any agent for 15 minutes: \
                 counted until last seen",
                m.site,
                m.usage.unconfirmed.join(", ")
            );
        }
    } else if json {
        outln!("{}", serde_json::to_string_pretty(months)?);
    } else {
        out!("{}", fleet::render_month(months, first, currency));
    }
    Ok(())
}

/// `takeover`: the site's lease taken from the agent that holds it, or with no `yes` who holds
/// it.
fn takeover(config: Option<&Path>, yes: bool) -> Result<ExitCode> {
    let cfg = load_config_or_defaults(config)?;
    burst_agent::privilege::enter_state_dir(&cfg.agent.state_dir, "takeover")
        .map_err(anyhow::Error::msg)?;
    for line in burst_agent::daemon::takeover(cfg, yes).context("takeover")? {
        outln!("{line}");
    }
    Ok(if yes {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

/// `resume`: asks the running agent to release the brake on launches.
fn resume(config: Option<&Path>) -> Result<ExitCode> {
    let cfg = load_config_or_defaults(config)?;
    burst_agent::privilege::enter_state_dir(&cfg.agent.state_dir, "resume")
        .map_err(anyhow::Error::msg)?;
    let path = burst_agent::daemon::request_resume(&cfg.agent.state_dir).context("resume")?;
    outln!(
        "asked the agent to release the brake on launches ({}); its next tick does, \
         and `burst-agent status` shows it",
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `bridge set N` / `bridge off` / `bridge auto`: the level by hand, for the running agent.
fn bridge(config: Option<&Path>, action: BridgeAction) -> Result<ExitCode> {
    use burst_agent::daemon::bridge as b;
    let cfg = load_config_or_defaults(config)?;
    let off = matches!(action, BridgeAction::Off { .. });
    let (level, duration) = match action {
        BridgeAction::Set { level, duration } => (level, Some(duration)),
        BridgeAction::Off { duration } => (0, Some(duration)),
        BridgeAction::Auto => (0, None),
    };
    if let Some(d) = duration {
        anyhow::ensure!(
            cfg.bridge.enabled,
            "bridge.enabled is false in the config: the agent decides no level and applies none; \
             set it (docs/bridge.md) and reload first"
        );
        let top = cfg.bridge.top();
        anyhow::ensure!(
            level <= top && (level > 0 || off),
            "level {level} is not one of the config's: 1 to {top} (bridge.costs); `bridge off` \
             is full service"
        );
        anyhow::ensure!(
            d <= std::time::Duration::from_secs(24 * 3600),
            "--for {} is longer than a day; set it again when it ends",
            humantime::format_duration(d)
        );
    }
    burst_agent::privilege::enter_state_dir(&cfg.agent.state_dir, "bridge")
        .map_err(anyhow::Error::msg)?;
    let dir = &cfg.agent.state_dir;
    let Some(d) = duration else {
        let had = b::clear_manual(dir).context("bridge auto")?;
        outln!(
            "{}; the policy decides the level at the agent's next tick",
            if had {
                "the level set by hand is gone"
            } else {
                "no level was set by hand"
            }
        );
        return Ok(ExitCode::SUCCESS);
    };
    let now = jiff::Timestamp::now();
    let until = now
        .checked_add(jiff::SignedDuration::try_from(d)?)
        .context("--for")?;
    let who = std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "an operator".into());
    let m = burst_agent::policy::ManualBridge {
        level,
        until,
        by: if off {
            format!("{who}, `burst-agent bridge off`")
        } else {
            format!("{who}, `burst-agent bridge set {level}`")
        },
    };
    let path = b::write_manual(dir, &m).context("bridge")?;
    outln!(
        "bridge held at level {level} until {} ({}); the agent applies it at its next tick, \
         `burst-agent status` shows it, `burst-agent bridge auto` hands it back",
        until.strftime("%Y-%m-%d %H:%M:%S UTC"),
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `status`: the agent's last snapshot, and whether it is alive.
fn show_status(config: Option<&Path>, json: bool) -> Result<ExitCode> {
    use burst_agent::daemon::status;
    let cfg = load_config_or_defaults(config)?;
    // As root: become the state directory's owner before reading anything in it (one
    // thread so far; see privilege.rs).
    burst_agent::privilege::enter_state_dir(&cfg.agent.state_dir, "status")
        .map_err(anyhow::Error::msg)?;
    let mut path = status::path_in(&cfg.agent.state_dir);
    if !path.exists() && cfg.agent.dry_run {
        // A dry run that could not write state_dir used its temporary fallback.
        let uid = rustix::process::getuid().as_raw();
        let alt = std::env::temp_dir().join(format!("burst-agent-{uid}"));
        if status::path_in(&alt).exists() {
            path = status::path_in(&alt);
        }
    }
    if !path.exists() {
        return status_before_first_run(&cfg, json);
    }
    let snap = status::Snapshot::read(&path).map_err(anyhow::Error::msg)?;
    let alive = status::process_alive(snap.pid) && snap.state != "stopped";
    if json {
        let mut v = serde_json::to_value(&snap)?;
        v["alive"] = serde_json::Value::Bool(alive);
        outln!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        out!("{}", status::render(&snap, alive, jiff::Timestamp::now()));
    }
    Ok(ExitCode::SUCCESS)
}

/// `status` where no agent has written status.json yet: what the state directory's records say
/// (a drill or a repair spends and records cap units before any `run`).
fn status_before_first_run(cfg: &Config, json: bool) -> Result<ExitCode> {
    let dir = &cfg.agent.state_dir;
    let now = jiff::Timestamp::now();
    let disk = burst_agent::fsutil::RealDisk;
    let ledger = burst_agent::actuator::state::load_ledger(&disk, dir, &cfg.cap, now)
        .map_err(anyhow::Error::msg)?;
    let cap = ledger.status(now);
    if json {
        let v = serde_json::json!({
            "alive": false,
            "state": "never run",
            "state_dir": dir,
            "cap": cap,
        });
        outln!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        outln!(
            "burst-agent: not running here: no status.json in {} (no agent has run a tick with \
             this state directory)",
            dir.display()
        );
        outln!("burst cap {cap} (the records in {})", dir.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// `repair`: the burst cap ledger rebuilt, with the agent stopped.
fn repair(config: Option<&Path>, used_today: Option<u32>, adopt: &[String]) -> Result<ExitCode> {
    let cfg = load_config_or_defaults(config)?;
    // As root: become the state directory's owner before it writes there.
    burst_agent::privilege::enter_state_dir(&cfg.agent.state_dir, "repair")
        .map_err(anyhow::Error::msg)?;
    logging::init(&cfg.log).map_err(anyhow::Error::msg)?;
    let lines = burst_agent::daemon::repair(cfg, used_today, adopt).context("repair")?;
    for l in lines {
        outln!("{l}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `alarms`: the plan printed, or with `apply` put in CloudWatch.
fn alarms(config: Option<&Path>, apply: bool, prune: bool) -> Result<ExitCode> {
    let cfg = load_config_or_defaults(config)?;
    if !apply {
        out!(
            "{}",
            burst_agent::alarms::table(&burst_agent::alarms::plan(&cfg))
        );
        if cfg.alarms.alarm_actions.is_empty() {
            eprintln!(
                "note: alarms.alarm_actions is empty: these alarms would change state but tell \
                 nobody (name an SNS topic's ARN there before --apply)"
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    logging::init(&cfg.log).map_err(anyhow::Error::msg)?;
    for line in burst_agent::daemon::apply_alarms(cfg, prune).context("alarms")? {
        outln!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `dashboard`: its body printed, or with `apply` put in CloudWatch.
fn dashboard(config: Option<&Path>, apply: bool, groups: Vec<String>) -> Result<ExitCode> {
    let cfg = load_config_or_defaults(config)?;
    let groups = if groups.is_empty() {
        vec![cfg.agent.group.clone()]
    } else {
        groups
    };
    if !apply {
        let body = burst_agent::dashboard::body(&cfg, &groups);
        outln!("{}", serde_json::to_string_pretty(&body)?);
        return Ok(ExitCode::SUCCESS);
    }
    logging::init(&cfg.log).map_err(anyhow::Error::msg)?;
    for line in burst_agent::daemon::apply_dashboard(cfg, groups).context("dashboard")? {
        outln!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `sample`: one sample of this host, or one every `every` (`count` of them at most).
fn sample(
    config: Option<&Path>,
    json: bool,
    every: Option<std::time::Duration>,
    count: Option<u64>,
) -> Result<ExitCode> {
    let cfg = load_config_or_defaults(config)?;
    logging::init(&cfg.log).map_err(anyhow::Error::msg)?;
    let mut sampler = Sampler::new(&cfg.sampling)?;
    let mut taken = 0u64;
    loop {
        let started = std::time::Instant::now();
        let sample = sampler.sample();
        match (json, every.is_some()) {
            (true, false) => outln!("{}", serde_json::to_string_pretty(&sample)?),
            (true, true) => outln!("{}", serde_json::to_string(&sample)?),
            (false, false) => out!("{}", report::sample_text(&sample)),
            // One line per sample, as `vmstat 1`: the heads again every 20 lines.
            (false, true) => {
                if taken % 20 == 0 {
                    outln!("{}", report::sample_header());
                }
                outln!("{}", report::sample_row(&sample));
            }
        }
        taken += 1;
        let Some(every) = every else { break };
        if count.is_some_and(|n| taken >= n) {
            break;
        }
        std::thread::sleep(every.saturating_sub(started.elapsed()));
    }
    Ok(ExitCode::SUCCESS)
}

fn simulate(cfg: &Config, a: &SimulateArgs) -> Result<()> {
    use burst_agent::sim::{self, report, trace::Trace};
    let mut bridged;
    let cfg = if a.bridge {
        bridged = cfg.clone();
        bridged.bridge.enabled = true;
        &bridged
    } else {
        cfg
    };
    anyhow::ensure!(
        a.reference != sim::Kind::Bridged || cfg.bridge.enabled,
        "--reference burst-agent+bridge needs --bridge (or bridge.enabled = true): without it no \
         run uses the bridge"
    );
    anyhow::ensure!(
        a.slo_utilization > 0.0 && a.slo_utilization <= 1.0,
        "--slo-utilization must be above 0 and at most 1 (got {})",
        a.slo_utilization
    );
    anyhow::ensure!(
        a.host_capacity > 0.0 && a.host_capacity.is_finite(),
        "--host-capacity must be above 0 (got {})",
        a.host_capacity
    );
    anyhow::ensure!(
        (0.0..=1.0).contains(&a.master_share),
        "--master-share must be between 0 and 1 (got {})",
        a.master_share
    );
    anyhow::ensure!(
        a.static_slaves <= 1000,
        "--static-slaves must be at most 1000 (got {}), as policy.max_slaves",
        a.static_slaves
    );
    let start: jiff::Timestamp = a
        .start
        .parse()
        .with_context(|| format!("--start {:?} is not RFC 3339 with an offset", a.start))?;
    let size = std::fs::metadata(&a.trace)
        .with_context(|| format!("cannot read trace {}", a.trace.display()))?
        .len();
    anyhow::ensure!(
        size <= sim::trace::MAX_BYTES,
        "trace {} is {} MiB; simulate reads at most {} MiB (keep one row per minute, or split it)",
        a.trace.display(),
        size >> 20,
        sim::trace::MAX_BYTES >> 20
    );
    let text = std::fs::read_to_string(&a.trace)
        .with_context(|| format!("cannot read trace {}", a.trace.display()))?;
    let trace = Trace::parse(&text, &a.trace.display().to_string(), start)?;
    let mut model = sim::Model::from_config(cfg);
    model.boot_delay = a.boot_delay.as_secs() as i64;
    model.sync_time = a.sync_time.as_secs() as i64;
    model.register_delay = a.register_delay.as_secs() as i64;
    model.metrics_delay = a.metrics_delay.as_secs() as i64;
    model.slo_utilization = a.slo_utilization;
    model.host_capacity = a.host_capacity;
    model.master_only_share = a.master_share;
    model.static_slaves = a.static_slaves;
    // About 2,000 points per line in the plot.
    let step = (trace.duration_secs() / 2000).max(1);
    // Long runs say how far they are (on stderr, so --json stays clean).
    let long = trace.duration_secs() > 2 * 86400;
    let outcomes = sim::run_all_with(
        cfg,
        &trace,
        &model,
        a.reference,
        step,
        &mut |done, of, label| {
            if long {
                eprintln!("simulate: {done}/{of} runs done ({label})");
            }
        },
    );
    let name = a.trace.file_name().map_or_else(
        || a.trace.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let r = report::report(&name, &trace, &model, cfg, &outcomes, a.reference);
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        out!("{}", report::table(&r));
    }
    if let Some(path) = &a.plot {
        let hours = |d: std::time::Duration| d.as_secs_f64() / 3600.0;
        let window = sim::plot::Window {
            from: a.from.map(hours),
            to: a.to.map(hours),
            local: jiff::tz::TimeZone::get(&cfg.cap.time_zone)
                .ok()
                .map(|tz| (trace.start, tz)),
        };
        sim::plot::draw(
            path,
            &format!("{name}: capacity with the daily burst cap"),
            &outcomes,
            cfg.cap.daily_limit,
            window,
        )
        .map_err(anyhow::Error::msg)?;
        if !a.json {
            outln!("plot written to {}", path.display());
        }
    }
    Ok(())
}

fn parse_every(s: &str) -> Result<std::time::Duration, String> {
    let d = config::parse_duration(s)?.get();
    if d.is_zero() {
        return Err("must be above 0".into());
    }
    Ok(d)
}

fn check_config(path: &Path) -> ExitCode {
    match config::load_file(path) {
        Ok(cfg) => {
            outln!(
                "{}: ok (group {:?}, role {}, cap {}/day in {}, {} slaves at most{})",
                path.display(),
                cfg.agent.group,
                cfg.agent.role.name(),
                cfg.cap.daily_limit,
                cfg.cap.time_zone,
                cfg.policy.max_slaves,
                if cfg.agent.dry_run { ", dry-run" } else { "" }
            );
            let dir = &cfg.agent.state_dir;
            if let Some(why) = burst_agent::daemon::not_a_directory(dir) {
                eprintln!("{}: error: {why}", path.display());
                return ExitCode::FAILURE;
            }
            if !dir.exists() {
                outln!(
                    "{}: note: agent.state_dir {} does not exist yet: `run` creates it",
                    path.display(),
                    dir.display()
                );
            }
            for w in burst_agent::schedule::warnings(&cfg, jiff::Timestamp::now()) {
                outln!("{}: warning: {w}", path.display());
            }
            for w in cfg.deprecations() {
                outln!("{}: warning: {w}", path.display());
            }
            for w in cfg.reporter_warnings() {
                outln!("{}: warning: {w}", path.display());
            }
            for w in cfg.bridge_warnings() {
                outln!("{}: warning: {w}", path.display());
            }
            if cfg.agent.role == burst_agent::config::Role::Master {
                for c in cfg.hooks.commands() {
                    outln!("{}: note: {c}", path.display());
                }
                for w in cfg.hooks.warnings() {
                    let kind = if w.contains(" syncs from ") {
                        "note"
                    } else {
                        "warning"
                    };
                    outln!("{}: {kind}: {w}", path.display());
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// An explicit `--config` must exist; the default path may be absent (then defaults are used,
/// and said so), so `burst-agent sample` works right after install.
fn load_config_or_defaults(explicit: Option<&Path>) -> Result<Config> {
    let path = explicit.unwrap_or(Path::new(DEFAULT_CONFIG_PATH));
    match config::load_file(path) {
        Ok(cfg) => Ok(cfg),
        Err(ConfigError::Read { source, .. })
            if explicit.is_none() && source.kind() == std::io::ErrorKind::NotFound =>
        {
            eprintln!(
                "burst-agent: no config at {DEFAULT_CONFIG_PATH}; using the defaults (see agent.toml.example)"
            );
            Ok(Config::default())
        }
        Err(e) => Err(e.into()),
    }
}

/// [`load_config_or_defaults`] for a command that changes no fleet (`fleet`, `table create`):
/// what only an acting master needs (an AMI, an ELB, the table) is not required.
fn load_config_read_only(explicit: Option<&Path>) -> Result<Config> {
    let path = explicit.unwrap_or(Path::new(DEFAULT_CONFIG_PATH));
    match config::parse_read_only(path, std::fs::read_to_string(path)) {
        Err(ConfigError::Read { source, .. })
            if explicit.is_none() && source.kind() == std::io::ErrorKind::NotFound =>
        {
            eprintln!(
                "burst-agent: no config at {DEFAULT_CONFIG_PATH}; using the defaults (the AWS \
                 region and credentials of the environment)"
            );
            Ok(Config::default())
        }
        r => Ok(r?),
    }
}

fn faultsim(seeds: u64, first: u64, seed: Option<u64>, verbose: bool) -> ExitCode {
    if verbose {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("burst_agent=info"))
            .with_target(false)
            .without_time()
            .init();
    }
    let (first, count) = seed.map_or((first, seeds), |s| (s, 1));
    let started = std::time::Instant::now();
    let s = burst_agent::faultsim::run(first, count);
    outln!(
        "faultsim: {} seeds ({}..{}), {} ticks, {} cloud calls, {} faults injected, {} crashes, \
         {} instances launched, {} hooks ({} failed or hung), {} lease takeovers by a copy, \
         {} violations, {:.1}s",
        s.seeds,
        first,
        first.saturating_add(count),
        s.ticks,
        s.calls,
        s.faults,
        s.crashes,
        s.launched,
        s.hooks,
        s.hook_failures,
        s.takeovers,
        s.failed.len(),
        started.elapsed().as_secs_f64()
    );
    for r in s.failed.iter().take(20) {
        if let Some((tick, v)) = &r.violation {
            outln!("seed {} tick {tick}: {v}", r.seed);
            outln!(
                "  replay: {}",
                burst_agent::faultsim::replay_command(r.seed)
            );
        }
    }
    if s.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
