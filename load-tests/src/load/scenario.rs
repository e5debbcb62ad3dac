//! The scenarios, each one command (`helpgrid-load <scenario>`), and the run that drives
//! them: fresh topics, the roster, the processes under test, a warm-up, the phases with a
//! progress line, the drain, the reconciliation, and the report files.

use crate::city::{City, CityShape};
use crate::load::generator::{Generator, SendLog};
use crate::load::observer::{self, Observed, Output};
use crate::load::plan::{Drawer, Mix, Phase, Plan, Planned};
use crate::load::procstat::{Sample, Sampler, Watched};
use crate::load::report::{PhaseReport, Report};
use crate::load::services::{Service, free_port};
use crate::load::watchers::Watchers;
use crate::responders::{Behaviour, Responders};
use crate::sim::{self, Credentials};
use crate::tally::Tally;
use anyhow::Context as _;
use helpgrid_common::envelope::new_envelope;
use helpgrid_common::kafka::KafkaArgs;
use helpgrid_common::time::now_millis;
use helpgrid_common::topics::{Topics, ensure_topics};
use helpgrid_proto::pb::RosterRecord;
use helpgrid_proto::pb::incident_service_client::IncidentServiceClient;
use prost::Message as _;
use rdkafka::consumer::BaseConsumer;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use serde_json::json;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// A few seconds at a low rate: checks the whole harness.
    Smoke,
    /// Rising fixed rates; the highest with p99 press → assigned under the target.
    Steady,
    /// N presses as fast as the producer takes them: the pipeline's throughput.
    Burst,
    /// Every household of a city presses within `--flood-s` (some twice).
    Flood,
    /// Many cameras repeating detections: events in vs incidents vs notifications.
    CameraStorm,
    /// Steady load while many WatchIncidents streams are open.
    FanOut,
    /// The device gateway: Zigbee2MQTT messages → help events, beside bare MQTT and Kafka.
    Gateway,
    /// Responder app pages (SSE, default 1,000) open while presses arrive (default 200/s):
    /// assignment → on the assignee's page.
    AppPages,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// The router and the status service.
    Helpgrid,
    /// The bare relay, at-least-once.
    RelayAtLeastOnce,
    /// The bare relay, transactional.
    RelayTransactional,
}

