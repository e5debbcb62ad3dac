//! The processes under test, started from a build folder (target/release for figures that
//! mean something) with their output in the run's folder, and stopped with SIGTERM so they
//! shut down the way they do in production.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{bin} not found: build it first (cargo build --release -p {package})")]
    Missing { bin: PathBuf, package: String },
    #[error("cannot start {bin}: {source}")]
    Spawn {
        bin: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot create log file {path}: {source}")]
    Log {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{name} exited at start-up ({status}); see {log}")]
    Exited {
        name: String,
        status: std::process::ExitStatus,
        log: PathBuf,
    },
}

pub struct Service {
    pub name: String,
    child: Child,
    log: PathBuf,
}

/// A free loopback port (bound, read, released: another process could take it in between,
/// which is fine for a benchmark).
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Service {
    pub fn spawn(
        bin_dir: &Path,
        bin: &str,
        package: &str,
        args: &[String],
        env: &[(&str, String)],
        log_dir: &Path,
    ) -> Result<Self, ServiceError> {
        let path = bin_dir.join(bin);
        if !path.is_file() {
            return Err(ServiceError::Missing {
                bin: path,
                package: package.to_owned(),
            });
        }
        let log = log_dir.join(format!("{bin}.log"));
        let file = std::fs::File::create(&log).map_err(|source| ServiceError::Log {
            path: log.clone(),
            source,
        })?;
        let err = file.try_clone().map_err(|source| ServiceError::Log {
            path: log.clone(),
            source,
        })?;
        let mut command = Command::new(&path);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .env(
                "RUST_LOG",
                std::env::var("HELPGRID_LOAD_SERVICE_LOG").unwrap_or_else(|_| "warn".into()),
            );
        for (k, v) in env {
            command.env(k, v);
        }
        let child = command.spawn().map_err(|source| ServiceError::Spawn {
            bin: path.clone(),
            source,
        })?;
        tracing::info!(bin, pid = child.id(), log = %log.display(), "started");
        Ok(Self {
            name: bin.to_owned(),
            child,
            log,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// An error if the process has already exited.
    pub fn check_running(&mut self) -> Result<(), ServiceError> {
        match self.child.try_wait() {
            Ok(Some(status)) => Err(ServiceError::Exited {
                name: self.name.clone(),
                status,
                log: self.log.clone(),
            }),
            _ => Ok(()),
        }
    }

    /// SIGKILL (a crash: no flush, no abort of an open transaction), then reap.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then up to `grace` for a clean exit, then SIGKILL.
    pub fn stop(mut self, grace: Duration) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status();
        let started = Instant::now();
        while started.elapsed() < grace {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        tracing::warn!(name = %self.name, "did not stop in time; killing");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A run that fails part-way (an `?` in a benchmark) drops its services without stopping them:
/// they are killed then, so no process outlives the run. One stopped or killed already has
/// been reaped, and is left alone.
impl Drop for Service {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            tracing::warn!(name = %self.name, "still running when dropped; killing");
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
