//! The `burst-agent` command line: the binary's edge, where errors become `anyhow` with context.

use anyhow::Result;
use burst_agent::config::{self, Config, ConfigError, DEFAULT_CONFIG_PATH};
use burst_agent::{logging, report, sampler::Sampler};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

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
enum Command {
    /// Parse and validate a config file; print every problem; exit 1 if there is any.
    CheckConfig {
        /// The file to check [default: --config, else /etc/burst-agent/agent.toml]
        path: Option<PathBuf>,
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
    match cli.command {
        Command::CheckConfig { path } => {
            let path = path
                .or(cli.config)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH));
            Ok(check_config(&path))
        }
        Command::Sample { json, every, count } => {
            let cfg = load_config_or_defaults(cli.config.as_deref())?;
            logging::init(&cfg.log).map_err(anyhow::Error::msg)?;
            let mut sampler = Sampler::new(&cfg.sampling)?;
            let mut taken = 0u64;
            loop {
                let started = std::time::Instant::now();
                let sample = sampler.sample();
                match (json, every.is_some()) {
                    (true, false) => println!("{}", serde_json::to_string_pretty(&sample)?),
                    (true, true) => println!("{}", serde_json::to_string(&sample)?),
                    (false, _) => print!("{}", report::sample_text(&sample)),
                }
                taken += 1;
                let Some(every) = every else { break };
                if count.is_some_and(|n| taken >= n) {
                    break;
                }
                if !json {
                    println!();
                }
                std::thread::sleep(every.saturating_sub(started.elapsed()));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
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
            println!(
                "{}: ok (group {:?}, role {}, cap {}/day in {}, {} slaves at most{})",
                path.display(),
                cfg.agent.group,
                cfg.agent.role.name(),
                cfg.cap.daily_limit,
                cfg.cap.time_zone,
                cfg.policy.max_slaves,
                if cfg.agent.dry_run { ", dry-run" } else { "" }
            );
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
