//! The router's settings: command-line flags, each with an environment variable.

use crate::domain::Policy;
use helpgrid_common::kafka::KafkaArgs;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "helpgrid-router",
    version,
    about = "Routes HelpGrid help events to on-duty responders"
)]
pub struct RouterArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Consumer group shared by all router instances of one deployment. Default:
    /// `<topic prefix>router`, so deployments with different prefixes never share a group.
    #[arg(long, env = "HELPGRID_ROUTER_GROUP")]
    pub group_id: Option<String>,
    /// Name of this instance, unique within the deployment and stable across its restarts
    /// (e.g. the StatefulSet pod name). Default: the host name ($HOSTNAME), else `local`.
    #[arg(long, env = "HELPGRID_ROUTER_INSTANCE")]
    pub instance_id: Option<String>,
    /// Transactional id (and static group membership) of this instance: stable across restarts
    /// of the same instance (so a restart fences its predecessor), different between
    /// instances. Default: `<topic prefix>router-<instance id>`.
    #[arg(long, env = "HELPGRID_ROUTER_TRANSACTIONAL_ID")]
    pub transactional_id: Option<String>,
    /// Serve Prometheus metrics (`/metrics`), liveness (`/livez`) and readiness (`/readyz`)
    /// on this address.
    #[arg(long, env = "HELPGRID_ROUTER_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Folder for local checkpoints of the incident-state partitions this instance owns; the
    /// instance uses `<state dir>/<transactional id>/`. A restart reads its checkpoints and
    /// only the changelog written after them. Empty: no checkpoints (restores read
    /// incident-state from its start). Give each instance a persistent folder of its own
    /// (a StatefulSet volume); losing it only makes the next restore slower.
    #[arg(
        long,
        env = "HELPGRID_ROUTER_STATE_DIR",
        default_value = ".helpgrid/state"
    )]
    pub state_dir: String,
    /// Least seconds between two checkpoints of a changed partition (one is also written
    /// right after a restore and at a clean shutdown). Rounds are also at least 100 times as
    /// far apart as the last one took to encode on the pipeline's thread.
    #[arg(
        long,
        env = "HELPGRID_ROUTER_CHECKPOINT_INTERVAL_S",
        default_value_t = 30.0
    )]
    pub checkpoint_interval_s: f64,
    /// Most input records handled in one Kafka transaction.
    #[arg(long, env = "HELPGRID_ROUTER_BATCH_MAX", default_value_t = DEFAULT_BATCH_MAX)]
    pub batch_max: usize,
    /// Milliseconds a batch keeps collecting input after its first record (up to
    /// `--batch-max`) before it is decided and committed. Every transaction costs the brokers
    /// its markers and coordinator writes whatever its size, so under steady load a few
    /// milliseconds here buy fewer, larger transactions; each press waits at most this long
    /// more. 0: decide whatever the first poll brought at once.
    #[arg(long, env = "HELPGRID_ROUTER_BATCH_LINGER_MS", default_value_t = 0.0)]
    pub batch_linger_ms: f64,
    /// Transactional pipelines in this instance, each with its own consumer (a member of the
    /// group, so it owns its share of the partitions) and its own transactional producer, so
    /// their commits overlap (as Kafka Streams runs one per stream thread). With more than
    /// one, pipeline n uses transactional id and group instance id `<transactional id>-<n>`
    /// and checkpoints in `<state dir>/<transactional id>-<n>/`. More pipelines than
    /// partitions leave some idle.
    #[arg(long, env = "HELPGRID_ROUTER_PIPELINES", default_value_t = 1)]
    pub pipelines: usize,
    /// Produce each batch while the one before it commits (on by default; `=false` turns it
    /// off): every pipeline gets a second transactional producer (id `<its transactional
    /// id>.next`) and the two take turns, a batch committing only after the one before it
    /// has. Without it, a press waits for the commit in flight and then for its own, and the
    /// next transaction on the one producer is refused (CONCURRENT_TRANSACTIONS, and
    /// librdkafka waits 20 ms) while the broker writes the previous one's markers.
    #[arg(
        long,
        env = "HELPGRID_ROUTER_OVERLAP_COMMITS",
        default_value_t = true,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    pub overlap_commits: bool,
    /// With `--overlap-commits`: how many transactional producers take turns (at least 2;
    /// the third and later have ids `<transactional id>.next<n>`). A producer's next
    /// transaction is refused by the coordinator (CONCURRENT_TRANSACTIONS, and librdkafka
    /// then waits 20 ms) until the markers of its previous one are written: more producers
    /// leave each one longer between its transactions.
    #[arg(long, env = "HELPGRID_ROUTER_OVERLAP_PRODUCERS", default_value_t = DEFAULT_OVERLAP_PRODUCERS)]
    pub overlap_producers: usize,
    #[command(flatten)]
    pub policy: PolicyArgs,
}

