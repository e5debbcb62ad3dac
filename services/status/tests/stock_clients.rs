//! Clients we did not write, against the real server on a socket: Python's grpcio and
//! grpcio-reflection (PyPI, in a virtual environment under `target/python/`) find the API
//! through reflection v1alpha, call it with messages built from what reflection returned,
//! get UNIMPLEMENTED for a method the server does not offer, a refusal that does not name the
//! hidden incident's grid, and PERMISSION_DENIED for a console's Escalate and RevokeTokens.
#![allow(clippy::unwrap_used)]

mod support;

use helpgrid_auth::Role;
use helpgrid_testkit::python;
use std::path::PathBuf;
use support::{TestKafka, token};

/// The stock client, pinned.
const GRPCIO: &[&str] = &["grpcio==1.85.1", "grpcio-reflection==1.85.1"];
const T0: i64 = 1_764_000_000_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpcio_finds_the_api_by_reflection_v1alpha_and_gets_unimplemented_for_an_unknown_method()
 {
    let python = tokio::task::spawn_blocking(|| python::venv("grpcio", GRPCIO));
    let kafka = TestKafka::new().await;
    let service = kafka.start_service_with_a_hidden_grid(T0).await;
    let python = python.await.unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/grpcio_client.py");
    let address = service.addr.to_string();
    let console = token("console-g7", Role::Console, &["g7"]);
    let out = tokio::task::spawn_blocking(move || {
        python::run_script(
            &python,
            &script,
            &[&address, &console, "in-1", "in-hidden", "g9-secret"],
        )
    })
    .await
    .unwrap();
    // The script exits non-zero on a failed check; these lines say each one ran.
    for line in [
        "ok: reflection v1alpha lists the services",
        "ok: GetIncident returns in-1",
        "ok: outside the token's grids: StatusCode.PERMISSION_DENIED",
        "ok: Escalate with a console token: StatusCode.PERMISSION_DENIED",
        "ok: RevokeTokens with a console token: StatusCode.PERMISSION_DENIED",
        "ok: unknown method (token: True): StatusCode.UNIMPLEMENTED",
        "ok: unknown method (token: False): StatusCode.UNIMPLEMENTED",
    ] {
        assert!(out.contains(line), "missing {line:?} in:\n{out}");
    }
    service.stop().await.unwrap();
}
