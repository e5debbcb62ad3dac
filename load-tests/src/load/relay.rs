//! The bare relay: consume from one topic and produce every record unchanged to another,
//! with no logic at all. It is the ceiling for any consume-transform-produce service on the
//! same broker and client library, so HelpGrid's router is measured against it.
//!
//! It is built like the router's pipeline on purpose (same client settings from
//! `KafkaArgs`, same batching: wait for the first record, then take what is already there
//! up to `batch_max`), so the difference between the two is HelpGrid's own work.
//! - at-least-once: produce the batch, wait for every delivery, then commit the offsets.
//! - transactional: produce the batch and its offsets in one transaction (exactly once).
//!
//! Before committing (or flushing) it polls the producer until every record of the batch is
//! delivered: with rdkafka's event-API `BaseProducer`, librdkafka's own flush inside
//! `commit_transaction` otherwise waits ~100 ms per batch.
//!
//! Transactional, it sends the batch's offsets while the produce requests are in flight, as
//! the router does (AddOffsetsToTxn and TxnOffsetCommit overlap the produce round trip).
//! Until 2026-11-30 it sent them only after every delivery, three round trips in a row
//! more than the router: `--offsets-after-deliveries` keeps that order for comparison.
//! Each transaction's steps are timed; a slow one is logged with them.

use helpgrid_common::kafka::KafkaArgs;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const TXN_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_IDLE_POLL: Duration = Duration::from_millis(100);
/// A transaction slower than this is logged with the time of each step.
const SLOW_TRANSACTION: Duration = Duration::from_millis(50);

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Guarantee {
    AtLeastOnce,
    Transactional,
}

#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "helpgrid-relay",
    version,
    about = "A bare Kafka relay (consume -> produce, no logic): the ceiling HelpGrid's router is compared with"
)]
pub struct RelayArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Topic to consume.
    #[arg(long)]
    pub input: String,
    /// Topic to produce to.
    #[arg(long)]
    pub output: String,
    /// Delivery guarantee: transactional (as the router) or at-least-once.
    #[arg(long, value_enum, default_value_t = Guarantee::Transactional)]
    pub guarantee: Guarantee,
    /// Consumer group id.
    #[arg(long, default_value = "helpgrid-relay")]
    pub group_id: String,
    /// Transactional id (transactional guarantee only).
    #[arg(long, default_value = "helpgrid-relay-0")]
    pub transactional_id: String,
    /// Most records per batch (per transaction): the router's `--batch-max` default, so both
    /// batch alike (set both when comparing another size).
    #[arg(long, env = "HELPGRID_RELAY_BATCH_MAX", default_value_t = 500)]
    pub batch_max: usize,
    /// Leave the delivery reports to librdkafka's flush inside commit (as the router does
    /// today) instead of polling them in before committing. Measured: every commit then
    /// waits ~100 ms, because the event-API producer's flush only sees a delivery once the
    /// application polls it; see docs/performance.md.
    #[arg(long, env = "HELPGRID_RELAY_LEAVE_DELIVERIES_TO_FLUSH")]
    pub leave_deliveries_to_flush: bool,
    /// Send the offsets to the transaction only once every record is delivered (the relay's
    /// order before 2026-11-30) instead of while the produce requests are in flight.
    #[arg(long, env = "HELPGRID_RELAY_OFFSETS_AFTER_DELIVERIES")]
    pub offsets_after_deliveries: bool,
}

/// Sums of each step's time over the run (the means are logged at the end).
#[derive(Default)]
struct StepTimes {
    batches: u64,
    slow: u64,
    produce: Duration,
    offsets: Duration,
    deliver: Duration,
    commit: Duration,
    slowest: Duration,
}

/// One transaction's (or at-least-once batch's) steps.
#[derive(Default)]
struct Steps {
    produce: Duration,
    offsets: Duration,
    deliver: Duration,
    commit: Duration,
}

