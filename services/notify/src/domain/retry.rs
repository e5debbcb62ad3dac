//! When to try a webhook again, and when to give up.
//!
//! Delays grow exponentially from `initial` to `max` with "equal jitter" (half the delay
//! fixed, half random), so receivers coming back from an outage are not hit by every sender
//! in the same instant, and no delay collapses to zero. The retry budget is a number of
//! attempts; after it the notification is dead-lettered.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    pub initial: Duration,
    pub max: Duration,
    /// Attempts in all, the first included.
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(60),
            max_attempts: 10,
        }
    }
}

impl RetryPolicy {
    /// Delay before the next attempt after `attempts_made` failed ones, or `None` when the
    /// budget is spent. `jitter` is uniform in [0, 1).
    pub fn delay_after(&self, attempts_made: u32, jitter: f64) -> Option<Duration> {
        if attempts_made >= self.max_attempts {
            return None;
        }
        let exponent = attempts_made.saturating_sub(1).min(30);
        let base = self.initial.saturating_mul(1u32 << exponent).min(self.max);
        let half = base / 2;
        Some(half + half.mul_f64(jitter.clamp(0.0, 1.0)))
    }
}

/// How one delivery attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    Delivered,
    /// Worth another try: the endpoint is down, slow, overloaded or failing.
    Failed(String),
    /// The endpoint refused this notification for good (a 4xx other than 408/425/429):
    /// retrying the same body would only be refused again.
    Refused(String),
}

/// Sorts an HTTP status: 2xx delivered; 408, 425, 429 and 5xx retried; other answers refused.
pub fn attempt_of_status(status: u16) -> Attempt {
    match status {
        200..=299 => Attempt::Delivered,
        408 | 425 | 429 | 500..=599 => Attempt::Failed(format!("HTTP {status}")),
        _ => Attempt::Refused(format!("HTTP {status}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(1_000),
            max_attempts: 6,
        }
    }

    #[test]
    fn delays_double_up_to_the_cap_with_jitter_in_the_upper_half() {
        let p = policy();
        let lowest: Vec<_> = (1..6).map(|n| p.delay_after(n, 0.0)).collect();
        let highest: Vec<_> = (1..6).map(|n| p.delay_after(n, 0.999_999)).collect();
        let ms = |d: Option<Duration>| d.map(|d| d.as_millis());
        assert_eq!(
            lowest.into_iter().map(ms).collect::<Vec<_>>(),
            [Some(50), Some(100), Some(200), Some(400), Some(500)]
        );
        assert_eq!(
            highest.into_iter().map(ms).collect::<Vec<_>>(),
            [Some(99), Some(199), Some(399), Some(799), Some(999)]
        );
    }

    #[test]
    fn the_budget_ends_retries() {
        let p = policy();
        assert!(p.delay_after(5, 0.5).is_some());
        assert_eq!(p.delay_after(6, 0.5), None);
        let once = RetryPolicy {
            max_attempts: 1,
            ..p
        };
        assert_eq!(once.delay_after(1, 0.5), None);
    }

    #[test]
    fn server_errors_and_throttling_are_retried_other_client_errors_refused() {
        assert_eq!(attempt_of_status(204), Attempt::Delivered);
        for s in [408, 425, 429, 500, 502, 503, 504] {
            assert!(matches!(attempt_of_status(s), Attempt::Failed(_)), "{s}");
        }
        for s in [301, 400, 401, 403, 404, 410, 413] {
            assert!(matches!(attempt_of_status(s), Attempt::Refused(_)), "{s}");
        }
    }
}
