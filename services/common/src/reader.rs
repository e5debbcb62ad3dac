//! Follow a whole topic from its beginning: every partition, committed records only, no
//! consumer group. Used for tables (the roster) and logs (incident events for read models).
//!
//! The feed says `CaughtUp` once every partition has reached its end once, so a service
//! can wait for its table before it makes decisions with it.

use crate::kafka::KafkaArgs;
use rdkafka::consumer::{Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::HashSet;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// One record of the followed topic.
#[derive(Debug, Clone)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Record {
    /// The key as text (invalid UTF-8 replaced); empty when the record has none.
    pub fn key_text(&self) -> std::borrow::Cow<'_, str> {
        self.key
            .as_deref()
            .map(String::from_utf8_lossy)
            .unwrap_or_default()
    }
}

#[derive(Debug, Clone)]
pub enum Feed {
    Record(Record),
    /// Every partition has been read to its end once; sent once.
    CaughtUp,
}

/// Where a follower starts in each partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// The first record still in the log.
    Beginning,
    /// The given offset per partition (index = partition); partitions not named start at the
    /// beginning.
    Offsets(Vec<i64>),
}

/// Starts following `topic` from its beginning; the feed ends when `shutdown` is cancelled or
/// the receiver is dropped. Transient Kafka errors are logged and retried by librdkafka.
pub async fn follow(
    args: &KafkaArgs,
    client_id: &str,
    topic: &str,
    shutdown: CancellationToken,
) -> Result<mpsc::Receiver<Feed>, KafkaError> {
    follow_from(args, client_id, topic, Start::Beginning, shutdown).await
}

/// Follows `topic` from its beginning into a table kept by `apply`, on a task of its own,
/// until `shutdown` or until `apply` returns false. The receiver fires once the table holds
/// what the topic held when following began.
pub async fn follow_table(
    args: &KafkaArgs,
    client_id: &str,
    topic: &str,
    shutdown: CancellationToken,
    mut apply: impl FnMut(&Record) -> bool + Send + 'static,
) -> Result<tokio::sync::oneshot::Receiver<()>, KafkaError> {
    let mut feed = follow(args, client_id, topic, shutdown).await?;
    let (caught_up_tx, caught_up) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut caught_up_tx = Some(caught_up_tx);
        while let Some(item) = feed.recv().await {
            match item {
                Feed::CaughtUp => {
                    if let Some(tx) = caught_up_tx.take() {
                        let _ = tx.send(());
                    }
                }
                Feed::Record(record) => {
                    if !apply(&record) {
                        return;
                    }
                }
            }
        }
    });
    Ok(caught_up)
}

