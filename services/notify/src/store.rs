//! The subscription table: a compacted topic every notify instance follows, so a
//! subscription written through any instance reaches all of them. A write goes to Kafka
//! first and is applied locally once Kafka has it (read-your-writes on this instance).

use crate::domain::notice::Notice;
use crate::domain::subscription::Subscription;
use crate::telemetry;
use helpgrid_common::envelope::new_envelope;
use helpgrid_common::reader::Feed;
use helpgrid_common::time::{now_millis, to_timestamp};
use helpgrid_proto::pb::SubscriptionRecord;
use prost::Message as _;
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
#[error("cannot write the subscription to Kafka: {0}")]
pub struct StoreError(String);

pub struct SubscriptionStore {
    table: RwLock<BTreeMap<String, Arc<Subscription>>>,
    producer: FutureProducer,
    topic: String,
}

impl SubscriptionStore {
    pub fn new(producer: FutureProducer, topic: String) -> Self {
        Self {
            table: RwLock::new(BTreeMap::new()),
            producer,
            topic,
        }
    }

    fn write_table(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Arc<Subscription>>> {
        self.table
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn read_table(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<Subscription>>> {
        self.table
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn set(&self, id: &str, subscription: Option<Subscription>) {
        let mut table = self.write_table();
        match subscription {
            Some(s) => {
                table.insert(id.to_owned(), Arc::new(s));
            }
            None => {
                table.remove(id);
            }
        }
        metrics::gauge!(telemetry::SUBSCRIPTIONS).set(table.len() as f64);
    }

    async fn send(&self, id: &str, payload: Option<Vec<u8>>) -> Result<(), StoreError> {
        let mut record = FutureRecord::<str, [u8]>::to(&self.topic).key(id);
        if let Some(payload) = payload.as_deref() {
            record = record.payload(payload);
        }
        self.producer
            .send(record, WRITE_TIMEOUT)
            .await
            .map(|_| ())
            .map_err(|(error, _)| StoreError(error.to_string()))
    }

    /// Creates or replaces; returns the subscription as stored (with its update time).
    pub async fn put(&self, mut subscription: Subscription) -> Result<Subscription, StoreError> {
        subscription.updated_at = Some(to_timestamp(now_millis()));
        let record = SubscriptionRecord {
            envelope: Some(new_envelope("notify", now_millis())),
            subscription: Some(subscription.to_pb(true)),
        };
        self.send(&subscription.id, Some(record.encode_to_vec()))
            .await?;
        self.set(&subscription.id, Some(subscription.clone()));
        Ok(subscription)
    }

    /// Deletes with a tombstone; false when there was nothing to delete here.
    pub async fn delete(&self, id: &str) -> Result<bool, StoreError> {
        let existed = self.read_table().contains_key(id);
        self.send(id, None).await?;
        self.set(id, None);
        Ok(existed)
    }

    pub fn get(&self, id: &str) -> Option<Arc<Subscription>> {
        self.read_table().get(id).cloned()
    }

    pub fn list(&self) -> Vec<Arc<Subscription>> {
        self.read_table().values().cloned().collect()
    }

    /// The subscriptions `notice` goes to, in id order.
    pub fn matching(&self, notice: &Notice) -> Vec<Arc<Subscription>> {
        self.read_table()
            .values()
            .filter(|s| s.matches(notice))
            .cloned()
            .collect()
    }

    /// Whether any subscription wants re-notifications (else none are planned).
    pub fn wants(&self, kind: crate::domain::notice::NoticeKind) -> bool {
        self.read_table()
            .values()
            .any(|s| s.triggers.contains(&kind))
    }

    /// Applies the topic's records as they come; says `true` on `loaded` once caught up.
    pub async fn follow(&self, mut feed: mpsc::Receiver<Feed>, loaded: watch::Sender<bool>) {
        while let Some(item) = feed.recv().await {
            let record = match item {
                Feed::CaughtUp => {
                    loaded.send_replace(true);
                    tracing::info!(
                        subscriptions = self.read_table().len(),
                        "subscriptions loaded"
                    );
                    continue;
                }
                Feed::Record(record) => record,
            };
            let Some(id) = record.key.as_deref().map(String::from_utf8_lossy) else {
                metrics::counter!(telemetry::SUBSCRIPTION_RECORDS_INVALID).increment(1);
                tracing::warn!(
                    offset = record.offset,
                    "subscription record without a key ignored"
                );
                continue;
            };
            let Some(payload) = record.payload.as_deref() else {
                self.set(&id, None);
                continue;
            };
            let parsed = SubscriptionRecord::decode(payload)
                .map_err(|e| e.to_string())
                .and_then(|r| r.subscription.ok_or_else(|| "no subscription".to_owned()))
                .and_then(|s| Subscription::from_pb(&s).map_err(|e| e.to_string()));
            match parsed {
                Ok(subscription) if *subscription.id == *id => self.set(&id, Some(subscription)),
                Ok(_) => {
                    metrics::counter!(telemetry::SUBSCRIPTION_RECORDS_INVALID).increment(1);
                    tracing::warn!(%id, "subscription record whose key is not its id ignored");
                }
                Err(error) => {
                    metrics::counter!(telemetry::SUBSCRIPTION_RECORDS_INVALID).increment(1);
                    tracing::warn!(%id, %error, "unusable subscription record ignored");
                }
            }
        }
    }
}
