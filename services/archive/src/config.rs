//! Settings of the archive: command line and environment (`ArchiveArgs`), and what `run`
//! needs of them (`ArchiveConfig`).

use anyhow::Context;
use helpgrid_auth::TokenKey;
use helpgrid_common::kafka::KafkaArgs;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How often the archive looks for incidents due for pseudonyms unless told otherwise.
pub const PSEUDONYMISE_EVERY: Duration = Duration::from_secs(60);

/// HelpGrid archive: incident-events into PostgreSQL exactly once; history and reports.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "helpgrid-archive", version)]
pub struct ArchiveArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// PostgreSQL connection string (`postgres://user@host:port/db` or key=value form).
    #[arg(long, env = "HELPGRID_ARCHIVE_POSTGRES_URL")]
    pub postgres_url: String,
    /// Address of the gRPC history and report API; no API if unset.
    #[arg(long, env = "HELPGRID_ARCHIVE_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Address of the report page and CSV export (HTTP); no page if unset.
    #[arg(long, env = "HELPGRID_ARCHIVE_HTTP_LISTEN")]
    pub http_listen: Option<SocketAddr>,
    /// Address of `/metrics`, `/livez` and `/readyz`; none if unset.
    #[arg(long, env = "HELPGRID_ARCHIVE_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Most records written to PostgreSQL in one transaction.
    #[arg(
        long,
        env = "HELPGRID_ARCHIVE_BATCH_MAX",
        default_value_t = 5000,
        value_parser = clap::value_parser!(u32).range(1..=100_000)
    )]
    pub batch_max: u32,
    /// How long a batch waits for more records after its first, in milliseconds.
    #[arg(long, env = "HELPGRID_ARCHIVE_BATCH_LINGER_MS", default_value_t = 20)]
    pub batch_linger_ms: u64,
    /// Sink writers: each takes every N-th partition of incident-events with its own Kafka
    /// consumer and PostgreSQL connection, so N transactions are written at once.
    #[arg(
        long,
        env = "HELPGRID_ARCHIVE_WRITERS",
        default_value_t = 2,
        value_parser = clap::value_parser!(u32).range(1..=16)
    )]
    pub writers: u32,
    /// Replace personal fields (household, device, location, note, snapshot reference) with
    /// pseudonyms once an incident has been closed this many days; 0 turns it off.
    #[arg(
        long,
        env = "HELPGRID_ARCHIVE_PSEUDONYMISE_AFTER_DAYS",
        default_value_t = 90
    )]
    pub pseudonymise_after_days: u32,
    /// File holding the secret that keys pseudonyms (at least 32 bytes); without it the
    /// token key is used.
    #[arg(long, env = "HELPGRID_ARCHIVE_PSEUDONYM_KEY_FILE")]
    pub pseudonym_key_file: Option<PathBuf>,
    /// CSV of the administrative levels (`area_id,parent_id,level,name`; levels city,
    /// county, town, community, grid) imported into the registry at start.
    #[arg(long, env = "HELPGRID_ARCHIVE_AREAS_FILE")]
    pub areas_file: Option<PathBuf>,
    /// File holding the secret that signs bearer tokens (the status service's). Required
    /// unless --insecure-no-auth.
    #[arg(long, env = "HELPGRID_AUTH_KEY_FILE")]
    pub auth_key_file: Option<PathBuf>,
    /// Serve history and reports without authentication. Local experiments only.
    #[arg(
        long,
        env = "HELPGRID_INSECURE_NO_AUTH",
        conflicts_with = "auth_key_file"
    )]
    pub insecure_no_auth: bool,
}

