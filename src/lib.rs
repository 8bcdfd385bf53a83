//! burst-agent: keeps a web site alive through traffic bursts.
//!
//! Data flow: [`sampler`] → metrics (CloudWatch) → policy → actuator. See ARCHITECTURE.md.

pub mod cap;
pub mod config;
pub mod fsutil;
pub mod logging;
pub mod policy;
pub mod report;
pub mod sampler;
pub mod sim;
