//! The fault suite: crashes, rebalances, broker restarts and bad input against a real broker,
//! with the router as a real child process, reconciled from Kafka afterwards.
//!
//! The quick variants run in `scripts/test` (CI). The full variants (20+ kills, 10,000 bad
//! records, a broker restart) are `#[ignore]`d and run by `scripts/faults`; they print the
//! figures recorded in docs/reliability.md.

use helpgrid_common::envelope::new_envelope;
use helpgrid_common::kafka::KafkaArgs;
use helpgrid_common::reader::{self, Feed};
use helpgrid_common::time::{now_millis, to_timestamp};
use helpgrid_common::topics::{Topics, ensure_topics};
use helpgrid_proto::pb::{
    self, CameraLabel, GeoPoint, HelpEvent, IncidentEvent, PressKind, Responder, ResponderRole,
    help_event,
};
use helpgrid_testkit::broker::OwnBroker;
use helpgrid_testkit::process::ServiceProcess;
use helpgrid_testkit::reconcile::{Report, accounted_event_id, reconcile};
use helpgrid_testkit::records::roster_record;
use helpgrid_testkit::{IncidentLog, Publisher, kafka_args};
use prost::Message;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

const GRIDS: usize = 24;
const PARTITIONS: i32 = 6;

fn router_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_helpgrid-router"))
}

fn grid(g: usize) -> String {
    format!("fg-{g:02}")
}

/// Two workers per grid; a supervisor and two patrol officers per block of four grids.
fn roster() -> Vec<Responder> {
    let mut out = Vec::new();
    let person = |id: String, role: ResponderRole, grids: Vec<String>| Responder {
        responder_id: id,
        display_name: "吴建国".into(),
        role: role as i32,
        grid_ids: grids,
        on_duty: true,
        last_location: Some(GeoPoint {
            latitude: 32.68,
            longitude: 109.02,
        }),
        location_updated_at: None,
    };
    for g in 0..GRIDS {
        for w in 0..2 {
            out.push(person(
                format!("{}-w{w}", grid(g)),
                ResponderRole::GridWorker,
                vec![grid(g)],
            ));
        }
    }
    for b in 0..GRIDS / 4 {
        let block: Vec<String> = (b * 4..b * 4 + 4).map(grid).collect();
        out.push(person(
            format!("sup-{b}"),
            ResponderRole::GridSupervisor,
            block.clone(),
        ));
        for o in 0..2 {
            out.push(person(
                format!("cop-{b}-{o}"),
                ResponderRole::PatrolOfficer,
                block.clone(),
            ));
        }
    }
    out
}

/// A deterministic stream of valid help events: presses from 20 households per grid (so
/// repeats attach) and camera detections above the confidence threshold.
fn help_stream(n: usize, seed: u64) -> Vec<(String, HelpEvent)> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let labels = [
        CameraLabel::Loitering,
        CameraLabel::Crowd,
        CameraLabel::Intrusion,
        CameraLabel::Fall,
        CameraLabel::Fight,
        CameraLabel::Fire,
    ];
    (0..n)
        .map(|_| {
            let g = grid(rng.usize(..GRIDS));
            let body = if rng.f64() < 0.75 {
                let household = format!("{g}-hh{}", rng.usize(..20));
                let kind = [
                    PressKind::Help,
                    PressKind::Help,
                    PressKind::Help,
                    PressKind::Urgent,
                    PressKind::Medical,
                ][rng.usize(..5)];
                help_event::Body::ButtonPress(pb::ButtonPress {
                    device_id: format!("btn-{household}"),
                    household_id: household,
                    grid_id: g.clone(),
                    kind: kind as i32,
                    location: None,
                    battery_percent: 50,
                })
            } else {
                help_event::Body::CameraAlert(pb::CameraAlert {
                    camera_id: format!("{g}-cam{}", rng.usize(..2)),
                    grid_id: g.clone(),
                    label: labels[rng.usize(..labels.len())] as i32,
                    confidence: 0.7 + 0.3 * rng.f32(),
                    zone: "gate".into(),
                    snapshot_ref: String::new(),
                    location: Some(GeoPoint {
                        latitude: 32.681,
                        longitude: 109.021,
                    }),
                })
            };
            let event = HelpEvent {
                envelope: Some(new_envelope("fault-suite", now_millis())),
                body: Some(body),
            };
            (g, event)
        })
        .collect()
}