#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "helpgrid-load",
    version,
    about = "Load scenarios and benchmarks for HelpGrid against a real Kafka broker"
)]
pub struct LoadArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// The scenario to run.
    #[arg(value_enum)]
    pub scenario: Scenario,
    /// What is under test.
    #[arg(long, value_enum, default_value_t = Target::Helpgrid)]
    pub target: Target,
    /// Where the service binaries are (release builds give figures that mean something).
    #[arg(long, default_value = "target/release")]
    pub bin_dir: PathBuf,
    /// Folder for results and service logs (default .helpgrid/load/<scenario>-<target>-<time>).
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
    /// Use services that already run on `--kafka-brokers` with exactly `--topic-prefix`
    /// (no fresh topics, nothing started); needs `--status-addr`.
    #[arg(long)]
    pub no_spawn: bool,
    /// The status service's gRPC address (with --no-spawn).
    #[arg(long)]
    pub status_addr: Option<String>,
    /// Consumer group of the router (for the lag); default `<prefix>router`.
    #[arg(long)]
    pub router_group: Option<String>,
    /// Extra environment for the started services, KEY=VALUE (e.g.
    /// HELPGRID_KAFKA_OPTIONS=linger.ms=0 or HELPGRID_ROUTER_BATCH_MAX=2000).
    #[arg(long = "service-env", value_parser = parse_env)]
    pub service_env: Vec<(String, String)>,
    /// The broker's pid file, to report its CPU and memory too.
    #[arg(long, env = "HELPGRID_LOAD_KAFKA_PID_FILE")]
    pub kafka_pid_file: Option<PathBuf>,
    /// PostgreSQL's `postmaster.pid` (in its data folder), to report the CPU and memory of
    /// the postmaster and every backend it forked (the archive's writes cost PostgreSQL too).
    #[arg(long, env = "HELPGRID_LOAD_POSTGRES_PID_FILE")]
    pub postgres_pid_file: Option<PathBuf>,
    /// Grids in the simulated city (default: per scenario).
    #[arg(long)]
    pub grids: Option<usize>,
    /// Households per grid (default: per scenario).
    #[arg(long)]
    pub households_per_grid: Option<usize>,
    /// Grid workers per grid (default: per scenario).
    #[arg(long)]
    pub workers_per_grid: Option<usize>,
    /// Cameras per grid.
    #[arg(long, default_value_t = 2)]
    pub cameras_per_grid: usize,
    /// Seed of every random choice: the same seed plans the same events.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Steady: the rates to try, events/s, in order; each step lasts `--step-s`.
    #[arg(long, value_delimiter = ',')]
    pub rates: Option<Vec<f64>>,
    /// Steady: seconds each rate step lasts.
    #[arg(long)]
    pub step_s: Option<f64>,
    /// Steady stops at the first step whose p99 press → assigned reaches this.
    #[arg(long, default_value_t = 100.0)]
    pub p99_target_ms: f64,
    /// Burst: events to send.
    #[arg(long, default_value_t = 50_000)]
    pub events: u64,
    /// Flood: households that press (the city is sized to hold them).
    #[arg(long, default_value_t = 774_000)]
    pub households: usize,
    /// Flood: seconds over which they press.
    #[arg(long, default_value_t = 60.0)]
    pub flood_s: f64,
    /// Share of presses that press again while help is on the way.
    #[arg(long)]
    pub repeat_ratio: Option<f64>,
    /// Share of events that are camera detections.
    #[arg(long)]
    pub camera_ratio: Option<f64>,
    /// Share of presses that are urgent.
    #[arg(long, default_value_t = 0.08)]
    pub urgent_ratio: f64,
    /// Share of presses that are medical.
    #[arg(long, default_value_t = 0.05)]
    pub medical_ratio: f64,
    /// Share of detections under the confidence threshold.
    #[arg(long, default_value_t = 0.1)]
    pub low_confidence_ratio: f64,
    /// Camera storm: cameras that fire, and detections each.
    #[arg(long, default_value_t = 1_000)]
    pub storm_cameras: usize,
    /// Camera storm: detections per camera.
    #[arg(long, default_value_t = 10)]
    pub storm_repeats: usize,
    /// Camera storm: detections per second.
    #[arg(long, default_value_t = 2_000.0)]
    pub storm_rate: f64,
    /// WatchIncidents streams (fan-out default 1000), and streams per HTTP/2 connection.
    #[arg(long)]
    pub watchers: Option<usize>,
    /// WatchIncidents streams per HTTP/2 connection.
    #[arg(long, default_value_t = 50)]
    pub streams_per_connection: usize,
    /// Share of assignments the simulated responders acknowledge (over gRPC), and after
    /// how long.
    #[arg(long)]
    pub ack_ratio: Option<f64>,
    /// Milliseconds after the assignment the simulated responders acknowledge.
    #[arg(long, default_value_t = 0.0)]
    pub ack_after_ms: f64,
    /// Acknowledgement deadline given to the router: long, so that reassignments of
    /// unacknowledged incidents do not mix into the figures.
    #[arg(long, default_value_t = 3600.0)]
    pub ack_deadline_s: f64,
    /// Must match the router's `--camera-min-confidence`.
    #[arg(long, default_value_t = 0.6)]
    pub camera_min_confidence: f32,
    /// Longest wait for a phase's backlog to drain after its last event.
    #[arg(long, default_value_t = 120.0)]
    pub drain_timeout_s: f64,
    /// Seconds between progress lines.
    #[arg(long, default_value_t = 2.0)]
    pub progress_every_s: f64,
    /// Also run helpgrid-notify with one webhook subscribed to every assignment, and measure
    /// assignment → webhook received (a receiver in this process).
    #[arg(long)]
    pub webhooks: bool,
    /// With --webhooks: the subscription's batch_max (1: one notification per request;
    /// more: notify sends what queued behind a request in one, never waiting to fill it).
    #[arg(long, default_value_t = 1)]
    pub webhook_batch_max: u32,
    /// App pages: responder pages (`/app/events` with a session cookie) held open.
    #[arg(long, default_value_t = 1000)]
    pub app_pages: usize,
    /// App pages: the p99 assignment → on the page the run is judged against.
    #[arg(long, default_value_t = 200.0)]
    pub app_p99_target_ms: f64,
    /// The MQTT broker of the gateway scenario.
    #[command(flatten)]
    pub mqtt: crate::devices::MqttArgs,
    /// More routers, and the other consumers of incident-events, started beside the router.
    #[command(flatten)]
    pub alongside: crate::load::flood_services::AlongsideArgs,
    /// When the generator is ahead of its schedule it sleeps at least this long, then sends
    /// every event that has come due: one wake-up per tick instead of one per event (the
    /// load tool shares the cores with what it measures). 0: one sleep per event.
    #[arg(long, default_value_t = 1.0)]
    pub send_tick_ms: f64,
    /// Print the encoded size of a planned button press (for the Kafka tools) and exit.
    #[arg(long)]
    pub print_record_size: bool,
}

/// The encoded size of the run's first planned event, without touching Kafka.
pub fn record_size(args: &LoadArgs) -> usize {
    let city = City::build(&shape(args), "");
    let plan = plan(
        args,
        &city,
        format!("{}-{}", scenario_name(args.scenario), now_millis() / 1000),
    );
    plan.help_event(&city, 0, now_millis())
        .map_or(0, |(_, e)| e.encoded_len())
}

fn parse_env(raw: &str) -> Result<(String, String), String> {
    match raw.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {raw:?}")),
    }
}

fn scenario_name(s: Scenario) -> &'static str {
    match s {
        Scenario::Smoke => "smoke",
        Scenario::Steady => "steady",
        Scenario::Burst => "burst",
        Scenario::Flood => "flood",
        Scenario::CameraStorm => "camera-storm",
        Scenario::FanOut => "fan-out",
        Scenario::Gateway => "gateway",
        Scenario::AppPages => "app-pages",
    }
}

fn target_name(t: Target) -> &'static str {
    match t {
        Target::Helpgrid => "helpgrid",
        Target::RelayAtLeastOnce => "relay-alo",
        Target::RelayTransactional => "relay-txn",
    }
}

const WARM_UP_EVENTS: u64 = 40;

