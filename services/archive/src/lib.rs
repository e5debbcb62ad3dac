//! The HelpGrid archive: incident history and reports in PostgreSQL.
//!
//! The sink consumes `incident-events` and writes incidents (latest state), their full event
//! trail and their assignments exactly once: a batch's rows and its Kafka offsets commit in
//! one PostgreSQL transaction. The same process serves history and reports.
//!
//! - [`config`]: command line/environment settings and what [`run`] needs.
//! - [`access`]: who may read history and reports (tokens, grid scope).
//! - [`areas`]: the administrative levels; an area's grids.
//! - [`requests`]: validation of every request, once, at the edge; pure.
//! - [`privacy`]: personal fields become keyed pseudonyms after the configured period.
//! - [`queries`]: the history and report SQL.
//! - [`grpc`]: the tonic HistoryService and ReportService.
//! - [`rows`]: what a batch of records becomes in PostgreSQL; pure.
//! - [`rollup`]: the per-day, per-community figures reports add up; pure.
//! - [`schema`]: embedded migrations, applied and checked at start.
//! - [`store`]: one batch, rows and offsets, in one transaction.
//! - [`sink`]: Kafka → batches → store; seeks to the stored offsets; dead letters.
//! - [`http`]: the report page (SVG charts drawn in the page), its JSON and the CSV export.
//! - [`health`]: `/metrics`, `/livez`, `/readyz`.
//! - [`telemetry`]: every metric name.

pub mod access;
pub mod areas;
pub mod config;
pub mod grpc;
pub mod health;
pub mod http;
pub mod privacy;
pub mod queries;
pub mod requests;
pub mod rollup;
pub mod rows;
pub mod schema;
pub mod sink;
pub mod store;
pub mod telemetry;

use crate::config::ArchiveConfig;
use anyhow::Context;
use helpgrid_common::topics::{Topics, ensure_topics};
use helpgrid_proto::pb::history_service_server::HistoryServiceServer;
use helpgrid_proto::pb::report_service_server::ReportServiceServer;
use metrics_exporter_prometheus::PrometheusHandle;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{RwLock, watch};
use tokio_util::sync::CancellationToken;

/// The sockets the archive serves on; each is optional.
#[derive(Debug, Default)]
pub struct Listeners {
    /// gRPC history and report API.
    pub grpc: Option<TcpListener>,
    /// Report page and CSV export.
    pub http: Option<TcpListener>,
    /// `/metrics`, `/livez`, `/readyz`.
    pub metrics: Option<TcpListener>,
}

