//! History and report queries against the archive's tables. The SQL lives here; requests
//! arrive checked ([`crate::requests`]) and scoped ([`crate::access`]).

use crate::access::GridFilter;
use crate::areas::AreaTree;
use crate::requests::{Cursor, HistoryQuery, Period, ReportQuery};
use crate::rollup::{self, DAY_MS, Tally};
use crate::rows::resolving_outcomes;
use crate::store;
use crate::store::at;
use helpgrid_common::time::{Millis, to_timestamp};
use helpgrid_proto::outcome::OUTCOMES;
use helpgrid_proto::pb::{
    ArchivedIncident, EscalationLevel, Incident, IncidentEvent, IncidentOutcome, KindCount,
    LevelShare, OutcomeCount, Report, ReportFigures, ReportPoint,
};
use prost::Message;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::Mutex;
use tokio_postgres::Client;
use tokio_postgres::types::ToSql;

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("the archive database is unavailable or refused the query: {}", db_message(.0))]
    Database(#[from] tokio_postgres::Error),
    #[error("incident {0} is not in the archive")]
    NotFound(String),
    #[error("incident {incident} is in grid {grid}, outside your grids")]
    OutOfScope { incident: String, grid: String },
    #[error("archived data cannot be decoded: {0}")]
    Corrupt(String),
}

impl From<QueryError> for tonic::Status {
    fn from(error: QueryError) -> Self {
        match &error {
            QueryError::Database(_) => tonic::Status::unavailable(error.to_string()),
            QueryError::NotFound(_) => tonic::Status::not_found(error.to_string()),
            QueryError::OutOfScope { .. } => tonic::Status::permission_denied(error.to_string()),
            QueryError::Corrupt(_) => tonic::Status::internal(error.to_string()),
        }
    }
}

/// PostgreSQL's own message where there is one ("db error" alone helps nobody).
fn db_message(error: &tokio_postgres::Error) -> String {
    error
        .as_db_error()
        .map_or_else(|| error.to_string(), |db| db.message().to_owned())
}

/// One shared connection for reads (tokio-postgres pipelines concurrent queries on it),
/// re-opened when it drops.
#[derive(Debug)]
pub struct Db {
    url: String,
    client: Mutex<Option<Arc<Client>>>,
}

impl Db {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            client: Mutex::new(None),
        }
    }

    pub async fn client(&self) -> Result<Arc<Client>, QueryError> {
        let mut held = self.client.lock().await;
        if let Some(client) = held.as_ref().filter(|c| !c.is_closed()) {
            return Ok(Arc::clone(client));
        }
        let client = crate::store::connect(&self.url).await?;
        // A report sorts an area's incidents of the period for its percentiles (a county's
        // month: ~80,000 rows, ~4 MB): in memory rather than in temporary files.
        client.batch_execute(READ_SESSION).await?;
        let client = Arc::new(client);
        *held = Some(Arc::clone(&client));
        Ok(client)
    }
}

/// Settings of the read connection.
const READ_SESSION: &str = "SET work_mem = '32MB'";

type Params = Vec<Box<dyn ToSql + Sync + Send>>;

fn param(params: &mut Params, value: impl ToSql + Sync + Send + 'static) -> String {
    params.push(Box::new(value));
    format!("${}", params.len())
}

