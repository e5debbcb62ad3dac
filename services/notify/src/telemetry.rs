//! Every metric helpgrid-notify emits, named in one place.

use metrics::{describe_counter, describe_gauge, describe_histogram};

pub const EVENTS_IN: &str = "helpgrid_notify_events_in_total";
pub const NOTIFICATIONS: &str = "helpgrid_notify_notifications_total";
pub const ATTEMPTS: &str = "helpgrid_notify_attempts_total";
pub const DELIVERED: &str = "helpgrid_notify_delivered_total";
pub const DEAD_LETTERS: &str = "helpgrid_notify_dead_letters_total";
pub const DELIVERY_SECONDS: &str = "helpgrid_notify_delivery_seconds";
pub const ATTEMPT_SECONDS: &str = "helpgrid_notify_attempt_seconds";
pub const BREAKER_OPEN: &str = "helpgrid_notify_breaker_open";
pub const BREAKER_OPENED: &str = "helpgrid_notify_breaker_opened_total";
pub const QUEUED: &str = "helpgrid_notify_queued";
pub const RENOTIFY_PLANNED: &str = "helpgrid_notify_renotify_planned";
pub const SUBSCRIPTIONS: &str = "helpgrid_notify_subscriptions";
pub const SUBSCRIPTION_RECORDS_INVALID: &str = "helpgrid_notify_subscription_records_invalid_total";
pub const UNFINISHED: &str = "helpgrid_notify_unfinished_work";
pub const REQUEST_NOTIFICATIONS: &str = "helpgrid_notify_request_notifications";

/// The `kind` of a dead letter (label of [`DEAD_LETTERS`] and the record's header): an
/// incident-events record that is no IncidentEvent (no subscription) ...
pub const DEAD_UNDECODABLE: &str = "undecodable";
/// ... a notification whose endpoint's queue was full ...
pub const DEAD_QUEUE_FULL: &str = "queue_full";
/// ... one the endpoint refused (4xx) ...
pub const DEAD_WEBHOOK_REFUSED: &str = "webhook_refused";
/// ... and one whose retries were all spent.
pub const DEAD_WEBHOOK_FAILED: &str = "webhook_failed";

pub fn describe() {
    describe_counter!(EVENTS_IN, "Incident events read, by change");
    describe_counter!(
        NOTIFICATIONS,
        "Notifications queued for an endpoint, by subscription and kind"
    );
    describe_counter!(
        ATTEMPTS,
        "HTTP attempts, by subscription and result (delivered, failed, refused)"
    );
    describe_counter!(DELIVERED, "Notifications delivered, by subscription");
    describe_counter!(
        DEAD_LETTERS,
        "Notifications and records sent to the dead-letter topic, by subscription and kind"
    );
    describe_histogram!(
        DELIVERY_SECONDS,
        metrics::Unit::Seconds,
        "From the incident event (or re-notification time) to the endpoint's 2xx"
    );
    describe_histogram!(
        ATTEMPT_SECONDS,
        metrics::Unit::Seconds,
        "Duration of one HTTP attempt"
    );
    describe_gauge!(
        BREAKER_OPEN,
        "1 while an endpoint's circuit breaker is open"
    );
    describe_counter!(BREAKER_OPENED, "Times an endpoint's circuit breaker opened");
    describe_gauge!(
        QUEUED,
        "Notifications waiting or in flight, by subscription"
    );
    describe_histogram!(
        REQUEST_NOTIFICATIONS,
        "Notifications per webhook request (more than 1 only for subscriptions with batch_max), by subscription"
    );
    describe_gauge!(RENOTIFY_PLANNED, "Re-notifications waiting for their time");
    describe_gauge!(SUBSCRIPTIONS, "Subscriptions known");
    describe_counter!(
        SUBSCRIPTION_RECORDS_INVALID,
        "Records on the subscriptions topic that could not be used"
    );
    describe_gauge!(
        UNFINISHED,
        "Deliveries and re-notifications whose event offset is not committed yet"
    );
    // Reported at 0 from the start: HelpGridNotifyFailing reads the rate of dead letters,
    // and a series born at 1 has no rate to Prometheus (the first failures would be missed).
    metrics::counter!(DEAD_LETTERS, "subscription" => "", "kind" => DEAD_UNDECODABLE).increment(0);
}

/// Reports a subscription's dead-letter counters at 0 (as [`describe`] does for the
/// undecodable records), so its first dead letter is an increase. `increment(0)`, not
/// `absolute(0)`: a subscription seen again must not reset its count.
pub fn zero_dead_letters(subscription: &str) {
    for kind in [DEAD_QUEUE_FULL, DEAD_WEBHOOK_REFUSED, DEAD_WEBHOOK_FAILED] {
        metrics::counter!(DEAD_LETTERS, "subscription" => subscription.to_owned(), "kind" => kind)
            .increment(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letter_series_exist_at_zero_before_the_first_dead_letter() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            describe();
            zero_dead_letters("s-1");
            metrics::counter!(DEAD_LETTERS, "subscription" => "s-1", "kind" => DEAD_WEBHOOK_FAILED)
                .increment(2);
            // Seen again (a subscription updated): the count stays.
            zero_dead_letters("s-1");
        });
        let text = handle.render();
        let value = |subscription: &str, kind: &str| {
            let series = format!(
                "helpgrid_notify_dead_letters_total{{subscription=\"{subscription}\",kind=\"{kind}\"}} "
            );
            text.lines()
                .find_map(|l| l.strip_prefix(series.as_str()))
                .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
                .to_owned()
        };
        assert_eq!(value("", DEAD_UNDECODABLE), "0");
        assert_eq!(value("s-1", DEAD_QUEUE_FULL), "0");
        assert_eq!(value("s-1", DEAD_WEBHOOK_REFUSED), "0");
        assert_eq!(value("s-1", DEAD_WEBHOOK_FAILED), "2");
    }
}
