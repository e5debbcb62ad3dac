//! Signed HTTP through curl (a client we did not write; signatures made by Python's hmac,
//! not by our code), the gateway, the shared Kafka broker and the real router.

mod support;

use helpgrid_gateway::config::GatewayConfig;
use helpgrid_proto::pb::{DeviceKind, PressKind, ResponderRole, Track, help_event};
use helpgrid_testkit::records::responder;
use helpgrid_testkit::{IncidentLog, WAIT};
use std::net::SocketAddr;
use std::process::Command;
use support::*;

/// `X-HelpGrid-Signature` as a device computes it, with Python's hmac module.
fn python_sign(secret: &str, timestamp: &str, body: &str) -> String {
    let out = Command::new("python3")
        .args([
            "-c",
            "import hmac,hashlib,sys; print(hmac.new(sys.argv[1].encode(), (sys.argv[2]+'.'+sys.argv[3]).encode(), hashlib.sha256).hexdigest())",
            secret,
            timestamp,
            body,
        ])
        .output()
        .expect("python3");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// POSTs with curl; returns (status, body).
fn curl(addr: SocketAddr, path: &str, headers: &[(&str, String)], body: &str) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-o", "-", "-w", "\n%{http_code}", "-X", "POST"])
        .args(["-H", "Content-Type: application/json"]);
    for (k, v) in headers {
        cmd.args(["-H", &format!("{k}: {v}")]);
    }
    cmd.args(["--data-binary", body, &format!("http://{addr}{path}")]);
    let out = cmd.output().expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').expect("status line");
    (code.trim().parse().expect("status"), body.to_owned())
}

fn signed(device: &str, secret: &str, body: &str, skew_s: i64) -> Vec<(&'static str, String)> {
    let ts = (helpgrid_common::time::now_millis() / 1000 + skew_s).to_string();
    let sig = python_sign(secret, &ts, body);
    vec![
        ("X-HelpGrid-Device", device.to_owned()),
        ("X-HelpGrid-Timestamp", ts),
        ("X-HelpGrid-Signature", sig),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_press_gets_202_and_is_assigned_a_bad_one_gets_a_reason_and_stores_nothing() {
    let mut off = button("cell-off", "h-off", "g2", DeviceKind::HttpButton);
    off.enabled = false;
    let (args, topics) = setup(
        vec![responder("w-g2", ResponderRole::GridWorker, &["g2"], None)],
        &[
            button("cell-1", "h-1", "g2", DeviceKind::HttpButton),
            button("cell-2", "h-2", "g2", DeviceKind::HttpButton),
            off,
        ],
    )
    .await;
    let mut log = IncidentLog::follow(&args, &topics.incident_events).await;
    let mut help = TopicLog::follow(&args, &topics.help_events).await;
    let router = RunningRouter::start(&args);
    let mut config = GatewayConfig::new(args.clone());
    config.http_listen = Some("127.0.0.1:0".parse().expect("addr"));
    config.rate_burst = 3;
    config.rate_per_minute = 1;
    for (r, s) in [
        ("cred-cell-1", "s3cret-1"),
        ("cred-cell-2", "s3cret-2"),
        ("cred-cell-off", "s3cret-off"),
    ] {
        config.credentials.insert(r.into(), s.as_bytes().to_vec());
    }
    let gateway = RunningGateway::start(config).await;
    let addr = gateway.bound.http.expect("http address");

    // Refusals first (cell-2): each with its status and reason, and nothing on Kafka.
    let body = r#"{"kind":"urgent","pressed_at":1764452336796,"seq":7}"#;
    let mut bad = signed("cell-2", "s3cret-2", body, 0);
    bad[2].1 = python_sign("wrong-secret", &bad[1].1, body);
    let (status, text) = curl(addr, "/v1/press", &bad, body);
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("bad_signature"), "{text}");
    let (status, text) = curl(
        addr,
        "/v1/press",
        &signed("cell-2", "s3cret-2", body, -3600),
        body,
    );
    assert_eq!(
        (status, text.contains("outside_replay_window")),
        (401, true),
        "{text}"
    );
    let (status, text) = curl(
        addr,
        "/v1/press",
        &signed("cell-2", "s3cret-2", "{}", 0),
        body,
    );
    assert_eq!(status, 401, "a signature over another body: {text}");
    // (cell-2's burst of 3 is used up now.)
    let (status, text) = curl(
        addr,
        "/v1/press",
        &signed("cell-2", "s3cret-2", body, 0),
        body,
    );
    assert_eq!(
        (status, text.contains("rate_limited")),
        (429, true),
        "{text}"
    );
    let (status, text) = curl(addr, "/v1/press", &[], body);
    assert_eq!(
        (status, text.contains("missing_device")),
        (400, true),
        "{text}"
    );
    let junk = r#"{"kind":"panic"}"#;
    let (status, text) = curl(
        addr,
        "/v1/press",
        &signed("cell-1", "s3cret-1", junk, 0),
        junk,
    );
    assert_eq!(
        (status, text.contains("unknown_value")),
        (400, true),
        "{text}"
    );
    let (status, text) = curl(
        addr,
        "/v1/press",
        &signed("cell-off", "s3cret-off", body, 0),
        body,
    );
    assert_eq!(
        (status, text.contains("disabled_device")),
        (403, true),
        "{text}"
    );
    let big = format!(r#"{{"kind":"help","pad":"{}"}}"#, "x".repeat(5000));
    let (status, _) = curl(
        addr,
        "/v1/press",
        &signed("cell-1", "s3cret-1", &big, 0),
        &big,
    );
    assert_eq!(status, 413);

    // A good press from cell-1: 202 once Kafka has it, then assigned.
    let now = helpgrid_common::time::now_millis();
    let good = format!(r#"{{"kind":"help","pressed_at":{now},"seq":1,"battery":64}}"#);
    let (status, text) = curl(
        addr,
        "/v1/press",
        &signed("cell-1", "s3cret-1", &good, 0),
        &good,
    );
    assert_eq!(status, 202, "{text}");
    let event_id = serde_json::from_str::<serde_json::Value>(&text).expect("json")["event_id"]
        .as_str()
        .expect("event id")
        .to_owned();
    let events = log
        .wait_until("the HTTP press assigned", |ev| {
            ev.iter().any(|e| !e.assignments().is_empty())
        })
        .await;
    let incident = events[0].incident.clone().expect("incident");
    assert_eq!(incident.incident_id, format!("inc-{event_id}"));
    assert_eq!(incident.household_id, "h-1");
    assert_eq!(incident.press_kind, PressKind::Help as i32);
    assert!(events.iter().any(|e| {
        e.assignments()
            .iter()
            .any(|a| a.responder_id == "w-g2" && a.track == Track::Community as i32)
    }));

    // Same grid, same partition: everything refused before it would be on Kafka before it.
    assert!(help.read_until(WAIT, |r| !r.is_empty()).await);
    let stored = help.help_events();
    assert_eq!(
        stored.len(),
        1,
        "only the good press is on Kafka: {stored:?}"
    );
    let Some(help_event::Body::ButtonPress(p)) = &stored[0].1.body else {
        panic!("a press");
    };
    assert_eq!(
        (
            stored[0].0.as_str(),
            p.device_id.as_str(),
            p.battery_percent
        ),
        ("g2", "cell-1", 64)
    );

    gateway.stop().await;
    router.stop().await;
}
