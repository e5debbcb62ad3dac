//! From a recognised device message to the `HelpEvent` on Kafka: the envelope (derived id,
//! when it happened, who sent it) and the body with the registry's household, camera post,
//! grid and location.

use super::frigate::{Alert, camera_label_from_word};
use super::health::Report;
use super::z2m::press_kind_from_word;
use super::{DecodeError, event_id, parse_json};
use helpgrid_common::time::{Millis, to_timestamp};
use helpgrid_proto::SCHEMA_VERSION;
use helpgrid_proto::pb::{
    ButtonPress, CameraAlert, CameraLabel, Device, DeviceMaintenance, Envelope, HelpEvent,
    MaintenanceReason, PressKind, help_event,
};
use serde_json::Value;

fn envelope(event_id: String, occurred_at: Millis, source: String) -> Envelope {
    Envelope {
        event_id,
        occurred_at: Some(to_timestamp(occurred_at)),
        source,
        schema_version: SCHEMA_VERSION,
    }
}

/// A button press from a registered, enabled button.
pub fn press_event(
    device: &Device,
    kind: PressKind,
    event_id: String,
    occurred_at: Millis,
    battery_percent: Option<u8>,
    source: String,
) -> HelpEvent {
    HelpEvent {
        envelope: Some(envelope(event_id, occurred_at, source)),
        body: Some(help_event::Body::ButtonPress(ButtonPress {
            device_id: device.device_id.clone(),
            household_id: device.household_id.clone(),
            grid_id: device.grid_id.clone(),
            kind: kind as i32,
            location: device.location,
            battery_percent: battery_percent.map(u32::from).unwrap_or_default(),
        })),
    }
}

/// A camera alert from a registered, enabled camera.
pub fn camera_event(
    device: &Device,
    alert: &Alert,
    occurred_at: Millis,
    snapshot_ref: String,
    source: String,
) -> HelpEvent {
    HelpEvent {
        envelope: Some(envelope(alert.event_id.clone(), occurred_at, source)),
        body: Some(help_event::Body::CameraAlert(CameraAlert {
            camera_id: device.camera_post.clone(),
            grid_id: device.grid_id.clone(),
            label: alert.label as i32,
            confidence: alert.confidence,
            zone: alert.zone.clone(),
            snapshot_ref,
            location: device.location,
        })),
    }
}

/// A maintenance report for a registered device. The id names the device, the reason and
/// when the episode began, so a report sent again (a redelivery, a retry) is the same event.
pub fn maintenance_event(device: &Device, report: &Report, now: Millis) -> HelpEvent {
    let reason = report.reason.as_str_name().to_ascii_lowercase();
    let id = event_id::derive(&[
        "maintenance",
        &device.device_id,
        &reason,
        &report.since.to_string(),
    ]);
    HelpEvent {
        envelope: Some(envelope(id, now, format!("health:{}", device.device_id))),
        body: Some(help_event::Body::DeviceMaintenance(DeviceMaintenance {
            device_id: device.device_id.clone(),
            household_id: device.household_id.clone(),
            camera_post: device.camera_post.clone(),
            grid_id: device.grid_id.clone(),
            reason: report.reason as i32,
            detail: report.detail.clone(),
            battery_percent: report.battery_percent.map(u32::from).unwrap_or_default(),
            location: device.location,
        })),
    }
}

/// The warning for a press from a device the registry has disabled: not routed as a press,
/// but a maintenance incident for the household's grid worker, because a resident may be
/// behind it. The id follows the press's own id, so a redelivered press warns once.
pub fn disabled_press_event(device: &Device, press_event_id: &str, now: Millis) -> HelpEvent {
    HelpEvent {
        envelope: Some(envelope(
            event_id::derive(&["disabled-press", press_event_id]),
            now,
            format!("registry:{}", device.device_id),
        )),
        body: Some(help_event::Body::DeviceMaintenance(DeviceMaintenance {
            device_id: device.device_id.clone(),
            household_id: device.household_id.clone(),
            camera_post: device.camera_post.clone(),
            grid_id: device.grid_id.clone(),
            reason: MaintenanceReason::DisabledDevicePressed as i32,
            detail: "pressed while disabled in the device registry: someone may need help".into(),
            battery_percent: 0,
            location: device.location,
        })),
    }
}

