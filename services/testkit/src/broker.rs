//! A Kafka broker of a test's own, for faults that must not hit the shared broker (stopping
//! or restarting it would break every other test running at the time). Started and stopped
//! with `deploy/local/kafka.sh` in a state folder of its own; removed when dropped.

use std::path::PathBuf;
use std::process::Command;

pub struct OwnBroker {
    dir: String,
    script: PathBuf,
}

impl OwnBroker {
    /// Starts the broker; returns it and its bootstrap address.
    pub fn start() -> (Self, String) {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/local/kafka.sh");
        let dir = format!(
            "/tmp/helpgrid-kafka-own-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        );
        let broker = Self { dir, script };
        let out = broker.run("start");
        (broker, out.trim().to_owned())
    }

    /// Runs a `kafka.sh` subcommand (`stop`, `start`, `restart`, `kill`) on this broker.
    pub fn run(&self, command: &str) -> String {
        let out = Command::new("bash")
            .arg(&self.script)
            .arg(command)
            .env("HELPGRID_KAFKA_DIR", &self.dir)
            .output()
            .expect("run kafka.sh");
        assert!(
            out.status.success(),
            "kafka.sh {command} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(&self.script)
            .args(["stop", "--clean"])
            .env("HELPGRID_KAFKA_DIR", &self.dir)
            .output();
    }
}
