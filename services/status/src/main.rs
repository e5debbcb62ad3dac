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
    let config = args.config()?;
    if !config.gate.is_on() {
        tracing::warn!(
            "authentication is OFF (--insecure-no-auth): every caller may do everything"
        );
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let console = match args.console_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} for the console"))?,
        ),
        None => None,
    };
    helpgrid_status::run_with_console(config, listener, console, shutdown::signal()).await
}
