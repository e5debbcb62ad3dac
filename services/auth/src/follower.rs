//! Keeps a [`TokenKey`] current while a service runs: the revocations from the compacted
//! `<prefix>revocations` topic, and the key set from its file.
//!
//! Every service that verifies tokens runs one [`follow_revocations`] beside its server and
//! does not report ready until the follower has read the topic to its end once: a verifier
//! that has not seen the revocations would let a lost phone in. After that a revocation
//! reaches it within the reader's fetch wait (tens of milliseconds).
//!
//! [`publish_revocation`] writes one record (`helpgrid-token revoke`). The topic is one of
//! the set every service creates and checks at start-up (`helpgrid_common::topics`).

use crate::TokenKey;
use crate::telemetry;
use helpgrid_common::envelope::new_envelope;
use helpgrid_common::kafka::KafkaArgs;
use helpgrid_common::reader::{Feed, Record, follow};
use helpgrid_common::time::{Millis, from_timestamp, now_millis, to_timestamp};
use helpgrid_common::topics::{TopicError, Topics, ensure_compacted_topic};
use helpgrid_proto::pb::TokenRevocation;
use prost::Message;
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How often the key file is checked for a rotation.
pub const KEY_RELOAD_EVERY: Duration = Duration::from_secs(5);
/// How long a revocation write waits for the broker's acknowledgement.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    #[error("cannot set up the revocations topic: {0}")]
    Topic(#[from] TopicError),
    #[error("cannot read the revocations topic {topic}: {source}")]
    Read { topic: String, source: KafkaError },
    #[error("cannot write to the revocations topic {topic}: {source}")]
    Write { topic: String, source: KafkaError },
    #[error("{0:?} is not a subject a token can carry (empty)")]
    BadSubject(String),
}

/// Creates the revocations topic if missing (compacted, explicit settings) and checks it.
/// The services need not: `ensure_topics` sets it up with the others.
pub async fn ensure_revocations_topic(args: &KafkaArgs) -> Result<String, FollowError> {
    let topic = Topics::with_prefix(&args.topic_prefix).revocations;
    ensure_compacted_topic(args, &topic, args.topic_partitions).await?;
    Ok(topic)
}

/// A running follower: `caught_up` turns true once the topic has been read to its end; the
/// sender is dropped (and `changed()` fails) if the follower stops, for good, before
/// `shutdown` (a fatal Kafka error): the service should then stop reporting ready.
#[derive(Debug)]
pub struct Following {
    pub caught_up: watch::Receiver<bool>,
}

impl Following {
    /// Resolves once the revocations have been read to the end; never if the follower
    /// stopped first.
    pub async fn wait_caught_up(&mut self) {
        if self.caught_up.wait_for(|c| *c).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Resolves if the follower stops (a fatal Kafka error) while `shutdown` is not cancelled.
    pub async fn stopped(&mut self) {
        while self.caught_up.changed().await.is_ok() {}
    }
}

/// Follows the revocations topic (set up by `ensure_topics`) from the beginning into `key`'s
/// revocations, and re-reads `key`'s file every [`KEY_RELOAD_EVERY`], until `shutdown`.
pub async fn follow_revocations(
    args: &KafkaArgs,
    client_id: &str,
    key: Arc<TokenKey>,
    shutdown: CancellationToken,
) -> Result<Following, FollowError> {
    telemetry::describe();
    let topic = Topics::with_prefix(&args.topic_prefix).revocations;
    let mut feed = follow(
        args,
        &format!("{client_id}-revocations"),
        &topic,
        shutdown.clone(),
    )
    .await
    .map_err(|source| FollowError::Read {
        topic: topic.clone(),
        source,
    })?;
    let (caught_up_tx, caught_up) = watch::channel(false);
    tokio::spawn(async move {
        let mut reload = tokio::time::interval(KEY_RELOAD_EVERY);
        reload.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = reload.tick() => reload_keys(&key),
                item = feed.recv() => match item {
                    Some(Feed::Record(record)) => apply(&key, &topic, &record),
                    Some(Feed::CaughtUp) => {
                        tracing::info!(topic = %topic, revoked_subjects = key.revocations().len(), "revocations loaded");
                        caught_up_tx.send_replace(true);
                    }
                    None => {
                        if !shutdown.is_cancelled() {
                            tracing::error!(topic = %topic, "the revocations feed ended; revocations are no longer current");
                        }
                        return;
                    }
                },
            }
        }
    });
    Ok(Following { caught_up })
}

