//! Every metric of the archive: the names live here and nowhere else, and each function
//! records one thing that happened.

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use std::time::Duration;

const EVENTS_ARCHIVED: &str = "helpgrid_archive_events_archived_total";
const BATCHES: &str = "helpgrid_archive_batches_total";
const BATCH_WRITE: &str = "helpgrid_archive_batch_write_seconds";
const DEAD_LETTERED: &str = "helpgrid_archive_dead_lettered_total";
const STORE_FAILURES: &str = "helpgrid_archive_store_failures_total";
const LAG: &str = "helpgrid_archive_lag_seconds";
const GRPC_REQUESTS: &str = "helpgrid_archive_grpc_requests_total";
const PSEUDONYMISED: &str = "helpgrid_archive_pseudonymised_incidents_total";

pub fn describe() {
    describe_counter!(EVENTS_ARCHIVED, "incident events written to PostgreSQL");
    describe_counter!(BATCHES, "batches committed to PostgreSQL");
    describe_histogram!(
        BATCH_WRITE,
        metrics::Unit::Seconds,
        "time to write and commit one batch (rows and offsets in one transaction)"
    );
    describe_counter!(
        DEAD_LETTERED,
        "records the archive could not decode, sent to the dead-letter topic, by kind"
    );
    describe_counter!(
        STORE_FAILURES,
        "batches that failed to commit (PostgreSQL down or refusing); retried from the stored offsets"
    );
    describe_gauge!(
        LAG,
        metrics::Unit::Seconds,
        "age of the newest archived event when its batch committed"
    );
    describe_counter!(
        GRPC_REQUESTS,
        "history and report calls, by method and code"
    );
    describe_counter!(
        PSEUDONYMISED,
        "incidents whose personal fields were pseudonymised"
    );
}

pub fn batch_committed(events: usize, took: Duration, lag: Option<Duration>) {
    counter!(EVENTS_ARCHIVED).increment(events as u64);
    counter!(BATCHES).increment(1);
    histogram!(BATCH_WRITE).record(took.as_secs_f64());
    if let Some(lag) = lag {
        gauge!(LAG).set(lag.as_secs_f64());
    }
}

pub fn dead_lettered(kind: &'static str) {
    counter!(DEAD_LETTERED, "kind" => kind).increment(1);
}

pub fn store_failed() {
    counter!(STORE_FAILURES).increment(1);
}

pub fn grpc_answered(method: &'static str, code: tonic::Code) {
    counter!(GRPC_REQUESTS, "method" => method, "code" => format!("{code:?}")).increment(1);
}

pub fn pseudonymised(incidents: u64) {
    counter!(PSEUDONYMISED).increment(incidents);
}
