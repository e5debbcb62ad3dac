//! The gateway's Kafka side: help events out (keyed by grid, acks=all, murmur2 as every
//! HelpGrid producer), dead letters out, and the device registry in.

use crate::domain::registry::DeviceTable;
use crate::telemetry;
use helpgrid_common::kafka::KafkaArgs;
use helpgrid_common::reader;
use helpgrid_common::topics::partition_count;
use helpgrid_proto::pb::{Device, HelpEvent};
use prost::Message;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

/// Dead-letter headers: the same names the router writes, so one tool reads both.
pub const HEADER_REASON: &str = "helpgrid.dlq.reason";
pub const HEADER_KIND: &str = "helpgrid.dlq.kind";
pub const HEADER_TOPIC: &str = "helpgrid.dlq.origin.topic";
/// The grid a refused device is registered in (disabled devices), for the supervisor's view.
pub const HEADER_GRID: &str = "helpgrid.dlq.grid";
/// The device (or MQTT name) the message came from.
pub const HEADER_DEVICE: &str = "helpgrid.dlq.device";

/// How long one send may wait in the producer's queue before it is reported failed.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum KafkaSetupError {
    #[error("cannot create the Kafka client: {0}")]
    Client(#[source] KafkaError),
    #[error("cannot create topic {topic}: {source}")]
    Topic { topic: String, source: KafkaError },
    #[error(transparent)]
    Metadata(#[from] helpgrid_common::topics::TopicError),
}

/// Creates the compacted devices topic if it is missing.
pub async fn ensure_devices_topic(args: &KafkaArgs, topic: &str) -> Result<(), KafkaSetupError> {
    let admin: AdminClient<DefaultClientContext> = args
        .admin_config("helpgrid-gateway-admin")
        .create()
        .map_err(KafkaSetupError::Client)?;
    let new = NewTopic::new(
        topic,
        args.topic_partitions,
        TopicReplication::Fixed(args.topic_replication),
    )
    .set("cleanup.policy", "compact");
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .create_topics([&new], &options)
        .await
        .map_err(|source| KafkaSetupError::Topic {
            topic: topic.to_owned(),
            source,
        })?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(KafkaSetupError::Topic {
                    topic,
                    source: KafkaError::AdminOp(code),
                });
            }
        }
    }
    partition_count(&admin, topic).await?;
    Ok(())
}

/// Why a message was dead-lettered and where it came from.
#[derive(Debug, Clone)]
pub struct DeadLetter<'a> {
    pub reason: String,
    pub kind: &'static str,
    /// `mqtt:<topic>` or `http:<path>`.
    pub origin: String,
    pub device: &'a str,
    pub grid: Option<&'a str>,
    pub payload: &'a [u8],
}

/// The producer every path writes through.
#[derive(Clone)]
pub struct Outbox {
    producer: FutureProducer,
    help_events: String,
    dead_letters: String,
}

impl Outbox {
    pub fn new(
        args: &KafkaArgs,
        help_events: &str,
        dead_letters: &str,
    ) -> Result<Self, KafkaError> {
        Ok(Self {
            producer: args.producer_config("helpgrid-gateway").create()?,
            help_events: help_events.to_owned(),
            dead_letters: dead_letters.to_owned(),
        })
    }

    /// Writes a help event keyed by its grid and returns once Kafka has it (acks=all).
    pub async fn publish(&self, grid_id: &str, event: &HelpEvent) -> Result<(), KafkaError> {
        let payload = event.encode_to_vec();
        let record = FutureRecord::to(&self.help_events)
            .key(grid_id)
            .payload(&payload);
        self.producer
            .send(record, SEND_TIMEOUT)
            .await
            .map(|_| ())
            .map_err(|(e, _)| e)
    }

