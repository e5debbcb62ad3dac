//! Partition ownership. The range assignor gives an instance the same partition numbers of
//! help events and commands (they are co-partitioned), so "partition N" means one slice of
//! grids. On assignment the desk is rebuilt for those partitions from incident-state (the
//! compacted latest snapshot of every open or recently closed incident), which the router
//! writes in the same transactions as its incident events and input offsets: the table holds
//! exactly the decisions whose inputs are marked consumed. Restore work follows what is open,
//! not the length of the incident-events history.

use crate::domain::Desk;
use crate::telemetry;
use helpgrid_common::health::{Health, Readiness};
use helpgrid_common::kafka::KafkaArgs;
use helpgrid_common::time::now_millis;
use helpgrid_common::topics::Topics;
use helpgrid_proto::pb::Incident;
use prost::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::collections::{BTreeSet, HashSet};
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
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Ownership {
    pub fn new(desk: Desk, kafka: KafkaArgs, topics: Topics, health: Health) -> Arc<Self> {
        Arc::new(Self {
            desk: Mutex::new(desk),
            owned: Mutex::new(BTreeSet::new()),
            generation: AtomicU64::new(0),
            failure: Mutex::new(None),
            restoring: std::sync::atomic::AtomicBool::new(false),
            kafka,
            topics,
            health,
        })
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

    fn input_partitions(&self, tpl: &TopicPartitionList) -> BTreeSet<i32> {
        tpl.elements()
            .iter()
            .filter(|e| {
                e.topic() == self.topics.help_events || e.topic() == self.topics.incident_commands
            })
            .map(|e| e.partition())
            .collect()
    }

    fn restore(&self, partitions: &BTreeSet<i32>) -> Result<usize, KafkaError> {
        let reader: BaseConsumer = self
            .kafka
            .reader_config("helpgrid-router-restore")
            .create()?;
        let mut tpl = TopicPartitionList::new();
        for p in partitions {
            tpl.add_partition_offset(&self.topics.incident_state, *p, Offset::Beginning)?;
        }
        reader.assign(&tpl)?;
        let mut pending: HashSet<i32> = partitions.iter().copied().collect();
        let started = Instant::now();
        let now = now_millis();
        let mut restored = 0;
        let mut desk = self.desk();
        while !pending.is_empty() {
            if started.elapsed() > RESTORE_TIMEOUT {
                return Err(KafkaError::Canceled);
            }
            match reader.poll(Duration::from_millis(500)) {
                None => {}
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    pending.remove(&p);
                }
                Some(Err(error)) => {
                    tracing::warn!(%error, "reading incident events to restore; retrying")
                }
                Some(Ok(message)) => {
                    restored += 1;
                    match message.payload().map(Incident::decode) {
                        Some(Ok(incident)) => {
                            desk.restore_incident(message.partition(), &incident, now);
                        }
                        // A tombstone: the incident was closed and is past the window.
                        None => {
                            if let Some(key) = message.key() {
                                desk.forget(&String::from_utf8_lossy(key));
                            }
                        }
                        Some(Err(error)) => tracing::error!(
                            partition = message.partition(),
                            offset = message.offset(),
                            %error,
                            "undecodable incident-state record skipped while restoring"
                        ),
                    }
                }
            }
        }
        metrics::counter!(telemetry::RESTORED_EVENTS).increment(restored as u64);
        telemetry::set_open_incidents(desk.open_count());
        Ok(restored)
    }
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
        if let Rebalance::Revoke(tpl) = rebalance {
            metrics::counter!(telemetry::REBALANCES, "kind" => "revoke").increment(1);
            let revoked = own.input_partitions(tpl);
            let mut desk = own.desk();
            for p in &revoked {
                desk.drop_partition(*p);
            }
            lock(&own.owned).retain(|p| !revoked.contains(p));
            tracing::info!(partitions = ?revoked, "partitions revoked");
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
            Ok(events) => {
                lock(&own.owned).extend(assigned.iter().copied());
                tracing::info!(partitions = ?assigned, events, stable_ms, elapsed_ms = started.elapsed().as_millis() as u64, "partitions assigned and state restored");
            }
            Err(error) => {
                tracing::error!(%error, partitions = ?assigned, "restoring state failed");
                *lock(&own.failure) =
                    Some(format!("restoring partitions {assigned:?} failed: {error}"));
            }
        }
    }
}
