//! A notification that cannot be delivered goes to the dead-letter topic, with the same
//! headers the router uses (reason, kind, origin topic/partition/offset) plus which
//! subscription, which idempotency key and how many attempts. The payload is the incident
//! event record as read, so an operator can replay it.

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::time::Duration;

pub const HEADER_REASON: &str = "helpgrid.dlq.reason";
pub const HEADER_KIND: &str = "helpgrid.dlq.kind";
pub const HEADER_TOPIC: &str = "helpgrid.dlq.origin.topic";
pub const HEADER_PARTITION: &str = "helpgrid.dlq.origin.partition";
pub const HEADER_OFFSET: &str = "helpgrid.dlq.origin.offset";
pub const HEADER_SUBSCRIPTION: &str = "helpgrid.dlq.notify.subscription";
pub const HEADER_IDEMPOTENCY_KEY: &str = "helpgrid.dlq.notify.idempotency_key";
pub const HEADER_ATTEMPTS: &str = "helpgrid.dlq.notify.attempts";

/// Where a notification came from: the incident-events record.
#[derive(Debug, Clone)]
pub struct Origin {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<std::sync::Arc<[u8]>>,
}

/// What goes to the dead-letter topic and why.
#[derive(Debug, Clone)]
pub struct DeadLetter<'a> {
    pub origin: &'a Origin,
    /// `webhook_failed` (budget spent), `webhook_refused` (4xx), `queue_full`, `undecodable`.
    pub kind: &'static str,
    pub reason: String,
    pub subscription_id: &'a str,
    pub idempotency_key: &'a str,
    pub attempts: u32,
}

fn header<'a>(key: &'a str, value: &'a str) -> Header<'a, &'a str> {
    Header {
        key,
        value: Some(value),
    }
}

/// Writes the dead letter, retrying until Kafka takes it or `cancel` fires (then the event's
/// offset stays uncommitted and the next start tries again). Returns whether it was written.
pub async fn write(
    producer: &FutureProducer,
    topic: &str,
    letter: &DeadLetter<'_>,
    cancel: &tokio_util::sync::CancellationToken,
) -> bool {
    let partition = letter.origin.partition.to_string();
    let offset = letter.origin.offset.to_string();
    let attempts = letter.attempts.to_string();
    let headers = OwnedHeaders::new()
        .insert(header(HEADER_REASON, &letter.reason))
        .insert(header(HEADER_KIND, letter.kind))
        .insert(header(HEADER_TOPIC, &letter.origin.topic))
        .insert(header(HEADER_PARTITION, &partition))
        .insert(header(HEADER_OFFSET, &offset))
        .insert(header(HEADER_SUBSCRIPTION, letter.subscription_id))
        .insert(header(HEADER_IDEMPOTENCY_KEY, letter.idempotency_key))
        .insert(header(HEADER_ATTEMPTS, &attempts));
    let mut backoff = Duration::from_millis(100);
    loop {
        let mut record = FutureRecord::<[u8], [u8]>::to(topic).headers(headers.clone());
        if let Some(key) = letter.origin.key.as_deref() {
            record = record.key(key);
        }
        if let Some(payload) = letter.origin.payload.as_deref() {
            record = record.payload(payload);
        }
        let sent = tokio::select! {
            () = cancel.cancelled() => return false,
            sent = producer.send(record, Duration::from_secs(30)) => sent,
        };
        match sent {
            Ok(_) => return true,
            Err((error, _)) => {
                tracing::error!(%error, topic, "cannot write a dead letter; retrying");
                tokio::select! {
                    () = cancel.cancelled() => return false,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}
