//! Acknowledge and Close against a real broker, with an in-test router answering commands.
#![allow(clippy::unwrap_used)]

mod support;

use helpgrid_auth::Role;
use helpgrid_proto::pb::incident_command::Action;
use helpgrid_proto::pb::{
    AcknowledgeRequest, CloseIncident, CloseRequest, GetIncidentRequest, Incident, IncidentOutcome,
    IncidentState, RejectReason, Resolution,
};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::{
    TestKafka, acknowledged_answer, assigned_incident, closed_answer, opened_event,
    rejected_answer, token, within,
};
use tonic::Code;

const T0: i64 = 1_764_000_000_000;
/// Not the partition murmur2 would pick by chance for every grid: commands must follow the
/// incident's events, wherever they are.
const INCIDENT_PARTITION: i32 = 2;

/// One incident, assigned to r1, known to the service.
async fn known_incident(kafka: &TestKafka) -> Incident {
    let incident = assigned_incident("in-1", "g7", "r1", T0);
    kafka
        .publish_event(INCIDENT_PARTITION, &opened_event(&incident))
        .await;
    incident
}

fn acknowledge(incident_id: &str, responder_id: &str) -> AcknowledgeRequest {
    AcknowledgeRequest {
        incident_id: incident_id.into(),
        responder_id: responder_id.into(),
        request_id: String::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledge_then_close_return_the_incident_as_the_router_left_it() {
    let kafka = Arc::new(TestKafka::new().await);
    let assigned = known_incident(&kafka).await;
    let service = kafka.start_service(Duration::from_secs(10)).await;
    let router = kafka
        .answer_commands({
            // The router's state of the incident, moved on by every accepted command.
            let current = Mutex::new(assigned);
            move |command| {
                let mut current = current.lock().unwrap();
                let answer = match &command.action {
                    Some(Action::Acknowledge(_)) => acknowledged_answer(command, &current),
                    Some(Action::Close(_)) => closed_answer(command, &current),
                    // The app's "I need help" is tested against the real router (tests/app.rs).
                    Some(Action::Escalate(_)) | None => return None,
                };
                *current = answer.incident.clone().unwrap();
                Some(answer)
            }
        })
        .await;
    let mut incidents = service.incidents();

    let acknowledged = incidents
        .acknowledge(acknowledge("in-1", "r1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (acknowledged.state, acknowledged.revision),
        (IncidentState::Acknowledged as i32, 3)
    );
    assert_eq!(acknowledged.assignments[0].acknowledged_by, "r1");
    // The answer is in the read model before the call returns.
    let got = incidents
        .get_incident(GetIncidentRequest {
            incident_id: "in-1".into(),
        })
        .await
        .unwrap();
    assert_eq!(got.into_inner().revision, 3);

    let close = CloseRequest {
        incident_id: "in-1".into(),
        responder_id: "r1".into(),
        note: "elderly resident helped back to bed".into(),
        outcome: IncidentOutcome::ResolvedOnSpot as i32,
        ..Default::default()
    };
    let closed = incidents.close(close).await.unwrap().into_inner();
    assert_eq!(
        (closed.state, closed.revision),
        (IncidentState::Closed as i32, 4)
    );
    assert_eq!(
        closed.resolution_note,
        "elderly resident helped back to bed"
    );

    let seen = router.seen();
    assert_eq!(seen.len(), 2);
    for command in &seen {
        assert_eq!(
            (command.partition, command.key.as_str()),
            (INCIDENT_PARTITION, "g7"),
            "{command:?}"
        );
        assert_eq!(
            (
                command.command.incident_id.as_str(),
                command.command.grid_id.as_str()
            ),
            ("in-1", "g7")
        );
        assert_eq!(command.command.actor_id, "r1");
        assert_eq!(
            command.command.actor_role,
            helpgrid_proto::pb::ActorRole::Responder as i32,
            "the router re-checks with the role the token named"
        );
        let envelope = command.command.envelope.as_ref().unwrap();
        assert_eq!(
            (envelope.source.as_str(), envelope.schema_version),
            ("helpgrid-status", 1)
        );
        assert!(!envelope.event_id.is_empty());
    }
    assert!(matches!(
        seen[0].command.action,
        Some(Action::Acknowledge(_))
    ));
    assert_eq!(
        seen[1].command.action,
        Some(Action::Close(CloseIncident {
            resolution: Resolution::Resolved as i32,
            note: "elderly resident helped back to bed".into(),
            outcome: IncidentOutcome::ResolvedOnSpot as i32,
        })),
        "the router gets the outcome and the resolution it means, for older readers"
    );
    service.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_rejections_become_permission_denied_and_failed_precondition_with_its_message() {
    let kafka = Arc::new(TestKafka::new().await);
    let assigned = known_incident(&kafka).await;
    let service = kafka.start_service(Duration::from_secs(10)).await;
    let _router = kafka
        .answer_commands(move |command| match &command.action {
            Some(Action::Acknowledge(_)) => Some(rejected_answer(
                command,
                Some(&assigned),
                RejectReason::NotPermitted,
                "r9 is not assigned to incident in-1 and does not supervise grid g7",
            )),
            Some(Action::Close(_)) => Some(rejected_answer(
                command,
                Some(&assigned),
                RejectReason::WrongState,
                "incident in-1 must be acknowledged before it is closed",
            )),
            Some(Action::Escalate(_)) | None => None,
        })
        .await;
    let mut incidents = service.incidents();

    // r9 may call Acknowledge (a responder token of every grid); the router says no.
    let denied = service
        .incidents_as(&token("r9", Role::Responder, &["*"]))
        .acknowledge(acknowledge("in-1", "r9"))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert_eq!(
        denied.message(),
        "r9 is not assigned to incident in-1 and does not supervise grid g7"
    );
    let close = CloseRequest {
        incident_id: "in-1".into(),
        responder_id: "r1".into(),
        outcome: IncidentOutcome::FalseAlarm as i32,
        ..Default::default()
    };
    let refused = incidents.close(close).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(
        refused.message(),
        "incident in-1 must be acknowledged before it is closed"
    );

    // Rejections change nothing.
    let got = incidents
        .get_incident(GetIncidentRequest {
            incident_id: "in-1".into(),
        })
        .await
        .unwrap();
    assert_eq!(got.into_inner().revision, 2);
    service.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_incident_is_not_found_and_no_command_is_published() {
    let kafka = Arc::new(TestKafka::new().await);
    known_incident(&kafka).await;
    let service = kafka.start_service(Duration::from_secs(10)).await;
    let mut incidents = service.incidents();

    let missing = incidents
        .acknowledge(acknowledge("in-404", "r1"))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    assert!(
        missing.message().contains("in-404"),
        "{}",
        missing.message()
    );
    let close = CloseRequest {
        incident_id: "in-404".into(),
        responder_id: "r1".into(),
        // A client written before outcomes: its resolution stands in for the outcome.
        resolution: Resolution::Resolved as i32,
        ..Default::default()
    };
    assert_eq!(
        incidents.close(close).await.unwrap_err().code(),
        Code::NotFound
    );
    assert_eq!(kafka.records_in(&kafka.topics.incident_commands), 0);
    service.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_answer_within_the_timeout_is_unavailable_though_the_command_was_sent() {
    let kafka = Arc::new(TestKafka::new().await);
    known_incident(&kafka).await;
    let service = kafka.start_service(Duration::from_millis(1500)).await;

    let started = std::time::Instant::now();
    let late = within(
        "the command timeout",
        service.incidents().acknowledge(acknowledge("in-1", "r1")),
    )
    .await
    .unwrap_err();
    // Retry-safe: a retry with the same request id is answered with success if this one
    // was applied after all.
    assert_eq!(late.code(), Code::Unavailable);
    assert!(
        late.message()
            .starts_with("the router did not answer within 1500 ms")
            && late.message().contains("retry with the same request_id"),
        "{}",
        late.message()
    );
    assert!(started.elapsed() >= Duration::from_millis(1500));
    assert_eq!(
        kafka.records_in(&kafka.topics.incident_commands),
        1,
        "the command itself was published"
    );
    service.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_commands_are_invalid_argument_and_not_published() {
    let kafka = Arc::new(TestKafka::new().await);
    known_incident(&kafka).await;
    let service = kafka.start_service(Duration::from_secs(10)).await;
    let mut incidents = service.incidents();

    // Acting under someone else's id is refused before anything is published.
    let impostor = incidents
        .acknowledge(acknowledge("in-1", "r2"))
        .await
        .unwrap_err();
    assert_eq!(impostor.code(), Code::PermissionDenied);
    assert!(
        impostor
            .message()
            .contains("responder_id \"r2\" is not you (r1)"),
        "{}",
        impostor.message()
    );
    let spaced = incidents
        .acknowledge(acknowledge("in 1", "r1"))
        .await
        .unwrap_err();
    assert_eq!(spaced.code(), Code::InvalidArgument);
    let unresolved = CloseRequest {
        incident_id: "in-1".into(),
        responder_id: "r1".into(),
        ..Default::default()
    };
    let unresolved = incidents.close(unresolved).await.unwrap_err();
    assert_eq!(unresolved.code(), Code::InvalidArgument);
    assert!(
        unresolved.message().contains("outcome is required"),
        "{}",
        unresolved.message()
    );

    assert_eq!(kafka.records_in(&kafka.topics.incident_commands), 0);
    service.stop().await.unwrap();
}
