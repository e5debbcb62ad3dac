//! The archive sink against real Kafka and PostgreSQL: `scripts/bench-archive` (ignored in
//! the normal run). Three scenarios, each printing its figures:
//! - throughput: N incidents' events written to a fresh topic first, then the archive
//!   started and timed until every record is archived; side by side with two baselines on the
//!   same rows — reading the topic alone (Kafka's ceiling here) and a raw binary COPY of the
//!   archived event rows into a copy of the table (PostgreSQL's ceiling here);
//!   `ARCHIVE_BENCH_WRITER_COUNTS=1,2,4` (default 1,2) runs the archive once per writer count,
//!   `ARCHIVE_BENCH_BATCH_MAX` sets its largest batch;
//! - lag at a steady rate: presses at `ARCHIVE_BENCH_RATE` per second (2,000) for
//!   `ARCHIVE_BENCH_SECONDS` (20), each record's lag = when its offset is covered by
//!   `kafka_offsets` − when Kafka acknowledged it;
//! - the flood: every household presses once (`ARCHIVE_BENCH_FLOOD`, 774,000), produced as
//!   fast as Kafka takes them while the archive runs; how long after the last press the
//!   archive holds everything.
#![allow(clippy::unwrap_used)]

mod support;

use futures::StreamExt;
use helpgrid_archive::areas::Area;
use helpgrid_archive::config::ArchiveConfig;
use helpgrid_archive::{Listeners, run};
use helpgrid_common::kafka::KafkaArgs;
use helpgrid_common::time::now_millis;
use helpgrid_common::topics::{Topics, ensure_topics};
use helpgrid_proto::pb::IncidentEvent;
use helpgrid_testkit::kafka_args;
use prost::Message as _;
use rdkafka::Message as _;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{fresh_database, incident_story, produce, server_url};
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn bench_kafka() -> KafkaArgs {
    let mut kafka = kafka_args();
    kafka.topic_partitions = 6;
    kafka
}

struct Archive {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    db: Client,
}

/// The simulated city's registry over `grids` grids named as `grid_name` names them (ten
/// grids a community, ten communities a town, fifteen towns a county), so the rollup has one
/// row per community and day as in the city, not one for every unplaced grid.
fn city_areas(grids: usize, grid_name: impl Fn(usize) -> String) -> Vec<Area> {
    let area = |id: String, parent: String, level: &str| Area {
        name: id.clone(),
        area_id: id,
        parent_id: parent,
        level: level.to_owned(),
    };
    let communities = grids.div_ceil(10);
    let towns = communities.div_ceil(10);
    let counties = towns.div_ceil(15);
    let mut areas = vec![area("city".into(), String::new(), "city")];
    areas.extend((0..counties).map(|c| area(format!("county-{c}"), "city".into(), "county")));
    areas.extend(
        (0..towns).map(|t| area(format!("town-{t}"), format!("county-{}", t / 15), "town")),
    );
    areas.extend((0..communities).map(|m| {
        area(
            format!("community-{m}"),
            format!("town-{}", m / 10),
            "community",
        )
    }));
    areas.extend((0..grids).map(|g| area(grid_name(g), format!("community-{}", g / 10), "grid")));
    areas
}

/// Sink writers for the lag and flood scenarios (`ARCHIVE_BENCH_WRITERS`, default the
/// archive's own default).
fn writers() -> usize {
    env_or(
        "ARCHIVE_BENCH_WRITERS",
        ArchiveConfig::new(KafkaArgs::new(String::new(), String::new()), "").writers,
    )
}

async fn start_archive(kafka: &KafkaArgs, url: &str, writers: usize, areas: Vec<Area>) -> Archive {
    let stop = CancellationToken::new();
    let mut config = ArchiveConfig::new(kafka.clone(), url.to_owned());
    config.writers = writers;
    config.areas = areas;
    // ARCHIVE_BENCH_BATCH_MAX: records per batch (transaction) at most; the archive's default
    // otherwise.
    config.batch_max = env_or("ARCHIVE_BENCH_BATCH_MAX", config.batch_max);
    let task = tokio::spawn(run(
        config,
        Listeners::default(),
        None,
        stop.clone().cancelled_owned(),
    ));
    let db = helpgrid_archive::store::connect(url).await.unwrap();
    Archive { stop, task, db }
}

