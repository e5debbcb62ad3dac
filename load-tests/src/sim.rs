//! One run of the simulated city: register the responders, start the residents and the
//! responders, report every few seconds, stop on the shutdown future.

use crate::city::{City, CityShape};
use crate::residents::{Activity, Residents};
use crate::responders::{Behaviour, Responders};
use crate::tally::Tally;
use anyhow::Context;
use helpgrid_auth::{ALL_GRIDS, Bearer, Role, TokenKey};
use helpgrid_common::kafka::KafkaArgs;
use helpgrid_common::topics::Topics;
use helpgrid_proto::pb::incident_service_client::IncidentServiceClient;
use helpgrid_proto::pb::roster_service_client::RosterServiceClient;
use helpgrid_proto::pb::{ResponderRole, UpsertResponderRequest};
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "helpgrid-city",
    version,
    about = "A simulated city driving HelpGrid end to end"
)]
pub struct SimArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// The status service's gRPC address.
    #[arg(
        long,
        env = "HELPGRID_STATUS_ADDR",
        default_value = "http://127.0.0.1:50051"
    )]
    pub status_addr: String,
    /// Prefix for every grid, household, camera and responder id (lets runs share a broker).
    #[arg(long, default_value = "")]
    pub id_prefix: String,
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    pub duration_s: Option<f64>,
    /// Seconds between summary lines.
    #[arg(long, default_value_t = 5.0)]
    pub summary_every_s: f64,
    #[command(flatten)]
    pub city: CityShape,
    #[command(flatten)]
    pub activity: Activity,
    #[command(flatten)]
    pub mqtt: crate::devices::MqttArgs,
    #[command(flatten)]
    pub behaviour: Behaviour,
    /// The status service's token key: the city mints an admin token to register its roster
    /// and a token per responder, who then act as themselves. Unset: no tokens are sent (for a
    /// status service started with --insecure-no-auth).
    #[arg(long, env = "HELPGRID_AUTH_KEY_FILE")]
    pub auth_key_file: Option<std::path::PathBuf>,
}

/// A gRPC channel whose calls carry one caller's token.
pub type AuthedChannel = InterceptedService<Channel, Bearer>;

/// The tokens of the simulated people, minted from the status service's key.
pub struct Credentials {
    /// `None`: the status service runs without authentication.
    key: Option<TokenKey>,
    /// Responder id → (role, grids), from the city's roster.
    responders: HashMap<String, (Role, Vec<String>)>,
}

/// Long enough for any run; the simulated people never refresh a token.
const TOKEN_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);

impl Credentials {
    pub fn new(key: Option<TokenKey>, city: &City) -> Self {
        let responders = city
            .responders
            .iter()
            .map(|r| {
                let role = if r.role == ResponderRole::GridSupervisor as i32 {
                    Role::Supervisor
                } else {
                    Role::Responder
                };
                (r.responder_id.clone(), (role, r.grid_ids.clone()))
            })
            .collect();
        Self { key, responders }
    }

    fn bearer(&self, subject: &str, role: Role, grids: &[String]) -> anyhow::Result<Bearer> {
        match &self.key {
            None => Ok(Bearer::anonymous()),
            Some(key) => Ok(Bearer::new(&key.mint(
                subject,
                role,
                grids,
                TOKEN_LIFETIME,
            )?)?),
        }
    }

    /// Registers the roster.
    pub fn admin(&self) -> anyhow::Result<Bearer> {
        self.bearer("city-admin", Role::Admin, &[ALL_GRIDS.to_owned()])
    }

    /// Follows every incident (a read-only console of the whole city).
    pub fn watcher(&self) -> anyhow::Result<Bearer> {
        self.bearer("city-watch", Role::Console, &[ALL_GRIDS.to_owned()])
    }

    /// One responder, acting as themselves in their grids.
    pub fn responder(&self, responder_id: &str) -> anyhow::Result<Bearer> {
        let (role, grids) = self
            .responders
            .get(responder_id)
            .cloned()
            .unwrap_or((Role::Responder, Vec::new()));
        self.bearer(responder_id, role, &grids)
    }
}

