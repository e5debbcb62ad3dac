//! HelpGrid's topics: their names, the settings they are created with, and the start-up check
//! that refuses settings which would lose state.
//!
//! help events, incident commands, incident events and incident state are partitioned by grid
//! and must have the same partition count, so partition N of each belongs to the same router
//! instance. incident-state is keyed by incident id (compacted: the latest snapshot of every
//! open or recently closed incident), written to its grid's partition explicitly. The roster
//! is compacted and keyed by responder id; every router reads all of it.
//!
//! Nothing open may depend on a retention window: the compacted topics keep their records
//! until a tombstone, the logs (`*-events`, commands, dead letters) are deleted after an
//! explicit retention that the operator chooses.

use crate::kafka::KafkaArgs;
use rdkafka::admin::{
    AdminClient, AdminOptions, ConfigResourceResult, NewTopic, ResourceSpecifier, TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use std::time::Duration;

// The compacted topics are restored from by reading them whole, so what a restore reads is
// the live keys plus what the log cleaner has not removed yet: the active segment (never
// cleaned), rolled segments the cleaner has not reached, and tombstones younger than
// delete.retention.ms. These settings keep that remainder small (docs/performance.md, "Restore
// times"); none of them can lose a live record, so the start-up check only warns about them.
/// Segments of the compacted topics roll at least this often...
const COMPACTED_SEGMENT_MS: &str = "600000";
/// ...or at this size (1 MiB, Kafka's smallest), whichever comes first, so a burst does not
/// leave a large active segment uncompacted: snapshots are lz4-compressed to ≈ 50 bytes, and
/// 16 MiB segments held 330,000 of them, all read by every restore (measured, restore bench).
const COMPACTED_SEGMENT_BYTES: &str = "1048576";
/// The cleaner compacts a compacted topic once a tenth of it is superseded records...
const COMPACTED_DIRTY_RATIO: &str = "0.1";
/// ...and any rolled segment within 15 minutes, however small the superseded part.
const COMPACTED_MAX_LAG_MS: &str = "900000";
/// Tombstones stay an hour after the cleaner first passed them (Kafka's default: a day). A
/// reader that starts before and reads past them within the hour still sees them; restores
/// read for at most 5 minutes.
const COMPACTED_DELETE_RETENTION_MS: &str = "3600000";
/// Largest record of the incident topics: an incident snapshot is a few hundred bytes, a
/// generous bound keeps a runaway record from being accepted silently.
const INCIDENT_MAX_MESSAGE_BYTES: &str = "1048576";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    pub help_events: String,
    pub incident_commands: String,
    pub incident_events: String,
    /// Compacted: incident id → the incident's latest snapshot; a tombstone once closed and
    /// past the closed-retention window. What the router and the status service restore from.
    pub incident_state: String,
    pub roster: String,
    pub dead_letters: String,
    /// Webhook subscriptions (compacted), written and read by helpgrid-notify.
    pub notify_subscriptions: String,
    /// Revoked sign-ins (compacted), key = token subject: written by
    /// `helpgrid-token revoke`, followed by every service that verifies tokens.
    pub revocations: String,
    /// Uses of one-time sign-in links (a log kept a day: links live minutes), key = a hash of
    /// the link's signature: written and followed by every status instance, so a link signs
    /// in once across all of them.
    pub app_links: String,
}

impl Topics {
    pub fn with_prefix(prefix: &str) -> Self {
        Self {
            help_events: format!("{prefix}help-events"),
            incident_commands: format!("{prefix}incident-commands"),
            incident_events: format!("{prefix}incident-events"),
            incident_state: format!("{prefix}incident-state"),
            roster: format!("{prefix}roster"),
            dead_letters: format!("{prefix}dead-letters"),
            notify_subscriptions: format!("{prefix}notify-subscriptions"),
            revocations: format!("{prefix}revocations"),
            app_links: format!("{prefix}app-links"),
        }
    }

    /// The topics that must be co-partitioned by grid.
    pub fn grid_keyed(&self) -> [&str; 4] {
        [
            &self.help_events,
            &self.incident_commands,
            &self.incident_events,
            &self.incident_state,
        ]
    }