fn refs(params: &Params) -> Vec<&(dyn ToSql + Sync)> {
    params
        .iter()
        .map(|p| p.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

/// One statement as a query sends it: its SQL and its parameters (the query benchmark
/// EXPLAINs exactly these).
pub struct Statement {
    pub sql: String,
    params: Params,
}

impl Statement {
    /// A statement of SQL with `$1…` bound to `params` (benchmarks build their baselines' so).
    pub fn new(sql: impl Into<String>, params: Vec<Box<dyn ToSql + Sync + Send>>) -> Self {
        Statement {
            sql: sql.into(),
            params,
        }
    }

    pub fn args(&self) -> Vec<&(dyn ToSql + Sync)> {
        refs(&self.params)
    }
}

/// `opened_at` in the period and the grid in the filter.
fn scope_clause(period: Period, grids: &GridFilter, params: &mut Params) -> String {
    let from = param(params, at(period.from));
    let to = param(params, at(period.to));
    let mut clause = format!("opened_at >= {from} AND opened_at < {to}");
    if let GridFilter::Only(grids) = grids {
        let list: Vec<String> = grids.iter().cloned().collect();
        let p = param(params, list);
        clause.push_str(&format!(" AND grid_id = ANY({p})"));
    }
    clause
}

fn millis(t: SystemTime) -> Millis {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_millis() as Millis,
        Err(e) => -(e.duration().as_millis() as Millis),
    }
}

fn archived(row: &tokio_postgres::Row) -> Result<ArchivedIncident, QueryError> {
    let snapshot: &[u8] = row.get("snapshot");
    let incident =
        Incident::decode(snapshot).map_err(|e| QueryError::Corrupt(format!("incident: {e}")))?;
    Ok(ArchivedIncident {
        incident: Some(incident),
        settled_level: row
            .get::<_, Option<i16>>("settled_level")
            .map_or(0, i32::from),
        escalations: row.get::<_, i32>("escalations") as u32,
        reassignments: row.get::<_, i32>("reassignments") as u32,
        repeat_presses: row.get::<_, i32>("repeat_presses") as u32,
        pseudonymised: row
            .get::<_, Option<SystemTime>>("pseudonymised_at")
            .is_some(),
    })
}

const INCIDENT_COLUMNS: &str = "incident_id, grid_id, opened_at, snapshot, settled_level, \
     escalations, reassignments, repeat_presses, pseudonymised_at";

/// One page of incidents, newest first, and the cursor of the next page.
pub async fn list_incidents(
    db: &Client,
    query: &HistoryQuery,
    grids: &GridFilter,
) -> Result<(Vec<ArchivedIncident>, Option<Cursor>), QueryError> {
    if matches!(grids, GridFilter::Only(g) if g.is_empty()) {
        return Ok((Vec::new(), None));
    }
    let statement = list_statement(query, grids);
    let rows = db.query(&statement.sql, &statement.args()).await?;
    let more = rows.len() > query.page_size as usize;
    let page = &rows[..rows.len().min(query.page_size as usize)];
    let next = match (more, page.last()) {
        (true, Some(last)) => Some(Cursor {
            opened_at: millis(last.get("opened_at")),
            incident_id: last.get("incident_id"),
        }),
        _ => None,
    };
    let incidents = page.iter().map(archived).collect::<Result<_, _>>()?;
    Ok((incidents, next))
}

/// The SELECT behind [`list_incidents`]: one page (and one row more) newest first. The page's
/// keys come from an index alone (every filter column is in the indexes, migration 3), then
/// only those rows are read: a page costs the same on 10 million incidents as on 1,000.
pub fn list_statement(query: &HistoryQuery, grids: &GridFilter) -> Statement {
    let mut params: Params = Vec::new();
    let mut sql = format!(
        "SELECT opened_at, incident_id FROM incidents WHERE {}",
        scope_clause(query.period, grids, &mut params)
    );
    if let Some(source) = query.source {
        sql.push_str(&format!(" AND source = {}", param(&mut params, source)));
    }
    if let Some(kind) = &query.kind {
        sql.push_str(&format!(" AND kind = {}", param(&mut params, kind.clone())));
    }
    if let Some(state) = query.state {
        sql.push_str(&format!(" AND state = {}", param(&mut params, state)));
    }
    if let Some(resolution) = query.resolution {
        sql.push_str(&format!(
            " AND resolution = {}",
            param(&mut params, resolution)
        ));
    }
    if let Some(outcome) = query.outcome {
        sql.push_str(&format!(" AND outcome = {}", param(&mut params, outcome)));
    }
    if let Some(after) = &query.after {
        let t = param(&mut params, at(after.opened_at));
        let id = param(&mut params, after.incident_id.clone());
        sql.push_str(&format!(" AND (opened_at, incident_id) < ({t}, {id})"));
    }
    let limit = param(&mut params, i64::from(query.page_size) + 1);
    sql.push_str(&format!(
        " ORDER BY opened_at DESC, incident_id DESC LIMIT {limit}"
    ));
    let columns: Vec<String> = INCIDENT_COLUMNS
        .split(", ")
        .map(|c| format!("i.{}", c.trim()))
        .collect();
    let sql = format!(
        "WITH page AS ({sql}) SELECT {} FROM page JOIN incidents i USING (incident_id) \
         ORDER BY page.opened_at DESC, page.incident_id DESC",
        columns.join(", ")
    );
    Statement { sql, params }
}

/// The incident and every event of it, in order; `covers` says whether the caller may see
/// the incident's grid.
pub async fn incident_history(
    db: &Client,
    incident_id: &str,
    covers: impl Fn(&str) -> bool,
) -> Result<(ArchivedIncident, Vec<IncidentEvent>), QueryError> {
    let row = db
        .query_opt(
            &format!("SELECT {INCIDENT_COLUMNS} FROM incidents WHERE incident_id = $1"),
            &[&incident_id],
        )
        .await?
        .ok_or_else(|| QueryError::NotFound(incident_id.to_owned()))?;
    let grid: String = row.get("grid_id");
    if !covers(&grid) {
        return Err(QueryError::OutOfScope {
            incident: incident_id.to_owned(),
            grid,
        });
    }
    let incident = archived(&row)?;
    let events = db
        .query(
            "SELECT record FROM incident_events WHERE incident_id = $1 \
             ORDER BY revision, kafka_partition, kafka_offset",
            &[&incident_id],
        )
        .await?
        .iter()
        .map(|r| {
            IncidentEvent::decode(r.get::<_, &[u8]>(0))
                .map_err(|e| QueryError::Corrupt(format!("event: {e}")))
        })
        .collect::<Result<_, _>>()?;
    Ok((incident, events))
}

/// The report: totals and one point per bucket. Definitions: README, "Report definitions".
///
/// Whole UTC days of whole communities come from the rollup (3,900 rows for a county's
/// month); partial days at either end, and grids that do not make up a whole community, from
/// the incidents themselves. Both become the same per-day [`rollup::Tally`], added up.
pub async fn report(
    db: &Client,
    query: &ReportQuery,
    grids: &GridFilter,
    areas: &AreaTree,
) -> Result<Report, QueryError> {
    if matches!(grids, GridFilter::Only(g) if g.is_empty()) {
        return Ok(rollup::report(&BTreeMap::new(), query.bucket));
    }
    let plan = report_plan(query.period, grids, areas);
    let statements = plan_statements(&plan);
    let args: Vec<Vec<&(dyn ToSql + Sync)>> = statements.iter().map(|(_, s)| s.args()).collect();
    let answers = futures::future::try_join_all(
        statements
            .iter()
            .zip(&args)
            .map(|((_, s), a)| db.query(&s.sql, a)),
    )
    .await?;
    let mut days: BTreeMap<i32, Tally> = BTreeMap::new();
    for ((part, _), rows) in statements.iter().zip(&answers) {
        for row in rows {
            match part {
                Part::Rollup => {
                    // One row per day: PostgreSQL has added the communities' rows up (their
                    // pairs one after another).
                    let day = days.entry(row.get("day")).or_default();
                    day.requests += row.get::<_, i64>("requests");
                    day.button += row.get::<_, i64>("button");
                    day.camera += row.get::<_, i64>("camera");
                    day.closed += row.get::<_, i64>("closed");
                    day.resolved += row.get::<_, i64>("resolved");
                    day.escalations += row.get::<_, i64>("escalations");
                    day.reassignments += row.get::<_, i64>("reassignments");
                    day.repeat_presses += row.get::<_, i64>("repeat_presses");
                    for (into, column) in [
                        (&mut day.settled, "settled"),
                        (&mut day.outcomes, "outcomes"),
                        (&mut day.ack, "ack"),
                        (&mut day.close, "close"),
                    ] {
                        let pairs = row.get::<_, Option<&[u8]>>(column).unwrap_or_default();
                        rollup::add_pair_bytes(into, pairs)
                            .map_err(|e| QueryError::Corrupt(format!("{column}: {e}")))?;
                    }
                }
                Part::RollupKinds => {
                    *days
                        .entry(row.get("day"))
                        .or_default()
                        .kinds
                        .entry(row.get("kind"))
                        .or_default() += row.get::<_, i64>("requests");
                }
                Part::Detail => {
                    let facts = store::facts_of(row, 0);
                    days.entry(facts.day()).or_default().add(&facts.tally(), 1);
                }
            }
        }
    }
    Ok(rollup::report(&days, query.bucket))
}

/// Where a report's figures come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportPlan {
    /// Whole UTC days `[from, to)` (days since 1970-01-01) read from the rollup, of these
    /// communities (`None`: every one), when there are any.
    pub rollup: Option<(i32, i32, Option<Vec<String>>)>,
    /// Periods and grids read from the incidents.
    pub detail: Vec<(Period, GridFilter)>,
}

