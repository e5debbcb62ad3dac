//! The community big-screen console: one web page for a wall display, and the stream of
//! server-sent events that keeps it live.
//!
//! - `GET /console/?token=<console token>` sets an HttpOnly cookie with the token and
//!   redirects to `/console/`, so the token leaves the address bar; `GET /console/` serves the
//!   page to a caller with that cookie (or an `authorization: Bearer` header).
//! - `GET /console/events` is the event stream for the caller's grids: first a `snapshot`
//!   (open incidents and today's), then every `change`. Each event's id is the Watch cursor
//!   after it; the browser sends it back as `Last-Event-ID` when it reconnects — also to a
//!   restarted server, whose cursors are the same Kafka offsets — and the stream resumes
//!   right after it: no gap, no duplicate.
//! - The page, script and style are compiled into the binary: no build step, no CDN.
//!
//! - `?area=<id>` (on the page or the stream) shows one area of the registry — a community,
//!   a town, the whole city — with its counts per child area ([`levels`]); the area must lie
//!   inside the token's grids.
//!
//! Who may open it: console, supervisor and admin tokens, limited to their grids.

pub mod levels;
pub mod view;

use crate::access::{AccessError, Caller, Gate, bearer};
use crate::cursor::Cursor;
use crate::feed::SharedReadModel;
use crate::read_model::{IncidentQuery, LoggedEvent};
use crate::roster::Roster;
use crate::telemetry;
use crate::watcher::{WatchFilter, WatchRequest, start_watch_until_revoked};
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use futures::{Stream, StreamExt, stream};
use helpgrid_auth::Role;
use helpgrid_common::time::{Millis, from_timestamp, now_millis};
use helpgrid_proto::pb::IncidentState;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use view::{ChangeView, IncidentView, incident_view};

const PAGE: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/console.js");
const STYLE: &str = include_str!("assets/console.css");
/// The cookie holding the console's token.
const COOKIE: &str = "helpgrid_console";
/// Closed incidents older than this are left out of the snapshot (the page shows today's).
const SNAPSHOT_WINDOW: Millis = 36 * 3600 * 1000;
/// Most incidents a snapshot carries, newest first.
const SNAPSHOT_MAX: usize = 5000;
/// How soon the browser reconnects after the stream ends (a server restart).
const RECONNECT_AFTER: Duration = Duration::from_secs(1);
/// A TLS handshake that takes longer than this is dropped (it holds up the accept loop).
const TLS_HANDSHAKE_LIMIT: Duration = Duration::from_secs(10);

/// What the console's handlers share.
#[derive(Clone)]
pub struct Console {
    pub read_model: SharedReadModel,
    pub live: broadcast::Sender<LoggedEvent>,
    /// For responders' display names (masked before they leave).
    pub roster: Arc<Roster>,
    pub gate: Gate,
    pub ready: watch::Receiver<bool>,
    /// Ends the event streams at shutdown.
    pub shutdown: CancellationToken,
}

pub fn router(console: Console) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/console/") }))
        .route("/console", get(|| async { Redirect::to("/console/") }))
        .route("/console/", get(page))
        .route(
            "/console/console.js",
            get(|| async { asset(SCRIPT, "text/javascript") }),
        )
        .route(
            "/console/console.css",
            get(|| async { asset(STYLE, "text/css") }),
        )
        .route("/console/events", get(events))
        .with_state(console)
}

/// Serves `app` (the console's routes, and the responder app's) on `listener` (over TLS with
/// `tls`) until `stop` is cancelled.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: Router,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let local_addr = listener.local_addr()?;
    tracing::info!(%local_addr, tls = tls.is_some(), "console and responder app listening");
    let stopped = stop.clone().cancelled_owned();
    match tls {
        None => {
            axum::serve(listener, app)
                .with_graceful_shutdown(stopped)
                .await
        }
        Some(acceptor) => {
            axum::serve(TlsListener { listener, acceptor }, app)
                .with_graceful_shutdown(stopped)
                .await
        }
    }
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// The console's token: from the cookie, or an `authorization: Bearer` header.
fn token(headers: &HeaderMap) -> Option<&str> {
    bearer(headers).or_else(|| {
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(name, _)| *name == COOKIE)
            .map(|(_, value)| value)
    })
}

fn admit(gate: &Gate, token: Option<&str>) -> Result<Caller, Refused> {
    let caller = gate.identify(token)?;
    match caller.role() {
        None | Some(Role::Console | Role::Supervisor | Role::Admin) => Ok(caller),
        Some(role) => Err(Refused::Access(AccessError::Denied(format!(
            "the {role} role has no console; use a console token"
        )))),
    }
}

