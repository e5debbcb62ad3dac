//! helpgrid-notify's settings: command-line flags, each with an environment variable.

use crate::domain::breaker::BreakerPolicy;
use crate::domain::retry::RetryPolicy;
use helpgrid_auth::TokenKey;
use helpgrid_common::kafka::KafkaArgs;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "helpgrid-notify",
    version,
    about = "Sends HelpGrid incident events to webhooks (SMS gateways, IM robots), signed, retried and ordered per incident"
)]
pub struct NotifyArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Address of the gRPC subscription API (NotifyService, health, reflection).
    #[arg(
        long,
        env = "HELPGRID_NOTIFY_GRPC_LISTEN",
        default_value = "127.0.0.1:50071"
    )]
    pub grpc_listen: SocketAddr,
    /// Serve /metrics, /livez and /readyz on this address.
    #[arg(long, env = "HELPGRID_NOTIFY_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Consumer group of the notify instances. Default: `<topic prefix>notify`.
    #[arg(long, env = "HELPGRID_NOTIFY_GROUP")]
    pub group_id: Option<String>,
    /// File holding the secret that signs bearer tokens (as for helpgrid-status); the
    /// subscription API takes admin tokens only. Required unless --insecure-no-auth.
    #[arg(long, env = "HELPGRID_AUTH_KEY_FILE")]
    pub auth_key_file: Option<PathBuf>,
    /// Serve the subscription API without authentication (local experiments only).
    #[arg(
        long,
        env = "HELPGRID_INSECURE_NO_AUTH",
        conflicts_with = "auth_key_file"
    )]
    pub insecure_no_auth: bool,
    /// Time limit of one HTTP attempt (connecting included).
    #[arg(
        long,
        env = "HELPGRID_NOTIFY_REQUEST_TIMEOUT_MS",
        default_value_t = 5_000
    )]
    pub request_timeout_ms: u64,
    /// First retry delay; it doubles per attempt up to --retry-max-ms (with jitter).
    #[arg(long, env = "HELPGRID_NOTIFY_RETRY_INITIAL_MS", default_value_t = 500)]
    pub retry_initial_ms: u64,
    /// Longest retry delay.
    #[arg(long, env = "HELPGRID_NOTIFY_RETRY_MAX_MS", default_value_t = 60_000)]
    pub retry_max_ms: u64,
    /// Retry budget: attempts per notification, the first included, before it is
    /// dead-lettered. Attempts are not spent while the endpoint's circuit breaker is open.
    #[arg(long, env = "HELPGRID_NOTIFY_RETRY_ATTEMPTS", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub retry_attempts: u32,
    /// Failures in a row that open an endpoint's circuit breaker.
    #[arg(long, env = "HELPGRID_NOTIFY_BREAKER_FAILURES", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub breaker_failures: u32,
    /// How long an open breaker holds attempts back before one trial.
    #[arg(
        long,
        env = "HELPGRID_NOTIFY_BREAKER_COOLDOWN_MS",
        default_value_t = 10_000
    )]
    pub breaker_cooldown_ms: u64,
    /// Parallel ordered lanes per endpoint (one incident always uses the same lane).
    #[arg(long, env = "HELPGRID_NOTIFY_LANES", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub lanes: u32,
    /// Notifications queued per lane; beyond it new ones are dead-lettered (queue_full)
    /// rather than holding up other endpoints.
    #[arg(long, env = "HELPGRID_NOTIFY_LANE_CAPACITY", default_value_t = 2_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub lane_capacity: u32,
    /// How often finished work is committed to the consumer group.
    #[arg(
        long,
        env = "HELPGRID_NOTIFY_COMMIT_INTERVAL_MS",
        default_value_t = 500
    )]
    pub commit_interval_ms: u64,
}

/// Everything `run` needs, resolved.
#[derive(Debug, Clone)]
pub struct NotifyConfig {
    pub kafka: KafkaArgs,
    pub grpc_listen: SocketAddr,
    pub metrics_listen: Option<SocketAddr>,
    pub group_id: String,
    /// `None`: authentication off.
    pub token_key: Option<Arc<TokenKey>>,
    pub request_timeout: Duration,
    pub retry: RetryPolicy,
    pub breaker: BreakerPolicy,
    pub lanes: usize,
    pub lane_capacity: usize,
    pub commit_interval: Duration,
}

impl NotifyArgs {
    pub fn config(self) -> anyhow::Result<NotifyConfig> {
        let token_key = match (&self.auth_key_file, self.insecure_no_auth) {
            (Some(path), _) => Some(Arc::new(TokenKey::from_file(path)?)),
            (None, true) => None,
            (None, false) => anyhow::bail!(
                "no --auth-key-file (HELPGRID_AUTH_KEY_FILE): refusing to serve the subscription API \
                 without authentication; pass the status service's key file, or --insecure-no-auth \
                 for a local experiment"
            ),
        };
        let ms = Duration::from_millis;
        Ok(NotifyConfig {
            group_id: self
                .group_id
                .unwrap_or_else(|| format!("{}notify", self.kafka.topic_prefix)),
            kafka: self.kafka,
            grpc_listen: self.grpc_listen,
            metrics_listen: self.metrics_listen,
            token_key,
            request_timeout: ms(self.request_timeout_ms.max(1)),
            retry: RetryPolicy {
                initial: ms(self.retry_initial_ms.max(1)),
                max: ms(self.retry_max_ms.max(self.retry_initial_ms).max(1)),
                max_attempts: self.retry_attempts,
            },
            breaker: BreakerPolicy {
                failures_to_open: self.breaker_failures,
                cooldown: ms(self.breaker_cooldown_ms.max(1)),
            },
            lanes: self.lanes as usize,
            lane_capacity: self.lane_capacity as usize,
            commit_interval: ms(self.commit_interval_ms.max(10)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn without_a_key_file_the_service_refuses_to_start_unless_told_it_is_insecure() {
        let args = NotifyArgs::try_parse_from(["helpgrid-notify"]).expect("parse");
        let error = args.config().expect_err("no key file");
        assert!(error.to_string().contains("--auth-key-file"), "{error}");
        let insecure = NotifyArgs::try_parse_from(["helpgrid-notify", "--insecure-no-auth"])
            .expect("parse")
            .config()
            .expect("config");
        assert!(insecure.token_key.is_none());
    }

    #[test]
    fn the_command_line_answers_version_and_every_flag_has_help() {
        use clap::CommandFactory;
        assert_eq!(
            helpgrid_common::cli::undocumented(&NotifyArgs::command()),
            Vec::<String>::new()
        );
    }

    #[test]
    fn the_group_derives_from_the_topic_prefix() {
        let config = NotifyArgs::try_parse_from([
            "helpgrid-notify",
            "--insecure-no-auth",
            "--topic-prefix",
            "city-a.",
        ])
        .expect("parse")
        .config()
        .expect("config");
        assert_eq!(config.group_id, "city-a.notify");
        assert_eq!(config.retry.max_attempts, 10);
    }
}