impl Archive {
    async fn archived(&self) -> i64 {
        self.db
            .query_one(
                "SELECT coalesce(sum(next_offset), 0)::bigint FROM kafka_offsets",
                &[],
            )
            .await
            .map_or(0, |r| r.get(0))
    }

    async fn positions(&self) -> HashMap<i32, i64> {
        self.db
            .query(
                "SELECT kafka_partition, next_offset FROM kafka_offsets",
                &[],
            )
            .await
            .map(|rows| rows.iter().map(|r| (r.get(0), r.get(1))).collect())
            .unwrap_or_default()
    }

    async fn wait_for(&self, want: i64, limit: Duration) -> Duration {
        let started = Instant::now();
        while started.elapsed() < limit {
            if self.archived().await >= want {
                return started.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "not archived within {limit:?}: {} of {want}",
            self.archived().await
        );
    }

    async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
    }
}

/// Reads every record of `topic` (all partitions, from the beginning) and nothing else.
async fn read_only(kafka: &KafkaArgs, topic: &str, want: usize) -> Duration {
    let mut config =
        kafka.group_consumer_config("bench-read", &format!("{}read", kafka.topic_prefix));
    config.set("fetch.wait.max.ms", "50");
    let consumer: StreamConsumer = config.create().unwrap();
    let mut list = rdkafka::TopicPartitionList::new();
    for p in 0..kafka.topic_partitions {
        list.add_partition_offset(topic, p, rdkafka::Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&list).unwrap();
    let started = Instant::now();
    let mut stream = consumer.stream();
    let mut bytes = 0usize;
    for _ in 0..want {
        let message = stream.next().await.unwrap().unwrap();
        // Copied out as the sink does.
        bytes += message.payload().map(<[u8]>::to_vec).map_or(0, |p| p.len());
    }
    assert!(bytes > 0);
    started.elapsed()
}

/// The tables the raw COPY baselines write into: the archive's own shape first (same
/// indexes), then lighter shapes showing what the indexes and the WAL cost PostgreSQL here.
const COPY_SHAPES: &[(&str, &str)] = &[
    (
        "same table and indexes",
        "CREATE TABLE copy_baseline (LIKE incident_events INCLUDING ALL)",
    ),
    (
        "primary key only (no trail index)",
        "CREATE TABLE copy_baseline (LIKE incident_events); \
         ALTER TABLE copy_baseline ADD PRIMARY KEY (kafka_partition, kafka_offset)",
    ),
    (
        "no indexes",
        "CREATE TABLE copy_baseline (LIKE incident_events)",
    ),
    (
        "no indexes, UNLOGGED (no WAL)",
        "CREATE UNLOGGED TABLE copy_baseline (LIKE incident_events)",
    ),
];

/// Binary COPY of the archived event rows into an empty table made by `create`: what
/// PostgreSQL itself takes to store these rows, with no Kafka, decoding or upserts. The
/// session is the sink's (`synchronous_commit = off`).
async fn raw_copy(db: &Client, create: &str) -> (i64, Duration, f64) {
    use futures::SinkExt;
    db.batch_execute(helpgrid_archive::store::SINK_SESSION)
        .await
        .unwrap();
    db.batch_execute(&format!("DROP TABLE IF EXISTS copy_baseline; {create}"))
        .await
        .unwrap();
    let out = db
        .copy_out("COPY incident_events TO STDOUT (FORMAT binary)")
        .await
        .unwrap();
    let chunks: Vec<_> = out.map(|c| c.unwrap()).collect().await;
    let pg_before = postgres_cpu(db).await;
    let started = Instant::now();
    let sink = db
        .copy_in("COPY copy_baseline FROM STDIN (FORMAT binary)")
        .await
        .unwrap();
    let mut sink = std::pin::pin!(sink);
    for chunk in chunks {
        sink.send(chunk).await.unwrap();
    }
    let rows = sink.as_mut().finish().await.unwrap() as i64;
    let took = started.elapsed();
    let pg_cpu = postgres_cpu(db).await - pg_before;
    db.batch_execute("DROP TABLE copy_baseline").await.unwrap();
    (rows, took, pg_cpu * 100_000.0 / rows.max(1) as f64)
}

/// Clock ticks per second of /proc/<pid>/stat times (USER_HZ: 100 on every Linux here).
const TICKS_PER_S: f64 = 100.0;

/// Fields of /proc/<pid>/stat after the command name (which may hold spaces): field 3 of
/// stat(5) (state) is index 0.
fn stat_fields(pid: u32) -> Option<Vec<i64>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    Some(
        after
            .split_whitespace()
            .map(|f| f.parse().unwrap_or(0))
            .collect(),
    )
}

