//! HelpGrid router: the single writer of incident state.
//!
//! It consumes help events and incident commands (co-partitioned by grid) and the roster,
//! decides with the pure [`domain`] (open, deduplicate, assign, acknowledge, reassign,
//! escalate, close), and writes incident events, exactly once.
//!
//! - [`config`]: flags and environment variables.
//! - [`domain`]: the decisions, pure and unit-tested.
//! - [`kafka`]: the adapters (pipeline, rebalance and restore, dead letters, roster table).
//! - [`telemetry`]: every metric name.
//!
//! A button press travels: `help-events` → [`kafka::pipeline`] → [`domain::Desk::on_help_event`]
//! → `incident-events` (in the same transaction as the press's offset).

pub mod config;
pub mod domain;
pub mod kafka;
pub mod telemetry;

use config::RouterConfig;
use domain::Roster;
use helpgrid_common::health::{Health, Readiness};
use helpgrid_common::topics::{Topics, ensure_topics, topic_setting};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Pause before a failed pipeline is started again.
const RESTART_BACKOFF: Duration = Duration::from_secs(1);

/// Fenced this many times in a row, each within [`FENCED_WINDOW`] of starting, the router
/// gives up: another instance runs with the same transactional id, and fighting over it
/// would keep both from working.
const FENCED_LIMIT: u32 = 3;
const FENCED_WINDOW: Duration = Duration::from_secs(120);

/// How often the readiness of several pipelines is gathered into the service's.
const PARTS_CHECK: Duration = Duration::from_millis(50);

/// Sets the age limit of local checkpoints from incident-state's `delete.retention.ms` (see
/// [`config::CheckpointConfig::max_age`]); without it, checkpoints are off.
async fn with_checkpoint_age(mut config: RouterConfig, topics: &Topics) -> RouterConfig {
    if config.checkpoint.is_none() {
        return config;
    }
    let retention = topic_setting(&config.kafka, &topics.incident_state, "delete.retention.ms")
        .await
        .map(|v| v.and_then(|v| v.parse::<u64>().ok()));
    match (retention, config.checkpoint.as_mut()) {
        (Ok(Some(ms)), Some(c)) => {
            c.max_age = Duration::from_millis(ms / 2);
            tracing::info!(dir = %c.dir.display(), max_age_s = c.max_age.as_secs(), interval_s = c.interval.as_secs_f64(), "local checkpoints on");
        }
        (found, _) => {
            tracing::warn!(?found, topic = %topics.incident_state, "delete.retention.ms of incident-state unknown: local checkpoints off");
            config.checkpoint = None;
        }
    }
    config
}

/// Runs the router until `shutdown` resolves. Creates missing topics, loads the roster,
/// then routes. The open transaction (if any) is finished before it returns.
pub async fn run(config: RouterConfig, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    run_with_health(config, Health::new(), shutdown).await
}

/// [`run`], telling `health` how it goes (what `/readyz` answers): starting, restoring,
/// ready (pipeline running, input drained), failed. Returns an error when the topics'
/// settings would lose state, or when the pipeline keeps being fenced by another instance
/// with the same transactional id.
pub async fn run_with_health(
    config: RouterConfig,
    health: Health,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    telemetry::describe();
    health.set(Readiness::Starting);
    // The first line of a start-up's time line (the restore benchmark reads it).
    tracing::info!(version = env!("CARGO_PKG_VERSION"), "router starting");
    let topics = Topics::with_prefix(&config.kafka.topic_prefix);
    let partitions = ensure_topics(&config.kafka, &topics).await?;
    tracing::info!(partitions, prefix = %config.kafka.topic_prefix, "topics ready");
    let config = with_checkpoint_age(config, &topics).await;

    let cancel = CancellationToken::new();
    let _stop_feeds = cancel.clone().drop_guard();
    let roster = Arc::new(RwLock::new(Roster::default()));
    // The pipeline starts while the roster loads: its InitTransactions, group join and
    // restore do not need the roster, and it decides nothing before `roster_ready`.
    let roster_ready = Arc::new(AtomicBool::new(false));
    let pipelines = config.pipelines.max(1);
    let mut workers = tokio::task::JoinSet::new();
    // One pipeline reports straight to the service's health; several each keep their own
    // part, and the service is as ready as the least ready of them.
    let parts: Vec<Health> = if pipelines == 1 {
        vec![health.clone()]
    } else {
        (0..pipelines).map(|_| Health::part()).collect()
    };
    for (n, part) in parts.iter().enumerate() {
        let worker = Worker {
            config: config.pipeline(n),
            topics: topics.clone(),
            partitions,
            roster: Arc::clone(&roster),
            roster_ready: Arc::clone(&roster_ready),
            health: part.clone(),
            cancel: cancel.clone(),
        };
        workers.spawn_blocking(move || worker.run());
    }
    if pipelines > 1 {
        tokio::spawn(follow_parts(health.clone(), parts, cancel.clone()));
    }
    let kafka = config.kafka.clone();
    let roster_topic = topics.roster.clone();
    let roster_loaded =
        kafka::roster_feed::start(&kafka, &roster_topic, Arc::clone(&roster), cancel.clone())
            .await?;
    tokio::pin!(shutdown);
    tokio::select! {
        () = &mut shutdown => {
            return stop_all(&mut workers, &cancel, Ok(())).await;
        }
        loaded = roster_loaded => {
            if loaded.is_err() {
                let _ = stop_all(&mut workers, &cancel, Ok(())).await;
                anyhow::bail!("the roster feed stopped before loading the roster");
            }
            roster_ready.store(true, Ordering::Release);
            let responders = roster.read().map(|r| r.len()).unwrap_or(0);
            tracing::info!(responders, "roster loaded");
        }
        result = next_done(&mut workers) => {
            // A pipeline ended before the roster was in: an error, or cancelled.
            return stop_all(&mut workers, &cancel, result).await;
        }
    }
    tokio::select! {
        () = &mut shutdown => {
            tracing::info!("shutting down: finishing the current batch");
            stop_all(&mut workers, &cancel, Ok(())).await
        }
        result = next_done(&mut workers) => stop_all(&mut workers, &cancel, result).await,
    }
}

