use anyhow::Context;
use clap::Parser;
use helpgrid_common::{shutdown, telemetry};
use helpgrid_gateway::config::{Cli, Command};
use helpgrid_gateway::domain::csv::parse_devices;
use helpgrid_gateway::{devices_topic, kafka};
use std::io::Write;

// Every incident event is decoded and turned into short-lived strings and buffers; see the
// router's main.rs for why mimalloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    telemetry::init_tracing();
    let cli = Cli::parse();
    match cli.command {
        Some(Command::ImportDevices { file }) => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let (devices, errors) = parse_devices(&text);
            if !errors.is_empty() {
                let mut err = std::io::stderr().lock();
                for e in &errors {
                    writeln!(err, "{}: {e}", file.display())?;
                }
                anyhow::bail!("{} bad rows; nothing was imported", errors.len());
            }
            let args = cli.gateway.kafka;
            let topic = devices_topic(&args.topic_prefix);
            kafka::ensure_devices_topic(&args, &topic).await?;
            kafka::write_devices(&args, &topic, &devices).await?;
            writeln!(
                std::io::stdout(),
                "imported {} devices into {topic}",
                devices.len()
            )?;
            Ok(())
        }
        None => {
            let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new()
                .install_recorder()
                .context("cannot install the metrics recorder")?;
            let config = cli.gateway.into_config()?;
            helpgrid_gateway::run(config, Some(prometheus), None, shutdown::signal()).await
        }
    }
}