    /// Every topic with the settings it must have.
    fn plans(&self, args: &KafkaArgs) -> Vec<TopicPlan<'_>> {
        let hours = |h: u64| Keep::Delete {
            retention_ms: h.saturating_mul(3_600_000),
        };
        vec![
            TopicPlan::new(&self.help_events, hours(args.input_retention_hours)),
            TopicPlan::new(&self.incident_commands, hours(args.input_retention_hours)),
            TopicPlan::new(
                &self.incident_events,
                hours(args.incident_events_retention_hours),
            )
            .max_message_bytes(),
            TopicPlan::new(&self.incident_state, Keep::Compact).max_message_bytes(),
            TopicPlan::new(&self.roster, Keep::Compact),
            TopicPlan::new(&self.revocations, Keep::Compact),
            // A link is accepted for at most 15 minutes: a day of uses covers it with room for
            // clock skew and a status instance started late.
            TopicPlan::new(
                &self.app_links,
                Keep::Delete {
                    retention_ms: 86_400_000,
                },
            ),
            TopicPlan::new(&self.dead_letters, hours(args.dead_letter_retention_hours)),
        ]
    }
}

/// How a topic keeps its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keep {
    /// A table: the latest record per key, kept until a tombstone. Never deleted by age.
    Compact,
    /// A log: records deleted after `retention_ms`.
    Delete { retention_ms: u64 },
}

struct TopicPlan<'a> {
    name: &'a str,
    keep: Keep,
    limit_message_bytes: bool,
}

impl<'a> TopicPlan<'a> {
    fn new(name: &'a str, keep: Keep) -> Self {
        Self {
            name,
            keep,
            limit_message_bytes: false,
        }
    }

    fn max_message_bytes(mut self) -> Self {
        self.limit_message_bytes = true;
        self
    }

    /// (key, value) pairs the topic is created with.
    fn settings(&self, min_insync: i32) -> Vec<(&'static str, String)> {
        let mut settings = vec![("min.insync.replicas", min_insync.to_string())];
        match self.keep {
            Keep::Compact => settings.extend([
                ("cleanup.policy", "compact".to_owned()),
                ("segment.ms", COMPACTED_SEGMENT_MS.to_owned()),
                ("segment.bytes", COMPACTED_SEGMENT_BYTES.to_owned()),
                (
                    "min.cleanable.dirty.ratio",
                    COMPACTED_DIRTY_RATIO.to_owned(),
                ),
                ("max.compaction.lag.ms", COMPACTED_MAX_LAG_MS.to_owned()),
                (
                    "delete.retention.ms",
                    COMPACTED_DELETE_RETENTION_MS.to_owned(),
                ),
            ]),
            Keep::Delete { retention_ms } => settings.extend([
                ("cleanup.policy", "delete".to_owned()),
                ("retention.ms", retention_ms.to_string()),
            ]),
        }
        if self.limit_message_bytes {
            settings.push(("max.message.bytes", INCIDENT_MAX_MESSAGE_BYTES.to_owned()));
        }
        settings
    }
}

/// min.insync.replicas for topics we create: 2 once there are 3 replicas (one broker may be
/// down and writes go on), else 1 (a single-broker or two-broker cluster stays writable).
pub fn min_insync_replicas(replication: i32) -> i32 {
    if replication >= 3 { 2 } else { 1 }
}

#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    #[error("cannot create topic {topic}: {source}")]
    Create { topic: String, source: KafkaError },
    #[error("cannot read metadata of topic {topic}: {source}")]
    Metadata { topic: String, source: KafkaError },
    #[error("cannot read the settings of topic {topic}: {source}")]
    Describe { topic: String, source: KafkaError },
    #[error("topic {topic} does not exist")]
    Missing { topic: String },
    #[error(
        "topic {topic} does not exist and this service's Kafka user may not create it ({source}); \
         create the topics beforehand (deploy/kubernetes/strimzi.yaml has a KafkaTopic for each) \
         or grant the user Create"
    )]
    MayNotCreate { topic: String, source: KafkaError },
    #[error(
        "grid-keyed topics must have the same partition count, found {counts:?}; \
         add partitions so they match"
    )]
    NotCoPartitioned { counts: Vec<(String, usize)> },
    #[error("refusing to start: topic {topic} has {setting}={found}, which {risk}; fix: {fix}")]
    Unsafe {
        topic: String,
        setting: &'static str,
        found: String,
        risk: &'static str,
        fix: String,
    },
}

