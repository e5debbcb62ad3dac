//! Kafka side of the sink: incident-events (read_committed) → batches → [`store`].
//!
//! Exactly once, in six lines:
//! 1. The truth about progress is `kafka_offsets` in PostgreSQL, never Kafka's group offsets.
//! 2. At start (and after any failed batch) the consumer is assigned every partition at the
//!    offset stored there (manual assignment: no rebalance can move a partition mid-batch).
//! 3. A batch's rows and its next offsets are written in one PostgreSQL transaction.
//! 4. Inside it, records below the stored offset are dropped (a second instance, a replay).
//! 5. After the commit the offsets are also committed to the `<prefix>archive` group, only
//!    so that standard tools show the archive's lag.
//! 6. A failed batch is rolled back and re-read from the stored offsets: nothing lost, nothing
//!    doubled, PostgreSQL being down only makes the archive lag.
//!
//! While one batch is being written, the next is read from Kafka (the two overlap; the write
//! is what takes time). If the write fails, what was read meanwhile is dropped with it.

use crate::config::ArchiveConfig;
use crate::rows::{Refused, SourceRecord};
use crate::store::{self, StoreError};
use crate::telemetry;
use helpgrid_common::time::now_millis;
use helpgrid_common::topics::Topics;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

pub const HEADER_REASON: &str = "helpgrid.dlq.reason";
pub const HEADER_KIND: &str = "helpgrid.dlq.kind";
pub const HEADER_TOPIC: &str = "helpgrid.dlq.origin.topic";
pub const HEADER_PARTITION: &str = "helpgrid.dlq.origin.partition";
pub const HEADER_OFFSET: &str = "helpgrid.dlq.origin.offset";

const CLIENT_ID: &str = "helpgrid-archive";
/// Pause after a failed batch or connection attempt before trying again.
const RETRY_BACKOFF: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("Kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("topic {0} has no partitions")]
    NoPartitions(String),
}

/// Which share of the partitions a sink writer archives: those whose number modulo `of` is
/// `index`. Each partition has exactly one writer, so exactly-once holds per partition as
/// with one writer (its rows and offsets in one transaction).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Writer {
    pub index: usize,
    pub of: usize,
}

impl Writer {
    pub fn takes(&self, partition: i32) -> bool {
        partition.rem_euclid(self.of.max(1) as i32) as usize == self.index
    }
}

