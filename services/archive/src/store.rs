//! PostgreSQL side of the sink: one batch of records, its rows and its Kafka offsets in ONE
//! transaction.
//!
//! The transaction first locks the batch's partitions in `kafka_offsets` and drops every
//! record below the stored position (already archived by an earlier run or another instance),
//! so even a replayed or concurrently consumed record is written once. It then writes the
//! events (COPY, binary), upserts incidents and assignments (multi-row, from arrays), hands
//! refused records to the dead-letter callback, advances the offsets and commits. Any error
//! rolls everything back; the sink then seeks Kafka back to the stored offsets.

use crate::rows::{BatchRows, Refused, SourceRecord, batch_rows};
use helpgrid_common::time::Millis;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, NoTls};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("PostgreSQL: {0}")]
    Database(#[from] tokio_postgres::Error),
    #[error("cannot dead-letter a refused record: {0}")]
    DeadLetter(String),
}

/// Connects and drives the connection in the background; the client fails once it drops.
pub async fn connect(url: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::warn!(%error, "PostgreSQL connection ended");
        }
    });
    Ok(client)
}

/// Settings of the sink's own connection (never the query connection's).
///
/// `synchronous_commit = off`: a commit returns before its WAL record is flushed, so a
/// PostgreSQL crash may lose the last ~0.6 s (3 × `wal_writer_delay`) of committed batches.
/// That cannot break exactly-once: a batch's rows and its Kafka offsets are in the same
/// transaction, so they are lost or kept together (the WAL is replayed in order and never
/// half a transaction), and after the crash the sink resumes from the older offsets that
/// survived and archives those records again. Nobody is told "archived" on the strength of a
/// commit (the offsets mirrored to the Kafka group after it are for lag dashboards only), so
/// a lost commit broke no promise.
pub const SINK_SESSION: &str = "SET synchronous_commit = off";

/// [`connect`] and apply [`SINK_SESSION`].
pub async fn connect_sink(url: &str) -> Result<Client, tokio_postgres::Error> {
    let client = connect(url).await?;
    client.batch_execute(SINK_SESSION).await?;
    Ok(client)
}

/// Next offset to archive for each partition of `topic` that has one.
pub async fn stored_offsets(
    client: &Client,
    topic: &str,
) -> Result<HashMap<i32, i64>, tokio_postgres::Error> {
    Ok(client
        .query(
            "SELECT kafka_partition, next_offset FROM kafka_offsets WHERE topic = $1",
            &[&topic],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}

/// What a committed batch did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Archived {
    pub events: usize,
    pub refused: usize,
    /// Records below the stored position, already archived.
    pub skipped: usize,
    /// occurred_at of the newest archived event (for the lag gauge).
    pub newest: Option<Millis>,
    /// Next offset per partition after the commit.
    pub positions: HashMap<i32, i64>,
}

pub fn at(ms: Millis) -> SystemTime {
    if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms as u64)
    } else {
        UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    }
}

fn at_opt(ms: Option<Millis>) -> Option<SystemTime> {
    ms.map(at)
}

