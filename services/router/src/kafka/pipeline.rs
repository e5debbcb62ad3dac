//! consume → decide → produce, exactly once.
//!
//! Each turn polls a batch of help events and commands (read_committed), lets the desk
//! decide, fires due acknowledgement deadlines, and writes the resulting incident events,
//! the changed incidents' snapshots (incident-state), the dead letters and the batch's
//! input offsets in ONE Kafka transaction. A crash before the commit loses the in-memory
//! changes and the uncommitted output together; the next owner rebuilds from the committed
//! incident-state and re-reads the same inputs.
//!
//! Any transaction error ends the pipeline with an error; the caller starts a fresh one
//! (new clients, state rebuilt from Kafka), so memory and log can never disagree. So does a
//! transaction call that librdkafka never returns from ([`super::stuck_call`]): the pipeline
//! never waits on Kafka longer than a call's timeout plus a few seconds.

use super::checkpoint::StateWrites;
use super::dead_letter::{DeadLetter, dead_letter};
use super::rebalance::{Ownership, RouterContext};
use super::stuck_call::{self, StuckCall, bounded};
use crate::config::RouterConfig;
use crate::domain::desk::{HelpOutcome, Output};
use crate::domain::{Desk, Roster, validate};
use crate::telemetry;
use helpgrid_common::health::{Health, Readiness};
use helpgrid_common::partition::grid_partition;
use helpgrid_common::time::{Millis, now_millis};
use helpgrid_common::topics::Topics;
use prost::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const TXN_TIMEOUT: Duration = Duration::from_secs(30);
/// Timeout of the calls that end a transaction (offsets, commit). A broker failover needs
/// about 6 s (the brokers' session timeout) before they can succeed; past 10 s the pipeline
/// is better off starting afresh than waiting out the 30 s transaction timeout, and
/// `stuck_call` bounds them at this plus its grace when librdkafka ignores it.
const END_TXN_TIMEOUT: Duration = Duration::from_secs(10);
/// A transaction slower than this is logged with the time of each step (a broker failover
/// shows up here: which step waited, and how long).
const SLOW_TRANSACTION: Duration = Duration::from_secs(1);
/// Longest wait for input when no deadline is due sooner; bounds shutdown latency too.
const MAX_IDLE_POLL: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("cannot create Kafka client: {0}")]
    Client(KafkaError),
    #[error("Kafka transaction failed during {step}: {source}")]
    Transaction {
        step: &'static str,
        source: KafkaError,
    },
    #[error("{0}")]
    Restore(String),
    #[error("the consumer failed fatally: {0}")]
    Consumer(KafkaError),
    /// The producer is unusable (a call is still blocked in it): start afresh, no abort.
    #[error("Kafka transaction stuck: {0}")]
    Stuck(#[from] StuckCall),
}

impl PipelineError {
    /// Another instance with the same transactional id or static group membership took over:
    /// starting again would only fence it in turn.
    pub fn is_fenced(&self) -> bool {
        let (step, source) = match self {
            PipelineError::Transaction { step, source } => (Some(*step), source),
            PipelineError::Consumer(source) => (None, source),
            PipelineError::Client(_) | PipelineError::Restore(_) | PipelineError::Stuck(_) => {
                return false;
            }
        };
        fenced_by_another(step, source.rdkafka_error_code(), &source.to_string())
    }
}

/// Whether a Kafka error of transaction `step` (None: the consumer) says another instance
/// took this one's transactional id or static group membership.
fn fenced_by_another(
    step: Option<&str>,
    code: Option<rdkafka::types::RDKafkaErrorCode>,
    text: &str,
) -> bool {
    use rdkafka::types::RDKafkaErrorCode as Code;
    if step == Some("offsets") && code == Some(Code::FencedInstanceId) {
        // The group coordinator moved (a broker failover) and the consumer rejoined while
        // this transaction carried the group metadata from before: Kafka refuses its offsets
        // with FENCED_INSTANCE_ID although no other instance exists. Counting it as fenced
        // made three coordinator moves in two minutes (a rolling restart) stop the router;
        // another instance shows as a fenced producer or a fatal consumer error.
        return false;
    }
    text.to_lowercase().contains("fenced")
        || matches!(
            code,
            Some(Code::ProducerFenced | Code::FencedInstanceId | Code::InvalidProducerEpoch)
        )
}

