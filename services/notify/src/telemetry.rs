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
}
