//! Restore-time and soak figures for issue 8 ("state that lasts and stays small"). Prints
//! figures; asserts nothing. Runs the release binaries as processes against a broker of its
//! own (started from `deploy/local/kafka.sh`, removed afterwards), because the figures depend
//! on the log cleaner and nothing here may disturb the shared broker.
//!
//! ```sh
//! cargo build --release -p helpgrid-router -p helpgrid-status
//! cargo run --release -p helpgrid-load-tests --example restore -- restart   # 2,000,000 events, 10,000 open
//! cargo run --release -p helpgrid-load-tests --example restore -- flood     # 774,000 open
//! cargo run --release -p helpgrid-load-tests --example restore -- soak      # status RSS over 2,000,000 events
//! ```
//!
//! History is written the way the router writes it: a `Desk` (the router's own decision code)
//! is driven in-process through presses, acknowledgements and closings on a simulated clock
//! that ends now; every incident event goes to `incident-events`, the incident's latest
//! snapshot after each step to `incident-state`, and a tombstone once a closed incident
//! leaves the router's window. The services under test then read what is on the topics.
//!
//! The router runs with a state folder (local checkpoints) under `--log-dir`. Its SIGKILL
//! figures come in pairs from one run: kills with its checkpoints in place, and kills with the
//! folder removed first (a restore of incident-state whole, as without checkpoints), so the
//! ratio holds whatever the machine's load. Each start prints a time line from the router's log.

use clap::{Parser, Subcommand};
use helpgrid_common::kafka::KafkaArgs;
use helpgrid_common::partition::grid_partition;
use helpgrid_common::time::now_millis;
use helpgrid_common::topics::{Topics, ensure_topics};
use helpgrid_load_tests::load::procstat;
use helpgrid_load_tests::load::services::{Service, free_port};
use helpgrid_proto::pb::{
    self, ActorRole, ButtonPress, GeoPoint, HelpEvent, PressKind, Resolution, Responder,
    ResponderRole, RosterRecord, help_event,
};
use helpgrid_router::domain::desk::Output;
use helpgrid_router::domain::validate::{ValidAction, ValidBody, ValidCommand, ValidHelpEvent};
use helpgrid_router::domain::{Desk, Policy, Roster};
use helpgrid_testkit::broker::OwnBroker;
use prost::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message as _;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const GRIDS: usize = 13_000;
const PARTITIONS: usize = 6;
/// Acknowledgement deadlines of an hour on both sides: no reassignment mixes into the figures.
const DEADLINE_S: u64 = 3_600;

#[derive(Parser)]
struct Args {
    /// Folder with the helpgrid-router and helpgrid-status binaries.
    #[arg(long, default_value = "target/release")]
    bin_dir: PathBuf,
    /// Where the services' logs go.
    #[arg(long, default_value = "target/restore-bench")]
    log_dir: PathBuf,
    /// A folder with the binaries of an earlier build (e.g. copied before a change): status
    /// restarts, and the flood's router restore without checkpoints, are then run with both
    /// builds alternately in the same run, so the ratio holds whatever the machine's load.
    #[arg(long)]
    baseline_bin_dir: Option<PathBuf>,
    /// More folders of router binaries (repeat the flag) whose restore of incident-state whole
    /// the flood runs beside this build's, e.g. a wrapper script that sets an environment
    /// variable and `exec`s a router: each is named by its folder's name.
    #[arg(long)]
    variant_bin_dir: Vec<PathBuf>,
    #[command(subcommand)]
    run: Run,
}