/// The transactional ids of a pipeline's producers: its own, and with `--overlap-commits`
/// `<id>.next` and then `<id>.next<n>` for the third and later.
fn producer_ids(config: &RouterConfig) -> Vec<String> {
    let id = &config.transactional_id;
    if !config.overlap_commits {
        return vec![id.clone()];
    }
    (0..config.overlap_producers.max(2))
        .map(|n| match n {
            0 => id.clone(),
            1 => format!("{id}.next"),
            n => format!("{id}.next{n}"),
        })
        .collect()
}

fn txn(step: &'static str) -> impl FnOnce(KafkaError) -> PipelineError {
    move |source| PipelineError::Transaction { step, source }
}

/// What one batch produced.
#[derive(Default)]
struct BatchOutput {
    events: Vec<Output>,
    dead_letters: Vec<DeadLetter>,
    /// Help events and commands that arrived on another partition than their grid's, to
    /// re-publish there.
    forwards: Vec<Forward>,
    /// (partition, incident id) of closed incidents past the retention window: tombstones
    /// for incident-state.
    tombstones: Vec<(i32, String)>,
    /// The incident-state record of every incident the batch changed, in first-change
    /// order: the desk's stored snapshot bytes, copied as they are (encoding the incident
    /// again cost as much as a third of the desk's work per press).
    snapshots: Vec<Snapshot>,
    /// Next offset to consume, per (topic, partition).
    offsets: BTreeMap<(String, i32), i64>,
}

/// One incident-state record to write.
struct Snapshot {
    partition: i32,
    incident_id: String,
    record: Vec<u8>,
}

/// A help event or command to re-publish to its grid's partition of the same topic.
struct Forward {
    topic: String,
    partition: i32,
    /// The grid id: the key a murmur2 producer would have used.
    key: Vec<u8>,
    payload: Option<Vec<u8>>,
    headers: OwnedHeaders,
}

/// Header naming where a forwarded help event first arrived (`topic/partition/offset`).
pub const HEADER_FORWARDED_FROM: &str = "helpgrid.forwarded.from";

/// The transactional producer; its context tells which incident-state offsets were written.
type RouterProducer = BaseProducer<StateWrites>;