/// Writes `records` (any partitions, in offset order within each) exactly once.
pub async fn archive_batch<F, Fut>(
    client: &mut Client,
    topic: &str,
    records: &[SourceRecord],
    dead_letter: F,
) -> Result<Archived, StoreError>
where
    F: FnOnce(Vec<Refused>) -> Fut,
    Fut: Future<Output = Result<(), StoreError>>,
{
    let mut last: HashMap<i32, i64> = HashMap::new();
    for r in records {
        let next = last.entry(r.partition).or_insert(r.offset + 1);
        *next = (*next).max(r.offset + 1);
    }
    let partitions: Vec<i32> = last.keys().copied().collect();
    let tx = client.transaction().await?;
    let stored: HashMap<i32, i64> = tx
        .query(
            "SELECT kafka_partition, next_offset FROM kafka_offsets \
             WHERE topic = $1 AND kafka_partition = ANY($2) FOR UPDATE",
            &[&topic, &partitions],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let fresh: Vec<&SourceRecord> = records
        .iter()
        .filter(|r| {
            stored
                .get(&r.partition)
                .is_none_or(|next| r.offset >= *next)
        })
        .collect();
    let skipped = records.len() - fresh.len();
    let rows = batch_rows(fresh);
    // Before the upsert: the rollup subtracts each changed incident's figures as archived.
    let rollup = rollup_deltas(&tx, &rows).await?;
    write_rows(&tx, &rows).await?;
    write_rollup(&tx, &rollup).await?;
    let refused = rows.refused.len();
    if refused > 0 {
        dead_letter(rows.refused.clone()).await?;
    }
    let (parts, nexts): (Vec<i32>, Vec<i64>) = last.iter().map(|(p, n)| (*p, *n)).unzip();
    tx.execute(
        "INSERT INTO kafka_offsets (topic, kafka_partition, next_offset) \
         SELECT $1, p, n FROM unnest($2::int4[], $3::int8[]) AS t(p, n) \
         ON CONFLICT (topic, kafka_partition) \
         DO UPDATE SET next_offset = GREATEST(kafka_offsets.next_offset, EXCLUDED.next_offset)",
        &[&topic, &parts, &nexts],
    )
    .await?;
    tx.commit().await?;
    let mut positions = stored;
    for (p, n) in last {
        let e = positions.entry(p).or_insert(n);
        *e = (*e).max(n);
    }
    Ok(Archived {
        events: rows.events.len(),
        refused,
        skipped,
        newest: rows.events.iter().filter_map(|e| e.occurred_at).max(),
        positions,
    })
}

/// Serialises the sink's rollup writes (shared) with changes of the registry's grid → community
/// placement (exclusive, [`crate::queries::import_areas`]): a batch places its incidents by the
/// registry it read, and a registry change rebuilds the communities it moved grids between
/// only after every batch that placed them the old way has committed.
pub const AREAS_LOCK: i64 = 0x6172_6561_735f_726f;

/// The columns [`crate::rollup::Facts`] is read from, in its order.
pub const FACT_COLUMNS: &str = "grid_id, opened_at, source, kind, state, outcome, settled_level, \
     acknowledged_at, closed_at, escalations, reassignments, repeat_presses";

fn millis(t: SystemTime) -> Millis {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_millis() as Millis,
        Err(e) => -(e.duration().as_millis() as Millis),
    }
}

/// A row selected with [`FACT_COLUMNS`] (from column `first` on).
pub fn facts_of(row: &tokio_postgres::Row, first: usize) -> crate::rollup::Facts {
    let time = |i: usize| row.get::<_, Option<SystemTime>>(first + i).map(millis);
    crate::rollup::Facts {
        grid_id: row.get(first),
        opened_at: millis(row.get(first + 1)),
        source: row.get(first + 2),
        kind: row.get(first + 3),
        state: row.get(first + 4),
        outcome: row.get(first + 5),
        settled_level: row.get(first + 6),
        acknowledged_at: time(7),
        closed_at: time(8),
        escalations: row.get(first + 9),
        reassignments: row.get(first + 10),
        repeat_presses: row.get(first + 11),
    }
}

/// Each grid's community as the registry places it now (absent: not placed).
pub async fn communities_of(
    tx: &tokio_postgres::Transaction<'_>,
    grids: &[&str],
) -> Result<HashMap<String, String>, tokio_postgres::Error> {
    Ok(tx
        .query(
            "SELECT area_id, parent_id FROM areas WHERE level = 'grid' AND area_id = ANY($1)",
            &[&grids],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}

/// How the batch's incident upserts change the rollup: each incident's figures as archived
/// taken away, as they will be added.
async fn rollup_deltas(
    tx: &tokio_postgres::Transaction<'_>,
    rows: &BatchRows,
) -> Result<BTreeMap<crate::rollup::Key, crate::rollup::Tally>, tokio_postgres::Error> {
    if rows.incidents.is_empty() {
        return Ok(BTreeMap::new());
    }
    tx.execute("SELECT pg_advisory_xact_lock_shared($1)", &[&AREAS_LOCK])
        .await?;
    let ids: Vec<&str> = rows
        .incidents
        .iter()
        .map(|r| r.incident_id.as_str())
        .collect();
    let before: HashMap<String, crate::rollup::Facts> = tx
        .query(
            &format!(
                "SELECT incident_id, {FACT_COLUMNS} FROM incidents WHERE incident_id = ANY($1)"
            ),
            &[&ids],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), facts_of(r, 1)))
        .collect();
    let changes: Vec<(Option<crate::rollup::Facts>, crate::rollup::Facts)> = rows
        .incidents
        .iter()
        .map(|row| {
            let old = before.get(&row.incident_id);
            (old.cloned(), crate::rollup::Facts::after(old, row))
        })
        .collect();
    let mut grids: Vec<&str> = changes
        .iter()
        .flat_map(|(b, a)| b.iter().chain([a]).map(|f| f.grid_id.as_str()))
        .collect();
    grids.sort_unstable();
    grids.dedup();
    let placed = communities_of(tx, &grids).await?;
    Ok(crate::rollup::deltas(&changes, |grid| {
        placed.get(grid).cloned().unwrap_or_default()
    }))
}

