//! `helpgrid-load gateway`: what the device gateway adds between a Zigbee2MQTT hub and
//! Kafka, measured side by side with the two hops it is made of, in one run:
//!
//! - **MQTT**: the broker's own publish → subscribe (a rumqttc publisher and subscriber,
//!   QoS 1, payloads of the same shape);
//! - **Kafka**: a help event produced straight to `help-events` (the gateway's producer
//!   settings: idempotent, acks=all) → consumed;
//! - **gateway**: a Zigbee2MQTT button message published to the broker → the gateway's help
//!   event consumed from `help-events` (the gateway acknowledges the MQTT message only after
//!   Kafka has the record).
//!
//! Each path first at the steady `--rates` (default 1,000/s) for `--step-s` seconds (latency),
//! then as fast as it goes for `--events` messages (throughput). What the gateway itself adds
//! is its path's latency beyond the two hops'.

use crate::load::procstat;
use crate::load::scenario::LoadArgs;
use crate::load::services::{Service, free_port};
use anyhow::Context as _;
use hdrhistogram::Histogram;
use helpgrid_common::envelope::new_envelope;
use helpgrid_common::kafka::KafkaArgs;
use helpgrid_common::time::now_millis;
use helpgrid_common::topics::{Topics, ensure_topics};
use helpgrid_gateway::domain::intake::z2m_event_id;
use helpgrid_proto::pb::{ButtonPress, Device, DeviceKind, HelpEvent, PressKind, help_event};
use prost::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The three ways a press can travel, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Mqtt,
    Kafka,
    Gateway,
}

impl Route {
    const ALL: [Route; 3] = [Route::Mqtt, Route::Kafka, Route::Gateway];

    fn name(self) -> &'static str {
        match self {
            Route::Mqtt => "MQTT publish → subscribe",
            Route::Kafka => "Kafka produce → consume",
            Route::Gateway => "Z2M message → gateway → Kafka consume",
        }
    }
}

/// The figures of one phase (one route at one rate, or as fast as it goes).
#[derive(Debug, Clone)]
struct PhaseFigures {
    route: Route,
    rate: Option<f64>,
    sent: u64,
    received: u64,
    /// Messages per second from the first send to the last receipt.
    throughput: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    /// CPU of the gateway process during the phase, in cores.
    gateway_cores: f64,
}

/// Messages in flight: their key (as the receiving side sees it) → phase and send time.
#[derive(Default)]
struct InFlight {
    pending: HashMap<String, u64>,
    latencies_us: Vec<u64>,
    first_sent_us: u64,
    last_received_us: u64,
    received: u64,
}

struct Clock {
    origin: Instant,
    flight: Mutex<InFlight>,
}

impl Clock {
    fn now_us(&self) -> u64 {
        (self.origin.elapsed().as_micros() as u64).max(1)
    }

    fn expect(&self, key: String) {
        let now = self.now_us();
        let mut f = self.flight.lock().unwrap_or_else(|p| p.into_inner());
        if f.first_sent_us == 0 {
            f.first_sent_us = now;
        }
        f.pending.insert(key, now);
    }

    fn arrived(&self, key: &str) {
        let now = self.now_us();
        let mut f = self.flight.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(sent) = f.pending.remove(key) {
            f.latencies_us.push(now.saturating_sub(sent));
            f.last_received_us = now;
            f.received += 1;
        }
    }

    fn received(&self) -> u64 {
        self.flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .received
    }

