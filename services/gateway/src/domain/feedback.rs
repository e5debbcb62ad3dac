//! Feedback to the resident: when their incident is assigned, acknowledged and closed, tell
//! the button (or its hub) — never anyone else's. Pure: what to send for one incident event.

use super::registry::{DeviceTable, mqtt_name};
use helpgrid_proto::pb::{DeviceKind, IncidentEvent, IncidentSource, incident_event::Change};
use std::collections::HashMap;

/// What the resident is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// A responder has been assigned.
    Assigned,
    /// A responder acknowledged: help is coming.
    Acknowledged,
    Closed,
}

impl Stage {
    pub fn word(self) -> &'static str {
        match self {
            Stage::Assigned => "assigned",
            Stage::Acknowledged => "acknowledged",
            Stage::Closed => "closed",
        }
    }

    fn from_word(word: &str) -> Option<Self> {
        match word {
            "assigned" => Some(Stage::Assigned),
            "acknowledged" => Some(Stage::Acknowledged),
            "closed" => Some(Stage::Closed),
            _ => None,
        }
    }
}

/// Payloads on a Zigbee2MQTT device's `set` topic, per device model and stage; model `*`
/// is the default. Real indicators need their model's own keys (an LED colour, a siren
/// melody); the default is a small JSON status for hubs and automations.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedbackPayloads(HashMap<(String, Stage), String>);

impl Default for FeedbackPayloads {
    fn default() -> Self {
        let mut map = HashMap::new();
        for (stage, status) in [
            (Stage::Assigned, "assigned"),
            (Stage::Acknowledged, "help_is_coming"),
            (Stage::Closed, "closed"),
        ] {
            map.insert(
                ("*".to_owned(), stage),
                format!(r#"{{"helpgrid_status":"{status}"}}"#),
            );
        }
        Self(map)
    }
}

impl FeedbackPayloads {
    /// `MODEL:STAGE=PAYLOAD`, e.g. `TS0216:acknowledged={"alarm":true,"duration":3}`.
    pub fn apply_rule(&mut self, rule: &str) -> Result<(), String> {
        let (lhs, payload) = rule
            .split_once('=')
            .ok_or_else(|| format!("expected MODEL:STAGE=PAYLOAD, got {rule:?}"))?;
        let (model, stage) = lhs
            .split_once(':')
            .ok_or_else(|| format!("expected MODEL:STAGE=PAYLOAD, got {rule:?}"))?;
        let stage = Stage::from_word(stage.trim())
            .ok_or_else(|| format!("unknown stage {stage:?} (assigned, acknowledged, closed)"))?;
        self.0
            .insert((model.trim().to_owned(), stage), payload.trim().to_owned());
        Ok(())
    }

    fn payload(&self, model: &str, stage: Stage) -> Option<&str> {
        self.0
            .get(&(model.to_owned(), stage))
            .or_else(|| self.0.get(&("*".to_owned(), stage)))
            .map(String::as_str)
    }
}

/// One thing to tell a device.
#[derive(Debug, Clone, PartialEq)]
pub struct Feedback {
    pub device_id: String,
    pub incident_id: String,
    pub stage: Stage,
    pub revision: u64,
    /// For a Zigbee2MQTT button: (command topic, payload). None for an HTTP button, which
    /// fetches its status.
    pub mqtt: Option<(String, String)>,
}

/// Why an incident event tells no device anything (only the unexpected ones are reasons to
/// warn).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// Not a stage the resident is told about, or not a button incident.
    NotForResidents,
    /// The incident names a device the registry does not have or that belongs to another
    /// household or grid: telling it would tell someone else.
    NotTheirDevice(String),
}

pub fn feedback_for(
    event: &IncidentEvent,
    table: &DeviceTable,
    payloads: &FeedbackPayloads,
    z2m_base: &str,
) -> Result<Feedback, Skip> {
    let stage = match event.change {
        // "Opened and assigned" in one event tells the resident what `assigned` would.
        Some(Change::Assigned(_) | Change::Opened(_)) if !event.assignments().is_empty() => {
            Stage::Assigned
        }
        Some(Change::Acknowledged(_)) => Stage::Acknowledged,
        Some(Change::Closed(_)) => Stage::Closed,
        _ => return Err(Skip::NotForResidents),
    };
    let incident = event.incident.as_ref().ok_or(Skip::NotForResidents)?;
    if incident.source != IncidentSource::Button as i32 || incident.device_id.is_empty() {
        return Err(Skip::NotForResidents);
    }
    let device = table.get(&incident.device_id).ok_or_else(|| {
        Skip::NotTheirDevice(format!("device {} is not registered", incident.device_id))
    })?;
    if device.household_id != incident.household_id || device.grid_id != incident.grid_id {
        return Err(Skip::NotTheirDevice(format!(
            "device {} belongs to household {} in grid {}, the incident to household {} in grid {}",
            device.device_id,
            device.household_id,
            device.grid_id,
            incident.household_id,
            incident.grid_id
        )));
    }
    let mqtt = match DeviceKind::try_from(device.kind) {
        Ok(DeviceKind::ZigbeeButton) => payloads.payload(&device.model, stage).map(|p| {
            (
                format!("{z2m_base}/{}/set", mqtt_name(device)),
                p.to_owned(),
            )
        }),
        Ok(DeviceKind::HttpButton) => None,
        _ => return Err(Skip::NotForResidents),
    };
    Ok(Feedback {
        device_id: device.device_id.clone(),
        incident_id: incident.incident_id.clone(),
        stage,
        revision: incident.revision,
        mqtt,
    })
}

/// The latest stage of each device's incident, for HTTP devices to fetch.
#[derive(Debug, Default)]
pub struct StatusBook(HashMap<String, Feedback>);

