//! burst-agent's edge: what talks to the world outside the process and decides nothing.
//!
//! - [`aws`]: the SDK clients, one rate limit, timeouts and the classification of failures;
//! - [`cloud`]: the `Cloud` trait the executor launches, lists, registers and ends slaves
//!   through, and `AwsCloud`, its EC2 and classic-ELB implementation (SDK types → model types);
//! - [`runner`]: the `HookRunner` trait and `ProcessHooks`, hooks as processes on a tokio `JoinSet`;
//! - [`cloudwatch`]: sending the custom metrics and reading the fleet's and AWS's own back;
//! - [`hooks`]: the hook process runner (process groups, timeouts, retries, output);
//! - [`sampler`]: /proc, sysinfo, statvfs, mod_status over HTTP, and the liveness probe;
//! - [`fsutil`]: crash-safe writes to the state directory behind the `Disk` trait;
//! - [`store`]: one versioned JSON file (state, events, status): version, checks, atomic write;
//! - [`table`]: the site's guarantee in the shared DynamoDB table: the day's units, launch
//!   records and the lease; the desk's records (`table::usage`);
//! - [`fenced`]: every fleet-changing `Cloud` call refused outside the lease, cut at its end;
//! - [`stall`]: calls a hung mount can stall, off the thread and bounded;
//! - [`privilege`]: a root `status` or `repair` becoming the state directory's owner;
//! - [`text`]: what a slave or a hook wrote, made safe to print.
//!
//! The pure parts (config, parsers, metrics assembly) are burst-core's; the executor and the
//! daemon that use these are the agent's.

// The core's modules under the paths these files have always used.
pub(crate) use burst_core::{config, model, policy};

// What the edge offers: the traits the executor acts through and their real implementations,
// by name. The modules stay public for the rest of their vocabulary.
pub use cloud::{AwsCloud, Cloud};
pub use fenced::Fenced;
pub use fsutil::{Disk, RealDisk};
pub use runner::{HookRunner, ProcessHooks};
pub use sampler::Sampler;
pub use table::{LedgerTable, Table};

pub mod aws;
pub mod cloud;
pub mod cloudwatch;
pub mod fenced;
pub mod fsutil;
pub mod hooks;
pub mod privilege;
pub mod runner;
pub mod sampler;
pub mod stall;
pub mod store;
pub mod table;
pub mod text;
