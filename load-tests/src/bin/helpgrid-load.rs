use clap::Parser;
use helpgrid_common::telemetry;
use helpgrid_load_tests::load::gateway;
use helpgrid_load_tests::load::scenario::{self, LoadArgs};
use std::io::Write;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    telemetry::init_tracing();
    let args = LoadArgs::parse();
    let print = |line: &str| {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
    };
    if args.print_record_size {
        print(&scenario::record_size(&args).to_string());
        return Ok(());
    }
    if args.scenario == scenario::Scenario::Gateway {
        let dir = gateway::run(&args, print).await?;
        print(&format!("results: {}/summary.md", dir.display()));
        return Ok(());
    }
    let (report, dir) = scenario::run(args, print).await?;
    print("");
    print(&report.to_markdown());
    print(&format!(
        "results: {}/result.json, summary.md, chart.svg",
        dir.display()
    ));
    if !report.reconciliation.clean() {
        anyhow::bail!("reconciliation failed: see {}/summary.md", dir.display());
    }
    Ok(())
}
