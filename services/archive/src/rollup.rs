//! The per-day, per-community rollup behind reports: pure code, no I/O.
//!
//! A report over a county's month used to read every incident of it (82,000 index entries,
//! sorted for the percentiles: ~0.85 s). The rollup keeps, per UTC day of `opened_at` and per
//! community, what a report adds up: counts, counter sums, closed incidents per settled level
//! and per outcome, requests per kind, and histograms of the time to acknowledge and to close.
//! A county's month is then 130 communities × 30 days = 3,900 rows.
//!
//! Everything in a [`Tally`] adds up, so a report sums tallies: rollup rows for whole days,
//! tallies of detail rows (the same [`Facts::tally`]) for partial days and for grids that do
//! not make up whole communities. Percentiles do not add up; histograms do. The p50 / p90 a
//! report gives is therefore the upper bound of the histogram bucket holding the
//! `percentile_disc` value: at most 12.5 % above it (buckets: [`bucket`]).
//!
//! The sink keeps the rollup in step in the same transaction as the rows (exactly once too):
//! for each incident a batch changes it subtracts the incident's tally as it was and adds it
//! as it now is ([`deltas`]). Migration 5 (`archive_rollup_build` in SQL) builds the same
//! figures from the `incidents` table; tests/rollup.rs checks the three ways agree.

use crate::requests::Bucket;
use crate::rows::{IncidentRow, resolving_outcomes};
use helpgrid_common::time::{Millis, to_timestamp};
use helpgrid_proto::outcome::OUTCOMES;
use helpgrid_proto::pb::{
    IncidentOutcome, KindCount, LevelShare, OutcomeCount, Report, ReportFigures, ReportPoint,
};
use std::collections::BTreeMap;

pub const DAY_MS: i64 = 86_400_000;
/// Durations are clamped to [0, 2^41 ms) (69 years) before bucketing.
const MAX_MS: i64 = (1 << 41) - 1;
/// Durations below this many milliseconds have a bucket each.
const EXACT: i64 = 16;
/// Buckets per power of two above [`EXACT`] (3 significant bits: ≤ 12.5 % wide).
const SUB: i64 = 8;

/// The histogram bucket of a duration in milliseconds: one bucket per millisecond below 16,
/// then eight per power of two (log-linear, as HdrHistogram with 3 significant bits).
/// Migration 5's `archive_bucket` is the same function in SQL.
pub fn bucket(ms: i64) -> usize {
    let v = ms.clamp(0, MAX_MS);
    if v < EXACT {
        return v as usize;
    }
    let e = 63 - i64::from(v.leading_zeros()); // 2^e <= v < 2^(e+1), e >= 4
    (EXACT + (e - 4) * SUB + ((v >> (e - 3)) & (SUB - 1))) as usize
}

/// The largest duration in `bucket` (what a percentile in that bucket reports).
pub fn upper_bound(bucket: usize) -> u64 {
    let b = bucket as i64;
    if b < EXACT {
        return b as u64;
    }
    let e = (b - EXACT) / SUB + 4;
    let sub = (b - EXACT) % SUB;
    (((SUB + sub + 1) << (e - 3)) - 1) as u64
}

/// The `p` percentile of a histogram as `percentile_disc` picks it (the first value whose
/// rank reaches `ceil(p × n)`, computed in floating point as PostgreSQL does), reported as its
/// bucket's upper bound; 0 for an empty histogram.
pub fn percentile(hist: &[i64], p: f64) -> u64 {
    let n: i64 = hist.iter().sum();
    if n <= 0 {
        return 0;
    }
    let rank = ((p * n as f64).ceil() as i64).max(1);
    let mut seen = 0;
    for (b, count) in hist.iter().enumerate() {
        seen += count;
        if seen >= rank {
            return upper_bound(b);
        }
    }
    0
}

