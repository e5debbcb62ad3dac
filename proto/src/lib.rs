//! The `helpgrid.v1` contract shared by every HelpGrid component.
//!
//! - [`pb`]: generated messages and gRPC stubs (`proto/helpgrid/v1/*.proto`).
//! - [`FILE_DESCRIPTOR_SET`]: the compiled descriptors, served by gRPC reflection.
//! - [`SCHEMA_VERSION`]: the envelope schema version this build writes.
//! - [`outcome`]: close outcomes and how they relate to the older `Resolution`.
//! - [`encoded_incident`]: an incident event's snapshot bytes, found without decoding.
//! - [`encode_incident_event`]: the other way, an event written around snapshot bytes at hand.

pub mod pb {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("helpgrid.v1");
}

pub mod outcome;

/// Serialized `FileDescriptorSet` of the contract, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("helpgrid_descriptor");

/// Envelope `schema_version` written by this build.
pub const SCHEMA_VERSION: u32 = 1;

/// The bytes of an encoded `IncidentEvent`'s `incident` field (number 2), exactly as the
/// router wrote them: the incident's snapshot without decoding and encoding it again (fields
/// this build does not know are kept). `None` when the field is absent, appears more than once
/// (protobuf would merge the parts) or the payload is not well formed; the caller then encodes
/// the decoded incident. Used by the status read model and the archive.
pub fn encoded_incident(payload: &[u8]) -> Option<&[u8]> {
    use prost::encoding::decode_varint;
    const INCIDENT_FIELD: u64 = 2;
    let mut rest = payload;
    let mut found = None;
    while !rest.is_empty() {
        let key = decode_varint(&mut rest).ok()?;
        match key & 7 {
            0 => {
                decode_varint(&mut rest).ok()?;
            }
            1 => rest = rest.get(8..)?,
            5 => rest = rest.get(4..)?,
            2 => {
                let len = usize::try_from(decode_varint(&mut rest).ok()?).ok()?;
                let value = rest.get(..len)?;
                rest = rest.get(len..)?;
                if key >> 3 == INCIDENT_FIELD {
                    if found.is_some() {
                        return None;
                    }
                    found = Some(value);
                }
            }
            // Groups (3, 4) are not used by these messages; anything else is malformed.
            _ => return None,
        }
    }
    found
}

/// Appends `event` encoded, its `incident` field taken from `incident`: the incident already
/// encoded (as the router keeps it for incident-state), so it is not encoded a second time.
/// The bytes are the ones `event.encode` writes when `incident` is the encoding of
/// `event.incident` (fields in number order, as prost writes them); `event.incident` itself is
/// not read.
pub fn encode_incident_event(event: &pb::IncidentEvent, incident: &[u8], buf: &mut Vec<u8>) {
    use prost::encoding::{WireType, encode_key, encode_varint, message, string};
    if let Some(envelope) = &event.envelope {
        message::encode(1, envelope, buf);
    }
    encode_key(2, WireType::LengthDelimited, buf);
    encode_varint(incident.len() as u64, buf);
    buf.extend_from_slice(incident);
    if !event.cause_id.is_empty() {
        string::encode(3, &event.cause_id, buf);
    }
    if let Some(change) = &event.change {
        change.encode(buf);
    }
}

impl pb::incident_event::Change {
    /// A short stable name for the kind of change ("opened", "assigned", …), for logs,
    /// metrics labels and the console.
    pub fn name(&self) -> &'static str {
        use pb::incident_event::Change;
        match self {
            Change::Opened(_) => "opened",
            Change::Assigned(_) => "assigned",
            Change::Attached(_) => "attached",
            Change::Acknowledged(_) => "acknowledged",
            Change::Reassigned(_) => "reassigned",
            Change::Escalated(_) => "escalated",
            Change::Closed(_) => "closed",
            Change::Rejected(_) => "rejected",
            Change::Repeated(_) => "repeated",
        }
    }
}

impl pb::IncidentEvent {
    /// The responders this event assigned at a track's first level: the `assigned` change's
    /// one, or the ones an `opened` carries when the router wrote "opened and assigned" as one
    /// event (`IncidentOpened.assigned`). Readers that act on assignments (time to assign,
    /// notifications, device feedback, tallies) go through this so both shapes count.
    pub fn assignments(&self) -> &[pb::ResponderAssigned] {
        use pb::incident_event::Change;
        match &self.change {
            Some(Change::Assigned(a)) => std::slice::from_ref(a),
            Some(Change::Opened(o)) => &o.assigned,
            _ => &[],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::pb::{IncidentEvent, IncidentOpened, ResponderAssigned, incident_event::Change};

    fn assigned(responder_id: &str) -> ResponderAssigned {
        ResponderAssigned {
            responder_id: responder_id.to_owned(),
            ..ResponderAssigned::default()
        }
    }

    fn ids(event: &IncidentEvent) -> Vec<&str> {
        event
            .assignments()
            .iter()
            .map(|a| a.responder_id.as_str())
            .collect()
    }

    #[test]
    fn assignments_come_from_either_shape() {
        let event = |change| IncidentEvent {
            change: Some(change),
            ..IncidentEvent::default()
        };
        assert_eq!(ids(&event(Change::Assigned(assigned("w1")))), ["w1"]);
        let folded = Change::Opened(IncidentOpened {
            assigned: vec![assigned("w1"), assigned("p1")],
        });
        assert_eq!(ids(&event(folded)), ["w1", "p1"]);
        assert!(ids(&event(Change::Opened(IncidentOpened::default()))).is_empty());
        assert!(ids(&IncidentEvent::default()).is_empty());
    }

    #[test]
    fn an_event_around_its_encoded_incident_is_the_event_encoded() {
        use super::pb::{Envelope, Incident, incident_event::Change as C};
        use prost::Message;
        let incident = Incident {
            incident_id: "inc-e1".into(),
            grid_id: "g1".into(),
            revision: 3,
            recent_event_ids: vec!["e1".into(), "e2".into()],
            ..Incident::default()
        };
        let full = IncidentEvent {
            envelope: Some(Envelope {
                event_id: "inc-e1:3".into(),
                source: "helpgrid-router".into(),
                schema_version: 1,
                ..Envelope::default()
            }),
            incident: Some(incident.clone()),
            cause_id: "e2".into(),
            change: Some(C::Opened(IncidentOpened {
                assigned: vec![assigned("w1")],
            })),
        };
        let record = incident.encode_to_vec();
        let mut spliced = Vec::new();
        super::encode_incident_event(&full, &record, &mut spliced);
        assert_eq!(spliced, full.encode_to_vec());
        // Absent optional parts: no envelope, no cause, no change.
        let bare = IncidentEvent {
            incident: Some(incident),
            ..IncidentEvent::default()
        };
        let mut spliced = Vec::new();
        super::encode_incident_event(&bare, &record, &mut spliced);
        assert_eq!(spliced, bare.encode_to_vec());
    }
}
