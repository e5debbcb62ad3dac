//! Who wants to hear what: a subscription validated once at the edge, and the one function
//! that decides whether a notice goes to it.
//!
//! An endpoint is a subscription: each has its own URL, secret, template, queues and
//! circuit breaker, so one receiver's trouble stays its own.

use super::notice::{Notice, NoticeKind};
use helpgrid_proto::pb;
use helpgrid_proto::pb::{NotifyTrigger, ResponderRole, Track, WebhookTemplate};
use std::collections::BTreeSet;
use std::sync::Arc;

/// Shortest HMAC key accepted (128 bits).
pub const MIN_SECRET_BYTES: usize = 16;
const MAX_ID_CHARS: usize = 64;
const MAX_URL_CHARS: usize = 2048;
/// Most notifications in one batched request: ~1 KiB each keeps a full batch far below
/// any receiver's body limit.
pub const MAX_BATCH: u32 = 500;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Template {
    Generic,
    WecomText,
    DingtalkText,
    FeishuText,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// Shared with every notification queued for it (no copy per notification), as are the
    /// URL and the secret.
    pub id: Arc<str>,
    pub url: Arc<str>,
    pub responder_ids: BTreeSet<String>,
    pub grid_ids: BTreeSet<String>,
    pub roles: BTreeSet<i32>,
    pub tracks: BTreeSet<i32>,
    pub triggers: BTreeSet<NoticeKind>,
    pub template: Template,
    pub secret: Arc<[u8]>,
    pub description: String,
    pub updated_at: Option<prost_types::Timestamp>,
    /// Most notifications per request, at least 1 (see `pb::Subscription::batch_max`).
    pub batch_max: u32,
}

/// Why a subscription was refused; the message tells the admin what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidSubscription {
    #[error("subscription is missing")]
    Missing,
    #[error("subscription_id {0:?} must be 1 to {MAX_ID_CHARS} letters, digits, '-', '_' or '.'")]
    Id(String),
    #[error("url {0:?} must be an absolute http:// or https:// URL with a host")]
    Url(String),
    #[error("triggers is empty: name at least one change to notify (e.g. NOTIFY_TRIGGER_ASSIGNED)")]
    NoTrigger,
    #[error("{field} has an unknown value {value}")]
    UnknownValue { field: &'static str, value: i32 },
    #[error(
        "secret must have at least {MIN_SECRET_BYTES} bytes (it keys the HMAC-SHA256 signature)"
    )]
    Secret,
    #[error("template is unspecified: choose WEBHOOK_TEMPLATE_GENERIC or an IM robot template")]
    Template,
    #[error(
        "batch_max {0} is not allowed: 0 or 1 (one notification per request), or up to {MAX_BATCH} with WEBHOOK_TEMPLATE_GENERIC (IM robots take one message per request)"
    )]
    Batch(u32),
}

pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.chars().count() <= MAX_ID_CHARS
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn valid_url(url: &str) -> bool {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    let Some(rest) = rest else { return false };
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    url.len() <= MAX_URL_CHARS
        && !host.is_empty()
        && !host.starts_with(':')
        && !url.chars().any(|c| c.is_whitespace() || c.is_control())
}

fn trigger_kind(trigger: NotifyTrigger) -> Option<NoticeKind> {
    Some(match trigger {
        NotifyTrigger::Unspecified => return None,
        NotifyTrigger::Opened => NoticeKind::Opened,
        NotifyTrigger::Assigned => NoticeKind::Assigned,
        NotifyTrigger::Renotify => NoticeKind::Renotify,
        NotifyTrigger::Reassigned => NoticeKind::Reassigned,
        NotifyTrigger::Escalated => NoticeKind::Escalated,
        NotifyTrigger::Attached => NoticeKind::Attached,
        NotifyTrigger::Acknowledged => NoticeKind::Acknowledged,
        NotifyTrigger::Closed => NoticeKind::Closed,
    })
}

fn kind_trigger(kind: NoticeKind) -> NotifyTrigger {
    match kind {
        NoticeKind::Opened => NotifyTrigger::Opened,
        NoticeKind::Assigned => NotifyTrigger::Assigned,
        NoticeKind::Renotify => NotifyTrigger::Renotify,
        NoticeKind::Reassigned => NotifyTrigger::Reassigned,
        NoticeKind::Escalated => NotifyTrigger::Escalated,
        NoticeKind::Attached => NotifyTrigger::Attached,
        NoticeKind::Acknowledged => NotifyTrigger::Acknowledged,
        NoticeKind::Closed => NotifyTrigger::Closed,
    }
}

fn known<T: TryFrom<i32>>(
    field: &'static str,
    values: &[i32],
    unspecified: i32,
) -> Result<BTreeSet<i32>, InvalidSubscription> {
    values
        .iter()
        .map(|&value| {
            if value == unspecified || T::try_from(value).is_err() {
                Err(InvalidSubscription::UnknownValue { field, value })
            } else {
                Ok(value)
            }
        })
        .collect()
}

