//! A notice is one thing worth telling a webhook: an incident event, or a re-notification of
//! an assignee who has not acknowledged. It names the responders the change concerns, so a
//! subscription can match on responder, role and track (agency).

use helpgrid_common::time::{Millis, from_timestamp};
use helpgrid_proto::pb::{Incident, IncidentEvent, ResponderRole, Track, incident_event::Change};
use std::sync::Arc;

/// The kinds of change a subscription can ask for (the proto's `NotifyTrigger`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NoticeKind {
    Opened,
    Assigned,
    Renotify,
    Reassigned,
    Escalated,
    Attached,
    Acknowledged,
    Closed,
}

impl NoticeKind {
    pub const ALL: [Self; 8] = [
        Self::Opened,
        Self::Assigned,
        Self::Renotify,
        Self::Reassigned,
        Self::Escalated,
        Self::Attached,
        Self::Acknowledged,
        Self::Closed,
    ];

    /// The `kind` field of the generic body and the metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Opened => "opened",
            Self::Assigned => "assigned",
            Self::Renotify => "renotify",
            Self::Reassigned => "reassigned",
            Self::Escalated => "escalated",
            Self::Attached => "attached",
            Self::Acknowledged => "acknowledged",
            Self::Closed => "closed",
        }
    }
}

/// A responder a change is about, with the role and track they hold it in. At the police
/// desk the responder id is empty: a track filter still matches, a responder filter not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Concerned {
    pub responder_id: String,
    pub role: ResponderRole,
    pub track: Track,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    pub kind: NoticeKind,
    /// Same for every attempt, restart and redelivery of this notice: the incident event's
    /// id (a re-notification adds `:renotify`). Receivers deduplicate on it.
    pub idempotency_key: String,
    /// The incident event this notice comes from.
    pub event_id: String,
    pub occurred_at: Millis,
    /// The incident as it is after the change; shared by the notices of one event.
    pub incident: Arc<Incident>,
    /// Who the change is about. Assignments: the assignee; incident-wide changes (opened,
    /// attached, closed): everyone assigned.
    pub concerned: Vec<Concerned>,
    /// The acknowledgement deadline of the assignment this notice is about, if any.
    pub ack_deadline: Option<Millis>,
    /// The router's reason (reassignments, escalations) or the closing note's resolution.
    pub reason: String,
}

impl Notice {
    /// The responder a personal notice is for (assignment, re-notification, acknowledgement).
    pub fn responder_id(&self) -> Option<&str> {
        match self.kind {
            NoticeKind::Assigned
            | NoticeKind::Renotify
            | NoticeKind::Reassigned
            | NoticeKind::Escalated
            | NoticeKind::Acknowledged => self
                .concerned
                .first()
                .map(|c| c.responder_id.as_str())
                .filter(|id| !id.is_empty()),
            _ => None,
        }
    }

    pub fn track(&self) -> Option<Track> {
        match self.kind {
            NoticeKind::Opened | NoticeKind::Attached | NoticeKind::Closed => None,
            _ => self.concerned.first().map(|c| c.track),
        }
    }
}

fn role_on(incident: &Incident, track: Track) -> ResponderRole {
    incident
        .assignments
        .iter()
        .find(|a| a.track == track as i32)
        .map_or(ResponderRole::Unspecified, |a| a.responder_role())
}

fn deadline_on(incident: &Incident, track: Track) -> Option<Millis> {
    incident
        .assignments
        .iter()
        .find(|a| a.track == track as i32)
        .and_then(|a| from_timestamp(a.ack_deadline.as_ref()))
}

fn everyone_assigned(incident: &Incident) -> Vec<Concerned> {
    incident
        .assignments
        .iter()
        .map(|a| Concerned {
            responder_id: a.responder_id.clone(),
            role: a.responder_role(),
            track: a.track(),
        })
        .collect()
}

