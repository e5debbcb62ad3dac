//! A bound on librdkafka's blocking transaction calls.
//!
//! librdkafka 2.12 can block `send_offsets_to_transaction` forever, whatever its timeout,
//! when the consumer group's coordinator went away and came back (librdkafka issues #5456
//! and #5511: the coordinator request's own timeout is never checked, and it waits for a
//! broker state change that may not come). The three-broker rolling restart hit it: the
//! router's pipeline thread sat in that call for minutes while `/readyz` still said ready.
//!
//! So each such call runs on a thread of its own and the pipeline waits for it at most the
//! call's timeout plus [`GRACE`]. Past that the pipeline gives up on its clients and ends
//! with [`StuckCall`], and the router starts a fresh pipeline: a new producer with the same
//! transactional id fences the stuck one (its open transaction is aborted by the
//! coordinator), so nothing it wrote is ever committed, exactly as after a crash. The
//! stuck thread keeps the old clients alive until librdkafka lets go; after
//! [`MAX_STUCK_CALLS`] such threads the router stops with an error instead of piling up
//! clients (a restarted process starts clean).
//!
//! `send_offsets_to_transaction` is the call that gets stuck (its `TxnOffsetCommit` goes to
//! the group coordinator), and it has a bound of its own, [`bounded_offsets`]: the consumer
//! group's session timeout. The consumer heartbeats to that same coordinator; once it has
//! not reached it for a session timeout, librdkafka drops the group session and the
//! coordinator would refuse these offsets anyway, so waiting longer gains nothing. A healthy
//! failover of the coordinator (the brokers' session timeout, 6 s locally and 9 s by
//! default, plus one request timeout) fits inside it.

use rdkafka::ClientConfig;
use rdkafka::error::KafkaError;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::Duration;

/// How much longer than the timeout given to librdkafka a call may take before it counts as
/// stuck (librdkafka answers a timed-out call promptly when it works as documented).
pub const GRACE: Duration = Duration::from_secs(5);

/// Calls still blocked in librdkafka after the pipeline gave up on them, process-wide.
static STUCK_NOW: AtomicUsize = AtomicUsize::new(0);

/// At most this many abandoned calls may still be blocked before the router gives up.
pub const MAX_STUCK_CALLS: usize = 3;

/// librdkafka's default `session.timeout.ms`, for a consumer configuration that sets none.
const LIBRDKAFKA_SESSION_TIMEOUT_MS: u64 = 45_000;

/// The bound of [`bounded_offsets`], in ms: the router consumer's session timeout, set from
/// its configuration by [`bound_offsets_by_session_of`] (process-wide: every pipeline of a
/// process has the same consumer configuration).
static OFFSETS_BOUND_MS: AtomicU64 = AtomicU64::new(LIBRDKAFKA_SESSION_TIMEOUT_MS);

/// The group session timeout of a consumer configuration (librdkafka's default if unset or
/// unreadable: librdkafka would refuse an unreadable one when the consumer is created).
pub fn session_timeout(consumer: &ClientConfig) -> Duration {
    let ms = consumer
        .get("session.timeout.ms")
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(LIBRDKAFKA_SESSION_TIMEOUT_MS);
    Duration::from_millis(ms)
}

/// Bounds [`bounded_offsets`] by this consumer configuration's session timeout.
pub fn bound_offsets_by_session_of(consumer: &ClientConfig) {
    let ms = u64::try_from(session_timeout(consumer).as_millis()).unwrap_or(u64::MAX);
    OFFSETS_BOUND_MS.store(ms, Ordering::Relaxed);
}

/// How long [`bounded_offsets`] waits.
pub fn offsets_bound() -> Duration {
    Duration::from_millis(OFFSETS_BOUND_MS.load(Ordering::Relaxed))
}

/// Runs `send_offsets_to_transaction` (`call`) on a thread of its own; waits for it at most
/// the group session timeout ([`offsets_bound`]), not its timeout plus [`GRACE`].
pub fn bounded_offsets(
    call: impl FnOnce() -> Result<(), KafkaError> + Send + 'static,
) -> Result<Result<(), KafkaError>, StuckCall> {
    bounded_for("send_offsets_to_transaction", offsets_bound(), call)
}

