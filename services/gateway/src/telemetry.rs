//! Every metric the gateway reports, named in one place.

use helpgrid_proto::pb::MaintenanceReason;

/// Device messages received, by `source` (z2m, frigate, http) and `outcome` (event, health,
/// ignored, dead_letter, refused).
pub const MESSAGES: &str = "helpgrid_gateway_messages_total";
/// Help events Kafka acknowledged, by `kind` (press, alert, disabled_press).
pub const EVENTS_PUBLISHED: &str = "helpgrid_gateway_events_published_total";
/// Seconds from receiving a device message to Kafka's acknowledgement of its help event.
pub const PUBLISH_SECONDS: &str = "helpgrid_gateway_publish_seconds";
/// Device messages written to the dead-letter topic, by `kind` (the reason's label).
pub const DEAD_LETTERS: &str = "helpgrid_gateway_dead_letters_total";
/// Presses or alerts from devices the registry does not route (unknown, disabled, wrong
/// kind), by `reason`. Someone may be behind each one: alert on any increase.
pub const UNROUTABLE_DEVICES: &str = "helpgrid_gateway_unroutable_device_messages_total";
/// HTTP answers, by `status`.
pub const HTTP_RESPONSES: &str = "helpgrid_gateway_http_responses_total";
/// Devices in the registry table.
pub const DEVICES: &str = "helpgrid_gateway_devices";
/// 1 while connected to the MQTT broker.
pub const MQTT_CONNECTED: &str = "helpgrid_gateway_mqtt_connected";
/// Maintenance reports sent (one per device per problem episode), by `reason`.
pub const MAINTENANCE_REPORTS: &str = "helpgrid_gateway_maintenance_reports_total";
/// Feedback to residents' devices, by `outcome` (sent on MQTT, status kept for HTTP,
/// withheld because the incident's device is not the household's).
pub const FEEDBACK: &str = "helpgrid_gateway_feedback_total";
/// Kafka sends retried after a failure.
pub const KAFKA_RETRIES: &str = "helpgrid_gateway_kafka_retries_total";

pub fn describe() {
    metrics::describe_counter!(MESSAGES, "Device messages received, by source and outcome");
    metrics::describe_counter!(EVENTS_PUBLISHED, "Help events acknowledged by Kafka");
    metrics::describe_histogram!(
        PUBLISH_SECONDS,
        metrics::Unit::Seconds,
        "Device message received to Kafka acknowledgement"
    );
    metrics::describe_counter!(DEAD_LETTERS, "Device messages dead-lettered, by reason");
    metrics::describe_counter!(
        UNROUTABLE_DEVICES,
        "Presses/alerts from unknown, disabled or mis-registered devices"
    );
    metrics::describe_counter!(HTTP_RESPONSES, "HTTP answers by status");
    metrics::describe_gauge!(DEVICES, "Devices in the registry table");
    metrics::describe_gauge!(MQTT_CONNECTED, "1 while connected to the MQTT broker");
    metrics::describe_counter!(
        MAINTENANCE_REPORTS,
        "Maintenance reports sent, one per device per problem episode"
    );
    metrics::describe_counter!(FEEDBACK, "Feedback to residents' devices, by outcome");
    metrics::describe_counter!(KAFKA_RETRIES, "Kafka sends retried after a failure");
    // Reported at 0 from the start, so an alert on `increase()` sees the first unroutable
    // press after a restart (a series that appears at 1 has no increase to Prometheus).
    for reason in crate::domain::registry::Refusal::KINDS {
        metrics::counter!(UNROUTABLE_DEVICES, "reason" => reason).absolute(0);
    }
    // Likewise for maintenance reports: HelpGridDevicesOffline reads the increase of the
    // OFFLINE reason, which a series born at 1 would not show.
    for reason in maintenance_reasons() {
        metrics::counter!(MAINTENANCE_REPORTS, "reason" => reason.as_str_name()).absolute(0);
    }
}

/// Every maintenance reason a report can carry (all but UNSPECIFIED).
fn maintenance_reasons() -> impl Iterator<Item = MaintenanceReason> {
    (1..).map_while(|n| MaintenanceReason::try_from(n).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_series_alerts_read_with_increase_exist_at_zero_from_the_start() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, describe);
        let text = handle.render();
        for line in [
            "helpgrid_gateway_maintenance_reports_total{reason=\"MAINTENANCE_REASON_OFFLINE\"} 0",
            "helpgrid_gateway_maintenance_reports_total{reason=\"MAINTENANCE_REASON_LOW_BATTERY\"} 0",
            "helpgrid_gateway_unroutable_device_messages_total{reason=\"unknown_device\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
        }
        assert!(
            !text.contains("MAINTENANCE_REASON_UNSPECIFIED"),
            "no report carries UNSPECIFIED:\n{text}"
        );
    }
}
