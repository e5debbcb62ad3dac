//! Every metric of the status service: the names live here and nowhere else, and each
//! function records one thing that happened.

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use std::time::Duration;

const GRPC_REQUESTS: &str = "helpgrid_status_grpc_requests_total";
const COMMANDS_SENT: &str = "helpgrid_status_commands_sent_total";
const COMMAND_OUTCOMES: &str = "helpgrid_status_command_outcomes_total";
const COMMAND_WAIT: &str = "helpgrid_status_command_wait_seconds";
const WATCHERS_CONNECTED: &str = "helpgrid_status_watchers_connected";
const WATCH_EVENTS_SENT: &str = "helpgrid_status_watch_events_sent_total";
const WATCH_REPLAYS: &str = "helpgrid_status_watch_replays_total";
const READ_MODEL_INCIDENTS: &str = "helpgrid_status_read_model_incidents";
const UNDECODABLE_RECORDS: &str = "helpgrid_status_undecodable_records_total";
const ROSTER_WRITES: &str = "helpgrid_status_roster_writes_total";
const ACCESS_REFUSED: &str = "helpgrid_status_access_refused_total";
const CONSOLE_STREAMS: &str = "helpgrid_status_console_streams";
const SERVING: &str = "helpgrid_status_serving";
const APP_STREAMS: &str = "helpgrid_status_app_streams";
const APP_SIGN_INS: &str = "helpgrid_status_app_sign_ins_total";
const APP_REFUSED: &str = "helpgrid_status_app_refused_total";
const APP_RESNAPSHOTS: &str = "helpgrid_status_app_resnapshots_total";

/// Registers descriptions, so `/metrics` explains each series.
pub fn describe() {
    describe_counter!(
        GRPC_REQUESTS,
        "gRPC requests answered, by method and status code"
    );
    describe_counter!(
        COMMANDS_SENT,
        "incident commands published to Kafka, by action"
    );
    describe_counter!(
        COMMAND_OUTCOMES,
        "incident commands by how they ended (applied, rejected reason, timeout, publish failure)"
    );
    describe_histogram!(
        COMMAND_WAIT,
        metrics::Unit::Seconds,
        "time from publishing a command to the router's answer"
    );
    describe_gauge!(WATCHERS_CONNECTED, "WatchIncidents streams open now");
    describe_counter!(WATCH_EVENTS_SENT, "incident updates sent to watchers");
    describe_counter!(
        WATCH_REPLAYS,
        "replays from the read model log, by reason (resume, lagged)"
    );
    describe_gauge!(READ_MODEL_INCIDENTS, "incidents held by the read model");
    describe_counter!(
        UNDECODABLE_RECORDS,
        "Kafka records skipped because they could not be decoded, by topic"
    );
    describe_counter!(ROSTER_WRITES, "roster records published, by operation");
    describe_counter!(
        ACCESS_REFUSED,
        "calls refused before reaching a handler (no or bad token, role not allowed), by code"
    );
    describe_gauge!(CONSOLE_STREAMS, "big-screen console event streams open now");
    describe_gauge!(APP_STREAMS, "responder app event streams open now");
    describe_counter!(APP_SIGN_INS, "responder app sign-ins, by how (link, token)");
    describe_counter!(
        APP_REFUSED,
        "responder app requests refused, by HTTP status (bad or used links, CSRF, foreign incidents, missing outcomes)"
    );
    describe_counter!(
        APP_RESNAPSHOTS,
        "app streams that could not resume from the browser's cursor and started with a snapshot"
    );
    describe_gauge!(
        SERVING,
        "1 while gRPC health says SERVING (read model and roster caught up), else 0"
    );
}

pub fn grpc_request(method: &'static str, code: tonic::Code) {
    counter!(GRPC_REQUESTS, "method" => method, "code" => format!("{code:?}")).increment(1);
}

pub fn command_sent(action: &'static str) {
    counter!(COMMANDS_SENT, "action" => action).increment(1);
}

pub fn command_outcome(outcome: &'static str) {
    counter!(COMMAND_OUTCOMES, "outcome" => outcome).increment(1);
}

pub fn command_answered_after(wait: Duration) {
    histogram!(COMMAND_WAIT).record(wait.as_secs_f64());
}

pub fn watcher_connected() {
    gauge!(WATCHERS_CONNECTED).increment(1.0);
}

pub fn watcher_disconnected() {
    gauge!(WATCHERS_CONNECTED).decrement(1.0);
}

pub fn watch_event_sent() {
    counter!(WATCH_EVENTS_SENT).increment(1);
}

pub fn watch_replay(reason: &'static str) {
    counter!(WATCH_REPLAYS, "reason" => reason).increment(1);
}

pub fn read_model_incidents(count: usize) {
    gauge!(READ_MODEL_INCIDENTS).set(count as f64);
}

pub fn undecodable_record(topic: &str) {
    counter!(UNDECODABLE_RECORDS, "topic" => topic.to_owned()).increment(1);
}

pub fn roster_write(operation: &'static str) {
    counter!(ROSTER_WRITES, "operation" => operation).increment(1);
}

pub fn access_refused(code: tonic::Code) {
    counter!(ACCESS_REFUSED, "code" => format!("{code:?}")).increment(1);
}

pub fn console_stream_opened() {
    gauge!(CONSOLE_STREAMS).increment(1.0);
}

pub fn console_stream_closed() {
    gauge!(CONSOLE_STREAMS).decrement(1.0);
}

/// What gRPC health now says, as a series Prometheus can alert on.
pub fn serving(serving: bool) {
    gauge!(SERVING).set(if serving { 1.0 } else { 0.0 });
}

pub fn app_stream_opened() {
    gauge!(APP_STREAMS).increment(1.0);
}

pub fn app_stream_closed() {
    gauge!(APP_STREAMS).decrement(1.0);
}

pub fn app_signed_in(how: &'static str) {
    counter!(APP_SIGN_INS, "how" => how).increment(1);
}

pub fn app_request_refused(status: u16) {
    counter!(APP_REFUSED, "status" => status.to_string()).increment(1);
}

pub fn app_stream_resnapshot() {
    counter!(APP_RESNAPSHOTS).increment(1);
}
