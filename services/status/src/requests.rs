//! Validation of API requests, done once at the edge: each function turns a raw request into
//! the value the rest of the service works with, or says precisely what the caller must fix.

use crate::commands::CommandAction;
use crate::cursor::{Cursor, CursorError};
use crate::read_model::{IncidentQuery, PageKey, PageTokenError};
use crate::watcher::{WatchFilter, WatchRequest};
use helpgrid_common::time::from_timestamp;
use helpgrid_proto::outcome::{OutcomeError, close_outcome};
use helpgrid_proto::pb::{
    AcknowledgeRequest, CloseRequest, GeoPoint, IncidentState, ListIncidentsRequest, Responder,
    ResponderRole, UpdateLocationRequest, UpsertResponderRequest, WatchIncidentsRequest,
};
use std::collections::HashSet;

pub const MAX_ID_LEN: usize = 128;
pub const DEFAULT_PAGE_SIZE: usize = 100;
pub const MAX_PAGE_SIZE: usize = 1000;
pub const MAX_NOTE_LEN: usize = 4000;
pub const MAX_DISPLAY_NAME_LEN: usize = 200;
/// Bound on repeated filter values, so one request cannot make every lookup expensive.
pub const MAX_FILTER_VALUES: usize = 1000;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RequestError {
    #[error("{field} is required")]
    Missing { field: &'static str },
    #[error(
        "{field} must be 1 to {MAX_ID_LEN} characters with no spaces or control characters, got {value:?}"
    )]
    BadId { field: &'static str, value: String },
    #[error("{field} must be set to one of {allowed}")]
    Unspecified {
        field: &'static str,
        allowed: &'static str,
    },
    #[error("{field} has no value {value}; use one of {allowed}")]
    UnknownValue {
        field: &'static str,
        value: i32,
        allowed: &'static str,
    },
    #[error("{field} is longer than {max} characters")]
    TooLong { field: &'static str, max: usize },
    #[error("{field} has more than {MAX_FILTER_VALUES} values")]
    TooManyValues { field: &'static str },
    #[error(
        "request_id must be at most {MAX_REQUEST_ID_LEN} printable ASCII characters without spaces (e.g. a UUID), got {value:?}"
    )]
    BadRequestId { value: String },
    #[error(transparent)]
    Outcome(#[from] OutcomeError),
    #[error("cursor: {0}")]
    Cursor(#[from] CursorError),
    #[error(transparent)]
    PageToken(#[from] PageTokenError),
    #[error("opened_after ({after} ms) must be earlier than opened_before ({before} ms)")]
    EmptyTimeWindow { after: i64, before: i64 },
    #[error(
        "location must have latitude in -90..=90 and longitude in -180..=180, got ({latitude}, {longitude})"
    )]
    BadLocation { latitude: f64, longitude: f64 },
}

const STATES: &str = "INCIDENT_STATE_WAITING, _ASSIGNED, _ACKNOWLEDGED, _CLOSED";
const ROLES: &str = "RESPONDER_ROLE_GRID_WORKER, _GRID_SUPERVISOR, _PATROL_OFFICER";

/// An incident, responder or grid id: what Kafka keys and logs can carry without surprises.
pub fn id(field: &'static str, value: &str) -> Result<String, RequestError> {
    let well_formed = !value.is_empty()
        && value.chars().count() <= MAX_ID_LEN
        && !value.chars().any(|c| c.is_whitespace() || c.is_control());
    if well_formed {
        Ok(value.to_owned())
    } else {
        Err(RequestError::BadId {
            field,
            value: value.chars().take(MAX_ID_LEN + 8).collect(),
        })
    }
}

const MAX_REQUEST_ID_LEN: usize = 128;

/// The caller's request id: empty (none given) or a short printable token.
fn request_id(value: &str) -> Result<String, RequestError> {
    let well_formed =
        value.len() <= MAX_REQUEST_ID_LEN && value.bytes().all(|b| b.is_ascii_graphic());
    if well_formed {
        Ok(value.to_owned())
    } else {
        Err(RequestError::BadRequestId {
            value: value.chars().take(MAX_REQUEST_ID_LEN + 8).collect(),
        })
    }
}

/// A command to send: who acts on which incident, and how.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidCommand {
    pub incident_id: String,
    pub actor_id: String,
    pub action: CommandAction,
    /// The caller's id for the request, so a retry is recognised; empty if none was given.
    pub request_id: String,
}