/// What one incident (or many) adds to a report. Every field adds up; negative while it is a
/// difference (an incident's tally removed).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally {
    pub requests: i64,
    pub button: i64,
    pub camera: i64,
    pub closed: i64,
    pub resolved: i64,
    pub escalations: i64,
    pub reassignments: i64,
    pub repeat_presses: i64,
    /// Closed incidents per settled level (index: `EscalationLevel`; 0 = none).
    pub settled: Vec<i64>,
    /// Closed incidents per outcome (index: `IncidentOutcome`).
    pub outcomes: Vec<i64>,
    /// Acknowledged incidents per [`bucket`] of acknowledged_at − opened_at.
    pub ack: Vec<i64>,
    /// Closed incidents per [`bucket`] of closed_at − opened_at.
    pub close: Vec<i64>,
    /// Requests per kind ("button:help", ...).
    pub kinds: BTreeMap<String, i64>,
}

fn add_into(into: &mut Vec<i64>, from: &[i64], sign: i64) {
    if into.len() < from.len() {
        into.resize(from.len(), 0);
    }
    for (a, b) in into.iter_mut().zip(from) {
        *a += sign * b;
    }
}

/// Adds a dense `int4[]` into a tally's array (how migrations 5 and 6 stored the rollup's
/// arrays; the query benchmark's baseline reads them so).
pub fn add_ints(into: &mut Vec<i64>, from: &[i32]) {
    if into.len() < from.len() {
        into.resize(from.len(), 0);
    }
    for (a, b) in into.iter_mut().zip(from) {
        *a += i64::from(*b);
    }
}

/// The highest bucket a duration can fall in (and the highest index rollup pairs may name).
pub const MAX_BUCKET: usize = (EXACT + (41 - 1 - 4) * SUB + (SUB - 1)) as usize;

/// A dense array (index = bucket, level or outcome) as the rollup stores it (migration 7):
/// (index, count) pairs of big-endian `i32` (PostgreSQL's `int4send`), zero counts left out.
/// A community's day has ~20 incidents, so dense histograms were ~90 % zeros; and a `bytea`
/// travels as one block where an `int4[]` is sent and decoded element by element.
pub fn pair_bytes(dense: &[i64]) -> Vec<u8> {
    let mut out = Vec::new();
    for (index, n) in dense.iter().enumerate().filter(|(_, n)| **n != 0) {
        // Indexes are ≤ MAX_BUCKET; counts of one row stay far below 2^31.
        out.extend_from_slice(&(index as i32).to_be_bytes());
        out.extend_from_slice(&(*n as i32).to_be_bytes());
    }
    out
}

/// Rollup pairs that do not read as pairs.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("rollup pairs {0}")]
pub struct BadPairs(String);

/// Adds stored pairs ([`pair_bytes`], or several such values one after another: an index may
/// repeat and a count be negative, the sum is what counts) into a dense array. Adds nothing
/// when any pair is bad.
pub fn add_pair_bytes(into: &mut Vec<i64>, bytes: &[u8]) -> Result<(), BadPairs> {
    if !bytes.len().is_multiple_of(8) {
        return Err(BadPairs(format!(
            "of {} bytes, not a multiple of 8",
            bytes.len()
        )));
    }
    let int = |b: &[u8]| i32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    if let Some(bad) = bytes
        .chunks_exact(8)
        .map(|p| int(&p[..4]))
        .find(|i| usize::try_from(*i).map_or(true, |i| i > MAX_BUCKET))
    {
        return Err(BadPairs(format!("name index {bad} (0..={MAX_BUCKET})")));
    }
    for pair in bytes.chunks_exact(8) {
        let index = int(&pair[..4]) as usize; // checked above
        if into.len() <= index {
            into.resize(index + 1, 0);
        }
        into[index] += i64::from(int(&pair[4..]));
    }
    Ok(())
}

fn bump(into: &mut Vec<i64>, at: usize) {
    if into.len() <= at {
        into.resize(at + 1, 0);
    }
    into[at] += 1;
}

/// Without trailing zeros (what the rollup stores).
pub fn trimmed(v: &[i64]) -> &[i64] {
    let end = v.iter().rposition(|n| *n != 0).map_or(0, |i| i + 1);
    &v[..end]
}