/// Runs until `cancel` fires (Ok) or a Kafka error ends this pipeline (Err). `partitions`:
/// the partition count of the grid-keyed topics. Nothing is decided before `roster_ready`
/// (the roster loads while the pipeline starts and restores).
pub fn run_pipeline(
    config: &RouterConfig,
    topics: &Topics,
    partitions: usize,
    roster: &RwLock<Roster>,
    roster_ready: &AtomicBool,
    health: &Health,
    cancel: &CancellationToken,
) -> Result<(), PipelineError> {
    let ownership = Ownership::new(
        Desk::new(config.policy.clone()),
        config.kafka.clone(),
        topics.clone(),
        health.clone(),
        config.checkpoint.clone(),
    );
    // Shared with the thread of a transaction call (see `stuck_call`), which keeps it alive
    // if librdkafka never returns. With `--overlap-commits`, more producers (transactional
    // ids `<id>.next`, `<id>.next2`, ...) take turns, so a batch is produced while the one
    // before it commits.
    let ids = producer_ids(config);
    let init_started = Instant::now();
    let mut producers: Vec<Arc<RouterProducer>> = Vec::with_capacity(ids.len());
    for id in &ids {
        let producer: Arc<RouterProducer> = Arc::new(
            config
                .kafka
                .transactional_producer_config("helpgrid-router", id)
                .create_with_context(StateWrites::new(&topics.incident_state))
                .map_err(PipelineError::Client)?,
        );
        producer
            .init_transactions(TXN_TIMEOUT)
            .map_err(txn("init"))?;
        producers.push(producer);
    }
    let init_ms = init_started.elapsed().as_millis() as u64;
    let mut consumer_config = config
        .kafka
        .group_consumer_config("helpgrid-router", &config.group_id);
    consumer_config
        .set("statistics.interval.ms", "5000")
        // Static membership: a restarted instance (same id) takes its partitions back at once
        // instead of waiting out a rebalance; its state is rebuilt on assignment either way.
        .set("group.instance.id", &config.transactional_id);
    stuck_call::bound_offsets_by_session_of(&consumer_config);
    let consumer: BaseConsumer<RouterContext> = consumer_config
        .create_with_context(RouterContext {
            ownership: Arc::clone(&ownership),
        })
        .map_err(PipelineError::Client)?;
    consumer
        .subscribe(&[&topics.help_events, &topics.incident_commands])
        .map_err(PipelineError::Client)?;
    tracing::info!(group = %config.group_id, transactional_id = %config.transactional_id, overlap_commits = config.overlap_commits, init_ms, "router pipeline started");
    let counters = telemetry::PipelineCounters::new(topics);
    let times = telemetry::TurnTimes::new();

    // The batch whose commit runs while the next one is decided and produced (overlap only).
    let mut in_flight: Option<InFlight> = None;
    let mut next_producer = 0;
    let mut last_checkpoint_turn = Instant::now();
    // A quarter of the interval: the checkpoints decide themselves what is due, so a turn
    // that lets them write comes often enough not to delay one by much (each costs one
    // overlap, a few milliseconds).
    let checkpoint_every = config
        .checkpoint
        .as_ref()
        .map_or(Duration::MAX, |c| c.interval / 4);
    while !cancel.is_cancelled() {
        // A checkpoint needs the desk to equal the committed changelog: while commits
        // overlap, that holds only between a commit and the next batch's decisions, so once
        // per checkpoint interval the commit in flight is finished before anything else.
        if in_flight.is_some() && last_checkpoint_turn.elapsed() >= checkpoint_every {
            finish(in_flight.take(), &producers, &ownership, &counters, &times)?;
            ownership.checkpoint(false);
            last_checkpoint_turn = Instant::now();
        }
        let generation = ownership.generation();
        let wait = if in_flight.is_some() {
            // Take what is there: with nothing new, the turn finishes the commit in flight.
            Duration::ZERO
        } else {
            ownership
                .desk()
                .next_deadline()
                .map_or(MAX_IDLE_POLL, |at| {
                    Duration::from_millis((at - now_millis()).clamp(0, 100) as u64)
                })
        };
        let batch = poll_batch(&consumer, wait, config.batch_max, config.batch_linger)?;
        let polled = Instant::now();
        let batch_len = batch.len();
        while !roster_ready.load(Ordering::Acquire) {
            if cancel.is_cancelled() {
                drop(batch);
                return finish(in_flight.take(), &producers, &ownership, &counters, &times);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        if let Some(failure) = ownership.take_failure() {
            return Err(PipelineError::Restore(failure));
        }
        // Not before the group has assigned this instance its partitions (a rebalance ran):
        // an empty poll before that is not "caught up".
        if ownership.generation() > 0 && batch.len() < config.batch_max && !ownership.restoring() {
            // The input is drained: whatever was waiting when the partitions came is handled.
            health.set(Readiness::Ready);
        }
        if ownership.generation() != generation {
            // A rebalance happened while polling: the consumer rewinds to the committed
            // offsets of what it owns now, so these records will come again if still ours.
            // (A commit in flight meanwhile is safe: the restore of a partition waits until
            // its committed offsets are stable, i.e. until that commit is done.)
            tracing::debug!(
                dropped = batch.len(),
                "batch polled across a rebalance dropped"
            );
            continue;
        }
        let now = now_millis();
        for message in &batch {
            if let (Some(written), true) = (
                message.timestamp().to_millis(),
                message.topic() == topics.help_events,
            ) {
                times.input(written, now);
            }
        }
        let output = {
            let roster = roster
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let mut desk = ownership.desk();
            let mut output = decide(
                &mut desk, &roster, topics, partitions, &batch, &ownership, now, &counters,
            );
            output.events.extend(desk.on_tick(&roster, now));
            output.snapshots = latest_snapshots(&desk, &output.events);
            output.tombstones = desk.take_forgotten();
            telemetry::set_open_incidents(desk.open_count());
            output
        };
        drop(batch);
        if output.events.is_empty()
            && output.dead_letters.is_empty()
            && output.forwards.is_empty()
            && output.tombstones.is_empty()
            && output.offsets.is_empty()
        {
            // Nothing decided: once the commit in flight is done, the desk equals the
            // committed changelog.
            finish(in_flight.take(), &producers, &ownership, &counters, &times)?;
            ownership.checkpoint(false);
            last_checkpoint_turn = Instant::now();
            continue;
        }
        times.decided(polled.elapsed());
        let p = next_producer;
        next_producer = (next_producer + 1) % producers.len();
        let started = Instant::now();
        let opened = open(&producers[p], &consumer, topics, &output);
        // This batch may commit only once the one before it has: its decisions build on it.
        let previous = finish(in_flight.take(), &producers, &ownership, &counters, &times);
        // The batch's records are appended before the next batch's are sent (its deliveries
        // are awaited here, not on the commit's thread): the two go to the same partitions
        // from different producers, and readers must see them in the order decided.
        let opened = match (opened, previous) {
            (Ok(mut steps), Ok(())) => {
                let delivering = Instant::now();
                await_deliveries(&producers[p]).map(|()| {
                    steps.deliver = delivering.elapsed();
                    steps
                })
            }
            (Err(error), _) | (Ok(_), Err(error)) => Err(error),
        };
        let steps = match opened {
            Ok(steps) => steps,
            Err(error) => return Err(failed(&producers[p], error)),
        };
        // Alone, a producer commits on the pipeline's thread (a second thread to hand the
        // call to costs a wake-up, milliseconds when the cores are busy); with a second one,
        // the commit goes to a thread of its own and the next batch goes on meanwhile.
        in_flight = Some(InFlight::commit(
            producers.len() > 1,
            p,
            &producers[p],
            output,
            batch_len,
            started,
            steps,
            now,
        ));
        if producers.len() == 1 {
            finish(in_flight.take(), &producers, &ownership, &counters, &times)?;
            ownership.checkpoint(false);
        }
    }
    tracing::info!("router pipeline stopping");
    finish(in_flight.take(), &producers, &ownership, &counters, &times)?;
    // The last turn committed (or decided nothing): the desk is the committed changelog.
    ownership.checkpoint(true);
    Ok(())
}

/// What a commit call gave, and when it returned.
type Committed = (Result<Result<(), KafkaError>, StuckCall>, Instant);

/// A batch whose transaction is being committed on a thread of its own.
struct InFlight {
    producer: usize,
    commit: Commit,
    output: BatchOutput,
    batch_len: usize,
    /// When the transaction began, and the times of its steps before the commit.
    started: Instant,
    steps: telemetry::StepTimes,
    committing: Instant,
    /// The turn's clock, for the lifecycle metrics of its events.
    now: Millis,
}

enum Commit {
    Running(std::thread::JoinHandle<Committed>),
    /// Committed on the pipeline's own thread.
    Done(Committed),
}

impl InFlight {
    #[allow(clippy::too_many_arguments)]
    fn commit(
        apart: bool,
        producer: usize,
        committing: &Arc<RouterProducer>,
        output: BatchOutput,
        batch_len: usize,
        started: Instant,
        steps: telemetry::StepTimes,
        now: Millis,
    ) -> Self {
        let call = {
            let committing = Arc::clone(committing);
            move || {
                let result = bounded("commit_transaction", END_TXN_TIMEOUT, move || {
                    committing.commit_transaction(END_TXN_TIMEOUT)
                });
                (result, Instant::now())
            }
        };
        let committing = Instant::now();
        let thread = apart
            .then(|| {
                std::thread::Builder::new()
                    .name("router-commit".into())
                    .spawn(call.clone())
                    .ok()
            })
            .flatten();
        let commit = match thread {
            Some(thread) => Commit::Running(thread),
            // Alone, or no thread to be had: committed here.
            None => Commit::Done(call()),
        };
        Self {
            producer,
            commit,
            output,
            batch_len,
            started,
            steps,
            committing,
            now,
        }
    }
}

/// Waits for the commit in flight (if any). Once it is committed, the offsets it wrote are
/// handed to the checkpoints and its events counted; if it failed, it is aborted and the
/// error returned (the pipeline then starts afresh from Kafka).
fn finish(
    in_flight: Option<InFlight>,
    producers: &[Arc<RouterProducer>],
    ownership: &Ownership,
    counters: &telemetry::PipelineCounters,
    times: &telemetry::TurnTimes,
) -> Result<(), PipelineError> {
    let Some(f) = in_flight else {
        return Ok(());
    };
    let producer = &producers[f.producer];
    let waiting = Instant::now();
    let (outcome, done) = match f.commit {
        Commit::Running(thread) => thread.join().unwrap_or_else(|_| {
            let stuck = StuckCall {
                call: "commit_transaction",
                waited: Duration::ZERO,
            };
            (Err(stuck), Instant::now())
        }),
        Commit::Done(committed) => committed,
    };
    times.waited_for_commit(waiting.elapsed());
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(error)) => return Err(failed(producer, txn("commit")(error))),
        Err(stuck) => return Err(failed(producer, stuck.into())),
    }
    let mut steps = f.steps;
    steps.commit = done.saturating_duration_since(f.committing);
    times.transaction(&steps);
    metrics::counter!(telemetry::TRANSACTIONS, "result" => "committed").increment(1);
    metrics::histogram!(telemetry::TRANSACTION_SECONDS)
        .record(done.saturating_duration_since(f.started).as_secs_f64());
    metrics::histogram!(telemetry::BATCH_RECORDS).record(f.batch_len as f64);
    for dl in &f.output.dead_letters {
        metrics::counter!(telemetry::DEAD_LETTERS, "topic" => dl.origin_topic.clone(), "kind" => dl.kind).increment(1);
    }
    ownership.committed(producer.context().take());
    for o in &f.output.events {
        counters.record_incident_event(&o.event, f.now);
    }
    if done.saturating_duration_since(f.started) > SLOW_TRANSACTION {
        tracing::warn!(
            offsets_ms = steps.offsets.as_millis() as u64,
            deliver_ms = steps.deliver.as_millis() as u64,
            commit_ms = steps.commit.as_millis() as u64,
            "slow transaction"
        );
    }
    Ok(())
}

