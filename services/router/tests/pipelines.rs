//! Several transactional pipelines in one router instance (`--pipelines 2`), against a real
//! broker:
//! - each pipeline joins the group as a member of its own (group instance id
//!   `<transactional id>-<n>`), so the partitions are shared between them;
//! - presses on every partition are each opened and assigned exactly once;
//! - after a restart, each pipeline rebuilds the state of the partitions it gets (from its own
//!   checkpoint folder): a repeat press of every household attaches to its incident instead
//!   of opening a second one.
//!
//! Needs HELPGRID_TEST_KAFKA (scripts/test sets it).

use clap::Parser;
use helpgrid_common::health::{Health, Readiness};
use helpgrid_common::partition::grid_partition;
use helpgrid_common::topics::{Topics, ensure_topics};
use helpgrid_proto::pb::{IncidentEvent, PressKind, ResponderRole, incident_event::Change};
use helpgrid_router::config::{RouterArgs, RouterConfig};
use helpgrid_testkit::records::{press, responder, roster_record};
use helpgrid_testkit::{IncidentLog, Publisher, kafka_args};
use rdkafka::consumer::{BaseConsumer, Consumer};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

struct Running {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    health: Health,
}

fn start(config: RouterConfig) -> Running {
    let stop = CancellationToken::new();
    let health = Health::new();
    let task = tokio::spawn(helpgrid_router::run_with_health(
        config,
        health.clone(),
        stop.clone().cancelled_owned(),
    ));
    Running { stop, task, health }
}

impl Running {
    async fn ready(&self) {
        tokio::time::timeout(Duration::from_secs(30), async {
            while self.health.get() != Readiness::Ready {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("router ready (every pipeline restored and caught up)");
    }

    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("router stops in time")
            .expect("router task")
            .expect("router ran without error");
    }
}

/// One grid per partition: presses of different grids land on every partition.
fn grid_per_partition(partitions: usize) -> BTreeMap<i32, String> {
    let mut grids = BTreeMap::new();
    for i in 0.. {
        let grid = format!("grid-{i:04}");
        grids
            .entry(grid_partition(&grid, partitions))
            .or_insert(grid);
        if grids.len() == partitions {
            return grids;
        }
    }
    unreachable!()
}

fn household_of(event: &IncidentEvent) -> &str {
    event
        .incident
        .as_ref()
        .map_or("", |i| i.household_id.as_str())
}

fn count(events: &[IncidentEvent], household: &str, change: fn(&Change) -> bool) -> usize {
    events
        .iter()
        .filter(|e| household_of(e) == household && e.change.as_ref().is_some_and(change))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pipelines_share_the_partitions_and_each_press_is_handled_once_across_a_restart() {
    let args = kafka_args();
    let topics = Topics::with_prefix(&args.topic_prefix);
    let partitions = ensure_topics(&args, &topics).await.expect("topics");
    let grids = grid_per_partition(partitions);
    let publisher = Publisher::new(&args);
    for grid in grids.values() {
        let id = format!("w-{grid}");
        let worker = responder(&id, ResponderRole::GridWorker, &[grid.as_str()], None);
        publisher
            .send(&topics.roster, &id, &roster_record(worker))
            .await;
    }
    let mut log = IncidentLog::follow(&args, &topics.incident_events).await;
    let state = std::env::temp_dir().join(format!("helpgrid-pipelines-{}", args.topic_prefix));
    let config = RouterArgs::try_parse_from([
        "helpgrid-router",
        "--kafka-brokers",
        &args.brokers,
        "--topic-prefix",
        &args.topic_prefix,
        "--topic-partitions",
        &args.topic_partitions.to_string(),
        "--instance-id",
        "i0",
        "--pipelines",
        "2",
        "--state-dir",
        &state.to_string_lossy(),
        "--ack-deadline-normal-s",
        "600",
    ])
    .map(RouterArgs::into_config)
    .expect("router flags");
    let transactional_id = config.transactional_id.clone();

    let router = start(config.clone());
    router.ready().await;
    // Both pipelines are members of the router's group, each under its own instance id.
    let group = config.group_id.clone();
    let brokers = args.brokers.clone();
    let members: Vec<String> = tokio::task::spawn_blocking(move || {
        let admin: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .create()
            .expect("consumer for the group list");
        let list = admin
            .fetch_group_list(Some(&group), Duration::from_secs(10))
            .expect("group list");
        list.groups()
            .iter()
            .flat_map(|g| g.members().iter().map(|m| m.id().to_owned()))
            .collect()
    })
    .await
    .expect("group list task");
    for n in 0..2 {
        let instance = format!("{transactional_id}-{n}-");
        assert!(
            members.iter().any(|m| m.starts_with(&instance)),
            "pipeline {n} is a member of the group as {instance}…; members: {members:?}"
        );
    }
    assert_eq!(members.len(), 2, "members: {members:?}");

    for (partition, grid) in &grids {
        let household = format!("hh-{partition}");
        publisher
            .send(
                &topics.help_events,
                grid,
                &press(&household, grid, PressKind::Help),
            )
            .await;
    }
    let households: Vec<String> = grids.keys().map(|p| format!("hh-{p}")).collect();
    let assigned = |c: &Change| matches!(c, Change::Assigned(_));
    let opened = |c: &Change| matches!(c, Change::Opened(_));
    let attached = |c: &Change| matches!(c, Change::Attached(_));
    log.wait_until("every household's press assigned", |events| {
        households.iter().all(|h| count(events, h, assigned) >= 1)
    })
    .await;
    router.stop().await;
    for n in 0..2 {
        let folder = config
            .pipeline(n)
            .checkpoint
            .map(|c| c.dir)
            .expect("checkpoints on");
        assert!(
            folder.starts_with(&state) && folder.ends_with(format!("{transactional_id}-{n}")),
            "pipeline {n}'s folder {} is its own, under {}",
            folder.display(),
            state.display()
        );
        assert!(
            folder.is_dir(),
            "pipeline {n} checkpoints in a folder of its own: {}",
            folder.display()
        );
    }

    // A second life: each pipeline restores what it is given, so repeats attach.
    let router = start(config);
    router.ready().await;
    for (partition, grid) in &grids {
        let household = format!("hh-{partition}");
        publisher
            .send(
                &topics.help_events,
                grid,
                &press(&household, grid, PressKind::Help),
            )
            .await;
    }
    log.wait_until("every repeat press attached", |events| {
        households.iter().all(|h| count(events, h, attached) >= 1)
    })
    .await;
    let events = log.settle(Duration::from_millis(500)).await;
    router.stop().await;
    let _ = std::fs::remove_dir_all(&state);
    for h in &households {
        assert_eq!(count(&events, h, opened), 1, "{h} opened once");
        assert_eq!(count(&events, h, assigned), 1, "{h} assigned once");
        assert_eq!(count(&events, h, attached), 1, "{h}'s repeat attached once");
    }
}
