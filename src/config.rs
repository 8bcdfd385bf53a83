//! The one TOML file operators tune. Its schema, defaults and every check live in burst-core
//! (pure); the agent adds reading the file: [`load_file`] is the one place it is read.

pub use burst_core::config::*;

use std::path::Path;

/// Reads, parses and validates a config file.
pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
    parse_read(path, std::fs::read_to_string(path))
}