fn event_id(e: &HelpEvent) -> String {
    e.envelope
        .as_ref()
        .map(|x| x.event_id.clone())
        .unwrap_or_default()
}

struct Suite {
    args: KafkaArgs,
    topics: Topics,
    publisher: Arc<Publisher>,
    log: IncidentLog,
}

impl Suite {
    async fn new() -> Self {
        Self::on(kafka_args()).await
    }

    async fn on(mut args: KafkaArgs) -> Self {
        args.topic_partitions = PARTITIONS;
        let topics = Topics::with_prefix(&args.topic_prefix);
        ensure_topics(&args, &topics).await.expect("topics");
        let publisher = Arc::new(Publisher::new(&args));
        for r in roster() {
            publisher
                .send(&topics.roster, &r.responder_id.clone(), &roster_record(r))
                .await;
        }
        let log = IncidentLog::follow(&args, &topics.incident_events).await;
        Self {
            args,
            topics,
            publisher,
            log,
        }
    }

    fn router(&self, instance: &str) -> ServiceProcess {
        let prefix = &self.args.topic_prefix;
        let env: Vec<(String, String)> = [
            ("HELPGRID_KAFKA_BROKERS", self.args.brokers.clone()),
            ("HELPGRID_TOPIC_PREFIX", prefix.clone()),
            ("HELPGRID_TOPIC_PARTITIONS", PARTITIONS.to_string()),
            ("HELPGRID_ROUTER_GROUP", format!("{prefix}router")),
            (
                "HELPGRID_ROUTER_TRANSACTIONAL_ID",
                format!("{prefix}{instance}"),
            ),
            // Nobody acknowledges in these runs: short deadlines make every incident climb
            // the whole ladder, so timers fire across the crashes.
            ("HELPGRID_ACK_DEADLINE_NORMAL_S", "2".into()),
            ("HELPGRID_ACK_DEADLINE_HIGH_S", "1.5".into()),
            ("HELPGRID_ACK_DEADLINE_CRITICAL_S", "1".into()),
            ("RUST_LOG", "info".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        ServiceProcess::spawn(&router_bin(), &format!("{prefix}{instance}"), &env)
    }

    /// Publishes `stream` at about `per_s` events per second, in the background.
    fn publish(&self, stream: Vec<(String, HelpEvent)>, per_s: f64) -> tokio::task::JoinHandle<()> {
        let publisher = Arc::clone(&self.publisher);
        let topic = self.topics.help_events.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            for (i, (key, event)) in stream.iter().enumerate() {
                publisher.send(&topic, key, event).await;
                let due = Duration::from_secs_f64(i as f64 / per_s);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    tokio::time::sleep(wait).await;
                }
            }
        })
    }

    /// Waits until every accepted event is accounted for and no deadline is pending (with
    /// nobody acknowledging, every incident ends waiting at the police desk), then reconciles.
    async fn settle_and_reconcile(&mut self, accepted: &[String], limit: Duration) -> Report {
        let wanted: HashSet<&String> = accepted.iter().collect();
        self.log
            .wait_until_for(
                "every event accounted for and every deadline fired",
                limit,
                |events| {
                    let accounted = events
                        .iter()
                        .filter_map(accounted_event_id)
                        .filter(|id| wanted.contains(id))
                        .count();
                    accounted >= wanted.len() && pending_deadlines(events) == 0
                },
            )
            .await;
        let events = self.log.settle(Duration::from_secs(3)).await;
        reconcile(accepted, &events, now_millis(), 5_000)
    }
}

fn pending_deadlines(events: &[IncidentEvent]) -> usize {
    let mut last: HashMap<&str, &pb::Incident> = HashMap::new();
    for e in events {
        if let Some(i) = e.incident.as_ref() {
            last.insert(&i.incident_id, i);
        }
    }
    last.values()
        .filter(|i| i.closed_at.is_none() && i.assignments.iter().any(|a| a.ack_deadline.is_some()))
        .count()
}

