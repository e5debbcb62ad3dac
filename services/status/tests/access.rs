//! Who may do what, over the real server: every RPC refuses a missing or bad token with
//! UNAUTHENTICATED, a role its rule does not list or a target outside the token's grids
//! with PERMISSION_DENIED, and lets the right caller through.
#![allow(clippy::unwrap_used)]

mod support;

use helpgrid_auth::{Bearer, Role, TokenKey};
use helpgrid_proto::pb::dispatch_service_client::DispatchServiceClient;
use helpgrid_proto::pb::incident_service_client::IncidentServiceClient;
use helpgrid_proto::pb::roster_service_client::RosterServiceClient;
use helpgrid_proto::pb::{
    AcknowledgeRequest, CameraLabel, CloseRequest, EscalationLevel, GeoPoint,
    GetIncidentCapRequest, GetIncidentRequest, GetResponderRequest, IncidentOutcome,
    IncidentSource, ListIncidentsRequest, ListRespondersRequest, Responder, ResponderRole,
    SetDutyRequest, Track, UpdateLocationRequest, UpsertResponderRequest, WatchIncidentsRequest,
    WatchPoliceIncidentsRequest,
};
use std::sync::Arc;
use std::time::Duration;
use support::{TestKafka, TestService, assigned_incident, opened_event, token};
use tonic::Code;
use tonic::transport::Channel;

const T0: i64 = 1_764_000_000_000;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Rpc {
    GetIncident,
    ListIncidents,
    WatchIncidents,
    Acknowledge,
    Close,
    WatchPoliceIncidents,
    GetIncidentCap,
    UpsertResponder,
    GetResponder,
    ListResponders,
    SetDuty,
    UpdateLocation,
}

const EVERY_RPC: [Rpc; 12] = [
    Rpc::GetIncident,
    Rpc::ListIncidents,
    Rpc::WatchIncidents,
    Rpc::Acknowledge,
    Rpc::Close,
    Rpc::WatchPoliceIncidents,
    Rpc::GetIncidentCap,
    Rpc::UpsertResponder,
    Rpc::GetResponder,
    Rpc::ListResponders,
    Rpc::SetDuty,
    Rpc::UpdateLocation,
];

fn r1() -> Responder {
    Responder {
        responder_id: "r1".into(),
        display_name: "吴建国".into(),
        role: ResponderRole::GridWorker as i32,
        grid_ids: vec!["g7".into()],
        on_duty: true,
        ..Default::default()
    }
}

/// Sends the token if there is one: the same client type with and without.
#[derive(Clone)]
struct MaybeBearer(Option<Bearer>);

impl tonic::service::Interceptor for MaybeBearer {
    fn call(&mut self, request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        match &mut self.0 {
            Some(bearer) => bearer.call(request),
            None => Ok(request),
        }
    }
}

