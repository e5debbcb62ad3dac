//! One-time sign-in links across status instances: the `app-links` topic as a ledger.
//!
//! A link is one-time per instance through [`super::session::RedeemedLinks`] (memory).
//! Behind a load balancer a copied link could otherwise sign in once per instance. Here the
//! instance redeeming a link writes a `LinkRedeemed` record (key: SHA-256 of the link's
//! signature) and then reads the key's partition up to its own record. Every instance reads
//! the same partition in the same order, so all agree which record of a key came first: that
//! use counts, every later one is refused — also two taps at two instances at the same moment.
//! Records are needed only while a link is valid (minutes); the topic keeps a day.

use helpgrid_common::envelope::new_envelope;
use helpgrid_common::kafka::KafkaArgs;
use helpgrid_common::reader::{self, Feed};
use helpgrid_common::time::{from_timestamp, now_millis, to_timestamp};
use helpgrid_proto::pb::LinkRedeemed;
use prost::Message as _;
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How long a redeem waits for the ledger (its start-up read, or its own record read back).
const LEDGER_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    #[error("this sign-in link has already been used; ask your administrator for a new one")]
    Used,
    #[error("the sign-in link could not be checked just now ({0}); try again in a moment")]
    Unavailable(String),
}

#[derive(Default)]
struct Ledger {
    caught_up: bool,
    /// Link key → the attempt id of its first record, and when the link expires (Unix s).
    first: HashMap<String, (String, u64)>,
    /// Partition → the offset after the last record read.
    next: HashMap<i32, i64>,
}

pub struct LinkLedger {
    topic: String,
    producer: FutureProducer,
    ledger: Mutex<Ledger>,
    /// Bumped whenever the ledger moves, for redeems waiting on it.
    moved: watch::Sender<u64>,
}

/// The ledger key of a link: the SHA-256 of its signature (the signature and the link's
/// claims together would be the link itself; the hash is useless to whoever reads the topic).
pub fn link_key(nonce: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, nonce.as_bytes());
    digest.as_ref().iter().fold(String::new(), |mut hex, b| {
        use std::fmt::Write;
        let _ = write!(hex, "{b:02x}");
        hex
    })
}

impl LinkLedger {
    /// Follows `topic` from its beginning; redeems wait until it has been read to its end.
    pub async fn start(
        kafka: &KafkaArgs,
        topic: &str,
        producer: FutureProducer,
        shutdown: CancellationToken,
    ) -> Result<Arc<Self>, KafkaError> {
        let mut feed = reader::follow(kafka, "helpgrid-status-app-links", topic, shutdown).await?;
        let ledger = Arc::new(Self {
            topic: topic.to_owned(),
            producer,
            ledger: Mutex::default(),
            moved: watch::Sender::new(0),
        });
        let following = Arc::clone(&ledger);
        tokio::spawn(async move {
            while let Some(item) = feed.recv().await {
                following.apply(item);
            }
        });
        Ok(ledger)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ledger> {
        // One insert per record: a panic cannot leave the map half-written.
        self.ledger.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn apply(&self, item: Feed) {
        let mut ledger = self.lock();
        match item {
            Feed::CaughtUp => ledger.caught_up = true,
            Feed::Record(record) => {
                ledger.next.insert(record.partition, record.offset + 1);
                let key = record.key_text().into_owned();
                match LinkRedeemed::decode(record.payload.as_deref().unwrap_or_default()) {
                    Ok(used) if !key.is_empty() => {
                        let expires_s = from_timestamp(used.expires_at.as_ref())
                            .map_or(0, |ms| u64::try_from(ms / 1000).unwrap_or(0));
                        ledger
                            .first
                            .entry(key)
                            .or_insert((used.attempt_id, expires_s));
                    }
                    Ok(_) | Err(_) => {
                        tracing::warn!(
                            partition = record.partition,
                            offset = record.offset,
                            "unreadable app-links record skipped"
                        );
                    }
                }
                let now_s = u64::try_from(now_millis() / 1000).unwrap_or(0);
                // Kept a minute past expiry: the token check allows clock skew.
                ledger
                    .first
                    .retain(|_, (_, expires)| expires.saturating_add(60) >= now_s);
            }
        }
        drop(ledger);
        self.moved.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Whether any instance has used the link (as far as this one has read).
    pub fn is_used(&self, key: &str) -> bool {
        self.lock().first.contains_key(key)
    }

    async fn wait_for(
        &self,
        what: &str,
        done: impl Fn(&Ledger) -> bool,
    ) -> Result<(), LedgerError> {
        let mut moved = self.moved.subscribe();
        let waited = tokio::time::timeout(LEDGER_WAIT, async {
            loop {
                if done(&self.lock()) {
                    return;
                }
                if moved.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        })
        .await;
        waited.map_err(|_| {
            LedgerError::Unavailable(format!("{what} took longer than {LEDGER_WAIT:?}"))
        })
    }

    /// Records this use of the link `key` (of `subject`, valid until `expires_s`) and answers
    /// whether it is the first use on any instance.
    pub async fn redeem(
        &self,
        key: &str,
        subject: &str,
        expires_s: u64,
    ) -> Result<(), LedgerError> {
        self.wait_for("reading the sign-in links", |l| l.caught_up)
            .await?;
        if self.is_used(key) {
            return Err(LedgerError::Used);
        }
        let attempt_id = uuid::Uuid::new_v4().to_string();
        let record = LinkRedeemed {
            envelope: Some(new_envelope("helpgrid-status", now_millis())),
            attempt_id: attempt_id.clone(),
            subject: subject.to_owned(),
            expires_at: Some(to_timestamp(
                i64::try_from(expires_s).unwrap_or(i64::MAX / 1000) * 1000,
            )),
        };
        let payload = record.encode_to_vec();
        let delivered = self
            .producer
            .send(
                FutureRecord::to(&self.topic).key(key).payload(&payload),
                LEDGER_WAIT,
            )
            .await
            .map_err(|(error, _)| LedgerError::Unavailable(error.to_string()))?;
        let (partition, offset) = (delivered.partition, delivered.offset);
        self.wait_for("reading the link's use back", |l| {
            l.next.get(&partition).is_some_and(|next| *next > offset)
        })
        .await?;
        match self.lock().first.get(key) {
            Some((first, _)) if *first == attempt_id => Ok(()),
            _ => Err(LedgerError::Used),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_a_hash_not_the_signature() {
        let key = link_key("c2lnbmF0dXJl");
        assert_eq!(key.len(), 64);
        assert!(!key.contains("c2lnbmF0dXJl"));
        assert_eq!(key, link_key("c2lnbmF0dXJl"));
        assert_ne!(key, link_key("c2lnbmF0dXJm"));
    }
}
