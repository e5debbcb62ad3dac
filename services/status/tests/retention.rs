//! Open incidents outlive incident-events' retention: on a broker of the test's own (its
//! retention check runs every second), incident-events gets a retention of seconds while the
//! real router and the real status service run; once the segment with an open incident's
//! events is deleted both restart, restoring from incident-state → the open incident is intact
//! in the status service, its acknowledgement deadline still fires, a repeat press still
//! attaches, a Watch resumes from its last cursor without a gap or a repeat, and a cursor
//! whose next events are gone is refused with OUT_OF_RANGE.
#![allow(clippy::unwrap_used)]

mod support;

use helpgrid_common::kafka::KafkaArgs;
use helpgrid_proto::pb::incident_event::Change;
use helpgrid_proto::pb::{
    GetIncidentRequest, IncidentState, IncidentUpdate, ListIncidentsRequest, PressKind,
    ResponderRole, UpsertResponderRequest, WatchIncidentsRequest,
};
use helpgrid_router::config::RouterConfig;
use helpgrid_router::domain::Policy;
use helpgrid_testkit::Publisher;
use helpgrid_testkit::broker::OwnBroker;
use helpgrid_testkit::records::{press, responder};
use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use std::time::Duration;
use support::{TestKafka, next_update, within};
use tokio_util::sync::CancellationToken;
use tonic::Streaming;

const GRID: &str = "grid-0001";
/// Long enough for h1 to stay assigned until the router stops (~5 s after the press); it
/// falls due while the router is down or soon after it is back.
const ACK_DEADLINE_MS: i64 = 12_000;

fn start_router(
    args: &KafkaArgs,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let config = RouterConfig {
        batch_max: 100,
        ..RouterConfig::new(
            args.clone(),
            format!("{}router-1", args.topic_prefix),
            // The one "opened and assigned" event (opt-in), so Watch (asking for it compact)
            // and a restore are also proven on that shape against a real broker.
            Policy {
                separate_assigned_events: false,
                ..Policy::default().with_ack_deadline_ms(ACK_DEADLINE_MS)
            },
        )
    };
    let stop = CancellationToken::new();
    let task = tokio::spawn(helpgrid_router::run(config, stop.clone().cancelled_owned()));
    (stop, task)
}

async fn stop_router(
    (stop, task): (
        CancellationToken,
        tokio::task::JoinHandle<anyhow::Result<()>>,
    ),
) {
    stop.cancel();
    within("the router to stop", task).await.unwrap().unwrap();
}

/// The next update that is about `incident_id`, skipping others.
async fn next_of(stream: &mut Streaming<IncidentUpdate>, incident_id: &str) -> IncidentUpdate {
    loop {
        let update = next_update(stream).await;
        let about = update
            .event
            .as_ref()
            .and_then(|e| e.incident.as_ref())
            .is_some_and(|i| i.incident_id == incident_id);
        if about {
            return update;
        }
    }
}

fn change_of(update: &IncidentUpdate) -> &'static str {
    update
        .event
        .as_ref()
        .and_then(|e| e.change.as_ref())
        .map_or("none", Change::name)
}

