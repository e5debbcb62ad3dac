//! What the router accepts. Anything else goes to the dead-letter topic with the reason.
//!
//! Decoding is part of validation: `decode_*` take the raw record value so a fuzzer or a
//! test can drive exactly what the Kafka adapter does.

use helpgrid_common::time::{Millis, from_timestamp};
use helpgrid_proto::outcome::close_outcome;
use helpgrid_proto::pb::{
    self, ActorRole, CameraLabel, Envelope, GeoPoint, HelpEvent, IncidentCommand, IncidentOutcome,
    PressKind, Resolution, Responder, ResponderRole, RosterRecord, help_event, incident_command,
};
use prost::Message;

/// Records larger than this are refused before decoding.
pub const MAX_RECORD_BYTES: usize = 64 * 1024;
/// Ids (event, device, household, grid, camera, responder) longer than this are refused.
pub const MAX_ID_LEN: usize = 128;
/// Events may be this old (a backlog after an outage) ...
pub const MAX_EVENT_AGE_MS: Millis = 7 * 24 * 3_600_000;
/// ... and this far ahead of the router's clock (device clock skew).
pub const MAX_CLOCK_SKEW_MS: Millis = 10 * 60_000;

/// Why a record was refused. `kind()` is a short stable label for metrics and headers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("record has no value")]
    Empty,
    #[error("record is {0} bytes, more than the {MAX_RECORD_BYTES} allowed")]
    TooLarge(usize),
    #[error("not a valid protobuf {message}: {detail}")]
    Undecodable {
        message: &'static str,
        detail: String,
    },
    #[error("{0}")]
    Field(String),
}

impl Invalid {
    pub fn kind(&self) -> &'static str {
        match self {
            Invalid::Empty => "empty",
            Invalid::TooLarge(_) => "too_large",
            Invalid::Undecodable { .. } => "undecodable",
            Invalid::Field(_) => "invalid_field",
        }
    }
}

fn field(message: impl Into<String>) -> Invalid {
    Invalid::Field(message.into())
}

fn check_size(payload: Option<&[u8]>) -> Result<&[u8], Invalid> {
    match payload {
        None | Some([]) => Err(Invalid::Empty),
        Some(bytes) if bytes.len() > MAX_RECORD_BYTES => Err(Invalid::TooLarge(bytes.len())),
        Some(bytes) => Ok(bytes),
    }
}

fn decode<M: Message + Default>(bytes: &[u8], message: &'static str) -> Result<M, Invalid> {
    M::decode(bytes).map_err(|e| Invalid::Undecodable {
        message,
        detail: e.to_string(),
    })
}