/// Event id of a Zigbee2MQTT press. With `last_seen` (the hub's own time of the message,
/// millisecond precision) the id is the hub's: device + last_seen + action. Without it the
/// hub sends nothing that tells two presses apart from one redelivered press, so the id uses
/// the gateway's receive time in `bucket_ms` buckets: a redelivery within the bucket is
/// recognised; README says to enable `last_seen` on the hub.
pub fn z2m_event_id(
    device_id: &str,
    action: &str,
    last_seen: Option<&str>,
    received_at: Millis,
    bucket_ms: Millis,
) -> String {
    match last_seen {
        Some(seen) => event_id::derive(&["z2m", device_id, seen, action]),
        None => {
            let bucket = received_at.div_euclid(bucket_ms.max(1)).to_string();
            event_id::derive(&["z2m-received", device_id, &bucket, action])
        }
    }
}

/// `POST /v1/press` body: `{"kind":"help","pressed_at":1764452336796,"seq":42,"battery":80}`.
/// `kind` is required; `pressed_at` (device clock, ms) and `seq` (the device's press
/// counter) make the event id, so a retried request is the same event.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpPress {
    pub kind: PressKind,
    pub pressed_at: Option<Millis>,
    pub seq: Option<u64>,
    pub battery_percent: Option<u8>,
}

/// `POST /v1/alert` body: `{"label":"fire","confidence":0.93,"alert_id":"nvr-7781",
/// "zone":"gate","occurred_at":1764452336796,"snapshot_ref":"https://nvr/…"}`.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpAlert {
    pub label: CameraLabel,
    pub confidence: f32,
    pub alert_id: String,
    pub zone: String,
    pub occurred_at: Option<Millis>,
    pub snapshot_ref: String,
}

fn object(payload: &[u8]) -> Result<serde_json::Map<String, Value>, DecodeError> {
    match parse_json(payload)? {
        Value::Object(map) => Ok(map),
        _ => Err(DecodeError::WrongType {
            field: "body",
            expected: "a JSON object",
        }),
    }
}

fn opt_u64(
    map: &serde_json::Map<String, Value>,
    field: &'static str,
) -> Result<Option<u64>, DecodeError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_u64().map(Some).ok_or(DecodeError::WrongType {
            field,
            expected: "a non-negative integer",
        }),
        Some(_) => Err(DecodeError::WrongType {
            field,
            expected: "a non-negative integer",
        }),
    }
}

fn opt_str(
    map: &serde_json::Map<String, Value>,
    field: &'static str,
) -> Result<String, DecodeError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) if s.len() <= 512 && !s.chars().any(char::is_control) => {
            Ok(s.clone())
        }
        Some(_) => Err(DecodeError::WrongType {
            field,
            expected: "a short string",
        }),
    }
}

pub fn decode_http_press(payload: &[u8]) -> Result<HttpPress, DecodeError> {
    let map = object(payload)?;
    let kind = match map.get("kind") {
        Some(Value::String(s)) => press_kind_from_word(s).ok_or_else(|| DecodeError::Unknown {
            field: "kind",
            value: s.clone(),
        })?,
        None | Some(Value::Null) => return Err(DecodeError::Missing("kind")),
        Some(_) => {
            return Err(DecodeError::WrongType {
                field: "kind",
                expected: "help, urgent or medical",
            });
        }
    };
    let battery = opt_u64(&map, "battery")?;
    if battery.is_some_and(|b| b > 100) {
        return Err(DecodeError::WrongType {
            field: "battery",
            expected: "a percentage 0..100",
        });
    }
    Ok(HttpPress {
        kind,
        pressed_at: opt_u64(&map, "pressed_at")?.map(|v| v.min(i64::MAX as u64) as Millis),
        seq: opt_u64(&map, "seq")?,
        battery_percent: battery.map(|b| b as u8),
    })
}

