//! What the webhook tests share: a real HTTP receiver on port 0 whose answers the test
//! scripts, helpgrid-notify as a child process (its real binary, flags and /metrics), the
//! real router in-process, and an admin gRPC client.

#![allow(dead_code)]

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use helpgrid_auth::{Bearer, Role, TokenKey};
use helpgrid_common::kafka::KafkaArgs;
use helpgrid_common::topics::{Topics, ensure_topics};
use helpgrid_proto::pb::notify_service_client::NotifyServiceClient;
use helpgrid_proto::pb::{IncidentEvent, PutSubscriptionRequest, Responder, Subscription};
use helpgrid_router::config::RouterConfig;
use helpgrid_router::domain::Policy;
use helpgrid_testkit::process::ServiceProcess;
use helpgrid_testkit::records::roster_record;
use helpgrid_testkit::{IncidentLog, Publisher, WAIT, kafka_args};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

pub const SECRET: &str = "receiver-secret-0123456789";
const KEY: &[u8] = b"notify-test-key-notify-test-key-0123";

/// How the receiver answers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    Accept,
    /// 500 to the next N requests, then accept.
    FailNext(u32),
    /// 503 to everything.
    Down,
}

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub at: Instant,
    /// The same moment on the wall clock, to compare with times in the body.
    pub wall: std::time::SystemTime,
    pub status: u16,
    pub timestamp: String,
    pub signature: String,
    pub key: String,
    pub attempt: String,
    pub event: String,
    /// `x-helpgrid-batch`: empty for a single notification.
    pub batch: String,
    pub body: Vec<u8>,
}

impl Received {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("the body is JSON")
    }

    pub fn accepted(&self) -> bool {
        self.status == 200
    }

    /// The notifications the request carried: its body, or each of a batch's.
    pub fn notifications(&self) -> Vec<serde_json::Value> {
        let body = self.json();
        if self.batch.is_empty() {
            return vec![body];
        }
        body["notifications"]
            .as_array()
            .expect("a batch body has notifications")
            .clone()
    }
}

#[derive(Debug)]
struct ReceiverState {
    mode: Mode,
    seen: Vec<Received>,
}

#[derive(Clone)]
pub struct Receiver {
    state: Arc<Mutex<ReceiverState>>,
    pub url: String,
    _stop: Arc<tokio_util::sync::DropGuard>,
}

