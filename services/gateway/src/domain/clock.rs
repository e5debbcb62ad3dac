//! The timestamps devices write. Zigbee2MQTT's `last_seen` is `ISO_8601`
//! (`2026-11-29T21:38:56.796Z`), `ISO_8601_local` (`…+01:00`) or `epoch` (milliseconds);
//! Frigate writes seconds as a float. A tiny parser instead of a date crate: only these shapes
//! are needed.

use helpgrid_common::time::Millis;

/// Milliseconds since the epoch of an RFC 3339 date-time, or `None` if it is not one.
pub fn parse_rfc3339(text: &str) -> Option<Millis> {
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |from: usize, to: usize| -> Option<i64> {
        let s = text.get(from..to)?;
        if !s.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    let (year, month, day) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (hour, minute, second) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    if second > 60 {
        return None;
    }
    let mut rest = &text[19..];
    let mut millis = 0i64;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let ms: String = frac[..digits]
            .chars()
            .chain("000".chars())
            .take(3)
            .collect();
        millis = ms.parse().ok()?;
        rest = &frac[digits..];
    }
    let offset_min = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let o = rest.get(1..)?;
            if o.len() != 5 || o.as_bytes()[2] != b':' {
                return None;
            }
            let (h, m): (i64, i64) = (o[..2].parse().ok()?, o[3..].parse().ok()?);
            if h > 23 || m > 59 {
                return None;
            }
            sign * (h * 60 + m)
        }
    };
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset_min * 60;
    Some(seconds * 1000 + millis)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Frigate's float seconds → milliseconds; `None` for what cannot be a time.
pub fn from_float_seconds(seconds: f64) -> Option<Millis> {
    (seconds.is_finite() && seconds > 0.0 && seconds < 1.0e11)
        .then_some((seconds * 1000.0) as Millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_last_seen_shapes_zigbee2mqtt_writes() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339("2019-12-14T15:38:56.796Z"),
            Some(1_576_337_936_796)
        );
        assert_eq!(
            parse_rfc3339("2019-12-14T16:38:56.796+01:00"),
            Some(1_576_337_936_796)
        );
        assert_eq!(
            parse_rfc3339("2019-12-14T10:38:56.7-05:00"),
            Some(1_576_337_936_700)
        );
    }

    #[test]
    fn refuses_what_is_not_a_date_time() {
        for bad in [
            "",
            "yesterday",
            "2019-12-14",
            "2019-13-14T15:38:56Z",
            "2019-12-14T15:38:56",
            "2019-12-14T15:38:56.Z",
            "2019-12-14T15:38:56+1:00",
            "2019-12-14T15:38:56.796Zjunk",
            "2019-1é-14T15:38:56Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn frigate_seconds_become_milliseconds() {
        assert_eq!(from_float_seconds(1607123955.475), Some(1_607_123_955_475));
        assert_eq!(from_float_seconds(f64::NAN), None);
        assert_eq!(from_float_seconds(-1.0), None);
    }
}