pub fn decode_http_alert(payload: &[u8]) -> Result<HttpAlert, DecodeError> {
    let map = object(payload)?;
    let label = match map.get("label") {
        Some(Value::String(s)) => {
            camera_label_from_word(s).ok_or_else(|| DecodeError::Unknown {
                field: "label",
                value: s.clone(),
            })?
        }
        None | Some(Value::Null) => return Err(DecodeError::Missing("label")),
        Some(_) => {
            return Err(DecodeError::WrongType {
                field: "label",
                expected: "a label word",
            });
        }
    };
    let confidence = match map.get("confidence") {
        Some(Value::Number(n)) => {
            n.as_f64()
                .filter(|c| (0.0..=1.0).contains(c))
                .ok_or(DecodeError::WrongType {
                    field: "confidence",
                    expected: "a score 0..1",
                })? as f32
        }
        None | Some(Value::Null) => return Err(DecodeError::Missing("confidence")),
        Some(_) => {
            return Err(DecodeError::WrongType {
                field: "confidence",
                expected: "a score 0..1",
            });
        }
    };
    let alert_id = opt_str(&map, "alert_id")?;
    if alert_id.is_empty() {
        return Err(DecodeError::Missing("alert_id"));
    }
    Ok(HttpAlert {
        label,
        confidence,
        alert_id,
        zone: opt_str(&map, "zone")?,
        occurred_at: opt_u64(&map, "occurred_at")?.map(|v| v.min(i64::MAX as u64) as Millis),
        snapshot_ref: opt_str(&map, "snapshot_ref")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use helpgrid_proto::pb::DeviceKind;

    #[test]
    fn a_press_event_carries_the_registry_household_and_grid() {
        let device = Device {
            device_id: "btn-1".into(),
            kind: DeviceKind::ZigbeeButton as i32,
            household_id: "h-1".into(),
            grid_id: "g-1".into(),
            enabled: true,
            ..Device::default()
        };
        let e = press_event(
            &device,
            PressKind::Urgent,
            "id-1".into(),
            1_000,
            Some(55),
            "z2m:btn-1".into(),
        );
        let Some(help_event::Body::ButtonPress(p)) = e.body else {
            panic!("a press");
        };
        assert_eq!(
            (p.household_id.as_str(), p.grid_id.as_str()),
            ("h-1", "g-1")
        );
        assert_eq!(p.kind, PressKind::Urgent as i32);
        assert_eq!(p.battery_percent, 55);
        let env = e.envelope.expect("envelope");
        assert_eq!(env.event_id, "id-1");
        assert_eq!(env.schema_version, SCHEMA_VERSION);
    }

    #[test]
    fn z2m_ids_follow_last_seen_or_the_receive_bucket() {
        let a = z2m_event_id("b", "single", Some("2026-11-29T21:38:56.796Z"), 5, 10_000);
        assert_eq!(
            a,
            z2m_event_id(
                "b",
                "single",
                Some("2026-11-29T21:38:56.796Z"),
                9_999_999,
                10_000
            )
        );
        assert_ne!(
            a,
            z2m_event_id("b", "single", Some("2026-11-29T21:38:57.001Z"), 5, 10_000)
        );
        assert_eq!(
            z2m_event_id("b", "single", None, 10_001, 10_000),
            z2m_event_id("b", "single", None, 19_999, 10_000)
        );
        assert_ne!(
            z2m_event_id("b", "single", None, 9_999, 10_000),
            z2m_event_id("b", "single", None, 10_000, 10_000)
        );
    }

    #[test]
    fn http_press_bodies() {
        assert_eq!(
            decode_http_press(
                br#"{"kind":"urgent","pressed_at":1764452336796,"seq":42,"battery":80}"#
            ),
            Ok(HttpPress {
                kind: PressKind::Urgent,
                pressed_at: Some(1_764_452_336_796),
                seq: Some(42),
                battery_percent: Some(80)
            })
        );
        let kind = |b: &[u8]| decode_http_press(b).map_err(|e| e.kind()).err();
        assert_eq!(kind(br#"{}"#), Some("missing_field"));
        assert_eq!(kind(br#"{"kind":"panic"}"#), Some("unknown_value"));
        assert_eq!(kind(br#"{"kind":1}"#), Some("wrong_type"));
        assert_eq!(kind(br#"{"kind":"help","seq":-1}"#), Some("wrong_type"));
        assert_eq!(
            kind(br#"{"kind":"help","battery":101}"#),
            Some("wrong_type")
        );
        assert_eq!(kind(br#""help""#), Some("wrong_type"));
        assert_eq!(kind(b"kind=help"), Some("not_json"));
    }

    #[test]
    fn http_alert_bodies() {
        let a = decode_http_alert(
            br#"{"label":"fire","confidence":0.93,"alert_id":"nvr-7781","zone":"gate"}"#,
        )
        .expect("decodes");
        assert_eq!(a.label, CameraLabel::Fire);
        assert_eq!(a.zone, "gate");
        let kind = |b: &[u8]| decode_http_alert(b).map_err(|e| e.kind()).err();
        assert_eq!(
            kind(br#"{"label":"fire","confidence":0.9}"#),
            Some("missing_field")
        );
        assert_eq!(
            kind(br#"{"label":"ufo","confidence":0.9,"alert_id":"a"}"#),
            Some("unknown_value")
        );
        assert_eq!(
            kind(br#"{"label":"fire","confidence":2,"alert_id":"a"}"#),
            Some("wrong_type")
        );
        assert_eq!(
            kind(br#"{"label":"fire","confidence":0.9,"alert_id":"a","zone":7}"#),
            Some("wrong_type")
        );
    }
}
