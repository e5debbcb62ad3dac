//! The router's decisions, as pure code: no Kafka, no clock, no randomness.
//!
//! Every input (a help event, a command, the passing of time) goes in with `now` and comes
//! out as incident events. The same inputs in the same order give the same outputs, so a
//! replay after a crash decides the same way.
//!
//! - [`policy`]: the tunable rules (deadlines per priority, attempts, thresholds).
//! - [`roster`]: who is on duty where, and the order in which they are offered work.
//! - [`validate`]: what makes an inbound record acceptable.
//! - [`desk`]: the incident state machine: open, dedup, assign, acknowledge, reassign,
//!   escalate, close.
//! - [`maintenance`]: maintenance incidents for devices the gateway reports unhealthy.

pub mod desk;
pub mod maintenance;
pub mod policy;
pub mod roster;
pub mod validate;

pub use desk::{Desk, Output};
pub use policy::Policy;
pub use roster::Roster;
