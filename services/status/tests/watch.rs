//! WatchIncidents against a real broker: live events, filters, resume without gaps or
//! duplicates, bad records and shutdown.
//!
//! "Nothing more arrived" is checked with a sentinel: an event written last, which must be
//! the very next update — no waiting for silence.
#![allow(clippy::unwrap_used)]

mod support;

use helpgrid_proto::pb::incident_event::Change;
use helpgrid_proto::pb::{
    CommandRejected, IncidentEvent, IncidentUpdate, RejectReason, WatchIncidentsRequest,
};
use std::collections::HashMap;
use std::time::Duration;
use support::{TestKafka, assigned_incident, event_id, next_update, opened_event, router_event};
use tonic::Code;
use tonic::Streaming;

const T0: i64 = 1_764_000_000_000;

fn id_of(event: &IncidentEvent) -> String {
    event.envelope.as_ref().unwrap().event_id.clone()
}

/// Updates until (and without) the sentinel.
async fn updates_before(
    stream: &mut Streaming<IncidentUpdate>,
    sentinel: &IncidentEvent,
) -> Vec<IncidentUpdate> {
    let mut updates = Vec::new();
    loop {
        let update = next_update(stream).await;
        if event_id(&update) == id_of(sentinel) {
            return updates;
        }
        updates.push(update);
    }
}