/// Splits a report's period and grids between the rollup and the incidents: pure.
pub fn report_plan(period: Period, grids: &GridFilter, areas: &AreaTree) -> ReportPlan {
    let (communities, rest) = match grids {
        GridFilter::All => (None, BTreeSet::new()),
        GridFilter::Only(grids) => {
            let (whole, rest) = whole_communities(grids, areas);
            (Some(whole), rest)
        }
    };
    let first = period.from.div_euclid(DAY_MS) + i64::from(period.from.rem_euclid(DAY_MS) != 0);
    let end = period.to.div_euclid(DAY_MS);
    if first >= end {
        return ReportPlan {
            rollup: None,
            detail: vec![(period, grids.clone())],
        };
    }
    let mut detail = Vec::new();
    if period.from < first * DAY_MS {
        detail.push((
            Period {
                from: period.from,
                to: first * DAY_MS,
            },
            grids.clone(),
        ));
    }
    if !rest.is_empty() {
        detail.push((
            Period {
                from: first * DAY_MS,
                to: end * DAY_MS,
            },
            GridFilter::Only(rest),
        ));
    }
    if end * DAY_MS < period.to {
        detail.push((
            Period {
                from: end * DAY_MS,
                to: period.to,
            },
            grids.clone(),
        ));
    }
    let rollup = match communities {
        Some(c) if c.is_empty() => None,
        c => Some((first as i32, end as i32, c)),
    };
    ReportPlan { rollup, detail }
}

