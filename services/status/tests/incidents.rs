//! GetIncident / ListIncidents and readiness against a real broker.
#![allow(clippy::unwrap_used)]

mod support;

use helpgrid_common::time::to_timestamp;
use helpgrid_proto::pb::incident_event::Change;
use helpgrid_proto::pb::{
    GetIncidentRequest, Incident, IncidentState, ListIncidentsRequest, ListIncidentsResponse,
    WatchIncidentsRequest,
};
use std::time::Duration;
use support::{TestKafka, assigned_incident, opened_event, router_event, within};
use tokio_stream::StreamExt;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

const T0: i64 = 1_764_000_000_000;

fn ids(response: &ListIncidentsResponse) -> Vec<&str> {
    response
        .incidents
        .iter()
        .map(|i| i.incident_id.as_str())
        .collect()
}

/// Five incidents in three grids over all partitions, one of them acknowledged later, all
/// written before the service starts. Returns the expected cursor after them.
async fn history(kafka: &TestKafka) -> String {
    let mut last = [-1_i64; 3];
    let incidents = [
        ("in-1", "g1", 0, T0 + 1_000),
        ("in-2", "g2", 1, T0 + 2_000),
        ("in-3", "g1", 2, T0 + 3_000),
        ("in-4", "g3", 0, T0 + 4_000),
        ("in-5", "g1", 1, T0 + 5_000),
    ];
    for (id, grid, partition, opened_at) in incidents {
        let incident = assigned_incident(id, grid, "r1", opened_at);
        last[partition as usize] = kafka
            .publish_event(partition, &opened_event(&incident))
            .await;
    }
    let mut acknowledged = assigned_incident("in-3", "g1", "r1", T0 + 3_000);
    acknowledged.state = IncidentState::Acknowledged as i32;
    acknowledged.revision = 3;
    let ack = router_event(
        Some(&acknowledged),
        "cmd-x",
        Change::Acknowledged(Default::default()),
    );
    last[2] = kafka.publish_event(2, &ack).await;
    // A stale snapshot written after the newer one must not win.
    let stale = opened_event(&assigned_incident("in-3", "g1", "r1", T0 + 3_000));
    last[2] = kafka.publish_event(2, &stale).await;
    format!("v1:{},{},{}", last[0], last[1], last[2])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_serving_is_reported_every_incident_written_before_start_is_readable() {
    let kafka = TestKafka::new().await;
    let expected_cursor = history(&kafka).await;
    // start_service returns once health says SERVING: no polling for the data itself.
    let service = kafka.start_service(Duration::from_secs(5)).await;
    let mut incidents = service.incidents();

    let got = incidents
        .get_incident(GetIncidentRequest {
            incident_id: "in-3".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (got.revision, got.state),
        (3, IncidentState::Acknowledged as i32)
    );
    let all = incidents
        .list_incidents(ListIncidentsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ids(&all), ["in-5", "in-4", "in-3", "in-2", "in-1"]);
    assert_eq!(all.cursor, expected_cursor);
    assert_eq!(all.next_page_token, "");

    let unknown = incidents
        .get_incident(GetIncidentRequest {
            incident_id: "in-404".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    assert!(
        unknown.message().contains("in-404"),
        "{}",
        unknown.message()
    );
    service.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_filters_by_grid_state_and_opening_time_and_pages_newest_first() {
    let kafka = TestKafka::new().await;
    history(&kafka).await;
    let service = kafka.start_service(Duration::from_secs(5)).await;
    let mut incidents = service.incidents();
    let mut list = async |request: ListIncidentsRequest| {
        incidents
            .list_incidents(request)
            .await
            .unwrap()
            .into_inner()
    };

    let g1 = list(ListIncidentsRequest {
        grid_ids: vec!["g1".into()],
        ..Default::default()
    })
    .await;
    assert_eq!(ids(&g1), ["in-5", "in-3", "in-1"]);
    let assigned_in_g1 = list(ListIncidentsRequest {
        grid_ids: vec!["g1".into()],
        states: vec![IncidentState::Assigned as i32],
        ..Default::default()
    })
    .await;
    assert_eq!(ids(&assigned_in_g1), ["in-5", "in-1"]);
    let window = list(ListIncidentsRequest {
        opened_after: Some(to_timestamp(T0 + 1_000)),
        opened_before: Some(to_timestamp(T0 + 5_000)),
        ..Default::default()
    })
    .await;
    assert_eq!(ids(&window), ["in-4", "in-3", "in-2"]);

    let mut pages = Vec::new();
    let mut token = String::new();
    loop {
        let page = list(ListIncidentsRequest {
            page_size: 2,
            page_token: token,
            ..Default::default()
        })
        .await;
        pages.push(
            ids(&page)
                .into_iter()
                .map(str::to_owned)
                .collect::<Vec<_>>(),
        );
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(
        pages,
        [vec!["in-5", "in-4"], vec!["in-3", "in-2"], vec!["in-1"]]
    );
    service.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_then_watch_from_the_list_cursor_misses_nothing_and_repeats_nothing() {
    let kafka = TestKafka::new().await;
    history(&kafka).await;
    let service = kafka.start_service(Duration::from_secs(5)).await;
    let mut incidents = service.incidents();
    let listed = incidents
        .list_incidents(ListIncidentsRequest::default())
        .await
        .unwrap()
        .into_inner();

    // Written after the list was taken, before the watch starts.
    let later: Vec<Incident> = (6..9)
        .map(|n| assigned_incident(&format!("in-{n}"), "g2", "r1", T0 + n * 1_000))
        .collect();
    let mut expected = Vec::new();
    for (partition, incident) in (0..).zip(&later) {
        let event = opened_event(incident);
        expected.push(event.envelope.clone().unwrap().event_id);
        kafka.publish_event(partition, &event).await;
    }
    let mut stream = incidents
        .watch_incidents(WatchIncidentsRequest {
            cursor: listed.cursor,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let sentinel = opened_event(&assigned_incident("in-sentinel", "g2", "r1", T0 + 99_000));
    kafka.publish_event(1, &sentinel).await;
    let mut received = Vec::new();
    loop {
        let update = support::next_update(&mut stream).await;
        let id = support::event_id(&update);
        if id == sentinel.envelope.as_ref().unwrap().event_id {
            break;
        }
        received.push(id);
    }
    received.sort();
    expected.sort();
    assert_eq!(
        received, expected,
        "exactly the events after the list, each once"
    );
    service.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_serving_for_both_apis_and_reflection_lists_them() {
    let kafka = TestKafka::new().await;
    let service = kafka.start_service(Duration::from_secs(5)).await;
    for name in [
        "",
        "helpgrid.v1.IncidentService",
        "helpgrid.v1.RosterService",
    ] {
        let health = service
            .health()
            .check(HealthCheckRequest {
                service: name.into(),
            })
            .await
            .unwrap();
        assert_eq!(
            health.into_inner().status,
            ServingStatus::Serving as i32,
            "service {name:?}"
        );
    }

    let mut reflection = ServerReflectionClient::new(service.channel.clone());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::once(request))
        .await
        .unwrap()
        .into_inner();
    let Some(Ok(response)) = responses.next().await else {
        panic!("no reflection response")
    };
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection response")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "helpgrid.v1.IncidentService",
        "helpgrid.v1.RosterService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }

    // A client watching health hears NOT_SERVING at shutdown, and its stream ends rather
    // than holding the server open.
    let request = HealthCheckRequest {
        service: String::new(),
    };
    let mut health_watch = service.health().watch(request).await.unwrap().into_inner();
    let started = std::time::Instant::now();
    let stopping = tokio::spawn(service.stop());
    let mut statuses = Vec::new();
    while let Some(health) = within("the health watch to end", health_watch.message())
        .await
        .unwrap()
    {
        statuses.push(health.status);
    }
    assert_eq!(
        statuses.last(),
        Some(&(ServingStatus::NotServing as i32)),
        "{statuses:?}"
    );
    within("run to return", stopping).await.unwrap().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shutdown waited for the drain limit"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_reads_are_invalid_argument_with_a_reason() {
    let kafka = TestKafka::new().await;
    let service = kafka.start_service(Duration::from_secs(5)).await;
    let mut incidents = service.incidents();

    let bad_id = incidents
        .get_incident(GetIncidentRequest {
            incident_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad_id.code(), Code::InvalidArgument);
    assert!(
        bad_id.message().contains("incident_id"),
        "{}",
        bad_id.message()
    );
    let bad_token = ListIncidentsRequest {
        page_token: "not-a-token".into(),
        ..Default::default()
    };
    let bad_token = incidents.list_incidents(bad_token).await.unwrap_err();
    assert_eq!(bad_token.code(), Code::InvalidArgument);
    assert!(
        bad_token.message().contains("page_token"),
        "{}",
        bad_token.message()
    );
    let bad_state = ListIncidentsRequest {
        states: vec![42],
        ..Default::default()
    };
    assert_eq!(
        incidents
            .list_incidents(bad_state)
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
    let bad_cursor = WatchIncidentsRequest {
        cursor: "v1:1,2,3,4,5".into(),
        ..Default::default()
    };
    let bad_cursor = incidents.watch_incidents(bad_cursor).await.unwrap_err();
    assert_eq!(bad_cursor.code(), Code::InvalidArgument);
    assert!(
        bad_cursor.message().contains("cursor"),
        "{}",
        bad_cursor.message()
    );
    service.stop().await.unwrap();
}