    /// The same, retried with backoff until Kafka has it or `cancel` fires. For MQTT, where
    /// the broker waits for our acknowledgement: a press is never given up.
    pub async fn publish_until_stored(
        &self,
        grid_id: &str,
        event: &HelpEvent,
        cancel: &CancellationToken,
    ) -> bool {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.publish(grid_id, event).await {
                Ok(()) => return true,
                Err(error) => {
                    metrics::counter!(telemetry::KAFKA_RETRIES).increment(1);
                    tracing::warn!(%error, grid = %grid_id, "help event not stored yet; retrying");
                }
            }
            tokio::select! {
                () = cancel.cancelled() => return false,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    /// Writes a dead letter and returns once Kafka has it.
    pub async fn dead_letter(&self, letter: &DeadLetter<'_>) -> Result<(), KafkaError> {
        metrics::counter!(telemetry::DEAD_LETTERS, "kind" => letter.kind).increment(1);
        let mut headers = OwnedHeaders::new()
            .insert(Header {
                key: HEADER_REASON,
                value: Some(letter.reason.as_str()),
            })
            .insert(Header {
                key: HEADER_KIND,
                value: Some(letter.kind),
            })
            .insert(Header {
                key: HEADER_TOPIC,
                value: Some(letter.origin.as_str()),
            })
            .insert(Header {
                key: HEADER_DEVICE,
                value: Some(letter.device),
            });
        if let Some(grid) = letter.grid {
            headers = headers.insert(Header {
                key: HEADER_GRID,
                value: Some(grid),
            });
        }
        let key = letter.grid.unwrap_or(letter.device);
        let record = FutureRecord::to(&self.dead_letters)
            .key(key)
            .payload(letter.payload)
            .headers(headers);
        self.producer
            .send(record, SEND_TIMEOUT)
            .await
            .map(|_| ())
            .map_err(|(e, _)| e)
    }
}

/// Writes registry records keyed by device id and waits for every acknowledgement.
pub async fn write_devices(
    args: &KafkaArgs,
    topic: &str,
    devices: &[Device],
) -> Result<(), KafkaError> {
    let producer: FutureProducer = args.producer_config("helpgrid-gateway-import").create()?;
    let mut pending = Vec::with_capacity(devices.len());
    for d in devices {
        let payload = d.encode_to_vec();
        loop {
            let record = FutureRecord::to(topic).key(&d.device_id).payload(&payload);
            match producer.send_result(record) {
                Ok(delivery) => {
                    pending.push(delivery);
                    break;
                }
                // A big file fills the local queue: let deliveries drain, then go on.
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err((error, _)) => return Err(error),
            }
        }
    }
    for delivery in pending {
        match delivery.await {
            Ok(Ok(_)) => {}
            Ok(Err((error, _))) => return Err(error),
            Err(_) => return Err(KafkaError::Canceled),
        }
    }
    Ok(())
}

/// Follows the devices topic into `table`; the receiver fires once the table holds what the
/// topic held at start-up.
pub async fn follow_registry(
    args: &KafkaArgs,
    topic: &str,
    table: Arc<RwLock<DeviceTable>>,
    shutdown: CancellationToken,
) -> Result<oneshot::Receiver<()>, KafkaError> {
    reader::follow_table(
        args,
        "helpgrid-gateway-devices",
        topic,
        shutdown,
        move |record| {
            let key = record.key_text().into_owned();
            let update = match record.payload.as_deref() {
                None | Some([]) => Ok(None),
                Some(bytes) => Device::decode(bytes).map(Some),
            };
            let Ok(mut t) = table.write() else {
                return false;
            };
            match update {
                Ok(Some(device)) if device.device_id == key => t.upsert(device),
                Ok(None) => t.remove(&key),
                Ok(Some(device)) => tracing::warn!(
                    key = %key, device = %device.device_id,
                    "ignoring registry record whose key is not its device id"
                ),
                Err(error) => tracing::warn!(
                    %error, key = %key, partition = record.partition, offset = record.offset,
                    "ignoring undecodable registry record"
                ),
            }
            metrics::gauge!(telemetry::DEVICES).set(t.len() as f64);
            true
        },
    )
    .await
}