/// The committed range of every partition of `topic` (index = partition), as a
/// read_committed reader sees it: (first offset still in the log, end). The end is the last
/// stable offset: records of transactions still open are at or after it, so a reader that
/// starts at the end misses nothing that commits later.
pub async fn committed_range(
    args: &KafkaArgs,
    client_id: &str,
    topic: &str,
) -> Result<Vec<(i64, i64)>, KafkaError> {
    let consumer: StreamConsumer = args.reader_config(client_id).create()?;
    let partitions = wait_for_partitions(&consumer, topic).await?;
    // A topic created a moment ago (another service starting beside this one) may have no
    // partition leaders yet, and offset requests fail until it has: retry for up to 15 s.
    let mut attempts = 0;
    loop {
        match offsets_range(&consumer, topic, &partitions) {
            Ok(range) => return Ok(range),
            Err(error) if attempts < 30 => {
                attempts += 1;
                tracing::debug!(topic, %error, attempts, "offsets not available yet; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(error) => return Err(error),
        }
    }
}

fn offsets_range(
    consumer: &StreamConsumer,
    topic: &str,
    partitions: &[i32],
) -> Result<Vec<(i64, i64)>, KafkaError> {
    let mut latest = TopicPartitionList::new();
    for p in partitions {
        // Timestamp -1 asks for the latest offset; the consumer's read_committed isolation
        // makes the broker answer with the last stable offset.
        latest.add_partition_offset(topic, *p, Offset::End)?;
    }
    let ends = consumer.offsets_for_times(latest, Duration::from_secs(30))?;
    let mut range = Vec::with_capacity(partitions.len());
    for p in partitions {
        let (low, high) = watermarks(consumer, topic, *p)?;
        let end = match ends.find_partition(topic, *p).map(|e| e.offset()) {
            Some(Offset::Offset(end)) => end,
            _ => high,
        };
        range.push((low, end.max(low)));
    }
    Ok(range)
}

async fn wait_for_partitions(
    consumer: &StreamConsumer,
    topic: &str,
) -> Result<Vec<i32>, KafkaError> {
    // A topic created a moment ago may show no partitions yet: wait for them (up to 10 s)
    // rather than report "caught up" on nothing.
    for _ in 0..100 {
        let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(30))?;
        let mut partitions: Vec<i32> = metadata
            .topics()
            .first()
            .filter(|t| t.error().is_none())
            .map(|t| t.partitions().iter().map(|p| p.id()).collect())
            .unwrap_or_default();
        if !partitions.is_empty() {
            partitions.sort_unstable();
            return Ok(partitions);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(KafkaError::MetadataFetch(
        rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition,
    ))
}

/// How long [`watermarks`] waits for a partition's leader.
const LEADER_WAIT: Duration = Duration::from_secs(30);

/// A partition's low and high watermarks. Right after a topic is created its partitions are
/// visible a moment before their leader is elected, and the broker answers
/// NOT_LEADER_OR_FOLLOWER or LEADER_NOT_AVAILABLE (a service starting on a fresh broker
/// exited on that): those answers are retried for up to [`LEADER_WAIT`]; any other error is
/// returned at once.
pub fn watermarks<C, K>(consumer: &K, topic: &str, partition: i32) -> Result<(i64, i64), KafkaError>
where
    C: ConsumerContext,
    K: Consumer<C>,
{
    let started = std::time::Instant::now();
    loop {
        match consumer.fetch_watermarks(topic, partition, LEADER_WAIT) {
            Err(KafkaError::MetadataFetch(code))
                if leader_not_ready(code) && started.elapsed() < LEADER_WAIT =>
            {
                tracing::debug!(
                    topic,
                    partition,
                    ?code,
                    "partition leader not ready; retrying"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
            result => return result,
        }
    }
}

fn leader_not_ready(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::NotLeaderForPartition
            | RDKafkaErrorCode::LeaderNotAvailable
            | RDKafkaErrorCode::UnknownTopicOrPartition
    )
}

/// [`follow`], starting where `start` says.
pub async fn follow_from(
    args: &KafkaArgs,
    client_id: &str,
    topic: &str,
    start: Start,
    shutdown: CancellationToken,
) -> Result<mpsc::Receiver<Feed>, KafkaError> {
    let consumer: StreamConsumer = args.reader_config(client_id).create()?;
    let partitions = wait_for_partitions(&consumer, topic).await?;
    let mut assignment = TopicPartitionList::new();
    for p in &partitions {
        let offset = match &start {
            Start::Offsets(offsets) => usize::try_from(*p).ok().and_then(|i| offsets.get(i)),
            Start::Beginning => None,
        };
        let offset = match offset {
            Some(offset) => *offset,
            // The first offset, asked for here: assigned at `Offset::Beginning` instead,
            // librdkafka took about 500 ms to resolve it before the first fetch (see
            // `table`). Should it be gone by the time of the fetch, auto.offset.reset=earliest
            // starts at the new first one.
            None => watermarks(&consumer, topic, *p)?.0,
        };
        assignment.add_partition_offset(topic, *p, Offset::Offset(offset))?;
    }
    consumer.assign(&assignment)?;
    let (tx, rx) = mpsc::channel(4096);
    let topic = topic.to_owned();
    tokio::spawn(async move {
        let mut pending: HashSet<i32> = partitions.into_iter().collect();
        loop {
            let item = tokio::select! {
                () = shutdown.cancelled() => return,
                item = consumer.recv() => item,
            };
            let feed = match item {
                Ok(message) => Feed::Record(Record {
                    partition: message.partition(),
                    offset: message.offset(),
                    key: message.key().map(<[u8]>::to_vec),
                    payload: message.payload().map(<[u8]>::to_vec),
                    headers: message
                        .headers()
                        .map(|hs| {
                            hs.iter()
                                .map(|h| {
                                    (
                                        h.key.to_owned(),
                                        h.value.map(<[u8]>::to_vec).unwrap_or_default(),
                                    )
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                }),
                Err(KafkaError::PartitionEOF(p)) => {
                    if pending.remove(&p) && pending.is_empty() {
                        Feed::CaughtUp
                    } else {
                        continue;
                    }
                }
                Err(error) => {
                    if let Some((code, reason)) = consumer.client().fatal_error() {
                        // A consumer in this state never delivers again: end the feed, so
                        // its owner notices (the status service turns NOT_SERVING).
                        tracing::error!(%error, ?code, reason, topic = %topic, "reading topic failed fatally; the feed ends");
                        return;
                    }
                    tracing::warn!(%error, topic = %topic, "reading topic failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            if tx.send(feed).await.is_err() {
                return;
            }
        }
    });
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_reads_as_text_with_bad_bytes_replaced_and_none_as_empty() {
        let record = |key: Option<&[u8]>| Record {
            partition: 0,
            offset: 0,
            key: key.map(<[u8]>::to_vec),
            payload: None,
            headers: Vec::new(),
        };
        assert_eq!(record(Some(b"w-17")).key_text(), "w-17");
        assert_eq!(record(Some(b"w-\xff")).key_text(), "w-\u{fffd}");
        assert_eq!(record(None).key_text(), "");
    }

    #[test]
    fn only_a_leader_not_elected_yet_is_waited_for() {
        for code in [
            RDKafkaErrorCode::NotLeaderForPartition,
            RDKafkaErrorCode::LeaderNotAvailable,
            RDKafkaErrorCode::UnknownTopicOrPartition,
        ] {
            assert!(leader_not_ready(code), "{code:?}");
        }
        for code in [
            RDKafkaErrorCode::TopicAuthorizationFailed,
            RDKafkaErrorCode::BrokerTransportFailure,
            RDKafkaErrorCode::OperationTimedOut,
        ] {
            assert!(!leader_not_ready(code), "{code:?}");
        }
    }
}
