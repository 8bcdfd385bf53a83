//! burst-agent: keeps a web site alive through traffic bursts.
//!
//! Data flow: [`sampler`] → metrics (CloudWatch) → policy → actuator. See ARCHITECTURE.md.

pub mod actuator;
pub mod alarms;
pub mod aws;
pub mod cap;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod dashboard;
pub mod events;
pub mod faultsim;
pub mod fsutil;
pub mod hooks;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod policy;
pub mod preflight;
pub mod privilege;
pub mod report;
pub mod sampler;
pub mod schedule;
pub mod sim;
pub mod text;
