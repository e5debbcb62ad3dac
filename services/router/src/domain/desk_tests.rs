//! The incident state machine, as specifications. Time is a plain number; nothing sleeps.

use super::*;
use crate::domain::validate::{ValidAction, ValidBody, ValidCommand, ValidHelpEvent};
use helpgrid_proto::pb::{CameraLabel, GeoPoint, IncidentOutcome, Resolution};
use helpgrid_testkit::records::responder;

const T0: Millis = 1_780_000_000_000;
const P: i32 = 3;

fn policy() -> Policy {
    Policy {
        ack_deadline_normal_ms: 60_000,
        ack_deadline_high_ms: 30_000,
        ack_deadline_critical_ms: 10_000,
        max_attempts_per_level: 2,
        camera_min_confidence: 0.6,
        camera_dedup_window_ms: 120_000,
        closed_retention_ms: 600_000,
        separate_assigned_events: false,
    }
}

fn city() -> Roster {
    let mut roster = Roster::default();
    roster.upsert(responder(
        "w1",
        ResponderRole::GridWorker,
        &["g1"],
        Some((32.680, 109.020)),
    ));
    roster.upsert(responder(
        "w2",
        ResponderRole::GridWorker,
        &["g1"],
        Some((32.690, 109.030)),
    ));
    roster.upsert(responder(
        "sup",
        ResponderRole::GridSupervisor,
        &["g1", "g2"],
        None,
    ));
    roster.upsert(responder(
        "cop-near",
        ResponderRole::PatrolOfficer,
        &["g1", "g2"],
        Some((32.681, 109.021)),
    ));
    roster.upsert(responder(
        "cop-far",
        ResponderRole::PatrolOfficer,
        &["g1", "g2"],
        Some((32.750, 109.100)),
    ));
    roster
}

fn press(id: &str, household: &str, kind: PressKind, at: Millis) -> ValidHelpEvent {
    ValidHelpEvent {
        event_id: id.into(),
        occurred_at: at,
        body: ValidBody::Press {
            press: pb::ButtonPress {
                device_id: format!("dev-{household}"),
                household_id: household.into(),
                grid_id: "g1".into(),
                kind: kind as i32,
                location: Some(GeoPoint {
                    latitude: 32.680,
                    longitude: 109.020,
                }),
                battery_percent: 90,
            },
            kind,
        },
    }
}

fn camera(id: &str, label: CameraLabel, confidence: f32, at: Millis) -> ValidHelpEvent {
    ValidHelpEvent {
        event_id: id.into(),
        occurred_at: at,
        body: ValidBody::Camera {
            alert: pb::CameraAlert {
                camera_id: "cam-7".into(),
                grid_id: "g1".into(),
                label: label as i32,
                confidence,
                zone: "gate".into(),
                snapshot_ref: String::new(),
                location: Some(GeoPoint {
                    latitude: 32.680,
                    longitude: 109.020,
                }),
            },
            label,
        },
    }
}

fn command(id: &str, incident: &str, actor: &str, action: ValidAction) -> ValidCommand {
    ValidCommand {
        request_id: String::new(),
        command_id: id.into(),
        incident_id: incident.into(),
        grid_id: "g1".into(),
        actor_id: actor.into(),
        actor_role: ActorRole::Unspecified,
        action,
    }
}

fn close_action() -> ValidAction {
    ValidAction::Close {
        outcome: IncidentOutcome::Mediated,
        resolution: Resolution::Resolved,
        note: "helped".into(),
    }
}

fn changes(out: &[Output]) -> Vec<&'static str> {
    out.iter()
        .map(|o| o.event.change.as_ref().map_or("none", Change::name))
        .collect()
}

/// The incident revision each output event carries, in order.
fn revisions(out: &[Output]) -> Vec<u64> {
    out.iter()
        .filter_map(|o| o.event.incident.as_ref().map(|i| i.revision))
        .collect()
}

fn last_incident(out: &[Output]) -> Incident {
    out.last()
        .and_then(|o| o.event.incident.clone())
        .expect("an incident snapshot")
}

fn assignee(incident: &Incident, track: Track) -> String {
    incident
        .assignments
        .iter()
        .find(|a| a.track == track as i32)
        .map(|a| a.responder_id.clone())
        .expect("track present")
}

