//! HelpGrid gateway: what real buttons and cameras send, turned into help events.
//!
//! - [`domain`]: the device payloads (Zigbee2MQTT, Frigate, signed HTTP), the registry and
//!   derived event ids. Pure, unit-tested, fuzzed.
//! - [`mqtt`]: Zigbee2MQTT and Frigate over MQTT (persistent session, manual acks).
//! - [`http`]: signed HTTP for cellular buttons and NVRs.
//! - [`kafka`]: help events and dead letters out, the device registry in.
//! - [`feedback`]: incident events → the resident's device (MQTT command, HTTP status).
//! - [`grpc`]: the admin-only DeviceService.
//! - [`health_watch`]: device health → one maintenance report per device and problem.
//! - [`config`], [`telemetry`]: flags and metric names.
//!
//! A Zigbee2MQTT press travels: MQTT `<base>/<friendly_name>` → [`domain::z2m::decode_state`]
//! → registry lookup → [`domain::intake::press_event`] → Kafka `help-events`, keyed by grid
//! → the MQTT acknowledgement.

pub mod config;
pub mod domain;
pub mod feedback;
pub mod grpc;
pub mod health_watch;
pub mod http;
pub mod kafka;
pub mod mqtt;
pub mod telemetry;

use config::GatewayConfig;
use domain::frigate::AlertGate;
use domain::rate::RateLimiter;
use domain::registry::DeviceTable;
use helpgrid_common::topics::{Topics, ensure_topics};
use metrics_exporter_prometheus::PrometheusHandle;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Alert ids remembered to drop Frigate's repeated updates (a few hours of busy cameras).
const ALERT_GATE_CAPACITY: usize = 100_000;

/// The devices topic of a deployment.
pub fn devices_topic(prefix: &str) -> String {
    format!("{prefix}devices")
}

/// Addresses the gateway actually listens on (port 0 resolved), for tests and logs.
#[derive(Debug, Clone, Default)]
pub struct Bound {
    pub http: Option<SocketAddr>,
    pub grpc: Option<SocketAddr>,
    pub metrics: Option<SocketAddr>,
}

