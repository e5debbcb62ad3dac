//! Real servers for the gateway's tests: a Mosquitto of the test's own (deploy/local/
//! mosquitto.sh in a temp folder), the shared Kafka broker, the real router, the gateway.
#![allow(dead_code)]

use helpgrid_common::kafka::KafkaArgs;
use helpgrid_common::reader::{self, Feed};
use helpgrid_common::topics::{Topics, ensure_topics};
use helpgrid_gateway::config::{GatewayConfig, MqttConfig};
use helpgrid_gateway::{Bound, devices_topic, kafka};
use helpgrid_proto::pb::{Device, DeviceKind, HelpEvent, Responder};
use helpgrid_router::config::RouterConfig;
use helpgrid_router::domain::Policy;
use helpgrid_testkit::records::roster_record;
use helpgrid_testkit::{IncidentLog, Publisher, WAIT, kafka_args};
use prost::Message;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/local/mosquitto.sh")
}

/// A Mosquitto broker of this test's own, stopped (and its folder removed) on drop.
pub struct Mosquitto {
    pub dir: PathBuf,
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
}

impl Mosquitto {
    pub fn start() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "helpgrid-test-mqtt-{}",
            uuid::Uuid::new_v4().simple()
        ));
        let out = Command::new("bash")
            .arg(script())
            .arg("start")
            .env("HELPGRID_MQTT_DIR", &dir)
            .output()
            .expect("run mosquitto.sh");
        assert!(
            out.status.success(),
            "mosquitto.sh start failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let url = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let port = url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port in url");
        let password = std::fs::read_to_string(dir.join("password"))
            .expect("password file")
            .trim()
            .to_owned();
        Self {
            dir,
            host: "127.0.0.1".into(),
            port,
            user: "helpgrid".into(),
            password,
        }
    }

    pub fn run(&self, command: &str) {
        let out = Command::new("bash")
            .arg(script())
            .arg(command)
            .env("HELPGRID_MQTT_DIR", &self.dir)
            .output()
            .expect("run mosquitto.sh");
        assert!(
            out.status.success(),
            "mosquitto.sh {command} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn config(&self, client_id: &str) -> MqttConfig {
        MqttConfig {
            host: self.host.clone(),
            port: self.port,
            username: Some(self.user.clone()),
            password: Some(self.password.clone()),
            client_id: client_id.to_owned(),
        }
    }

    /// Publishes with `mosquitto_pub` (a client we did not write), QoS 1.
    pub fn publish(&self, topic: &str, payload: &str, retained: bool) {
        let mut cmd = Command::new("mosquitto_pub");
        cmd.args(["-h", &self.host, "-p", &self.port.to_string()])
            .args(["-u", &self.user, "-P", &self.password])
            .args(["-q", "1", "-t", topic, "-m", payload]);
        if retained {
            cmd.arg("-r");
        }
        let out = cmd.output().expect("run mosquitto_pub");
        assert!(
            out.status.success(),
            "mosquitto_pub failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .args(["stop", "--clean"])
            .env("HELPGRID_MQTT_DIR", &self.dir)
            .output();
    }
}

/// Fresh topics, a roster and registered devices.
pub async fn setup(roster: Vec<Responder>, devices: &[Device]) -> (KafkaArgs, Topics) {
    let args = kafka_args();
    let topics = Topics::with_prefix(&args.topic_prefix);
    ensure_topics(&args, &topics).await.expect("topics");
    let publisher = Publisher::new(&args);
    for r in roster {
        publisher
            .send(&topics.roster, &r.responder_id.clone(), &roster_record(r))
            .await;
    }
    let devices_topic = devices_topic(&args.topic_prefix);
    kafka::ensure_devices_topic(&args, &devices_topic)
        .await
        .expect("devices topic");
    kafka::write_devices(&args, &devices_topic, devices)
        .await
        .expect("devices written");
    (args, topics)
}

pub fn button(id: &str, household: &str, grid: &str, kind: DeviceKind) -> Device {
    Device {
        device_id: id.into(),
        kind: kind as i32,
        household_id: household.into(),
        grid_id: grid.into(),
        enabled: true,
        credential_ref: if kind == DeviceKind::HttpButton {
            format!("cred-{id}")
        } else {
            String::new()
        },
        ..Device::default()
    }
}

pub fn camera(id: &str, post: &str, grid: &str) -> Device {
    Device {
        device_id: id.into(),
        kind: DeviceKind::FrigateCamera as i32,
        camera_post: post.into(),
        grid_id: grid.into(),
        enabled: true,
        ..Device::default()
    }
}

pub struct RunningRouter {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl RunningRouter {
    pub fn start(args: &KafkaArgs) -> Self {
        let config = RouterConfig {
            batch_max: 100,
            ..RouterConfig::new(
                args.clone(),
                format!("{}router-1", args.topic_prefix),
                Policy::default().with_ack_deadline_ms(600_000),
            )
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(helpgrid_router::run(config, async move {
            let _ = stopped.await;
        }));
        Self { stop, task }
    }

    pub async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("router stops in time")
            .expect("router task")
            .expect("router ran without error");
    }
}

pub struct RunningGateway {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    pub bound: Bound,
}

impl RunningGateway {
    pub async fn start(config: GatewayConfig) -> Self {
        let (stop, stopped) = oneshot::channel::<()>();
        let (bound_tx, bound_rx) = oneshot::channel();
        let task = tokio::spawn(helpgrid_gateway::run(
            config,
            None,
            Some(bound_tx),
            async move {
                let _ = stopped.await;
            },
        ));
        let bound = tokio::time::timeout(WAIT, bound_rx)
            .await
            .expect("gateway ready in time")
            .expect("gateway started");
        Self { stop, task, bound }
    }

    pub async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("gateway stops in time")
            .expect("gateway task")
            .expect("gateway ran without error");
    }
}

/// Waits until the gateway's MQTT subscriptions are in place (so a QoS 1 message published
/// next is delivered to it): an undecodable probe on a device topic comes back as a dead
/// letter once they are.
pub async fn wait_subscribed(mq: &Mosquitto, log: &mut DeadLetters, base: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        mq.publish(&format!("{base}/probe-subscribed"), "not json", false);
        if log
            .wait_for(Duration::from_millis(500), |h| {
                h.get("helpgrid.dlq.origin.topic")
                    .is_some_and(|t| t.ends_with("probe-subscribed"))
            })
            .await
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gateway never subscribed"
        );
    }
}

