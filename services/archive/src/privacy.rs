//! Personal fields in the archive become pseudonyms once an incident has been closed longer
//! than the configured period. Pure: the SQL that finds and rewrites rows is in
//! [`crate::store::pseudonymise_due`].
//!
//! Personal: the household and device ids (they identify a home), the location, the
//! resolution note (free text about people) and the snapshot reference (an image). Ids become
//! `p-` + 16 hex digits of HMAC-SHA256 under a secret key, so the same household keeps the
//! same pseudonym (repeat analysis still works) but nobody without the key can link it back;
//! the rest is removed. Responder ids stay: they are staff accountability, not resident data.

use helpgrid_proto::pb::{Incident, IncidentEvent, incident_event::Change};
use prost::Message;
use ring::hmac;

/// The keyed pseudonym of `value`; empty stays empty.
pub fn pseudonym(key: &hmac::Key, value: &str) -> String {
    if value.is_empty() || value.starts_with("p-") && value.len() == 18 {
        return value.to_owned();
    }
    let tag = hmac::sign(key, value.as_bytes());
    let hex: String = tag.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("p-{hex}")
}

pub fn scrub_incident(key: &hmac::Key, incident: &mut Incident) {
    incident.household_id = pseudonym(key, &incident.household_id);
    incident.device_id = pseudonym(key, &incident.device_id);
    incident.location = None;
    incident.resolution_note.clear();
    incident.snapshot_ref.clear();
}

/// The event with its personal fields replaced; `None` when the bytes do not decode (they
/// were archived, so they did once: leave such a row alone rather than lose it).
pub fn scrub_event(key: &hmac::Key, record: &[u8]) -> Option<Vec<u8>> {
    let mut event = IncidentEvent::decode(record).ok()?;
    if let Some(incident) = event.incident.as_mut() {
        scrub_incident(key, incident);
    }
    if let Some(Change::Closed(closed)) = event.change.as_mut() {
        closed.note.clear();
    }
    Some(event.encode_to_vec())
}

pub fn key(secret: &[u8]) -> hmac::Key {
    hmac::Key::new(hmac::HMAC_SHA256, secret)
}

#[cfg(test)]
mod tests {
    use super::*;
    use helpgrid_proto::pb::{GeoPoint, IncidentClosed};

    #[test]
    fn the_same_household_gets_the_same_pseudonym_and_free_text_is_removed() {
        let k = key(b"secret-secret-secret-secret-secr");
        let mut incident = Incident {
            household_id: "hh-42".into(),
            device_id: "dev-42".into(),
            location: Some(GeoPoint::default()),
            resolution_note: "吴某 fell".into(),
            snapshot_ref: "s3://x".into(),
            closed_by: "w-1".into(),
            ..Incident::default()
        };
        scrub_incident(&k, &mut incident);
        assert_eq!(incident.household_id, pseudonym(&k, "hh-42"));
        assert!(incident.household_id.starts_with("p-") && incident.household_id.len() == 18);
        assert_ne!(incident.household_id, pseudonym(&k, "hh-43"));
        assert_ne!(
            pseudonym(&key(b"another-key"), "hh-42"),
            incident.household_id
        );
        assert!(incident.location.is_none() && incident.resolution_note.is_empty());
        assert_eq!(incident.closed_by, "w-1", "staff ids stay");
        let again = incident.household_id.clone();
        scrub_incident(&k, &mut incident);
        assert_eq!(incident.household_id, again, "idempotent");

        let event = IncidentEvent {
            incident: Some(Incident {
                household_id: "hh-42".into(),
                ..Incident::default()
            }),
            change: Some(Change::Closed(IncidentClosed {
                note: "吴某".into(),
                ..IncidentClosed::default()
            })),
            ..IncidentEvent::default()
        };
        let scrubbed = scrub_event(&k, &event.encode_to_vec()).expect("decodes");
        let text = String::from_utf8_lossy(&scrubbed);
        assert!(!text.contains("hh-42") && !text.contains("吴某"));
    }
}