/// The city for the scenario: the flood is Ankang-sized, the others a district.
fn shape(args: &LoadArgs) -> CityShape {
    let (grids, households, workers) = match args.scenario {
        Scenario::Smoke => (6, 40, 2),
        Scenario::Flood => {
            let grids = args.grids.unwrap_or(13_000);
            (grids, args.households.div_ceil(grids.max(1)), 1)
        }
        // Two grid workers per grid: one page each.
        // (500 grids at least, so that `--app-pages 0`, the baseline, runs the same city.)
        Scenario::AppPages => (args.app_pages.max(1000).div_ceil(2), 60, 2),
        _ => (300, 60, 2),
    };
    CityShape {
        grids: args.grids.unwrap_or(grids),
        workers_per_grid: args.workers_per_grid.unwrap_or(workers),
        households_per_grid: args.households_per_grid.unwrap_or(households),
        cameras_per_grid: args.cameras_per_grid,
        grids_per_beat: 3,
        officers_per_beat: 2,
        seed: args.seed,
    }
}

fn mix(args: &LoadArgs) -> Mix {
    let (repeat, camera) = match args.scenario {
        Scenario::Flood => (0.05, 0.0),
        Scenario::Burst => (0.0, 0.0),
        _ => (0.05, 0.05),
    };
    Mix {
        repeat_ratio: args.repeat_ratio.unwrap_or(repeat),
        camera_ratio: args.camera_ratio.unwrap_or(camera),
        urgent_ratio: args.urgent_ratio,
        medical_ratio: args.medical_ratio,
        low_confidence_ratio: args.low_confidence_ratio,
    }
}

/// The events and phases of the run.
fn plan(args: &LoadArgs, city: &City, tag: String) -> Plan {
    let mut drawer = Drawer::new(city, mix(args), args.seed);
    let mut events: Vec<Planned> = Vec::new();
    let mut phases = Vec::new();
    let mut push = |events: &mut Vec<Planned>,
                    name: String,
                    more: Vec<Planned>,
                    rate: Option<f64>,
                    warm_up: bool| {
        let start = events.len() as u64;
        events.extend(more);
        phases.push(Phase {
            name,
            range: start..events.len() as u64,
            rate,
            warm_up,
        });
    };
    let warm: Vec<Planned> = (0..WARM_UP_EVENTS).map(|_| drawer.draw()).collect();
    push(&mut events, "warm-up".into(), warm, Some(20.0), true);
    let rates = |default: &[f64]| args.rates.clone().unwrap_or_else(|| default.to_vec());
    match args.scenario {
        Scenario::Smoke | Scenario::Steady | Scenario::FanOut | Scenario::AppPages => {
            let (default_rates, default_step): (&[f64], f64) = match args.scenario {
                Scenario::Smoke => (&[50.0], 3.0),
                Scenario::FanOut | Scenario::AppPages => (&[200.0], 30.0),
                _ => (
                    &[250.0, 500.0, 1000.0, 1500.0, 2000.0, 3000.0, 4000.0, 6000.0],
                    15.0,
                ),
            };
            let step_s = args.step_s.unwrap_or(default_step);
            for rate in rates(default_rates) {
                let n = (rate * step_s).round() as usize;
                let more = (0..n).map(|_| drawer.draw()).collect();
                push(&mut events, format!("{rate:.0}/s"), more, Some(rate), false);
            }
        }
        Scenario::Burst => {
            let more = (0..args.events).map(|_| drawer.draw()).collect();
            push(&mut events, "burst".into(), more, None, false);
        }
        Scenario::Flood => {
            let mut drawer =
                Drawer::new(city, mix(args), args.seed ^ 0xf100d).each_household_once();
            let mut more = Vec::new();
            while drawer.households_left().unwrap_or(0) > 0 && more.len() < args.households * 2 {
                more.push(drawer.draw());
            }
            let pressed = more
                .iter()
                .filter(|p| matches!(p, Planned::Press { repeat: false, .. }))
                .count();
            more.truncate(more.len().min(args.households + (more.len() - pressed)));
            let rate = more.len() as f64 / args.flood_s.max(0.001);
            push(&mut events, "flood".into(), more, Some(rate), false);
        }
        Scenario::CameraStorm => {
            let more = drawer.camera_storm(args.storm_cameras, args.storm_repeats);
            push(
                &mut events,
                "storm".into(),
                more,
                Some(args.storm_rate),
                false,
            );
        }
        // Its own run (load::gateway): nothing planned here.
        Scenario::Gateway => {}
    }
    Plan {
        tag,
        events,
        phases,
    }
}

