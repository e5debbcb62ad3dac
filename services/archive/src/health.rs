//! `/metrics` (Prometheus text), `/livez` (the process runs) and `/readyz` (200 while the sink
//! is connected to PostgreSQL and its batches commit; 503 while it lags on a failure).

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
struct Health {
    prometheus: Option<PrometheusHandle>,
    ready: watch::Receiver<bool>,
}

pub async fn serve(
    listener: TcpListener,
    prometheus: Option<PrometheusHandle>,
    ready: watch::Receiver<bool>,
    stop: CancellationToken,
) {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/livez", get(|| async { "alive\n" }))
        .route("/readyz", get(readyz))
        .with_state(Health { prometheus, ready });
    if let Err(error) = axum::serve(listener, app)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
    {
        tracing::error!(%error, "the health server failed");
    }
}

async fn metrics(State(health): State<Health>) -> (StatusCode, String) {
    match &health.prometheus {
        Some(handle) => (StatusCode::OK, handle.render()),
        None => (
            StatusCode::NOT_FOUND,
            "metrics are not recorded in this process\n".into(),
        ),
    }
}

async fn readyz(State(health): State<Health>) -> (StatusCode, &'static str) {
    if *health.ready.borrow() {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: PostgreSQL unreachable or batches failing; the archive lags\n",
        )
    }
}
