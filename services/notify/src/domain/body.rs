//! The JSON a webhook receives. The generic body is HelpGrid's own documented shape (field
//! list in services/notify/README.md); the IM robot templates wrap a one-line text in the
//! shape each robot API takes, so a WeCom, DingTalk or Feishu group robot URL works as is.

use super::notice::{Notice, NoticeKind};
use super::subscription::Template;
use helpgrid_common::time::{Millis, to_timestamp};
use helpgrid_proto::pb::{CameraLabel, IncidentSource, IncidentState, PressKind, Priority};
use serde::Serialize;

/// `schema` of the generic body; a change that breaks receivers gets a new one.
pub const SCHEMA: &str = "helpgrid.notify.v1";

#[derive(Debug, Serialize)]
pub struct GenericBody<'a> {
    pub schema: &'static str,
    pub kind: &'static str,
    pub idempotency_key: &'a str,
    pub event_id: &'a str,
    pub subscription_id: &'a str,
    pub occurred_at: String,
    pub text: String,
    pub incident: IncidentBody<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub responder: Option<ResponderBody<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ack_deadline: Option<String>,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub reason: &'a str,
}

#[derive(Debug, Serialize)]
pub struct IncidentBody<'a> {
    pub incident_id: &'a str,
    pub grid_id: &'a str,
    pub state: String,
    pub priority: String,
    pub source: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub press_kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub camera_label: Option<String>,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub household_id: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub camera_id: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub zone: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub opened_at: Option<String>,
    pub event_count: u32,
    pub revision: u64,
}

#[derive(Debug, Serialize)]
pub struct Location {
    pub latitude: f64,
    pub longitude: f64,
}

#[derive(Debug, Serialize)]
pub struct ResponderBody<'a> {
    pub responder_id: &'a str,
    pub role: String,
    pub track: String,
}

/// `INCIDENT_STATE_ASSIGNED` → `assigned`.
fn short(name: &str, prefix: &str) -> String {
    name.strip_prefix(prefix)
        .unwrap_or(name)
        .to_ascii_lowercase()
}

fn rfc3339(ms: Millis) -> String {
    to_timestamp(ms).to_string()
}

fn kind_label(kind: NoticeKind) -> &'static str {
    match kind {
        NoticeKind::Opened => "新事件 opened",
        NoticeKind::Assigned => "新派单 assigned",
        NoticeKind::Renotify => "请尽快确认 not yet acknowledged",
        NoticeKind::Reassigned => "改派 reassigned",
        NoticeKind::Escalated => "升级 escalated",
        NoticeKind::Attached => "再次求助 repeated",
        NoticeKind::Acknowledged => "已确认 acknowledged",
        NoticeKind::Closed => "已办结 closed",
    }
}

/// One line for a phone screen or a chat group: what, where, how urgent, who, by when.
pub fn text(notice: &Notice) -> String {
    let i = &notice.incident;
    let what = match i.source() {
        IncidentSource::Camera => format!(
            "camera {} {}",
            i.camera_id,
            short(i.camera_label().as_str_name(), "CAMERA_LABEL_")
        ),
        _ => format!(
            "household {} {}",
            i.household_id,
            short(i.press_kind().as_str_name(), "PRESS_KIND_")
        ),
    };
    let mut line = format!(
        "[HelpGrid] {}: incident {} · grid {} · priority {} · {what}",
        kind_label(notice.kind),
        i.incident_id,
        i.grid_id,
        short(i.priority().as_str_name(), "PRIORITY_"),
    );
    if let Some(responder) = notice.responder_id() {
        line.push_str(&format!(" · responder {responder}"));
    }
    if let Some(deadline) = notice.ack_deadline {
        line.push_str(&format!(" · acknowledge by {}", rfc3339(deadline)));
    }
    if !notice.reason.is_empty() {
        line.push_str(&format!(" · {}", notice.reason));
    }
    line
}

