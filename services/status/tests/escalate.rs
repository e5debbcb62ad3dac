//! Escalate and RevokeTokens over gRPC on a real socket, with the real router and the real
//! broker: who may push an incident up the ladder (the assignee, the grid's supervisor, an
//! admin) and who is refused (another worker, a console, a supervisor of another grid);
//! a retry with the same request id answers OK and changes nothing. An admin revokes a
//! responder's tokens over gRPC and a second status instance refuses them within seconds.
#![allow(clippy::unwrap_used)]

mod support;

use helpgrid_auth::Role;
use helpgrid_proto::pb::{
    EscalateRequest, EscalationLevel, Incident, PressKind, ResponderRole, RevokeTokensRequest,
    UpsertResponderRequest,
};
use helpgrid_testkit::Publisher;
use helpgrid_testkit::records::{press, responder};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{
    TestKafka, TestService, list_as, older_token, start_router, token, wait_incident, within,
};
use tonic::Code;

const GRID: &str = "grid-0001";

async fn upsert(service: &TestService, id: &str, role: ResponderRole) {
    service
        .roster()
        .upsert_responder(UpsertResponderRequest {
            responder: Some(responder(id, role, &[GRID], None)),
        })
        .await
        .unwrap();
}

fn escalate(incident_id: &str, note: &str, request_id: &str) -> EscalateRequest {
    EscalateRequest {
        incident_id: incident_id.into(),
        responder_id: String::new(),
        note: note.into(),
        request_id: request_id.into(),
    }
}