    fn take(&self) -> InFlight {
        std::mem::take(&mut *self.flight.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// What the run needs from the command line, checked once.
struct Setup {
    kafka: KafkaArgs,
    topics: Topics,
    tag: String,
    mqtt_url: String,
    username: Option<String>,
    password: Option<String>,
    buttons: usize,
    grids: usize,
    rate: f64,
    step_s: f64,
    burst: u64,
    drain: Duration,
    out_dir: PathBuf,
}

fn setup(args: &LoadArgs) -> anyhow::Result<Setup> {
    let mqtt_url = args.mqtt.mqtt_url.clone().context(
        "the gateway scenario needs an MQTT broker: --mqtt-url mqtt://host:port \
         (scripts/bench-gateway starts Mosquitto and passes it)",
    )?;
    let tag = format!("gw{}", now_millis());
    let mut kafka = args.kafka.clone();
    kafka.topic_prefix = format!("{}{tag}.", args.kafka.topic_prefix);
    let topics = Topics::with_prefix(&kafka.topic_prefix);
    let grids = args.grids.unwrap_or(300).max(1);
    let out_dir = args
        .out_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!(".helpgrid/load/gateway-{tag}")));
    std::fs::create_dir_all(&out_dir)
        .with_context(|| format!("cannot create {}", out_dir.display()))?;
    Ok(Setup {
        kafka,
        topics,
        mqtt_url,
        username: args.mqtt.mqtt_username.clone(),
        password: args.mqtt.mqtt_password.clone(),
        buttons: grids * args.households_per_grid.unwrap_or(60).max(1),
        grids,
        rate: args
            .rates
            .as_ref()
            .and_then(|r| r.first().copied())
            .unwrap_or(1_000.0),
        step_s: args.step_s.unwrap_or(20.0),
        burst: args.events,
        drain: Duration::from_secs_f64(args.drain_timeout_s),
        tag,
        out_dir,
    })
}

/// Runs the scenario; prints progress and the figures, returns the results folder.
pub async fn run(args: &LoadArgs, print: impl Fn(&str)) -> anyhow::Result<PathBuf> {
    let s = setup(args)?;
    ensure_topics(&s.kafka, &s.topics).await?;
    register_buttons(&s).await?;
    print(&format!(
        "gateway: {} buttons registered in {} grids, topics {}*",
        s.buttons, s.grids, s.kafka.topic_prefix
    ));
    let gateway = start_gateway(args, &s).await?;

    let clock = Arc::new(Clock {
        origin: Instant::now(),
        flight: Mutex::new(InFlight::default()),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let reader = spawn_kafka_reader(&s, clock.clone(), stop.clone())?;
    let (subscriber, mut subscriber_ready) = mqtt_subscriber(&s, clock.clone());
    subscriber_ready
        .changed()
        .await
        .context("the MQTT subscriber never connected")?;
    let (publisher, mut publisher_loop) = mqtt_client(&s, "pub", 1_000);
    let publisher_task = tokio::spawn(async move {
        loop {
            if let Err(error) = publisher_loop.poll().await {
                tracing::warn!(%error, "bench publisher lost its connection; reconnecting");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    });
    let producer: FutureProducer = s
        .kafka
        .producer_config(&format!("{}-bench", s.tag))
        .create()?;

    let mut senders = Senders {
        s: &s,
        publisher,
        producer,
        clock: clock.clone(),
        last_seen: now_millis(),
    };
    let mut figures = Vec::new();
    for rate in [Some(s.rate), None] {
        for route in Route::ALL {
            let count = match rate {
                Some(r) => (r * s.step_s).round() as u64,
                None => s.burst,
            };
            let cpu_before = procstat::read(gateway.pid()).map_or(0.0, |c| c.0);
            let started = Instant::now();
            senders.send_all(route, rate, count).await;
            let deadline = Instant::now() + s.drain;
            while clock.received() < count && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let wall = started.elapsed().as_secs_f64();
            let cpu_after = procstat::read(gateway.pid()).map_or(0.0, |c| c.0);
            let phase = summarise(
                route,
                rate,
                count,
                clock.take(),
                (cpu_after - cpu_before) / wall,
            );
            print(&format!(
                "  {:<40} {:>9} sent {:>7} received {:>7}  p99 {:>7.2} ms  {:>9.0} msg/s",
                route.name(),
                rate.map_or("max".into(), |r| format!("{r:.0}/s")),
                phase.sent,
                phase.received,
                phase.p99_ms,
                phase.throughput
            ));
            figures.push(phase);
        }
    }
    stop.store(true, Ordering::Relaxed);
    subscriber.abort();
    publisher_task.abort();
    let _ = reader.join();
    gateway.stop(Duration::from_secs(10));

    let summary = to_markdown(&s, &figures);
    print("");
    print(&summary);
    std::fs::write(s.out_dir.join("summary.md"), &summary)?;
    let lost: u64 = figures
        .iter()
        .map(|f| f.sent - f.received.min(f.sent))
        .sum();
    if lost > 0 {
        anyhow::bail!("{lost} messages never arrived: see the table above");
    }
    Ok(s.out_dir)
}

/// Every button of the run in the registry (device id = Zigbee2MQTT friendly name).
async fn register_buttons(s: &Setup) -> anyhow::Result<()> {
    let devices: Vec<Device> = (0..s.buttons)
        .map(|i| Device {
            device_id: button(i),
            kind: DeviceKind::ZigbeeButton as i32,
            household_id: format!("h-{i}"),
            grid_id: format!("g-{}", i % s.grids),
            enabled: true,
            model: "WXKG11LM".into(),
            ..Device::default()
        })
        .collect();
    let topic = helpgrid_gateway::devices_topic(&s.kafka.topic_prefix);
    helpgrid_gateway::kafka::ensure_devices_topic(&s.kafka, &topic).await?;
    helpgrid_gateway::kafka::write_devices(&s.kafka, &topic, &devices).await?;
    Ok(())
}

fn button(i: usize) -> String {
    format!("btn-{i}")
}

async fn start_gateway(args: &LoadArgs, s: &Setup) -> anyhow::Result<Service> {
    let metrics = format!("127.0.0.1:{}", free_port()?);
    let mut flags = vec![
        format!("--kafka-brokers={}", s.kafka.brokers),
        format!("--topic-prefix={}", s.kafka.topic_prefix),
        format!("--topic-partitions={}", s.kafka.topic_partitions),
        format!("--mqtt-url={}", s.mqtt_url),
        format!("--mqtt-client-id={}gateway", s.kafka.topic_prefix),
        format!("--z2m-base-topic={}/z2m", s.tag),
        format!("--frigate-prefix={}/frigate", s.tag),
        format!("--metrics-listen={metrics}"),
        // Buttons that stay silent are not what this run measures.
        "--silence-zigbee-button-s=0".into(),
    ];
    flags.extend(
        s.kafka
            .options
            .iter()
            .map(|(k, v)| format!("--kafka-option={k}={v}")),
    );
    let mut env = Vec::new();
    if let Some(user) = &s.username {
        env.push(("HELPGRID_GATEWAY_MQTT_USERNAME", user.clone()));
    }
    if let Some(password) = &s.password {
        env.push(("HELPGRID_GATEWAY_MQTT_PASSWORD", password.clone()));
    }
    let mut gateway = Service::spawn(
        &args.bin_dir,
        "helpgrid-gateway",
        "helpgrid-gateway",
        &flags,
        &env,
        &s.out_dir,
    )?;
    // Ready = registry loaded and MQTT subscribed.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !http_ok(&metrics, "/readyz").await {
        gateway.check_running()?;
        anyhow::ensure!(
            Instant::now() < deadline,
            "the gateway was not ready within 60 s; see {}",
            s.out_dir.join("helpgrid-gateway.log").display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(gateway)
}

/// GET `path` on `addr`: true on a 200 answer.
async fn http_ok(addr: &str, path: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
        return false;
    };
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).await.is_ok() && head.ends_with(b" 200")
}

fn mqtt_client(s: &Setup, role: &str, inflight: u16) -> (AsyncClient, rumqttc::EventLoop) {
    let (host, port) = helpgrid_gateway::config::parse_mqtt_url(&s.mqtt_url)
        .unwrap_or_else(|| ("127.0.0.1".into(), 1883));
    let mut options = MqttOptions::new(format!("{}-{role}", s.tag), host, port);
    options
        .set_keep_alive(Duration::from_secs(15))
        .set_inflight(inflight)
        .set_max_packet_size(64 * 1024, 64 * 1024);
    if let Some(user) = &s.username {
        options.set_credentials(user.clone(), s.password.clone().unwrap_or_default());
    }
    let (client, eventloop) = AsyncClient::new(options, 10_000);
    (client, eventloop)
}

/// Subscribes to the MQTT baseline's topics and records each arrival; the watch turns true
/// once the subscription is acknowledged.
fn mqtt_subscriber(
    s: &Setup,
    clock: Arc<Clock>,
) -> (
    tokio::task::JoinHandle<()>,
    tokio::sync::watch::Receiver<bool>,
) {
    let (client, mut eventloop) = mqtt_client(s, "sub", 1_000);
    let (ready_tx, ready_rx) = tokio::sync::watch::channel(false);
    let filter = format!("{}/echo/+", s.tag);
    let task = tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    let _ = client.try_subscribe(filter.clone(), QoS::AtLeastOnce);
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    let _ = ready_tx.send(true);
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if let Some(seq) = seq_of(&p.payload) {
                        clock.arrived(&format!("mqtt-{seq}"));
                    }
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(%error, "bench subscriber lost its connection; reconnecting");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    });
    (task, ready_rx)
}

/// The `"seq":N` field of an MQTT baseline payload.
fn seq_of(payload: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(payload).ok()?;
    let rest = &text[text.find("\"seq\":")? + 6..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Reads `help-events` from the start of every partition and records each help event.
fn spawn_kafka_reader(
    s: &Setup,
    clock: Arc<Clock>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let consumer: BaseConsumer = s
        .kafka
        .reader_config(&format!("{}-reader", s.tag))
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", "5")
        .create()?;
    let mut assignment = TopicPartitionList::new();
    for p in 0..s.kafka.topic_partitions {
        assignment.add_partition_offset(&s.topics.help_events, p, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    Ok(std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match consumer.poll(Duration::from_millis(50)) {
                Some(Ok(message)) => {
                    let event = message
                        .payload()
                        .and_then(|p| HelpEvent::decode(p).ok())
                        .and_then(|e| e.envelope);
                    if let Some(envelope) = event {
                        clock.arrived(&envelope.event_id);
                    }
                }
                Some(Err(error)) => tracing::warn!(%error, "bench reader"),
                None => {}
            }
        }
    }))
}

struct Senders<'a> {
    s: &'a Setup,
    publisher: AsyncClient,
    producer: FutureProducer,
    clock: Arc<Clock>,
    /// The `last_seen` of the previous button message: one per message, so every message is
    /// a new press (and a new event id) for the gateway.
    last_seen: i64,
}

impl Senders<'_> {
    /// `count` messages on `route`, open loop at `rate` (each at its scheduled time whether
    /// or not earlier ones arrived), or as fast as the client takes them.
    async fn send_all(&mut self, route: Route, rate: Option<f64>, count: u64) {
        let start = tokio::time::Instant::now();
        let mut kafka_sends = tokio::task::JoinSet::new();
        for k in 0..count {
            if let Some(rate) = rate {
                let due = start + Duration::from_secs_f64(k as f64 / rate);
                if due > tokio::time::Instant::now() {
                    tokio::time::sleep_until(due).await;
                }
            }
            let device = button((k as usize) % self.s.buttons);
            self.last_seen = (now_millis()).max(self.last_seen + 1);
            let body = format!(
                r#"{{"action":"single","battery":87,"linkquality":96,"voltage":3005,"last_seen":{}"#,
                self.last_seen
            );
            match route {
                Route::Mqtt => {
                    self.clock.expect(format!("mqtt-{k}"));
                    let payload = format!(r#"{body},"seq":{k}}}"#);
                    let topic = format!("{}/echo/{device}", self.s.tag);
                    self.publish(topic, payload).await;
                }
                Route::Gateway => {
                    let seen = self.last_seen.to_string();
                    self.clock
                        .expect(z2m_event_id(&device, "single", Some(&seen), 0, 1));
                    let topic = format!("{}/z2m/{device}", self.s.tag);
                    self.publish(topic, format!("{body}}}")).await;
                }
                Route::Kafka => {
                    let (id, grid, record) = self.help_event(k, &device);
                    self.clock.expect(id);
                    let producer = self.producer.clone();
                    let topic = self.s.topics.help_events.clone();
                    kafka_sends.spawn(async move {
                        let record = FutureRecord::to(&topic).key(&grid).payload(&record);
                        if let Err((error, _)) =
                            producer.send(record, Duration::from_secs(30)).await
                        {
                            tracing::warn!(%error, "bench record not written");
                        }
                    });
                    // Keep the in-flight set bounded in a burst.
                    while kafka_sends.len() > 10_000 {
                        kafka_sends.join_next().await;
                    }
                }
            }
        }
        while kafka_sends.join_next().await.is_some() {}
    }

    async fn publish(&self, topic: String, payload: String) {
        if let Err(error) = self
            .publisher
            .publish(topic, QoS::AtLeastOnce, false, payload.into_bytes())
            .await
        {
            tracing::warn!(%error, "bench message not published");
        }
    }

    /// The help event the gateway would write for button `device`'s press `k`.
    fn help_event(&self, k: u64, device: &str) -> (String, String, Vec<u8>) {
        let i = (k as usize) % self.s.buttons;
        let grid = format!("g-{}", i % self.s.grids);
        let mut envelope = new_envelope("bench:kafka", now_millis());
        envelope.event_id = format!("{}-kafka-{k}", self.s.tag);
        let event = HelpEvent {
            envelope: Some(envelope),
            body: Some(help_event::Body::ButtonPress(ButtonPress {
                device_id: device.to_owned(),
                household_id: format!("h-{i}"),
                grid_id: grid.clone(),
                kind: PressKind::Help as i32,
                location: None,
                battery_percent: 87,
            })),
        };
        (
            event
                .envelope
                .as_ref()
                .map(|e| e.event_id.clone())
                .unwrap_or_default(),
            grid,
            event.encode_to_vec(),
        )
    }
}

fn summarise(
    route: Route,
    rate: Option<f64>,
    sent: u64,
    flight: InFlight,
    cores: f64,
) -> PhaseFigures {
    let mut histogram =
        Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds");
    for us in &flight.latencies_us {
        let _ = histogram.record((*us).max(1));
    }
    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    let span_s = flight.last_received_us.saturating_sub(flight.first_sent_us) as f64 / 1e6;
    PhaseFigures {
        route,
        rate,
        sent,
        received: flight.received,
        throughput: if span_s > 0.0 {
            flight.received as f64 / span_s
        } else {
            0.0
        },
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
        max_ms: histogram.max() as f64 / 1000.0,
        gateway_cores: cores,
    }
}

fn to_markdown(s: &Setup, figures: &[PhaseFigures]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## Gateway benchmark ({} buttons, {} partitions)\n",
        s.buttons, s.kafka.topic_partitions
    );
    let _ = writeln!(
        out,
        "| path | rate | sent | received | p50 ms | p99 ms | max ms | msg/s | gateway CPU (cores) |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
    for f in figures {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.0} | {:.2} |",
            f.route.name(),
            f.rate.map_or("max".into(), |r| format!("{r:.0}/s")),
            f.sent,
            f.received,
            f.p50_ms,
            f.p99_ms,
            f.max_ms,
            f.throughput,
            f.gateway_cores
        );
    }
    let find = |route: Route, steady: bool| {
        figures
            .iter()
            .find(|f| f.route == route && f.rate.is_some() == steady)
    };
    if let (Some(m), Some(k), Some(g)) = (
        find(Route::Mqtt, true),
        find(Route::Kafka, true),
        find(Route::Gateway, true),
    ) {
        let _ = writeln!(
            out,
            "\nAt {:.0}/s, p50 / p99: the gateway path {:.2} / {:.2} ms; Kafka alone {:.2} / \
             {:.2} ms; MQTT alone {:.2} / {:.2} ms. Beyond the Kafka hop, the MQTT hop and the \
             gateway together add {:.2} ms at p50 and {:.2} ms at p99 (tails do not add up: \
             read the p99 beside the MQTT hop's own).",
            s.rate,
            g.p50_ms,
            g.p99_ms,
            k.p50_ms,
            k.p99_ms,
            m.p50_ms,
            m.p99_ms,
            g.p50_ms - k.p50_ms,
            g.p99_ms - k.p99_ms
        );
    }
    if let (Some(m), Some(g)) = (find(Route::Mqtt, false), find(Route::Gateway, false)) {
        let _ = writeln!(
            out,
            "As fast as it goes: the gateway turned {:.0} MQTT messages/s into help events, \
             {:.2}× the broker's own publish → subscribe rate ({:.0}/s).",
            g.throughput,
            if m.throughput > 0.0 {
                g.throughput / m.throughput
            } else {
                0.0
            },
            m.throughput
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_sequence_number_of_a_baseline_payload() {
        assert_eq!(
            seq_of(br#"{"action":"single","last_seen":17,"seq":42}"#),
            Some(42)
        );
        assert_eq!(seq_of(br#"{"action":"single"}"#), None);
    }
}
