//! Read a compacted table (incident-state) once, to its end, keeping only the last record of
//! each key as read: what a restore needs. The router restores its partitions with it on
//! every assignment, the status service all partitions at start-up.
//!
//! A compacted topic still holds superseded records (the active segment is never cleaned,
//! rolled ones only after the cleaner passes) and tombstones (kept `delete.retention.ms`).
//! Keeping the last record per key as raw bytes, with no decoding, makes a superseded record
//! cost a hash lookup and a copy into the bytes it replaces, and a tombstone a lookup and a
//! removal (most tombstones name a key the read has not met: they cost no allocation at all);
//! the caller decodes the survivors once.

use crate::checkpoint::Anchor;
use crate::kafka::KafkaArgs;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Fetch sizes and queue of a table reader. A broker answers a fetch from one segment of a
/// partition, and compacted topics are created with 1 MiB segments, so larger fetches (8 MiB a
/// partition, 64 MiB in all, before) could not return more; smaller ones bound what librdkafka
/// holds while a restore runs. Whether that lowers the RSS left after a restore is not shown:
/// one run said 959 B against 1,095 B per open incident, two later pairs no difference beyond
/// run-to-run spread (docs/performance.md, issue 8, fourth pass).
const PARTITION_FETCH_BYTES: &str = "1048576";
const FETCH_BYTES: &str = "8388608";
const QUEUED_MAX_KBYTES: &str = "8192";
/// librdkafka stops fetching a partition while its local queue holds more than
/// `queued.min.messages` (default 100,000) and looks again only after
/// `fetch.queue.backoff.ms` (default 1,000 ms). One fetch of compacted incident-state (a
/// segment of lz4-compressed tombstones, tens of bytes each) holds more records than that, so
/// a restore could sit idle in those backoffs. The queue is bounded by bytes instead
/// ([`QUEUED_MAX_KBYTES`]) and looked at again soon after the reader drains it.
const QUEUED_MIN_MESSAGES: &str = "10000000";
const FETCH_QUEUE_BACKOFF_MS: &str = "5";

/// The last record of one key that is not deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastRecord {
    pub partition: i32,
    pub offset: i64,
    pub payload: Box<[u8]>,
}

/// What a table read found: the last record of every key whose last record is not a
/// tombstone, and what it read to find them.
#[derive(Debug, Default)]
pub struct Table {
    pub last: HashMap<Arc<str>, LastRecord>,
    /// Records read: superseded ones and tombstones included.
    pub records: u64,
    /// Tombstones among them.
    pub tombstones: u64,
    /// Bytes of their values.
    pub bytes: u64,
    /// Records skipped for a missing or non-UTF-8 key (nothing HelpGrid writes).
    pub keyless: u64,
    /// Records taken from local checkpoints ([`Table::seed`]), not read from Kafka.
    pub seeded: u64,
    /// Time the reads waited with nothing fetched yet: the broker's share of a restore (the
    /// rest is this process decoding and keeping records).
    pub waited: Duration,
}

impl Table {
    /// Takes one record, read in offset order within its partition: it replaces whatever the
    /// key had; a tombstone (no payload) removes the key.
    pub fn offer(
        &mut self,
        key: Option<&[u8]>,
        partition: i32,
        offset: i64,
        payload: Option<&[u8]>,
    ) {
        self.records += 1;
        let Some(key) = key.and_then(|k| std::str::from_utf8(k).ok()) else {
            self.bytes += payload.map_or(0, <[u8]>::len) as u64;
            self.keyless += 1;
            return;
        };
        let Some(payload) = payload else {
            self.tombstones += 1;
            self.last.remove(key);
            return;
        };
        self.bytes += payload.len() as u64;
        match self.last.get_mut(key) {
            Some(slot) => {
                slot.partition = partition;
                slot.offset = offset;
                // Snapshots of one incident are often the same length: no allocation then.
                if slot.payload.len() == payload.len() {
                    slot.payload.copy_from_slice(payload);
                } else {
                    slot.payload = Box::from(payload);
                }
            }
            None => {
                self.last.insert(
                    Arc::from(key),
                    LastRecord {
                        partition,
                        offset,
                        payload: Box::from(payload),
                    },
                );
            }
        }
    }