impl Subscription {
    /// Validates a subscription as an admin sent it (or as read back from the topic).
    pub fn from_pb(sub: &pb::Subscription) -> Result<Self, InvalidSubscription> {
        if !valid_id(&sub.subscription_id) {
            return Err(InvalidSubscription::Id(sub.subscription_id.clone()));
        }
        if !valid_url(&sub.url) {
            return Err(InvalidSubscription::Url(sub.url.clone()));
        }
        let mut triggers = BTreeSet::new();
        for &raw in &sub.triggers {
            let kind = NotifyTrigger::try_from(raw)
                .ok()
                .and_then(trigger_kind)
                .ok_or(InvalidSubscription::UnknownValue {
                    field: "triggers",
                    value: raw,
                })?;
            triggers.insert(kind);
        }
        if triggers.is_empty() {
            return Err(InvalidSubscription::NoTrigger);
        }
        let template = match WebhookTemplate::try_from(sub.template) {
            Ok(WebhookTemplate::Generic) => Template::Generic,
            Ok(WebhookTemplate::WecomText) => Template::WecomText,
            Ok(WebhookTemplate::DingtalkText) => Template::DingtalkText,
            Ok(WebhookTemplate::FeishuText) => Template::FeishuText,
            Ok(WebhookTemplate::Unspecified) => return Err(InvalidSubscription::Template),
            Err(_) => {
                return Err(InvalidSubscription::UnknownValue {
                    field: "template",
                    value: sub.template,
                });
            }
        };
        if sub.secret.len() < MIN_SECRET_BYTES {
            return Err(InvalidSubscription::Secret);
        }
        if sub.batch_max > MAX_BATCH || (sub.batch_max > 1 && template != Template::Generic) {
            return Err(InvalidSubscription::Batch(sub.batch_max));
        }
        Ok(Self {
            id: Arc::from(sub.subscription_id.as_str()),
            url: Arc::from(sub.url.as_str()),
            responder_ids: sub.responder_ids.iter().cloned().collect(),
            grid_ids: sub.grid_ids.iter().cloned().collect(),
            roles: known::<ResponderRole>("roles", &sub.roles, 0)?,
            tracks: known::<Track>("tracks", &sub.tracks, 0)?,
            triggers,
            template,
            secret: Arc::from(sub.secret.as_bytes()),
            description: sub.description.clone(),
            updated_at: sub.updated_at,
            batch_max: sub.batch_max.max(1),
        })
    }

    /// The subscription as stored on the topic (`with_secret`) or shown to an admin.
    pub fn to_pb(&self, with_secret: bool) -> pb::Subscription {
        pb::Subscription {
            subscription_id: self.id.to_string(),
            url: self.url.to_string(),
            responder_ids: self.responder_ids.iter().cloned().collect(),
            grid_ids: self.grid_ids.iter().cloned().collect(),
            roles: self.roles.iter().copied().collect(),
            tracks: self.tracks.iter().copied().collect(),
            triggers: self
                .triggers
                .iter()
                .map(|k| kind_trigger(*k) as i32)
                .collect(),
            template: match self.template {
                Template::Generic => WebhookTemplate::Generic,
                Template::WecomText => WebhookTemplate::WecomText,
                Template::DingtalkText => WebhookTemplate::DingtalkText,
                Template::FeishuText => WebhookTemplate::FeishuText,
            } as i32,
            secret: if with_secret {
                String::from_utf8_lossy(&self.secret).into_owned()
            } else {
                String::new()
            },
            has_secret: !self.secret.is_empty(),
            description: self.description.clone(),
            updated_at: self.updated_at,
            batch_max: self.batch_max,
        }
    }

