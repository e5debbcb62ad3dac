//! Logs and metrics set-up. Each service names its own metrics in its `telemetry` module.

use std::io::IsTerminal;
use std::net::SocketAddr;

/// 1 while the service's `/readyz` answers 200, else 0 (set with its readiness, see
/// `health`): what alerts read, since Prometheus scrapes metrics, not probes.
pub const READY: &str = "helpgrid_ready";

/// Structured logs to stderr; `RUST_LOG` filters (default `info`).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // A second init (tests) keeps the first subscriber; that is fine.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never in log files.
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// CPU seconds (user + system, all threads) this process has used so far, from
/// `/proc/self/stat`; 0 where that cannot be read. For logs that say what a step cost.
pub fn process_cpu_seconds() -> f64 {
    /// Linux's USER_HZ, the unit of those times (100 on every architecture Linux supports).
    const TICKS_PER_SECOND: f64 = 100.0;
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // The fields after the command name, which may hold spaces (hence the last ')'); utime
    // and stime are fields 14 and 15 of the line, so 12 and 13 of these.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let ticks: u64 = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse::<u64>().ok())
        .sum();
    ticks as f64 / TICKS_PER_SECOND
}

#[derive(Debug, thiserror::Error)]
#[error("cannot start the Prometheus exporter on {addr}: {message}")]
pub struct MetricsError {
    addr: SocketAddr,
    message: String,
}

/// Histogram buckets of every HelpGrid service, in seconds.
const BUCKETS: [f64; 20] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0, 600.0, 1800.0, 3600.0,
];

/// The exporter as every service configures it.
pub fn prometheus_builder() -> metrics_exporter_prometheus::PrometheusBuilder {
    let builder = metrics_exporter_prometheus::PrometheusBuilder::new();
    // Only an empty bucket list is refused; ours is not.
    match builder.set_buckets(&BUCKETS) {
        Ok(with_buckets) => with_buckets,
        Err(_) => metrics_exporter_prometheus::PrometheusBuilder::new(),
    }
}

/// Serves Prometheus text metrics on `http://addr/metrics`. Must run inside a tokio runtime.
/// (Services that also answer `/livez` and `/readyz` use [`crate::health`] instead.)
pub fn install_prometheus(addr: SocketAddr) -> Result<(), MetricsError> {
    prometheus_builder()
        .with_http_listener(addr)
        .install()
        .map_err(|e| MetricsError {
            addr,
            message: e.to_string(),
        })
}
