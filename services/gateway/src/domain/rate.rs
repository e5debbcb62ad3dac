//! Per-device rate limit: a token bucket per device, so one flooding device is slowed down
//! without touching anyone else. Time is passed in.

use helpgrid_common::time::Millis;
use std::collections::HashMap;

#[derive(Debug)]
pub struct RateLimiter {
    /// Requests a device may make at once.
    burst: f64,
    /// Tokens regained per millisecond.
    refill_per_ms: f64,
    buckets: HashMap<String, (f64, Millis)>,
}

impl RateLimiter {
    pub fn new(burst: u32, per_minute: u32) -> Self {
        Self {
            burst: f64::from(burst.max(1)),
            refill_per_ms: f64::from(per_minute.max(1)) / 60_000.0,
            buckets: HashMap::new(),
        }
    }

    /// `Ok` if the device may go ahead; `Err(ms)` how long until it may.
    pub fn check(&mut self, device_id: &str, now: Millis) -> Result<(), Millis> {
        // Bound the table: a flood of made-up device ids must not grow it without end.
        if self.buckets.len() > 100_000 {
            let burst = self.burst;
            let refill = self.refill_per_ms;
            self.buckets
                .retain(|_, (tokens, at)| *tokens + (now - *at) as f64 * refill < burst);
        }
        let (tokens, at) = self
            .buckets
            .entry(device_id.to_owned())
            .or_insert((self.burst, now));
        let elapsed = (now - *at).max(0) as f64;
        *tokens = (*tokens + elapsed * self.refill_per_ms).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *tokens) / self.refill_per_ms).ceil() as Millis)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flooding_device_is_held_back_and_others_are_not() {
        let mut r = RateLimiter::new(3, 6); // one token per 10 s
        for _ in 0..3 {
            assert!(r.check("noisy", 0).is_ok());
        }
        assert_eq!(r.check("noisy", 0), Err(10_000));
        assert!(r.check("quiet", 0).is_ok());
        assert_eq!(r.check("noisy", 5_000), Err(5_000));
        assert!(r.check("noisy", 10_000).is_ok());
    }
}