/// Calls `rpc` with `token` (none: no authorization header) on targets in grid g7 — the
/// button incident in-1, the camera incident in-2, responder r1 — and returns the code.
async fn call(service: &TestService, rpc: Rpc, token: Option<&str>) -> Code {
    let auth = MaybeBearer(token.map(|t| Bearer::new(t).unwrap()));
    let channel: Channel = service.channel.clone();
    let mut incidents = IncidentServiceClient::with_interceptor(channel.clone(), auth.clone());
    let mut dispatch = DispatchServiceClient::with_interceptor(channel.clone(), auth.clone());
    let mut roster = RosterServiceClient::with_interceptor(channel, auth);
    let outcome = match rpc {
        Rpc::GetIncident => incidents
            .get_incident(GetIncidentRequest {
                incident_id: "in-1".into(),
            })
            .await
            .map(drop),
        Rpc::ListIncidents => incidents
            .list_incidents(ListIncidentsRequest {
                grid_ids: vec!["g7".into()],
                ..Default::default()
            })
            .await
            .map(drop),
        Rpc::WatchIncidents => incidents
            .watch_incidents(WatchIncidentsRequest {
                grid_ids: vec!["g7".into()],
                ..Default::default()
            })
            .await
            .map(drop),
        Rpc::Acknowledge => incidents
            .acknowledge(AcknowledgeRequest {
                incident_id: "in-1".into(),
                responder_id: String::new(),
                request_id: String::new(),
            })
            .await
            .map(drop),
        Rpc::Close => incidents
            .close(CloseRequest {
                incident_id: "in-1".into(),
                responder_id: String::new(),
                outcome: IncidentOutcome::ResolvedOnSpot as i32,
                ..Default::default()
            })
            .await
            .map(drop),
        Rpc::WatchPoliceIncidents => dispatch
            .watch_police_incidents(WatchPoliceIncidentsRequest {
                grid_ids: vec!["g7".into()],
                cursor: String::new(),
                ..Default::default()
            })
            .await
            .map(drop),
        Rpc::GetIncidentCap => dispatch
            .get_incident_cap(GetIncidentCapRequest {
                incident_id: "in-2".into(),
            })
            .await
            .map(drop),
        Rpc::UpsertResponder => roster
            .upsert_responder(UpsertResponderRequest {
                responder: Some(r1()),
            })
            .await
            .map(drop),
        Rpc::GetResponder => roster
            .get_responder(GetResponderRequest {
                responder_id: "r1".into(),
            })
            .await
            .map(drop),
        Rpc::ListResponders => roster
            .list_responders(ListRespondersRequest {
                grid_id: "g7".into(),
                on_duty_only: false,
            })
            .await
            .map(drop),
        Rpc::SetDuty => roster
            .set_duty(SetDutyRequest {
                responder_id: "r1".into(),
                on_duty: true,
            })
            .await
            .map(drop),
        Rpc::UpdateLocation => roster
            .update_location(UpdateLocationRequest {
                responder_id: "r1".into(),
                location: Some(GeoPoint {
                    latitude: 32.68,
                    longitude: 109.02,
                }),
            })
            .await
            .map(drop),
    };
    outcome.err().map_or(Code::Ok, |s| s.code())
}

