//! A local checkpoint of one partition of a compacted table (like Kafka Streams' state
//! directory): the live records of the partition as of a changelog position, so a restore
//! reads this file and then only the changelog's tail from that position on.
//!
//! A checkpoint is only used when it is provably what the changelog says:
//! - its identity matches (topic prefix, Kafka cluster id, topic and partition), so a file of
//!   another deployment or cluster is never mixed in;
//! - its position lies within the partition's offsets now (a recreated or truncated topic
//!   shows as a position past the end or before the start);
//! - the record just before its position is still the one the checkpoint reflects (its
//!   [`Anchor`]): a topic deleted and recreated under the same name starts its offsets again
//!   and may have grown past the position, which the offsets alone do not show;
//! - it is younger than the age the caller allows when records follow its position: the
//!   log cleaner removes a tombstone `delete.retention.ms` after it was written, and a
//!   tombstone written after the checkpoint and removed before it is read would leave a
//!   deleted key alive. With nothing after its position, age does not matter.
//! - its checksum holds (a torn or damaged file is refused, not half-used).
//!
//! Files are written whole to a temporary name, fsynced, renamed over the old one and the
//! folder fsynced: a crash at any moment leaves the old checkpoint or the new one.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// First bytes of every checkpoint file, with the format version in the last byte (2: with
/// an anchor; a file of version 1 is refused, and the partition read whole once).
const MAGIC: &[u8; 8] = b"HGCKPT\0\x02";

/// The changelog record just before a checkpoint's position, as the checkpoint saw it: its
/// offset (the position minus one), timestamp and key. A restore reads the record at that
/// offset again before it trusts the checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anchor {
    pub offset: i64,
    /// The record's timestamp in milliseconds (-1 when the record has none).
    pub timestamp_ms: i64,
    pub key: Box<[u8]>,
}

/// Who a checkpoint belongs to. Every field must match for a checkpoint to be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub topic_prefix: String,
    /// The Kafka cluster's id (a topic of the same name on another cluster is another table).
    pub cluster_id: String,
    pub topic: String,
}

/// The live records of one partition as of `position` (the next offset to read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub partition: i32,
    /// Every record before this offset is reflected in `records`; reading resumes here.
    pub position: i64,
    /// Wall-clock milliseconds when the state was taken.
    pub taken_at_ms: i64,
    /// The record at `position - 1`; None when the checkpoint reflects no record (it was
    /// taken at the partition's first offset).
    pub anchor: Option<Anchor>,
    /// (key, value) of every live key; tombstoned keys are absent.
    pub records: Records,
}

/// The records of a checkpoint as they lie in its file: the file's bytes, and where each
/// key and value is in them. No allocation per record: a restore copies what it keeps once
/// it is done reading (see [`crate::table`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Records {
    bytes: Vec<u8>,
    spans: Vec<Span>,
}

/// Where one record's key and value are in [`Records`]' bytes. The key is UTF-8 (checked
/// when the file was read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub key_at: usize,
    pub key_len: usize,
    pub value_at: usize,
    pub value_len: usize,
}

impl Records {
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// (key, value) of every record, in the file's order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.spans.iter().filter_map(|s| {
            let key = std::str::from_utf8(&self.bytes[s.key_at..s.key_at + s.key_len]).ok()?;
            Some((key, &self.bytes[s.value_at..s.value_at + s.value_len]))
        })
    }

    /// The file's bytes and the spans of the records in them.
    pub fn into_parts(self) -> (Vec<u8>, Vec<Span>) {
        (self.bytes, self.spans)
    }

    /// Back from [`Records::into_parts`].
    pub(crate) fn from_parts(bytes: Vec<u8>, spans: Vec<Span>) -> Self {
        Self { bytes, spans }
    }
}

/// Why a checkpoint was not used (the restore then reads the partition from its start).
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("no checkpoint")]
    Missing,
    #[error("cannot read the checkpoint: {0}")]
    Io(#[from] io::Error),
    #[error("corrupt checkpoint: {0}")]
    Corrupt(&'static str),
    #[error("checkpoint of another deployment or cluster: {found}")]
    OtherIdentity { found: String },
    #[error("checkpoint of partition {found}, not {wanted}")]
    OtherPartition { found: i32, wanted: i32 },
    #[error(
        "checkpoint position {position} is outside the partition's offsets {low}..{high} (topic recreated or truncated)"
    )]
    OutOfRange { position: i64, low: i64, high: i64 },
    #[error(
        "checkpoint is {age_s} s old and records follow it: tombstones written since may be cleaned away (limit {limit_s} s)"
    )]
    Stale { age_s: i64, limit_s: i64 },
    #[error(
        "the record at offset {offset}, the last one the checkpoint reflects, is not the one it saw (topic deleted and recreated, or the record compacted away)"
    )]
    OtherRecord { offset: i64 },
    #[error(
        "checkpoint at position {position} names no record before it, and the partition starts at {low}"
    )]
    Unanchored { position: i64, low: i64 },
}

