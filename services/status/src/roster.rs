//! The roster: who can respond. The compacted roster topic (key = responder id, value = the
//! full `RosterRecord`, empty = deleted) is followed into an in-memory table; changes are
//! published as full records, which is what the router reads.
//!
//! A write returns once Kafka has acknowledged it, and — within the write timeout — once the
//! table has read it back, so a Get right after an Upsert on this instance sees the change.
//! Writes through this instance are serialised, so SetDuty and UpdateLocation on the same
//! responder cannot overwrite each other's change.

use crate::telemetry;
use helpgrid_common::envelope::new_envelope;
use helpgrid_common::reader::{Feed, Record};
use helpgrid_common::time::{now_millis, to_timestamp};
use helpgrid_proto::pb::{GeoPoint, Responder, RosterRecord};
use prost::Message;
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::collections::HashMap;
use std::sync::{PoisonError, RwLock};
use std::time::Duration;
use tokio::sync::{Mutex, mpsc, watch};

/// The `source` written in the envelope of every roster record.
const ROSTER_SOURCE: &str = "helpgrid-status";

#[derive(Debug, thiserror::Error)]
pub enum RosterError {
    #[error(
        "responder {responder_id:?} is not on the roster; create them with UpsertResponder first"
    )]
    NotFound { responder_id: String },
    #[error(
        "could not publish the roster change to Kafka topic {topic} ({source}); retry when Kafka is reachable"
    )]
    Publish { topic: String, source: KafkaError },
}

/// Responders by id, as the roster topic says. Pure.
#[derive(Debug, Default)]
pub struct RosterTable {
    responders: HashMap<String, Responder>,
}

impl RosterTable {
    /// `None` is a tombstone: the responder was deleted.
    pub fn apply(&mut self, responder_id: &str, responder: Option<Responder>) {
        match responder {
            Some(responder) => {
                self.responders.insert(responder_id.to_owned(), responder);
            }
            None => {
                self.responders.remove(responder_id);
            }
        }
    }

    pub fn get(&self, responder_id: &str) -> Option<&Responder> {
        self.responders.get(responder_id)
    }

    /// Responders covering `grid_id` (all if `None`), sorted by id for stable output.
    pub fn list(&self, grid_id: Option<&str>, on_duty_only: bool) -> Vec<Responder> {
        let mut found: Vec<Responder> = self
            .responders
            .values()
            .filter(|r| grid_id.is_none_or(|g| r.grid_ids.iter().any(|id| id == g)))
            .filter(|r| !on_duty_only || r.on_duty)
            .cloned()
            .collect();
        found.sort_by(|a, b| a.responder_id.cmp(&b.responder_id));
        found
    }
}

/// The roster table of this instance, and the way to change the roster.
pub struct Roster {
    table: RwLock<RosterTable>,
    /// Offset of the last record applied, per partition; writers wait on it to read back.
    applied: watch::Sender<HashMap<i32, i64>>,
    producer: FutureProducer,
    topic: String,
    /// Serialises read-modify-write of this instance (see the module comment).
    write_lock: Mutex<()>,
    /// Bound on publishing one record and reading it back.
    write_timeout: Duration,
}

impl Roster {
    pub fn new(producer: FutureProducer, topic: String, write_timeout: Duration) -> Self {
        Self {
            table: RwLock::new(RosterTable::default()),
            applied: watch::Sender::new(HashMap::new()),
            producer,
            topic,
            write_lock: Mutex::new(()),
            write_timeout,
        }
    }

    pub fn get(&self, responder_id: &str) -> Result<Responder, RosterError> {
        self.read_table()
            .get(responder_id)
            .cloned()
            .ok_or_else(|| RosterError::NotFound {
                responder_id: responder_id.to_owned(),
            })
    }

    pub fn list(&self, grid_id: Option<&str>, on_duty_only: bool) -> Vec<Responder> {
        self.read_table().list(grid_id, on_duty_only)
    }

    /// Writes `responder` as their full new state (validated by the caller).
    pub async fn upsert(&self, mut responder: Responder) -> Result<Responder, RosterError> {
        let _writing = self.write_lock.lock().await;
        if responder.last_location.is_some() && responder.location_updated_at.is_none() {
            responder.location_updated_at = Some(to_timestamp(now_millis()));
        }
        self.publish(responder, "upsert").await
    }

    pub async fn set_duty(
        &self,
        responder_id: &str,
        on_duty: bool,
    ) -> Result<Responder, RosterError> {
        let _writing = self.write_lock.lock().await;
        let mut responder = self.get(responder_id)?;
        responder.on_duty = on_duty;
        self.publish(responder, "set_duty").await
    }

    pub async fn update_location(
        &self,
        responder_id: &str,
        location: GeoPoint,
    ) -> Result<Responder, RosterError> {
        let _writing = self.write_lock.lock().await;
        let mut responder = self.get(responder_id)?;
        responder.last_location = Some(location);
        responder.location_updated_at = Some(to_timestamp(now_millis()));
        self.publish(responder, "update_location").await
    }