/// A librdkafka call that did not return within its timeout plus [`GRACE`].
#[derive(Debug, thiserror::Error)]
#[error("librdkafka's {call} did not return within {waited:?} (its timeout was ignored)")]
pub struct StuckCall {
    pub call: &'static str,
    pub waited: Duration,
}

/// Calls still blocked in librdkafka (the pipeline gave up on them).
pub fn stuck_now() -> usize {
    STUCK_NOW.load(Ordering::SeqCst)
}

/// Runs `call` on a thread of its own; waits for it at most `timeout` + [`GRACE`].
pub fn bounded<T: Send + 'static>(
    name: &'static str,
    timeout: Duration,
    call: impl FnOnce() -> Result<T, KafkaError> + Send + 'static,
) -> Result<Result<T, KafkaError>, StuckCall> {
    bounded_for(name, timeout + GRACE, call)
}

fn bounded_for<T: Send + 'static>(
    name: &'static str,
    waited: Duration,
    call: impl FnOnce() -> Result<T, KafkaError> + Send + 'static,
) -> Result<Result<T, KafkaError>, StuckCall> {
    let (done, result) = mpsc::sync_channel(1);
    // Whether the pipeline gave up on the call; the thread and the pipeline decide under
    // this lock, so a call returning at the last moment is counted exactly once.
    let abandoned = Arc::new(Mutex::new(false));
    let gave_up = Arc::clone(&abandoned);
    let spawned = std::thread::Builder::new()
        .name(format!("router-{name}"))
        .spawn(move || {
            let outcome = call();
            let gave_up = gave_up.lock().unwrap_or_else(PoisonError::into_inner);
            if *gave_up {
                STUCK_NOW.fetch_sub(1, Ordering::SeqCst);
                tracing::warn!(
                    call = name,
                    "a Kafka call the pipeline gave up on returned at last"
                );
            } else {
                let _ = done.send(outcome);
            }
        });
    if spawned.is_err() {
        // No thread to be had: the call cannot be bounded, so it is not made.
        return Err(StuckCall {
            call: name,
            waited: Duration::ZERO,
        });
    }
    if let Ok(outcome) = result.recv_timeout(waited) {
        return Ok(outcome);
    }
    let mut gave_up = abandoned.lock().unwrap_or_else(PoisonError::into_inner);
    if let Ok(outcome) = result.try_recv() {
        return Ok(outcome);
    }
    *gave_up = true;
    STUCK_NOW.fetch_add(1, Ordering::SeqCst);
    Err(StuckCall { call: name, waited })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_that_returns_in_time_gives_its_result() {
        let got = bounded("quick", Duration::from_millis(10), || Ok(7));
        assert!(matches!(got, Ok(Ok(7))));
        let failed = bounded::<()>("failing", Duration::from_millis(10), || {
            Err(KafkaError::Canceled)
        });
        assert!(matches!(failed, Ok(Err(KafkaError::Canceled))));
    }

    #[test]
    fn the_offsets_bound_is_the_consumers_session_timeout() {
        let mut config = ClientConfig::new();
        assert_eq!(session_timeout(&config), Duration::from_secs(45));
        config.set("session.timeout.ms", "10000");
        assert_eq!(session_timeout(&config), Duration::from_secs(10));
        bound_offsets_by_session_of(&config);
        assert_eq!(offsets_bound(), Duration::from_secs(10));
        // The router's own consumer settings give the 10 s the cluster runs measured against
        // the former 15 s (the offsets call's 10 s timeout plus the 5 s grace).
        let router = helpgrid_common::kafka::KafkaArgs::new("b:9092", "t.")
            .group_consumer_config("helpgrid-router", "t.router");
        assert_eq!(session_timeout(&router), Duration::from_secs(10));
    }

    #[test]
    fn a_call_past_its_bound_is_given_up_and_counted_until_it_returns() {
        let (release, wait) = mpsc::channel::<()>();
        let got = bounded_for("blocked", Duration::from_millis(20), move || {
            let _ = wait.recv();
            Ok(())
        });
        assert!(matches!(
            got,
            Err(StuckCall {
                call: "blocked",
                ..
            })
        ));
        assert!(stuck_now() >= 1);
        release.send(()).expect("the call still waits");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while stuck_now() > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(stuck_now(), 0);
    }
}