/// Archives this writer's partitions of incident-events until `stop` is cancelled. `ready`
/// is true while batches commit (and PostgreSQL answers), false while the archive is failing
/// to write. Without a `client` it connects first.
pub async fn run_sink(
    config: ArchiveConfig,
    writer: Writer,
    client: Option<Client>,
    ready: watch::Sender<bool>,
    stop: CancellationToken,
) -> Result<(), SinkError> {
    let topics = Topics::with_prefix(&config.kafka.topic_prefix);
    let topic = topics.incident_events.clone();
    let mut consumer_config = config
        .kafka
        .group_consumer_config(CLIENT_ID, &config.group_id());
    consumer_config.set("fetch.wait.max.ms", "50");
    let consumer: StreamConsumer = consumer_config.create()?;
    let producer: FutureProducer = config.kafka.producer_config(CLIENT_ID).create()?;
    let mut partitions = partitions_of(&consumer, &topic)?;
    partitions.retain(|p| writer.takes(*p));
    if partitions.is_empty() {
        // More writers than partitions: this one has nothing to do.
        ready.send_replace(true);
        stop.cancelled().await;
        return Ok(());
    }
    let mut client = match client {
        Some(client) => {
            if let Err(error) = client.batch_execute(store::SINK_SESSION).await {
                // The loop below reconnects (and applies the settings) when it is gone.
                tracing::warn!(%error, "cannot apply the sink's session settings");
            }
            Some(client)
        }
        None => None,
    };
    let mut assigned = false;
    // Read while the previous batch was being written; empty after a failure.
    let mut batch: Vec<SourceRecord> = Vec::new();
    loop {
        if stop.is_cancelled() {
            return Ok(());
        }
        if client.as_ref().is_none_or(Client::is_closed) {
            ready.send_replace(false);
            // What was read ahead is dropped and re-read from the stored offsets.
            assigned = false;
            batch.clear();
            match store::connect_sink(&config.postgres_url).await {
                Ok(c) => client = Some(c),
                Err(error) => {
                    tracing::warn!(%error, "PostgreSQL unreachable; the archive lags until it is back");
                    pause(&stop).await;
                    continue;
                }
            }
        }
        let Some(db) = client.as_mut() else {
            continue;
        };
        if !assigned {
            match store::stored_offsets(db, &topic).await {
                Ok(offsets) => {
                    assign(&consumer, &topic, &partitions, &offsets)?;
                    tracing::info!(topic = %topic, writer = writer.index, ?offsets, "resuming from the offsets stored in PostgreSQL");
                    assigned = true;
                    ready.send_replace(true);
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot read the stored offsets; retrying");
                    ready.send_replace(false);
                    pause(&stop).await;
                    continue;
                }
            }
        }
        if batch.len() < config.batch_max {
            let more = tokio::select! {
                () = stop.cancelled() => return Ok(()),
                // Records read during the last write go at once, with whatever else is
                // already there; an empty batch waits for its first and lingers for more.
                more = next_batch(
                    &consumer,
                    config.batch_max - batch.len(),
                    if batch.is_empty() { config.batch_linger } else { Duration::ZERO },
                    batch.is_empty(),
                ) => more,
            };
            batch.extend(more);
        }
        if batch.is_empty() {
            continue;
        }
        let started = Instant::now();
        let write = store::archive_batch(db, &topic, &batch, |refused| {
            dead_letter(&producer, &topics.dead_letters, &topic, refused)
        });
        let (outcome, read_meanwhile) = read_while(write, &consumer, config.batch_max).await;
        batch = read_meanwhile;
        match outcome {
            Ok(archived) => {
                let lag = archived
                    .newest
                    .map(|t| Duration::from_millis(now_millis().saturating_sub(t).max(0) as u64));
                telemetry::batch_committed(archived.events, started.elapsed(), lag);
                tracing::debug!(
                    events = archived.events,
                    refused = archived.refused,
                    skipped = archived.skipped,
                    "batch archived"
                );
                commit_for_monitoring(&consumer, &topic, &archived.positions);
                ready.send_replace(true);
            }
            Err(error) => {
                telemetry::store_failed();
                tracing::warn!(%error, "batch not archived; re-reading from the stored offsets");
                ready.send_replace(false);
                assigned = false;
                batch.clear();
                pause(&stop).await;
            }
        }
    }
}

async fn pause(stop: &CancellationToken) {
    tokio::select! {
        () = stop.cancelled() => {}
        () = tokio::time::sleep(RETRY_BACKOFF) => {}
    }
}

fn partitions_of(consumer: &StreamConsumer, topic: &str) -> Result<Vec<i32>, SinkError> {
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(30))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .first()
        .filter(|t| t.error().is_none())
        .map(|t| t.partitions().iter().map(|p| p.id()).collect())
        .unwrap_or_default();
    if partitions.is_empty() {
        return Err(SinkError::NoPartitions(topic.to_owned()));
    }
    Ok(partitions)
}

/// Assigns every partition at its stored offset (the beginning where none is stored).
/// Re-assigning drops whatever the consumer had fetched beyond those offsets.
fn assign(
    consumer: &StreamConsumer,
    topic: &str,
    partitions: &[i32],
    offsets: &HashMap<i32, i64>,
) -> Result<(), KafkaError> {
    let mut list = TopicPartitionList::new();
    for p in partitions {
        let offset = offsets
            .get(p)
            .map_or(Offset::Beginning, |o| Offset::Offset(*o));
        list.add_partition_offset(topic, *p, offset)?;
    }
    consumer.assign(&list)
}

fn source_record(message: &rdkafka::message::BorrowedMessage<'_>) -> SourceRecord {
    SourceRecord {
        partition: message.partition(),
        offset: message.offset(),
        key: message.key().map(<[u8]>::to_vec),
        payload: message.payload().map(<[u8]>::to_vec),
    }
}