/// The communities all of whose grids are in `grids` (the rollup has them whole), and the
/// other grids. A grid belongs to the community the registry places it under, as the rollup
/// counts it (`areas` row of level grid, its parent).
fn whole_communities(
    grids: &BTreeSet<String>,
    areas: &AreaTree,
) -> (Vec<String>, BTreeSet<String>) {
    let placed = |grid: &str| {
        areas
            .parent(grid)
            .filter(|_| areas.level(grid) == "grid")
            .map(str::to_owned)
    };
    let mut candidates: BTreeSet<String> = BTreeSet::new();
    let mut rest = BTreeSet::new();
    for grid in grids {
        match placed(grid) {
            Some(community) => {
                candidates.insert(community);
            }
            None => {
                rest.insert(grid.clone());
            }
        }
    }
    let mut whole = Vec::new();
    for community in candidates {
        let members: Vec<&String> = areas
            .children(&community)
            .iter()
            .filter(|g| placed(g).as_deref() == Some(community.as_str()))
            .collect();
        if members.iter().all(|g| grids.contains(*g)) {
            whole.push(community);
        } else {
            rest.extend(members.into_iter().filter(|g| grids.contains(*g)).cloned());
        }
    }
    (whole, rest)
}

/// Which statement of a plan a row comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Rollup,
    RollupKinds,
    Detail,
}

