//! Assignment → webhook received: helpgrid-notify runs beside the router, subscribed to
//! every assignment, and POSTs to a receiver in this process that notes when each arrives.
//! The latency is the arrival (this machine's clock) minus the assignment event's
//! `occurred_at` (the router's clock, on the same machine): Kafka transaction, notify's
//! read_committed consumer and the HTTP request together.

use crate::load::services::{Service, free_port};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use hdrhistogram::Histogram;
use helpgrid_common::time::{from_timestamp, now_millis};
use helpgrid_proto::pb::notify_service_client::NotifyServiceClient;
use helpgrid_proto::pb::{NotifyTrigger, PutSubscriptionRequest, Subscription, WebhookTemplate};
use serde_json::json;
use std::collections::HashSet;
use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

#[derive(Default)]
struct Tallies {
    /// Per phase: assignment → received, microseconds.
    latency: Vec<Histogram<u64>>,
    keys: HashSet<String>,
    repeats: u64,
    unreadable: u64,
}

struct Receiver {
    phase: AtomicUsize,
    /// Notifications (a batched request counts each it holds).
    received: AtomicU64,
    requests: AtomicU64,
    tallies: Mutex<Tallies>,
}

/// A notification body, or a batch of them: only what the tally needs, borrowed from the
/// request (the receiver shares the two cores with what it measures, so it builds no JSON
/// tree and copies no field it does not keep).
#[derive(serde::Deserialize)]
struct Body<'a> {
    #[serde(borrow, default)]
    occurred_at: Option<&'a str>,
    #[serde(borrow, default)]
    idempotency_key: Option<&'a str>,
    #[serde(borrow, default)]
    notifications: Vec<Body<'a>>,
}

pub struct Webhooks {
    receiver: Arc<Receiver>,
    stop: CancellationToken,
    metrics_addr: String,
}

async fn receive(State(r): State<Arc<Receiver>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let arrived_us = now_millis() * 1000;
    r.requests.fetch_add(1, Ordering::Relaxed);
    let parsed = serde_json::from_slice::<Body<'_>>(&body).ok();
    let single = [];
    let notifications: &[Body<'_>] = match &parsed {
        Some(b) if !b.notifications.is_empty() => &b.notifications,
        Some(b) => std::slice::from_ref(b),
        None => &single,
    };
    let header_key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    r.received
        .fetch_add(notifications.len().max(1) as u64, Ordering::Relaxed);
    let phase = r.phase.load(Ordering::Relaxed);
    let Ok(mut t) = r.tallies.lock() else {
        return StatusCode::OK;
    };
    if notifications.is_empty() {
        t.unreadable += 1;
    }
    for n in notifications {
        let occurred = n
            .occurred_at
            .and_then(|s| prost_types::Timestamp::from_str(s).ok());
        match occurred {
            Some(ts) => {
                let occurred_us = from_timestamp(Some(&ts)).unwrap_or(0) * 1000
                    + i64::from(ts.nanos % 1_000_000) / 1000;
                if let Some(h) = t.latency.get_mut(phase) {
                    let _ = h.record((arrived_us - occurred_us).max(0) as u64);
                }
            }
            None => t.unreadable += 1,
        }
        let key = n.idempotency_key.unwrap_or(header_key);
        if t.keys.contains(key) {
            t.repeats += 1;
        } else {
            t.keys.insert(key.to_owned());
        }
    }
    StatusCode::OK
}

impl Webhooks {
    /// Starts the receiver and helpgrid-notify (from `bin_dir`), and subscribes the receiver
    /// to every assignment.
    pub async fn start(
        bin_dir: &Path,
        env: &[(&str, String)],
        out_dir: &Path,
        phases: usize,
        batch_max: u32,
    ) -> anyhow::Result<(Self, Service)> {
        let receiver = Arc::new(Receiver {
            phase: AtomicUsize::new(0),
            received: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            tallies: Mutex::new(Tallies {
                latency: (0..phases)
                    .map(|_| Histogram::new_with_bounds(1, 600_000_000, 3))
                    .collect::<Result<_, _>>()?,
                ..Tallies::default()
            }),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/hook", listener.local_addr()?);
        let stop = CancellationToken::new();
        let app = axum::Router::new()
            .fallback(axum::routing::post(receive))
            .with_state(Arc::clone(&receiver));
        let serving = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { serving.cancelled().await })
                .await;
        });