/// CPU seconds (user + system) of this process: the archive runs in it (its Kafka consumers
/// included), so a run's difference is the archive's CPU.
fn own_cpu() -> f64 {
    stat_fields(std::process::id()).map_or(0.0, |f| (f[11] + f[12]) as f64 / TICKS_PER_S)
}

/// CPU seconds of the whole PostgreSQL server `db` is connected to: the postmaster with its
/// reaped children (cutime, cstime: backends that have exited) plus every live child.
async fn postgres_cpu(db: &Client) -> f64 {
    let backend: i32 = db
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let Some(postmaster) = stat_fields(backend as u32).map(|f| f[1]) else {
        return 0.0;
    };
    let mut ticks = stat_fields(postmaster as u32).map_or(0, |f| f[11] + f[12] + f[13] + f[14]);
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some(f) = stat_fields(pid).filter(|f| f[1] == postmaster) {
            ticks += f[11] + f[12];
        }
    }
    ticks as f64 / TICKS_PER_S
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn per_s(n: i64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run with scripts/bench-archive"]
async fn sink_throughput_into_postgres() {
    let incidents: usize = env_or("ARCHIVE_BENCH_INCIDENTS", 40_000);
    let kafka = bench_kafka();
    let topics = Topics::with_prefix(&kafka.topic_prefix);
    ensure_topics(&kafka, &topics).await.expect("topics");
    let start = now_millis() - 86_400_000;
    let events: Vec<IncidentEvent> = (0..incidents)
        .flat_map(|n| incident_story(n, &format!("g-{:04}", n % 1300), start + n as i64))
        .collect();
    let produced = Instant::now();
    produce(&kafka, &topics.incident_events, &events).await;
    println!(
        "produced {} incident events in {:.1} s",
        events.len(),
        produced.elapsed().as_secs_f64()
    );
    let want = events.len() as i64;
    let read = read_only(&kafka, &topics.incident_events, events.len()).await;
    let areas = city_areas(1300, |g| format!("g-{g:04}"));
    // One run per writer count, each into a fresh database, on the same records.
    let counts: Vec<usize> = std::env::var("ARCHIVE_BENCH_WRITER_COUNTS")
        .unwrap_or_else(|_| "1,2".into())
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    let mut runs = Vec::new();
    let mut copy = None;
    let mut assignments: i64 = 0;
    let meter = helpgrid_archive::store::connect(&server_url())
        .await
        .unwrap();
    for writers in counts {
        let url = fresh_database(&server_url()).await;
        let (cpu_before, pg_before) = (own_cpu(), postgres_cpu(&meter).await);
        let archive = start_archive(&kafka, &url, writers, areas.clone()).await;
        let took = archive.wait_for(want, Duration::from_secs(600)).await;
        // CPU per 100,000 events, which the machine's load does not change: the archive's
        // process, and the PostgreSQL server's (every backend; the server is this bench's
        // own unless HELPGRID_TEST_POSTGRES points elsewhere).
        let cpu = (
            (own_cpu() - cpu_before) * 100_000.0 / want as f64,
            (postgres_cpu(&meter).await - pg_before) * 100_000.0 / want as f64,
        );
        let rows: i64 = archive
            .db
            .query_one("SELECT count(*) FROM incident_events", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(rows, want, "every record archived once");
        let rolled: i64 = archive
            .db
            .query_one("SELECT sum(requests)::int8 FROM incident_rollup", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            rolled, incidents as i64,
            "every incident in the rollup once"
        );
        assignments = archive
            .db
            .query_one("SELECT count(*) FROM assignments", &[])
            .await
            .unwrap()
            .get(0);
        if copy.is_none() {
            let mut shapes = Vec::new();
            for (what, create) in COPY_SHAPES {
                shapes.push((*what, raw_copy(&archive.db, create).await));
            }
            copy = Some(shapes);
        }
        archive.stop().await;
        runs.push((writers, took, cpu));
    }
    let shapes = copy.unwrap();
    let (_, (copied, copy_took, _)) = shapes[0];
    let mut table = format!(
        "archived {want} events ({incidents} incidents, {assignments} assignment rows)\n\
         | what | events | time s | events/s | ÷ raw COPY |\n| --- | --- | --- | --- | --- |\n\
         | read the topic only (Kafka baseline) | {want} | {:.2} | {:.0} | |\n",
        read.as_secs_f64(),
        per_s(want, read),
    );
    let mut cpu_table = String::from(
        "| run | archive CPU-s per 100k events | PostgreSQL CPU-s per 100k events |\n| --- | --- | --- |\n",
    );
    for (what, (rows, took, pg_cpu)) in &shapes {
        assert_eq!(*rows, want);
        cpu_table.push_str(&format!("| raw COPY, {what} | | {pg_cpu:.2} |\n"));
        table.push_str(&format!(
            "| raw binary COPY of the event rows, {what} (PostgreSQL baseline) | {rows} | {:.2} | {:.0} | {:.2} |\n",
            took.as_secs_f64(),
            per_s(*rows, *took),
            per_s(*rows, *took) / per_s(copied, copy_took),
        ));
    }
    for (writers, took, (archive_cpu, pg_cpu)) in runs {
        table.push_str(&format!(
            "| helpgrid-archive, {writers} writer(s) (start-up included; rows, rollup, offsets) | {want} | {:.2} | {:.0} | {:.2} |\n",
            took.as_secs_f64(),
            per_s(want, took),
            per_s(want, took) / per_s(copied, copy_took),
        ));
        cpu_table.push_str(&format!(
            "| helpgrid-archive, {writers} writer(s) | {archive_cpu:.2} | {pg_cpu:.2} |\n"
        ));
    }
    println!(
        "{table}\nload average at the end: {}\n{cpu_table}",
        load_average()
    );
}

/// Produces `events` at `per_s` records per second (in 10 ms slices), recording when Kafka
/// acknowledged each (partition, offset).
async fn produce_paced(
    kafka: &KafkaArgs,
    topic: &str,
    events: Vec<IncidentEvent>,
    per_s: f64,
    acked: Arc<Mutex<Vec<(i32, i64, Instant)>>>,
) {
    let producer: FutureProducer = kafka.producer_config("bench-paced").create().unwrap();
    let started = Instant::now();
    let mut sends = futures::stream::FuturesUnordered::new();
    for (n, event) in events.into_iter().enumerate() {
        let due = started + Duration::from_secs_f64(n as f64 / per_s);
        if due > Instant::now() {
            // Drain acknowledgements while waiting for the next slot.
            let sleep = tokio::time::sleep_until(due.into());
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    () = &mut sleep => break,
                    Some(()) = sends.next() => {}
                }
            }
        }
        let producer = producer.clone();
        let topic = topic.to_owned();
        let acked = Arc::clone(&acked);
        sends.push(async move {
            let key = event
                .incident
                .as_ref()
                .map(|i| i.grid_id.clone())
                .unwrap_or_default();
            let payload = event.encode_to_vec();
            let delivery = producer
                .send(
                    FutureRecord::to(&topic).key(&key).payload(&payload),
                    Duration::from_secs(30),
                )
                .await
                .map_err(|(e, _)| e)
                .unwrap();
            acked
                .lock()
                .unwrap()
                .push((delivery.partition, delivery.offset, Instant::now()));
        });
    }
    while sends.next().await.is_some() {}
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Presses as the router turns them into records: opened and assigned.
fn presses(count: usize, grids: usize) -> Vec<IncidentEvent> {
    let now = now_millis();
    (0..count)
        .flat_map(|n| {
            let mut story = incident_story(n, &format!("g-{:05}", n % grids), now);
            story.truncate(2);
            story
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run with scripts/bench-archive"]
async fn sink_lag_at_a_steady_press_rate() {
    let rate: f64 = env_or("ARCHIVE_BENCH_RATE", 2000.0);
    let seconds: f64 = env_or("ARCHIVE_BENCH_SECONDS", 20.0);
    let kafka = bench_kafka();
    let topics = Topics::with_prefix(&kafka.topic_prefix);
    ensure_topics(&kafka, &topics).await.expect("topics");
    let url = fresh_database(&server_url()).await;
    let archive = start_archive(
        &kafka,
        &url,
        writers(),
        city_areas(13_000, |g| format!("g-{g:05}")),
    )
    .await;
    // Every press is two records (opened, assigned): the records' rate is twice the presses'.
    let events = presses((rate * seconds) as usize, 13_000);
    let want = events.len() as i64;
    let acked = Arc::new(Mutex::new(Vec::new()));
    let producing = tokio::spawn({
        let (kafka, topic, acked) = (
            kafka.clone(),
            topics.incident_events.clone(),
            Arc::clone(&acked),
        );
        async move { produce_paced(&kafka, &topic, events, rate * 2.0, acked).await }
    });
    // Poll the archive's position; a record's lag ends at the first poll that covers it.
    let mut lags = Vec::with_capacity(want as usize);
    let mut done: HashMap<(i32, i64), ()> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs_f64(seconds + 120.0);
    while (lags.len() as i64) < want && Instant::now() < deadline {
        let positions = archive.positions().await;
        let now = Instant::now();
        let pending: Vec<(i32, i64, Instant)> = acked.lock().unwrap().clone();
        for (p, o, at) in pending {
            if positions.get(&p).is_some_and(|next| o < *next) && done.insert((p, o), ()).is_none()
            {
                lags.push(now.saturating_duration_since(at));
            }
        }
        acked
            .lock()
            .unwrap()
            .retain(|(p, o, _)| !done.contains_key(&(*p, *o)));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    producing.await.unwrap();
    assert_eq!(lags.len() as i64, want, "every record archived");
    lags.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "lag, {} writer(s), at {rate:.0} presses/s ({:.0} records/s) for {seconds:.0} s, {want} records: \
         p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms (polled every 10 ms)",
        writers(),
        rate * 2.0,
        ms(percentile(&lags, 0.5)),
        ms(percentile(&lags, 0.99)),
        ms(*lags.last().unwrap()),
    );
    archive.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run with scripts/bench-archive"]
async fn the_household_flood_is_archived_soon_after_its_last_press() {
    let households: usize = env_or("ARCHIVE_BENCH_FLOOD", 774_000);
    let kafka = bench_kafka();
    let topics = Topics::with_prefix(&kafka.topic_prefix);
    ensure_topics(&kafka, &topics).await.expect("topics");
    let url = fresh_database(&server_url()).await;
    let writers = writers();
    let archive = start_archive(
        &kafka,
        &url,
        writers,
        city_areas(13_000, |g| format!("g-{g:05}")),
    )
    .await;
    let events = presses(households, 13_000);
    let want = events.len() as i64;
    let started = Instant::now();
    produce(&kafka, &topics.incident_events, &events).await;
    let produced = started.elapsed();
    let at_last_press = archive.archived().await;
    let after = archive.wait_for(want, Duration::from_secs(600)).await;
    println!(
        "flood, {writers} writer(s): {households} presses ({want} records) produced in {:.1} s \
         ({:.0} records/s); archived at the last press: {at_last_press}; everything archived \
         {:.1} s after the last press ({:.1} s from the first)",
        produced.as_secs_f64(),
        per_s(want, produced),
        after.as_secs_f64(),
        (produced + after).as_secs_f64(),
    );
    archive.stop().await;
}
