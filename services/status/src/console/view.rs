//! What the wall display may show of an incident, and nothing more: the projection is built
//! field by field, so personal data cannot leak by being forgotten. Responder names are
//! masked the local way (吴建国 → 吴某); no phone numbers, notes, device ids or coordinates
//! leave the service. Pure.

use helpgrid_common::time::{Millis, from_timestamp};
use helpgrid_proto::pb::{
    Assignment, CameraLabel, EscalationLevel, Incident, IncidentOutcome, IncidentSource,
    IncidentState, MaintenanceReason, PressKind, Priority, ResponderRole, Track,
};
use serde::Serialize;

/// Two-character surnames common enough to mask correctly (欧阳修 → 欧阳某, not 欧某).
const COMPOUND_SURNAMES: &[&str] = &[
    "欧阳", "司马", "上官", "诸葛", "东方", "皇甫", "尉迟", "公孙", "慕容", "令狐", "长孙", "宇文",
    "司徒", "夏侯", "端木", "轩辕", "西门", "独孤", "南宫", "万俟", "呼延", "澹台",
];

/// Surname + 某. Names in Latin letters keep their first word (the family name in Chinese
/// order: "Wu Jianguo" → "Wu 某"); an empty name stays empty.
pub fn mask_name(name: &str) -> String {
    let name = name.trim();
    if name.is_empty() {
        return String::new();
    }
    if name.chars().next().is_some_and(|c| c.is_ascii()) {
        let family = name.split_whitespace().next().unwrap_or(name);
        return format!("{family} 某");
    }
    let surname: String = match COMPOUND_SURNAMES.iter().find(|s| name.starts_with(**s)) {
        Some(compound) if name.chars().count() > 2 => (*compound).to_owned(),
        _ => name.chars().take(1).collect(),
    };
    format!("{surname}某")
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResponderView {
    /// Masked display name, or the role if the roster has no name.
    pub name: String,
    pub role: &'static str,
    pub track: &'static str,
    pub acknowledged: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IncidentView {
    pub id: String,
    pub grid: String,
    pub state: &'static str,
    pub priority: &'static str,
    pub source: &'static str,
    /// "Help", "Urgent", "Medical", or the camera's label.
    pub kind: &'static str,
    /// Household id, or camera id and zone.
    pub place: String,
    pub opened_at: Option<Millis>,
    pub acknowledged_at: Option<Millis>,
    pub closed_at: Option<Millis>,
    /// Earliest pending acknowledgement deadline.
    pub deadline: Option<Millis>,
    pub escalated: bool,
    pub reports: u32,
    /// How a closed incident ended (`resolved_on_spot`, `mediated`, …; see [`outcome_code`]);
    /// absent while open. No note: notes are free text about people.
    pub outcome: Option<&'static str>,
    /// The incident's revision: the page ignores an update it already holds.
    pub revision: u64,
    pub responders: Vec<ResponderView>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChangeView {
    pub change: &'static str,
    pub incident: IncidentView,
}

/// The incident's state as the pages name it (console and responder app).
pub(crate) fn state(incident: &Incident) -> &'static str {
    match IncidentState::try_from(incident.state) {
        Ok(IncidentState::Waiting) => "waiting",
        Ok(IncidentState::Assigned) => "assigned",
        Ok(IncidentState::Acknowledged) => "acknowledged",
        Ok(IncidentState::Closed) => "closed",
        _ => "unknown",
    }
}

/// The incident's priority as the pages name it (console and responder app).
pub(crate) fn priority(incident: &Incident) -> &'static str {
    match Priority::try_from(incident.priority) {
        Ok(Priority::Critical) => "critical",
        Ok(Priority::High) => "high",
        _ => "normal",
    }
}

fn kind(incident: &Incident) -> &'static str {
    if incident.source == IncidentSource::DeviceHealth as i32 {
        return match MaintenanceReason::try_from(incident.maintenance_reason) {
            Ok(MaintenanceReason::Offline) => "Device offline",
            Ok(MaintenanceReason::Silent) => "Device silent",
            Ok(MaintenanceReason::LowBattery) => "Low battery",
            Ok(MaintenanceReason::DisabledDevicePressed) => "Disabled device pressed",
            _ => "Device maintenance",
        };
    }
    if incident.source == IncidentSource::Camera as i32 {
        match CameraLabel::try_from(incident.camera_label) {
            Ok(CameraLabel::Intrusion) => "Intrusion",
            Ok(CameraLabel::Fight) => "Fight",
            Ok(CameraLabel::Fall) => "Fall",
            Ok(CameraLabel::Fire) => "Fire",
            Ok(CameraLabel::Crowd) => "Crowd",
            Ok(CameraLabel::Loitering) => "Loitering",
            _ => "Camera alert",
        }
    } else {
        match PressKind::try_from(incident.press_kind) {
            Ok(PressKind::Urgent) => "Urgent",
            Ok(PressKind::Medical) => "Medical",
            _ => "Help",
        }
    }
}