/// The routing rules; see `domain::policy`.
#[derive(Debug, Clone, clap::Args)]
pub struct PolicyArgs {
    /// Seconds a responder has to acknowledge a normal-priority incident.
    #[arg(long, env = "HELPGRID_ACK_DEADLINE_NORMAL_S", default_value_t = 120.0)]
    pub ack_deadline_normal_s: f64,
    /// Seconds a responder has to acknowledge a high-priority incident (urgent and medical
    /// presses, intrusion detections, a repeated help press).
    #[arg(long, env = "HELPGRID_ACK_DEADLINE_HIGH_S", default_value_t = 60.0)]
    pub ack_deadline_high_s: f64,
    /// Seconds a responder has to acknowledge a critical incident (fire, fall and fight
    /// detections, a repeated urgent or medical press).
    #[arg(long, env = "HELPGRID_ACK_DEADLINE_CRITICAL_S", default_value_t = 30.0)]
    pub ack_deadline_critical_s: f64,
    /// Offers to different responders at one escalation level before escalating.
    #[arg(long, env = "HELPGRID_MAX_ATTEMPTS_PER_LEVEL", default_value_t = 2)]
    pub max_attempts_per_level: u32,
    /// Camera detections under this confidence (0..1) open nothing.
    #[arg(long, env = "HELPGRID_CAMERA_MIN_CONFIDENCE", default_value_t = 0.6)]
    pub camera_min_confidence: f32,
    /// Repeats of the same camera and label within this many seconds attach to the incident.
    #[arg(long, env = "HELPGRID_CAMERA_DEDUP_WINDOW_S", default_value_t = 300.0)]
    pub camera_dedup_window_s: f64,
    /// Closed incidents are kept in memory this long (late repeats and commands).
    #[arg(long, env = "HELPGRID_CLOSED_RETENTION_S", default_value_t = 3600.0)]
    pub closed_retention_s: f64,
    /// `false` (the default): a new incident whose tracks are all assigned at their first
    /// level is one "opened and assigned" event carrying IncidentOpened.assigned, about half
    /// the incident events per press. gRPC Watch clients still see `opened` then `assigned`
    /// (the status service expands it). `true`: `opened`, then one `assigned` event per
    /// track, for Kafka consumers of incident-events written before IncidentOpened.assigned.
    #[arg(
        long,
        env = "HELPGRID_ROUTER_SEPARATE_ASSIGNED_EVENTS",
        default_value_t = false,
        action = clap::ArgAction::Set
    )]
    pub separate_assigned_events: bool,
}

fn millis(seconds: f64) -> i64 {
    // At least 1 ms: a zero deadline would fire in the same instant it is set.
    ((seconds * 1000.0).round() as i64).max(1)
}

impl PolicyArgs {
    pub fn to_policy(&self) -> Policy {
        Policy {
            ack_deadline_normal_ms: millis(self.ack_deadline_normal_s),
            ack_deadline_high_ms: millis(self.ack_deadline_high_s),
            ack_deadline_critical_ms: millis(self.ack_deadline_critical_s),
            max_attempts_per_level: self.max_attempts_per_level.max(1),
            camera_min_confidence: self.camera_min_confidence,
            camera_dedup_window_ms: millis(self.camera_dedup_window_s),
            closed_retention_ms: millis(self.closed_retention_s),
            separate_assigned_events: self.separate_assigned_events,
        }
    }
}

