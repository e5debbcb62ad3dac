//! The city's devices as the gateway sees them: every household's Zigbee button behind a
//! Zigbee2MQTT hub and every camera behind Frigate, publishing their own payloads to an MQTT
//! broker (`--mqtt-url`), registered in the device registry first. A few buttons go offline or
//! run low on battery, so maintenance incidents show in the summary too.

use crate::city::City;
use helpgrid_common::kafka::KafkaArgs;
use helpgrid_proto::pb::{
    ButtonPress, CameraAlert, CameraLabel, Device, DeviceKind, HelpEvent, PressKind, help_event,
};
use rumqttc::{AsyncClient, MqttOptions, QoS};
use std::time::Duration;

#[derive(Debug, Clone, clap::Args)]
pub struct MqttArgs {
    /// Send presses and camera events through the gateway: the MQTT broker it reads
    /// (`mqtt://host:port`). Unset: help events go straight to Kafka.
    #[arg(long, env = "HELPGRID_CITY_MQTT_URL")]
    pub mqtt_url: Option<String>,
    /// MQTT user name.
    #[arg(long, env = "HELPGRID_CITY_MQTT_USERNAME")]
    pub mqtt_username: Option<String>,
    /// MQTT password.
    #[arg(long, env = "HELPGRID_CITY_MQTT_PASSWORD", hide_env_values = true)]
    pub mqtt_password: Option<String>,
    /// Share of press ticks on which some button goes offline or reports a low battery.
    #[arg(long, default_value_t = 0.02)]
    pub device_fault_ratio: f64,
}

/// Registers every household's button and every camera, and waits for Kafka to have them.
pub async fn register(city: &City, kafka: &KafkaArgs) -> anyhow::Result<usize> {
    let mut devices = Vec::new();
    for grid in &city.grids {
        for h in &grid.households {
            devices.push(Device {
                device_id: format!("btn-{h}"),
                kind: DeviceKind::ZigbeeButton as i32,
                household_id: h.clone(),
                grid_id: grid.id.clone(),
                location: Some(grid.centre),
                enabled: true,
                model: "WXKG11LM".into(),
                ..Device::default()
            });
        }
        for c in &grid.cameras {
            devices.push(Device {
                device_id: c.clone(),
                kind: DeviceKind::FrigateCamera as i32,
                camera_post: c.clone(),
                grid_id: grid.id.clone(),
                location: Some(grid.centre),
                enabled: true,
                ..Device::default()
            });
        }
    }
    let topic = helpgrid_gateway::devices_topic(&kafka.topic_prefix);
    helpgrid_gateway::kafka::ensure_devices_topic(kafka, &topic).await?;
    helpgrid_gateway::kafka::write_devices(kafka, &topic, &devices).await?;
    Ok(devices.len())
}

/// Publishes what hubs and Frigate would, QoS 1.
pub struct DevicePublisher {
    client: AsyncClient,
    /// `last_seen` of the previous press, so two presses never share one.
    last_seen: i64,
}

impl DevicePublisher {
    pub fn connect(args: &MqttArgs, url: &str) -> anyhow::Result<Self> {
        let (host, port) = helpgrid_gateway::config::parse_mqtt_url(url)
            .ok_or_else(|| anyhow::anyhow!("--mqtt-url {url:?}: expected mqtt://host:port"))?;
        let mut options =
            MqttOptions::new(format!("helpgrid-city-{}", std::process::id()), host, port);
        options.set_keep_alive(Duration::from_secs(15));
        if let Some(user) = &args.mqtt_username {
            options.set_credentials(user.clone(), args.mqtt_password.clone().unwrap_or_default());
        }
        let (client, mut eventloop) = AsyncClient::new(options, 10_000);
        tokio::spawn(async move {
            loop {
                if let Err(error) = eventloop.poll().await {
                    tracing::warn!(%error, "city MQTT connection lost; reconnecting");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        });
        Ok(Self {
            client,
            last_seen: 0,
        })
    }

    async fn publish(&self, topic: String, payload: String) -> bool {
        match self
            .client
            .publish(topic, QoS::AtLeastOnce, false, payload.into_bytes())
            .await
        {
            Ok(()) => true,
            Err(error) => {
                tracing::warn!(%error, "device message not published");
                false
            }
        }
    }

    /// The press or camera alert of `event`, as a Zigbee2MQTT button or Frigate sends it.
    pub async fn send(&mut self, event: &HelpEvent, now: i64, rng: &mut fastrand::Rng) -> bool {
        match &event.body {
            Some(help_event::Body::ButtonPress(p)) => self.press(p, now).await,
            Some(help_event::Body::CameraAlert(a)) => self.detection(a, now, rng).await,
            _ => false,
        }
    }

    async fn press(&mut self, p: &ButtonPress, now: i64) -> bool {
        self.last_seen = now.max(self.last_seen + 1);
        let action = match PressKind::try_from(p.kind) {
            Ok(PressKind::Urgent) => "long",
            Ok(PressKind::Medical) => "double",
            _ => "single",
        };
        let payload = format!(
            r#"{{"action":"{action}","battery":{},"linkquality":{},"voltage":3005,"last_seen":{}}}"#,
            p.battery_percent,
            60 + p.battery_percent % 100,
            self.last_seen
        );
        self.publish(format!("zigbee2mqtt/{}", p.device_id), payload)
            .await
    }

    async fn detection(&mut self, a: &CameraAlert, now: i64, rng: &mut fastrand::Rng) -> bool {
        // Frigate's objects: fire for fire, a person in a zone for everything else.
        let (object, zones) = match CameraLabel::try_from(a.label) {
            Ok(CameraLabel::Fire) => ("fire", "[]"),
            _ => ("person", r#"["street"]"#),
        };
        let start = now as f64 / 1000.0;
        let id = format!("{start:.6}-{:06x}", rng.u32(..0xff_ffff));
        let payload = format!(
            r#"{{"type":"new","before":null,"after":{{"id":"{id}","camera":"{}","frame_time":{start},"snapshot":null,"label":"{object}","sub_label":null,"top_score":{},"false_positive":false,"start_time":{start},"end_time":null,"score":{},"box":[10,20,110,220],"area":20000,"ratio":0.5,"region":[0,0,320,320],"current_zones":{zones},"entered_zones":{zones},"thumbnail":null,"has_snapshot":true,"has_clip":false,"active":true,"stationary":false,"motionless_count":0,"position_changes":0,"attributes":{{}},"current_attributes":[]}}}}"#,
            a.camera_id, a.confidence, a.confidence
        );
        self.publish("frigate/events".into(), payload).await
    }

    /// A button going offline (its hub says so) or reporting a low battery.
    pub async fn fault(&self, device_id: &str, offline: bool) -> bool {
        if offline {
            self.publish(
                format!("zigbee2mqtt/{device_id}/availability"),
                r#"{"state":"offline"}"#.into(),
            )
            .await
        } else {
            self.publish(
                format!("zigbee2mqtt/{device_id}"),
                r#"{"battery":8,"linkquality":70,"voltage":2550}"#.into(),
            )
            .await
        }
    }
}
