//! The whole stack in one test process: the status service on a real socket with
//! authentication on, the router, and clients holding tokens. Shared by the end-to-end and
//! status fault tests.
#![allow(dead_code)] // each test file uses a different part

pub mod cluster;
pub mod run_log;

use helpgrid_auth::{Bearer, Role, TokenKey};
use helpgrid_common::health::Health;
use helpgrid_common::kafka::KafkaArgs;
use helpgrid_common::topics::Topics;
use helpgrid_load_tests::sim::{self, AuthedChannel};
use helpgrid_proto::pb::incident_service_client::IncidentServiceClient;
use helpgrid_proto::pb::roster_service_client::RosterServiceClient;
use helpgrid_proto::pb::{
    GetIncidentRequest, Incident, IncidentState, PressKind, UpsertResponderRequest,
};
use helpgrid_router::config::RouterConfig;
use helpgrid_router::domain::Policy;
use helpgrid_status::config::StatusConfig;
use helpgrid_testkit::records::press;
use helpgrid_testkit::{Publisher, WAIT, kafka_args};
use std::future::Future;
use std::time::Duration;
use tokio::sync::oneshot;
use tonic::Code;

/// The status service's token key in these tests.
pub const KEY: &[u8] = b"end-to-end-tests-key-end-to-end-tests";

pub fn bearer(subject: &str, role: Role, grids: &[&str]) -> Bearer {
    let grids: Vec<String> = grids.iter().map(|g| (*g).to_owned()).collect();
    let token = TokenKey::from_secret(KEY)
        .expect("key")
        .mint(subject, role, &grids, Duration::from_secs(600))
        .expect("mint");
    Bearer::new(&token).expect("bearer")
}

/// A service running in this test process, stopped through its shutdown future.
pub struct Running {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    pub fn spawn<F>(
        start: impl FnOnce(std::pin::Pin<Box<dyn Future<Output = ()> + Send>>) -> F,
    ) -> Self
    where
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = Box::pin(async move {
            let _ = stopped.await;
        });
        Self {
            stop,
            task: tokio::spawn(start(shutdown)),
        }
    }

    pub async fn stop(self) {
        self.stop_checked()
            .await
            .unwrap_or_else(|problem| panic!("{problem}"));
    }

    /// Stops the service; says what went wrong if it did not stop in time or had ended
    /// with an error (for suites that report every run rather than stop at the first).
    pub async fn stop_checked(self) -> Result<(), String> {
        let _ = self.stop.send(());
        match tokio::time::timeout(WAIT, self.task).await {
            Err(_) => Err("service did not stop in time".into()),
            Ok(Err(panicked)) => Err(format!("service task: {panicked}")),
            Ok(Ok(Err(error))) => Err(format!("service ended with an error: {error:#}")),
            Ok(Ok(Ok(()))) => Ok(()),
        }
    }
}

pub struct Stack {
    pub args: KafkaArgs,
    pub status: Option<Running>,
    pub router: Option<Running>,
    /// What the router's `/readyz` would answer.
    pub router_health: Health,
    pub addr: String,
    pub command_timeout: Duration,
}

/// A status service with authentication on, on a fresh port.
pub async fn start_status(args: &KafkaArgs, command_timeout: Duration) -> (Running, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = format!("http://{}", listener.local_addr().expect("addr"));
    let mut config =
        StatusConfig::new(args.clone()).with_auth(TokenKey::from_secret(KEY).expect("key"));
    config.command_timeout = command_timeout;
    let status = Running::spawn(move |shutdown| helpgrid_status::run(config, listener, shutdown));
    (status, addr)
}

/// As `start_status`, on a tokio runtime of its own (two worker threads, as the service's
/// own process would have), so that the timed calls of a fault run measure the service, not
/// this test process's runtime, which also carries the load generator and the clients.
pub async fn start_status_own_runtime(
    args: &KafkaArgs,
    command_timeout: Duration,
) -> (Running, String) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("non-blocking");
    let addr = format!("http://{}", listener.local_addr().expect("addr"));
    (
        start_status_own_runtime_on(listener, args, command_timeout),
        addr,
    )
}

