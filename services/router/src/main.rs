use clap::Parser;
use helpgrid_common::health::{Health, serve_metrics_and_health};
use helpgrid_common::{shutdown, telemetry};
use helpgrid_router::config::RouterArgs;

// glibc's malloc and free were ~28 % of the router's CPU in a burst (perf, docs/performance.md):
// the desk allocates and frees small strings and vectors for every press.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
