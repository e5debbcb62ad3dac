//! `helpgrid-status`: parse settings, start telemetry, bind, serve until SIGINT/SIGTERM.

use anyhow::Context;
use clap::Parser;
use helpgrid_common::{shutdown, telemetry};
use helpgrid_status::config::StatusArgs;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    telemetry::init_tracing();
    let args = StatusArgs::parse();
    if let Some(addr) = args.metrics_listen {
        telemetry::install_prometheus(addr)?;
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    helpgrid_status::run(args.config(), listener, shutdown::signal()).await
}
