//! A circuit breaker per endpoint: after `failures_to_open` failures in a row the endpoint
//! gets no attempts for `cooldown`; then one trial attempt (half-open) decides whether it
//! closes again or stays open for another cooldown. While open, notifications wait in their
//! queue without spending their retry budget, so an endpoint that is down for a while gets
//! everything once it is back, and a dead one costs one attempt per cooldown, not a storm.

use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug, Clone, PartialEq)]
pub struct BreakerPolicy {
    pub failures_to_open: u32,
    pub cooldown: Duration,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        Self {
            failures_to_open: 5,
            cooldown: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One trial attempt is out; the others wait for its result.
    HalfOpen,
}

/// What a lane may do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit {
    Attempt,
    /// Ask again at this instant.
    WaitUntil(Instant),
}

#[derive(Debug, Clone)]
pub struct Breaker {
    policy: BreakerPolicy,
    state: BreakerState,
}

impl Breaker {
    pub fn new(policy: BreakerPolicy) -> Self {
        Self {
            policy,
            state: BreakerState::Closed { failures: 0 },
        }
    }

    pub fn state(&self) -> BreakerState {
        self.state
    }

    pub fn is_open(&self) -> bool {
        !matches!(self.state, BreakerState::Closed { .. })
    }

    pub fn permit(&mut self, now: Instant) -> Permit {
        match self.state {
            BreakerState::Closed { .. } => Permit::Attempt,
            BreakerState::Open { until } if now >= until => {
                self.state = BreakerState::HalfOpen;
                Permit::Attempt
            }
            BreakerState::Open { until } => Permit::WaitUntil(until),
            // The trial's answer comes within a request timeout; poll at a short interval.
            BreakerState::HalfOpen => {
                Permit::WaitUntil(now + self.policy.cooldown.min(Duration::from_millis(100)))
            }
        }
    }

    /// The endpoint answered (a refusal is an answer too: the endpoint is up).
    pub fn on_success(&mut self) {
        self.state = BreakerState::Closed { failures: 0 };
    }

    /// Returns true when this failure opened the breaker.
    pub fn on_failure(&mut self, now: Instant) -> bool {
        let open = BreakerState::Open {
            until: now + self.policy.cooldown,
        };
        match self.state {
            BreakerState::Closed { failures } if failures + 1 >= self.policy.failures_to_open => {
                self.state = open;
                true
            }
            BreakerState::Closed { failures } => {
                self.state = BreakerState::Closed {
                    failures: failures + 1,
                };
                false
            }
            BreakerState::HalfOpen => {
                self.state = open;
                true
            }
            // A late failure of an attempt started before the breaker opened.
            BreakerState::Open { .. } => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> Breaker {
        Breaker::new(BreakerPolicy {
            failures_to_open: 3,
            cooldown: Duration::from_secs(10),
        })
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_failures_in_a_row_and_a_success_resets_the_count() {
        let mut b = breaker();
        let now = Instant::now();
        assert!(!b.on_failure(now));
        assert!(!b.on_failure(now));
        b.on_success();
        assert!(!b.on_failure(now));
        assert!(!b.on_failure(now));
        assert!(b.on_failure(now), "third failure in a row opens");
        assert_eq!(
            b.permit(now + Duration::from_secs(1)),
            Permit::WaitUntil(now + Duration::from_secs(10))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn after_the_cooldown_one_trial_goes_out_and_decides() {
        let mut b = breaker();
        let start = Instant::now();
        for _ in 0..3 {
            b.on_failure(start);
        }
        tokio::time::advance(Duration::from_secs(10)).await;
        let now = Instant::now();
        assert_eq!(b.permit(now), Permit::Attempt, "the trial");
        assert!(
            matches!(b.permit(now), Permit::WaitUntil(_)),
            "only one trial"
        );
        assert!(b.on_failure(now), "a failed trial opens again");
        assert_eq!(
            b.permit(now),
            Permit::WaitUntil(now + Duration::from_secs(10))
        );
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(b.permit(Instant::now()), Permit::Attempt);
        b.on_success();
        assert_eq!(b.state(), BreakerState::Closed { failures: 0 });
        assert_eq!(b.permit(Instant::now()), Permit::Attempt);
    }
}
