//! Settings of the status service: command line and environment (`StatusArgs`), and what
//! `run` needs of them (`StatusConfig`).

use crate::access::Gate;
use crate::cap::CapSender;
use anyhow::Context;
use helpgrid_auth::TokenKey;
use helpgrid_auth::areas::{AreaTree, parse_csv};
use helpgrid_common::kafka::KafkaArgs;
use std::net::SocketAddr;
use std::path::PathBuf;
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
    /// File holding the keys that verify bearer tokens (HS256): `kid=secret` lines, or one
    /// bare secret (at least 32 bytes each; `helpgrid-token new-key` makes one); re-read every
    /// 5 s for key rotation. Required unless --insecure-no-auth.
    #[arg(long, env = "HELPGRID_AUTH_KEY_FILE")]
    pub auth_key_file: Option<PathBuf>,
    /// Serve without authentication: every caller may do everything. For experiments on a
    /// closed machine only; the service refuses to start with neither this nor a key file.
    #[arg(
        long,
        env = "HELPGRID_INSECURE_NO_AUTH",
        conflicts_with = "auth_key_file"
    )]
    pub insecure_no_auth: bool,
    /// PEM certificate chain: serve gRPC and the console over TLS (with --tls-key-file).
    #[arg(long, env = "HELPGRID_TLS_CERT_FILE", requires = "tls_key_file")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of the certificate.
    #[arg(long, env = "HELPGRID_TLS_KEY_FILE", requires = "tls_cert_file")]
    pub tls_key_file: Option<PathBuf>,
    /// Address of the big-screen console (HTTP, or HTTPS with TLS); no console if unset.
    #[arg(long, env = "HELPGRID_CONSOLE_LISTEN")]
    pub console_listen: Option<SocketAddr>,
    /// The `sender` of CAP alerts (GetIncidentCap), e.g. `helpgrid.ankang.example`.
    #[arg(long, env = "HELPGRID_CAP_SENDER", default_value = "helpgrid")]
    pub cap_sender: String,
    /// Incident events kept in memory per partition for WatchIncidents to resume from (and
    /// read from incident-events at start-up). A resume cursor older than that is refused
    /// with OUT_OF_RANGE; memory grows with it (about 1 KiB per event).
    #[arg(
        long,
        env = "HELPGRID_STATUS_WATCH_REPLAY_EVENTS",
        default_value_t = DEFAULT_WATCH_REPLAY_EVENTS,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub watch_replay_events: u64,
    /// Seconds closed incidents stay in the read model after closing (GetIncident,
    /// ListIncidents, the console's "today"); older ones are the archive's. Open incidents
    /// are always kept.
    #[arg(
        long,
        env = "HELPGRID_STATUS_CLOSED_WINDOW_S",
        default_value_t = DEFAULT_CLOSED_WINDOW_S
    )]
    pub closed_window_s: u64,
    /// CSV of the area registry (`area_id,parent_id,level,name`; city, county, town,
    /// community, grid): tokens may then name an area at any level (a county's token sees
    /// its towns' grids) and the console can show an area by the level below. Read at start.
    #[arg(long, env = "HELPGRID_STATUS_AREAS_FILE")]
    pub areas_file: Option<PathBuf>,
    /// CSV of households for the responder app (`household_id,contact_name,contact_phone,
    /// address`): shown in full only to the assigned responder and the grid's supervisors.
    #[arg(long, env = "HELPGRID_STATUS_HOUSEHOLDS_FILE")]
    pub households_file: Option<PathBuf>,
}

/// Closed incidents kept unless configured: 36 hours, so the console's "today" is whole.
pub const DEFAULT_CLOSED_WINDOW_S: u64 = 36 * 3600;

/// Events kept per partition for Watch resumes unless configured.
pub const DEFAULT_WATCH_REPLAY_EVENTS: u64 = 10_000;

impl StatusArgs {
    /// Reads the key and certificate files named on the command line.
    pub fn config(&self) -> anyhow::Result<StatusConfig> {
        let gate = match (&self.auth_key_file, self.insecure_no_auth) {
            (Some(path), _) => Gate::new(Some(TokenKey::from_file(path)?)),
            (None, true) => Gate::new(None),
            (None, false) => anyhow::bail!(
                "no --auth-key-file (HELPGRID_AUTH_KEY_FILE): refusing to serve without authentication; \
                 make a key with `helpgrid-token new-key --out <file>`, or pass --insecure-no-auth for a local experiment"
            ),
        };
        let gate = match &self.areas_file {
            Some(path) => gate.with_areas(read_areas(path)?),
            None => gate,
        };
        let households = match &self.households_file {
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| {
                    format!("cannot read the households file {}", path.display())
                })?;
                crate::app::households::parse_households(&text)
                    .with_context(|| format!("households file {}", path.display()))?
            }
            None => crate::app::view::Households::new(),
        };
        let tls = match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(cert), Some(key)) => Some(TlsFiles::read(cert, key)?),
            _ => None,
        };
        Ok(StatusConfig {
            kafka: self.kafka.clone(),
            command_timeout: Duration::from_millis(self.command_timeout_ms),
            gate,
            tls,
            cap_sender: CapSender {
                sender: self.cap_sender.clone(),
                ..CapSender::default()
            },
            watch_replay_events: usize::try_from(self.watch_replay_events).unwrap_or(usize::MAX),
            closed_window: Duration::from_secs(self.closed_window_s),
            households: std::sync::Arc::new(households),
        })
    }
}

