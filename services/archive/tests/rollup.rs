//! The per-day, per-community rollup against the incidents themselves, on real PostgreSQL:
//! the sink's batches (incidents spread over many batches, so the rollup is changed by
//! differences, not only inserts) keep it so that every report from it equals the report
//! computed from the incidents alone (counts exactly; p50/p90 as the bucket of the exact
//! `percentile_disc` value); migration 5's SQL build gives the same rows; moving grids in the
//! registry keeps it right.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use helpgrid_archive::access::GridFilter;
use helpgrid_archive::areas::{Area, AreaTree};
use helpgrid_archive::queries::{self, report_plan};
use helpgrid_archive::requests::{Bucket, Period, ReportQuery};
use helpgrid_archive::rollup::{self, DAY_MS, Tally};
use helpgrid_archive::rows::SourceRecord;
use helpgrid_archive::{schema, store};
use helpgrid_common::time::to_timestamp;
use helpgrid_proto::pb::{IncidentEvent, Report, ReportFigures, incident_event::Change};
use prost::Message;
use std::collections::{BTreeMap, BTreeSet};
use support::{fresh_database, incident_story, server_url};
use tokio_postgres::Client;

/// 2026-11-02 00:00 UTC (a Monday).
const START: i64 = 1_762_041_600_000;
const TOPIC: &str = "t.incident-events";

fn area(id: &str, parent: &str, level: &str) -> Area {
    Area {
        area_id: id.into(),
        parent_id: parent.into(),
        level: level.into(),
        name: id.to_uppercase(),
    }
}

/// city → county → town-1 → c-1 (g-0, g-1, g-2), c-2 (g-3, g-4); g-9 is not registered.
fn registry() -> Vec<Area> {
    vec![
        area("city", "", "city"),
        area("county", "city", "county"),
        area("town-1", "county", "town"),
        area("c-1", "town-1", "community"),
        area("c-2", "town-1", "community"),
        area("g-0", "c-1", "grid"),
        area("g-1", "c-1", "grid"),
        area("g-2", "c-1", "grid"),
        area("g-3", "c-2", "grid"),
        area("g-4", "c-2", "grid"),
    ]
}

const GRIDS: [&str; 6] = ["g-0", "g-1", "g-2", "g-3", "g-4", "g-9"];
const INCIDENTS: usize = 150;

/// Incident n's story with its own times to acknowledge and close (so the histograms have
/// many buckets), some left open or unacknowledged.
fn story(n: usize) -> Vec<IncidentEvent> {
    let grid = GRIDS[n % GRIDS.len()];
    // Spread over four and a half days, at odd times.
    let opened = START + (n as i64) * 2_600_000 + (n as i64 % 7) * 1_111;
    let ack_extra = (n as i64 * 7_919) % 900_000;
    let close_extra = (n as i64 * 104_729) % 7_200_000;
    let mut events = incident_story(n, grid, opened);
    for e in &mut events {
        if let Some(i) = e.incident.as_mut() {
            if let Some(t) = i.acknowledged_at.as_mut() {
                *t = to_timestamp(t.seconds * 1000 + i64::from(t.nanos / 1_000_000) + ack_extra);
            }
            if let Some(t) = i.closed_at.as_mut() {
                *t = to_timestamp(
                    t.seconds * 1000 + i64::from(t.nanos / 1_000_000) + ack_extra + close_extra,
                );
            }
        }
    }
    if n.is_multiple_of(11) {
        // Still open: no close.
        events.retain(|e| !matches!(e.change, Some(Change::Closed(_))));
    }
    if n.is_multiple_of(13) {
        // Opened and assigned only.
        events.truncate(2);
    }
    events
}

/// Every story's records, interleaved (each incident's steps spread over the stream, in
/// order) on three partitions.
fn records() -> Vec<SourceRecord> {
    let stories: Vec<Vec<IncidentEvent>> = (0..INCIDENTS).map(story).collect();
    let mut offsets = [0i64; 3];
    let mut out = Vec::new();
    let longest = stories.iter().map(Vec::len).max().unwrap();
    for step in 0..longest {
        for (n, s) in stories.iter().enumerate() {
            if let Some(e) = s.get(step) {
                let partition = (n % GRIDS.len() % 3) as i32;
                out.push(SourceRecord {
                    partition,
                    offset: offsets[partition as usize],
                    key: Some(GRIDS[n % GRIDS.len()].as_bytes().to_vec()),
                    payload: Some(e.encode_to_vec()),
                });
                offsets[partition as usize] += 1;
            }
        }
    }
    out
}

async fn archive(client: &mut Client, records: &[SourceRecord], batch: usize) {
    for chunk in records.chunks(batch) {
        store::archive_batch(client, TOPIC, chunk, |_| async { Ok(()) })
            .await
            .unwrap();
    }
}