#[derive(Subcommand)]
enum Run {
    /// History of `events` incident events with `open` incidents left open: router SIGKILL →
    /// first new output, status restart → SERVING.
    Restart {
        #[arg(long, default_value_t = 2_000_000)]
        events: usize,
        #[arg(long, default_value_t = 10_000)]
        open: usize,
        /// Days of simulated time the history spans.
        #[arg(long, default_value_t = 10)]
        days: i64,
        /// Only the status service's figures (no router is started).
        #[arg(long)]
        status_only: bool,
    },
    /// `open` incidents open at once (the city flood): router and status restore, and their
    /// RSS per open incident.
    Flood {
        #[arg(long, default_value_t = 774_000)]
        open: usize,
        /// Rounds of router kills; each round kills it once with its checkpoints in place,
        /// then once per build (this one, the baseline, each variant) with them removed.
        #[arg(long, default_value_t = 1)]
        rounds: usize,
        /// No status service (its start and memory are not measured).
        #[arg(long)]
        router_only: bool,
    },
    /// incident-state as a compacted history leaves it (`closed` tombstones, `open` live
    /// snapshots), read whole in this process by the table reader both services restore with:
    /// with its own queue settings and with librdkafka's defaults, alternating, `rounds` times.
    Table {
        #[arg(long, default_value_t = 525_000)]
        closed: usize,
        #[arg(long, default_value_t = 10_000)]
        open: usize,
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// Status RSS while `events` incident events with closures stream past it.
    Soak {
        #[arg(long, default_value_t = 2_000_000)]
        events: usize,
        #[arg(long, default_value_t = 10_000)]
        open: usize,
        #[arg(long, default_value_t = 10)]
        days: i64,
        /// RSS samples taken along the way.
        #[arg(long, default_value_t = 20)]
        samples: usize,
    },
}

fn grid(g: usize) -> String {
    format!("grid-{g:05}")
}

fn roster() -> Vec<Responder> {
    (0..GRIDS)
        .map(|g| Responder {
            responder_id: format!("w-{g}"),
            display_name: "吴建国".into(),
            role: ResponderRole::GridWorker as i32,
            grid_ids: vec![grid(g)],
            on_duty: true,
            last_location: None,
            location_updated_at: None,
        })
        .collect()
}

/// Writes router-shaped history: the desk decides, this writes what the router would.
struct History {
    desk: Desk,
    roster: Roster,
    producer: BaseProducer,
    topics: Topics,
    events: usize,
    state_records: usize,
    next: usize,
}

impl History {
    fn new(kafka: &KafkaArgs, topics: &Topics) -> anyhow::Result<Self> {
        let mut config = kafka.producer_config("helpgrid-restore-bench");
        config
            .set("linger.ms", "50")
            .set("batch.num.messages", "10000")
            .set("queue.buffering.max.messages", "1000000");
        let producer: BaseProducer = config.create()?;
        let mut desk_roster = Roster::default();
        for r in roster() {
            let record = RosterRecord {
                envelope: Some(helpgrid_common::envelope::new_envelope(
                    "office:restore-bench",
                    now_millis(),
                )),
                responder: Some(r.clone()),
            };
            send(
                &producer,
                &topics.roster,
                None,
                r.responder_id.as_bytes(),
                Some(&record.encode_to_vec()),
            );
            desk_roster.upsert(r);
        }
        let policy = Policy {
            ack_deadline_normal_ms: DEADLINE_S as i64 * 1000,
            ack_deadline_high_ms: DEADLINE_S as i64 * 1000,
            ack_deadline_critical_ms: DEADLINE_S as i64 * 1000,
            ..Policy::default()
        };
        Ok(Self {
            desk: Desk::new(policy),
            roster: desk_roster,
            producer,
            topics: topics.clone(),
            events: 0,
            state_records: 0,
            next: 0,
        })
    }

    /// One step's output, as one router transaction writes it.
    fn write(&mut self, out: Vec<Output>) {
        let mut latest: HashMap<String, (i32, pb::Incident)> = HashMap::new();
        for o in &out {
            send(
                &self.producer,
                &self.topics.incident_events,
                Some(o.partition),
                o.key.as_bytes(),
                Some(&o.event.encode_to_vec()),
            );
            if let Some(i) = &o.event.incident {
                latest.insert(i.incident_id.clone(), (o.partition, i.clone()));
            }
        }
        self.events += out.len();
        for (id, (partition, incident)) in latest {
            send(
                &self.producer,
                &self.topics.incident_state,
                Some(partition),
                id.as_bytes(),
                Some(&incident.encode_to_vec()),
            );
            self.state_records += 1;
        }
        for (partition, id) in self.desk.take_forgotten() {
            send(
                &self.producer,
                &self.topics.incident_state,
                Some(partition),
                id.as_bytes(),
                None,
            );
            self.state_records += 1;
        }
    }

    /// A press from a new household; returns (incident id, grid, responder).
    fn press(&mut self, now: i64) -> (String, String, String) {
        let n = self.next;
        self.next += 1;
        let g = grid(n % GRIDS);
        let event = ValidHelpEvent {
            event_id: format!("{n:09}-5b8e1c1e-0f7a-4c55-9d8e"),
            occurred_at: now,
            body: ValidBody::Press {
                press: ButtonPress {
                    device_id: format!("btn-{g}-hh-{n:07}"),
                    household_id: format!("{g}-hh-{n:07}"),
                    grid_id: g.clone(),
                    kind: PressKind::Help as i32,
                    location: Some(GeoPoint {
                        latitude: 32.684,
                        longitude: 109.029,
                    }),
                    battery_percent: 80,
                },
                kind: PressKind::Help,
            },
        };
        let partition = grid_partition(&g, PARTITIONS);
        let (_, out) = self
            .desk
            .on_help_event(partition, &event, &self.roster, now);
        let incident = out
            .last()
            .and_then(|o| o.event.incident.clone())
            .unwrap_or_default();
        let responder = incident
            .assignments
            .first()
            .map(|a| a.responder_id.clone())
            .unwrap_or_default();
        self.write(out);
        (incident.incident_id, g, responder)
    }

    fn command(
        &mut self,
        (id, g, responder): &(String, String, String),
        action: ValidAction,
        now: i64,
    ) {
        let command = ValidCommand {
            command_id: format!("cmd-{}-{}", id, self.events),
            incident_id: id.clone(),
            grid_id: g.clone(),
            actor_id: responder.clone(),
            actor_role: ActorRole::Responder,
            action,
            request_id: String::new(),
        };
        let partition = grid_partition(g, PARTITIONS);
        let (_, out) = self.desk.on_command(partition, &command, &self.roster, now);
        self.write(out);
    }

    fn close(&mut self, incident: &(String, String, String), now: i64) {
        self.command(
            incident,
            ValidAction::Close {
                outcome: helpgrid_proto::pb::IncidentOutcome::ResolvedOnSpot,
                resolution: Resolution::Resolved,
                note: String::new(),
            },
            now,
        );
    }

