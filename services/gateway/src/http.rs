//! Signed HTTP in: cellular buttons (`POST /v1/press`) and NVR alarm pushes
//! (`POST /v1/alert`). A 202 means Kafka has the help event (acks=all): the device knows
//! help is coming. Any error means nothing was stored, and the device retries; the event id
//! derived from what it sent makes a retry of a stored request a duplicate, never a second
//! incident.
//!
//! Checks, in order: the device header, the per-device rate limit, the registry, the
//! signature and replay window, the body. Every refusal answers a status and a reason.

use crate::config::GatewayConfig;
use crate::domain::rate::RateLimiter;
use crate::domain::registry::{DeviceTable, Refusal};
use crate::domain::{event_id, frigate::Alert, intake, signature};
use crate::kafka::{DeadLetter, Outbox};
use crate::telemetry;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use helpgrid_common::time::{Millis, now_millis};
use helpgrid_proto::pb::{Device, DeviceKind};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

pub const HEADER_DEVICE: &str = "x-helpgrid-device";
pub const HEADER_TIMESTAMP: &str = "x-helpgrid-timestamp";
pub const HEADER_SIGNATURE: &str = "x-helpgrid-signature";

pub struct HttpIntake {
    pub config: Arc<GatewayConfig>,
    pub table: Arc<RwLock<DeviceTable>>,
    pub outbox: Outbox,
    pub limiter: Mutex<RateLimiter>,
    pub health: Arc<crate::health_watch::HealthWatch>,
    /// The latest stage of each device's incident (filled by [`crate::feedback`]).
    pub statuses: Arc<RwLock<crate::domain::feedback::StatusBook>>,
}

pub fn router(intake: Arc<HttpIntake>) -> Router {
    let limit = intake.config.max_body_bytes;
    Router::new()
        .route("/v1/press", post(press))
        .route("/v1/alert", post(alert))
        .route("/v1/status", axum::routing::get(status))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(intake)
}

/// A refusal: status, a stable reason label and a sentence for a person.
struct Answer {
    status: StatusCode,
    reason: &'static str,
    message: String,
    retry_after_s: Option<u64>,
}

