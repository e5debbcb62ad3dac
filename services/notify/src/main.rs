use clap::Parser;
use helpgrid_common::{shutdown, telemetry};
use helpgrid_notify::config::NotifyArgs;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    telemetry::init_tracing();
    let config = NotifyArgs::parse().config()?;
    helpgrid_notify::run(config, shutdown::signal()).await
}