/// A transaction step failed: counts it, aborts the transaction (unless a call is still
/// stuck in the producer) and gives the error back.
fn failed(producer: &Arc<RouterProducer>, error: PipelineError) -> PipelineError {
    metrics::counter!(telemetry::TRANSACTIONS, "result" => "failed").increment(1);
    if matches!(error, PipelineError::Stuck(_)) {
        // A call is still blocked in this producer: an abort would wait on it too. The next
        // pipeline's producer fences this one, which aborts its transaction.
        tracing::error!(%error, "transaction stuck; abandoning the producer");
        return error;
    }
    tracing::error!(%error, "transaction failed; aborting");
    let aborting = Arc::clone(producer);
    match bounded("abort_transaction", TXN_TIMEOUT, move || {
        aborting.abort_transaction(TXN_TIMEOUT)
    }) {
        Ok(Ok(())) => {}
        Ok(Err(abort)) => tracing::error!(error = %abort, "abort failed"),
        Err(stuck) => tracing::error!(error = %stuck, "abort stuck; abandoning the producer"),
    }
    error
}

/// Waits up to `wait` for the first record, then takes what arrives within `linger` of it
/// (with no linger, what is already there), up to `max` records. A fatal consumer error
/// (e.g. another instance took this one's static membership) ends the pipeline: a consumer
/// in that state never delivers again.
///
/// The messages stay librdkafka's (borrowed, not copied into owned ones): a press is
/// decoded straight from the fetched buffer.
fn poll_batch(
    consumer: &BaseConsumer<RouterContext>,
    wait: Duration,
    max: usize,
    linger: Duration,
) -> Result<Vec<BorrowedMessage<'_>>, PipelineError> {
    let mut batch = Vec::new();
    let mut timeout = wait;
    let mut linger_until = None;
    while batch.len() < max {
        match consumer.poll(timeout) {
            None => break,
            Some(Ok(message)) => batch.push(message),
            Some(Err(error)) => {
                if let Some((code, reason)) = consumer.client().fatal_error() {
                    tracing::error!(%error, ?code, reason, "consumer failed fatally");
                    return Err(PipelineError::Consumer(
                        KafkaError::MessageConsumptionFatal(code),
                    ));
                }
                tracing::warn!(%error, "consumer error");
                break;
            }
        }
        let until = *linger_until.get_or_insert_with(|| Instant::now() + linger);
        timeout = until.saturating_duration_since(Instant::now());
    }
    Ok(batch)
}