/// The outcome's code for pages and JSON: the enum name without its prefix, lower case.
/// `None` for an open incident.
pub fn outcome_code(incident: &Incident) -> Option<&'static str> {
    match incident.effective_outcome() {
        IncidentOutcome::Unspecified => None,
        IncidentOutcome::ResolvedOnSpot => Some("resolved_on_spot"),
        IncidentOutcome::Mediated => Some("mediated"),
        IncidentOutcome::ReferredToTown => Some("referred_to_town"),
        IncidentOutcome::ReferredToPolice => Some("referred_to_police"),
        IncidentOutcome::FalseAlarm => Some("false_alarm"),
        IncidentOutcome::NobodyThere => Some("nobody_there"),
    }
}

fn role_name(assignment: &Assignment) -> &'static str {
    if assignment.responder_id.is_empty() {
        return "police desk";
    }
    match ResponderRole::try_from(assignment.responder_role) {
        Ok(ResponderRole::GridWorker) => "grid worker",
        Ok(ResponderRole::GridSupervisor) => "supervisor",
        Ok(ResponderRole::PatrolOfficer) => "patrol officer",
        _ => "dispatch",
    }
}

fn escalated(a: &Assignment) -> bool {
    let first = if a.track == Track::Police as i32 {
        EscalationLevel::PatrolOfficer
    } else {
        EscalationLevel::GridWorker
    };
    a.level > first as i32
}

/// Where the incident is: the camera post (and zone) for a camera, else the household; a
/// maintenance job for a camera has no household, so it names the camera post.
pub fn place(incident: &Incident) -> String {
    let camera = incident.source == IncidentSource::Camera as i32;
    if camera || incident.household_id.is_empty() {
        match incident.zone.as_str() {
            "" => incident.camera_id.clone(),
            zone => format!("{} · {zone}", incident.camera_id),
        }
    } else {
        incident.household_id.clone()
    }
}

/// "camera", "device" (a maintenance job) or "button".
pub fn source_name(incident: &Incident) -> &'static str {
    if incident.source == IncidentSource::Camera as i32 {
        "camera"
    } else if incident.source == IncidentSource::DeviceHealth as i32 {
        "device"
    } else {
        "button"
    }
}

