//! The report page, its data and the CSV export, over HTTP on `--http-listen`.
//!
//! - `GET /reports?token=<token>` stores the token in an HttpOnly cookie and redirects to
//!   `/reports`, so it leaves the address bar; `GET /reports` serves the page to a caller
//!   with that cookie or an `authorization: Bearer` header.
//! - `GET /reports/data.json?from=YYYY-MM-DD&to=YYYY-MM-DD&area=<id>&bucket=day|week|month`
//!   the report as JSON (the page draws its SVG charts from it; no CDN, no chart library).
//! - `GET /reports/export.csv?...` the same report as CSV: one row per bucket and a total.
//!
//! The same token rules as gRPC: supervisor, console and admin tokens, limited to their grids.
//! Reports hold counts and durations only, never a household, device, name or note.

use crate::access::{AccessError, Caller, Gate};
use crate::areas::AreaTree;
use crate::queries::{self, Db, QueryError};
use crate::requests::{Bucket, Invalid, Period, report_checked};
use axum::Router;
use axum::extract::{Query, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use helpgrid_common::time::{Millis, from_timestamp};
use helpgrid_proto::outcome::OUTCOMES;
use helpgrid_proto::pb::{EscalationLevel, IncidentOutcome, Report, ReportFigures};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::RwLock;
use tokio_util::sync::CancellationToken;

const PAGE: &str = include_str!("report_page.html");
const COOKIE: &str = "helpgrid_report_token";
const DAY_MS: i64 = 86_400_000;

#[derive(Clone)]
pub struct Site {
    pub db: Arc<Db>,
    pub gate: Gate,
    pub areas: Arc<RwLock<AreaTree>>,
}

pub async fn serve(listener: TcpListener, site: Site, stop: CancellationToken) {
    let app = Router::new()
        .route("/reports", get(page))
        .route("/reports/data.json", get(data))
        .route("/reports/export.csv", get(csv))
        .with_state(site);
    if let Err(error) = axum::serve(listener, app)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
    {
        tracing::error!(%error, "the report page server failed");
    }
}

/// Why an HTTP request fails, and its status.
enum Refusal {
    Access(AccessError),
    Invalid(Invalid),
    Query(QueryError),
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            Self::Access(e @ (AccessError::NoToken | AccessError::BadToken(_))) => {
                (StatusCode::UNAUTHORIZED, e.to_string())
            }
            Self::Access(e) => (StatusCode::FORBIDDEN, e.to_string()),
            Self::Invalid(e) => (StatusCode::BAD_REQUEST, e.0),
            Self::Query(e @ QueryError::Database(_)) => {
                (StatusCode::SERVICE_UNAVAILABLE, e.to_string())
            }
            Self::Query(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        };
        (status, format!("{message}\n")).into_response()
    }
}

fn token(headers: &HeaderMap) -> Option<String> {
    if let Some(bearer) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        return Some(bearer.trim().to_owned());
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_owned())
}

fn admit(site: &Site, headers: &HeaderMap) -> Result<Caller, Refusal> {
    site.gate
        .admit(token(headers).as_deref())
        .map_err(Refusal::Access)
}

#[derive(Debug, Deserialize)]
struct PageQuery {
    token: Option<String>,
}

async fn page(
    State(site): State<Site>,
    Query(q): Query<PageQuery>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    if let Some(token) = q.token {
        if let Err(e) = site.gate.admit(Some(&token)) {
            return Refusal::Access(e).into_response();
        }
        let cookie = format!("{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/reports");
        // Keep the other parameters (period, area) for the page.
        let rest: Vec<&str> = raw
            .as_deref()
            .unwrap_or_default()
            .split('&')
            .filter(|kv| !kv.is_empty() && !kv.starts_with("token="))
            .collect();
        let target = if rest.is_empty() {
            "/reports".to_owned()
        } else {
            format!("/reports?{}", rest.join("&"))
        };
        let mut response = Redirect::to(&target).into_response();
        if let Ok(value) = HeaderValue::from_str(&cookie) {
            response.headers_mut().insert(header::SET_COOKIE, value);
        }
        return response;
    }
    match admit(&site, &headers) {
        Ok(_) => (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            PAGE,
        )
            .into_response(),
        Err(refusal) => refusal.into_response(),
    }
}