/// The file holding `partition`'s checkpoint in `dir`.
pub fn path(dir: &Path, partition: i32) -> PathBuf {
    dir.join(format!("partition-{partition}.checkpoint"))
}

/// Encodes a checkpoint file's bytes from `records` ((key, value) of every live key).
pub fn encode(
    identity: &Identity,
    partition: i32,
    position: i64,
    taken_at_ms: i64,
    anchor: Option<&Anchor>,
    records: &[(&str, &[u8])],
) -> Vec<u8> {
    // Sized once: a partition of a flood's checkpoint is tens of MB, and growing by doubling
    // would copy it several times on the pipeline's thread.
    let size = 256
        + anchor.map_or(0, |a| a.key.len())
        + records
            .iter()
            .map(|(k, v)| 8 + k.len() + v.len())
            .sum::<usize>();
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(MAGIC);
    for field in [
        &identity.topic_prefix,
        &identity.cluster_id,
        &identity.topic,
    ] {
        put_bytes(&mut out, field.as_bytes());
    }
    out.extend_from_slice(&partition.to_le_bytes());
    out.extend_from_slice(&position.to_le_bytes());
    out.extend_from_slice(&taken_at_ms.to_le_bytes());
    match anchor {
        Some(a) => {
            out.push(1);
            out.extend_from_slice(&a.offset.to_le_bytes());
            out.extend_from_slice(&a.timestamp_ms.to_le_bytes());
            put_bytes(&mut out, &a.key);
        }
        None => out.push(0),
    }
    let count_at = out.len();
    out.extend_from_slice(&0u64.to_le_bytes());
    let mut count: u64 = 0;
    for (key, value) in records.iter().copied() {
        put_bytes(&mut out, key.as_bytes());
        put_bytes(&mut out, value);
        count += 1;
    }
    out[count_at..count_at + 8].copy_from_slice(&count.to_le_bytes());
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    // Keys and values are bounded by Kafka's message size (1 MiB here), far below u32.
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// Writes `bytes` (from [`encode`]) as `partition`'s checkpoint in `dir`: to a temporary
/// file, fsynced, then renamed over the old one, and the folder fsynced.
///
/// The folder (0700) and files (0600) are the service user's alone: they hold incidents,
/// with households and places in them.
pub fn write(dir: &Path, partition: i32, bytes: &[u8]) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    // Parent folders as any other (others keep logs and tokens beside it); this one private.
    if let Some(parent) = dir.parent() {
        fs::create_dir_all(parent)?;
    }
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Err(error) if error.kind() != io::ErrorKind::AlreadyExists => return Err(error),
        _ => {}
    }
    let target = path(dir, partition);
    let temporary = dir.join(format!("partition-{partition}.checkpoint.tmp"));
    {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    fs::rename(&temporary, &target)?;
    File::open(dir)?.sync_all()
}

/// Removes `partition`'s checkpoint (one that was refused, so it is not read again).
pub fn remove(dir: &Path, partition: i32) {
    let _ = fs::remove_file(path(dir, partition));
}

/// Reads `partition`'s checkpoint from `dir` and checks its identity and checksum. The
/// caller still checks its position against the partition's offsets with [`usable`].
pub fn read(dir: &Path, identity: &Identity, partition: i32) -> Result<Checkpoint, Refused> {
    let bytes = match fs::read(path(dir, partition)) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Err(Refused::Missing),
        Err(error) => return Err(Refused::Io(error)),
    };
    decode_owned(bytes, identity, partition)
}

/// Parses a checkpoint file's bytes (see [`read`]).
pub fn decode(bytes: &[u8], identity: &Identity, partition: i32) -> Result<Checkpoint, Refused> {
    decode_owned(bytes.to_vec(), identity, partition)
}

