//! helpgrid-notify: incident events out to webhooks, so an SMS gateway or an IM robot
//! (WeCom, DingTalk, Feishu) tells people what HelpGrid decided.
//!
//! `incident-events` (read_committed) → [`intake`] → [`domain`] (which subscriptions, what
//! body, when to re-notify) → [`delivery`] (per-endpoint ordered lanes, signed POSTs,
//! retries, circuit breaker) → the endpoint, or [`dead_letter`] after the retry budget.
//! Offsets are committed only behind finished work: at-least-once, and the idempotency key
//! (the event id) makes repeats recognisable to the receiver.
//!
//! - [`config`]: flags and environment variables.
//! - [`domain`]: the webhook policy, pure and unit-tested.
//! - [`store`]: the subscription table on its compacted topic.
//! - [`grpc`]: the admin API for subscriptions.
//! - [`ops`]: /metrics, /livez, /readyz.
//! - [`telemetry`]: every metric name.

pub mod config;
pub mod dead_letter;
pub mod delivery;
pub mod domain;
pub mod grpc;
pub mod intake;
pub mod ops;
pub mod store;
pub mod telemetry;

use anyhow::Context;
use config::NotifyConfig;
use delivery::{DeliverySettings, Dispatcher, HttpTransport};
use helpgrid_common::kafka::KafkaArgs;
use helpgrid_common::reader::follow;
use helpgrid_common::topics::{Topics, ensure_topics, partition_count};
use helpgrid_proto::pb::notify_service_server::NotifyServiceServer;
use intake::{Clock, Intake, IntakeContext};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::StreamConsumer;
use rdkafka::producer::FutureProducer;
use rdkafka::types::RDKafkaErrorCode;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use store::SubscriptionStore;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

const CLIENT_ID: &str = "helpgrid-notify";

/// Binds the configured addresses, then [`serve`]s until `shutdown` resolves.
pub async fn run(config: NotifyConfig, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let grpc = TcpListener::bind(config.grpc_listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.grpc_listen))?;
    let ops = match config.metrics_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr}"))?,
        ),
        None => None,
    };
    serve(config, grpc, ops, shutdown).await
}

/// Creates the subscriptions topic (compacted) if missing.
async fn ensure_subscriptions_topic(kafka: &KafkaArgs, topic: &str) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = kafka.admin_config(CLIENT_ID).create()?;
    let wanted = NewTopic::new(topic, 1, TopicReplication::Fixed(kafka.topic_replication))
        .set("cleanup.policy", "compact");
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in admin.create_topics([&wanted], &options).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => anyhow::bail!("cannot create topic {topic}: {code}"),
        }
    }
    partition_count(&admin, topic).await?;
    Ok(())
}

