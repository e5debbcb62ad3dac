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

use rdkafka::error::KafkaError;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::Duration;

/// How much longer than the timeout given to librdkafka a call may take before it counts as
/// stuck (librdkafka answers a timed-out call promptly when it works as documented).
pub const GRACE: Duration = Duration::from_secs(5);

/// Calls still blocked in librdkafka after the pipeline gave up on them, process-wide.
static STUCK_NOW: AtomicUsize = AtomicUsize::new(0);

/// At most this many abandoned calls may still be blocked before the router gives up.
pub const MAX_STUCK_CALLS: usize = 3;

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