/// The statements of a plan (the query benchmark EXPLAINs exactly these), run concurrently.
pub fn plan_statements(plan: &ReportPlan) -> Vec<(Part, Statement)> {
    let mut out = Vec::new();
    if let Some((from, to, communities)) = &plan.rollup {
        // Added up per day by PostgreSQL (a county's month: 30 rows out instead of 3,900, and
        // ~150 kind rows instead of 13,500): sums, and the pairs of the day's rows one after
        // another (`string_agg` of bytea: a copy, no per-element work).
        for (part, columns, table, group) in [
            (
                Part::Rollup,
                "day, sum(requests)::int8 AS requests, sum(button)::int8 AS button, \
                 sum(camera)::int8 AS camera, sum(closed)::int8 AS closed, \
                 sum(resolved)::int8 AS resolved, sum(escalations)::int8 AS escalations, \
                 sum(reassignments)::int8 AS reassignments, \
                 sum(repeat_presses)::int8 AS repeat_presses, \
                 string_agg(settled_pairs, ''::bytea) AS settled, \
                 string_agg(outcome_pairs, ''::bytea) AS outcomes, \
                 string_agg(ack_pairs, ''::bytea) AS ack, \
                 string_agg(close_pairs, ''::bytea) AS close",
                "incident_rollup",
                " GROUP BY day",
            ),
            (
                Part::RollupKinds,
                "day, kind, sum(requests)::int8 AS requests",
                "incident_rollup_kinds",
                " GROUP BY day, kind",
            ),
        ] {
            let mut params: Params = Vec::new();
            let mut sql = format!(
                "SELECT {columns} FROM {table} WHERE day >= {} AND day < {}",
                param(&mut params, *from),
                param(&mut params, *to)
            );
            if let Some(c) = communities {
                let p = param(&mut params, c.clone());
                sql.push_str(&format!(" AND community_id = ANY({p})"));
            }
            sql.push_str(group);
            out.push((part, Statement { sql, params }));
        }
    }
    for (period, grids) in &plan.detail {
        let mut params: Params = Vec::new();
        let sql = format!(
            "SELECT {} FROM incidents WHERE {}",
            store::FACT_COLUMNS,
            scope_clause(*period, grids, &mut params)
        );
        out.push((Part::Detail, Statement { sql, params }));
    }
    out
}

/// The report computed from the incidents alone, with exact percentiles (`percentile_disc`):
/// the reference the rollup's figures are checked against (tests/rollup.rs) and the baseline
/// of the query benchmark. The API answers with [`report`].
pub async fn detail_report(
    db: &Client,
    query: &ReportQuery,
    grids: &GridFilter,
) -> Result<Report, QueryError> {
    if matches!(grids, GridFilter::Only(g) if g.is_empty()) {
        return Ok(Report {
            total: Some(ReportFigures::default()),
            series: Vec::new(),
        });
    }
    let [figures, kinds, levels] = report_statements(query, grids);
    let (figure_args, kind_args, level_args) = (figures.args(), kinds.args(), levels.args());
    let (figures, kinds, levels) = tokio::try_join!(
        db.query(&figures.sql, &figure_args),
        db.query(&kinds.sql, &kind_args),
        db.query(&levels.sql, &level_args),
    )?;
    report_from_rows(&figures, &kinds, &levels)
}

/// The three SELECTs behind [`detail_report`] (figures, kinds, settled levels and outcomes),
/// run concurrently.
pub fn report_statements(query: &ReportQuery, grids: &GridFilter) -> [Statement; 3] {
    // Each statement gets exactly the parameters it uses (an unused one has no type).
    let base = || {
        let mut params: Params = Vec::new();
        let bucket = param(&mut params, query.bucket.sql().to_owned());
        let scope = scope_clause(query.period, grids, &mut params);
        // Buckets are UTC days, ISO weeks (from Monday) and calendar months.
        (
            params,
            format!("date_trunc({bucket}, opened_at, 'UTC')"),
            scope,
        )
    };
    let (mut figure_params, b, scope) = base();
    let resolving = param(&mut figure_params, resolving_outcomes());
    let figures_sql = format!(
        "SELECT {b} AS bucket, GROUPING({b}) AS is_total, \
           count(*) AS requests, \
           count(*) FILTER (WHERE source = 1) AS button, \
           count(*) FILTER (WHERE source = 2) AS camera, \
           count(*) FILTER (WHERE state = 4) AS closed, \
           count(*) FILTER (WHERE state = 4 AND outcome = ANY({resolving})) AS resolved, \
           percentile_disc(0.5) WITHIN GROUP (ORDER BY ack_ms) AS ack_p50, \
           percentile_disc(0.9) WITHIN GROUP (ORDER BY ack_ms) AS ack_p90, \
           percentile_disc(0.5) WITHIN GROUP (ORDER BY close_ms) AS close_p50, \
           percentile_disc(0.9) WITHIN GROUP (ORDER BY close_ms) AS close_p90, \
           coalesce(sum(escalations), 0)::int8 AS escalations, \
           coalesce(sum(reassignments), 0)::int8 AS reassignments, \
           coalesce(sum(repeat_presses), 0)::int8 AS repeat_presses \
         FROM (SELECT *, \
             (extract(epoch FROM acknowledged_at - opened_at) * 1000)::int8 AS ack_ms, \
             (extract(epoch FROM closed_at - opened_at) * 1000)::int8 AS close_ms \
           FROM incidents WHERE {scope}) AS i \
         GROUP BY GROUPING SETS (({b}), ())"
    );
    let (kind_params, b, scope) = base();
    let kinds_sql = format!(
        "SELECT {b} AS bucket, GROUPING({b}) AS is_total, kind, count(*) AS n \
         FROM incidents WHERE {scope} GROUP BY GROUPING SETS (({b}, kind), (kind))"
    );
    let (level_params, b, scope) = base();
    let levels_sql = format!(
        "SELECT {b} AS bucket, GROUPING({b}) AS is_total, settled_level, outcome, \
           count(*) AS n \
         FROM incidents WHERE {scope} AND state = 4 \
         GROUP BY GROUPING SETS (({b}, settled_level, outcome), (settled_level, outcome))"
    );
    [
        Statement {
            sql: figures_sql,
            params: figure_params,
        },
        Statement {
            sql: kinds_sql,
            params: kind_params,
        },
        Statement {
            sql: levels_sql,
            params: level_params,
        },
    ]
}

