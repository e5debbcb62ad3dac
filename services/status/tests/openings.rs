//! "Opened and assigned" as one Kafka event, and Watch clients written before it: the status
//! service expands the event into `opened` + one `assigned` update per track unless the
//! request sets `compact_openings`, and every one of those updates has a cursor a client can
//! resume from — on a restarted service too — without losing or repeating an update.
//!
//! Clients: our tonic client matching `Change::Assigned` itself (no `assignments()` helper),
//! and Python's grpcio built from reflection alone, waiting for `assigned` as a police CAD
//! written against the old contract does. Against the real broker; the end-to-end test runs
//! the real router writing the compact event.
#![allow(clippy::unwrap_used)]

mod support;

use helpgrid_auth::Role;
use helpgrid_common::reader::{Feed, follow};
use helpgrid_proto::pb::incident_event::Change;
use helpgrid_proto::pb::{
    Acknowledged, Assignment, EscalationLevel, IncidentEvent, IncidentOpened, IncidentUpdate,
    ListIncidentsRequest, PressKind, ResponderAssigned, ResponderRole, Track,
    UpsertResponderRequest, WatchIncidentsRequest, WatchPoliceIncidentsRequest,
};
use helpgrid_testkit::records::{press, responder};
use helpgrid_testkit::{Publisher, python};
use prost::Message;
use std::path::PathBuf;
use std::time::Duration;
use support::{
    TestKafka, TestService, assigned_incident, event_id, next_update, opened_event, router_event,
    token, within,
};
use tokio_util::sync::CancellationToken;
use tonic::Streaming;

const T0: i64 = 1_764_000_000_000;
const GRID: &str = "g1";
/// All of a test's events go to one partition, so "before the sentinel" is a total order.
const PARTITION: i32 = 1;
const GRPCIO: &[&str] = &["grpcio==1.85.1", "grpcio-reflection==1.85.1"];

/// An urgent press's incident as the router's one "opened and assigned" event leaves it:
/// the community track with w-1, the police track with po-1, revision 1.
fn opened_and_assigned(incident_id: &str) -> IncidentEvent {
    let mut incident = assigned_incident(incident_id, GRID, "w-1", T0);
    incident.revision = 1;
    let police = Assignment {
        track: Track::Police as i32,
        level: EscalationLevel::PatrolOfficer as i32,
        responder_id: "po-1".into(),
        responder_role: ResponderRole::PatrolOfficer as i32,
        ..incident.assignments[0].clone()
    };
    incident.assignments.push(police);
    let assigned = incident
        .assignments
        .iter()
        .map(|a| ResponderAssigned {
            track: a.track,
            responder_id: a.responder_id.clone(),
            level: a.level,
            ack_deadline: a.ack_deadline,
        })
        .collect();
    let mut event = router_event(
        Some(&incident),
        &format!("press-{incident_id}"),
        Change::Opened(IncidentOpened { assigned }),
    );
    if let Some(envelope) = &mut event.envelope {
        envelope.event_id = format!("{incident_id}:1");
    }
    event
}

fn acknowledged(opening: &IncidentEvent) -> IncidentEvent {
    let mut incident = opening.incident.clone().unwrap();
    incident.revision = 2;
    let mut event = router_event(
        Some(&incident),
        "cmd-ack",
        Change::Acknowledged(Acknowledged {
            track: Track::Community as i32,
            responder_id: "w-1".into(),
            acknowledged_by: "w-1".into(),
        }),
    );
    if let Some(envelope) = &mut event.envelope {
        envelope.event_id = format!("{}:2", incident.incident_id);
    }
    event
}

/// Written last: a police-bound opening (a camera's), so police streams see it too.
fn sentinel() -> IncidentEvent {
    let mut incident = assigned_incident("sentinel", GRID, "r1", T0 + 1_000);
    incident.source = helpgrid_proto::pb::IncidentSource::Camera as i32;
    opened_event(&incident)
}

fn change(update: &IncidentUpdate) -> Option<&Change> {
    update.event.as_ref().and_then(|e| e.change.as_ref())
}

/// (change name, event id, cursor) of each update: what a client acts and resumes on.
fn summary(updates: &[IncidentUpdate]) -> Vec<(&'static str, String, String)> {
    updates
        .iter()
        .map(|u| {
            (
                change(u).map_or("none", Change::name),
                event_id(u),
                u.cursor.clone(),
            )
        })
        .collect()
}

/// Updates until (and without) the one whose event id is `sentinel_id`.
async fn updates_before(
    stream: &mut Streaming<IncidentUpdate>,
    sentinel_id: &str,
) -> Vec<IncidentUpdate> {
    let mut updates = Vec::new();
    loop {
        let update = next_update(stream).await;
        if event_id(&update) == sentinel_id {
            return updates;
        }
        updates.push(update);
    }
}

