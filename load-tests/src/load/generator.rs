//! Sends the planned events to Kafka, open loop: each event goes out at its scheduled time
//! whether or not earlier ones were handled, so a slow pipeline shows as latency and backlog
//! instead of quietly slowing the generator down. The moment each record is handed to the
//! producer is written to the [`SendLog`]; every latency is measured from there.

use crate::city::City;
use crate::load::plan::Plan;
use helpgrid_common::time::now_millis;
use prost::Message as _;
use rdkafka::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, DeliveryResult, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Message};
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// When each event was handed to the producer: microseconds since `origin`, 0 = not sent.
pub struct SendLog {
    pub origin: Instant,
    sent_us: Vec<AtomicU64>,
}

impl SendLog {
    pub fn new(origin: Instant, events: usize) -> Self {
        Self {
            origin,
            sent_us: (0..events).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Microseconds since the origin, never 0 (0 means "not sent").
    pub fn now_us(&self) -> u64 {
        (self.origin.elapsed().as_micros() as u64).max(1)
    }

    pub fn mark(&self, seq: u64) {
        if let Some(slot) = self.sent_us.get(seq as usize) {
            slot.store(self.now_us(), Ordering::Relaxed);
        }
    }

    pub fn sent_at(&self, seq: u64) -> Option<u64> {
        self.sent_us
            .get(seq as usize)
            .map(|s| s.load(Ordering::Relaxed))
            .filter(|us| *us > 0)
    }
}

/// Delivery reports, counted.
#[derive(Default)]
pub struct Deliveries {
    pub delivered: AtomicU64,
    pub failed: AtomicU64,
}

pub struct CountDeliveries(pub Arc<Deliveries>);

impl ClientContext for CountDeliveries {}

impl ProducerContext for CountDeliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.0.delivered.fetch_add(1, Ordering::Relaxed),
            Err((error, message)) => {
                tracing::warn!(%error, partition = message.partition(), "load event not delivered");
                self.0.failed.fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

/// What one phase of sending achieved.
#[derive(Debug, Clone, Default)]
pub struct Sent {
    pub events: u64,
    pub first_us: u64,
    pub last_us: u64,
    /// The furthest the generator fell behind its schedule (it cannot keep up above this).
    pub max_behind_us: u64,
}

pub struct Generator {
    /// The shortest sleep when ahead of the schedule (see [`Generator::with_tick`]).
    tick: Duration,
    producer: ThreadedProducer<CountDeliveries>,
    pub deliveries: Arc<Deliveries>,
    topic: String,
    plan: Arc<Plan>,
    city: Arc<City>,
    log: Arc<SendLog>,
}

impl Generator {
    pub fn new(
        config: &ClientConfig,
        topic: String,
        plan: Arc<Plan>,
        city: Arc<City>,
        log: Arc<SendLog>,
    ) -> Result<Self, KafkaError> {
        let deliveries = Arc::new(Deliveries::default());
        let producer = config.create_with_context(CountDeliveries(Arc::clone(&deliveries)))?;
        Ok(Self {
            tick: Duration::ZERO,
            producer,
            deliveries,
            topic,
            plan,
            city,
            log,
        })
    }

    /// When ahead of the schedule, sleep at least `tick`, then send every event that has
    /// come due. In the city flood (13,600 presses/s) one sleep per event is a wake-up every
    /// 74 µs, and the sleeps and wake-ups cost the load tool more CPU than the sending; with
    /// a 1 ms tick it wakes ~1,000 times a second and sends ~14 presses each time. A press
    /// then leaves up to a tick after its planned time; every latency is measured from when
    /// it was handed to the producer, so no figure hides that. Zero: one sleep per event.
    pub fn with_tick(mut self, tick: Duration) -> Self {
        self.tick = tick;
        self
    }

    /// Encoded size of the first planned event: the record size the baselines use.
    pub fn record_size(&self) -> usize {
        self.plan
            .help_event(&self.city, 0, now_millis())
            .map_or(0, |(_, e)| e.encoded_len())
    }

    /// Sends `range` at `rate` events per second (None: as fast as the producer takes them).
    pub fn send(&self, range: Range<u64>, rate: Option<f64>, stop: &AtomicBool) -> Sent {
        let started = Instant::now();
        let mut sent = Sent {
            first_us: self.log.now_us(),
            ..Sent::default()
        };
        for (i, seq) in range.enumerate() {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            if let Some(rate) = rate.filter(|r| *r > 0.0) {
                let due = Duration::from_secs_f64(i as f64 / rate);
                let elapsed = started.elapsed();
                if due > elapsed {
                    std::thread::sleep((due - elapsed).max(self.tick));
                } else {
                    sent.max_behind_us = sent.max_behind_us.max((elapsed - due).as_micros() as u64);
                }
            }
            let Some((key, event)) = self.plan.help_event(&self.city, seq, now_millis()) else {
                continue;
            };
            let payload = event.encode_to_vec();
            let mut record = BaseRecord::to(&self.topic)
                .key(key.as_bytes())
                .payload(payload.as_slice());
            self.log.mark(seq);
            loop {
                match self.producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        record = back;
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err((error, _)) => {
                        tracing::warn!(%error, seq, "load event refused by the producer");
                        self.deliveries.failed.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                }
            }
            sent.events += 1;
        }
        sent.last_us = self.log.now_us();
        sent
    }

    /// Waits until every record sent so far is delivered (or `timeout` passes).
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        use rdkafka::producer::Producer;
        self.producer.flush(timeout)
    }
}