/// Writes the city's responders straight to the roster topic (as the status service would,
/// one full record per responder): much faster than 20,000 gRPC calls for a big city.
fn publish_roster(kafka: &KafkaArgs, topic: &str, city: &City) -> anyhow::Result<()> {
    let deliveries = Arc::new(crate::load::generator::Deliveries::default());
    let producer: ThreadedProducer<_> = kafka
        .producer_config("helpgrid-load-roster")
        .create_with_context(crate::load::generator::CountDeliveries(Arc::clone(
            &deliveries,
        )))?;
    for responder in &city.responders {
        let record = RosterRecord {
            envelope: Some(new_envelope("office:load-test", now_millis())),
            responder: Some(responder.clone()),
        };
        let payload = record.encode_to_vec();
        let mut r = BaseRecord::to(topic)
            .key(responder.responder_id.as_bytes())
            .payload(payload.as_slice());
        loop {
            match producer.send(r) {
                Ok(()) => break,
                Err((_, back)) => {
                    r = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(60))?;
    let failed = deliveries.failed.load(Ordering::Relaxed);
    anyhow::ensure!(failed == 0, "{failed} roster records not delivered");
    Ok(())
}

/// Everything needed while the run goes on.
struct Live {
    observed: Arc<Mutex<Observed>>,
    samples: Arc<Mutex<Vec<Sample>>>,
    log: Arc<SendLog>,
    services: Vec<Service>,
}

impl Live {
    fn progress(&self, phase: &str, sent: u64) -> String {
        let last = self.samples.lock().ok().and_then(|s| s.last().cloned());
        let elapsed = self.log.origin.elapsed().as_secs_f64();
        let Ok(o) = self.observed.lock() else {
            return String::new();
        };
        let (acc, exp, asg): (u64, u64, u64) = o.phases.iter().fold((0, 0, 0), |a, p| {
            (a.0 + p.accounted, a.1 + p.expected, a.2 + p.assigned)
        });
        let now_s = (self.log.now_us() / 1_000_000) as usize;
        let recent = o
            .seconds
            .get(now_s.saturating_sub(1))
            .filter(|s| !s.to_assigned.is_empty())
            .map_or("-".into(), |s| {
                format!(
                    "{:.1}ms",
                    s.to_assigned.value_at_quantile(0.99) as f64 / 1000.0
                )
            });
        let mut line = format!(
            "[{elapsed:>6.1}s] {phase}: sent {sent} | accounted {acc}/{exp} assigned {asg} | out {} | p99 last second {recent}",
            o.output_records
        );
        if let Some(s) = last {
            if let Some(lag) = s.lag {
                line.push_str(&format!(" | lag {lag}"));
            }
            for (name, cpu, rss) in &s.processes {
                line.push_str(&format!(" | {name} {cpu:.0}% {rss:.0}MiB"));
            }
        }
        line
    }
}

/// Runs the scenario; `progress` gets a line every `--progress-every-s`. Returns the report
/// (also written to the run's folder) and that folder.
pub async fn run(args: LoadArgs, progress: impl Fn(&str)) -> anyhow::Result<(Report, PathBuf)> {
    let stamp = now_millis() / 1000;
    let name = format!(
        "{}-{}",
        scenario_name(args.scenario),
        target_name(args.target)
    );
    let mut kafka = args.kafka.clone();
    if !args.no_spawn {
        kafka.topic_prefix = format!("{}{name}-{stamp}.", args.kafka.topic_prefix);
    }
    let out_dir = args
        .out_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!(".helpgrid/load/{name}-{stamp}")));
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let shape = shape(&args);
    let city = Arc::new(City::build(&shape, ""));
    let plan = Arc::new(plan(&args, &city, format!("{name}-{stamp}")));
    progress(&format!(
        "{name}: {} grids, {} households, {} responders; {} events in {} phases; topics {}*; results in {}",
        city.grids.len(),
        city.households(),
        city.responders.len(),
        plan.events.len(),
        plan.phases.len(),
        kafka.topic_prefix,
        out_dir.display()
    ));
    let topics = Topics::with_prefix(&kafka.topic_prefix);
    let router_group = args
        .router_group
        .clone()
        .unwrap_or_else(|| format!("{}router", kafka.topic_prefix));
    let relay_group = format!("{}relay", kafka.topic_prefix);

    let mut services = Vec::new();
    let mut webhooks: Option<crate::load::webhooks::Webhooks> = None;
    // App pages sign in: the status service runs with a key (the load test mints with it)
    // and serves the app on its console listener.
    let app_key = if args.scenario == Scenario::AppPages {
        crate::load::app_pages::check_fd_limit(args.app_pages)?;
        let secret: String = (0..64)
            .map(|_| char::from_digit(fastrand::u32(0..16), 16).unwrap_or('0'))
            .collect();
        let path = out_dir.join("auth.key");
        std::fs::write(&path, format!("load={secret}\n"))?;
        Some((helpgrid_auth::TokenKey::from_file(&path)?, path))
    } else {
        None
    };
    let mut console_addr: Option<std::net::SocketAddr> = None;
    let router_metrics = format!("127.0.0.1:{}", free_port()?);
    let mut status_addr = args.status_addr.clone();
    let output = if args.target == Target::Helpgrid {
        Output::IncidentEvents
    } else {
        Output::Relayed
    };
    ensure_topics(&kafka, &topics).await?;
    if args.target == Target::Helpgrid {
        publish_roster(&kafka, &topics.roster, &city)?;
    }
    if !args.no_spawn {
        let mut env: Vec<(&str, String)> = vec![
            ("HELPGRID_KAFKA_BROKERS", kafka.brokers.clone()),
            ("HELPGRID_TOPIC_PREFIX", kafka.topic_prefix.clone()),
            (
                "HELPGRID_TOPIC_PARTITIONS",
                kafka.topic_partitions.to_string(),
            ),
        ];
        for (k, v) in &args.service_env {
            env.push((k.as_str(), v.clone()));
        }
        match args.target {
            Target::Helpgrid => {
                let port = free_port()?;
                let mut status_env = env.clone();
                status_env.push(("HELPGRID_STATUS_LISTEN", format!("127.0.0.1:{port}")));
                if let Some((_, path)) = &app_key {
                    let console: std::net::SocketAddr =
                        format!("127.0.0.1:{}", free_port()?).parse()?;
                    status_env.push(("HELPGRID_AUTH_KEY_FILE", path.display().to_string()));
                    status_env.push(("HELPGRID_CONSOLE_LISTEN", console.to_string()));
                    console_addr = Some(console);
                } else {
                    // Authentication is measured by nothing here; tokens would only add noise.
                    status_env.push(("HELPGRID_INSECURE_NO_AUTH", "true".into()));
                }
                services.push(Service::spawn(
                    &args.bin_dir,
                    "helpgrid-status",
                    "helpgrid-status",
                    &[],
                    &status_env,
                    &out_dir,
                )?);
                let mut router_env = env.clone();
                let deadline = args.ack_deadline_s.to_string();
                router_env.extend([
                    ("HELPGRID_ROUTER_GROUP", router_group.clone()),
                    (
                        "HELPGRID_ROUTER_TRANSACTIONAL_ID",
                        format!("{}router-0", kafka.topic_prefix),
                    ),
                    ("HELPGRID_ACK_DEADLINE_NORMAL_S", deadline.clone()),
                    ("HELPGRID_ACK_DEADLINE_HIGH_S", deadline.clone()),
                    ("HELPGRID_ACK_DEADLINE_CRITICAL_S", deadline),
                    (
                        "HELPGRID_CAMERA_MIN_CONFIDENCE",
                        args.camera_min_confidence.to_string(),
                    ),
                    ("HELPGRID_ROUTER_METRICS_LISTEN", router_metrics.clone()),
                ]);
                services.push(Service::spawn(
                    &args.bin_dir,
                    "helpgrid-router",
                    "helpgrid-router",
                    &[],
                    &router_env,
                    &out_dir,
                )?);
                services.extend(crate::load::flood_services::start(
                    &args.alongside,
                    &args.bin_dir,
                    &env,
                    &router_env,
                    &kafka.topic_prefix,
                    &out_dir,
                )?);
                status_addr = Some(format!("http://127.0.0.1:{port}"));
                if args.webhooks {
                    let (hooks, service) = crate::load::webhooks::Webhooks::start(
                        &args.bin_dir,
                        &env,
                        &out_dir,
                        plan.phases.len(),
                        args.webhook_batch_max,
                    )
                    .await?;
                    services.push(service);
                    webhooks = Some(hooks);
                }
            }
            Target::RelayAtLeastOnce | Target::RelayTransactional => {
                let guarantee = if args.target == Target::RelayTransactional {
                    "transactional"
                } else {
                    "at-least-once"
                };
                let relay_args: Vec<String> = [
                    "--input",
                    &topics.help_events,
                    "--output",
                    &topics.incident_events,
                    "--guarantee",
                    guarantee,
                    "--group-id",
                    &relay_group,
                    "--transactional-id",
                    &format!("{}relay-0", kafka.topic_prefix),
                ]
                .iter()
                .map(|s| (*s).to_owned())
                .collect();
                services.push(Service::spawn(
                    &args.bin_dir,
                    "helpgrid-relay",
                    "helpgrid-load-tests",
                    &relay_args,
                    &env,
                    &out_dir,
                )?);
            }
        }
    }
    let channel: Option<Channel> = match (&status_addr, args.target) {
        (Some(addr), Target::Helpgrid) => Some(sim::connect(addr).await?),
        (None, Target::Helpgrid) => anyhow::bail!("--no-spawn needs --status-addr"),
        _ => None,
    };

    let log = Arc::new(SendLog::new(Instant::now(), plan.events.len()));
    let observed = Arc::new(Mutex::new(Observed::new(
        output,
        &plan,
        args.camera_min_confidence,
    )));
    let stop = Arc::new(AtomicBool::new(false));
    let observer = observer::start(
        &kafka.reader_config("helpgrid-load-observer"),
        &topics.incident_events,
        Arc::clone(&plan),
        Arc::clone(&log),
        Arc::clone(&observed),
        Arc::clone(&stop),
    )?;

    let mut watched: Vec<Watched> = services
        .iter()
        .map(|s| Watched::process(s.name.clone(), s.pid()))
        .collect();
    // A pid file's first line is the pid (Kafka's holds only that; PostgreSQL's more).
    let pid_in = |file: &Option<PathBuf>| -> Option<u32> {
        std::fs::read_to_string(file.as_ref()?)
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    };
    if let Some(pid) = pid_in(&args.kafka_pid_file) {
        watched.push(Watched::process("kafka", pid));
    }
    if let Some(pid) = pid_in(&args.postgres_pid_file) {
        watched.push(Watched {
            tree: true,
            ..Watched::process("postgresql", pid)
        });
    }
    watched.push(Watched::process("helpgrid-load", std::process::id()));
    let group = if args.target == Target::Helpgrid {
        &router_group
    } else {
        &relay_group
    };
    let lag_consumer: BaseConsumer = kafka
        .group_consumer_config("helpgrid-load-lag", group)
        .create()?;
    let samples = Arc::new(Mutex::new(Vec::new()));
    let sampler = {
        let mut sampler = Sampler::new(watched, Some((lag_consumer, topics.help_events.clone())));
        let samples = Arc::clone(&samples);
        let stop = Arc::clone(&stop);
        let log = Arc::clone(&log);
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let s = sampler.sample(log.origin.elapsed().as_secs_f64());
                if let Ok(mut all) = samples.lock() {
                    all.push(s);
                }
                std::thread::sleep(Duration::from_secs(1));
            }
            sampler
        })
    };

    let generator = Arc::new(
        Generator::new(
            &kafka.producer_config("helpgrid-load"),
            topics.help_events.clone(),
            Arc::clone(&plan),
            Arc::clone(&city),
            Arc::clone(&log),
        )?
        .with_tick(Duration::from_secs_f64(args.send_tick_ms.max(0.0) / 1000.0)),
    );
    let record_size = generator.record_size();
    let mut live = Live {
        observed: Arc::clone(&observed),
        samples: Arc::clone(&samples),
        log: Arc::clone(&log),
        services,
    };
    let cancel = CancellationToken::new();
    let tally = Arc::new(Mutex::new(Tally::default()));
    let mut watchers: Option<Watchers> = None;
    let mut app_pages: Option<crate::load::app_pages::AppPages> = None;
    let mut reports: Vec<PhaseReport> = Vec::new();
    let mut verdict = Vec::new();
    let every = Duration::from_secs_f64(args.progress_every_s.max(0.2));
    let send_stop = Arc::new(AtomicBool::new(false));

    for (i, phase) in plan.phases.iter().enumerate() {
        if let Some(hooks) = &webhooks {
            hooks.set_phase(i);
        }
        let g = Arc::clone(&generator);
        let (range, rate, flag) = (phase.range.clone(), phase.rate, Arc::clone(&send_stop));
        let mut sending = tokio::task::spawn_blocking(move || g.send(range, rate, &flag));
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        let sent = loop {
            tokio::select! {
                sent = &mut sending => break sent?,
                _ = tick.tick() => {
                    let so_far = plan.phases[i].range.clone().filter(|s| log.sent_at(*s).is_some()).count() as u64;
                    progress(&live.progress(&phase.name, so_far));
                }
            }
        };
        let drain_limit = if phase.warm_up {
            Duration::from_secs(120)
        } else {
            Duration::from_secs_f64(args.drain_timeout_s)
        };
        let drain_started = Instant::now();
        loop {
            let settled = live
                .observed
                .lock()
                .map(|o| o.phases[i].settled())
                .unwrap_or(false);
            if settled || drain_started.elapsed() > drain_limit {
                break;
            }
            for s in &mut live.services {
                s.check_running()?;
            }
            tokio::select! {
                _ = tick.tick() => progress(&live.progress(&format!("{} (draining)", phase.name), sent.events)),
                () = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
        let stats = live
            .observed
            .lock()
            .map_err(|_| anyhow::anyhow!("observer lock poisoned"))?
            .phases[i]
            .clone();
        let settled = stats.settled();
        let report = PhaseReport {
            name: phase.name.clone(),
            offered_rate: phase.rate,
            sent: sent.events,
            send_s: (sent.last_us.saturating_sub(sent.first_us)) as f64 / 1e6,
            max_behind_ms: sent.max_behind_us as f64 / 1000.0,
            drain_s: settled
                .then(|| stats.last_settled_us.saturating_sub(sent.last_us) as f64 / 1e6),
            throughput_eps: settled.then(|| {
                stats.expected as f64
                    / ((stats.last_settled_us.saturating_sub(sent.first_us)) as f64 / 1e6).max(1e-6)
            }),
            stats,
        };
        progress(&format!(
            "{}: sent {} in {:.1}s, {}; press → assigned p50 {} p99 {} max {} ms",
            phase.name,
            report.sent,
            report.send_s,
            report.drain_s.map_or("NOT drained".into(), |d| format!(
                "drained {d:.2}s after the last"
            )),
            ms(&report.stats.to_assigned, 0.5),
            ms(&report.stats.to_assigned, 0.99),
            ms(&report.stats.to_assigned, 1.0),
        ));
        if let Some(hooks) = &webhooks {
            // Webhooks trail the assignments; give the last ones a moment.
            tokio::time::sleep(Duration::from_secs(2)).await;
            let line = hooks.phase_line(i, &phase.name);
            progress(&line);
            if !phase.warm_up {
                verdict.push(line);
            }
        }
        let p99_ms = (!report.stats.to_assigned.is_empty())
            .then(|| report.stats.to_assigned.value_at_quantile(0.99) as f64 / 1000.0);
        reports.push(report);
        if phase.warm_up {
            anyhow::ensure!(
                settled,
                "the warm-up did not complete within {drain_limit:?}: is the pipeline up? (logs in {})",
                out_dir.display()
            );
            if let Some(channel) = &channel {
                let ack_ratio = args.ack_ratio.unwrap_or(match args.scenario {
                    Scenario::Smoke => 0.5,
                    Scenario::Steady | Scenario::FanOut | Scenario::CameraStorm => 0.1,
                    // The simulated responders act over gRPC without tokens.
                    Scenario::Burst | Scenario::Flood | Scenario::Gateway | Scenario::AppPages => {
                        0.0
                    }
                });
                if ack_ratio > 0.0 {
                    let after = args.ack_after_ms / 1000.0;
                    let responders = Responders {
                        city: Arc::clone(&city),
                        behaviour: Behaviour {
                            ack_after_min_s: after,
                            ack_after_max_s: after,
                            close_after_min_s: 1.0,
                            close_after_max_s: 3.0,
                            miss_ratio: 1.0 - ack_ratio,
                        },
                        // The status service runs with --insecure-no-auth here: no tokens.
                        watcher: IncidentServiceClient::with_interceptor(
                            channel.clone(),
                            helpgrid_auth::Bearer::anonymous(),
                        ),
                        channel: channel.clone(),
                        credentials: Arc::new(Credentials::new(None, &city)),
                        tally: Arc::clone(&tally),
                        seed: args.seed,
                    };
                    tokio::spawn(responders.run(cancel.clone()));
                }
                if let (Some((key, _)), Some(addr)) = (&app_key, console_addr) {
                    let pages = crate::load::app_pages::AppPages::start(
                        args.app_pages,
                        addr,
                        key,
                        &city,
                        &kafka.reader_config("helpgrid-load-app-pages"),
                        &topics.incident_events,
                        Duration::from_secs(60),
                    )
                    .await?;
                    progress(&format!(
                        "{} of {} app pages open ({} failed)",
                        pages.open(),
                        args.app_pages,
                        pages.failed()
                    ));
                    app_pages = Some(pages);
                }
                let count = args.watchers.unwrap_or(match args.scenario {
                    Scenario::FanOut => 1000,
                    Scenario::Smoke => 4,
                    _ => 0,
                });
                if count > 0 {
                    let addr = status_addr.clone().unwrap_or_default();
                    let mut channels = Vec::new();
                    for _ in 0..count.div_ceil(args.streams_per_connection.max(1)) {
                        channels.push(sim::connect(&addr).await?);
                    }
                    watchers = Some(Watchers::start(
                        count,
                        &channels,
                        &city,
                        shape.grids_per_beat,
                        Arc::clone(&plan),
                        Arc::clone(&log),
                        cancel.clone(),
                    ));
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    if let Some(w) = &watchers {
                        progress(&format!(
                            "{} of {count} watch streams open",
                            w.counters.connected.load(Ordering::Relaxed)
                        ));
                    }
                }
            }
        } else if args.scenario == Scenario::Steady {
            let ok = settled && p99_ms.is_some_and(|p| p < args.p99_target_ms);
            if !ok {
                progress(&format!(
                    "{}: p99 {} ms, target {} ms: stopping the ramp",
                    phase.name,
                    p99_ms.map_or("-".into(), |p| format!("{p:.1}")),
                    args.p99_target_ms
                ));
                break;
            }
        }
    }
    // Let acknowledgements of the last presses arrive, then stop everything.
    tokio::time::sleep(Duration::from_secs(1)).await;
    cancel.cancel();
    let watch = match watchers {
        Some(w) => {
            let r = w.finish().await;
            Some((r.watchers, r.updates, r.failed, r.to_delivered))
        }
        None => None,
    };
    let app_page_figures = match app_pages {
        Some(pages) => {
            let (figures, line) = pages.finish(args.app_p99_target_ms).await;
            progress(&line);
            verdict.push(line);
            figures
        }
        None => serde_json::Value::Null,
    };
    let elapsed_s = log.origin.elapsed().as_secs_f64();
    let webhook_figures = match webhooks {
        Some(hooks) => {
            let text = scrape(hooks.metrics_addr()).unwrap_or_default();
            let _ = std::fs::write(out_dir.join("notify-metrics.txt"), &text);
            let names: Vec<String> = plan.phases.iter().map(|p| p.name.clone()).collect();
            hooks.finish(&names)
        }
        None => serde_json::Value::Null,
    };
    let router_figures = if args.target == Target::Helpgrid && !args.no_spawn {
        let text = scrape(&router_metrics).unwrap_or_default();
        let _ = std::fs::write(out_dir.join("router-metrics.txt"), &text);
        router_summary(&text)
    } else {
        serde_json::Value::Null
    };
    stop.store(true, Ordering::Relaxed);
    let _ = observer.join();
    let sampler = sampler
        .join()
        .map_err(|_| anyhow::anyhow!("sampler thread panicked"))?;
    let samples = samples.lock().map(|s| s.clone()).unwrap_or_default();
    let usage = sampler.usage(&samples, elapsed_s);
    for s in live.services.drain(..) {
        s.stop(Duration::from_secs(20));
    }
    let observed = observed
        .lock()
        .map_err(|_| anyhow::anyhow!("observer lock poisoned"))?;
    let reconciliation = observed.reconcile(&plan, &log, args.camera_min_confidence);
    let failed_deliveries = generator.deliveries.failed.load(Ordering::Relaxed);

    verdict.push(format!(
        "reconciliation {}: {} events sent, {} accounted for exactly once, {} lost, {} duplicate event ids, {} duplicate assignments{}",
        if reconciliation.clean() { "clean" } else { "NOT CLEAN" },
        reconciliation.sent,
        reconciliation.accounted,
        reconciliation.lost,
        reconciliation.duplicate_event_ids,
        reconciliation.duplicate_assignments,
        if failed_deliveries > 0 { format!(", {failed_deliveries} not delivered to Kafka") } else { String::new() }
    ));
    let measured: Vec<&PhaseReport> = reports.iter().filter(|r| r.name != "warm-up").collect();
    let extra = match args.scenario {
        Scenario::Steady => {
            let best = measured
                .iter()
                .filter(|r| {
                    r.stats.settled()
                        && !r.stats.to_assigned.is_empty()
                        && (r.stats.to_assigned.value_at_quantile(0.99) as f64 / 1000.0)
                            < args.p99_target_ms
                })
                .filter_map(|r| r.offered_rate)
                .fold(None, |a: Option<f64>, r| Some(a.map_or(r, |a| a.max(r))));
            verdict.push(match best {
                Some(r) => format!(
                    "highest rate tried with p99 press → assigned under {} ms: {r:.0} events/s",
                    args.p99_target_ms
                ),
                None => format!(
                    "no rate tried kept p99 press → assigned under {} ms",
                    args.p99_target_ms
                ),
            });
            json!({ "max_sustained_rate_eps": best, "p99_target_ms": args.p99_target_ms })
        }
        Scenario::CameraStorm => {
            let events_in = measured.iter().map(|r| r.sent).sum::<u64>();
            let opened = measured.iter().map(|r| r.stats.opened).sum::<u64>();
            let attached = measured.iter().map(|r| r.stats.attached).sum::<u64>();
            verdict.push(format!(
                "camera storm: {events_in} detections in -> {opened} incidents opened, {attached} attached, {} under the threshold ignored; {} notifications to responders in the whole run",
                reconciliation.ignored_as_expected, observed.notifications
            ));
            json!({ "events_in": events_in, "incidents_opened": opened, "attached": attached,
                "ignored_below_threshold": reconciliation.ignored_as_expected,
                "notifications_whole_run": observed.notifications, "changes": observed.changes })
        }
        _ => {
            for r in &measured {
                if let (Some(t), Some(d)) = (r.throughput_eps, r.drain_s) {
                    verdict.push(format!("{}: {} events, throughput {t:.0} events/s, backlog drained {d:.2} s after the last event", r.name, r.sent));
                }
            }
            json!({ "changes": observed.changes, "notifications": observed.notifications })
        }
    };
    let header = json!({
        "scenario": scenario_name(args.scenario),
        "target": target_name(args.target),
        "started_unix_s": stamp,
        "topic_prefix": kafka.topic_prefix,
        "partitions": kafka.topic_partitions,
        "record_size_bytes": record_size,
        "city": { "grids": city.grids.len(), "households": city.households(), "responders": city.responders.len() },
        "service_env": args.service_env.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
        "routers": args.alongside.routers.max(1),
        "alongside": { "archive": args.alongside.archive_postgres_url.is_some(), "gateway": args.alongside.with_gateway },
        "bin_dir": args.bin_dir,
        "machine": machine(),
        "elapsed_s": elapsed_s,
        "output_records": observed.output_records,
        "kafka_delivery_failures": failed_deliveries,
        "router_metrics": router_figures,
        "webhooks": webhook_figures,
        "app_pages": app_page_figures,
        "acknowledgements_refused": tally.lock().map(|t| t.api_refusals).unwrap_or(0),
    });
    let report = Report {
        title: format!("HelpGrid load: {name} ({})", plan.tag),
        header,
        phases: reports,
        reconciliation,
        extra,
        usage,
        samples,
        seconds: observed.seconds.clone(),
        watch,
        verdict,
    };
    drop(observed);
    std::fs::write(
        out_dir.join("result.json"),
        serde_json::to_string_pretty(&report.to_json())?,
    )?;
    std::fs::write(out_dir.join("summary.md"), report.to_markdown())?;
    std::fs::write(out_dir.join("chart.svg"), report.chart_svg())?;
    Ok((report, out_dir))
}

fn ms(h: &hdrhistogram::Histogram<u64>, q: f64) -> String {
    if h.is_empty() {
        "-".into()
    } else {
        format!("{:.1}", h.value_at_quantile(q) as f64 / 1000.0)
    }
}

/// CPU model, cores and memory, from /proc.
pub fn machine() -> serde_json::Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned());
    let cores = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map(|kib| (kib / 1048576.0 * 10.0).round() / 10.0);
    json!({ "cpu": model, "cores": cores, "memory_gib": mem_gib, "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").ok().map(|s| s.trim().to_owned()) })
}

