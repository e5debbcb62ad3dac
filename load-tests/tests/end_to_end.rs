//! HelpGrid end to end: a real Kafka broker, the router, and the status service's gRPC API
//! on a real socket with authentication on, used the way responders and the simulated city
//! use them. Needs HELPGRID_TEST_KAFKA (scripts/test sets it).

mod support;

use helpgrid_auth::Role;
use helpgrid_load_tests::city::CityShape;
use helpgrid_load_tests::residents::Activity;
use helpgrid_load_tests::responders::Behaviour;
use helpgrid_load_tests::sim::{self, SimArgs};
use helpgrid_proto::pb::{
    AcknowledgeRequest, CloseRequest, GetIncidentRequest, IncidentOutcome, IncidentState,
    Resolution, ResponderRole,
};
use helpgrid_testkit::records::responder;
use support::{KEY, Stack, press_and_wait_assigned};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_press_is_assigned_then_acknowledged_and_closed_over_grpc() {
    let stack = Stack::start(vec![responder(
        "wu-1",
        ResponderRole::GridWorker,
        &["g1"],
        None,
    )])
    .await;
    let incident = press_and_wait_assigned(&stack, "h-1", "g1").await;
    assert_eq!(incident.assignments[0].responder_id, "wu-1");
    let mut client = stack.incidents_as("wu-1", Role::Responder, &["g1"]).await;
    let acked = client
        .acknowledge(AcknowledgeRequest {
            incident_id: incident.incident_id.clone(),
            responder_id: "wu-1".into(),
            request_id: String::new(),
        })
        .await
        .expect("the assigned worker may acknowledge")
        .into_inner();
    assert_eq!(acked.state, IncidentState::Acknowledged as i32);
    assert!(acked.acknowledged_at.is_some());
    let close = CloseRequest {
        incident_id: incident.incident_id.clone(),
        responder_id: "wu-1".into(),
        note: "helped with the stairs".into(),
        ..Default::default()
    };
    // How it ended is not optional, and must be a value the contract knows.
    for (outcome, says) in [(0, "outcome is required"), (42, "outcome has no value 42")] {
        let refused = client
            .close(CloseRequest {
                outcome,
                ..close.clone()
            })
            .await
            .expect_err("a close without a known outcome");
        assert_eq!(refused.code(), Code::InvalidArgument, "{refused}");
        assert!(refused.message().contains(says), "{refused}");
        assert!(
            refused.message().contains("INCIDENT_OUTCOME_MEDIATED"),
            "the message lists the outcomes: {refused}"
        );
    }
    let closed = client
        .close(CloseRequest {
            outcome: IncidentOutcome::Mediated as i32,
            ..close
        })
        .await
        .expect("the worker may close what they acknowledged")
        .into_inner();
    assert_eq!(closed.state, IncidentState::Closed as i32);
    assert_eq!(closed.resolution_note, "helped with the stairs");
    assert_eq!(
        (closed.outcome, closed.resolution),
        (
            IncidentOutcome::Mediated as i32,
            Resolution::Resolved as i32
        ),
        "the outcome, and the resolution it means for readers written before outcomes"
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_acknowledge_sent_three_times_is_applied_once_and_succeeds_three_times() {
    let stack = Stack::start(vec![responder(
        "wu-1",
        ResponderRole::GridWorker,
        &["g1"],
        None,
    )])
    .await;
    let topics = helpgrid_common::topics::Topics::with_prefix(&stack.args.topic_prefix);
    let mut log = helpgrid_testkit::IncidentLog::follow(&stack.args, &topics.incident_events).await;
    let incident = press_and_wait_assigned(&stack, "h-1", "g1").await;
    let mut client = stack.incidents_as("wu-1", Role::Responder, &["g1"]).await;
    let ack = AcknowledgeRequest {
        incident_id: incident.incident_id.clone(),
        responder_id: String::new(),
        request_id: "phone-7f3a-ack".into(),
    };
    let mut revisions = Vec::new();
    for attempt in 1..=3 {
        let answer = client
            .acknowledge(ack.clone())
            .await
            .unwrap_or_else(|e| panic!("attempt {attempt}: {e}"))
            .into_inner();
        assert_eq!(answer.state, IncidentState::Acknowledged as i32);
        revisions.push(answer.revision);
    }
    assert!(
        revisions.windows(2).all(|w| w[0] == w[1]),
        "retries changed the incident: revisions {revisions:?}"
    );
    // Reusing the id for something else is a client bug, and says so.
    let reused = client
        .close(CloseRequest {
            incident_id: incident.incident_id.clone(),
            responder_id: String::new(),
            resolution: Resolution::Resolved as i32,
            outcome: IncidentOutcome::ResolvedOnSpot as i32,
            note: String::new(),
            request_id: "phone-7f3a-ack".into(),
        })
        .await
        .expect_err("a request id reused for a close");
    assert_eq!(reused.code(), Code::InvalidArgument, "{reused}");

    let events = log.settle(std::time::Duration::from_secs(2)).await;
    let of_incident = |change: &str| {
        events
            .iter()
            .filter(|e| {
                e.incident
                    .as_ref()
                    .is_some_and(|i| i.incident_id == incident.incident_id)
                    && e.change.as_ref().map(|c| c.name()) == Some(change)
            })
            .count()
    };
    assert_eq!(of_incident("acknowledged"), 1, "applied once");
    assert_eq!(of_incident("repeated"), 2, "the two retries were answered");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_responder_is_refused_and_closing_before_acknowledging_fails_its_precondition() {
    let stack = Stack::start(vec![
        responder("wu-1", ResponderRole::GridWorker, &["g1"], None),
        responder("wu-2", ResponderRole::GridWorker, &["g2"], None),
    ])
    .await;
    let incident = press_and_wait_assigned(&stack, "h-1", "g1").await;
    // wu-2's token covers g1 too, so the status service lets the call through and the
    // router's own check refuses it.
    let mut client = stack
        .incidents_as("wu-2", Role::Responder, &["g1", "g2"])
        .await;
    let refused = client
        .acknowledge(AcknowledgeRequest {
            incident_id: incident.incident_id.clone(),
            responder_id: "wu-2".into(),
            request_id: String::new(),
        })
        .await
        .expect_err("wu-2 is not assigned");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused}");
    assert!(
        refused.message().contains("wu-2 is not assigned"),
        "{}",
        refused.message()
    );
    let mut client = stack.incidents_as("wu-1", Role::Responder, &["g1"]).await;
    let early = client
        .close(CloseRequest {
            incident_id: incident.incident_id.clone(),
            responder_id: "wu-1".into(),
            resolution: Resolution::Resolved as i32,
            outcome: IncidentOutcome::ResolvedOnSpot as i32,
            note: String::new(),
            request_id: String::new(),
        })
        .await
        .expect_err("not acknowledged yet");
    assert_eq!(early.code(), Code::FailedPrecondition, "{early}");
    let unknown = client
        .acknowledge(AcknowledgeRequest {
            incident_id: "inc-does-not-exist".into(),
            responder_id: "wu-1".into(),
            request_id: String::new(),
        })
        .await
        .expect_err("unknown incident");
    assert_eq!(unknown.code(), Code::NotFound, "{unknown}");
    let still = client
        .get_incident(GetIncidentRequest {
            incident_id: incident.incident_id.clone(),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(
        still.state,
        IncidentState::Assigned as i32,
        "refused commands change nothing"
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulated_city_gets_every_incident_acknowledged_and_closed() {
    let shape = CityShape {
        grids: 4,
        workers_per_grid: 2,
        households_per_grid: 30,
        cameras_per_grid: 1,
        grids_per_beat: 2,
        officers_per_beat: 2,
        seed: 11,
    };
    let city = helpgrid_load_tests::city::City::build(&shape, "sim-");
    let stack = Stack::start(city.responders.clone()).await;
    let key_file = std::env::temp_dir().join(format!("helpgrid-e2e-{}.key", std::process::id()));
    std::fs::write(&key_file, KEY).expect("key file");
    let args = SimArgs {
        kafka: stack.args.clone(),
        status_addr: stack.addr.clone(),
        id_prefix: "sim-".into(),
        duration_s: Some(12.0),
        summary_every_s: 1.0,
        city: shape,
        activity: Activity {
            presses_per_s: 4.0,
            camera_alerts_per_s: 1.0,
            repeat_press_ratio: 0.1,
            urgent_ratio: 0.1,
            medical_ratio: 0.05,
        },
        // Straight to Kafka (the gateway path is covered by services/gateway's tests).
        mqtt: helpgrid_load_tests::devices::MqttArgs {
            mqtt_url: None,
            mqtt_username: None,
            mqtt_password: None,
            device_fault_ratio: 0.0,
        },
        behaviour: Behaviour {
            ack_after_min_s: 0.1,
            ack_after_max_s: 0.5,
            close_after_min_s: 0.1,
            close_after_max_s: 0.5,
            miss_ratio: 0.0,
        },
        auth_key_file: Some(key_file.clone()),
    };
    let tally = sim::run(args, std::future::pending(), |_, _| {})
        .await
        .expect("the city ran");
    let _ = std::fs::remove_file(&key_file);
    stack.stop().await;
    assert!(tally.presses_sent >= 40, "{tally}");
    assert!(tally.opened >= 20, "{tally}");
    assert!(
        tally.opened + tally.attached <= tally.presses_sent + tally.alerts_sent,
        "{tally}"
    );
    // Responders answer within a second and the deadlines are minutes: nobody is reassigned,
    // nothing is refused, and all but the last second's incidents are closed.
    assert_eq!(
        (tally.reassigned, tally.rejected, tally.api_refusals),
        (0, 0, 0),
        "{tally}"
    );
    assert!(tally.acknowledged >= tally.opened - 10, "{tally}");
    assert!(tally.closed >= tally.opened - 10, "{tally}");
    assert!(!tally.time_to_assign_ms.is_empty(), "{tally}");
}
