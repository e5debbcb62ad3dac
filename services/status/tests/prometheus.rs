//! A real Prometheus (Debian's `prometheus`) scrapes a running router and a running status
//! service on real Kafka: its HTTP API must show every target up and the series the alerts
//! and the dashboard read. The status service runs as its own process (the binary), the
//! router in this test process with the Prometheus exporter on a port of its own; Prometheus
//! is queried with curl.
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
use std::path::Path;
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

fn prometheus_config(dir: &Path, router: SocketAddr, status: SocketAddr) -> std::path::PathBuf {
    let rules =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/prometheus/helpgrid-alerts.yml");
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
         rule_files:\n  - {rules}\n\
         scrape_configs:\n\
         \x20 - job_name: helpgrid-router\n    static_configs:\n      - targets: ['{router}']\n\
         \x20 - job_name: helpgrid-status\n    static_configs:\n      - targets: ['{status}']\n",
        rules = rules.display()
    );
    let path = dir.join("prometheus.yml");
    std::fs::write(&path, config).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_router_and_the_status_service_and_sees_the_key_series() {
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

    // The status service: the real binary, as an operator runs it.
    let (grpc, status_metrics) = (free_addr(), free_addr());
    let status = ServiceProcess::spawn(
        Path::new(env!("CARGO_BIN_EXE_helpgrid-status")),
        &format!("prometheus-test-status-{}", std::process::id()),
        &[
            ("HELPGRID_KAFKA_BROKERS".into(), kafka.args.brokers.clone()),
            (
                "HELPGRID_TOPIC_PREFIX".into(),
                kafka.args.topic_prefix.clone(),
            ),
            (
                "HELPGRID_TOPIC_PARTITIONS".into(),
                support::PARTITIONS.to_string(),
            ),
            ("HELPGRID_STATUS_LISTEN".into(), grpc.to_string()),
            (
                "HELPGRID_STATUS_METRICS_LISTEN".into(),
                status_metrics.to_string(),
            ),
            ("HELPGRID_INSECURE_NO_AUTH".into(), "true".into()),
        ],
    );

    let data = std::env::temp_dir().join(format!("helpgrid-prometheus-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&data).unwrap();
    let config = prometheus_config(&data, router_metrics, status_metrics);
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
        if targets.len() == 2 && up == 2 {
            break targets;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "targets not all up after {PATIENCE:?}: {targets:#?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let mut jobs: Vec<&str> = targets
        .iter()
        .filter_map(|t| t["labels"]["job"].as_str())
        .collect();
    jobs.sort_unstable();
    assert_eq!(jobs, ["helpgrid-router", "helpgrid-status"]);

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
    assert!(groups.len() >= 3, "alert groups not loaded: {rules}");

    prometheus.kill();
    status.kill();
    stop_router.cancel();
    router.await.unwrap().unwrap();
    let _ = std::fs::remove_dir_all(&data);
}
