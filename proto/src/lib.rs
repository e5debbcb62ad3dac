//! The `helpgrid.v1` contract shared by every HelpGrid component.
//!
//! - [`pb`]: generated messages and gRPC stubs (`proto/helpgrid/v1/*.proto`).
//! - [`FILE_DESCRIPTOR_SET`]: the compiled descriptors, served by gRPC reflection.
//! - [`SCHEMA_VERSION`]: the envelope schema version this build writes.
//! - [`outcome`]: close outcomes and how they relate to the older `Resolution`.

pub mod pb {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("helpgrid.v1");
}

pub mod outcome;

/// Serialized `FileDescriptorSet` of the contract, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("helpgrid_descriptor");

/// Envelope `schema_version` written by this build.
pub const SCHEMA_VERSION: u32 = 1;

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
}
