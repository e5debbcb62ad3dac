//! The operator's HTTP port: /metrics (Prometheus text), /livez (the process answers),
//! /readyz (200 once the subscriptions are loaded and events are being consumed).

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
struct Ops {
    metrics: Option<PrometheusHandle>,
    ready: watch::Receiver<bool>,
}

async fn metrics(State(ops): State<Ops>) -> (StatusCode, String) {
    match &ops.metrics {
        Some(handle) => (StatusCode::OK, handle.render()),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics recorder not installed in this process\n".into(),
        ),
    }
}

async fn livez() -> &'static str {
    "ok\n"
}

async fn readyz(State(ops): State<Ops>) -> (StatusCode, &'static str) {
    if *ops.ready.borrow() {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: loading subscriptions or stopping\n",
        )
    }
}

/// Installs the Prometheus recorder for this process; `None` if one is already installed
/// (a second service in the same test process).
pub fn install_recorder() -> Option<PrometheusHandle> {
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets(&[
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            60.0, 120.0, 300.0,
        ])
        .and_then(|b| b.install_recorder())
        .map_err(|error| tracing::warn!(%error, "metrics recorder not installed"))
        .ok()
}

pub async fn serve(
    listener: TcpListener,
    metrics_handle: Option<PrometheusHandle>,
    ready: watch::Receiver<bool>,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .with_state(Ops {
            metrics: metrics_handle,
            ready,
        });
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { cancel.cancelled().await })
        .await
}
