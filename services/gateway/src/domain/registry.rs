//! The device table: which device belongs to which household or camera post and grid.
//! Built from the compacted `devices` topic; every gateway holds all of it (a few hundred
//! bytes per device: a city of 774k households fits in a few hundred MB, one grid office's
//! gateway in far less).

use helpgrid_proto::pb::{Device, DeviceKind};
use std::collections::HashMap;

/// Why a message from a device is not routed. Never silently dropped: the adapters
/// dead-letter it with this reason and warn, because a real resident may be behind it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("no device {0:?} is registered")]
    UnknownDevice(String),
    #[error("device {0:?} is disabled in the registry")]
    Disabled(String),
    #[error("device {device:?} is registered as {registered}, not as a {expected}")]
    WrongKind {
        device: String,
        registered: &'static str,
        expected: &'static str,
    },
}

impl Refusal {
    /// Every value `kind` returns (the metrics report each from the start).
    pub const KINDS: [&'static str; 3] = ["unknown_device", "disabled_device", "wrong_device_kind"];

    pub fn kind(&self) -> &'static str {
        match self {
            Refusal::UnknownDevice(_) => "unknown_device",
            Refusal::Disabled(_) => "disabled_device",
            Refusal::WrongKind { .. } => "wrong_device_kind",
        }
    }
}

pub fn kind_word(kind: DeviceKind) -> &'static str {
    match kind {
        DeviceKind::Unspecified => "unspecified",
        DeviceKind::ZigbeeButton => "zigbee_button",
        DeviceKind::HttpButton => "http_button",
        DeviceKind::FrigateCamera => "frigate_camera",
        DeviceKind::HttpCamera => "http_camera",
    }
}

pub fn kind_from_word(word: &str) -> Option<DeviceKind> {
    Some(match word {
        "zigbee_button" => DeviceKind::ZigbeeButton,
        "http_button" => DeviceKind::HttpButton,
        "frigate_camera" => DeviceKind::FrigateCamera,
        "http_camera" => DeviceKind::HttpCamera,
        _ => return None,
    })
}

/// Checks a registry record before it is written (importer, DeviceService).
pub fn check_device(d: &Device) -> Result<(), String> {
    let id_ok =
        |v: &str| !v.trim().is_empty() && v.len() <= 128 && !v.chars().any(char::is_control);
    if !id_ok(&d.device_id) {
        return Err("device_id is missing, too long or has control characters".into());
    }
    if !id_ok(&d.grid_id) {
        return Err(format!(
            "device {}: grid_id is missing or unusable",
            d.device_id
        ));
    }
    let kind = DeviceKind::try_from(d.kind).unwrap_or(DeviceKind::Unspecified);
    match kind {
        DeviceKind::Unspecified => {
            return Err(format!("device {}: kind is missing", d.device_id));
        }
        DeviceKind::ZigbeeButton | DeviceKind::HttpButton if !id_ok(&d.household_id) => {
            return Err(format!(
                "device {}: a button needs a household_id",
                d.device_id
            ));
        }
        DeviceKind::FrigateCamera | DeviceKind::HttpCamera if !id_ok(&d.camera_post) => {
            return Err(format!(
                "device {}: a camera needs a camera_post",
                d.device_id
            ));
        }
        DeviceKind::HttpButton | DeviceKind::HttpCamera if d.credential_ref.trim().is_empty() => {
            return Err(format!(
                "device {}: an HTTP device needs a credential_ref",
                d.device_id
            ));
        }
        _ => {}
    }
    if let Some(p) = d.location
        && !((-90.0..=90.0).contains(&p.latitude) && (-180.0..=180.0).contains(&p.longitude))
    {
        return Err(format!(
            "device {}: location is not a WGS84 position",
            d.device_id
        ));
    }
    Ok(())
}

/// The name an MQTT device goes by on its hub (friendly_name or Frigate camera name).
pub fn mqtt_name(d: &Device) -> &str {
    if d.mqtt_name.is_empty() {
        &d.device_id
    } else {
        &d.mqtt_name
    }
}

#[derive(Debug, Default, Clone)]
pub struct DeviceTable {
    by_id: HashMap<String, Device>,
    /// (kind, MQTT name) → device id.
    by_mqtt_name: HashMap<(i32, String), String>,
}

impl DeviceTable {
    pub fn upsert(&mut self, device: Device) {
        self.remove(&device.device_id.clone());
        if matches!(
            DeviceKind::try_from(device.kind),
            Ok(DeviceKind::ZigbeeButton | DeviceKind::FrigateCamera)
        ) {
            self.by_mqtt_name.insert(
                (device.kind, mqtt_name(&device).to_owned()),
                device.device_id.clone(),
            );
        }
        self.by_id.insert(device.device_id.clone(), device);
    }