async fn watch(
    service: &TestService,
    cursor: &str,
    compact_openings: bool,
) -> Streaming<IncidentUpdate> {
    service
        .incidents()
        .watch_incidents(WatchIncidentsRequest {
            cursor: cursor.into(),
            compact_openings,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

async fn police_watch(
    service: &TestService,
    cursor: &str,
    compact_openings: bool,
) -> Streaming<IncidentUpdate> {
    service
        .dispatch_as(&token("cad-110", Role::Dispatch, &["*"]))
        .watch_police_incidents(WatchPoliceIncidentsRequest {
            cursor: cursor.into(),
            compact_openings,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

/// The read model's position now (a ListIncidents cursor): a Watch from it gets what is
/// written afterwards.
async fn position(service: &TestService) -> String {
    service
        .incidents()
        .list_incidents(ListIncidentsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .cursor
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opened_and_assigned_event_is_watched_as_opened_then_assigned_and_resumed_from_any_of_them_after_a_restart()
 {
    let kafka = TestKafka::new().await;
    let service = kafka.start_service(Duration::from_secs(5)).await;
    let start = position(&service).await;
    let opening = opened_and_assigned("inc-p1");
    let offset = kafka.publish_event(PARTITION, &opening).await;
    let ack = acknowledged(&opening);
    let ack_offset = kafka.publish_event(PARTITION, &ack).await;
    let end = sentinel();
    kafka.publish_event(PARTITION, &end).await;
    let end_id = end.envelope.as_ref().unwrap().event_id.clone();

    // A client that did not opt in: the long shape, each update resumable.
    let expanded = updates_before(&mut watch(&service, &start, false).await, &end_id).await;
    let at = |position: String| format!("-1,{position},-1");
    assert_eq!(
        summary(&expanded),
        [
            (
                "opened",
                "inc-p1:1".into(),
                format!("v2:{}", at(format!("{offset}.0")))
            ),
            (
                "assigned",
                "inc-p1:1:assigned:1".into(),
                format!("v2:{}", at(format!("{offset}.1")))
            ),
            (
                "assigned",
                "inc-p1:1:assigned:2".into(),
                format!("v1:{}", at(offset.to_string()))
            ),
            (
                "acknowledged",
                "inc-p1:2".into(),
                format!("v1:{}", at(ack_offset.to_string()))
            ),
        ]
    );
    // The opened update is the bare `opened` of the long shape; each assigned carries what a
    // separate `assigned` event would, the incident as the record has it.
    assert_eq!(
        change(&expanded[0]),
        Some(&Change::Opened(IncidentOpened::default()))
    );
    let Some(Change::Opened(folded)) = &opening.change else {
        unreachable!()
    };
    for (update, assigned) in expanded[1..3].iter().zip(&folded.assigned) {
        assert_eq!(change(update), Some(&Change::Assigned(assigned.clone())));
    }
    for update in &expanded[..3] {
        let event = update.event.as_ref().unwrap();
        assert_eq!(
            event.incident, opening.incident,
            "same snapshot, revision 1"
        );
        assert_eq!(event.cause_id, opening.cause_id);
    }

    // A client that opted in: the event as written.
    let compact = updates_before(&mut watch(&service, &start, true).await, &end_id).await;
    assert_eq!(
        compact
            .iter()
            .map(|u| u.event.clone().unwrap())
            .collect::<Vec<_>>(),
        [opening.clone(), ack.clone()]
    );
    assert_eq!(compact[0].cursor, format!("v1:{}", at(offset.to_string())));

    // A police CAD: the same expansion (the incident has a police track).
    let police = updates_before(&mut police_watch(&service, &start, false).await, &end_id).await;
    assert_eq!(summary(&police), summary(&expanded));

    // Restarted, the service resumes after each update with exactly the rest.
    service.stop().await.unwrap();
    let service = kafka.start_service(Duration::from_secs(5)).await;
    for (n, update) in expanded.iter().enumerate() {
        let resumed =
            updates_before(&mut watch(&service, &update.cursor, false).await, &end_id).await;
        assert_eq!(
            summary(&resumed),
            summary(&expanded[n + 1..]),
            "resumed after update {n} ({})",
            update.cursor
        );
        let resumed = updates_before(
            &mut police_watch(&service, &update.cursor, false).await,
            &end_id,
        )
        .await;
        assert_eq!(
            summary(&resumed),
            summary(&expanded[n + 1..]),
            "police, after {n}"
        );
    }
    // A cursor from inside the opening, given to a compact stream: the record comes whole
    // (the client switched shapes; it loses nothing, and sees the opening once more).
    let switched = updates_before(
        &mut watch(&service, &expanded[0].cursor, true).await,
        &end_id,
    )
    .await;
    assert_eq!(
        switched
            .iter()
            .map(|u| u.event.clone().unwrap())
            .collect::<Vec<_>>(),
        [opening, ack]
    );
    service.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_compact_router_a_press_is_one_kafka_event_and_old_style_clients_still_see_each_assigned()
 {
    let python = tokio::task::spawn_blocking(|| python::venv("grpcio", GRPCIO));
    let kafka = TestKafka::new().await;
    let service = kafka.start_service(Duration::from_secs(10)).await;
    for (id, role) in [
        ("w-1", ResponderRole::GridWorker),
        ("po-1", ResponderRole::PatrolOfficer),
    ] {
        service
            .roster()
            .upsert_responder(UpsertResponderRequest {
                responder: Some(responder(id, role, &[GRID], None)),
            })
            .await
            .unwrap();
    }
    let start = position(&service).await;
    // The router writing the compact shape (`--separate-assigned-events=false`).
    let config = helpgrid_router::config::RouterConfig::new(
        kafka.args.clone(),
        format!("{}router-1", kafka.args.topic_prefix),
        helpgrid_router::domain::Policy {
            separate_assigned_events: false,
            ..helpgrid_router::domain::Policy::default()
        },
    );
    let stop_router = CancellationToken::new();
    let router = tokio::spawn(helpgrid_router::run(
        config,
        stop_router.clone().cancelled_owned(),
    ));
    Publisher::new(&kafka.args)
        .send(
            &kafka.topics.help_events,
            GRID,
            &press("hh-1", GRID, PressKind::Urgent),
        )
        .await;

    // Our tonic client, matching the change itself as a client of the old contract does.
    let mut stream = watch(&service, &start, false).await;
    let updates = [
        next_update(&mut stream).await,
        next_update(&mut stream).await,
        next_update(&mut stream).await,
    ];
    let incident = updates[0].event.clone().unwrap().incident.unwrap();
    let assigned: Vec<(i32, String)> = updates[1..]
        .iter()
        .map(|u| match change(u) {
            Some(Change::Assigned(a)) => (a.track, a.responder_id.clone()),
            other => panic!("expected assigned, got {other:?}"),
        })
        .collect();
    assert!(matches!(change(&updates[0]), Some(Change::Opened(o)) if o.assigned.is_empty()));
    assert_eq!(
        assigned,
        [
            (Track::Community as i32, "w-1".to_owned()),
            (Track::Police as i32, "po-1".to_owned())
        ]
    );

    // On Kafka: ONE record for the opening, carrying both assignments.
    let written = incident_events(&kafka).await;
    assert_eq!(written.len(), 1, "{written:?}");
    assert_eq!(written[0].assignments().len(), 2);
    assert_eq!(written[0].incident.as_ref(), Some(&incident));

    // Python's grpcio, from reflection alone, as a police CAD written before the compact
    // event: it waits for one `assigned` per track, then reconnects after the first one.
    let python = python.await.unwrap();
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/grpcio_watch_assigned.py");
    let address = service.addr.to_string();
    let cad = token("cad-110", Role::Dispatch, &["*"]);
    let incident_id = incident.incident_id.clone();
    let out = tokio::task::spawn_blocking(move || {
        python::run_script(&python, &script, &[&address, &cad, &start, &incident_id])
    })
    .await
    .unwrap();
    for line in [
        format!(
            "ok: changes of {} opened,assigned,assigned",
            incident.incident_id
        ),
        "ok: assigned track 1 to w-1".to_owned(),
        "ok: assigned track 2 to po-1".to_owned(),
        "ok: resumed after the first assigned: assigned track 2 to po-1, nothing repeated"
            .to_owned(),
    ] {
        assert!(out.contains(&line), "missing {line:?} in:\n{out}");
    }

    stop_router.cancel();
    within("the router to stop", router).await.unwrap().unwrap();
    service.stop().await.unwrap();
}

/// Every incident event on the topic now.
async fn incident_events(kafka: &TestKafka) -> Vec<IncidentEvent> {
    let stop = CancellationToken::new();
    let mut feed = follow(
        &kafka.args,
        "openings-test-events",
        &kafka.topics.incident_events,
        stop.clone(),
    )
    .await
    .unwrap();
    let mut events = Vec::new();
    while let Some(Feed::Record(record)) = within("incident-events to be read", feed.recv()).await {
        events.push(IncidentEvent::decode(record.payload.as_deref().unwrap_or_default()).unwrap());
    }
    stop.cancel();
    events
}
