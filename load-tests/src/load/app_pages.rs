//! Responder app pages: many phones holding `/app/` open while presses arrive. Each page is
//! what the browser does for the page: a session cookie (a responder token minted with the
//! status service's key, as `POST /app/api/signin` sets it) and `GET /app/events`, the page's
//! server-sent events, over its own HTTP/1.1 connection (an `EventSource` holds one).
//!
//! The figure is assignment → on the page: the time from the router's `assigned` event
//! (`occurred_at`, the router's clock) to the moment the assignee's page receives the first
//! `change` that shows the card as theirs (`mine`), on this machine's clock (the same clock).
//! A reader of `incident-events` (read_committed) notes every assignment to a page holder
//! made after the pages were open: each must reach its page once; those that do not are
//! counted as missing.

use crate::city::City;
use anyhow::Context as _;
use hdrhistogram::Histogram;
use helpgrid_auth::{Role, TokenKey};
use helpgrid_proto::pb::{IncidentEvent, ResponderRole};
use http_body_util::{BodyExt as _, Empty};
use hyper::body::Bytes;
use hyper::header;
use prost::Message as _;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::error::KafkaError;
use rdkafka::message::Message as _;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// The app's session cookie (`services/status/src/app/session.rs`).
const COOKIE: &str = "helpgrid_app";
/// The page's stream, as the page's `EventSource("events")` under `/app/` asks for it.
const EVENTS_PATH: &str = "/app/events";
/// Long enough for any run.
const TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// File descriptors this process needs beyond its pages (Kafka clients, logs, gRPC).
const SPARE_FDS: u64 = 512;

fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

#[derive(Default)]
struct Shared {
    connected: AtomicU64,
    failed: AtomicU64,
    snapshots: AtomicU64,
    /// `change` events received, over every page.
    changes: AtomicU64,
    /// Incident → when its assignee's page first showed it as theirs (µs since the epoch).
    arrivals: Mutex<HashMap<String, u64>>,
    /// Incident → when it was assigned to a page holder (the event's `occurred_at`, µs).
    assigned: Mutex<HashMap<String, u64>>,
}

pub struct AppPages {
    shared: Arc<Shared>,
    tasks: JoinSet<()>,
    reader: Option<std::thread::JoinHandle<()>>,
    stop_reader: Arc<AtomicBool>,
    cancel: CancellationToken,
    pages: usize,
    /// When every page was open: assignments before it are in the pages' snapshots.
    opened_at_us: u64,
}

/// The soft limit on open files of this process (what its children inherit too).
fn open_files_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line.split_whitespace().nth(3)?;
    if soft == "unlimited" {
        Some(u64::MAX)
    } else {
        soft.parse().ok()
    }
}

/// The file-descriptor limit a run with `pages` pages needs: each page is a socket here and
/// another in the status service, which inherits this process's limit.
pub fn check_fd_limit(pages: usize) -> anyhow::Result<u64> {
    let needed = pages as u64 + SPARE_FDS;
    let limit = open_files_limit().context("cannot read the open-files limit")?;
    anyhow::ensure!(
        limit >= needed,
        "{pages} app pages need at least {needed} open files here and in the status service; \
         the limit is {limit}: raise it first (`ulimit -n {}`)",
        needed.next_power_of_two()
    );
    Ok(limit)
}