/// Kafka's default partitioner puts a grid's records in `grid_partition(grid)`. A client with
/// another partitioner (librdkafka's default CRC32, or no key at all) may put a press
/// elsewhere; handled there, a repeat press could open a second incident on another router.
/// Such an event is re-published to its grid's partition in this batch's transaction (with
/// the grid as key), its offset committed here, and it is decided when it arrives there.
/// Commands likewise (by the grid they name): the incident lives in the desk of the router
/// that owns its grid's partition, and any other router would answer "not found".
fn forward(message: &impl Message, partition: i32, grid_id: &str) -> Forward {
    let origin = format!(
        "{}/{}/{}",
        message.topic(),
        message.partition(),
        message.offset()
    );
    let mut headers = OwnedHeaders::new();
    if let Some(original) = message.headers() {
        for h in original.iter() {
            headers = headers.insert(Header {
                key: h.key,
                value: h.value,
            });
        }
    }
    headers = headers.insert(Header {
        key: HEADER_FORWARDED_FROM,
        value: Some(origin.as_str()),
    });
    Forward {
        topic: message.topic().to_owned(),
        partition,
        key: grid_id.as_bytes().to_vec(),
        payload: message.payload().map(<[u8]>::to_vec),
        headers,
    }
}

#[allow(clippy::too_many_arguments)]
fn decide(
    desk: &mut Desk,
    roster: &Roster,
    topics: &Topics,
    partitions: usize,
    batch: &[impl Message],
    ownership: &Ownership,
    now: Millis,
    counters: &telemetry::PipelineCounters,
) -> BatchOutput {
    let mut out = BatchOutput::default();
    for message in batch {
        let (topic, partition) = (message.topic(), message.partition());
        if !ownership.owns(partition) {
            continue;
        }
        out.offsets
            .insert((topic.to_owned(), partition), message.offset() + 1);
        let help = topic == topics.help_events;
        counters.record_in(help);
        let result = if help {
            validate::decode_help_event(message.payload(), now).map(|event| {
                let home = grid_partition(event.grid_id(), partitions);
                if home != partition {
                    metrics::counter!(telemetry::HELP_EVENTS_FORWARDED).increment(1);
                    tracing::debug!(event_id = %event.event_id, from = partition, to = home, "help event forwarded to its grid's partition");
                    out.forwards.push(forward(message, home, event.grid_id()));
                    return Vec::new();
                }
                let (outcome, events) = desk.on_help_event(partition, &event, roster, now);
                counters.help_event(outcome);
                if outcome == HelpOutcome::Duplicate {
                    tracing::debug!(event_id = %event.event_id, "duplicate help event ignored");
                }
                events
            })
        } else {
            validate::decode_command(message.payload(), now).map(|command| {
                let home = grid_partition(&command.grid_id, partitions);
                if home != partition {
                    metrics::counter!(telemetry::COMMANDS_FORWARDED).increment(1);
                    tracing::debug!(command_id = %command.command_id, from = partition, to = home, "command forwarded to its grid's partition");
                    out.forwards.push(forward(message, home, &command.grid_id));
                    return Vec::new();
                }
                counters.command(&command.action);
                desk.on_command(partition, &command, roster, now).1
            })
        };
        match result {
            Ok(events) => out.events.extend(events),
            Err(invalid) => {
                tracing::warn!(topic, partition, offset = message.offset(), %invalid, "record dead-lettered");
                out.dead_letters.push(dead_letter(message, &invalid));
            }
        }
    }
    out
}