/// Adds the deltas to the rollup rows (created where missing), in key order. Counts are
/// added; each array's delta pairs are appended to the row's (`||`: a copy, no SQL function
/// per row; a reader adds every pair up). Past 1 KB (128 pairs) a value is merged to one pair
/// per index as it is appended (`archive_pairs_merge`, migration 8), so the rows of a busy
/// day (a flood: ~600 incidents a community) do not grow with every batch that touches them.
async fn write_rollup(
    tx: &tokio_postgres::Transaction<'_>,
    deltas: &BTreeMap<crate::rollup::Key, crate::rollup::Tally>,
) -> Result<(), tokio_postgres::Error> {
    if deltas.is_empty() {
        return Ok(());
    }
    let days: Vec<i32> = deltas.keys().map(|k| k.0).collect();
    let communities: Vec<&str> = deltas.keys().map(|k| k.1.as_str()).collect();
    let count = |f: fn(&crate::rollup::Tally) -> i64| deltas.values().map(f).collect::<Vec<_>>();
    // Every array as its delta's pairs, appended to the row's (migration 7).
    let pairs = |f: fn(&crate::rollup::Tally) -> &Vec<i64>| {
        deltas
            .values()
            .map(|t| crate::rollup::pair_bytes(f(t)))
            .collect::<Vec<_>>()
    };
    let (requests, button, camera, closed, resolved) = (
        count(|t| t.requests),
        count(|t| t.button),
        count(|t| t.camera),
        count(|t| t.closed),
        count(|t| t.resolved),
    );
    let (escalations, reassignments, repeats) = (
        count(|t| t.escalations),
        count(|t| t.reassignments),
        count(|t| t.repeat_presses),
    );
    let (settled, outcomes, ack, close) = (
        pairs(|t| &t.settled),
        pairs(|t| &t.outcomes),
        pairs(|t| &t.ack),
        pairs(|t| &t.close),
    );
    tx.execute(
        "INSERT INTO incident_rollup AS r (day, community_id, requests, button, camera, closed, \
           resolved, escalations, reassignments, repeat_presses, settled_pairs, outcome_pairs, \
           ack_pairs, close_pairs) \
         SELECT * FROM unnest($1::int4[], $2::text[], $3::int8[], $4::int8[], $5::int8[], \
           $6::int8[], $7::int8[], $8::int8[], $9::int8[], $10::int8[], $11::bytea[], \
           $12::bytea[], $13::bytea[], $14::bytea[]) \
         ON CONFLICT (day, community_id) DO UPDATE SET \
           requests = r.requests + EXCLUDED.requests, button = r.button + EXCLUDED.button, \
           camera = r.camera + EXCLUDED.camera, closed = r.closed + EXCLUDED.closed, \
           resolved = r.resolved + EXCLUDED.resolved, \
           escalations = r.escalations + EXCLUDED.escalations, \
           reassignments = r.reassignments + EXCLUDED.reassignments, \
           repeat_presses = r.repeat_presses + EXCLUDED.repeat_presses, \
           settled_pairs = CASE WHEN length(r.settled_pairs) + length(EXCLUDED.settled_pairs) > 1024 \
             THEN archive_pairs_merge(r.settled_pairs || EXCLUDED.settled_pairs) \
             ELSE r.settled_pairs || EXCLUDED.settled_pairs END, \
           outcome_pairs = CASE WHEN length(r.outcome_pairs) + length(EXCLUDED.outcome_pairs) > 1024 \
             THEN archive_pairs_merge(r.outcome_pairs || EXCLUDED.outcome_pairs) \
             ELSE r.outcome_pairs || EXCLUDED.outcome_pairs END, \
           ack_pairs = CASE WHEN length(r.ack_pairs) + length(EXCLUDED.ack_pairs) > 1024 \
             THEN archive_pairs_merge(r.ack_pairs || EXCLUDED.ack_pairs) \
             ELSE r.ack_pairs || EXCLUDED.ack_pairs END, \
           close_pairs = CASE WHEN length(r.close_pairs) + length(EXCLUDED.close_pairs) > 1024 \
             THEN archive_pairs_merge(r.close_pairs || EXCLUDED.close_pairs) \
             ELSE r.close_pairs || EXCLUDED.close_pairs END",
        &[
            &days,
            &communities,
            &requests,
            &button,
            &camera,
            &closed,
            &resolved,
            &escalations,
            &reassignments,
            &repeats,
            &settled,
            &outcomes,
            &ack,
            &close,
        ],
    )
    .await?;
    let mut kind_days = Vec::new();
    let mut kind_communities = Vec::new();
    let mut kinds = Vec::new();
    let mut kind_counts = Vec::new();
    for ((day, community), tally) in deltas {
        for (kind, n) in tally.kinds.iter().filter(|(_, n)| **n != 0) {
            kind_days.push(*day);
            kind_communities.push(community.as_str());
            kinds.push(kind.as_str());
            kind_counts.push(*n);
        }
    }
    if !kinds.is_empty() {
        tx.execute(
            "INSERT INTO incident_rollup_kinds AS k (day, community_id, kind, requests) \
             SELECT * FROM unnest($1::int4[], $2::text[], $3::text[], $4::int8[]) \
             ON CONFLICT (day, community_id, kind) DO UPDATE SET \
               requests = k.requests + EXCLUDED.requests",
            &[&kind_days, &kind_communities, &kinds, &kind_counts],
        )
        .await?;
    }
    Ok(())
}