    /// Takes the records of a local checkpoint of `partition` (live keys as of `position`),
    /// before the records read from `position` on are offered.
    pub fn seed(&mut self, partition: i32, position: i64, records: Vec<(Arc<str>, Box<[u8]>)>) {
        self.seeded += records.len() as u64;
        self.last.reserve(records.len());
        for (key, payload) in records {
            self.last.insert(
                key,
                LastRecord {
                    partition,
                    // At or before this offset: it is in the checkpoint, not read.
                    offset: position - 1,
                    payload,
                },
            );
        }
    }

    /// Keys whose last record is not a tombstone.
    pub fn live(&self) -> usize {
        self.last.len()
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
    let reader = TableReader::new(args, client_id, topic)?;
    let partitions: Vec<i32> = match partitions {
        Some(p) => p.to_vec(),
        None => reader.partitions()?,
    };
    let mut starts = Vec::with_capacity(partitions.len());
    for p in partitions {
        let (low, high) = reader.watermarks(p)?;
        starts.push(Start {
            partition: p,
            from: low,
            end: high,
        });
    }
    let mut table = Table::default();
    reader.read_into(&mut table, &starts, timeout)?;
    Ok(table)
}

/// How far a [`TableReader`] read one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reached {
    /// The offset after the last record read (the start offset when none was): every record
    /// before it is in the table.
    pub position: i64,
    /// The last record read (None when none was), to anchor a checkpoint taken at `position`.
    pub anchor: Option<Anchor>,
}

/// A record's timestamp in milliseconds, -1 when it has none.
fn timestamp_ms(m: &impl Message) -> i64 {
    m.timestamp().to_millis().unwrap_or(-1)
}

/// Where a [`TableReader`] reads one partition: from `from` to the end, which was `end` when
/// asked (a partition with `from >= end` is not read at all).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Start {
    pub partition: i32,
    pub from: i64,
    pub end: i64,
}

/// A consumer that reads partitions of one table topic to their end, committed records only.
/// The watermarks come first (a restore checks a local checkpoint against them before it
/// picks where to start), then one [`TableReader::read_into`].
pub struct TableReader {
    reader: BaseConsumer,
    topic: String,
}

