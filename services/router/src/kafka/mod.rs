//! The router's Kafka adapters, thin on purpose: they decode, call the domain, and write
//! what it decided, exactly once.
//!
//! - [`pipeline`]: the consume → decide → produce loop, one transaction per batch.
//! - [`rebalance`]: partition ownership; rebuilds the desk from incident-state on assignment.
//! - [`checkpoint`]: local checkpoints of the owned incident-state partitions (faster restarts).
//! - [`dead_letter`]: records the router cannot use, with the reason and origin in headers.
//! - [`roster_feed`]: the roster topic as an in-memory table.
//! - [`stuck_call`]: a bound on librdkafka transaction calls that ignore their timeout.

pub mod checkpoint;
pub mod dead_letter;
pub mod pipeline;
pub mod rebalance;
pub mod roster_feed;
pub mod stuck_call;