/// Starts, runs for a random while, SIGKILLs, `kills` times, then leaves one running.
/// Returns the running router and the recovery times (start → first new event).
async fn crash_loop(
    suite: &mut Suite,
    kills: usize,
    alive: (u64, u64),
    seed: u64,
) -> (ServiceProcess, Vec<Duration>) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut recoveries = Vec::new();
    for k in 0..kills {
        let started = Instant::now();
        let router = suite.router("r1");
        let before = suite.log.events.len();
        let alive_for = Duration::from_millis(rng.u64(alive.0..=alive.1));
        suite.log.read_for(alive_for).await;
        if let Some(first) = suite.log.arrivals.get(before) {
            recoveries.push(first.duration_since(started));
        }
        router.kill();
        eprintln!(
            "kill {}/{kills} after {alive_for:?}; {} incident events so far",
            k + 1,
            suite.log.events.len()
        );
    }
    (suite.router("r1"), recoveries)
}

fn print_report(name: &str, report: &Report, extra: &str) {
    eprintln!("[{name}] {report} {extra}");
}

async fn router_crash_loop(events: usize, per_s: f64, kills: usize) {
    let mut suite = Suite::new().await;
    let stream = help_stream(events, 42);
    let accepted: Vec<String> = stream.iter().map(|(_, e)| event_id(e)).collect();
    let started = Instant::now();
    let publishing = suite.publish(stream, per_s);
    let (router, recoveries) = crash_loop(&mut suite, kills, (1500, 6000), 7).await;
    publishing.await.expect("publisher");
    let report = suite
        .settle_and_reconcile(&accepted, Duration::from_secs(180))
        .await;
    router.terminate(Duration::from_secs(30));
    let max = recoveries.iter().max().copied().unwrap_or_default();
    let mean = recoveries
        .iter()
        .sum::<Duration>()
        .checked_div(recoveries.len() as u32)
        .unwrap_or_default();
    print_report(
        "router crash loop",
        &report,
        &format!(
            "kills {kills} | recovery mean {mean:?} max {max:?} | total {:?}",
            started.elapsed()
        ),
    );
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.accepted_events, events);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_sigkilled_repeatedly_loses_nothing_and_doubles_nothing() {
    router_crash_loop(500, 40.0, 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "full fault suite: scripts/faults"]
async fn full_router_crash_loop_with_twenty_kills() {
    // 50/s keeps events arriving for the whole kill loop (22 kills take about 80 s).
    router_crash_loop(4000, 50.0, 22).await;
}

async fn scale_out_and_in(events: usize, per_s: f64) {
    let mut suite = Suite::new().await;
    let stream = help_stream(events, 43);
    let accepted: Vec<String> = stream.iter().map(|(_, e)| event_id(e)).collect();
    let window = Duration::from_secs_f64(events as f64 / per_s / 6.0);
    let publishing = suite.publish(stream, per_s);
    let r1 = suite.router("r1");
    suite.log.read_for(window).await;
    let r2 = suite.router("r2");
    suite.log.read_for(window).await;
    let r3 = suite.router("r3");
    suite.log.read_for(window).await;
    r2.kill();
    suite.log.read_for(window).await;
    r1.terminate(Duration::from_secs(30));
    let r4 = suite.router("r4");
    publishing.await.expect("publisher");
    let report = suite
        .settle_and_reconcile(&accepted, Duration::from_secs(180))
        .await;
    r3.terminate(Duration::from_secs(30));
    r4.terminate(Duration::from_secs(30));
    print_report(
        "scale out and in",
        &report,
        "(r1; +r2; +r3; r2 SIGKILL; r1 SIGTERM; +r4)",
    );
    assert!(report.is_clean(), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routers_joining_and_leaving_the_group_lose_nothing_and_double_nothing() {
    scale_out_and_in(600, 60.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "full fault suite: scripts/faults"]
async fn full_scale_out_and_in() {
    scale_out_and_in(3000, 100.0).await;
}

fn valid_press() -> HelpEvent {
    HelpEvent {
        envelope: Some(new_envelope("fault-suite", now_millis())),
        body: Some(help_event::Body::ButtonPress(pb::ButtonPress {
            device_id: "d".into(),
            household_id: "h".into(),
            grid_id: grid(0),
            kind: PressKind::Help as i32,
            location: None,
            battery_percent: 10,
        })),
    }
}

fn press_mut(e: &mut HelpEvent) -> Option<&mut pb::ButtonPress> {
    match e.body.as_mut() {
        Some(help_event::Body::ButtonPress(p)) => Some(p),
        _ => None,
    }
}

/// A valid press changed by `f`, encoded.
fn spoiled(f: impl FnOnce(&mut HelpEvent)) -> Vec<u8> {
    let mut e = valid_press();
    f(&mut e);
    e.encode_to_vec()
}

/// One malformed record; `kind` cycles through the kinds of damage.
fn bad_record(kind: usize, rng: &mut fastrand::Rng) -> (&'static str, Vec<u8>) {
    match kind % 9 {
        0 => (
            "random bytes",
            (0..rng.usize(1..200)).map(|_| rng.u8(..)).collect(),
        ),
        1 => {
            let bytes = valid_press().encode_to_vec();
            (
                "truncated protobuf",
                bytes[..rng.usize(1..bytes.len())].to_vec(),
            )
        }
        2 => {
            let command = pb::IncidentCommand {
                envelope: Some(new_envelope("x", now_millis())),
                incident_id: "inc-x".into(),
                grid_id: grid(0),
                actor_id: "w".into(),
                action: Some(pb::incident_command::Action::Acknowledge(
                    pb::AcknowledgeIncident {},
                )),
                ..pb::IncidentCommand::default()
            };
            ("wrong message type", command.encode_to_vec())
        }
        3 => (
            "missing field",
            spoiled(|e| press_mut(e).into_iter().for_each(|p| p.grid_id.clear())),
        ),
        4 => (
            "unknown enum value",
            spoiled(|e| press_mut(e).into_iter().for_each(|p| p.kind = 99)),
        ),
        5 => {
            let at = if rng.bool() { 0 } else { 4_102_444_800_000 };
            (
                "absurd timestamp",
                spoiled(|e| {
                    if let Some(env) = e.envelope.as_mut() {
                        env.occurred_at = Some(to_timestamp(at));
                    }
                }),
            )
        }
        6 => (
            "oversized payload",
            spoiled(|e| {
                press_mut(e)
                    .into_iter()
                    .for_each(|p| p.device_id = "x".repeat(70_000))
            }),
        ),
        7 => ("missing envelope", spoiled(|e| e.envelope = None)),
        _ => ("empty value", Vec::new()),
    }
}

async fn bad_input(bad: usize, good: usize) {
    let mut suite = Suite::new().await;
    let cancel = tokio_util::sync::CancellationToken::new();
    let mut dead = reader::follow(
        &suite.args,
        "faults-dlq",
        &suite.topics.dead_letters,
        cancel.clone(),
    )
    .await
    .expect("follow dead letters");
    let router = suite.router("r1");
    let stream = help_stream(good, 44);
    let accepted: Vec<String> = stream.iter().map(|(_, e)| event_id(e)).collect();
    let mut rng = fastrand::Rng::with_seed(9);
    let mut sent_bad: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut good_iter = stream.iter();
    let every = (bad / good.max(1)).max(1);
    for i in 0..bad {
        let (kind, bytes) = bad_record(i, &mut rng);
        *sent_bad.entry(kind).or_default() += 1;
        suite
            .publisher
            .send_raw(&suite.topics.help_events, &grid(i % GRIDS), &bytes)
            .await;
        if i % every == 0
            && let Some((key, event)) = good_iter.next()
        {
            suite
                .publisher
                .send(&suite.topics.help_events, key, event)
                .await;
        }
    }
    for (key, event) in good_iter {
        suite
            .publisher
            .send(&suite.topics.help_events, key, event)
            .await;
    }
    let report = suite
        .settle_and_reconcile(&accepted, Duration::from_secs(180))
        .await;
    // Every bad record is in the dead-letter topic, once, with a reason and its origin.
    let mut by_kind: BTreeMap<String, usize> = BTreeMap::new();
    let mut origins = HashSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while origins.len() < bad {
        let item = tokio::time::timeout_at(deadline, dead.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "only {} of {bad} dead letters arrived: {by_kind:?}",
                    origins.len()
                )
            });
        let Some(Feed::Record(record)) = item else {
            continue;
        };
        let headers: HashMap<&str, String> = record
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), String::from_utf8_lossy(v).into_owned()))
            .collect();
        let reason = headers
            .get("helpgrid.dlq.reason")
            .cloned()
            .unwrap_or_default();
        assert!(
            !reason.is_empty(),
            "a dead letter without a reason: {headers:?}"
        );
        let origin = (
            headers
                .get("helpgrid.dlq.origin.partition")
                .cloned()
                .unwrap_or_default(),
            headers
                .get("helpgrid.dlq.origin.offset")
                .cloned()
                .unwrap_or_default(),
        );
        assert!(
            origins.insert(origin.clone()),
            "dead-lettered twice: {origin:?}"
        );
        *by_kind
            .entry(
                headers
                    .get("helpgrid.dlq.kind")
                    .cloned()
                    .unwrap_or_default(),
            )
            .or_default() += 1;
    }
    router.terminate(Duration::from_secs(30));
    print_report(
        "bad input",
        &report,
        &format!("| bad sent {sent_bad:?} | dead letters by kind {by_kind:?}"),
    );
    assert_eq!(origins.len(), bad);
    assert!(report.is_clean(), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_malformed_record_is_dead_lettered_and_every_good_one_routed() {
    bad_input(900, 150).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "full fault suite: scripts/faults"]
async fn full_ten_thousand_malformed_records() {
    bad_input(10_000, 1_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "full fault suite: scripts/faults (starts and restarts a broker of its own)"]
async fn full_broker_restart_mid_stream() {
    let (broker, bootstrap) = OwnBroker::start();
    let mut args = kafka_args();
    args.brokers = bootstrap;
    let mut suite = Suite::on(args).await;
    let stream = help_stream(1500, 45);
    let accepted: Vec<String> = stream.iter().map(|(_, e)| event_id(e)).collect();
    let router = suite.router("r1");
    let (first, rest) = stream.split_at(700);
    suite
        .publish(first.to_vec(), 100.0)
        .await
        .expect("publisher");
    let down = Instant::now();
    broker.run("restart");
    let outage = down.elapsed();
    let back = Instant::now();
    let before = suite.log.events.len();
    suite
        .publish(rest.to_vec(), 100.0)
        .await
        .expect("publisher");
    suite
        .log
        .wait_until_for("output after the restart", Duration::from_secs(120), |e| {
            e.len() > before
        })
        .await;
    let recovery = back.elapsed();
    let report = suite
        .settle_and_reconcile(&accepted, Duration::from_secs(240))
        .await;
    router.terminate(Duration::from_secs(30));
    print_report(
        "broker restart",
        &report,
        &format!("| outage {outage:?} | first output {recovery:?} after the broker was back"),
    );
    assert!(report.is_clean(), "{report}");
}

/// Every (partition, offset) → key of a topic as it is now, read to its end once.
async fn state_records(args: &KafkaArgs, topic: &str) -> BTreeMap<(i32, i64), Vec<u8>> {
    let cancel = tokio_util::sync::CancellationToken::new();
    let mut feed = reader::follow(args, "helpgrid-test-state", topic, cancel.clone())
        .await
        .expect("follow incident-state");
    let mut records = BTreeMap::new();
    while let Some(item) = feed.recv().await {
        match item {
            Feed::Record(r) => {
                records.insert((r.partition, r.offset), r.key.unwrap_or_default());
            }
            Feed::CaughtUp => break,
        }
    }
    cancel.cancel();
    records
}

/// Records of `before` that were superseded by a later record of the same key (in `before`)
/// and are gone from `after`: the log cleaner removed them.
fn compacted_away(
    before: &BTreeMap<(i32, i64), Vec<u8>>,
    after: &BTreeMap<(i32, i64), Vec<u8>>,
) -> usize {
    let mut newest: HashMap<(i32, &[u8]), i64> = HashMap::new();
    for ((p, o), key) in before {
        newest.insert((*p, key.as_slice()), *o);
    }
    before
        .iter()
        .filter(|((p, o), key)| newest[&(*p, key.as_slice())] > *o)
        .filter(|(at, _)| !after.contains_key(at))
        .count()
}

/// The crash loop with `incident-state` compacted underneath it: a broker of its own whose
/// log cleaner looks for work every 100 ms, and an `incident-state` that rolls a segment every
/// 500 ms and is cleaned at any dirty ratio. After the loop the test waits until the cleaner
/// has really removed superseded snapshots, kills the router once more so it restores from
/// the compacted log, and sends more presses: still 0 lost, 0 doubled, every deadline fired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "full fault suite: scripts/faults (a broker of its own with a fast log cleaner; about 80 s)"]
async fn crash_loop_over_a_compacted_incident_state_loses_nothing_and_doubles_nothing() {
    let (broker, bootstrap) = OwnBroker::start_with(&[
        ("log.cleaner.backoff.ms", "100"),
        ("log.initial.task.delay.ms", "0"),
    ]);
    let mut args = kafka_args();
    args.brokers = bootstrap;
    let mut suite = Suite::on(args).await;
    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> = suite
        .args
        .admin_config("helpgrid-test-admin")
        .create()
        .expect("admin client");
    let alter = rdkafka::admin::AlterConfig::new(rdkafka::admin::ResourceSpecifier::Topic(
        &suite.topics.incident_state,
    ))
    // AlterConfigs replaces the topic's whole set: the policy must be named again.
    .set("cleanup.policy", "compact")
    .set("segment.ms", "500")
    .set("min.cleanable.dirty.ratio", "0.01")
    .set("min.compaction.lag.ms", "0");
    let altered = admin
        .alter_configs([&alter], &rdkafka::admin::AdminOptions::new())
        .await
        .expect("alter incident-state");
    assert!(altered.iter().all(Result::is_ok), "{altered:?}");

    let stream = help_stream(760, 46);
    let (first, rest) = stream.split_at(500);
    // `rollers` are sent one at a time while waiting for the cleaner, `second` after the kill.
    let (rollers, second) = rest.split_at(60);
    let mut accepted: Vec<String> = first.iter().map(|(_, e)| event_id(e)).collect();
    let publishing = suite.publish(first.to_vec(), 40.0);
    let (router, _) = crash_loop(&mut suite, 3, (2500, 5000), 11).await;
    publishing.await.expect("publisher");

    // Compaction must really have run: snapshots superseded by a later one of the same
    // incident disappear. (Offsets alone prove nothing: transaction markers leave gaps too.)
    let before = state_records(&suite.args, &suite.topics.incident_state).await;
    let waited = Instant::now();
    let mut rollers = rollers.iter();
    let removed = loop {
        // Kafka cleans only rolled segments, and a segment rolls (once older than segment.ms)
        // only when a record is appended to it. Once the crash loop's presses are all
        // handled nothing else is written, so each round sends one more press: its snapshot
        // rolls its partition's segment and gives the cleaner work. (Relying on stray
        // deadline events instead made this test fail on a loaded machine.)
        if let Some((key, event)) = rollers.next() {
            suite
                .publisher
                .send(&suite.topics.help_events, key, event)
                .await;
            accepted.push(event_id(event));
        }
        suite.log.read_for(Duration::from_millis(700)).await;
        let after = state_records(&suite.args, &suite.topics.incident_state).await;
        let removed = compacted_away(&before, &after);
        if removed > 0 || waited.elapsed() > Duration::from_secs(60) {
            break removed;
        }
    };
    assert!(
        removed > 0,
        "the log cleaner removed no superseded incident-state record within 60 s ({} records); \
         the broker's cleaner and error lines:\n{}",
        before.len(),
        broker.server_log_lines(&["Cleaner", "cleaner", "ERROR", "WARN"], 60)
    );
    eprintln!(
        "incident-state: {removed} of {} records compacted away after {:?}",
        before.len(),
        waited.elapsed()
    );

    // Restore from the compacted log, under more load.
    accepted.extend(second.iter().map(|(_, e)| event_id(e)));
    router.kill();
    let router = suite.router("r1");
    suite
        .publish(second.to_vec(), 40.0)
        .await
        .expect("publisher");
    let report = suite
        .settle_and_reconcile(&accepted, Duration::from_secs(120))
        .await;
    router.terminate(Duration::from_secs(30));
    print_report("crash loop over compacted incident-state", &report, "");
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.accepted_events, accepted.len());
}
