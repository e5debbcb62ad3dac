//! The adapter around [`crate::domain::health`]: feeds it what MQTT and HTTP hear, checks
//! for silence on a timer, and sends each maintenance report to Kafka (keyed by grid, like
//! every help event) for the router to open the device's maintenance incident.

use crate::domain::health::{HealthBook, Report};
use crate::domain::intake;
use crate::domain::registry::DeviceTable;
use crate::kafka::Outbox;
use crate::telemetry;
use helpgrid_common::time::now_millis;
use helpgrid_proto::pb::Device;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub struct HealthWatch {
    pub book: Mutex<HealthBook>,
    pub table: Arc<RwLock<DeviceTable>>,
    pub outbox: Outbox,
    pub cancel: CancellationToken,
}

impl HealthWatch {
    /// The device spoke (a state message, a press). False only if a report could not be
    /// stored before shutdown (the message then stays unacknowledged).
    pub async fn heard(&self, device: &Device, battery: Option<u8>) -> bool {
        let report = match self.book.lock() {
            Ok(mut b) => b.heard(&device.device_id, battery, now_millis()),
            Err(_) => None,
        };
        self.send(device, report).await
    }

    pub async fn availability(&self, device: &Device, online: bool) -> bool {
        let report = match self.book.lock() {
            Ok(mut b) => b.availability(&device.device_id, online, now_millis()),
            Err(_) => None,
        };
        self.send(device, report).await
    }

    async fn send(&self, device: &Device, report: Option<Report>) -> bool {
        let Some(report) = report else {
            return true;
        };
        tracing::warn!(
            device = %device.device_id, grid = %device.grid_id, reason = report.reason.as_str_name(),
            detail = %report.detail, "device needs maintenance"
        );
        metrics::counter!(telemetry::MAINTENANCE_REPORTS, "reason" => report.reason.as_str_name())
            .increment(1);
        let event = intake::maintenance_event(device, &report, now_millis());
        self.outbox
            .publish_until_stored(&device.grid_id, &event, &self.cancel)
            .await
    }

    /// Checks for silent devices every `every` until cancelled.
    pub async fn run_checks(self: Arc<Self>, every: Duration) {
        let mut interval = tokio::time::interval(every);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = self.cancel.cancelled() => return,
                _ = interval.tick() => {}
            }
            let devices: Vec<Device> = match self.table.read() {
                Ok(t) => t.all().cloned().collect(),
                Err(_) => return,
            };
            let reports = match self.book.lock() {
                Ok(mut b) => b.tick(devices.iter(), now_millis()),
                Err(_) => return,
            };
            for report in reports {
                if let Some(device) = devices.iter().find(|d| d.device_id == report.device_id)
                    && !self.send(device, Some(report)).await
                {
                    return;
                }
            }
        }
    }
}