impl Tally {
    /// Adds `other` (`sign` 1) or takes it away (`sign` −1).
    pub fn add(&mut self, other: &Tally, sign: i64) {
        self.requests += sign * other.requests;
        self.button += sign * other.button;
        self.camera += sign * other.camera;
        self.closed += sign * other.closed;
        self.resolved += sign * other.resolved;
        self.escalations += sign * other.escalations;
        self.reassignments += sign * other.reassignments;
        self.repeat_presses += sign * other.repeat_presses;
        add_into(&mut self.settled, &other.settled, sign);
        add_into(&mut self.outcomes, &other.outcomes, sign);
        add_into(&mut self.ack, &other.ack, sign);
        add_into(&mut self.close, &other.close, sign);
        for (kind, n) in &other.kinds {
            *self.kinds.entry(kind.clone()).or_default() += sign * n;
        }
    }

    /// Adds nothing (a change that moved no figure: the rollup need not be written).
    pub fn is_zero(&self) -> bool {
        self.requests == 0
            && self.button == 0
            && self.camera == 0
            && self.closed == 0
            && self.resolved == 0
            && self.escalations == 0
            && self.reassignments == 0
            && self.repeat_presses == 0
            && [&self.settled, &self.outcomes, &self.ack, &self.close]
                .iter()
                .all(|v| v.iter().all(|n| *n == 0))
            && self.kinds.values().all(|n| *n == 0)
    }

    /// The report's figures (definitions: README, "Report definitions").
    pub fn figures(&self) -> ReportFigures {
        let count = |n: i64| n.max(0) as u64;
        let requests = count(self.requests);
        let closed = count(self.closed);
        let resolved = count(self.resolved);
        let share = |n: u64| {
            if closed == 0 {
                0.0
            } else {
                n as f64 / closed as f64
            }
        };
        let at = |v: &[i64], i: usize| count(v.get(i).copied().unwrap_or(0));
        ReportFigures {
            requests,
            button_requests: count(self.button),
            camera_requests: count(self.camera),
            by_kind: self
                .kinds
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(kind, n)| KindCount {
                    kind: kind.clone(),
                    count: count(*n),
                })
                .collect(),
            closed,
            resolved,
            resolution_rate: if requests == 0 {
                0.0
            } else {
                resolved as f64 / requests as f64
            },
            settled_at: self
                .settled
                .iter()
                .enumerate()
                .filter(|(_, n)| **n > 0)
                .map(|(level, n)| LevelShare {
                    level: level as i32,
                    settled: count(*n),
                    share: share(count(*n)),
                })
                .collect(),
            ack_p50_ms: percentile(&self.ack, 0.5),
            ack_p90_ms: percentile(&self.ack, 0.9),
            close_p50_ms: percentile(&self.close, 0.5),
            close_p90_ms: percentile(&self.close, 0.9),
            escalations: count(self.escalations),
            reassignments: count(self.reassignments),
            repeat_presses: count(self.repeat_presses),
            // Every outcome, zeros included; 0 (closed before outcomes, no resolution) last,
            // and only when there are such incidents.
            by_outcome: OUTCOMES
                .iter()
                .map(|o| *o as i32)
                .chain([IncidentOutcome::Unspecified as i32])
                .filter_map(|outcome| {
                    let n = at(&self.outcomes, outcome as usize);
                    (outcome != 0 || n > 0).then(|| OutcomeCount {
                        outcome,
                        closed: n,
                        share: share(n),
                    })
                })
                .collect(),
        }
    }
}

/// What of an incident a report counts: the `incidents` columns it reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    pub grid_id: String,
    pub opened_at: Millis,
    pub source: i16,
    pub kind: String,
    pub state: i16,
    pub outcome: i16,
    pub settled_level: Option<i16>,
    pub acknowledged_at: Option<Millis>,
    pub closed_at: Option<Millis>,
    pub escalations: i32,
    pub reassignments: i32,
    pub repeat_presses: i32,
}

/// `IncidentState::Closed`, `IncidentSource::Button` / `Camera` as stored.
const CLOSED: i16 = 4;
const BUTTON: i16 = 1;
const CAMERA: i16 = 2;

impl Facts {
    /// The UTC day (since 1970-01-01) the incident was opened: its rollup row.
    pub fn day(&self) -> i32 {
        self.opened_at.div_euclid(DAY_MS) as i32
    }

