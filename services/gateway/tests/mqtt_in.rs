//! Zigbee2MQTT buttons and Frigate cameras through a real Mosquitto (messages published by
//! mosquitto_pub), the gateway, the shared Kafka broker and the real router.
//! Needs HELPGRID_TEST_KAFKA (scripts/test sets it) and Debian's mosquitto.

mod support;

use helpgrid_gateway::config::GatewayConfig;
use helpgrid_proto::pb::{
    CameraLabel, DeviceKind, HelpEvent, MaintenanceReason, PressKind, Priority, ResponderRole,
    Track, help_event, incident_event::Change,
};
use helpgrid_testkit::records::responder;
use helpgrid_testkit::{IncidentLog, WAIT};
use prost::Message as _;
use std::time::Duration;
use support::*;

/// What Zigbee2MQTT publishes for an Aqara button with `advanced.last_seen: ISO_8601`.
fn z2m(action: &str, last_seen: &str) -> String {
    format!(
        r#"{{"action":"{action}","battery":97,"device_temperature":28,"linkquality":116,"power_outage_count":3,"voltage":3015,"last_seen":"{last_seen}"}}"#
    )
}

fn now_iso() -> String {
    // Zigbee2MQTT's ISO_8601 last_seen, from the wall clock (so the router's age check holds).
    let ms = helpgrid_common::time::now_millis();
    let out = std::process::Command::new("date")
        .args([
            "-u",
            "-d",
            &format!("@{}.{:03}", ms / 1000, ms % 1000),
            "+%Y-%m-%dT%H:%M:%S.%3NZ",
        ])
        .output()
        .expect("date");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A Frigate `frigate/events` message as Frigate 0.14+ publishes it.
fn frigate(kind: &str, id: &str, camera: &str, label: &str, zones: &[&str], score: f64) -> String {
    let zones = serde_json::to_string(zones).expect("zones");
    let start = helpgrid_common::time::now_millis() as f64 / 1000.0;
    format!(
        r#"{{"type":"{kind}","before":{{"id":"{id}","camera":"{camera}","frame_time":{start},"label":"{label}","sub_label":null,"top_score":0.5,"false_positive":false,"start_time":{start},"end_time":null,"score":0.5,"box":[1,2,3,4],"area":4,"ratio":1.0,"region":[1,2,3,4],"current_zones":[],"entered_zones":[],"thumbnail":null,"has_snapshot":false,"has_clip":false,"active":true,"stationary":false,"motionless_count":0,"position_changes":0,"attributes":{{}}}},"after":{{"id":"{id}","camera":"{camera}","frame_time":{start},"snapshot":null,"label":"{label}","sub_label":null,"top_score":{score},"false_positive":false,"start_time":{start},"end_time":null,"score":{score},"box":[1,2,3,4],"area":4,"ratio":1.0,"region":[1,2,3,4],"current_zones":{zones},"entered_zones":{zones},"thumbnail":null,"has_snapshot":true,"has_clip":false,"active":true,"stationary":false,"motionless_count":0,"position_changes":0,"attributes":{{}},"current_attributes":[]}}}}"#
    )
}

fn assigned(events: &[&helpgrid_proto::pb::IncidentEvent]) -> Vec<(i32, String)> {
    events
        .iter()
        .flat_map(|e| e.assignments())
        .map(|a| (a.track, a.responder_id.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zigbee_presses_and_frigate_alerts_reach_the_right_responders() {
    let mq = Mosquitto::start();
    let (args, topics) = setup(
        vec![
            responder("w-g1", ResponderRole::GridWorker, &["g1"], None),
            responder(
                "cop-1",
                ResponderRole::PatrolOfficer,
                &["g1"],
                Some((32.68, 109.03)),
            ),
        ],
        &[
            button("btn-wu", "h-wu", "g1", DeviceKind::ZigbeeButton),
            button("btn-li", "h-li", "g1", DeviceKind::ZigbeeButton),
            button("btn-old", "h-old", "g1", DeviceKind::ZigbeeButton),
            camera("cam-gate", "post-gate", "g1"),
        ],
    )
    .await;
    // A press retained on the broker from long ago: seen on subscribe, never a press.
    mq.publish(
        "zigbee2mqtt/btn-old",
        &z2m("single", "2026-01-01T08:00:00.000Z"),
        true,
    );

    let mut log = IncidentLog::follow(&args, &topics.incident_events).await;
    let mut help = TopicLog::follow(&args, &topics.help_events).await;
    let mut dead = DeadLetters::follow(&args, &topics).await;
    let router = RunningRouter::start(&args);
    let mut config = GatewayConfig::new(args.clone());
    config.mqtt = Some(mq.config(&format!("{}gw", args.topic_prefix)));
    let gateway = RunningGateway::start(config).await;
    wait_subscribed(&mq, &mut dead, "zigbee2mqtt").await;

    // single → help, to the grid worker; long → urgent, community and police tracks.
    let single_seen = now_iso();
    mq.publish("zigbee2mqtt/btn-wu", &z2m("single", &single_seen), false);
    // The same message again (a QoS 1 redelivery): the same event, no second incident.
    mq.publish("zigbee2mqtt/btn-wu", &z2m("single", &single_seen), false);
    mq.publish("zigbee2mqtt/btn-li", &z2m("long", &now_iso()), false);
    // Frigate: fire at the gate (new, then updates), then a person in a zone of the same event.
    let fid = "1764452336.475377-mxklsc";
    mq.publish(
        "frigate/events",
        &frigate("new", fid, "cam-gate", "fire", &[], 0.81),
        false,
    );
    mq.publish(
        "frigate/events",
        &frigate("update", fid, "cam-gate", "fire", &[], 0.93),
        false,
    );
    mq.publish(
        "frigate/events",
        &frigate("update", fid, "cam-gate", "smoke", &[], 0.9),
        false,
    );
    let pid = "1764452340.100000-person";
    mq.publish(
        "frigate/events",
        &frigate("new", pid, "cam-gate", "person", &[], 0.9),
        false,
    );
    mq.publish(
        "frigate/events",
        &frigate("update", pid, "cam-gate", "person", &["yard"], 0.9),
        false,
    );

    let events = log
        .wait_until("three incidents assigned on every track", |ev| {
            ev.iter().map(|e| e.assignments().len()).sum::<usize>() >= 6
        })
        .await;
    let opened: Vec<_> = events
        .iter()
        .filter(|e| matches!(e.change, Some(Change::Opened(_))))
        .filter_map(|e| e.incident.clone())
        .collect();
    assert_eq!(opened.len(), 4, "wu, li, fire, intrusion: {opened:#?}");
    let wu = opened
        .iter()
        .find(|i| i.household_id == "h-wu")
        .expect("wu incident");
    assert_eq!(wu.press_kind, PressKind::Help as i32);
    assert_eq!(wu.priority, Priority::Normal as i32);
    assert_eq!(wu.device_id, "btn-wu");
    assert_eq!(
        assigned(&helpgrid_testkit::of_incident(&events, &wu.incident_id)),
        [(Track::Community as i32, "w-g1".to_owned())]
    );
    let li = opened
        .iter()
        .find(|i| i.household_id == "h-li")
        .expect("li incident");
    assert_eq!(li.press_kind, PressKind::Urgent as i32);
    assert_eq!(li.priority, Priority::High as i32);
    let mut li_tracks: Vec<i32> =
        assigned(&helpgrid_testkit::of_incident(&events, &li.incident_id))
            .into_iter()
            .map(|(t, _)| t)
            .collect();
    li_tracks.sort();
    assert_eq!(li_tracks, [Track::Community as i32, Track::Police as i32]);
    let fire = opened
        .iter()
        .find(|i| i.camera_label == CameraLabel::Fire as i32)
        .expect("fire incident");
    assert_eq!(fire.camera_id, "post-gate");
    assert!(fire.snapshot_ref.contains(fid));
    assert!(
        assigned(&helpgrid_testkit::of_incident(&events, &fire.incident_id))
            .contains(&(Track::Police as i32, "cop-1".to_owned()))
    );
    let intrusion = opened
        .iter()
        .find(|i| i.camera_label == CameraLabel::Intrusion as i32)
        .expect("intrusion incident");
    assert_eq!(intrusion.zone, "yard");

    // On Kafka: keyed by grid; one event per press and per (Frigate event, label); the
    // retained press is not there.
    assert!(help.read_until(WAIT, |r| r.len() >= 5).await);
    help.read_until(Duration::from_millis(500), |_| false).await;
    let records = help.help_events();
    assert!(records.iter().all(|(key, _)| key == "g1"));
    let presses: Vec<String> = records
        .iter()
        .filter_map(|(_, e)| match &e.body {
            Some(help_event::Body::ButtonPress(p)) => Some(p.device_id.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        presses.iter().filter(|d| *d == "btn-wu").count(),
        2,
        "the redelivered copy keeps its id"
    );
    assert!(
        !presses.contains(&"btn-old".to_owned()),
        "a retained press was replayed"
    );
    let ids: Vec<_> = records
        .iter()
        .filter(|(_, e)| matches!(e.body, Some(help_event::Body::ButtonPress(ref p)) if p.device_id == "btn-wu"))
        .map(|(_, e)| e.envelope.as_ref().expect("envelope").event_id.clone())
        .collect();
    assert_eq!(ids[0], ids[1]);
    let alerts = records
        .iter()
        .filter(|(_, e)| matches!(e.body, Some(help_event::Body::CameraAlert(_))))
        .count();
    assert_eq!(alerts, 2, "one fire alert and one intrusion alert");

    gateway.stop().await;
    router.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_payloads_and_unroutable_devices_are_dead_lettered_with_their_reason() {
    let mq = Mosquitto::start();
    let mut disabled = button("btn-off", "h-off", "g7", DeviceKind::ZigbeeButton);
    disabled.enabled = false;
    let (args, topics) = setup(vec![], &[disabled]).await;
    let mut dead = DeadLetters::follow(&args, &topics).await;
    let mut help = TopicLog::follow(&args, &topics.help_events).await;
    let mut config = GatewayConfig::new(args.clone());
    config.mqtt = Some(mq.config(&format!("{}gw", args.topic_prefix)));
    let gateway = RunningGateway::start(config).await;
    wait_subscribed(&mq, &mut dead, "zigbee2mqtt").await;

    mq.publish("zigbee2mqtt/stranger", &z2m("single", &now_iso()), false);
    // The disabled button pressed, and the same message again (a QoS 1 redelivery).
    let off_press = z2m("single", &now_iso());
    mq.publish("zigbee2mqtt/btn-off", &off_press, false);
    mq.publish("zigbee2mqtt/btn-off", &off_press, false);
    mq.publish("zigbee2mqtt/btn-off", r#"{"action":"rotate_left"}"#, false);
    mq.publish(
        "zigbee2mqtt/btn-off",
        r#"{"action":"single","battery":"full"}"#,
        false,
    );
    mq.publish(
        "frigate/events",
        r#"{"type":"new","after":{"camera":"x"}}"#,
        false,
    );

    let want = [
        ("unknown_device", "zigbee2mqtt/stranger"),
        ("disabled_device", "zigbee2mqtt/btn-off"),
        ("unknown_value", "zigbee2mqtt/btn-off"),
        ("wrong_type", "zigbee2mqtt/btn-off"),
        ("missing_field", "frigate/events"),
    ];
    for (kind, topic) in want {
        assert!(
            dead.wait_for(WAIT, |h| h.get("helpgrid.dlq.kind").map(String::as_str)
                == Some(kind)
                && h.get("helpgrid.dlq.origin.topic").map(String::as_str)
                    == Some(&format!("mqtt:{topic}")))
                .await,
            "no {kind} dead letter from {topic}"
        );
    }
    let disabled_letter = dead
        .0
        .records
        .iter()
        .map(DeadLetters::headers)
        .find(|h| h.get("helpgrid.dlq.kind").map(String::as_str) == Some("disabled_device"))
        .expect("disabled letter");
    assert_eq!(
        disabled_letter.get("helpgrid.dlq.grid").map(String::as_str),
        Some("g7")
    );
    assert!(disabled_letter["helpgrid.dlq.reason"].contains("disabled"));

    // Someone may be behind the disabled button: its grid worker gets a maintenance incident
    // (one event id for the press and its redelivery); the unknown device has no grid to warn.
    let warnings = |records: &[helpgrid_common::reader::Record]| {
        records
            .iter()
            .filter_map(|r| HelpEvent::decode(r.payload.as_deref().unwrap_or_default()).ok())
            .filter_map(|e| match e.body {
                Some(help_event::Body::DeviceMaintenance(m)) => {
                    Some((e.envelope.map(|v| v.event_id).unwrap_or_default(), m))
                }
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    assert!(
        help.read_until(WAIT, |r| warnings(r).len() >= 2).await,
        "no maintenance warning for each press of the disabled button: {:?}",
        warnings(&help.records)
    );
    let seen = warnings(&help.records);
    assert!(seen.iter().all(|(id, m)| id == &seen[0].0
        && m.device_id == "btn-off"
        && m.grid_id == "g7"
        && m.household_id == "h-off"
        && m.reason == MaintenanceReason::DisabledDevicePressed as i32));
    assert!(
        help.help_events()
            .iter()
            .all(|(_, e)| !matches!(e.body, Some(help_event::Body::ButtonPress(_)))),
        "a press from an unknown or disabled device was routed"
    );
    gateway.stop().await;
}
