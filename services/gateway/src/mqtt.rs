//! MQTT in: Zigbee2MQTT buttons and Frigate cameras.
//!
//! The session is persistent (clean_session=false, a stable client id) and acknowledgements
//! are manual: a QoS 1 message is acknowledged to the broker only after Kafka has its help
//! event (or its dead letter). A gateway that dies before that gets the message again from
//! the broker, and the derived event id makes the second copy a duplicate the router drops.

use crate::config::{GatewayConfig, MqttConfig};
use crate::domain::frigate::{AlertGate, decode_event};
use crate::domain::registry::{DeviceTable, Refusal};
use crate::domain::z2m::decode_state;
use crate::domain::{Availability, DecodeError, decode_availability, intake};
use crate::health_watch::HealthWatch;
use crate::kafka::{DeadLetter, Outbox};
use crate::telemetry;
use helpgrid_common::time::{Millis, now_millis};
use helpgrid_proto::pb::{DeviceKind, HelpEvent};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, Publish, QoS};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;

/// Messages being handled at once (each waits for Kafka); more waits in the broker.
const MAX_IN_FLIGHT: usize = 4096;
/// Largest MQTT packet read. Zigbee2MQTT's retained `bridge/devices` list can be megabytes;
/// device payloads past `domain::MAX_PAYLOAD_BYTES` are dead-lettered by the decoders.
const MAX_PACKET_BYTES: usize = 16 * 1024 * 1024;
/// A hub clock further off than this is not trusted for `occurred_at` (its value still
/// makes the event id).
const MAX_HUB_SKEW_MS: Millis = 5 * 60_000;

/// Where a topic belongs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route<'a> {
    Z2mState(&'a str),
    Z2mAvailability(&'a str),
    FrigateEvents,
    FrigateAvailable,
    /// Our own commands, the hub's bridge topics, other Frigate topics.
    Other,
}

/// Sorts a topic. Zigbee2MQTT friendly names may contain `/` (`kitchen/button`).
pub fn route<'a>(topic: &'a str, z2m_base: &str, frigate_prefix: &str) -> Route<'a> {
    if let Some(rest) = topic
        .strip_prefix(frigate_prefix)
        .and_then(|r| r.strip_prefix('/'))
    {
        return match rest {
            "events" => Route::FrigateEvents,
            "available" => Route::FrigateAvailable,
            _ => Route::Other,
        };
    }
    let Some(rest) = topic
        .strip_prefix(z2m_base)
        .and_then(|r| r.strip_prefix('/'))
    else {
        return Route::Other;
    };
    if rest.is_empty() || rest.starts_with("bridge/") || rest == "bridge" {
        return Route::Other;
    }
    if let Some(name) = rest.strip_suffix("/availability") {
        return Route::Z2mAvailability(name);
    }
    if rest.ends_with("/set") || rest.ends_with("/get") || rest.contains("/set/") {
        return Route::Other;
    }
    Route::Z2mState(rest)
}

/// What handling one message needs; shared by the tasks that handle messages.
pub struct MqttIntake {
    pub config: Arc<GatewayConfig>,
    pub table: Arc<RwLock<DeviceTable>>,
    pub outbox: Outbox,
    pub gate: Mutex<AlertGate>,
    pub health: Arc<HealthWatch>,
    pub cancel: CancellationToken,
}