async fn write_rows(
    tx: &tokio_postgres::Transaction<'_>,
    rows: &BatchRows,
) -> Result<(), tokio_postgres::Error> {
    if !rows.events.is_empty() {
        let sink = tx
            .copy_in(
                "COPY incident_events (kafka_partition, kafka_offset, event_id, incident_id, \
                 grid_id, revision, change, occurred_at, cause_id, actor, record) \
                 FROM STDIN BINARY",
            )
            .await?;
        let types = [
            Type::INT4,
            Type::INT8,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::INT8,
            Type::TEXT,
            Type::TIMESTAMPTZ,
            Type::TEXT,
            Type::TEXT,
            Type::BYTEA,
        ];
        let mut writer = std::pin::pin!(BinaryCopyInWriter::new(sink, &types));
        for e in &rows.events {
            let occurred = at_opt(e.occurred_at);
            let values: [&(dyn ToSql + Sync); 11] = [
                &e.partition,
                &e.offset,
                &e.event_id,
                &e.incident_id,
                &e.grid_id,
                &e.revision,
                &e.change,
                &occurred,
                &e.cause_id,
                &e.actor,
                &e.record,
            ];
            writer.as_mut().write(&values).await?;
        }
        writer.finish().await?;
    }
    if !rows.incidents.is_empty() {
        upsert_incidents(tx, rows).await?;
    }
    if !rows.assignments.is_empty() {
        upsert_assignments(tx, rows).await?;
    }
    Ok(())
}

