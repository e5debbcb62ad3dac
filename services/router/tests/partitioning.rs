//! Any partitioner works: with 6 partitions and 3 routers in one group, every household presses
//! twice — once through a murmur2 producer (the Java default), once through librdkafka's
//! default partitioner (CRC32, `consistent_random`) or with no key at all — and gets exactly
//! one incident, with both presses in it. Presses that arrived on another partition than their
//! grid's were forwarded (they carry the `helpgrid.forwarded.from` header in help-events).
//! Then each household's worker acknowledges through the CRC32 producer with no key, so most
//! commands land on another router's partition: every one is forwarded to its grid's partition
//! and applied there, none is answered "not found".
//! Needs HELPGRID_TEST_KAFKA (scripts/test sets it).

use helpgrid_common::envelope::new_envelope;
use helpgrid_common::kafka::KafkaArgs;
use helpgrid_common::reader::{self, Feed};
use helpgrid_common::time::now_millis;
use helpgrid_common::topics::{Topics, ensure_topics};
use helpgrid_proto::pb::{
    AcknowledgeIncident, ActorRole, IncidentCommand, PressKind, ResponderRole, incident_command,
    incident_event::Change,
};
use helpgrid_router::kafka::pipeline::HEADER_FORWARDED_FROM;
use helpgrid_testkit::records::{press, responder, roster_record};
use helpgrid_testkit::{IncidentLog, Publisher, kafka_args};
use prost::Message as _;
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::collections::HashMap;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

mod support;

const HOUSEHOLDS: usize = 24;
const GRIDS: usize = 12;

fn start_router(
    args: &KafkaArgs,
    instance: usize,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let config = support::config(
        args,
        &format!("router-{instance}"),
        support::long_deadlines(),
    );
    let stop = CancellationToken::new();
    let task = tokio::spawn(helpgrid_router::run(config, stop.clone().cancelled_owned()));
    (stop, task)
}

