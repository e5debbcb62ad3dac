//! What one batch of incident-events records becomes in PostgreSQL: pure code, no I/O.
//!
//! Every record is one `incident_events` row (the audit trail, the record's bytes kept as
//! they were). Per incident, the batch's last snapshot becomes its `incidents` row (latest
//! state) with the batch's counter increments (escalations, reassignments, repeat presses)
//! summed, and every assignment in the snapshots becomes an `assignments` row, keyed by
//! incident, track, level and attempt (the router bumps the attempt on each reassignment, so
//! the rows are the assignment history). A record that does not decode is refused with a
//! reason and goes to the dead-letter topic; the rest of the batch flows.

use helpgrid_common::time::{Millis, from_timestamp};
use helpgrid_proto::encoded_incident;
use helpgrid_proto::pb::{
    AttachKind, CameraLabel, EscalationLevel, Incident, IncidentEvent, IncidentOutcome,
    IncidentSource, IncidentState, PressKind, incident_event::Change,
};
use prost::Message;
use std::collections::HashMap;

/// One record read from incident-events.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
}

/// Why a record cannot be archived.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Undecodable {
    #[error("the record has no value")]
    Empty,
    #[error("not a helpgrid.v1.IncidentEvent: {0}")]
    Decode(String),
    #[error("the event has no envelope or no event id")]
    NoEventId,
    #[error("the event names no change")]
    NoChange,
    #[error("the event names no incident")]
    NoIncident,
}

impl Undecodable {
    /// Short label for the dead-letter `kind` header and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::Decode(_) => "decode",
            Self::NoEventId => "no_event_id",
            Self::NoChange => "no_change",
            Self::NoIncident => "no_incident",
        }
    }
}

/// One `incident_events` row.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRow {
    pub partition: i32,
    pub offset: i64,
    pub event_id: String,
    pub incident_id: String,
    pub grid_id: String,
    pub revision: i64,
    pub change: &'static str,
    pub occurred_at: Option<Millis>,
    pub cause_id: String,
    /// Who acted, where the change names someone (closer, acknowledger, new responder).
    pub actor: String,
    pub record: Vec<u8>,
}

/// One `incidents` row: the latest state, plus counter increments from this batch.
#[derive(Debug, Clone, PartialEq)]
pub struct IncidentRow {
    pub incident_id: String,
    pub grid_id: String,
    pub state: i16,
    pub source: i16,
    pub priority: i16,
    /// "button:help", "camera:fire", ...: what reports count by kind.
    pub kind: String,
    pub household_id: String,
    pub device_id: String,
    pub camera_id: String,
    pub reported_at: Option<Millis>,
    pub opened_at: Millis,
    pub acknowledged_at: Option<Millis>,
    pub closed_at: Option<Millis>,
    pub resolution: i16,
    /// How it ended (`IncidentOutcome`); for an incident closed before outcomes existed, the
    /// one its resolution maps to. 0 while open.
    pub outcome: i16,
    pub closed_by: String,
    pub settled_level: Option<i16>,
    pub revision: i64,
    pub escalations: i32,
    pub reassignments: i32,
    pub repeat_presses: i32,
    /// The latest `Incident` as protobuf, returned by history queries.
    pub snapshot: Vec<u8>,
}

/// One `assignments` row.
#[derive(Debug, Clone, PartialEq)]
pub struct AssignmentRow {
    pub incident_id: String,
    pub track: i16,
    pub level: i16,
    pub attempt: i32,
    pub responder_id: String,
    pub responder_role: i16,
    pub assigned_at: Option<Millis>,
    pub acknowledged_at: Option<Millis>,
    pub acknowledged_by: String,
}

/// A record refused, with where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Refused {
    pub record: SourceRecord,
    pub why: Undecodable,
}

/// The rows of one batch, ready to write in one transaction.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct BatchRows {
    pub events: Vec<EventRow>,
    pub incidents: Vec<IncidentRow>,
    pub assignments: Vec<AssignmentRow>,
    pub refused: Vec<Refused>,
}

