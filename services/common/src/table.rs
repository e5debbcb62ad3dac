//! Read a compacted table (incident-state) once, to its end, keeping only the last record of
//! each key as read: what a restore needs. The router restores its partitions with it on
//! every assignment, the status service all partitions at start-up.
//!
//! A compacted topic still holds superseded records (the active segment is never cleaned,
//! rolled ones only after the cleaner passes) and tombstones (kept `delete.retention.ms`).
//! Keeping the last record per key as raw bytes, with no decoding, makes a superseded record
//! cost a hash lookup and a copy into the bytes it replaces, and a tombstone a lookup and a
//! removal (most tombstones name a key the read has not met: they cost no allocation at all);
//! the caller decodes the survivors once, partition by partition ([`Table::drain`]).
//!
//! The bytes of each partition's records (key and value) are copied into large chunks, not
//! one allocation per record: while the read runs, librdkafka's threads allocate and free
//! their fetch and decompression buffers, and glibc's per-thread cache hands blocks they freed
//! to this thread's next small allocation, so records kept from that time can sit in
//! librdkafka's arena and pin its freed pages (a router that read 774,000 incidents whole kept
//! ~250 B per incident more than one restored from a file; docs/performance.md, issue 8, fifth
//! pass). The caller allocates what it keeps only once the read is over, and each partition's
//! chunks are freed as soon as they are handed over, so the raw copy of one partition at most
//! is held beside the decoded state.

use crate::checkpoint::{Anchor, Records};
use crate::kafka::KafkaArgs;
use hashbrown::HashTable;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, HashSet};
use std::hash::BuildHasher;
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

/// Size of a chunk of record bytes. Above glibc's largest mmap threshold (32 MiB on 64-bit
/// Linux; it rises with every large block freed, up to that), so each chunk is a mapping of
/// its own: only the pages written are resident, and freeing it returns them all, wherever
/// the rest of the heap stands. A partition of a flood's 774,000 incidents fills two thirds
/// of one.
const CHUNK_BYTES: usize = 64 << 20;
/// The most slots a partition reserves ahead, from its record count: a read of many
/// tombstones would otherwise reserve for keys it never keeps.
const MAX_RESERVED_SLOTS: usize = 1 << 22;

/// The last record of one key that is not deleted, as a [`Table`] hands it over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastRecord<'a> {
    pub partition: i32,
    pub offset: i64,
    pub key: &'a str,
    pub payload: &'a [u8],
}

/// Where one key's last record is in its partition's chunks.
#[derive(Debug, Clone, Copy)]
struct Slot {
    chunk: u32,
    key_at: u32,
    key_len: u32,
    value_at: u32,
    value_len: u32,
    offset: i64,
}

/// The live keys of one partition: slots in a hash table, bytes in chunks (a seeded
/// checkpoint's file is one of them, as read).
#[derive(Default)]
struct PartitionTable {
    slots: HashTable<Slot>,
    chunks: Vec<Vec<u8>>,
    /// Seeded per process, as std's is: keys chosen outside cannot be aimed at one bucket.
    hasher: foldhash::fast::RandomState,
}

/// The key bytes of `slot`.
fn key_of<'a>(chunks: &'a [Vec<u8>], slot: &Slot) -> &'a [u8] {
    let at = slot.key_at as usize;
    &chunks[slot.chunk as usize][at..at + slot.key_len as usize]
}