/// Runs the gateway until `shutdown` resolves: creates missing topics, loads the registry,
/// then takes MQTT and HTTP. `bound` (if given) receives the listening addresses once ready.
pub async fn run(
    config: GatewayConfig,
    prometheus: Option<PrometheusHandle>,
    bound: Option<tokio::sync::oneshot::Sender<Bound>>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    telemetry::describe();
    let config = Arc::new(config);
    let topics = Topics::with_prefix(&config.kafka.topic_prefix);
    let devices = devices_topic(&config.kafka.topic_prefix);
    ensure_topics(&config.kafka, &topics).await?;
    kafka::ensure_devices_topic(&config.kafka, &devices).await?;
    let outbox = kafka::Outbox::new(&config.kafka, &topics.help_events, &topics.dead_letters)?;

    let cancel = CancellationToken::new();
    let _stop = cancel.clone().drop_guard();
    let (ready_tx, ready_rx) = watch::channel(false);
    let mut addresses = Bound::default();
    if let Some(addr) = config.metrics_listen {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        addresses.metrics = Some(listener.local_addr()?);
        let app = health_router(prometheus, ready_rx.clone());
        let stop = cancel.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
        });
    }

    let table = Arc::new(RwLock::new(DeviceTable::default()));
    let loaded =
        kafka::follow_registry(&config.kafka, &devices, Arc::clone(&table), cancel.clone()).await?;
    tokio::pin!(shutdown);
    tokio::select! {
        () = &mut shutdown => return Ok(()),
        result = loaded => if result.is_err() {
            anyhow::bail!("the registry feed stopped before loading the registry");
        },
    }
    // Reported once loaded even when the registry is empty (the feed sets it per record), so
    // HelpGridDevicesOffline's denominator exists from the start. Under the lock: the feed
    // sets it under the write lock, so a newer size is never overwritten by this one.
    let count = table
        .read()
        .map(|t| {
            metrics::gauge!(telemetry::DEVICES).set(t.len() as f64);
            t.len()
        })
        .unwrap_or(0);
    tracing::info!(devices = count, topic = %devices, "device registry loaded");
    // Device administration verifies admin tokens: not before the revocations are read.
    if let Some((_, key)) = &config.grpc {
        let mut revocations = helpgrid_auth::follower::follow_revocations(
            &config.kafka,
            "helpgrid-gateway",
            Arc::clone(key),
            cancel.clone(),
        )
        .await?;
        tokio::select! {
            () = &mut shutdown => return Ok(()),
            () = revocations.wait_caught_up() => {}
        }
    }

    let health = Arc::new(health_watch::HealthWatch {
        book: Mutex::new(domain::health::HealthBook::new(
            config.health.clone(),
            helpgrid_common::time::now_millis(),
        )),
        table: Arc::clone(&table),
        outbox: outbox.clone(),
        cancel: cancel.clone(),
    });
    tokio::spawn(
        Arc::clone(&health).run_checks(std::time::Duration::from_millis(config.health_check_ms)),
    );
    let statuses = Arc::new(RwLock::new(domain::feedback::StatusBook::default()));
    {
        let config = Arc::clone(&config);
        let table = Arc::clone(&table);
        let statuses = Arc::clone(&statuses);
        let stop = cancel.clone();
        let topic = topics.incident_events.clone();
        let payloads = config.feedback.clone();
        tokio::spawn(async move {
            if let Err(error) = feedback::run(config, topic, table, statuses, payloads, stop).await
            {
                tracing::error!(%error, "resident feedback stopped");
            }
        });
    }
    let mut mqtt_task = None;
    let (mqtt_up_tx, mqtt_up) = watch::channel(config.mqtt.is_none());
    if let Some(mqtt) = config.mqtt.clone() {
        let intake = Arc::new(mqtt::MqttIntake {
            config: Arc::clone(&config),
            table: Arc::clone(&table),
            outbox: outbox.clone(),
            gate: Mutex::new(AlertGate::new(ALERT_GATE_CAPACITY)),
            health: Arc::clone(&health),
            cancel: cancel.clone(),
        });
        mqtt_task = Some(tokio::spawn(mqtt::run(
            mqtt,
            intake,
            mqtt_up_tx,
            cancel.clone(),
        )));
    }
    if let Some(addr) = config.http_listen {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        addresses.http = Some(listener.local_addr()?);
        tracing::info!(addr = %listener.local_addr()?, "serving signed HTTP for devices");
        let intake = Arc::new(http::HttpIntake {
            config: Arc::clone(&config),
            table: Arc::clone(&table),
            outbox: outbox.clone(),
            limiter: Mutex::new(RateLimiter::new(config.rate_burst, config.rate_per_minute)),
            health: Arc::clone(&health),
            statuses: Arc::clone(&statuses),
        });
        let app = http::router(intake);
        let stop = cancel.clone();
        tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
            {
                tracing::error!(%error, "HTTP server failed");
            }
        });
    }
    if let Some((addr, key)) = config.grpc.clone() {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        addresses.grpc = Some(listener.local_addr()?);
        tracing::info!(addr = %listener.local_addr()?, "serving the admin DeviceService");
        let service = grpc::Devices {
            key,
            kafka: config.kafka.clone(),
            topic: devices.clone(),
            table: Arc::clone(&table),
            health: Arc::clone(&health),
        };
        let stop = cancel.clone();
        tokio::spawn(async move {
            if let Err(error) = tonic::transport::Server::builder()
                .add_service(
                    helpgrid_proto::pb::device_service_server::DeviceServiceServer::new(service),
                )
                .serve_with_incoming_shutdown(
                    tonic::transport::server::TcpIncoming::from(listener),
                    stop.cancelled_owned(),
                )
                .await
            {
                tracing::error!(%error, "DeviceService failed");
            }
        });
    }
    // Ready while the registry is loaded and MQTT (if configured) is connected.
    let mut mqtt_up_watch = mqtt_up.clone();
    let ready_follow = ready_tx.clone();
    let stop = cancel.clone();
    tokio::spawn(async move {
        loop {
            let up = *mqtt_up_watch.borrow_and_update();
            let _ = ready_follow.send(up);
            tokio::select! {
                () = stop.cancelled() => return,
                changed = mqtt_up_watch.changed() => if changed.is_err() { return; },
            }
        }
    });
    if let Some(tx) = bound {
        let _ = tx.send(addresses);
    }
    shutdown.await;
    tracing::info!("shutting down: stopping intake, finishing messages in hand");
    let _ = ready_tx.send(false);
    cancel.cancel();
    if let Some(task) = mqtt_task {
        task.await?;
    }
    Ok(())
}

fn health_router(
    prometheus: Option<PrometheusHandle>,
    ready: watch::Receiver<bool>,
) -> axum::Router {
    use axum::http::StatusCode;
    use axum::routing::get;
    axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let text = prometheus
                    .as_ref()
                    .map(PrometheusHandle::render)
                    .unwrap_or_default();
                async move { text }
            }),
        )
        .route("/livez", get(|| async { "alive\n" }))
        .route(
            "/readyz",
            get(move || {
                let ready = *ready.borrow();
                async move {
                    if ready {
                        (StatusCode::OK, "ready\n")
                    } else {
                        (
                            StatusCode::SERVICE_UNAVAILABLE,
                            "not ready: registry loading or MQTT disconnected\n",
                        )
                    }
                }
            }),
        )
}
