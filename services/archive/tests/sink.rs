//! The sink against real Kafka and real PostgreSQL: rows match the events, a restart resumes
//! without doubles, a SIGKILL mid-batch loses and doubles nothing, PostgreSQL down makes the
//! archive lag and then catch up, a bad record is dead-lettered, a newer schema is refused.

mod support;

use helpgrid_archive::config::ArchiveConfig;
use helpgrid_archive::{Listeners, run};
use helpgrid_common::reader::{self, Feed};
use helpgrid_common::time::now_millis;
use helpgrid_common::topics::{Topics, ensure_topics};
use helpgrid_proto::pb::IncidentEvent;
use helpgrid_testkit::process::ServiceProcess;
use helpgrid_testkit::{Publisher, kafka_args};
use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;
use support::{fresh_database, incident_story, produce, server_url, wait_for_count};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(60);

fn story(from: usize, count: usize) -> Vec<IncidentEvent> {
    let day = 86_400_000;
    let start = now_millis() - 30 * day;
    (from..from + count)
        .flat_map(|n| incident_story(n, &format!("g-{:02}", n % 12), start + (n as i64) * 60_000))
        .collect()
}

/// Runs the archive in this process until the returned token is cancelled.
fn spawn_archive(
    config: ArchiveConfig,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    helpgrid_common::telemetry::init_tracing();
    let stop = CancellationToken::new();
    let task = tokio::spawn(run(
        config,
        Listeners::default(),
        None,
        stop.clone().cancelled_owned(),
    ));
    (stop, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_match_the_events_bad_records_are_dead_lettered_and_a_restart_adds_no_doubles() {
    let kafka = kafka_args();
    let topics = Topics::with_prefix(&kafka.topic_prefix);
    ensure_topics(&kafka, &topics).await.expect("topics");
    let url = fresh_database(&server_url()).await;
    let first = story(0, 60);
    produce(&kafka, &topics.incident_events, &first).await;
    Publisher::new(&kafka)
        .send_raw(&topics.incident_events, "g-01", b"\x08\xff not an event")
        .await;

    let (stop, task) = spawn_archive(ArchiveConfig::new(kafka.clone(), url.clone()));
    wait_for_count(
        &url,
        "SELECT count(*) FROM incident_events",
        first.len() as i64,
        WAIT,
    )
    .await;
    let db = helpgrid_archive::store::connect(&url).await.expect("db");
    let incidents: i64 = db
        .query_one("SELECT count(*) FROM incidents WHERE state = 4", &[])
        .await
        .expect("q")
        .get(0);
    assert_eq!(incidents, 60, "every incident archived in its closed state");
    // Escalated on every third (0, 3, ..., 57: 20), repeat press on every fifth (12).
    let sums = db
        .query_one(
            "SELECT sum(escalations)::bigint, sum(repeat_presses)::bigint, \
             count(*) FILTER (WHERE settled_level = 2) FROM incidents",
            &[],
        )
        .await
        .expect("q");
    assert_eq!(
        (
            sums.get::<_, i64>(0),
            sums.get::<_, i64>(1),
            sums.get::<_, i64>(2)
        ),
        (20, 12, 20)
    );
    let trail: Vec<String> = db
        .query(
            "SELECT change FROM incident_events WHERE incident_id = $1 ORDER BY revision",
            &[&first[0].incident.as_ref().expect("incident").incident_id],
        )
        .await
        .expect("q")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        trail,
        [
            "opened",
            "assigned",
            "escalated",
            "attached",
            "acknowledged",
            "closed"
        ]
    );
    let assignments: i64 = db
        .query_one("SELECT count(*) FROM assignments", &[])
        .await
        .expect("q")
        .get(0);
    assert_eq!(
        assignments,
        60 + 20,
        "one per incident, plus the escalations"
    );

    // The bad record went to the dead-letter topic with its reason and origin.
    let dead = dead_letters(&kafka, &topics.dead_letters).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(
        dead[0]
            .iter()
            .any(|(k, v)| k == "helpgrid.dlq.kind" && v == "decode")
    );
    assert!(
        dead[0]
            .iter()
            .any(|(k, v)| k == "helpgrid.dlq.origin.topic" && *v == topics.incident_events)
    );

    // Stop, write more, restart: the new events are archived, nothing twice.
    stop.cancel();
    task.await.expect("join").expect("archive ran");
    let second = story(60, 20);
    produce(&kafka, &topics.incident_events, &second).await;
    let (stop, task) = spawn_archive(ArchiveConfig::new(kafka.clone(), url.clone()));
    let total = (first.len() + second.len()) as i64;
    wait_for_count(&url, "SELECT count(*) FROM incident_events", total, WAIT).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let distinct: i64 = db
        .query_one("SELECT count(DISTINCT event_id) FROM incident_events", &[])
        .await
        .expect("q")
        .get(0);
    assert_eq!(distinct, total);
    let offsets: i64 = db
        .query_one("SELECT sum(next_offset)::bigint FROM kafka_offsets", &[])
        .await
        .expect("q")
        .get(0);
    assert_eq!(
        offsets,
        total + 1,
        "the stored offsets cover every record, the bad one too"
    );
    stop.cancel();
    task.await.expect("join").expect("archive ran");
}

async fn dead_letters(
    kafka: &helpgrid_common::kafka::KafkaArgs,
    topic: &str,
) -> Vec<Vec<(String, String)>> {
    let stop = CancellationToken::new();
    let mut feed = reader::follow(kafka, "archive-test-dlq", topic, stop.clone())
        .await
        .expect("follow");
    let mut out = Vec::new();
    while let Ok(Some(item)) = tokio::time::timeout(Duration::from_secs(10), feed.recv()).await {
        match item {
            Feed::Record(r) => out.push(
                r.headers
                    .into_iter()
                    .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
                    .collect(),
            ),
            Feed::CaughtUp => break,
        }
    }
    stop.cancel();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_with_a_newer_schema_is_refused_with_a_clear_message() {
    let kafka = kafka_args();
    let url = fresh_database(&server_url()).await;
    let db = helpgrid_archive::store::connect(&url).await.expect("db");
    db.batch_execute(
        "CREATE TABLE archive_schema (version integer PRIMARY KEY, name text NOT NULL, \
         checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now()); \
         INSERT INTO archive_schema (version, name, checksum) VALUES (999, 'future', 'x')",
    )
    .await
    .expect("fake a newer schema");
    let (_stop, task) = spawn_archive(ArchiveConfig::new(kafka, url));
    let refused = tokio::time::timeout(WAIT, task)
        .await
        .expect("refuses promptly")
        .expect("join")
        .expect_err("refuses to start");
    let message = format!("{refused:#}");
    assert!(
        message.contains("schema version 999, newer than this build knows"),
        "{message}"
    );
}

fn archive_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_helpgrid-archive"))
}

fn archive_env(kafka: &helpgrid_common::kafka::KafkaArgs, url: &str) -> Vec<(String, String)> {
    vec![
        ("HELPGRID_KAFKA_BROKERS".into(), kafka.brokers.clone()),
        ("HELPGRID_TOPIC_PREFIX".into(), kafka.topic_prefix.clone()),
        ("HELPGRID_TOPIC_PARTITIONS".into(), "3".into()),
        ("HELPGRID_ARCHIVE_POSTGRES_URL".into(), url.into()),
        ("HELPGRID_INSECURE_NO_AUTH".into(), "true".into()),
        // Small batches so a kill lands between and inside many of them.
        ("HELPGRID_ARCHIVE_BATCH_MAX".into(), "500".into()),
        ("RUST_LOG".into(), "info".into()),
    ]
}

/// Archive rows against incident-events: every record once (by event id and position).
async fn reconcile(db: &tokio_postgres::Client, produced: &[IncidentEvent]) {
    let rows = db
        .query("SELECT event_id FROM incident_events", &[])
        .await
        .expect("q");
    let archived: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    let unique: HashSet<&String> = archived.iter().collect();
    let wanted: HashSet<String> = produced
        .iter()
        .filter_map(|e| e.envelope.as_ref().map(|v| v.event_id.clone()))
        .collect();
    let lost = wanted.iter().filter(|id| !unique.contains(id)).count();
    let doubled = archived.len() - unique.len();
    println!(
        "reconcile: produced {} archived {} lost {lost} doubled {doubled}",
        wanted.len(),
        archived.len()
    );
    assert_eq!((lost, doubled), (0, 0));
    assert_eq!(archived.len(), produced.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_batch_loses_nothing_and_doubles_nothing() {
    let kafka = kafka_args();
    let topics = Topics::with_prefix(&kafka.topic_prefix);
    ensure_topics(&kafka, &topics).await.expect("topics");
    let url = fresh_database(&server_url()).await;
    let events = story(0, 3000);
    let env = archive_env(&kafka, &url);
    let name = format!("archive-kill-{}", &kafka.topic_prefix);
    let producing = {
        let kafka = kafka.clone();
        let topic = topics.incident_events.clone();
        let events = events.clone();
        tokio::spawn(async move { produce(&kafka, &topic, &events).await })
    };
    let db = helpgrid_archive::store::connect(&url).await.expect("db");
    let mut kills = 0;
    for round in 0..4 {
        let process = ServiceProcess::spawn(&archive_bin(), &name, &env);
        // Let it get into its batches, then kill it wherever it is.
        let before: i64 = archived_count(&db).await;
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let now = archived_count(&db).await;
            if now > before + 1500 || now == events.len() as i64 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "archive made no progress"
            );
            tokio::time::sleep(Duration::from_millis(20 + 13 * round)).await;
        }
        if archived_count(&db).await < events.len() as i64 {
            process.kill();
            kills += 1;
        } else {
            drop(process);
            break;
        }
    }
    producing.await.expect("produced");
    let process = ServiceProcess::spawn(&archive_bin(), &name, &env);
    wait_for_count(
        &url,
        "SELECT count(*) FROM incident_events",
        events.len() as i64,
        WAIT,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    println!("killed the archive {kills} times mid-stream");
    assert!(kills >= 1, "the test must actually kill the sink");
    reconcile(&db, &events).await;
    let incidents: i64 = db
        .query_one("SELECT count(*) FROM incidents WHERE state = 4", &[])
        .await
        .expect("q")
        .get(0);
    assert_eq!(incidents, 3000);
    let escalations: i64 = db
        .query_one("SELECT sum(escalations)::bigint FROM incidents", &[])
        .await
        .expect("q")
        .get(0);
    assert_eq!(
        escalations, 1000,
        "counters are added once per event, kills or not"
    );
    drop(process);
}

async fn archived_count(db: &tokio_postgres::Client) -> i64 {
    db.query_one("SELECT count(*) FROM incident_events", &[])
        .await
        .map_or(0, |r| r.get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_makes_the_archive_lag_then_it_catches_up() {
    let kafka = kafka_args();
    let topics = Topics::with_prefix(&kafka.topic_prefix);
    ensure_topics(&kafka, &topics).await.expect("topics");
    let postgres = support::OwnPostgres::start();
    let url = postgres.url.clone();
    let (stop, task) = spawn_archive(ArchiveConfig::new(kafka.clone(), url.clone()));
    let first = story(0, 20);
    produce(&kafka, &topics.incident_events, &first).await;
    wait_for_count(
        &url,
        "SELECT count(*) FROM incident_events",
        first.len() as i64,
        WAIT,
    )
    .await;

    postgres.run("stop");
    let second = story(20, 40);
    produce(&kafka, &topics.incident_events, &second).await;
    // Routing is untouched: the events are on Kafka whatever the archive does.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !task.is_finished(),
        "the archive keeps running while PostgreSQL is down"
    );
    assert_eq!(
        postgres.run("start").trim(),
        url,
        "a restarted PostgreSQL keeps its address"
    );
    let total = (first.len() + second.len()) as i64;
    wait_for_count(&url, "SELECT count(*) FROM incident_events", total, WAIT).await;
    let db = helpgrid_archive::store::connect(&url).await.expect("db");
    let mut all = first.clone();
    all.extend(second);
    reconcile(&db, &all).await;
    stop.cancel();
    task.await.expect("join").expect("archive ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn personal_fields_become_pseudonyms_after_the_period_in_rows_and_event_records() {
    let kafka = kafka_args();
    let topics = Topics::with_prefix(&kafka.topic_prefix);
    ensure_topics(&kafka, &topics).await.expect("topics");
    let url = fresh_database(&server_url()).await;
    // Closed a month ago (story) and just now: only the old ones are due after 7 days.
    let old = story(0, 10);
    let mut recent = incident_story(99, "g-01", now_millis() - 3_600_000);
    recent.iter_mut().for_each(|e| {
        if let Some(i) = e.incident.as_mut() {
            i.household_id = "hh-0".into(); // the same household as incident 0
        }
    });
    let mut all = old.clone();
    all.extend(recent.iter().cloned());
    produce(&kafka, &topics.incident_events, &all).await;
    let mut config = ArchiveConfig::new(kafka.clone(), url.clone());
    config.pseudonymise_after = Some(Duration::from_secs(7 * 86_400));
    config.pseudonymise_every = Duration::from_millis(200);
    config.pseudonym_key = b"pseudonym-key-pseudonym-key-pseudonym".to_vec();
    let (stop, task) = spawn_archive(config);
    wait_for_count(
        &url,
        "SELECT count(*) FROM incident_events",
        all.len() as i64,
        WAIT,
    )
    .await;
    wait_for_count(
        &url,
        "SELECT count(*) FROM incidents WHERE pseudonymised_at IS NOT NULL",
        10,
        WAIT,
    )
    .await;
    let db = helpgrid_archive::store::connect(&url).await.expect("db");
    let leaks: i64 = db
        .query_one(
            "SELECT count(*) FROM incident_events e JOIN incidents i USING (incident_id) \
             WHERE i.pseudonymised_at IS NOT NULL \
             AND (position('hh-'::bytea IN e.record) > 0 OR position('helped'::bytea IN e.record) > 0)",
            &[],
        )
        .await
        .expect("q")
        .get(0);
    assert_eq!(
        leaks, 0,
        "no household id or note left in a pseudonymised trail"
    );
    let households: Vec<String> = db
        .query(
            "SELECT household_id FROM incidents WHERE pseudonymised_at IS NOT NULL",
            &[],
        )
        .await
        .expect("q")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        households
            .iter()
            .all(|h| h.starts_with("p-") && h.len() == 18),
        "{households:?}"
    );
    let recent_household: String = db
        .query_one(
            "SELECT household_id FROM incidents WHERE pseudonymised_at IS NULL",
            &[],
        )
        .await
        .expect("the recent incident keeps its data")
        .get(0);
    assert_eq!(recent_household, "hh-0");
    stop.cancel();
    task.await.expect("join").expect("archive ran");
}
