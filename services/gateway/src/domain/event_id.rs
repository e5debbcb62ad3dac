//! Event ids derived from what the source sent, so a redelivered message (MQTT QoS 1 after a
//! reconnect, an HTTP retry, a restarted gateway re-reading a Frigate event) carries the same
//! id and the router recognises it instead of opening a second incident.
//!
//! The id is a UUID (version 8, "custom") made of the first 16 bytes of a SHA-256 over the
//! parts, each length-prefixed so `("ab","c")` and `("a","bc")` differ.

use ring::digest::{SHA256, digest};

/// A stable UUID for the given parts.
pub fn derive(parts: &[&str]) -> String {
    let mut input = Vec::with_capacity(parts.iter().map(|p| p.len() + 8).sum());
    for part in parts {
        input.extend_from_slice(&(part.len() as u64).to_be_bytes());
        input.extend_from_slice(part.as_bytes());
    }
    let hash = digest(&SHA256, &input);
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&hash.as_ref()[..16]);
    uuid::Builder::from_custom_bytes(bytes)
        .into_uuid()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_parts_give_the_same_id_and_different_parts_differ() {
        let a = derive(&["z2m", "btn-1", "1764400000000", "single"]);
        assert_eq!(a, derive(&["z2m", "btn-1", "1764400000000", "single"]));
        assert_ne!(a, derive(&["z2m", "btn-1", "1764400000001", "single"]));
        assert_ne!(derive(&["ab", "c"]), derive(&["a", "bc"]));
        assert!(uuid::Uuid::parse_str(&a).is_ok());
    }
}