/// Archives until `shutdown` resolves, then finishes the batch in hand and stops.
/// Refuses to start (returns an error) when the database has a schema this build does not
/// know; waits for PostgreSQL when it is not reachable yet.
pub async fn run(
    config: ArchiveConfig,
    listeners: Listeners,
    prometheus: Option<PrometheusHandle>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    telemetry::describe();
    let stop = CancellationToken::new();
    let (ready_tx, ready) = watch::channel(false);
    let health_task = listeners.metrics.map(|listener| {
        tokio::spawn(health::serve(
            listener,
            prometheus.clone(),
            ready.clone(),
            stop.clone(),
        ))
    });
    let stopper = {
        let stop = stop.clone();
        async move {
            shutdown.await;
            tracing::info!("shutting down: finishing the batch in hand");
            stop.cancel();
            // The work below sees the cancellation and ends on its own.
            std::future::pending::<()>().await;
        }
    };
    let grpc_listener = listeners.grpc;
    let http_listener = listeners.http;
    let mut tasks: Vec<tokio::task::JoinHandle<anyhow::Result<()>>> = Vec::new();
    let work = async {
        let topics = Topics::with_prefix(&config.kafka.topic_prefix);
        ensure_topics(&config.kafka, &topics)
            .await
            .context("cannot set up the Kafka topics")?;
        // Readers' tokens are checked against the revocations: read them all before serving.
        if let Some(key) = &config.token_key {
            helpgrid_auth::follower::follow_revocations(
                &config.kafka,
                "helpgrid-archive",
                Arc::clone(key),
                stop.child_token(),
            )
            .await
            .context("cannot follow the revocations topic")?
            .wait_caught_up()
            .await;
        }
        let Some(mut client) = connect_until_up(&config.postgres_url, &stop).await else {
            return Ok(());
        };
        let version = schema::migrate(&mut client)
            .await
            .context("the archive's PostgreSQL schema")?;
        tracing::info!(
            schema_version = version,
            topic_prefix = %config.kafka.topic_prefix,
            group_id = %config.group_id(),
            "archive started"
        );
        if !config.areas.is_empty() {
            let written = queries::import_areas(&mut client, &config.areas)
                .await
                .context("cannot import the areas")?;
            tracing::info!(areas = written, "area registry imported");
        }
        let registry = queries::load_areas(&client)
            .await
            .context("cannot read the area registry")?;
        let archive = grpc::Archive {
            db: Arc::new(queries::Db::new(config.postgres_url.clone())),
            gate: access::Gate::new(config.token_key.clone()),
            areas: Arc::new(RwLock::new(registry)),
        };
        tasks.push(tokio::spawn(refresh_areas(
            Arc::clone(&archive.db),
            Arc::clone(&archive.areas),
            stop.clone(),
        )));
        if let Some(listener) = grpc_listener {
            let addr = listener.local_addr()?;
            tracing::info!(%addr, auth = config.token_key.is_some(), "history and report API listening");
            tasks.push(tokio::spawn(serve_grpc(
                listener,
                archive.clone(),
                stop.clone(),
            )));
        }
        if let Some(listener) = http_listener {
            let addr = listener.local_addr()?;
            tracing::info!(url = %format!("http://{addr}/reports"), "report page listening");
            let site = http::Site {
                db: Arc::clone(&archive.db),
                gate: archive.gate.clone(),
                areas: Arc::clone(&archive.areas),
            };
            let stop = stop.clone();
            tasks.push(tokio::spawn(async move {
                http::serve(listener, site, stop).await;
                Ok(())
            }));
        }
        if let Some(after) = config.pseudonymise_after {
            tasks.push(tokio::spawn(pseudonymise(
                config.postgres_url.clone(),
                after,
                config.pseudonymise_every,
                pseudonym_key(&config.pseudonym_key)?,
                stop.clone(),
            )));
        }
        run_writers(&config, client, ready_tx, &stop).await
    };
    let result = tokio::select! {
        result = work => result,
        () = stopper => Ok(()),
    };
    stop.cancel();
    for task in tasks {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::error!(error = %format!("{error:#}"), "an archive server failed")
            }
            Err(error) => tracing::error!(%error, "an archive task failed"),
        }
    }
    if let Some(task) = health_task {
        let _ = task.await;
    }
    tracing::info!("archive stopped");
    result
}

/// Connects to PostgreSQL, retrying while it is down; `None` when stopped first.
async fn connect_until_up(url: &str, stop: &CancellationToken) -> Option<tokio_postgres::Client> {
    loop {
        match store::connect(url).await {
            Ok(client) => return Some(client),
            Err(error) => {
                tracing::warn!(%error, "PostgreSQL unreachable; waiting for it");
            }
        }
        tokio::select! {
            () = stop.cancelled() => return None,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// The gRPC API (with health and reflection) until `stop`.
async fn serve_grpc(
    listener: TcpListener,
    archive: grpc::Archive,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<HistoryServiceServer<grpc::Archive>>()
        .await;
    health
        .set_serving::<ReportServiceServer<grpc::Archive>>()
        .await;
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
    tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_v1alpha)
        .add_service(HistoryServiceServer::new(archive.clone()))
        .add_service(ReportServiceServer::new(archive))
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener),
            stop.cancelled_owned(),
        )
        .await
        .context("the gRPC server failed")
}

