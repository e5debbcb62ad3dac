//! What runs beside the router in a city: the other consumers of incident-events (the
//! archive into PostgreSQL, the gateway's resident feedback) and more router instances. A
//! flood measured with the router alone flatters it: on two cores every consumer of the
//! same events takes its share of the CPU. Each started process is watched like the router
//! (CPU seconds, RSS), so the report shows what each costs per press.

use super::services::{Service, ServiceError, free_port};
use std::path::Path;

/// Flags of `helpgrid-load` for the services started beside the router.
#[derive(Debug, Clone, clap::Args)]
pub struct AlongsideArgs {
    /// Router instances in the group (the scale-out curve); each gets its own transactional
    /// id and the partitions the group assigns it.
    #[arg(long, default_value_t = 1)]
    pub routers: usize,
    /// Also run helpgrid-archive, writing every incident event into this PostgreSQL
    /// database (e.g. the URL `deploy/local/postgres.sh start` prints).
    #[arg(long, env = "HELPGRID_LOAD_ARCHIVE_POSTGRES_URL")]
    pub archive_postgres_url: Option<String>,
    /// Also run helpgrid-gateway without MQTT: its resident-feedback consumer follows
    /// incident-events as in a deployment.
    #[arg(long)]
    pub with_gateway: bool,
}

/// Starts the extra routers (instances 1..) and the services asked for. `env` is the
/// environment every service of the run gets (brokers, topic prefix, partitions);
/// `router_env` the first router's, whose transactional id and metrics address are
/// replaced per instance.
pub fn start(
    args: &AlongsideArgs,
    bin_dir: &Path,
    env: &[(&str, String)],
    router_env: &[(&str, String)],
    topic_prefix: &str,
    out_dir: &Path,
) -> Result<Vec<Service>, ServiceError> {
    let mut started = Vec::new();
    for instance in 1..args.routers.max(1) {
        let mut own: Vec<(&str, String)> = router_env
            .iter()
            .filter(|(k, _)| {
                *k != "HELPGRID_ROUTER_TRANSACTIONAL_ID" && *k != "HELPGRID_ROUTER_METRICS_LISTEN"
            })
            .cloned()
            .collect();
        own.push((
            "HELPGRID_ROUTER_TRANSACTIONAL_ID",
            format!("{topic_prefix}router-{instance}"),
        ));
        own.push((
            "HELPGRID_ROUTER_METRICS_LISTEN",
            format!(
                "127.0.0.1:{}",
                free_port().map_err(spawn_error("helpgrid-router"))?
            ),
        ));
        let log_dir = out_dir.join(format!("router-{instance}"));
        std::fs::create_dir_all(&log_dir).map_err(|source| ServiceError::Log {
            path: log_dir.clone(),
            source,
        })?;
        let mut router = Service::spawn(
            bin_dir,
            "helpgrid-router",
            "helpgrid-router",
            &[],
            &own,
            &log_dir,
        )?;
        router.name = format!("helpgrid-router-{instance}");
        started.push(router);
    }
    if let Some(url) = &args.archive_postgres_url {
        let mut own = env.to_vec();
        own.push(("HELPGRID_ARCHIVE_POSTGRES_URL", url.clone()));
        own.push(("HELPGRID_INSECURE_NO_AUTH", "true".into()));
        own.push((
            "HELPGRID_ARCHIVE_METRICS_LISTEN",
            format!(
                "127.0.0.1:{}",
                free_port().map_err(spawn_error("helpgrid-archive"))?
            ),
        ));
        started.push(Service::spawn(
            bin_dir,
            "helpgrid-archive",
            "helpgrid-archive",
            &[],
            &own,
            out_dir,
        )?);
    }
    if args.with_gateway {
        let mut own = env.to_vec();
        own.push((
            "HELPGRID_GATEWAY_METRICS_LISTEN",
            format!(
                "127.0.0.1:{}",
                free_port().map_err(spawn_error("helpgrid-gateway"))?
            ),
        ));
        started.push(Service::spawn(
            bin_dir,
            "helpgrid-gateway",
            "helpgrid-gateway",
            &[],
            &own,
            out_dir,
        )?);
    }
    Ok(started)
}

fn spawn_error(bin: &'static str) -> impl FnOnce(std::io::Error) -> ServiceError {
    move |source| ServiceError::Spawn {
        bin: bin.into(),
        source,
    }
}