impl MqttIntake {
    /// Handles one message; true when it may be acknowledged (Kafka has what it gave).
    pub async fn handle(&self, topic: &str, payload: &[u8], retained: bool) -> bool {
        let received_at = now_millis();
        let started = Instant::now();
        let c = &self.config;
        match route(topic, &c.z2m_base_topic, &c.frigate_prefix) {
            Route::Z2mState(name) => {
                let report = match decode_state(payload, retained, &c.actions) {
                    Ok(r) => r,
                    Err(e) => return self.refuse_payload("z2m", topic, name, payload, &e).await,
                };
                let Some(press) = report.press else {
                    // A heartbeat or reading: health only (an unregistered device's readings
                    // call for no one).
                    count("z2m", "health");
                    return match self.device(name, DeviceKind::ZigbeeButton) {
                        Ok(d) => self.health.heard(&d, report.battery_percent).await,
                        Err(_) => true,
                    };
                };
                let (seen_raw, seen_ms) = match &report.last_seen {
                    Some((raw, ms)) => (Some(raw.as_str()), Some(*ms)),
                    None => (None, None),
                };
                let device = match self.device(name, DeviceKind::ZigbeeButton) {
                    Ok(d) => d,
                    Err(r) => {
                        if matches!(r, Refusal::Disabled(_))
                            && !self
                                .warn_disabled_press(name, &press.action, seen_raw, received_at)
                                .await
                        {
                            return false;
                        }
                        return self.refuse_device("z2m", topic, name, payload, &r).await;
                    }
                };
                if !self.health.heard(&device, report.battery_percent).await {
                    return false;
                }
                let event_id = intake::z2m_event_id(
                    &device.device_id,
                    &press.action,
                    seen_raw,
                    received_at,
                    c.z2m_dedup_bucket_ms,
                );
                let occurred_at = seen_ms
                    .filter(|ms| (ms - received_at).abs() <= MAX_HUB_SKEW_MS)
                    .unwrap_or(received_at);
                let event = intake::press_event(
                    &device,
                    press.kind,
                    event_id,
                    occurred_at,
                    report.battery_percent,
                    format!("z2m:{name}"),
                );
                self.send(&device.grid_id, &event, "z2m", "press", started)
                    .await
            }
            Route::Z2mAvailability(name) => match decode_availability(payload) {
                Ok(availability) => {
                    count("z2m", "health");
                    match self.device(name, DeviceKind::ZigbeeButton) {
                        Ok(d) => {
                            self.health
                                .availability(&d, availability == Availability::Online)
                                .await
                        }
                        Err(_) => true,
                    }
                }
                Err(e) => self.refuse_payload("z2m", topic, name, payload, &e).await,
            },
            Route::FrigateEvents => {
                let event = match decode_event(payload, &c.camera_rules) {
                    Ok(e) => e,
                    Err(e) => return self.refuse_payload("frigate", topic, "", payload, &e).await,
                };
                let fresh: Vec<_> = {
                    let Ok(mut gate) = self.gate.lock() else {
                        return false;
                    };
                    event
                        .alerts
                        .iter()
                        .filter(|a| gate.admit(&a.event_id))
                        .cloned()
                        .collect()
                };
                if fresh.is_empty() {
                    count("frigate", "ignored");
                    return true;
                }
                let device = match self.device(&event.camera, DeviceKind::FrigateCamera) {
                    Ok(d) => d,
                    Err(r) => {
                        return self
                            .refuse_device("frigate", topic, &event.camera, payload, &r)
                            .await;
                    }
                };
                let snapshot_ref = if event.has_snapshot {
                    format!("frigate:/api/events/{}/snapshot.jpg", event.id)
                } else {
                    String::new()
                };
                for alert in &fresh {
                    let help = intake::camera_event(
                        &device,
                        alert,
                        event.started_at.unwrap_or(received_at),
                        snapshot_ref.clone(),
                        format!("frigate:{}", event.camera),
                    );
                    if !self
                        .send(&device.grid_id, &help, "frigate", "alert", started)
                        .await
                    {
                        if let Ok(mut gate) = self.gate.lock() {
                            gate.forget(&alert.event_id);
                        }
                        return false;
                    }
                }
                true
            }
            Route::FrigateAvailable => match decode_availability(payload) {
                Ok(availability) => {
                    count("frigate", "health");
                    // Frigate reports for the whole instance: every camera it analyses.
                    let cameras: Vec<_> = self
                        .table
                        .read()
                        .map(|t| {
                            t.all()
                                .filter(|d| d.kind == DeviceKind::FrigateCamera as i32 && d.enabled)
                                .cloned()
                                .collect()
                        })
                        .unwrap_or_default();
                    for camera in &cameras {
                        if !self
                            .health
                            .availability(camera, availability == Availability::Online)
                            .await
                        {
                            return false;
                        }
                    }
                    true
                }
                Err(e) => self.refuse_payload("frigate", topic, "", payload, &e).await,
            },
            Route::Other => true,
        }
    }

