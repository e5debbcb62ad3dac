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
