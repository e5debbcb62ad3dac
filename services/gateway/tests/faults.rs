//! Faults: the MQTT broker restarts and the gateway is SIGKILLed while residents press.
//! Every press the broker accepted at QoS 1 (mosquitto_pub exited 0) ends in exactly one
//! incident: the broker keeps the gateway's session and redelivers what it had not
//! acknowledged, and the derived event id makes any second copy a duplicate.

mod support;

use helpgrid_proto::pb::{DeviceKind, ResponderRole, incident_event::Change};
use helpgrid_testkit::IncidentLog;
use helpgrid_testkit::process::ServiceProcess;
use helpgrid_testkit::records::responder;
use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use support::*;

const PRESSES: usize = 45;

fn gateway_env(args: &helpgrid_common::kafka::KafkaArgs, mq: &Mosquitto) -> Vec<(String, String)> {
    [
        ("HELPGRID_KAFKA_BROKERS", args.brokers.clone()),
        ("HELPGRID_TOPIC_PREFIX", args.topic_prefix.clone()),
        (
            "HELPGRID_TOPIC_PARTITIONS",
            args.topic_partitions.to_string(),
        ),
        (
            "HELPGRID_GATEWAY_MQTT_URL",
            format!("mqtt://{}:{}", mq.host, mq.port),
        ),
        ("HELPGRID_GATEWAY_MQTT_USERNAME", mq.user.clone()),
        ("HELPGRID_GATEWAY_MQTT_PASSWORD", mq.password.clone()),
        (
            "HELPGRID_GATEWAY_MQTT_CLIENT_ID",
            format!("{}gw", args.topic_prefix),
        ),
        ("RUST_LOG", "info".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// Where the publishing thread sends (the test keeps the `Mosquitto` that stops the broker).
#[derive(Clone)]
struct Broker {
    host: String,
    port: u16,
    user: String,
    password: String,
}

/// One press, published until the broker accepts it (a retry is the same message: the same
/// `last_seen`, so the same event id).
fn press(mq: &Broker, device: &str, last_seen_ms: i64) {
    let payload = format!(
        r#"{{"action":"single","battery":88,"linkquality":120,"last_seen":{last_seen_ms}}}"#
    );
    for _ in 0..200 {
        let ok = Command::new("mosquitto_pub")
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
                "-t",
                &format!("zigbee2mqtt/{device}"),
                "-m",
                &payload,
            ])
            .output()
            .expect("mosquitto_pub")
            .status
            .success();
        if ok {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the broker never accepted a press from {device}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_and_gateway_sigkill_lose_and_double_no_press() {
    let mq = Mosquitto::start();
    let devices: Vec<_> = (0..PRESSES)
        .map(|n| {
            button(
                &format!("btn-{n:02}"),
                &format!("h-{n:02}"),
                &format!("g{}", n % 3),
                DeviceKind::ZigbeeButton,
            )
        })
        .collect();
    let (args, topics) = setup(
        (0..3)
            .map(|g| {
                responder(
                    &format!("w-g{g}"),
                    ResponderRole::GridWorker,
                    &[&format!("g{g}")],
                    None,
                )
            })
            .collect(),
        &devices,
    )
    .await;
    let mut log = IncidentLog::follow(&args, &topics.incident_events).await;
    let mut dead = DeadLetters::follow(&args, &topics).await;
    let router = RunningRouter::start(&args);
    let binary = Path::new(env!("CARGO_BIN_EXE_helpgrid-gateway"));
    let name = format!("gateway-faults-{}", &args.topic_prefix[5..17]);
    let env = gateway_env(&args, &mq);
    let mut gateway = ServiceProcess::spawn(binary, &name, &env);
    wait_subscribed(&mq, &mut dead, "zigbee2mqtt").await;

    let base = helpgrid_common::time::now_millis();
    let publisher = {
        let broker = Broker {
            host: mq.host.clone(),
            port: mq.port,
            user: mq.user.clone(),
            password: mq.password.clone(),
        };
        let (tx, rx) = std::sync::mpsc::channel::<usize>();
        let handle = std::thread::spawn(move || {
            for n in 0..PRESSES {
                press(&broker, &format!("btn-{n:02}"), base + n as i64);
                let _ = tx.send(n);
            }
        });
        (handle, rx)
    };
    let (handle, progress) = publisher;
    let wait_for = |n: usize| loop {
        match progress.recv_timeout(Duration::from_secs(60)) {
            Ok(done) if done >= n => return,
            Ok(_) => {}
            Err(e) => panic!("publisher stalled: {e}"),
        }
    };
    wait_for(12);
    gateway.kill();
    let gateway2 = ServiceProcess::spawn(binary, &name, &env);
    wait_for(25);
    mq.run("restart");
    wait_for(PRESSES - 1);
    handle.join().expect("publisher");
    // Kill the second gateway too, then a third one finishes what is left.
    gateway2.kill();
    gateway = ServiceProcess::spawn(binary, &name, &env);

    let events = log
        .wait_until("an incident per press", |ev| {
            ev.iter()
                .filter(|e| matches!(e.change, Some(Change::Opened(_))))
                .count()
                >= PRESSES
        })
        .await;
    let _ = events;
    let events = log.settle(Duration::from_secs(2)).await;
    let mut per_household: HashMap<String, usize> = HashMap::new();
    for e in &events {
        if let (Some(Change::Opened(_)), Some(i)) = (&e.change, &e.incident) {
            *per_household.entry(i.household_id.clone()).or_default() += 1;
        }
    }
    assert_eq!(
        per_household.len(),
        PRESSES,
        "every press opened an incident"
    );
    assert!(
        per_household.values().all(|n| *n == 1),
        "no press opened two: {per_household:?}"
    );
    let attached = events
        .iter()
        .filter(|e| matches!(e.change, Some(Change::Attached(_))))
        .count();
    assert_eq!(
        attached, 0,
        "a redelivered press is a duplicate, not a repeat press"
    );
    gateway.terminate(Duration::from_secs(10));
    router.stop().await;
}