impl StatusBook {
    /// Keeps the newest: a later incident, or a later revision of the same one.
    pub fn record(&mut self, f: &Feedback) {
        let newer = match self.0.get(&f.device_id) {
            Some(old) if old.incident_id == f.incident_id => f.revision > old.revision,
            _ => true,
        };
        if newer {
            self.0.insert(f.device_id.clone(), f.clone());
        }
    }

    pub fn get(&self, device_id: &str) -> Option<&Feedback> {
        self.0.get(device_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use helpgrid_proto::pb::{Device, Incident};

    fn table() -> DeviceTable {
        let mut t = DeviceTable::default();
        t.upsert(Device {
            device_id: "btn-wu".into(),
            kind: DeviceKind::ZigbeeButton as i32,
            household_id: "h-wu".into(),
            grid_id: "g1".into(),
            enabled: true,
            mqtt_name: "hall/button".into(),
            model: "TS0216".into(),
            ..Device::default()
        });
        t.upsert(Device {
            device_id: "cell-li".into(),
            kind: DeviceKind::HttpButton as i32,
            household_id: "h-li".into(),
            grid_id: "g1".into(),
            enabled: true,
            credential_ref: "c".into(),
            ..Device::default()
        });
        t
    }

    fn event(device: &str, household: &str, change: Change) -> IncidentEvent {
        IncidentEvent {
            incident: Some(Incident {
                incident_id: "inc-1".into(),
                grid_id: "g1".into(),
                source: IncidentSource::Button as i32,
                household_id: household.into(),
                device_id: device.into(),
                revision: 3,
                ..Incident::default()
            }),
            change: Some(change),
            ..IncidentEvent::default()
        }
    }

    fn ack() -> Change {
        Change::Acknowledged(helpgrid_proto::pb::Acknowledged::default())
    }

    #[test]
    fn an_acknowledgement_tells_the_button_help_is_coming_on_its_set_topic() {
        let f = feedback_for(
            &event("btn-wu", "h-wu", ack()),
            &table(),
            &FeedbackPayloads::default(),
            "zigbee2mqtt",
        )
        .expect("feedback");
        assert_eq!(f.stage, Stage::Acknowledged);
        assert_eq!(
            f.mqtt,
            Some((
                "zigbee2mqtt/hall/button/set".into(),
                r#"{"helpgrid_status":"help_is_coming"}"#.into()
            ))
        );
    }

    #[test]
    fn an_opening_that_carries_its_assignment_tells_assigned_and_a_bare_one_nothing() {
        let folded = Change::Opened(helpgrid_proto::pb::IncidentOpened {
            assigned: vec![helpgrid_proto::pb::ResponderAssigned {
                responder_id: "w-1".into(),
                ..Default::default()
            }],
        });
        let f = feedback_for(
            &event("btn-wu", "h-wu", folded),
            &table(),
            &FeedbackPayloads::default(),
            "zigbee2mqtt",
        )
        .expect("feedback");
        assert_eq!(f.stage, Stage::Assigned);
        let bare = Change::Opened(helpgrid_proto::pb::IncidentOpened::default());
        assert!(matches!(
            feedback_for(
                &event("btn-wu", "h-wu", bare),
                &table(),
                &FeedbackPayloads::default(),
                "zigbee2mqtt",
            ),
            Err(Skip::NotForResidents)
        ));
    }

    #[test]
    fn payloads_are_configurable_per_model() {
        let mut p = FeedbackPayloads::default();
        p.apply_rule(r#"TS0216:acknowledged={"alarm":true,"duration":3}"#)
            .expect("rule");
        let f = feedback_for(&event("btn-wu", "h-wu", ack()), &table(), &p, "z").expect("feedback");
        assert_eq!(
            f.mqtt.map(|m| m.1).as_deref(),
            Some(r#"{"alarm":true,"duration":3}"#)
        );
        assert!(p.apply_rule("TS0216:arrived={}").is_err());
        assert!(p.apply_rule("acknowledged={}").is_err());
    }

    #[test]
    fn never_to_someone_elses_device() {
        let p = FeedbackPayloads::default();
        assert!(matches!(
            feedback_for(&event("btn-wu", "h-other", ack()), &table(), &p, "z"),
            Err(Skip::NotTheirDevice(_))
        ));
        assert!(matches!(
            feedback_for(&event("btn-gone", "h-wu", ack()), &table(), &p, "z"),
            Err(Skip::NotTheirDevice(_))
        ));
        let mut camera = event("btn-wu", "h-wu", ack());
        if let Some(i) = camera.incident.as_mut() {
            i.source = IncidentSource::Camera as i32;
        }
        assert_eq!(
            feedback_for(&camera, &table(), &p, "z"),
            Err(Skip::NotForResidents)
        );
        let opened = event(
            "btn-wu",
            "h-wu",
            Change::Opened(helpgrid_proto::pb::IncidentOpened::default()),
        );
        assert_eq!(
            feedback_for(&opened, &table(), &p, "z"),
            Err(Skip::NotForResidents)
        );
    }

    #[test]
    fn an_http_button_gets_a_status_to_fetch_and_the_newest_wins() {
        let p = FeedbackPayloads::default();
        let closed = feedback_for(
            &event(
                "cell-li",
                "h-li",
                Change::Closed(helpgrid_proto::pb::IncidentClosed::default()),
            ),
            &table(),
            &p,
            "z",
        )
        .expect("feedback");
        assert_eq!(closed.mqtt, None);
        let mut book = StatusBook::default();
        book.record(&closed);
        let mut older = closed.clone();
        older.revision = 1;
        older.stage = Stage::Assigned;
        book.record(&older);
        assert_eq!(book.get("cell-li").map(|f| f.stage), Some(Stage::Closed));
    }
}
