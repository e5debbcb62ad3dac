//! The router against a real Kafka broker: records in, incident events out.
//! Needs HELPGRID_TEST_KAFKA (scripts/test sets it).

use helpgrid_common::envelope::new_envelope;
use helpgrid_common::kafka::KafkaArgs;
use helpgrid_common::reader::{self, Feed};
use helpgrid_common::time::now_millis;
use helpgrid_common::topics::{Topics, ensure_topics};
use helpgrid_proto::pb::{
    AcknowledgeIncident, ActorRole, CameraLabel, CloseIncident, EscalationLevel, HelpEvent,
    IncidentCommand, IncidentEvent, IncidentOutcome, PressKind, Resolution, ResponderRole, Track,
    incident_command, incident_event::Change,
};
use helpgrid_router::domain::Policy;
use helpgrid_testkit::records::{camera, press, responder, roster_record};
use helpgrid_testkit::{
    IncidentLog, Publisher, WAIT, change_name, kafka_args, of_incident, summary,
};
use std::collections::HashMap;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

mod support;
use support::{RunningRouter, config, long_deadlines};

struct Setup {
    args: KafkaArgs,
    topics: Topics,
    publisher: Publisher,
    log: IncidentLog,
}

/// Fresh topics, a roster written before the router starts, and a reader of the output.
async fn setup(roster: Vec<helpgrid_proto::pb::Responder>) -> Setup {
    let args = kafka_args();
    let topics = Topics::with_prefix(&args.topic_prefix);
    ensure_topics(&args, &topics).await.expect("topics");
    let publisher = Publisher::new(&args);
    for r in roster {
        publisher
            .send(&topics.roster, &r.responder_id.clone(), &roster_record(r))
            .await;
    }
    let log = IncidentLog::follow(&args, &topics.incident_events).await;
    Setup {
        args,
        topics,
        publisher,
        log,
    }
}

fn event_id(event: &HelpEvent) -> String {
    event
        .envelope
        .as_ref()
        .map(|e| e.event_id.clone())
        .expect("envelope")
}

