//! Police dispatch integration over the real server: the police subscription sees only the
//! incidents meant for police and resumes from its cursor with nothing missed or repeated;
//! every incident renders as a CAP 1.2 alert that the OASIS schema accepts.
#![allow(clippy::unwrap_used)]

mod support;

use helpgrid_auth::Role;
use helpgrid_proto::pb::incident_event::Change;
use helpgrid_proto::pb::{
    CameraLabel, Escalated, EscalationLevel, GeoPoint, GetIncidentCapRequest, Incident,
    IncidentSource, IncidentState, Track, WatchPoliceIncidentsRequest,
};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;
use support::{
    TestKafka, assigned_incident, event_id, next_update, opened_event, router_event, token, within,
};

const T0: i64 = 1_764_000_000_000;

fn camera_incident(id: &str, grid: &str) -> Incident {
    let mut incident = assigned_incident(id, grid, "cop-1", T0);
    incident.source = IncidentSource::Camera as i32;
    incident.camera_id = "cam-7".into();
    incident.camera_label = CameraLabel::Fight as i32;
    incident.camera_confidence = 0.91;
    incident.zone = "gate-east".into();
    incident.location = Some(GeoPoint {
        latitude: 32.6801,
        longitude: 109.0202,
    });
    incident.assignments[0].track = Track::Police as i32;
    incident.assignments[0].level = EscalationLevel::PatrolOfficer as i32;
    incident
}

/// A community incident whose track climbed to the police desk: now meant for police.
fn escalated_to_police_desk(mut incident: Incident) -> Incident {
    incident.state = IncidentState::Waiting as i32;
    incident.assignments[0].level = EscalationLevel::PoliceDesk as i32;
    incident.assignments[0].responder_id.clear();
    incident.assignments[0].ack_deadline = None;
    incident.revision += 1;
    incident
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_police_subscription_sees_police_bound_incidents_only_and_resumes_without_gaps_or_repeats()
 {
    let kafka = Arc::new(TestKafka::new().await);
    let service = kafka.start_service(Duration::from_secs(5)).await;
    let mut dispatch = service.dispatch_as(&token("cad-110", Role::Dispatch, &["*"]));
    let mut stream = dispatch
        .watch_police_incidents(WatchPoliceIncidentsRequest::default())
        .await
        .unwrap()
        .into_inner();

    let community = assigned_incident("in-c", "g1", "w1", T0);
    let camera = camera_incident("in-cam", "g2");
    kafka.publish_event(0, &opened_event(&community)).await;
    kafka.publish_event(1, &opened_event(&camera)).await;
    let first = next_update(&mut stream).await;
    assert_eq!(
        first
            .event
            .as_ref()
            .unwrap()
            .incident
            .as_ref()
            .unwrap()
            .incident_id,
        "in-cam"
    );
    drop(stream);

    // While the dispatch system is away: the community incident escalates to the police
    // desk (now police-bound), and another community incident opens (not police-bound).
    let escalated = escalated_to_police_desk(community.clone());
    let escalation = router_event(
        Some(&escalated),
        "",
        Change::Escalated(Escalated {
            track: Track::Community as i32,
            from_level: EscalationLevel::GridSupervisor as i32,
            to_level: EscalationLevel::PoliceDesk as i32,
            responder_id: String::new(),
            reason: "nobody on duty".into(),
        }),
    );
    kafka.publish_event(0, &escalation).await;
    kafka
        .publish_event(
            2,
            &opened_event(&assigned_incident("in-c2", "g3", "w2", T0)),
        )
        .await;
    let camera_again = opened_event(&camera_incident("in-cam2", "g2"));
    kafka.publish_event(1, &camera_again).await;

    let mut resumed = dispatch
        .watch_police_incidents(WatchPoliceIncidentsRequest {
            grid_ids: vec![],
            cursor: first.cursor.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut seen = Vec::new();
    for _ in 0..2 {
        let update = next_update(&mut resumed).await;
        seen.push(event_id(&update));
    }
    seen.sort();
    let mut expected = vec![
        escalation.envelope.unwrap().event_id,
        camera_again.envelope.unwrap().event_id,
    ];
    expected.sort();
    assert_eq!(
        seen, expected,
        "the escalation and the new camera alert, once each"
    );
    // Nothing else is pending: a marker published now is the very next update.
    let marker = camera_incident("in-marker", "g2");
    let marker_event = opened_event(&marker);
    kafka.publish_event(1, &marker_event).await;
    let next = next_update(&mut resumed).await;
    assert_eq!(event_id(&next), marker_event.envelope.unwrap().event_id);
    service.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cap_alerts_of_camera_and_button_incidents_validate_against_the_cap_1_2_schema() {
    let kafka = Arc::new(TestKafka::new().await);
    let camera = camera_incident("in-cam", "g2");
    let mut button = assigned_incident("in-btn", "g1", "w1", T0);
    button.location = None;
    button.household_id = "hh-<&>".into();
    kafka.publish_event(0, &opened_event(&camera)).await;
    kafka.publish_event(0, &opened_event(&button)).await;
    let service = kafka.start_service(Duration::from_secs(5)).await;
    let mut supervisor = service.dispatch_as(&token("sup", Role::Supervisor, &["g1", "g2"]));
    let schema = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/CAP-v1.2.xsd");
    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    for incident_id in ["in-cam", "in-btn"] {
        let alert = within(
            "GetIncidentCap",
            supervisor.get_incident_cap(GetIncidentCapRequest {
                incident_id: incident_id.into(),
            }),
        )
        .await
        .unwrap()
        .into_inner();
        assert_eq!(alert.incident_id, incident_id);
        let file = out_dir.join(format!("{incident_id}.cap.xml"));
        std::fs::write(&file, &alert.xml).unwrap();
        let xmllint = Command::new("xmllint")
            .arg("--noout")
            .arg("--schema")
            .arg(&schema)
            .arg(&file)
            .output()
            .unwrap_or_else(|e| {
                panic!("xmllint is needed (Debian: apt-get install libxml2-utils): {e}")
            });
        assert!(
            xmllint.status.success(),
            "{incident_id}: the CAP alert does not validate:\n{}\n{}",
            String::from_utf8_lossy(&xmllint.stderr),
            alert.xml
        );
    }
    service.stop().await.unwrap();
}
