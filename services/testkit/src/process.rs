//! HelpGrid services as child processes, so a test can SIGKILL one at any moment (a real
//! crash: no destructor, no flush, no abort of the open transaction) and start it again.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub struct ServiceProcess {
    child: Option<Child>,
    pub name: String,
    pub log: PathBuf,
}

/// Where child process logs go: `target/test-logs/`.
pub fn log_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/test-logs");
    let _ = std::fs::create_dir_all(&dir);
    dir
}

impl ServiceProcess {
    /// Starts `binary` with only `env` added to the environment; stdout and stderr go to
    /// `target/test-logs/<name>.log` (appended, so restarts of one instance share a file).
    pub fn spawn(binary: &Path, name: &str, env: &[(String, String)]) -> Self {
        Self::spawn_with_args(binary, name, &[], env)
    }

    /// As [`Self::spawn`], with command-line `args` (for servers configured by flags).
    pub fn spawn_with_args(
        binary: &Path,
        name: &str,
        args: &[String],
        env: &[(String, String)],
    ) -> Self {
        let log = log_dir().join(format!("{name}.log"));
        let file = File::options()
            .create(true)
            .append(true)
            .open(&log)
            .expect("open log file");
        let err = file.try_clone().expect("clone log file");
        let child = Command::new(binary)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        Self {
            child: Some(child),
            name: name.to_owned(),
            log,
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL, then reap.
    pub fn kill(mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, and wait up to `timeout` for a clean exit; panics if it does not stop.
    pub fn terminate(mut self, timeout: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status;
            }
            if started.elapsed() > timeout {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{} did not stop within {timeout:?} of SIGTERM; see {}",
                    self.name,
                    self.log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
