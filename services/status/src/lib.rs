//! The HelpGrid status service: the gRPC front door to incidents and the roster.
//!
//! Reads come from a read model restored from `incident-state` and kept current from
//! `incident-events`; writes go to Kafka (commands to the router, full records to the
//! roster) and wait for their outcome.
//!
//! - [`config`]: command line/environment settings and what [`run`] needs.
//! - [`access`]: who may do what: the token check and policy table in front of every RPC,
//!   and the scope questions handlers ask.
//! - [`police`]: which incidents are meant for police (the dispatch subscription).
//! - [`cap`]: an incident as an OASIS CAP 1.2 alert.
//! - [`console`]: the community big-screen console: a web page and its event stream.
//! - [`app`]: the responder app (a mobile web page, its API and event stream), served on the
//!   console's listener.
//! - [`tls`]: certificates from files, for gRPC and the console.
//! - [`cursor`]: a position in the incident-events log, as an opaque resumable string.
//! - [`read_model`]: latest incident snapshots, their partitions, the event log; pure.
//! - [`feed`]: Kafka → read model, live watchers and waiting commands.
//! - [`watcher`]: one WatchIncidents stream: replay after a cursor, then live, exactly once.
//! - [`openings`]: an "opened and assigned" event as the updates a Watch client gets
//!   (expanded into `opened` + `assigned` unless the client asks for it compact); pure.
//! - [`commands`]: publish Acknowledge/Close to the incident's partition, await the answer.
//! - [`roster`]: the roster table and its writes.
//! - [`requests`]: validation of every request, once, at the edge.
//! - [`errors`]: every failure and the gRPC status it becomes.
//! - [`grpc`]: the tonic services.
//! - [`telemetry`]: every metric name.

pub mod access;
pub mod app;
pub mod cap;
pub mod commands;
pub mod config;
pub mod console;
pub mod cursor;
pub mod errors;
pub mod feed;
pub mod grpc;
pub mod openings;
pub mod police;
pub mod read_model;
pub mod requests;
pub mod roster;
pub mod telemetry;
pub mod tls;
pub mod tokens;
pub mod watcher;

use crate::access::AccessLayer;
use crate::commands::{CommandSender, PendingCommands};
use crate::config::StatusConfig;
use crate::feed::{IncidentFeed, SharedReadModel, restore_from_state};
use crate::grpc::{DispatchApi, IncidentApi, RosterApi};
use crate::read_model::ReadModel;
use crate::roster::{Roster, keep_roster_table};
use anyhow::Context;
use helpgrid_common::reader::{Start, committed_range, follow, follow_from};
use helpgrid_common::topics::{Topics, ensure_topics};
use helpgrid_proto::pb::dispatch_service_server::DispatchServiceServer;
use helpgrid_proto::pb::incident_service_server::IncidentServiceServer;
use helpgrid_proto::pb::roster_service_server::RosterServiceServer;
use helpgrid_proto::pb::token_service_server::TokenServiceServer;
use rdkafka::producer::FutureProducer;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// Kafka client id of the service; the feeds add a suffix.
const CLIENT_ID: &str = "helpgrid-status";
/// Longest read of incident-state at start-up before the service gives up (NOT_SERVING).
const STATE_READ_TIMEOUT: Duration = Duration::from_secs(300);
/// Live events buffered per watcher before it counts as lagging (and replays from the log).
const LIVE_BUFFER: usize = 4096;
/// Time allowed after the command timeout for open calls to finish at shutdown.
const DRAIN_MARGIN: Duration = Duration::from_secs(2);
/// Health service names: the whole server ("") and each API.
const HEALTH_NAMES: [&str; 4] = [
    "",
    <IncidentServiceServer<IncidentApi> as tonic::server::NamedService>::NAME,
    <DispatchServiceServer<DispatchApi> as tonic::server::NamedService>::NAME,
    <RosterServiceServer<RosterApi> as tonic::server::NamedService>::NAME,
];

/// Serves the status API on `listener` until `shutdown` resolves, then stops accepting,
/// ends Watch streams, waits for open calls and stops following Kafka.
pub async fn run(
    config: StatusConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    run_with_console(config, listener, None, shutdown).await
}