fn header(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

async fn receive(
    State(state): State<Arc<Mutex<ReceiverState>>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let mut s = state.lock().expect("receiver state");
    let status = match s.mode {
        Mode::Accept => StatusCode::OK,
        Mode::FailNext(0) => {
            s.mode = Mode::Accept;
            StatusCode::OK
        }
        Mode::FailNext(n) => {
            s.mode = if n == 1 {
                Mode::Accept
            } else {
                Mode::FailNext(n - 1)
            };
            StatusCode::INTERNAL_SERVER_ERROR
        }
        Mode::Down => StatusCode::SERVICE_UNAVAILABLE,
    };
    s.seen.push(Received {
        at: Instant::now(),
        wall: std::time::SystemTime::now(),
        status: status.as_u16(),
        timestamp: header(&headers, "x-helpgrid-timestamp"),
        signature: header(&headers, "x-helpgrid-signature"),
        key: header(&headers, "idempotency-key"),
        attempt: header(&headers, "x-helpgrid-attempt"),
        event: header(&headers, "x-helpgrid-event"),
        batch: header(&headers, "x-helpgrid-batch"),
        body: body.to_vec(),
    });
    status
}

impl Receiver {
    pub async fn start(mode: Mode) -> Self {
        let state = Arc::new(Mutex::new(ReceiverState {
            mode,
            seen: Vec::new(),
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        let app = Router::new()
            .fallback(axum::routing::post(receive))
            .with_state(Arc::clone(&state));
        let cancel = tokio_util::sync::CancellationToken::new();
        let stop = cancel.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await;
        });
        Self {
            state,
            url,
            _stop: Arc::new(cancel.drop_guard()),
        }
    }

    pub fn set_mode(&self, mode: Mode) {
        self.state.lock().expect("state").mode = mode;
    }

    pub fn seen(&self) -> Vec<Received> {
        self.state.lock().expect("state").seen.clone()
    }

    /// Waits until `done` holds for the requests seen so far; panics after `limit`.
    pub async fn wait_until(
        &self,
        what: &str,
        limit: Duration,
        done: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        let deadline = Instant::now() + limit;
        loop {
            let seen = self.seen();
            if done(&seen) {
                return seen;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; the receiver saw {:#?}",
                seen.iter()
                    .map(|r| (r.status, r.event.clone(), r.key.clone(), r.attempt.clone()))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

pub struct RunningRouter {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl RunningRouter {
    pub fn start(args: &KafkaArgs, policy: Policy) -> Self {
        let config = RouterConfig {
            batch_max: 100,
            ..RouterConfig::new(
                args.clone(),
                format!("{}router-1", args.topic_prefix),
                policy,
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

/// Deadlines long enough that nothing times out during a test.
pub fn calm_policy() -> Policy {
    Policy::default().with_ack_deadline_ms(600_000)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

pub struct Notify {
    pub process: ServiceProcess,
    pub grpc: String,
    pub metrics: String,
    pub key: Arc<TokenKey>,
}

/// Fast retries so failures show within a test: 4 attempts, 50 ms doubling to 400 ms, the
/// breaker opening after 3 failures for 500 ms.
pub const FAST_RETRIES: &[(&str, &str)] = &[
    ("HELPGRID_NOTIFY_RETRY_INITIAL_MS", "50"),
    ("HELPGRID_NOTIFY_RETRY_MAX_MS", "400"),
    ("HELPGRID_NOTIFY_RETRY_ATTEMPTS", "4"),
    ("HELPGRID_NOTIFY_BREAKER_FAILURES", "3"),
    ("HELPGRID_NOTIFY_BREAKER_COOLDOWN_MS", "500"),
    ("HELPGRID_NOTIFY_REQUEST_TIMEOUT_MS", "2000"),
    ("HELPGRID_NOTIFY_COMMIT_INTERVAL_MS", "100"),
];

impl Notify {
    /// Starts the real binary and waits for /readyz.
    pub async fn start(args: &KafkaArgs, name: &str, extra: &[(&str, &str)]) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "helpgrid-notify-test-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let key_file = dir.join("token.key");
        std::fs::write(&key_file, KEY).expect("key file");
        let (grpc, metrics) = (
            format!("127.0.0.1:{}", free_port()),
            format!("127.0.0.1:{}", free_port()),
        );
        let mut env: Vec<(String, String)> = vec![
            ("HELPGRID_KAFKA_BROKERS".into(), args.brokers.clone()),
            ("HELPGRID_TOPIC_PREFIX".into(), args.topic_prefix.clone()),
            (
                "HELPGRID_TOPIC_PARTITIONS".into(),
                args.topic_partitions.to_string(),
            ),
            ("HELPGRID_NOTIFY_GRPC_LISTEN".into(), grpc.clone()),
            ("HELPGRID_NOTIFY_METRICS_LISTEN".into(), metrics.clone()),
            (
                "HELPGRID_AUTH_KEY_FILE".into(),
                key_file.display().to_string(),
            ),
            ("RUST_LOG".into(), "info,helpgrid_notify=debug".into()),
        ];
        env.extend(
            FAST_RETRIES
                .iter()
                .chain(extra)
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        let process = ServiceProcess::spawn(
            std::path::Path::new(env!("CARGO_BIN_EXE_helpgrid-notify")),
            &format!("{}-{name}", args.topic_prefix.trim_end_matches('.')),
            &env,
        );
        let notify = Self {
            process,
            grpc: format!("http://{grpc}"),
            metrics: format!("http://{metrics}"),
            key: Arc::new(TokenKey::from_secret(KEY).expect("key")),
        };
        notify.wait_ready().await;
        notify
    }

    async fn wait_ready(&self) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(r) = client.get(format!("{}/readyz", self.metrics)).send().await
                && r.status() == 200
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "helpgrid-notify not ready; see {}",
                self.process.log.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn token(&self, role: Role) -> String {
        self.key
            .mint("tester", role, &["*".to_owned()], Duration::from_secs(600))
            .expect("mint")
    }

    pub async fn client(
        &self,
        role: Role,
    ) -> NotifyServiceClient<InterceptedService<Channel, Bearer>> {
        let channel = Channel::from_shared(self.grpc.clone())
            .expect("uri")
            .connect()
            .await
            .expect("connect to notify");
        NotifyServiceClient::with_interceptor(
            channel,
            Bearer::new(&self.token(role)).expect("bearer"),
        )
    }

    pub async fn subscribe(&self, subscription: Subscription) {
        self.client(Role::Admin)
            .await
            .put_subscription(PutSubscriptionRequest {
                subscription: Some(subscription),
            })
            .await
            .expect("subscription accepted");
    }

    /// Waits (up to [`WAIT`]) until the metric reaches `want`, and returns what it read last:
    /// a counter moves just after the work it counts (a dead letter is counted once Kafka
    /// acknowledged it), so a test that saw the work may scrape a moment too early.
    pub async fn metric_reaching(&self, name: &str, labels: &[(&str, &str)], want: f64) -> f64 {
        let deadline = Instant::now() + WAIT;
        loop {
            let value = self.metric(name, labels).await;
            if value >= want || Instant::now() >= deadline {
                return value;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The value of one Prometheus sample line (name with labels as rendered), or 0.
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let text = reqwest::get(format!("{}/metrics", self.metrics))
            .await
            .expect("scrape")
            .text()
            .await
            .expect("metrics text");
        text.lines()
            .filter(|l| l.starts_with(name) && !l.starts_with('#'))
            .filter(|l| {
                labels
                    .iter()
                    .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

pub fn subscription(
    id: &str,
    url: &str,
    triggers: &[helpgrid_proto::pb::NotifyTrigger],
) -> Subscription {
    Subscription {
        subscription_id: id.into(),
        url: url.into(),
        triggers: triggers.iter().map(|t| *t as i32).collect(),
        template: helpgrid_proto::pb::WebhookTemplate::Generic as i32,
        secret: SECRET.into(),
        ..Subscription::default()
    }
}

pub struct Setup {
    pub args: KafkaArgs,
    pub topics: Topics,
    pub publisher: Publisher,
    pub log: IncidentLog,
}

/// Fresh topics, a roster, and a reader of the incident events.
pub async fn setup(roster: Vec<Responder>) -> Setup {
    let args = kafka_args();
    let topics = Topics::with_prefix(&args.topic_prefix);
    ensure_topics(&args, &topics).await.expect("topics");
    let publisher = Publisher::new(&args);
    for r in roster {
        publisher
            .send(&topics.roster, &r.responder_id.clone(), &roster_record(r))
            .await;
    }
    let log = IncidentLog::follow(&args, &topics.incident_events).await;
    Setup {
        args,
        topics,
        publisher,
        log,
    }
}

/// The event's id (its envelope's).
pub fn event_id(event: &IncidentEvent) -> String {
    event
        .envelope
        .as_ref()
        .map(|e| e.event_id.clone())
        .expect("envelope")
}

/// The notices notify gives an incident event, as (kind, idempotency key), in order (the
/// contract in services/notify/README.md): one keyed by the event id, and for an "opened and
/// assigned" event (`IncidentOpened.assigned`) also one `assigned` notice per track, keyed
/// `<event id>:assigned:<track number>`.
pub fn notice_keys(event: &IncidentEvent) -> Vec<(&'static str, String)> {
    let id = event_id(event);
    let kind = event.change.as_ref().map_or("none", |c| c.name());
    let mut keys = vec![(kind, id.clone())];
    if let Some(helpgrid_proto::pb::incident_event::Change::Opened(o)) = &event.change {
        keys.extend(
            o.assigned
                .iter()
                .map(|a| ("assigned", format!("{id}:assigned:{}", a.track))),
        );
    }
    keys
}

/// The keys of the notices of `kinds` that `events` give, in order.
pub fn keys_of<'a>(
    events: impl IntoIterator<Item = &'a IncidentEvent>,
    kinds: &[&str],
) -> Vec<String> {
    events
        .into_iter()
        .flat_map(notice_keys)
        .filter(|(kind, _)| kinds.contains(kind))
        .map(|(_, key)| key)
        .collect()
}

/// The id of the incident the event is about.
pub fn incident_of(event: &IncidentEvent) -> String {
    event
        .incident
        .as_ref()
        .map(|i| i.incident_id.clone())
        .expect("incident")
}