    /// Whether `notice` goes to this subscription: its kind is wanted, its grid is in the
    /// grid filter, and one responder it concerns passes the responder, role and track
    /// filters together (a role filter means that person's role, not anyone's).
    pub fn matches(&self, notice: &Notice) -> bool {
        if !self.triggers.contains(&notice.kind) {
            return false;
        }
        if !self.grid_ids.is_empty() && !self.grid_ids.contains(&notice.incident.grid_id) {
            return false;
        }
        if self.responder_ids.is_empty() && self.roles.is_empty() && self.tracks.is_empty() {
            return true;
        }
        notice.concerned.iter().any(|c| {
            (self.responder_ids.is_empty() || self.responder_ids.contains(&c.responder_id))
                && (self.roles.is_empty() || self.roles.contains(&(c.role as i32)))
                && (self.tracks.is_empty() || self.tracks.contains(&(c.track as i32)))
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::domain::notice::notice_of;
    use crate::domain::notice::tests::{assigned_event, event, incident};
    use helpgrid_proto::pb::{Escalated, incident_event::Change};

    pub(crate) fn subscription(id: &str, triggers: &[NotifyTrigger]) -> pb::Subscription {
        pb::Subscription {
            subscription_id: id.into(),
            url: "http://127.0.0.1:9/hook".into(),
            triggers: triggers.iter().map(|t| *t as i32).collect(),
            template: WebhookTemplate::Generic as i32,
            secret: "0123456789abcdef".into(),
            ..pb::Subscription::default()
        }
    }

    fn valid(sub: pb::Subscription) -> Subscription {
        Subscription::from_pb(&sub).expect("valid subscription")
    }

    #[test]
    fn a_subscription_needs_an_id_a_url_a_trigger_a_template_and_a_secret() {
        let good = subscription("sms-gw.1", &[NotifyTrigger::Assigned]);
        assert!(Subscription::from_pb(&good).is_ok());
        type Case = (fn(&mut pb::Subscription), InvalidSubscription);
        let cases: [Case; 9] = [
            (
                |s| s.subscription_id = "a b".into(),
                InvalidSubscription::Id("a b".into()),
            ),
            (
                |s| s.url = "ftp://x".into(),
                InvalidSubscription::Url("ftp://x".into()),
            ),
            (
                |s| s.url = "http:///path".into(),
                InvalidSubscription::Url("http:///path".into()),
            ),
            (|s| s.triggers.clear(), InvalidSubscription::NoTrigger),
            (|s| s.template = 0, InvalidSubscription::Template),
            (|s| s.secret = "short".into(), InvalidSubscription::Secret),
            (|s| s.batch_max = 501, InvalidSubscription::Batch(501)),
            (
                |s| {
                    s.template = WebhookTemplate::WecomText as i32;
                    s.batch_max = 2;
                },
                InvalidSubscription::Batch(2),
            ),
            (
                |s| s.roles = vec![99],
                InvalidSubscription::UnknownValue {
                    field: "roles",
                    value: 99,
                },
            ),
        ];
        for (change, expected) in cases {
            let mut sub = good.clone();
            change(&mut sub);
            assert_eq!(Subscription::from_pb(&sub), Err(expected));
        }
    }

    #[test]
    fn the_secret_is_stored_but_never_shown() {
        let sub = valid(subscription("a", &[NotifyTrigger::Closed]));
        assert_eq!(sub.to_pb(true).secret, "0123456789abcdef");
        let shown = sub.to_pb(false);
        assert_eq!(shown.secret, "");
        assert!(shown.has_secret);
        assert_eq!(Subscription::from_pb(&sub.to_pb(true)), Ok(sub));
    }

    #[test]
    fn a_responder_subscription_hears_only_that_responders_assignments() {
        let mut pb_sub = subscription("mine", &[NotifyTrigger::Assigned]);
        pb_sub.responder_ids = vec!["w-1".into()];
        let sub = valid(pb_sub);
        let mine = notice_of(&assigned_event("e1", "i1", "w-1", 0, 10)).expect("notice");
        let theirs = notice_of(&assigned_event("e2", "i2", "w-2", 0, 10)).expect("notice");
        assert!(sub.matches(&mine));
        assert!(!sub.matches(&theirs));
    }

    #[test]
    fn triggers_grids_roles_and_tracks_all_have_to_match() {
        let notice = notice_of(&assigned_event("e1", "i1", "w-1", 0, 10)).expect("notice");
        let mut s = subscription("x", &[NotifyTrigger::Closed]);
        assert!(!valid(s.clone()).matches(&notice), "trigger");
        s.triggers = vec![NotifyTrigger::Assigned as i32];
        s.grid_ids = vec!["g2".into()];
        assert!(!valid(s.clone()).matches(&notice), "grid");
        s.grid_ids = vec!["g1".into(), "g2".into()];
        assert!(valid(s.clone()).matches(&notice));
        s.roles = vec![ResponderRole::PatrolOfficer as i32];
        assert!(!valid(s.clone()).matches(&notice), "role");
        s.roles = vec![ResponderRole::GridWorker as i32];
        s.tracks = vec![Track::Police as i32];
        assert!(!valid(s.clone()).matches(&notice), "track");
        s.tracks = vec![Track::Community as i32];
        assert!(valid(s).matches(&notice));
    }

    #[test]
    fn a_police_agency_subscription_hears_an_escalation_to_the_police_desk() {
        let notice = notice_of(&event(
            "e",
            0,
            incident("i", "g1"),
            Change::Escalated(Escalated {
                track: Track::Police as i32,
                to_level: 4,
                ..Escalated::default()
            }),
        ))
        .expect("notice");
        let mut police = subscription("police", &[NotifyTrigger::Escalated]);
        police.tracks = vec![Track::Police as i32];
        assert!(valid(police).matches(&notice));
        let mut person = subscription("person", &[NotifyTrigger::Escalated]);
        person.responder_ids = vec!["w-1".into()];
        assert!(!valid(person).matches(&notice));
    }
}
