//! Device health: can this button or camera still call for help?
//!
//! Heartbeats (any state message), availability and battery readings feed one entry per
//! device. A device reported offline, silent past its kind's expected interval, or under the
//! battery threshold has a *problem*; the first problem of an episode gives one maintenance
//! report, and nothing more is reported for that device until it is healthy again (online,
//! heard from, battery back above the threshold plus a margin). Time is passed in.

use helpgrid_common::time::Millis;
use helpgrid_proto::pb::{Device, DeviceKind, MaintenanceReason};
use std::collections::HashMap;

/// Battery must climb this many points above the threshold to count as fixed, so a reading
/// that wobbles around the threshold does not open and close episodes.
const BATTERY_MARGIN: u8 = 5;

#[derive(Debug, Clone, PartialEq)]
pub struct HealthPolicy {
    /// A Zigbee button silent for longer than this is a problem (0 = never). Zigbee buttons
    /// report battery/linkquality at least hourly; the default allows several misses.
    pub zigbee_button_silence_ms: Millis,
    /// Battery percentage under which a device needs a new battery.
    pub low_battery_percent: u8,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        Self {
            zigbee_button_silence_ms: 4 * 3_600_000,
            low_battery_percent: 15,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
struct Entry {
    last_heard: Millis,
    offline: bool,
    battery: Option<u8>,
    /// The open episode: what was reported and since when.
    reported: Option<(MaintenanceReason, Millis)>,
}

/// One maintenance report to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub device_id: String,
    pub reason: MaintenanceReason,
    /// When the episode started (part of the event id).
    pub since: Millis,
    pub battery_percent: Option<u8>,
    pub detail: String,
}

#[derive(Debug)]
pub struct HealthBook {
    policy: HealthPolicy,
    /// When watching began: devices not yet heard from count as heard then, so a restart of
    /// the gateway does not report every quiet button at once.
    started: Millis,
    devices: HashMap<String, Entry>,
}

impl HealthBook {
    pub fn new(policy: HealthPolicy, now: Millis) -> Self {
        Self {
            policy,
            started: now,
            devices: HashMap::new(),
        }
    }

    fn entry(&mut self, device_id: &str) -> &mut Entry {
        let started = self.started;
        self.devices
            .entry(device_id.to_owned())
            .or_insert_with(|| Entry {
                last_heard: started,
                ..Entry::default()
            })
    }

    /// A message from the device itself (a press or a state report): it is alive.
    pub fn heard(&mut self, device_id: &str, battery: Option<u8>, now: Millis) -> Option<Report> {
        let e = self.entry(device_id);
        e.last_heard = e.last_heard.max(now);
        e.offline = false;
        if battery.is_some() {
            e.battery = battery;
        }
        self.evaluate(device_id, now)
    }

    /// The hub's availability report for the device.
    pub fn availability(&mut self, device_id: &str, online: bool, now: Millis) -> Option<Report> {
        let e = self.entry(device_id);
        e.offline = !online;
        if online {
            e.last_heard = e.last_heard.max(now);
        }
        self.evaluate(device_id, now)
    }

    /// Checks every registered device for silence; call periodically.
    pub fn tick<'a>(
        &mut self,
        devices: impl Iterator<Item = &'a Device>,
        now: Millis,
    ) -> Vec<Report> {
        let mut out = Vec::new();
        for d in devices {
            if !d.enabled {
                continue;
            }
            self.entry(&d.device_id);
            if let Some(r) = self.evaluate_kind(&d.device_id, d.kind, now) {
                out.push(r);
            }
        }
        out
    }

    /// What is known of a device: (last heard, offline, battery, open problem).
    pub fn view(
        &self,
        device_id: &str,
    ) -> Option<(Millis, bool, Option<u8>, Option<MaintenanceReason>)> {
        self.devices.get(device_id).map(|e| {
            (
                e.last_heard,
                e.offline,
                e.battery,
                e.reported.map(|(r, _)| r),
            )
        })
    }

    /// Forgets a device that left the registry.
    pub fn forget(&mut self, device_id: &str) {
        self.devices.remove(device_id);
    }

    fn evaluate(&mut self, device_id: &str, now: Millis) -> Option<Report> {
        // Silence is judged by `tick`, which knows the device's kind.
        self.evaluate_kind(device_id, DeviceKind::Unspecified as i32, now)
    }