impl PartitionTable {
    fn value<'a>(&'a self, slot: &Slot) -> &'a [u8] {
        let at = slot.value_at as usize;
        &self.chunks[slot.chunk as usize][at..at + slot.value_len as usize]
    }

    fn record<'a>(&'a self, partition: i32, slot: &Slot) -> Option<LastRecord<'a>> {
        // Checked when offered; a key that is not UTF-8 never gets a slot.
        let key = std::str::from_utf8(key_of(&self.chunks, slot)).ok()?;
        Some(LastRecord {
            partition,
            offset: slot.offset,
            key,
            payload: self.value(slot),
        })
    }

    /// Room for `additional` more keys without growing the hash table on the way.
    fn reserve(&mut self, additional: usize) {
        let Self {
            slots,
            chunks,
            hasher,
        } = self;
        slots.reserve(additional, |s| hasher.hash_one(key_of(chunks, s)));
    }

    /// Copies key and value into the last chunk (a new one when they do not fit) and says
    /// where. A record larger than a chunk gets a chunk of its own size.
    fn append(chunks: &mut Vec<Vec<u8>>, key: &[u8], value: &[u8], offset: i64) -> Slot {
        let len = key.len() + value.len();
        let fits = chunks
            .last()
            .is_some_and(|c| c.capacity() - c.len() >= len && c.capacity() <= u32::MAX as usize);
        if !fits {
            chunks.push(Vec::with_capacity(len.max(CHUNK_BYTES)));
        }
        let chunk = chunks.len() - 1;
        let bytes = &mut chunks[chunk];
        let key_at = bytes.len();
        bytes.extend_from_slice(key);
        bytes.extend_from_slice(value);
        Slot {
            chunk: chunk as u32,
            key_at: key_at as u32,
            key_len: key.len() as u32,
            value_at: (key_at + key.len()) as u32,
            value_len: value.len() as u32,
            offset,
        }
    }

    /// The last record of `key` becomes `value` (None: the key is deleted).
    fn put(&mut self, key: &[u8], offset: i64, value: Option<&[u8]>) {
        let Self {
            slots,
            chunks,
            hasher,
        } = self;
        let hash = hasher.hash_one(key);
        let found = slots.find_mut(hash, |s| key_of(chunks, s) == key);
        match (found, value) {
            (None, None) => {}
            (Some(_), None) => {
                // Its bytes stay in the chunk until the partition is handed over.
                if let Ok(entry) = slots.find_entry(hash, |s| key_of(chunks, s) == key) {
                    entry.remove();
                }
            }
            (Some(slot), Some(value)) if slot.value_len as usize == value.len() => {
                // Snapshots of one incident are often the same length: written in place.
                let at = slot.value_at as usize;
                chunks[slot.chunk as usize][at..at + value.len()].copy_from_slice(value);
                slot.offset = offset;
            }
            (Some(slot), Some(value)) => {
                // The old bytes stay behind in their chunk, unused.
                *slot = Self::append(chunks, key, value, offset);
            }
            (None, Some(value)) => {
                let slot = Self::append(chunks, key, value, offset);
                slots.insert_unique(hash, slot, |s| hasher.hash_one(key_of(chunks, s)));
            }
        }
    }

    /// Takes a checkpoint's records at `offset`: its file's bytes become a chunk as they
    /// are, and each record a slot in it.
    fn seed(&mut self, records: Records, offset: i64) {
        self.reserve(records.len());
        let (bytes, spans) = records.into_parts();
        if bytes.len() > u32::MAX as usize {
            // Slots address a chunk with 32 bits: a file this large is copied record by
            // record instead.
            let records = Records::from_parts(bytes, spans);
            for (key, value) in records.iter() {
                self.put(key.as_bytes(), offset, Some(value));
            }
            return;
        }
        let chunk = self.chunks.len();
        self.chunks.push(bytes);
        for span in spans {
            let slot = Slot {
                chunk: chunk as u32,
                key_at: span.key_at as u32,
                key_len: span.key_len as u32,
                value_at: span.value_at as u32,
                value_len: span.value_len as u32,
                offset,
            };
            let Self {
                slots,
                chunks,
                hasher,
            } = &mut *self;
            let key = key_of(chunks, &slot);
            let hash = hasher.hash_one(key);
            match slots.find_mut(hash, |s| key_of(chunks, s) == key) {
                // A key twice in one file (not written so): the later one wins.
                Some(existing) => *existing = slot,
                None => {
                    slots.insert_unique(hash, slot, |s| hasher.hash_one(key_of(chunks, s)));
                }
            }
        }
    }
}

