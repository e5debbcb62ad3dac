//! Feedback to the resident through real Mosquitto, Kafka and the router: the button's
//! command topic (read by mosquitto_sub, a client we did not write) receives "assigned" and
//! then "help is coming" when the grid worker acknowledges; an HTTP button fetches its status
//! with its credential (curl, signature by Python's hmac).

mod support;

use helpgrid_common::envelope::new_envelope;
use helpgrid_common::kafka::KafkaArgs;
use helpgrid_common::reader::{Feed, follow};
use helpgrid_common::time::now_millis;
use helpgrid_gateway::config::GatewayConfig;
use helpgrid_proto::pb::{self, ActorRole, DeviceKind, ResponderRole, incident_event::Change};
use helpgrid_testkit::records::responder;
use helpgrid_testkit::{IncidentLog, Publisher, WAIT};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;
use support::*;
use tokio_util::sync::CancellationToken;

/// Waits until the feedback group's committed offsets cover every incident event on the
/// topic now: the gateway stores an event's offset once it is handled and commits the stored
/// offsets on an interval (not per event), so the group must still catch up by itself.
async fn wait_feedback_committed(args: &KafkaArgs, topic: &str) {
    let stop = CancellationToken::new();
    let mut feed = follow(args, "feedback-progress-check", topic, stop.clone())
        .await
        .expect("follow incident-events");
    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    while let Some(item) = feed.recv().await {
        match item {
            Feed::Record(r) => {
                next.insert(r.partition, r.offset + 1);
            }
            Feed::CaughtUp => break,
        }
    }
    stop.cancel();
    assert!(!next.is_empty(), "incident-events has records");
    let group = format!("{}gateway-feedback", args.topic_prefix);
    let consumer: BaseConsumer = args
        .group_consumer_config("feedback-progress-check", &group)
        .create()
        .expect("consumer");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut list = TopicPartitionList::new();
        for p in next.keys() {
            list.add_partition(topic, *p);
        }
        let committed = consumer
            .committed_offsets(list, Duration::from_secs(10))
            .expect("committed offsets");
        let behind: Vec<(i32, i64, Option<Offset>)> = next
            .iter()
            .map(|(p, n)| {
                (
                    *p,
                    *n,
                    committed.find_partition(topic, *p).map(|e| e.offset()),
                )
            })
            .filter(|(_, n, c)| !matches!(c, Some(Offset::Offset(c)) if c >= n))
            .collect();
        if behind.is_empty() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "feedback progress not committed (partition, wanted, committed): {behind:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

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
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn curl(method: &str, url: &str, device: &str, secret: &str, body: &str) -> (u16, String) {
    let ts = (now_millis() / 1000).to_string();
    let sig = python_sign(secret, &ts, body);
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-o", "-", "-w", "\n%{http_code}", "-X", method])
        .args(["-H", &format!("X-HelpGrid-Device: {device}")])
        .args(["-H", &format!("X-HelpGrid-Timestamp: {ts}")])
        .args(["-H", &format!("X-HelpGrid-Signature: {sig}")]);
    if !body.is_empty() {
        cmd.args([
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            body,
        ]);
    }
    let out = cmd.arg(url).output().expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').expect("status");
    (code.trim().parse().expect("status"), body.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_residents_button_hears_assigned_then_help_is_coming_and_an_http_button_can_ask() {
    let mq = Mosquitto::start();
    let mut wu = button("btn-wu", "h-wu", "g1", DeviceKind::ZigbeeButton);
    wu.model = "TS0216".into();
    let (args, topics) = setup(
        vec![responder("w-g1", ResponderRole::GridWorker, &["g1"], None)],
        &[wu, button("cell-li", "h-li", "g1", DeviceKind::HttpButton)],
    )
    .await;
    let mut log = IncidentLog::follow(&args, &topics.incident_events).await;
    let mut dead = DeadLetters::follow(&args, &topics).await;
    let router = RunningRouter::start(&args);
    let mut config = GatewayConfig::new(args.clone());
    config.mqtt = Some(mq.config(&format!("{}gw", args.topic_prefix)));
    config.http_listen = Some("127.0.0.1:0".parse().expect("addr"));
    config
        .credentials
        .insert("cred-cell-li".into(), b"li-secret".to_vec());
    config
        .feedback
        .apply_rule(r#"TS0216:acknowledged={"alarm":true,"melody":5,"duration":3}"#)
        .expect("rule");
    let gateway = RunningGateway::start(config).await;
    let http = gateway.bound.http.expect("http");
    // The hub's view of the button's command topic.
    let mut sub = Command::new("mosquitto_sub")
        .args([
            "-h",
            &mq.host,
            "-p",
            &mq.port.to_string(),
            "-u",
            &mq.user,
            "-P",
            &mq.password,
        ])
        .args([
            "-q",
            "1",
            "-v",
            "-C",
            "2",
            "-W",
            "60",
            "-t",
            "zigbee2mqtt/btn-wu/set",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("mosquitto_sub");
    wait_subscribed(&mq, &mut dead, "zigbee2mqtt").await;

    mq.publish(
        "zigbee2mqtt/btn-wu",
        r#"{"action":"single","battery":90,"linkquality":99}"#,
        false,
    );
    let events = log
        .wait_until("the press assigned", |ev| {
            ev.iter().any(|e| !e.assignments().is_empty())
        })
        .await;
    let incident = events[0].incident.clone().expect("incident");
    Publisher::new(&args)
        .send(
            &topics.incident_commands,
            "g1",
            &pb::IncidentCommand {
                envelope: Some(new_envelope("test-responder-app", now_millis())),
                incident_id: incident.incident_id.clone(),
                grid_id: "g1".into(),
                actor_id: "w-g1".into(),
                actor_role: ActorRole::Responder as i32,
                action: Some(pb::incident_command::Action::Acknowledge(
                    pb::AcknowledgeIncident {},
                )),
                request_id: String::new(),
            },
        )
        .await;
    log.wait_until("the press acknowledged", |ev| {
        ev.iter()
            .any(|e| matches!(e.change, Some(Change::Acknowledged(_))))
    })
    .await;
    let output = tokio::task::spawn_blocking(move || {
        let mut text = String::new();
        sub.stdout
            .take()
            .expect("stdout")
            .read_to_string(&mut text)
            .expect("read");
        sub.wait().expect("mosquitto_sub exits");
        text
    });
    let text = tokio::time::timeout(WAIT, output)
        .await
        .expect("two commands in time")
        .expect("join");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        [
            r#"zigbee2mqtt/btn-wu/set {"helpgrid_status":"assigned"}"#,
            r#"zigbee2mqtt/btn-wu/set {"alarm":true,"melody":5,"duration":3}"#,
        ]
    );
    // Both told: the group's progress covers them, committed without a commit per event.
    wait_feedback_committed(&args, &topics.incident_events).await;

    // The HTTP button: nothing yet, then its own incident's status.
    let url = format!("http://{http}/v1/status");
    let (code, body) = curl("GET", &url, "cell-li", "li-secret", "");
    assert_eq!(
        (code, body.contains(r#""status":"none""#)),
        (200, true),
        "{body}"
    );
    let (code, _) = curl("GET", &url, "cell-li", "wrong", "");
    assert_eq!(code, 401);
    let press = format!(r#"{{"kind":"help","pressed_at":{},"seq":1}}"#, now_millis());
    let (code, body) = curl(
        "POST",
        &format!("http://{http}/v1/press"),
        "cell-li",
        "li-secret",
        &press,
    );
    assert_eq!(code, 202, "{body}");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (code, body) = curl("GET", &url, "cell-li", "li-secret", "");
        assert_eq!(code, 200);
        if body.contains(r#""status":"assigned""#) {
            assert!(
                !body.contains(&incident.incident_id),
                "only its own incident: {body}"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "status never became assigned: {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    gateway.stop().await;
    router.stop().await;
}