/// Creates any missing topic with explicit settings (existing ones are left as they are),
/// checks that no topic's settings would lose state, and that the grid-keyed topics are
/// co-partitioned. Returns their common partition count.
pub async fn ensure_topics(args: &KafkaArgs, topics: &Topics) -> Result<usize, TopicError> {
    let admin: AdminClient<DefaultClientContext> = args
        .admin_config("helpgrid-admin")
        .create()
        .map_err(|source| TopicError::Create {
            topic: "(admin client)".into(),
            source,
        })?;
    let replication = args.topic_replication;
    let min_insync = min_insync_replicas(replication);
    let plans = topics.plans(args);
    let settings: Vec<Vec<(&'static str, String)>> =
        plans.iter().map(|p| p.settings(min_insync)).collect();
    // Only the missing topics are created: asking for an existing one needs Create too, which
    // a least-privilege user does not have.
    let mut missing = Vec::new();
    for plan in &plans {
        if !topic_exists(&admin, plan.name)? {
            missing.push(plan.name);
        }
    }
    let wanted: Vec<NewTopic> = plans
        .iter()
        .zip(&settings)
        .filter(|(plan, _)| missing.contains(&plan.name))
        .map(|(plan, settings)| {
            settings.iter().fold(
                NewTopic::new(
                    plan.name,
                    args.topic_partitions,
                    TopicReplication::Fixed(replication),
                ),
                |topic, (key, value)| topic.set(key, value),
            )
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = if wanted.is_empty() {
        Vec::new()
    } else {
        admin
            .create_topics(&wanted, &options)
            .await
            .map_err(|source| TopicError::Create {
                topic: "(all)".into(),
                source,
            })?
    };
    check_created(results)?;
    // Wait for every topic's metadata, so readers that start next see all partitions.
    let mut replicas = Vec::new();
    for plan in &plans {
        replicas.push(topic_shape(&admin, plan.name).await?.1);
    }
    let specifiers: Vec<ResourceSpecifier> = plans
        .iter()
        .map(|p| ResourceSpecifier::Topic(p.name))
        .collect();
    let described = admin
        .describe_configs(&specifiers, &options)
        .await
        .map_err(|source| TopicError::Describe {
            topic: "(all)".into(),
            source,
        })?;
    for ((plan, found), replicas) in plans.iter().zip(described).zip(replicas) {
        check_settings(plan, &found_settings(plan.name, found)?, replicas)?;
    }
    let mut counts = Vec::new();
    for name in topics.grid_keyed() {
        counts.push((name.to_owned(), partition_count(&admin, name).await?));
    }
    let first = counts[0].1;
    if counts.iter().any(|(_, n)| *n != first) {
        return Err(TopicError::NotCoPartitioned { counts });
    }
    Ok(first)
}

/// The answers to a CreateTopics request: a topic that exists already is fine (another
/// instance starting at the same moment created it first); a refusal for lack of rights says
/// so, as it needs an operator rather than a retry.
fn check_created(
    results: Vec<Result<String, (String, RDKafkaErrorCode)>>,
) -> Result<(), TopicError> {
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((
                topic,
                code @ (RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::ClusterAuthorizationFailed),
            )) => {
                return Err(TopicError::MayNotCreate {
                    topic,
                    source: KafkaError::AdminOp(code),
                });
            }
            Err((topic, code)) => {
                return Err(TopicError::Create {
                    topic,
                    source: KafkaError::AdminOp(code),
                });
            }
        }
    }
    Ok(())
}

/// Creates the compacted topic `name` with `partitions` partitions if it is missing (with the
/// same explicit settings as the other tables), then refuses settings that would lose its
/// records, as [`ensure_topics`] does for all of them. For a tool that needs one table
/// (`helpgrid-token revoke`), not the whole set.
pub async fn ensure_compacted_topic(
    args: &KafkaArgs,
    name: &str,
    partitions: i32,
) -> Result<(), TopicError> {
    let admin: AdminClient<DefaultClientContext> = args
        .admin_config("helpgrid-admin")
        .create()
        .map_err(|source| TopicError::Create {
            topic: "(admin client)".into(),
            source,
        })?;
    let replication = args.topic_replication;
    let plan = TopicPlan::new(name, Keep::Compact);
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    if !topic_exists(&admin, name)? {
        let settings = plan.settings(min_insync_replicas(replication));
        let wanted = settings.iter().fold(
            NewTopic::new(name, partitions, TopicReplication::Fixed(replication)),
            |topic, (key, value)| topic.set(key, value),
        );
        let results = admin
            .create_topics([&wanted], &options)
            .await
            .map_err(|source| TopicError::Create {
                topic: name.to_owned(),
                source,
            })?;
        check_created(results)?;
    }
    let replicas = topic_shape(&admin, name).await?.1;
    let described = admin
        .describe_configs([&ResourceSpecifier::Topic(name)], &options)
        .await
        .map_err(|source| TopicError::Describe {
            topic: name.to_owned(),
            source,
        })?;
    for found in described {
        check_settings(&plan, &found_settings(name, found)?, replicas)?;
    }
    Ok(())
}

/// The settings the broker reports for a topic, as (name, value).
fn found_settings(
    topic: &str,
    described: ConfigResourceResult,
) -> Result<Vec<(String, String)>, TopicError> {
    let resource = described.map_err(|code| TopicError::Describe {
        topic: topic.to_owned(),
        source: KafkaError::AdminOp(code),
    })?;
    Ok(resource
        .entries
        .into_iter()
        .filter_map(|e| e.value.map(|v| (e.name, v)))
        .collect())
}

fn setting<'s>(found: &'s [(String, String)], name: &str) -> Option<&'s str> {
    found
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Refuses settings under which Kafka would drop records the services still need, or refuse
/// their writes. `replicas`: the topic's replication factor.
fn check_settings(
    plan: &TopicPlan<'_>,
    found: &[(String, String)],
    replicas: usize,
) -> Result<(), TopicError> {
    let topic = plan.name;
    let alter = |config: &str| {
        format!(
            "kafka-configs.sh --bootstrap-server <brokers> --alter --entity-type topics \
             --entity-name {topic} --add-config {config}"
        )
    };
    let policy = setting(found, "cleanup.policy").unwrap_or("delete");
    let policies: Vec<&str> = policy.split(',').map(str::trim).collect();
    match plan.keep {
        Keep::Compact => {
            if !policies.contains(&"compact") {
                return Err(TopicError::Unsafe {
                    topic: topic.to_owned(),
                    setting: "cleanup.policy",
                    found: policy.to_owned(),
                    risk: "deletes records by age although this topic holds state that lasts as long as it is open",
                    fix: alter("cleanup.policy=compact"),
                });
            }
            let retention = setting(found, "retention.ms").unwrap_or("-1");
            if policies.contains(&"delete") && retention != "-1" {
                return Err(TopicError::Unsafe {
                    topic: topic.to_owned(),
                    setting: "retention.ms",
                    found: format!("{retention} with cleanup.policy={policy}"),
                    risk: "deletes state older than the retention even while it is still open",
                    fix: alter("cleanup.policy=compact"),
                });
            }
            for (name, value) in slow_restore_settings(found) {
                tracing::warn!(
                    topic,
                    setting = name,
                    found = value,
                    wanted = planned_compacted_setting(name),
                    fix = %alter(&format!("{name}={}", planned_compacted_setting(name))),
                    "compacted topic keeps more uncompacted records than planned: restores read them all and take longer"
                );
            }
        }
        Keep::Delete { .. } => {
            if policies.contains(&"compact") {
                return Err(TopicError::Unsafe {
                    topic: topic.to_owned(),
                    setting: "cleanup.policy",
                    found: policy.to_owned(),
                    risk: "keeps only the last record per grid: help events, commands or incident events would vanish",
                    fix: alter("cleanup.policy=delete"),
                });
            }
        }
    }
    if let Some(min_insync) = setting(found, "min.insync.replicas")
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|m| *m > replicas)
    {
        return Err(TopicError::Unsafe {
            topic: topic.to_owned(),
            setting: "min.insync.replicas",
            found: min_insync.to_string(),
            risk: "is more than the topic's replicas, so no write with acks=all can succeed",
            fix: alter(&format!("min.insync.replicas={replicas}")),
        });
    }
    Ok(())
}