/// The router's Prometheus text, over plain HTTP/1.0 (no client library needed for one GET).
fn scrape(addr: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut body = String::new();
    stream.read_to_string(&mut body)?;
    Ok(body
        .split_once("\r\n\r\n")
        .map_or(body.clone(), |(_, b)| b.to_owned()))
}

/// Transactions, their mean duration and the mean batch size, from the router's metrics.
fn router_summary(text: &str) -> serde_json::Value {
    let value = |name: &str| -> Option<f64> {
        text.lines()
            .filter(|l| l.starts_with(name) && !l.starts_with('#'))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .reduce(|a, b| a + b)
    };
    let txn_count = value("helpgrid_router_transaction_seconds_count");
    let txn_sum = value("helpgrid_router_transaction_seconds_sum");
    let batch_count = value("helpgrid_router_batch_records_count");
    let batch_sum = value("helpgrid_router_batch_records_sum");
    // Mean ms of a histogram (a label selector such as `{step="commit"}` may follow the name).
    let mean_ms = |name: &str| -> Option<f64> {
        let sum = value(&format!("{name}_sum"))?;
        let count = value(&format!("{name}_count"))?;
        Some(1000.0 * sum / count.max(1.0))
    };
    let step = |s: &str| {
        let line = |suffix: &str| {
            text.lines()
                .find(|l| {
                    l.starts_with(&format!(
                        "helpgrid_router_transaction_step_seconds_{suffix}"
                    )) && l.contains(&format!("step=\"{s}\""))
                })
                .and_then(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        };
        line("sum")
            .zip(line("count"))
            .map(|(sum, count)| 1000.0 * sum / count.max(1.0))
    };
    json!({
        "transactions": txn_count,
        "transaction_mean_ms": txn_sum.zip(txn_count).map(|(s, c)| 1000.0 * s / c.max(1.0)),
        "input_age_mean_ms": mean_ms("helpgrid_router_input_age_seconds"),
        "decide_mean_ms": mean_ms("helpgrid_router_decide_seconds"),
        "commit_wait_mean_ms": mean_ms("helpgrid_router_commit_wait_seconds"),
        "step_mean_ms": {
            "produce": step("produce"),
            "offsets": step("offsets"),
            "deliver": step("deliver"),
            "commit": step("commit"),
        },
        "batch_mean_records": batch_sum.zip(batch_count).map(|(s, c)| s / c.max(1.0)),
        "records_in": value("helpgrid_router_records_in_total"),
    })
}