/// The area registry from its CSV file; every bad line is named.
pub fn read_areas(path: &std::path::Path) -> anyhow::Result<AreaTree> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the areas file {}", path.display()))?;
    let areas = parse_csv(&text).map_err(|errors| {
        anyhow::anyhow!(
            "the areas file {} has bad lines:\n  {}",
            path.display(),
            errors.join("\n  ")
        )
    })?;
    Ok(AreaTree::from_areas(&areas))
}

/// A certificate chain and its key, as PEM, read at start-up.
#[derive(Clone)]
pub struct TlsFiles {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

impl std::fmt::Debug for TlsFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsFiles(..)")
    }
}

impl TlsFiles {
    pub fn read(cert: &std::path::Path, key: &std::path::Path) -> anyhow::Result<Self> {
        Ok(Self {
            cert_pem: std::fs::read(cert)
                .with_context(|| format!("cannot read the TLS certificate {}", cert.display()))?,
            key_pem: std::fs::read(key)
                .with_context(|| format!("cannot read the TLS key {}", key.display()))?,
        })
    }
}

/// What `run` needs; the listeners and the shutdown signal are passed separately.
#[derive(Debug, Clone)]
pub struct StatusConfig {
    pub kafka: KafkaArgs,
    pub command_timeout: Duration,
    /// Token verification; off only when explicitly asked for.
    pub gate: Gate,
    /// Serve gRPC and the console over TLS.
    pub tls: Option<TlsFiles>,
    pub cap_sender: CapSender,
    /// Events kept per partition for Watch resumes.
    pub watch_replay_events: usize,
    /// How long closed incidents stay in the read model.
    pub closed_window: Duration,
    /// The household directory the responder app shows (empty: ids only).
    pub households: std::sync::Arc<crate::app::view::Households>,
}

impl StatusConfig {
    /// Authentication off, plain TCP: for tests that are about something else.
    pub fn new(kafka: KafkaArgs) -> Self {
        Self {
            kafka,
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
            gate: Gate::new(None),
            tls: None,
            cap_sender: CapSender::default(),
            watch_replay_events: DEFAULT_WATCH_REPLAY_EVENTS as usize,
            closed_window: Duration::from_secs(DEFAULT_CLOSED_WINDOW_S),
            households: std::sync::Arc::default(),
        }
    }

    pub fn with_auth(mut self, key: TokenKey) -> Self {
        self.gate = Gate::new(Some(key)).with_areas(self.gate.areas().clone());
        self
    }

    /// The area registry that tokens and the console refer to.
    pub fn with_areas(mut self, areas: AreaTree) -> Self {
        self.gate = self.gate.with_areas(areas);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn defaults_listen_locally_with_a_five_second_command_timeout() {
        let args = StatusArgs::try_parse_from(["helpgrid-status", "--insecure-no-auth"]);
        let args = args.map(|a| {
            (
                a.listen.to_string(),
                a.metrics_listen,
                a.config().map(|c| c.command_timeout).ok(),
            )
        });
        assert_eq!(
            args.ok(),
            Some((
                "127.0.0.1:50051".to_owned(),
                None,
                Some(Duration::from_secs(5))
            ))
        );
    }

    #[test]
    fn without_a_key_file_the_service_refuses_to_start_unless_told_it_is_insecure() {
        let args = StatusArgs::try_parse_from(["helpgrid-status"]).expect("parse");
        let refused = args.config().err().map(|e| e.to_string());
        assert!(refused.is_some_and(|m| m.contains("refusing to serve without authentication")));
        let insecure = StatusArgs::try_parse_from(["helpgrid-status", "--insecure-no-auth"])
            .expect("parse")
            .config()
            .expect("config");
        assert!(!insecure.gate.is_on());
    }

    #[test]
    fn a_zero_command_timeout_is_refused() {
        assert!(
            StatusArgs::try_parse_from(["helpgrid-status", "--command-timeout-ms", "0"]).is_err()
        );
    }
}

#[cfg(test)]
mod cli_tests {
    use super::*;

    #[test]
    fn the_command_line_answers_version_and_every_flag_has_help() {
        use clap::CommandFactory;
        assert_eq!(
            helpgrid_common::cli::undocumented(&StatusArgs::command()),
            Vec::<String>::new()
        );
    }
}
