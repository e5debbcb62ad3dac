//! Read a compacted table (incident-state) once, to its end, keeping only the last record of
//! each key as read: what a restore needs. The router restores its partitions with it on
//! every assignment, the status service all partitions at start-up.
//!
//! A compacted topic still holds superseded records (the active segment is never cleaned,
//! rolled ones only after the cleaner passes) and tombstones (kept `delete.retention.ms`).
//! Keeping the last record per key as raw bytes, with no decoding, makes a superseded record
//! or a tombstone cost a hash lookup; the caller decodes the survivors once.

use crate::kafka::KafkaArgs;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Fetch sizes of a table reader (librdkafka's defaults: 1 MiB per partition, 50 MiB): a
/// restore reads whole partitions as fast as it can.
const PARTITION_FETCH_BYTES: &str = "8388608";
const FETCH_BYTES: &str = "67108864";

/// The last record of one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastRecord {
    pub partition: i32,
    pub offset: i64,
    /// None: a tombstone (the key was deleted).
    pub payload: Option<Box<[u8]>>,
}

/// What a table read found: the last record of every key, and what it read to find them.
#[derive(Debug, Default)]
pub struct Table {
    pub last: HashMap<Arc<str>, LastRecord>,
    /// Records read: superseded ones and tombstones included.
    pub records: u64,
    /// Bytes of their values.
    pub bytes: u64,
    /// Records skipped for a missing or non-UTF-8 key (nothing HelpGrid writes).
    pub keyless: u64,
}

impl Table {
    /// Takes one record, read in offset order within its partition: it replaces whatever the
    /// key had.
    pub fn offer(
        &mut self,
        key: Option<&[u8]>,
        partition: i32,
        offset: i64,
        payload: Option<&[u8]>,
    ) {
        self.records += 1;
        self.bytes += payload.map_or(0, <[u8]>::len) as u64;
        let Some(key) = key.and_then(|k| std::str::from_utf8(k).ok()) else {
            self.keyless += 1;
            return;
        };
        let last = LastRecord {
            partition,
            offset,
            payload: payload.map(Box::from),
        };
        match self.last.get_mut(key) {
            Some(slot) => *slot = last,
            None => {
                self.last.insert(Arc::from(key), last);
            }
        }
    }

    /// Keys whose last record is not a tombstone.
    pub fn live(&self) -> usize {
        self.last.values().filter(|r| r.payload.is_some()).count()
    }
}

/// Reads `partitions` of `topic` (None: all) from the beginning to their end as they are now
/// (committed records only), on the calling thread. Gives up with `KafkaError::Canceled`
/// after `timeout`.
pub fn read_table(
    args: &KafkaArgs,
    client_id: &str,
    topic: &str,
    partitions: Option<&[i32]>,
    timeout: Duration,
) -> Result<Table, KafkaError> {
    let started = Instant::now();
    let mut config = args.reader_config(client_id);
    config
        .set("max.partition.fetch.bytes", PARTITION_FETCH_BYTES)
        .set("fetch.max.bytes", FETCH_BYTES);
    let reader: BaseConsumer = config.create()?;
    let partitions: Vec<i32> = match partitions {
        Some(p) => p.to_vec(),
        None => reader
            .fetch_metadata(Some(topic), Duration::from_secs(30))?
            .topics()
            .first()
            .map(|t| t.partitions().iter().map(|p| p.id()).collect())
            .unwrap_or_default(),
    };
    // Each partition starts at its first offset, asked for here: assigned at
    // `Offset::Beginning` instead, librdkafka took about 500 ms to resolve it before the
    // first fetch (measured: an empty table read in 550 ms that way, 90 ms this way). An
    // empty partition is not read at all.
    let mut tpl = TopicPartitionList::new();
    let mut pending: HashSet<i32> = HashSet::new();
    for p in &partitions {
        let (low, high) = crate::reader::watermarks(&reader, topic, *p)?;
        if high > low {
            tpl.add_partition_offset(topic, *p, Offset::Offset(low))?;
            pending.insert(*p);
        }
    }
    reader.assign(&tpl)?;
    let mut table = Table::default();
    while !pending.is_empty() {
        if started.elapsed() > timeout {
            return Err(KafkaError::Canceled);
        }
        match reader.poll(Duration::from_millis(100)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(p))) => {
                pending.remove(&p);
            }
            Some(Err(error)) => {
                if let Some((code, reason)) = reader.client().fatal_error() {
                    tracing::error!(%error, ?code, reason, topic, "reading table failed fatally");
                    return Err(error);
                }
                tracing::warn!(%error, topic, "reading table; retrying");
            }
            Some(Ok(m)) => table.offer(m.key(), m.partition(), m.offset(), m.payload()),
        }
    }
    // Closing a consumer takes ~100 ms (it leaves its group handler): not on the caller's
    // time.
    std::thread::spawn(move || drop(reader));
    if table.keyless > 0 {
        tracing::error!(
            topic,
            records = table.keyless,
            "table records without a UTF-8 key skipped"
        );
    }
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_record_of_each_key_wins_and_a_tombstone_is_kept_as_one() {
        let mut table = Table::default();
        table.offer(Some(b"a"), 0, 0, Some(b"a1"));
        table.offer(Some(b"b"), 1, 0, Some(b"b1"));
        table.offer(Some(b"a"), 0, 1, Some(b"a2"));
        table.offer(Some(b"b"), 1, 1, None);
        table.offer(None, 1, 2, Some(b"x"));
        table.offer(Some(&[0xff, 0xfe]), 1, 3, Some(b"y"));
        assert_eq!((table.records, table.bytes, table.keyless), (6, 8, 2));
        assert_eq!(
            table.last.get("a"),
            Some(&LastRecord {
                partition: 0,
                offset: 1,
                payload: Some(Box::from(&b"a2"[..])),
            })
        );
        assert_eq!(
            table.last.get("b").map(|r| (r.offset, r.payload.is_none())),
            Some((1, true))
        );
        assert_eq!((table.last.len(), table.live()), (2, 1));
        // A key written again after its tombstone lives again.
        table.offer(Some(b"b"), 1, 4, Some(b"b2"));
        assert_eq!(table.live(), 2);
    }
}
