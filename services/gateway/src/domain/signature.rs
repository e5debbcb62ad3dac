//! Signed HTTP requests from cellular buttons and NVRs.
//!
//! A device signs `"<timestamp>.<body>"` with HMAC-SHA256 and its own secret, and sends
//! `X-HelpGrid-Device`, `X-HelpGrid-Timestamp` (Unix seconds) and `X-HelpGrid-Signature`
//! (hex, optionally prefixed `sha256=`). The timestamp is signed too, so an old request
//! replayed after the window is refused; a replay inside the window carries the same derived
//! event id and opens nothing new.

use helpgrid_common::time::Millis;
use ring::hmac;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("X-HelpGrid-Timestamp is not Unix seconds")]
    BadTimestamp,
    #[error("the request is {0} s away from the gateway's clock, outside the replay window")]
    OutsideWindow(i64),
    #[error("X-HelpGrid-Signature is not hex")]
    NotHex,
    #[error("the signature does not match the body, timestamp and the device's credential")]
    Mismatch,
}

/// Hex HMAC-SHA256 of `"<timestamp>.<body>"`: what a device sends (tests and tools use it).
pub fn sign(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(timestamp.as_bytes());
    ctx.update(b".");
    ctx.update(body);
    hex(ctx.sign().as_ref())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

/// Checks the timestamp against `now` and the signature in constant time. Returns the
/// signed timestamp in milliseconds.
pub fn verify(
    secret: &[u8],
    timestamp: &str,
    signature: &str,
    body: &[u8],
    now: Millis,
    window_ms: Millis,
) -> Result<Millis, SignatureError> {
    let seconds: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| SignatureError::BadTimestamp)?;
    let at = seconds
        .checked_mul(1000)
        .ok_or(SignatureError::BadTimestamp)?;
    if (now - at).abs() > window_ms {
        return Err(SignatureError::OutsideWindow((at - now) / 1000));
    }
    let signature = signature.trim();
    let signature = signature.strip_prefix("sha256=").unwrap_or(signature);
    let tag = unhex(signature).ok_or(SignatureError::NotHex)?;
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut message = Vec::with_capacity(timestamp.len() + 1 + body.len());
    message.extend_from_slice(timestamp.as_bytes());
    message.push(b'.');
    message.extend_from_slice(body);
    hmac::verify(&key, &message, &tag).map_err(|_| SignatureError::Mismatch)?;
    Ok(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Millis = 1_764_452_336_000;
    const WINDOW: Millis = 300_000;

    #[test]
    fn a_correctly_signed_request_passes() {
        let sig = sign(b"s3cret", "1764452330", br#"{"kind":"help"}"#);
        assert_eq!(
            verify(
                b"s3cret",
                "1764452330",
                &sig,
                br#"{"kind":"help"}"#,
                NOW,
                WINDOW
            ),
            Ok(1_764_452_330_000)
        );
        let prefixed = format!("sha256={sig}");
        assert!(
            verify(
                b"s3cret",
                "1764452330",
                &prefixed,
                br#"{"kind":"help"}"#,
                NOW,
                WINDOW
            )
            .is_ok()
        );
    }

    #[test]
    fn another_body_secret_or_timestamp_fails() {
        let sig = sign(b"s3cret", "1764452330", b"{}");
        assert_eq!(
            verify(b"s3cret", "1764452330", &sig, b"{ }", NOW, WINDOW),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"other", "1764452330", &sig, b"{}", NOW, WINDOW),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"s3cret", "1764452331", &sig, b"{}", NOW, WINDOW),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn requests_outside_the_replay_window_are_refused() {
        let old = "1764451000";
        let sig = sign(b"k", old, b"{}");
        assert_eq!(
            verify(b"k", old, &sig, b"{}", NOW, WINDOW),
            Err(SignatureError::OutsideWindow(-1336))
        );
        let future = "1764453000";
        let sig = sign(b"k", future, b"{}");
        assert!(matches!(
            verify(b"k", future, &sig, b"{}", NOW, WINDOW),
            Err(SignatureError::OutsideWindow(_))
        ));
    }

    #[test]
    fn garbage_headers_get_their_own_reason() {
        assert_eq!(
            verify(b"k", "soon", "00", b"", NOW, WINDOW),
            Err(SignatureError::BadTimestamp)
        );
        assert_eq!(
            verify(b"k", "99999999999999999", "00", b"", NOW, WINDOW),
            Err(SignatureError::BadTimestamp)
        );
        assert_eq!(
            verify(b"k", "1764452330", "zz", b"", NOW, WINDOW),
            Err(SignatureError::NotHex)
        );
        assert_eq!(
            verify(b"k", "1764452330", "abc", b"", NOW, WINDOW),
            Err(SignatureError::NotHex)
        );
        assert_eq!(
            verify(b"k", "1764452330", "ééé", b"", NOW, WINDOW),
            Err(SignatureError::NotHex)
        );
    }
}
