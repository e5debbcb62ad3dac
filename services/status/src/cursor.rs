//! A position in the incident-events log: for every partition, the last event already
//! delivered — a whole record, or part of one. Watch streams and list responses hand it out as
//! an opaque string so a client can resume exactly where it stopped.
//!
//! Part of a record: a Watch stream expands an "opened and assigned" record into several
//! updates (`opened`, then one `assigned` per track; see [`crate::openings`]), and each update
//! gets its own cursor, so a client resuming after any of them neither loses nor repeats one.
//!
//! Wire forms, partition 0 first, comma-separated:
//! - `v1:12,-1,3` — the offset of the last record delivered whole per partition (-1 = none);
//!   every cursor at record boundaries is written so, as before sub-positions existed.
//! - `v2:12.1,-1,3` — as v1, where an entry `<offset>.<k>` says: the records before `offset`
//!   whole, and of the record at `offset` its updates 0..=k (k = 0 is the `opened`). Written
//!   only while a stream is inside an expanded record.
//!
//! Decoding is strict: anything else is the client's mistake, reported with a message saying
//! what is wrong.

use std::fmt;

const V1: &str = "v1:";
const V2: &str = "v2:";
/// Longer strings are not cursors; refusing them early bounds the work done on garbage.
const MAX_ENCODED_LEN: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// Index = partition.
    marks: Vec<Mark>,
}

/// How far one partition was delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Mark {
    /// With `within` None: the last record delivered whole (-1 if none). Otherwise the
    /// record delivered in part; every record before it was delivered whole.
    offset: i64,
    /// The last update of the record at `offset` delivered, if not all of them were.
    within: Option<u32>,
}

impl Mark {
    const NONE: Mark = Mark {
        offset: -1,
        within: None,
    };