impl AppPages {
    /// Signs in `pages` grid workers of `city` (tokens from `key`) and opens their pages on
    /// the status service's console listener `addr`; reads `incident_events` for the
    /// assignment times. Returns once every page is open (or failed), at most `open_within`.
    pub async fn start(
        pages: usize,
        addr: SocketAddr,
        key: &TokenKey,
        city: &City,
        reader_config: &ClientConfig,
        incident_events: &str,
        open_within: Duration,
    ) -> anyhow::Result<Self> {
        let workers: Vec<_> = city
            .responders
            .iter()
            .filter(|r| r.role == ResponderRole::GridWorker as i32)
            .take(pages)
            .collect();
        anyhow::ensure!(
            workers.len() == pages,
            "the city has {} grid workers, fewer than the {pages} pages asked for (more --grids or --workers-per-grid)",
            workers.len()
        );
        let holders: HashSet<String> = workers.iter().map(|r| r.responder_id.clone()).collect();
        let shared = Arc::new(Shared::default());
        let stop_reader = Arc::new(AtomicBool::new(false));
        let reader = read_assignments(
            reader_config,
            incident_events,
            holders,
            Arc::clone(&shared),
            Arc::clone(&stop_reader),
        )?;
        let cancel = CancellationToken::new();
        let mut tasks = JoinSet::new();
        for worker in workers {
            let token = key.mint(
                &worker.responder_id,
                Role::Responder,
                &worker.grid_ids,
                TOKEN_LIFETIME,
            )?;
            tasks.spawn(page(addr, token, Arc::clone(&shared), cancel.clone()));
        }
        let started = std::time::Instant::now();
        while shared.connected.load(Ordering::Relaxed) + shared.failed.load(Ordering::Relaxed)
            < pages as u64
            && started.elapsed() < open_within
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Self {
            shared,
            tasks,
            reader: Some(reader),
            stop_reader,
            cancel,
            pages,
            opened_at_us: unix_us(),
        })
    }

    pub fn open(&self) -> u64 {
        self.shared.connected.load(Ordering::Relaxed)
    }

    pub fn failed(&self) -> u64 {
        self.shared.failed.load(Ordering::Relaxed)
    }

    /// Closes the pages and stops the reader; the figures as JSON and one line for people.
    pub async fn finish(mut self, p99_target_ms: f64) -> (serde_json::Value, String) {
        // Assignments of the last presses reach their pages within a moment.
        tokio::time::sleep(Duration::from_secs(2)).await;
        self.cancel.cancel();
        while self.tasks.join_next().await.is_some() {}
        self.stop_reader.store(true, Ordering::Relaxed);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        let mut latency = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)
            .expect("1 µs .. 1 h with 3 significant digits is a valid histogram");
        let (mut expected, mut missing) = (0u64, 0u64);
        let arrivals = self
            .shared
            .arrivals
            .lock()
            .map(|a| a.clone())
            .unwrap_or_default();
        let assigned = self
            .shared
            .assigned
            .lock()
            .map(|a| a.clone())
            .unwrap_or_default();
        for (incident, occurred_us) in &assigned {
            if *occurred_us < self.opened_at_us {
                continue;
            }
            expected += 1;
            match arrivals.get(incident) {
                Some(arrived_us) => {
                    let _ = latency.record(arrived_us.saturating_sub(*occurred_us).max(1));
                }
                None => missing += 1,
            }
        }
        let q =
            |q: f64| (!latency.is_empty()).then(|| latency.value_at_quantile(q) as f64 / 1000.0);
        let max = (!latency.is_empty()).then(|| latency.max() as f64 / 1000.0);
        let p99 = q(0.99);
        let met = p99.is_some_and(|p| p <= p99_target_ms) && missing == 0;
        let ms = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1}"));
        let line = if self.pages == 0 {
            "app pages: none open (the baseline run)".to_owned()
        } else {
            format!(
                "app pages: {} of {} open ({} failed), {} snapshots, {} changes received; {} assignments to a page holder, {} on the page, {} missing; assignment → on the page p50 {} p99 {} max {} ms (target p99 ≤ {} ms: {})",
                self.open(),
                self.pages,
                self.failed(),
                self.shared.snapshots.load(Ordering::Relaxed),
                self.shared.changes.load(Ordering::Relaxed),
                expected,
                expected - missing,
                missing,
                ms(q(0.5)),
                ms(p99),
                ms(max),
                p99_target_ms,
                if met { "met" } else { "NOT met" }
            )
        };
        let figures = json!({
            "pages": self.pages,
            "open": self.open(),
            "failed": self.failed(),
            "snapshots": self.shared.snapshots.load(Ordering::Relaxed),
            "changes": self.shared.changes.load(Ordering::Relaxed),
            "assignments_to_page_holders": expected,
            "missing": missing,
            "assignment_to_page_p50_ms": q(0.5),
            "assignment_to_page_p99_ms": p99,
            "assignment_to_page_p999_ms": q(0.999),
            "assignment_to_page_max_ms": max,
            "p99_target_ms": p99_target_ms,
            "open_files_limit": open_files_limit(),
        });
        (figures, line)
    }
}

