//! A three-node Kafka cluster of a test's own (deploy/local/kafka-cluster.sh), for broker
//! failures and the least-privilege run, in a state folder of its own so it never touches
//! the shared broker or another run's cluster.

use helpgrid_common::kafka::KafkaArgs;
use helpgrid_common::topics::Topics;
use rdkafka::consumer::{BaseConsumer, Consumer};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// The cluster, stopped and its folder removed when dropped.
pub struct OwnCluster(pub Cluster);

/// Drives the cluster's script (kill, pause, restart a node, find a leader, add users).
#[derive(Clone)]
pub struct Cluster {
    pub dir: String,
    pub script: PathBuf,
    pub bootstrap: String,
}

/// A short random hex string for folder and topic names.
pub fn uuid_like() -> String {
    format!("{:016x}", fastrand::u64(..))
}

impl OwnCluster {
    /// Starts three nodes; `sasl`: SCRAM authentication and ACLs enforced.
    pub fn start(sasl: bool) -> Self {
        let script =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/local/kafka-cluster.sh");
        let dir = format!(
            "/tmp/helpgrid-cluster-{}-{}",
            std::process::id(),
            &uuid_like()[..8]
        );
        let mut cluster = Cluster {
            dir,
            script,
            bootstrap: String::new(),
        };
        let args: &[&str] = if sasl {
            &["start", "--sasl"]
        } else {
            &["start"]
        };
        cluster.bootstrap = cluster.run(args).trim().to_owned();
        Self(cluster)
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(&self.0.script)
            .args(["stop", "--clean"])
            .env("HELPGRID_KAFKA_CLUSTER_DIR", &self.0.dir)
            .output();
    }
}

impl Cluster {
    pub fn run(&self, args: &[&str]) -> String {
        let out = Command::new("bash")
            .arg(&self.script)
            .args(args)
            .env("HELPGRID_KAFKA_CLUSTER_DIR", &self.dir)
            .output()
            .expect("run kafka-cluster.sh");
        assert!(
            out.status.success(),
            "kafka-cluster.sh {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The script's answer, trimmed, or `?` when it fails or says nothing (for reports that
    /// must not fail a run over a lookup).
    pub fn ask(&self, args: &[&str]) -> String {
        Command::new("bash")
            .arg(&self.script)
            .args(args)
            .env("HELPGRID_KAFKA_CLUSTER_DIR", &self.dir)
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
            .filter(|answer| !answer.is_empty())
            .unwrap_or_else(|| "?".into())
    }

    /// Client settings that log in as `user` (SASL/SCRAM-SHA-512) for a deployment's prefix.
    pub fn sasl_args(&self, prefix: &str, user: &str, password: &str) -> KafkaArgs {
        let mut args = KafkaArgs::new(self.bootstrap.clone(), prefix.to_owned());
        args.options = vec![
            ("security.protocol".into(), "SASL_PLAINTEXT".into()),
            ("sasl.mechanism".into(), "SCRAM-SHA-512".into()),
            ("sasl.username".into(), user.into()),
            ("sasl.password".into(), password.into()),
        ];
        args
    }

    /// The cluster's admin (a super user) for a deployment's prefix.
    pub fn admin_args(&self, prefix: &str) -> KafkaArgs {
        let password = std::fs::read_to_string(format!("{}/admin.password", self.dir))
            .expect("the cluster was started with --sasl");
        self.sasl_args(prefix, "admin", password.trim())
    }

    /// The node leading the most partitions of the grid-keyed topics (from the cluster's
    /// metadata; node ids are broker ids).
    pub fn busiest_leader(&self, topics: &Topics) -> String {
        self.busiest_leader_except(topics, None)
    }

    /// The active KRaft controller (the quorum's leader; every node here is a voter).
    pub fn active_controller(&self) -> String {
        let node = self.run(&["controller"]).trim().to_owned();
        assert!(
            ["1", "2", "3"].contains(&node.as_str()),
            "active controller not found: {node:?}"
        );
        node
    }

    /// [`Self::busiest_leader`] among the nodes other than `except` (which may lead the most).
    pub fn busiest_leader_except(&self, topics: &Topics, except: Option<&str>) -> String {
        let client: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .create()
            .expect("metadata client");
        let mut led: HashMap<i32, usize> = HashMap::new();
        for topic in topics.grid_keyed() {
            let metadata = client
                .fetch_metadata(Some(topic), Duration::from_secs(10))
                .expect("metadata");
            for t in metadata.topics() {
                for p in t.partitions() {
                    *led.entry(p.leader()).or_default() += 1;
                }
            }
        }
        for node in 1..=3 {
            led.entry(node).or_default();
        }
        led.into_iter()
            .filter(|(node, _)| *node > 0 && except != Some(node.to_string().as_str()))
            .max_by_key(|(node, n)| (*n, *node))
            .map(|(node, _)| node.to_string())
            .expect("some partition has a leader")
    }
}