fn report_from_rows(
    figures: &[tokio_postgres::Row],
    kinds: &[tokio_postgres::Row],
    levels: &[tokio_postgres::Row],
) -> Result<Report, QueryError> {
    // Key: None for the total, Some(bucket start) for a point.
    let key = |row: &tokio_postgres::Row| -> Option<Millis> {
        (row.get::<_, i32>("is_total") == 0)
            .then(|| row.get::<_, Option<SystemTime>>("bucket").map(millis))
            .flatten()
    };
    let mut points: BTreeMap<Option<Millis>, ReportFigures> = BTreeMap::new();
    let ms = |row: &tokio_postgres::Row, name: &str| {
        row.get::<_, Option<i64>>(name).unwrap_or(0).max(0) as u64
    };
    for row in figures {
        let requests = row.get::<_, i64>("requests") as u64;
        let resolved = row.get::<_, i64>("resolved") as u64;
        points.insert(
            key(row),
            ReportFigures {
                requests,
                button_requests: row.get::<_, i64>("button") as u64,
                camera_requests: row.get::<_, i64>("camera") as u64,
                closed: row.get::<_, i64>("closed") as u64,
                resolved,
                resolution_rate: if requests == 0 {
                    0.0
                } else {
                    resolved as f64 / requests as f64
                },
                ack_p50_ms: ms(row, "ack_p50"),
                ack_p90_ms: ms(row, "ack_p90"),
                close_p50_ms: ms(row, "close_p50"),
                close_p90_ms: ms(row, "close_p90"),
                escalations: row.get::<_, i64>("escalations") as u64,
                reassignments: row.get::<_, i64>("reassignments") as u64,
                repeat_presses: row.get::<_, i64>("repeat_presses") as u64,
                ..ReportFigures::default()
            },
        );
    }
    for row in kinds {
        if let Some(f) = points.get_mut(&key(row)) {
            f.by_kind.push(KindCount {
                kind: row.get("kind"),
                count: row.get::<_, i64>("n") as u64,
            });
        }
    }
    // Closed incidents per (bucket, level) and per (bucket, outcome), from one grouping.
    let mut settled: BTreeMap<(Option<Millis>, i32), u64> = BTreeMap::new();
    let mut ended: BTreeMap<(Option<Millis>, i32), u64> = BTreeMap::new();
    for row in levels {
        let n = row.get::<_, i64>("n") as u64;
        let level = row
            .get::<_, Option<i16>>("settled_level")
            .map_or(EscalationLevel::Unspecified as i32, i32::from);
        *settled.entry((key(row), level)).or_default() += n;
        *ended
            .entry((key(row), i32::from(row.get::<_, i16>("outcome"))))
            .or_default() += n;
    }
    let share = |n: u64, closed: u64| {
        if closed == 0 {
            0.0
        } else {
            n as f64 / closed as f64
        }
    };
    for ((k, level), n) in settled {
        if let Some(f) = points.get_mut(&k) {
            f.settled_at.push(LevelShare {
                level,
                settled: n,
                share: share(n, f.closed),
            });
        }
    }
    for (k, f) in &mut points {
        // Every outcome, zeros included; 0 (closed before outcomes, no resolution) last.
        f.by_outcome = OUTCOMES
            .iter()
            .map(|o| *o as i32)
            .chain([IncidentOutcome::Unspecified as i32])
            .filter_map(|outcome| {
                let n = ended.get(&(*k, outcome)).copied().unwrap_or(0);
                (outcome != 0 || n > 0).then(|| OutcomeCount {
                    outcome,
                    closed: n,
                    share: share(n, f.closed),
                })
            })
            .collect();
    }
    for f in points.values_mut() {
        f.by_kind.sort_by(|a, b| a.kind.cmp(&b.kind));
        f.settled_at.sort_by_key(|l| l.level);
    }
    let total = points.remove(&None).unwrap_or_default();
    Ok(Report {
        total: Some(total),
        series: points
            .into_iter()
            .filter_map(|(k, figures)| {
                k.map(|start| ReportPoint {
                    start: Some(to_timestamp(start)),
                    figures: Some(figures),
                })
            })
            .collect(),
    })
}