fn sentinel(n: i64) -> IncidentEvent {
    opened_event(&assigned_incident(
        &format!("sentinel-{n}"),
        "g1",
        "r1",
        T0 + 1_000_000 + n,
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_receives_live_events_of_its_grids_in_order_and_steps_over_undecodable_records() {
    let kafka = TestKafka::new().await;
    let service = kafka.start_service(Duration::from_secs(5)).await;
    let request = WatchIncidentsRequest {
        grid_ids: vec!["g1".into()],
        ..Default::default()
    };
    let mut stream = service
        .incidents()
        .watch_incidents(request)
        .await
        .unwrap()
        .into_inner();

    let mut incident = assigned_incident("in-1", "g1", "r1", T0);
    let opened = opened_event(&incident);
    kafka.publish_event(1, &opened).await;
    kafka
        .publish_event(1, &opened_event(&assigned_incident("in-2", "g2", "r1", T0)))
        .await;
    kafka
        .publish_raw(
            &kafka.topics.incident_events,
            1,
            "g1",
            b"\xff\xff not protobuf",
        )
        .await;
    incident.revision += 1;
    let escalated = router_event(Some(&incident), "", Change::Escalated(Default::default()));
    let escalated_offset = kafka.publish_event(1, &escalated).await;

    let first = next_update(&mut stream).await;
    assert_eq!(first.event.as_ref().map(id_of), Some(id_of(&opened)));
    let second = next_update(&mut stream).await;
    assert_eq!(
        second.event.as_ref().map(id_of),
        Some(id_of(&escalated)),
        "g2 filtered out, garbage skipped"
    );
    assert_eq!(second.cursor, format!("v1:-1,{escalated_offset},-1"));
    assert_eq!(
        second.event.and_then(|e| e.incident).map(|i| i.revision),
        Some(3)
    );
    service.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_with_the_last_cursor_gets_every_later_event_exactly_once() {
    let kafka = TestKafka::new().await;
    let service = kafka.start_service(Duration::from_secs(5)).await;
    let mut incidents = service.incidents();
    let mut stream = incidents
        .watch_incidents(WatchIncidentsRequest::default())
        .await
        .unwrap()
        .into_inner();

    let before: Vec<IncidentEvent> = (0..3)
        .map(|n| opened_event(&assigned_incident(&format!("in-a{n}"), "g1", "r1", T0 + n)))
        .collect();
    for (partition, event) in (0..).zip(&before) {
        kafka.publish_event(partition, event).await;
    }
    let mut last_cursor = String::new();
    let mut seen = Vec::new();
    for _ in 0..3 {
        let update = next_update(&mut stream).await;
        seen.push(event_id(&update));
        last_cursor = update.cursor;
    }
    seen.sort();
    let mut expected: Vec<String> = before.iter().map(id_of).collect();
    expected.sort();
    assert_eq!(seen, expected);
    drop(stream);

    // Written while the client is away, over every partition, several per partition.
    let mut expected = Vec::new();
    for n in 0..6 {
        let event = opened_event(&assigned_incident(
            &format!("in-b{n}"),
            "g1",
            "r1",
            T0 + 10 + n,
        ));
        expected.push((n % 3, id_of(&event)));
        kafka.publish_event((n % 3) as i32, &event).await;
    }
    let mut stream = incidents
        .watch_incidents(WatchIncidentsRequest {
            cursor: last_cursor,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    // And written after the reconnect.
    for n in 6..9 {
        let event = opened_event(&assigned_incident(
            &format!("in-b{n}"),
            "g1",
            "r1",
            T0 + 10 + n,
        ));
        expected.push((n % 3, id_of(&event)));
        kafka.publish_event((n % 3) as i32, &event).await;
    }
    let end = sentinel(1);
    kafka.publish_event(2, &end).await;
    let updates = updates_before(&mut stream, &end).await;

    // Per partition, exactly the later events, in the order they were written.
    let mut by_partition: HashMap<i64, Vec<String>> = HashMap::new();
    for (partition, id) in &expected {
        by_partition.entry(*partition).or_default().push(id.clone());
    }
    let position_of = |id: &str| expected.iter().find(|(_, e)| e == id).map(|(p, _)| *p);
    let mut received: HashMap<i64, Vec<String>> = HashMap::new();
    for update in &updates {
        let id = event_id(update);
        let partition = position_of(&id).unwrap_or_else(|| panic!("unexpected event {id}"));
        received.entry(partition).or_default().push(id);
    }
    assert_eq!(received, by_partition);
    assert_eq!(updates.len(), 9, "no duplicates");
    service.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejections_are_streamed_only_to_watchers_that_ask_for_them() {
    let kafka = TestKafka::new().await;
    let service = kafka.start_service(Duration::from_secs(5)).await;
    let mut incidents = service.incidents();
    let mut plain = incidents
        .watch_incidents(WatchIncidentsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let audit = WatchIncidentsRequest {
        include_rejections: true,
        ..Default::default()
    };
    let mut audit = incidents.watch_incidents(audit).await.unwrap().into_inner();

    let incident = assigned_incident("in-1", "g1", "r1", T0);
    let rejection = router_event(
        Some(&incident),
        "cmd-1",
        Change::Rejected(CommandRejected {
            command_id: "cmd-1".into(),
            incident_id: "in-1".into(),
            actor_id: "r9".into(),
            reason: RejectReason::NotPermitted as i32,
            message: "r9 is not assigned to in-1".into(),
        }),
    );
    kafka.publish_event(0, &rejection).await;
    let end = sentinel(1);
    kafka.publish_event(0, &end).await;

    assert!(updates_before(&mut plain, &end).await.is_empty());
    let audited: Vec<String> = updates_before(&mut audit, &end)
        .await
        .iter()
        .map(event_id)
        .collect();
    assert_eq!(audited, [id_of(&rejection)]);
    service.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_open_watch_streams_with_unavailable_and_run_returns() {
    let kafka = TestKafka::new().await;
    let service = kafka.start_service(Duration::from_secs(5)).await;
    let mut stream = service
        .incidents()
        .watch_incidents(WatchIncidentsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let stopping = tokio::spawn(service.stop());
    let ended = support::within("the stream to end", stream.message()).await;
    assert!(
        matches!(&ended, Err(status) if status.code() == Code::Unavailable),
        "{ended:?}"
    );
    support::within("run to return", stopping)
        .await
        .unwrap()
        .unwrap();
}