/// The settings of a compacted topic above what HelpGrid creates it with, which make a
/// restore read more uncompacted records (a topic created by an older version, or by hand).
fn slow_restore_settings(found: &[(String, String)]) -> Vec<(&'static str, String)> {
    [
        "segment.ms",
        "segment.bytes",
        "max.compaction.lag.ms",
        "delete.retention.ms",
    ]
    .into_iter()
    .filter_map(|name| {
        let value = setting(found, name)?;
        let above = value.parse::<u64>().is_ok_and(|v| {
            planned_compacted_setting(name)
                .parse::<u64>()
                .is_ok_and(|p| v > p)
        });
        above.then(|| (name, value.to_owned()))
    })
    .collect()
}

fn planned_compacted_setting(name: &str) -> &'static str {
    match name {
        "segment.ms" => COMPACTED_SEGMENT_MS,
        "segment.bytes" => COMPACTED_SEGMENT_BYTES,
        "max.compaction.lag.ms" => COMPACTED_MAX_LAG_MS,
        "delete.retention.ms" => COMPACTED_DELETE_RETENTION_MS,
        _ => "",
    }
}

/// One setting of an existing topic as the broker reports it (None: not reported). The
/// router's local checkpoints take their age limit from incident-state's
/// `delete.retention.ms`.
pub async fn topic_setting(
    args: &KafkaArgs,
    topic: &str,
    name: &str,
) -> Result<Option<String>, TopicError> {
    let admin: AdminClient<DefaultClientContext> = args
        .admin_config("helpgrid-admin")
        .create()
        .map_err(|source| TopicError::Describe {
            topic: topic.to_owned(),
            source,
        })?;
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let described = admin
        .describe_configs(&[ResourceSpecifier::Topic(topic)], &options)
        .await
        .map_err(|source| TopicError::Describe {
            topic: topic.to_owned(),
            source,
        })?;
    let mut found = Vec::new();
    for resource in described {
        found.extend(found_settings(topic, resource)?);
    }
    Ok(setting(&found, name).map(str::to_owned))
}