/// Records of a topic, as they arrive.
pub struct TopicLog {
    feed: mpsc::Receiver<Feed>,
    pub records: Vec<helpgrid_common::reader::Record>,
    _stop: tokio_util::sync::DropGuard,
}

impl TopicLog {
    pub async fn follow(args: &KafkaArgs, topic: &str) -> Self {
        let cancel = CancellationToken::new();
        let feed = reader::follow(args, "helpgrid-test-topic", topic, cancel.clone())
            .await
            .expect("follow topic");
        Self {
            feed,
            records: Vec::new(),
            _stop: cancel.drop_guard(),
        }
    }

    /// Reads for up to `limit` until `done` holds; returns whether it did.
    pub async fn read_until(
        &mut self,
        limit: Duration,
        done: impl Fn(&[helpgrid_common::reader::Record]) -> bool,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if done(&self.records) {
                return true;
            }
            match tokio::time::timeout_at(deadline, self.feed.recv()).await {
                Ok(Some(Feed::Record(r))) => self.records.push(r),
                Ok(Some(Feed::CaughtUp)) => {}
                Ok(None) | Err(_) => return false,
            }
        }
    }

    pub fn help_events(&self) -> Vec<(String, HelpEvent)> {
        self.records
            .iter()
            .map(|r| {
                (
                    String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into_owned(),
                    HelpEvent::decode(r.payload.as_deref().unwrap_or_default())
                        .expect("help event"),
                )
            })
            .collect()
    }
}

/// The dead-letter topic, with headers as a map.
pub struct DeadLetters(pub TopicLog);

impl DeadLetters {
    pub async fn follow(args: &KafkaArgs, topics: &Topics) -> Self {
        Self(TopicLog::follow(args, &topics.dead_letters).await)
    }

    pub fn headers(
        r: &helpgrid_common::reader::Record,
    ) -> std::collections::HashMap<String, String> {
        r.headers
            .iter()
            .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
            .collect()
    }

    /// Waits up to `limit` for a dead letter whose headers satisfy `matches`.
    pub async fn wait_for(
        &mut self,
        limit: Duration,
        matches: impl Fn(&std::collections::HashMap<String, String>) -> bool,
    ) -> bool {
        self.0
            .read_until(limit, |records| {
                records.iter().any(|r| matches(&Self::headers(r)))
            })
            .await
    }
}

pub fn incident_log_follow(
    args: &KafkaArgs,
    topics: &Topics,
) -> impl std::future::Future<Output = IncidentLog> {
    IncidentLog::follow(args, &topics.incident_events)
}