async fn escalate_as(
    service: &TestService,
    token: &str,
    request: EscalateRequest,
) -> Result<Incident, (Code, String)> {
    service
        .incidents_as(token)
        .escalate(request)
        .await
        .map(tonic::Response::into_inner)
        .map_err(|s| (s.code(), s.message().to_owned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_assignee_the_grids_supervisor_and_an_admin_escalate_others_are_denied_and_a_retry_is_ok()
 {
    let kafka = Arc::new(TestKafka::new().await);
    let service = kafka.start_service(Duration::from_secs(10)).await;
    upsert(&service, "w-1", ResponderRole::GridWorker).await;
    upsert(&service, "w-2", ResponderRole::GridWorker).await;
    upsert(&service, "s-1", ResponderRole::GridSupervisor).await;
    let (router_stop, router) = start_router(&kafka.args);
    let publisher = Publisher::new(&kafka.args);
    publisher
        .send(
            &kafka.topics.help_events,
            GRID,
            &press("hh-0001-07", GRID, PressKind::Help),
        )
        .await;
    // Equal load: the router breaks the tie by id, so w-1 gets it.
    let incident = wait_incident(&service, "the press assigned to w-1", "hh-0001-07", |i| {
        i.assignments
            .first()
            .is_some_and(|a| a.responder_id == "w-1")
    })
    .await;
    let id = incident.incident_id.clone();
    let w1 = token("w-1", Role::Responder, &[GRID]);

    // Another worker of the grid: the router says who may.
    let (code, message) = escalate_as(
        &service,
        &token("w-2", Role::Responder, &[GRID]),
        escalate(&id, "", "w2-1"),
    )
    .await
    .unwrap_err();
    assert_eq!(code, Code::PermissionDenied, "{message}");
    assert!(message.contains("only its responder"), "{message}");
    // A console reads but never acts: refused before anything is sent.
    let (code, message) = escalate_as(
        &service,
        &token("wall", Role::Console, &[GRID]),
        escalate(&id, "", "wall-1"),
    )
    .await
    .unwrap_err();
    assert_eq!(code, Code::PermissionDenied, "{message}");
    // A supervisor of another grid does not even see it.
    let (code, message) = escalate_as(
        &service,
        &token("s-9", Role::Supervisor, &["grid-0009"]),
        escalate(&id, "", "s9-1"),
    )
    .await
    .unwrap_err();
    assert_eq!(code, Code::PermissionDenied, "{message}");
    // Acting under someone else's id is refused.
    let mut spoofed = escalate(&id, "", "w1-x");
    spoofed.responder_id = "w-2".into();
    let (code, _) = escalate_as(&service, &w1, spoofed).await.unwrap_err();
    assert_eq!(code, Code::PermissionDenied);

    // The assignee asks for help: the supervisor has it at once.
    let helped = escalate_as(&service, &w1, escalate(&id, "two men fighting", "phone-1"))
        .await
        .unwrap();
    assert_eq!(
        (
            helped.assignments[0].responder_id.as_str(),
            helped.assignments[0].level
        ),
        ("s-1", EscalationLevel::GridSupervisor as i32)
    );
    assert!(
        helped.assignments[0]
            .timed_out_responder_ids
            .contains(&"w-1".to_owned())
    );
    // A retry after a lost answer: OK, the same incident, nothing moved.
    let again = escalate_as(&service, &w1, escalate(&id, "two men fighting", "phone-1"))
        .await
        .unwrap();
    assert_eq!(again.revision, helped.revision);
    assert_eq!(again.assignments[0].responder_id, "s-1");
    // The same request id for another command of another caller is refused.
    let (code, message) = escalate_as(
        &service,
        &token("s-1", Role::Supervisor, &[GRID]),
        escalate(&id, "", "phone-1"),
    )
    .await
    .unwrap_err();
    assert_eq!(code, Code::InvalidArgument, "{message}");

    // The grid's supervisor pushes a worker's incident up; an admin pushes it further.
    publisher
        .send(
            &kafka.topics.help_events,
            GRID,
            &press("hh-0001-08", GRID, PressKind::Help),
        )
        .await;
    let second = wait_incident(&service, "the second press assigned", "hh-0001-08", |i| {
        i.assignments
            .first()
            .is_some_and(|a| a.responder_id.starts_with("w-"))
    })
    .await;
    let worker = second.assignments[0].responder_id.clone();
    let pushed = escalate_as(
        &service,
        &token("s-1", Role::Supervisor, &[GRID]),
        escalate(&second.incident_id, "no answer", "console-7"),
    )
    .await
    .unwrap();
    assert_eq!(
        (
            pushed.assignments[0].responder_id.as_str(),
            pushed.assignments[0].level
        ),
        ("s-1", EscalationLevel::GridSupervisor as i32)
    );
    assert!(
        pushed.assignments[0]
            .timed_out_responder_ids
            .contains(&worker)
    );
    let by_admin = escalate_as(
        &service,
        &token("root", Role::Admin, &["*"]),
        escalate(&second.incident_id, "", "admin-1"),
    )
    .await
    .unwrap();
    assert_ne!(
        by_admin.assignments[0].level,
        EscalationLevel::GridSupervisor as i32,
        "{by_admin:?}"
    );
    assert!(
        by_admin.assignments[0]
            .timed_out_responder_ids
            .contains(&"s-1".to_owned())
    );

    service.stop().await.unwrap();
    router_stop.cancel();
    within("the router to stop", router).await.unwrap().unwrap();
}

fn revoke(subject: &str) -> RevokeTokensRequest {
    RevokeTokensRequest {
        subject: subject.into(),
        reason: "lost phone".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_revokes_over_grpc_and_another_instance_refuses_the_token_within_seconds() {
    let kafka = TestKafka::new().await;
    let (first, second) = tokio::join!(
        kafka.start_service(Duration::from_secs(2)),
        kafka.start_service(Duration::from_secs(2)),
    );
    let lost_phone = older_token("w-42");
    for service in [&first, &second] {
        assert_eq!(list_as(service, &lost_phone).await, Ok(()));
    }
    // Only admins revoke.
    for who in [
        token("s-1", Role::Supervisor, &["*"]),
        token("w-42", Role::Responder, &["*"]),
    ] {
        let status = first
            .tokens_as(&who)
            .revoke_tokens(revoke("w-42"))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    }
    let admin = token("root", Role::Admin, &["*"]);
    let status = first
        .tokens_as(&admin)
        .revoke_tokens(revoke(""))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("subject"), "{status:?}");
    assert_eq!(
        list_as(&second, &lost_phone).await,
        Ok(()),
        "nothing revoked yet"
    );

    let revoked_at = Instant::now();
    let record = first
        .tokens_as(&admin)
        .revoke_tokens(revoke("w-42"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            record.subject.as_str(),
            record.revoked_by.as_str(),
            record.reason.as_str()
        ),
        ("w-42", "root", "lost phone")
    );
    // The instance that answered has applied it already.
    let answer = list_as(&first, &lost_phone).await;
    assert!(
        matches!(&answer, Err((Code::Unauthenticated, m)) if m.starts_with("token revoked")),
        "{answer:?}"
    );
    // The other instance follows the same record.
    within("the second instance to refuse the revoked token", async {
        loop {
            match list_as(&second, &lost_phone).await {
                Err((Code::Unauthenticated, m)) if m.starts_with("token revoked") => break,
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    })
    .await;
    let took = revoked_at.elapsed();
    assert!(took < Duration::from_secs(5), "took {took:?}");
    // A token minted after the revocation (the new phone) works; a colleague is untouched.
    assert_eq!(
        list_as(&second, &token("w-42", Role::Responder, &["*"])).await,
        Ok(())
    );
    assert_eq!(list_as(&second, &older_token("w-43")).await, Ok(()));

    first.stop().await.unwrap();
    second.stop().await.unwrap();
}
