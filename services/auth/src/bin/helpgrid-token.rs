//! `helpgrid-token`: make a key file, mint tokens with it, and revoke a subject's tokens.
//!
//!   helpgrid-token new-key --out .helpgrid/auth.key [--kid 2026-12]
//!   helpgrid-token mint --key-file .helpgrid/auth.key --subject console-anlan --role console --grid grid-0001
//!   helpgrid-token revoke --subject w-0042 --reason "lost phone" --kafka-brokers … --topic-prefix …
//!
//! The token is written to stdout, so scripts can capture it.

use anyhow::Context;
use clap::Parser;
use helpgrid_auth::{Role, TokenKey};
use helpgrid_common::kafka::KafkaArgs;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, clap::Parser)]
#[command(
    name = "helpgrid-token",
    version,
    about = "Key files and development tokens for HelpGrid"
)]
enum Command {
    /// Write a new random 32-byte key (hex) to a file only the owner can read.
    NewKey {
        /// The key file to create (refused if it exists).
        #[arg(long)]
        out: PathBuf,
        /// Write a `kid=secret` line under this key id (for a key set: rotation) rather
        /// than a bare secret.
        #[arg(long)]
        kid: Option<String>,
    },
    /// Mint a token and print it.
    Mint {
        /// The key file that signs the token (`new-key` makes one).
        #[arg(long, env = "HELPGRID_AUTH_KEY_FILE")]
        key_file: PathBuf,
        /// The caller: a responder id, a console or dispatch system name.
        #[arg(long)]
        subject: String,
        /// What the caller is: responder, supervisor, console, dispatch or admin.
        #[arg(long, value_enum)]
        role: Role,
        /// A grid the caller may see or act in (repeatable); `*` for every grid.
        #[arg(long = "grid")]
        grids: Vec<String>,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 12 * 3600)]
        ttl_s: u64,
        /// Sign with this key of the key file rather than its first.
        #[arg(long)]
        kid: Option<String>,
    },
    /// Revoke every token issued to a subject until now (a lost phone): every service that
    /// verifies tokens refuses them within seconds; tokens minted afterwards work.
    Revoke {
        #[command(flatten)]
        kafka: KafkaArgs,
        /// The subject whose tokens are revoked (a responder id, a console name).
        #[arg(long)]
        subject: String,
        /// Why, for the audit trail.
        #[arg(long, default_value = "")]
        reason: String,
        /// Who revokes (your name), for the audit trail.
        #[arg(long, env = "USER", default_value = "")]
        revoked_by: String,
    },
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    match Command::parse() {
        Command::NewKey { out, kid } => {
            let mut secret = [0u8; 32];
            std::fs::File::open("/dev/urandom")
                .and_then(|mut f| f.read_exact(&mut secret))
                .context("cannot read random bytes from /dev/urandom")?;
            let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
            let contents = match kid {
                Some(kid) if helpgrid_auth::keys::valid_kid(&kid) => format!("{kid}={hex}\n"),
                Some(kid) => anyhow::bail!(
                    "the key id {kid:?} must be 1–64 letters, digits, '.', '_' or '-'"
                ),
                None => hex,
            };
            write_private(&out, contents.as_bytes())
                .with_context(|| format!("cannot write {}", out.display()))?;
        }
        Command::Mint {
            key_file,
            subject,
            role,
            grids,
            ttl_s,
            kid,
        } => {
            let mut key = TokenKey::from_file(&key_file)?;
            if let Some(kid) = kid {
                key = key.signing_with(&kid)?;
            }
            let token = key.mint(&subject, role, &grids, Duration::from_secs(ttl_s))?;
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(token.as_bytes())?;
            stdout.write_all(b"\n")?;
        }
        Command::Revoke {
            kafka,
            subject,
            reason,
            revoked_by,
        } => {
            let now = helpgrid_common::time::now_millis();
            helpgrid_auth::follower::publish_revocation(
                &kafka,
                &subject,
                now,
                &reason,
                &revoked_by,
            )
            .await?;
            eprintln!(
                "revoked: tokens of {subject:?} issued before {now} ms (Unix) are refused by every verifier within seconds; mint a new one for the subject's new device"
            );
        }
    }
    Ok(())
}

/// Creates `path` (never overwriting) readable by its owner only.
fn write_private(path: &std::path::Path, contents: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_answers_version_and_every_flag_has_help() {
        use clap::CommandFactory;
        assert_eq!(
            helpgrid_common::cli::undocumented(&Command::command()),
            Vec::<String>::new()
        );
    }
}