/// What a table read found: the last record of every key whose last record is not a
/// tombstone, and what it read to find them.
#[derive(Default)]
pub struct Table {
    partitions: BTreeMap<i32, PartitionTable>,
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
    /// Makes room for `records` more records of `partition` (an upper bound on its keys, as
    /// a partition's offsets give it), so its hash table does not grow by doubling (and
    /// rehashing) through the read.
    pub fn reserve(&mut self, partition: i32, records: usize) {
        self.partitions
            .entry(partition)
            .or_default()
            .reserve(records.min(MAX_RESERVED_SLOTS));
    }

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
        let Some(key) = key.filter(|k| std::str::from_utf8(k).is_ok()) else {
            self.bytes += payload.map_or(0, <[u8]>::len) as u64;
            self.keyless += 1;
            return;
        };
        match payload {
            None => {
                self.tombstones += 1;
                // A tombstone of a partition with no live key yet creates no table for it.
                if let Some(table) = self.partitions.get_mut(&partition) {
                    table.put(key, offset, None);
                }
            }
            Some(payload) => {
                self.bytes += payload.len() as u64;
                self.partitions
                    .entry(partition)
                    .or_default()
                    .put(key, offset, Some(payload));
            }
        }
    }

    /// Takes the records of a local checkpoint of `partition` (live keys as of `position`),
    /// before the records read from `position` on are offered. The file's bytes are kept as
    /// they are: no copy, no allocation per record.
    pub fn seed(&mut self, partition: i32, position: i64, records: Records) {
        self.seeded += records.len() as u64;
        // At or before this offset: it is in the checkpoint, not read.
        self.partitions
            .entry(partition)
            .or_default()
            .seed(records, position - 1);
    }

    /// Keys whose last record is not a tombstone.
    pub fn live(&self) -> usize {
        self.partitions.values().map(|t| t.slots.len()).sum()
    }

    /// The last record of `key` in `partition`, if it is not deleted.
    pub fn get(&self, partition: i32, key: &str) -> Option<LastRecord<'_>> {
        let table = self.partitions.get(&partition)?;
        let hash = table.hasher.hash_one(key.as_bytes());
        let slot = table
            .slots
            .find(hash, |s| key_of(&table.chunks, s) == key.as_bytes())?;
        table.record(partition, slot)
    }

    /// Every live key's last record, partition by partition.
    pub fn iter(&self) -> impl Iterator<Item = LastRecord<'_>> {
        self.partitions
            .iter()
            .flat_map(|(p, t)| t.slots.iter().filter_map(|s| t.record(*p, s)))
    }

    /// Hands every live key's last record to `take`, partition by partition, and frees each
    /// partition's bytes once its records are handed over: the caller's decoded copy of a
    /// partition replaces its raw one, instead of both being held for every partition.
    pub fn drain(mut self, mut take: impl FnMut(LastRecord<'_>)) {
        while let Some((partition, table)) = self.partitions.pop_first() {
            for slot in &table.slots {
                if let Some(record) = table.record(partition, slot) {
                    take(record);
                }
            }
        }
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
            table.reserve(s.partition, usize::try_from(s.end - s.from).unwrap_or(0));
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

    /// Records as a checkpoint file holds them.
    fn checkpoint_records(records: &[(&str, &[u8])]) -> Records {
        let identity = crate::checkpoint::Identity {
            topic_prefix: "t.".into(),
            cluster_id: "c".into(),
            topic: "t.incident-state".into(),
        };
        let bytes = crate::checkpoint::encode(&identity, 2, 10, 0, None, records);
        crate::checkpoint::decode(&bytes, &identity, 2)
            .unwrap_or_else(|e| panic!("{e}"))
            .records
    }

    /// (offset, payload) of `key`'s last record in `partition`.
    fn last(table: &Table, partition: i32, key: &str) -> Option<(i64, Vec<u8>)> {
        table
            .get(partition, key)
            .map(|r| (r.offset, r.payload.to_vec()))
    }

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
        table.offer(Some(b"c"), 5, 0, None);
        assert_eq!(
            (table.records, table.bytes, table.keyless, table.tombstones),
            (8, 8, 2, 3)
        );
        assert_eq!(last(&table, 0, "a"), Some((1, b"a2".to_vec())));
        assert_eq!(last(&table, 1, "b"), None);
        assert_eq!(table.live(), 1);
        // A key written again after its tombstone lives again.
        table.offer(Some(b"b"), 1, 5, Some(b"b2"));
        assert_eq!(table.live(), 2);
        assert_eq!(last(&table, 1, "b"), Some((5, b"b2".to_vec())));
    }

    #[test]
    fn a_longer_or_shorter_record_replaces_the_whole_payload() {
        let mut table = Table::default();
        table.offer(Some(b"a"), 0, 0, Some(b"abc"));
        table.offer(Some(b"a"), 0, 1, Some(b"xyz"));
        assert_eq!(last(&table, 0, "a"), Some((1, b"xyz".to_vec())));
        table.offer(Some(b"a"), 0, 2, Some(b"longer"));
        assert_eq!(last(&table, 0, "a"), Some((2, b"longer".to_vec())));
        table.offer(Some(b"a"), 0, 3, Some(b"s"));
        assert_eq!(last(&table, 0, "a"), Some((3, b"s".to_vec())));
        assert_eq!(table.live(), 1);
    }

    #[test]
    fn a_tombstone_after_a_seeded_checkpoint_removes_the_key() {
        let mut table = Table::default();
        table.seed(2, 10, checkpoint_records(&[("a", b"a1"), ("b", b"b1")]));
        table.offer(Some(b"a"), 2, 10, None);
        table.offer(Some(b"b"), 2, 11, Some(b"b2"));
        assert_eq!((table.seeded, table.records, table.live()), (2, 2, 1));
        assert_eq!(last(&table, 2, "b"), Some((11, b"b2".to_vec())));
    }

    #[test]
    fn keys_are_kept_apart_by_partition_and_records_larger_than_a_chunk_are_kept_whole() {
        let mut table = Table::default();
        let big = vec![7u8; CHUNK_BYTES + 10];
        table.offer(Some(b"k"), 0, 0, Some(b"zero"));
        table.offer(Some(b"k"), 1, 0, Some(&big));
        table.offer(Some(b"small"), 1, 1, Some(b"s"));
        assert_eq!(last(&table, 0, "k"), Some((0, b"zero".to_vec())));
        assert_eq!(last(&table, 1, "k"), Some((0, big.clone())));
        assert_eq!(last(&table, 1, "small"), Some((1, b"s".to_vec())));
    }

    #[test]
    fn many_keys_survive_the_hash_table_growing_and_drain_hands_each_over_once() {
        let mut table = Table::default();
        // No reservation: the slots are rehashed several times on the way.
        for k in 0..50_000u32 {
            let key = format!("incident-{k}");
            table.offer(
                Some(key.as_bytes()),
                (k % 3) as i32,
                i64::from(k),
                Some(&k.to_le_bytes()),
            );
        }
        for k in (0..50_000u32).step_by(2) {
            let key = format!("incident-{k}");
            table.offer(
                Some(key.as_bytes()),
                (k % 3) as i32,
                50_000 + i64::from(k),
                None,
            );
        }
        assert_eq!(table.live(), 25_000);
        assert_eq!(table.iter().count(), 25_000);
        let mut seen = std::collections::BTreeMap::new();
        let mut partitions = Vec::new();
        table.drain(|r| {
            let k: u32 = r.key.trim_start_matches("incident-").parse().expect("key");
            assert_eq!(r.payload, k.to_le_bytes());
            assert_eq!((r.partition, r.offset), ((k % 3) as i32, i64::from(k)));
            if partitions.last() != Some(&r.partition) {
                partitions.push(r.partition);
            }
            assert!(seen.insert(k, ()).is_none(), "{k} handed over twice");
        });
        assert_eq!(seen.len(), 25_000);
        assert!(seen.keys().all(|k| k % 2 == 1));
        // Partition by partition, each once.
        assert_eq!(partitions, [0, 1, 2]);
    }
}