    /// The incident's row as the sink writes it, `before` being the archived row (its counters
    /// grow by the batch's increments, as the upsert does).
    pub fn after(before: Option<&Facts>, row: &IncidentRow) -> Facts {
        let (e, r, p) = before.map_or((0, 0, 0), |b| {
            (b.escalations, b.reassignments, b.repeat_presses)
        });
        Facts {
            grid_id: row.grid_id.clone(),
            opened_at: row.opened_at,
            source: row.source,
            kind: row.kind.clone(),
            state: row.state,
            outcome: row.outcome,
            settled_level: row.settled_level,
            acknowledged_at: row.acknowledged_at,
            closed_at: row.closed_at,
            escalations: e + row.escalations,
            reassignments: r + row.reassignments,
            repeat_presses: p + row.repeat_presses,
        }
    }

    /// What this incident adds to a report.
    pub fn tally(&self) -> Tally {
        let mut t = Tally {
            requests: 1,
            button: i64::from(self.source == BUTTON),
            camera: i64::from(self.source == CAMERA),
            escalations: i64::from(self.escalations),
            reassignments: i64::from(self.reassignments),
            repeat_presses: i64::from(self.repeat_presses),
            ..Tally::default()
        };
        t.kinds.insert(self.kind.clone(), 1);
        if self.state == CLOSED {
            t.closed = 1;
            t.resolved = i64::from(resolving_outcomes().contains(&self.outcome));
            bump(
                &mut t.settled,
                self.settled_level.unwrap_or(0).max(0) as usize,
            );
            bump(&mut t.outcomes, self.outcome.max(0) as usize);
        }
        if let Some(acked) = self.acknowledged_at {
            bump(&mut t.ack, bucket(acked - self.opened_at));
        }
        if let Some(closed) = self.closed_at {
            bump(&mut t.close, bucket(closed - self.opened_at));
        }
        t
    }
}

/// A rollup row's key: (UTC day, community id; "" for a grid the registry does not place).
pub type Key = (i32, String);

/// How the rollup changes when incidents change from `before` (None: new) to `after`, with
/// `community` placing a grid. Changes that move no figure are left out; keys are in order
/// (rows are locked in that order, so two writers cannot deadlock).
pub fn deltas(
    changes: &[(Option<Facts>, Facts)],
    community: impl Fn(&str) -> String,
) -> BTreeMap<Key, Tally> {
    let mut out: BTreeMap<Key, Tally> = BTreeMap::new();
    for (before, after) in changes {
        if let Some(b) = before {
            out.entry((b.day(), community(&b.grid_id)))
                .or_default()
                .add(&b.tally(), -1);
        }
        out.entry((after.day(), community(&after.grid_id)))
            .or_default()
            .add(&after.tally(), 1);
    }
    out.retain(|_, t| !t.is_zero());
    out
}

