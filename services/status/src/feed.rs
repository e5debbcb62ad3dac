//! The incident-events feed: every record of the topic, in order per partition, goes into the
//! read model; each applied event is then offered to live watchers and to the command
//! waiting for it. An undecodable record is counted, logged and stepped over — it never
//! stalls the feed.

use crate::commands::PendingCommands;
use crate::read_model::{LoggedEvent, ReadModel};
use crate::telemetry;
use helpgrid_common::reader::{Feed, Record};
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
        Self(Arc::new(RwLock::new(ReadModel::new(partitions))))
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
            let applied = model.apply(record.partition, record.offset, event);
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
