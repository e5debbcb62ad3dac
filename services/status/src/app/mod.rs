//! The responder app: a mobile web page for grid workers, supervisors and patrol officers,
//! served beside the console (same listener, same TLS), with its API and event stream.
//!
//! - `GET /app/` the page (static; it asks `/app/api/me` who is signed in); `GET /app/sw.js`
//!   its service worker, which keeps the page's own files for offline and nothing else.
//! - `GET /app/signin?link=<token>` checks a one-time sign-in link and shows a "sign in"
//!   button; its `POST /app/signin` redeems the link (see [`session`]);
//!   `POST /app/api/signin {"token"}` signs in with a token; `POST /app/api/signout`.
//! - `GET /app/api/me`: who, role, duty, and the session's CSRF token.
//! - `GET /app/events`: "my assignments" as server-sent events. A fresh stream starts with a
//!   `snapshot`; every `change` carries the Watch cursor after it as its id, so a browser
//!   that reconnects (`Last-Event-ID`, also to another or a restarted instance) resumes right
//!   after the last update it got: nothing lost, nothing twice. A cursor too old to resume
//!   from gets a fresh snapshot instead.
//! - `POST /app/api/incidents/{id}/acknowledge|close|help`, `POST /app/api/duty|location`: the
//!   same commands and roster writes as the gRPC API, under the signed-in responder's own id,
//!   with the caller's request id (a retry of an applied command answers OK).
//!
//! Every POST authenticated by the cookie needs the CSRF token and a same-site `Origin`
//! ([`session::check_post`]); a bearer header (scripts, the load test) needs neither.

pub mod households;
pub mod links;
pub mod session;
pub mod view;

use crate::access::{AccessError, Caller, Gate, bearer};
use crate::cursor::Cursor;
use crate::errors::ApiError;
use crate::grpc::{IncidentApi, RosterApi};
use crate::requests::{self, ValidCommand};
use crate::telemetry;
use crate::watcher::{WatchFilter, WatchRequest, start_watch_until_revoked};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use futures::{StreamExt, stream};
use helpgrid_auth::Identity;
use helpgrid_common::time::{Millis, now_millis};
use helpgrid_proto::pb::{
    AcknowledgeRequest, CloseRequest, GeoPoint, Incident, IncidentState, ResponderRole,
    SetDutyRequest, UpdateLocationRequest,
};
use serde::{Deserialize, Serialize};
use session::{LinkLifetime, RedeemedLinks, SignInError};
use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use view::{AssignmentView, Households, Viewer, assignment_view, follows};

const PAGE: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/app.css");
const MANIFEST: &str = include_str!("assets/manifest.webmanifest");
const ICON: &str = include_str!("assets/icon.svg");
/// The service worker that keeps the app shell (never the API or the stream) for offline.
const SERVICE_WORKER: &str = include_str!("assets/sw.js");
/// How soon the browser reconnects after the stream ends (a server restart).
const RECONNECT_AFTER: Duration = Duration::from_secs(1);
/// Most cards a snapshot carries (a supervisor of a busy grid).
const SNAPSHOT_MAX: usize = 500;
/// Open incidents of the viewer's grids looked at for a snapshot, newest first.
const SNAPSHOT_SCAN: usize = 5000;
/// Largest request body the app's API reads (a close note is at most 4000 characters).
const MAX_BODY: usize = 32 * 1024;

/// What the app's handlers share.
#[derive(Clone)]
pub struct App {
    /// Reads, watches and commands: the same code paths as the gRPC API.
    pub incidents: IncidentApi,
    pub roster: RosterApi,
    pub gate: Gate,
    /// Household id → address and contact, shown in full only where allowed.
    pub households: Arc<Households>,
    /// Cookies get `Secure` when the app is served over TLS.
    pub secure_cookies: bool,
    pub redeemed: Arc<Mutex<RedeemedLinks>>,
    /// Links used on any instance (`None`: one-time per instance only).
    pub links: Option<Arc<links::LinkLedger>>,
}

