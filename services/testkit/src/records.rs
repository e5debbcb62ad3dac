//! Records as button hubs, cameras and offices write them.

use helpgrid_common::envelope::new_envelope;
use helpgrid_common::time::now_millis;
use helpgrid_proto::pb::{
    ButtonPress, CameraAlert, CameraLabel, GeoPoint, HelpEvent, PressKind, Responder,
    ResponderRole, RosterRecord, help_event,
};

pub fn press(household: &str, grid: &str, kind: PressKind) -> HelpEvent {
    HelpEvent {
        envelope: Some(new_envelope(&format!("hub:{household}"), now_millis())),
        body: Some(help_event::Body::ButtonPress(ButtonPress {
            device_id: format!("btn-{household}"),
            household_id: household.to_owned(),
            grid_id: grid.to_owned(),
            kind: kind as i32,
            location: Some(GeoPoint {
                latitude: 32.684,
                longitude: 109.029,
            }),
            battery_percent: 87,
        })),
    }
}

pub fn camera(camera: &str, grid: &str, label: CameraLabel, confidence: f32) -> HelpEvent {
    HelpEvent {
        envelope: Some(new_envelope(&format!("camera:{camera}"), now_millis())),
        body: Some(help_event::Body::CameraAlert(CameraAlert {
            camera_id: camera.to_owned(),
            grid_id: grid.to_owned(),
            label: label as i32,
            confidence,
            zone: "gate-east".into(),
            snapshot_ref: format!("s3://snapshots/{camera}/latest.jpg"),
            location: Some(GeoPoint {
                latitude: 32.685,
                longitude: 109.030,
            }),
        })),
    }
}

pub fn responder(
    id: &str,
    role: ResponderRole,
    grids: &[&str],
    at: Option<(f64, f64)>,
) -> Responder {
    Responder {
        responder_id: id.to_owned(),
        display_name: format!("Responder {id}"),
        role: role as i32,
        grid_ids: grids.iter().map(|g| (*g).to_owned()).collect(),
        on_duty: true,
        last_location: at.map(|(latitude, longitude)| GeoPoint {
            latitude,
            longitude,
        }),
        location_updated_at: None,
    }
}

pub fn roster_record(responder: Responder) -> RosterRecord {
    RosterRecord {
        envelope: Some(new_envelope("office:test", now_millis())),
        responder: Some(responder),
    }
}