/// (year, month, day) of a day since 1970-01-01 (proleptic Gregorian; H. Hinnant's
/// `civil_from_days`).
pub fn civil(day: i64) -> (i64, i64, i64) {
    let z = day + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// The first day of the report bucket holding `day` (UTC days, ISO weeks from Monday,
/// calendar months: as `date_trunc` in UTC).
pub fn bucket_start(day: i32, bucket: Bucket) -> i32 {
    let d = i64::from(day);
    let start = match bucket {
        Bucket::Day => d,
        // 1970-01-01 was a Thursday (3 days after a Monday).
        Bucket::Week => d - (d + 3).rem_euclid(7),
        Bucket::Month => d - (civil(d).2 - 1),
    };
    start as i32
}

/// The report from per-day tallies: a point per bucket with requests, and the total.
pub fn report(days: &BTreeMap<i32, Tally>, bucket: Bucket) -> Report {
    let mut total = Tally::default();
    let mut points: BTreeMap<i32, Tally> = BTreeMap::new();
    for (day, tally) in days {
        total.add(tally, 1);
        points
            .entry(bucket_start(*day, bucket))
            .or_default()
            .add(tally, 1);
    }
    Report {
        total: Some(total.figures()),
        series: points
            .into_iter()
            .filter(|(_, t)| t.requests > 0)
            .map(|(start, t)| ReportPoint {
                start: Some(to_timestamp(i64::from(start) * DAY_MS)),
                figures: Some(t.figures()),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(opened_at: Millis) -> Facts {
        Facts {
            grid_id: "g-1".into(),
            opened_at,
            source: BUTTON,
            kind: "button:help".into(),
            state: 2,
            outcome: 0,
            settled_level: None,
            acknowledged_at: None,
            closed_at: None,
            escalations: 0,
            reassignments: 0,
            repeat_presses: 0,
        }
    }

    #[test]
    fn buckets_are_exact_below_16_ms_then_at_most_an_eighth_wide() {
        for v in 0..16 {
            assert_eq!(upper_bound(bucket(v)), v as u64);
        }
        let mut last = 0;
        for v in (16..5_000_000)
            .step_by(7)
            .chain([86_400_000, 3_000_000_000])
        {
            let b = bucket(v);
            assert!(b >= last, "monotone");
            last = b;
            let upper = upper_bound(b);
            assert!(upper >= v as u64, "{v} above its bucket's bound {upper}");
            assert!(
                (upper as f64) < v as f64 * 1.125,
                "{v}: bound {upper} too far"
            );
            if b > 0 {
                assert!(
                    upper_bound(b - 1) < v as u64,
                    "{v} belongs to an earlier bucket"
                );
            }
        }
        // The two minutes of the history test: 114,688..=122,879 ms.
        assert_eq!(upper_bound(bucket(120_000)), 122_879);
        assert_eq!(bucket(-5), 0);
        assert_eq!(bucket(i64::MAX), bucket(MAX_MS));
    }

    #[test]
    fn arrays_go_to_pairs_and_back() {
        let dense = vec![0, 3, 0, 0, -2, 0, 0];
        let bytes = pair_bytes(&dense);
        assert_eq!(
            bytes,
            [0, 0, 0, 1, 0, 0, 0, 3, 0, 0, 0, 4, 255, 255, 255, 254]
        );
        let mut back = vec![0, 1];
        add_pair_bytes(&mut back, &bytes).unwrap();
        assert_eq!(back, [0, 4, 0, 0, -2]);
        // Values appended one after another (the sink's deltas) add up.
        let mut twice = bytes.clone();
        twice.extend(pair_bytes(&[0, -3, 0, 0, 2]));
        let mut sum = Vec::new();
        add_pair_bytes(&mut sum, &twice).unwrap();
        assert_eq!(trimmed(&sum), [] as [i64; 0]);
        assert!(pair_bytes(&[0, 0]).is_empty());
        assert_eq!(MAX_BUCKET, bucket(MAX_MS));
        assert!(add_pair_bytes(&mut back, &[0, 0, 0, 1]).is_err());
        let pair = |i: i32, n: i32| [i.to_be_bytes(), n.to_be_bytes()].concat();
        assert!(add_pair_bytes(&mut back, &pair(-1, 1)).is_err());
        assert!(add_pair_bytes(&mut back, &pair(MAX_BUCKET as i32 + 1, 1)).is_err());
        assert!(add_pair_bytes(&mut back, &[pair(1, 1), pair(-1, 1)].concat()).is_err());
        assert_eq!(back, [0, 4, 0, 0, -2], "bad pairs add nothing");
    }

    #[test]
    fn percentiles_pick_the_rank_percentile_disc_picks() {
        // Ten values 1..=10 ms: p50 is the 5th, p90 the 9th; 48 values: p90 is the 44th
        // (ceil(43.2)). tests/rollup.rs checks the ranks against PostgreSQL's.
        let mut hist = vec![0; 11];
        for v in 1..=10 {
            hist[bucket(v)] += 1;
        }
        assert_eq!(percentile(&hist, 0.5), 5);
        assert_eq!(percentile(&hist, 0.9), 9);
        let mut hist = vec![0; 50];
        for v in 1..=48 {
            hist[bucket(v)] += 1;
        }
        assert_eq!(percentile(&hist, 0.9), upper_bound(bucket(44)));
        assert_eq!(percentile(&[], 0.5), 0);
    }

    #[test]
    fn an_incidents_change_moves_only_what_changed() {
        let open = facts(3 * DAY_MS + 5);
        let mut closed = open.clone();
        closed.state = CLOSED;
        closed.outcome = 1;
        closed.settled_level = Some(1);
        closed.acknowledged_at = Some(open.opened_at + 120_000);
        closed.closed_at = Some(open.opened_at + 720_000);
        closed.escalations = 1;
        let community = |g: &str| {
            if g == "g-1" {
                "c-1".into()
            } else {
                String::new()
            }
        };
        let d = deltas(&[(Some(open.clone()), closed.clone())], community);
        let delta = &d[&(3, "c-1".to_owned())];
        assert_eq!((delta.requests, delta.closed, delta.resolved), (0, 1, 1));
        assert_eq!(delta.escalations, 1);
        assert_eq!(delta.settled, [0, 1]);
        assert_eq!(delta.kinds.get("button:help"), Some(&0));
        // A change that moves no figure (a reassignment of state only) writes nothing.
        let mut assigned = open.clone();
        assigned.state = 3;
        assert!(deltas(&[(Some(open.clone()), assigned)], community).is_empty());
        // Before + delta = after, wherever the incident moved.
        let mut moved = closed.clone();
        moved.grid_id = "g-unplaced".into();
        moved.opened_at += DAY_MS;
        let d = deltas(&[(Some(closed.clone()), moved.clone())], community);
        let mut rollup: BTreeMap<Key, Tally> = BTreeMap::new();
        rollup.insert((3, "c-1".into()), closed.tally());
        for (k, t) in d {
            rollup.entry(k).or_default().add(&t, 1);
        }
        assert!(rollup[&(3, "c-1".to_owned())].is_zero());
        assert_eq!(rollup[&(4, String::new())], moved.tally());
    }

    #[test]
    fn counters_grow_by_the_batchs_increments() {
        let mut before = facts(0);
        before.escalations = 2;
        let row = IncidentRow {
            incident_id: "i".into(),
            grid_id: "g-1".into(),
            state: 2,
            source: BUTTON,
            priority: 1,
            kind: "button:help".into(),
            household_id: String::new(),
            device_id: String::new(),
            camera_id: String::new(),
            reported_at: None,
            opened_at: 0,
            acknowledged_at: None,
            closed_at: None,
            resolution: 0,
            outcome: 0,
            closed_by: String::new(),
            settled_level: None,
            revision: 3,
            escalations: 1,
            reassignments: 0,
            repeat_presses: 1,
            snapshot: Vec::new(),
        };
        let after = Facts::after(Some(&before), &row);
        assert_eq!((after.escalations, after.repeat_presses), (3, 1));
        assert_eq!(Facts::after(None, &row).escalations, 1);
    }

    #[test]
    fn report_buckets_start_as_date_trunc_does() {
        // 2026-11-30 (a Monday) is day 20,787; 2026-11-01 is 20,758; 2024-02-29 is 19,782.
        assert_eq!(civil(20_787), (2026, 11, 30));
        assert_eq!(civil(19_782), (2024, 2, 29));
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(bucket_start(20_787, Bucket::Week), 20_787);
        assert_eq!(bucket_start(20_793, Bucket::Week), 20_787);
        assert_eq!(bucket_start(20_786, Bucket::Week), 20_780);
        assert_eq!(bucket_start(20_787, Bucket::Month), 20_758);
        assert_eq!(bucket_start(20_758, Bucket::Month), 20_758);
        assert_eq!(bucket_start(20_787, Bucket::Day), 20_787);
    }

    #[test]
    fn a_report_adds_days_into_buckets_and_a_total() {
        let mut days = BTreeMap::new();
        let mut a = facts(20_422 * DAY_MS).tally();
        a.add(&facts(20_422 * DAY_MS + 1).tally(), 1);
        days.insert(20_422, a);
        days.insert(20_423, facts(20_423 * DAY_MS).tally());
        days.insert(20_424, Tally::default());
        let report = report(&days, Bucket::Day);
        let requests: Vec<u64> = report
            .series
            .iter()
            .map(|p| p.figures.as_ref().map_or(0, |f| f.requests))
            .collect();
        assert_eq!(requests, [2, 1], "a day without requests has no point");
        assert_eq!(report.total.map(|t| t.requests), Some(3));
    }
}