/// [`decode`], keeping `bytes` as the records' storage.
fn decode_owned(
    bytes: Vec<u8>,
    identity: &Identity,
    partition: i32,
) -> Result<Checkpoint, Refused> {
    let body_len = bytes
        .len()
        .checked_sub(4)
        .ok_or(Refused::Corrupt("shorter than its checksum"))?;
    let (body, crc) = bytes.split_at(body_len);
    if crc32fast::hash(body).to_le_bytes() != crc {
        return Err(Refused::Corrupt("checksum does not match"));
    }
    let mut r = Reader { rest: body };
    if r.take(MAGIC.len())? != MAGIC {
        return Err(Refused::Corrupt("not a checkpoint of this version"));
    }
    let found = Identity {
        topic_prefix: r.string()?,
        cluster_id: r.string()?,
        topic: r.string()?,
    };
    if &found != identity {
        return Err(Refused::OtherIdentity {
            found: format!(
                "prefix {:?}, cluster {:?}, topic {:?}",
                found.topic_prefix, found.cluster_id, found.topic
            ),
        });
    }
    let found_partition = i32::from_le_bytes(r.array()?);
    if found_partition != partition {
        return Err(Refused::OtherPartition {
            found: found_partition,
            wanted: partition,
        });
    }
    let position = i64::from_le_bytes(r.array()?);
    let taken_at_ms = i64::from_le_bytes(r.array()?);
    let anchor = match r.array::<1>()? {
        [0] => None,
        [1] => Some(Anchor {
            offset: i64::from_le_bytes(r.array()?),
            timestamp_ms: i64::from_le_bytes(r.array()?),
            key: r.bytes()?.into(),
        }),
        _ => return Err(Refused::Corrupt("anchor flag neither 0 nor 1")),
    };
    let count = u64::from_le_bytes(r.array()?);
    // Each record takes at least 8 bytes: a count above that is damage, not a reason to
    // reserve memory for it.
    let count = usize::try_from(count)
        .ok()
        .filter(|c| *c <= r.rest.len() / 8)
        .ok_or(Refused::Corrupt("record count larger than the file"))?;
    let mut spans = Vec::with_capacity(count);
    for _ in 0..count {
        let key = r.bytes()?;
        std::str::from_utf8(key).map_err(|_| Refused::Corrupt("key is not UTF-8"))?;
        let key_at = body_len - r.rest.len() - key.len();
        let value = r.bytes()?;
        let value_at = body_len - r.rest.len() - value.len();
        spans.push(Span {
            key_at,
            key_len: key.len(),
            value_at,
            value_len: value.len(),
        });
    }
    if !r.rest.is_empty() {
        return Err(Refused::Corrupt("bytes after the last record"));
    }
    Ok(Checkpoint {
        partition,
        position,
        taken_at_ms,
        anchor,
        records: Records { bytes, spans },
    })
}

/// Whether the changelog still holds the record a checkpoint reflects last. `found`: the
/// first record the partition holds at or after the anchor's offset (None: none), `low`: the
/// partition's first offset now. A checkpoint that reflects no record needs no anchor when
/// it starts where the partition starts (nothing is skipped).
pub fn anchored(checkpoint: &Checkpoint, low: i64, found: Option<&Anchor>) -> Result<(), Refused> {
    match &checkpoint.anchor {
        None if checkpoint.position <= low => Ok(()),
        None => Err(Refused::Unanchored {
            position: checkpoint.position,
            low,
        }),
        Some(a) if a.offset + 1 != checkpoint.position => Err(Refused::Corrupt(
            "anchor is not the record before the position",
        )),
        Some(a) if found == Some(a) => Ok(()),
        Some(a) => Err(Refused::OtherRecord { offset: a.offset }),
    }
}