#[derive(Debug, Deserialize)]
struct ReportParams {
    from: Option<String>,
    to: Option<String>,
    #[serde(default)]
    area: String,
    #[serde(default)]
    bucket: String,
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DD` (UTC midnight) in milliseconds.
pub fn parse_date(text: &str, name: &str) -> Result<Millis, Invalid> {
    let bad = || Invalid(format!("`{name}` must be a date YYYY-MM-DD, got {text:?}"));
    let mut parts = text.trim().splitn(3, '-');
    let mut next = || -> Result<i64, Invalid> {
        parts
            .next()
            .and_then(|p| p.parse::<i64>().ok())
            .ok_or_else(bad)
    };
    let (y, m, d) = (next()?, next()?, next()?);
    if !(1970..=9999).contains(&y) || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return Err(bad());
    }
    Ok(days_from_civil(y, m, d) * DAY_MS)
}

async fn report_for(
    site: &Site,
    headers: &HeaderMap,
    params: &ReportParams,
) -> Result<Report, Refusal> {
    let caller = admit(site, headers)?;
    let from = parse_date(
        params
            .from
            .as_deref()
            .ok_or_else(|| Refusal::Invalid(Invalid("`from` is required (YYYY-MM-DD)".into())))?,
        "from",
    )
    .map_err(Refusal::Invalid)?;
    // `to` is the last day included.
    let to = parse_date(
        params
            .to
            .as_deref()
            .ok_or_else(|| Refusal::Invalid(Invalid("`to` is required (YYYY-MM-DD)".into())))?,
        "to",
    )
    .map_err(Refusal::Invalid)?
        + DAY_MS;
    if from >= to {
        return Err(Refusal::Invalid(Invalid(
            "`from` must not be after `to`".into(),
        )));
    }
    let bucket = Bucket::parse(&params.bucket).map_err(Refusal::Invalid)?;
    let query =
        report_checked(Period { from, to }, &params.area, bucket).map_err(Refusal::Invalid)?;
    let areas = site.areas.read().await;
    let grids = caller
        .grids_for(&query.area, &areas)
        .map_err(Refusal::Access)?;
    let db = site.db.client().await.map_err(Refusal::Query)?;
    queries::report(&db, &query, &grids, &areas)
        .await
        .map_err(Refusal::Query)
}

const LEVELS: [(EscalationLevel, &str); 4] = [
    (EscalationLevel::GridWorker, "grid_worker"),
    (EscalationLevel::GridSupervisor, "supervisor"),
    (EscalationLevel::PatrolOfficer, "patrol"),
    (EscalationLevel::PoliceDesk, "police_desk"),
];

/// An outcome's code in JSON and CSV: its name without the prefix, lower case.
fn outcome_code(outcome: IncidentOutcome) -> String {
    outcome
        .as_str_name()
        .trim_start_matches("INCIDENT_OUTCOME_")
        .to_ascii_lowercase()
}

fn ended(f: &ReportFigures, outcome: IncidentOutcome) -> (u64, f64) {
    f.by_outcome
        .iter()
        .find(|o| o.outcome == outcome as i32)
        .map_or((0, 0.0), |o| (o.closed, o.share))
}

fn settled(f: &ReportFigures, level: EscalationLevel) -> (u64, f64) {
    f.settled_at
        .iter()
        .find(|l| l.level == level as i32)
        .map_or((0, 0.0), |l| (l.settled, l.share))
}

fn figures_json(f: &ReportFigures) -> Value {
    let levels: serde_json::Map<String, Value> = LEVELS
        .iter()
        .map(|(level, name)| {
            let (n, share) = settled(f, *level);
            ((*name).to_owned(), json!({ "settled": n, "share": share }))
        })
        .collect();
    let outcomes: serde_json::Map<String, Value> = OUTCOMES
        .iter()
        .map(|o| {
            let (n, share) = ended(f, *o);
            (outcome_code(*o), json!({ "closed": n, "share": share }))
        })
        .collect();
    let kinds: serde_json::Map<String, Value> = f
        .by_kind
        .iter()
        .map(|k| (k.kind.clone(), json!(k.count)))
        .collect();
    json!({
        "requests": f.requests,
        "button": f.button_requests,
        "camera": f.camera_requests,
        "by_kind": kinds,
        "closed": f.closed,
        "resolved": f.resolved,
        "resolution_rate": f.resolution_rate,
        "settled_at": levels,
        "by_outcome": outcomes,
        "ack_p50_ms": f.ack_p50_ms,
        "ack_p90_ms": f.ack_p90_ms,
        "close_p50_ms": f.close_p50_ms,
        "close_p90_ms": f.close_p90_ms,
        "escalations": f.escalations,
        "reassignments": f.reassignments,
        "repeat_presses": f.repeat_presses,
    })
}

async fn data(
    State(site): State<Site>,
    Query(params): Query<ReportParams>,
    headers: HeaderMap,
) -> Response {
    match report_for(&site, &headers, &params).await {
        Ok(report) => {
            let series: Vec<Value> = report
                .series
                .iter()
                .map(|p| {
                    json!({
                        "start": from_timestamp(p.start.as_ref()).unwrap_or(0),
                        "figures": p.figures.as_ref().map(figures_json),
                    })
                })
                .collect();
            let body = json!({
                "total": report.total.as_ref().map(figures_json),
                "series": series,
            });
            (
                [(header::CONTENT_TYPE, "application/json")],
                body.to_string(),
            )
                .into_response()
        }
        Err(refusal) => refusal.into_response(),
    }
}

/// The CSV text of a report: a header, one row per bucket, then the total.
pub fn report_csv(report: &Report) -> String {
    let mut out = String::from(
        "bucket_start,requests,button,camera,closed,resolved,resolution_rate,\
         ack_p50_s,ack_p90_s,close_p50_s,close_p90_s,escalations,reassignments,repeat_presses,\
         settled_grid_worker,settled_supervisor,settled_patrol,settled_police_desk",
    );
    for o in OUTCOMES {
        out.push_str(&format!(",outcome_{}", outcome_code(o)));
    }
    out.push('\n');
    let row = |label: String, f: &ReportFigures| {
        let levels: Vec<String> = LEVELS
            .iter()
            .map(|(l, _)| settled(f, *l).0.to_string())
            .chain(OUTCOMES.iter().map(|o| ended(f, *o).0.to_string()))
            .collect();
        format!(
            "{label},{},{},{},{},{},{:.4},{:.1},{:.1},{:.1},{:.1},{},{},{},{}\n",
            f.requests,
            f.button_requests,
            f.camera_requests,
            f.closed,
            f.resolved,
            f.resolution_rate,
            f.ack_p50_ms as f64 / 1000.0,
            f.ack_p90_ms as f64 / 1000.0,
            f.close_p50_ms as f64 / 1000.0,
            f.close_p90_ms as f64 / 1000.0,
            f.escalations,
            f.reassignments,
            f.repeat_presses,
            levels.join(",")
        )
    };
    for point in &report.series {
        let start = from_timestamp(point.start.as_ref()).unwrap_or(0);
        let day = start.div_euclid(DAY_MS);
        out.push_str(&row(
            civil_from_days(day),
            point.figures.as_ref().unwrap_or(&ReportFigures::default()),
        ));
    }
    if let Some(total) = &report.total {
        out.push_str(&row("total".into(), total));
    }
    out
}

/// `YYYY-MM-DD` of a day number (inverse of [`days_from_civil`]).
fn civil_from_days(z: i64) -> String {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

async fn csv(
    State(site): State<Site>,
    Query(params): Query<ReportParams>,
    headers: HeaderMap,
) -> Response {
    match report_for(&site, &headers, &params).await {
        Ok(report) => (
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"helpgrid-report.csv\"",
                ),
            ],
            report_csv(&report),
        )
            .into_response(),
        Err(refusal) => refusal.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use helpgrid_common::time::to_timestamp;
    use helpgrid_proto::pb::{LevelShare, OutcomeCount, ReportPoint};

    #[test]
    fn dates_round_trip_and_nonsense_is_refused() {
        let ms = parse_date("2026-11-29", "from").expect("date");
        assert_eq!(civil_from_days(ms / DAY_MS), "2026-11-29");
        assert_eq!(parse_date("1970-01-01", "from"), Ok(0));
        assert!(parse_date("29/11/2026", "from").is_err_and(|e| e.0.contains("YYYY-MM-DD")));
        assert!(parse_date("2026-13-01", "to").is_err());
    }

    #[test]
    fn the_csv_has_a_row_per_bucket_and_a_total_and_no_personal_data() {
        let figures = ReportFigures {
            requests: 10,
            resolved: 9,
            closed: 10,
            resolution_rate: 0.9,
            ack_p50_ms: 120_000,
            settled_at: vec![LevelShare {
                level: EscalationLevel::GridWorker as i32,
                settled: 8,
                share: 0.8,
            }],
            by_outcome: vec![
                OutcomeCount {
                    outcome: IncidentOutcome::Mediated as i32,
                    closed: 9,
                    share: 0.9,
                },
                OutcomeCount {
                    outcome: IncidentOutcome::NobodyThere as i32,
                    closed: 1,
                    share: 0.1,
                },
            ],
            ..ReportFigures::default()
        };
        let report = Report {
            total: Some(figures.clone()),
            series: vec![ReportPoint {
                start: Some(to_timestamp(parse_date("2026-11-02", "x").expect("date"))),
                figures: Some(figures),
            }],
        };
        let csv = report_csv(&report);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[1].starts_with("2026-11-02,10,0,0,10,9,0.9000,120.0,"));
        assert!(lines[0].ends_with(
            ",outcome_resolved_on_spot,outcome_mediated,outcome_referred_to_town,\
             outcome_referred_to_police,outcome_false_alarm,outcome_nobody_there"
        ));
        assert!(lines[2].starts_with("total,10,"));
        // Levels, then outcomes in the contract's order.
        assert!(lines[2].ends_with(",8,0,0,0,0,9,0,0,0,1"), "{}", lines[2]);
    }
}
