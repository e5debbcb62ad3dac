//! A stock tool no one here wrote, against the real server on a socket: grpcurl (built from
//! the Go module proxy at a pinned version), with its default settings, as an operator would
//! use it — list and describe the API by reflection, check health, read an incident with a
//! bearer token, follow WatchIncidents from a cursor, and get the right status codes for a
//! call outside the token's grids, a call without a token and a malformed request.
#![allow(clippy::unwrap_used)]

mod support;

use helpgrid_auth::Role;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use support::{TestKafka, assigned_incident, opened_event, token};

const GRPCURL: (&str, &str) = ("github.com/fullstorydev/grpcurl/cmd/grpcurl", "v1.9.4");
const T0: i64 = 1_764_000_000_000;

/// grpcurl against `address` in plaintext, with `args` before the address and `call` after it.
fn grpcurl(tool: &Path, address: &str, args: &[&str], call: &[&str]) -> Output {
    Command::new(tool)
        .arg("-plaintext")
        .args(args)
        .arg(address)
        .args(call)
        .output()
        .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The call's answer as JSON, or a panic with what grpcurl said.
fn answer(output: &Output) -> serde_json::Value {
    assert!(
        output.status.success(),
        "grpcurl failed: {}\n{}",
        stdout(output),
        stderr(output)
    );
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("grpcurl printed no JSON ({e}): {}", stdout(output)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_lists_describes_reads_and_watches_with_the_right_status_codes() {
    let tool = tokio::task::spawn_blocking(|| helpgrid_testkit::go::tool(GRPCURL.0, GRPCURL.1));
    let kafka = TestKafka::new().await;
    let service = kafka.start_service_with_a_hidden_grid(T0).await;
    let tool: PathBuf = tool.await.unwrap();
    let address = service.addr.to_string();
    let console = token("console-g7", Role::Console, &["g7"]);
    let bearer = format!("authorization: Bearer {console}");
    let with_token = ["-H", bearer.as_str()];

    // Reflection: the services and a method's signature, without any .proto file at hand.
    let listed = grpcurl(&tool, &address, &[], &["list"]);
    let services = stdout(&listed);
    for name in [
        "helpgrid.v1.IncidentService",
        "helpgrid.v1.DispatchService",
        "helpgrid.v1.RosterService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            services.lines().any(|l| l.trim() == name),
            "`grpcurl list` lacks {name}: {services}{}",
            stderr(&listed)
        );
    }
    let described = grpcurl(
        &tool,
        &address,
        &[],
        &["describe", "helpgrid.v1.IncidentService.GetIncident"],
    );
    assert!(
        stdout(&described).contains(
            "rpc GetIncident ( .helpgrid.v1.GetIncidentRequest ) returns ( .helpgrid.v1.Incident )"
        ),
        "describe: {}{}",
        stdout(&described),
        stderr(&described)
    );

    // Health, as a probe or an operator checks it: no token needed.
    let health = answer(&grpcurl(
        &tool,
        &address,
        &[],
        &["grpc.health.v1.Health/Check"],
    ));
    assert_eq!(health["status"], "SERVING", "{health}");

    // A read with the console's token, the request written as JSON.
    let incident = answer(&grpcurl(
        &tool,
        &address,
        &[&with_token[..], &["-d", r#"{"incident_id": "in-1"}"#]].concat(),
        &["helpgrid.v1.IncidentService/GetIncident"],
    ));
    assert_eq!(incident["incidentId"], "in-1", "{incident}");
    assert_eq!(incident["gridId"], "g7", "{incident}");

    // Outside the token's grids: refused, without naming the hidden incident's grid.
    let hidden = grpcurl(
        &tool,
        &address,
        &[&with_token[..], &["-d", r#"{"incident_id": "in-hidden"}"#]].concat(),
        &["helpgrid.v1.IncidentService/GetIncident"],
    );
    assert!(!hidden.status.success());
    assert!(
        stderr(&hidden).contains("Code: PermissionDenied"),
        "{}",
        stderr(&hidden)
    );
    assert!(
        !stderr(&hidden).contains("g9-secret"),
        "{}",
        stderr(&hidden)
    );

    // No token at all, and a request that names no incident.
    let anonymous = grpcurl(
        &tool,
        &address,
        &["-d", r#"{"incident_id": "in-1"}"#],
        &["helpgrid.v1.IncidentService/GetIncident"],
    );
    assert!(
        stderr(&anonymous).contains("Code: Unauthenticated"),
        "{}",
        stderr(&anonymous)
    );
    let empty = grpcurl(
        &tool,
        &address,
        &[&with_token[..], &["-d", "{}"]].concat(),
        &["helpgrid.v1.IncidentService/GetIncident"],
    );
    assert!(
        stderr(&empty).contains("Code: InvalidArgument"),
        "{}",
        stderr(&empty)
    );

    // Watch from the cursor of a list: what opens after it streams, in the token's grids only.
    let listed = answer(&grpcurl(
        &tool,
        &address,
        &[&with_token[..], &["-d", "{}"]].concat(),
        &["helpgrid.v1.IncidentService/ListIncidents"],
    ));
    let cursor = listed["cursor"].as_str().unwrap().to_owned();
    assert!(!cursor.is_empty(), "{listed}");
    kafka
        .publish_event(1, &opened_event(&assigned_incident("in-2", "g7", "r1", T0)))
        .await;
    kafka
        .publish_event(
            0,
            &opened_event(&assigned_incident("in-hidden-2", "g9-secret", "r9", T0)),
        )
        .await;
    let request = format!(r#"{{"cursor": "{cursor}"}}"#);
    let address_for_watch = address.clone();
    let tool_for_watch = tool.clone();
    let watch_args = [&with_token[..], &["-max-time", "4", "-d", &request]].concat();
    let watch_args: Vec<String> = watch_args.iter().map(|a| (*a).to_owned()).collect();
    let watched = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = watch_args.iter().map(String::as_str).collect();
        grpcurl(
            &tool_for_watch,
            &address_for_watch,
            &args,
            &["helpgrid.v1.IncidentService/WatchIncidents"],
        )
    })
    .await
    .unwrap();
    // The stream ends at -max-time (DeadlineExceeded); what it printed before is the test.
    let updates = stdout(&watched);
    assert!(
        updates.contains(r#""incidentId": "in-2""#),
        "the watch missed in-2: {updates}{}",
        stderr(&watched)
    );
    assert!(
        !updates.contains("in-hidden") && !updates.contains("g9-secret"),
        "the watch leaked another grid: {updates}"
    );
    assert!(
        !updates.contains(r#""incidentId": "in-1""#),
        "the watch repeated what came before its cursor: {updates}"
    );
    service.stop().await.unwrap();
}