impl TableReader {
    pub fn new(args: &KafkaArgs, client_id: &str, topic: &str) -> Result<Self, KafkaError> {
        let mut config = args.reader_config(client_id);
        config
            .set("max.partition.fetch.bytes", PARTITION_FETCH_BYTES)
            .set("fetch.max.bytes", FETCH_BYTES)
            .set("queued.max.messages.kbytes", QUEUED_MAX_KBYTES)
            .set("queued.min.messages", QUEUED_MIN_MESSAGES)
            .set("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS);
        // Pass-through options (`--kafka-option`) still have the last word, as for every
        // other client.
        for (key, value) in &args.options {
            config.set(key, value);
        }
        Ok(Self {
            reader: config.create()?,
            topic: topic.to_owned(),
        })
    }

    /// Every partition of the topic.
    pub fn partitions(&self) -> Result<Vec<i32>, KafkaError> {
        Ok(self
            .reader
            .fetch_metadata(Some(&self.topic), Duration::from_secs(30))?
            .topics()
            .first()
            .map(|t| t.partitions().iter().map(|p| p.id()).collect())
            .unwrap_or_default())
    }

    /// (first offset, end) of a partition, waiting for a just-created partition's leader.
    pub fn watermarks(&self, partition: i32) -> Result<(i64, i64), KafkaError> {
        crate::reader::watermarks(&self.reader, &self.topic, partition)
    }

    /// The Kafka cluster's id, to tell a local copy of this table from another cluster's.
    pub fn cluster_id(&self) -> Option<String> {
        self.reader
            .client()
            .fetch_cluster_id(Duration::from_secs(10))
    }

    /// The first record at or after each (partition, offset) of `at` (none when the
    /// partition ends before it), as an [`Anchor`] to compare with a checkpoint's. Call
    /// before [`TableReader::read_into`], which assigns the partitions anew.
    pub fn first_records(
        &self,
        at: &[(i32, i64)],
        timeout: Duration,
    ) -> Result<BTreeMap<i32, Anchor>, KafkaError> {
        let started = Instant::now();
        let mut tpl = TopicPartitionList::new();
        for (partition, offset) in at {
            tpl.add_partition_offset(&self.topic, *partition, Offset::Offset(*offset))?;
        }
        let mut pending: HashSet<i32> = at.iter().map(|(p, _)| *p).collect();
        let mut found = BTreeMap::new();
        if pending.is_empty() {
            return Ok(found);
        }
        self.reader.assign(&tpl)?;
        while !pending.is_empty() {
            if started.elapsed() > timeout {
                return Err(KafkaError::Canceled);
            }
            match self.reader.poll(Duration::from_millis(100)) {
                None => {}
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    pending.remove(&p);
                }
                Some(Err(error)) => {
                    if self.reader.client().fatal_error().is_some() {
                        return Err(error);
                    }
                    tracing::warn!(%error, topic = %self.topic, "reading a table's anchor records; retrying");
                }
                // The first record of each partition; any later one is not looked at.
                Some(Ok(m)) if pending.remove(&m.partition()) => {
                    found.insert(
                        m.partition(),
                        Anchor {
                            offset: m.offset(),
                            timestamp_ms: timestamp_ms(&m),
                            key: m.key().unwrap_or_default().into(),
                        },
                    );
                }
                Some(Ok(_)) => {}
            }
        }
        Ok(found)
    }

