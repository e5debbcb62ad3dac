use clap::Parser;
use helpgrid_common::{shutdown, telemetry};
use helpgrid_load_tests::sim::{self, SimArgs};
use std::io::Write;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    telemetry::init_tracing();
    let args = SimArgs::parse();
    let print = |line: String| {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
    };
    print(format!(
        "HelpGrid simulated city: {} grids, {} presses/s, {} camera alerts/s. Ctrl-C to stop.",
        args.city.grids, args.activity.presses_per_s, args.activity.camera_alerts_per_s
    ));
    let tally = sim::run(args, shutdown::signal(), |elapsed, tally| {
        print(format!("[{:>5.0}s] {tally}", elapsed.as_secs_f64()));
    })
    .await?;
    print(format!("final: {tally}"));
    Ok(())
}
