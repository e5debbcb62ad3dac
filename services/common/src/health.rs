//! Liveness and readiness over HTTP, beside the Prometheus metrics, on one port
//! (`--metrics-listen`):
//!
//! - `GET /metrics`: Prometheus text.
//! - `GET /livez`: 200 while the process runs (a stuck process stops answering).
//! - `GET /readyz`: 200 only while the service says it is ready (for the router: pipeline
//!   running, its partitions restored, input caught up); 503 with the reason otherwise
//!   (starting, restoring, failed or fenced).
//!
//! A service holds a [`Health`] and sets it as it goes; the server only reads it.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

/// Where a service is in its life, as `/readyz` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Readiness {
    /// Connecting, creating topics, loading tables.
    Starting = 0,
    /// Rebuilding state for newly assigned partitions.
    Restoring = 1,
    /// Running and caught up with its input.
    Ready = 2,
    /// The pipeline failed (a Kafka error, or fenced by another instance); it is restarting
    /// or the process is about to exit.
    Failed = 3,
}

impl Readiness {
    pub fn as_str(self) -> &'static str {
        match self {
            Readiness::Starting => "starting",
            Readiness::Restoring => "restoring",
            Readiness::Ready => "ready",
            Readiness::Failed => "failed",
        }
    }

    /// A service made of parts is as ready as its least ready part: failed if any failed,
    /// else starting, else restoring; ready only when every part is (and when it has none).
    pub fn worst(parts: impl IntoIterator<Item = Readiness>) -> Readiness {
        let rank = |r: Readiness| match r {
            Readiness::Ready => 0,
            Readiness::Restoring => 1,
            Readiness::Starting => 2,
            Readiness::Failed => 3,
        };
        parts
            .into_iter()
            .max_by_key(|r| rank(*r))
            .unwrap_or(Readiness::Ready)
    }

    fn from_u8(value: u8) -> Self {
        match value {
            1 => Readiness::Restoring,
            2 => Readiness::Ready,
            3 => Readiness::Failed,
            _ => Readiness::Starting,
        }
    }
}

/// A service's readiness, shared between the code that knows it and the HTTP endpoint.
#[derive(Debug, Clone)]
pub struct Health {
    state: Arc<AtomicU8>,
    /// Whether this is the service's own readiness (exported as the `ready` gauge, changes
    /// logged), not one [`Health::part`] of it.
    whole: bool,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            state: Arc::default(),
            whole: true,
        }
    }
}

impl Health {
    pub fn new() -> Self {
        Self::default()
    }

    /// The readiness of one part of a service (one of a router's pipelines): neither exported
    /// nor logged; the service sets its own [`Health`] from its parts ([`Readiness::worst`]).
    pub fn part() -> Self {
        Self {
            state: Arc::default(),
            whole: false,
        }
    }

    pub fn set(&self, readiness: Readiness) {
        let before = Readiness::from_u8(self.state.swap(readiness as u8, Ordering::SeqCst));
        if !self.whole {
            return;
        }
        let ready = if readiness == Readiness::Ready {
            1.0
        } else {
            0.0
        };
        metrics::gauge!(crate::telemetry::READY).set(ready);
        if before != readiness {
            tracing::info!(
                from = before.as_str(),
                to = readiness.as_str(),
                "readiness changed"
            );
        }
    }

    pub fn get(&self) -> Readiness {
        Readiness::from_u8(self.state.load(Ordering::SeqCst))
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot serve metrics and health on {addr}: {message}")]
pub struct ServeError {
    addr: SocketAddr,
    message: String,
}

/// Installs the Prometheus recorder and serves `/metrics`, `/livez` and `/readyz` on `addr`
/// (port 0: any free port). Returns the bound address. Must run inside a tokio runtime.
pub async fn serve_metrics_and_health(
    addr: SocketAddr,
    health: Health,
) -> Result<SocketAddr, ServeError> {
    let error = |message: String| ServeError { addr, message };
    let handle = crate::telemetry::prometheus_builder()
        .install_recorder()
        .map_err(|e| error(e.to_string()))?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| error(e.to_string()))?;
    let bound = listener.local_addr().map_err(|e| error(e.to_string()))?;
    tokio::spawn(upkeep(handle.clone()));
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, routes(handle, health)).await {
            tracing::error!(%error, "the metrics and health server stopped");
        }
    });
    Ok(bound)
}

/// The routes, for tests that serve them on a listener of their own.
pub fn routes(metrics: PrometheusHandle, health: Health) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move { metrics.render() }
            }),
        )
        .route("/livez", get(|| async { "alive\n" }))
        .route("/readyz", get(readyz))
        .with_state(health)
}

async fn readyz(State(health): State<Health>) -> (StatusCode, String) {
    let readiness = health.get();
    let code = if readiness == Readiness::Ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, format!("{}\n", readiness.as_str()))
}

/// Histograms need periodic upkeep when the exporter does not run its own HTTP listener.
async fn upkeep(handle: PrometheusHandle) {
    let mut every = tokio::time::interval(Duration::from_secs(5));
    loop {
        every.tick().await;
        handle.run_upkeep();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics_exporter_prometheus::PrometheusBuilder;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get_status(addr: SocketAddr, path: &str) -> (u16, String) {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut response = String::new();
        stream.read_to_string(&mut response).await.expect("read");
        let code = response[9..12].parse().expect("status code");
        let body = response
            .split("\r\n\r\n")
            .nth(1)
            .unwrap_or_default()
            .to_owned();
        (code, body)
    }

    #[tokio::test]
    async fn readyz_answers_503_with_the_reason_until_ready_and_livez_always_200() {
        let health = Health::new();
        let handle = PrometheusBuilder::new().build_recorder().handle();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = routes(handle, health.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        assert_eq!(get_status(addr, "/livez").await.0, 200);
        assert_eq!(
            get_status(addr, "/readyz").await,
            (503, "starting\n".into())
        );
        health.set(Readiness::Restoring);
        assert_eq!(
            get_status(addr, "/readyz").await,
            (503, "restoring\n".into())
        );
        health.set(Readiness::Ready);
        assert_eq!(get_status(addr, "/readyz").await, (200, "ready\n".into()));
        health.set(Readiness::Failed);
        assert_eq!(get_status(addr, "/readyz").await, (503, "failed\n".into()));
        assert_eq!(get_status(addr, "/livez").await.0, 200);
        assert_eq!(get_status(addr, "/metrics").await.0, 200);
        assert_eq!(get_status(addr, "/nothing").await.0, 404);
    }

    #[test]
    fn a_service_of_parts_is_as_ready_as_its_least_ready_part() {
        use Readiness::*;
        assert_eq!(Readiness::worst([Ready, Ready]), Ready);
        assert_eq!(Readiness::worst([Ready, Restoring]), Restoring);
        assert_eq!(Readiness::worst([Restoring, Starting, Ready]), Starting);
        assert_eq!(Readiness::worst([Ready, Failed, Starting]), Failed);
        assert_eq!(Readiness::worst([]), Ready);
        let part = Health::part();
        assert_eq!(part.get(), Starting);
        part.set(Ready);
        assert_eq!(part.get(), Ready);
    }
}
