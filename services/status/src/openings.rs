//! What a Watch client gets for one incident event. The router writes "opened and assigned"
//! as ONE event (`IncidentOpened.assigned`); a client written before that field waits for an
//! `assigned` change and would never see one. So unless its request opts in
//! (`compact_openings`), such an event reaches it as the router wrote openings before: the
//! `opened` update with its list emptied, then one `assigned` update per entry, in order.
//!
//! The synthesized updates carry the event's incident unchanged — same snapshot, same
//! revision. Inventing revisions 2, 3 … would collide with the router's next change (revision
//! 2), and a client that keeps the newest snapshot per revision would then drop a real change;
//! with the same snapshot such a client keeps the right state whichever update it takes. Their
//! envelope ids are `<event_id>:assigned:<track number>`: unique, stable across replays, and
//! the idempotency key notify gives the same notice.
//!
//! Pure code: the watcher ([`crate::watcher`]) numbers the updates for its cursor
//! ([`crate::cursor`]), so a resume continues inside the record.

use helpgrid_proto::pb::incident_event::Change;
use helpgrid_proto::pb::{Envelope, IncidentEvent, IncidentOpened, ResponderAssigned};

/// The assignments an "opened and assigned" event carries (none for any other event).
fn folded(event: &IncidentEvent) -> &[ResponderAssigned] {
    match &event.change {
        Some(Change::Opened(opened)) => &opened.assigned,
        _ => &[],
    }
}

/// How many updates `event` is sent as: 1, or for an "opened and assigned" event not sent
/// compact, 1 + its assignments.
pub fn update_count(event: &IncidentEvent, compact: bool) -> u32 {
    if compact {
        return 1;
    }
    u32::try_from(folded(event).len())
        .unwrap_or(u32::MAX - 1)
        .saturating_add(1)
}

/// Update `index` (0-based, below [`update_count`]) of `event`: 0 is the event itself (its
/// `opened.assigned` emptied unless compact); k >= 1 is the `assigned` change of the k-th
/// folded assignment.
pub fn update(event: &IncidentEvent, compact: bool, index: u32) -> IncidentEvent {
    if compact {
        return event.clone();
    }
    let assigned = folded(event);
    let Some(k) = index.checked_sub(1) else {
        if assigned.is_empty() {
            return event.clone();
        }
        return IncidentEvent {
            change: Some(Change::Opened(IncidentOpened::default())),
            ..event.clone()
        };
    };
    let Some(one) = usize::try_from(k).ok().and_then(|k| assigned.get(k)) else {
        // Out of range is the caller's bug; the event itself is the harmless answer.
        return event.clone();
    };
    let envelope = event.envelope.as_ref().map(|envelope| Envelope {
        event_id: format!("{}:assigned:{}", envelope.event_id, one.track),
        ..envelope.clone()
    });
    IncidentEvent {
        envelope,
        incident: event.incident.clone(),
        cause_id: event.cause_id.clone(),
        change: Some(Change::Assigned(one.clone())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use helpgrid_proto::pb::{Acknowledged, Incident, Track};
    use prost_types::Timestamp;

    fn assigned(track: Track, responder_id: &str) -> ResponderAssigned {
        ResponderAssigned {
            track: track as i32,
            responder_id: responder_id.into(),
            level: 1,
            ack_deadline: Some(Timestamp {
                seconds: 1_764_000_120,
                nanos: 0,
            }),
        }
    }

    fn opened_and_assigned() -> IncidentEvent {
        IncidentEvent {
            envelope: Some(Envelope {
                event_id: "inc-p1:1".into(),
                source: "router".into(),
                schema_version: 1,
                occurred_at: Some(Timestamp {
                    seconds: 1_764_000_000,
                    nanos: 0,
                }),
            }),
            incident: Some(Incident {
                incident_id: "inc-p1".into(),
                revision: 1,
                ..Default::default()
            }),
            cause_id: "p1".into(),
            change: Some(Change::Opened(IncidentOpened {
                assigned: vec![
                    assigned(Track::Community, "w-1"),
                    assigned(Track::Police, "po-1"),
                ],
            })),
        }
    }

    #[test]
    fn an_opened_and_assigned_event_becomes_opened_then_one_assigned_per_track() {
        let event = opened_and_assigned();
        assert_eq!(update_count(&event, false), 3);
        let opened = update(&event, false, 0);
        assert_eq!(
            opened,
            IncidentEvent {
                change: Some(Change::Opened(IncidentOpened::default())),
                ..event.clone()
            }
        );
        for (index, track, responder) in [(1, Track::Community, "w-1"), (2, Track::Police, "po-1")]
        {
            let synthesized = update(&event, false, index);
            assert_eq!(
                synthesized.change,
                Some(Change::Assigned(assigned(track, responder)))
            );
            assert_eq!(
                synthesized.incident, event.incident,
                "same snapshot and revision"
            );
            assert_eq!(synthesized.cause_id, "p1");
            let envelope = synthesized.envelope.unwrap();
            assert_eq!(
                envelope.event_id,
                format!("inc-p1:1:assigned:{}", track as i32)
            );
            assert_eq!(
                Envelope {
                    event_id: "inc-p1:1".into(),
                    ..envelope
                },
                event.envelope.clone().unwrap()
            );
        }
    }

    #[test]
    fn compact_watchers_and_other_events_get_the_event_as_written() {
        let event = opened_and_assigned();
        assert_eq!(update_count(&event, true), 1);
        assert_eq!(update(&event, true, 0), event);
        let acknowledged = IncidentEvent {
            change: Some(Change::Acknowledged(Acknowledged::default())),
            ..event.clone()
        };
        let bare_opened = IncidentEvent {
            change: Some(Change::Opened(IncidentOpened::default())),
            ..event
        };
        for other in [acknowledged, bare_opened, IncidentEvent::default()] {
            assert_eq!(update_count(&other, false), 1);
            assert_eq!(update(&other, false, 0), other);
        }
    }
}