pub fn generic<'a>(notice: &'a Notice, subscription_id: &'a str) -> GenericBody<'a> {
    let i = &notice.incident;
    let camera = i.source() == IncidentSource::Camera;
    let personal = notice.responder_id().is_some();
    GenericBody {
        schema: SCHEMA,
        kind: notice.kind.as_str(),
        idempotency_key: &notice.idempotency_key,
        event_id: &notice.event_id,
        subscription_id,
        occurred_at: rfc3339(notice.occurred_at),
        text: text(notice),
        incident: IncidentBody {
            incident_id: &i.incident_id,
            grid_id: &i.grid_id,
            state: short(
                IncidentState::try_from(i.state)
                    .unwrap_or_default()
                    .as_str_name(),
                "INCIDENT_STATE_",
            ),
            priority: short(
                Priority::try_from(i.priority)
                    .unwrap_or_default()
                    .as_str_name(),
                "PRIORITY_",
            ),
            source: short(i.source().as_str_name(), "INCIDENT_SOURCE_"),
            press_kind: (!camera).then(|| {
                short(
                    PressKind::try_from(i.press_kind)
                        .unwrap_or_default()
                        .as_str_name(),
                    "PRESS_KIND_",
                )
            }),
            camera_label: camera.then(|| {
                short(
                    CameraLabel::try_from(i.camera_label)
                        .unwrap_or_default()
                        .as_str_name(),
                    "CAMERA_LABEL_",
                )
            }),
            household_id: &i.household_id,
            camera_id: &i.camera_id,
            zone: &i.zone,
            location: i.location.map(|l| Location {
                latitude: l.latitude,
                longitude: l.longitude,
            }),
            opened_at: helpgrid_common::time::from_timestamp(i.opened_at.as_ref()).map(rfc3339),
            event_count: i.event_count,
            revision: i.revision,
        },
        responder: notice
            .concerned
            .first()
            .filter(|_| personal)
            .map(|c| ResponderBody {
                responder_id: &c.responder_id,
                role: short(c.role.as_str_name(), "RESPONDER_ROLE_"),
                track: short(c.track.as_str_name(), "TRACK_"),
            }),
        ack_deadline: notice.ack_deadline.map(rfc3339),
        reason: &notice.reason,
    }
}

/// The request body for `template`.
pub fn render(template: Template, notice: &Notice, subscription_id: &str) -> Vec<u8> {
    // Straight from the structs to bytes: going through a serde_json::Value first cost a
    // map and a String per field, the largest part of notify's allocations in a flood.
    let body = match template {
        Template::Generic => serde_json::to_vec(&generic(notice, subscription_id)),
        Template::WecomText | Template::DingtalkText => serde_json::to_vec(&serde_json::json!({
            "msgtype": "text",
            "text": { "content": text(notice) },
        })),
        Template::FeishuText => serde_json::to_vec(&serde_json::json!({
            "msg_type": "text",
            "content": { "text": text(notice) },
        })),
    };
    // Serializing plain structs and strings cannot fail; an empty object keeps the type.
    body.unwrap_or_else(|_| b"{}".to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::notice::notice_of;
    use crate::domain::notice::tests::assigned_event;
    use helpgrid_proto::pb::{GeoPoint, IncidentSource};
    use serde_json::Value;

    fn notice() -> Notice {
        let mut e = assigned_event("ev-1", "inc-1", "w-1", 1_764_000_000_000, 1_764_000_060_000);
        let i = e.incident.as_mut().expect("incident");
        i.source = IncidentSource::Button as i32;
        i.press_kind = PressKind::Urgent as i32;
        i.priority = Priority::High as i32;
        i.household_id = "h-7".into();
        i.location = Some(GeoPoint {
            latitude: 32.68,
            longitude: 109.03,
        });
        i.revision = 2;
        notice_of(&e).expect("notice")
    }

    fn json(bytes: &[u8]) -> Value {
        serde_json::from_slice(bytes).expect("valid JSON")
    }

    #[test]
    fn the_generic_body_carries_the_documented_fields() {
        let v = json(&render(Template::Generic, &notice(), "sms"));
        assert_eq!(v["schema"], "helpgrid.notify.v1");
        assert_eq!(v["kind"], "assigned");
        assert_eq!(v["idempotency_key"], "ev-1");
        assert_eq!(v["subscription_id"], "sms");
        assert_eq!(v["occurred_at"], "2025-11-24T16:00:00Z");
        assert_eq!(v["ack_deadline"], "2025-11-24T16:01:00Z");
        assert_eq!(v["incident"]["incident_id"], "inc-1");
        assert_eq!(v["incident"]["state"], "assigned");
        assert_eq!(v["incident"]["priority"], "high");
        assert_eq!(v["incident"]["source"], "button");
        assert_eq!(v["incident"]["press_kind"], "urgent");
        assert_eq!(v["incident"]["household_id"], "h-7");
        assert_eq!(v["incident"]["location"]["latitude"], 32.68);
        assert_eq!(v["incident"]["revision"], 2);
        assert!(v["incident"].get("camera_label").is_none());
        assert_eq!(v["responder"]["responder_id"], "w-1");
        assert_eq!(v["responder"]["role"], "grid_worker");
        assert_eq!(v["responder"]["track"], "community");
        assert!(v.get("reason").is_none());
    }

    #[test]
    fn im_robot_templates_wrap_the_text_line_in_each_robots_shape() {
        let n = notice();
        let line = text(&n);
        assert_eq!(
            line,
            "[HelpGrid] 新派单 assigned: incident inc-1 · grid g1 · priority high · \
             household h-7 urgent · responder w-1 · acknowledge by 2025-11-24T16:01:00Z"
        );
        for template in [Template::WecomText, Template::DingtalkText] {
            let v = json(&render(template, &n, "robot"));
            assert_eq!(v["msgtype"], "text");
            assert_eq!(v["text"]["content"], line.as_str());
        }
        let v = json(&render(Template::FeishuText, &n, "robot"));
        assert_eq!(v["msg_type"], "text");
        assert_eq!(v["content"]["text"], line.as_str());
    }
}
