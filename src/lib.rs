//! burst-agent: keeps a web site alive through traffic bursts.
//!
//! Data flow: [`sampler`] → metrics (CloudWatch) → policy → actuator. See ARCHITECTURE.md.

pub mod config;
pub mod logging;
pub mod report;
pub mod sampler;
