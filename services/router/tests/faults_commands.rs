//! A command record that reaches the router twice, against a real broker. The status
//! service's idempotent producer can write one record twice across a broker failover (the
//! cluster fault suite saw up to 143 such copies in one run). A rejected command's copy must
//! get no second `<command_id>:rejected`, and must never be applied later, also when the
//! router restarts between the copies: the rejection's state record remembers the command id.
//! A command for an incident the router does not know (`NOT_FOUND`) is answered once too
//! while the router runs. Needs HELPGRID_TEST_KAFKA (scripts/test sets it).

use helpgrid_common::envelope::new_envelope;
use helpgrid_common::kafka::KafkaArgs;
use helpgrid_common::time::now_millis;
use helpgrid_common::topics::{Topics, ensure_topics};
use helpgrid_proto::pb::{
    AcknowledgeIncident, ActorRole, CloseIncident, Incident, IncidentCommand, IncidentEvent,
    IncidentOutcome, PressKind, RejectReason, Resolution, ResponderRole, incident_command,
    incident_event::Change,
};
use helpgrid_testkit::records::{press, responder, roster_record};
use helpgrid_testkit::{IncidentLog, Publisher, kafka_args};
use std::collections::HashSet;
use std::time::Duration;

mod support;
use support::{RunningRouter, config, long_deadlines};

fn command(incident: &Incident, action: incident_command::Action) -> IncidentCommand {
    IncidentCommand {
        envelope: Some(new_envelope("test", now_millis())),
        incident_id: incident.incident_id.clone(),
        grid_id: incident.grid_id.clone(),
        actor_id: "w-a".into(),
        actor_role: ActorRole::Responder as i32,
        action: Some(action),
        request_id: String::new(),
    }
}

fn command_id(command: &IncidentCommand) -> String {
    command
        .envelope
        .as_ref()
        .map(|e| e.event_id.clone())
        .expect("envelope")
}

fn answers_to<'a>(events: &'a [IncidentEvent], command: &IncidentCommand) -> Vec<&'a str> {
    let id = command_id(command);
    events
        .iter()
        .filter(|e| e.cause_id == id)
        .map(helpgrid_testkit::change_name)
        .collect()
}

/// Whether an incident of `household` was opened.
fn opened_for(events: &[IncidentEvent], household: &str) -> bool {
    events.iter().any(|e| {
        matches!(e.change, Some(Change::Opened(_)))
            && e.incident
                .as_ref()
                .is_some_and(|i| i.household_id == household)
    })
}

/// Fresh topics, a grid worker for g1 in the roster, and a reader of incident-events.
async fn setup() -> (KafkaArgs, Topics, Publisher, IncidentLog) {
    let args = kafka_args();
    let topics = Topics::with_prefix(&args.topic_prefix);
    ensure_topics(&args, &topics).await.expect("topics");
    let publisher = Publisher::new(&args);
    let worker = responder("w-a", ResponderRole::GridWorker, &["g1"], None);
    publisher
        .send(&topics.roster, "w-a", &roster_record(worker))
        .await;
    let log = IncidentLog::follow(&args, &topics.incident_events).await;
    (args, topics, publisher, log)
}

fn close_of(incident: &Incident) -> IncidentCommand {
    command(
        incident,
        incident_command::Action::Close(CloseIncident {
            outcome: IncidentOutcome::ResolvedOnSpot as i32,
            resolution: Resolution::Resolved as i32,
            note: String::new(),
        }),
    )
}

