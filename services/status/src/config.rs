//! Settings of the status service: command line and environment (`StatusArgs`), and what
//! `run` needs of them (`StatusConfig`).

use helpgrid_common::kafka::KafkaArgs;
use std::net::SocketAddr;
use std::time::Duration;

/// How long a write waits for the router (or the roster read-back) unless configured.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_millis(5000);

/// HelpGrid status service: the gRPC front door to incidents and the roster.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "helpgrid-status", version)]
pub struct StatusArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Address the gRPC server listens on.
    #[arg(
        long,
        env = "HELPGRID_STATUS_LISTEN",
        default_value = "127.0.0.1:50051"
    )]
    pub listen: SocketAddr,
    /// Address of the Prometheus `/metrics` endpoint; no endpoint if unset.
    #[arg(long, env = "HELPGRID_STATUS_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// How long Acknowledge/Close wait for the router's answer (publishing included), and
    /// roster writes for Kafka's acknowledgement.
    #[arg(
        long,
        env = "HELPGRID_STATUS_COMMAND_TIMEOUT_MS",
        default_value_t = 5000,
        value_parser = clap::value_parser!(u64).range(1..=600_000)
    )]
    pub command_timeout_ms: u64,
}

impl StatusArgs {
    pub fn config(&self) -> StatusConfig {
        StatusConfig {
            kafka: self.kafka.clone(),
            command_timeout: Duration::from_millis(self.command_timeout_ms),
        }
    }
}

/// What `run` needs; the listener and the shutdown signal are passed separately.
#[derive(Debug, Clone)]
pub struct StatusConfig {
    pub kafka: KafkaArgs,
    pub command_timeout: Duration,
}

impl StatusConfig {
    pub fn new(kafka: KafkaArgs) -> Self {
        Self {
            kafka,
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn defaults_listen_locally_with_a_five_second_command_timeout() {
        let args = StatusArgs::try_parse_from(["helpgrid-status"]);
        let args = args.map(|a| {
            (
                a.listen.to_string(),
                a.metrics_listen,
                a.config().command_timeout,
            )
        });
        assert_eq!(
            args.ok(),
            Some(("127.0.0.1:50051".to_owned(), None, Duration::from_secs(5)))
        );
    }

    #[test]
    fn a_zero_command_timeout_is_refused() {
        assert!(
            StatusArgs::try_parse_from(["helpgrid-status", "--command-timeout-ms", "0"]).is_err()
        );
    }
}