    /// Reads each partition from its start offset to its end, offering every record to
    /// `table`. Returns, per partition, how far it read: every record before that position
    /// is in the table. Gives up with `KafkaError::Canceled` after `timeout`.
    pub fn read_into(
        self,
        table: &mut Table,
        starts: &[Start],
        timeout: Duration,
    ) -> Result<BTreeMap<i32, Reached>, KafkaError> {
        let started = Instant::now();
        let topic = self.topic.as_str();
        // Per partition: the start offset, then (offset, timestamp, key) of the last record
        // read, the key copied into a buffer that is reused (no allocation per record).
        let mut last: BTreeMap<i32, (i64, i64, Vec<u8>)> = starts
            .iter()
            .map(|s| (s.partition, (s.from - 1, -1, Vec::new())))
            .collect();
        // Each partition starts at an explicit offset: assigned at `Offset::Beginning`
        // instead, librdkafka took about 500 ms to resolve it before the first fetch
        // (measured: an empty table read in 550 ms that way, 90 ms this way). A partition
        // with nothing after its start is not read at all.
        let mut tpl = TopicPartitionList::new();
        let mut pending: HashSet<i32> = HashSet::new();
        for s in starts.iter().filter(|s| s.end > s.from) {
            tpl.add_partition_offset(topic, s.partition, Offset::Offset(s.from))?;
            pending.insert(s.partition);
        }
        let keyless_before = table.keyless;
        if !pending.is_empty() {
            self.reader.assign(&tpl)?;
        }
        while !pending.is_empty() {
            if started.elapsed() > timeout {
                return Err(KafkaError::Canceled);
            }
            // A message already fetched is taken without a clock read; only an empty queue
            // is timed.
            let polled = match self.reader.poll(Duration::ZERO) {
                Some(polled) => Some(polled),
                None => {
                    let waiting = Instant::now();
                    let polled = self.reader.poll(Duration::from_millis(100));
                    table.waited += waiting.elapsed();
                    polled
                }
            };
            match polled {
                None => {}
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    pending.remove(&p);
                }
                Some(Err(error)) => {
                    if let Some((code, reason)) = self.reader.client().fatal_error() {
                        tracing::error!(%error, ?code, reason, topic, "reading table failed fatally");
                        return Err(error);
                    }
                    tracing::warn!(%error, topic, "reading table; retrying");
                }
                Some(Ok(m)) => {
                    if let Some((offset, timestamp, key)) = last.get_mut(&m.partition()) {
                        *offset = m.offset();
                        *timestamp = timestamp_ms(&m);
                        key.clear();
                        key.extend_from_slice(m.key().unwrap_or_default());
                    }
                    table.offer(m.key(), m.partition(), m.offset(), m.payload());
                }
            }
        }
        // Closing a consumer takes ~100 ms (it leaves its group handler): not on the
        // caller's time.
        let reader = self.reader;
        std::thread::spawn(move || drop(reader));
        if table.keyless > keyless_before {
            tracing::error!(
                topic,
                records = table.keyless - keyless_before,
                "table records without a UTF-8 key skipped"
            );
        }
        let starts: BTreeMap<i32, i64> = starts.iter().map(|s| (s.partition, s.from)).collect();
        Ok(last
            .into_iter()
            .map(|(partition, (offset, timestamp_ms, key))| {
                let read = starts.get(&partition).is_some_and(|from| offset >= *from);
                let reached = Reached {
                    position: offset + 1,
                    anchor: read.then(|| Anchor {
                        offset,
                        timestamp_ms,
                        key: key.into(),
                    }),
                };
                (partition, reached)
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_record_of_each_key_wins_and_a_tombstone_removes_the_key() {
        let mut table = Table::default();
        table.offer(Some(b"a"), 0, 0, Some(b"a1"));
        table.offer(Some(b"b"), 1, 0, Some(b"b1"));
        table.offer(Some(b"a"), 0, 1, Some(b"a2"));
        table.offer(Some(b"b"), 1, 1, None);
        table.offer(None, 1, 2, Some(b"x"));
        table.offer(Some(&[0xff, 0xfe]), 1, 3, Some(b"y"));
        // A tombstone of a key never seen: nothing to remove, nothing kept.
        table.offer(Some(b"c"), 1, 4, None);
        assert_eq!(
            (table.records, table.bytes, table.keyless, table.tombstones),
            (7, 8, 2, 2)
        );
        assert_eq!(
            table.last.get("a"),
            Some(&LastRecord {
                partition: 0,
                offset: 1,
                payload: Box::from(&b"a2"[..]),
            })
        );
        assert_eq!(table.last.get("b"), None);
        assert_eq!(table.live(), 1);
        // A key written again after its tombstone lives again.
        table.offer(Some(b"b"), 1, 5, Some(b"b2"));
        assert_eq!(table.live(), 2);
    }

    #[test]
    fn a_longer_or_shorter_record_replaces_the_whole_payload() {
        let mut table = Table::default();
        table.offer(Some(b"a"), 0, 0, Some(b"abc"));
        table.offer(Some(b"a"), 0, 1, Some(b"xyz"));
        assert_eq!(table.last.get("a").map(|r| &*r.payload), Some(&b"xyz"[..]));
        table.offer(Some(b"a"), 0, 2, Some(b"longer"));
        assert_eq!(
            table.last.get("a").map(|r| &*r.payload),
            Some(&b"longer"[..])
        );
        table.offer(Some(b"a"), 0, 3, Some(b"s"));
        assert_eq!(
            table.last.get("a").map(|r| (r.offset, &*r.payload)),
            Some((3, &b"s"[..]))
        );
    }

    #[test]
    fn a_tombstone_after_a_seeded_checkpoint_removes_the_key() {
        let mut table = Table::default();
        table.seed(
            2,
            10,
            vec![
                (Arc::from("a"), Box::from(&b"a1"[..])),
                (Arc::from("b"), Box::from(&b"b1"[..])),
            ],
        );
        table.offer(Some(b"a"), 2, 10, None);
        table.offer(Some(b"b"), 2, 11, Some(b"b2"));
        assert_eq!((table.seeded, table.records, table.live()), (2, 2, 1));
        assert_eq!(
            table.last.get("b").map(|r| (r.offset, &*r.payload)),
            Some((11, &b"b2"[..]))
        );
    }
}