/// The incident-state record of every incident the batch changed, in first-change order:
/// the desk's stored snapshot, which is the incident as the batch's last event for it left
/// it. A rejection on a known incident writes state too: the incident remembers the rejected
/// command id (`repeated_command_ids`), so a second copy of the record is not answered again
/// after a restart.
fn latest_snapshots(desk: &Desk, events: &[Output]) -> Vec<Snapshot> {
    let mut seen: HashSet<&str> = HashSet::new();
    let mut snapshots = Vec::new();
    for o in events {
        let Some(incident) = o.event.incident.as_ref() else {
            continue;
        };
        if !seen.insert(incident.incident_id.as_str()) {
            continue;
        }
        let (partition, record) = match desk.snapshot(&incident.incident_id) {
            Some((partition, record)) => (partition, record.to_vec()),
            // Not in the desk any more (cannot happen within a batch today: closed incidents
            // stay for the retention time); the last event's copy is the same incident.
            None => match events
                .iter()
                .rev()
                .filter_map(|e| e.event.incident.as_ref().map(|i| (e.partition, i)))
                .find(|(_, i)| i.incident_id == incident.incident_id)
            {
                Some((partition, last)) => (partition, last.encode_to_vec()),
                None => continue,
            },
        };
        snapshots.push(Snapshot {
            partition,
            incident_id: incident.incident_id.clone(),
            record,
        });
    }
    snapshots
}

