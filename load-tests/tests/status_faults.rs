//! The status service under faults, with the router running: a restart while a Watch client
//! is connected, and a Kafka outage while clients keep calling.
//! Needs HELPGRID_TEST_KAFKA (scripts/test sets it).

mod support;

use helpgrid_auth::Role;
use helpgrid_common::topics::Topics;
use helpgrid_proto::pb::{
    AcknowledgeRequest, GetIncidentRequest, IncidentEvent, PressKind, ResponderRole,
    WatchIncidentsRequest,
};
use helpgrid_testkit::broker::OwnBroker;
use helpgrid_testkit::reconcile::accounted_event_id;
use helpgrid_testkit::records::{press, responder};
use helpgrid_testkit::{IncidentLog, Publisher, WAIT, kafka_args};
use std::collections::HashSet;
use std::time::{Duration, Instant};
use support::{Stack, press_and_wait_assigned};
use tonic::Code;

fn event_id(event: &IncidentEvent) -> String {
    event
        .envelope
        .as_ref()
        .map(|e| e.event_id.clone())
        .unwrap_or_default()
}

async fn publish_presses(stack: &Stack, from: usize, n: usize) -> Vec<String> {
    let topics = Topics::with_prefix(&stack.args.topic_prefix);
    let publisher = Publisher::new(&stack.args);
    let mut ids = Vec::new();
    for i in from..from + n {
        let grid = format!("g{}", i % 4);
        let p = press(&format!("h-{i}"), &grid, PressKind::Help);
        ids.push(
            p.envelope
                .as_ref()
                .map(|e| e.event_id.clone())
                .unwrap_or_default(),
        );
        publisher.send(&topics.help_events, &grid, &p).await;
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_resumed_after_a_status_restart_gets_every_update_exactly_once() {
    let roster = (0..4)
        .map(|g| {
            responder(
                &format!("w-{g}"),
                ResponderRole::GridWorker,
                &[&format!("g{g}")],
                None,
            )
        })
        .collect();
    let mut stack = Stack::start(roster).await;
    let topics = Topics::with_prefix(&stack.args.topic_prefix);
    let mut log = IncidentLog::follow(&stack.args, &topics.incident_events).await;

    // First connection: watch from now, take 20 updates, remember the last cursor.
    let mut client = stack.incidents().await;
    let mut first = client
        // Compact openings: one update per incident event on Kafka, so the updates compare
        // one to one with the log (the expanded shape across a restart is
        // services/status/tests/openings.rs's).
        .watch_incidents(WatchIncidentsRequest {
            compact_openings: true,
            ..Default::default()
        })
        .await
        .expect("watch")
        .into_inner();
    let mut pressed = publish_presses(&stack, 0, 20).await;
    let mut delivered: Vec<String> = Vec::new();
    let mut cursor = String::new();
    while delivered.len() < 20 {
        let update = tokio::time::timeout(WAIT, first.message())
            .await
            .expect("update in time")
            .expect("stream")
            .expect("open");
        cursor = update.cursor.clone();
        delivered.push(update.event.as_ref().map(event_id).unwrap_or_default());
    }
    drop(first);

    // The status service goes away; the city does not stop pressing meanwhile.
    stack.stop_status().await;
    pressed.extend(publish_presses(&stack, 20, 20).await);
    let wanted: HashSet<String> = pressed.iter().cloned().collect();
    log.wait_until(
        "every press routed while the status service was down",
        |events| {
            events
                .iter()
                .filter_map(accounted_event_id)
                .filter(|id| wanted.contains(id))
                .count()
                == wanted.len()
        },
    )
    .await;

    // A fresh status service; the client resumes from its cursor. A sentinel press, made
    // after everything else, marks the end: once its events arrive nothing else is due.
    stack.start_status_again().await;
    let mut client = stack.incidents().await;
    let mut second = client
        .watch_incidents(WatchIncidentsRequest {
            cursor: cursor.clone(),
            compact_openings: true,
            ..Default::default()
        })
        .await
        .expect("resume")
        .into_inner();
    let sentinel = publish_presses(&stack, 40, 1).await.remove(0);
    let all = log
        .wait_until("the sentinel routed", |events| {
            events
                .iter()
                .filter(|e| {
                    e.incident
                        .as_ref()
                        .is_some_and(|i| i.incident_id == format!("inc-{sentinel}"))
                })
                .any(|e| !e.assignments().is_empty())
        })
        .await;
    let last_expected = all.last().map(event_id).unwrap_or_default();
    loop {
        let update = tokio::time::timeout(WAIT, second.message())
            .await
            .expect("update in time")
            .expect("stream")
            .expect("open");
        let id = update.event.as_ref().map(event_id).unwrap_or_default();
        delivered.push(id.clone());
        if id == last_expected {
            break;
        }
    }
    let everything: Vec<String> = all.iter().map(event_id).collect();
    let unique: HashSet<&String> = delivered.iter().collect();
    assert_eq!(
        unique.len(),
        delivered.len(),
        "an update was delivered twice"
    );
    assert_eq!(
        unique,
        everything.iter().collect::<HashSet<_>>(),
        "updates missed or invented across the restart"
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "full fault suite: scripts/faults (stops and starts a broker of its own)"]
async fn grpc_calls_during_a_kafka_outage_fail_with_unavailable_then_work_again() {
    let (broker, bootstrap) = OwnBroker::start();
    let mut args = kafka_args();
    args.brokers = bootstrap;
    let roster = vec![responder("w-1", ResponderRole::GridWorker, &["g1"], None)];
    let stack = Stack::start_on(args, roster, Duration::from_secs(3)).await;
    let incident = press_and_wait_assigned(&stack, "h-1", "g1").await;
    broker.run("stop");

    let mut worker = stack.incidents_as("w-1", Role::Responder, &["g1"]).await;
    let ack = AcknowledgeRequest {
        incident_id: incident.incident_id.clone(),
        responder_id: "w-1".into(),
        request_id: "outage-ack-1".into(),
    };
    let started = Instant::now();
    let refused = tokio::time::timeout(Duration::from_secs(30), worker.acknowledge(ack.clone()))
        .await
        .expect("the call answers rather than hangs")
        .expect_err("Kafka is down");
    let answered_after = started.elapsed();
    assert_eq!(refused.code(), Code::Unavailable, "{refused}");
    assert!(refused.message().contains("Kafka"), "{}", refused.message());
    // Reads are served from the read model meanwhile.
    let mut console = stack.incidents().await;
    let seen = console
        .get_incident(GetIncidentRequest {
            incident_id: incident.incident_id.clone(),
        })
        .await
        .expect("reads work during the outage");
    assert_eq!(seen.get_ref().incident_id, incident.incident_id);

    broker.run("start");
    let back = Instant::now();
    // Retry as a client should: the same request, the same request id. Whether or not an
    // earlier attempt was applied, the retry ends in OK (a retry of an applied command is
    // answered with success and changes nothing).
    loop {
        match worker.acknowledge(ack.clone()).await {
            Ok(_) => break,
            Err(status) if status.code() == Code::Unavailable => {
                assert!(
                    back.elapsed() < Duration::from_secs(120),
                    "still failing 2 min after Kafka returned: {status}"
                );
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(status) => panic!("unexpected answer after the outage: {status}"),
        }
    }
    let acked = console
        .get_incident(GetIncidentRequest {
            incident_id: incident.incident_id.clone(),
        })
        .await
        .expect("get")
        .into_inner();
    eprintln!(
        "[kafka outage] Acknowledge answered UNAVAILABLE after {answered_after:?}: {}; accepted {:?} after Kafka was back",
        refused.message(),
        back.elapsed()
    );
    assert_eq!(acked.assignments[0].acknowledged_by, "w-1");
    stack.stop().await;
}
