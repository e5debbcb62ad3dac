//! A few seconds of the load generator against a real broker, asserting only what must hold
//! whatever the machine's speed: every event accounted for exactly once. (Figures are never
//! asserted: performance is measured with scripts/bench, not tested.)
//! Needs HELPGRID_TEST_KAFKA (scripts/test sets it).

use clap::Parser;
use helpgrid_common::kafka::KafkaArgs;
use helpgrid_load_tests::load::relay::{self, Guarantee, RelayArgs};
use helpgrid_load_tests::load::scenario::{self, LoadArgs};
use helpgrid_router::config::RouterConfig;
use helpgrid_router::domain::Policy;
use helpgrid_status::config::StatusConfig;
use helpgrid_testkit::kafka_args;
use tokio_util::sync::CancellationToken;

fn smoke_args(kafka: &KafkaArgs, target: &str, extra: &[&str]) -> LoadArgs {
    let out = std::env::temp_dir().join(format!("helpgrid-load-{}", kafka.topic_prefix));
    let mut argv = vec![
        "helpgrid-load".to_owned(),
        "smoke".into(),
        "--target".into(),
        target.into(),
        "--no-spawn".into(),
        "--kafka-brokers".into(),
        kafka.brokers.clone(),
        "--topic-prefix".into(),
        kafka.topic_prefix.clone(),
        "--topic-partitions".into(),
        kafka.topic_partitions.to_string(),
        "--out-dir".into(),
        out.display().to_string(),
        "--rates".into(),
        "100".into(),
        "--step-s".into(),
        "1.5".into(),
        "--drain-timeout-s".into(),
        "30".into(),
    ];
    argv.extend(extra.iter().map(|s| (*s).to_owned()));
    LoadArgs::parse_from(argv)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_bare_relay_copies_every_event_exactly_once() {
    let kafka = kafka_args();
    let relay_args = RelayArgs {
        kafka: kafka.clone(),
        input: format!("{}help-events", kafka.topic_prefix),
        output: format!("{}incident-events", kafka.topic_prefix),
        guarantee: Guarantee::Transactional,
        group_id: format!("{}relay", kafka.topic_prefix),
        transactional_id: format!("{}relay-0", kafka.topic_prefix),
        batch_max: 500,
        leave_deliveries_to_flush: false,
        offsets_after_deliveries: false,
    };
    let cancel = CancellationToken::new();
    // The run creates the topics; the relay starts once they exist.
    let args = smoke_args(&kafka, "relay-transactional", &[]);
    let topics = helpgrid_common::topics::Topics::with_prefix(&kafka.topic_prefix);
    helpgrid_common::topics::ensure_topics(&kafka, &topics)
        .await
        .expect("topics");
    let stop = cancel.clone();
    let relaying = std::thread::spawn(move || relay::run(&relay_args, &stop));
    let (report, _) = scenario::run(args, |_| {}).await.expect("smoke run");
    cancel.cancel();
    relaying.join().expect("relay thread").expect("relay ran");
    let r = &report.reconciliation;
    assert!(r.clean(), "{r:?}");
    assert!(r.sent >= 150 && r.accounted == r.sent, "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_smoke_run_through_helpgrid_accounts_for_every_press_and_assigns_each_incident_once() {
    let kafka = kafka_args();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = format!("http://{}", listener.local_addr().expect("addr"));
    let cancel = CancellationToken::new();
    let status_stop = cancel.clone();
    let status = tokio::spawn(helpgrid_status::run(
        StatusConfig::new(kafka.clone()),
        listener,
        async move { status_stop.cancelled().await },
    ));
    let router_config = RouterConfig::new(
        kafka.clone(),
        format!("{}router-1", kafka.topic_prefix),
        Policy::default(),
    );
    let router_stop = cancel.clone();
    let router = tokio::spawn(helpgrid_router::run(router_config, async move {
        router_stop.cancelled().await
    }));
    let args = smoke_args(&kafka, "helpgrid", &["--status-addr", &addr]);
    let (report, _) = scenario::run(args, |_| {}).await.expect("smoke run");
    cancel.cancel();
    router.await.expect("router task").expect("router ran");
    status.await.expect("status task").expect("status ran");
    let r = &report.reconciliation;
    assert!(r.clean(), "{r:?}");
    assert!(r.sent >= 150, "{r:?}");
    assert_eq!(r.accounted + r.ignored_as_expected, r.sent, "{r:?}");
}
