use clap::Parser;
use helpgrid_common::health::{Health, serve_metrics_and_health};
use helpgrid_common::{shutdown, telemetry};
use helpgrid_router::config::RouterArgs;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    telemetry::init_tracing();
    let args = RouterArgs::parse();
    let health = Health::new();
    if let Some(addr) = args.metrics_listen {
        serve_metrics_and_health(addr, health.clone()).await?;
    }
    helpgrid_router::run_with_health(args.into_config(), health, shutdown::signal()).await
}
