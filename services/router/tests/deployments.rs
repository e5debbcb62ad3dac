//! No collisions, no zombies, against a real broker:
//! - two deployments that differ only in their topic prefix (default group and transactional
//!   ids, same host) run side by side, each routing its own presses;
//! - a second instance started with the same transactional id fences the first: one of them
//!   gives up with an error naming the id (never idling forever), the other goes on working,
//!   and readiness says which is which.
//!
//! Needs HELPGRID_TEST_KAFKA (scripts/test sets it).

use clap::Parser;
use helpgrid_common::health::{Health, Readiness};
use helpgrid_common::kafka::KafkaArgs;
use helpgrid_common::topics::{Topics, ensure_topics};
use helpgrid_proto::pb::{PressKind, ResponderRole};
use helpgrid_router::config::{RouterArgs, RouterConfig};
use helpgrid_testkit::records::{press, responder, roster_record};
use helpgrid_testkit::{IncidentLog, Publisher, kafka_args};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

type Running = (
    CancellationToken,
    tokio::task::JoinHandle<anyhow::Result<()>>,
    Health,
);

fn start(config: RouterConfig) -> Running {
    let stop = CancellationToken::new();
    let health = Health::new();
    let task = tokio::spawn(helpgrid_router::run_with_health(
        config,
        health.clone(),
        stop.clone().cancelled_owned(),
    ));
    (stop, task, health)
}

/// The router's configuration from its command line, as an operator would start it.
fn from_flags(args: &KafkaArgs, extra: &[&str]) -> RouterConfig {
    let mut flags = vec![
        "helpgrid-router".to_owned(),
        "--kafka-brokers".to_owned(),
        args.brokers.clone(),
        "--topic-prefix".to_owned(),
        args.topic_prefix.clone(),
        "--topic-partitions".to_owned(),
        args.topic_partitions.to_string(),
        "--ack-deadline-normal-s".to_owned(),
        "600".to_owned(),
    ];
    flags.extend(extra.iter().map(|s| (*s).to_owned()));
    RouterArgs::try_parse_from(flags)
        .map(RouterArgs::into_config)
        .expect("router flags")
}

async fn wait_ready(health: &Health) {
    tokio::time::timeout(Duration::from_secs(30), async {
        while health.get() != Readiness::Ready {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("router ready");
}

async fn stop(running: Running) {
    let (stop, task, _) = running;
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("router stops in time")
        .expect("router task")
        .expect("router ran without error");
}

async fn deployment() -> (KafkaArgs, Topics, Publisher) {
    let args = kafka_args();
    let topics = Topics::with_prefix(&args.topic_prefix);
    ensure_topics(&args, &topics).await.expect("topics");
    let publisher = Publisher::new(&args);
    let worker = responder("w-1", ResponderRole::GridWorker, &["grid-0001"], None);
    publisher
        .send(&topics.roster, "w-1", &roster_record(worker))
        .await;
    (args, topics, publisher)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_deployments_differing_only_in_prefix_run_side_by_side() {
    let (args_a, topics_a, publisher_a) = deployment().await;
    let (args_b, topics_b, publisher_b) = deployment().await;
    let config_a = from_flags(&args_a, &[]);
    let config_b = from_flags(&args_b, &[]);
    assert_ne!(config_a.group_id, config_b.group_id);
    assert_ne!(config_a.transactional_id, config_b.transactional_id);
    let a = start(config_a);
    let b = start(config_b);
    wait_ready(&a.2).await;
    wait_ready(&b.2).await;
    let mut log_a = IncidentLog::follow(&args_a, &topics_a.incident_events).await;
    let mut log_b = IncidentLog::follow(&args_b, &topics_b.incident_events).await;
    for (publisher, topics) in [(&publisher_a, &topics_a), (&publisher_b, &topics_b)] {
        publisher
            .send(
                &topics.help_events,
                "grid-0001",
                &press("hh-1", "grid-0001", PressKind::Help),
            )
            .await;
    }
    for log in [&mut log_a, &mut log_b] {
        log.wait_until("the press assigned", |events| {
            events.iter().any(|e| !e.assignments().is_empty())
        })
        .await;
    }
    assert_eq!(a.2.get(), Readiness::Ready);
    assert_eq!(b.2.get(), Readiness::Ready);
    stop(a).await;
    stop(b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_instance_with_the_same_transactional_id_ends_one_of_them_loudly() {
    let (args, topics, publisher) = deployment().await;
    let first = start(from_flags(&args, &["--instance-id", "same"]));
    wait_ready(&first.2).await;
    let second = start(from_flags(&args, &["--instance-id", "same"]));
    let (mut first_task, mut second_task) = (first.1, second.1);
    // One of them must end with an error that names the problem; neither may idle forever.
    let (ended, survivor, survivor_health, survivor_stop) =
        tokio::time::timeout(Duration::from_secs(90), async {
            tokio::select! {
                ended = &mut first_task => (ended, second_task, second.2, second.0),
                ended = &mut second_task => (ended, first_task, first.2, first.0),
            }
        })
        .await
        .expect("one instance gives up");
    let message = ended
        .expect("router task")
        .err()
        .map(|e| format!("{e:#}"))
        .unwrap_or_default();
    assert!(
        message.contains("fenced")
            && message.contains(&format!("{}router-same", args.topic_prefix)),
        "{message}"
    );
    // The other one works: it becomes ready and routes a press.
    wait_ready(&survivor_health).await;
    let mut log = IncidentLog::follow(&args, &topics.incident_events).await;
    publisher
        .send(
            &topics.help_events,
            "grid-0001",
            &press("hh-2", "grid-0001", PressKind::Help),
        )
        .await;
    log.wait_until("the press routed by the survivor", |events| {
        events.iter().any(|e| {
            !e.assignments().is_empty()
                && e.incident
                    .as_ref()
                    .is_some_and(|i| i.household_id == "hh-2")
        })
    })
    .await;
    stop((survivor_stop, survivor, survivor_health)).await;
}