pub fn router(app: App) -> Router {
    Router::new()
        .route("/app", get(|| async { Redirect::to("/app/") }))
        .route(
            "/app/",
            get(|| async { page(PAGE, "text/html; charset=utf-8") }),
        )
        .route(
            "/app/app.js",
            get(|| async { page(SCRIPT, "text/javascript") }),
        )
        .route("/app/app.css", get(|| async { page(STYLE, "text/css") }))
        .route(
            "/app/manifest.webmanifest",
            get(|| async { page(MANIFEST, "application/manifest+json") }),
        )
        .route(
            "/app/icon.svg",
            get(|| async { page(ICON, "image/svg+xml") }),
        )
        .route(
            "/app/sw.js",
            get(|| async { page(SERVICE_WORKER, "text/javascript") }),
        )
        .route("/app/signin", get(link_page).post(redeem_link))
        .route("/app/api/signin", post(sign_in))
        .route("/app/api/signout", post(sign_out))
        .route("/app/api/me", get(me))
        .route("/app/events", get(events))
        .route("/app/api/incidents/{id}/acknowledge", post(acknowledge))
        .route("/app/api/incidents/{id}/close", post(close))
        .route("/app/api/incidents/{id}/help", post(ask_for_help))
        .route("/app/api/duty", post(duty))
        .route("/app/api/location", post(location))
        .with_state(app)
}