/// A refusal, as an HTTP answer a person can act on.
enum Refused {
    Access(AccessError),
    BadRequest(String),
}

impl From<AccessError> for Refused {
    fn from(error: AccessError) -> Self {
        Self::Access(error)
    }
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            Self::Access(error) if error.code() == tonic::Code::Unauthenticated => {
                (StatusCode::UNAUTHORIZED, error.to_string())
            }
            Self::Access(error) => (StatusCode::FORBIDDEN, error.to_string()),
            Self::BadRequest(message) => (StatusCode::BAD_REQUEST, message),
        };
        let body = format!(
            "<!doctype html><meta charset=utf-8><title>HelpGrid console</title>\
             <body style=\"font:2rem sans-serif;background:#111;color:#eee;padding:3rem\">\
             <h1>HelpGrid console</h1><p>{}</p>\
             <p>Open <code>/console/?token=&lt;console token&gt;</code> \
             (mint one with <code>helpgrid-token mint --role console --grid …</code>).</p>",
            html_escape(&message)
        );
        (
            status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            body,
        )
            .into_response()
    }
}

/// Area ids as the registry writes them: nothing a URL or the page would need to escape.
fn is_area_id(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 128
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

async fn page(
    State(console): State<Console>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, Refused> {
    if let Some(token) = query.get("token") {
        admit(&console.gate, Some(token))?;
        let cookie = format!("{COOKIE}={token}; Path=/console; HttpOnly; SameSite=Strict");
        let cookie = HeaderValue::from_str(&cookie).map_err(|_| {
            AccessError::Denied("the token has characters a cookie cannot carry".into())
        })?;
        // The area stays in the address (the page passes it on to its stream).
        let target = match query.get("area").filter(|a| is_area_id(a)) {
            Some(area) => format!("/console/?area={area}"),
            None => "/console/".to_owned(),
        };
        let mut response = Redirect::to(&target).into_response();
        response.headers_mut().insert(header::SET_COOKIE, cookie);
        return Ok(response);
    }
    admit(&console.gate, token(&headers))?;
    Ok(asset(PAGE, "text/html; charset=utf-8"))
}

/// The first event of a fresh stream: what is on the board now.
#[derive(Serialize)]
struct Snapshot {
    /// Who is watching (the token's subject), for the page's title.
    console: String,
    /// The grids shown; empty means every grid.
    grids: Vec<String>,
    server_time: Millis,
    incidents: Vec<IncidentView>,
    /// With `?area=`: the area shown and its counts per child area.
    #[serde(skip_serializing_if = "Option::is_none")]
    breakdown: Option<levels::Breakdown>,
}

async fn events(
    State(console): State<Console>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, Refused> {
    let caller = admit(&console.gate, token(&headers))?;
    let area = query
        .get("area")
        .map(|a| a.trim())
        .filter(|a| !a.is_empty());
    if let Some(area) = area
        && !is_area_id(area)
    {
        return Err(Refused::BadRequest(format!(
            "area {area:?} is not an area id (letters, digits, - _ . :)"
        )));
    }
    let asked: HashSet<String> = match area {
        Some(area) => console.gate.areas().grids_of(area).into_iter().collect(),
        None => query
            .get("grids")
            .map(|g| {
                g.split(',')
                    .filter(|g| !g.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default(),
    };
    let grids = caller.grid_filter(asked).map_err(|e| match area {
        Some(area) => Refused::Access(AccessError::Denied(format!(
            "area {area} reaches outside the grids of your token"
        ))),
        None => Refused::Access(e),
    })?;
    let partitions = console.read_model.read().partitions();
    // The browser's own Last-Event-ID wins over the cursor the page put in the address.
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .or(query.get("cursor").map(String::as_str))
        .filter(|c| !c.is_empty())
        .map(|c| Cursor::decode(c, partitions))
        .transpose()
        .map_err(|e| Refused::BadRequest(format!("cursor: {e}")))?;

    // Before the read model has caught up a snapshot would be partial: wait (the page shows
    // "connecting" meanwhile).
    let mut ready = console.ready.clone();
    tokio::select! {
        loaded = ready.wait_for(|r| *r) => { let _ = loaded; }
        () = console.shutdown.cancelled() => {}
    }

    let (first, resume_after) = match resume {
        Some(cursor) => (None, cursor),
        None => {
            let (snapshot, position) = snapshot(&console, &grids, &caller, area);
            let event = json_event("snapshot", &position.encode(), &snapshot);
            (Some(event), position)
        }
    };
    let request = WatchRequest {
        filter: WatchFilter {
            grid_ids: grids,
            ..WatchFilter::default()
        },
        resume_after: Some(resume_after),
        // The page draws each incident from its snapshot: one update per record is enough.
        compact_openings: true,
    };
    // A revoked sign-in ends the stream; the browser's reconnect is then refused.
    let updates = start_watch_until_revoked(
        console.read_model.clone(),
        &console.live,
        request,
        console.shutdown.clone(),
        caller.revocation_watch(),
    );
    let roster = Arc::clone(&console.roster);
    let changes = updates
        .take_while(|update| std::future::ready(update.is_ok()))
        .filter_map(move |update| {
            let event = update.ok().and_then(|update| {
                let event = update.event?;
                let incident = event.incident.as_ref()?;
                let change = ChangeView {
                    change: event.change.as_ref().map_or("changed", |c| c.name()),
                    incident: incident_view(incident, |id| display_name(&roster, id)),
                };
                Some(json_event("change", &update.cursor, &change))
            });
            std::future::ready(event)
        });
    let hello = Event::default().retry(RECONNECT_AFTER).comment("helpgrid");
    let stream = stream::iter([Ok(hello)])
        .chain(stream::iter(first.map(Ok)))
        .chain(changes.map(Ok::<_, Infallible>));
    telemetry::console_stream_opened();
    let stream = Counted::with(stream, telemetry::console_stream_closed);
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

fn display_name(roster: &Roster, responder_id: &str) -> Option<String> {
    roster.get(responder_id).ok().map(|r| r.display_name)
}

fn json_event(name: &str, cursor: &str, body: &impl Serialize) -> Event {
    let data = serde_json::to_string(body).unwrap_or_else(|error| {
        tracing::error!(%error, "cannot encode a console event");
        "{}".to_owned()
    });
    Event::default().event(name).id(cursor).data(data)
}

/// Open incidents and those opened in the last day and a half, with the position they
/// were read at: a watch from there continues exactly where the snapshot ends.
fn snapshot(
    console: &Console,
    grids: &HashSet<String>,
    caller: &Caller,
    area: Option<&str>,
) -> (Snapshot, Cursor) {
    let now = now_millis();
    let (incidents, position) = {
        let model = console.read_model.read();
        let page = model.list(&IncidentQuery {
            grid_ids: grids.clone(),
            page_size: SNAPSHOT_MAX,
            ..IncidentQuery::default()
        });
        (page.incidents, page.position)
    };
    let recent = |i: &&helpgrid_proto::pb::Incident| {
        i.state != IncidentState::Closed as i32
            || from_timestamp(i.opened_at.as_ref()).is_some_and(|t| now - t < SNAPSHOT_WINDOW)
    };
    let views: Vec<IncidentView> = incidents
        .iter()
        .filter(recent)
        .map(|i| incident_view(i, |id| display_name(&console.roster, id)))
        .collect();
    let breakdown =
        area.map(|area| levels::breakdown(console.gate.areas(), area, &views, start_of_day(now)));
    let mut grids: Vec<String> = grids.iter().cloned().collect();
    grids.sort();
    let snapshot = Snapshot {
        console: caller
            .identity()
            .map_or_else(|| "console".to_owned(), |i| i.subject.clone()),
        grids,
        server_time: now,
        incidents: views,
        breakdown,
    };
    (snapshot, position)
}

/// Midnight (UTC+8, the city's time zone as the page shows it) before `now`.
fn start_of_day(now: Millis) -> Millis {
    const DAY: Millis = 86_400_000;
    const OFFSET: Millis = 8 * 3_600_000;
    (now + OFFSET).div_euclid(DAY) * DAY - OFFSET
}

/// An event stream that records its end (for the open-stream gauges of `/metrics`).
pub(crate) struct Counted<S> {
    inner: std::pin::Pin<Box<S>>,
    closed: fn(),
}

impl<S> Counted<S> {
    pub(crate) fn with(inner: S, closed: fn()) -> Self {
        Self {
            inner: Box::pin(inner),
            closed,
        }
    }
}

impl<S> Drop for Counted<S> {
    fn drop(&mut self) {
        (self.closed)();
    }
}

impl<S: Stream> Stream for Counted<S> {
    type Item = S::Item;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

/// Accepts TCP connections and completes their TLS handshake for axum.
struct TlsListener {
    listener: TcpListener,
    acceptor: TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (tcp, addr) = match self.listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "console accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            match tokio::time::timeout(TLS_HANDSHAKE_LIMIT, self.acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => return (tls, addr),
                Ok(Err(error)) => tracing::debug!(%addr, %error, "console TLS handshake failed"),
                Err(_) => tracing::debug!(%addr, "console TLS handshake timed out"),
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}