fn rejection(out: &[Output]) -> (RejectReason, String) {
    match out.last().and_then(|o| o.event.change.as_ref()) {
        Some(Change::Rejected(r)) => (
            RejectReason::try_from(r.reason).expect("known reason"),
            r.message.clone(),
        ),
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[test]
fn press_is_assigned_to_the_on_duty_grid_worker_of_its_grid() {
    let mut desk = Desk::new(policy());
    let (outcome, out) =
        desk.on_help_event(P, &press("e1", "h1", PressKind::Help, T0), &city(), T0 + 5);
    assert_eq!(outcome, HelpOutcome::Opened);
    // Opened and assigned by one decision: one event, one change, revision 1.
    assert_eq!(changes(&out), ["opened"]);
    let incident = last_incident(&out);
    assert_eq!(incident.incident_id, "inc-e1");
    assert_eq!(assignee(&incident, Track::Community), "w1");
    assert_eq!(incident.state, IncidentState::Assigned as i32);
    assert_eq!(incident.revision, 1);
    assert_eq!(
        from_timestamp(incident.assignments[0].ack_deadline.as_ref()),
        Some(T0 + 5 + 60_000)
    );
    assert_eq!(
        out[0].event.assignments(),
        [pb::ResponderAssigned {
            track: Track::Community as i32,
            responder_id: "w1".into(),
            level: EscalationLevel::GridWorker as i32,
            ack_deadline: Some(to_timestamp(T0 + 5 + 60_000)),
        }]
    );
    assert!(out.iter().all(|o| o.partition == P && o.key == "g1"));
    assert_eq!(
        out[0].event.envelope.as_ref().map(|e| e.event_id.as_str()),
        Some("inc-e1:1")
    );
    // The desk keeps what the event says: the next change is revision 2.
    assert_eq!(desk.get("inc-e1").map(|i| i.revision), Some(1));
    let (_, ack) = desk.on_command(
        P,
        &command("c1", "inc-e1", "w1", ValidAction::Acknowledge),
        &city(),
        T0 + 10,
    );
    assert_eq!(changes(&ack), ["acknowledged"]);
    assert_eq!(last_incident(&ack).revision, 2);
}

/// `--separate-assigned-events`: the opening written as before the fold, one event per change.
#[test]
fn separate_assigned_events_writes_opened_then_one_assigned_per_track() {
    let mut desk = Desk::new(Policy {
        separate_assigned_events: true,
        ..policy()
    });
    let (_, out) = desk.on_help_event(P, &press("e1", "h1", PressKind::Urgent, T0), &city(), T0);
    assert_eq!(changes(&out), ["opened", "assigned", "assigned"]);
    assert_eq!(revisions(&out), [1, 2, 3]);
    assert!(out[0].event.assignments().is_empty());
    let assigned: Vec<&str> = out
        .iter()
        .flat_map(|o| o.event.assignments())
        .map(|a| a.responder_id.as_str())
        .collect();
    assert_eq!(assigned, ["w1", "cop-near"]);
    desk.check_invariants().expect("invariants");
}

/// Only when every track is assigned at its first level is the opening folded: a track that
/// has to go above it (nobody on duty) is recorded the long way, each event carrying the
/// incident as that change left it.
#[test]
fn an_opening_that_escalates_is_written_as_separate_changes() {
    let mut desk = Desk::new(policy());
    let mut roster = Roster::default();
    roster.upsert(responder(
        "w1",
        ResponderRole::GridWorker,
        &["g1"],
        Some((32.680, 109.020)),
    ));
    let (_, out) = desk.on_help_event(P, &press("e1", "h1", PressKind::Urgent, T0), &roster, T0);
    assert_eq!(changes(&out), ["opened", "assigned", "escalated"]);
    assert_eq!(revisions(&out), [1, 2, 3]);
    assert!(out[0].event.assignments().is_empty());
    let opened = out[0].event.incident.as_ref().expect("incident");
    assert!(opened.assignments.iter().all(|a| a.responder_id.is_empty()));
    assert_eq!(
        out[1]
            .event
            .incident
            .as_ref()
            .map(|i| assignee(i, Track::Police)),
        Some(String::new()),
        "the police track is not placed yet when the community one is assigned"
    );
    assert_eq!(assignee(&last_incident(&out), Track::Community), "w1");
    desk.check_invariants().expect("invariants");
}

#[test]
fn a_second_incident_goes_to_the_worker_with_less_open_load() {
    let mut desk = Desk::new(policy());
    let roster = city();
    let (_, first) = desk.on_help_event(P, &press("e1", "h1", PressKind::Help, T0), &roster, T0);
    let (_, second) = desk.on_help_event(P, &press("e2", "h2", PressKind::Help, T0), &roster, T0);
    assert_eq!(assignee(&last_incident(&first), Track::Community), "w1");
    assert_eq!(assignee(&last_incident(&second), Track::Community), "w2");
    assert_eq!((desk.load_of("w1"), desk.load_of("w2")), (1, 1));
}

#[test]
fn press_while_assigned_raises_urgency_not_a_second_incident() {
    let mut desk = Desk::new(policy());
    let roster = city();
    desk.on_help_event(P, &press("e1", "h1", PressKind::Help, T0), &roster, T0);
    let (outcome, out) = desk.on_help_event(
        P,
        &press("e2", "h1", PressKind::Help, T0 + 1_000),
        &roster,
        T0 + 1_000,
    );
    assert_eq!(outcome, HelpOutcome::Attached);
    assert_eq!(changes(&out), ["attached"]);
    let incident = last_incident(&out);
    assert_eq!(incident.incident_id, "inc-e1");
    assert_eq!(incident.event_count, 2);
    assert_eq!(incident.priority, Priority::High as i32);
    // The deadline shrinks to the high-priority allowance from now.
    assert_eq!(
        from_timestamp(incident.assignments[0].ack_deadline.as_ref()),
        Some(T0 + 1_000 + 30_000)
    );
    assert_eq!(desk.open_count(), 1);
}

#[test]
fn repeated_presses_keep_the_indexes_and_the_stored_snapshot_as_a_fresh_desk_would() {
    // Attachments change the incident where it is stored, moving only the index entries
    // they touch: the shortened deadline, the event id added and the one forgotten.
    let mut desk = Desk::new(policy());
    let roster = city();
    desk.on_help_event(P, &press("e0", "h1", PressKind::Help, T0), &roster, T0);
    let presses = 20;
    let mut last = None;
    for n in 1..presses {
        let at = T0 + n * 1_000;
        let (outcome, out) = desk.on_help_event(
            P,
            &press(&format!("e{n}"), "h1", PressKind::Help, at),
            &roster,
            at,
        );
        assert_eq!(outcome, HelpOutcome::Attached);
        desk.check_invariants()
            .unwrap_or_else(|problem| panic!("after press {n}: {problem}"));
        last = Some(last_incident(&out));
    }
    let last = last.expect("attached");
    // What the desk stores is what the last event carried.
    assert_eq!(desk.get("inc-e0"), Some(last.clone()));
    assert_eq!(last.event_count, presses as u32);
    // The deadline index moved with the raised priority's shorter allowance.
    let deadline = from_timestamp(last.assignments[0].ack_deadline.as_ref());
    assert!(deadline < Some(T0 + 1_000 + 30_000), "{deadline:?}");
    assert_eq!(desk.next_deadline(), deadline);
    // The incident remembers its latest 16 event ids: the oldest attached ones are forgotten
    // (a resend of one attaches again), the latest are still duplicates.
    assert_eq!(last.recent_event_ids.len(), 16);
    assert_eq!(
        last.recent_event_ids.first().map(String::as_str),
        Some("e4")
    );
    let at = T0 + 100_000;
    let (outcome, _) = desk.on_help_event(P, &press("e19", "h1", PressKind::Help, at), &roster, at);
    assert_eq!(outcome, HelpOutcome::Duplicate);
    let (outcome, _) = desk.on_help_event(P, &press("e2", "h1", PressKind::Help, at), &roster, at);
    assert_eq!(outcome, HelpOutcome::Attached);
    // The opening press is recognised by its incident's id, however many came after it.
    let (outcome, _) = desk.on_help_event(P, &press("e0", "h1", PressKind::Help, at), &roster, at);
    assert_eq!(outcome, HelpOutcome::Duplicate);
    desk.check_invariants().expect("invariants");
}

#[test]
fn a_redelivered_event_id_is_ignored() {
    let mut desk = Desk::new(policy());
    let roster = city();
    desk.on_help_event(P, &press("e1", "h1", PressKind::Help, T0), &roster, T0);
    let (outcome, out) =
        desk.on_help_event(P, &press("e1", "h1", PressKind::Help, T0), &roster, T0 + 10);
    assert_eq!(outcome, HelpOutcome::Duplicate);
    assert!(out.is_empty());
}

#[test]
fn a_press_after_the_incident_closed_opens_a_new_one() {
    let mut desk = Desk::new(policy());
    let roster = city();
    desk.on_help_event(P, &press("e1", "h1", PressKind::Help, T0), &roster, T0);
    desk.on_command(
        P,
        &command("c1", "inc-e1", "w1", ValidAction::Acknowledge),
        &roster,
        T0 + 1,
    );
    desk.on_command(
        P,
        &command("c2", "inc-e1", "w1", close_action()),
        &roster,
        T0 + 2,
    );
    let (outcome, _) = desk.on_help_event(
        P,
        &press("e2", "h1", PressKind::Help, T0 + 3),
        &roster,
        T0 + 3,
    );
    assert_eq!(outcome, HelpOutcome::Opened);
}

#[test]
fn camera_alert_goes_to_the_nearest_patrol_officer() {
    let mut desk = Desk::new(policy());
    let (_, out) = desk.on_help_event(
        P,
        &camera("e1", CameraLabel::Intrusion, 0.9, T0),
        &city(),
        T0,
    );
    let incident = last_incident(&out);
    assert_eq!(changes(&out), ["opened"]);
    assert_eq!(out[0].event.assignments().len(), 1);
    assert_eq!(incident.assignments.len(), 1);
    assert_eq!(assignee(&incident, Track::Police), "cop-near");
    assert_eq!(incident.priority, Priority::High as i32);
}

#[test]
fn urgent_press_and_severe_camera_labels_get_both_a_worker_and_an_officer() {
    let mut desk = Desk::new(policy());
    let roster = city();
    let (_, out) = desk.on_help_event(P, &press("e1", "h1", PressKind::Urgent, T0), &roster, T0);
    let incident = last_incident(&out);
    assert_eq!(changes(&out), ["opened"]);
    let assigned: Vec<(i32, &str)> = out[0]
        .event
        .assignments()
        .iter()
        .map(|a| (a.track, a.responder_id.as_str()))
        .collect();
    assert_eq!(
        assigned,
        [
            (Track::Community as i32, "w1"),
            (Track::Police as i32, "cop-near")
        ]
    );
    assert_eq!(assignee(&incident, Track::Community), "w1");
    assert_eq!(assignee(&incident, Track::Police), "cop-near");
    let (_, out) = desk.on_help_event(P, &camera("e2", CameraLabel::Fire, 0.95, T0), &roster, T0);
    let incident = last_incident(&out);
    assert_eq!(incident.priority, Priority::Critical as i32);
    assert_eq!(
        assignee(&incident, Track::Police),
        "cop-far",
        "cop-near is busy with the urgent press"
    );
    assert_eq!(assignee(&incident, Track::Community), "w2");
}

#[test]
fn low_confidence_detections_open_nothing() {
    let mut desk = Desk::new(policy());
    let (outcome, out) =
        desk.on_help_event(P, &camera("e1", CameraLabel::Fight, 0.3, T0), &city(), T0);
    assert_eq!(outcome, HelpOutcome::BelowThreshold);
    assert!(out.is_empty());
    assert!(desk.is_empty());
}

#[test]
fn repeated_detections_attach_within_the_window_and_open_anew_after_it() {
    let mut desk = Desk::new(policy());
    let roster = city();
    desk.on_help_event(
        P,
        &camera("e1", CameraLabel::Loitering, 0.9, T0),
        &roster,
        T0,
    );
    let (o2, out) = desk.on_help_event(
        P,
        &camera("e2", CameraLabel::Loitering, 0.9, T0 + 100_000),
        &roster,
        T0 + 100_000,
    );
    assert_eq!(o2, HelpOutcome::Attached);
    assert_eq!(
        last_incident(&out).priority,
        Priority::Normal as i32,
        "detections do not raise priority"
    );
    // The window runs from the latest detection, so a steady stream keeps attaching.
    let (o3, _) = desk.on_help_event(
        P,
        &camera("e3", CameraLabel::Loitering, 0.9, T0 + 200_000),
        &roster,
        T0 + 200_000,
    );
    assert_eq!(o3, HelpOutcome::Attached);
    let (o4, _) = desk.on_help_event(
        P,
        &camera("e4", CameraLabel::Loitering, 0.9, T0 + 400_000),
        &roster,
        T0 + 400_000,
    );
    assert_eq!(o4, HelpOutcome::Opened);
    let (o5, _) = desk.on_help_event(
        P,
        &camera("e5", CameraLabel::Crowd, 0.9, T0 + 400_001),
        &roster,
        T0 + 400_001,
    );
    assert_eq!(o5, HelpOutcome::Opened, "another label is another incident");
}

#[test]
fn nobody_on_duty_escalates_at_once_to_the_police_desk() {
    let mut desk = Desk::new(policy());
    let (_, out) = desk.on_help_event(
        P,
        &press("e1", "h1", PressKind::Help, T0),
        &Roster::default(),
        T0,
    );
    assert_eq!(changes(&out), ["opened", "escalated"]);
    let incident = last_incident(&out);
    assert_eq!(incident.state, IncidentState::Waiting as i32);
    assert_eq!(
        incident.assignments[0].level,
        EscalationLevel::PoliceDesk as i32
    );
    assert!(incident.assignments[0].ack_deadline.is_none());
    match out[1].event.change.as_ref() {
        Some(Change::Escalated(e)) => {
            assert_eq!(e.from_level, EscalationLevel::GridWorker as i32);
            assert!(
                e.reason.contains("nobody on duty in grid g1"),
                "{}",
                e.reason
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn no_grid_worker_on_duty_goes_straight_to_the_supervisor() {
    let mut roster = city();
    roster.remove("w1");
    roster.remove("w2");
    let mut desk = Desk::new(policy());
    let (_, out) = desk.on_help_event(P, &press("e1", "h1", PressKind::Help, T0), &roster, T0);
    assert_eq!(changes(&out), ["opened", "escalated"]);
    let incident = last_incident(&out);
    assert_eq!(assignee(&incident, Track::Community), "sup");
    assert_eq!(
        incident.assignments[0].level,
        EscalationLevel::GridSupervisor as i32
    );
}

#[test]
fn unacknowledged_assignment_is_reassigned_then_escalated_up_the_ladder() {
    let mut desk = Desk::new(policy());
    let roster = city();
    desk.on_help_event(P, &press("e1", "h1", PressKind::Help, T0), &roster, T0);
    assert!(
        desk.on_tick(&roster, T0 + 59_999).is_empty(),
        "not before the deadline"
    );
    let out = desk.on_tick(&roster, T0 + 60_000);
    assert_eq!(changes(&out), ["reassigned"]);
    assert_eq!(assignee(&last_incident(&out), Track::Community), "w2");
    assert_eq!(out[0].event.cause_id, "");
    let out = desk.on_tick(&roster, T0 + 120_000);
    assert_eq!(changes(&out), ["escalated"]);
    let incident = last_incident(&out);
    assert_eq!(assignee(&incident, Track::Community), "sup");
    assert_eq!(
        incident.assignments[0].timed_out_responder_ids,
        ["w1", "w2"]
    );
    let out = desk.on_tick(&roster, T0 + 180_000);
    assert_eq!(assignee(&last_incident(&out), Track::Community), "cop-near");
    let out = desk.on_tick(&roster, T0 + 240_000);
    assert_eq!(
        changes(&out),
        ["reassigned"],
        "a second patrol officer at the same level"
    );
    assert_eq!(assignee(&last_incident(&out), Track::Community), "cop-far");
    let out = desk.on_tick(&roster, T0 + 300_000);
    let incident = last_incident(&out);
    assert_eq!(
        incident.assignments[0].level,
        EscalationLevel::PoliceDesk as i32
    );
    assert_eq!(incident.state, IncidentState::Waiting as i32);
    assert!(
        desk.on_tick(&roster, T0 + 10_000_000).is_empty(),
        "the desk has no deadline"
    );
    assert_eq!(desk.load_of("cop-far"), 0);
}

#[test]
fn acknowledged_assignments_do_not_expire() {
    let mut desk = Desk::new(policy());
    let roster = city();
    desk.on_help_event(P, &press("e1", "h1", PressKind::Help, T0), &roster, T0);
    let (reason, out) = desk.on_command(
        P,
        &command("c1", "inc-e1", "w1", ValidAction::Acknowledge),
        &roster,
        T0 + 10,
    );
    assert_eq!(reason, None);
    assert_eq!(changes(&out), ["acknowledged"]);
    assert_eq!(out[0].event.cause_id, "c1");
    assert_eq!(
        last_incident(&out).state,
        IncidentState::Acknowledged as i32
    );
    assert!(desk.on_tick(&roster, T0 + 1_000_000).is_empty());
    assert_eq!(desk.next_deadline(), None);
}

#[test]
fn a_wrong_responders_acknowledge_is_refused_and_changes_nothing() {
    let mut desk = Desk::new(policy());
    let roster = city();
    desk.on_help_event(P, &press("e1", "h1", PressKind::Help, T0), &roster, T0);
    let (reason, out) = desk.on_command(
        P,
        &command("c1", "inc-e1", "w2", ValidAction::Acknowledge),
        &roster,
        T0 + 10,
    );
    assert_eq!(reason, Some(RejectReason::NotPermitted));
    let (_, message) = rejection(&out);
    assert!(
        message.contains("w2 is not assigned to incident inc-e1"),
        "{message}"
    );
    assert_eq!(
        out[0].event.envelope.as_ref().map(|e| e.event_id.as_str()),
        Some("c1:rejected")
    );
    let incident = desk.get("inc-e1").expect("still there");
    assert_eq!(incident.revision, 1);
    assert_eq!(incident.state, IncidentState::Assigned as i32);
    assert_eq!(
        desk.next_deadline(),
        Some(T0 + 60_000),
        "the deadline still runs"
    );
}

#[test]
fn a_supervisor_of_the_grid_may_acknowledge_and_close_for_the_worker() {
    let mut desk = Desk::new(policy());
    let roster = city();
    desk.on_help_event(P, &press("e1", "h1", PressKind::Help, T0), &roster, T0);
    let (reason, out) = desk.on_command(
        P,
        &command("c1", "inc-e1", "sup", ValidAction::Acknowledge),
        &roster,
        T0 + 1,
    );
    assert_eq!(reason, None);
    match out[0].event.change.as_ref() {
        Some(Change::Acknowledged(a)) => assert_eq!(
            (a.responder_id.as_str(), a.acknowledged_by.as_str()),
            ("w1", "sup")
        ),
        other => panic!("{other:?}"),
    }
    let (reason, out) = desk.on_command(
        P,
        &command("c2", "inc-e1", "sup", close_action()),
        &roster,
        T0 + 2,
    );
    assert_eq!(reason, None);
    assert_eq!(last_incident(&out).closed_by, "sup");
}

fn with_request(mut command: ValidCommand, request_id: &str) -> ValidCommand {
    command.request_id = request_id.into();
    command
}

#[test]
fn the_same_acknowledge_sent_three_times_acts_once_and_answers_three_times() {
    let mut desk = Desk::new(policy());
    let roster = city();
    desk.on_help_event(P, &press("e1", "h1", PressKind::Help, T0), &roster, T0);
    let mut answers = Vec::new();
    for (i, cid) in ["c1", "c2", "c3"].into_iter().enumerate() {
        let ack = with_request(
            command(cid, "inc-e1", "w1", ValidAction::Acknowledge),
            "req-1",
        );
        let (reason, out) = desk.on_command(P, &ack, &roster, T0 + 10 + i as i64);
        assert_eq!(reason, None, "attempt {}", i + 1);
        answers.push(changes(&out));
        assert_eq!(
            out[0].event.cause_id, cid,
            "each attempt gets its own answer"
        );
    }
    assert_eq!(answers, [["acknowledged"], ["repeated"], ["repeated"]]);
    let incident = desk.get("inc-e1").expect("open");
    assert_eq!(incident.revision, 2, "the retries changed nothing");
    assert_eq!(incident.assignments[0].ack_request_id, "req-1");
}

/// The status service's idempotent producer can write one command record twice when a
/// broker fails over (a retry under a bumped producer epoch is not deduplicated by Kafka):
/// the cluster fault suite found `<command_id>:repeated` twice in incident-events.
#[test]
fn a_command_record_that_arrives_twice_is_answered_once_even_after_a_restart() {
    let mut desk = Desk::new(policy());
    let roster = city();
    let mut log = desk
        .on_help_event(P, &press("e1", "h1", PressKind::Help, T0), &roster, T0)
        .1;
    let ack = |cid: &str| {
        with_request(
            command(cid, "inc-e1", "w1", ValidAction::Acknowledge),
            "req-1",
        )
    };
    let mut answers = Vec::new();
    // c1 applies; c2 is the client's retry; each of them reaches the router twice.
    for (i, cid) in ["c1", "c1", "c2", "c2"].into_iter().enumerate() {
        let (reason, out) = desk.on_command(P, &ack(cid), &roster, T0 + 10 + i as i64);
        assert_eq!(reason, None);
        answers.push(changes(&out));
        log.extend(out);
    }
    assert_eq!(
        answers,
        [
            vec!["acknowledged"],
            vec!["repeated"],
            vec!["repeated"],
            vec![]
        ]
    );
    let ids: Vec<String> = log
        .iter()
        .filter_map(|o| o.event.envelope.as_ref().map(|e| e.event_id.clone()))
        .collect();
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "event ids {ids:?}");
    assert_eq!(desk.get("inc-e1").expect("open").revision, 2);
    desk.check_invariants().expect("invariants");

    // A router rebuilt from the log (snapshots in order, as incident-state holds them)
    // still knows which command ids it answered; a new retry is still answered.
    let mut restored = Desk::new(policy());
    for o in &log {
        restored.restore(P, &o.event, T0 + 20);
    }
    let (reason, out) = restored.on_command(P, &ack("c2"), &roster, T0 + 21);
    assert_eq!((reason, changes(&out)), (None, vec![]));
    let (reason, out) = restored.on_command(P, &ack("c3"), &roster, T0 + 22);
    assert_eq!((reason, changes(&out)), (None, vec!["repeated"]));
    assert_eq!(out[0].event.cause_id, "c3");
    restored.check_invariants().expect("invariants");
}

/// The same failover that writes an accepted command twice writes a rejected one twice: each
/// copy used to get its own `<command_id>:rejected` (one event id twice in incident-events),
/// and a copy arriving after the incident moved on could even be applied after its sender
/// was told it was refused.
#[test]
fn a_rejected_command_record_that_arrives_twice_is_answered_once_even_after_a_restart() {
    let mut desk = Desk::new(policy());
    let roster = city();
    let mut log = desk
        .on_help_event(P, &press("e1", "h1", PressKind::Help, T0), &roster, T0)
        .1;
    // c1: a close before the acknowledgement (WrongState); c2: a request id reused for
    // something else (Invalid). Each reaches the router twice.
    let close = with_request(command("c1", "inc-e1", "w1", close_action()), "k-1");
    let ack = with_request(
        command("c0", "inc-e1", "w1", ValidAction::Acknowledge),
        "a-1",
    );
    let reused = with_request(command("c2", "inc-e1", "w1", close_action()), "a-1");
    let mut answers = Vec::new();
    for (i, cmd) in [&close, &close, &ack, &reused, &reused]
        .into_iter()
        .enumerate()
    {
        let (reason, out) = desk.on_command(P, cmd, &roster, T0 + 10 + i as i64);
        answers.push((reason, changes(&out)));
        log.extend(out);
    }
    assert_eq!(
        answers,
        [
            (Some(RejectReason::WrongState), vec!["rejected"]),
            (None, vec![]),
            (None, vec!["acknowledged"]),
            (Some(RejectReason::Invalid), vec!["rejected"]),
            (None, vec![]),
        ]
    );
    let ids: Vec<String> = log
        .iter()
        .filter_map(|o| o.event.envelope.as_ref().map(|e| e.event_id.clone()))
        .collect();
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "event ids {ids:?}");
    let incident = desk.get("inc-e1").expect("open");
    assert_eq!(incident.revision, 2, "the rejections changed nothing");
    assert_eq!(incident.state, IncidentState::Acknowledged as i32);
    desk.check_invariants().expect("invariants");

    // Rebuilt from the log (each rejection carries the incident that remembers it), the
    // router still answers neither copy again, and the close, now that the incident is
    // acknowledged, is not applied from the stale copy of c1 either.
    let mut restored = Desk::new(policy());
    for o in &log {
        restored.restore(P, &o.event, T0 + 20);
    }
    for cmd in [&close, &reused] {
        let (reason, out) = restored.on_command(P, cmd, &roster, T0 + 21);
        assert_eq!((reason, changes(&out)), (None, vec![]));
    }
    let fresh_close = with_request(command("c3", "inc-e1", "w1", close_action()), "k-1");
    let (reason, out) = restored.on_command(P, &fresh_close, &roster, T0 + 22);
    assert_eq!((reason, changes(&out)), (None, vec!["closed"]));
    restored.check_invariants().expect("invariants");
}

#[test]
fn an_incident_remembers_only_its_latest_repeated_command_ids() {
    let mut desk = Desk::new(policy());
    let roster = city();
    desk.on_help_event(P, &press("e1", "h1", PressKind::Help, T0), &roster, T0);
    for i in 0..20 {
        let retry = with_request(
            command(&format!("c{i}"), "inc-e1", "w1", ValidAction::Acknowledge),
            "req-1",
        );
        desk.on_command(P, &retry, &roster, T0 + 10 + i);
    }
    let remembered = desk.get("inc-e1").expect("open").repeated_command_ids;
    let latest: Vec<String> = (12..20).map(|i| format!("c{i}")).collect();
    assert_eq!(remembered, latest);
}

#[test]
fn a_retried_close_is_recognised_after_a_restart_and_a_reused_request_id_is_refused() {
    let mut desk = Desk::new(policy());
    let roster = city();
    let mut log = desk
        .on_help_event(P, &press("e1", "h1", PressKind::Help, T0), &roster, T0)
        .1;
    let ack = with_request(
        command("c1", "inc-e1", "w1", ValidAction::Acknowledge),
        "a-1",
    );
    log.extend(desk.on_command(P, &ack, &roster, T0 + 1).1);
    let close = with_request(command("c2", "inc-e1", "w1", close_action()), "k-1");
    log.extend(desk.on_command(P, &close, &roster, T0 + 2).1);

    // A new router instance rebuilt from the log still knows both request ids.
    let mut restored = Desk::new(policy());
    for o in &log {
        restored.restore(P, &o.event, T0 + 3);
    }
    let retry = with_request(command("c3", "inc-e1", "w1", close_action()), "k-1");
    let (reason, out) = restored.on_command(P, &retry, &roster, T0 + 4);
    assert_eq!((reason, changes(&out)), (None, vec!["repeated"]));
    let late_ack = with_request(
        command("c4", "inc-e1", "w1", ValidAction::Acknowledge),
        "a-1",
    );
    let (reason, out) = restored.on_command(P, &late_ack, &roster, T0 + 5);
    assert_eq!((reason, changes(&out)), (None, vec!["repeated"]));

    // The same id with other content is a client bug, not a retry.
    let mut other = with_request(command("c5", "inc-e1", "w1", close_action()), "k-1");
    other.action = ValidAction::Close {
        outcome: IncidentOutcome::FalseAlarm,
        resolution: Resolution::FalseAlarm,
        note: String::new(),
    };
    let (reason, out) = restored.on_command(P, &other, &roster, T0 + 6);
    assert_eq!(reason, Some(RejectReason::Invalid));
    assert!(rejection(&out).1.contains("different command"));
    let stolen = with_request(
        command("c6", "inc-e1", "sup", ValidAction::Acknowledge),
        "a-1",
    );
    let (reason, _) = restored.on_command(P, &stolen, &roster, T0 + 7);
    assert_eq!(reason, Some(RejectReason::Invalid));
}

#[test]
fn closing_before_acknowledging_is_refused() {
    let mut desk = Desk::new(policy());
    let roster = city();
    desk.on_help_event(P, &press("e1", "h1", PressKind::Help, T0), &roster, T0);
    let (reason, out) = desk.on_command(
        P,
        &command("c1", "inc-e1", "w1", close_action()),
        &roster,
        T0 + 1,
    );
    assert_eq!(reason, Some(RejectReason::WrongState));
    assert!(rejection(&out).1.contains("must be acknowledged before"));
}

#[test]
fn close_frees_the_responder_and_a_closed_incident_refuses_further_commands() {
    let mut desk = Desk::new(policy());
    let roster = city();
    desk.on_help_event(P, &press("e1", "h1", PressKind::Help, T0), &roster, T0);
    desk.on_command(
        P,
        &command("c1", "inc-e1", "w1", ValidAction::Acknowledge),
        &roster,
        T0 + 1,
    );
    assert_eq!(desk.load_of("w1"), 1);
    let (_, out) = desk.on_command(
        P,
        &command("c2", "inc-e1", "w1", close_action()),
        &roster,
        T0 + 2,
    );
    let incident = last_incident(&out);
    assert_eq!(incident.state, IncidentState::Closed as i32);
    assert_eq!(incident.resolution, Resolution::Resolved as i32);
    assert_eq!(incident.outcome, IncidentOutcome::Mediated as i32);
    match out.last().and_then(|o| o.event.change.as_ref()) {
        Some(Change::Closed(closed)) => assert_eq!(
            (closed.outcome, closed.resolution),
            (
                IncidentOutcome::Mediated as i32,
                Resolution::Resolved as i32
            )
        ),
        other => panic!("expected a closed event, got {other:?}"),
    }
    assert_eq!(desk.load_of("w1"), 0);
    assert_eq!(desk.open_count(), 0);
    let (reason, _) = desk.on_command(
        P,
        &command("c3", "inc-e1", "w1", ValidAction::Acknowledge),
        &roster,
        T0 + 3,
    );
    assert_eq!(reason, Some(RejectReason::WrongState));
}

#[test]
fn commands_for_unknown_incidents_are_rejected_as_not_found_in_the_commands_partition() {
    let mut desk = Desk::new(policy());
    let (reason, out) = desk.on_command(
        5,
        &command("c1", "inc-nope", "w1", ValidAction::Acknowledge),
        &city(),
        T0,
    );
    assert_eq!(reason, Some(RejectReason::NotFound));
    assert_eq!((out[0].partition, out[0].key.as_str()), (5, "g1"));
    assert!(out[0].event.incident.is_none());
}

#[test]
fn a_not_found_command_record_that_arrives_twice_is_answered_once() {
    let mut desk = Desk::new(policy());
    let roster = city();
    let close = command("c1", "inc-nope", "w1", close_action());
    let (reason, first) = desk.on_command(5, &close, &roster, T0);
    assert_eq!(reason, Some(RejectReason::NotFound));
    assert_eq!(first.len(), 1);
    let (reason, copy) = desk.on_command(5, &close, &roster, T0 + 1);
    assert_eq!(
        (reason, copy.len()),
        (None, 0),
        "the copy gets no second answer"
    );
    // Another command for the same unknown incident is a new question and gets its answer.
    let (reason, other) = desk.on_command(
        5,
        &command("c2", "inc-nope", "w1", ValidAction::Acknowledge),
        &roster,
        T0 + 2,
    );
    assert_eq!((reason, other.len()), (Some(RejectReason::NotFound), 1));
}

#[test]
fn the_desk_remembers_only_its_latest_not_found_command_ids() {
    let mut desk = Desk::new(policy());
    let roster = city();
    for n in 0..=NOT_FOUND_COMMAND_IDS {
        let c = command(&format!("c{n}"), "inc-nope", "w1", ValidAction::Acknowledge);
        let (reason, _) = desk.on_command(5, &c, &roster, T0);
        assert_eq!(reason, Some(RejectReason::NotFound));
    }
    // c0 was the oldest and is forgotten; the newest is still remembered.
    let oldest = command("c0", "inc-nope", "w1", ValidAction::Acknowledge);
    assert_eq!(desk.on_command(5, &oldest, &roster, T0).1.len(), 1);
    let newest = command(
        &format!("c{NOT_FOUND_COMMAND_IDS}"),
        "inc-nope",
        "w1",
        ValidAction::Acknowledge,
    );
    assert!(desk.on_command(5, &newest, &roster, T0).1.is_empty());
}

#[test]
fn a_patrol_officer_may_take_an_incident_waiting_at_the_police_desk() {
    let mut desk = Desk::new(policy());
    desk.on_help_event(
        P,
        &press("e1", "h1", PressKind::Help, T0),
        &Roster::default(),
        T0,
    );
    let roster = city();
    let (reason, out) = desk.on_command(
        P,
        &command("c1", "inc-e1", "cop-far", ValidAction::Acknowledge),
        &roster,
        T0 + 1,
    );
    assert_eq!(reason, None);
    let incident = last_incident(&out);
    assert_eq!(assignee(&incident, Track::Community), "cop-far");
    assert_eq!(incident.state, IncidentState::Acknowledged as i32);
}

#[test]
fn restoring_from_the_emitted_events_gives_the_same_state_and_deadlines() {
    let roster = city();
    let mut live = Desk::new(policy());
    let mut log = Vec::new();
    log.extend(
        live.on_help_event(P, &press("e1", "h1", PressKind::Help, T0), &roster, T0)
            .1,
    );
    log.extend(
        live.on_help_event(P, &press("e2", "h2", PressKind::Urgent, T0), &roster, T0)
            .1,
    );
    log.extend(
        live.on_command(
            P,
            &command("c1", "inc-e1", "w1", ValidAction::Acknowledge),
            &roster,
            T0 + 5,
        )
        .1,
    );
    let mut restored = Desk::new(policy());
    for o in &log {
        restored.restore(o.partition, &o.event, T0 + 10);
    }
    assert_eq!(restored.get("inc-e1"), live.get("inc-e1"));
    assert_eq!(restored.get("inc-e2"), live.get("inc-e2"));
    assert_eq!(restored.load_of("w1"), live.load_of("w1"));
    assert_eq!(restored.next_deadline(), live.next_deadline());
    // A deadline that fell due while the router was down fires once it is back.
    let late = T0 + 3_600_000;
    assert_eq!(restored.on_tick(&roster, late), live.on_tick(&roster, late));
    // Replaying an older revision changes nothing.
    restored.restore(P, &log[0].event, late);
    assert_eq!(restored.get("inc-e1"), live.get("inc-e1"));
    // A repeat of an event restored from the log is still recognised.
    let (outcome, _) =
        restored.on_help_event(P, &press("e2", "h2", PressKind::Urgent, T0), &roster, late);
    assert_eq!(outcome, HelpOutcome::Duplicate);
}

#[test]
fn the_same_inputs_give_the_same_decisions() {
    let roster = city();
    let run = || {
        let mut desk = Desk::new(policy());
        let mut out = Vec::new();
        for i in 0..20 {
            let kind = if i % 3 == 0 {
                PressKind::Urgent
            } else {
                PressKind::Help
            };
            out.extend(
                desk.on_help_event(
                    P,
                    &press(&format!("e{i}"), &format!("h{i}"), kind, T0 + i),
                    &roster,
                    T0 + i,
                )
                .1,
            );
        }
        out.extend(desk.on_tick(&roster, T0 + 90_000));
        out
    };
    assert_eq!(run(), run());
}

#[test]
fn closed_incidents_are_forgotten_after_the_retention_time() {
    let mut desk = Desk::new(policy());
    let roster = city();
    desk.on_help_event(P, &press("e1", "h1", PressKind::Help, T0), &roster, T0);
    desk.on_command(
        P,
        &command("c1", "inc-e1", "w1", ValidAction::Acknowledge),
        &roster,
        T0,
    );
    desk.on_command(
        P,
        &command("c2", "inc-e1", "w1", close_action()),
        &roster,
        T0,
    );
    desk.on_tick(&roster, T0 + 600_000);
    assert_eq!(desk.len(), 1, "kept until the retention time has passed");
    desk.on_tick(&roster, T0 + 600_001);
    assert!(desk.is_empty());
}

#[test]
fn dropping_a_partition_forgets_its_incidents_and_their_load() {
    let mut desk = Desk::new(policy());
    let roster = city();
    desk.on_help_event(1, &press("e1", "h1", PressKind::Help, T0), &roster, T0);
    desk.on_help_event(2, &press("e2", "h2", PressKind::Help, T0), &roster, T0);
    desk.drop_partition(1);
    assert!(desk.get("inc-e1").is_none());
    assert!(desk.get("inc-e2").is_some());
    assert_eq!(desk.load_of("w1"), 0);
}

fn as_role(mut command: ValidCommand, role: ActorRole) -> ValidCommand {
    command.actor_role = role;
    command
}

#[test]
fn a_dispatch_identity_may_acknowledge_and_close_the_police_track_of_a_camera_alert() {
    let mut desk = Desk::new(policy());
    let roster = city();
    desk.on_help_event(P, &camera("e1", CameraLabel::Fight, 0.9, T0), &roster, T0);
    let ack = as_role(
        command("c1", "inc-e1", "dispatch-110", ValidAction::Acknowledge),
        ActorRole::Dispatch,
    );
    let (reason, out) = desk.on_command(P, &ack, &roster, T0 + 1);
    assert_eq!(reason, None);
    match out[0].event.change.as_ref() {
        Some(Change::Acknowledged(a)) => {
            assert_eq!(a.track, Track::Police as i32);
            assert_eq!(
                (a.responder_id.as_str(), a.acknowledged_by.as_str()),
                ("cop-near", "dispatch-110")
            );
        }
        other => panic!("{other:?}"),
    }
    let close = as_role(
        command("c2", "inc-e1", "dispatch-110", close_action()),
        ActorRole::Dispatch,
    );
    let (reason, out) = desk.on_command(P, &close, &roster, T0 + 2);
    assert_eq!(reason, None);
    assert_eq!(last_incident(&out).closed_by, "dispatch-110");
}

#[test]
fn a_dispatch_identity_may_not_touch_an_incident_meant_for_the_community_only() {
    let mut desk = Desk::new(policy());
    let roster = city();
    desk.on_help_event(P, &press("e1", "h1", PressKind::Help, T0), &roster, T0);
    let ack = as_role(
        command("c1", "inc-e1", "dispatch-110", ValidAction::Acknowledge),
        ActorRole::Dispatch,
    );
    let (reason, out) = desk.on_command(P, &ack, &roster, T0 + 1);
    assert_eq!(reason, Some(RejectReason::NotPermitted));
    assert!(rejection(&out).1.contains("not meant for police"));
}

#[test]
fn consoles_and_admins_may_not_act_and_a_responder_token_gets_no_supervisor_rights() {
    let mut desk = Desk::new(policy());
    let roster = city();
    desk.on_help_event(P, &press("e1", "h1", PressKind::Help, T0), &roster, T0);
    // Each its own command (its own id: a second record with one id is a copy, not answered).
    for (id, actor, role) in [
        ("c1-console", "console-1", ActorRole::Console),
        ("c1-admin", "admin", ActorRole::Admin),
        ("c1-sup", "sup", ActorRole::Responder),
    ] {
        let ack = as_role(command(id, "inc-e1", actor, ValidAction::Acknowledge), role);
        let (reason, _) = desk.on_command(P, &ack, &roster, T0 + 1);
        assert_eq!(reason, Some(RejectReason::NotPermitted), "{role:?}");
    }
    let as_supervisor = as_role(
        command("c2", "inc-e1", "sup", ValidAction::Acknowledge),
        ActorRole::Supervisor,
    );
    assert_eq!(desk.on_command(P, &as_supervisor, &roster, T0 + 2).0, None);
    let own = as_role(
        command("c3", "inc-e1", "w1", close_action()),
        ActorRole::Responder,
    );
    assert_eq!(desk.on_command(P, &own, &roster, T0 + 3).0, None);
}

#[test]
fn a_camera_key_stays_with_the_newest_open_incident() {
    let mut desk = Desk::new(policy());
    let roster = city();
    // The first loitering incident stays open past the window; the next detection opens a
    // second one. Acknowledging the first must not take the key away from the second.
    desk.on_help_event(
        P,
        &camera("e1", CameraLabel::Loitering, 0.9, T0),
        &roster,
        T0,
    );
    let late = T0 + 200_000;
    let (o2, _) = desk.on_help_event(
        P,
        &camera("e2", CameraLabel::Loitering, 0.9, late),
        &roster,
        late,
    );
    assert_eq!(o2, HelpOutcome::Opened);
    desk.on_command(
        P,
        &command("c1", "inc-e1", "cop-near", ValidAction::Acknowledge),
        &roster,
        late + 1,
    );
    desk.on_command(
        P,
        &command("c2", "inc-e1", "cop-near", close_action()),
        &roster,
        late + 2,
    );
    let (o3, out) = desk.on_help_event(
        P,
        &camera("e3", CameraLabel::Loitering, 0.9, late + 10),
        &roster,
        late + 10,
    );
    assert_eq!(o3, HelpOutcome::Attached);
    assert_eq!(last_incident(&out).incident_id, "inc-e2");
    desk.check_invariants()
        .expect("indexes match the incidents");
}

/// Random but seeded sequences of presses, detections, commands from random people, and
/// time passing; after every step the derived indexes must match the incidents.
/// An output's `encoded_incident`, where the desk set one, is its incident encoded: the
/// adapter writes the event around those bytes.
fn assert_encoded_incidents_match(out: &[Output]) {
    for o in out {
        if let Some(bytes) = &o.encoded_incident {
            let incident = o
                .event
                .incident
                .as_ref()
                .expect("an incident with its bytes");
            assert_eq!(**bytes, *incident.encode_to_vec(), "{:?}", o.event.change);
        }
    }
}

#[test]
fn random_sequences_keep_every_index_consistent() {
    let roster = city();
    let people = ["w1", "w2", "sup", "cop-near", "cop-far", "nobody"];
    let labels = [
        CameraLabel::Loitering,
        CameraLabel::Fire,
        CameraLabel::Intrusion,
    ];
    for seed in 0..40 {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut desk = Desk::new(policy());
        let mut now = T0;
        let mut opened: Vec<String> = Vec::new();
        for step in 0..300 {
            now += rng.i64(0..20_000);
            let id = format!("s{seed}-{step}");
            match rng.u8(..10) {
                0..=3 => {
                    let kind =
                        [PressKind::Help, PressKind::Urgent, PressKind::Medical][rng.usize(..3)];
                    let (_, out) = desk.on_help_event(
                        P,
                        &press(&id, &format!("h{}", rng.u8(..6)), kind, now),
                        &roster,
                        now,
                    );
                    assert_encoded_incidents_match(&out);
                    opened.extend(
                        out.iter().filter_map(|o| {
                            o.event.incident.as_ref().map(|i| i.incident_id.clone())
                        }),
                    );
                }
                4 | 5 => {
                    let e = camera(
                        &id,
                        labels[rng.usize(..labels.len())],
                        0.5 + rng.f32() / 2.0,
                        now,
                    );
                    let (_, out) = desk.on_help_event(P, &e, &roster, now);
                    assert_encoded_incidents_match(&out);
                    opened.extend(
                        out.iter().filter_map(|o| {
                            o.event.incident.as_ref().map(|i| i.incident_id.clone())
                        }),
                    );
                }
                6 | 7 if !opened.is_empty() => {
                    let target = opened[rng.usize(..opened.len())].clone();
                    let action = if rng.bool() {
                        ValidAction::Acknowledge
                    } else {
                        close_action()
                    };
                    let (_, out) = desk.on_command(
                        P,
                        &command(&id, &target, people[rng.usize(..people.len())], action),
                        &roster,
                        now,
                    );
                    assert_encoded_incidents_match(&out);
                }
                _ => {
                    assert_encoded_incidents_match(&desk.on_tick(&roster, now));
                }
            }
            if let Err(problem) = desk.check_invariants() {
                panic!("seed {seed}, step {step}: {problem}");
            }
        }
    }
}

#[test]
fn i_need_help_hands_the_track_to_the_supervisor_at_once_and_a_retry_changes_nothing() {
    let mut desk = Desk::new(policy());
    let roster = city();
    let out = desk.on_help_event(P, &press("e1", "h1", PressKind::Help, T0), &roster, T0);
    assert_eq!(last_incident(&out.1).assignments[0].responder_id, "w1");
    desk.on_command(
        P,
        &command("c1", "inc-e1", "w1", ValidAction::Acknowledge),
        &roster,
        T0 + 1,
    );
    let help = ValidAction::Escalate {
        note: "two men fighting, I am alone".into(),
    };
    // Only the responder on the track may ask.
    let (reason, out) = desk.on_command(
        P,
        &command("c2", "inc-e1", "w2", help.clone()),
        &roster,
        T0 + 2,
    );
    assert_eq!(reason, Some(RejectReason::NotPermitted));
    assert!(rejection(&out).1.contains("only its responder"));

    let asked = with_request(command("c3", "inc-e1", "w1", help.clone()), "h-1");
    let (reason, out) = desk.on_command(P, &asked, &roster, T0 + 3);
    assert_eq!((reason, changes(&out)), (None, vec!["escalated"]));
    match out.last().and_then(|o| o.event.change.as_ref()) {
        Some(Change::Escalated(e)) => {
            assert_eq!(e.to_level, EscalationLevel::GridSupervisor as i32);
            assert_eq!(e.responder_id, "sup");
            assert!(
                e.reason.contains("w1 asked for help: two men fighting"),
                "{e:?}"
            );
        }
        other => panic!("expected an escalation, got {other:?}"),
    }
    let incident = last_incident(&out);
    let track = &incident.assignments[0];
    assert!(track.acknowledged_at.is_none() && track.ack_deadline.is_some());
    assert!(track.timed_out_responder_ids.contains(&"w1".to_owned()));
    assert_eq!(incident.state, IncidentState::Assigned as i32);
    assert_eq!((desk.load_of("w1"), desk.load_of("sup")), (0, 1));

    // The phone retries after a lost answer: success, nothing moves.
    let retry = with_request(command("c4", "inc-e1", "w1", help), "h-1");
    let (reason, out) = desk.on_command(P, &retry, &roster, T0 + 4);
    assert_eq!((reason, changes(&out)), (None, vec!["repeated"]));
    assert_eq!(desk.load_of("sup"), 1);
}

#[test]
fn a_supervisor_or_an_admin_escalates_a_workers_track_and_a_console_or_a_bare_responder_may_not() {
    let mut desk = Desk::new(policy());
    let roster = city();
    let out = desk.on_help_event(P, &press("e1", "h1", PressKind::Help, T0), &roster, T0);
    assert_eq!(last_incident(&out.1).assignments[0].responder_id, "w1");
    let push = ValidAction::Escalate {
        note: "no answer from w1".into(),
    };
    let as_role = |id: &str, actor: &str, role: ActorRole| {
        let mut c = command(id, "inc-e1", actor, push.clone());
        c.actor_role = role;
        c
    };
    let (reason, out) = desk.on_command(
        P,
        &as_role("c1", "wall", ActorRole::Console),
        &roster,
        T0 + 1,
    );
    assert_eq!(reason, Some(RejectReason::NotPermitted), "{out:?}");
    // A responder token gets no supervisor rights, whatever the roster says.
    let (reason, _) = desk.on_command(
        P,
        &as_role("c2", "sup", ActorRole::Responder),
        &roster,
        T0 + 2,
    );
    assert_eq!(reason, Some(RejectReason::NotPermitted));
    // Another worker of the grid is not its supervisor.
    let (reason, out) = desk.on_command(
        P,
        &as_role("c3", "w2", ActorRole::Responder),
        &roster,
        T0 + 3,
    );
    assert_eq!(reason, Some(RejectReason::NotPermitted));
    assert!(
        rejection(&out)
            .1
            .contains("the grid's supervisors or an admin")
    );

    let (reason, out) = desk.on_command(
        P,
        &as_role("c4", "sup", ActorRole::Supervisor),
        &roster,
        T0 + 4,
    );
    assert_eq!((reason, changes(&out)), (None, vec!["escalated"]));
    match out.last().and_then(|o| o.event.change.as_ref()) {
        Some(Change::Escalated(e)) => {
            assert_eq!(e.to_level, EscalationLevel::GridSupervisor as i32);
            assert!(
                e.reason.contains("sup escalated it: no answer from w1"),
                "{e:?}"
            );
        }
        other => panic!("expected an escalation, got {other:?}"),
    }
    let track = &last_incident(&out).assignments[0];
    assert_eq!(
        track.timed_out_responder_ids,
        vec!["w1".to_owned()],
        "the worker leaves, not the supervisor"
    );
    assert_eq!(desk.load_of("w1"), 0);

    // An admin (not on the roster) pushes it on: the supervisor now on it leaves the track.
    let (reason, out) =
        desk.on_command(P, &as_role("c5", "root", ActorRole::Admin), &roster, T0 + 5);
    assert_eq!((reason, changes(&out)), (None, vec!["escalated"]));
    let track = &last_incident(&out).assignments[0];
    assert!(track.timed_out_responder_ids.contains(&"sup".to_owned()));
    assert_ne!(track.level, EscalationLevel::GridSupervisor as i32);
    assert_eq!(desk.load_of("sup"), 0);
}

#[test]
fn restoring_from_state_records_as_read_equals_restoring_from_decoded_incidents() {
    let roster = city();
    let mut live = Desk::new(policy());
    let mut log = live
        .on_help_event(P, &press("e1", "h1", PressKind::Help, T0), &roster, T0)
        .1;
    log.extend(
        live.on_help_event(P, &press("e2", "h2", PressKind::Urgent, T0), &roster, T0)
            .1,
    );
    log.extend(
        live.on_command(
            P,
            &command("c1", "inc-e1", "w1", ValidAction::Acknowledge),
            &roster,
            T0 + 5,
        )
        .1,
    );
    // The last snapshot of each incident, as the restore keeps it: the record's bytes.
    let mut last: std::collections::HashMap<String, Incident> = std::collections::HashMap::new();
    for o in &log {
        let incident = o.event.incident.clone().unwrap_or_default();
        last.insert(incident.incident_id.clone(), incident);
    }
    let mut from_records = Desk::new(policy());
    from_records.reserve(last.len());
    let mut from_incidents = Desk::new(policy());
    for (id, incident) in &last {
        let record = incident.encode_to_vec().into_boxed_slice();
        from_records
            .restore_record(P, Id::from(id.as_str()), record, T0 + 10)
            .expect("a valid record");
        from_incidents.restore_incident(P, incident, T0 + 10);
    }
    for id in ["inc-e1", "inc-e2"] {
        assert_eq!(from_records.get(id), live.get(id));
    }
    assert_eq!(from_records.load_of("w1"), from_incidents.load_of("w1"));
    assert_eq!(from_records.next_deadline(), from_incidents.next_deadline());
    assert_eq!(from_records.open_count(), 2);
    // Bytes that are no incident are refused and change nothing.
    assert!(
        from_records
            .restore_record(P, Id::from("inc-x"), Box::from(&[0xffu8, 0xff][..]), T0)
            .is_err()
    );
    assert_eq!(from_records.len(), 2);
    // A closed incident past the retention time is not kept, and is tombstoned.
    let mut closing = Desk::new(policy());
    let mut out = closing
        .on_help_event(P, &press("e3", "h3", PressKind::Help, T0), &roster, T0)
        .1;
    out.extend(
        closing
            .on_command(
                P,
                &command("c2", "inc-e3", "w1", ValidAction::Acknowledge),
                &roster,
                T0 + 1,
            )
            .1,
    );
    out.extend(
        closing
            .on_command(
                P,
                &command("c3", "inc-e3", "w1", close_action()),
                &roster,
                T0 + 2,
            )
            .1,
    );
    let closed = last_incident(&out).encode_to_vec().into_boxed_slice();
    let mut late = Desk::new(policy());
    let long_after = T0 + policy().closed_retention_ms + 1_000;
    late.restore_record(P, Id::from("inc-e3"), closed, long_after)
        .expect("a valid record");
    assert!(late.is_empty());
    assert_eq!(late.take_forgotten(), vec![(P, "inc-e3".to_owned())]);
}
