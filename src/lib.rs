//! burst-agent: keeps a web site alive through traffic bursts.
//!
//! Data flow: [`sampler`] → metrics (CloudWatch) → policy → actuator. See ARCHITECTURE.md.
//! The decisions are pure and live in burst-core (its Cargo.toml is the wall); this crate
//! observes and acts: AWS, hooks, files, the daemon, the CLI.

// The pure core under the paths the agent has always used.
pub use burst_core::{cap, clock, events, lease, model, policy, schedule, usage};
// The edge (AWS, CloudWatch, hooks, the sampler, files) under the same paths.
pub use burst_edge::{aws, fsutil, hooks, privilege, sampler, store, table, text};

pub mod actuator;
pub mod config;
pub mod daemon;
pub mod faultsim;
pub mod logging;
pub mod metrics;
pub mod ops;
pub mod report;
pub mod sim;
// The operator's commands under the paths they have always had.
pub use ops::{alarms, dashboard, preflight};

// What the agent offers its binary, its tests and its benchmarks: the daemon, the executor,
// and simulate's policies by name. Submodules nothing outside uses are `pub(crate)`.
pub use actuator::{Actuator, Report};
pub use daemon::{run, RunOptions};
pub use sim::Kind;
