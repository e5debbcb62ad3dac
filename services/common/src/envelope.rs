//! The envelope on every record: unique id, when it happened, who wrote it, schema version.

use crate::time::{Millis, to_timestamp};
use helpgrid_proto::{SCHEMA_VERSION, pb::Envelope};

/// A fresh envelope with a random (v4) event id.
pub fn new_envelope(source: &str, occurred_at: Millis) -> Envelope {
    Envelope {
        event_id: uuid::Uuid::new_v4().to_string(),
        occurred_at: Some(to_timestamp(occurred_at)),
        source: source.to_owned(),
        schema_version: SCHEMA_VERSION,
    }
}
