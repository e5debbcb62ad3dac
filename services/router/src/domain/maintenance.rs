//! Maintenance incidents: a button or camera the gateway's health watch reports offline,
//! silent or low on battery. One low-priority incident per device while it is open (repeats
//! attach), for the household's grid worker (a button) or the camera post's patrol (a
//! camera). Kept apart from presses and detections: a real press from the same household
//! never folds into a maintenance incident, nor the reverse (their dedup keys differ).

use super::desk::{Desk, HelpOutcome, Output};
use super::roster::Roster;
use super::validate::{Invalid, ValidHelpEvent};
use helpgrid_common::time::Millis;
use helpgrid_proto::pb::{
    AttachKind, DeviceMaintenance, Incident, IncidentSource, MaintenanceReason, Priority, Track,
};

const MAX_DETAIL: usize = 512;

/// Checks a maintenance report; returns its reason.
pub fn validate(m: &DeviceMaintenance) -> Result<MaintenanceReason, Invalid> {
    let id_ok =
        |v: &str| !v.trim().is_empty() && v.len() <= 128 && !v.chars().any(char::is_control);
    if !id_ok(&m.device_id) || !id_ok(&m.grid_id) {
        return Err(Invalid::Field(
            "device_maintenance.device_id and grid_id are required".into(),
        ));
    }
    if !id_ok(&m.household_id) && !id_ok(&m.camera_post) {
        return Err(Invalid::Field(
            "device_maintenance needs a household_id (button) or a camera_post (camera)".into(),
        ));
    }
    if m.detail.len() > MAX_DETAIL || m.battery_percent > 100 {
        return Err(Invalid::Field(
            "device_maintenance.detail is too long or battery_percent above 100".into(),
        ));
    }
    if let Some(p) = m.location
        && !(p.latitude.is_finite()
            && p.longitude.is_finite()
            && (-90.0..=90.0).contains(&p.latitude)
            && (-180.0..=180.0).contains(&p.longitude))
    {
        return Err(Invalid::Field(
            "device_maintenance.location is not a WGS84 position".into(),
        ));
    }
    match MaintenanceReason::try_from(m.reason) {
        Ok(MaintenanceReason::Unspecified) | Err(_) => Err(Invalid::Field(format!(
            "device_maintenance.reason {} is not a known reason",
            m.reason
        ))),
        Ok(reason) => Ok(reason),
    }
}