fn one(incident: &Incident, responder_id: &str, track: Track) -> Vec<Concerned> {
    vec![Concerned {
        responder_id: responder_id.to_owned(),
        role: if responder_id.is_empty() {
            ResponderRole::Unspecified
        } else {
            role_on(incident, track)
        },
        track,
    }]
}

/// The notice an incident event gives, if any. Rejected and repeated commands and events without an
/// incident tell nobody anything.
pub fn notice_of(event: &IncidentEvent) -> Option<Notice> {
    let incident = event.incident.as_ref()?;
    let envelope = event.envelope.as_ref()?;
    let change = event.change.as_ref()?;
    let track_of = |raw: i32| Track::try_from(raw).unwrap_or(Track::Unspecified);
    let (kind, concerned, ack_deadline, reason) = match change {
        // An `opened` that carries its first assignments concerns the tracks, not yet their
        // assignees (as a bare `opened` does): the assignees hear of it by their `assigned`
        // notices (`notices_of`).
        Change::Opened(o) if !o.assigned.is_empty() => (
            NoticeKind::Opened,
            incident
                .assignments
                .iter()
                .map(|a| Concerned {
                    responder_id: String::new(),
                    role: ResponderRole::Unspecified,
                    track: a.track(),
                })
                .collect(),
            None,
            "",
        ),
        Change::Opened(_) => (NoticeKind::Opened, everyone_assigned(incident), None, ""),
        Change::Assigned(a) => {
            let track = track_of(a.track);
            (
                NoticeKind::Assigned,
                one(incident, &a.responder_id, track),
                from_timestamp(a.ack_deadline.as_ref()),
                "",
            )
        }
        Change::Reassigned(r) => {
            let track = track_of(r.track);
            (
                NoticeKind::Reassigned,
                one(incident, &r.to_responder_id, track),
                from_timestamp(r.ack_deadline.as_ref()),
                r.reason.as_str(),
            )
        }
        Change::Escalated(e) => {
            let track = track_of(e.track);
            let deadline = if e.responder_id.is_empty() {
                None
            } else {
                deadline_on(incident, track)
            };
            (
                NoticeKind::Escalated,
                one(incident, &e.responder_id, track),
                deadline,
                e.reason.as_str(),
            )
        }
        Change::Attached(_) => (NoticeKind::Attached, everyone_assigned(incident), None, ""),
        Change::Acknowledged(a) => {
            let track = track_of(a.track);
            (
                NoticeKind::Acknowledged,
                one(incident, &a.responder_id, track),
                None,
                "",
            )
        }
        Change::Closed(c) => (
            NoticeKind::Closed,
            everyone_assigned(incident),
            None,
            c.note.as_str(),
        ),
        Change::Rejected(_) | Change::Repeated(_) => return None,
    };
    Some(Notice {
        kind,
        idempotency_key: envelope.event_id.clone(),
        event_id: envelope.event_id.clone(),
        occurred_at: from_timestamp(envelope.occurred_at.as_ref()).unwrap_or_default(),
        incident: Arc::new(incident.clone()),
        concerned,
        ack_deadline,
        reason: reason.to_owned(),
    })
}