/// Everything `run` needs, already resolved.
#[derive(Debug, Clone)]
pub struct RouterConfig {
    pub kafka: KafkaArgs,
    pub group_id: String,
    pub transactional_id: String,
    pub batch_max: usize,
    /// How long a batch keeps collecting after its first record (see `--batch-linger-ms`).
    pub batch_linger: Duration,
    pub policy: Policy,
    /// Local checkpoints of incident-state; None: restores read incident-state from its start.
    pub checkpoint: Option<CheckpointConfig>,
    /// Transactional pipelines in this instance (see `--pipelines`); at least 1.
    pub pipelines: usize,
    /// Two producers per pipeline taking turns (see `--overlap-commits`).
    pub overlap_commits: bool,
    /// Producers taking turns with `overlap_commits` (see `--overlap-producers`); at least 2.
    pub overlap_producers: usize,
}

/// `--batch-max`'s default.
pub const DEFAULT_BATCH_MAX: usize = 500;

/// `--overlap-producers`' default.
pub const DEFAULT_OVERLAP_PRODUCERS: usize = 2;

impl RouterConfig {
    /// A router instance with the flags' defaults: group `<prefix>router`, no batch linger,
    /// no local checkpoints. Embedders (and tests) set other fields with struct update syntax.
    pub fn new(kafka: KafkaArgs, transactional_id: impl Into<String>, policy: Policy) -> Self {
        Self {
            group_id: format!("{}router", kafka.topic_prefix),
            kafka,
            transactional_id: transactional_id.into(),
            batch_max: DEFAULT_BATCH_MAX,
            batch_linger: Duration::ZERO,
            policy,
            checkpoint: None,
            pipelines: 1,
            overlap_commits: true,
            overlap_producers: DEFAULT_OVERLAP_PRODUCERS,
        }
    }

    /// The settings of pipeline `n` of this instance: the instance's own when it runs one
    /// pipeline; else its transactional id (also the group instance id) and checkpoint folder
    /// with `-<n>` appended, so pipelines fence and checkpoint apart.
    pub fn pipeline(&self, n: usize) -> RouterConfig {
        let mut config = self.clone();
        if self.pipelines <= 1 {
            return config;
        }
        config.transactional_id = format!("{}-{n}", self.transactional_id);
        if let Some(checkpoint) = config.checkpoint.as_mut() {
            let folder = checkpoint
                .dir
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
            checkpoint.dir.set_file_name(format!("{folder}-{n}"));
        }
        config
    }
}

/// Where and how often the router checkpoints its incident-state partitions locally.
#[derive(Debug, Clone)]
pub struct CheckpointConfig {
    /// This instance's own folder (`<state dir>/<transactional id>`).
    pub dir: PathBuf,
    /// Least time between two periodic checkpoints of a changed partition.
    pub interval: Duration,
    /// Oldest a checkpoint may be when records follow it: half of incident-state's
    /// `delete.retention.ms`, after which the log cleaner may have removed a tombstone
    /// written after it. Set from the topic at start-up.
    pub max_age: Duration,
}

impl CheckpointConfig {
    /// Checkpoints of the instance `transactional_id` under `state_dir`, written at most every
    /// `interval`; the maximum age starts at the planned `delete.retention.ms` / 2.
    pub fn new(state_dir: &std::path::Path, transactional_id: &str, interval: Duration) -> Self {
        // The id names the deployment (topic prefix) and the instance; only characters that
        // are safe in a file name are kept.
        let folder: String = transactional_id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        Self {
            dir: state_dir.join(folder),
            interval,
            max_age: Duration::from_secs(30 * 60),
        }
    }
}