async fn upsert_incidents(
    tx: &tokio_postgres::Transaction<'_>,
    rows: &BatchRows,
) -> Result<(), tokio_postgres::Error> {
    let i = &rows.incidents;
    // Text columns borrow the rows' strings: a clone of each would be seven allocations per
    // incident for nothing.
    let col = |f: for<'r> fn(&'r crate::rows::IncidentRow) -> &'r str| {
        i.iter().map(f).collect::<Vec<&str>>()
    };
    let small = |f: fn(&crate::rows::IncidentRow) -> i16| i.iter().map(f).collect::<Vec<_>>();
    let time = |f: fn(&crate::rows::IncidentRow) -> Option<Millis>| {
        i.iter().map(|r| at_opt(f(r))).collect::<Vec<_>>()
    };
    let count = |f: fn(&crate::rows::IncidentRow) -> i32| i.iter().map(f).collect::<Vec<_>>();
    let ids = col(|r| r.incident_id.as_str());
    let grids = col(|r| r.grid_id.as_str());
    let states = small(|r| r.state);
    let sources = small(|r| r.source);
    let priorities = small(|r| r.priority);
    let kinds = col(|r| r.kind.as_str());
    let households = col(|r| r.household_id.as_str());
    let devices = col(|r| r.device_id.as_str());
    let cameras = col(|r| r.camera_id.as_str());
    let reported = time(|r| r.reported_at);
    let opened: Vec<SystemTime> = i.iter().map(|r| at(r.opened_at)).collect();
    let acked = time(|r| r.acknowledged_at);
    let closed = time(|r| r.closed_at);
    let resolutions = small(|r| r.resolution);
    let outcomes = small(|r| r.outcome);
    let closed_by = col(|r| r.closed_by.as_str());
    let settled: Vec<Option<i16>> = i.iter().map(|r| r.settled_level).collect();
    let revisions: Vec<i64> = i.iter().map(|r| r.revision).collect();
    let escalations = count(|r| r.escalations);
    let reassignments = count(|r| r.reassignments);
    let repeats = count(|r| r.repeat_presses);
    let snapshots: Vec<&[u8]> = i.iter().map(|r| r.snapshot.as_slice()).collect();
    // Personal fields of an incident already pseudonymised stay pseudonymised even if a late
    // event for it arrives.
    tx.execute(
        "INSERT INTO incidents (incident_id, grid_id, state, source, priority, kind, \
           household_id, device_id, camera_id, reported_at, opened_at, acknowledged_at, \
           closed_at, resolution, closed_by, settled_level, revision, escalations, \
           reassignments, repeat_presses, snapshot, outcome) \
         SELECT * FROM unnest($1::text[], $2::text[], $3::int2[], $4::int2[], $5::int2[], \
           $6::text[], $7::text[], $8::text[], $9::text[], $10::timestamptz[], \
           $11::timestamptz[], $12::timestamptz[], $13::timestamptz[], $14::int2[], $15::text[], \
           $16::int2[], $17::int8[], $18::int4[], $19::int4[], $20::int4[], $21::bytea[], \
           $22::int2[]) \
         ON CONFLICT (incident_id) DO UPDATE SET \
           grid_id = EXCLUDED.grid_id, state = EXCLUDED.state, source = EXCLUDED.source, \
           priority = EXCLUDED.priority, kind = EXCLUDED.kind, \
           household_id = CASE WHEN incidents.pseudonymised_at IS NULL \
             THEN EXCLUDED.household_id ELSE incidents.household_id END, \
           device_id = CASE WHEN incidents.pseudonymised_at IS NULL \
             THEN EXCLUDED.device_id ELSE incidents.device_id END, \
           camera_id = EXCLUDED.camera_id, reported_at = EXCLUDED.reported_at, \
           opened_at = EXCLUDED.opened_at, acknowledged_at = EXCLUDED.acknowledged_at, \
           closed_at = EXCLUDED.closed_at, resolution = EXCLUDED.resolution, \
           outcome = EXCLUDED.outcome, \
           closed_by = EXCLUDED.closed_by, settled_level = EXCLUDED.settled_level, \
           revision = EXCLUDED.revision, \
           escalations = incidents.escalations + EXCLUDED.escalations, \
           reassignments = incidents.reassignments + EXCLUDED.reassignments, \
           repeat_presses = incidents.repeat_presses + EXCLUDED.repeat_presses, \
           snapshot = CASE WHEN incidents.pseudonymised_at IS NULL \
             THEN EXCLUDED.snapshot ELSE incidents.snapshot END",
        &[
            &ids,
            &grids,
            &states,
            &sources,
            &priorities,
            &kinds,
            &households,
            &devices,
            &cameras,
            &reported,
            &opened,
            &acked,
            &closed,
            &resolutions,
            &closed_by,
            &settled,
            &revisions,
            &escalations,
            &reassignments,
            &repeats,
            &snapshots,
            &outcomes,
        ],
    )
    .await?;
    Ok(())
}