fn assigned_to(events: &[&IncidentEvent], track: Track) -> Vec<String> {
    events
        .iter()
        .flat_map(|e| e.assignments())
        .filter(|a| a.track == track as i32)
        .map(|a| a.responder_id.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_press_is_assigned_to_the_on_duty_grid_worker_and_a_camera_alert_to_a_patrol_officer() {
    let mut s = setup(vec![
        responder("w-g1", ResponderRole::GridWorker, &["g1"], None),
        responder("w-g2", ResponderRole::GridWorker, &["g2"], None),
        responder(
            "cop-1",
            ResponderRole::PatrolOfficer,
            &["g1", "g2"],
            Some((32.685, 109.03)),
        ),
    ])
    .await;
    let router = RunningRouter::start(config(&s.args, "r1", long_deadlines()));
    let p = press("h-100", "g1", PressKind::Help);
    let c = camera("cam-9", "g2", CameraLabel::Intrusion, 0.92);
    s.publisher.send(&s.topics.help_events, "g1", &p).await;
    s.publisher.send(&s.topics.help_events, "g2", &c).await;
    let (pi, ci) = (
        format!("inc-{}", event_id(&p)),
        format!("inc-{}", event_id(&c)),
    );
    let events = s
        .log
        .wait_until("both incidents assigned", |ev| {
            ev.iter().map(|e| e.assignments().len()).sum::<usize>() >= 2
        })
        .await;
    assert_eq!(
        assigned_to(&of_incident(&events, &pi), Track::Community),
        ["w-g1"]
    );
    assert_eq!(
        assigned_to(&of_incident(&events, &ci), Track::Police),
        ["cop-1"]
    );
    router.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nobody_on_duty_escalates_to_the_police_desk_at_once() {
    let mut s = setup(vec![responder(
        "w-elsewhere",
        ResponderRole::GridWorker,
        &["g9"],
        None,
    )])
    .await;
    let router = RunningRouter::start(config(&s.args, "r1", long_deadlines()));
    let p = press("h-1", "g-empty", PressKind::Help);
    s.publisher.send(&s.topics.help_events, "g-empty", &p).await;
    let events = s
        .log
        .wait_until("escalation", |ev| {
            ev.iter()
                .any(|e| matches!(e.change, Some(Change::Escalated(_))))
        })
        .await;
    let escalated = events
        .iter()
        .find_map(|e| match e.change.as_ref() {
            Some(Change::Escalated(x)) => Some(x.clone()),
            _ => None,
        })
        .expect("escalated");
    assert_eq!(escalated.to_level, EscalationLevel::PoliceDesk as i32);
    assert!(
        escalated.reason.contains("nobody on duty in grid g-empty"),
        "{}",
        escalated.reason
    );
    router.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unacknowledged_assignment_is_reassigned_after_its_deadline() {
    let mut s = setup(vec![
        responder("w-a", ResponderRole::GridWorker, &["g1"], None),
        responder("w-b", ResponderRole::GridWorker, &["g1"], None),
    ])
    .await;
    let policy = Policy {
        ack_deadline_normal_ms: 1_500,
        ..Policy::default()
    };
    let router = RunningRouter::start(config(&s.args, "r1", policy));
    let p = press("h-1", "g1", PressKind::Help);
    s.publisher.send(&s.topics.help_events, "g1", &p).await;
    let events = s
        .log
        .wait_until("reassignment", |ev| {
            ev.iter()
                .any(|e| matches!(e.change, Some(Change::Reassigned(_))))
        })
        .await;
    let reassigned = events
        .iter()
        .find_map(|e| match e.change.as_ref() {
            Some(Change::Reassigned(r)) => Some(r.clone()),
            _ => None,
        })
        .expect("reassigned");
    assert_eq!(
        (
            reassigned.from_responder_id.as_str(),
            reassigned.to_responder_id.as_str()
        ),
        ("w-a", "w-b")
    );
    router.stop().await;
}

/// A household presses, is assigned, and presses again (attached), with the router writing
/// openings in `separate` shape or not. Every incident event, and the first press.
async fn pressed_twice(separate: bool) -> (Vec<IncidentEvent>, HelpEvent) {
    let mut s = setup(vec![responder(
        "w-a",
        ResponderRole::GridWorker,
        &["g1"],
        None,
    )])
    .await;
    let policy = Policy {
        separate_assigned_events: separate,
        ..long_deadlines()
    };
    let router = RunningRouter::start(config(&s.args, "r1", policy));
    let first = press("h-7", "g1", PressKind::Help);
    s.publisher.send(&s.topics.help_events, "g1", &first).await;
    s.log
        .wait_until("assignment", |ev| {
            ev.iter().any(|e| !e.assignments().is_empty())
        })
        .await;
    let second = press("h-7", "g1", PressKind::Help);
    s.publisher.send(&s.topics.help_events, "g1", &second).await;
    s.log
        .wait_until("attachment", |ev| {
            ev.iter()
                .any(|e| matches!(e.change, Some(Change::Attached(_))))
        })
        .await;
    let events = s.log.settle(Duration::from_millis(1500)).await;
    router.stop().await;
    (events, first)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_press_from_the_household_attaches_and_raises_urgency() {
    let (events, first) = pressed_twice(true).await;
    // The default shape, which gRPC Watch clients written before IncidentOpened.assigned expect.
    assert_eq!(
        opening_shape(&events, &first),
        ["opened@1", "assigned@2", "attached@3"]
    );
    let opened = events
        .iter()
        .filter(|e| matches!(e.change, Some(Change::Opened(_))))
        .count();
    assert_eq!(opened, 1, "{:?}", summary(&events));
    let last = events
        .last()
        .and_then(|e| e.incident.clone())
        .expect("incident");
    assert_eq!(last.incident_id, format!("inc-{}", event_id(&first)));
    assert_eq!(last.event_count, 2);
    assert_eq!(last.priority, helpgrid_proto::pb::Priority::High as i32);
}

/// The changes of the incident [`pressed_twice`] opened, as `change name@revision`, after
/// checking that it was assigned to w-a exactly once whatever the shape.
fn opening_shape(events: &[IncidentEvent], first: &HelpEvent) -> Vec<String> {
    let incident_id = format!("inc-{}", event_id(first));
    let mine = of_incident(events, &incident_id);
    assert!(
        mine.iter()
            .flat_map(|e| e.assignments())
            .map(|a| a.responder_id.as_str())
            .eq(["w-a"]),
        "{:?}",
        summary(events)
    );
    mine.iter()
        .map(|e| {
            let revision = e.incident.as_ref().map_or(0, |i| i.revision);
            format!("{}@{revision}", change_name(e))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_one_event_openings_opened_and_assigned_is_one_change_of_revision_1() {
    let (events, first) = pressed_twice(false).await;
    assert_eq!(opening_shape(&events, &first), ["opened@1", "attached@2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_record_is_dead_lettered_with_its_reason_and_the_next_one_still_flows() {
    let mut s = setup(vec![responder(
        "w-a",
        ResponderRole::GridWorker,
        &["g1"],
        None,
    )])
    .await;
    let cancel = CancellationToken::new();
    let mut dead = reader::follow(&s.args, "test-dlq", &s.topics.dead_letters, cancel.clone())
        .await
        .expect("follow dead letters");
    let router = RunningRouter::start(config(&s.args, "r1", long_deadlines()));
    s.publisher
        .send_raw(
            &s.topics.help_events,
            "g1",
            b"\xff\x00 definitely not protobuf",
        )
        .await;
    let good = press("h-1", "g1", PressKind::Help);
    s.publisher.send(&s.topics.help_events, "g1", &good).await;
    s.log
        .wait_until("the good press assigned", |ev| {
            ev.iter().any(|e| !e.assignments().is_empty())
        })
        .await;
    let record = loop {
        match tokio::time::timeout(WAIT, dead.recv())
            .await
            .expect("a dead letter in time")
        {
            Some(Feed::Record(r)) => break r,
            Some(Feed::CaughtUp) => continue,
            None => panic!("dead-letter feed ended"),
        }
    };
    let headers: HashMap<String, String> = record
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
        .collect();
    assert_eq!(
        record.payload.as_deref(),
        Some(&b"\xff\x00 definitely not protobuf"[..])
    );
    assert_eq!(
        headers.get("helpgrid.dlq.kind").map(String::as_str),
        Some("undecodable")
    );
    assert!(
        headers
            .get("helpgrid.dlq.reason")
            .is_some_and(|r| r.contains("helpgrid.v1.HelpEvent")),
        "{headers:?}"
    );
    assert_eq!(
        headers.get("helpgrid.dlq.origin.topic"),
        Some(&s.topics.help_events)
    );
    assert!(
        headers.contains_key("helpgrid.dlq.origin.partition")
            && headers.contains_key("helpgrid.dlq.origin.offset")
    );
    router.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_restart_mid_stream_loses_nothing_and_doubles_nothing() {
    let grids: Vec<String> = (0..12).map(|g| format!("g{g}")).collect();
    let roster = grids
        .iter()
        .map(|g| {
            responder(
                &format!("w-{g}"),
                ResponderRole::GridWorker,
                &[g.as_str()],
                None,
            )
        })
        .collect();
    let mut s = setup(roster).await;
    // 400 presses from 150 households: many households press more than once.
    let presses: Vec<(String, HelpEvent)> = (0..400)
        .map(|i| {
            let household = i % 150;
            let grid = &grids[household % grids.len()];
            (
                grid.clone(),
                press(&format!("h{household}"), grid, PressKind::Help),
            )
        })
        .collect();
    let router = RunningRouter::start(config(&s.args, "r1", long_deadlines()));
    for (grid, p) in &presses[..200] {
        s.publisher.send(&s.topics.help_events, grid, p).await;
    }
    s.log.wait_until("some progress", |ev| ev.len() >= 50).await;
    router.stop().await;
    let router = RunningRouter::start(config(&s.args, "r1", long_deadlines()));
    for (grid, p) in &presses[200..] {
        s.publisher.send(&s.topics.help_events, grid, p).await;
    }
    let accounted = |ev: &[IncidentEvent]| {
        ev.iter()
            .filter_map(|e| match e.change.as_ref() {
                Some(Change::Opened(_)) => e
                    .incident
                    .as_ref()
                    .and_then(|i| i.recent_event_ids.first().cloned()),
                Some(Change::Attached(a)) => Some(a.event_id.clone()),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    s.log
        .wait_until("every press accounted for", |ev| {
            accounted(ev).len() >= presses.len()
        })
        .await;
    let events = s.log.settle(Duration::from_secs(2)).await;
    router.stop().await;

    let mut per_press: HashMap<String, usize> = HashMap::new();
    for id in accounted(&events) {
        *per_press.entry(id).or_default() += 1;
    }
    for (_, p) in &presses {
        assert_eq!(
            per_press.get(&event_id(p)),
            Some(&1),
            "press {} must be in exactly one incident",
            event_id(p)
        );
    }
    let mut ids: Vec<&str> = events
        .iter()
        .filter_map(|e| e.envelope.as_ref())
        .map(|e| e.event_id.as_str())
        .collect();
    let total = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), total, "no incident event is written twice");
    let opened = events.iter().filter(|e| change_name(e) == "opened").count();
    assert_eq!(
        opened, 150,
        "one incident per household: none is closed in this test"
    );
}

/// A close command as an older or newer status service would write it.
fn close_command(incident: &helpgrid_proto::pb::Incident, outcome: i32) -> IncidentCommand {
    IncidentCommand {
        envelope: Some(new_envelope("test", now_millis())),
        incident_id: incident.incident_id.clone(),
        grid_id: incident.grid_id.clone(),
        actor_id: "w-a".into(),
        actor_role: ActorRole::Responder as i32,
        action: Some(incident_command::Action::Close(CloseIncident {
            outcome,
            ..Default::default()
        })),
        request_id: String::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_with_an_unknown_outcome_is_dead_lettered_and_a_known_one_closes_with_it() {
    let mut s = setup(vec![responder(
        "w-a",
        ResponderRole::GridWorker,
        &["g1"],
        None,
    )])
    .await;
    let cancel = CancellationToken::new();
    let mut dead = reader::follow(&s.args, "test-dlq", &s.topics.dead_letters, cancel.clone())
        .await
        .expect("follow dead letters");
    let router = RunningRouter::start(config(&s.args, "r1", long_deadlines()));
    s.publisher
        .send(
            &s.topics.help_events,
            "g1",
            &press("h-1", "g1", PressKind::Help),
        )
        .await;
    let events = s
        .log
        .wait_until("the press assigned", |ev| {
            ev.iter().any(|e| !e.assignments().is_empty())
        })
        .await;
    let incident = events
        .last()
        .and_then(|e| e.incident.clone())
        .expect("the incident");
    let acknowledge = IncidentCommand {
        action: Some(incident_command::Action::Acknowledge(
            AcknowledgeIncident {},
        )),
        ..close_command(&incident, 0)
    };
    s.publisher
        .send(&s.topics.incident_commands, "g1", &acknowledge)
        .await;
    s.log
        .wait_until("the acknowledgement", |ev| {
            ev.iter()
                .any(|e| matches!(e.change, Some(Change::Acknowledged(_))))
        })
        .await;

    // A sender with a newer contract (or a bug): an outcome this router does not know.
    s.publisher
        .send(
            &s.topics.incident_commands,
            "g1",
            &close_command(&incident, 77),
        )
        .await;
    let record = loop {
        match tokio::time::timeout(WAIT, dead.recv())
            .await
            .expect("a dead letter in time")
        {
            Some(Feed::Record(r)) => break r,
            Some(Feed::CaughtUp) => continue,
            None => panic!("dead-letter feed ended"),
        }
    };
    let reason = record
        .headers
        .iter()
        .find(|(k, _)| k == "helpgrid.dlq.reason")
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_default();
    assert!(
        reason.contains("outcome has no value 77"),
        "the reason names the outcome: {reason}"
    );

    let mediated = IncidentOutcome::Mediated as i32;
    s.publisher
        .send(
            &s.topics.incident_commands,
            "g1",
            &close_command(&incident, mediated),
        )
        .await;
    let events = s
        .log
        .wait_until("the close", |ev| {
            ev.iter()
                .any(|e| matches!(e.change, Some(Change::Closed(_))))
        })
        .await;
    let closes: Vec<&IncidentEvent> = events
        .iter()
        .filter(|e| matches!(e.change, Some(Change::Closed(_))))
        .collect();
    assert_eq!(closes.len(), 1, "only the known outcome closed it");
    let Some(Change::Closed(closed)) = &closes[0].change else {
        unreachable!()
    };
    assert_eq!(
        (closed.outcome, closed.resolution),
        (mediated, Resolution::Resolved as i32),
        "the outcome, and the resolution it means for older readers"
    );
    let after = closes[0].incident.as_ref().expect("incident");
    assert_eq!(after.outcome, mediated);
    router.stop().await;
}