/// A service knowing a button incident (in-1, g7, assigned to r1), a camera incident (in-2,
/// g7, police track) and responder r1; no router, so commands time out quickly.
async fn service() -> (Arc<TestKafka>, TestService) {
    let kafka = Arc::new(TestKafka::new().await);
    let button = assigned_incident("in-1", "g7", "r1", T0);
    let mut camera = assigned_incident("in-2", "g7", "cop-1", T0 + 1);
    camera.source = IncidentSource::Camera as i32;
    camera.camera_id = "cam-7".into();
    camera.camera_label = CameraLabel::Fight as i32;
    camera.assignments[0].track = Track::Police as i32;
    camera.assignments[0].level = EscalationLevel::PatrolOfficer as i32;
    kafka.publish_event(0, &opened_event(&button)).await;
    kafka.publish_event(0, &opened_event(&camera)).await;
    let service = kafka.start_service(Duration::from_millis(300)).await;
    let admin = token("admin", Role::Admin, &["*"]);
    assert_eq!(
        call(&service, Rpc::UpsertResponder, Some(&admin)).await,
        Code::Ok
    );
    (kafka, service)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_refuses_a_missing_garbled_foreign_or_expired_token_as_unauthenticated() {
    let (_kafka, service) = service().await;
    let foreign = TokenKey::from_secret(b"someone-elses-key-someone-elses-key")
        .unwrap()
        .mint("admin", Role::Admin, &["*".into()], Duration::from_secs(60))
        .unwrap();
    let expired = support::test_key()
        .sign(&helpgrid_auth::Claims {
            iss: helpgrid_auth::ISSUER.into(),
            sub: "admin".into(),
            role: Role::Admin,
            grids: vec!["*".into()],
            iat: 1,
            exp: 2,
        })
        .unwrap();
    for rpc in EVERY_RPC {
        for (what, token) in [
            ("no token", None),
            ("garbled", Some("not-a-token")),
            ("foreign key", Some(foreign.as_str())),
            ("expired", Some(expired.as_str())),
        ] {
            assert_eq!(
                call(&service, rpc, token).await,
                Code::Unauthenticated,
                "{rpc:?} with {what}"
            );
        }
    }
    service.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_refuses_roles_and_scopes_it_does_not_allow_and_admits_those_it_does() {
    let (_kafka, service) = service().await;
    let console_g7 = token("console-7", Role::Console, &["g7"]);
    let console_g9 = token("console-9", Role::Console, &["g9"]);
    let r1 = token("r1", Role::Responder, &["g7"]);
    let r1_elsewhere = token("r1", Role::Responder, &["g9"]);
    let r2 = token("r2", Role::Responder, &["g7"]);
    let supervisor_g7 = token("sup-7", Role::Supervisor, &["g7"]);
    let supervisor_g9 = token("sup-9", Role::Supervisor, &["g9"]);
    let dispatch = token("cad-110", Role::Dispatch, &["*"]);
    let dispatch_g9 = token("cad-9", Role::Dispatch, &["g9"]);
    let admin = token("admin", Role::Admin, &["*"]);
    let admin_g9 = token("admin-9", Role::Admin, &["g9"]);

    // (rpc, a caller refused, a caller admitted). "Admitted" means past the access check:
    // commands then time out (no router here), which is not an access answer.
    let cases: [(Rpc, &[&str], &str); 12] = [
        (Rpc::GetIncident, &[&console_g9, &dispatch], &console_g7),
        (
            Rpc::ListIncidents,
            &[&console_g9, &r1_elsewhere],
            &console_g7,
        ),
        (
            Rpc::WatchIncidents,
            &[&console_g9, &dispatch_g9],
            &supervisor_g7,
        ),
        (
            Rpc::Acknowledge,
            &[&console_g7, &admin, &r1_elsewhere, &dispatch],
            &r1,
        ),
        (
            Rpc::Close,
            &[&console_g7, &admin, &supervisor_g9],
            &supervisor_g7,
        ),
        (
            Rpc::WatchPoliceIncidents,
            &[&console_g7, &r1, &dispatch_g9],
            &dispatch,
        ),
        (
            Rpc::GetIncidentCap,
            &[&console_g7, &r1, &dispatch_g9],
            &dispatch,
        ),
        (
            Rpc::UpsertResponder,
            &[&supervisor_g7, &r1, &admin_g9],
            &admin,
        ),
        (Rpc::GetResponder, &[&console_g7, &r2, &supervisor_g9], &r1),
        (
            Rpc::ListResponders,
            &[&console_g7, &r1, &supervisor_g9],
            &supervisor_g7,
        ),
        (
            Rpc::SetDuty,
            &[&console_g7, &r2, &supervisor_g9, &dispatch],
            &r1,
        ),
        (
            Rpc::UpdateLocation,
            &[&r2, &supervisor_g9, &dispatch],
            &supervisor_g7,
        ),
    ];
    assert_eq!(cases.map(|c| c.0), EVERY_RPC);
    for (rpc, refused, admitted) in cases {
        for (n, token) in refused.iter().enumerate() {
            assert_eq!(
                call(&service, rpc, Some(token)).await,
                Code::PermissionDenied,
                "{rpc:?}, refused caller #{n}"
            );
        }
        let code = call(&service, rpc, Some(admitted)).await;
        assert!(
            !matches!(code, Code::PermissionDenied | Code::Unauthenticated),
            "{rpc:?}: the admitted caller got {code:?}"
        );
    }
    // Health stays open to probes without a token.
    let health = service
        .health()
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await;
    assert!(health.is_ok());
    service.stop().await.unwrap();
}
