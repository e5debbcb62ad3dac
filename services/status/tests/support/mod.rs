//! Test harness: a real Kafka broker (address in `HELPGRID_TEST_KAFKA`), fresh topics per
//! test (random prefix), the real status server on a port-0 socket, and the router's part
//! played by producing incident events directly.
#![allow(dead_code, clippy::unwrap_used)] // each test binary uses part of the harness

use helpgrid_auth::{Bearer, Role, TokenKey};
use helpgrid_common::envelope::new_envelope;
use helpgrid_common::kafka::KafkaArgs;
use helpgrid_common::reader::{Feed, follow};
use helpgrid_common::time::{Millis, now_millis, to_timestamp};
use helpgrid_common::topics::{Topics, ensure_topics};
use helpgrid_proto::pb::dispatch_service_client::DispatchServiceClient;
use helpgrid_proto::pb::incident_command::Action;
use helpgrid_proto::pb::incident_event::Change;
use helpgrid_proto::pb::incident_service_client::IncidentServiceClient;
use helpgrid_proto::pb::roster_service_client::RosterServiceClient;
use helpgrid_proto::pb::{
    Acknowledged, Assignment, CommandRejected, EscalationLevel, Incident, IncidentClosed,
    IncidentCommand, IncidentEvent, IncidentOpened, IncidentState, IncidentUpdate, Priority,
    RejectReason, ResponderRole, Track,
};
use helpgrid_status::config::StatusConfig;
use prost::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::Streaming;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Partitions of the test topics: few, so topic creation is quick, more than one, so
/// partition routing is really tested.
pub const PARTITIONS: i32 = 3;
/// Upper bound for anything a test waits for.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// The token key of every test service.
pub const TEST_KEY: &[u8] = b"status-tests-key-status-tests-key";

pub fn test_key() -> TokenKey {
    TokenKey::from_secret(TEST_KEY).unwrap()
}

/// A token of the test key.
pub fn token(subject: &str, role: Role, grids: &[&str]) -> String {
    let grids: Vec<String> = grids.iter().map(|g| (*g).to_owned()).collect();
    test_key()
        .mint(subject, role, &grids, Duration::from_secs(600))
        .unwrap()
}

/// A gRPC channel whose calls carry `token` (none: calls without a token).
pub type Authed = InterceptedService<Channel, Bearer>;

pub fn kafka_bootstrap() -> String {
    match std::env::var("HELPGRID_TEST_KAFKA") {
        Ok(address) if !address.trim().is_empty() => address,
        _ => panic!(
            "HELPGRID_TEST_KAFKA is not set. These tests need a real Kafka broker: start one with \
             `bash deploy/local/kafka.sh start`, then run \
             `HELPGRID_TEST_KAFKA=$(bash deploy/local/kafka.sh bootstrap) cargo test -p helpgrid-status`"
        ),
    }
}

/// Bounded wait on a future; a test that would hang fails with `what` instead.
pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(PATIENCE, future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {PATIENCE:?} waiting for {what}"),
    }
}

/// A private set of topics on the test broker.
pub struct TestKafka {
    pub args: KafkaArgs,
    pub topics: Topics,
    producer: FutureProducer,
}

impl TestKafka {
    pub async fn new() -> Self {
        // The service's logs go straight to stderr (past the test harness's capture): only
        // when asked for.
        if std::env::var_os("RUST_LOG").is_some() {
            helpgrid_common::telemetry::init_tracing();
        }
        Self::on_broker(&kafka_bootstrap()).await
    }

    /// Fresh topics on the broker at `bootstrap` (a test's own broker).
    pub async fn on_broker(bootstrap: &str) -> Self {
        let mut args = KafkaArgs::new(bootstrap, format!("status-test-{}.", uuid::Uuid::new_v4()));
        args.topic_partitions = PARTITIONS;
        let topics = Topics::with_prefix(&args.topic_prefix);
        within("topic creation", ensure_topics(&args, &topics))
            .await
            .unwrap();
        let producer = args.producer_config("status-test-router").create().unwrap();
        Self {
            args,
            topics,
            producer,
        }
    }

    /// Writes `event` to incident-events as the router would (key = grid id); returns its offset.
    pub async fn publish_event(&self, partition: i32, event: &IncidentEvent) -> i64 {
        let key = event
            .incident
            .as_ref()
            .map(|i| i.grid_id.clone())
            .unwrap_or_default();
        self.publish_raw(
            &self.topics.incident_events.clone(),
            partition,
            &key,
            &event.encode_to_vec(),
        )
        .await
    }

