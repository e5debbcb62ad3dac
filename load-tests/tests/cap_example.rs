//! `docs/cap-example.xml` comes from the running system, so it cannot drift from the
//! routing rules: a camera's fight detection goes through the real router (critical
//! priority, a grid worker and a patrol officer) and the status service renders it as CAP
//! over gRPC. The test fails when the committed file differs from what the system renders
//! now (the `<sent>` and `<onset>` times aside: they are the run's clock);
//! `HELPGRID_REGENERATE_DOCS=1` rewrites the file instead. The document is also checked
//! against the OASIS schema with xmllint. `docs/cap-example-closed.xml` is the same incident
//! after the patrol officer closed it (an Update with the outcome).

mod support;

use helpgrid_auth::Role;
use helpgrid_common::topics::Topics;
use helpgrid_load_tests::sim;
use helpgrid_proto::pb::dispatch_service_client::DispatchServiceClient;
use helpgrid_proto::pb::{
    AcknowledgeRequest, CameraLabel, CloseRequest, GetIncidentCapRequest, IncidentOutcome,
    IncidentState, Priority, ResponderRole,
};
use helpgrid_testkit::Publisher;
use helpgrid_testkit::records::{camera, responder};
use std::path::PathBuf;
use support::{Stack, bearer, wait_for_incident};

/// A fixed event id (as a Frigate event id would be), so the incident id and the CAP
/// identifier are the same on every run.
const EVENT_ID: &str = "frigate-1764403200.123456-fight";

fn repo_file(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path)
}

/// The document with the run's clock taken out.
fn without_times(xml: &str) -> String {
    xml.lines()
        .map(|line| {
            let trimmed = line.trim_start();
            for tag in ["sent", "onset"] {
                if trimmed.starts_with(&format!("<{tag}>")) {
                    return format!("<{tag}>(time of the run)</{tag}>");
                }
            }
            line.to_owned()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_committed_cap_example_is_what_the_system_renders_for_a_fight_detection() {
    let stack = Stack::start(vec![
        responder("wu-2", ResponderRole::GridWorker, &["g2"], None),
        responder("cop-1", ResponderRole::PatrolOfficer, &["g2"], None),
    ])
    .await;
    let mut fight = camera("cam-7", "g2", CameraLabel::Fight, 0.91);
    if let Some(envelope) = fight.envelope.as_mut() {
        envelope.event_id = EVENT_ID.into();
    }
    let topics = Topics::with_prefix(&stack.args.topic_prefix);
    Publisher::new(&stack.args)
        .send(&topics.help_events, "g2", &fight)
        .await;
    let incident_id = format!("inc-{EVENT_ID}");
    let mut client = stack.incidents().await;
    let incident = wait_for_incident(&mut client, &incident_id, "assigned to both", |i| {
        i.state == IncidentState::Assigned as i32
            && i.assignments.iter().all(|a| !a.responder_id.is_empty())
            && i.assignments.len() == 2
    })
    .await;
    // The routing rules, as the router applied them.
    assert_eq!(incident.priority, Priority::Critical as i32);

    let channel = sim::connect(&stack.addr).await.expect("connect");
    let mut dispatch =
        DispatchServiceClient::with_interceptor(channel, bearer("cad-110", Role::Dispatch, &["*"]));
    let xml = dispatch
        .get_incident_cap(GetIncidentCapRequest {
            incident_id: incident_id.clone(),
        })
        .await
        .expect("GetIncidentCap")
        .into_inner()
        .xml;

    // The same incident once the patrol officer has been and closed it: an Update carrying
    // the outcome.
    let mut officer = stack.incidents_as("cop-1", Role::Responder, &["g2"]).await;
    officer
        .acknowledge(AcknowledgeRequest {
            incident_id: incident_id.clone(),
            responder_id: "cop-1".into(),
            request_id: "cap-example-ack".into(),
        })
        .await
        .expect("acknowledge");
    officer
        .close(CloseRequest {
            incident_id: incident_id.clone(),
            responder_id: "cop-1".into(),
            outcome: IncidentOutcome::Mediated as i32,
            note: "parties separated and calmed down".into(),
            request_id: "cap-example-close".into(),
            ..Default::default()
        })
        .await
        .expect("close");
    let closed_xml = dispatch
        .get_incident_cap(GetIncidentCapRequest {
            incident_id: incident_id.clone(),
        })
        .await
        .expect("GetIncidentCap")
        .into_inner()
        .xml;
    stack.stop().await;

    // A critical fight: immediate and severe, as the routing rules make it.
    for expected in [
        "<urgency>Immediate</urgency>",
        "<severity>Severe</severity>",
        "<category>Security</category>",
        "cop-1",
    ] {
        assert!(xml.contains(expected), "{expected} missing from:\n{xml}");
    }

    for expected in [
        "<msgType>Update</msgType>",
        "<urgency>Past</urgency>",
        "<value>INCIDENT_OUTCOME_MEDIATED</value>",
    ] {
        assert!(
            closed_xml.contains(expected),
            "{expected} missing from:\n{closed_xml}"
        );
    }
    let open = check_against_committed("docs/cap-example.xml", &xml);
    let closed = check_against_committed("docs/cap-example-closed.xml", &closed_xml);
    open.and(closed)
        .unwrap_or_else(|message| panic!("{message}"));
}

/// Validates `xml` against the OASIS schema (a panic if invalid) and compares it with the
/// committed `path` (or rewrites it under HELPGRID_REGENERATE_DOCS=1): `Err` names the drift.
fn check_against_committed(path: &str, xml: &str) -> Result<(), String> {
    let rendered = std::env::temp_dir().join(format!(
        "helpgrid-cap-{}-{}.xml",
        std::process::id(),
        path.replace('/', "-")
    ));
    std::fs::write(&rendered, xml).expect("write the rendered alert");
    let schema = repo_file("services/status/tests/fixtures/CAP-v1.2.xsd");
    let lint = std::process::Command::new("xmllint")
        .args(["--noout", "--schema"])
        .arg(&schema)
        .arg(&rendered)
        .output()
        .expect("xmllint (Debian: libxml2-utils)");
    let _ = std::fs::remove_file(&rendered);
    assert!(
        lint.status.success(),
        "{path}: the alert is not valid CAP 1.2: {}",
        String::from_utf8_lossy(&lint.stderr)
    );

    let committed_path = repo_file(path);
    if std::env::var("HELPGRID_REGENERATE_DOCS").as_deref() == Ok("1") {
        std::fs::write(&committed_path, xml).expect("write the example");
        return Ok(());
    }
    let committed = std::fs::read_to_string(&committed_path).unwrap_or_default();
    if without_times(&committed) == without_times(xml) {
        Ok(())
    } else {
        Err(format!(
            "{path} is not what the system renders now; regenerate it with \
             HELPGRID_REGENERATE_DOCS=1 cargo test -p helpgrid-load-tests --test cap_example\n\
             rendered now:\n{xml}"
        ))
    }
}
