//! Local checkpoints of incident-state against a real Kafka broker: a restore that starts
//! from a checkpoint must end exactly where a restore of the whole changelog ends, and any
//! checkpoint that cannot be trusted (stale, damaged, torn, another deployment's or
//! cluster's, past the log's end, of a topic deleted and recreated since) must be refused and
//! the partition read whole.
//! Needs HELPGRID_TEST_KAFKA (scripts/test sets it).

use helpgrid_common::checkpoint::{self, Identity};
use helpgrid_common::health::Health;
use helpgrid_common::kafka::KafkaArgs;
use helpgrid_common::partition::grid_partition;
use helpgrid_common::table::{TableReader, read_table};
use helpgrid_common::time::now_millis;
use helpgrid_common::topics::{Topics, ensure_topics};
use helpgrid_proto::pb::{ActorRole, IncidentEvent, PressKind, ResponderRole, incident_event};
use helpgrid_router::config::{CheckpointConfig, RouterConfig};
use helpgrid_router::domain::validate::{self, ValidAction, ValidCommand};
use helpgrid_router::domain::{Desk, Policy, Roster};
use helpgrid_router::kafka::rebalance::{Ownership, RestoreFigures};
use helpgrid_testkit::records::{press, responder, roster_record};
use helpgrid_testkit::{IncidentLog, Publisher, kafka_args};
use prost::Message;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

mod support;
use support::RunningRouter;

const PARTITIONS: i32 = 3;

fn policy() -> Policy {
    support::long_deadlines()
}

fn grids() -> Vec<String> {
    (0..12).map(|g| format!("g{g}")).collect()
}

/// A temporary state folder, removed when dropped.
struct StateDir(PathBuf);