impl StepTimes {
    fn add(&mut self, s: &Steps, records: usize) {
        let total = s.produce + s.offsets + s.deliver + s.commit;
        self.batches += 1;
        self.produce += s.produce;
        self.offsets += s.offsets;
        self.deliver += s.deliver;
        self.commit += s.commit;
        self.slowest = self.slowest.max(total);
        if total > SLOW_TRANSACTION {
            self.slow += 1;
            tracing::warn!(
                records,
                total_ms = ms(total),
                produce_ms = ms(s.produce),
                offsets_ms = ms(s.offsets),
                deliver_ms = ms(s.deliver),
                commit_ms = ms(s.commit),
                "slow transaction"
            );
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Serves delivery reports until every record sent is delivered (or the transaction
/// timeout passes). A zero-timeout poll and a short sleep, as the router does: `poll` with
/// a 1 ms timeout spins for the whole millisecond.
fn await_deliveries(producer: &BaseProducer) {
    let deadline = Instant::now() + TXN_TIMEOUT;
    loop {
        producer.poll(Duration::ZERO);
        if producer.in_flight_count() == 0 || Instant::now() >= deadline {
            return;
        }
        std::thread::sleep(Duration::from_micros(500));
    }
}

#[derive(Debug, thiserror::Error)]
#[error("relay failed during {step}: {source}")]
pub struct RelayError {
    step: &'static str,
    source: KafkaError,
}

fn at(step: &'static str) -> impl FnOnce(KafkaError) -> RelayError {
    move |source| RelayError { step, source }
}

/// Relays until `cancel` fires. Blocking: run it on a thread of its own.
pub fn run(args: &RelayArgs, cancel: &CancellationToken) -> Result<u64, RelayError> {
    let transactional = args.guarantee == Guarantee::Transactional;
    let producer_config = if transactional {
        args.kafka
            .transactional_producer_config("helpgrid-relay", &args.transactional_id)
    } else {
        args.kafka.producer_config("helpgrid-relay")
    };
    let producer: BaseProducer = producer_config.create().map_err(at("create producer"))?;
    if transactional {
        producer
            .init_transactions(TXN_TIMEOUT)
            .map_err(at("init transactions"))?;
    }
    let consumer: BaseConsumer = args
        .kafka
        .group_consumer_config("helpgrid-relay", &args.group_id)
        .create()
        .map_err(at("create consumer"))?;
    consumer
        .subscribe(&[&args.input])
        .map_err(at("subscribe"))?;
    tracing::info!(guarantee = ?args.guarantee, input = %args.input, output = %args.output, "relay started");
    let mut relayed = 0u64;
    // Where a batch's time goes (produce, offsets, deliver, commit or flush), logged at the end.
    let mut totals = StepTimes::default();
    while !cancel.is_cancelled() {
        let mut batch = Vec::new();
        let mut timeout = MAX_IDLE_POLL;
        while batch.len() < args.batch_max {
            match consumer.poll(timeout) {
                None => break,
                Some(Ok(m)) => batch.push(m.detach()),
                Some(Err(error)) => {
                    tracing::warn!(%error, "consumer error");
                    break;
                }
            }
            timeout = Duration::ZERO;
        }
        producer.poll(Duration::ZERO);
        if batch.is_empty() {
            continue;
        }
        let mut steps = Steps::default();
        let started = Instant::now();
        let mut offsets: BTreeMap<(String, i32), i64> = BTreeMap::new();
        if transactional {
            producer.begin_transaction().map_err(at("begin"))?;
        }
        for m in &batch {
            offsets.insert((m.topic().to_owned(), m.partition()), m.offset() + 1);
            let mut record = BaseRecord::<[u8], [u8]>::to(&args.output).partition(m.partition());
            if let Some(k) = m.key() {
                record = record.key(k);
            }
            if let Some(p) = m.payload() {
                record = record.payload(p);
            }
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        record = back;
                        producer.poll(Duration::from_millis(10));
                    }
                    Err((error, _)) => return Err(at("produce")(error)),
                }
            }
        }
        steps.produce = started.elapsed();
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), next) in &offsets {
            tpl.add_partition_offset(topic, *partition, Offset::Offset(*next))
                .map_err(at("offsets"))?;
        }
        let send_offsets = |steps: &mut Steps| -> Result<(), RelayError> {
            let sending = Instant::now();
            let group = consumer.group_metadata().ok_or(RelayError {
                step: "group metadata",
                source: KafkaError::Canceled,
            })?;
            producer
                .send_offsets_to_transaction(&tpl, &group, TXN_TIMEOUT)
                .map_err(at("offsets"))?;
            steps.offsets = sending.elapsed();
            Ok(())
        };
        if transactional && !args.offsets_after_deliveries {
            send_offsets(&mut steps)?;
        }
        if !args.leave_deliveries_to_flush {
            let delivering = Instant::now();
            await_deliveries(&producer);
            steps.deliver = delivering.elapsed();
        }
        if transactional {
            if args.offsets_after_deliveries {
                send_offsets(&mut steps)?;
            }
            let committing = Instant::now();
            producer
                .commit_transaction(TXN_TIMEOUT)
                .map_err(at("commit"))?;
            steps.commit = committing.elapsed();
        } else {
            let flushing = Instant::now();
            producer.flush(TXN_TIMEOUT).map_err(at("flush"))?;
            steps.commit = flushing.elapsed();
            consumer
                .commit(&tpl, CommitMode::Async)
                .map_err(at("commit offsets"))?;
        }
        totals.add(&steps, batch.len());
        relayed += batch.len() as u64;
    }
    let per_batch_ms = |d: Duration| ms(d) / totals.batches.max(1) as f64;
    tracing::info!(
        relayed,
        batches = totals.batches,
        slow_batches = totals.slow,
        slowest_ms = ms(totals.slowest),
        produce_ms_per_batch = per_batch_ms(totals.produce),
        offsets_ms_per_batch = per_batch_ms(totals.offsets),
        deliver_ms_per_batch = per_batch_ms(totals.deliver),
        commit_or_flush_ms_per_batch = per_batch_ms(totals.commit),
        "relay stopping"
    );
    Ok(relayed)
}
