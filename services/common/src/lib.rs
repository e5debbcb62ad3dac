//! Plumbing shared by the router and the status service.
//!
//! - [`kafka`]: one builder for every Kafka client (typed settings, then librdkafka pass-through).
//! - [`reader`]: follow a whole topic from the start (tables and logs).
//! - [`table`]: read a compacted table once, keeping each key's last record (restores).
//! - [`checkpoint`]: a local copy of one table partition as of a changelog position.
//! - [`partition`]: which partition a grid's records belong to (Kafka's murmur2).
//! - [`topics`]: the topic names and their idempotent creation at start-up.
//! - [`telemetry`]: tracing and the Prometheus exporter.
//! - [`health`]: `/metrics`, `/livez` and `/readyz` on one port, and the readiness behind them.
//! - [`time`]: conversions between wall-clock milliseconds and protobuf timestamps.
//! - [`envelope`]: the envelope every Kafka record carries.
//! - [`shutdown`]: SIGINT/SIGTERM as a future.
//! - [`cli`]: the checks every binary's command line passes (`--version`, help on every flag).

pub mod checkpoint;
pub mod cli;
pub mod envelope;
pub mod health;
pub mod kafka;
pub mod partition;
pub mod reader;
pub mod shutdown;
pub mod table;
pub mod telemetry;
pub mod time;
pub mod topics;
