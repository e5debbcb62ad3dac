//! The router's batch linger (`--batch-linger-ms`) against a real Kafka broker. Whether two
//! presses were committed in one transaction shows in the offsets of their incident events:
//! a transaction's records on a partition are contiguous, and every commit writes a marker
//! that takes the next offset, so events of two transactions are never adjacent.
//! Needs HELPGRID_TEST_KAFKA (scripts/test sets it).

use helpgrid_common::topics::{Topics, ensure_topics};
use helpgrid_proto::pb::{IncidentEvent, PressKind, ResponderRole};
use helpgrid_router::config::RouterConfig;
use helpgrid_router::domain::Policy;
use helpgrid_testkit::records::{press, responder, roster_record};
use helpgrid_testkit::{IncidentLog, Publisher, WAIT, kafka_args};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

mod support;

const GRID: &str = "g1";

fn household_of(event: &IncidentEvent) -> &str {
    event
        .incident
        .as_ref()
        .map_or("", |i| i.household_id.as_str())
}

/// Offsets of the incident events of `household`, once its press is assigned.
async fn assigned_offsets(log: &mut IncidentLog, household: &str) -> Vec<i64> {
    let assigned = |events: &[IncidentEvent]| {
        events
            .iter()
            .any(|e| household_of(e) == household && !e.assignments().is_empty())
    };
    log.wait_until(&format!("{household} assigned"), assigned)
        .await;
    log.events
        .iter()
        .zip(&log.positions)
        .filter(|(e, _)| household_of(e) == household)
        .map(|(_, (_, offset))| *offset)
        .collect()
}

/// Runs a router with `linger`, lets it handle a first press (so it is up and caught up),
/// then sends two presses of one grid `gap` apart. Returns the offsets of each one's events.
async fn two_presses(linger: Duration, gap: Duration) -> (Vec<i64>, Vec<i64>) {
    let args = kafka_args();
    let topics = Topics::with_prefix(&args.topic_prefix);
    ensure_topics(&args, &topics).await.expect("topics");
    let publisher = Publisher::new(&args);
    let worker = responder("w-g1", ResponderRole::GridWorker, &[GRID], None);
    publisher
        .send(&topics.roster, "w-g1", &roster_record(worker))
        .await;
    let mut log = IncidentLog::follow(&args, &topics.incident_events).await;
    let config = RouterConfig {
        batch_linger: linger,
        ..support::config(&args, "router-batching", Policy::default())
    };
    let cancel = CancellationToken::new();
    let stop = cancel.clone();
    let router = tokio::spawn(helpgrid_router::run(config, async move {
        stop.cancelled().await;
    }));
    let send = |household: &'static str| {
        let publisher = &publisher;
        let topic = topics.help_events.clone();
        async move {
            publisher
                .send(&topic, GRID, &press(household, GRID, PressKind::Help))
                .await;
        }
    };
    send("hh-warm").await;
    assigned_offsets(&mut log, "hh-warm").await;
    send("hh-a").await;
    tokio::time::sleep(gap).await;
    send("hh-b").await;
    let a = assigned_offsets(&mut log, "hh-a").await;
    let b = assigned_offsets(&mut log, "hh-b").await;
    cancel.cancel();
    tokio::time::timeout(WAIT, router)
        .await
        .expect("router stops in time")
        .expect("router task")
        .expect("router ran without error");
    (a, b)
}

fn adjacent(a: &[i64], b: &[i64]) -> bool {
    a.iter().max().map(|last| last + 1) == b.iter().min().copied()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presses_within_the_linger_share_one_transaction() {
    let (a, b) = two_presses(Duration::from_secs(3), Duration::from_millis(300)).await;
    assert!(
        adjacent(&a, &b),
        "with a 3 s linger a press 300 ms after another joins its transaction: \
         events at {a:?} and {b:?} should be adjacent (no commit marker between)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_linger_a_later_press_gets_a_transaction_of_its_own() {
    let (a, b) = two_presses(Duration::ZERO, Duration::from_millis(500)).await;
    assert!(
        !adjacent(&a, &b),
        "without a linger a press 500 ms after another is committed apart: \
         events at {a:?} and {b:?} should have a commit marker between them"
    );
}
