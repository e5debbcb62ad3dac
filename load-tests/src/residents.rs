//! Households and cameras: help events onto Kafka at the configured rates, as button hubs
//! and camera analytics would send them (idempotent producer, key = grid id), or their own
//! MQTT messages to the gateway (see [`crate::devices`]).

use crate::city::City;
use crate::devices::DevicePublisher;
use crate::tally::Tally;
use helpgrid_common::envelope::new_envelope;
use helpgrid_common::time::now_millis;
use helpgrid_proto::pb::{ButtonPress, CameraAlert, CameraLabel, HelpEvent, PressKind, help_event};
use prost::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, clap::Args)]
pub struct Activity {
    /// Button presses per second across the city.
    #[arg(long, default_value_t = 2.0)]
    pub presses_per_s: f64,
    /// Camera alerts per second across the city (some under the confidence threshold).
    #[arg(long, default_value_t = 0.5)]
    pub camera_alerts_per_s: f64,
    /// Share of presses that are a household pressing again.
    #[arg(long, default_value_t = 0.1)]
    pub repeat_press_ratio: f64,
    /// Share of presses that are urgent long-presses.
    #[arg(long, default_value_t = 0.08)]
    pub urgent_ratio: f64,
    /// Share of presses on the medical button.
    #[arg(long, default_value_t = 0.05)]
    pub medical_ratio: f64,
}

/// Camera labels from everyday to severe; the load generator draws from the same list.
pub const LABELS: [CameraLabel; 6] = [
    CameraLabel::Loitering,
    CameraLabel::Crowd,
    CameraLabel::Intrusion,
    CameraLabel::Fall,
    CameraLabel::Fight,
    CameraLabel::Fire,
];

pub struct Residents {
    city: Arc<City>,
    activity: Activity,
    producer: FutureProducer,
    topic: String,
    rng: fastrand::Rng,
    recent: VecDeque<(usize, usize)>,
    /// Through the gateway: devices publish to MQTT instead of help events onto Kafka.
    devices: Option<(DevicePublisher, f64)>,
}

impl Residents {
    pub fn new(
        city: Arc<City>,
        activity: Activity,
        producer: FutureProducer,
        topic: String,
        seed: u64,
    ) -> Self {
        Self {
            city,
            activity,
            producer,
            topic,
            rng: fastrand::Rng::with_seed(seed),
            recent: VecDeque::new(),
            devices: None,
        }
    }

    /// Sends through the gateway: `publisher` publishes what hubs and Frigate would, and on
    /// `fault_ratio` of the ticks some button goes offline or runs low on battery.
    pub fn through_gateway(mut self, publisher: DevicePublisher, fault_ratio: f64) -> Self {
        self.devices = Some((publisher, fault_ratio));
        self
    }

    async fn deliver(&mut self, key: &str, event: &HelpEvent) -> bool {
        match self.devices.as_mut() {
            Some((publisher, _)) => publisher.send(event, now_millis(), &mut self.rng).await,
            None => self.send(key, event).await,
        }
    }

    async fn maybe_fault(&mut self) {
        let Some((publisher, ratio)) = self.devices.as_ref() else {
            return;
        };
        if self.rng.f64() >= *ratio {
            return;
        }
        let grid = &self.city.grids[self.rng.usize(..self.city.grids.len())];
        let Some(h) = grid
            .households
            .get(self.rng.usize(..grid.households.len().max(1)))
        else {
            return;
        };
        publisher.fault(&format!("btn-{h}"), self.rng.bool()).await;
    }

    fn next_press(&mut self) -> (String, HelpEvent) {
        let (g, h) = match self.recent.front() {
            Some(_) if self.rng.f64() < self.activity.repeat_press_ratio => {
                self.recent[self.rng.usize(..self.recent.len())]
            }
            _ => {
                let g = self.rng.usize(..self.city.grids.len());
                (
                    g,
                    self.rng.usize(..self.city.grids[g].households.len().max(1)),
                )
            }
        };
        self.recent.push_back((g, h));
        if self.recent.len() > 32 {
            self.recent.pop_front();
        }
        let grid = &self.city.grids[g];
        let household = grid.households.get(h).cloned().unwrap_or_default();
        let roll = self.rng.f64();
        let kind = if roll < self.activity.urgent_ratio {
            PressKind::Urgent
        } else if roll < self.activity.urgent_ratio + self.activity.medical_ratio {
            PressKind::Medical
        } else {
            PressKind::Help
        };
        let event = HelpEvent {
            envelope: Some(new_envelope(&format!("hub:{household}"), now_millis())),
            body: Some(help_event::Body::ButtonPress(ButtonPress {
                device_id: format!("btn-{household}"),
                household_id: household,
                grid_id: grid.id.clone(),
                kind: kind as i32,
                location: Some(grid.centre),
                battery_percent: self.rng.u32(20..=100),
            })),
        };
        (grid.id.clone(), event)
    }

    fn next_alert(&mut self) -> Option<(String, HelpEvent)> {
        let grid = &self.city.grids[self.rng.usize(..self.city.grids.len())];
        let camera = grid
            .cameras
            .get(self.rng.usize(..grid.cameras.len().max(1)))?
            .clone();
        // Mostly everyday labels; the severe ones are rare.
        let label = LABELS[(self.rng.f64().powi(2) * LABELS.len() as f64) as usize % LABELS.len()];
        let event = HelpEvent {
            envelope: Some(new_envelope(&format!("camera:{camera}"), now_millis())),
            body: Some(help_event::Body::CameraAlert(CameraAlert {
                camera_id: camera.clone(),
                grid_id: grid.id.clone(),
                label: label as i32,
                confidence: 0.4 + 0.6 * self.rng.f32(),
                zone: "street".into(),
                snapshot_ref: format!("snap://{camera}/{}", now_millis()),
                location: Some(grid.centre),
            })),
        };
        Some((grid.id.clone(), event))
    }

    async fn send(&self, key: &str, event: &HelpEvent) -> bool {
        let payload = event.encode_to_vec();
        let record = FutureRecord::to(&self.topic).key(key).payload(&payload);
        match self.producer.send(record, Duration::from_secs(10)).await {
            Ok(_) => true,
            Err((error, _)) => {
                tracing::warn!(%error, "help event not delivered");
                false
            }
        }
    }

    /// Sends events at the configured rates until cancelled.
    pub async fn run(mut self, tally: Arc<Mutex<Tally>>, cancel: CancellationToken) {
        let tick = Duration::from_millis(100);
        let (mut press_debt, mut alert_debt) = (0.0, 0.0);
        let mut interval = tokio::time::interval(tick);
        while !cancel.is_cancelled() {
            tokio::select! {
                () = cancel.cancelled() => return,
                _ = interval.tick() => {}
            }
            press_debt += self.activity.presses_per_s * tick.as_secs_f64();
            alert_debt += self.activity.camera_alerts_per_s * tick.as_secs_f64();
            self.maybe_fault().await;
            while press_debt >= 1.0 {
                press_debt -= 1.0;
                let (key, event) = self.next_press();
                if self.deliver(&key, &event).await
                    && let Ok(mut t) = tally.lock()
                {
                    t.presses_sent += 1;
                }
            }
            while alert_debt >= 1.0 {
                alert_debt -= 1.0;
                if let Some((key, event)) = self.next_alert()
                    && self.deliver(&key, &event).await
                    && let Ok(mut t) = tally.lock()
                {
                    t.alerts_sent += 1;
                }
            }
        }
    }
}
