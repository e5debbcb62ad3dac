//! Local checkpoints of the incident-state partitions this instance owns, so a restart
//! restores from a file plus the changelog written after it instead of the whole changelog.
//!
//! A checkpoint of partition p is the desk's incidents of p (their snapshot bytes are exactly
//! the incident-state records) and the changelog position they reflect: the offset after the
//! last incident-state record of p this instance wrote in a COMMITTED transaction (from the
//! producer's delivery reports), or the position its restore reached. It is taken only where
//! the desk equals the committed changelog: right after a commit, or on an idle turn with
//! nothing decided. With it goes the checkpoint's anchor, that last record's offset, key and
//! timestamp. A restore that finds a checkpoint checks it (see
//! [`helpgrid_common::checkpoint`]), reads the anchor record again, and reads the changelog
//! from its position on; any doubt means a full read of the partition, as without a
//! checkpoint.

use crate::config::CheckpointConfig;
use crate::domain::Desk;
use crate::telemetry;
use helpgrid_common::checkpoint::{self, Anchor, Identity, Refused};
use helpgrid_common::table::{Table, TableReader};
use helpgrid_common::time::now_millis;
use rdkafka::ClientContext;
use rdkafka::message::Message;
use rdkafka::producer::{DeliveryResult, ProducerContext};
use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a restore waits for the anchor records of its checkpoints (one fetch).
const ANCHOR_TIMEOUT: Duration = Duration::from_secs(30);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The router producer's context: remembers the last incident-state record delivered per
/// partition (offset, key, timestamp), which the pipeline hands to [`Checkpoints::committed`]
/// once the transaction holding them has committed.
pub struct StateWrites {
    topic: String,
    last_records: Mutex<BTreeMap<i32, Anchor>>,
}

impl StateWrites {
    pub fn new(incident_state_topic: &str) -> Self {
        Self {
            topic: incident_state_topic.to_owned(),
            last_records: Mutex::new(BTreeMap::new()),
        }
    }

    /// The last delivered record per partition since the previous call.
    pub fn take(&self) -> BTreeMap<i32, Anchor> {
        std::mem::take(&mut *lock(&self.last_records))
    }
}

impl ClientContext for StateWrites {}

impl ProducerContext for StateWrites {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Ok(m) = result
            && m.topic() == self.topic
        {
            let mut last = lock(&self.last_records);
            if last
                .get(&m.partition())
                .is_none_or(|known| known.offset < m.offset())
            {
                last.insert(
                    m.partition(),
                    Anchor {
                        offset: m.offset(),
                        timestamp_ms: m.timestamp().to_millis().unwrap_or(-1),
                        key: m.key().unwrap_or_default().into(),
                    },
                );
            }
        }
    }
}

/// Encoding a checkpoint holds the pipeline's thread (the desk is its own); the next periodic
/// round waits at least this many times as long as the last encoding took, so periodic
/// checkpoints take about 1 % of the pipeline's time at most, however large the desk (a
/// flood's 774,000 incidents, 233 MB, took up to 0.67 s to encode and write the first file).
const PIPELINE_SHARE: u32 = 100;

/// What the desk of one owned partition reflects, and what its checkpoint holds.
#[derive(Debug, Clone)]
struct Covered {
    /// Every incident-state record of the partition before this offset is in the desk.
    reflected: i64,
    /// The record at `reflected - 1` (None: the desk reflects no record of the partition).
    anchor: Option<Anchor>,
    /// Position of the last checkpoint written since the partition was restored.
    checkpointed: Option<i64>,
}

