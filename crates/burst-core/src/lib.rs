//! burst-agent's decisions, pure: every function here takes what was observed and the time as
//! arguments and returns what to do. No async runtime, no AWS SDK, no HTTP client, no files and
//! no clock: this crate's Cargo.toml is the wall, and the agent carries the results out.
//!
//! - [`config`]: the TOML schema, its defaults (written once) and every check with its key path;
//! - [`policy`]: `decide(config, observation, ledger, history, now) -> Decision`;
//! - [`cap`]: the daily burst-cap ledger by local calendar day;
//! - [`schedule`]: planned bursts; [`clock`]: the agent's time that cannot jump;
//! - [`events`]: event kinds and the notifier's dedup and rate limit;
//! - [`lease`]: one agent acts for a site at a time: renewal, lapse, standby and takeover;
//! - [`metrics`]: datums, the bounded buffer, the fleet read-back's assembly;
//! - [`lifecycle`]: a slave's phases, their deadlines and every change of phase, returned as
//!   actions; whose an instance is; a launch call by call (`launch`: where, how many, what a
//!   failure means, which back-off); the launch journal's intents, what an open one means and
//!   the ledger rebuilt from them (`intents`); the brake on a sync that keeps failing (`brake`);
//! - [`usage`]: what a site used of its guarantee (runs, shortfalls, the month's rows);
//! - [`alarms`]: the alarm plan; [`dashboard`]: the dashboard's body; [`sampler`]: the
//!   `/proc` and mod_status parsers.

pub use burst_model as model;

// What the core offers: its entry points by name. The modules stay public for the rest of
// their vocabulary (the agent names `policy::Reason`, `lifecycle::brake`, ...); what only the
// core uses is `pub(crate)` or private.
pub use cap::{CapLedger, CapStatus};
pub use clock::AgentClock;
pub use config::Config;
pub use events::Notifier;
pub use lease::Lease;
pub use lifecycle::{adopt, called, reconcile, Action, Observed, PhaseRow, Plan, PHASES};
pub use policy::{decide, Decision, Explanation, FleetObservation, History, Reason};

pub mod alarms;
pub mod cap;
pub mod clock;
pub mod config;
pub mod dashboard;
pub mod events;
pub mod lease;
pub mod lifecycle;
pub mod metrics;
pub mod policy;
pub mod sampler;
pub mod schedule;
pub mod usage;