fn send(
    producer: &RouterProducer,
    mut record: BaseRecord<'_, [u8], [u8]>,
) -> Result<(), PipelineError> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((
                KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                back,
            )) => {
                record = back;
                producer.poll(Duration::from_millis(50));
            }
            Err((error, _)) => return Err(txn("produce")(error)),
        }
    }
}

/// Serves the batch's delivery reports before committing. The commit must wait for them,
/// and a `BaseProducer` only serves them when polled: left alone, librdkafka notices on a
/// timed wake-up about 100 ms later, which made every transaction cost ~100 ms (measured in
/// docs/performance.md). A failed delivery still fails the commit that follows.
fn await_deliveries(producer: &RouterProducer) -> Result<(), PipelineError> {
    let started = Instant::now();
    loop {
        // A zero-timeout poll serves what is there. (`poll` with a 1 ms timeout spins for the
        // whole millisecond: rdkafka rounds the remaining wait down to a non-blocking poll.)
        producer.poll(Duration::ZERO);
        if producer.in_flight_count() == 0 {
            return Ok(());
        }
        if started.elapsed() > TXN_TIMEOUT {
            return Err(txn("deliver")(KafkaError::Flush(
                rdkafka::types::RDKafkaErrorCode::MessageTimedOut,
            )));
        }
        std::thread::sleep(Duration::from_micros(500));
    }
}