impl StateDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "helpgrid-router-checkpoint-test-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).expect("state dir");
        Self(dir)
    }

    fn config(&self) -> CheckpointConfig {
        CheckpointConfig {
            dir: self.0.clone(),
            interval: Duration::ZERO,
            max_age: Duration::from_secs(30 * 60),
        }
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes incident-state the way the router does (the desk decides; its snapshot bytes go to
/// the incident's grid partition, keyed by incident id), without transactions.
struct Changelog {
    desk: Desk,
    roster: Roster,
    producer: FutureProducer,
    topic: String,
    next: usize,
    written: u64,
    /// Incidents already acknowledged or deleted: each is changed once.
    touched: std::collections::HashSet<String>,
}

impl Changelog {
    fn new(args: &KafkaArgs, topics: &Topics) -> Self {
        let mut roster = Roster::default();
        for g in grids() {
            roster.upsert(responder(
                &format!("w-{g}"),
                ResponderRole::GridWorker,
                &[&g],
                None,
            ));
        }
        Self {
            desk: Desk::new(policy()),
            roster,
            producer: args
                .producer_config("checkpoint-test")
                .create()
                .expect("producer"),
            topic: topics.incident_state.clone(),
            next: 0,
            written: 0,
            touched: Default::default(),
        }
    }

    async fn put(&mut self, partition: i32, id: &str, payload: Option<&[u8]>) {
        let mut record = FutureRecord::<str, [u8]>::to(&self.topic)
            .partition(partition)
            .key(id);
        if let Some(p) = payload {
            record = record.payload(p);
        }
        self.producer
            .send(record, Duration::from_secs(10))
            .await
            .expect("incident-state record written");
        self.written += 1;
    }

    /// Opens `n` incidents (new households, round robin over the grids); returns their ids.
    async fn open(&mut self, n: usize) -> Vec<(i32, String)> {
        let mut opened = Vec::new();
        for _ in 0..n {
            let k = self.next;
            self.next += 1;
            let grids = grids();
            let grid = &grids[k % grids.len()];
            let partition = grid_partition(grid, PARTITIONS as usize);
            let bytes = press(&format!("hh-{k}"), grid, PressKind::Help).encode_to_vec();
            let event = validate::decode_help_event(Some(&bytes), now_millis()).expect("press");
            let (_, out) = self
                .desk
                .on_help_event(partition, &event, &self.roster, now_millis());
            let id = out
                .last()
                .and_then(|o| o.event.incident.as_ref())
                .map(|i| i.incident_id.clone())
                .expect("an incident opened");
            self.write_snapshot(partition, &id).await;
            opened.push((partition, id));
        }
        opened
    }

    /// Acknowledges an incident: a newer snapshot of the same key.
    async fn acknowledge(&mut self, partition: i32, id: &str) {
        let incident = self.desk.get(id).expect("incident in the desk");
        let command = ValidCommand {
            command_id: format!("ack-{id}"),
            incident_id: id.to_owned(),
            grid_id: incident.grid_id.clone(),
            actor_id: incident
                .assignments
                .first()
                .map(|a| a.responder_id.clone())
                .unwrap_or_default(),
            actor_role: ActorRole::Responder,
            action: ValidAction::Acknowledge,
            request_id: String::new(),
        };
        let (_, out) = self
            .desk
            .on_command(partition, &command, &self.roster, now_millis());
        assert!(
            out.iter().any(|o| matches!(
                o.event.change,
                Some(incident_event::Change::Acknowledged(_))
            )),
            "the acknowledgement is accepted"
        );
        self.write_snapshot(partition, id).await;
    }

    async fn write_snapshot(&mut self, partition: i32, id: &str) {
        let record = self
            .desk
            .snapshot(id)
            .map(|(_, r)| r.to_vec())
            .expect("snapshot");
        self.put(partition, id, Some(&record)).await;
    }

    /// Every partition gets changes: one acknowledged, one tombstoned (deleted) incident of
    /// `old` in each, and `new` more incidents.
    async fn change_every_partition(&mut self, old: &[(i32, String)], new: usize) {
        for p in 0..PARTITIONS {
            let of_p: Vec<String> = old
                .iter()
                .filter(|(q, id)| *q == p && !self.touched.contains(id))
                .map(|(_, id)| id.clone())
                .take(2)
                .collect();
            assert_eq!(of_p.len(), 2, "partition {p} has incidents to change");
            self.touched.extend(of_p.iter().cloned());
            self.acknowledge(p, &of_p[0]).await;
            self.put(p, &of_p[1], None).await;
        }
        self.open(new).await;
    }
}

async fn setup() -> (KafkaArgs, Topics) {
    let mut args = kafka_args();
    args.topic_partitions = PARTITIONS;
    let topics = Topics::with_prefix(&args.topic_prefix);
    ensure_topics(&args, &topics).await.expect("topics");
    (args, topics)
}

fn all_partitions() -> BTreeSet<i32> {
    (0..PARTITIONS).collect()
}

/// Restores every partition into a fresh desk, from `checkpoints` when given.
async fn restore(
    args: &KafkaArgs,
    topics: &Topics,
    checkpoints: Option<CheckpointConfig>,
) -> (Arc<Ownership>, RestoreFigures) {
    let ownership = Ownership::new(
        Desk::new(policy()),
        args.clone(),
        topics.clone(),
        Health::new(),
        checkpoints,
    );
    let restoring = Arc::clone(&ownership);
    let figures = tokio::task::spawn_blocking(move || restoring.restore(&all_partitions()))
        .await
        .expect("restore thread")
        .expect("restore");
    (ownership, figures)
}

/// The desk's incidents: id → (partition, snapshot bytes).
fn contents(ownership: &Ownership) -> BTreeMap<String, (i32, Vec<u8>)> {
    ownership
        .desk()
        .records()
        .map(|(id, p, r)| (id.to_owned(), (p, r.to_vec())))
        .collect()
}

fn identity(args: &KafkaArgs, topics: &Topics) -> Identity {
    let reader = TableReader::new(args, "checkpoint-test", &topics.incident_state).expect("reader");
    Identity {
        topic_prefix: args.topic_prefix.clone(),
        cluster_id: reader.cluster_id().expect("cluster id"),
        topic: topics.incident_state.clone(),
    }
}

/// Rewrites partition `p`'s checkpoint with `change` applied to it.
fn rewrite(
    dir: &Path,
    identity: &Identity,
    p: i32,
    change: impl FnOnce(&mut Identity, &mut i64, &mut i64),
) {
    let found = checkpoint::read(dir, identity, p).expect("a checkpoint to rewrite");
    let (mut identity, mut position, mut taken_at) =
        (identity.clone(), found.position, found.taken_at_ms);
    change(&mut identity, &mut position, &mut taken_at);
    let records: Vec<(&str, &[u8])> = found.records.iter().collect();
    let bytes = checkpoint::encode(
        &identity,
        p,
        position,
        taken_at,
        found.anchor.as_ref(),
        &records,
    );
    checkpoint::write(dir, p, &bytes).expect("rewritten");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_from_checkpoints_reads_only_the_changelog_after_them_and_ends_where_a_full_restore_ends()
 {
    let (args, topics) = setup().await;
    let state = StateDir::new();
    let mut log = Changelog::new(&args, &topics);
    let first = log.open(30).await;

    let (restored, figures) = restore(&args, &topics, Some(state.config())).await;
    assert_eq!(
        (figures.checkpointed_partitions, figures.records),
        (0, 30),
        "no checkpoint yet: every record read"
    );
    restored.checkpoint(true);
    for p in all_partitions() {
        assert!(
            checkpoint::path(&state.0, p).exists(),
            "partition {p} checkpointed"
        );
    }

    let before = log.written;
    log.change_every_partition(&first, 6).await;
    let tail = log.written - before;

    let (from_checkpoints, figures) = restore(&args, &topics, Some(state.config())).await;
    let (whole, whole_figures) = restore(&args, &topics, None).await;
    assert_eq!(figures.checkpointed_partitions, PARTITIONS as usize);
    assert_eq!(figures.checkpointed_records, 30);
    assert_eq!(
        figures.records, tail,
        "only the records written after the checkpoints are read from Kafka"
    );
    assert_eq!(whole_figures.records, 30 + tail);
    let expected = contents(&whole);
    assert_eq!(expected.len(), 30 - 3 + 6, "3 tombstoned, 6 opened");
    assert_eq!(contents(&from_checkpoints), expected);
    assert_eq!(
        from_checkpoints.desk().open_count(),
        whole.desk().open_count()
    );

    // The restore's own checkpoints now cover the tail: a second restore reads nothing.
    from_checkpoints.checkpoint(true);
    let (again, figures) = restore(&args, &topics, Some(state.config())).await;
    assert_eq!((figures.checkpointed_partitions, figures.records), (3, 0));
    assert_eq!(contents(&again), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_damaged_torn_foreign_or_out_of_range_checkpoints_are_refused_and_the_partition_is_read_whole()
 {
    let (args, topics) = setup().await;
    let state = StateDir::new();
    let identity = identity(&args, &topics);
    let mut log = Changelog::new(&args, &topics);
    let first = log.open(30).await;
    let (restored, _) = restore(&args, &topics, Some(state.config())).await;
    restored.checkpoint(true);
    log.change_every_partition(&first, 6).await;
    let (whole, whole_figures) = restore(&args, &topics, None).await;
    let expected = contents(&whole);
    let per_partition = |p: i32| expected.values().filter(|(q, _)| *q == p).count();
    assert!((0..PARTITIONS).all(|p| per_partition(p) > 0));

    // Round 1: older than the tombstone window allows, another cluster's, damaged.
    let hour = 3_600_000;
    rewrite(&state.0, &identity, 0, |_, _, taken_at| *taken_at -= hour);
    rewrite(&state.0, &identity, 1, |id, _, _| {
        id.cluster_id = "another-cluster".into();
    });
    let path = checkpoint::path(&state.0, 2);
    let mut bytes = std::fs::read(&path).expect("checkpoint 2");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&path, &bytes).expect("damaged");
    let (round1, figures) = restore(&args, &topics, Some(state.config())).await;
    assert_eq!(figures.checkpointed_partitions, 0, "{figures:?}");
    assert_eq!(figures.records, whole_figures.records);
    assert_eq!(contents(&round1), expected);
    for p in all_partitions() {
        assert!(
            !checkpoint::path(&state.0, p).exists(),
            "refused checkpoint {p} removed"
        );
    }

    // Round 2, from fresh checkpoints: another deployment's (topic prefix), a position past
    // the end of the log (a recreated topic), and a file cut short; beside a good one, the
    // leftover temporary file of a write that was killed must change nothing.
    round1.checkpoint(true);
    log.change_every_partition(&first, 3).await;
    let (whole, whole_figures) = restore(&args, &topics, None).await;
    let expected = contents(&whole);
    rewrite(&state.0, &identity, 0, |id, _, _| {
        id.topic_prefix = "another-deployment.".into();
    });
    rewrite(&state.0, &identity, 1, |_, position, _| *position += 1_000);
    let path = checkpoint::path(&state.0, 2);
    let bytes = std::fs::read(&path).expect("checkpoint 2");
    std::fs::write(&path, &bytes[..bytes.len() - 7]).expect("torn");
    let (round2, figures) = restore(&args, &topics, Some(state.config())).await;
    assert_eq!(figures.checkpointed_partitions, 0, "{figures:?}");
    assert_eq!(figures.records, whole_figures.records);
    assert_eq!(contents(&round2), expected);

    round2.checkpoint(true);
    std::fs::write(
        state.0.join("partition-0.checkpoint.tmp"),
        b"half a checkpoint",
    )
    .expect("leftover");
    let (round3, figures) = restore(&args, &topics, Some(state.config())).await;
    assert_eq!((figures.checkpointed_partitions, figures.records), (3, 0));
    assert_eq!(contents(&round3), expected);
}

/// Deletes incident-state and creates it again under the same name (same cluster, same
/// prefix: a checkpoint's identity still matches), empty.
async fn recreate_incident_state(args: &KafkaArgs, topics: &Topics) {
    let admin: AdminClient<DefaultClientContext> = args
        .admin_config("checkpoint-test")
        .create()
        .expect("admin");
    admin
        .delete_topics(&[&topics.incident_state], &AdminOptions::new())
        .await
        .expect("delete request")
        .into_iter()
        .for_each(|r| {
            r.expect("incident-state deleted");
        });
    // Deletion completes in the background: until then the old topic may still be listed
    // (with its records), or creating it again fails.
    let started = std::time::Instant::now();
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "incident-state not recreated within 60 s"
        );
        if ensure_topics(args, topics).await.is_ok() {
            let reader =
                TableReader::new(args, "checkpoint-test", &topics.incident_state).expect("reader");
            let empty = reader
                .partitions()
                .is_ok_and(|p| p.len() == PARTITIONS as usize)
                && (0..PARTITIONS).all(|p| reader.watermarks(p).is_ok_and(|(_, high)| high == 0));
            if empty {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A topic deleted and recreated under the same name starts its offsets again. Once it has
/// grown past a checkpoint's position, the offsets cannot tell that the checkpoint is of the
/// old topic; the record just before the position (its anchor) can: the partition is read
/// whole, and none of the old topic's incidents comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_of_a_deleted_and_recreated_topic_is_refused_though_the_new_one_grew_past_it()
{
    let (args, topics) = setup().await;
    let state = StateDir::new();
    let identity = identity(&args, &topics);
    let mut old = Changelog::new(&args, &topics);
    old.open(12).await;
    let (restored, _) = restore(&args, &topics, Some(state.config())).await;
    restored.checkpoint(true);
    let positions: BTreeMap<i32, i64> = all_partitions()
        .into_iter()
        .map(|p| {
            let c = checkpoint::read(&state.0, &identity, p).expect("a checkpoint");
            (p, c.position)
        })
        .collect();

    recreate_incident_state(&args, &topics).await;
    let mut new = Changelog::new(&args, &topics);
    loop {
        new.open(6).await;
        let reader =
            TableReader::new(&args, "checkpoint-test", &topics.incident_state).expect("reader");
        let grown = positions.iter().all(|(p, position)| {
            reader
                .watermarks(*p)
                .is_ok_and(|(_, high)| high > *position)
        });
        if grown {
            break;
        }
        assert!(
            new.written < 200,
            "the new topic grows past the old positions"
        );
    }
    // The offsets alone would take the old checkpoints: every position is inside the new log.
    let reader =
        TableReader::new(&args, "checkpoint-test", &topics.incident_state).expect("reader");
    for (p, position) in &positions {
        let c = checkpoint::read(&state.0, &identity, *p).expect("still there");
        let range = reader.watermarks(*p).expect("watermarks");
        assert!(
            checkpoint::usable(*position, c.taken_at_ms, range, now_millis(), 60_000).is_ok(),
            "partition {p}: position {position} within {range:?}"
        );
    }

    let (whole, whole_figures) = restore(&args, &topics, None).await;
    let (from_state, figures) = restore(&args, &topics, Some(state.config())).await;
    assert_eq!(figures.checkpointed_partitions, 0, "{figures:?}");
    assert_eq!(figures.records, whole_figures.records);
    let expected = contents(&whole);
    assert_eq!(expected.len(), new.written as usize);
    assert_eq!(contents(&from_state), expected);
    for p in all_partitions() {
        assert!(
            !checkpoint::path(&state.0, p).exists(),
            "refused checkpoint {p} removed"
        );
    }
}

/// A router that runs with a state folder writes checkpoints that are exactly incident-state
/// (the pipeline's positions come from its committed transactions), and restarted on that
/// folder it keeps every open incident: a repeat press attaches, nothing opens twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_restarted_on_its_state_folder_keeps_every_open_incident() {
    let (args, topics) = setup().await;
    let state = StateDir::new();
    let publisher = Publisher::new(&args);
    for g in ["g1", "g2", "g3"] {
        let r = responder(&format!("w-{g}"), ResponderRole::GridWorker, &[g], None);
        publisher
            .send(&topics.roster, &r.responder_id.clone(), &roster_record(r))
            .await;
    }
    let mut log = IncidentLog::follow(&args, &topics.incident_events).await;
    let router = |checkpoint: CheckpointConfig| RouterConfig {
        checkpoint: Some(checkpoint),
        ..support::config(&args, "router-r0", policy())
    };
    let opened = |events: &[IncidentEvent]| {
        events
            .iter()
            .filter(|e| matches!(e.change, Some(incident_event::Change::Opened(_))))
            .count()
    };

    let first = RunningRouter::start(router(state.config()));
    for (hh, g) in [("hh-1", "g1"), ("hh-2", "g2"), ("hh-3", "g3")] {
        publisher
            .send(&topics.help_events, g, &press(hh, g, PressKind::Help))
            .await;
    }
    log.wait_until("three incidents opened", |ev| opened(ev) == 3)
        .await;
    first.stop().await;

    // The checkpoints hold what incident-state holds.
    let identity = identity(&args, &topics);
    let table = read_table(
        &args,
        "checkpoint-test",
        &topics.incident_state,
        None,
        Duration::from_secs(30),
    )
    .expect("incident-state");
    let mut in_files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for p in all_partitions() {
        if let Ok(c) = checkpoint::read(&state.0, &identity, p) {
            for (k, v) in c.records.iter() {
                in_files.insert(k.to_string(), v.to_vec());
            }
        }
    }
    let in_kafka: BTreeMap<String, Vec<u8>> = table
        .iter()
        .map(|r| (r.key.to_owned(), r.payload.to_vec()))
        .collect();
    assert_eq!(in_kafka.len(), 3);
    assert_eq!(in_files, in_kafka);

    let second = RunningRouter::start(router(state.config()));
    publisher
        .send(
            &topics.help_events,
            "g2",
            &press("hh-2", "g2", PressKind::Help),
        )
        .await;
    let events = log
        .wait_until("the repeat press attached", |ev| {
            ev.iter()
                .any(|e| matches!(e.change, Some(incident_event::Change::Attached(_))))
        })
        .await;
    assert_eq!(opened(&events), 3, "the repeat press opened nothing");
    second.stop().await;
}