/// Decodes one record into an event and its row.
pub fn decode(record: &SourceRecord) -> Result<(IncidentEvent, EventRow), Undecodable> {
    let payload = record.payload.as_deref().ok_or(Undecodable::Empty)?;
    let event = IncidentEvent::decode(payload).map_err(|e| Undecodable::Decode(e.to_string()))?;
    let envelope = event.envelope.as_ref().ok_or(Undecodable::NoEventId)?;
    if envelope.event_id.is_empty() {
        return Err(Undecodable::NoEventId);
    }
    let change = event.change.as_ref().ok_or(Undecodable::NoChange)?;
    let incident_id = match (&event.incident, change) {
        (Some(incident), _) if !incident.incident_id.is_empty() => incident.incident_id.clone(),
        (_, Change::Rejected(rejected)) if !rejected.incident_id.is_empty() => {
            rejected.incident_id.clone()
        }
        _ => return Err(Undecodable::NoIncident),
    };
    let row = EventRow {
        partition: record.partition,
        offset: record.offset,
        event_id: envelope.event_id.clone(),
        incident_id,
        grid_id: event
            .incident
            .as_ref()
            .map(|i| i.grid_id.clone())
            .unwrap_or_default(),
        revision: event.incident.as_ref().map_or(0, |i| i.revision as i64),
        change: change.name(),
        occurred_at: from_timestamp(envelope.occurred_at.as_ref()),
        cause_id: event.cause_id.clone(),
        actor: actor_of(change),
        record: payload.to_vec(),
    };
    Ok((event, row))
}

fn actor_of(change: &Change) -> String {
    match change {
        // "Opened and assigned" in one event: the assignees, as their `assigned` would name.
        Change::Opened(c) => c
            .assigned
            .iter()
            .map(|a| a.responder_id.as_str())
            .collect::<Vec<_>>()
            .join(","),
        Change::Attached(_) => String::new(),
        Change::Assigned(c) => c.responder_id.clone(),
        Change::Acknowledged(c) => c.acknowledged_by.clone(),
        Change::Reassigned(c) => c.to_responder_id.clone(),
        Change::Escalated(c) => c.responder_id.clone(),
        Change::Closed(c) => c.closed_by.clone(),
        Change::Rejected(c) => c.actor_id.clone(),
        Change::Repeated(c) => c.actor_id.clone(),
    }
}

/// The rows of `records`, in their order. Records of one incident are on one partition and
/// arrive in revision order, so the last snapshot seen is the latest. Only that one becomes
/// the incident's row (encoded once per batch, not once per event).
pub fn batch_rows<'a>(records: impl IntoIterator<Item = &'a SourceRecord>) -> BatchRows {
    let mut rows = BatchRows::default();
    let mut incidents: HashMap<String, usize> = HashMap::new();
    // Per incident: its latest snapshot, the batch's counter increments, and the event row
    // whose record carries that snapshot.
    let mut latest: Vec<(Incident, [i32; 3], usize)> = Vec::new();
    let mut assignments: HashMap<(String, i16, i16, i32), usize> = HashMap::new();
    for record in records {
        let (mut event, row) = match decode(record) {
            Ok(decoded) => decoded,
            Err(why) => {
                rows.refused.push(Refused {
                    record: record.clone(),
                    why,
                });
                continue;
            }
        };
        let event_at = rows.events.len();
        rows.events.push(row);
        let Some(incident) = event.incident.take().filter(|i| !i.incident_id.is_empty()) else {
            continue;
        };
        let (escalations, reassignments, repeat_presses) = counters(event.change.as_ref());
        for a in &incident.assignments {
            let row = AssignmentRow {
                incident_id: incident.incident_id.clone(),
                track: a.track as i16,
                level: a.level as i16,
                attempt: a.attempt as i32,
                responder_id: a.responder_id.clone(),
                responder_role: a.responder_role as i16,
                assigned_at: from_timestamp(a.assigned_at.as_ref()),
                acknowledged_at: from_timestamp(a.acknowledged_at.as_ref()),
                acknowledged_by: a.acknowledged_by.clone(),
            };
            let key = (row.incident_id.clone(), row.track, row.level, row.attempt);
            match assignments.get(&key) {
                Some(&at) => rows.assignments[at] = row,
                None => {
                    assignments.insert(key, rows.assignments.len());
                    rows.assignments.push(row);
                }
            }
        }
        match incidents.get(&incident.incident_id) {
            Some(&at) => {
                let (snapshot, sums, from) = &mut latest[at];
                *snapshot = incident;
                *from = event_at;
                sums[0] += escalations;
                sums[1] += reassignments;
                sums[2] += repeat_presses;
            }
            None => {
                incidents.insert(incident.incident_id.clone(), latest.len());
                latest.push((
                    incident,
                    [escalations, reassignments, repeat_presses],
                    event_at,
                ));
            }
        }
    }
    rows.incidents = latest
        .iter()
        .map(|(incident, [e, r, p], from)| {
            // The snapshot is the incident's bytes as the event carries them: copied, not
            // decoded and encoded again (and fields this build does not know are kept).
            let snapshot = encoded_incident(&rows.events[*from].record)
                .map_or_else(|| incident.encode_to_vec(), <[u8]>::to_vec);
            IncidentRow {
                escalations: *e,
                reassignments: *r,
                repeat_presses: *p,
                ..incident_row(incident, snapshot)
            }
        })
        .collect();
    rows
}