async fn upsert_assignments(
    tx: &tokio_postgres::Transaction<'_>,
    rows: &BatchRows,
) -> Result<(), tokio_postgres::Error> {
    let a = &rows.assignments;
    let ids: Vec<&str> = a.iter().map(|r| r.incident_id.as_str()).collect();
    let tracks: Vec<i16> = a.iter().map(|r| r.track).collect();
    let levels: Vec<i16> = a.iter().map(|r| r.level).collect();
    let attempts: Vec<i32> = a.iter().map(|r| r.attempt).collect();
    let responders: Vec<&str> = a.iter().map(|r| r.responder_id.as_str()).collect();
    let roles: Vec<i16> = a.iter().map(|r| r.responder_role).collect();
    let assigned: Vec<Option<SystemTime>> = a.iter().map(|r| at_opt(r.assigned_at)).collect();
    let acked: Vec<Option<SystemTime>> = a.iter().map(|r| at_opt(r.acknowledged_at)).collect();
    let acked_by: Vec<&str> = a.iter().map(|r| r.acknowledged_by.as_str()).collect();
    tx.execute(
        "INSERT INTO assignments (incident_id, track, level, attempt, responder_id, \
           responder_role, assigned_at, acknowledged_at, acknowledged_by) \
         SELECT * FROM unnest($1::text[], $2::int2[], $3::int2[], $4::int4[], $5::text[], \
           $6::int2[], $7::timestamptz[], $8::timestamptz[], $9::text[]) \
         ON CONFLICT (incident_id, track, level, attempt) DO UPDATE SET \
           responder_id = EXCLUDED.responder_id, responder_role = EXCLUDED.responder_role, \
           assigned_at = EXCLUDED.assigned_at, acknowledged_at = EXCLUDED.acknowledged_at, \
           acknowledged_by = EXCLUDED.acknowledged_by",
        &[
            &ids,
            &tracks,
            &levels,
            &attempts,
            &responders,
            &roles,
            &assigned,
            &acked,
            &acked_by,
        ],
    )
    .await?;
    Ok(())
}

/// Pseudonymises up to `limit` incidents closed before `cutoff` that are not yet, with their
/// event records, in one transaction. Returns how many incidents it did.
pub async fn pseudonymise_due(
    client: &mut Client,
    cutoff: SystemTime,
    key: &ring::hmac::Key,
    limit: i64,
) -> Result<u64, tokio_postgres::Error> {
    use crate::privacy::{scrub_event, scrub_incident};
    use helpgrid_proto::pb::Incident;
    use prost::Message;
    let tx = client.transaction().await?;
    let due = tx
        .query(
            "SELECT incident_id, snapshot FROM incidents \
             WHERE pseudonymised_at IS NULL AND closed_at < $1 \
             ORDER BY closed_at LIMIT $2 FOR UPDATE SKIP LOCKED",
            &[&cutoff, &limit],
        )
        .await?;
    if due.is_empty() {
        return Ok(0);
    }
    let mut ids = Vec::new();
    let mut households = Vec::new();
    let mut devices = Vec::new();
    let mut snapshots = Vec::new();
    for row in &due {
        let id: String = row.get(0);
        let Ok(mut incident) = Incident::decode(row.get::<_, &[u8]>(1)) else {
            tracing::warn!(incident_id = %id, "archived snapshot does not decode; not pseudonymised");
            continue;
        };
        scrub_incident(key, &mut incident);
        households.push(incident.household_id.clone());
        devices.push(incident.device_id.clone());
        snapshots.push(incident.encode_to_vec());
        ids.push(id);
    }
    tx.execute(
        "UPDATE incidents AS i SET household_id = u.h, device_id = u.d, snapshot = u.s, \
           pseudonymised_at = now() \
         FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[]) AS u(id, h, d, s) \
         WHERE i.incident_id = u.id",
        &[&ids, &households, &devices, &snapshots],
    )
    .await?;
    let events = tx
        .query(
            "SELECT kafka_partition, kafka_offset, record FROM incident_events \
             WHERE incident_id = ANY($1)",
            &[&ids],
        )
        .await?;
    let mut parts = Vec::new();
    let mut offsets = Vec::new();
    let mut records = Vec::new();
    for row in &events {
        if let Some(record) = scrub_event(key, row.get::<_, &[u8]>(2)) {
            parts.push(row.get::<_, i32>(0));
            offsets.push(row.get::<_, i64>(1));
            records.push(record);
        }
    }
    tx.execute(
        "UPDATE incident_events AS e SET record = u.r \
         FROM unnest($1::int4[], $2::int8[], $3::bytea[]) AS u(p, o, r) \
         WHERE e.kafka_partition = u.p AND e.kafka_offset = u.o",
        &[&parts, &offsets, &records],
    )
    .await?;
    tx.commit().await?;
    Ok(ids.len() as u64)
}