/// Runs `write` to its end while reading up to `max` records for the next batch.
async fn read_while<T>(
    write: impl Future<Output = T>,
    consumer: &StreamConsumer,
    max: usize,
) -> (T, Vec<SourceRecord>) {
    let mut read = Vec::new();
    let mut write = std::pin::pin!(write);
    loop {
        tokio::select! {
            biased;
            outcome = &mut write => return (outcome, read),
            received = consumer.recv(), if read.len() < max => match received {
                Ok(message) => read.push(source_record(&message)),
                // Errors are for the next batch's read to see and report.
                Err(_) => {
                    let outcome = write.await;
                    return (outcome, read);
                }
            },
        }
    }
}

/// Up to `max` records: waits for the first (unless `wait_for_first` is false), then for
/// more as long as they keep coming within `linger`.
async fn next_batch(
    consumer: &StreamConsumer,
    max: usize,
    linger: Duration,
    wait_for_first: bool,
) -> Vec<SourceRecord> {
    let mut batch = Vec::new();
    let mut deadline: Option<tokio::time::Instant> =
        (!wait_for_first).then(|| tokio::time::Instant::now() + linger);
    while batch.len() < max {
        let received = match deadline {
            None => Ok(consumer.recv().await),
            Some(at) => tokio::time::timeout_at(at, consumer.recv()).await,
        };
        match received {
            Ok(Ok(message)) => {
                batch.push(source_record(&message));
                deadline.get_or_insert_with(|| tokio::time::Instant::now() + linger);
            }
            Ok(Err(error)) => {
                tracing::warn!(%error, "reading incident-events failed; librdkafka retries");
                if !batch.is_empty() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(_) => break,
        }
    }
    batch
}

/// Sends refused records to the dead-letter topic and waits for Kafka's acknowledgement,
/// before the batch commits (so a refused record is never lost; after a crash between the
/// two it may be dead-lettered twice, which the headers' origin makes recognisable).
async fn dead_letter(
    producer: &FutureProducer,
    dead_letters: &str,
    origin_topic: &str,
    refused: Vec<Refused>,
) -> Result<(), StoreError> {
    for r in refused {
        let reason = r.why.to_string();
        let partition = r.record.partition.to_string();
        let offset = r.record.offset.to_string();
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: HEADER_REASON,
                value: Some(reason.as_str()),
            })
            .insert(Header {
                key: HEADER_KIND,
                value: Some(r.why.kind()),
            })
            .insert(Header {
                key: HEADER_TOPIC,
                value: Some(origin_topic),
            })
            .insert(Header {
                key: HEADER_PARTITION,
                value: Some(partition.as_str()),
            })
            .insert(Header {
                key: HEADER_OFFSET,
                value: Some(offset.as_str()),
            });
        let mut record: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(dead_letters).headers(headers);
        if let Some(key) = r.record.key.as_deref() {
            record = record.key(key);
        }
        if let Some(payload) = r.record.payload.as_deref() {
            record = record.payload(payload);
        }
        producer
            .send(record, Duration::from_secs(10))
            .await
            .map_err(|(e, _)| StoreError::DeadLetter(e.to_string()))?;
        telemetry::dead_lettered(r.why.kind());
        tracing::warn!(reason = %reason, partition = %partition, offset = %offset, "record dead-lettered");
    }
    Ok(())
}

/// Mirrors the committed position into the consumer group, for lag dashboards only.
fn commit_for_monitoring(consumer: &StreamConsumer, topic: &str, positions: &HashMap<i32, i64>) {
    let mut list = TopicPartitionList::new();
    for (p, next) in positions {
        if list
            .add_partition_offset(topic, *p, Offset::Offset(*next))
            .is_err()
        {
            return;
        }
    }
    if let Err(error) = consumer.commit(&list, CommitMode::Async) {
        tracing::debug!(%error, "cannot mirror the archive's position to Kafka");
    }
}

#[cfg(test)]
mod tests {
    use super::Writer;

    #[test]
    fn every_partition_has_exactly_one_writer() {
        for of in 1..=4 {
            for partition in 0..12 {
                let takers = (0..of)
                    .filter(|index| Writer { index: *index, of }.takes(partition))
                    .count();
                assert_eq!(takers, 1, "partition {partition} with {of} writers");
            }
        }
        assert!(Writer { index: 1, of: 2 }.takes(3));
        assert!(!Writer { index: 1, of: 2 }.takes(4));
    }
}
