//! A real Prometheus (Debian's `prometheus`) scrapes every HelpGrid service on real Kafka:
//! the router (in this test process, with the Prometheus exporter on a port of its own) and
//! the status service, gateway (without MQTT), archive (on a fresh PostgreSQL database) and
//! notify as their real binaries, each on its own `--metrics-listen` port. Prometheus's HTTP
//! API (queried with curl) must show every target up, the alert rules loaded and evaluating,
//! and every series an alert or the dashboard reads.
#![allow(clippy::unwrap_used)]

mod support;

use helpgrid_proto::pb::{PressKind, ResponderRole};
use helpgrid_router::config::RouterConfig;
use helpgrid_router::domain::Policy;
use helpgrid_testkit::process::ServiceProcess;
use helpgrid_testkit::records::{press, responder, roster_record};
use prost::Message;
use serde_json::Value;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use support::TestKafka;
use tokio_util::sync::CancellationToken;

/// The longest the test waits for Prometheus to see what it expects.
const PATIENCE: Duration = Duration::from_secs(60);

fn free_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// GET with curl: a client we did not write.
fn get(url: &str) -> Option<Value> {
    let out = Command::new("curl")
        .args(["-sf", "--max-time", "5", "-g", url])
        .output()
        .expect("curl (Debian: apt-get install curl)");
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).ok())
        .flatten()
}

fn query(prometheus: SocketAddr, promql: &str) -> Vec<Value> {
    let url = format!(
        "http://{prometheus}/api/v1/query?query={}",
        promql
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' | b'.' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    );
    get(&url)
        .and_then(|v| v["data"]["result"].as_array().cloned())
        .unwrap_or_default()
}

/// One scrape job per `(job, target)`, named as in deploy/prometheus (the alerts select on it).
fn prometheus_config(dir: &Path, targets: &[(&str, SocketAddr)]) -> PathBuf {
    let rules =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/prometheus/helpgrid-alerts.yml");
    let mut config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
         rule_files:\n  - {rules}\n\
         scrape_configs:\n",
        rules = rules.display()
    );
    for (job, target) in targets {
        config.push_str(&format!(
            "  - job_name: {job}\n    static_configs:\n      - targets: ['{target}']\n"
        ));
    }
    let path = dir.join("prometheus.yml");
    std::fs::write(&path, config).unwrap();
    path
}

/// A sibling binary of helpgrid-status in the same target folder (`cargo test --workspace`
/// builds every package's binaries before a test runs; `-p helpgrid-status` alone does not).
fn sibling_binary(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_helpgrid-status")).with_file_name(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --bins -p {name}` first (or `cargo test --workspace`)",
        path.display()
    );
    path
}

