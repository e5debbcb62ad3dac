//! Topic settings against a real broker: created with explicit policies and retention, and an
//! existing topic whose settings would lose state makes the router refuse to start, naming
//! the setting and the fix. Needs HELPGRID_TEST_KAFKA (scripts/test sets it).

use helpgrid_common::topics::{TopicError, Topics, ensure_topics};
use helpgrid_router::domain::Policy;
use helpgrid_testkit::kafka_args;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use std::collections::HashMap;
use std::time::Duration;

mod support;

async fn settings_of(
    admin: &AdminClient<DefaultClientContext>,
    topic: &str,
) -> HashMap<String, String> {
    let described = admin
        .describe_configs([&ResourceSpecifier::Topic(topic)], &AdminOptions::new())
        .await
        .expect("describe");
    described
        .into_iter()
        .next()
        .expect("one resource")
        .expect("topic settings")
        .entries
        .into_iter()
        .filter_map(|e| e.value.map(|v| (e.name, v)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_are_created_with_explicit_cleanup_policy_and_retention() {
    let mut args = kafka_args();
    args.incident_events_retention_hours = 48;
    let topics = Topics::with_prefix(&args.topic_prefix);
    assert_eq!(ensure_topics(&args, &topics).await.expect("topics"), 3);
    let admin: AdminClient<DefaultClientContext> =
        args.admin_config("topics-test").create().expect("admin");
    let state = settings_of(&admin, &topics.incident_state).await;
    assert_eq!(
        state.get("cleanup.policy").map(String::as_str),
        Some("compact")
    );
    let events = settings_of(&admin, &topics.incident_events).await;
    assert_eq!(
        events.get("cleanup.policy").map(String::as_str),
        Some("delete")
    );
    assert_eq!(
        events.get("retention.ms").map(String::as_str),
        Some("172800000")
    );
    assert_eq!(
        events.get("min.insync.replicas").map(String::as_str),
        Some("1")
    );
    let roster = settings_of(&admin, &topics.roster).await;
    assert_eq!(
        roster.get("cleanup.policy").map(String::as_str),
        Some("compact")
    );
    // A second start finds them as they are and accepts them.
    assert_eq!(
        ensure_topics(&args, &topics).await.expect("topics again"),
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incident_state_topic_that_deletes_by_age_stops_the_router_with_the_fix() {
    let args = kafka_args();
    let topics = Topics::with_prefix(&args.topic_prefix);
    let admin: AdminClient<DefaultClientContext> =
        args.admin_config("topics-test").create().expect("admin");
    // Someone created incident-state by hand, as a plain topic.
    let plain = NewTopic::new(&topics.incident_state, 3, TopicReplication::Fixed(1))
        .set("cleanup.policy", "delete");
    let created = admin
        .create_topics([&plain], &AdminOptions::new())
        .await
        .expect("create");
    assert!(created.iter().all(Result::is_ok), "{created:?}");

    match ensure_topics(&args, &topics).await {
        Err(TopicError::Unsafe {
            topic,
            setting,
            fix,
            ..
        }) => {
            assert_eq!(topic, topics.incident_state);
            assert_eq!(setting, "cleanup.policy");
            assert!(fix.contains("cleanup.policy=compact"), "{fix}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let config = support::config(&args, "router-1", Policy::default());
    let refused = tokio::time::timeout(
        Duration::from_secs(30),
        helpgrid_router::run(config, std::future::pending()),
    )
    .await
    .expect("the router refuses at once");
    let message = refused.err().map(|e| format!("{e:#}")).unwrap_or_default();
    assert!(
        message.contains("refusing to start")
            && message.contains(&topics.incident_state)
            && message.contains("cleanup.policy=delete"),
        "{message}"
    );
}