/// The console's view of `incident`; `display_name` looks a responder's name up (the roster),
/// and it is masked here.
pub fn incident_view(
    incident: &Incident,
    display_name: impl Fn(&str) -> Option<String>,
) -> IncidentView {
    let place = place(incident);
    let responders = incident
        .assignments
        .iter()
        .map(|a| {
            let role = role_name(a);
            let name = display_name(&a.responder_id)
                .map(|n| mask_name(&n))
                .unwrap_or_default();
            ResponderView {
                name,
                role,
                track: if a.track == Track::Police as i32 {
                    "police"
                } else {
                    "community"
                },
                acknowledged: a.acknowledged_at.is_some(),
            }
        })
        .collect();
    IncidentView {
        id: incident.incident_id.clone(),
        grid: incident.grid_id.clone(),
        state: state(incident),
        priority: priority(incident),
        source: source_name(incident),
        kind: kind(incident),
        place,
        opened_at: from_timestamp(incident.opened_at.as_ref()),
        acknowledged_at: from_timestamp(incident.acknowledged_at.as_ref()),
        closed_at: from_timestamp(incident.closed_at.as_ref()),
        deadline: incident
            .assignments
            .iter()
            .filter_map(|a| from_timestamp(a.ack_deadline.as_ref()))
            .min(),
        escalated: incident.assignments.iter().any(escalated),
        reports: incident.event_count,
        outcome: outcome_code(incident),
        revision: incident.revision,
        responders,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use helpgrid_common::time::to_timestamp;
    use helpgrid_proto::pb::GeoPoint;

    #[test]
    fn names_become_surname_and_mou() {
        assert_eq!(mask_name("吴建国"), "吴某");
        assert_eq!(mask_name("李娜"), "李某");
        assert_eq!(mask_name("欧阳修"), "欧阳某");
        assert_eq!(mask_name("欧阳"), "欧某");
        assert_eq!(mask_name("Wu Jianguo"), "Wu 某");
        assert_eq!(mask_name("  "), "");
    }

    #[test]
    fn the_view_masks_names_and_carries_no_location_notes_or_device() {
        let roster = |id: &str| (id == "w-42").then(|| "吴建国".to_owned());
        let incident = Incident {
            incident_id: "inc-1".into(),
            grid_id: "grid-0001".into(),
            state: IncidentState::Assigned as i32,
            source: IncidentSource::Button as i32,
            press_kind: PressKind::Medical as i32,
            household_id: "hh-7".into(),
            device_id: "dev-secret".into(),
            location: Some(GeoPoint {
                latitude: 32.6812345,
                longitude: 109.0212345,
            }),
            resolution_note: "call 13800138000".into(),
            opened_at: Some(to_timestamp(1000)),
            assignments: vec![Assignment {
                track: Track::Community as i32,
                level: EscalationLevel::GridWorker as i32,
                responder_id: "w-42".into(),
                responder_role: ResponderRole::GridWorker as i32,
                ack_deadline: Some(to_timestamp(61_000)),
                ..Default::default()
            }],
            ..Default::default()
        };
        let view = incident_view(&incident, roster);
        assert_eq!(view.outcome, None, "open incidents have no outcome");
        assert_eq!(view.responders[0].name, "吴某");
        assert_eq!(view.kind, "Medical");
        assert_eq!(view.deadline, Some(61_000));
        let json = serde_json::to_string(&view).expect("json");
        for secret in [
            "吴建国",
            "32.68",
            "109.02",
            "13800138000",
            "dev-secret",
            "w-42",
        ] {
            assert!(!json.contains(secret), "{secret} leaked: {json}");
        }
    }

    #[test]
    fn maintenance_incidents_show_their_reason_not_a_press_kind() {
        let incident = |reason: MaintenanceReason| Incident {
            source: IncidentSource::DeviceHealth as i32,
            maintenance_reason: reason as i32,
            household_id: "hh-7".into(),
            ..Default::default()
        };
        let cases = [
            (MaintenanceReason::Offline, "Device offline"),
            (MaintenanceReason::Silent, "Device silent"),
            (MaintenanceReason::LowBattery, "Low battery"),
            (
                MaintenanceReason::DisabledDevicePressed,
                "Disabled device pressed",
            ),
        ];
        for (reason, kind) in cases {
            let view = incident_view(&incident(reason), |_| None);
            assert_eq!((view.kind, view.source), (kind, "device"), "{reason:?}");
        }
    }

    #[test]
    fn a_maintenance_job_names_its_household_or_its_camera_post() {
        let button = Incident {
            source: IncidentSource::DeviceHealth as i32,
            household_id: "hh-7".into(),
            device_id: "btn-7".into(),
            ..Default::default()
        };
        let camera = Incident {
            source: IncidentSource::DeviceHealth as i32,
            device_id: "cam-3".into(),
            camera_id: "post-gate".into(),
            ..Default::default()
        };
        assert_eq!(incident_view(&button, |_| None).place, "hh-7");
        assert_eq!(incident_view(&camera, |_| None).place, "post-gate");
        assert_eq!(incident_view(&camera, |_| None).source, "device");
    }

    #[test]
    fn a_closed_incident_shows_its_outcome_and_an_older_one_its_resolutions() {
        let closed = Incident {
            state: IncidentState::Closed as i32,
            outcome: IncidentOutcome::ReferredToPolice as i32,
            resolution: helpgrid_proto::pb::Resolution::Referred as i32,
            ..Default::default()
        };
        assert_eq!(
            incident_view(&closed, |_| None).outcome,
            Some("referred_to_police")
        );
        let before_outcomes = Incident {
            outcome: 0,
            resolution: helpgrid_proto::pb::Resolution::NoActionNeeded as i32,
            ..closed
        };
        assert_eq!(
            incident_view(&before_outcomes, |_| None).outcome,
            Some("nobody_there")
        );
    }
}
