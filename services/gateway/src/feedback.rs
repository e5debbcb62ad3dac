//! Feedback out: follows incident-events (read_committed, a consumer group of its own) and
//! tells each resident's device what became of their incident. At least once: an event's
//! offset is stored only after the MQTT broker acknowledged (PUBACK) the device command,
//! and only stored offsets are committed, so a gateway that dies before that sends it again.
//!
//! The stored offsets are committed every [`COMMIT_INTERVAL_MS`] (librdkafka's auto-commit
//! of stored offsets), on a rebalance and at shutdown, not once per event: a commit per event
//! was an OffsetCommit request, and a write to `__consumer_offsets`, per incident event for
//! the broker (issue 13). A gateway killed outright repeats at most that interval's feedback.

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

/// How often the stored feedback offsets are committed (`auto.commit.interval.ms`).
pub const COMMIT_INTERVAL_MS: &str = "1000";

/// Withheld feedback (an incident naming a device the registry does not place in its
/// household) is counted every time but logged at most this often: in a flood of presses
/// from devices this gateway's registry does not hold, a line per event flooded the log
/// (and its non-blocking writer dropped most of them anyway).
const WITHHELD_LOG_EVERY: Duration = Duration::from_secs(10);

/// The feedback outcomes' counters, each handle found once (a labelled lookup per event
/// otherwise), and when withheld feedback was last logged.
struct Outcomes {
    sent: metrics::Counter,
    status: metrics::Counter,
    withheld: metrics::Counter,
    withheld_logged: Option<std::time::Instant>,
    withheld_unlogged: u64,
}

impl Outcomes {
    fn new() -> Self {
        Self {
            sent: metrics::counter!(telemetry::FEEDBACK, "outcome" => "sent"),
            status: metrics::counter!(telemetry::FEEDBACK, "outcome" => "status"),
            withheld: metrics::counter!(telemetry::FEEDBACK, "outcome" => "withheld"),
            withheld_logged: None,
            withheld_unlogged: 0,
        }
    }

    fn withheld(&mut self, why: &str) {
        self.withheld.increment(1);
        let now = std::time::Instant::now();
        if self
            .withheld_logged
            .is_some_and(|at| now.duration_since(at) < WITHHELD_LOG_EVERY)
        {
            self.withheld_unlogged += 1;
            return;
        }
        tracing::warn!(reason = %why, also_withheld_since_last_warning = self.withheld_unlogged, "incident feedback withheld: not the resident's device");
        self.withheld_logged = Some(now);
        self.withheld_unlogged = 0;
    }
}

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
    let mut consumer_config = config
        .kafka
        .group_consumer_config("helpgrid-gateway-feedback", &group);
    // Auto-commit with enable.auto.offset.store=false (the shared setting) commits only the
    // offsets stored below, after the PUBACK; pass-through options still win.
    consumer_config
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", COMMIT_INTERVAL_MS);
    for (key, value) in &config.kafka.options {
        consumer_config.set(key, value);
    }
    let consumer: StreamConsumer = consumer_config.create()?;
    consumer.subscribe(&[&incident_events])?;
    let mut commander = config.mqtt.as_ref().map(Commander::new);
    let mut outcomes = Outcomes::new();
    loop {
        let message = tokio::select! {
            () = cancel.cancelled() => {
                commit_stored(&consumer);
                return Ok(());
            }
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
                if !deliver(&f, commander.as_mut(), &statuses, &outcomes, &cancel).await {
                    commit_stored(&consumer);
                    return Ok(());
                }
            }
            Err(Skip::NotTheirDevice(why)) => outcomes.withheld(&why),
            Err(Skip::NotForResidents) => {}
        }
        // A partition revoked meanwhile refuses the store: its next owner sends it again.
        if let Err(error) = consumer.store_offset_from_message(&message) {
            tracing::debug!(%error, "cannot store feedback progress; it may be sent again");
        }
    }
}

/// Commits the stored offsets now (shutdown), rather than leaving the last interval's
/// feedback to be sent again by the next gateway.
fn commit_stored(consumer: &StreamConsumer) {
    match consumer.commit_consumer_state(CommitMode::Sync) {
        // Nothing stored since the last commit.
        Err(rdkafka::error::KafkaError::ConsumerCommit(
            rdkafka::types::RDKafkaErrorCode::NoOffset,
        ))
        | Ok(()) => {}
        Err(error) => {
            tracing::warn!(%error, "cannot commit feedback progress; it may be sent again");
        }
    }
}

async fn deliver(
    f: &Feedback,
    commander: Option<&mut Commander>,
    statuses: &RwLock<StatusBook>,
    outcomes: &Outcomes,
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
        outcomes.sent.increment(1);
    } else {
        outcomes.status.increment(1);
    }
    true
}
