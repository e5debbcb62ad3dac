use clap::Parser;
use helpgrid_common::{shutdown, telemetry};
use helpgrid_load_tests::load::relay::{self, RelayArgs};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    telemetry::init_tracing();
    let args = RelayArgs::parse();
    let cancel = CancellationToken::new();
    let worker_cancel = cancel.clone();
    let mut worker = tokio::task::spawn_blocking(move || relay::run(&args, &worker_cancel));
    tokio::select! {
        () = shutdown::signal() => {
            cancel.cancel();
            worker.await??;
        }
        result = &mut worker => { result??; }
    }
    Ok(())
}
