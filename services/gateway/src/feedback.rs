//! Feedback out: follows incident-events (read_committed, a consumer group of its own) and
//! tells each resident's device what became of their incident. At least once: an event's
//! offset is committed only after the MQTT broker acknowledged (PUBACK) the device command,
//! so a gateway that dies before that sends it again.

use crate::config::{GatewayConfig, MqttConfig};
use crate::domain::feedback::{Feedback, Skip, StatusBook, feedback_for};
use crate::domain::registry::DeviceTable;
use crate::telemetry;
use helpgrid_common::time::{Millis, from_timestamp, now_millis};
use helpgrid_proto::pb::IncidentEvent;
use prost::Message as _;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Incident events older than this are not told to devices (see `run`).
const STALE_MS: Millis = 10 * 60_000;

/// Publishes one QoS 1 message and waits for the broker's PUBACK, reconnecting as needed.
struct Commander {
    client: AsyncClient,
    eventloop: EventLoop,
}

impl Commander {
    fn new(mqtt: &MqttConfig) -> Self {
        let mut options = MqttOptions::new(
            format!("{}-feedback", mqtt.client_id),
            mqtt.host.clone(),
            mqtt.port,
        );
        options.set_keep_alive(Duration::from_secs(15));
        if let Some(user) = &mqtt.username {
            options.set_credentials(user.clone(), mqtt.password.clone().unwrap_or_default());
        }
        let (client, eventloop) = AsyncClient::new(options, 64);
        Self { client, eventloop }
    }

    /// True once the broker has the message; false only when cancelled.
    async fn send(&mut self, topic: &str, payload: &str, cancel: &CancellationToken) -> bool {
        if self
            .client
            .try_publish(topic, QoS::AtLeastOnce, false, payload.as_bytes().to_vec())
            .is_err()
        {
            return false;
        }
        loop {
            let event = tokio::select! {
                () = cancel.cancelled() => return false,
                event = self.eventloop.poll() => event,
            };
            match event {
                Ok(Event::Incoming(Packet::PubAck(_))) => return true,
                Ok(_) => {}
                Err(error) => {
                    // rumqttc resends unacknowledged QoS 1 messages after reconnecting;
                    // keep waiting for that PUBACK.
                    tracing::warn!(%error, "feedback MQTT connection lost; resending");
                    tokio::select! {
                        () = cancel.cancelled() => return false,
                        () = tokio::time::sleep(Duration::from_millis(500)) => {}
                    }
                }
            }
        }
    }
}

/// Runs until `cancel` fires.
pub async fn run(
    config: Arc<GatewayConfig>,
    incident_events: String,
    table: Arc<RwLock<DeviceTable>>,
    statuses: Arc<RwLock<StatusBook>>,
    payloads: crate::domain::feedback::FeedbackPayloads,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let group = format!("{}gateway-feedback", config.kafka.topic_prefix);
    let consumer: StreamConsumer = config
        .kafka
        .group_consumer_config("helpgrid-gateway-feedback", &group)
        .create()?;
    consumer.subscribe(&[&incident_events])?;
    let mut commander = config.mqtt.as_ref().map(Commander::new);
    loop {
        let message = tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            m = consumer.recv() => m,
        };
        let message = match message {
            Ok(m) => m,
            Err(error) => {
                tracing::warn!(%error, "reading incident events failed; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let decoded = IncidentEvent::decode(message.payload().unwrap_or_default())
            // A new deployment's group starts at the beginning of the topic: history is not
            // news to a resident.
            .map(|e| {
                let at = e
                    .envelope
                    .as_ref()
                    .and_then(|v| from_timestamp(v.occurred_at.as_ref()))
                    .unwrap_or(0);
                (at >= now_millis() - STALE_MS).then_some(e)
            });
        let feedback = match &decoded {
            Ok(Some(event)) => match table.read() {
                Ok(t) => feedback_for(event, &t, &payloads, &config.z2m_base_topic),
                Err(_) => return Ok(()),
            },
            Ok(None) | Err(_) => Err(Skip::NotForResidents),
        };
        match feedback {
            Ok(f) => {
                if !deliver(&f, commander.as_mut(), &statuses, &cancel).await {
                    return Ok(());
                }
            }
            Err(Skip::NotTheirDevice(why)) => {
                tracing::warn!(reason = %why, "incident feedback withheld: not the resident's device");
                metrics::counter!(telemetry::FEEDBACK, "outcome" => "withheld").increment(1);
            }
            Err(Skip::NotForResidents) => {}
        }
        if let Err(error) = consumer.commit_message(&message, CommitMode::Async) {
            tracing::warn!(%error, "cannot commit feedback progress; it may be sent again");
        }
    }
}

async fn deliver(
    f: &Feedback,
    commander: Option<&mut Commander>,
    statuses: &RwLock<StatusBook>,
    cancel: &CancellationToken,
) -> bool {
    if let Ok(mut book) = statuses.write() {
        book.record(f);
    }
    if let (Some((topic, payload)), Some(commander)) = (&f.mqtt, commander) {
        if !commander.send(topic, payload, cancel).await {
            return false;
        }
        tracing::info!(device = %f.device_id, incident = %f.incident_id, stage = f.stage.word(), topic = %topic, "resident's device told");
        metrics::counter!(telemetry::FEEDBACK, "outcome" => "sent").increment(1);
    } else {
        metrics::counter!(telemetry::FEEDBACK, "outcome" => "status").increment(1);
    }
    true
}
