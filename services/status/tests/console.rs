//! The big-screen console in a real headless Chromium, against a real broker, the real
//! router and the real status service: a press produced to Kafka appears on the page with
//! the responder's name masked; an Acknowledge over gRPC turns it acknowledged; the page
//! survives a restart of the status service and catches up on what happened meanwhile.
//! Saves a screenshot to target/artifacts/console.png.
#![allow(clippy::unwrap_used)]

mod support;

use helpgrid_auth::Role;
use helpgrid_proto::pb::{AcknowledgeRequest, PressKind, ResponderRole, UpsertResponderRequest};
use helpgrid_testkit::Publisher;
use helpgrid_testkit::browser::Browser;
use helpgrid_testkit::records::{press, responder};
use serde_json::Value;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use support::{TestKafka, start_router, token, within};

/// The page's open incidents: id, state and the row's text.
const ROWS: &str = "return [...document.querySelectorAll('#rows tr')].map(r => \
    ({ id: r.dataset.incident, state: r.dataset.state, text: r.innerText }));";

/// The status code of a plain HTTP GET (the console refuses before it streams anything).
async fn http_status(port: u16, path: &str, authorization: Option<&str>) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let auth = authorization
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).await.unwrap();
    String::from_utf8_lossy(&head[9..12]).parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_refuses_missing_wrong_role_and_out_of_scope_tokens() {
    let kafka = Arc::new(TestKafka::new().await);
    let port = helpgrid_testkit::browser::free_port();
    let service = kafka
        .start_service_with_console(Duration::from_secs(5), Some(port))
        .await;
    let console = token("office", Role::Console, &["grid-0001"]);
    let responder = token("w-1", Role::Responder, &["grid-0001"]);
    assert_eq!(http_status(port, "/console/console.js", None).await, 200);
    assert_eq!(http_status(port, "/console/", None).await, 401);
    assert_eq!(http_status(port, "/console/?token=forged", None).await, 401);
    assert_eq!(
        http_status(port, &format!("/console/?token={responder}"), None).await,
        403
    );
    assert_eq!(
        http_status(port, &format!("/console/?token={console}"), None).await,
        303
    );
    assert_eq!(http_status(port, "/console/events", None).await, 401);
    assert_eq!(
        http_status(port, "/console/events?grids=grid-0009", Some(&console)).await,
        403
    );
    assert_eq!(
        http_status(port, "/console/events?cursor=garbage", Some(&console)).await,
        400
    );
    service.stop().await.unwrap();
}

fn row_of<'a>(rows: &'a Value, household: &str) -> Option<&'a Value> {
    rows.as_array()?
        .iter()
        .find(|r| r["text"].as_str().is_some_and(|t| t.contains(household)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_press_appears_on_the_console_turns_acknowledged_and_survives_a_server_restart() {
    let kafka = Arc::new(TestKafka::new().await);
    let console_port = helpgrid_testkit::browser::free_port();
    let service = kafka
        .start_service_with_console(Duration::from_secs(10), Some(console_port))
        .await;
    let mut worker = responder("w-42", ResponderRole::GridWorker, &["grid-0001"], None);
    worker.display_name = "吴建国".into();
    service
        .roster()
        .upsert_responder(UpsertResponderRequest {
            responder: Some(worker),
        })
        .await
        .unwrap();
    let (router_stop, router) = start_router(&kafka.args);

    let browser = Browser::start().await;
    let console_token = token("安澜社区", Role::Console, &["grid-0001", "grid-0002"]);
    browser
        .open(&format!(
            "http://127.0.0.1:{console_port}/console/?token={console_token}"
        ))
        .await;
    browser
        .wait_for(
            "the console to go live",
            "return document.getElementById('link').className;",
            |v| v.as_str() == Some("link live"),
        )
        .await;
    let url = browser.eval("return location.href;").await;
    assert!(
        !url.as_str().unwrap().contains("token="),
        "the token left the address bar: {url}"
    );

    // A press, produced to Kafka like a button hub would.
    let publisher = Publisher::new(&kafka.args);
    let topics = &kafka.topics;
    publisher
        .send(
            &topics.help_events,
            "grid-0001",
            &press("hh-0001-07", "grid-0001", PressKind::Medical),
        )
        .await;
    let rows = browser
        .wait_for("the press on the page, assigned", ROWS, |rows| {
            row_of(rows, "hh-0001-07").is_some_and(|r| r["state"] == "assigned")
        })
        .await;
    let row = row_of(&rows, "hh-0001-07").unwrap().clone();
    let text = row["text"].as_str().unwrap();
    assert!(text.contains("吴某"), "the masked name shows: {text}");
    assert!(!text.contains("吴建国"), "the full name must not: {text}");
    let incident_id = row["id"].as_str().unwrap().to_owned();

    // The responder acknowledges over gRPC, with their own token.
    service
        .incidents_as(&token("w-42", Role::Responder, &["grid-0001"]))
        .acknowledge(AcknowledgeRequest {
            incident_id: incident_id.clone(),
            responder_id: "w-42".into(),
            request_id: String::new(),
        })
        .await
        .unwrap();
    browser
        .wait_for("the incident to show acknowledged", ROWS, |rows| {
            row_of(rows, "hh-0001-07").is_some_and(|r| r["state"] == "acknowledged")
        })
        .await;
    let page = browser.eval("return document.body.innerText;").await;
    let page = page.as_str().unwrap();
    for secret in ["吴建国", "32.68", "109.02"] {
        assert!(!page.contains(secret), "{secret} is on the page");
    }
    let screenshot = browser.screenshot_png().await;
    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    std::fs::write(artifacts.join("console.png"), &screenshot).unwrap();
    assert!(screenshot.starts_with(b"\x89PNG"), "a PNG screenshot");

    // The status service restarts; meanwhile a second household presses. The same page
    // (no reload) reconnects with its cursor and shows the new incident.
    browser
        .eval("window.sameDocument = true; return true;")
        .await;
    service.stop().await.unwrap();
    publisher
        .send(
            &topics.help_events,
            "grid-0002",
            &press("hh-0002-03", "grid-0002", PressKind::Help),
        )
        .await;
    let restarted = kafka
        .start_service_with_console(Duration::from_secs(10), Some(console_port))
        .await;
    let rows = browser
        .wait_for("the press made during the restart", ROWS, |rows| {
            row_of(rows, "hh-0002-03").is_some()
        })
        .await;
    assert!(
        row_of(&rows, "hh-0001-07").is_some_and(|r| r["state"] == "acknowledged"),
        "the first incident is still there, acknowledged: {rows}"
    );
    let ids: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["id"].as_str())
        .collect();
    assert_eq!(ids.len(), 2, "two open incidents, each once: {ids:?}");
    assert_eq!(
        browser.eval("return window.sameDocument === true;").await,
        Value::Bool(true),
        "the page was not reloaded"
    );
    let stream = browser.eval("return window.helpgridConsole;").await;
    assert_eq!(stream["repeats"], 0, "no update arrived twice: {stream}");
    assert_eq!(
        stream["snapshots"], 1,
        "resumed by cursor, not re-snapshotted: {stream}"
    );
    let open = browser
        .eval("return document.getElementById('open-count').textContent;")
        .await;
    assert_eq!(open, "2", "the open-incident counter agrees");

    browser.quit().await;
    restarted.stop().await.unwrap();
    router_stop.cancel();
    within("the router to stop", router).await.unwrap().unwrap();
}
