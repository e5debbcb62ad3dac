//! HelpGrid keeps time as Unix milliseconds (`i64`) inside the domain and as
//! `google.protobuf.Timestamp` on the wire. These are the only conversions.

use prost_types::Timestamp;
use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

/// The wall clock, in milliseconds. Domain code never calls this: adapters pass `now` in.
pub fn now_millis() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}

pub fn to_timestamp(ms: Millis) -> Timestamp {
    Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

/// `None` for an absent timestamp. Out-of-range nanos are clamped rather than trusted.
pub fn from_timestamp(ts: Option<&Timestamp>) -> Option<Millis> {
    ts.map(|t| {
        t.seconds
            .saturating_mul(1000)
            .saturating_add(i64::from(t.nanos.clamp(0, 999_999_999)) / 1_000_000)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_including_before_the_epoch() {
        for ms in [0, 1, 999, 1_000, 1_764_000_000_123, -1, -1_001] {
            assert_eq!(from_timestamp(Some(&to_timestamp(ms))), Some(ms), "{ms}");
        }
    }

    #[test]
    fn absent_timestamp_is_none() {
        assert_eq!(from_timestamp(None), None);
    }
}