/// The checkpoints of one router pipeline.
pub struct Checkpoints {
    config: CheckpointConfig,
    topic_prefix: String,
    topic: String,
    /// Known once the cluster id has been asked (at the first restore); no checkpoint is
    /// read or written before, nor when the cluster does not tell its id.
    identity: Mutex<Option<Identity>>,
    partitions: Mutex<BTreeMap<i32, Covered>>,
    /// When periodic checkpoints are next due (see [`PIPELINE_SHARE`]).
    next_round: Mutex<Instant>,
    /// The round of writes in flight: one at a time.
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl Checkpoints {
    pub fn new(config: CheckpointConfig, topic_prefix: &str, topic: &str) -> Self {
        Self {
            config,
            topic_prefix: topic_prefix.to_owned(),
            topic: topic.to_owned(),
            identity: Mutex::new(None),
            partitions: Mutex::new(BTreeMap::new()),
            next_round: Mutex::new(Instant::now()),
            writer: Mutex::new(None),
        }
    }

    /// Asks the cluster's id through `reader` once.
    pub fn learn_identity(&self, reader: &TableReader) {
        let mut identity = lock(&self.identity);
        if identity.is_some() {
            return;
        }
        match reader.cluster_id() {
            Some(cluster_id) => {
                *identity = Some(Identity {
                    topic_prefix: self.topic_prefix.clone(),
                    cluster_id,
                    topic: self.topic.clone(),
                });
            }
            None => tracing::warn!(
                "the Kafka cluster did not tell its id: no local checkpoints this time"
            ),
        }
    }

    /// Seeds `table` with the checkpoint of each partition of `ranges` ((partition, its
    /// committed offsets now)) that is usable now and whose anchor record `reader` still
    /// finds; returns, per partition seeded, the position to read the changelog from and the
    /// checkpoint's anchor. The others are refused (logged, counted, their files removed).
    pub fn seed(
        &self,
        table: &mut Table,
        reader: &TableReader,
        ranges: &[(i32, (i64, i64))],
    ) -> BTreeMap<i32, (i64, Option<Anchor>)> {
        let mut seeded = BTreeMap::new();
        let Some(identity) = lock(&self.identity).clone() else {
            return seeded;
        };
        let max_age_ms = self.config.max_age.as_millis() as i64;
        let mut candidates = Vec::new();
        for (partition, range) in ranges.iter().copied() {
            let found = checkpoint::read(&self.config.dir, &identity, partition).and_then(|c| {
                checkpoint::usable(c.position, c.taken_at_ms, range, now_millis(), max_age_ms)
                    .map(|()| c)
            });
            match found {
                Ok(c) => candidates.push((partition, range.0, c)),
                Err(Refused::Missing) => {}
                Err(reason) => self.refuse(partition, &reason),
            }
        }
        let at: Vec<(i32, i64)> = candidates
            .iter()
            .filter_map(|(p, _, c)| c.anchor.as_ref().map(|a| (*p, a.offset)))
            .collect();
        let found = match reader.first_records(&at, ANCHOR_TIMEOUT) {
            Ok(found) => found,
            Err(error) => {
                tracing::warn!(%error, "cannot read the records the local checkpoints end at; restoring those partitions from incident-state");
                return seeded;
            }
        };
        for (partition, low, c) in candidates {
            if let Err(reason) = checkpoint::anchored(&c, low, found.get(&partition)) {
                self.refuse(partition, &reason);
                continue;
            }
            metrics::counter!(telemetry::RESTORED_FROM_CHECKPOINT)
                .increment(c.records.len() as u64);
            seeded.insert(partition, (c.position, c.anchor));
            table.seed(partition, c.position, c.records);
        }
        seeded
    }

    /// A checkpoint not used: counted, logged, and removed (the next checkpoint replaces it).
    fn refuse(&self, partition: i32, reason: &Refused) {
        let kind = match reason {
            Refused::Missing => "missing",
            Refused::Io(_) => "io",
            Refused::Corrupt(_) => "corrupt",
            Refused::OtherIdentity { .. } | Refused::OtherPartition { .. } => "other_identity",
            Refused::OutOfRange { .. } => "out_of_range",
            Refused::Stale { .. } => "stale",
            Refused::OtherRecord { .. } | Refused::Unanchored { .. } => "other_record",
        };
        metrics::counter!(telemetry::CHECKPOINTS_REFUSED, "reason" => kind).increment(1);
        tracing::warn!(partition, %reason, dir = %self.config.dir.display(), "local checkpoint not used; restoring the partition from incident-state");
        checkpoint::remove(&self.config.dir, partition);
    }

    /// A restore of `partition` reached `position`, the record before it being `anchor`;
    /// `unchanged_checkpoint`: it started at a checkpoint taken there (and read nothing after
    /// it), which is then still current.
    pub fn restored(
        &self,
        partition: i32,
        position: i64,
        anchor: Option<Anchor>,
        unchanged_checkpoint: bool,
    ) {
        lock(&self.partitions).insert(
            partition,
            Covered {
                reflected: position,
                anchor,
                checkpointed: unchanged_checkpoint.then_some(position),
            },
        );
    }

    /// Partitions no longer owned: nothing more is checkpointed for them. Their files stay;
    /// if the partition comes back, its restore checks the file against the changelog.
    pub fn revoked(&self, partitions: impl IntoIterator<Item = i32>) {
        let mut owned = lock(&self.partitions);
        for p in partitions {
            owned.remove(&p);
        }
    }

    /// A transaction committed; `last_records`: its last incident-state record per
    /// partition.
    pub fn committed(&self, last_records: BTreeMap<i32, Anchor>) {
        let mut owned = lock(&self.partitions);
        for (p, record) in last_records {
            if let Some(c) = owned.get_mut(&p)
                && record.offset + 1 > c.reflected
            {
                c.reflected = record.offset + 1;
                c.anchor = Some(record);
            }
        }
    }

    /// Writes the checkpoints that are due, from `desk`, which must equal the committed
    /// changelog (right after a commit, or on a turn that decided nothing). Due: a partition
    /// restored and not yet checkpointed, or changed since its checkpoint when the interval
    /// has passed; with `wait` (shutdown), every changed partition, and the call returns when
    /// the files are on disk. The files are written on a thread of their own.
    pub fn write_due(&self, desk: &Desk, wait: bool) {
        // Called on every pipeline turn, and on almost every one nothing is due: the interval
        // has not passed and every partition has had its first checkpoint. Know that first.
        let interval_passed = Instant::now() >= *lock(&self.next_round);
        if !wait
            && !interval_passed
            && lock(&self.partitions)
                .values()
                .all(|c| c.checkpointed.is_some())
        {
            return;
        }
        let Some(identity) = lock(&self.identity).clone() else {
            return;
        };
        if desk.has_pending_tombstones() {
            // A restore forgot closed incidents whose tombstones the next transaction
            // writes; a checkpoint now would lose them (nothing would tombstone them later).
            return;
        }
        {
            let mut writer = lock(&self.writer);
            if !wait && writer.as_ref().is_some_and(|w| !w.is_finished()) {
                return;
            }
            if let Some(w) = writer.take() {
                let _ = w.join();
            }
        }
        let due: BTreeMap<i32, (i64, Option<Anchor>)> = lock(&self.partitions)
            .iter()
            .filter(|(_, c)| {
                c.checkpointed != Some(c.reflected)
                    && (wait || interval_passed || c.checkpointed.is_none())
            })
            .map(|(p, c)| (*p, (c.reflected, c.anchor.clone())))
            .collect();
        if due.is_empty() {
            return;
        }
        let started = Instant::now();
        let mut records: BTreeMap<i32, Vec<(&str, &[u8])>> =
            due.keys().map(|p| (*p, Vec::new())).collect();
        for (id, partition, record) in desk.records() {
            if let Some(r) = records.get_mut(&partition) {
                r.push((id, record));
            }
        }
        let taken_at = now_millis();
        let files: Vec<(i32, i64, usize, Vec<u8>)> = records
            .into_iter()
            .map(|(p, r)| {
                let (position, anchor) = due.get(&p).cloned().unwrap_or_default();
                let bytes =
                    checkpoint::encode(&identity, p, position, taken_at, anchor.as_ref(), &r);
                (p, position, r.len(), bytes)
            })
            .collect();
        {
            let mut owned = lock(&self.partitions);
            for (p, position, ..) in &files {
                if let Some(c) = owned.get_mut(p) {
                    c.checkpointed = Some(*position);
                }
            }
        }
        let encoding = started.elapsed();
        *lock(&self.next_round) =
            Instant::now() + self.config.interval.max(encoding * PIPELINE_SHARE);
        let encode_ms = encoding.as_millis() as u64;
        let dir = self.config.dir.clone();
        let round = std::thread::spawn(move || {
            let started = Instant::now();
            for (partition, position, incidents, bytes) in files {
                match checkpoint::write(&dir, partition, &bytes) {
                    Ok(()) => {
                        metrics::counter!(telemetry::CHECKPOINTS_WRITTEN, "result" => "ok")
                            .increment(1);
                        metrics::counter!(telemetry::CHECKPOINT_BYTES)
                            .increment(bytes.len() as u64);
                        tracing::info!(
                            partition,
                            position,
                            incidents,
                            bytes = bytes.len(),
                            "local checkpoint written"
                        );
                    }
                    Err(error) => {
                        metrics::counter!(telemetry::CHECKPOINTS_WRITTEN, "result" => "failed")
                            .increment(1);
                        tracing::warn!(partition, %error, dir = %dir.display(), "local checkpoint not written; the next restore of this partition reads incident-state from its start");
                    }
                }
            }
            let seconds = started.elapsed().as_secs_f64() + encode_ms as f64 / 1000.0;
            metrics::histogram!(telemetry::CHECKPOINT_SECONDS).record(seconds);
            // At most one round per --checkpoint-interval-s: info, so operators (and the
            // restore benchmark, which waits for it) see what a round costs.
            tracing::info!(
                encode_ms,
                write_ms = started.elapsed().as_millis() as u64,
                "checkpoint round done"
            );
        });
        if wait {
            let _ = round.join();
        } else {
            *lock(&self.writer) = Some(round);
        }
    }
}