/// The figures must be equal; p50/p90 are the upper bound of the exact value's bucket.
fn assert_same(what: &str, rollup: &ReportFigures, detail: &ReportFigures) {
    let exact_bucket = |ms: u64| rollup::upper_bound(rollup::bucket(ms as i64));
    let mut expected = detail.clone();
    expected.ack_p50_ms = exact_bucket(detail.ack_p50_ms);
    expected.ack_p90_ms = exact_bucket(detail.ack_p90_ms);
    expected.close_p50_ms = exact_bucket(detail.close_p50_ms);
    expected.close_p90_ms = exact_bucket(detail.close_p90_ms);
    assert_eq!(rollup, &expected, "{what}");
}

fn assert_reports(what: &str, rollup: &Report, detail: &Report) {
    assert_same(
        &format!("{what}: total"),
        rollup.total.as_ref().unwrap(),
        detail.total.as_ref().unwrap(),
    );
    let starts = |r: &Report| -> Vec<i64> {
        r.series
            .iter()
            .map(|p| p.start.as_ref().unwrap().seconds)
            .collect()
    };
    assert_eq!(starts(rollup), starts(detail), "{what}: buckets");
    for (a, b) in rollup.series.iter().zip(&detail.series) {
        assert_same(
            &format!("{what}: bucket {:?}", a.start),
            a.figures.as_ref().unwrap(),
            b.figures.as_ref().unwrap(),
        );
    }
}

fn only(grids: &[&str]) -> GridFilter {
    GridFilter::Only(grids.iter().map(|g| (*g).to_owned()).collect())
}

/// Every report shape against the detail report: whole and partial days, each bucket, the
/// city, a town, a community, whole communities plus loose grids, one grid, an unplaced grid.
async fn check_every_report(db: &Client, areas: &AreaTree) -> usize {
    let periods = [
        ("five whole days", START, START + 5 * DAY_MS),
        (
            "partial days at both ends",
            START + 13 * 3_600_000 + 17,
            START + 4 * DAY_MS + 5 * 3_600_000,
        ),
        (
            "within one day",
            START + DAY_MS + 3_600_000,
            START + DAY_MS + 20 * 3_600_000,
        ),
    ];
    let town = GridFilter::Only(areas.grids_of("town-1"));
    let filters = [
        ("all", GridFilter::All),
        ("town", town),
        ("community c-1", only(&["g-0", "g-1", "g-2"])),
        ("c-1 and g-3", only(&["g-0", "g-1", "g-2", "g-3"])),
        ("grid g-4", only(&["g-4"])),
        ("unplaced g-9", only(&["g-9"])),
    ];
    let mut compared = 0;
    for (period_name, from, to) in periods {
        for (filter_name, grids) in &filters {
            for bucket in [Bucket::Day, Bucket::Week, Bucket::Month] {
                let query = ReportQuery {
                    period: Period { from, to },
                    area: String::new(),
                    bucket,
                };
                let from_rollup = queries::report(db, &query, grids, areas).await.unwrap();
                let from_detail = queries::detail_report(db, &query, grids).await.unwrap();
                let what = format!("{period_name}, {filter_name}, {bucket:?}");
                assert_reports(&what, &from_rollup, &from_detail);
                compared += 1;
            }
        }
    }
    compared
}