/// One phone: the page's event stream, read until cancelled.
async fn page(addr: SocketAddr, token: String, shared: Arc<Shared>, cancel: CancellationToken) {
    let result = async {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        let connection = tokio::spawn(connection);
        let request = hyper::Request::get(EVENTS_PATH)
            .header(header::HOST, addr.to_string())
            .header(header::COOKIE, format!("{COOKIE}={token}"))
            .header(header::ACCEPT, "text/event-stream")
            .body(Empty::<Bytes>::new())?;
        let response = sender.send_request(request).await?;
        anyhow::ensure!(
            response.status() == hyper::StatusCode::OK,
            "GET {EVENTS_PATH} answered {}",
            response.status()
        );
        shared.connected.fetch_add(1, Ordering::Relaxed);
        let mut body = response.into_body();
        let mut buffer = String::new();
        let outcome = loop {
            let frame = tokio::select! {
                () = cancel.cancelled() => break Ok(()),
                frame = body.frame() => frame,
            };
            let arrived_us = unix_us();
            match frame {
                None => break Err(anyhow::anyhow!("the stream ended")),
                Some(Err(error)) => break Err(error.into()),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        buffer.push_str(&String::from_utf8_lossy(&data));
                        while let Some(end) = buffer.find("\n\n") {
                            handle(&buffer[..end], arrived_us, &shared);
                            buffer.drain(..end + 2);
                        }
                    }
                }
            }
        };
        connection.abort();
        outcome
    };
    if let Err(error) = result.await
        && !cancel.is_cancelled()
    {
        shared.failed.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(%error, "app page failed");
    }
}

/// One server-sent event: `event:` and `data:` lines.
fn handle(block: &str, arrived_us: u64, shared: &Shared) {
    let mut name = "message";
    let mut data = String::new();
    for line in block.lines() {
        if let Some(v) = line.strip_prefix("event:") {
            name = v.trim();
        } else if let Some(v) = line.strip_prefix("data:") {
            data.push_str(v.strip_prefix(' ').unwrap_or(v));
        }
    }
    match name {
        "snapshot" => {
            shared.snapshots.fetch_add(1, Ordering::Relaxed);
        }
        "change" => {
            shared.changes.fetch_add(1, Ordering::Relaxed);
            let Ok(view) = serde_json::from_str::<serde_json::Value>(&data) else {
                return;
            };
            if view["mine"].as_bool() == Some(true)
                && let Some(id) = view["id"].as_str()
                && let Ok(mut arrivals) = shared.arrivals.lock()
            {
                arrivals.entry(id.to_owned()).or_insert(arrived_us);
            }
        }
        _ => {}
    }
}

/// Notes every assignment to a page holder, from the start of `topic`.
fn read_assignments(
    config: &ClientConfig,
    topic: &str,
    holders: HashSet<String>,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<()>, KafkaError> {
    let consumer: BaseConsumer = config.create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(30))?;
    let mut assignment = TopicPartitionList::new();
    for t in metadata.topics() {
        for p in t.partitions() {
            assignment.add_partition_offset(topic, p.id(), Offset::Beginning)?;
        }
    }
    consumer.assign(&assignment)?;
    Ok(std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(message)) => {
                    let Ok(event) = IncidentEvent::decode(message.payload().unwrap_or_default())
                    else {
                        continue;
                    };
                    // An `assigned`, or the assignments an "opened and assigned" carries.
                    if !event
                        .assignments()
                        .iter()
                        .any(|a| holders.contains(&a.responder_id))
                    {
                        continue;
                    }
                    let Some(at) = event.envelope.as_ref().and_then(|e| e.occurred_at) else {
                        continue;
                    };
                    let occurred_us = u64::try_from(at.seconds).unwrap_or(0) * 1_000_000
                        + u64::try_from(at.nanos).unwrap_or(0) / 1000;
                    let incident = event
                        .incident
                        .as_ref()
                        .map(|i| i.incident_id.clone())
                        .unwrap_or_default();
                    if let Ok(mut all) = shared.assigned.lock() {
                        all.entry(incident).or_insert(occurred_us);
                    }
                }
                Some(Err(KafkaError::PartitionEOF(_))) | None => {}
                Some(Err(error)) => tracing::warn!(%error, "reading incident events"),
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_shown_as_mine_is_an_arrival_once_and_other_events_are_only_counted() {
        let shared = Shared::default();
        handle(
            "event: snapshot\nid: c1\ndata: {\"incidents\":[]}",
            5,
            &shared,
        );
        handle(
            "event: change\nid: c2\ndata: {\"id\":\"inc-1\",\"mine\":false}",
            10,
            &shared,
        );
        handle(
            "event: change\nid: c3\ndata: {\"id\":\"inc-1\",\"mine\":true}",
            20,
            &shared,
        );
        handle(
            "event: change\nid: c4\ndata: {\"id\":\"inc-1\",\"mine\":true}",
            30,
            &shared,
        );
        handle(": keep-alive", 40, &shared);
        assert_eq!(shared.snapshots.load(Ordering::Relaxed), 1);
        assert_eq!(shared.changes.load(Ordering::Relaxed), 3);
        let arrivals = shared.arrivals.lock().expect("lock");
        assert_eq!(arrivals.get("inc-1"), Some(&20));
        assert_eq!(arrivals.len(), 1);
    }
}