fn revision_of(update: &IncidentUpdate) -> u64 {
    update
        .event
        .as_ref()
        .and_then(|e| e.incident.as_ref())
        .map_or(0, |i| i.revision)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_incidents_survive_the_deletion_of_their_incident_events() {
    let (_broker, bootstrap) = OwnBroker::start_with(&[
        ("log.retention.check.interval.ms", "1000"),
        ("log.segment.delete.delay.ms", "0"),
        ("log.initial.task.delay.ms", "0"),
    ]);
    let kafka = TestKafka::on_broker(&bootstrap).await;
    let service = kafka.start_service(Duration::from_secs(10)).await;
    service
        .roster()
        .upsert_responder(UpsertResponderRequest {
            responder: Some(responder("w-1", ResponderRole::GridWorker, &[GRID], None)),
        })
        .await
        .unwrap();
    let mut watch = service
        .incidents()
        .watch_incidents(WatchIncidentsRequest {
            compact_openings: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let router = start_router(&kafka.args);
    let publisher = Publisher::new(&kafka.args);
    let topics = kafka.topics.clone();

    // h1 presses: opened and assigned; its deadline runs.
    publisher
        .send(
            &topics.help_events,
            GRID,
            &press("hh-1", GRID, PressKind::Help),
        )
        .await;
    // One event: the router writes "opened and assigned" together.
    let assigned = within("h1's incident", next_update(&mut watch)).await;
    assert_eq!(change_of(&assigned), "opened");
    let event = assigned.event.as_ref().expect("event");
    assert_eq!(event.assignments().len(), 1, "opened and assigned");
    let incident_id = event
        .incident
        .as_ref()
        .expect("incident")
        .incident_id
        .clone();

    // incident-events keeps records for 5 s from now on, in segments of a second: a press 3 s
    // later rolls the segment that holds h1's events, so retention deletes it first.
    let admin: AdminClient<DefaultClientContext> =
        kafka.args.admin_config("retention-test").create().unwrap();
    set_retention(
        &admin,
        &topics.incident_events,
        &[("retention.ms", "5000"), ("segment.ms", "1000")],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(3000)).await;
    publisher
        .send(
            &topics.help_events,
            GRID,
            &press("hh-2", GRID, PressKind::Help),
        )
        .await;
    // h2's opening and placement (one event): the last event before the restart.
    let last = within("h2's incident", next_update(&mut watch)).await;
    let other_id = last
        .event
        .as_ref()
        .and_then(|e| e.incident.as_ref())
        .expect("incident")
        .incident_id
        .clone();
    assert_ne!(other_id, incident_id);
    stop_router(router).await;
    service.stop().await.unwrap();

    // Wait until the segment with h1's events is gone (h2's, the active one, stays: its
    // retention is then set back to an hour before its 5 s are up).
    let h1_partition = assigned_partition(&kafka, &incident_id).await;
    let h1_last_offset = offset_in_cursor(&assigned.cursor, h1_partition);
    let reader: BaseConsumer = kafka.args.reader_config("retention-test").create().unwrap();
    within("retention to delete h1's events", async {
        loop {
            let (low, _) = reader
                .fetch_watermarks(
                    &topics.incident_events,
                    h1_partition,
                    Duration::from_secs(10),
                )
                .unwrap();
            if low > h1_last_offset {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    set_retention(
        &admin,
        &topics.incident_events,
        &[("retention.ms", "3600000")],
    )
    .await;

    // Both restart from incident-state.
    let service = kafka.start_service(Duration::from_secs(10)).await;
    let restored = service
        .incidents()
        .get_incident(GetIncidentRequest {
            incident_id: incident_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(restored.state, IncidentState::Assigned as i32);
    assert_eq!(restored.revision, revision_of(&assigned));
    let open = service
        .incidents()
        .list_incidents(ListIncidentsRequest {
            states: vec![IncidentState::Assigned as i32],
            page_size: 10,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut open_ids: Vec<String> = open
        .incidents
        .iter()
        .map(|i| i.incident_id.clone())
        .collect();
    open_ids.sort();
    let mut expected = vec![incident_id.clone(), other_id.clone()];
    expected.sort();
    assert_eq!(open_ids, expected);

    // A cursor whose next events were deleted cannot resume without a gap: refused, saying so.
    let refused = service
        .incidents()
        .watch_incidents(WatchIncidentsRequest {
            cursor: assigned.cursor.clone(),
            ..Default::default()
        })
        .await
        .err()
        .map(|status| (status.code(), status.message().contains("ListIncidents")));
    assert_eq!(refused, Some((tonic::Code::OutOfRange, true)));
    // The Watch resumes after the last update it got.
    let mut resumed = service
        .incidents()
        .watch_incidents(WatchIncidentsRequest {
            cursor: last.cursor.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let router = start_router(&kafka.args);
    // A repeat press attaches to the restored incident (no second incident).
    publisher
        .send(
            &topics.help_events,
            GRID,
            &press("hh-1", GRID, PressKind::Help),
        )
        .await;
    // The repeat press attaches to the restored incident (no second incident), and the
    // deadline set before the restart fires (w-1 never acknowledged), in whichever order the
    // restored router meets them; nothing already delivered comes again.
    let mut changes = Vec::new();
    for _ in 0..2 {
        let update = within("h1's next changes", next_of(&mut resumed, &incident_id)).await;
        changes.push((change_of(&update), revision_of(&update)));
    }
    let base = revision_of(&assigned);
    changes.sort_by_key(|(_, revision)| *revision);
    assert_eq!(
        changes.iter().map(|(_, r)| *r).collect::<Vec<_>>(),
        [base + 1, base + 2]
    );
    let mut kinds: Vec<&str> = changes.iter().map(|(c, _)| *c).collect();
    kinds.sort_unstable();
    assert!(
        kinds == ["attached", "escalated"] || kinds == ["attached", "reassigned"],
        "{kinds:?}"
    );
    stop_router(router).await;
    service.stop().await.unwrap();
}

/// Sets incident-events' dynamic settings to exactly these (plus cleanup.policy=delete).
async fn set_retention(
    admin: &AdminClient<DefaultClientContext>,
    topic: &str,
    settings: &[(&str, &str)],
) {
    let alter = settings.iter().fold(
        AlterConfig::new(ResourceSpecifier::Topic(topic)).set("cleanup.policy", "delete"),
        |alter, (key, value)| alter.set(key, value),
    );
    let altered = admin
        .alter_configs([&alter], &AdminOptions::new())
        .await
        .unwrap();
    assert!(altered.iter().all(Result::is_ok), "{altered:?}");
}

/// The partition of an incident, from its incident-state record (the router writes its
/// events and its snapshot to the same partition).
async fn assigned_partition(kafka: &TestKafka, incident_id: &str) -> i32 {
    let cancel = CancellationToken::new();
    let mut feed = helpgrid_common::reader::follow(
        &kafka.args,
        "retention-test-state",
        &kafka.topics.incident_state,
        cancel.clone(),
    )
    .await
    .unwrap();
    loop {
        match within("h1's state record", feed.recv()).await {
            Some(helpgrid_common::reader::Feed::Record(r))
                if r.key.as_deref() == Some(incident_id.as_bytes()) =>
            {
                cancel.cancel();
                return r.partition;
            }
            Some(_) => {}
            None => panic!("incident-state ended without {incident_id}"),
        }
    }
}

fn offset_in_cursor(cursor: &str, partition: i32) -> i64 {
    cursor
        .strip_prefix("v1:")
        .unwrap()
        .split(',')
        .nth(partition as usize)
        .unwrap()
        .parse()
        .unwrap()
}