/// Whether a checkpoint at `position`, taken at `taken_at_ms`, may seed a restore of a
/// partition whose committed offsets are now `low..high`, at `now_ms`, when tombstones may
/// be cleaned `max_age_ms` after they are written (half the topic's `delete.retention.ms`
/// leaves room for clock differences between this host and the brokers).
pub fn usable(
    position: i64,
    taken_at_ms: i64,
    (low, high): (i64, i64),
    now_ms: i64,
    max_age_ms: i64,
) -> Result<(), Refused> {
    if position < low || position > high {
        return Err(Refused::OutOfRange {
            position,
            low,
            high,
        });
    }
    let age_ms = now_ms - taken_at_ms;
    if high > position && age_ms > max_age_ms {
        return Err(Refused::Stale {
            age_s: age_ms / 1000,
            limit_s: max_age_ms / 1000,
        });
    }
    Ok(())
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Refused> {
        if self.rest.len() < n {
            return Err(Refused::Corrupt("ends in the middle of a field"));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Refused> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn bytes(&mut self) -> Result<&'a [u8], Refused> {
        let len = u32::from_le_bytes(self.array()?) as usize;
        self.take(len)
    }

    fn string(&mut self) -> Result<String, Refused> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| Refused::Corrupt("name not UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> Identity {
        Identity {
            topic_prefix: "city-a.".into(),
            cluster_id: "c1".into(),
            topic: "city-a.incident-state".into(),
        }
    }

    fn anchor() -> Anchor {
        Anchor {
            offset: 41,
            timestamp_ms: 900,
            key: Box::from(&b"inc-2"[..]),
        }
    }

    fn sample() -> Vec<u8> {
        encode(
            &identity(),
            3,
            42,
            1_000,
            Some(&anchor()),
            &[("inc-1", &b"one"[..]), ("inc-2", &b""[..])],
        )
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "helpgrid-checkpoint-{name}-{}",
            uuid::Uuid::new_v4()
        ));
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        dir
    }

    #[test]
    fn a_written_checkpoint_reads_back_as_it_was() {
        let dir = temp_dir("roundtrip");
        write(&dir, 3, &sample()).unwrap_or_else(|e| panic!("{e}"));
        let back = read(&dir, &identity(), 3).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (back.partition, back.position, back.taken_at_ms),
            (3, 42, 1_000)
        );
        assert_eq!(back.anchor, Some(anchor()));
        let records: Vec<(&str, &[u8])> = back.records.iter().collect();
        assert_eq!(records, [("inc-1", &b"one"[..]), ("inc-2", &b""[..])]);
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(path(&dir, 3))
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or_default();
        assert_eq!(mode, 0o600, "readable by the service user only");
        // No temporary file is left beside it.
        let names: Vec<String> = fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{e}"))
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["partition-3.checkpoint"]);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn every_damaged_byte_and_every_truncation_is_refused() {
        let bytes = sample();
        for at in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x40;
            assert!(
                matches!(decode(&damaged, &identity(), 3), Err(Refused::Corrupt(_))),
                "byte {at} flipped was accepted"
            );
            assert!(
                matches!(
                    decode(&bytes[..at], &identity(), 3),
                    Err(Refused::Corrupt(_))
                ),
                "cut at {at} was accepted"
            );
        }
    }

    #[test]
    fn a_checkpoint_of_another_prefix_cluster_topic_or_partition_is_refused() {
        let bytes = sample();
        for other in [
            Identity {
                topic_prefix: "city-b.".into(),
                ..identity()
            },
            Identity {
                cluster_id: "c2".into(),
                ..identity()
            },
            Identity {
                topic: "city-a.roster".into(),
                ..identity()
            },
        ] {
            assert!(matches!(
                decode(&bytes, &other, 3),
                Err(Refused::OtherIdentity { .. })
            ));
        }
        assert!(matches!(
            decode(&bytes, &identity(), 4),
            Err(Refused::OtherPartition {
                found: 3,
                wanted: 4
            })
        ));
        assert!(matches!(
            read(Path::new("/nonexistent/helpgrid"), &identity(), 3),
            Err(Refused::Missing)
        ));
    }

    #[test]
    fn a_position_outside_the_log_or_an_old_checkpoint_with_records_after_it_is_refused() {
        let hour = 3_600_000;
        assert!(
            usable(42, 0, (0, 42), hour, hour / 2).is_ok(),
            "old, nothing after it"
        );
        assert!(usable(42, 0, (0, 50), hour / 4, hour / 2).is_ok(), "young");
        assert!(matches!(
            usable(42, 0, (0, 50), hour, hour / 2),
            Err(Refused::Stale { .. })
        ));
        assert!(matches!(
            usable(42, 0, (0, 41), 0, hour),
            Err(Refused::OutOfRange { .. })
        ));
        assert!(matches!(
            usable(42, 0, (43, 50), 0, hour),
            Err(Refused::OutOfRange { .. })
        ));
    }

    #[test]
    fn a_checkpoint_is_trusted_only_when_the_record_before_its_position_is_the_one_it_saw() {
        let decoded = decode(&sample(), &identity(), 3).unwrap_or_else(|e| panic!("{e}"));
        assert!(anchored(&decoded, 0, Some(&anchor())).is_ok());
        // A recreated topic: another record at that offset (another key, or the same key
        // written at another time), or none left there (compacted away, or a shorter log).
        let other_key = Anchor {
            key: Box::from(&b"inc-9"[..]),
            ..anchor()
        };
        let other_time = Anchor {
            timestamp_ms: 901,
            ..anchor()
        };
        let later = Anchor {
            offset: 44,
            ..anchor()
        };
        for found in [Some(&other_key), Some(&other_time), Some(&later), None] {
            assert!(
                matches!(
                    anchored(&decoded, 0, found),
                    Err(Refused::OtherRecord { offset: 41 })
                ),
                "{found:?} accepted"
            );
        }
        // No record before the position: fine where the partition starts, not past it.
        let empty = decode(&encode(&identity(), 3, 7, 1_000, None, &[]), &identity(), 3)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(anchored(&empty, 7, None).is_ok());
        assert!(matches!(
            anchored(&empty, 0, None),
            Err(Refused::Unanchored {
                position: 7,
                low: 0
            })
        ));
        // An anchor that is not just before the position is damage.
        let misplaced = decode(
            &encode(&identity(), 3, 50, 1_000, Some(&anchor()), &[]),
            &identity(),
            3,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            anchored(&misplaced, 0, Some(&anchor())),
            Err(Refused::Corrupt(_))
        ));
    }
}
