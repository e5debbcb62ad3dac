//! Keeps the whole roster (all partitions of the compacted roster topic) in memory. Every
//! router instance holds all of it: responders cover grids across partitions.

use crate::domain::{Roster, validate};
use crate::telemetry;
use helpgrid_common::kafka::KafkaArgs;
use helpgrid_common::reader;
use rdkafka::error::KafkaError;
use std::sync::{Arc, RwLock};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

/// Starts following the roster; the returned receiver fires once the table has caught up
/// with the topic as it was at start-up.
pub async fn start(
    kafka: &KafkaArgs,
    topic: &str,
    roster: Arc<RwLock<Roster>>,
    shutdown: CancellationToken,
) -> Result<oneshot::Receiver<()>, KafkaError> {
    reader::follow_table(kafka, "helpgrid-router-roster", topic, shutdown, move |record| {
        let key = record.key_text();
        match validate::decode_roster_record(record.payload.as_deref()) {
            Ok(update) => {
                let Ok(mut table) = roster.write() else {
                    return false;
                };
                match update {
                    Some(responder) => table.upsert(responder),
                    None => table.remove(&key),
                }
                metrics::gauge!(telemetry::ROSTER_RESPONDERS).set(table.len() as f64);
            }
            Err(invalid) => {
                metrics::counter!(telemetry::ROSTER_INVALID).increment(1);
                tracing::warn!(%invalid, key = %key, partition = record.partition, offset = record.offset, "ignoring unusable roster record");
            }
        }
        true
    })
    .await
}
