use clap::Parser;
use helpgrid_common::{shutdown, telemetry};
use helpgrid_notify::config::NotifyArgs;

// Every incident event is decoded and turned into short-lived strings and buffers; see the
// router's main.rs for why mimalloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    telemetry::init_tracing();
    let config = NotifyArgs::parse().config()?;
    helpgrid_notify::run(config, shutdown::signal()).await
}