pub fn acknowledge(request: &AcknowledgeRequest) -> Result<ValidCommand, RequestError> {
    Ok(ValidCommand {
        incident_id: id("incident_id", &request.incident_id)?,
        actor_id: id("responder_id", &request.responder_id)?,
        action: CommandAction::Acknowledge,
        request_id: request_id(&request.request_id)?,
    })
}

/// "I need help" from the app: who asks on which incident, why, and the request id.
pub fn escalate(
    incident_id: &str,
    actor_id: &str,
    note: &str,
    request_id_value: &str,
) -> Result<ValidCommand, RequestError> {
    if note.chars().count() > MAX_NOTE_LEN {
        return Err(RequestError::TooLong {
            field: "note",
            max: MAX_NOTE_LEN,
        });
    }
    Ok(ValidCommand {
        incident_id: id("incident_id", incident_id)?,
        actor_id: id("responder_id", actor_id)?,
        action: CommandAction::Escalate {
            note: note.to_owned(),
        },
        request_id: request_id(request_id_value)?,
    })
}

pub fn close(request: &CloseRequest) -> Result<ValidCommand, RequestError> {
    let incident_id = id("incident_id", &request.incident_id)?;
    let actor_id = id("responder_id", &request.responder_id)?;
    let (outcome, resolution) = close_outcome(request.outcome, request.resolution)?;
    if request.note.chars().count() > MAX_NOTE_LEN {
        return Err(RequestError::TooLong {
            field: "note",
            max: MAX_NOTE_LEN,
        });
    }
    Ok(ValidCommand {
        incident_id,
        actor_id,
        action: CommandAction::Close {
            outcome,
            resolution,
            note: request.note.clone(),
        },
        request_id: request_id(&request.request_id)?,
    })
}

pub fn list_query(request: &ListIncidentsRequest) -> Result<IncidentQuery, RequestError> {
    let grid_ids = id_set("grid_ids", &request.grid_ids)?;
    if request.states.len() > MAX_FILTER_VALUES {
        return Err(RequestError::TooManyValues { field: "states" });
    }
    let mut states = HashSet::new();
    for &state in &request.states {
        match IncidentState::try_from(state) {
            Ok(IncidentState::Unspecified) | Err(_) => {
                return Err(RequestError::UnknownValue {
                    field: "states",
                    value: state,
                    allowed: STATES,
                });
            }
            Ok(_) => states.insert(state),
        };
    }
    let opened_after = from_timestamp(request.opened_after.as_ref());
    let opened_before = from_timestamp(request.opened_before.as_ref());
    if let (Some(after), Some(before)) = (opened_after, opened_before)
        && after >= before
    {
        return Err(RequestError::EmptyTimeWindow { after, before });
    }
    // Zero means "the default"; above the maximum is served as the maximum (AIP-158).
    let page_size = match request.page_size as usize {
        0 => DEFAULT_PAGE_SIZE,
        n => n.min(MAX_PAGE_SIZE),
    };
    let page_after = match request.page_token.as_str() {
        "" => None,
        token => Some(PageKey::decode(token)?),
    };
    Ok(IncidentQuery {
        grid_ids,
        states,
        opened_after,
        opened_before,
        page_size,
        page_after,
        police_only: false,
    })
}

pub fn watch(
    request: &WatchIncidentsRequest,
    partitions: usize,
) -> Result<WatchRequest, RequestError> {
    let grid_ids = id_set("grid_ids", &request.grid_ids)?;
    let resume_after = match request.cursor.as_str() {
        "" => None,
        cursor => Some(Cursor::decode(cursor, partitions)?),
    };
    Ok(WatchRequest {
        filter: WatchFilter {
            grid_ids,
            include_rejections: request.include_rejections,
            police_only: false,
        },
        resume_after,
        compact_openings: request.compact_openings,
    })
}

/// The full new state of a responder, for UpsertResponder.
pub fn upsert_responder(request: &UpsertResponderRequest) -> Result<Responder, RequestError> {
    let responder = request
        .responder
        .as_ref()
        .ok_or(RequestError::Missing { field: "responder" })?;
    id("responder.responder_id", &responder.responder_id)?;
    match ResponderRole::try_from(responder.role) {
        Ok(ResponderRole::Unspecified) => {
            return Err(RequestError::Unspecified {
                field: "responder.role",
                allowed: ROLES,
            });
        }
        Err(_) => {
            return Err(RequestError::UnknownValue {
                field: "responder.role",
                value: responder.role,
                allowed: ROLES,
            });
        }
        Ok(_) => {}
    }
    if responder.grid_ids.is_empty() {
        return Err(RequestError::Missing {
            field: "responder.grid_ids",
        });
    }
    id_set("responder.grid_ids", &responder.grid_ids)?;
    if responder.display_name.chars().count() > MAX_DISPLAY_NAME_LEN {
        return Err(RequestError::TooLong {
            field: "responder.display_name",
            max: MAX_DISPLAY_NAME_LEN,
        });
    }
    if let Some(location) = &responder.last_location {
        geo_point(location)?;
    }
    Ok(responder.clone())
}