    pub async fn publish_raw(&self, topic: &str, partition: i32, key: &str, payload: &[u8]) -> i64 {
        let record = FutureRecord::to(topic)
            .partition(partition)
            .key(key)
            .payload(payload);
        let delivery = within("produce", self.producer.send(record, PATIENCE)).await;
        delivery.map_err(|(e, _)| e).unwrap().offset
    }

    /// Records in `topic` now (sum of high watermarks).
    pub fn records_in(&self, topic: &str) -> i64 {
        let consumer: BaseConsumer = self
            .args
            .reader_config("status-test-watermarks")
            .create()
            .unwrap();
        (0..PARTITIONS)
            .map(|p| consumer.fetch_watermarks(topic, p, PATIENCE).unwrap().1)
            .sum()
    }

    /// The stock-client tests' service: incident `in-1` in grid `g7` (responder `r1`), which a
    /// `g7` console may read, and `in-hidden` in grid `g9-secret`, which it may not — and whose
    /// grid a refusal must not name.
    pub async fn start_service_with_a_hidden_grid(&self, opened_at: Millis) -> TestService {
        self.publish_event(
            0,
            &opened_event(&assigned_incident("in-1", "g7", "r1", opened_at)),
        )
        .await;
        self.publish_event(
            1,
            &opened_event(&assigned_incident(
                "in-hidden",
                "g9-secret",
                "r9",
                opened_at,
            )),
        )
        .await;
        self.start_service(Duration::from_millis(500)).await
    }

    pub async fn start_service(&self, command_timeout: Duration) -> TestService {
        self.start_service_with_console(command_timeout, None).await
    }

    /// The service, with the big-screen console on `console` (port 0: any free port).
    pub async fn start_service_with_console(
        &self,
        command_timeout: Duration,
        console: Option<u16>,
    ) -> TestService {
        let mut config = StatusConfig::new(self.args.clone()).with_auth(test_key());
        config.command_timeout = command_timeout;
        self.start_configured(config, console).await
    }

    /// The service with the console and the responder app on `port`, knowing `households`.
    pub async fn start_app_service(
        &self,
        command_timeout: Duration,
        port: u16,
        households: helpgrid_status::app::view::Households,
    ) -> TestService {
        let mut config = StatusConfig::new(self.args.clone()).with_auth(test_key());
        config.command_timeout = command_timeout;
        config.households = Arc::new(households);
        self.start_configured(config, Some(port)).await
    }

    /// The service with `config` (made from `self.args`), the console on `console`.
    pub async fn start_configured(
        &self,
        config: StatusConfig,
        console: Option<u16>,
    ) -> TestService {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let console = match console {
            Some(port) => Some(
                tokio::net::TcpListener::bind(("127.0.0.1", port))
                    .await
                    .unwrap(),
            ),
            None => None,
        };
        let console_addr = console.as_ref().map(|l| l.local_addr().unwrap());
        let stop = CancellationToken::new();
        let server = tokio::spawn(helpgrid_status::run_with_console(
            config,
            listener,
            console,
            stop.clone().cancelled_owned(),
        ));
        let channel = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_lazy();
        let service = TestService {
            addr,
            console_addr,
            channel,
            stop,
            server,
        };
        within("the service to report SERVING", service.serving()).await;
        service
    }