    /// `open` incidents opened and acknowledged first (they stay open across the whole
    /// history, like a case waiting at the police desk over a holiday), then incidents opened,
    /// acknowledged and closed until `events` incident events are written, the simulated
    /// clock running from `days` ago to now. `progress` is called every 10,000 incidents.
    fn churn(&mut self, events: usize, open: usize, days: i64, mut progress: impl FnMut(&Self)) {
        let end = now_millis();
        let start = end - days * 86_400_000;
        for _ in 0..open {
            let incident = self.press(start);
            self.command(&incident, ValidAction::Acknowledge, start);
        }
        let churn = events.saturating_sub(self.events) / 4;
        for k in 0..churn {
            let now = start + (end - start) * (k as i64 + 1) / churn.max(1) as i64;
            let incident = self.press(now);
            self.command(&incident, ValidAction::Acknowledge, now);
            self.close(&incident, now);
            if k % 1_000 == 0 {
                let tick = self.desk.on_tick(&self.roster, now);
                self.write(tick);
            }
            if k % 10_000 == 0 {
                progress(self);
            }
        }
        self.flush();
    }

    fn flush(&self) {
        let _ = self.producer.flush(Duration::from_secs(120));
    }
}

fn send(
    producer: &BaseProducer,
    topic: &str,
    partition: Option<i32>,
    key: &[u8],
    payload: Option<&[u8]>,
) {
    let mut record = BaseRecord::<[u8], [u8]>::to(topic).key(key);
    if let Some(p) = partition {
        record = record.partition(p);
    }
    if let Some(payload) = payload {
        record = record.payload(payload);
    }
    loop {
        match producer.send(record) {
            Ok(()) => break,
            Err((_, back)) => {
                record = back;
                producer.poll(Duration::from_millis(10));
            }
        }
    }
    producer.poll(Duration::ZERO);
}

struct Bench {
    kafka: KafkaArgs,
    topics: Topics,
    bin_dir: PathBuf,
    baseline_bin_dir: Option<PathBuf>,
    variant_bin_dirs: Vec<PathBuf>,
    log_dir: PathBuf,
    router_metrics: String,
    status_port: u16,
}

impl Bench {
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("HELPGRID_KAFKA_BROKERS", self.kafka.brokers.clone()),
            ("HELPGRID_TOPIC_PREFIX", self.kafka.topic_prefix.clone()),
            ("HELPGRID_TOPIC_PARTITIONS", PARTITIONS.to_string()),
            // The restore figures are read from the services' info lines.
            ("RUST_LOG", "info".to_owned()),
        ]
    }

    fn router(&self) -> anyhow::Result<Service> {
        self.router_from(&self.bin_dir)
    }

    /// The router from the binaries in `bin_dir`.
    fn router_from(&self, bin_dir: &std::path::Path) -> anyhow::Result<Service> {
        let mut env = self.env();
        let deadline = DEADLINE_S.to_string();
        env.extend([
            ("HELPGRID_ACK_DEADLINE_NORMAL_S", deadline.clone()),
            ("HELPGRID_ACK_DEADLINE_HIGH_S", deadline.clone()),
            ("HELPGRID_ACK_DEADLINE_CRITICAL_S", deadline),
            (
                "HELPGRID_ROUTER_METRICS_LISTEN",
                self.router_metrics.clone(),
            ),
            (
                "HELPGRID_ROUTER_STATE_DIR",
                self.state_dir().display().to_string(),
            ),
        ]);
        Ok(Service::spawn(
            bin_dir,
            "helpgrid-router",
            "helpgrid-router",
            &[],
            &env,
            &self.log_dir,
        )?)
    }

    fn status(&self) -> anyhow::Result<Service> {
        self.status_from(&self.bin_dir)
    }

    /// The status service from the binaries in `bin_dir`.
    fn status_from(&self, bin_dir: &std::path::Path) -> anyhow::Result<Service> {
        let mut env = self.env();
        env.extend([
            (
                "HELPGRID_STATUS_LISTEN",
                format!("127.0.0.1:{}", self.status_port),
            ),
            ("HELPGRID_INSECURE_NO_AUTH", "true".into()),
        ]);
        Ok(Service::spawn(
            bin_dir,
            "helpgrid-status",
            "helpgrid-status",
            &[],
            &env,
            &self.log_dir,
        )?)
    }

    /// Polls the router's /readyz until it answers 200.
    async fn router_ready(&self, limit: Duration) -> anyhow::Result<Duration> {
        let started = Instant::now();
        while started.elapsed() < limit {
            if let Ok(mut s) = tokio::net::TcpStream::connect(&self.router_metrics).await {
                let _ = s
                    .write_all(b"GET /readyz HTTP/1.0\r\nHost: x\r\n\r\n")
                    .await;
                let mut answer = Vec::new();
                let _ = s.read_to_end(&mut answer).await;
                if answer.starts_with(b"HTTP/1.1 200") || answer.starts_with(b"HTTP/1.0 200") {
                    return Ok(started.elapsed());
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        anyhow::bail!("router not ready within {limit:?}")
    }

    /// Polls the status service's gRPC health until it says SERVING.
    async fn status_serving(&self, limit: Duration) -> anyhow::Result<Duration> {
        use tonic_health::pb::health_check_response::ServingStatus;
        use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
        let started = Instant::now();
        let url = format!("http://127.0.0.1:{}", self.status_port);
        while started.elapsed() < limit {
            if let Ok(channel) = tonic::transport::Endpoint::from_shared(url.clone())?
                .connect()
                .await
                && let Ok(answer) = HealthClient::new(channel)
                    .check(HealthCheckRequest {
                        service: String::new(),
                    })
                    .await
                && answer.into_inner().status == ServingStatus::Serving as i32
            {
                return Ok(started.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        anyhow::bail!("status not SERVING within {limit:?}")
    }
}

impl Bench {
    /// The router's state folder (local checkpoints), under the log folder.
    fn state_dir(&self) -> PathBuf {
        self.log_dir.join("router-state")
    }

    /// Waits until every partition has a checkpoint written at or after `since` (the
    /// router writes one right after a restore): a router that has run for a while has one.
    async fn checkpoints_written(&self, since: SystemTime) -> anyhow::Result<Duration> {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(300) {
            let fresh = walk_files(&self.state_dir())
                .into_iter()
                .filter(|f| {
                    f.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.ends_with(".checkpoint"))
                        && f.metadata()
                            .and_then(|m| m.modified())
                            .is_ok_and(|m| m >= since)
                })
                .count();
            if fresh >= PARTITIONS {
                return Ok(started.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::bail!("the router wrote no checkpoint of every partition within 300 s")
    }

    /// Waits until the running router has logged a finished checkpoint round (after a restore
    /// from checkpoints only the partitions changed since are written again, so no count of
    /// fresh files tells this).
    async fn checkpoint_round_done(&self) -> anyhow::Result<()> {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(300) {
            let log = std::fs::read_to_string(self.log_dir.join("helpgrid-router.log"))
                .unwrap_or_default();
            if log.contains("checkpoint round done") {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::bail!("the router finished no checkpoint round within 300 s")
    }

    /// Removes the router's checkpoints: the next restore reads incident-state whole.
    fn forget_checkpoints(&self) {
        let _ = std::fs::remove_dir_all(self.state_dir());
    }

    /// The router's start-up as its log tells it: milliseconds from its first log line to
    /// each step, and the restore's own figures.
    fn router_time_line(&self) -> String {
        let log =
            std::fs::read_to_string(self.log_dir.join("helpgrid-router.log")).unwrap_or_default();
        let at = |line: &str| -> Option<i64> {
            // `2026-11-30T06:55:36.123456Z  INFO …`: the time of day in ms.
            let t = line.split_whitespace().next()?.get(11..23)?;
            let (h, rest) = t.split_once(':')?;
            let (m, sec) = rest.split_once(':')?;
            let ms = h.parse::<i64>().ok()? * 3_600_000
                + m.parse::<i64>().ok()? * 60_000
                + (sec.parse::<f64>().ok()? * 1000.0) as i64;
            Some(ms)
        };
        let Some(first) = log.lines().find_map(at) else {
            return "(no timestamped log lines)".to_owned();
        };
        let mut steps = Vec::new();
        for (what, message) in [
            ("topics", "topics ready"),
            ("roster", "roster loaded"),
            ("pipeline", "router pipeline started"),
            ("restored", ROUTER_RESTORED),
        ] {
            if let Some(t) = log.lines().find(|l| l.contains(message)).and_then(at) {
                steps.push(format!("{what} +{} ms", t - first));
            }
        }
        if let Some(init) = log
            .lines()
            .find(|l| l.contains("router pipeline started"))
            .and_then(|l| l.split_whitespace().find(|f| f.starts_with("init_ms=")))
        {
            steps.push(init.to_owned());
        }
        steps.join(", ")
    }
}

/// Every file under `dir`, at any depth.
fn walk_files(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return files;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk_files(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// The machine's load averages (1, 5, 15 minutes), printed beside wall-clock figures.
fn load_average() -> String {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    load.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Median of a few figures.
fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The log lines in which the services report what a restore read.
const ROUTER_RESTORED: &str = "partitions assigned and state restored";
const STATUS_RESTORED: &str = "incident snapshots restored from incident-state";

impl Bench {
    /// The figures of the last restore a service logged (records, bytes, times), as
    /// `key=value` pairs from its log line.
    fn restore_figures(&self, bin: &str, message: &str) -> String {
        let log =
            std::fs::read_to_string(self.log_dir.join(format!("{bin}.log"))).unwrap_or_default();
        let Some(line) = log.lines().rev().find(|l| l.contains(message)) else {
            return format!("(no \"{message}\" line in its log)");
        };
        line.split_whitespace()
            .filter(|field| {
                [
                    "records=",
                    "bytes=",
                    "snapshots=",
                    "checkpointed_partitions=",
                    "checkpointed_records=",
                    "reader_ms=",
                    "waited_ms=",
                    "checkpoints_ms=",
                    "prepared_ms=",
                    "restore_ms=",
                    "restore_cpu_ms=",
                    "read_cpu_ms=",
                    "stable_ms=",
                    "elapsed_ms=",
                ]
                .iter()
                .any(|key| field.starts_with(key))
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Waits until the broker's log cleaner has compacted `topic` as far as it will: history that
/// took days in production was written here in minutes, and the cleaner would have run
/// throughout those days. Done when the topic's bytes on disk stop changing for 30 s (the
/// cleaner wakes every 15 s); at most 10 minutes. The active segment of each partition is
/// never compacted, as in production.
async fn wait_for_cleaner(broker: &OwnBroker, topic: &str) {
    let size = || -> u64 {
        let Ok(dirs) = std::fs::read_dir(broker.data_dir()) else {
            return 0;
        };
        dirs.flatten()
            .filter(|d| {
                d.file_name()
                    .to_str()
                    .and_then(|n| n.strip_prefix(topic))
                    .and_then(|n| n.strip_prefix('-'))
                    .is_some_and(|n| n.parse::<u32>().is_ok())
            })
            .filter_map(|d| std::fs::read_dir(d.path()).ok())
            .flat_map(|files| files.flatten())
            .filter(|f| f.file_name().to_str().is_some_and(|n| n.ends_with(".log")))
            .filter_map(|f| f.metadata().ok().map(|m| m.len()))
            .sum()
    };
    let started = Instant::now();
    let before = size();
    let mut last = before;
    let mut stable_since = Instant::now();
    while started.elapsed() < Duration::from_secs(600) {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let now = size();
        if now != last {
            last = now;
            stable_since = Instant::now();
        } else if stable_since.elapsed() >= Duration::from_secs(30) {
            break;
        }
    }
    println!(
        "{topic} on disk: {:.1} MiB before the log cleaner, {:.1} MiB after ({:.0} s waited)",
        before as f64 / 1_048_576.0,
        last as f64 / 1_048_576.0,
        started.elapsed().as_secs_f64()
    );
}

fn rss_mib(service: &Service) -> f64 {
    memory_mib(service).0
}

/// A process's resident memory now and at its peak (VmRSS, VmHWM), in MiB.
fn memory_mib(service: &Service) -> (f64, f64) {
    procstat::read(service.pid()).map_or((0.0, 0.0), |(_, rss, peak)| (rss, peak))
}

/// A reader of `topic` from its present end, resolved now (not at its first fetch, which
/// may come after a fast router's output and would miss it).
fn reader_at_end(kafka: &KafkaArgs, topic: &str) -> anyhow::Result<BaseConsumer> {
    let reader: BaseConsumer = kafka.reader_config("helpgrid-restore-bench").create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS as i32 {
        let (_, high) = reader.fetch_watermarks(topic, p, Duration::from_secs(30))?;
        tpl.add_partition_offset(topic, p, Offset::Offset(high))?;
    }
    reader.assign(&tpl)?;
    Ok(reader)
}

/// Returns when an event caused by `event_id` arrives at `reader`, with the time it took
/// since `since`.
fn wait_for_cause(
    reader: &BaseConsumer,
    event_id: &str,
    since: Instant,
) -> anyhow::Result<Duration> {
    while since.elapsed() < Duration::from_secs(120) {
        if let Some(Ok(m)) = reader.poll(Duration::from_millis(50))
            && let Some(Ok(e)) = m.payload().map(pb::IncidentEvent::decode)
            && e.cause_id == event_id
        {
            return Ok(since.elapsed());
        }
    }
    anyhow::bail!("no output for {event_id} within 120 s")
}

fn new_press(n: usize) -> (String, HelpEvent) {
    let g = grid(n % GRIDS);
    let event = HelpEvent {
        envelope: Some(helpgrid_common::envelope::new_envelope(
            "btn-bench",
            now_millis(),
        )),
        body: Some(help_event::Body::ButtonPress(ButtonPress {
            device_id: format!("btn-new-{n}"),
            household_id: format!("{g}-new-{n}"),
            grid_id: g.clone(),
            kind: PressKind::Help as i32,
            location: None,
            battery_percent: 90,
        })),
    };
    (g, event)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.log_dir)?;
    // A broker of its own, with the log cleaner as a production broker runs it.
    let (broker, bootstrap) = OwnBroker::start();
    let mut kafka = KafkaArgs::new(bootstrap, "bench.".to_owned());
    kafka.topic_partitions = PARTITIONS as i32;
    let topics = Topics::with_prefix(&kafka.topic_prefix);
    ensure_topics(&kafka, &topics).await?;
    let bench = Bench {
        kafka: kafka.clone(),
        topics: topics.clone(),
        bin_dir: args.bin_dir.clone(),
        baseline_bin_dir: args.baseline_bin_dir.clone(),
        variant_bin_dirs: args.variant_bin_dir.clone(),
        log_dir: args.log_dir.clone(),
        router_metrics: format!("127.0.0.1:{}", free_port()?),
        status_port: free_port()?,
    };
    let mut history = History::new(&kafka, &topics)?;
    let written = Instant::now();
    match args.run {
        Run::Restart {
            events,
            open,
            days,
            status_only,
        } => {
            history.churn(events, open, days, |_| {});
            println!(
                "history: {} incident events, {} incident-state records, {} open, written in {:.1} s",
                history.events,
                history.state_records,
                history.desk.open_count(),
                written.elapsed().as_secs_f64()
            );
            wait_for_cleaner(&broker, &topics.incident_state).await;
            if status_only {
                status_restarts(&bench).await?;
            } else {
                restart(&bench).await?;
            }
        }
        Run::Flood {
            open,
            rounds,
            router_only,
        } => {
            let now = now_millis();
            for k in 0..open {
                history.press(now);
                if k % 100_000 == 0 {
                    eprintln!("{k} open incidents written");
                }
            }
            history.flush();
            println!(
                "history: {} incident events, {} incident-state records, {} open, written in {:.1} s",
                history.events,
                history.state_records,
                history.desk.open_count(),
                written.elapsed().as_secs_f64()
            );
            wait_for_cleaner(&broker, &topics.incident_state).await;
            bench.forget_checkpoints();
            let since = SystemTime::now();
            let router = bench.router()?;
            let status = if router_only {
                None
            } else {
                Some(status_at_flood(&bench, open).await?)
            };
            // A router that has run for a while: ready, with its checkpoints on disk.
            bench.router_ready(Duration::from_secs(600)).await?;
            bench.checkpoints_written(since).await?;
            println!("router: cold start; {}", bench.router_time_line());
            router_kills_at_flood(&bench, router, open, rounds).await?;
            if let Some(status) = status {
                status.stop(Duration::from_secs(30));
            }
        }
        Run::Table {
            closed,
            open,
            rounds,
        } => {
            let now = now_millis();
            for _ in 0..open {
                history.press(now);
            }
            for k in 0..closed {
                // Ids as long as the router's (a UUID).
                let id = format!("{k:08}-0000-4000-8000-000000000000");
                send(
                    &history.producer,
                    &topics.incident_state,
                    Some((k % PARTITIONS) as i32),
                    id.as_bytes(),
                    None,
                );
            }
            history.flush();
            println!(
                "incident-state: {closed} tombstones and {} live snapshots written in {:.1} s",
                history.desk.open_count(),
                written.elapsed().as_secs_f64()
            );
            table_reads(&kafka, &topics.incident_state, rounds)?;
        }
        Run::Soak {
            events,
            open,
            days,
            samples,
        } => {
            let status = bench.status()?;
            bench.status_serving(Duration::from_secs(120)).await?;
            let every = (events / samples.max(1)).max(1);
            let mut next = every;
            let mut rows = Vec::new();
            history.churn(events, open, days, |h| {
                if h.events >= next {
                    h.flush();
                    // Let the status service catch up before sampling.
                    std::thread::sleep(Duration::from_millis(500));
                    rows.push((h.events, rss_mib(&status)));
                    next += every;
                }
            });
            tokio::time::sleep(Duration::from_secs(5)).await;
            rows.push((history.events, rss_mib(&status)));
            println!("| incident events written | status RSS (MiB) |\n| --- | --- |");
            for (e, rss) in &rows {
                println!("| {e} | {rss:.0} |");
            }
            let later: Vec<f64> = rows.iter().skip(rows.len() / 4).map(|r| r.1).collect();
            let (lo, hi) = later
                .iter()
                .fold((f64::MAX, 0.0f64), |(lo, hi), r| (lo.min(*r), hi.max(*r)));
            let mid = (lo + hi) / 2.0;
            println!(
                "status RSS from the first quarter on: {lo:.0}–{hi:.0} MiB, ±{:.1} % around {mid:.0} MiB; {} incident-state records, {} open at the end",
                (hi - lo) / 2.0 / mid * 100.0,
                history.state_records,
                history.desk.open_count()
            );
            status.stop(Duration::from_secs(30));
        }
    }
    Ok(())
}

/// Reads `topic` whole with the table reader, alternating its own settings with librdkafka's
/// queue defaults (`queued.min.messages` 100,000, `fetch.queue.backoff.ms` 1,000), and prints
/// each read's wall and CPU time (this process is otherwise idle).
fn table_reads(kafka: &KafkaArgs, topic: &str, rounds: usize) -> anyhow::Result<()> {
    let mut defaults = kafka.clone();
    defaults.options.extend([
        ("queued.min.messages".to_owned(), "100000".to_owned()),
        ("fetch.queue.backoff.ms".to_owned(), "1000".to_owned()),
    ]);
    let mut times: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    // HELPGRID_KAFKA_OPTIONS (`key=value;…`, as the services take it) applies to both.
    let mut kafka = kafka.clone();
    for option in std::env::var("HELPGRID_KAFKA_OPTIONS")
        .unwrap_or_default()
        .split(';')
        .filter_map(|o| o.split_once('='))
    {
        let (key, value) = option;
        kafka.options.push((key.to_owned(), value.to_owned()));
    }
    let kafka = &kafka;
    for _ in 0..rounds {
        for (k, (name, args)) in [("table reader", kafka), ("librdkafka defaults", &defaults)]
            .into_iter()
            .enumerate()
        {
            let started = Instant::now();
            let cpu = helpgrid_common::telemetry::process_cpu_seconds();
            let table = helpgrid_common::table::read_table(
                args,
                "helpgrid-restore-bench-table",
                topic,
                None,
                Duration::from_secs(300),
            )?;
            let wall = started.elapsed().as_secs_f64();
            println!(
                "{name}: {} records ({} live) in {wall:.2} s wall ({:.2} s waiting for fetches), {:.2} s CPU",
                table.records,
                table.live(),
                table.waited.as_secs_f64(),
                helpgrid_common::telemetry::process_cpu_seconds() - cpu
            );
            times[k].push(wall);
        }
    }
    println!(
        "table read wall, median: table reader {:.2} s, librdkafka defaults {:.2} s, ratio {:.2} (load average {})",
        median(&times[0]),
        median(&times[1]),
        median(&times[0]) / median(&times[1]),
        load_average()
    );
    Ok(())
}

/// The status service started on the flood's history (and, with `--baseline-bin-dir`,
/// restarted with the baseline build): start → SERVING and RSS per open incident.
async fn status_at_flood(bench: &Bench, open: usize) -> anyhow::Result<Service> {
    let mut builds = vec![("this build", bench.bin_dir.clone())];
    if let Some(baseline) = &bench.baseline_bin_dir {
        builds.push(("baseline", baseline.clone()));
    }
    let mut running: Option<Service> = None;
    for (build, bin_dir) in builds {
        if let Some(previous) = running.take() {
            previous.stop(Duration::from_secs(30));
        }
        let status = bench.status_from(&bin_dir)?;
        let serving = bench.status_serving(Duration::from_secs(600)).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (rss, peak) = memory_mib(&status);
        println!(
            "status ({build}): start → SERVING {:.2} s, RSS {rss:.0} MiB = {:.0} bytes per open incident (peak {peak:.0} MiB = {:.0} B); {}",
            serving.as_secs_f64(),
            rss * 1_048_576.0 / open as f64,
            peak * 1_048_576.0 / open as f64,
            bench.restore_figures("helpgrid-status", STATUS_RESTORED)
        );
        running = Some(status);
    }
    running.ok_or_else(|| anyhow::anyhow!("no status service started"))
}

/// (router build, restored from checkpoints)
type KillKind = (String, bool);
/// Bytes per open incident after the restore, and at the process's peak.
type BytesPerOpen = (f64, f64);

/// Output is the measure here, not readiness: the first press answered after the kill
/// proves the restore of every partition is done. Each round: a kill with the router's
/// checkpoints in place, then kills with its state folder removed (a restore of
/// incident-state whole) for this build, the baseline and each variant, side by side. RSS is
/// taken right after the first output; the peak is the process's VmHWM, which the restore
/// sets.
async fn router_kills_at_flood(
    bench: &Bench,
    router: Service,
    open: usize,
    rounds: usize,
) -> anyhow::Result<()> {
    let mut kills = vec![(true, "this build".to_owned(), bench.bin_dir.clone())];
    kills.push((false, "this build".to_owned(), bench.bin_dir.clone()));
    if let Some(baseline) = &bench.baseline_bin_dir {
        kills.push((false, "baseline".to_owned(), baseline.clone()));
    }
    for variant in &bench.variant_bin_dirs {
        let name = variant.file_name().map_or_else(
            || variant.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        kills.push((false, name, variant.clone()));
    }
    let mut figures: Vec<(KillKind, Vec<BytesPerOpen>)> = Vec::new();
    let mut router = router;
    for _ in 0..rounds.max(1) {
        for (checkpointed, build, bin_dir) in &kills {
            // The restarted router writes checkpoints right after its restore: wait for them,
            // so a kill with checkpoints finds them, and a late write does not land after
            // the folder is removed.
            bench.router_ready(Duration::from_secs(600)).await?;
            bench.checkpoint_round_done().await?;
            if !checkpointed {
                bench.forget_checkpoints();
            }
            let (sigkill, next) = kill_and_restart_from(bench, router, bin_dir).await?;
            router = next;
            let (rss, peak) = memory_mib(&router);
            let per = |mib: f64| mib * 1_048_576.0 / open as f64;
            println!(
                "router ({build}): SIGKILL → first new output {:.2} s {}; RSS {rss:.0} MiB = {:.0} bytes per open incident, peak {peak:.0} MiB = {:.0} B; {}; {}; load average {}",
                sigkill.as_secs_f64(),
                if *checkpointed {
                    "with checkpoints"
                } else {
                    "without checkpoints"
                },
                per(rss),
                per(peak),
                bench.restore_figures("helpgrid-router", ROUTER_RESTORED),
                bench.router_time_line(),
                load_average()
            );
            let key = (build.clone(), *checkpointed);
            match figures.iter_mut().find(|(k, _)| *k == key) {
                Some((_, v)) => v.push((per(rss), per(peak))),
                None => figures.push((key, vec![(per(rss), per(peak))])),
            }
        }
    }
    println!("| router build | restore | bytes per open incident after it | at the peak (VmHWM) |");
    println!("| --- | --- | --- | --- |");
    for ((build, checkpointed), v) in &figures {
        let after: Vec<String> = v.iter().map(|(a, _)| format!("{a:.0}")).collect();
        let peak: Vec<String> = v.iter().map(|(_, p)| format!("{p:.0}")).collect();
        println!(
            "| {build} | {} | {} | {} |",
            if *checkpointed {
                "from checkpoints"
            } else {
                "incident-state whole"
            },
            after.join(", "),
            peak.join(", ")
        );
    }
    router.stop(Duration::from_secs(30));
    Ok(())
}

/// SIGKILL the router, start it again at once, and send one new press: the time from the
/// kill to that press's first incident event.
async fn kill_and_restart(bench: &Bench, router: Service) -> anyhow::Result<(Duration, Service)> {
    kill_and_restart_from(bench, router, &bench.bin_dir).await
}

/// [`kill_and_restart`], the new router from the binaries in `bin_dir`.
async fn kill_and_restart_from(
    bench: &Bench,
    router: Service,
    bin_dir: &std::path::Path,
) -> anyhow::Result<(Duration, Service)> {
    let producer: BaseProducer = bench
        .kafka
        .producer_config("helpgrid-restore-bench-press")
        .create()?;
    let (key, press) = new_press(usize::MAX / 2);
    let event_id = press
        .envelope
        .as_ref()
        .map(|e| e.event_id.clone())
        .unwrap_or_default();
    let reader = reader_at_end(&bench.kafka, &bench.topics.incident_events)?;
    let killed = Instant::now();
    router.kill();
    let router = bench.router_from(bin_dir)?;
    send(
        &producer,
        &bench.topics.help_events,
        None,
        key.as_bytes(),
        Some(&press.encode_to_vec()),
    );
    let _ = producer.flush(Duration::from_secs(30));
    let took =
        tokio::task::spawn_blocking(move || wait_for_cause(&reader, &event_id, killed)).await??;
    Ok((took, router))
}

async fn restart(bench: &Bench) -> anyhow::Result<()> {
    bench.forget_checkpoints();
    let since = SystemTime::now();
    let router = bench.router()?;
    let ready = bench.router_ready(Duration::from_secs(600)).await?;
    println!(
        "router: cold start → ready {:.2} s, RSS {:.0} MiB; {}",
        ready.as_secs_f64(),
        rss_mib(&router),
        bench.router_time_line()
    );
    let mut router = router;
    println!(
        "router restore: {}",
        bench.restore_figures("helpgrid-router", ROUTER_RESTORED)
    );
    let written = bench.checkpoints_written(since).await?;
    println!(
        "router: checkpoints of every partition on disk {:.2} s after ready",
        written.as_secs_f64()
    );
    // Side by side in one run: kills with the router's checkpoints in place, and kills with
    // its state folder removed first (the restore reads incident-state whole, as before
    // checkpoints), alternating, so both see the same machine load.
    let mut with = Vec::new();
    let mut without = Vec::new();
    for round in 0..4 {
        let checkpointed = round % 2 == 0;
        if !checkpointed {
            bench.forget_checkpoints();
        }
        let (took, next) = kill_and_restart(bench, router).await?;
        router = next;
        bench.router_ready(Duration::from_secs(600)).await?;
        println!(
            "router SIGKILL → first new output {:.2} s {}: {}; {}",
            took.as_secs_f64(),
            if checkpointed {
                "with checkpoints"
            } else {
                "without checkpoints"
            },
            bench.restore_figures("helpgrid-router", ROUTER_RESTORED),
            bench.router_time_line()
        );
        if checkpointed {
            with.push(took.as_secs_f64());
        } else {
            without.push(took.as_secs_f64());
        }
        bench.checkpoint_round_done().await?;
    }
    println!(
        "router: SIGKILL → first new output with checkpoints {with:.2?} s, without {without:.2?} s; median ratio with/without {:.2} (load average {})",
        median(&with) / median(&without),
        load_average()
    );
    status_restarts(bench).await?;
    router.stop(Duration::from_secs(30));
    Ok(())
}

/// Status cold start, then three restarts → SERVING (with `--baseline-bin-dir`, three with
/// each build, alternating), each with what its restore read.
async fn status_restarts(bench: &Bench) -> anyhow::Result<()> {
    let status = bench.status()?;
    let cold = bench.status_serving(Duration::from_secs(600)).await?;
    println!(
        "status: cold start → SERVING {:.2} s, RSS {:.0} MiB",
        cold.as_secs_f64(),
        rss_mib(&status)
    );
    let mut builds = vec![("this build", bench.bin_dir.clone())];
    if let Some(baseline) = &bench.baseline_bin_dir {
        builds.push(("baseline", baseline.clone()));
    }
    let mut restarts: Vec<Vec<f64>> = vec![Vec::new(); builds.len()];
    let mut status = status;
    for _ in 0..3 {
        for (k, (name, bin_dir)) in builds.iter().enumerate() {
            status.stop(Duration::from_secs(30));
            status = bench.status_from(bin_dir)?;
            let took = bench
                .status_serving(Duration::from_secs(600))
                .await?
                .as_secs_f64();
            restarts[k].push(took);
            println!(
                "status restart → SERVING {took:.2} s ({name}); RSS {:.0} MiB; restore: {}",
                rss_mib(&status),
                bench.restore_figures("helpgrid-status", STATUS_RESTORED)
            );
        }
    }
    println!(
        "status: restart → SERVING {:.2?} s (3 restarts; load average {})",
        restarts[0],
        load_average()
    );
    if let Some(baseline) = restarts.get(1) {
        println!(
            "status: restart → SERVING, baseline build {baseline:.2?} s; median ratio this/baseline {:.2}",
            median(&restarts[0]) / median(baseline)
        );
    }
    status.stop(Duration::from_secs(30));
    Ok(())
}
