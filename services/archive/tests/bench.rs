//! Sink throughput into real PostgreSQL: `scripts/bench-archive` (ignored in the normal run).
//! Writes N incident events to a fresh topic first, then starts the archive and times how
//! long it takes to archive all of them; prints events/s.

mod support;

use helpgrid_archive::config::ArchiveConfig;
use helpgrid_archive::{Listeners, run};
use helpgrid_common::time::now_millis;
use helpgrid_common::topics::{Topics, ensure_topics};
use helpgrid_proto::pb::IncidentEvent;
use helpgrid_testkit::kafka_args;
use std::time::{Duration, Instant};
use support::{fresh_database, incident_story, produce, server_url};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run with scripts/bench-archive"]
async fn sink_throughput_into_postgres() {
    let incidents: usize = std::env::var("ARCHIVE_BENCH_INCIDENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40_000);
    let mut kafka = kafka_args();
    kafka.topic_partitions = 6;
    let topics = Topics::with_prefix(&kafka.topic_prefix);
    ensure_topics(&kafka, &topics).await.expect("topics");
    let url = fresh_database(&server_url()).await;
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
    let stop = CancellationToken::new();
    let started = Instant::now();
    let task = tokio::spawn(run(
        ArchiveConfig::new(kafka.clone(), url.clone()),
        Listeners::default(),
        None,
        stop.clone().cancelled_owned(),
    ));
    let db = helpgrid_archive::store::connect(&url).await.expect("db");
    let want = events.len() as i64;
    let mut last = 0;
    while started.elapsed() < Duration::from_secs(600) {
        last = db
            .query_one(
                "SELECT coalesce(sum(next_offset), 0)::bigint FROM kafka_offsets",
                &[],
            )
            .await
            .map_or(0, |r| r.get(0));
        if last >= want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = started.elapsed().as_secs_f64();
    assert_eq!(last, want, "everything archived");
    let rows: i64 = db
        .query_one("SELECT count(*) FROM incident_events", &[])
        .await
        .expect("q")
        .get(0);
    assert_eq!(rows, want);
    println!(
        "archived {want} events ({incidents} incidents, {} assignments rows) in {took:.2} s \
         (start-up included): {:.0} events/s",
        db.query_one("SELECT count(*) FROM assignments", &[])
            .await
            .map_or(0, |r| r.get::<_, i64>(0)),
        want as f64 / took
    );
    stop.cancel();
    task.await.expect("join").expect("archive ran");
}
