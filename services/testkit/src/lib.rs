//! Support for integration tests that run against a real Kafka broker.
//!
//! - [`kafka_args`]: the broker from `HELPGRID_TEST_KAFKA` (tests fail loudly without it) and a
//!   unique topic prefix, so tests run side by side.
//! - [`reconcile`]: what went in against what came out (the fault suite's check).
//! - [`broker`]: a broker of a test's own, to stop and restart.
//! - [`browser`]: a real headless Chromium over WebDriver, for page tests.
//! - [`go`]: stock command-line tools built from the Go module proxy (grpcurl).
//! - [`process`]: services as child processes, to kill and restart.
//! - [`python`]: a Python environment with stock clients (grpcio, schema validators).
//! - [`records`]: builders for help events and roster records as devices and offices send them.
//! - [`Publisher`]: writes raw or protobuf records.
//! - [`IncidentLog`]: follows the incident-events topic and waits for what a test expects.

pub mod broker;
pub mod browser;
pub mod go;
pub mod process;
pub mod python;
pub mod reconcile;
pub mod records;

use helpgrid_common::kafka::KafkaArgs;
use helpgrid_common::reader::{self, Feed};
use helpgrid_proto::pb::IncidentEvent;
use prost::Message;
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How long a test waits for an expected event before it fails.
pub const WAIT: Duration = Duration::from_secs(30);

/// Settings for a test: the broker from `HELPGRID_TEST_KAFKA`, a fresh topic prefix, and
/// 3 partitions (enough to exercise partitioning, quick to create).
pub fn kafka_args() -> KafkaArgs {
    let brokers = std::env::var("HELPGRID_TEST_KAFKA").unwrap_or_else(|_| {
        panic!(
            "HELPGRID_TEST_KAFKA is not set: integration tests need a real Kafka broker. \
             Run scripts/test (it starts one), or `deploy/local/kafka.sh start` and export \
             HELPGRID_TEST_KAFKA=$(deploy/local/kafka.sh bootstrap)"
        )
    });
    let id = uuid::Uuid::new_v4().simple().to_string();
    let mut args = KafkaArgs::new(brokers, format!("test-{}.", &id[..12]));
    args.topic_partitions = 3;
    args
}

/// An idempotent producer for test input.
pub struct Publisher {
    producer: FutureProducer,
}

impl Publisher {
    pub fn new(args: &KafkaArgs) -> Self {
        let producer = args
            .producer_config("helpgrid-test")
            .create()
            .expect("test producer");
        Self { producer }
    }

    pub async fn send_raw(&self, topic: &str, key: &str, payload: &[u8]) {
        self.send_with_headers(topic, key, payload, OwnedHeaders::new())
            .await;
    }

    pub async fn send_with_headers(
        &self,
        topic: &str,
        key: &str,
        payload: &[u8],
        headers: OwnedHeaders,
    ) {
        let record = FutureRecord::to(topic)
            .key(key)
            .payload(payload)
            .headers(headers);
        self.producer
            .send(record, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| e)
            .expect("test record delivered");
    }

    pub async fn send<M: Message>(&self, topic: &str, key: &str, message: &M) {
        self.send_raw(topic, key, &message.encode_to_vec()).await;
    }
}

/// Everything written to an incident-events topic, as it arrives.
pub struct IncidentLog {
    feed: mpsc::Receiver<Feed>,
    /// (partition, offset) of each event in `events`.
    pub positions: Vec<(i32, i64)>,
    /// When each event arrived here.
    pub arrivals: Vec<std::time::Instant>,
    pub events: Vec<IncidentEvent>,
    _stop: tokio_util::sync::DropGuard,
}

impl IncidentLog {
    pub async fn follow(args: &KafkaArgs, topic: &str) -> Self {
        let cancel = CancellationToken::new();
        let feed = reader::follow(args, "helpgrid-test-log", topic, cancel.clone())
            .await
            .expect("follow incident events");
        Self {
            feed,
            positions: Vec::new(),
            arrivals: Vec::new(),
            events: Vec::new(),
            _stop: cancel.drop_guard(),
        }
    }

    fn push(&mut self, item: Feed) {
        if let Feed::Record(record) = item {
            let event = IncidentEvent::decode(record.payload.as_deref().unwrap_or_default())
                .expect("incident events are valid protobuf");
            self.positions.push((record.partition, record.offset));
            self.arrivals.push(std::time::Instant::now());
            self.events.push(event);
        }
    }

    /// Reads until `done` holds for the events seen so far; panics after `WAIT`.
    pub async fn wait_until(
        &mut self,
        what: &str,
        done: impl Fn(&[IncidentEvent]) -> bool,
    ) -> Vec<IncidentEvent> {
        self.wait_until_for(what, WAIT, done).await
    }

    /// As `wait_until`, with an explicit time limit (for long fault runs). Checks `done`
    /// after each burst of records, not after each record.
    pub async fn wait_until_for(
        &mut self,
        what: &str,
        limit: Duration,
        done: impl Fn(&[IncidentEvent]) -> bool,
    ) -> Vec<IncidentEvent> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if done(&self.events) {
                return self.events.clone();
            }
            let item = tokio::time::timeout_at(deadline, self.feed.recv())
                .await
                .unwrap_or_else(|_| {
                    let tail = summary(&self.events[self.events.len().saturating_sub(40)..]);
                    panic!(
                        "timed out waiting for {what}; saw {} events, the last ones: {tail:#?}",
                        self.events.len()
                    )
                });
            match item {
                Some(item) => self.push(item),
                None => panic!("incident event feed ended"),
            }
            while let Ok(item) = self.feed.try_recv() {
                self.push(item);
            }
        }
    }

    /// Reads whatever arrives during `duration`.
    pub async fn read_for(&mut self, duration: Duration) {
        let deadline = tokio::time::Instant::now() + duration;
        while let Ok(Some(item)) = tokio::time::timeout_at(deadline, self.feed.recv()).await {
            self.push(item);
        }
    }

    /// Keeps reading for `quiet` and returns everything seen: for asserting that nothing
    /// more happens (e.g. no second incident).
    pub async fn settle(&mut self, quiet: Duration) -> Vec<IncidentEvent> {
        while let Ok(Some(item)) = tokio::time::timeout(quiet, self.feed.recv()).await {
            self.push(item);
        }
        self.events.clone()
    }
}

/// A one-line-per-event view for failure messages.
pub fn summary(events: &[IncidentEvent]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            let id = e.incident.as_ref().map_or("-", |i| i.incident_id.as_str());
            format!("{id} {}", change_name(e))
        })
        .collect()
}

pub fn change_name(event: &IncidentEvent) -> &'static str {
    event.change.as_ref().map_or("none", |c| c.name())
}

/// Events of one incident, in order.
pub fn of_incident<'a>(events: &'a [IncidentEvent], incident_id: &str) -> Vec<&'a IncidentEvent> {
    events
        .iter()
        .filter(|e| {
            e.incident
                .as_ref()
                .is_some_and(|i| i.incident_id == incident_id)
        })
        .collect()
}