fn page(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

/// A refusal of the API, as JSON the page shows: `{"error": "...", "code": "..."}`.
#[derive(Debug)]
pub struct Refused {
    status: StatusCode,
    message: String,
}

impl Refused {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

/// The HTTP status for a gRPC code, so both doors answer alike.
fn http_status(code: tonic::Code) -> StatusCode {
    use tonic::Code;
    match code {
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::FailedPrecondition | Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::Unavailable | Code::DeadlineExceeded => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<ApiError> for Refused {
    fn from(error: ApiError) -> Self {
        let status = tonic::Status::from(error);
        Self::new(http_status(status.code()), status.message())
    }
}

impl From<AccessError> for Refused {
    fn from(error: AccessError) -> Self {
        Self::new(http_status(error.code()), error.to_string())
    }
}

impl From<links::LedgerError> for Refused {
    fn from(error: links::LedgerError) -> Self {
        let status = match error {
            links::LedgerError::Used => StatusCode::UNAUTHORIZED,
            links::LedgerError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        Self::new(status, error.to_string())
    }
}

impl From<SignInError> for Refused {
    fn from(error: SignInError) -> Self {
        let status = match error {
            SignInError::WrongRole { .. } => StatusCode::FORBIDDEN,
            SignInError::TooManyLinks => StatusCode::SERVICE_UNAVAILABLE,
            SignInError::LinkUsed | SignInError::NotALink { .. } => StatusCode::UNAUTHORIZED,
        };
        Self::new(status, error.to_string())
    }
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        telemetry::app_request_refused(self.status.as_u16());
        let body = serde_json::json!({ "error": self.message, "status": self.status.as_u16() });
        (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response()
    }
}

/// A refusal as a page a person reads (the sign-in link is opened in a browser).
fn refusal_page(status: StatusCode, message: &str) -> Response {
    telemetry::app_request_refused(status.as_u16());
    let body = format!(
        "<!doctype html><html lang=zh-CN><meta charset=utf-8>\
         <meta name=viewport content=\"width=device-width, initial-scale=1\">\
         <title>HelpGrid</title>\
         <body style=\"font:1.1rem system-ui,sans-serif;padding:1.5rem;background:#101418;color:#eee\">\
         <h1>无法登录 · Cannot sign in</h1><p>{}</p>\
         <p>请联系管理员获取新的登录链接。Ask your administrator for a new sign-in link, \
         or <a style=color:#8cf href=/app/>sign in with your token</a>.</p>",
        html_escape(message)
    );
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn cookie_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == session::COOKIE)
        .map(|(_, value)| value)
        .filter(|v| !v.is_empty())
}

/// A signed-in caller of the app.
struct Session {
    caller: Caller,
    identity: Identity,
    /// The cookie's token, when the session came by cookie (then POSTs need CSRF).
    cookie: Option<String>,
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

impl App {
    fn session(&self, headers: &HeaderMap) -> Result<Session, Refused> {
        if !self.gate.is_on() {
            return Err(Refused::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the responder app needs sign-in: run the status service with --auth-key-file",
            ));
        }
        let (token, by_cookie) = match bearer(headers) {
            Some(token) => (Some(token), false),
            None => (cookie_token(headers), true),
        };
        let caller = self.gate.identify(token)?;
        let identity = caller.identity().cloned().ok_or(AccessError::NoToken)?;
        session::check_role(&identity)?;
        Ok(Session {
            caller,
            identity,
            cookie: by_cookie.then(|| token.unwrap_or_default().to_owned()),
        })
    }

    /// A session for a POST: cookie sessions must pass the CSRF and origin checks.
    fn post_session(&self, headers: &HeaderMap) -> Result<Session, Refused> {
        let session = self.session(headers)?;
        if let Some(cookie) = &session.cookie {
            session::check_post(
                cookie,
                header_str(headers, header::HeaderName::from_static("x-csrf-token")),
                header_str(headers, header::ORIGIN),
                header_str(headers, header::HOST),
            )
            .map_err(|e| Refused::new(StatusCode::FORBIDDEN, e.to_string()))?;
        }
        Ok(session)
    }

    fn viewer(&self, identity: &Identity) -> Viewer {
        let patrol = self
            .roster
            .roster
            .get(&identity.subject)
            .is_ok_and(|r| r.role == ResponderRole::PatrolOfficer as i32);
        Viewer::new(identity, patrol)
    }

    fn set_cookie(&self, response: &mut Response, value: &str) -> Result<(), Refused> {
        let value = HeaderValue::from_str(value).map_err(|_| {
            Refused::new(
                StatusCode::BAD_REQUEST,
                "the token has characters a cookie cannot carry",
            )
        })?;
        response.headers_mut().append(header::SET_COOKIE, value);
        Ok(())
    }
}

/// The claims' `iat` and `exp`, read from a token whose signature was verified already.
fn lifetime(token: &str) -> Option<LinkLifetime> {
    use base64::Engine;
    #[derive(Deserialize)]
    struct Times {
        iat: u64,
        exp: u64,
    }
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let times: Times = serde_json::from_slice(&bytes).ok()?;
    Some(LinkLifetime {
        issued_at_s: times.iat,
        expires_at_s: times.exp,
    })
}

fn unix_now_s() -> u64 {
    u64::try_from(now_millis() / 1000).unwrap_or(0)
}

/// The link, checked but not used: a page with one button that redeems it. A GET must not
/// use a one-time link up: chat apps fetch links to show previews.
async fn link_page(
    State(app): State<App>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let link = query.get("link").map(String::as_str).unwrap_or_default();
    match verify_link(&app, link, false) {
        Ok(identity) => {
            let body = format!(
                "<!doctype html><html lang=zh-CN><meta charset=utf-8>\
                 <meta name=viewport content=\"width=device-width, initial-scale=1\">\
                 <title>HelpGrid</title>\
                 <body style=\"font:1.2rem system-ui,sans-serif;padding:1.5rem;background:#0f1720;color:#eee\">\
                 <h1>HelpGrid 网格员 · Responder</h1><p>{}</p>\
                 <form method=post action=/app/signin><input type=hidden name=link value=\"{}\">\
                 <button id=signin-link style=\"font:inherit;width:100%;min-height:64px;border-radius:12px;\
                 border:0;background:#2563eb;color:#fff;font-weight:700\">登录 Sign in</button></form>",
                html_escape(&identity.subject),
                html_escape(link)
            );
            (
                StatusCode::OK,
                [
                    (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                    (header::CACHE_CONTROL, "no-store"),
                    // The link (a token) never leaves in a Referer to another site; the
                    // form's POST still names this origin (no-referrer would send "null").
                    (header::REFERRER_POLICY, "same-origin"),
                ],
                body,
            )
                .into_response()
        }
        Err(refused) => refusal_page(refused.status, &refused.message),
    }
}

/// The tap on the link page: redeems the link (once) and opens the session.
async fn redeem_link(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    let link = (|| {
        session::check_origin(
            header_str(&headers, header::ORIGIN),
            header_str(&headers, header::HOST),
        )
        .map_err(|e| Refused::new(StatusCode::FORBIDDEN, e.to_string()))?;
        // A form field holding a token: base64url and dots, which forms send unencoded.
        let link = std::str::from_utf8(&body)
            .ok()
            .and_then(|b| b.trim().strip_prefix("link="))
            .filter(|l| {
                l.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
            })
            .unwrap_or_default()
            .to_owned();
        Ok::<_, Refused>(link)
    })();
    let result = match link {
        Ok(link) => redeem(&app, &link).await,
        Err(refused) => Err(refused),
    };
    match result {
        Ok(response) => response,
        Err(refused) => refusal_page(refused.status, &refused.message),
    }
}

/// The identity a link names, if it may be used now (and, with `use_up`, uses it here; the
/// caller then records the use on the ledger first, see [`redeem`]).
fn verify_link(app: &App, link: &str, use_up: bool) -> Result<Identity, Refused> {
    if link.is_empty() {
        return Err(Refused::new(
            StatusCode::BAD_REQUEST,
            "the sign-in link has no token in it",
        ));
    }
    let caller = app
        .gate
        .identify(Some(link))
        .map_err(|e| Refused::new(StatusCode::UNAUTHORIZED, format!("sign-in link: {e}")))?;
    let identity = caller.identity().cloned().ok_or(AccessError::NoToken)?;
    session::check_role(&identity)?;
    let lifetime = lifetime(link).ok_or_else(|| {
        Refused::new(StatusCode::UNAUTHORIZED, "the sign-in link has no lifetime")
    })?;
    let mut redeemed = app.redeemed.lock().unwrap_or_else(PoisonError::into_inner);
    let nonce = session::link_nonce(link);
    if use_up {
        redeemed.redeem(nonce, lifetime, unix_now_s())?;
    } else {
        redeemed.check(nonce, lifetime, unix_now_s())?;
        if app
            .links
            .as_ref()
            .is_some_and(|l| l.is_used(&links::link_key(nonce)))
        {
            return Err(SignInError::LinkUsed.into());
        }
    }
    Ok(identity)
}

async fn redeem(app: &App, link: &str) -> Result<Response, Refused> {
    // Checked here first (cheap, and a refusal costs no write), then recorded on the ledger
    // that every instance follows, and only then used up here: a ledger that cannot answer
    // leaves the link usable for a retry.
    let identity = verify_link(app, link, false)?;
    if let Some(ledger) = &app.links {
        let expires_s = lifetime(link).map_or(0, |l| l.expires_at_s);
        ledger
            .redeem(
                &links::link_key(session::link_nonce(link)),
                &identity.subject,
                expires_s,
            )
            .await?;
    }
    let identity = verify_link(app, link, true)?;
    let token = app
        .gate
        .mint_session(&identity, session::SESSION_TTL)
        .map_err(|e| Refused::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    telemetry::app_signed_in("link");
    tracing::info!(subject = %identity.subject, role = %identity.role, "signed in to the app by link");
    let body = "<!doctype html><meta charset=utf-8><meta http-equiv=refresh content=\"0;url=/app/\">\
                <title>HelpGrid</title><p>已登录 · Signed in. <a href=/app/>继续 Continue</a></p>";
    let mut response = (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        body,
    )
        .into_response();
    app.set_cookie(
        &mut response,
        &session::session_cookie(&token, session::SESSION_TTL, app.secure_cookies),
    )?;
    Ok(response)
}

fn json_body<T: for<'de> Deserialize<'de>>(body: &Bytes) -> Result<T, Refused> {
    if body.len() > MAX_BODY {
        return Err(Refused::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than {MAX_BODY} bytes"),
        ));
    }
    serde_json::from_slice(body)
        .map_err(|e| Refused::new(StatusCode::BAD_REQUEST, format!("request body: {e}")))
}

fn json_ok(body: &impl Serialize) -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        serde_json::to_string(body).unwrap_or_else(|_| "{}".into()),
    )
        .into_response()
}

#[derive(Deserialize)]
struct SignIn {
    token: String,
}

async fn sign_in(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    let result = (|| {
        // Login CSRF: only this site's page may sign someone in.
        session::check_origin(
            header_str(&headers, header::ORIGIN),
            header_str(&headers, header::HOST),
        )
        .map_err(|e| Refused::new(StatusCode::FORBIDDEN, e.to_string()))?;
        let SignIn { token } = json_body(&body)?;
        let token = token.trim().to_owned();
        let caller = app.gate.identify(Some(&token))?;
        let identity = caller.identity().cloned().ok_or(AccessError::NoToken)?;
        session::check_role(&identity)?;
        let valid_for = lifetime(&token)
            .map(|l| Duration::from_secs(l.expires_at_s.saturating_sub(unix_now_s())))
            .unwrap_or(session::SESSION_TTL);
        let mut response = json_ok(&serde_json::json!({ "subject": identity.subject }));
        app.set_cookie(
            &mut response,
            &session::session_cookie(&token, valid_for, app.secure_cookies),
        )?;
        telemetry::app_signed_in("token");
        Ok::<_, Refused>(response)
    })();
    result.unwrap_or_else(IntoResponse::into_response)
}

async fn sign_out(State(app): State<App>, headers: HeaderMap) -> Response {
    let result = app.post_session(&headers).and_then(|_| {
        let mut response = json_ok(&serde_json::json!({}));
        app.set_cookie(&mut response, &session::cleared_cookie(app.secure_cookies))?;
        Ok(response)
    });
    result.unwrap_or_else(IntoResponse::into_response)
}

#[derive(Serialize)]
struct Me {
    subject: String,
    role: &'static str,
    name: String,
    grids: Vec<String>,
    on_duty: bool,
    patrol: bool,
    /// Send back as `x-csrf-token` with every POST.
    csrf: String,
    server_time: Millis,
}

async fn me(State(app): State<App>, headers: HeaderMap) -> Response {
    let result = app.session(&headers).map(|session| {
        let responder = app.roster.roster.get(&session.identity.subject).ok();
        let viewer = app.viewer(&session.identity);
        let grids = match &session.identity.scope {
            helpgrid_auth::Scope::AllGrids => vec!["*".to_owned()],
            helpgrid_auth::Scope::Grids(grids) => grids.iter().cloned().collect(),
        };
        json_ok(&Me {
            subject: session.identity.subject.clone(),
            role: session.identity.role.as_str(),
            name: responder
                .as_ref()
                .map(|r| r.display_name.clone())
                .unwrap_or_default(),
            grids,
            on_duty: responder.as_ref().is_some_and(|r| r.on_duty),
            patrol: viewer.patrol,
            csrf: session
                .cookie
                .as_deref()
                .map(session::csrf_token)
                .unwrap_or_default(),
            server_time: now_millis(),
        })
    });
    result.unwrap_or_else(IntoResponse::into_response)
}

#[derive(Serialize)]
struct Snapshot {
    server_time: Millis,
    incidents: Vec<AssignmentView>,
}

fn json_event(name: &str, cursor: &str, body: &impl Serialize) -> Event {
    let data = serde_json::to_string(body).unwrap_or_else(|error| {
        tracing::error!(%error, "cannot encode an app event");
        "{}".to_owned()
    });
    Event::default().event(name).id(cursor).data(data)
}

/// The viewer's open cards, and the position they were read at.
fn snapshot(app: &App, viewer: &Viewer, grids: &HashSet<String>) -> (Snapshot, Cursor) {
    let model = app.incidents.read_model.read();
    let page = model.list(&crate::read_model::IncidentQuery {
        grid_ids: grids.clone(),
        states: HashSet::from([
            IncidentState::Waiting as i32,
            IncidentState::Assigned as i32,
            IncidentState::Acknowledged as i32,
        ]),
        page_size: SNAPSHOT_SCAN,
        ..Default::default()
    });
    let incidents = page
        .incidents
        .iter()
        .filter(|i| follows(viewer, i))
        .map(|i| assignment_view(viewer, i, &app.households))
        .filter(|v| v.show)
        .take(SNAPSHOT_MAX)
        .collect();
    (
        Snapshot {
            server_time: now_millis(),
            incidents,
        },
        page.position,
    )
}

async fn events(
    State(app): State<App>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, Refused> {
    let session = app.session(&headers)?;
    let grids = session.caller.grid_filter(HashSet::new())?;
    let viewer = app.viewer(&session.identity);
    let partitions = app.incidents.read_model.read().partitions();
    let asked = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .or(query.get("cursor").map(String::as_str))
        .filter(|c| !c.is_empty());
    let resume = asked.and_then(|c| Cursor::decode(c, partitions).ok());

    let mut ready = app.incidents.ready.clone();
    tokio::select! {
        loaded = ready.wait_for(|r| *r) => { let _ = loaded; }
        () = app.incidents.shutdown.cancelled() => {}
    }
    // A cursor this instance cannot resume from (garbled, or older than the events it
    // holds) gets a fresh snapshot: the page replaces its cards and misses nothing.
    let resume = resume.filter(|c| app.incidents.read_model.read().check_replayable(c).is_ok());
    if asked.is_some() && resume.is_none() {
        telemetry::app_stream_resnapshot();
    }
    let (first, resume_after) = match resume {
        Some(cursor) => (None, cursor),
        None => {
            let (snapshot, position) = snapshot(&app, &viewer, &grids);
            (
                Some(json_event("snapshot", &position.encode(), &snapshot)),
                position,
            )
        }
    };
    // A revoked sign-in (a lost phone) ends the stream at once; the reconnect is refused.
    let updates = start_watch_until_revoked(
        app.incidents.read_model.clone(),
        &app.incidents.live,
        WatchRequest {
            filter: WatchFilter {
                grid_ids: grids,
                ..WatchFilter::default()
            },
            resume_after: Some(resume_after),
            // The page draws each incident from its snapshot: one update per record is enough.
            compact_openings: true,
        },
        app.incidents.shutdown.clone(),
        session.caller.revocation_watch(),
    );
    let households = Arc::clone(&app.households);
    let changes = updates
        .take_while(|update| std::future::ready(update.is_ok()))
        .filter_map(move |update| {
            let event = update.ok().and_then(|update| {
                let incident = update.event?.incident?;
                if !follows(&viewer, &incident) {
                    return None;
                }
                let view = assignment_view(&viewer, &incident, &households);
                Some(json_event("change", &update.cursor, &view))
            });
            std::future::ready(event)
        });
    let hello = Event::default().retry(RECONNECT_AFTER).comment("helpgrid");
    let stream = stream::iter([Ok(hello)])
        .chain(stream::iter(first.map(Ok)))
        .chain(changes.map(Ok::<_, Infallible>));
    telemetry::app_stream_opened();
    let stream = crate::console::Counted::with(stream, telemetry::app_stream_closed);
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// The incident, if the viewer may act on it from the app: assigned to them, in a grid they
/// supervise, or waiting at the police desk for a patrol officer.
fn actionable(app: &App, session: &Session, incident_id: &str) -> Result<Incident, Refused> {
    let incident_id = requests::id("incident_id", incident_id).map_err(ApiError::from)?;
    let incident = app
        .incidents
        .read_model
        .read()
        .incident(&incident_id)
        .ok_or(ApiError::IncidentNotFound {
            incident_id: incident_id.clone(),
        })?;
    session.caller.may_read(&incident)?;
    let viewer = app.viewer(&session.identity);
    let view = assignment_view(&viewer, &incident, &app.households);
    let own = incident
        .assignments
        .iter()
        .any(|a| a.responder_id == viewer.subject);
    // Someone who was on it (a retry after "I need help", after closing) is let through: the
    // router answers a retry with success and anything else with its own refusal.
    if own || view.show || view.can_acknowledge || follows(&viewer, &incident) {
        Ok(incident)
    } else {
        Err(Refused::new(
            StatusCode::FORBIDDEN,
            format!(
                "incident {incident_id} is not assigned to you ({}); only its responder and the grid's supervisors act on it",
                viewer.subject
            ),
        ))
    }
}

#[derive(Deserialize)]
struct AckBody {
    #[serde(default)]
    request_id: String,
}

async fn acknowledge(
    State(app): State<App>,
    Path(incident_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let result = async {
        let session = app.post_session(&headers)?;
        let AckBody { request_id } = json_body(&body)?;
        actionable(&app, &session, &incident_id)?;
        let request = AcknowledgeRequest {
            incident_id,
            responder_id: session.identity.subject.clone(),
            request_id,
        };
        let command = requests::acknowledge(&request);
        command_answer(&app, &session, command).await
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

#[derive(Deserialize)]
struct CloseBody {
    #[serde(default)]
    request_id: String,
    /// The outcome code (`resolved_on_spot`, …) or the enum name.
    #[serde(default)]
    outcome: String,
    #[serde(default)]
    note: String,
}

/// The outcome codes the app takes (README "Outcome codes").
const OUTCOME_CODES: [&str; 6] = [
    "resolved_on_spot",
    "mediated",
    "referred_to_town",
    "referred_to_police",
    "false_alarm",
    "nobody_there",
];

/// `resolved_on_spot` or `INCIDENT_OUTCOME_RESOLVED_ON_SPOT` → the enum value; empty → 0 (the
/// request check then says an outcome is required); anything else → `None`.
fn outcome_value(code: &str) -> Option<i32> {
    use helpgrid_proto::pb::IncidentOutcome;
    if code.is_empty() {
        return Some(0);
    }
    let name = if code.starts_with("INCIDENT_OUTCOME_") {
        code.to_owned()
    } else {
        format!("INCIDENT_OUTCOME_{}", code.to_ascii_uppercase())
    };
    IncidentOutcome::from_str_name(&name)
        .filter(|o| *o != IncidentOutcome::Unspecified)
        .map(|o| o as i32)
}

async fn close(
    State(app): State<App>,
    Path(incident_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let result = async {
        let session = app.post_session(&headers)?;
        let CloseBody {
            request_id,
            outcome,
            note,
        } = json_body(&body)?;
        actionable(&app, &session, &incident_id)?;
        let outcome = outcome_value(&outcome).ok_or_else(|| {
            Refused::new(
                StatusCode::BAD_REQUEST,
                format!(
                    "outcome {outcome:?} is unknown; use one of {}",
                    OUTCOME_CODES.join(", ")
                ),
            )
        })?;
        let request = CloseRequest {
            incident_id,
            responder_id: session.identity.subject.clone(),
            outcome,
            note,
            request_id,
            ..Default::default()
        };
        let command = requests::close(&request);
        command_answer(&app, &session, command).await
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

async fn command_answer(
    app: &App,
    session: &Session,
    command: Result<ValidCommand, requests::RequestError>,
) -> Result<Response, Refused> {
    let incident = app.incidents.command(&session.caller, command).await?;
    let viewer = app.viewer(&session.identity);
    Ok(json_ok(&assignment_view(
        &viewer,
        &incident,
        &app.households,
    )))
}

#[derive(Deserialize)]
struct HelpBody {
    #[serde(default)]
    request_id: String,
    #[serde(default)]
    note: String,
}

/// "I need help": the responder's track goes one step up the ladder at once.
async fn ask_for_help(
    State(app): State<App>,
    Path(incident_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let result = async {
        let session = app.post_session(&headers)?;
        let HelpBody { request_id, note } = json_body(&body)?;
        actionable(&app, &session, &incident_id)?;
        let command =
            requests::escalate(&incident_id, &session.identity.subject, &note, &request_id);
        command_answer(&app, &session, command).await
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

#[derive(Deserialize)]
struct DutyBody {
    on_duty: bool,
}

async fn duty(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    let result = async {
        let session = app.post_session(&headers)?;
        let DutyBody { on_duty } = json_body(&body)?;
        let request = SetDutyRequest {
            responder_id: session.identity.subject.clone(),
            on_duty,
        };
        let responder = app.roster.change_duty(&session.caller, &request).await?;
        Ok::<_, Refused>(json_ok(
            &serde_json::json!({ "on_duty": responder.on_duty }),
        ))
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

#[derive(Deserialize)]
struct LocationBody {
    latitude: f64,
    longitude: f64,
}

async fn location(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    let result = async {
        let session = app.post_session(&headers)?;
        let LocationBody {
            latitude,
            longitude,
        } = json_body(&body)?;
        let request = UpdateLocationRequest {
            responder_id: session.identity.subject.clone(),
            location: Some(GeoPoint {
                latitude,
                longitude,
            }),
        };
        app.roster
            .record_location(&session.caller, &request)
            .await?;
        Ok::<_, Refused>(json_ok(&serde_json::json!({})))
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_codes_and_enum_names_both_work_and_nonsense_is_unknown() {
        use helpgrid_proto::pb::IncidentOutcome;
        assert_eq!(
            outcome_value("referred_to_town"),
            Some(IncidentOutcome::ReferredToTown as i32)
        );
        assert_eq!(
            outcome_value("INCIDENT_OUTCOME_NOBODY_THERE"),
            Some(IncidentOutcome::NobodyThere as i32)
        );
        assert_eq!(outcome_value(""), Some(0));
        assert_eq!(outcome_value("fixed_it"), None);
        assert_eq!(outcome_value("unspecified"), None);
        for code in OUTCOME_CODES {
            assert!(outcome_value(code).is_some(), "{code}");
        }
    }

    #[test]
    fn grpc_codes_become_the_matching_http_statuses() {
        assert_eq!(
            http_status(tonic::Code::PermissionDenied),
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            http_status(tonic::Code::InvalidArgument),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            http_status(tonic::Code::FailedPrecondition),
            StatusCode::CONFLICT
        );
        assert_eq!(
            http_status(tonic::Code::Unavailable),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
