//! A position in the incident-events log: for every partition, the offset of the last event
//! already delivered (-1 = none yet). Watch streams and list responses hand it out as an opaque
//! string so a client can resume exactly where it stopped.
//!
//! Wire form: `v1:` followed by one offset per partition, comma-separated, partition 0 first
//! (e.g. `v1:12,-1,3`). Decoding is strict: anything else is the client's mistake, reported
//! with a message saying what is wrong.

use std::fmt;

const PREFIX: &str = "v1:";
/// Longer strings are not cursors; refusing them early bounds the work done on garbage.
const MAX_ENCODED_LEN: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// Index = partition; value = offset of the last delivered event, -1 if none.
    last_delivered: Vec<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CursorError {
    #[error(
        "cursor must start with {PREFIX:?}; pass back a cursor exactly as the service returned it"
    )]
    UnknownVersion,
    #[error("cursor is longer than {MAX_ENCODED_LEN} characters")]
    TooLong,
    #[error("cursor entry {index} ({entry:?}) is not an offset >= -1")]
    BadOffset { index: usize, entry: String },
    #[error(
        "cursor names {found} partitions but incident-events has {partitions}; \
         it comes from another deployment — start without a cursor"
    )]
    TooManyPartitions { found: usize, partitions: usize },
}

impl Cursor {
    /// Nothing delivered yet on any of `partitions`: a replay from the beginning.
    pub fn beginning(partitions: usize) -> Self {
        Self {
            last_delivered: vec![-1; partitions],
        }
    }

    /// Decodes a cursor for a topic of `partitions` partitions. A cursor with fewer entries is
    /// accepted (partitions added since it was made start from their beginning).
    pub fn decode(encoded: &str, partitions: usize) -> Result<Self, CursorError> {
        if encoded.len() > MAX_ENCODED_LEN {
            return Err(CursorError::TooLong);
        }
        let body = encoded
            .strip_prefix(PREFIX)
            .ok_or(CursorError::UnknownVersion)?;
        let mut last_delivered = Vec::new();
        for (index, entry) in body.split(',').enumerate() {
            last_delivered.push(parse_offset(entry).ok_or_else(|| CursorError::BadOffset {
                index,
                entry: entry.chars().take(32).collect(),
            })?);
        }
        if last_delivered.len() > partitions {
            return Err(CursorError::TooManyPartitions {
                found: last_delivered.len(),
                partitions,
            });
        }
        last_delivered.resize(partitions, -1);
        Ok(Self { last_delivered })
    }

    pub fn encode(&self) -> String {
        self.to_string()
    }

    pub fn partitions(&self) -> usize {
        self.last_delivered.len()
    }

    /// Offset of the last delivered event of `partition` (-1 if none or unknown partition).
    pub fn last_delivered(&self, partition: i32) -> i64 {
        usize::try_from(partition)
            .ok()
            .and_then(|p| self.last_delivered.get(p).copied())
            .unwrap_or(-1)
    }

    /// True if the event at (`partition`, `offset`) comes after this position: not yet delivered.
    pub fn is_before(&self, partition: i32, offset: i64) -> bool {
        offset > self.last_delivered(partition)
    }

    /// Records (`partition`, `offset`) as delivered. Never moves backwards; unknown partitions
    /// are ignored (the read model only reports partitions it was built with).
    pub fn advance(&mut self, partition: i32, offset: i64) {
        if let Some(slot) = usize::try_from(partition)
            .ok()
            .and_then(|p| self.last_delivered.get_mut(p))
        {
            *slot = (*slot).max(offset);
        }
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(PREFIX)?;
        for (i, offset) in self.last_delivered.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{offset}")?;
        }
        Ok(())
    }
}

/// `-1` or a plain decimal offset; no sign other than that leading `-`, no spaces, no `+`.
fn parse_offset(entry: &str) -> Option<i64> {
    let digits = entry.strip_prefix('-').unwrap_or(entry);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    entry.parse::<i64>().ok().filter(|offset| *offset >= -1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_cursor_decodes_to_the_same_position() {
        let mut cursor = Cursor::beginning(3);
        cursor.advance(0, 12);
        cursor.advance(2, 0);
        let encoded = cursor.encode();
        assert_eq!(encoded, "v1:12,-1,0");
        assert_eq!(Cursor::decode(&encoded, 3), Ok(cursor));
    }

    #[test]
    fn advance_never_moves_back_and_ignores_unknown_partitions() {
        let mut cursor = Cursor::beginning(2);
        cursor.advance(1, 7);
        cursor.advance(1, 3);
        cursor.advance(5, 9);
        cursor.advance(-1, 9);
        assert_eq!(cursor.encode(), "v1:-1,7");
        assert!(cursor.is_before(1, 8));
        assert!(!cursor.is_before(1, 7));
        assert!(cursor.is_before(0, 0));
    }

    #[test]
    fn garbage_is_rejected_with_a_reason() {
        assert_eq!(Cursor::decode("hello", 3), Err(CursorError::UnknownVersion));
        assert_eq!(
            Cursor::decode("v2:1,2,3", 3),
            Err(CursorError::UnknownVersion)
        );
        for bad in [
            "v1:",
            "v1:1,,2",
            "v1:+1",
            "v1: 1",
            "v1:-2",
            "v1:1.5",
            "v1:--1",
            "v1:-",
            "v1:99999999999999999999",
        ] {
            assert!(
                matches!(Cursor::decode(bad, 3), Err(CursorError::BadOffset { .. })),
                "{bad} should be rejected"
            );
        }
        assert_eq!(
            Cursor::decode(&"v1:1".repeat(20_000), 3),
            Err(CursorError::TooLong)
        );
    }

    #[test]
    fn cursor_naming_more_partitions_than_the_topic_is_rejected() {
        assert_eq!(
            Cursor::decode("v1:1,2,3,4", 3),
            Err(CursorError::TooManyPartitions {
                found: 4,
                partitions: 3
            })
        );
    }

    #[test]
    fn cursor_from_before_partitions_were_added_starts_new_partitions_at_their_beginning() {
        let cursor = Cursor::decode("v1:5", 3);
        assert_eq!(cursor.map(|c| c.encode()), Ok("v1:5,-1,-1".to_owned()));
    }
}