pub fn update_location(
    request: &UpdateLocationRequest,
) -> Result<(String, GeoPoint), RequestError> {
    let responder_id = id("responder_id", &request.responder_id)?;
    let location = request
        .location
        .ok_or(RequestError::Missing { field: "location" })?;
    geo_point(&location)?;
    Ok((responder_id, location))
}

fn geo_point(point: &GeoPoint) -> Result<(), RequestError> {
    // Range checks are false for NaN, so NaN is refused too.
    if (-90.0..=90.0).contains(&point.latitude) && (-180.0..=180.0).contains(&point.longitude) {
        Ok(())
    } else {
        Err(RequestError::BadLocation {
            latitude: point.latitude,
            longitude: point.longitude,
        })
    }
}

fn id_set(field: &'static str, values: &[String]) -> Result<HashSet<String>, RequestError> {
    if values.len() > MAX_FILTER_VALUES {
        return Err(RequestError::TooManyValues { field });
    }
    values.iter().map(|v| id(field, v)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use helpgrid_proto::pb::{IncidentOutcome, ListIncidentsRequest, Resolution};

    #[test]
    fn ids_must_be_short_printable_and_without_spaces() {
        assert!(id("incident_id", "in-42").is_ok());
        assert!(id("incident_id", "网格-7").is_ok());
        for bad in ["", "a b", "a\nb", "\u{0}", &"x".repeat(MAX_ID_LEN + 1)] {
            assert!(
                matches!(
                    id("incident_id", bad),
                    Err(RequestError::BadId {
                        field: "incident_id",
                        ..
                    })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn close_requires_a_known_outcome_and_maps_an_old_clients_resolution() {
        let mut request = CloseRequest {
            incident_id: "i".into(),
            responder_id: "r".into(),
            ..Default::default()
        };
        assert!(matches!(
            close(&request),
            Err(RequestError::Outcome(OutcomeError::Missing))
        ));
        request.outcome = 99;
        assert!(matches!(
            close(&request),
            Err(RequestError::Outcome(OutcomeError::UnknownOutcome(99)))
        ));
        request.outcome = 0;
        request.resolution = Resolution::Resolved as i32;
        request.note = "n".repeat(MAX_NOTE_LEN + 1);
        assert!(matches!(
            close(&request),
            Err(RequestError::TooLong { field: "note", .. })
        ));
        request.note = "fixed the gate".into();
        assert!(matches!(
            close(&request).map(|c| c.action),
            Ok(CommandAction::Close {
                outcome: IncidentOutcome::ResolvedOnSpot,
                resolution: Resolution::Resolved,
                ..
            })
        ));
        request.resolution = 0;
        request.outcome = IncidentOutcome::ReferredToPolice as i32;
        assert!(matches!(
            close(&request).map(|c| c.action),
            Ok(CommandAction::Close {
                outcome: IncidentOutcome::ReferredToPolice,
                resolution: Resolution::Referred,
                ..
            })
        ));
    }

    #[test]
    fn acknowledge_names_the_field_that_is_wrong() {
        let request = AcknowledgeRequest {
            incident_id: "i".into(),
            responder_id: String::new(),
            request_id: String::new(),
        };
        assert!(matches!(
            acknowledge(&request),
            Err(RequestError::BadId {
                field: "responder_id",
                ..
            })
        ));
    }

    #[test]
    fn a_request_id_is_optional_short_and_printable() {
        let with = |request_id: &str| {
            acknowledge(&AcknowledgeRequest {
                incident_id: "i".into(),
                responder_id: "r".into(),
                request_id: request_id.into(),
            })
        };
        assert_eq!(with("").map(|c| c.request_id), Ok(String::new()));
        assert_eq!(
            with("5f0c1e2a-retry-safe").map(|c| c.request_id),
            Ok("5f0c1e2a-retry-safe".into())
        );
        for bad in ["has space", "tab\t", "é", &"x".repeat(129)] {
            assert!(
                matches!(with(bad), Err(RequestError::BadRequestId { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn page_size_defaults_to_100_and_is_capped_at_1000() {
        let size = |page_size| {
            list_query(&ListIncidentsRequest {
                page_size,
                ..Default::default()
            })
            .map(|q| q.page_size)
        };
        assert_eq!(size(0), Ok(DEFAULT_PAGE_SIZE));
        assert_eq!(size(7), Ok(7));
        assert_eq!(size(5000), Ok(MAX_PAGE_SIZE));
    }

    #[test]
    fn list_rejects_unknown_states_bad_tokens_and_empty_windows() {
        let states = ListIncidentsRequest {
            states: vec![IncidentState::Unspecified as i32],
            ..Default::default()
        };
        assert!(matches!(
            list_query(&states),
            Err(RequestError::UnknownValue {
                field: "states",
                ..
            })
        ));
        let token = ListIncidentsRequest {
            page_token: "nonsense".into(),
            ..Default::default()
        };
        assert_eq!(
            list_query(&token).err(),
            Some(RequestError::PageToken(PageTokenError))
        );
        let window = ListIncidentsRequest {
            opened_after: Some(helpgrid_common::time::to_timestamp(20)),
            opened_before: Some(helpgrid_common::time::to_timestamp(20)),
            ..Default::default()
        };
        assert!(matches!(
            list_query(&window),
            Err(RequestError::EmptyTimeWindow { .. })
        ));
    }

    #[test]
    fn watch_decodes_the_cursor_or_says_why_not() {
        let request = WatchIncidentsRequest {
            cursor: "v1:3,4".into(),
            ..Default::default()
        };
        assert_eq!(
            watch(&request, 2)
                .ok()
                .and_then(|w| w.resume_after)
                .map(|c| c.encode()),
            Some("v1:3,4".to_owned())
        );
        let from_now = WatchIncidentsRequest::default();
        assert_eq!(watch(&from_now, 2).ok().map(|w| w.resume_after), Some(None));
        let garbage = WatchIncidentsRequest {
            cursor: "v1:x".into(),
            ..Default::default()
        };
        assert!(matches!(watch(&garbage, 2), Err(RequestError::Cursor(_))));
    }

    #[test]
    fn upsert_needs_an_id_a_role_and_grids() {
        let valid = Responder {
            responder_id: "r1".into(),
            role: ResponderRole::GridWorker as i32,
            grid_ids: vec!["g1".into()],
            ..Default::default()
        };
        let request = |responder: Responder| UpsertResponderRequest {
            responder: Some(responder),
        };
        assert!(upsert_responder(&request(valid.clone())).is_ok());
        assert_eq!(
            upsert_responder(&UpsertResponderRequest { responder: None }),
            Err(RequestError::Missing { field: "responder" })
        );
        let no_role = Responder {
            role: 0,
            ..valid.clone()
        };
        assert!(matches!(
            upsert_responder(&request(no_role)),
            Err(RequestError::Unspecified {
                field: "responder.role",
                ..
            })
        ));
        let no_grids = Responder {
            grid_ids: vec![],
            ..valid.clone()
        };
        assert_eq!(
            upsert_responder(&request(no_grids)),
            Err(RequestError::Missing {
                field: "responder.grid_ids"
            })
        );
        let long_id = Responder {
            responder_id: "r".repeat(MAX_ID_LEN + 1),
            ..valid.clone()
        };
        assert!(matches!(
            upsert_responder(&request(long_id)),
            Err(RequestError::BadId { .. })
        ));
        let bad_place = Responder {
            last_location: Some(GeoPoint {
                latitude: 91.0,
                longitude: 0.0,
            }),
            ..valid
        };
        assert!(matches!(
            upsert_responder(&request(bad_place)),
            Err(RequestError::BadLocation { .. })
        ));
    }

    #[test]
    fn update_location_refuses_missing_and_impossible_points() {
        let missing = UpdateLocationRequest {
            responder_id: "r".into(),
            location: None,
        };
        assert_eq!(
            update_location(&missing),
            Err(RequestError::Missing { field: "location" })
        );
        let nan = UpdateLocationRequest {
            responder_id: "r".into(),
            location: Some(GeoPoint {
                latitude: f64::NAN,
                longitude: 0.0,
            }),
        };
        assert!(matches!(
            update_location(&nan),
            Err(RequestError::BadLocation { .. })
        ));
    }
}