/// Begins a transaction and sends the batch's output and input offsets in it; the caller
/// awaits the deliveries and commits.
fn open(
    producer: &Arc<RouterProducer>,
    consumer: &BaseConsumer<RouterContext>,
    topics: &Topics,
    output: &BatchOutput,
) -> Result<telemetry::StepTimes, PipelineError> {
    let started = Instant::now();
    producer.begin_transaction().map_err(txn("begin"))?;
    // librdkafka copies each payload on send, so one buffer serves every event.
    let mut payload = Vec::with_capacity(512);
    for o in &output.events {
        payload.clear();
        match &o.encoded_incident {
            Some(incident) => {
                helpgrid_proto::encode_incident_event(&o.event, incident, &mut payload)
            }
            // Encoding into a Vec cannot fail: it grows as needed.
            None => {
                let _ = o.event.encode(&mut payload);
            }
        }
        let record = BaseRecord::to(&topics.incident_events)
            .partition(o.partition)
            .key(o.key.as_bytes())
            .payload(payload.as_slice());
        send(producer, record)?;
    }
    for f in &output.forwards {
        let mut record = BaseRecord::<[u8], [u8]>::to(&f.topic)
            .partition(f.partition)
            .key(f.key.as_slice())
            .headers(f.headers.clone());
        if let Some(payload) = f.payload.as_deref() {
            record = record.payload(payload);
        }
        send(producer, record)?;
    }
    for snapshot in &output.snapshots {
        let record = BaseRecord::to(&topics.incident_state)
            .partition(snapshot.partition)
            .key(snapshot.incident_id.as_bytes())
            .payload(snapshot.record.as_slice());
        send(producer, record)?;
    }
    for (partition, incident_id) in &output.tombstones {
        let record = BaseRecord::<[u8], [u8]>::to(&topics.incident_state)
            .partition(*partition)
            .key(incident_id.as_bytes());
        send(producer, record)?;
    }
    for dl in &output.dead_letters {
        let mut record =
            BaseRecord::<[u8], [u8]>::to(&topics.dead_letters).headers(dl.headers.clone());
        if let Some(key) = dl.key.as_deref() {
            record = record.key(key);
        }
        if let Some(payload) = dl.payload.as_deref() {
            record = record.payload(payload);
        }
        send(producer, record)?;
    }
    // The offsets go before the deliveries are awaited: their two round trips (AddOffsetsToTxn
    // to the transaction coordinator, TxnOffsetCommit to the group coordinator) then overlap
    // the produce requests' linger and round trip instead of following them. The order
    // inside a transaction does not matter to what it commits: all of it or nothing.
    let begun = Instant::now();
    if !output.offsets.is_empty() {
        let mut offsets = TopicPartitionList::new();
        for ((topic, partition), next) in &output.offsets {
            offsets
                .add_partition_offset(topic, *partition, Offset::Offset(*next))
                .map_err(txn("offsets"))?;
        }
        let group = consumer
            .group_metadata()
            .ok_or(PipelineError::Transaction {
                step: "offsets",
                source: KafkaError::Canceled,
            })?;
        let sending = Arc::clone(producer);
        // Bounded by the group session timeout, not the timeout + grace (see `stuck_call`).
        stuck_call::bounded_offsets(move || {
            sending.send_offsets_to_transaction(&offsets, &group, END_TXN_TIMEOUT)
        })?
        .map_err(txn("offsets"))?;
    }
    Ok(telemetry::StepTimes {
        produce: begun.duration_since(started),
        offsets: begun.elapsed(),
        ..telemetry::StepTimes::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::types::RDKafkaErrorCode as Code;

    #[test]
    fn overlapping_producers_keep_the_first_two_ids_and_number_the_rest() {
        let kafka = helpgrid_common::kafka::KafkaArgs::new("b:9092", "t.");
        let mut config = RouterConfig::new(kafka, "t.router-0", crate::domain::Policy::default());
        config.overlap_commits = false;
        assert_eq!(producer_ids(&config), ["t.router-0"]);
        config.overlap_commits = true;
        assert_eq!(producer_ids(&config), ["t.router-0", "t.router-0.next"]);
        config.overlap_producers = 3;
        assert_eq!(
            producer_ids(&config),
            ["t.router-0", "t.router-0.next", "t.router-0.next2"]
        );
    }

    #[test]
    fn offsets_refused_after_a_group_rejoin_are_not_another_instance() {
        // As the rolling restart logged it.
        let rejoined = "Transaction error: Failed to commit offsets to transaction on broker \
            127.0.0.1:27147/3: t.help-events((null))[1](Broker: Static consumer fenced by other \
            consumer with same group.instance.id)";
        assert!(!fenced_by_another(
            Some("offsets"),
            Some(Code::FencedInstanceId),
            rejoined
        ));
        assert!(fenced_by_another(
            Some("commit"),
            Some(Code::ProducerFenced),
            "Transaction error: Producer fenced"
        ));
        assert!(fenced_by_another(
            None,
            Some(Code::FencedInstanceId),
            "Message consumption fatal error"
        ));
        assert!(!fenced_by_another(
            Some("commit"),
            Some(Code::RequestTimedOut),
            "request timed out"
        ));
    }
}