    fn evaluate_kind(&mut self, device_id: &str, kind: i32, now: Millis) -> Option<Report> {
        let policy = self.policy.clone();
        let e = self.devices.get_mut(device_id)?;
        let silence = (kind == DeviceKind::ZigbeeButton as i32
            && policy.zigbee_button_silence_ms > 0)
            .then_some(policy.zigbee_button_silence_ms);
        let silent = silence.is_some_and(|limit| now - e.last_heard > limit);
        let low = e.battery.is_some_and(|b| b < policy.low_battery_percent);
        let problem = if e.offline {
            Some(MaintenanceReason::Offline)
        } else if silent {
            Some(MaintenanceReason::Silent)
        } else if low {
            Some(MaintenanceReason::LowBattery)
        } else {
            None
        };
        match (problem, e.reported) {
            (Some(reason), None) => {
                let since = match reason {
                    MaintenanceReason::Silent => e.last_heard,
                    _ => now,
                };
                e.reported = Some((reason, since));
                let detail = match reason {
                    MaintenanceReason::Offline => "reported offline by its hub".to_owned(),
                    MaintenanceReason::Silent => {
                        format!("nothing heard for {} min", (now - e.last_heard) / 60_000)
                    }
                    _ => format!("battery {}%", e.battery.unwrap_or_default()),
                };
                Some(Report {
                    device_id: device_id.to_owned(),
                    reason,
                    since,
                    battery_percent: e.battery,
                    detail,
                })
            }
            (None, Some(_)) => {
                // Fixed only when nothing is wrong and the battery is clearly fine.
                let battery_fine = e
                    .battery
                    .is_none_or(|b| b >= policy.low_battery_percent.saturating_add(BATTERY_MARGIN));
                if battery_fine {
                    e.reported = None;
                }
                None
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Millis = 60_000;

    fn button(id: &str) -> Device {
        Device {
            device_id: id.into(),
            kind: DeviceKind::ZigbeeButton as i32,
            enabled: true,
            ..Device::default()
        }
    }

    fn book() -> HealthBook {
        HealthBook::new(
            HealthPolicy {
                zigbee_button_silence_ms: 60 * MIN,
                low_battery_percent: 15,
            },
            0,
        )
    }

    #[test]
    fn offline_reports_once_until_the_device_is_back() {
        let mut b = book();
        let r = b.availability("btn", false, 10).expect("report");
        assert_eq!((r.reason, r.since), (MaintenanceReason::Offline, 10));
        assert_eq!(b.availability("btn", false, 20), None);
        assert_eq!(b.heard("btn", None, 30), None, "back online: fixed");
        assert!(b.availability("btn", false, 40).is_some(), "a new episode");
    }

    #[test]
    fn low_battery_reports_once_and_needs_a_margin_to_count_as_fixed() {
        let mut b = book();
        assert_eq!(b.heard("btn", Some(50), 1), None);
        let r = b.heard("btn", Some(9), 2).expect("report");
        assert_eq!(r.reason, MaintenanceReason::LowBattery);
        assert_eq!(r.detail, "battery 9%");
        assert_eq!(b.heard("btn", Some(7), 3), None);
        assert_eq!(
            b.heard("btn", Some(16), 4),
            None,
            "above the threshold, within the margin"
        );
        assert_eq!(b.heard("btn", Some(14), 5), None, "still the same episode");
        assert_eq!(b.heard("btn", Some(100), 6), None, "new battery: fixed");
        assert!(b.heard("btn", Some(10), 7).is_some());
    }

    #[test]
    fn a_silent_button_is_reported_once_by_the_tick() {
        let mut b = book();
        let devices = [button("quiet"), button("chatty")];
        assert!(b.tick(devices.iter(), 30 * MIN).is_empty());
        b.heard("chatty", None, 50 * MIN);
        let reports = b.tick(devices.iter(), 61 * MIN);
        assert_eq!(reports.len(), 1);
        assert_eq!(reports[0].device_id, "quiet");
        assert_eq!(
            (reports[0].reason, reports[0].since),
            (MaintenanceReason::Silent, 0)
        );
        assert!(
            b.tick(devices.iter(), 200 * MIN)
                .iter()
                .all(|r| r.device_id == "chatty")
        );
        assert_eq!(b.tick(devices.iter(), 300 * MIN).len(), 0);
    }

    #[test]
    fn disabled_devices_and_cameras_are_not_judged_for_silence() {
        let mut b = book();
        let mut off = button("off");
        off.enabled = false;
        let camera = Device {
            device_id: "cam".into(),
            kind: DeviceKind::FrigateCamera as i32,
            enabled: true,
            ..Device::default()
        };
        assert!(b.tick([off, camera].iter(), 1_000 * MIN).is_empty());
    }
}