fn answer(status: StatusCode, reason: &'static str, message: impl Into<String>) -> Answer {
    Answer {
        status,
        reason,
        message: message.into(),
        retry_after_s: None,
    }
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        metrics::counter!(telemetry::HTTP_RESPONSES, "status" => self.status.as_u16().to_string())
            .increment(1);
        let body = serde_json::json!({ "error": self.message, "reason": self.reason }).to_string();
        let mut response = (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response();
        if let Some(s) = self.retry_after_s
            && let Ok(v) = s.to_string().parse()
        {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        response
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

impl HttpIntake {
    /// Everything before the body: who is it, may they, is it really them.
    async fn authenticate(
        &self,
        path: &str,
        headers: &HeaderMap,
        body: &[u8],
        expected: DeviceKind,
        now: Millis,
    ) -> Result<(Device, Millis), Answer> {
        let device_id = header_str(headers, HEADER_DEVICE)
            .filter(|d| !d.is_empty())
            .ok_or_else(|| {
                answer(
                    StatusCode::BAD_REQUEST,
                    "missing_device",
                    "the X-HelpGrid-Device header is missing",
                )
            })?
            .to_owned();
        if let Ok(mut limiter) = self.limiter.lock()
            && let Err(wait_ms) = limiter.check(&device_id, now)
        {
            let wait_s = (wait_ms as u64).div_ceil(1000);
            return Err(Answer {
                retry_after_s: Some(wait_s),
                ..answer(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    format!("device {device_id} sends too often; retry in {wait_s} s"),
                )
            });
        }
        let device = self
            .table
            .read()
            .ok()
            .and_then(|t| t.get(&device_id).cloned());
        let Some(device) = device else {
            let refusal = Refusal::UnknownDevice(device_id.clone());
            self.dead_letter(path, &device_id, None, body, &refusal)
                .await?;
            return Err(answer(
                StatusCode::FORBIDDEN,
                refusal.kind(),
                refusal.to_string(),
            ));
        };
        let Some(secret) = self.config.credentials.get(&device.credential_ref) else {
            tracing::error!(device = %device_id, credential_ref = %device.credential_ref, "no credential for a registered HTTP device: add it to the credentials file");
            return Err(answer(
                StatusCode::SERVICE_UNAVAILABLE,
                "no_credential",
                format!(
                    "the gateway has no credential {:?} for this device; the operator must add it",
                    device.credential_ref
                ),
            ));
        };
        let (Some(ts), Some(sig)) = (
            header_str(headers, HEADER_TIMESTAMP),
            header_str(headers, HEADER_SIGNATURE),
        ) else {
            return Err(answer(
                StatusCode::UNAUTHORIZED,
                "missing_signature",
                "X-HelpGrid-Timestamp and X-HelpGrid-Signature are required",
            ));
        };
        let signed_at = signature::verify(secret, ts, sig, body, now, self.config.replay_window_ms)
            .map_err(|e| {
                let reason = match e {
                    signature::SignatureError::OutsideWindow(_) => "outside_replay_window",
                    signature::SignatureError::Mismatch => "bad_signature",
                    _ => "malformed_signature",
                };
                answer(StatusCode::UNAUTHORIZED, reason, e.to_string())
            })?;
        let routable = self
            .table
            .read()
            .ok()
            .map(|t| t.routable(&device_id, expected).cloned())
            .unwrap_or(Err(Refusal::UnknownDevice(device_id.clone())));
        match routable {
            Ok(d) => Ok((d, signed_at)),
            Err(refusal) => {
                self.dead_letter(path, &device_id, Some(&device.grid_id), body, &refusal)
                    .await?;
                Err(answer(
                    StatusCode::FORBIDDEN,
                    refusal.kind(),
                    refusal.to_string(),
                ))
            }
        }
    }

    async fn dead_letter(
        &self,
        path: &str,
        device: &str,
        grid: Option<&str>,
        body: &[u8],
        refusal: &Refusal,
    ) -> Result<(), Answer> {
        tracing::warn!(
            reason = %refusal, device = %device, grid = grid.unwrap_or(""), path = %path,
            "a press or alert from an unroutable device: dead-lettered, someone may need help"
        );
        metrics::counter!(telemetry::UNROUTABLE_DEVICES, "reason" => refusal.kind()).increment(1);
        metrics::counter!(telemetry::MESSAGES, "source" => "http", "outcome" => "refused")
            .increment(1);
        self.outbox
            .dead_letter(&DeadLetter {
                reason: refusal.to_string(),
                kind: refusal.kind(),
                origin: format!("http:{path}"),
                device,
                grid,
                payload: body,
            })
            .await
            .map_err(|error| {
                tracing::error!(%error, "cannot store a dead letter");
                answer(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "kafka_unavailable",
                    "the gateway cannot store the request now; retry",
                )
            })
    }

    async fn store(
        &self,
        device: &Device,
        event: &helpgrid_proto::pb::HelpEvent,
        kind: &'static str,
        started: Instant,
    ) -> Response {
        let event_id = event
            .envelope
            .as_ref()
            .map(|e| e.event_id.clone())
            .unwrap_or_default();
        match self.outbox.publish(&device.grid_id, event).await {
            Ok(()) => {
                metrics::counter!(telemetry::EVENTS_PUBLISHED, "kind" => kind).increment(1);
                metrics::counter!(telemetry::MESSAGES, "source" => "http", "outcome" => "event")
                    .increment(1);
                metrics::histogram!(telemetry::PUBLISH_SECONDS)
                    .record(started.elapsed().as_secs_f64());
                metrics::counter!(telemetry::HTTP_RESPONSES, "status" => "202").increment(1);
                (
                    StatusCode::ACCEPTED,
                    [(header::CONTENT_TYPE, "application/json")],
                    serde_json::json!({ "event_id": event_id }).to_string(),
                )
                    .into_response()
            }
            Err(error) => {
                tracing::error!(%error, device = %device.device_id, "help event not stored");
                answer(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "kafka_unavailable",
                    "the help event was not stored; retry",
                )
                .into_response()
            }
        }
    }
}

fn bad_body(e: &crate::domain::DecodeError) -> Answer {
    answer(StatusCode::BAD_REQUEST, e.kind(), e.to_string())
}

async fn press(State(s): State<Arc<HttpIntake>>, headers: HeaderMap, body: Bytes) -> Response {
    let started = Instant::now();
    let now = now_millis();
    let (device, signed_at) = match s
        .authenticate("/v1/press", &headers, &body, DeviceKind::HttpButton, now)
        .await
    {
        Ok(v) => v,
        Err(a) => return a.into_response(),
    };
    let p = match intake::decode_http_press(&body) {
        Ok(p) => p,
        Err(e) => return bad_body(&e).into_response(),
    };
    s.health.heard(&device, p.battery_percent).await;
    let pressed_at = p.pressed_at.unwrap_or(signed_at);
    let id = event_id::derive(&[
        "http-press",
        &device.device_id,
        &pressed_at.to_string(),
        &p.seq.map(|s| s.to_string()).unwrap_or_default(),
    ]);
    // The device clock names the press; the router's age checks use the signed time when
    // the device clock is far off.
    let occurred_at = if (pressed_at - now).abs() <= s.config.replay_window_ms {
        pressed_at
    } else {
        signed_at
    };
    let event = intake::press_event(
        &device,
        p.kind,
        id,
        occurred_at,
        p.battery_percent,
        format!("http:{}", device.device_id),
    );
    s.store(&device, &event, "press", started).await
}

/// `GET /v1/status`, signed like a press over an empty body: what became of the device's
/// latest incident. Only the device's own.
async fn status(State(s): State<Arc<HttpIntake>>, headers: HeaderMap) -> Response {
    let now = now_millis();
    let (device, _) = match s
        .authenticate("/v1/status", &headers, b"", DeviceKind::HttpButton, now)
        .await
    {
        Ok(v) => v,
        Err(a) => return a.into_response(),
    };
    let body = match s
        .statuses
        .read()
        .ok()
        .and_then(|b| b.get(&device.device_id).cloned())
    {
        Some(f) => serde_json::json!({
            "device_id": device.device_id,
            "incident_id": f.incident_id,
            "status": f.stage.word(),
            "revision": f.revision,
        }),
        None => serde_json::json!({ "device_id": device.device_id, "status": "none" }),
    };
    metrics::counter!(telemetry::HTTP_RESPONSES, "status" => "200").increment(1);
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn alert(State(s): State<Arc<HttpIntake>>, headers: HeaderMap, body: Bytes) -> Response {
    let started = Instant::now();
    let now = now_millis();
    let (device, signed_at) = match s
        .authenticate("/v1/alert", &headers, &body, DeviceKind::HttpCamera, now)
        .await
    {
        Ok(v) => v,
        Err(a) => return a.into_response(),
    };
    let a = match intake::decode_http_alert(&body) {
        Ok(a) => a,
        Err(e) => return bad_body(&e).into_response(),
    };
    let label_word = crate::domain::frigate::camera_label_word(a.label);
    let alert = Alert {
        event_id: event_id::derive(&["http-alert", &device.device_id, &a.alert_id, label_word]),
        label: a.label,
        zone: a.zone,
        confidence: a.confidence,
    };
    let occurred_at = a
        .occurred_at
        .filter(|t| (t - now).abs() <= s.config.replay_window_ms)
        .unwrap_or(signed_at);
    let event = intake::camera_event(
        &device,
        &alert,
        occurred_at,
        a.snapshot_ref,
        format!("http:{}", device.device_id),
    );
    s.store(&device, &event, "alert", started).await
}