fn check_id(name: &str, value: &str) -> Result<(), Invalid> {
    if value.trim().is_empty() {
        return Err(field(format!("{name} is missing")));
    }
    if value.len() > MAX_ID_LEN {
        return Err(field(format!(
            "{name} is {} bytes long, at most {MAX_ID_LEN} allowed",
            value.len()
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(field(format!("{name} contains control characters")));
    }
    Ok(())
}

fn check_location(location: Option<&GeoPoint>) -> Result<(), Invalid> {
    if let Some(p) = location {
        let ok = p.latitude.is_finite()
            && p.longitude.is_finite()
            && (-90.0..=90.0).contains(&p.latitude)
            && (-180.0..=180.0).contains(&p.longitude);
        if !ok {
            return Err(field(format!(
                "location ({}, {}) is not a valid WGS84 position",
                p.latitude, p.longitude
            )));
        }
    }
    Ok(())
}

/// Checks the envelope and returns when the event occurred.
pub fn check_envelope(envelope: Option<&Envelope>, now: Millis) -> Result<Millis, Invalid> {
    let envelope = envelope.ok_or_else(|| field("envelope is missing"))?;
    check_id("envelope.event_id", &envelope.event_id)?;
    if envelope.schema_version == 0 || envelope.schema_version > helpgrid_proto::SCHEMA_VERSION {
        return Err(field(format!(
            "envelope.schema_version {} is not supported (1..={})",
            envelope.schema_version,
            helpgrid_proto::SCHEMA_VERSION
        )));
    }
    let occurred_at = from_timestamp(envelope.occurred_at.as_ref())
        .ok_or_else(|| field("envelope.occurred_at is missing"))?;
    if occurred_at > now.saturating_add(MAX_CLOCK_SKEW_MS) {
        return Err(field(format!(
            "envelope.occurred_at is {} s in the future",
            (occurred_at - now) / 1000
        )));
    }
    if occurred_at < now.saturating_sub(MAX_EVENT_AGE_MS) {
        return Err(field(format!(
            "envelope.occurred_at is {} h in the past",
            (now - occurred_at) / 3_600_000
        )));
    }
    Ok(occurred_at)
}

/// A help event that passed every check, with its typed body.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidHelpEvent {
    pub event_id: String,
    pub occurred_at: Millis,
    pub body: ValidBody,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ValidBody {
    Press {
        press: pb::ButtonPress,
        kind: PressKind,
    },
    Camera {
        alert: pb::CameraAlert,
        label: CameraLabel,
    },
    Maintenance {
        maintenance: pb::DeviceMaintenance,
        reason: pb::MaintenanceReason,
    },
}

impl ValidHelpEvent {
    pub fn grid_id(&self) -> &str {
        match &self.body {
            ValidBody::Press { press, .. } => &press.grid_id,
            ValidBody::Camera { alert, .. } => &alert.grid_id,
            ValidBody::Maintenance { maintenance, .. } => &maintenance.grid_id,
        }
    }
}

pub fn decode_help_event(payload: Option<&[u8]>, now: Millis) -> Result<ValidHelpEvent, Invalid> {
    let event: HelpEvent = decode(check_size(payload)?, "helpgrid.v1.HelpEvent")?;
    validate_help_event(event, now)
}

pub fn validate_help_event(event: HelpEvent, now: Millis) -> Result<ValidHelpEvent, Invalid> {
    let occurred_at = check_envelope(event.envelope.as_ref(), now)?;
    let event_id = event.envelope.map(|e| e.event_id).unwrap_or_default();
    let body = match event.body {
        None => {
            return Err(field(
                "body is missing: expected button_press or camera_alert",
            ));
        }
        Some(help_event::Body::ButtonPress(press)) => {
            check_id("button_press.device_id", &press.device_id)?;
            check_id("button_press.household_id", &press.household_id)?;
            check_id("button_press.grid_id", &press.grid_id)?;
            let kind = match PressKind::try_from(press.kind) {
                Ok(PressKind::Unspecified) => {
                    return Err(field("button_press.kind is unspecified"));
                }
                Ok(kind) => kind,
                Err(_) => {
                    return Err(field(format!(
                        "button_press.kind {} is unknown",
                        press.kind
                    )));
                }
            };
            if press.battery_percent > 100 {
                return Err(field(format!(
                    "button_press.battery_percent {} is above 100",
                    press.battery_percent
                )));
            }
            check_location(press.location.as_ref())?;
            ValidBody::Press { press, kind }
        }
        Some(help_event::Body::CameraAlert(alert)) => {
            check_id("camera_alert.camera_id", &alert.camera_id)?;
            check_id("camera_alert.grid_id", &alert.grid_id)?;
            let label = match CameraLabel::try_from(alert.label) {
                Ok(CameraLabel::Unspecified) => {
                    return Err(field("camera_alert.label is unspecified"));
                }
                Ok(label) => label,
                Err(_) => {
                    return Err(field(format!(
                        "camera_alert.label {} is unknown",
                        alert.label
                    )));
                }
            };
            if !(alert.confidence.is_finite() && (0.0..=1.0).contains(&alert.confidence)) {
                return Err(field(format!(
                    "camera_alert.confidence {} is outside 0..1",
                    alert.confidence
                )));
            }
            if alert.zone.len() > MAX_ID_LEN || alert.snapshot_ref.len() > 2048 {
                return Err(field("camera_alert.zone or snapshot_ref is too long"));
            }
            check_location(alert.location.as_ref())?;
            ValidBody::Camera { alert, label }
        }
        Some(help_event::Body::DeviceMaintenance(maintenance)) => {
            let reason = super::maintenance::validate(&maintenance)?;
            ValidBody::Maintenance {
                maintenance,
                reason,
            }
        }
    };
    Ok(ValidHelpEvent {
        event_id,
        occurred_at,
        body,
    })
}

/// A command that passed every check.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidCommand {
    pub command_id: String,
    pub incident_id: String,
    /// The grid the sender believes the incident is in; used to key a rejection.
    pub grid_id: String,
    pub actor_id: String,
    /// The role the status service authenticated the actor with (`Unspecified` from a status
    /// service without authentication).
    pub actor_role: ActorRole,
    pub action: ValidAction,
    /// The caller's id for the request; a retry carries the same one. Empty: none given.
    pub request_id: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ValidAction {
    Acknowledge,
    /// "I need help": the assigned responder hands their track up the ladder.
    Escalate {
        note: String,
    },
    Close {
        outcome: IncidentOutcome,
        /// Derived from the outcome (or as an older sender gave it); see `helpgrid_proto::outcome`.
        resolution: Resolution,
        note: String,
    },
}

pub fn decode_command(payload: Option<&[u8]>, now: Millis) -> Result<ValidCommand, Invalid> {
    let command: IncidentCommand = decode(check_size(payload)?, "helpgrid.v1.IncidentCommand")?;
    validate_command(command, now)
}

pub fn validate_command(command: IncidentCommand, now: Millis) -> Result<ValidCommand, Invalid> {
    check_envelope(command.envelope.as_ref(), now)?;
    check_id("incident_id", &command.incident_id)?;
    check_id("grid_id", &command.grid_id)?;
    check_id("actor_id", &command.actor_id)?;
    let actor_role = ActorRole::try_from(command.actor_role)
        .map_err(|_| field(format!("actor_role {} is unknown", command.actor_role)))?;
    let action = match command.action {
        None => {
            return Err(field(
                "action is missing: expected acknowledge, close or escalate",
            ));
        }
        Some(incident_command::Action::Acknowledge(_)) => ValidAction::Acknowledge,
        Some(incident_command::Action::Escalate(escalate)) => {
            if escalate.note.len() > 4096 {
                return Err(field("escalate.note is longer than 4096 bytes"));
            }
            ValidAction::Escalate {
                note: escalate.note,
            }
        }
        Some(incident_command::Action::Close(close)) => {
            // An unknown outcome is refused here (dead-lettered), never applied: a reader could
            // not tell what happened. A resolution alone comes from an older status service.
            let (outcome, resolution) = close_outcome(close.outcome, close.resolution)
                .map_err(|e| field(format!("close: {e}")))?;
            if close.note.len() > 4096 {
                return Err(field("close.note is longer than 4096 bytes"));
            }
            ValidAction::Close {
                outcome,
                resolution,
                note: close.note,
            }
        }
    };
    if command.request_id.len() > 128 {
        return Err(field("request_id is longer than 128 bytes"));
    }
    Ok(ValidCommand {
        request_id: command.request_id,
        command_id: command.envelope.map(|e| e.event_id).unwrap_or_default(),
        incident_id: command.incident_id,
        grid_id: command.grid_id,
        actor_id: command.actor_id,
        actor_role,
        action,
    })
}

/// A roster record: `Ok(None)` for a tombstone (the responder was removed).
pub fn decode_roster_record(payload: Option<&[u8]>) -> Result<Option<Responder>, Invalid> {
    let bytes = match payload {
        None | Some([]) => return Ok(None),
        Some(bytes) => check_size(Some(bytes))?,
    };
    let record: RosterRecord = decode(bytes, "helpgrid.v1.RosterRecord")?;
    let responder = record
        .responder
        .ok_or_else(|| field("responder is missing"))?;
    validate_responder(&responder)?;
    Ok(Some(responder))
}

pub fn validate_responder(responder: &Responder) -> Result<(), Invalid> {
    check_id("responder_id", &responder.responder_id)?;
    match ResponderRole::try_from(responder.role) {
        Ok(ResponderRole::Unspecified) => return Err(field("role is unspecified")),
        Ok(_) => {}
        Err(_) => return Err(field(format!("role {} is unknown", responder.role))),
    }
    if responder.display_name.len() > 256 {
        return Err(field("display_name is longer than 256 bytes"));
    }
    if responder.grid_ids.len() > 1024 {
        return Err(field("a responder covers at most 1024 grids"));
    }
    for grid in &responder.grid_ids {
        check_id("grid_ids[]", grid)?;
    }
    check_location(responder.last_location.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;
    use helpgrid_common::time::to_timestamp;

    const NOW: Millis = 1_780_000_000_000;

    fn envelope() -> Envelope {
        Envelope {
            event_id: "e1".into(),
            occurred_at: Some(to_timestamp(NOW - 5)),
            source: "test".into(),
            schema_version: 1,
        }
    }

    fn press() -> HelpEvent {
        HelpEvent {
            envelope: Some(envelope()),
            body: Some(help_event::Body::ButtonPress(pb::ButtonPress {
                device_id: "d1".into(),
                household_id: "h1".into(),
                grid_id: "g1".into(),
                kind: PressKind::Help as i32,
                location: None,
                battery_percent: 80,
            })),
        }
    }

    fn with_press(change: impl FnOnce(&mut pb::ButtonPress)) -> HelpEvent {
        let mut event = press();
        if let Some(help_event::Body::ButtonPress(p)) = event.body.as_mut() {
            change(p);
        }
        event
    }

    fn reason(event: HelpEvent) -> String {
        match validate_help_event(event, NOW) {
            Ok(_) => "accepted".into(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_well_formed_press_is_accepted_with_its_time() {
        let valid = decode_help_event(Some(&press().encode_to_vec()), NOW).expect("valid");
        assert_eq!(valid.occurred_at, NOW - 5);
        assert_eq!(valid.grid_id(), "g1");
    }

    #[test]
    fn random_bytes_empty_and_oversized_records_are_refused_with_a_kind() {
        assert_eq!(decode_help_event(None, NOW).unwrap_err().kind(), "empty");
        assert_eq!(
            decode_help_event(Some(&[0xff, 0xff, 0xff]), NOW)
                .unwrap_err()
                .kind(),
            "undecodable"
        );
        let big = vec![0u8; MAX_RECORD_BYTES + 1];
        assert_eq!(
            decode_help_event(Some(&big), NOW).unwrap_err().kind(),
            "too_large"
        );
        let bytes = press().encode_to_vec();
        let truncated = &bytes[..bytes.len() - 3];
        assert_eq!(
            decode_help_event(Some(truncated), NOW).unwrap_err().kind(),
            "undecodable"
        );
    }

    #[test]
    fn missing_and_unknown_fields_are_named_in_the_reason() {
        assert!(
            reason(with_press(|p| p.grid_id.clear())).contains("button_press.grid_id is missing")
        );
        assert!(reason(with_press(|p| p.kind = 42)).contains("button_press.kind 42 is unknown"));
        assert!(reason(with_press(|p| p.kind = 0)).contains("unspecified"));
        assert!(reason(with_press(|p| p.battery_percent = 101)).contains("battery_percent"));
        assert!(
            reason(with_press(|p| p.location = Some(GeoPoint {
                latitude: 91.0,
                longitude: 0.0
            })))
            .contains("not a valid WGS84")
        );
        assert!(
            reason(HelpEvent {
                envelope: Some(envelope()),
                body: None
            })
            .contains("body is missing")
        );
        assert!(
            reason(HelpEvent {
                envelope: None,
                ..press()
            })
            .contains("envelope is missing")
        );
    }

    #[test]
    fn absurd_timestamps_are_refused() {
        let mut future = press();
        future.envelope = Some(Envelope {
            occurred_at: Some(to_timestamp(NOW + 3_600_000)),
            ..envelope()
        });
        assert!(reason(future).contains("in the future"));
        let mut ancient = press();
        ancient.envelope = Some(Envelope {
            occurred_at: Some(to_timestamp(0)),
            ..envelope()
        });
        assert!(reason(ancient).contains("in the past"));
    }

    #[test]
    fn a_command_without_action_or_outcome_is_refused() {
        let base = IncidentCommand {
            envelope: Some(envelope()),
            incident_id: "i1".into(),
            grid_id: "g1".into(),
            actor_id: "w1".into(),
            actor_role: ActorRole::Responder as i32,
            action: None,
            request_id: String::new(),
        };
        assert!(
            validate_command(base.clone(), NOW)
                .unwrap_err()
                .to_string()
                .contains("action is missing")
        );
        let close = IncidentCommand {
            action: Some(incident_command::Action::Close(pb::CloseIncident {
                resolution: 0,
                note: String::new(),
                outcome: 0,
            })),
            ..base.clone()
        };
        assert!(
            validate_command(close, NOW)
                .unwrap_err()
                .to_string()
                .contains("outcome is required")
        );
        let unknown = IncidentCommand {
            action: Some(incident_command::Action::Close(pb::CloseIncident {
                outcome: 77,
                ..Default::default()
            })),
            ..base.clone()
        };
        assert!(
            validate_command(unknown, NOW)
                .unwrap_err()
                .to_string()
                .contains("outcome has no value 77")
        );
        let from_an_older_sender = IncidentCommand {
            action: Some(incident_command::Action::Close(pb::CloseIncident {
                resolution: Resolution::FalseAlarm as i32,
                ..Default::default()
            })),
            ..base.clone()
        };
        assert_eq!(
            validate_command(from_an_older_sender, NOW).map(|c| c.action),
            Ok(ValidAction::Close {
                outcome: IncidentOutcome::FalseAlarm,
                resolution: Resolution::FalseAlarm,
                note: String::new()
            })
        );
        let ack = IncidentCommand {
            action: Some(incident_command::Action::Acknowledge(
                pb::AcknowledgeIncident {},
            )),
            ..base
        };
        assert_eq!(
            validate_command(ack.clone(), NOW).map(|c| (c.action, c.actor_role)),
            Ok((ValidAction::Acknowledge, ActorRole::Responder))
        );
        let unknown_role = IncidentCommand {
            actor_role: 99,
            ..ack
        };
        assert!(
            validate_command(unknown_role, NOW)
                .unwrap_err()
                .to_string()
                .contains("actor_role 99 is unknown")
        );
    }

    #[test]
    fn an_empty_roster_value_is_a_tombstone() {
        assert_eq!(decode_roster_record(None), Ok(None));
        assert_eq!(decode_roster_record(Some(&[])), Ok(None));
    }
}