    fn device(&self, name: &str, kind: DeviceKind) -> Result<helpgrid_proto::pb::Device, Refusal> {
        let table = self
            .table
            .read()
            .map_err(|_| Refusal::UnknownDevice(name.to_owned()))?;
        table.routable_by_mqtt_name(name, kind).cloned()
    }

    /// A press from a button the registry has disabled: besides the dead letter, a
    /// maintenance incident for its grid worker (a resident may be behind it). True once
    /// Kafka has it, or when the registry knows no grid to warn.
    async fn warn_disabled_press(
        &self,
        name: &str,
        action: &str,
        last_seen: Option<&str>,
        received_at: i64,
    ) -> bool {
        let device = self.table.read().ok().and_then(|t| {
            t.all()
                .find(|d| crate::domain::registry::mqtt_name(d) == name)
                .cloned()
        });
        let Some(device) = device.filter(|d| !d.grid_id.is_empty()) else {
            return true;
        };
        let press_id = intake::z2m_event_id(
            &device.device_id,
            action,
            last_seen,
            received_at,
            self.config.z2m_dedup_bucket_ms,
        );
        let event = intake::disabled_press_event(&device, &press_id, received_at);
        self.send(
            &device.grid_id,
            &event,
            "z2m",
            "disabled_press",
            Instant::now(),
        )
        .await
    }

    async fn send(
        &self,
        grid: &str,
        event: &HelpEvent,
        source: &'static str,
        kind: &'static str,
        started: Instant,
    ) -> bool {
        let stored = self
            .outbox
            .publish_until_stored(grid, event, &self.cancel)
            .await;
        if stored {
            count(source, "event");
            metrics::counter!(telemetry::EVENTS_PUBLISHED, "kind" => kind).increment(1);
            metrics::histogram!(telemetry::PUBLISH_SECONDS).record(started.elapsed().as_secs_f64());
        }
        stored
    }

    async fn refuse_payload(
        &self,
        source: &'static str,
        topic: &str,
        device: &str,
        payload: &[u8],
        error: &DecodeError,
    ) -> bool {
        tracing::warn!(%error, topic = %topic, "device message refused");
        count(source, "dead_letter");
        self.store_dead_letter(DeadLetter {
            reason: error.to_string(),
            kind: error.kind(),
            origin: format!("mqtt:{topic}"),
            device,
            grid: None,
            payload,
        })
        .await
    }

    /// A press or alert from a device the registry does not route. Someone may be behind
    /// it: dead-lettered with the reason (and the grid, if known), warned, counted.
    async fn refuse_device(
        &self,
        source: &'static str,
        topic: &str,
        name: &str,
        payload: &[u8],
        refusal: &Refusal,
    ) -> bool {
        let grid = self.table.read().ok().and_then(|t| {
            t.all()
                .find(|d| crate::domain::registry::mqtt_name(d) == name)
                .map(|d| d.grid_id.clone())
        });
        tracing::warn!(
            reason = %refusal, device = %name, grid = grid.as_deref().unwrap_or(""), topic = %topic,
            "a press or alert from an unroutable device: dead-lettered, someone may need help"
        );
        metrics::counter!(telemetry::UNROUTABLE_DEVICES, "reason" => refusal.kind()).increment(1);
        count(source, "refused");
        self.store_dead_letter(DeadLetter {
            reason: refusal.to_string(),
            kind: refusal.kind(),
            origin: format!("mqtt:{topic}"),
            device: name,
            grid: grid.as_deref(),
            payload,
        })
        .await
    }

    async fn store_dead_letter(&self, letter: DeadLetter<'_>) -> bool {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.outbox.dead_letter(&letter).await {
                Ok(()) => return true,
                Err(error) => {
                    metrics::counter!(telemetry::KAFKA_RETRIES).increment(1);
                    tracing::warn!(%error, "dead letter not stored yet; retrying");
                }
            }
            tokio::select! {
                () = self.cancel.cancelled() => return false,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }
}

fn count(source: &'static str, outcome: &'static str) {
    metrics::counter!(telemetry::MESSAGES, "source" => source, "outcome" => outcome).increment(1);
}