/// A status service on a runtime of its own, serving on `listener` (non-blocking): how a
/// restart comes back on the address its clients know.
pub fn start_status_own_runtime_on(
    listener: std::net::TcpListener,
    args: &KafkaArgs,
    command_timeout: Duration,
) -> Running {
    let mut config =
        StatusConfig::new(args.clone()).with_auth(TokenKey::from_secret(KEY).expect("key"));
    config.command_timeout = command_timeout;
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::task::spawn_blocking(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("status-rt")
            .enable_all()
            .build()?;
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener)?;
            helpgrid_status::run(config, listener, async move {
                let _ = stopped.await;
            })
            .await
        })
    });
    Running { stop, task }
}

/// The status service `old` stopped (gracefully: calls in flight end within the command
/// timeout) and a fresh one, with a new read model, on the same address, as a process
/// restarted by its supervisor would be. `addr` is `http://127.0.0.1:PORT`.
pub async fn restart_status_on_same_port(
    old: Running,
    addr: &str,
    args: &KafkaArgs,
    command_timeout: Duration,
) -> (Running, Result<(), String>) {
    let stopped = old.stop_checked().await;
    let socket_addr: std::net::SocketAddr = addr
        .trim_start_matches("http://")
        .parse()
        .expect("status address");
    // The old instance's connections linger in TIME_WAIT on this port: reuse it, as a
    // restarted server does.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_reuseaddr(true).expect("SO_REUSEADDR");
    socket
        .bind(socket_addr)
        .expect("bind the old address again");
    let listener = socket
        .listen(1024)
        .and_then(|l| l.into_std())
        .expect("listen");
    (
        start_status_own_runtime_on(listener, args, command_timeout),
        stopped,
    )
}

/// The router, in this process, with the ids a deployment on `args`' prefix would use.
pub fn start_router(args: &KafkaArgs) -> Running {
    start_router_with_health(args, Health::new())
}

/// As `start_router`, reporting its readiness to `health`.
pub fn start_router_with_health(args: &KafkaArgs, health: Health) -> Running {
    let router_config = RouterConfig {
        batch_max: 200,
        ..RouterConfig::new(
            args.clone(),
            format!("{}router-1", args.topic_prefix),
            Policy::default(),
        )
    };
    Running::spawn(move |shutdown| {
        helpgrid_router::run_with_health(router_config, health, shutdown)
    })
}

impl Stack {
    /// Starts the status service, registers `roster` through its API, then starts the
    /// router (which loads the roster before it routes anything).
    pub async fn start(roster: Vec<helpgrid_proto::pb::Responder>) -> Self {
        Self::start_on(
            kafka_args(),
            roster,
            StatusConfig::new(kafka_args()).command_timeout,
        )
        .await
    }

    /// As `start`, on given Kafka settings and with a given command timeout.
    pub async fn start_on(
        args: KafkaArgs,
        roster: Vec<helpgrid_proto::pb::Responder>,
        command_timeout: Duration,
    ) -> Self {
        let started = start_status(&args, command_timeout).await;
        Self::with_status(args, roster, command_timeout, started).await
    }

    /// As `start_on`, with the status service on a runtime of its own
    /// (`start_status_own_runtime`).
    pub async fn start_on_own_runtime(
        args: KafkaArgs,
        roster: Vec<helpgrid_proto::pb::Responder>,
        command_timeout: Duration,
    ) -> Self {
        let started = start_status_own_runtime(&args, command_timeout).await;
        Self::with_status(args, roster, command_timeout, started).await
    }

