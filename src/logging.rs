//! Log set-up: text or JSON lines, level from config unless `RUST_LOG` is set.

use crate::config::{LogConfig, LogFormat};
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. Logs go to stderr (journald picks them up under systemd);
/// timestamps are left out of text logs under journald, which stamps every line itself.
pub fn init(cfg: &LogConfig) -> Result<(), String> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => EnvFilter::try_new(&v)
            .map_err(|e| format!("RUST_LOG={v:?} is not a valid filter: {e}"))?,
        // Off EC2 the SDK's region chain warns at every start that instance metadata is
        // unreachable; the agent says what it does about a missing region itself.
        _ => EnvFilter::try_new(&cfg.level)
            .map_err(|e| format!("log.level {:?} is not a valid filter: {e}", cfg.level))?
            .add_directive(
                "aws_config::imds::region=error"
                    .parse()
                    .map_err(|e| format!("internal log filter: {e}"))?,
            ),
    };
    let under_journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match (cfg.format, under_journald) {
        (LogFormat::Json, _) => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        (LogFormat::Text, true) => builder.without_time().with_ansi(false).try_init(),
        (LogFormat::Text, false) => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
    };
    result.map_err(|e| format!("cannot install the logger: {e}"))
}