impl RouterArgs {
    pub fn into_config(self) -> RouterConfig {
        let prefix = &self.kafka.topic_prefix;
        let instance = self
            .instance_id
            .clone()
            .filter(|i| !i.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
            .unwrap_or_else(|| "local".to_owned());
        let transactional_id = self
            .transactional_id
            .clone()
            .unwrap_or_else(|| format!("{prefix}router-{instance}"));
        let group_id = self
            .group_id
            .clone()
            .unwrap_or_else(|| format!("{prefix}router"));
        let checkpoint = (!self.state_dir.is_empty()).then(|| {
            CheckpointConfig::new(
                std::path::Path::new(&self.state_dir),
                &transactional_id,
                Duration::from_secs_f64(self.checkpoint_interval_s.max(0.0)),
            )
        });
        RouterConfig {
            kafka: self.kafka,
            group_id,
            transactional_id,
            batch_max: self.batch_max.max(1),
            batch_linger: Duration::from_secs_f64(self.batch_linger_ms.max(0.0) / 1000.0),
            policy: self.policy.to_policy(),
            checkpoint,
            pipelines: self.pipelines.max(1),
            overlap_commits: self.overlap_commits,
            overlap_producers: self.overlap_producers.max(2),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn the_command_line_answers_version_and_every_flag_has_help() {
        use clap::CommandFactory;
        assert_eq!(
            helpgrid_common::cli::undocumented(&RouterArgs::command()),
            Vec::<String>::new()
        );
    }

    fn config(args: &[&str]) -> RouterConfig {
        let mut all = vec!["helpgrid-router"];
        all.extend_from_slice(args);
        RouterArgs::try_parse_from(all)
            .map(RouterArgs::into_config)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn each_instance_checkpoints_in_its_own_folder_and_an_empty_state_dir_turns_it_off() {
        let a = config(&["--topic-prefix", "city-a.", "--instance-id", "r/0"]);
        let b = config(&["--topic-prefix", "city-b.", "--instance-id", "r/0"]);
        let dir = |c: &RouterConfig| c.checkpoint.as_ref().map(|k| k.dir.clone());
        assert_eq!(
            dir(&a),
            Some(PathBuf::from(".helpgrid/state/city-a.router-r_0"))
        );
        assert_ne!(dir(&a), dir(&b));
        assert!(config(&["--state-dir", ""]).checkpoint.is_none());
    }

    #[test]
    fn commits_overlap_by_default_and_the_flag_still_turns_them_on_or_off() {
        assert!(config(&[]).overlap_commits);
        assert!(config(&["--overlap-commits"]).overlap_commits);
        assert!(!config(&["--overlap-commits=false"]).overlap_commits);
        assert_eq!(config(&[]).overlap_producers, 2);
        assert_eq!(config(&["--overlap-producers", "1"]).overlap_producers, 2);
        assert_eq!(config(&["--overlap-producers", "3"]).overlap_producers, 3);
    }

    #[test]
    fn several_pipelines_each_get_their_own_transactional_id_and_checkpoint_folder() {
        let one = config(&["--topic-prefix", "c.", "--instance-id", "r0"]);
        assert_eq!(one.pipelines, 1);
        assert_eq!(one.pipeline(0).transactional_id, "c.router-r0");
        let two = config(&[
            "--topic-prefix",
            "c.",
            "--instance-id",
            "r0",
            "--pipelines",
            "2",
        ]);
        let dir = |c: &RouterConfig| c.checkpoint.as_ref().map(|k| k.dir.clone());
        assert_eq!(two.pipeline(0).transactional_id, "c.router-r0-0");
        assert_eq!(two.pipeline(1).transactional_id, "c.router-r0-1");
        assert_eq!(
            dir(&two.pipeline(1)),
            Some(PathBuf::from(".helpgrid/state/c.router-r0-1"))
        );
        assert_eq!(two.pipeline(1).group_id, "c.router");
        assert_eq!(config(&["--pipelines", "0"]).pipelines, 1);
    }

    #[test]
    fn group_and_transactional_ids_derive_from_the_topic_prefix_and_instance() {
        let a = config(&["--topic-prefix", "city-a.", "--instance-id", "r0"]);
        let b = config(&["--topic-prefix", "city-b.", "--instance-id", "r0"]);
        assert_eq!(a.group_id, "city-a.router");
        assert_eq!(a.transactional_id, "city-a.router-r0");
        assert_ne!(a.group_id, b.group_id);
        assert_ne!(a.transactional_id, b.transactional_id);
        let explicit = config(&["--group-id", "g", "--transactional-id", "t"]);
        assert_eq!(
            (
                explicit.group_id.as_str(),
                explicit.transactional_id.as_str()
            ),
            ("g", "t")
        );
    }
}
