use clap::Parser;
use helpgrid_common::{shutdown, telemetry};
use helpgrid_router::config::RouterArgs;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    telemetry::init_tracing();
    let args = RouterArgs::parse();
    if let Some(addr) = args.metrics_listen {
        telemetry::install_prometheus(addr)?;
    }
    helpgrid_router::run(args.into_config(), shutdown::signal()).await
}
