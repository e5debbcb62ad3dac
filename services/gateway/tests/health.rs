//! Device health through real Mosquitto, Kafka and the router: a button reported offline, a
//! button low on battery, a silent button and a camera whose Frigate went offline each open
//! exactly one low-priority maintenance incident, however often the problem is reported.

mod support;

use helpgrid_gateway::config::GatewayConfig;
use helpgrid_proto::pb::{
    DeviceKind, IncidentSource, MaintenanceReason, Priority, ResponderRole, Track,
    incident_event::Change,
};
use helpgrid_testkit::IncidentLog;
use helpgrid_testkit::records::responder;
use std::time::Duration;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_silent_and_low_battery_devices_open_one_maintenance_incident_each() {
    let mq = Mosquitto::start();
    let (args, topics) = setup(
        vec![
            responder("w-g1", ResponderRole::GridWorker, &["g1"], None),
            responder("cop-1", ResponderRole::PatrolOfficer, &["g1"], None),
        ],
        &[
            button("btn-off", "h-off", "g1", DeviceKind::ZigbeeButton),
            button("btn-low", "h-low", "g1", DeviceKind::ZigbeeButton),
            button("btn-quiet", "h-quiet", "g1", DeviceKind::ZigbeeButton),
            camera("cam-gate", "post-gate", "g1"),
        ],
    )
    .await;
    let mut log = IncidentLog::follow(&args, &topics.incident_events).await;
    let mut dead = DeadLetters::follow(&args, &topics).await;
    let router = RunningRouter::start(&args);
    let mut config = GatewayConfig::new(args.clone());
    config.mqtt = Some(mq.config(&format!("{}gw", args.topic_prefix)));
    config.health.zigbee_button_silence_ms = 3_000;
    config.health_check_ms = 200;
    let gateway = RunningGateway::start(config).await;
    wait_subscribed(&mq, &mut dead, "zigbee2mqtt").await;

    // Each problem reported more than once, as hubs do.
    for _ in 0..2 {
        mq.publish(
            "zigbee2mqtt/btn-off/availability",
            r#"{"state":"offline"}"#,
            false,
        );
        mq.publish("zigbee2mqtt/btn-off/availability", "offline", false);
        mq.publish(
            "zigbee2mqtt/btn-low",
            r#"{"battery":7,"linkquality":80,"voltage":2610}"#,
            false,
        );
        mq.publish("frigate/available", "offline", false);
    }
    let events = log
        .wait_until("four maintenance incidents assigned", |ev| {
            ev.iter().map(|e| e.assignments().len()).sum::<usize>() >= 4
        })
        .await;
    // Nothing more opens while the problems go on (the silence check keeps running).
    let events = {
        let _ = events;
        log.settle(Duration::from_millis(1500)).await
    };
    let opened: Vec<_> = events
        .iter()
        .filter(|e| matches!(e.change, Some(Change::Opened(_))))
        .filter_map(|e| e.incident.clone())
        .collect();
    let mut devices: Vec<&str> = opened.iter().map(|i| i.device_id.as_str()).collect();
    devices.sort();
    assert_eq!(
        devices,
        ["btn-low", "btn-off", "btn-quiet", "cam-gate"],
        "{opened:#?}"
    );
    for i in &opened {
        assert_eq!(i.source, IncidentSource::DeviceHealth as i32);
        assert_eq!(i.priority, Priority::Normal as i32);
        let want = match i.device_id.as_str() {
            "btn-off" | "cam-gate" => MaintenanceReason::Offline,
            "btn-low" => MaintenanceReason::LowBattery,
            _ => MaintenanceReason::Silent,
        };
        assert_eq!(i.maintenance_reason, want as i32, "{}", i.device_id);
        let (track, who) = if i.device_id == "cam-gate" {
            (Track::Police, "cop-1")
        } else {
            (Track::Community, "w-g1")
        };
        assert!(
            events.iter().any(|e| e
                .incident
                .as_ref()
                .is_some_and(|x| x.incident_id == i.incident_id)
                && e.assignments()
                    .iter()
                    .any(|a| a.track == track as i32 && a.responder_id == who)),
            "{} assigned to {who}",
            i.device_id
        );
    }
    gateway.stop().await;
    router.stop().await;
}
