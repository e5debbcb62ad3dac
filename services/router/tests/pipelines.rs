//! How the router commits, against a real broker: several transactional pipelines in one
//! instance (`--pipelines 2`), and two producers per pipeline taking turns so that a batch is
//! produced while the one before it commits (`--overlap-commits`). In each:
//! - presses on every partition are each opened and assigned exactly once;
//! - after a restart, the state is rebuilt (from the checkpoint folders): a repeat press of
//!   every household attaches to its incident instead of opening a second one.
//!
//! With pipelines, each joins the group as a member of its own (group instance id
//! `<transactional id>-<n>`), so the partitions are shared between them, and each
//! checkpoints in a folder of its own. With overlapping commits, both producers
//! (`<transactional id>` and `<transactional id>.next`) committed transactions, as Kafka's
//! own `kafka-transactions` tool lists them.
//!
//! Needs HELPGRID_TEST_KAFKA (scripts/test sets it).

use clap::Parser;
use helpgrid_common::health::{Health, Readiness};
use helpgrid_common::kafka::KafkaArgs;
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

/// The router's configuration from its command line plus `extra`, checkpointing under `state`.
fn router_config(args: &KafkaArgs, state: &std::path::Path, extra: &[&str]) -> RouterConfig {
    let partitions = args.topic_partitions.to_string();
    let state = state.to_string_lossy();
    let mut flags = vec![
        "helpgrid-router",
        "--kafka-brokers",
        &args.brokers,
        "--topic-prefix",
        &args.topic_prefix,
        "--topic-partitions",
        &partitions,
        "--instance-id",
        "i0",
        "--state-dir",
        &state,
        "--ack-deadline-normal-s",
        "600",
    ];
    flags.extend_from_slice(extra);
    RouterArgs::try_parse_from(flags)
        .map(RouterArgs::into_config)
        .expect("router flags")
}

/// The member ids of `group` (a static member's id starts with its group instance id).
async fn group_members(brokers: &str, group: &str) -> Vec<String> {
    let (brokers, group) = (brokers.to_owned(), group.to_owned());
    tokio::task::spawn_blocking(move || {
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
    .expect("group list task")
}

/// The state of each transactional id, as `kafka-transactions list` (Kafka's own tool) gives it.
fn transaction_states(brokers: &str) -> BTreeMap<String, String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/local/kafka.sh");
    let out = std::process::Command::new("bash")
        .args([
            script,
            "tool",
            "TransactionsCommand",
            "--bootstrap-server",
            brokers,
            "list",
        ])
        .output()
        .expect("kafka-transactions runs");
    assert!(out.status.success(), "kafka-transactions list: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            Some((fields.first()?.to_string(), fields.get(3)?.to_string()))
        })
        .collect()
}

/// Runs the router with `extra` flags twice: presses on every partition, one at a time (so
/// that there are several transactions), each assigned once; then, after a restart, a
/// repeat of each, attached. Returns the configuration it ran with.
async fn presses_across_a_restart(
    extra: &[&str],
    check_running: impl AsyncFn(&KafkaArgs, &RouterConfig),
) -> RouterConfig {
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
    let config = router_config(&args, &state, extra);
    let households: Vec<(String, String)> = grids
        .iter()
        .map(|(p, grid)| (format!("hh-{p}"), grid.clone()))
        .collect();
    // An `assigned`, or an "opened and assigned" (IncidentOpened.assigned).
    let assigned = |c: &Change| match c {
        Change::Assigned(_) => true,
        Change::Opened(o) => !o.assigned.is_empty(),
        _ => false,
    };
    let opened = |c: &Change| matches!(c, Change::Opened(_));
    let attached = |c: &Change| matches!(c, Change::Attached(_));

    let router = start(config.clone());
    router.ready().await;
    check_running(&args, &config).await;
    for (household, grid) in &households {
        publisher
            .send(
                &topics.help_events,
                grid,
                &press(household, grid, PressKind::Help),
            )
            .await;
        log.wait_until(&format!("{household}'s press assigned"), |events| {
            count(events, household, assigned) >= 1
        })
        .await;
    }
    router.stop().await;

    // A second life: the state is rebuilt, so repeats attach.
    let router = start(config.clone());
    router.ready().await;
    for (household, grid) in &households {
        publisher
            .send(
                &topics.help_events,
                grid,
                &press(household, grid, PressKind::Help),
            )
            .await;
    }
    log.wait_until("every repeat press attached", |events| {
        households
            .iter()
            .all(|(h, _)| count(events, h, attached) >= 1)
    })
    .await;
    let events = log.settle(Duration::from_millis(500)).await;
    router.stop().await;
    let _ = std::fs::remove_dir_all(&state);
    for (h, _) in &households {
        assert_eq!(count(&events, h, opened), 1, "{h} opened once");
        assert_eq!(count(&events, h, assigned), 1, "{h} assigned once");
        assert_eq!(count(&events, h, attached), 1, "{h}'s repeat attached once");
    }
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pipelines_share_the_partitions_and_each_press_is_handled_once_across_a_restart() {
    let config = presses_across_a_restart(&["--pipelines", "2"], async |args, config| {
        let members = group_members(&args.brokers, &config.group_id).await;
        for n in 0..2 {
            let instance = format!("{}-{n}-", config.transactional_id);
            assert!(
                members.iter().any(|m| m.starts_with(&instance)),
                "pipeline {n} is a member of the group as {instance}…; members: {members:?}"
            );
        }
        assert_eq!(members.len(), 2, "members: {members:?}");
    })
    .await;
    let folders: Vec<_> = (0..2)
        .map(|n| config.pipeline(n).checkpoint.map(|c| c.dir))
        .collect();
    assert_ne!(folders[0], folders[1], "each pipeline checkpoints apart");
    for (n, folder) in folders.iter().enumerate() {
        let folder = folder.as_ref().expect("checkpoints on");
        assert!(
            folder.ends_with(format!("{}-{n}", config.transactional_id)),
            "pipeline {n}'s folder: {}",
            folder.display()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_overlapping_commits_both_producers_commit_and_each_press_is_handled_once() {
    let config = presses_across_a_restart(&["--overlap-commits"], async |_, _| {}).await;
    let args_brokers = config.kafka.brokers.clone();
    let states = tokio::task::spawn_blocking(move || transaction_states(&args_brokers))
        .await
        .expect("kafka-transactions task");
    for id in [
        config.transactional_id.clone(),
        format!("{}.next", config.transactional_id),
    ] {
        assert_eq!(
            states.get(&id).map(String::as_str),
            Some("CompleteCommit"),
            "{id} committed transactions"
        );
    }
}