    /// Plays the router for commands: every command read from incident-commands is recorded
    /// and, if `answer` returns an event, that event is written to incident-events in the
    /// partition the command came in on.
    pub async fn answer_commands<F>(self: &Arc<Self>, answer: F) -> CommandLog
    where
        F: Fn(&IncidentCommand) -> Option<IncidentEvent> + Send + 'static,
    {
        let stop = CancellationToken::new();
        let mut feed = follow(
            &self.args,
            "status-test-router-commands",
            &self.topics.incident_commands,
            stop.clone(),
        )
        .await
        .unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let kafka = Arc::clone(self);
        let log = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Some(item) = feed.recv().await {
                let Feed::Record(record) = item else { continue };
                let command =
                    IncidentCommand::decode(record.payload.as_deref().unwrap_or_default()).unwrap();
                let key = String::from_utf8(record.key.clone().unwrap_or_default()).unwrap();
                log.lock().unwrap().push(SeenCommand {
                    partition: record.partition,
                    key,
                    command: command.clone(),
                });
                if let Some(event) = answer(&command) {
                    kafka.publish_event(record.partition, &event).await;
                }
            }
        });
        CommandLog {
            seen,
            _stop: stop.drop_guard(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct SeenCommand {
    pub partition: i32,
    pub key: String,
    pub command: IncidentCommand,
}

/// Commands the in-test router has read; it stops when this is dropped.
pub struct CommandLog {
    seen: Arc<Mutex<Vec<SeenCommand>>>,
    _stop: tokio_util::sync::DropGuard,
}

impl CommandLog {
    pub fn seen(&self) -> Vec<SeenCommand> {
        self.seen.lock().unwrap().clone()
    }
}

/// The real status server, on a socket.
pub struct TestService {
    pub addr: SocketAddr,
    /// The console's address, if it was started.
    pub console_addr: Option<SocketAddr>,
    pub channel: Channel,
    stop: CancellationToken,
    server: JoinHandle<anyhow::Result<()>>,
}

impl TestService {
    /// Incidents as responder r1, who may see every grid (access itself is tested in
    /// tests/access.rs and src/access.rs).
    pub fn incidents(&self) -> IncidentServiceClient<Authed> {
        self.incidents_as(&token("r1", Role::Responder, &["*"]))
    }

    pub fn incidents_as(&self, token: &str) -> IncidentServiceClient<Authed> {
        IncidentServiceClient::with_interceptor(self.channel.clone(), Bearer::new(token).unwrap())
    }

    pub fn tokens_as(
        &self,
        token: &str,
    ) -> helpgrid_proto::pb::token_service_client::TokenServiceClient<Authed> {
        helpgrid_proto::pb::token_service_client::TokenServiceClient::with_interceptor(
            self.channel.clone(),
            Bearer::new(token).unwrap(),
        )
    }

    /// The roster as an admin of every grid.
    pub fn roster(&self) -> RosterServiceClient<Authed> {
        self.roster_as(&token("admin", Role::Admin, &["*"]))
    }

    pub fn roster_as(&self, token: &str) -> RosterServiceClient<Authed> {
        RosterServiceClient::with_interceptor(self.channel.clone(), Bearer::new(token).unwrap())
    }

    pub fn dispatch_as(&self, token: &str) -> DispatchServiceClient<Authed> {
        DispatchServiceClient::with_interceptor(self.channel.clone(), Bearer::new(token).unwrap())
    }

    pub fn health(&self) -> HealthClient<Channel> {
        HealthClient::new(self.channel.clone())
    }

    /// Follows the server's health until the whole server reports SERVING (both feeds have
    /// caught up). Retries while the server is still setting up its topics.
    async fn serving(&self) {
        loop {
            if let Ok(response) = self
                .health()
                .watch(HealthCheckRequest {
                    service: String::new(),
                })
                .await
            {
                let mut statuses = response.into_inner();
                while let Ok(Some(health)) = statuses.message().await {
                    if health.status == ServingStatus::Serving as i32 {
                        return;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Shuts the server down and returns what `run` returned.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        within("the server to stop", self.server).await.unwrap()
    }
}

/// The next update of a Watch stream (fails the test on error, end or timeout).
pub async fn next_update(stream: &mut Streaming<IncidentUpdate>) -> IncidentUpdate {
    match within("the next watch update", stream.message()).await {
        Ok(Some(update)) => update,
        other => panic!("expected an update, got {other:?}"),
    }
}

pub fn event_id(update: &IncidentUpdate) -> String {
    update
        .event
        .as_ref()
        .and_then(|e| e.envelope.as_ref())
        .map(|e| e.event_id.clone())
        .unwrap_or_default()
}

// ---- incident events in the shapes the router writes ----

/// A just-opened button incident in `grid_id`, assigned to `responder_id` (revision 2:
/// opened, then assigned).
pub fn assigned_incident(
    incident_id: &str,
    grid_id: &str,
    responder_id: &str,
    opened_at: Millis,
) -> Incident {
    Incident {
        incident_id: incident_id.into(),
        grid_id: grid_id.into(),
        state: IncidentState::Assigned as i32,
        priority: Priority::Normal as i32,
        source: helpgrid_proto::pb::IncidentSource::Button as i32,
        household_id: format!("hh-{incident_id}"),
        device_id: format!("dev-{incident_id}"),
        reported_at: Some(to_timestamp(opened_at - 20)),
        opened_at: Some(to_timestamp(opened_at)),
        assignments: vec![Assignment {
            track: Track::Community as i32,
            level: EscalationLevel::GridWorker as i32,
            responder_id: responder_id.into(),
            responder_role: ResponderRole::GridWorker as i32,
            attempt: 1,
            assigned_at: Some(to_timestamp(opened_at)),
            ack_deadline: Some(to_timestamp(opened_at + 120_000)),
            ..Default::default()
        }],
        event_count: 1,
        revision: 2,
        ..Default::default()
    }
}

pub fn router_event(incident: Option<&Incident>, cause_id: &str, change: Change) -> IncidentEvent {
    IncidentEvent {
        envelope: Some(new_envelope("router", now_millis())),
        incident: incident.cloned(),
        cause_id: cause_id.into(),
        change: Some(change),
    }
}

pub fn opened_event(incident: &Incident) -> IncidentEvent {
    router_event(
        Some(incident),
        &format!("press-{}", incident.incident_id),
        Change::Opened(IncidentOpened::default()),
    )
}

fn command_id(command: &IncidentCommand) -> String {
    command
        .envelope
        .as_ref()
        .map(|e| e.event_id.clone())
        .unwrap_or_default()
}

/// The router accepting an Acknowledge: the incident after the change.
pub fn acknowledged_answer(command: &IncidentCommand, before: &Incident) -> IncidentEvent {
    let mut after = before.clone();
    after.state = IncidentState::Acknowledged as i32;
    after.acknowledged_at = Some(to_timestamp(now_millis()));
    after.revision += 1;
    if let Some(assignment) = after.assignments.first_mut() {
        assignment.acknowledged_at = after.acknowledged_at;
        assignment.ack_deadline = None;
        assignment.acknowledged_by = command.actor_id.clone();
    }
    router_event(
        Some(&after),
        &command_id(command),
        Change::Acknowledged(Acknowledged {
            track: Track::Community as i32,
            responder_id: command.actor_id.clone(),
            acknowledged_by: command.actor_id.clone(),
        }),
    )
}

/// The router accepting a Close.
pub fn closed_answer(command: &IncidentCommand, before: &Incident) -> IncidentEvent {
    let Some(Action::Close(close)) = &command.action else {
        panic!("not a close command: {command:?}")
    };
    let mut after = before.clone();
    after.state = IncidentState::Closed as i32;
    after.closed_at = Some(to_timestamp(now_millis()));
    after.resolution = close.resolution;
    after.outcome = close.outcome;
    after.resolution_note = close.note.clone();
    after.closed_by = command.actor_id.clone();
    after.revision += 1;
    router_event(
        Some(&after),
        &command_id(command),
        Change::Closed(IncidentClosed {
            resolution: close.resolution,
            note: close.note.clone(),
            closed_by: command.actor_id.clone(),
            outcome: close.outcome,
        }),
    )
}

/// The router refusing a command; the incident is unchanged.
pub fn rejected_answer(
    command: &IncidentCommand,
    unchanged: Option<&Incident>,
    reason: RejectReason,
    message: &str,
) -> IncidentEvent {
    router_event(
        unchanged,
        &command_id(command),
        Change::Rejected(CommandRejected {
            command_id: command_id(command),
            incident_id: command.incident_id.clone(),
            actor_id: command.actor_id.clone(),
            reason: reason as i32,
            message: message.into(),
        }),
    )
}

/// The router, in this process, until the token is cancelled.
pub fn start_router(
    args: &KafkaArgs,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let config = helpgrid_router::config::RouterConfig {
        batch_max: 200,
        ..helpgrid_router::config::RouterConfig::new(
            args.clone(),
            format!("{}router-1", args.topic_prefix),
            helpgrid_router::domain::Policy::default(),
        )
    };
    let stop = CancellationToken::new();
    let task = tokio::spawn(helpgrid_router::run(config, stop.clone().cancelled_owned()));
    (stop, task)
}

/// A responder token for `subject` issued a minute ago (so a revocation written now covers it).
pub fn older_token(subject: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    test_key()
        .sign(&helpgrid_auth::Claims {
            iss: helpgrid_auth::ISSUER.into(),
            sub: subject.into(),
            role: Role::Responder,
            grids: vec!["*".into()],
            iat: now - 60,
            exp: now + 600,
        })
        .unwrap()
}

/// The answer of one ListIncidents call with `token`: OK, or the code and message.
pub async fn list_as(service: &TestService, token: &str) -> Result<(), (tonic::Code, String)> {
    service
        .incidents_as(token)
        .list_incidents(helpgrid_proto::pb::ListIncidentsRequest::default())
        .await
        .map(|_| ())
        .map_err(|status| (status.code(), status.message().to_owned()))
}

/// Waits until the read model lists an incident of `household` for which `done` holds
/// (asked as an all-grid admin), and returns it.
pub async fn wait_incident(
    service: &TestService,
    what: &str,
    household: &str,
    done: impl Fn(&Incident) -> bool,
) -> Incident {
    within(what, async {
        loop {
            let list = service
                .incidents_as(&token("admin", Role::Admin, &["*"]))
                .list_incidents(helpgrid_proto::pb::ListIncidentsRequest::default())
                .await
                .unwrap()
                .into_inner();
            if let Some(found) = list
                .incidents
                .into_iter()
                .find(|i| i.household_id == household && done(i))
            {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}