/// Connects to the status service and waits until it reports SERVING (it has loaded its
/// read model and the roster), retrying for up to a minute while it starts.
pub async fn connect(addr: &str) -> anyhow::Result<Channel> {
    let endpoint = Endpoint::from_shared(addr.to_owned())?.connect_timeout(Duration::from_secs(2));
    let started = Instant::now();
    let mut last = String::from("not tried");
    while started.elapsed() < Duration::from_secs(60) {
        match endpoint.connect().await {
            Ok(channel) => {
                let mut health = HealthClient::new(channel.clone());
                match health
                    .check(HealthCheckRequest {
                        service: String::new(),
                    })
                    .await
                {
                    Ok(r) if r.get_ref().status == ServingStatus::Serving as i32 => {
                        return Ok(channel);
                    }
                    Ok(r) => last = format!("health status {}", r.get_ref().status),
                    Err(status) => last = status.to_string(),
                }
            }
            Err(error) => last = error.to_string(),
        }
        tracing::debug!(%last, "status service not ready yet");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    anyhow::bail!("the status service at {addr} did not become ready within 60 s: {last}")
}

/// Runs the city until `shutdown` resolves or the duration passes; `report` gets a summary
/// line every `summary_every_s`. Returns the final tally.
pub async fn run(
    args: SimArgs,
    shutdown: impl Future<Output = ()>,
    report: impl Fn(Duration, &Tally),
) -> anyhow::Result<Tally> {
    let city = Arc::new(City::build(&args.city, &args.id_prefix));
    let key = match &args.auth_key_file {
        Some(path) => Some(TokenKey::from_file(path)?),
        None => None,
    };
    let credentials = Arc::new(Credentials::new(key, &city));
    let channel = connect(&args.status_addr).await?;
    let mut roster = RosterServiceClient::with_interceptor(channel.clone(), credentials.admin()?);
    for responder in &city.responders {
        roster
            .upsert_responder(UpsertResponderRequest {
                responder: Some(responder.clone()),
            })
            .await
            .with_context(|| format!("registering {}", responder.responder_id))?;
    }
    tracing::info!(
        grids = city.grids.len(),
        responders = city.responders.len(),
        households = city.households(),
        "city registered"
    );

    let tally = Arc::new(Mutex::new(Tally::default()));
    let cancel = CancellationToken::new();
    let responders = Responders {
        city: Arc::clone(&city),
        behaviour: args.behaviour.clone(),
        watcher: IncidentServiceClient::with_interceptor(channel.clone(), credentials.watcher()?),
        channel,
        credentials,
        tally: Arc::clone(&tally),
        seed: args.city.seed,
    };
    let watching = tokio::spawn(responders.run(cancel.clone()));
    // Give the watch stream a moment to be established before the first press.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let producer = args.kafka.producer_config("helpgrid-city").create()?;
    let topics = Topics::with_prefix(&args.kafka.topic_prefix);
    let residents = Residents::new(
        Arc::clone(&city),
        args.activity.clone(),
        producer,
        topics.help_events,
        args.city.seed,
    );
    let residents = match &args.mqtt.mqtt_url {
        Some(url) => {
            let devices = crate::devices::register(&city, &args.kafka).await?;
            tracing::info!(devices, broker = %url, "devices registered; pressing through the gateway");
            residents.through_gateway(
                crate::devices::DevicePublisher::connect(&args.mqtt, url)?,
                args.mqtt.device_fault_ratio,
            )
        }
        None => residents,
    };
    let pressing = tokio::spawn(residents.run(Arc::clone(&tally), cancel.clone()));

    let started = Instant::now();
    let deadline = args.duration_s.map(Duration::from_secs_f64);
    let mut every = tokio::time::interval(Duration::from_secs_f64(args.summary_every_s.max(0.5)));
    every.tick().await;
    tokio::pin!(shutdown);
    let mut watching = watching;
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            _ = every.tick() => {
                if let Ok(t) = tally.lock() {
                    report(started.elapsed(), &t);
                }
                if deadline.is_some_and(|d| started.elapsed() >= d) {
                    break;
                }
            }
            ended = &mut watching => {
                cancel.cancel();
                match ended {
                    Ok(Ok(())) => anyhow::bail!("the status service ended the watch stream"),
                    Ok(Err(status)) => anyhow::bail!("watch stream failed: {status}"),
                    Err(error) => anyhow::bail!("watcher task failed: {error}"),
                }
            }
        }
    }
    cancel.cancel();
    let _ = pressing.await;
    let _ = watching.await;
    // Responder tasks still asleep hold the tally too; they were cancelled and count nothing more.
    let tally = std::mem::take(
        &mut *tally
            .lock()
            .map_err(|_| anyhow::anyhow!("tally lock poisoned"))?,
    );
    Ok(tally)
}
