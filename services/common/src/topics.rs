//! HelpGrid's topics, and creating them at start-up.
//!
//! help events, incident commands and incident events are keyed by grid id and must have the
//! same partition count, so partition N of each belongs to the same router instance. The
//! roster is compacted and keyed by responder id; every router reads all of it.

use crate::kafka::KafkaArgs;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    pub help_events: String,
    pub incident_commands: String,
    pub incident_events: String,
    pub roster: String,
    pub dead_letters: String,
    /// Webhook subscriptions (compacted), written and read by helpgrid-notify.
    pub notify_subscriptions: String,
}

impl Topics {
    pub fn with_prefix(prefix: &str) -> Self {
        Self {
            help_events: format!("{prefix}help-events"),
            incident_commands: format!("{prefix}incident-commands"),
            incident_events: format!("{prefix}incident-events"),
            roster: format!("{prefix}roster"),
            dead_letters: format!("{prefix}dead-letters"),
            notify_subscriptions: format!("{prefix}notify-subscriptions"),
        }
    }

    /// The three topics that must be co-partitioned by grid.
    pub fn grid_keyed(&self) -> [&str; 3] {
        [
            &self.help_events,
            &self.incident_commands,
            &self.incident_events,
        ]
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    #[error("cannot create topic {topic}: {source}")]
    Create { topic: String, source: KafkaError },
    #[error("cannot read metadata of topic {topic}: {source}")]
    Metadata { topic: String, source: KafkaError },
    #[error("topic {topic} does not exist")]
    Missing { topic: String },
    #[error(
        "grid-keyed topics must have the same partition count, found {counts:?}; \
         add partitions so they match"
    )]
    NotCoPartitioned { counts: Vec<(String, usize)> },
}

/// Creates any missing topic (existing ones are left as they are), then checks that the
/// grid-keyed topics are co-partitioned. Returns their common partition count.
pub async fn ensure_topics(args: &KafkaArgs, topics: &Topics) -> Result<usize, TopicError> {
    let admin: AdminClient<DefaultClientContext> = args
        .admin_config("helpgrid-admin")
        .create()
        .map_err(|source| TopicError::Create {
            topic: "(admin client)".into(),
            source,
        })?;
    let replication = args.topic_replication;
    let partitions = args.topic_partitions;
    let mut wanted: Vec<NewTopic> = topics
        .grid_keyed()
        .into_iter()
        .map(|name| NewTopic::new(name, partitions, TopicReplication::Fixed(replication)))
        .collect();
    wanted.push(
        NewTopic::new(
            &topics.roster,
            partitions,
            TopicReplication::Fixed(replication),
        )
        .set("cleanup.policy", "compact"),
    );
    wanted.push(NewTopic::new(
        &topics.dead_letters,
        partitions,
        TopicReplication::Fixed(replication),
    ));
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .create_topics(&wanted, &options)
        .await
        .map_err(|source| TopicError::Create {
            topic: "(all)".into(),
            source,
        })?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(TopicError::Create {
                    topic,
                    source: KafkaError::AdminOp(code),
                });
            }
        }
    }
    // Wait for every topic's metadata, so readers that start next see all partitions.
    partition_count(&admin, &topics.roster).await?;
    partition_count(&admin, &topics.dead_letters).await?;
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

/// Partition count of a topic, waiting briefly for metadata of a just-created topic.
pub async fn partition_count(
    admin: &AdminClient<DefaultClientContext>,
    topic: &str,
) -> Result<usize, TopicError> {
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
            return Ok(t.partitions().len());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(TopicError::Missing {
        topic: topic.to_owned(),
    })
}
