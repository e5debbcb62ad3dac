//! Partition ownership. The range assignor gives an instance the same partition numbers of
//! help events and commands (they are co-partitioned), so "partition N" means one slice of
//! grids. On assignment the desk is rebuilt for those partitions from incident-state (the
//! compacted latest snapshot of every open or recently closed incident), which the router
//! writes in the same transactions as its incident events and input offsets: the table holds
//! exactly the decisions whose inputs are marked consumed. Restore work follows what is open,
//! not the length of the incident-events history.

use super::checkpoint::Checkpoints;
use crate::domain::Desk;
use crate::domain::desk::Id;
use crate::telemetry;
use helpgrid_common::checkpoint::Anchor;
use helpgrid_common::health::{Health, Readiness};
use helpgrid_common::kafka::KafkaArgs;
use helpgrid_common::table::{Start, Table, TableReader};
use helpgrid_common::telemetry::process_cpu_seconds;
use helpgrid_common::time::now_millis;
use helpgrid_common::topics::Topics;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, TopicPartitionList};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// How long rebuilding from incident-state may take before the pipeline restarts.
const RESTORE_TIMEOUT: Duration = Duration::from_secs(300);

/// State shared between the pipeline loop and the rebalance callbacks (which run on the
/// pipeline's own thread, inside `poll`).
pub struct Ownership {
    desk: Mutex<Desk>,
    /// Partitions this instance owns now.
    owned: Mutex<BTreeSet<i32>>,
    /// Bumped by every rebalance, so a batch polled across one is dropped, not half-applied.
    generation: AtomicU64,
    /// A restore that failed; the pipeline restarts on it.
    failure: Mutex<Option<String>>,
    /// Set while partitions are being restored, until the next poll after it.
    restoring: std::sync::atomic::AtomicBool,
    kafka: KafkaArgs,
    topics: Topics,
    health: Health,
    /// Local checkpoints of the owned partitions; None: restores read incident-state whole.
    checkpoints: Option<Checkpoints>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Ownership {
    pub fn new(
        desk: Desk,
        kafka: KafkaArgs,
        topics: Topics,
        health: Health,
        checkpoints: Option<crate::config::CheckpointConfig>,
    ) -> Arc<Self> {
        let checkpoints =
            checkpoints.map(|c| Checkpoints::new(c, &kafka.topic_prefix, &topics.incident_state));
        Arc::new(Self {
            desk: Mutex::new(desk),
            owned: Mutex::new(BTreeSet::new()),
            generation: AtomicU64::new(0),
            failure: Mutex::new(None),
            restoring: std::sync::atomic::AtomicBool::new(false),
            kafka,
            topics,
            health,
            checkpoints,
        })
    }

    /// A transaction committed: its last incident-state record per partition (see
    /// [`super::checkpoint::StateWrites`]).
    pub fn committed(&self, last_state_records: BTreeMap<i32, Anchor>) {
        if let Some(c) = &self.checkpoints {
            c.committed(last_state_records);
        }
    }

    /// Writes the local checkpoints that are due. Call only where the desk equals the
    /// committed changelog: after a commit, or on a turn that decided nothing. `wait`: at
    /// shutdown, every changed partition, on disk before this returns.
    pub fn checkpoint(&self, wait: bool) {
        if let Some(c) = &self.checkpoints {
            c.write_due(&self.desk(), wait);
        }
    }

    /// Whether a restore ran since the last call (the batch polled with it is not "caught up").
    pub fn restoring(&self) -> bool {
        self.restoring.swap(false, Ordering::SeqCst)
    }

    pub fn desk(&self) -> MutexGuard<'_, Desk> {
        lock(&self.desk)
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    pub fn owns(&self, partition: i32) -> bool {
        lock(&self.owned).contains(&partition)
    }

    pub fn take_failure(&self) -> Option<String> {
        lock(&self.failure).take()
    }

    /// Partitions this instance no longer owns: their incidents leave the desk, and their
    /// checkpoints stop.
    fn give_up(&self, partitions: &BTreeSet<i32>) {
        let mut desk = self.desk();
        for p in partitions {
            desk.drop_partition(*p);
        }
        lock(&self.owned).retain(|p| !partitions.contains(p));
        if let Some(c) = &self.checkpoints {
            c.revoked(partitions.iter().copied());
        }
    }

    fn input_partitions(&self, tpl: &TopicPartitionList) -> BTreeSet<i32> {
        tpl.elements()
            .iter()
            .filter(|e| {
                e.topic() == self.topics.help_events || e.topic() == self.topics.incident_commands
            })
            .map(|e| e.partition())
            .collect()
    }

    /// Rebuilds the desk for `partitions` from incident-state, in two passes: the table read
    /// keeps each incident's last record as read (see [`helpgrid_common::table`]), starting
    /// from a partition's local checkpoint where one is usable, then, partition by partition,
    /// each surviving snapshot is decoded once and its bytes copied into the desk, which
    /// keeps them as they are, and the partition's raw copy is freed.
    pub fn restore(&self, partitions: &BTreeSet<i32>) -> Result<RestoreFigures, KafkaError> {
        let started = Instant::now();
        let cpu_started = process_cpu_seconds();
        let reader = TableReader::new(
            &self.kafka,
            "helpgrid-router-restore",
            &self.topics.incident_state,
        )?;
        let mut ranges = Vec::with_capacity(partitions.len());
        for p in partitions {
            ranges.push((*p, reader.watermarks(*p)?));
        }
        // After the watermarks: the reader has the cluster's metadata by then, and its id is
        // at hand (asked of a fresh client, librdkafka waited about 1 s for it).
        if let Some(c) = &self.checkpoints {
            c.learn_identity(&reader);
        }
        let reader_ms = started.elapsed().as_millis() as u64;
        let mut table = Table::default();
        let mut checkpointed = match &self.checkpoints {
            Some(c) => c.seed(&mut table, &reader, &ranges),
            None => BTreeMap::new(),
        };
        let starts: Vec<Start> = ranges
            .iter()
            .map(|(p, (low, high))| Start {
                partition: *p,
                from: checkpointed.get(p).map_or(*low, |(position, _)| *position),
                end: *high,
            })
            .collect();
        let checkpoints_ms = started.elapsed().as_millis() as u64 - reader_ms;
        let prepared_ms = started.elapsed().as_millis() as u64;
        let reached = reader.read_into(&mut table, &starts, RESTORE_TIMEOUT)?;
        let checkpointed_partitions = checkpointed.len();
        if let Some(c) = &self.checkpoints {
            for (p, reached) in reached {
                let from_checkpoint = checkpointed.remove(&p);
                let unchanged = from_checkpoint
                    .as_ref()
                    .is_some_and(|(position, _)| *position == reached.position);
                // Nothing read after a checkpoint: its anchor is still the last record.
                let anchor = reached
                    .anchor
                    .or_else(|| from_checkpoint.and_then(|(_, anchor)| anchor));
                c.restored(p, reached.position, anchor, unchanged);
            }
        }
        let mut figures = RestoreFigures {
            records: table.records,
            bytes: table.bytes,
            waited_ms: table.waited.as_millis() as u64,
            checkpointed_partitions,
            checkpointed_records: table.seeded,
            reader_ms,
            checkpoints_ms,
            prepared_ms,
            ..RestoreFigures::default()
        };
        let now = now_millis();
        let mut desk = self.desk();
        desk.reserve(table.live());
        // A tombstoned incident (closed and past the window) is not in the table, and the
        // desk holds nothing of these partitions yet (revoked ones are dropped first). What
        // the desk keeps is allocated here, after the read, partition by partition (see
        // [`helpgrid_common::table`]).
        table.drain(|last| {
            figures.snapshots += 1;
            if let Err(error) = desk.restore_record(
                last.partition,
                Id::from(last.key),
                Box::from(last.payload),
                now,
            ) {
                tracing::error!(
                    partition = last.partition,
                    offset = last.offset,
                    %error,
                    "undecodable incident-state record skipped while restoring"
                );
            }
        });
        figures.seconds = started.elapsed().as_secs_f64();
        figures.cpu_seconds = process_cpu_seconds() - cpu_started;
        metrics::counter!(telemetry::RESTORED_EVENTS).increment(figures.records);
        metrics::counter!(telemetry::RESTORED_BYTES).increment(figures.bytes);
        metrics::histogram!(telemetry::RESTORE_SECONDS).record(figures.seconds);
        telemetry::set_open_incidents(desk.open_count());
        Ok(figures)
    }
}

/// What one restore read and what it cost, for the log, the tests and the restore benchmark.
#[derive(Debug, Default)]
pub struct RestoreFigures {
    /// incident-state records read from Kafka (snapshots and tombstones, superseded ones
    /// included).
    pub records: u64,
    /// Bytes of their values.
    pub bytes: u64,
    /// Time the read waited for fetches (see [`helpgrid_common::table::Table::waited`]).
    pub waited_ms: u64,
    /// Snapshots handed to the desk: one per incident not tombstoned.
    pub snapshots: u64,
    /// Partitions that started from a local checkpoint, and the records taken from them.
    pub checkpointed_partitions: usize,
    pub checkpointed_records: u64,
    /// Time to create the reader, ask the watermarks and learn the cluster id; to load the
    /// checkpoints; and both together.
    pub reader_ms: u64,
    pub checkpoints_ms: u64,
    pub prepared_ms: u64,
    pub seconds: f64,
    /// CPU time of the whole process meanwhile (librdkafka's threads included).
    pub cpu_seconds: f64,
}

/// The consumer context of the pipeline: rebalance callbacks and librdkafka statistics.
pub struct RouterContext {
    pub ownership: Arc<Ownership>,
}

impl ClientContext for RouterContext {
    fn stats(&self, statistics: Statistics) {
        for (topic, t) in &statistics.topics {
            for (partition, p) in &t.partitions {
                if *partition >= 0
                    && let Some(lag) = consumer_lag(p)
                {
                    metrics::gauge!(telemetry::CONSUMER_LAG, "topic" => topic.clone(), "partition" => partition.to_string())
                        .set(lag as f64);
                }
            }
        }
    }
}

/// Records behind the last stable offset (read_committed) of a partition this consumer
/// fetches. librdkafka's own `consumer_lag` counts from the committed offset, which offsets
/// committed through a transaction never update (it stays unknown, or frozen at the
/// assignment's): count from the position handed to the application instead.
fn consumer_lag(p: &rdkafka::statistics::Partition) -> Option<i64> {
    (p.app_offset >= 0 && p.ls_offset >= p.app_offset).then(|| p.ls_offset - p.app_offset)
}

impl ConsumerContext for RouterContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let own = &self.ownership;
        own.generation.fetch_add(1, Ordering::SeqCst);
        match rebalance {
            Rebalance::Revoke(tpl) => {
                metrics::counter!(telemetry::REBALANCES, "kind" => "revoke").increment(1);
                let revoked = own.input_partitions(tpl);
                own.give_up(&revoked);
                tracing::info!(partitions = ?revoked, "partitions revoked");
            }
            // rdkafka answers a rebalance error by dropping the whole assignment (an
            // unassign), so this instance gives up everything, as for a revocation: the
            // next assignment restores what comes back from Kafka onto an empty desk.
            Rebalance::Error(error) => {
                metrics::counter!(telemetry::REBALANCES, "kind" => "error").increment(1);
                let owned = lock(&own.owned).clone();
                own.give_up(&owned);
                tracing::warn!(%error, partitions = ?owned, "rebalance error: every partition given up");
            }
            Rebalance::Assign(_) => {}
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let own = &self.ownership;
        own.generation.fetch_add(1, Ordering::SeqCst);
        let Rebalance::Assign(tpl) = rebalance else {
            return;
        };
        metrics::counter!(telemetry::REBALANCES, "kind" => "assign").increment(1);
        let assigned = own.input_partitions(tpl);
        if assigned.is_empty() {
            return;
        }
        own.health.set(Readiness::Restoring);
        own.restoring.store(true, Ordering::SeqCst);
        // Reading the committed offsets waits until they are stable, i.e. until a transaction
        // of the previous owner is committed or aborted, so its events are all visible below.
        let started = Instant::now();
        if let Err(error) = consumer.committed_offsets((*tpl).clone(), Duration::from_secs(60)) {
            tracing::warn!(%error, "committed offsets not confirmed stable before restore");
        }
        let stable_ms = started.elapsed().as_millis() as u64;
        match own.restore(&assigned) {
            Ok(figures) => {
                lock(&own.owned).extend(assigned.iter().copied());
                tracing::info!(
                    partitions = ?assigned,
                    records = figures.records,
                    bytes = figures.bytes,
                    snapshots = figures.snapshots,
                    checkpointed_partitions = figures.checkpointed_partitions,
                    checkpointed_records = figures.checkpointed_records,
                    reader_ms = figures.reader_ms,
                    waited_ms = figures.waited_ms,
                    checkpoints_ms = figures.checkpoints_ms,
                    prepared_ms = figures.prepared_ms,
                    restore_ms = (figures.seconds * 1000.0) as u64,
                    restore_cpu_ms = (figures.cpu_seconds * 1000.0) as u64,
                    stable_ms,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "partitions assigned and state restored"
                );
            }
            Err(error) => {
                tracing::error!(%error, partitions = ?assigned, "restoring state failed");
                *lock(&own.failure) =
                    Some(format!("restoring partitions {assigned:?} failed: {error}"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Policy;
    use helpgrid_proto::pb::{Incident, IncidentState};
    use prost::Message as _;
    use rdkafka::ClientConfig;
    use rdkafka::error::RDKafkaErrorCode;

    /// A consumer with the router's context that never reaches a broker (none listens on
    /// port 1), and an ownership holding one open incident on each of partitions 0 and 1.
    fn owning_two_partitions() -> (BaseConsumer<RouterContext>, Arc<Ownership>) {
        let topics = Topics::with_prefix("rebalance-test.");
        let ownership = Ownership::new(
            Desk::new(Policy::default()),
            KafkaArgs::new("127.0.0.1:1", "rebalance-test."),
            topics,
            Health::new(),
            None,
        );
        let now = now_millis();
        for partition in [0, 1] {
            let id = format!("inc-p{partition}");
            let incident = Incident {
                incident_id: id.clone(),
                grid_id: format!("grid-{partition}"),
                state: IncidentState::Waiting as i32,
                revision: 1,
                ..Incident::default()
            };
            ownership
                .desk()
                .restore_record(
                    partition,
                    Id::from(id.as_str()),
                    incident.encode_to_vec().into_boxed_slice(),
                    now,
                )
                .expect("a valid record");
            lock(&ownership.owned).insert(partition);
        }
        let consumer = ClientConfig::new()
            .set("bootstrap.servers", "127.0.0.1:1")
            .set("group.id", "rebalance-test")
            .create_with_context(RouterContext {
                ownership: Arc::clone(&ownership),
            })
            .expect("a consumer needs no broker to be created");
        assert_eq!(ownership.desk().open_count(), 2);
        (consumer, ownership)
    }

    #[test]
    fn a_revocation_gives_up_the_revoked_partitions_only() {
        let (consumer, ownership) = owning_two_partitions();
        let mut revoked = TopicPartitionList::new();
        revoked.add_partition(&ownership.topics.help_events, 0);
        revoked.add_partition(&ownership.topics.incident_commands, 0);
        let generation = ownership.generation();
        consumer
            .context()
            .pre_rebalance(&consumer, &Rebalance::Revoke(&revoked));
        assert!(ownership.generation() > generation);
        assert!(!ownership.owns(0));
        assert!(ownership.owns(1));
        let desk = ownership.desk();
        assert_eq!(desk.open_count(), 1);
        assert!(desk.get("inc-p0").is_none());
        assert!(desk.get("inc-p1").is_some());
    }

    #[test]
    fn a_rebalance_error_gives_up_every_partition_as_rdkafka_unassigns_them_all() {
        let (consumer, ownership) = owning_two_partitions();
        let generation = ownership.generation();
        let error = KafkaError::Rebalance(RDKafkaErrorCode::Fail);
        consumer
            .context()
            .pre_rebalance(&consumer, &Rebalance::Error(error));
        assert!(ownership.generation() > generation);
        assert!(!ownership.owns(0) && !ownership.owns(1));
        assert_eq!(ownership.desk().open_count(), 0);
    }
}