    pub fn remove(&mut self, device_id: &str) {
        if let Some(old) = self.by_id.remove(device_id) {
            self.by_mqtt_name
                .remove(&(old.kind, mqtt_name(&old).to_owned()));
        }
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    pub fn get(&self, device_id: &str) -> Option<&Device> {
        self.by_id.get(device_id)
    }

    pub fn all(&self) -> impl Iterator<Item = &Device> {
        self.by_id.values()
    }

    /// A device that may send as `expected`: registered, of that kind, enabled.
    pub fn routable(&self, device_id: &str, expected: DeviceKind) -> Result<&Device, Refusal> {
        let d = self
            .by_id
            .get(device_id)
            .ok_or_else(|| Refusal::UnknownDevice(device_id.to_owned()))?;
        check_routable(d, expected)
    }

    /// The same, found by its MQTT name.
    pub fn routable_by_mqtt_name(
        &self,
        name: &str,
        expected: DeviceKind,
    ) -> Result<&Device, Refusal> {
        let id = self
            .by_mqtt_name
            .get(&(expected as i32, name.to_owned()))
            .ok_or_else(|| Refusal::UnknownDevice(name.to_owned()))?;
        let d = self
            .by_id
            .get(id)
            .ok_or_else(|| Refusal::UnknownDevice(name.to_owned()))?;
        check_routable(d, expected)
    }
}

fn check_routable(d: &Device, expected: DeviceKind) -> Result<&Device, Refusal> {
    if d.kind != expected as i32 {
        return Err(Refusal::WrongKind {
            device: d.device_id.clone(),
            registered: kind_word(DeviceKind::try_from(d.kind).unwrap_or(DeviceKind::Unspecified)),
            expected: kind_word(expected),
        });
    }
    if !d.enabled {
        return Err(Refusal::Disabled(d.device_id.clone()));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_kind_is_listed() {
        let refusals = [
            Refusal::UnknownDevice("d".into()),
            Refusal::Disabled("d".into()),
            Refusal::WrongKind {
                device: "d".into(),
                registered: "a",
                expected: "b",
            },
        ];
        let kinds: Vec<&str> = refusals.iter().map(Refusal::kind).collect();
        assert_eq!(kinds, Refusal::KINDS);
    }

    fn button(id: &str, name: &str, enabled: bool) -> Device {
        Device {
            device_id: id.into(),
            kind: DeviceKind::ZigbeeButton as i32,
            household_id: "h-1".into(),
            grid_id: "g1".into(),
            enabled,
            mqtt_name: name.into(),
            ..Device::default()
        }
    }

    #[test]
    fn a_button_is_found_by_its_friendly_name_and_only_as_a_button() {
        let mut t = DeviceTable::default();
        t.upsert(button("btn-1", "hall/button", true));
        let d = t
            .routable_by_mqtt_name("hall/button", DeviceKind::ZigbeeButton)
            .expect("found");
        assert_eq!(d.device_id, "btn-1");
        assert_eq!(
            t.routable_by_mqtt_name("hall/button", DeviceKind::FrigateCamera),
            Err(Refusal::UnknownDevice("hall/button".into()))
        );
        assert_eq!(
            t.routable("btn-1", DeviceKind::HttpButton)
                .map_err(|r| r.kind()),
            Err("wrong_device_kind")
        );
    }

    #[test]
    fn unknown_and_disabled_devices_are_refused_with_a_reason() {
        let mut t = DeviceTable::default();
        t.upsert(button("btn-2", "", false));
        assert_eq!(
            t.routable_by_mqtt_name("btn-2", DeviceKind::ZigbeeButton),
            Err(Refusal::Disabled("btn-2".into()))
        );
        assert_eq!(
            t.routable("nobody", DeviceKind::ZigbeeButton),
            Err(Refusal::UnknownDevice("nobody".into()))
        );
    }

    #[test]
    fn a_renamed_device_leaves_no_stale_name_and_a_delete_forgets_it() {
        let mut t = DeviceTable::default();
        t.upsert(button("btn-3", "old", true));
        t.upsert(button("btn-3", "new", true));
        assert!(
            t.routable_by_mqtt_name("old", DeviceKind::ZigbeeButton)
                .is_err()
        );
        assert!(
            t.routable_by_mqtt_name("new", DeviceKind::ZigbeeButton)
                .is_ok()
        );
        t.remove("btn-3");
        assert!(t.is_empty());
        assert!(
            t.routable_by_mqtt_name("new", DeviceKind::ZigbeeButton)
                .is_err()
        );
    }

    #[test]
    fn records_are_checked_before_they_are_written() {
        assert!(check_device(&button("b", "", true)).is_ok());
        let mut no_household = button("b", "", true);
        no_household.household_id.clear();
        assert!(check_device(&no_household).is_err());
        let mut http = button("b", "", true);
        http.kind = DeviceKind::HttpButton as i32;
        assert!(check_device(&http).unwrap_err().contains("credential_ref"));
        let camera = Device {
            device_id: "cam".into(),
            kind: DeviceKind::FrigateCamera as i32,
            grid_id: "g".into(),
            ..Device::default()
        };
        assert!(check_device(&camera).unwrap_err().contains("camera_post"));
        assert!(check_device(&Device::default()).is_err());
    }
}