impl ArchiveArgs {
    pub fn config(&self) -> anyhow::Result<ArchiveConfig> {
        let token_key = match (&self.auth_key_file, self.insecure_no_auth) {
            (Some(path), _) => Some(Arc::new(TokenKey::from_file(path)?)),
            (None, true) => None,
            (None, false) => anyhow::bail!(
                "no --auth-key-file (HELPGRID_AUTH_KEY_FILE): refusing to serve history without \
                 authentication; pass the status service's key file, or --insecure-no-auth for a \
                 local experiment"
            ),
        };
        let pseudonym_key = match (&self.pseudonym_key_file, &self.auth_key_file) {
            (Some(path), _) | (None, Some(path)) => std::fs::read(path)
                .with_context(|| format!("cannot read {}", path.display()))?
                .trim_ascii()
                .to_vec(),
            (None, None) => Vec::new(),
        };
        let areas = match &self.areas_file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read the areas file {}", path.display()))?;
                crate::areas::parse_csv(&text).map_err(|errors| {
                    anyhow::anyhow!(
                        "the areas file {} has bad lines; nothing imported:\n  {}",
                        path.display(),
                        errors.join("\n  ")
                    )
                })?
            }
            None => Vec::new(),
        };
        Ok(ArchiveConfig {
            areas,
            kafka: self.kafka.clone(),
            postgres_url: self.postgres_url.clone(),
            batch_max: self.batch_max as usize,
            batch_linger: Duration::from_millis(self.batch_linger_ms),
            writers: self.writers as usize,
            token_key,
            pseudonymise_every: PSEUDONYMISE_EVERY,
            pseudonymise_after: (self.pseudonymise_after_days > 0)
                .then(|| Duration::from_secs(u64::from(self.pseudonymise_after_days) * 86_400)),
            pseudonym_key,
        })
    }
}

/// What `run` needs; listeners and the shutdown signal are passed separately.
#[derive(Debug, Clone)]
pub struct ArchiveConfig {
    pub kafka: KafkaArgs,
    /// Areas to import into the registry at start.
    pub areas: Vec<crate::areas::Area>,
    pub postgres_url: String,
    pub batch_max: usize,
    pub batch_linger: Duration,
    /// Sink writers (partition groups written in parallel), at least 1.
    pub writers: usize,
    /// Verifies bearer tokens; `None` serves everyone (explicitly insecure).
    pub token_key: Option<Arc<TokenKey>>,
    /// Closed incidents older than this get pseudonyms for their personal fields.
    pub pseudonymise_after: Option<Duration>,
    /// How often the archive looks for incidents due for pseudonyms.
    pub pseudonymise_every: Duration,
    /// Keys the pseudonyms; empty means a random key per process (pseudonyms then differ
    /// between runs, which is still safe, only less useful for repeat analysis).
    pub pseudonym_key: Vec<u8>,
}

impl ArchiveConfig {
    /// Authentication off, defaults otherwise: for tests about something else.
    pub fn new(kafka: KafkaArgs, postgres_url: impl Into<String>) -> Self {
        Self {
            kafka,
            areas: Vec::new(),
            postgres_url: postgres_url.into(),
            batch_max: 5000,
            batch_linger: Duration::from_millis(20),
            writers: 2,
            token_key: None,
            pseudonymise_after: None,
            pseudonymise_every: PSEUDONYMISE_EVERY,
            pseudonym_key: Vec::new(),
        }
    }

    /// `<prefix>archive`: the group the sink reports its position under.
    pub fn group_id(&self) -> String {
        format!("{}archive", self.kafka.topic_prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn without_a_key_file_it_refuses_unless_told_it_is_insecure() {
        let args = ArchiveArgs::try_parse_from(["a", "--postgres-url", "postgres://x@y/z"])
            .expect("parse");
        let refused = args.config().err().map(|e| e.to_string());
        assert!(refused.is_some_and(|m| m.contains("refusing to serve history")));
        let insecure = ArchiveArgs::try_parse_from([
            "a",
            "--postgres-url",
            "postgres://x@y/z",
            "--insecure-no-auth",
        ])
        .expect("parse")
        .config()
        .expect("config");
        assert!(insecure.token_key.is_none());
        assert_eq!(insecure.group_id(), "helpgrid.archive");
        assert_eq!(
            insecure.pseudonymise_after,
            Some(Duration::from_secs(90 * 86_400))
        );
    }
}