/// Starts `binary` (a path or a sibling's name) as an operator would: on the test's Kafka
/// topics, with `own` settings on top.
fn spawn_service(kafka: &TestKafka, binary: &Path, own: &[(&str, String)]) -> ServiceProcess {
    let name = binary.file_name().unwrap().to_string_lossy().into_owned();
    let mut env = vec![
        (
            "HELPGRID_KAFKA_BROKERS".to_owned(),
            kafka.args.brokers.clone(),
        ),
        (
            "HELPGRID_TOPIC_PREFIX".to_owned(),
            kafka.args.topic_prefix.clone(),
        ),
        (
            "HELPGRID_TOPIC_PARTITIONS".to_owned(),
            support::PARTITIONS.to_string(),
        ),
        ("HELPGRID_INSECURE_NO_AUTH".to_owned(), "true".to_owned()),
    ];
    env.extend(own.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
    ServiceProcess::spawn(
        binary,
        &format!("prometheus-test-{name}-{}", std::process::id()),
        &env,
    )
}

/// A new, empty database on the test PostgreSQL (`HELPGRID_TEST_POSTGRES`, as
/// scripts/with-postgres sets it), created with psql; returns its URL.
fn fresh_postgres_database() -> String {
    let server = std::env::var("HELPGRID_TEST_POSTGRES").expect(
        "HELPGRID_TEST_POSTGRES is not set: run under scripts/with-postgres (the archive needs PostgreSQL)",
    );
    let name = format!("t_{}", &uuid::Uuid::new_v4().simple().to_string()[..16]);
    let out = Command::new("psql")
        .args([server.as_str(), "-v", "ON_ERROR_STOP=1", "-qc"])
        .arg(format!("CREATE DATABASE {name}"))
        .output()
        .expect("psql (Debian: apt-get install postgresql-client)");
    assert!(
        out.status.success(),
        "cannot create a test database: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    match server.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{name}"),
        None => panic!("HELPGRID_TEST_POSTGRES is not a postgres:// URL: {server}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_every_service_and_sees_the_series_the_alerts_read() {
    let kafka = TestKafka::new().await;
    // A responder and a press, so the router assigns and commits a transaction.
    let worker = roster_record(responder("w-1", ResponderRole::GridWorker, &["g1"], None));
    kafka
        .publish_raw(&kafka.topics.roster, 0, "w-1", &worker.encode_to_vec())
        .await;

    // The router, with this process's exporter.
    let router_metrics = free_addr();
    helpgrid_common::telemetry::install_prometheus(router_metrics).unwrap();
    let stop_router = CancellationToken::new();
    let router = tokio::spawn(helpgrid_router::run(
        RouterConfig {
            batch_max: 100,
            ..RouterConfig::new(
                kafka.args.clone(),
                format!("{}router-0", kafka.args.topic_prefix),
                Policy::default(),
            )
        },
        stop_router.clone().cancelled_owned(),
    ));

    // The other services: the real binaries, as an operator runs them.
    let (grpc, status_metrics) = (free_addr(), free_addr());
    let status = spawn_service(
        &kafka,
        Path::new(env!("CARGO_BIN_EXE_helpgrid-status")),
        &[
            ("HELPGRID_STATUS_LISTEN", grpc.to_string()),
            ("HELPGRID_STATUS_METRICS_LISTEN", status_metrics.to_string()),
        ],
    );
    // Without MQTT: the registry feed and resident feedback only.
    let gateway_metrics = free_addr();
    let gateway = spawn_service(
        &kafka,
        &sibling_binary("helpgrid-gateway"),
        &[(
            "HELPGRID_GATEWAY_METRICS_LISTEN",
            gateway_metrics.to_string(),
        )],
    );
    let archive_metrics = free_addr();
    let archive = spawn_service(
        &kafka,
        &sibling_binary("helpgrid-archive"),
        &[
            ("HELPGRID_ARCHIVE_POSTGRES_URL", fresh_postgres_database()),
            (
                "HELPGRID_ARCHIVE_METRICS_LISTEN",
                archive_metrics.to_string(),
            ),
        ],
    );
    let notify_metrics = free_addr();
    let notify = spawn_service(
        &kafka,
        &sibling_binary("helpgrid-notify"),
        &[
            ("HELPGRID_NOTIFY_GRPC_LISTEN", free_addr().to_string()),
            ("HELPGRID_NOTIFY_METRICS_LISTEN", notify_metrics.to_string()),
        ],
    );
    let jobs = [
        ("helpgrid-archive", archive_metrics),
        ("helpgrid-gateway", gateway_metrics),
        ("helpgrid-notify", notify_metrics),
        ("helpgrid-router", router_metrics),
        ("helpgrid-status", status_metrics),
    ];

    let data = std::env::temp_dir().join(format!("helpgrid-prometheus-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&data).unwrap();
    let config = prometheus_config(&data, &jobs);
    let web = free_addr();
    let prometheus = ServiceProcess::spawn_with_args(
        Path::new("prometheus"),
        &format!("prometheus-test-{}", std::process::id()),
        &[
            format!("--config.file={}", config.display()),
            format!("--storage.tsdb.path={}", data.join("tsdb").display()),
            format!("--web.listen-address={web}"),
        ],
        &[],
    );

    // A press, once the router has had the roster: assigned, so time to assign exists.
    let p = press("h-1", "g1", PressKind::Help);
    kafka
        .publish_raw(&kafka.topics.help_events, 0, "g1", &p.encode_to_vec())
        .await;

    // Every target up.
    let started = Instant::now();
    let targets = loop {
        let targets = get(&format!("http://{web}/api/v1/targets"))
            .and_then(|v| v["data"]["activeTargets"].as_array().cloned())
            .unwrap_or_default();
        let up = targets.iter().filter(|t| t["health"] == "up").count();
        if targets.len() == jobs.len() && up == jobs.len() {
            break targets;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "targets not all up after {PATIENCE:?}: {targets:#?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let mut seen: Vec<&str> = targets
        .iter()
        .filter_map(|t| t["labels"]["job"].as_str())
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, jobs.map(|(job, _)| job));

    // The key series, with the values they should have by now.
    let expectations = [
        ("up{job=\"helpgrid-router\"} == 1", "the router is scraped"),
        (
            "up{job=\"helpgrid-status\"} == 1",
            "the status service is scraped",
        ),
        (
            "helpgrid_status_serving == 1",
            "the status service reports SERVING",
        ),
        ("helpgrid_router_consumer_lag", "the router's consumer lag"),
        (
            "helpgrid_ready{job=\"helpgrid-router\"} == 1",
            "the router reports ready",
        ),
        (
            "helpgrid_router_records_in_total{topic=~\".*help-events\"} >= 1",
            "the press was consumed",
        ),
        (
            "helpgrid_router_incidents_opened_total >= 1",
            "an incident was opened",
        ),
        (
            "helpgrid_router_time_to_assign_seconds_count >= 1",
            "and assigned",
        ),
        (
            "helpgrid_router_transactions_total{result=\"committed\"} >= 1",
            "in a committed transaction",
        ),
        (
            "helpgrid_router_transaction_seconds_bucket",
            "transaction time",
        ),
        (
            "helpgrid_status_read_model_incidents",
            "the status read model's size",
        ),
        (
            "helpgrid_router_escalations_total{level=\"ESCALATION_LEVEL_POLICE_DESK\"} >= 0",
            "police-desk escalations from the start (HelpGridEscalatedToPoliceDesk)",
        ),
        (
            "helpgrid_router_reassignments_total >= 0",
            "reassignments from the start (HelpGridAckDeadlinesMissed)",
        ),
        (
            "helpgrid_router_pipeline_restarts_total == 0",
            "pipeline restarts at 0 (HelpGridRouterRestarting)",
        ),
        // What the gateway, archive and notify alerts read. The counters read with
        // increase()/rate() must exist at 0 before anything happened, or their alerts miss
        // the first events.
        (
            "up{job=\"helpgrid-gateway\"} == 1",
            "the gateway is scraped",
        ),
        (
            "up{job=\"helpgrid-archive\"} == 1",
            "the archive is scraped",
        ),
        ("up{job=\"helpgrid-notify\"} == 1", "notify is scraped"),
        (
            "helpgrid_gateway_devices == 0",
            "the gateway's (empty) registry size, HelpGridDevicesOffline's denominator",
        ),
        (
            "helpgrid_gateway_maintenance_reports_total{reason=\"MAINTENANCE_REASON_OFFLINE\"} == 0",
            "offline reports at 0 (HelpGridDevicesOffline)",
        ),
        (
            "helpgrid_gateway_unroutable_device_messages_total{reason=\"unknown_device\"} == 0",
            "unroutable device messages at 0 (HelpGridUnroutableDevice)",
        ),
        (
            "helpgrid_archive_lag_seconds >= 0",
            "the archive wrote the incident's events (HelpGridArchiveLagGrowing)",
        ),
        (
            "helpgrid_notify_dead_letters_total == 0",
            "notify's dead letters at 0 (HelpGridNotifyFailing)",
        ),
    ];
    for (promql, what) in expectations {
        let started = Instant::now();
        while query(web, promql).is_empty() {
            assert!(
                started.elapsed() < PATIENCE,
                "Prometheus has no {promql} ({what}) after {PATIENCE:?}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    // The rules loaded and evaluate (none of them fires on a healthy stack).
    let rules = get(&format!("http://{web}/api/v1/rules")).unwrap();
    let groups = rules["data"]["groups"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(groups.len() >= 4, "alert groups not loaded: {rules}");
    // Every rule evaluates without error (health "ok" once evaluated; "unknown" before).
    let started = Instant::now();
    loop {
        let rules = get(&format!("http://{web}/api/v1/rules")).unwrap();
        let health: Vec<(String, String)> = rules["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .map(|r| (r["name"].to_string(), r["health"].to_string()))
            .collect();
        if !health.is_empty() && health.iter().all(|(_, h)| h == "\"ok\"") {
            break;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "rules not all evaluating after {PATIENCE:?}: {health:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    prometheus.kill();
    for service in [status, gateway, archive, notify] {
        service.kill();
    }
    stop_router.cancel();
    router.await.unwrap().unwrap();
    let _ = std::fs::remove_dir_all(&data);
}