/// How often the area registry is re-read (another archive may have imported changes).
const AREAS_REFRESH: Duration = Duration::from_secs(30);

/// The sink's writers, each over its share of the partitions; `/readyz` is ready while every
/// writer is. The first writer gets the connection that migrated the schema.
async fn run_writers(
    config: &ArchiveConfig,
    client: tokio_postgres::Client,
    ready: watch::Sender<bool>,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    let writers = config.writers.max(1);
    let mut first = Some(client);
    let mut handles = Vec::new();
    let mut readies = Vec::new();
    for index in 0..writers {
        let (tx, rx) = watch::channel(false);
        readies.push(rx);
        let writer = sink::Writer { index, of: writers };
        handles.push(tokio::spawn(sink::run_sink(
            config.clone(),
            writer,
            first.take(),
            tx,
            stop.clone(),
        )));
    }
    let combine = async move {
        loop {
            let all = readies.iter().all(|r| *r.borrow());
            ready.send_if_modified(|now| std::mem::replace(now, all) != all);
            let changes = readies.iter_mut().map(|r| Box::pin(r.changed()));
            if futures::future::select_all(changes).await.0.is_err() {
                return;
            }
        }
    };
    let combiner = tokio::spawn(combine);
    let mut outcome = Ok(());
    for handle in handles {
        match handle.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                // One writer down stops the others: the archive restarts whole.
                stop.cancel();
                outcome = Err(anyhow::Error::new(error).context("the archive sink failed"));
            }
            Err(error) => {
                stop.cancel();
                outcome = Err(anyhow::anyhow!("an archive sink writer failed: {error}"));
            }
        }
    }
    combiner.abort();
    outcome
}

async fn refresh_areas(
    db: Arc<queries::Db>,
    areas: Arc<RwLock<areas::AreaTree>>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    loop {
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            () = tokio::time::sleep(AREAS_REFRESH) => {}
        }
        let loaded = match db.client().await {
            Ok(client) => queries::load_areas(&client)
                .await
                .map_err(anyhow::Error::from),
            Err(error) => Err(error.into()),
        };
        match loaded {
            Ok(registry) => *areas.write().await = registry,
            Err(error) => {
                tracing::warn!(%error, "cannot re-read the area registry; keeping the last")
            }
        }
    }
}

/// How many incidents one pseudonymisation transaction rewrites.
const PSEUDONYMISE_BATCH: i64 = 500;

fn pseudonym_key(secret: &[u8]) -> anyhow::Result<ring::hmac::Key> {
    if !secret.is_empty() {
        return Ok(privacy::key(secret));
    }
    // No key configured: a random one (pseudonyms then differ from one process to the next).
    let mut random = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut random)
        .map_err(|_| anyhow::anyhow!("no randomness for the pseudonym key"))?;
    Ok(privacy::key(&random))
}

async fn pseudonymise(
    url: String,
    after: Duration,
    every: Duration,
    key: ring::hmac::Key,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    loop {
        let cutoff = std::time::SystemTime::now() - after;
        match store::connect(&url).await {
            Ok(mut client) => loop {
                match store::pseudonymise_due(&mut client, cutoff, &key, PSEUDONYMISE_BATCH).await {
                    Ok(0) => break,
                    Ok(n) => {
                        telemetry::pseudonymised(n);
                        tracing::info!(incidents = n, "personal fields pseudonymised");
                    }
                    Err(error) => {
                        tracing::warn!(%error, "pseudonymisation failed; retrying later");
                        break;
                    }
                }
                if stop.is_cancelled() {
                    return Ok(());
                }
            },
            Err(error) => tracing::warn!(%error, "pseudonymisation cannot reach PostgreSQL"),
        }
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            () = tokio::time::sleep(every) => {}
        }
    }
}