/// A producer with librdkafka's default partitioner: CRC32 of the key, random without one.
fn crc32_producer(args: &KafkaArgs) -> FutureProducer {
    let mut args = args.clone();
    args.options
        .push(("partitioner".into(), "consistent_random".into()));
    args.producer_config("partitioning-test-crc32")
        .create()
        .expect("crc32 producer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_household_gets_one_incident_whatever_partitioner_its_presses_came_through() {
    let mut args = kafka_args();
    args.topic_partitions = 6;
    let topics = Topics::with_prefix(&args.topic_prefix);
    assert_eq!(ensure_topics(&args, &topics).await.expect("topics"), 6);
    let murmur2 = Publisher::new(&args);
    let grid = |g: usize| format!("grid-{g:04}");
    for g in 0..GRIDS {
        let worker = responder(
            &format!("w-{g}"),
            ResponderRole::GridWorker,
            &[&grid(g)],
            None,
        );
        murmur2
            .send(
                &topics.roster,
                &worker.responder_id.clone(),
                &roster_record(worker),
            )
            .await;
    }
    let mut log = IncidentLog::follow(&args, &topics.incident_events).await;
    let routers: Vec<_> = (0..3).map(|i| start_router(&args, i)).collect();

    let crc32 = crc32_producer(&args);
    for h in 0..HOUSEHOLDS {
        let household = format!("hh-{h:03}");
        let g = grid(h % GRIDS);
        let first = press(&household, &g, PressKind::Help);
        murmur2.send(&topics.help_events, &g, &first).await;
        let second = press(&household, &g, PressKind::Help).encode_to_vec();
        let record = FutureRecord::<str, [u8]>::to(&topics.help_events).payload(&second);
        // Every third household's second press has no key at all.
        let record = if h % 3 == 0 { record } else { record.key(&g) };
        crc32
            .send(record, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| e)
            .expect("crc32 press delivered");
    }

    // Every press accounted for: each household's presses opened or attached to an incident.
    let events = log
        .wait_until("both presses of every household", |events| {
            let mut presses: HashMap<&str, usize> = HashMap::new();
            for e in events {
                if let (Some(Change::Opened(_) | Change::Attached(_)), Some(i)) =
                    (&e.change, &e.incident)
                {
                    *presses.entry(i.household_id.as_str()).or_default() += 1;
                }
            }
            presses.len() == HOUSEHOLDS && presses.values().all(|n| *n >= 2)
        })
        .await;
    let mut opened: HashMap<String, usize> = HashMap::new();
    for e in &events {
        if let (Some(Change::Opened(_)), Some(i)) = (&e.change, &e.incident) {
            *opened.entry(i.household_id.clone()).or_default() += 1;
        }
    }
    let doubled: Vec<_> = opened.iter().filter(|(_, n)| **n != 1).collect();
    assert!(
        doubled.is_empty(),
        "households with more than one incident: {doubled:?}"
    );
    assert_eq!(opened.len(), HOUSEHOLDS);

    // The test exercised forwarding: some presses came in on the wrong partition.
    let forwarded = count_forwarded(&args, &topics.help_events).await;
    assert!(
        forwarded > 0,
        "no press needed forwarding; the test proves nothing"
    );

    // Acknowledgements from a client with no key (random partitions): each one applied.
    let mut incidents: Vec<(String, String)> = Vec::new();
    for e in &events {
        if let (Some(Change::Opened(_)), Some(i)) = (&e.change, &e.incident) {
            incidents.push((i.incident_id.clone(), i.grid_id.clone()));
        }
    }
    for (incident_id, g) in &incidents {
        let n: usize = g.trim_start_matches("grid-").parse().expect("grid number");
        let worker = format!("w-{n}");
        let command = IncidentCommand {
            envelope: Some(new_envelope("dispatch-client", now_millis())),
            incident_id: incident_id.clone(),
            grid_id: g.clone(),
            actor_id: worker,
            actor_role: ActorRole::Responder as i32,
            action: Some(incident_command::Action::Acknowledge(
                AcknowledgeIncident {},
            )),
            request_id: String::new(),
        }
        .encode_to_vec();
        crc32
            .send(
                FutureRecord::<str, [u8]>::to(&topics.incident_commands).payload(&command),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("command delivered");
    }
    let events = log
        .wait_until("an answer to every acknowledgement", |events| {
            events
                .iter()
                .filter(|e| {
                    matches!(
                        e.change,
                        Some(Change::Acknowledged(_) | Change::Rejected(_))
                    )
                })
                .count()
                >= HOUSEHOLDS
        })
        .await;
    let rejected: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.change {
            Some(Change::Rejected(r)) => Some(r.message.clone()),
            _ => None,
        })
        .collect();
    assert!(rejected.is_empty(), "commands rejected: {rejected:?}");
    let acknowledged = events
        .iter()
        .filter(|e| matches!(e.change, Some(Change::Acknowledged(_))))
        .count();
    assert_eq!(acknowledged, HOUSEHOLDS);
    let commands_forwarded = count_forwarded(&args, &topics.incident_commands).await;
    assert!(
        commands_forwarded > 0,
        "no command needed forwarding; the test proves nothing"
    );
    for (stop, task) in routers {
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("router stops in time")
            .expect("router task")
            .expect("router ran without error");
    }
}

/// help-events records that the routers re-published to their grid's partition.
async fn count_forwarded(args: &KafkaArgs, topic: &str) -> usize {
    let cancel = CancellationToken::new();
    let mut feed = reader::follow(args, "partitioning-test", topic, cancel.clone())
        .await
        .expect("follow help-events");
    let mut forwarded = 0;
    while let Some(Feed::Record(record)) = feed.recv().await {
        if record
            .headers
            .iter()
            .any(|(k, _)| k == HEADER_FORWARDED_FROM)
        {
            forwarded += 1;
        }
    }
    cancel.cancel();
    forwarded
}