/// Every notice an incident event gives: [`notice_of`]'s, and when the router wrote "opened
/// and assigned" as one event (`IncidentOpened.assigned`), one `assigned` notice per track
/// after the `opened` one, each as a separate `assigned` event would have given it. Their
/// idempotency keys are `<event id>:assigned:<track number>` (the event id alone is the
/// `opened` notice's), stable across restarts and redeliveries like every key.
pub fn notices_of(event: &IncidentEvent) -> Vec<Notice> {
    let Some(first) = notice_of(event) else {
        return Vec::new();
    };
    let Some(Change::Opened(opened)) = &event.change else {
        return vec![first];
    };
    let mut notices = Vec::with_capacity(1 + opened.assigned.len());
    for a in &opened.assigned {
        let track = Track::try_from(a.track).unwrap_or(Track::Unspecified);
        notices.push(Notice {
            kind: NoticeKind::Assigned,
            idempotency_key: format!("{}:assigned:{}", first.event_id, a.track),
            event_id: first.event_id.clone(),
            occurred_at: first.occurred_at,
            incident: Arc::clone(&first.incident),
            concerned: one(&first.incident, &a.responder_id, track),
            ack_deadline: from_timestamp(a.ack_deadline.as_ref()),
            reason: String::new(),
        });
    }
    notices.insert(0, first);
    notices
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use helpgrid_common::time::to_timestamp;
    use helpgrid_proto::pb::{
        Acknowledged, Assignment, CommandRejected, Envelope, Escalated, IncidentClosed,
        IncidentState, ResponderAssigned,
    };

    pub(crate) fn incident(id: &str, grid: &str) -> Incident {
        Incident {
            incident_id: id.into(),
            grid_id: grid.into(),
            state: IncidentState::Assigned as i32,
            ..Incident::default()
        }
    }

    pub(crate) fn assignment(
        responder: &str,
        role: ResponderRole,
        track: Track,
        assigned_at: Millis,
        deadline: Option<Millis>,
    ) -> Assignment {
        Assignment {
            track: track as i32,
            responder_id: responder.into(),
            responder_role: role as i32,
            assigned_at: Some(to_timestamp(assigned_at)),
            ack_deadline: deadline.map(to_timestamp),
            ..Assignment::default()
        }
    }

    pub(crate) fn event(id: &str, at: Millis, incident: Incident, change: Change) -> IncidentEvent {
        IncidentEvent {
            envelope: Some(Envelope {
                event_id: id.into(),
                occurred_at: Some(to_timestamp(at)),
                source: "router".into(),
                schema_version: 1,
            }),
            incident: Some(incident),
            cause_id: String::new(),
            change: Some(change),
        }
    }

    pub(crate) fn assigned_event(
        id: &str,
        incident_id: &str,
        responder: &str,
        at: Millis,
        deadline: Millis,
    ) -> IncidentEvent {
        let mut inc = incident(incident_id, "g1");
        inc.assignments.push(assignment(
            responder,
            ResponderRole::GridWorker,
            Track::Community,
            at,
            Some(deadline),
        ));
        event(
            id,
            at,
            inc,
            Change::Assigned(ResponderAssigned {
                track: Track::Community as i32,
                responder_id: responder.into(),
                level: 1,
                ack_deadline: Some(to_timestamp(deadline)),
            }),
        )
    }

    #[test]
    fn an_assignment_concerns_the_assignee_in_their_role_with_the_deadline() {
        let notice = notice_of(&assigned_event("e1", "i1", "w-1", 1_000, 61_000)).expect("notice");
        assert_eq!(notice.kind, NoticeKind::Assigned);
        assert_eq!(notice.idempotency_key, "e1");
        assert_eq!(notice.responder_id(), Some("w-1"));
        assert_eq!(notice.concerned[0].role, ResponderRole::GridWorker);
        assert_eq!(notice.track(), Some(Track::Community));
        assert_eq!(notice.ack_deadline, Some(61_000));
        assert_eq!(notice.occurred_at, 1_000);
    }

    #[test]
    fn an_escalation_to_the_police_desk_concerns_the_track_but_nobody() {
        let inc = incident("i1", "g1");
        let e = event(
            "e2",
            5,
            inc,
            Change::Escalated(Escalated {
                track: Track::Police as i32,
                from_level: 3,
                to_level: 4,
                responder_id: String::new(),
                reason: "nobody on duty".into(),
            }),
        );
        let notice = notice_of(&e).expect("notice");
        assert_eq!(notice.kind, NoticeKind::Escalated);
        assert_eq!(notice.responder_id(), None);
        assert_eq!(notice.track(), Some(Track::Police));
        assert_eq!(notice.ack_deadline, None);
        assert_eq!(notice.reason, "nobody on duty");
    }

    #[test]
    fn a_close_concerns_everyone_assigned_and_an_acknowledgement_the_acknowledger() {
        let mut inc = incident("i1", "g1");
        inc.assignments.push(assignment(
            "w-1",
            ResponderRole::GridWorker,
            Track::Community,
            0,
            None,
        ));
        inc.assignments.push(assignment(
            "cop-1",
            ResponderRole::PatrolOfficer,
            Track::Police,
            0,
            None,
        ));
        let closed = notice_of(&event(
            "e3",
            9,
            inc.clone(),
            Change::Closed(IncidentClosed::default()),
        ))
        .expect("notice");
        assert_eq!(closed.concerned.len(), 2);
        assert_eq!(closed.track(), None);
        let acked = notice_of(&event(
            "e4",
            9,
            inc,
            Change::Acknowledged(Acknowledged {
                track: Track::Police as i32,
                responder_id: "cop-1".into(),
                acknowledged_by: "cop-1".into(),
            }),
        ))
        .expect("notice");
        assert_eq!(acked.responder_id(), Some("cop-1"));
        assert_eq!(acked.concerned[0].role, ResponderRole::PatrolOfficer);
    }

    #[test]
    fn an_opened_and_assigned_event_gives_the_opening_and_each_assignment_as_before() {
        let mut inc = incident("i1", "g1");
        inc.revision = 1;
        inc.assignments = vec![
            assignment(
                "w-1",
                ResponderRole::GridWorker,
                Track::Community,
                1_000,
                Some(61_000),
            ),
            assignment(
                "cop-1",
                ResponderRole::PatrolOfficer,
                Track::Police,
                1_000,
                Some(31_000),
            ),
        ];
        let assigned = |who: &str, track: Track, deadline: Millis| ResponderAssigned {
            track: track as i32,
            responder_id: who.into(),
            level: 0,
            ack_deadline: Some(to_timestamp(deadline)),
        };
        let e = event(
            "i1:1",
            1_000,
            inc,
            Change::Opened(helpgrid_proto::pb::IncidentOpened {
                assigned: vec![
                    assigned("w-1", Track::Community, 61_000),
                    assigned("cop-1", Track::Police, 31_000),
                ],
            }),
        );
        let notices = notices_of(&e);
        type Summary<'a> = (
            NoticeKind,
            &'a str,
            Option<&'a str>,
            Option<Track>,
            Option<Millis>,
        );
        let summary: Vec<Summary<'_>> = notices
            .iter()
            .map(|n| {
                (
                    n.kind,
                    n.idempotency_key.as_str(),
                    n.responder_id(),
                    n.track(),
                    n.ack_deadline,
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (NoticeKind::Opened, "i1:1", None, None, None),
                (
                    NoticeKind::Assigned,
                    "i1:1:assigned:1",
                    Some("w-1"),
                    Some(Track::Community),
                    Some(61_000)
                ),
                (
                    NoticeKind::Assigned,
                    "i1:1:assigned:2",
                    Some("cop-1"),
                    Some(Track::Police),
                    Some(31_000)
                ),
            ]
        );
        // The opening concerns the tracks, not yet their assignees (a responder filter on
        // `opened` matched nobody before the fold either); the assignee keeps their role.
        assert!(
            notices[0]
                .concerned
                .iter()
                .all(|c| c.responder_id.is_empty())
        );
        assert_eq!(notices[2].concerned[0].role, ResponderRole::PatrolOfficer);
        assert!(notices.iter().all(|n| n.event_id == "i1:1"));
        // A plain event gives the one notice it always gave.
        let plain = assigned_event("i1:2", "i1", "w-1", 1_000, 61_000);
        assert_eq!(
            notices_of(&plain),
            notice_of(&plain).into_iter().collect::<Vec<_>>()
        );
    }

    #[test]
    fn rejected_commands_notify_nobody() {
        let e = event(
            "e5",
            1,
            incident("i1", "g1"),
            Change::Rejected(CommandRejected::default()),
        );
        assert_eq!(notice_of(&e), None);
        let mut no_incident = e;
        no_incident.incident = None;
        no_incident.change = Some(Change::Opened(Default::default()));
        assert_eq!(notice_of(&no_incident), None);
    }
}