/// (escalations, reassignments, repeat presses) one change adds.
fn counters(change: Option<&Change>) -> (i32, i32, i32) {
    match change {
        Some(Change::Escalated(_)) => (1, 0, 0),
        Some(Change::Reassigned(_)) => (0, 1, 0),
        Some(Change::Attached(a)) if a.kind == AttachKind::RepeatPress as i32 => (0, 0, 1),
        _ => (0, 0, 0),
    }
}

fn incident_row(incident: &Incident, snapshot: Vec<u8>) -> IncidentRow {
    IncidentRow {
        incident_id: incident.incident_id.clone(),
        grid_id: incident.grid_id.clone(),
        state: incident.state as i16,
        source: incident.source as i16,
        priority: incident.priority as i16,
        kind: kind_of(incident),
        household_id: incident.household_id.clone(),
        device_id: incident.device_id.clone(),
        camera_id: incident.camera_id.clone(),
        reported_at: from_timestamp(incident.reported_at.as_ref()),
        // Every snapshot the router writes has opened_at; reported_at is the fallback.
        opened_at: from_timestamp(incident.opened_at.as_ref())
            .or_else(|| from_timestamp(incident.reported_at.as_ref()))
            .unwrap_or(0),
        acknowledged_at: from_timestamp(incident.acknowledged_at.as_ref()),
        closed_at: from_timestamp(incident.closed_at.as_ref()),
        resolution: incident.resolution as i16,
        outcome: incident.effective_outcome() as i16,
        closed_by: incident.closed_by.clone(),
        settled_level: settled_level(incident).map(|l| l as i16),
        revision: incident.revision as i64,
        escalations: 0,
        reassignments: 0,
        repeat_presses: 0,
        snapshot,
    }
}

/// "button:help", "camera:fire", ...: source and what was pressed or seen.
pub fn kind_of(incident: &Incident) -> String {
    fn short(name: &str, prefix: &str) -> String {
        name.strip_prefix(prefix)
            .unwrap_or(name)
            .to_ascii_lowercase()
    }
    match IncidentSource::try_from(incident.source) {
        Ok(IncidentSource::Button) => format!(
            "button:{}",
            short(
                PressKind::try_from(incident.press_kind)
                    .unwrap_or_default()
                    .as_str_name(),
                "PRESS_KIND_"
            )
        ),
        Ok(IncidentSource::Camera) => format!(
            "camera:{}",
            short(
                CameraLabel::try_from(incident.camera_label)
                    .unwrap_or_default()
                    .as_str_name(),
                "CAMERA_LABEL_"
            )
        ),
        // A device maintenance job (offline, silent, low battery) the router opened.
        Ok(IncidentSource::DeviceHealth) => "device:maintenance".to_owned(),
        _ => "unspecified".to_owned(),
    }
}

/// The ladder level a closed incident was settled at: the level of the assignment held by
/// whoever closed it; when the closer held none (a supervisor or dispatch closing for
/// someone), the highest level among acknowledged assignments, else among all assignments.
/// `None` while open, or when it was closed with no assignment at all.
pub fn settled_level(incident: &Incident) -> Option<EscalationLevel> {
    if incident.state != IncidentState::Closed as i32 {
        return None;
    }
    let level = |a: &helpgrid_proto::pb::Assignment| EscalationLevel::try_from(a.level).ok();
    if !incident.closed_by.is_empty()
        && let Some(a) = incident
            .assignments
            .iter()
            .find(|a| a.responder_id == incident.closed_by)
    {
        return level(a);
    }
    incident
        .assignments
        .iter()
        .filter(|a| a.acknowledged_at.is_some())
        .filter_map(level)
        .max()
        .or_else(|| incident.assignments.iter().filter_map(level).max())
}