/// Opens the device's maintenance incident, or attaches to the open one.
pub fn on_device_maintenance(
    desk: &mut Desk,
    partition: i32,
    event: &ValidHelpEvent,
    m: &DeviceMaintenance,
    reason: MaintenanceReason,
    roster: &Roster,
    now: Millis,
) -> (HelpOutcome, Vec<Output>) {
    let open = desk.find_open(IncidentSource::DeviceHealth, |i| {
        i.device_id == m.device_id && i.grid_id == m.grid_id
    });
    if let Some(id) = open {
        let out = desk.attach(&id, event, AttachKind::RepeatMaintenance, now);
        return (HelpOutcome::Attached, out);
    }
    let track = if m.household_id.is_empty() {
        Track::Police
    } else {
        Track::Community
    };
    let incident = Incident {
        source: IncidentSource::DeviceHealth as i32,
        grid_id: m.grid_id.clone(),
        household_id: m.household_id.clone(),
        device_id: m.device_id.clone(),
        camera_id: m.camera_post.clone(),
        location: m.location,
        priority: Priority::Normal as i32,
        maintenance_reason: reason as i32,
        maintenance_detail: m.detail.clone(),
        ..Incident::default()
    };
    (
        HelpOutcome::Opened,
        desk.open(partition, incident, &[track], event, roster, now),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Policy;
    use crate::domain::validate::ValidBody;
    use helpgrid_proto::pb::{IncidentState, ResponderRole};

    fn report(
        event_id: &str,
        device: &str,
        household: &str,
        reason: MaintenanceReason,
    ) -> ValidHelpEvent {
        let m = DeviceMaintenance {
            device_id: device.into(),
            household_id: household.into(),
            camera_post: if household.is_empty() {
                "post-1".into()
            } else {
                String::new()
            },
            grid_id: "g1".into(),
            reason: reason as i32,
            detail: "battery 7%".into(),
            battery_percent: 7,
            location: None,
        };
        ValidHelpEvent {
            event_id: event_id.into(),
            occurred_at: 1_000,
            body: ValidBody::Maintenance {
                maintenance: m,
                reason,
            },
        }
    }

    fn roster() -> Roster {
        let mut r = Roster::default();
        for (id, role) in [
            ("w-1", ResponderRole::GridWorker),
            ("cop-1", ResponderRole::PatrolOfficer),
        ] {
            r.upsert(helpgrid_proto::pb::Responder {
                responder_id: id.into(),
                role: role as i32,
                grid_ids: vec!["g1".into()],
                on_duty: true,
                ..Default::default()
            });
        }
        r
    }

    #[test]
    fn one_low_priority_incident_per_device_for_the_grid_worker_repeats_attach() {
        let mut desk = Desk::new(Policy::default());
        let roster = roster();
        let (o1, out) = desk.on_help_event(
            0,
            &report("e1", "btn-1", "h-1", MaintenanceReason::LowBattery),
            &roster,
            2_000,
        );
        assert_eq!(o1, HelpOutcome::Opened);
        let incident = out
            .last()
            .and_then(|o| o.event.incident.clone())
            .expect("incident");
        assert_eq!(incident.source, IncidentSource::DeviceHealth as i32);
        assert_eq!(incident.priority, Priority::Normal as i32);
        assert_eq!(
            incident.maintenance_reason,
            MaintenanceReason::LowBattery as i32
        );
        assert_eq!(incident.state, IncidentState::Assigned as i32);
        assert!(
            out.iter()
                .flat_map(|o| o.event.assignments())
                .any(|a| a.responder_id == "w-1")
        );
        let (o2, _) = desk.on_help_event(
            0,
            &report("e2", "btn-1", "h-1", MaintenanceReason::Offline),
            &roster,
            3_000,
        );
        assert_eq!(o2, HelpOutcome::Attached);
        let (o3, _) = desk.on_help_event(
            0,
            &report("e2", "btn-1", "h-1", MaintenanceReason::Offline),
            &roster,
            3_000,
        );
        assert_eq!(o3, HelpOutcome::Duplicate);
        let (o4, _) = desk.on_help_event(
            0,
            &report("e3", "btn-2", "h-2", MaintenanceReason::Silent),
            &roster,
            3_000,
        );
        assert_eq!(o4, HelpOutcome::Opened, "another device has its own");
    }

    #[test]
    fn a_camera_goes_to_the_patrol_and_a_real_press_is_never_folded_into_maintenance() {
        let mut desk = Desk::new(Policy::default());
        let roster = roster();
        let (_, out) = desk.on_help_event(
            0,
            &report("c1", "cam-1", "", MaintenanceReason::Offline),
            &roster,
            2_000,
        );
        assert!(out.iter().any(|o| {
            o.event
                .assignments()
                .iter()
                .any(|a| a.responder_id == "cop-1" && a.track == Track::Police as i32)
        }));
        desk.on_help_event(
            0,
            &report("m1", "btn-1", "h-1", MaintenanceReason::Offline),
            &roster,
            2_000,
        );
        let press = ValidHelpEvent {
            event_id: "p1".into(),
            occurred_at: 2_500,
            body: ValidBody::Press {
                press: helpgrid_proto::pb::ButtonPress {
                    device_id: "btn-1".into(),
                    household_id: "h-1".into(),
                    grid_id: "g1".into(),
                    kind: helpgrid_proto::pb::PressKind::Help as i32,
                    ..Default::default()
                },
                kind: helpgrid_proto::pb::PressKind::Help,
            },
        };
        let (outcome, _) = desk.on_help_event(0, &press, &roster, 3_000);
        assert_eq!(outcome, HelpOutcome::Opened);
    }

    #[test]
    fn reports_without_ids_or_reason_are_refused() {
        let ok = DeviceMaintenance {
            device_id: "d".into(),
            household_id: "h".into(),
            grid_id: "g".into(),
            reason: MaintenanceReason::Silent as i32,
            ..Default::default()
        };
        assert_eq!(validate(&ok), Ok(MaintenanceReason::Silent));
        assert!(
            validate(&DeviceMaintenance {
                reason: 0,
                ..ok.clone()
            })
            .is_err()
        );
        assert!(
            validate(&DeviceMaintenance {
                reason: 99,
                ..ok.clone()
            })
            .is_err()
        );
        assert!(
            validate(&DeviceMaintenance {
                household_id: String::new(),
                ..ok.clone()
            })
            .is_err()
        );
        assert!(
            validate(&DeviceMaintenance {
                grid_id: String::new(),
                ..ok.clone()
            })
            .is_err()
        );
        assert!(
            validate(&DeviceMaintenance {
                battery_percent: 101,
                ..ok
            })
            .is_err()
        );
    }
}