    fn last_whole(self) -> i64 {
        match self.within {
            None => self.offset,
            Some(_) => self.offset - 1,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CursorError {
    #[error(
        "cursor must start with {V1:?} or {V2:?}; pass back a cursor exactly as the service returned it"
    )]
    UnknownVersion,
    #[error("cursor is longer than {MAX_ENCODED_LEN} characters")]
    TooLong,
    #[error("cursor entry {index} ({entry:?}) is not an offset >= -1")]
    BadOffset { index: usize, entry: String },
    #[error(
        "cursor entry {index} ({entry:?}) is not <offset>.<update>: an offset >= 0, a dot and \
         an update number"
    )]
    BadPart { index: usize, entry: String },
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
            marks: vec![Mark::NONE; partitions],
        }
    }

    /// Decodes a cursor for a topic of `partitions` partitions. A cursor with fewer entries is
    /// accepted (partitions added since it was made start from their beginning).
    pub fn decode(encoded: &str, partitions: usize) -> Result<Self, CursorError> {
        if encoded.len() > MAX_ENCODED_LEN {
            return Err(CursorError::TooLong);
        }
        let (body, parts_allowed) = if let Some(body) = encoded.strip_prefix(V1) {
            (body, false)
        } else if let Some(body) = encoded.strip_prefix(V2) {
            (body, true)
        } else {
            return Err(CursorError::UnknownVersion);
        };
        let mut marks = Vec::new();
        for (index, entry) in body.split(',').enumerate() {
            let shown = || entry.chars().take(32).collect();
            let mark = match entry.split_once('.') {
                Some((offset, part)) if parts_allowed => {
                    let offset = parse_offset(offset).filter(|o| *o >= 0);
                    let part = parse_part(part);
                    match (offset, part) {
                        (Some(offset), Some(part)) => Mark {
                            offset,
                            within: Some(part),
                        },
                        _ => {
                            return Err(CursorError::BadPart {
                                index,
                                entry: shown(),
                            });
                        }
                    }
                }
                _ => Mark {
                    offset: parse_offset(entry).ok_or_else(|| CursorError::BadOffset {
                        index,
                        entry: shown(),
                    })?,
                    within: None,
                },
            };
            marks.push(mark);
        }
        if marks.len() > partitions {
            return Err(CursorError::TooManyPartitions {
                found: marks.len(),
                partitions,
            });
        }
        marks.resize(partitions, Mark::NONE);
        Ok(Self { marks })
    }

    pub fn encode(&self) -> String {
        self.to_string()
    }

    pub fn partitions(&self) -> usize {
        self.marks.len()
    }

    fn mark(&self, partition: i32) -> Mark {
        usize::try_from(partition)
            .ok()
            .and_then(|p| self.marks.get(p).copied())
            .unwrap_or(Mark::NONE)
    }

    fn mark_mut(&mut self, partition: i32) -> Option<&mut Mark> {
        usize::try_from(partition)
            .ok()
            .and_then(|p| self.marks.get_mut(p))
    }

    /// Offset of the last event of `partition` delivered whole (-1 if none or unknown
    /// partition). A record delivered in part is not counted: a replay starts with it.
    pub fn last_delivered(&self, partition: i32) -> i64 {
        self.mark(partition).last_whole()
    }

    /// True if the event at (`partition`, `offset`) comes after this position, wholly or in
    /// part: not yet delivered whole.
    pub fn is_before(&self, partition: i32, offset: i64) -> bool {
        offset > self.last_delivered(partition)
    }

    /// The first update of the record at (`partition`, `offset`) not yet delivered: 0 unless
    /// that record was delivered in part.
    pub fn next_update(&self, partition: i32, offset: i64) -> u32 {
        match self.mark(partition) {
            Mark {
                offset: at,
                within: Some(k),
            } if at == offset => k.saturating_add(1),
            _ => 0,
        }
    }

    /// Records (`partition`, `offset`) as delivered whole. Never moves backwards; unknown
    /// partitions are ignored (the read model only reports partitions it was built with).
    pub fn advance(&mut self, partition: i32, offset: i64) {
        if let Some(mark) = self.mark_mut(partition)
            && offset > mark.last_whole()
        {
            *mark = Mark {
                offset,
                within: None,
            };
        }
    }

    /// Records the updates 0..=`update` of the record at (`partition`, `offset`) as delivered,
    /// the records before it whole. Never moves backwards.
    pub fn advance_within(&mut self, partition: i32, offset: i64, update: u32) {
        if let Some(mark) = self.mark_mut(partition)
            && offset > mark.last_whole()
        {
            let further = match mark.within {
                Some(k) if mark.offset == offset => update > k,
                _ => offset >= mark.offset,
            };
            if further {
                *mark = Mark {
                    offset,
                    within: Some(update),
                };
            }
        }
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let within = self.marks.iter().any(|m| m.within.is_some());
        f.write_str(if within { V2 } else { V1 })?;
        for (i, mark) in self.marks.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{}", mark.offset)?;
            if let Some(k) = mark.within {
                write!(f, ".{k}")?;
            }
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

/// A plain decimal update number.
fn parse_part(entry: &str) -> Option<u32> {
    if entry.is_empty() || !entry.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    entry.parse().ok()
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
            Cursor::decode("v3:1,2,3", 3),
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
    fn a_position_inside_a_record_is_written_v2_and_decodes_to_the_same_position() {
        let mut cursor = Cursor::beginning(3);
        cursor.advance(0, 12);
        cursor.advance_within(1, 4, 0);
        assert_eq!(cursor.encode(), "v2:12,4.0,-1");
        assert_eq!(Cursor::decode("v2:12,4.0,-1", 3), Ok(cursor.clone()));
        // The record at 4 is not delivered whole: a replay starts with it, at update 1.
        assert_eq!(cursor.last_delivered(1), 3);
        assert!(cursor.is_before(1, 4));
        assert_eq!(cursor.next_update(1, 4), 1);
        assert_eq!(cursor.next_update(1, 5), 0);
        assert_eq!(cursor.next_update(0, 12), 0);
        cursor.advance_within(1, 4, 2);
        assert_eq!(cursor.encode(), "v2:12,4.2,-1");
        // The last update of the record: whole again, and the cursor is v1 as before.
        cursor.advance(1, 4);
        assert_eq!(cursor.encode(), "v1:12,4,-1");
        assert!(!cursor.is_before(1, 4));
    }

    #[test]
    fn a_position_inside_a_record_never_moves_back() {
        let mut cursor = Cursor::beginning(1);
        cursor.advance_within(0, 7, 2);
        cursor.advance_within(0, 7, 1);
        assert_eq!(cursor.encode(), "v2:7.2");
        cursor.advance(0, 6);
        assert_eq!(cursor.encode(), "v2:7.2");
        cursor.advance(0, 7);
        cursor.advance_within(0, 7, 3);
        assert_eq!(cursor.encode(), "v1:7");
        cursor.advance_within(0, 9, 0);
        assert_eq!(cursor.encode(), "v2:9.0");
    }

    #[test]
    fn a_v2_cursor_with_a_bad_part_is_rejected_and_v1_has_no_parts() {
        for bad in [
            "v2:-1.0",
            "v2:4.",
            "v2:.1",
            "v2:4.-1",
            "v2:4.1.2",
            "v2:4.x",
            "v2:4.99999999999",
        ] {
            assert!(
                matches!(Cursor::decode(bad, 3), Err(CursorError::BadPart { .. })),
                "{bad} should be rejected"
            );
        }
        assert!(matches!(
            Cursor::decode("v1:4.0", 3),
            Err(CursorError::BadOffset { .. })
        ));
        assert_eq!(
            Cursor::decode("v2:4,-1", 3).map(|c| c.encode()),
            Ok("v1:4,-1,-1".to_owned())
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
