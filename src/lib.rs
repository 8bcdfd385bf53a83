//! burst-agent: keeps a web site alive through traffic bursts.
//!
//! Data flow: [`sampler`] → metrics (CloudWatch) → policy → actuator. See ARCHITECTURE.md.
//! The decisions are pure and live in burst-core (its Cargo.toml is the wall); this crate
//! observes and acts: AWS, hooks, files, the daemon, the CLI.

// The pure core under the paths the agent has always used.
pub use burst_core::{cap, clock, events, model, policy, schedule};

pub mod actuator;
pub mod alarms;
pub mod aws;
pub mod config;
pub mod daemon;
pub mod dashboard;
pub mod faultsim;
pub mod fsutil;
pub mod hooks;
pub mod logging;
pub mod metrics;
pub mod preflight;
pub mod privilege;
pub mod report;
pub mod sampler;
pub mod sim;
pub mod text;