fn options(mqtt: &MqttConfig) -> MqttOptions {
    let mut options = MqttOptions::new(mqtt.client_id.clone(), mqtt.host.clone(), mqtt.port);
    options
        .set_keep_alive(Duration::from_secs(15))
        .set_clean_session(false)
        .set_manual_acks(true)
        .set_max_packet_size(MAX_PACKET_BYTES, MAX_PACKET_BYTES)
        .set_inflight(1000);
    if let Some(user) = &mqtt.username {
        options.set_credentials(user.clone(), mqtt.password.clone().unwrap_or_default());
    }
    options
}

/// Runs the MQTT side until `cancel` fires; `connected` follows the connection.
pub async fn run(
    mqtt: MqttConfig,
    intake: Arc<MqttIntake>,
    connected: watch::Sender<bool>,
    cancel: CancellationToken,
) {
    // Room for an acknowledgement from every message in hand, and then some.
    let (client, mut eventloop) = AsyncClient::new(options(&mqtt), 2 * MAX_IN_FLIGHT);
    let c = &intake.config;
    let subscriptions = [
        format!("{}/#", c.z2m_base_topic),
        format!("{}/events", c.frigate_prefix),
        format!("{}/available", c.frigate_prefix),
    ];
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let tasks = tokio_util::task::TaskTracker::new();
    loop {
        let event = tokio::select! {
            () = cancel.cancelled() => break,
            event = eventloop.poll() => event,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                tracing::info!(broker = %format!("{}:{}", mqtt.host, mqtt.port), session_present = ack.session_present, "connected to MQTT");
                metrics::gauge!(telemetry::MQTT_CONNECTED).set(1.0);
                let _ = connected.send(true);
                // Also when the session is kept: subscribing again is harmless, and a broker
                // that lost its state (a wiped data folder) needs it.
                let filters = subscriptions
                    .iter()
                    .map(|t| rumqttc::SubscribeFilter::new(t.clone(), QoS::AtLeastOnce));
                if let Err(error) = client.try_subscribe_many(filters) {
                    tracing::error!(%error, "cannot subscribe");
                }
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
                    break;
                };
                let intake = Arc::clone(&intake);
                let client = client.clone();
                tasks.spawn(async move {
                    let Publish {
                        ref topic,
                        ref payload,
                        retain,
                        ..
                    } = publish;
                    let handled = intake.handle(topic, payload, retain).await;
                    // The slot is free before the acknowledgement is queued: the event loop,
                    // which drains that queue, may be waiting for a slot (holding both would
                    // deadlock under a burst: every slot waiting on a full request queue).
                    drop(permit);
                    if handled && let Err(error) = client.ack(&publish).await {
                        tracing::warn!(%error, "cannot acknowledge to the MQTT broker; it will redeliver");
                    }
                });
            }
            Ok(_) => {}
            Err(error) => {
                metrics::gauge!(telemetry::MQTT_CONNECTED).set(0.0);
                let _ = connected.send(false);
                tracing::warn!(%error, "MQTT connection lost; reconnecting");
                tokio::select! {
                    () = cancel.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
        }
    }
    // Stop intake; what is in hand finishes (or is left unacknowledged for redelivery).
    tasks.close();
    tasks.wait().await;
    let _ = client.try_disconnect();
    let _ = connected.send(false);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_are_sorted_by_what_they_carry() {
        let r = |t| route(t, "zigbee2mqtt", "frigate");
        assert_eq!(r("zigbee2mqtt/hall_button"), Route::Z2mState("hall_button"));
        assert_eq!(
            r("zigbee2mqtt/kitchen/button"),
            Route::Z2mState("kitchen/button")
        );
        assert_eq!(
            r("zigbee2mqtt/kitchen/button/availability"),
            Route::Z2mAvailability("kitchen/button")
        );
        assert_eq!(r("zigbee2mqtt/hall_button/set"), Route::Other);
        assert_eq!(r("zigbee2mqtt/hall_button/set/state"), Route::Other);
        assert_eq!(r("zigbee2mqtt/bridge/devices"), Route::Other);
        assert_eq!(r("zigbee2mqtt/bridge"), Route::Other);
        assert_eq!(r("zigbee2mqttx/a"), Route::Other);
        assert_eq!(r("frigate/events"), Route::FrigateEvents);
        assert_eq!(r("frigate/available"), Route::FrigateAvailable);
        assert_eq!(r("frigate/gate_east/person"), Route::Other);
    }
}