/// A press of `household` on the commands' partition (grid g1): once it opens, the router
/// has read every record written there before it.
async fn marker(publisher: &Publisher, topics: &Topics, log: &mut IncidentLog, household: &str) {
    publisher
        .send(
            &topics.help_events,
            "g1",
            &press(household, "g1", PressKind::Help),
        )
        .await;
    log.wait_until("the marker", |ev| opened_for(ev, household))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_command_written_twice_is_answered_once_and_never_applied_across_a_restart() {
    let (args, topics, publisher, mut log) = setup().await;

    let router = RunningRouter::start(config(&args, "r1", long_deadlines()));
    publisher
        .send(
            &topics.help_events,
            "g1",
            &press("h-1", "g1", PressKind::Help),
        )
        .await;
    let events = log
        .wait_until("the press assigned", |ev| {
            ev.iter().any(|e| !e.assignments().is_empty())
        })
        .await;
    let incident = events
        .last()
        .and_then(|e| e.incident.clone())
        .expect("the incident");

    // A close before the acknowledgement: refused (wrong state). Kafka holds it twice.
    let close = close_of(&incident);
    for _ in 0..2 {
        publisher
            .send(&topics.incident_commands, "g1", &close)
            .await;
    }
    // A marker after both copies, on the same partition (same grid) but another incident, so
    // that nothing else changes this one: once it opens, both copies were read, and the only
    // state record that can remember the close's id is the rejection's own.
    marker(&publisher, &topics, &mut log, "h-marker-1").await;
    router.stop().await;

    // A router restored from Kafka; the incident is acknowledged, and only then a third copy
    // arrives: a close now would be accepted, but this one was refused already.
    let router = RunningRouter::start(config(&args, "r1", long_deadlines()));
    let ack = command(
        &incident,
        incident_command::Action::Acknowledge(AcknowledgeIncident {}),
    );
    publisher.send(&topics.incident_commands, "g1", &ack).await;
    let acked = command_id(&ack);
    log.wait_until("the acknowledgement", |ev| {
        ev.iter().any(|e| e.cause_id == acked)
    })
    .await;
    publisher
        .send(&topics.incident_commands, "g1", &close)
        .await;
    marker(&publisher, &topics, &mut log, "h-marker-2").await;
    let events = log.settle(Duration::from_secs(2)).await;
    router.stop().await;

    assert_eq!(
        answers_to(&events, &close),
        ["rejected"],
        "three copies of a refused close, one answer"
    );
    assert_eq!(answers_to(&events, &ack), ["acknowledged"]);
    assert!(
        !events
            .iter()
            .any(|e| matches!(e.change, Some(Change::Closed(_)))),
        "the refused close was never applied"
    );
    let ids: Vec<&str> = events
        .iter()
        .filter_map(|e| e.envelope.as_ref().map(|x| x.event_id.as_str()))
        .collect();
    let unique: HashSet<&str> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "no event id twice: {ids:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_for_an_unknown_incident_written_twice_is_answered_not_found_once() {
    let (args, topics, publisher, mut log) = setup().await;
    let router = RunningRouter::start(config(&args, "r1", long_deadlines()));

    // An incident the router never opened (as one closed past the retention time looks).
    let unknown = Incident {
        incident_id: "inc-never-opened".into(),
        grid_id: "g1".into(),
        ..Incident::default()
    };
    let close = close_of(&unknown);
    for _ in 0..2 {
        publisher
            .send(&topics.incident_commands, "g1", &close)
            .await;
    }
    // Another question about the same unknown incident: answered on its own.
    let ack = command(
        &unknown,
        incident_command::Action::Acknowledge(AcknowledgeIncident {}),
    );
    publisher.send(&topics.incident_commands, "g1", &ack).await;
    // The marker shares the commands' partition (same grid): once it opens, the router has
    // read all three command records.
    marker(&publisher, &topics, &mut log, "h-marker").await;
    let events = log.settle(Duration::from_secs(1)).await;
    router.stop().await;

    assert_eq!(
        answers_to(&events, &close),
        ["rejected"],
        "two copies of a close of an unknown incident, one answer"
    );
    assert_eq!(answers_to(&events, &ack), ["rejected"]);
    let reason = |c: &IncidentCommand| {
        events.iter().find_map(|e| match &e.change {
            Some(Change::Rejected(r)) if r.command_id == command_id(c) => Some(r.reason),
            _ => None,
        })
    };
    assert_eq!(reason(&close), Some(RejectReason::NotFound as i32));
    assert_eq!(reason(&ack), Some(RejectReason::NotFound as i32));
}