/// Whether `topic` exists (its metadata names partitions), as far as this user may see.
fn topic_exists(
    admin: &AdminClient<DefaultClientContext>,
    topic: &str,
) -> Result<bool, TopicError> {
    let metadata = admin
        .inner()
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(|source| TopicError::Metadata {
            topic: topic.to_owned(),
            source,
        })?;
    Ok(metadata
        .topics()
        .first()
        .is_some_and(|t| t.error().is_none() && !t.partitions().is_empty()))
}

/// Partition count of a topic, waiting briefly for metadata of a just-created topic.
pub async fn partition_count(
    admin: &AdminClient<DefaultClientContext>,
    topic: &str,
) -> Result<usize, TopicError> {
    topic_shape(admin, topic)
        .await
        .map(|(partitions, _)| partitions)
}

/// (partition count, replication factor) of a topic, waiting briefly for metadata of a
/// just-created topic.
async fn topic_shape(
    admin: &AdminClient<DefaultClientContext>,
    topic: &str,
) -> Result<(usize, usize), TopicError> {
    for _ in 0..50 {
        let metadata = admin
            .inner()
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .map_err(|source| TopicError::Metadata {
                topic: topic.to_owned(),
                source,
            })?;
        if let Some(t) = metadata.topics().first()
            && t.error().is_none()
            && !t.partitions().is_empty()
        {
            let replicas = t
                .partitions()
                .iter()
                .map(|p| p.replicas().len())
                .min()
                .unwrap_or(0);
            return Ok((t.partitions().len(), replicas));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(TopicError::Missing {
        topic: topic.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn refused_setting(result: Result<(), TopicError>) -> Option<&'static str> {
        match result {
            Err(TopicError::Unsafe { setting, .. }) => Some(setting),
            _ => None,
        }
    }

    #[test]
    fn state_topic_with_delete_policy_is_refused_with_the_fix() {
        let plan = TopicPlan::new("p.incident-state", Keep::Compact);
        let result = check_settings(&plan, &found(&[("cleanup.policy", "delete")]), 1);
        let message = result.as_ref().err().map(ToString::to_string);
        assert_eq!(refused_setting(result), Some("cleanup.policy"));
        assert!(
            message.is_some_and(|m| m.contains("p.incident-state")
                && m.contains("--add-config cleanup.policy=compact"))
        );
    }

    #[test]
    fn state_topic_compacted_with_a_finite_retention_is_refused() {
        let plan = TopicPlan::new("s", Keep::Compact);
        let settings = found(&[
            ("cleanup.policy", "compact,delete"),
            ("retention.ms", "604800000"),
        ]);
        assert_eq!(
            refused_setting(check_settings(&plan, &settings, 1)),
            Some("retention.ms")
        );
        let forever = found(&[("cleanup.policy", "compact,delete"), ("retention.ms", "-1")]);
        assert!(check_settings(&plan, &forever, 1).is_ok());
        assert!(check_settings(&plan, &found(&[("cleanup.policy", "compact")]), 1).is_ok());
    }

    #[test]
    fn compacted_topics_are_planned_to_keep_the_uncompacted_tail_small() {
        let settings = TopicPlan::new("s", Keep::Compact).settings(1);
        for (name, value) in [
            ("segment.ms", "600000"),
            ("segment.bytes", "1048576"),
            ("max.compaction.lag.ms", "900000"),
            ("delete.retention.ms", "3600000"),
        ] {
            assert!(settings.contains(&(name, value.to_owned())), "{name}");
        }
        // A topic created with them passes quietly; one from an older version (hourly
        // segments, a day of tombstones) still starts, with a warning naming each setting.
        let ours: Vec<(String, String)> = settings
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        assert!(slow_restore_settings(&ours).is_empty());
        assert!(check_settings(&TopicPlan::new("s", Keep::Compact), &ours, 1).is_ok());
        let older = found(&[
            ("cleanup.policy", "compact"),
            ("segment.ms", "3600000"),
            ("segment.bytes", "1073741824"),
            ("delete.retention.ms", "86400000"),
        ]);
        let slow: Vec<&str> = slow_restore_settings(&older)
            .iter()
            .map(|(name, _)| *name)
            .collect();
        assert_eq!(slow, ["segment.ms", "segment.bytes", "delete.retention.ms"]);
        assert!(check_settings(&TopicPlan::new("s", Keep::Compact), &older, 1).is_ok());
    }

    #[test]
    fn a_compacted_log_topic_is_refused() {
        let plan = TopicPlan::new("e", Keep::Delete { retention_ms: 1 });
        let settings = found(&[("cleanup.policy", "compact")]);
        assert_eq!(
            refused_setting(check_settings(&plan, &settings, 1)),
            Some("cleanup.policy")
        );
    }

    #[test]
    fn min_insync_above_the_replicas_is_refused() {
        let plan = TopicPlan::new("e", Keep::Delete { retention_ms: 1 });
        let settings = found(&[("cleanup.policy", "delete"), ("min.insync.replicas", "2")]);
        assert_eq!(
            refused_setting(check_settings(&plan, &settings, 1)),
            Some("min.insync.replicas")
        );
        assert!(check_settings(&plan, &settings, 3).is_ok());
    }

    #[test]
    fn topics_are_planned_with_explicit_policy_and_retention() {
        let args = KafkaArgs::new("b:9092", "p.");
        let topics = Topics::with_prefix("p.");
        let plans = topics.plans(&args);
        let events = plans
            .iter()
            .find(|p| p.name == "p.incident-events")
            .map(|p| p.settings(1));
        let week = (7 * 24 * 3_600_000u64).to_string();
        assert!(
            events
                .as_ref()
                .is_some_and(|s| s.contains(&("retention.ms", week.clone()))
                    && s.contains(&("cleanup.policy", "delete".to_owned())))
        );
        let state = plans
            .iter()
            .find(|p| p.name == "p.incident-state")
            .map(|p| p.settings(2));
        assert!(
            state.is_some_and(|s| s.contains(&("cleanup.policy", "compact".to_owned()))
                && s.contains(&("min.insync.replicas", "2".to_owned()))
                && !s.iter().any(|(k, _)| *k == "retention.ms"))
        );
        assert_eq!(plans.len(), 8);
    }
}