/// The rollup tables as tallies per (day, community), arrays without trailing zeros.
async fn rollup_rows(db: &Client) -> BTreeMap<(i32, String), Tally> {
    let mut out: BTreeMap<(i32, String), Tally> = BTreeMap::new();
    for row in db
        .query("SELECT * FROM incident_rollup", &[])
        .await
        .unwrap()
    {
        // Stored as (index, count) pairs (migration 7): as dense, without trailing zeros.
        let pairs = |name: &str| -> Vec<i64> {
            let mut v = Vec::new();
            rollup::add_pair_bytes(&mut v, row.get::<_, &[u8]>(name)).unwrap();
            rollup::trimmed(&v).to_vec()
        };
        let t = Tally {
            requests: row.get("requests"),
            button: row.get("button"),
            camera: row.get("camera"),
            closed: row.get("closed"),
            resolved: row.get("resolved"),
            escalations: row.get("escalations"),
            reassignments: row.get("reassignments"),
            repeat_presses: row.get("repeat_presses"),
            settled: pairs("settled_pairs"),
            outcomes: pairs("outcome_pairs"),
            ack: pairs("ack_pairs"),
            close: pairs("close_pairs"),
            kinds: BTreeMap::new(),
        };
        out.insert((row.get("day"), row.get("community_id")), t);
    }
    for row in db
        .query(
            "SELECT day, community_id, kind, requests FROM incident_rollup_kinds \
             WHERE requests <> 0",
            &[],
        )
        .await
        .unwrap()
    {
        out.entry((row.get(0), row.get(1)))
            .or_default()
            .kinds
            .insert(row.get(2), row.get(3));
    }
    out.retain(|_, t| !t.is_zero());
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_from_the_rollup_equal_reports_from_the_incidents() {
    let url = fresh_database(&server_url()).await;
    let mut client = store::connect(&url).await.unwrap();
    schema::migrate(&mut client).await.unwrap();
    queries::import_areas(&mut client, &registry())
        .await
        .unwrap();
    let records = records();
    // 37 records a batch: most incidents change in several batches.
    archive(&mut client, &records, 37).await;
    let areas = queries::load_areas(&client).await.unwrap();
    let db = queries::Db::new(url.clone()).client().await.unwrap();

    let incidents: i64 = db
        .query_one("SELECT count(*) FROM incidents", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(incidents, INCIDENTS as i64);
    let rolled: i64 = db
        .query_one(
            "SELECT coalesce(sum(requests), 0)::int8 FROM incident_rollup",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(rolled, INCIDENTS as i64, "every incident counted once");
    // The whole days of a community do come from the rollup (not only the detail path).
    let plan = report_plan(
        Period {
            from: START,
            to: START + 5 * DAY_MS,
        },
        &only(&["g-0", "g-1", "g-2", "g-3"]),
        &areas,
    );
    assert_eq!(
        plan.rollup,
        Some((
            (START / DAY_MS) as i32,
            (START / DAY_MS) as i32 + 5,
            Some(vec!["c-1".to_owned()])
        ))
    );
    assert_eq!(plan.detail, vec![(plan_period(5), only(&["g-3"]))]);
    let compared = check_every_report(&db, &areas).await;
    assert_eq!(compared, 54);

    // A replayed batch changes nothing (exactly once, rollup included).
    let incremental = rollup_rows(&db).await;
    archive(&mut client, &records[..200], 200).await;
    assert_eq!(rollup_rows(&db).await, incremental);

    // Migration 5's SQL build from the incidents gives the rows the sink kept.
    client
        .batch_execute("SELECT archive_rollup_build(NULL)")
        .await
        .unwrap();
    assert_eq!(rollup_rows(&db).await, incremental);

    // The registry moves g-3 to c-1 and places g-9 under c-2: the rollup follows, reports
    // still equal the incidents' figures.
    let mut moved = registry();
    moved.retain(|a| a.area_id != "g-3");
    moved.push(area("g-3", "c-1", "grid"));
    moved.push(area("g-9", "c-2", "grid"));
    queries::import_areas(&mut client, &moved).await.unwrap();
    let areas = queries::load_areas(&client).await.unwrap();
    let after_move = rollup_rows(&db).await;
    assert!(
        !after_move.keys().any(|(_, c)| c.is_empty()),
        "g-9's incidents left the unplaced row"
    );
    check_every_report(&db, &areas).await;
    client
        .batch_execute("SELECT archive_rollup_build(NULL)")
        .await
        .unwrap();
    assert_eq!(rollup_rows(&db).await, after_move);
}

fn plan_period(days: i64) -> Period {
    Period {
        from: START,
        to: START + days * DAY_MS,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sql_bucket_is_the_rust_bucket() {
    let url = fresh_database(&server_url()).await;
    let mut client = store::connect(&url).await.unwrap();
    schema::migrate(&mut client).await.unwrap();
    let mut values: BTreeSet<i64> = [-1, 0, 1, 15, 16, 17, 31, 32, 33, 1 << 40, i64::MAX].into();
    let mut v = 1i64;
    while v < 1 << 42 {
        values.extend([v - 1, v, v + 1, v + v / 3, v + v / 2 + 1]);
        v *= 2;
    }
    values.extend((0..5000).map(|i| i * 997));
    let values: Vec<i64> = values.into_iter().collect();
    let rows = client
        .query(
            "SELECT v, archive_bucket(v) FROM unnest($1::int8[]) AS v",
            &[&values],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), values.len());
    for row in rows {
        let v: i64 = row.get(0);
        let b: i32 = row.get(1);
        assert_eq!(b as usize, rollup::bucket(v), "bucket of {v} ms");
    }
}

/// Migration 8's merge (what the sink applies to a row's pairs past 1 KB) is the Rust sum
/// written back as pairs: repeated indexes, negative counts, sums of zero, counts past 16 bits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sql_merge_of_pairs_is_the_rust_sum() {
    let url = fresh_database(&server_url()).await;
    let mut client = store::connect(&url).await.unwrap();
    schema::migrate(&mut client).await.unwrap();
    // Appended deltas as the sink writes them: +1s, corrections of −1, a large count.
    let deltas: Vec<Vec<i64>> = (0..300)
        .map(|i: i64| {
            let mut d = vec![0; (i % rollup::MAX_BUCKET as i64) as usize + 1];
            *d.last_mut().unwrap() += 1;
            if i % 7 == 0 {
                d[0] -= 1;
            }
            if i == 11 {
                d[0] += 70_000;
            }
            d
        })
        .collect();
    let appended: Vec<u8> = deltas.iter().flat_map(|d| rollup::pair_bytes(d)).collect();
    let mut sum = Vec::new();
    rollup::add_pair_bytes(&mut sum, &appended).unwrap();
    let merged: Vec<u8> = client
        .query_one("SELECT archive_pairs_merge($1)", &[&appended])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        merged,
        rollup::pair_bytes(&sum),
        "one pair per index, as Rust writes them"
    );
    assert!(merged.len() < appended.len());
    let empty: Vec<u8> = client
        .query_one("SELECT archive_pairs_merge(''::bytea)", &[])
        .await
        .unwrap()
        .get(0);
    assert!(empty.is_empty());
}

/// A busy day: 400 incidents of one community archived one record at a time, so every batch
/// appends pairs to the same rollup row. Past 1 KB the sink merges them (migration 8): the
/// row stays small, and its figures are still exactly migration 5's build and the incidents'.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_days_pairs_are_merged_and_still_add_up() {
    const BUSY: usize = 400;
    let url = fresh_database(&server_url()).await;
    let mut client = store::connect(&url).await.unwrap();
    schema::migrate(&mut client).await.unwrap();
    queries::import_areas(&mut client, &registry())
        .await
        .unwrap();
    let mut records = Vec::new();
    for n in 0..BUSY {
        // g-0 (c-1), all on the first day; the usual spread of times to acknowledge and close.
        let mut events = story(n * GRIDS.len());
        for e in &mut events {
            if let Some(i) = e.incident.as_mut() {
                let shift = i.opened_at.as_ref().map_or(0, |t| t.seconds * 1000) - START;
                let back = |t: &mut Option<prost_types::Timestamp>| {
                    if let Some(t) = t.as_mut() {
                        *t = to_timestamp(
                            t.seconds * 1000 + i64::from(t.nanos / 1_000_000) - shift + n as i64,
                        );
                    }
                };
                back(&mut i.opened_at);
                back(&mut i.reported_at);
                back(&mut i.acknowledged_at);
                back(&mut i.closed_at);
            }
        }
        records.extend(events);
    }
    let records: Vec<SourceRecord> = records
        .iter()
        .enumerate()
        .map(|(offset, e)| SourceRecord {
            partition: 0,
            offset: offset as i64,
            key: Some(b"g-0".to_vec()),
            payload: Some(e.encode_to_vec()),
        })
        .collect();
    archive(&mut client, &records, 1).await;
    let db = queries::Db::new(url.clone()).client().await.unwrap();
    let stored = db
        .query("SELECT ack_pairs, close_pairs FROM incident_rollup", &[])
        .await
        .unwrap();
    assert_eq!(stored.len(), 1, "one community, one day");
    for column in 0..2 {
        let pairs: Vec<u8> = stored[0].get(column);
        let mut sum = Vec::new();
        rollup::add_pair_bytes(&mut sum, &pairs).unwrap();
        let merged = rollup::pair_bytes(&sum).len();
        // Unmerged, one pair per acknowledged or closed incident (~3 KB); merged past 1 KB, at
        // most 1 KB plus one merged value.
        assert!(
            pairs.len() <= 1024 + merged,
            "pairs merged: {} bytes, {merged} when merged",
            pairs.len()
        );
        assert!(merged > 0);
    }
    let areas = queries::load_areas(&client).await.unwrap();
    let day = Period {
        from: START,
        to: START + DAY_MS,
    };
    for bucket in [Bucket::Day, Bucket::Month] {
        let query = ReportQuery {
            period: day,
            area: String::new(),
            bucket,
        };
        let grids = only(&["g-0", "g-1", "g-2"]);
        assert!(
            report_plan(day, &grids, &areas).detail.is_empty(),
            "all from the rollup"
        );
        let from_rollup = queries::report(&db, &query, &grids, &areas).await.unwrap();
        let from_detail = queries::detail_report(&db, &query, &grids).await.unwrap();
        assert_reports("busy day", &from_rollup, &from_detail);
    }
    let kept = rollup_rows(&db).await;
    client
        .batch_execute("SELECT archive_rollup_build(NULL)")
        .await
        .unwrap();
    assert_eq!(rollup_rows(&db).await, kept);
}
