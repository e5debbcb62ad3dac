//! A Kafka broker of a test's own, for faults that must not hit the shared broker (stopping
//! or restarting it would break every other test running at the time). Started and stopped
//! with `deploy/local/kafka.sh` in a state folder of its own; removed when dropped.

use std::path::PathBuf;
use std::process::Command;

pub struct OwnBroker {
    dir: String,
    script: PathBuf,
    /// A file of extra server properties (appended to the generated configuration).
    extra_props: Option<PathBuf>,
}

impl OwnBroker {
    /// Starts the broker; returns it and its bootstrap address.
    pub fn start() -> (Self, String) {
        Self::start_with(&[])
    }

    /// Starts the broker with extra server properties, e.g. a retention check every second.
    pub fn start_with(props: &[(&str, &str)]) -> (Self, String) {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/local/kafka.sh");
        let dir = format!(
            "/tmp/helpgrid-kafka-own-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        );
        let extra_props = (!props.is_empty()).then(|| {
            let path = PathBuf::from(format!("{dir}.properties"));
            let text: String = props.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
            std::fs::write(&path, text).expect("write the broker's extra properties");
            path
        });
        let broker = Self {
            dir,
            script,
            extra_props,
        };
        let out = broker.run("start");
        (broker, out.trim().to_owned())
    }

    /// The broker's log folder (`log.dirs`): one folder per topic partition, for tests and
    /// benchmarks that look at what the log cleaner left.
    pub fn data_dir(&self) -> PathBuf {
        PathBuf::from(&self.dir).join("data")
    }

    /// The broker's own log (`server.log`, the log cleaner's lines included), for a test that
    /// failed to say what the broker did.
    pub fn server_log(&self) -> PathBuf {
        PathBuf::from(&self.dir).join("logs").join("server.log")
    }

    /// The lines of [`Self::server_log`] that contain any of `needles`, the last `at_most`.
    pub fn server_log_lines(&self, needles: &[&str], at_most: usize) -> String {
        let text = std::fs::read_to_string(self.server_log()).unwrap_or_default();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| needles.iter().any(|n| l.contains(n)))
            .collect();
        lines[lines.len().saturating_sub(at_most)..].join("\n")
    }

    /// Runs a `kafka.sh` subcommand (`stop`, `start`, `restart`, `kill`) on this broker.
    pub fn run(&self, command: &str) -> String {
        let mut run = Command::new("bash");
        run.arg(&self.script)
            .arg(command)
            .env("HELPGRID_KAFKA_DIR", &self.dir);
        if let Some(props) = &self.extra_props {
            run.env("HELPGRID_KAFKA_EXTRA_PROPS", props);
        }
        let out = run.output().expect("run kafka.sh");
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
        if let Some(props) = &self.extra_props {
            let _ = std::fs::remove_file(props);
        }
    }
}