    async fn with_status(
        args: KafkaArgs,
        roster: Vec<helpgrid_proto::pb::Responder>,
        command_timeout: Duration,
        (status, addr): (Running, String),
    ) -> Self {
        let channel = match sim::connect(&addr).await {
            Ok(channel) => channel,
            // Say whether the service ended (and why) or is still starting: a start-up that
            // hangs on Kafka and one that failed look the same from the client's side.
            Err(unreachable) if status.task.is_finished() => {
                let ended = status.stop_checked().await;
                panic!(
                    "status service reachable: {unreachable:#}; the service had ended: {ended:?}"
                )
            }
            Err(unreachable) => panic!(
                "status service reachable: {unreachable:#}; the service is still running (starting up)"
            ),
        };
        let mut roster_api =
            RosterServiceClient::with_interceptor(channel, bearer("admin", Role::Admin, &["*"]));
        for r in roster {
            roster_api
                .upsert_responder(UpsertResponderRequest { responder: Some(r) })
                .await
                .expect("upsert");
        }
        let router_health = Health::new();
        let router = start_router_with_health(&args, router_health.clone());
        Self {
            args,
            status: Some(status),
            router: Some(router),
            router_health,
            addr,
            command_timeout,
        }
    }

    /// Stops the status service (the router keeps routing).
    pub async fn stop_status(&mut self) {
        if let Some(status) = self.status.take() {
            status.stop().await;
        }
    }

    /// Starts a fresh status service (new read model, new port).
    pub async fn start_status_again(&mut self) {
        let (status, addr) = start_status(&self.args, self.command_timeout).await;
        self.status = Some(status);
        self.addr = addr;
    }

    /// Incidents as `subject` with `role` in `grids`.
    pub async fn incidents_as(
        &self,
        subject: &str,
        role: Role,
        grids: &[&str],
    ) -> IncidentServiceClient<AuthedChannel> {
        let channel = sim::connect(&self.addr).await.expect("connect");
        IncidentServiceClient::with_interceptor(channel, bearer(subject, role, grids))
    }

    /// Incidents as a read-only console of every grid.
    pub async fn incidents(&self) -> IncidentServiceClient<AuthedChannel> {
        self.incidents_as("console", Role::Console, &["*"]).await
    }

    pub async fn stop(mut self) {
        if let Some(router) = self.router.take() {
            router.stop().await;
        }
        self.stop_status().await;
    }

    /// As `stop`, saying what went wrong instead of panicking.
    pub async fn stop_checked(mut self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(router) = self.router.take()
            && let Err(problem) = router.stop_checked().await
        {
            problems.push(format!("router: {problem}"));
        }
        if let Some(status) = self.status.take()
            && let Err(problem) = status.stop_checked().await
        {
            problems.push(format!("status service: {problem}"));
        }
        problems
    }
}

/// Polls GetIncident until `done` holds (the read model follows Kafka asynchronously).
pub async fn wait_for_incident(
    client: &mut IncidentServiceClient<AuthedChannel>,
    incident_id: &str,
    what: &str,
    done: impl Fn(&Incident) -> bool,
) -> Incident {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let found = client
            .get_incident(GetIncidentRequest {
                incident_id: incident_id.to_owned(),
            })
            .await;
        match found {
            Ok(r) if done(r.get_ref()) => return r.into_inner(),
            Ok(_) => {}
            Err(status) if status.code() == Code::NotFound => {}
            Err(status) => panic!("GetIncident failed: {status}"),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {incident_id} to be {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn press_and_wait_assigned(stack: &Stack, household: &str, grid: &str) -> Incident {
    let p = press(household, grid, PressKind::Help);
    let incident_id = format!(
        "inc-{}",
        p.envelope
            .as_ref()
            .map(|e| e.event_id.clone())
            .unwrap_or_default()
    );
    let topics = Topics::with_prefix(&stack.args.topic_prefix);
    Publisher::new(&stack.args)
        .send(&topics.help_events, grid, &p)
        .await;
    let mut client = stack.incidents().await;
    wait_for_incident(&mut client, &incident_id, "assigned", |i| {
        i.state == IncidentState::Assigned as i32
    })
    .await
}