fn reload_keys(key: &TokenKey) {
    match key.reload() {
        Ok(true) => {
            tracing::info!(kids = ?key.kids(), "token key file changed; new key set in force")
        }
        Ok(false) => {}
        Err(error) => {
            metrics::counter!(telemetry::KEY_RELOAD_FAILURES).increment(1);
            tracing::error!(%error, kids = ?key.kids(), "cannot re-read the token key file; the previous keys stay in force");
        }
    }
}

/// One record of the table: a revocation, or a tombstone that lifts one.
fn apply(key: &TokenKey, topic: &str, record: &Record) {
    let skip = |why: &str| {
        metrics::counter!(telemetry::REVOCATION_RECORDS_SKIPPED).increment(1);
        tracing::error!(
            topic,
            partition = record.partition,
            offset = record.offset,
            why,
            "revocation record skipped"
        );
    };
    let Some(subject) = record
        .key
        .as_deref()
        .and_then(|k| std::str::from_utf8(k).ok())
    else {
        return skip("the key is not a UTF-8 subject");
    };
    match record.payload.as_deref() {
        None | Some([]) => {
            key.revocations().lift(subject);
            tracing::info!(subject, "revocation lifted");
        }
        Some(payload) => {
            let Ok(revocation) = TokenRevocation::decode(payload) else {
                return skip("the value is not a TokenRevocation");
            };
            if revocation.subject != subject {
                return skip("the record's key and subject differ");
            }
            let Some(not_before) = from_timestamp(revocation.not_before.as_ref()) else {
                return skip("the revocation has no not_before time");
            };
            let not_before_s = u64::try_from(not_before.div_euclid(1000)).unwrap_or(0);
            key.revocations().revoke(subject, not_before_s);
            tracing::info!(subject, not_before_s, reason = %revocation.reason, revoked_by = %revocation.revoked_by, "tokens revoked");
        }
    }
    metrics::gauge!(telemetry::REVOKED_SUBJECTS).set(key.revocations().len() as f64);
}

/// Revokes every token issued to `subject` before `not_before` (usually now): writes the
/// record and waits for the broker's acknowledgement. Verifiers apply it within seconds.
pub async fn publish_revocation(
    args: &KafkaArgs,
    subject: &str,
    not_before: Millis,
    reason: &str,
    revoked_by: &str,
) -> Result<(), FollowError> {
    if subject.trim().is_empty() {
        return Err(FollowError::BadSubject(subject.to_owned()));
    }
    let topic = ensure_revocations_topic(args).await?;
    let write_error = |source| FollowError::Write {
        topic: topic.clone(),
        source,
    };
    let producer: FutureProducer = args
        .producer_config("helpgrid-token")
        .create()
        .map_err(write_error)?;
    let record = TokenRevocation {
        envelope: Some(new_envelope("helpgrid-token", now_millis())),
        subject: subject.to_owned(),
        not_before: Some(to_timestamp(not_before)),
        reason: reason.to_owned(),
        revoked_by: revoked_by.to_owned(),
    };
    let payload = record.encode_to_vec();
    producer
        .send(
            FutureRecord::to(&topic).key(subject).payload(&payload),
            PUBLISH_TIMEOUT,
        )
        .await
        .map_err(|(source, _)| write_error(source))?;
    Ok(())
}