/// Writes `areas` into the registry (new ones added, existing ones replaced), in one
/// transaction.
pub async fn import_areas(
    client: &mut Client,
    areas: &[crate::areas::Area],
) -> Result<u64, tokio_postgres::Error> {
    let ids: Vec<&str> = areas.iter().map(|a| a.area_id.as_str()).collect();
    let parents: Vec<&str> = areas.iter().map(|a| a.parent_id.as_str()).collect();
    let levels: Vec<&str> = areas.iter().map(|a| a.level.as_str()).collect();
    let names: Vec<&str> = areas.iter().map(|a| a.name.as_str()).collect();
    let tx = client.transaction().await?;
    // Waits for batches that placed grids by the registry as it was (see store::AREAS_LOCK).
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&store::AREAS_LOCK])
        .await?;
    let before = store::communities_of(&tx, &ids).await?;
    let written = tx
        .execute(
            "INSERT INTO areas (area_id, parent_id, level, name) \
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) \
             ON CONFLICT (area_id) DO UPDATE SET parent_id = EXCLUDED.parent_id, \
               level = EXCLUDED.level, name = EXCLUDED.name",
            &[&ids, &parents, &levels, &names],
        )
        .await?;
    // Grids now placed under another community (or placed for the first time): the rollup
    // counted their incidents under the old one, so both are rebuilt from the incidents.
    let after = store::communities_of(&tx, &ids).await?;
    let moved: Vec<&str> = ids
        .iter()
        .copied()
        .filter(|id| before.get(*id) != after.get(*id))
        .collect();
    if !moved.is_empty()
        && tx
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM incidents WHERE grid_id = ANY($1))",
                &[&moved],
            )
            .await?
            .get::<_, bool>(0)
    {
        let mut communities: Vec<String> = moved
            .iter()
            .flat_map(|g| [before.get(*g), after.get(*g)])
            .map(|c| c.cloned().unwrap_or_default())
            .collect();
        communities.sort_unstable();
        communities.dedup();
        tracing::info!(
            grids = moved.len(),
            ?communities,
            "grids moved: rebuilding their communities' rollup"
        );
        tx.execute("SELECT archive_rollup_build($1)", &[&communities])
            .await?;
    }
    tx.commit().await?;
    Ok(written)
}

/// The registry as it is in the database.
pub async fn load_areas(client: &Client) -> Result<crate::areas::AreaTree, tokio_postgres::Error> {
    let rows = client
        .query("SELECT area_id, parent_id, level, name FROM areas", &[])
        .await?;
    let areas: Vec<crate::areas::Area> = rows
        .iter()
        .map(|r| crate::areas::Area {
            area_id: r.get(0),
            parent_id: r.get(1),
            level: r.get(2),
            name: r.get(3),
        })
        .collect();
    Ok(crate::areas::AreaTree::from_areas(&areas))
}
