//! The caller's own deadline (`grpc-timeout`) bounds a command's wait: a caller whose deadline
//! is shorter than the service's command timeout gets UNAVAILABLE and the retry hint before
//! its deadline, not its own stack's DEADLINE_EXCEEDED; a deadline too short to send anything
//! is answered DEADLINE_EXCEEDED by the service, saying the command was not sent (and it is
//! not in Kafka). Against a real broker with no router answering, from our Rust client and
//! from Python's grpcio (a client we did not write).
#![allow(clippy::unwrap_used)]

mod support;

use helpgrid_auth::Role;
use helpgrid_proto::pb::AcknowledgeRequest;
use helpgrid_testkit::python;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use support::{TestKafka, assigned_incident, opened_event, token};
use tonic::Code;

const T0: i64 = 1_764_000_000_000;
/// Longer than any deadline below: only the caller's deadline can end these waits early.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
const GRPCIO: &[&str] = &["grpcio==1.85.1", "grpcio-reflection==1.85.1"];

fn acknowledge(request_id: &str, deadline: Duration) -> tonic::Request<AcknowledgeRequest> {
    let mut request = tonic::Request::new(AcknowledgeRequest {
        incident_id: "in-1".into(),
        responder_id: "r1".into(),
        request_id: request_id.into(),
    });
    request.set_timeout(deadline);
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callers_deadline_bounds_the_wait_and_one_too_short_sends_nothing() {
    let python = tokio::task::spawn_blocking(|| python::venv("grpcio", GRPCIO));
    let kafka = TestKafka::new().await;
    kafka
        .publish_event(0, &opened_event(&assigned_incident("in-1", "g7", "r1", T0)))
        .await;
    let service = kafka.start_service(COMMAND_TIMEOUT).await;
    let responder = token("r1", Role::Responder, &["g7"]);
    let mut incidents = service.incidents_as(&responder);
    let commands = kafka.topics.incident_commands.clone();

    let deadline = Duration::from_secs(1);
    let started = Instant::now();
    let status = incidents
        .acknowledge(acknowledge("rust-ack-1", deadline))
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("retry with the same request_id"),
        "{status:?}"
    );
    assert!(took < deadline, "answered after {took:?}");
    assert_eq!(kafka.records_in(&commands), 1, "the command was sent");

    let status = incidents
        .acknowledge(acknowledge("rust-ack-2", Duration::from_millis(150)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        status.message().contains("NOT sent") && status.message().contains("150 ms"),
        "{status:?}"
    );
    assert_eq!(kafka.records_in(&commands), 1, "nothing more was sent");

    let python = python.await.unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/grpcio_deadline.py");
    let address = service.addr.to_string();
    let out = tokio::task::spawn_blocking(move || {
        python::run_script(&python, &script, &[&address, &responder, "in-1"])
    })
    .await
    .unwrap();
    // The script exits non-zero on a failed check; these lines say each one ran.
    for line in [
        "ok: deadline 1.5 s: StatusCode.UNAVAILABLE",
        "ok: deadline 0.15 s: StatusCode.DEADLINE_EXCEEDED",
    ] {
        assert!(out.contains(line), "missing {line:?} in:\n{out}");
    }
    assert_eq!(
        kafka.records_in(&commands),
        2,
        "the 1.5 s call was sent, the 150 ms one not"
    );
    service.stop().await.unwrap();
}