/// [`run`], and the big-screen console on `console` if given.
pub async fn run_with_console(
    config: StatusConfig,
    listener: TcpListener,
    console: Option<TcpListener>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    telemetry::describe();
    let kafka = &config.kafka;
    let topics = Topics::with_prefix(&kafka.topic_prefix);
    let partitions = ensure_topics(kafka, &topics)
        .await
        .context("cannot set up the Kafka topics")?;

    let stop = CancellationToken::new();
    let mut producer_config = kafka.producer_config(CLIENT_ID);
    // Give up on a record when the caller gives up on it, so a command reported as not
    // taken (UNAVAILABLE) can never be applied later behind the caller's back.
    producer_config.set(
        "message.timeout.ms",
        config.command_timeout.as_millis().to_string(),
    );
    let producer: FutureProducer = producer_config
        .create()
        .context("cannot create the Kafka producer")?;
    // The end of incident-events is taken before incident-state is read (see `feed`); the
    // events feed starts a bounded tail before it, for Watch resumes.
    let events_range = committed_range(
        kafka,
        &format!("{CLIENT_ID}-incidents"),
        &topics.incident_events,
    )
    .await
    .context("cannot read the offsets of the incident-events topic")?;
    let tail = i64::try_from(config.watch_replay_events).unwrap_or(i64::MAX);
    let starts: Vec<i64> = events_range
        .iter()
        .map(|(low, end)| end.saturating_sub(tail).max(*low))
        .collect();
    let closed_window = i64::try_from(config.closed_window.as_millis()).unwrap_or(i64::MAX);
    let read_model = SharedReadModel::from_model(
        ReadModel::starting_at(&starts, config.watch_replay_events)
            .with_closed_window(closed_window),
    );
    let (live, _) = broadcast::channel(LIVE_BUFFER);
    let pending = Arc::new(PendingCommands::default());
    let roster = Arc::new(Roster::new(
        producer.clone(),
        topics.roster.clone(),
        config.command_timeout,
    ));

    // incident-state is read whole on a blocking thread (a plain consumer loop, no async hop
    // per record) while the other feeds start.
    let state_table = tokio::task::spawn_blocking({
        let kafka = kafka.clone();
        let topic = topics.incident_state.clone();
        move || {
            let started = std::time::Instant::now();
            let cpu_started = helpgrid_common::telemetry::process_cpu_seconds();
            helpgrid_common::table::read_table(
                &kafka,
                &format!("{CLIENT_ID}-state"),
                &topic,
                None,
                STATE_READ_TIMEOUT,
            )
            .map(|table| {
                let read_cpu = helpgrid_common::telemetry::process_cpu_seconds() - cpu_started;
                (table, started, read_cpu)
            })
        }
    });
    let incident_records = follow_from(
        kafka,
        &format!("{CLIENT_ID}-incidents"),
        &topics.incident_events,
        Start::Offsets(starts),
        stop.child_token(),
    )
    .await
    .context("cannot follow the incident-events topic")?;
    let roster_records = follow(
        kafka,
        &format!("{CLIENT_ID}-roster"),
        &topics.roster,
        stop.child_token(),
    )
    .await
    .context("cannot follow the roster topic")?;
    let (incidents_caught_up, incidents_loaded) = watch::channel(false);
    let (roster_caught_up, roster_loaded) = watch::channel(false);
    // Revoked sign-ins, applied inside the token key, so gRPC, the console and the responder
    // app all refuse a revoked token; the service is not ready before it has read them all.
    let mut revocations = match config.gate.key() {
        Some(key) => Some(
            helpgrid_auth::follower::follow_revocations(
                kafka,
                CLIENT_ID,
                Arc::clone(key),
                stop.child_token(),
            )
            .await
            .context("cannot follow the revocations topic")?,
        ),
        None => None,
    };
    let revocations_loaded = revocations
        .as_ref()
        .map_or_else(|| watch::channel(true).1, |r| r.caught_up.clone());
    let incident_feed = IncidentFeed {
        read_model: read_model.clone(),
        live: live.clone(),
        pending: Arc::clone(&pending),
        topic: topics.incident_events.clone(),
    };
    // Cancelled when a Kafka feed ends while the service runs: health then says NOT_SERVING.
    let feed_stopped = CancellationToken::new();
    let incident_task = tokio::spawn({
        let feed_stopped = feed_stopped.clone();
        let read_model = read_model.clone();
        let topic = topics.incident_state.clone();
        async move {
            let (table, started, read_cpu) = match state_table.await {
                Ok(Ok(read)) => read,
                Ok(Err(error)) => {
                    tracing::error!(%error, topic, "cannot read the incident-state topic; NOT_SERVING");
                    feed_stopped.cancel();
                    return;
                }
                Err(error) => {
                    tracing::error!(%error, topic, "reading the incident-state topic failed; NOT_SERVING");
                    feed_stopped.cancel();
                    return;
                }
            };
            let restored = restore_from_state(table, &read_model, &topic);
            let incidents = read_model.read().incident_count();
            tracing::info!(
                records = restored.records,
                bytes = restored.bytes,
                snapshots = restored.snapshots,
                waited_ms = restored.waited_ms,
                read_cpu_ms = (read_cpu * 1000.0) as u64,
                incidents,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "incident snapshots restored from incident-state"
            );
            incident_feed
                .keep_read_model(incident_records, incidents_caught_up)
                .await;
            feed_stopped.cancel();
        }
    });
    let revocations_task = tokio::spawn({
        let feed_stopped = feed_stopped.clone();
        let stop = stop.clone();
        async move {
            if let Some(revocations) = &mut revocations {
                revocations.stopped().await;
                if !stop.is_cancelled() {
                    feed_stopped.cancel();
                }
            }
        }
    });
    let roster_task = tokio::spawn({
        let roster = Arc::clone(&roster);
        let topic = topics.roster.clone();
        let feed_stopped = feed_stopped.clone();
        async move {
            keep_roster_table(&roster, &topic, roster_records, roster_caught_up).await;
            feed_stopped.cancel();
        }
    });

    let (health, health_service) = tonic_health::server::health_reporter();
    set_health(&health, ServingStatus::NotServing).await;
    let (ready_tx, ready) = watch::channel(false);
    let readiness_task = tokio::spawn({
        let health = health.clone();
        let stop = stop.clone();
        async move {
            tokio::select! {
                biased;
                () = stop.cancelled() => return,
                () = feed_stopped.cancelled() => {}
                () = all_loaded(incidents_loaded, roster_loaded, revocations_loaded) => {
                    ready_tx.send_replace(true);
                    set_health(&health, ServingStatus::Serving).await;
                    tracing::info!("read model, roster and revocations loaded; serving");
                }
            }
            tokio::select! {
                biased;
                () = stop.cancelled() => {}
                () = feed_stopped.cancelled() => {
                    // The read model no longer follows Kafka: answers would go stale.
                    ready_tx.send_replace(false);
                    set_health(&health, ServingStatus::NotServing).await;
                    tracing::error!("a Kafka feed of the status service stopped; NOT_SERVING");
                }
            }
        }
    });

    // Both reflection versions: v1 for current tools, v1alpha for the many that still ask
    // for it (older grpcurl, grpc_cli, Postman, Evans, Python's grpcio-reflection).
    let reflection_builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(helpgrid_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection = reflection_builder()
        .build_v1()
        .context("cannot build the gRPC reflection service (v1)")?;
    let reflection_v1alpha = reflection_builder()
        .build_v1alpha()
        .context("cannot build the gRPC reflection service (v1alpha)")?;
    let incident_api = IncidentApi {
        read_model,
        live,
        commands: CommandSender::new(
            producer.clone(),
            topics.incident_commands.clone(),
            pending,
            config.command_timeout,
        ),
        ready: ready.clone(),
        shutdown: stop.clone(),
        cap_sender: Arc::new(config.cap_sender.clone()),
    };
    let dispatch_api = DispatchApi(incident_api.clone());
    let ready_for_console = ready.clone();
    let roster_api = RosterApi { roster, ready };
    let token_api = tokens::TokenApi {
        kafka: kafka.clone(),
        gate: config.gate.clone(),
    };
    let console_task = match console {
        Some(console_listener) => {
            let site = console::Console {
                read_model: incident_api.read_model.clone(),
                live: incident_api.live.clone(),
                roster: Arc::clone(&roster_api.roster),
                gate: config.gate.clone(),
                ready: ready_for_console,
                shutdown: stop.clone(),
            };
            let responder_app = app::App {
                incidents: incident_api.clone(),
                roster: roster_api.clone(),
                gate: config.gate.clone(),
                households: Arc::clone(&config.households),
                secure_cookies: config.tls.is_some(),
                redeemed: Arc::default(),
                links: match config.gate.key() {
                    Some(_) => Some(
                        app::links::LinkLedger::start(
                            kafka,
                            &topics.app_links,
                            producer.clone(),
                            stop.clone(),
                        )
                        .await
                        .context("cannot follow the app-links topic")?,
                    ),
                    None => None,
                },
            };
            let tls = config.tls.as_ref().map(tls::console_acceptor).transpose()?;
            Some(tokio::spawn(console::serve(
                console_listener,
                tls,
                console::router(site).merge(app::router(responder_app)),
                stop.clone(),
            )))
        }
        None => None,
    };
    let local_addr = listener.local_addr()?;
    tracing::info!(%local_addr, topic_prefix = %kafka.topic_prefix, partitions, "status service listening");

    let draining = {
        let stop = stop.clone();
        let health = health.clone();
        async move {
            tokio::select! {
                () = shutdown => tracing::info!("shutting down: no new calls, ending watch streams"),
                () = stop.cancelled() => {}
            }
            stop.cancel();
            end_health(health).await;
        }
    };
    let mut server = Server::builder();
    if let Some(files) = &config.tls {
        server = server
            .tls_config(tls::grpc_config(files))
            .context("cannot use the TLS certificate and key")?;
    }
    tracing::info!(
        auth = config.gate.is_on(),
        tls = config.tls.is_some(),
        "access settings"
    );
    let serving = server
        .layer(AccessLayer::new(config.gate.clone()))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_v1alpha)
        .add_service(IncidentServiceServer::new(incident_api))
        .add_service(DispatchServiceServer::new(dispatch_api))
        .add_service(RosterServiceServer::new(roster_api))
        .add_service(TokenServiceServer::new(token_api))
        .serve_with_incoming_shutdown(TcpIncoming::from(listener), draining);
    // Our own calls end within the command timeout once draining starts, but a client may
    // hold a stream we do not control (a health Watch) open forever: bound the wait.
    let drain_limit = config.command_timeout + DRAIN_MARGIN;
    let drain_deadline = async {
        stop.cancelled().await;
        tokio::time::sleep(drain_limit).await;
    };
    let served = tokio::select! {
        served = serving => served,
        () = drain_deadline => {
            tracing::warn!(?drain_limit, "calls still open after the drain limit; closing their connections");
            Ok(())
        }
    };
    // The server may also stop on an error: stop the feeds (and the console) either way.
    stop.cancel();
    if let Some(console_task) = console_task {
        match console_task.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::error!(%error, "the console server failed"),
            Err(error) => tracing::error!(%error, "the console task failed"),
        }
    }
    for task in [incident_task, roster_task, revocations_task, readiness_task] {
        if let Err(error) = task.await {
            tracing::error!(%error, "a background task of the status service failed");
        }
    }
    served.context("the gRPC server failed")?;
    tracing::info!("status service stopped");
    Ok(())
}

async fn all_loaded(
    mut incidents: watch::Receiver<bool>,
    mut roster: watch::Receiver<bool>,
    mut revocations: watch::Receiver<bool>,
) {
    // An error means the feed ended before catching up; then shutdown is under way.
    let (incidents, roster, revocations) = tokio::join!(
        async { incidents.wait_for(|loaded| *loaded).await.is_ok() },
        async { roster.wait_for(|loaded| *loaded).await.is_ok() },
        async { revocations.wait_for(|loaded| *loaded).await.is_ok() },
    );
    if !(incidents && roster && revocations) {
        std::future::pending::<()>().await;
    }
}

async fn set_health(health: &HealthReporter, status: ServingStatus) {
    telemetry::serving(status == ServingStatus::Serving);
    for name in HEALTH_NAMES {
        health.set_service_status(name, status).await;
    }
}

/// Tells health watchers NOT_SERVING, then ends their streams (a health Watch would
/// otherwise keep its connection, and the shutdown, open).
async fn end_health(mut health: HealthReporter) {
    set_health(&health, ServingStatus::NotServing).await;
    for name in HEALTH_NAMES {
        health.clear_service_status(name).await;
    }
}