/// Serves the subscription API on `grpc` and (if given) the ops endpoints on `ops`, and
/// delivers notifications, until `shutdown` resolves.
pub async fn serve(
    config: NotifyConfig,
    grpc: TcpListener,
    ops: Option<TcpListener>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let metrics_handle = ops.as_ref().and_then(|_| ops::install_recorder());
    telemetry::describe();
    let kafka = &config.kafka;
    let topics = Topics::with_prefix(&kafka.topic_prefix);
    ensure_topics(kafka, &topics)
        .await
        .context("cannot set up the Kafka topics")?;
    ensure_subscriptions_topic(kafka, &topics.notify_subscriptions)
        .await
        .context("cannot set up the subscriptions topic")?;

    let stop = CancellationToken::new();
    let _stop_on_exit = stop.clone().drop_guard();
    let (ready_tx, ready) = watch::channel(false);
    let ops_task = ops.map(|listener| {
        tokio::spawn(ops::serve(
            listener,
            metrics_handle,
            ready.clone(),
            stop.clone(),
        ))
    });

    let producer: FutureProducer = kafka
        .producer_config(CLIENT_ID)
        .create()
        .context("cannot create the Kafka producer")?;
    let store = Arc::new(SubscriptionStore::new(
        producer.clone(),
        topics.notify_subscriptions.clone(),
    ));
    let feed = follow(
        kafka,
        &format!("{CLIENT_ID}-subscriptions"),
        &topics.notify_subscriptions,
        stop.child_token(),
    )
    .await
    .context("cannot follow the subscriptions topic")?;
    let (loaded_tx, mut loaded) = watch::channel(false);
    let store_task = tokio::spawn({
        let store = Arc::clone(&store);
        async move { store.follow(feed, loaded_tx).await }
    });
    // Admin tokens are checked against the revocations: read them all before serving.
    let mut revocations = match &config.token_key {
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

    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(helpgrid_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("cannot build the gRPC reflection service")?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(helpgrid_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .context("cannot build the gRPC reflection service")?;
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_not_serving::<NotifyServiceServer<grpc::NotifyApi>>()
        .await;
    let api = NotifyServiceServer::new(grpc::NotifyApi {
        store: Arc::clone(&store),
        admin: grpc::AdminOnly {
            key: config.token_key.clone(),
        },
    });
    let grpc_addr = grpc.local_addr()?;
    let grpc_task = tokio::spawn({
        let stop = stop.clone();
        Server::builder()
            .add_service(health_service)
            .add_service(reflection)
            .add_service(reflection_v1alpha)
            .add_service(api)
            .serve_with_incoming_shutdown(
                TcpIncoming::from(grpc),
                async move { stop.cancelled().await },
            )
    });
    tracing::info!(grpc = %grpc_addr, prefix = %kafka.topic_prefix, group = %config.group_id, auth = config.token_key.is_some(), "helpgrid-notify listening");

    tokio::pin!(shutdown);
    tokio::select! {
        () = &mut shutdown => {
            stop.cancel();
            return finish(grpc_task, ops_task, store_task).await;
        }
        loaded = async {
            let loaded = loaded.wait_for(|l| *l).await.map(|_| ());
            if let Some(revocations) = &mut revocations {
                revocations.wait_caught_up().await;
            }
            loaded
        } => {
            loaded.context("the subscriptions feed ended before loading")?;
        }
    }

    let transport =
        HttpTransport::new(config.request_timeout).context("cannot build the HTTP client")?;
    let (finished_tx, finished_rx) = mpsc::unbounded_channel();
    let dispatcher = Dispatcher::new(
        DeliverySettings {
            retry: config.retry.clone(),
            breaker: config.breaker.clone(),
            lanes: config.lanes,
            lane_capacity: config.lane_capacity,
            dead_letter_topic: topics.dead_letters.clone(),
        },
        transport,
        producer.clone(),
        finished_tx,
        stop.child_token(),
    );
    let mut consumer_config = kafka.group_consumer_config(CLIENT_ID, &config.group_id);
    // read_committed: an assignment becomes readable only when the router's transaction
    // marker lands, and a fetch that finds nothing readable waits up to fetch.wait.max.ms
    // (librdkafka's default: 500 ms) before the next. 20 ms, as for the readers in
    // services/common, keeps that off the assignment → webhook tail; pass-through options
    // still win.
    consumer_config.set("fetch.wait.max.ms", "20");
    for (key, value) in &kafka.options {
        consumer_config.set(key, value);
    }
    let consumer: StreamConsumer<IntakeContext> = consumer_config
        .create_with_context(IntakeContext::default())
        .context("cannot create the Kafka consumer")?;
    let intake = Intake::new(
        Arc::clone(&store),
        dispatcher,
        finished_rx,
        producer,
        topics.dead_letters.clone(),
        topics.incident_events.clone(),
        config.commit_interval,
        Clock::new(),
    );
    let intake_stop = CancellationToken::new();
    let mut intake_task = tokio::spawn(intake.run(consumer, intake_stop.clone()));
    health
        .set_serving::<NotifyServiceServer<grpc::NotifyApi>>()
        .await;
    ready_tx.send_replace(true);
    tracing::info!("subscriptions loaded; notifying");

    let intake_result = tokio::select! {
        () = &mut shutdown => {
            tracing::info!("shutting down: stopping intake, committing finished work");
            ready_tx.send_replace(false);
            intake_stop.cancel();
            intake_task.await
        }
        result = &mut intake_task => result,
    };
    stop.cancel();
    let finished = finish(grpc_task, ops_task, store_task).await;
    intake_result
        .context("the intake task failed")?
        .context("the intake stopped")?;
    finished
}

async fn finish(
    grpc_task: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    ops_task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    store_task: tokio::task::JoinHandle<()>,
) -> anyhow::Result<()> {
    grpc_task
        .await
        .context("the gRPC task failed")?
        .context("the gRPC server failed")?;
    if let Some(task) = ops_task {
        task.await
            .context("the ops task failed")?
            .context("the ops server failed")?;
    }
    let _ = store_task.await;
    tracing::info!("helpgrid-notify stopped");
    Ok(())
}