    async fn publish(
        &self,
        responder: Responder,
        operation: &'static str,
    ) -> Result<Responder, RosterError> {
        let record = RosterRecord {
            envelope: Some(new_envelope(ROSTER_SOURCE, now_millis())),
            responder: Some(responder.clone()),
        };
        let payload = record.encode_to_vec();
        let delivery = self
            .producer
            .send(
                FutureRecord::to(&self.topic)
                    .key(&responder.responder_id)
                    .payload(&payload),
                self.write_timeout,
            )
            .await
            .map_err(|(source, _)| RosterError::Publish {
                topic: self.topic.clone(),
                source,
            })?;
        telemetry::roster_write(operation);
        let mut applied = self.applied.subscribe();
        let read_back = applied.wait_for(|a| {
            a.get(&delivery.partition)
                .is_some_and(|o| *o >= delivery.offset)
        });
        if tokio::time::timeout(self.write_timeout, read_back)
            .await
            .is_err()
        {
            // Written and durable; only this instance's table is behind. Say so, do not fail.
            tracing::warn!(
                responder_id = %responder.responder_id,
                partition = delivery.partition,
                offset = delivery.offset,
                "roster change written but not yet read back; reads here may briefly show the old state"
            );
        }
        tracing::info!(responder_id = %responder.responder_id, operation, on_duty = responder.on_duty, "roster updated");
        Ok(responder)
    }

    /// Applies one record of the roster topic. Undecodable records are counted and skipped.
    pub fn apply_record(&self, topic: &str, record: &Record) {
        let key = record.key.as_deref().map(String::from_utf8_lossy);
        match (key, record.payload.as_deref()) {
            (Some(id), None | Some([])) => self.write_table().apply(&id, None),
            (Some(id), Some(payload)) => match RosterRecord::decode(payload) {
                Ok(RosterRecord {
                    responder: Some(responder),
                    ..
                }) => self.write_table().apply(&id, Some(responder)),
                Ok(RosterRecord {
                    responder: None, ..
                }) => undecodable(topic, record, "record has no responder"),
                Err(error) => undecodable(topic, record, &error.to_string()),
            },
            (None, _) => undecodable(topic, record, "record has no key"),
        }
        self.applied.send_modify(|applied| {
            applied.insert(record.partition, record.offset);
        });
    }

    fn read_table(&self) -> std::sync::RwLockReadGuard<'_, RosterTable> {
        // Table updates are single map operations: a panic cannot leave one half-done.
        self.table.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_table(&self) -> std::sync::RwLockWriteGuard<'_, RosterTable> {
        self.table.write().unwrap_or_else(PoisonError::into_inner)
    }
}

fn undecodable(topic: &str, record: &Record, reason: &str) {
    telemetry::undecodable_record(topic);
    tracing::warn!(
        topic,
        partition = record.partition,
        offset = record.offset,
        reason,
        "skipping undecodable roster record"
    );
}

/// Applies the roster feed to `roster` until the feed ends; flips `caught_up` once the table
/// holds everything that was on the topic at start-up.
pub async fn keep_roster_table(
    roster: &Roster,
    topic: &str,
    mut feed: mpsc::Receiver<Feed>,
    caught_up: watch::Sender<bool>,
) {
    while let Some(item) = feed.recv().await {
        match item {
            Feed::Record(record) => roster.apply_record(topic, &record),
            Feed::CaughtUp => {
                tracing::info!(
                    topic,
                    responders = roster.list(None, false).len(),
                    "roster table caught up"
                );
                caught_up.send_replace(true);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn responder(id: &str, grids: &[&str], on_duty: bool) -> Responder {
        Responder {
            responder_id: id.into(),
            grid_ids: grids.iter().map(|g| (*g).to_owned()).collect(),
            on_duty,
            ..Default::default()
        }
    }

    #[test]
    fn a_tombstone_removes_the_responder() {
        let mut table = RosterTable::default();
        table.apply("r1", Some(responder("r1", &["g1"], true)));
        table.apply("r1", None);
        assert!(table.get("r1").is_none());
    }

    #[test]
    fn list_filters_by_grid_and_duty_sorted_by_id() {
        let mut table = RosterTable::default();
        table.apply("r2", Some(responder("r2", &["g1", "g2"], true)));
        table.apply("r1", Some(responder("r1", &["g1"], false)));
        table.apply("r3", Some(responder("r3", &["g3"], true)));
        let ids =
            |list: Vec<Responder>| list.into_iter().map(|r| r.responder_id).collect::<Vec<_>>();
        assert_eq!(ids(table.list(Some("g1"), false)), ["r1", "r2"]);
        assert_eq!(ids(table.list(Some("g1"), true)), ["r2"]);
        assert_eq!(ids(table.list(None, true)), ["r2", "r3"]);
    }
}
