//! Kafka → read model. At start-up the incident snapshots come from incident-state (open and
//! recently closed incidents only), then the incident-events feed takes over: every record,
//! in order per partition, goes into the read model; each applied event is then offered to
//! live watchers and to the command waiting for it. An undecodable record is counted, logged
//! and stepped over — it never stalls the feed.
//!
//! Why no event is missed between the two: the events feed starts at or before the end of
//! incident-events taken BEFORE incident-state is read. The router writes an incident's
//! events and its snapshot in one transaction, so any change not in the snapshots read is in
//! an event at or after that end; changes in both are applied once (older revisions change
//! no snapshot).

use crate::commands::PendingCommands;
use crate::read_model::{LoggedEvent, ReadModel};
use crate::telemetry;
use helpgrid_common::reader::{Feed, Record};
use helpgrid_common::table::Table;
use helpgrid_proto::encoded_incident;
use helpgrid_proto::pb::IncidentEvent;
use prost::Message;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use tokio::sync::{broadcast, mpsc, watch};

/// The read model shared by the feed (the one writer) and the gRPC handlers (readers).
/// Guards are never held across an await.
#[derive(Debug, Clone)]
pub struct SharedReadModel(Arc<RwLock<ReadModel>>);

impl SharedReadModel {
    pub fn new(partitions: usize) -> Self {
        Self::from_model(ReadModel::new(partitions))
    }

    pub fn from_model(model: ReadModel) -> Self {
        Self(Arc::new(RwLock::new(model)))
    }

    pub fn read(&self) -> RwLockReadGuard<'_, ReadModel> {
        // `ReadModel::apply` has no panicking paths between its updates; a poisoned lock
        // still holds a usable model.
        self.0.read().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn write(&self) -> RwLockWriteGuard<'_, ReadModel> {
        self.0.write().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Where applied events go besides the read model.
pub struct IncidentFeed {
    pub read_model: SharedReadModel,
    /// Live watchers subscribe here; sending with nobody subscribed is fine.
    pub live: broadcast::Sender<LoggedEvent>,
    pub pending: Arc<PendingCommands>,
    /// The incident-events topic, for logs and metrics.
    pub topic: String,
}

/// What a restore from incident-state read.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Restored {
    /// Records read: snapshots and tombstones, superseded ones included.
    pub records: u64,
    /// Bytes of their values.
    pub bytes: u64,
    /// Snapshots decoded into the read model: one per incident not tombstoned.
    pub snapshots: u64,
    /// Milliseconds the read waited for fetches (see [`Table::waited`]).
    pub waited_ms: u64,
}

/// Loads incident-state, read whole with each incident's last record kept as read (see
/// [`helpgrid_common::table`]), into the read model: each surviving snapshot is decoded once
/// and its bytes stored as they are.
pub fn restore_from_state(table: Table, read_model: &SharedReadModel, topic: &str) -> Restored {
    let mut restored = Restored {
        records: table.records,
        bytes: table.bytes,
        snapshots: 0,
        waited_ms: table.waited.as_millis() as u64,
    };
    let mut model = read_model.write();
    model.reserve(table.live());
    // Tombstoned incidents (closed and past the router's window) are not in the table.
    table.drain(|last| {
        restored.snapshots += 1;
        if let Err(error) = model.restore_record(last.partition, last.payload) {
            telemetry::undecodable_record(topic);
            tracing::warn!(topic, partition = last.partition, offset = last.offset, %error, "skipping undecodable incident-state record");
        }
    });
    restored
}

impl IncidentFeed {
    /// Applies the feed until it ends; flips `caught_up` once the read model holds everything
    /// that was on the topic at start-up.
    pub async fn keep_read_model(
        self,
        mut feed: mpsc::Receiver<Feed>,
        caught_up: watch::Sender<bool>,
    ) {
        while let Some(item) = feed.recv().await {
            match item {
                Feed::Record(record) => self.apply_record(&record),
                Feed::CaughtUp => {
                    let incidents = self.read_model.read().incident_count();
                    telemetry::read_model_incidents(incidents);
                    tracing::info!(topic = %self.topic, incidents, "read model caught up");
                    caught_up.send_replace(true);
                }
            }
        }
    }

    fn apply_record(&self, record: &Record) {
        let decoded = record
            .payload
            .as_deref()
            .ok_or_else(|| "record has no value".to_owned())
            .and_then(|payload| IncidentEvent::decode(payload).map_err(|e| e.to_string()));
        let event = match decoded {
            Ok(event) => event,
            Err(reason) => {
                self.read_model
                    .write()
                    .skip(record.partition, record.offset);
                telemetry::undecodable_record(&self.topic);
                tracing::warn!(
                    topic = %self.topic,
                    partition = record.partition,
                    offset = record.offset,
                    reason,
                    "skipping undecodable incident event"
                );
                return;
            }
        };
        // Apply before telling anyone: a command's answer and a watcher's replay then always
        // find the event in the read model.
        let (applied, incidents) = {
            let mut model = self.read_model.write();
            let raw = record.payload.as_deref().and_then(encoded_incident);
            let applied = model.apply_with_record(record.partition, record.offset, event, raw);
            (applied, model.incident_count())
        };
        let Some(logged) = applied else {
            tracing::debug!(
                partition = record.partition,
                offset = record.offset,
                "incident event already applied"
            );
            return;
        };
        telemetry::read_model_incidents(incidents);
        self.pending.resolve(&logged.event);
        // An error only means no watcher is connected.
        let _ = self.live.send(logged);
    }
}
