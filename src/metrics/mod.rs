//! The custom metrics loop. What the datums, names, buffer and assembly are lives in burst-core
//! (pure); the agent adds the edge that sends and reads them ([`cloudwatch`]).

pub use burst_core::metrics::*;

pub use burst_edge::cloudwatch;