/// Outcomes that count as "resolved" in reports: settled on the spot or mediated (the two
/// whose resolution is RESOLVED). Referred, false alarm and nobody there are closed but not
/// resolved. The resolution rate asks this function, nowhere else.
pub fn resolving_outcomes() -> Vec<i16> {
    vec![
        IncidentOutcome::ResolvedOnSpot as i16,
        IncidentOutcome::Mediated as i16,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use helpgrid_common::time::to_timestamp;
    use helpgrid_proto::pb::{
        Assignment, Envelope, Escalated, EventAttached, IncidentClosed, IncidentOpened, Track,
    };

    fn incident(id: &str, revision: u64) -> Incident {
        Incident {
            incident_id: id.into(),
            grid_id: "g-1".into(),
            state: IncidentState::Assigned as i32,
            source: IncidentSource::Button as i32,
            press_kind: PressKind::Urgent as i32,
            household_id: "hh-9".into(),
            opened_at: Some(to_timestamp(1_000)),
            revision,
            ..Incident::default()
        }
    }

    fn record(offset: i64, event: &IncidentEvent) -> SourceRecord {
        SourceRecord {
            partition: 2,
            offset,
            key: Some(b"g-1".to_vec()),
            payload: Some(event.encode_to_vec()),
        }
    }

    fn event(id: &str, incident: Incident, change: Change) -> IncidentEvent {
        IncidentEvent {
            envelope: Some(Envelope {
                event_id: id.into(),
                occurred_at: Some(to_timestamp(5_000)),
                source: "router".into(),
                schema_version: 1,
            }),
            incident: Some(incident),
            cause_id: String::new(),
            change: Some(change),
        }
    }

    fn assignment(level: EscalationLevel, responder: &str, acked: bool) -> Assignment {
        Assignment {
            track: Track::Community as i32,
            level: level as i32,
            responder_id: responder.into(),
            attempt: 1,
            acknowledged_at: acked.then(|| to_timestamp(2_000)),
            ..Assignment::default()
        }
    }

    #[test]
    fn one_incident_row_per_incident_with_the_latest_state_and_summed_counters() {
        let mut escalated = incident("i-1", 2);
        escalated.assignments = vec![assignment(EscalationLevel::GridSupervisor, "s-1", false)];
        let mut attached = escalated.clone();
        attached.revision = 3;
        let records = [
            record(
                10,
                &event(
                    "e1",
                    incident("i-1", 1),
                    Change::Opened(IncidentOpened::default()),
                ),
            ),
            record(
                11,
                &event("e2", escalated, Change::Escalated(Escalated::default())),
            ),
            record(
                12,
                &event(
                    "e3",
                    attached,
                    Change::Attached(EventAttached {
                        kind: AttachKind::RepeatPress as i32,
                        ..EventAttached::default()
                    }),
                ),
            ),
        ];
        let rows = batch_rows(&records);
        assert_eq!(rows.events.len(), 3);
        assert_eq!(rows.incidents.len(), 1);
        let row = &rows.incidents[0];
        assert_eq!(
            (row.revision, row.escalations, row.repeat_presses),
            (3, 1, 1)
        );
        assert_eq!(row.kind, "button:urgent");
        assert_eq!(rows.assignments.len(), 1, "one assignment, seen twice");
        assert_eq!(rows.events[1].change, "escalated");
        assert_eq!(rows.events[2].offset, 12);
    }

    #[test]
    fn the_snapshot_is_the_latest_incident_as_its_event_carried_it() {
        let mut later = incident("i-1", 2);
        later.assignments = vec![assignment(EscalationLevel::GridWorker, "w-1", true)];
        let mut carried = event("e2", later.clone(), Change::Escalated(Escalated::default()));
        // A field this build does not know (a newer router's), inside the incident: kept.
        let mut incident_bytes = later.encode_to_vec();
        incident_bytes.extend_from_slice(&[0xf8, 0x07, 0x2a]); // field 127, varint 42
        carried.incident = None;
        let mut payload = carried.encode_to_vec();
        payload.push(0x12); // field 2, length-delimited
        prost::encoding::encode_varint(incident_bytes.len() as u64, &mut payload);
        payload.extend_from_slice(&incident_bytes);
        let records = [
            record(
                10,
                &event(
                    "e1",
                    incident("i-1", 1),
                    Change::Opened(IncidentOpened::default()),
                ),
            ),
            SourceRecord {
                payload: Some(payload),
                ..record(11, &carried)
            },
        ];
        let rows = batch_rows(&records);
        assert_eq!(rows.incidents.len(), 1);
        assert_eq!(rows.incidents[0].revision, 2);
        assert_eq!(rows.incidents[0].snapshot, incident_bytes);
        assert_eq!(
            Incident::decode(rows.incidents[0].snapshot.as_slice()).ok(),
            Some(later)
        );
    }

    #[test]
    fn the_incident_field_is_found_without_decoding_or_not_at_all() {
        let e = event(
            "e1",
            incident("i-1", 1),
            Change::Opened(IncidentOpened::default()),
        );
        let payload = e.encode_to_vec();
        assert_eq!(
            encoded_incident(&payload).map(<[u8]>::to_vec),
            Some(incident("i-1", 1).encode_to_vec())
        );
        assert_eq!(
            encoded_incident(&payload[..payload.len() - 1]),
            None,
            "truncated"
        );
        let mut twice = payload.clone();
        twice.extend_from_slice(&payload);
        assert_eq!(encoded_incident(&twice), None, "two incidents");
        assert_eq!(encoded_incident(&[0x0b]), None, "a group");
    }

    #[test]
    fn undecodable_records_are_refused_with_a_reason_and_the_rest_flows() {
        let good = event(
            "e1",
            incident("i-1", 1),
            Change::Opened(IncidentOpened::default()),
        );
        let mut no_change = good.clone();
        no_change.change = None;
        let records = [
            SourceRecord {
                partition: 0,
                offset: 1,
                key: None,
                payload: Some(b"\xff\xff not protobuf".to_vec()),
            },
            SourceRecord {
                partition: 0,
                offset: 2,
                key: None,
                payload: None,
            },
            record(3, &no_change),
            record(4, &good),
        ];
        let rows = batch_rows(&records);
        let kinds: Vec<&str> = rows.refused.iter().map(|r| r.why.kind()).collect();
        assert_eq!(kinds, ["decode", "empty", "no_change"]);
        assert_eq!(rows.events.len(), 1);
        assert_eq!(rows.incidents.len(), 1);
    }

    #[test]
    fn settled_at_the_closers_level_else_the_highest_acknowledged() {
        let mut closed = incident("i-1", 5);
        closed.state = IncidentState::Closed as i32;
        closed.assignments = vec![
            assignment(EscalationLevel::GridWorker, "w-1", true),
            assignment(EscalationLevel::PatrolOfficer, "p-1", false),
        ];
        closed.closed_by = "w-1".into();
        assert_eq!(settled_level(&closed), Some(EscalationLevel::GridWorker));
        closed.closed_by = "supervisor-7".into();
        assert_eq!(settled_level(&closed), Some(EscalationLevel::GridWorker));
        closed.assignments[0].acknowledged_at = None;
        assert_eq!(settled_level(&closed), Some(EscalationLevel::PatrolOfficer));
        closed.state = IncidentState::Acknowledged as i32;
        assert_eq!(
            settled_level(&closed),
            None,
            "open incidents are not settled"
        );
        let closed_event = event("e", closed, Change::Closed(IncidentClosed::default()));
        assert_eq!(
            decode(&record(1, &closed_event)).map(|(_, r)| r.change),
            Ok("closed")
        );
    }

    #[test]
    fn a_rejection_of_an_unknown_incident_is_kept_in_the_trail_under_the_named_id() {
        let rejected = IncidentEvent {
            incident: None,
            change: Some(Change::Rejected(helpgrid_proto::pb::CommandRejected {
                incident_id: "i-404".into(),
                actor_id: "w-1".into(),
                ..Default::default()
            })),
            ..event(
                "e9",
                incident("x", 1),
                Change::Opened(IncidentOpened::default()),
            )
        };
        let rows = batch_rows(&[record(7, &rejected)]);
        assert_eq!(rows.events[0].incident_id, "i-404");
        assert_eq!(rows.events[0].actor, "w-1");
        assert!(rows.incidents.is_empty());
    }
}