        let grpc = format!("127.0.0.1:{}", free_port()?);
        let metrics_addr = format!("127.0.0.1:{}", free_port()?);
        let mut notify_env = env.to_vec();
        notify_env.extend([
            ("HELPGRID_NOTIFY_GRPC_LISTEN", grpc.clone()),
            ("HELPGRID_NOTIFY_METRICS_LISTEN", metrics_addr.clone()),
            // Nothing here measures authentication.
            ("HELPGRID_INSECURE_NO_AUTH", "true".into()),
        ]);
        let service = Service::spawn(
            bin_dir,
            "helpgrid-notify",
            "helpgrid-notify",
            &[],
            &notify_env,
            out_dir,
        )?;
        let subscription = Subscription {
            subscription_id: "load-receiver".into(),
            url,
            triggers: vec![NotifyTrigger::Assigned as i32],
            template: WebhookTemplate::Generic as i32,
            secret: "load-test-secret-0123456789".into(),
            batch_max,
            ..Subscription::default()
        };
        let started = Instant::now();
        loop {
            let attempt = async {
                let mut client = NotifyServiceClient::connect(format!("http://{grpc}")).await?;
                client
                    .put_subscription(PutSubscriptionRequest {
                        subscription: Some(subscription.clone()),
                    })
                    .await?;
                anyhow::Ok(())
            };
            match attempt.await {
                Ok(()) => break,
                Err(error) if started.elapsed() > Duration::from_secs(60) => {
                    anyhow::bail!("cannot subscribe the webhook receiver: {error}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        Ok((
            Self {
                receiver,
                stop,
                metrics_addr,
            },
            service,
        ))
    }

    /// Arrivals from now on count for phase `i`.
    pub fn set_phase(&self, i: usize) {
        self.receiver.phase.store(i, Ordering::Relaxed);
    }

    /// Count and percentiles of phase `i`, for the progress line.
    pub fn phase_line(&self, i: usize, name: &str) -> String {
        let Ok(t) = self.receiver.tallies.lock() else {
            return String::new();
        };
        match t.latency.get(i) {
            Some(h) if !h.is_empty() => format!(
                "{name}: {} webhooks received; assignment → webhook p50 {:.1} p99 {:.1} max {:.1} ms",
                h.len(),
                h.value_at_quantile(0.5) as f64 / 1000.0,
                h.value_at_quantile(0.99) as f64 / 1000.0,
                h.max() as f64 / 1000.0
            ),
            _ => format!("{name}: no webhooks received"),
        }
    }

    pub fn metrics_addr(&self) -> &str {
        &self.metrics_addr
    }

    /// Everything, for result.json; stops the receiver.
    pub fn finish(self, phase_names: &[String]) -> serde_json::Value {
        self.stop.cancel();
        let Ok(t) = self.receiver.tallies.lock() else {
            return serde_json::Value::Null;
        };
        let phases: Vec<serde_json::Value> = t
            .latency
            .iter()
            .zip(phase_names)
            .map(|(h, name)| {
                let q = |q: f64| (!h.is_empty()).then(|| h.value_at_quantile(q) as f64 / 1000.0);
                json!({ "phase": name, "received": h.len(), "p50_ms": q(0.5), "p99_ms": q(0.99),
                    "p999_ms": q(0.999), "max_ms": (!h.is_empty()).then(|| h.max() as f64 / 1000.0) })
            })
            .collect();
        json!({
            "received": self.receiver.received.load(Ordering::Relaxed),
            "requests": self.receiver.requests.load(Ordering::Relaxed),
            "distinct_keys": t.keys.len(),
            "repeats": t.repeats,
            "unreadable": t.unreadable,
            "assignment_to_webhook": phases,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Body;

    fn read(body: &str) -> Vec<(Option<&str>, Option<&str>)> {
        let parsed: Body<'_> = serde_json::from_str(body).expect("a body");
        let items = if parsed.notifications.is_empty() {
            vec![parsed]
        } else {
            parsed.notifications
        };
        items
            .into_iter()
            .map(|n| (n.occurred_at, n.idempotency_key))
            .collect()
    }

    #[test]
    fn the_receiver_reads_a_single_notification_and_each_of_a_batch() {
        let one = r#"{"schema":"helpgrid.notify.v1","kind":"assigned","idempotency_key":"k1",
            "occurred_at":"2026-11-30T07:00:00.120Z","incident":{"incident_id":"i","event_count":1}}"#;
        assert_eq!(read(one), [(Some("2026-11-30T07:00:00.120Z"), Some("k1"))]);
        let batch = format!(
            r#"{{"schema":"helpgrid.notify.batch.v1","count":2,"notifications":[{one},{}]}}"#,
            one.replace("k1", "k2").replace(".120Z", ".250Z")
        );
        assert_eq!(
            read(&batch),
            [
                (Some("2026-11-30T07:00:00.120Z"), Some("k1")),
                (Some("2026-11-30T07:00:00.250Z"), Some("k2"))
            ]
        );
    }
}
