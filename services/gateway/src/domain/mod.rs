//! What devices send, turned into HelpGrid's contract. Pure code: no MQTT, HTTP or Kafka here,
//! so tests and fuzzers drive exactly what the adapters do.
//!
//! - [`z2m`]: Zigbee2MQTT button state and availability messages.
//! - [`frigate`]: Frigate `<prefix>/events` messages → camera alerts.
//! - [`event_id`]: event ids derived from what the source sent (redelivery never doubles).
//! - [`clock`]: the timestamps devices write (RFC 3339, epoch).
//! - [`intake`]: a recognised message → the `HelpEvent` on Kafka; the HTTP bodies.
//! - [`registry`]: the device table and why a device is refused.
//! - [`csv`]: bulk registration files.
//! - [`signature`]: HMAC-signed HTTP requests and the replay window.
//! - [`rate`]: the per-device rate limit.
//! - [`feedback`]: what to tell a resident's device when their incident moves.
//! - [`health`]: device health and the one maintenance report per problem episode.

pub mod clock;
pub mod csv;
pub mod event_id;
pub mod feedback;
pub mod frigate;
pub mod health;
pub mod intake;
pub mod rate;
pub mod registry;
pub mod signature;
pub mod z2m;

/// Payloads larger than this are refused before parsing (a Zigbee2MQTT state message is a
/// few hundred bytes; a Frigate event a few kilobytes).
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024;

/// Why a device message was refused. `kind()` is a short stable label for metrics and
/// dead-letter headers.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("payload is empty")]
    Empty,
    #[error("payload is {0} bytes, more than the {MAX_PAYLOAD_BYTES} allowed")]
    TooLarge(usize),
    #[error("payload is not JSON: {0}")]
    NotJson(String),
    #[error("{field} should be {expected}")]
    WrongType {
        field: &'static str,
        expected: &'static str,
    },
    #[error("{0} is missing")]
    Missing(&'static str),
    #[error("{field} value {value:?} is not one HelpGrid knows")]
    Unknown { field: &'static str, value: String },
}

impl DecodeError {
    pub fn kind(&self) -> &'static str {
        match self {
            DecodeError::Empty => "empty",
            DecodeError::TooLarge(_) => "too_large",
            DecodeError::NotJson(_) => "not_json",
            DecodeError::WrongType { .. } => "wrong_type",
            DecodeError::Missing(_) => "missing_field",
            DecodeError::Unknown { .. } => "unknown_value",
        }
    }
}

/// Parses a JSON payload after the size checks every decoder shares.
pub(crate) fn parse_json(payload: &[u8]) -> Result<serde_json::Value, DecodeError> {
    if payload.is_empty() {
        return Err(DecodeError::Empty);
    }
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(DecodeError::TooLarge(payload.len()));
    }
    serde_json::from_slice(payload).map_err(|e| DecodeError::NotJson(e.to_string()))
}

/// Whether a device is online, as its hub or NVR reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    Online,
    Offline,
}

/// Availability payloads: Zigbee2MQTT ≥ 2.0 sends `{"state":"online"}` / `{"state":"offline"}`,
/// older versions (and `legacy_availability_payload`) the plain words; Frigate's
/// `<prefix>/available` sends `online`, `stopped` (clean stop) or `offline` (its last will).
pub fn decode_availability(payload: &[u8]) -> Result<Availability, DecodeError> {
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(DecodeError::TooLarge(payload.len()));
    }
    let text = std::str::from_utf8(payload)
        .map_err(|_| DecodeError::NotJson("not UTF-8".into()))?
        .trim();
    if text.is_empty() {
        return Err(DecodeError::Empty);
    }
    let word = if text.starts_with('{') || text.starts_with('"') {
        match parse_json(text.as_bytes())? {
            serde_json::Value::Object(map) => match map.get("state") {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(_) => {
                    return Err(DecodeError::WrongType {
                        field: "state",
                        expected: "a string",
                    });
                }
                None => return Err(DecodeError::Missing("state")),
            },
            serde_json::Value::String(s) => s,
            _ => {
                return Err(DecodeError::WrongType {
                    field: "availability",
                    expected: "an object or a word",
                });
            }
        }
    } else {
        text.to_owned()
    };
    match word.to_ascii_lowercase().as_str() {
        "online" => Ok(Availability::Online),
        "offline" | "stopped" => Ok(Availability::Offline),
        _ => Err(DecodeError::Unknown {
            field: "availability",
            value: word,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn availability_accepts_json_and_plain_words_from_both_systems() {
        for (payload, want) in [
            (&br#"{"state":"online"}"#[..], Availability::Online),
            (br#"{"state":"offline"}"#, Availability::Offline),
            (b"online", Availability::Online),
            (b"offline", Availability::Offline),
            (b"stopped", Availability::Offline),
            (b" online\n", Availability::Online),
        ] {
            assert_eq!(decode_availability(payload), Ok(want), "{payload:?}");
        }
    }

    #[test]
    fn availability_refuses_what_it_cannot_read() {
        assert_eq!(decode_availability(b""), Err(DecodeError::Empty));
        assert_eq!(
            decode_availability(br#"{"state":1}"#).map_err(|e| e.kind()),
            Err("wrong_type")
        );
        assert_eq!(
            decode_availability(br#"{"status":"online"}"#),
            Err(DecodeError::Missing("state"))
        );
        assert_eq!(
            decode_availability(b"maybe").map_err(|e| e.kind()),
            Err("unknown_value")
        );
        assert_eq!(
            decode_availability(b"{not json").map_err(|e| e.kind()),
            Err("not_json")
        );
        assert_eq!(
            decode_availability(&[b'x'; MAX_PAYLOAD_BYTES + 1]).map_err(|e| e.kind()),
            Err("too_large")
        );
    }
}