/// The first pipeline worker to end (never, if there are none left).
async fn next_done(workers: &mut JoinSet<anyhow::Result<()>>) -> anyhow::Result<()> {
    match workers.join_next().await {
        Some(result) => result?,
        None => std::future::pending().await,
    }
}

/// Stops every pipeline worker (each finishes its current batch) and returns `first`, the
/// first outcome, or else the first error of the others.
async fn stop_all(
    workers: &mut JoinSet<anyhow::Result<()>>,
    cancel: &CancellationToken,
    first: anyhow::Result<()>,
) -> anyhow::Result<()> {
    cancel.cancel();
    let mut outcome = first;
    while let Some(result) = workers.join_next().await {
        let result = result.map_err(anyhow::Error::from).and_then(|r| r);
        if let (Ok(()), Err(error)) = (&outcome, result) {
            outcome = Err(error);
        }
    }
    outcome
}

/// Sets the service's readiness from its pipelines' until `cancel`.
async fn follow_parts(health: Health, parts: Vec<Health>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(PARTS_CHECK);
    while !cancel.is_cancelled() {
        tick.tick().await;
        let worst = Readiness::worst(parts.iter().map(Health::get));
        if health.get() != worst {
            health.set(worst);
        }
    }
}

/// One transactional pipeline and its restarts.
struct Worker {
    config: RouterConfig,
    topics: Topics,
    partitions: usize,
    roster: Arc<RwLock<Roster>>,
    roster_ready: Arc<AtomicBool>,
    health: Health,
    cancel: CancellationToken,
}

impl Worker {
    /// Runs the pipeline until cancelled, starting a fresh one after each failure; gives up
    /// when fenced again and again, or when too many Kafka calls are stuck.
    fn run(self) -> anyhow::Result<()> {
        let mut fenced_in_a_row = 0;
        while !self.cancel.is_cancelled() {
            let started = std::time::Instant::now();
            self.health.set(Readiness::Starting);
            let error = match kafka::pipeline::run_pipeline(
                &self.config,
                &self.topics,
                self.partitions,
                &self.roster,
                &self.roster_ready,
                &self.health,
                &self.cancel,
            ) {
                Ok(()) => return Ok(()),
                Err(error) => error,
            };
            self.health.set(Readiness::Failed);
            metrics::counter!(telemetry::PIPELINE_RESTARTS).increment(1);
            if error.is_fenced() && started.elapsed() < FENCED_WINDOW {
                fenced_in_a_row += 1;
            } else {
                fenced_in_a_row = u32::from(error.is_fenced());
            }
            if kafka::stuck_call::stuck_now() >= kafka::stuck_call::MAX_STUCK_CALLS {
                anyhow::bail!(
                    "{stuck} Kafka transaction calls are still blocked in librdkafka after their timeouts ({error}); stopping so that a fresh process starts clean",
                    stuck = kafka::stuck_call::stuck_now()
                );
            }
            if fenced_in_a_row >= FENCED_LIMIT {
                anyhow::bail!(
                    "fenced {fenced_in_a_row} times in a row ({error}): another router instance uses                      transactional id {id:?} (also its group.instance.id); give every instance its own                      --instance-id or --transactional-id",
                    id = self.config.transactional_id
                );
            }
            tracing::error!(%error, fenced = error.is_fenced(), transactional_id = %self.config.transactional_id, "router pipeline failed; starting a fresh one from Kafka state");
            std::thread::sleep(RESTART_BACKOFF);
        }
        Ok(())
    }
}
