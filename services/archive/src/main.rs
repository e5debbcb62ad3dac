//! `helpgrid-archive`: parse settings, start telemetry, bind, archive until SIGINT/SIGTERM.

use anyhow::Context;
use clap::Parser;
use helpgrid_archive::config::ArchiveArgs;
use helpgrid_archive::{Listeners, run};
use helpgrid_common::{shutdown, telemetry};
use std::net::SocketAddr;
use tokio::net::TcpListener;

// Every incident event is decoded and turned into short-lived strings and buffers; see the
// router's main.rs for why mimalloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

async fn bind(addr: Option<SocketAddr>, what: &str) -> anyhow::Result<Option<TcpListener>> {
    match addr {
        Some(addr) => {
            Ok(Some(TcpListener::bind(addr).await.with_context(|| {
                format!("cannot listen on {addr} for {what}")
            })?))
        }
        None => Ok(None),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    telemetry::init_tracing();
    let args = ArchiveArgs::parse();
    let config = args.config()?;
    if config.token_key.is_none() {
        tracing::warn!("authentication is OFF (--insecure-no-auth): every caller sees all history");
    }
    let prometheus = match args.metrics_listen {
        Some(_) => Some(
            metrics_exporter_prometheus::PrometheusBuilder::new()
                .install_recorder()
                .context("cannot install the metrics recorder")?,
        ),
        None => None,
    };
    let listeners = Listeners {
        grpc: bind(args.listen, "the gRPC API").await?,
        http: bind(args.http_listen, "the report page").await?,
        metrics: bind(args.metrics_listen, "metrics and health").await?,
    };
    run(config, listeners, prometheus, shutdown::signal()).await
}
