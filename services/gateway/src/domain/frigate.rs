//! Frigate's `<prefix>/events` messages → HelpGrid camera alerts.
//!
//! Frigate publishes one message per change of a tracked object: `type` is `new`, `update` or
//! `end`, `before`/`after` hold the object (`id`, `camera`, `label`, `sub_label`, `top_score`,
//! `current_zones`, `has_snapshot`, `false_positive`, `start_time`, …). HelpGrid reads `after`.
//! A [`CameraRules`] table says which object labels (and zones) are which HelpGrid labels;
//! objects no rule names (cars, dogs) are routine and not alerts. One Frigate event gives at
//! most one alert per HelpGrid label: the alert's event id is derived from the Frigate id and
//! the HelpGrid label, and [`AlertGate`] drops the updates that would repeat it.

use super::{DecodeError, clock, event_id, parse_json};
use helpgrid_common::time::Millis;
use helpgrid_proto::pb::CameraLabel;
use serde_json::{Map, Value};
use std::collections::{HashSet, VecDeque};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    New,
    Update,
    End,
}

/// Where an object must be for a rule to fire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ZoneMatch {
    /// Anywhere in view.
    Anywhere,
    /// In any zone the Frigate configuration defines (`label@*`).
    AnyZone,
    /// In this zone (`label@zone`).
    Named(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CameraRule {
    pub object: String,
    pub zone: ZoneMatch,
    pub label: CameraLabel,
}

/// Frigate object label (and zone) → HelpGrid label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CameraRules(pub Vec<CameraRule>);

impl Default for CameraRules {
    /// fire or smoke anywhere → fire; a person inside a watched zone → intrusion.
    fn default() -> Self {
        Self(vec![
            CameraRule {
                object: "fire".into(),
                zone: ZoneMatch::Anywhere,
                label: CameraLabel::Fire,
            },
            CameraRule {
                object: "smoke".into(),
                zone: ZoneMatch::Anywhere,
                label: CameraLabel::Fire,
            },
            CameraRule {
                object: "person".into(),
                zone: ZoneMatch::AnyZone,
                label: CameraLabel::Intrusion,
            },
        ])
    }
}

/// HelpGrid label words, as rules, the HTTP API and the docs write them.
pub fn camera_label_from_word(word: &str) -> Option<CameraLabel> {
    Some(match word {
        "intrusion" => CameraLabel::Intrusion,
        "fight" => CameraLabel::Fight,
        "fall" => CameraLabel::Fall,
        "fire" => CameraLabel::Fire,
        "crowd" => CameraLabel::Crowd,
        "loitering" => CameraLabel::Loitering,
        _ => return None,
    })
}

pub fn camera_label_word(label: CameraLabel) -> &'static str {
    match label {
        CameraLabel::Unspecified => "unspecified",
        CameraLabel::Intrusion => "intrusion",
        CameraLabel::Fight => "fight",
        CameraLabel::Fall => "fall",
        CameraLabel::Fire => "fire",
        CameraLabel::Crowd => "crowd",
        CameraLabel::Loitering => "loitering",
    }
}

impl CameraRules {
    /// Parses rules like `fire=fire`, `person@*=intrusion`, `person@gate_east=intrusion`.
    pub fn parse(rules: &[String]) -> Result<Self, String> {
        let mut out = Vec::new();
        for rule in rules {
            let (lhs, rhs) = rule
                .split_once('=')
                .ok_or_else(|| format!("expected object[@zone]=label, got {rule:?}"))?;
            let label = camera_label_from_word(rhs.trim()).ok_or_else(|| {
                format!(
                    "unknown HelpGrid label {:?} (intrusion, fight, fall, fire, crowd, loitering)",
                    rhs.trim()
                )
            })?;
            let (object, zone) = match lhs.split_once('@') {
                None => (lhs.trim(), ZoneMatch::Anywhere),
                Some((o, "*")) => (o.trim(), ZoneMatch::AnyZone),
                Some((o, z)) => (o.trim(), ZoneMatch::Named(z.trim().to_owned())),
            };
            if object.is_empty() {
                return Err(format!("rule {rule:?} names no object label"));
            }
            out.push(CameraRule {
                object: object.to_owned(),
                zone,
                label,
            });
        }
        Ok(Self(out))
    }

    /// The HelpGrid labels an object gives, each with the zone that made it fire ("" when
    /// the rule fires anywhere and the object is in no zone). One entry per label.
    fn matches(&self, object: &str, zones: &[String]) -> Vec<(CameraLabel, String)> {
        let mut out: Vec<(CameraLabel, String)> = Vec::new();
        for rule in self.0.iter().filter(|r| r.object == object) {
            let zone = match &rule.zone {
                ZoneMatch::Anywhere => Some(zones.first().cloned().unwrap_or_default()),
                ZoneMatch::AnyZone => zones.first().cloned(),
                ZoneMatch::Named(z) => zones.iter().find(|c| *c == z).cloned(),
            };
            if let Some(zone) = zone
                && !out.iter().any(|(l, _)| *l == rule.label)
            {
                out.push((rule.label, zone));
            }
        }
        out
    }
}

/// One HelpGrid alert a Frigate event gives.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// Derived from the Frigate event id and the HelpGrid label.
    pub event_id: String,
    pub label: CameraLabel,
    pub zone: String,
    pub confidence: f32,
}

/// A decoded `<prefix>/events` message.
#[derive(Debug, Clone, PartialEq)]
pub struct FrigateEvent {
    pub event_type: EventType,
    pub id: String,
    pub camera: String,
    pub object: String,
    pub sub_label: Option<String>,
    pub top_score: f32,
    pub current_zones: Vec<String>,
    pub has_snapshot: bool,
    /// When the object was first seen.
    pub started_at: Option<Millis>,
    /// What the rules make of it; empty for routine objects and false positives.
    pub alerts: Vec<Alert>,
}

fn string_field(obj: &Map<String, Value>, field: &'static str) -> Result<String, DecodeError> {
    match obj.get(field) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
        Some(Value::String(_)) | None | Some(Value::Null) => Err(DecodeError::Missing(field)),
        Some(_) => Err(DecodeError::WrongType {
            field,
            expected: "a string",
        }),
    }
}

fn bool_field(obj: &Map<String, Value>, field: &'static str) -> Result<bool, DecodeError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(DecodeError::WrongType {
            field,
            expected: "true or false",
        }),
    }
}

/// Decodes one `<prefix>/events` message and applies the rules.
pub fn decode_event(payload: &[u8], rules: &CameraRules) -> Result<FrigateEvent, DecodeError> {
    let Value::Object(root) = parse_json(payload)? else {
        return Err(DecodeError::WrongType {
            field: "event message",
            expected: "a JSON object",
        });
    };
    let event_type = match root.get("type") {
        Some(Value::String(t)) => match t.as_str() {
            "new" => EventType::New,
            "update" => EventType::Update,
            "end" => EventType::End,
            other => {
                return Err(DecodeError::Unknown {
                    field: "type",
                    value: other.to_owned(),
                });
            }
        },
        None | Some(Value::Null) => return Err(DecodeError::Missing("type")),
        Some(_) => {
            return Err(DecodeError::WrongType {
                field: "type",
                expected: "new, update or end",
            });
        }
    };
    let after = match root.get("after") {
        Some(Value::Object(a)) => a,
        None | Some(Value::Null) => return Err(DecodeError::Missing("after")),
        Some(_) => {
            return Err(DecodeError::WrongType {
                field: "after",
                expected: "an object",
            });
        }
    };
    let id = string_field(after, "id")?;
    let camera = string_field(after, "camera")?;
    let object = string_field(after, "label")?;
    // A string in older releases, `[name, score]` since 0.14, null when none.
    let sub_label = match after.get("sub_label") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Array(a)) => match a.first() {
            Some(Value::String(s)) => Some(s.clone()),
            _ => {
                return Err(DecodeError::WrongType {
                    field: "sub_label",
                    expected: "a name or [name, score]",
                });
            }
        },
        Some(_) => {
            return Err(DecodeError::WrongType {
                field: "sub_label",
                expected: "a name or [name, score]",
            });
        }
    };
    let top_score = match after.get("top_score") {
        Some(Value::Number(n)) => {
            n.as_f64()
                .filter(|s| (0.0..=1.0).contains(s))
                .ok_or(DecodeError::WrongType {
                    field: "top_score",
                    expected: "a score 0..1",
                })? as f32
        }
        None | Some(Value::Null) => return Err(DecodeError::Missing("top_score")),
        Some(_) => {
            return Err(DecodeError::WrongType {
                field: "top_score",
                expected: "a number",
            });
        }
    };
    let current_zones = match after.get("current_zones") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(zones)) => zones
            .iter()
            .map(|z| match z {
                Value::String(s) => Ok(s.clone()),
                _ => Err(DecodeError::WrongType {
                    field: "current_zones",
                    expected: "a list of zone names",
                }),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(DecodeError::WrongType {
                field: "current_zones",
                expected: "a list of zone names",
            });
        }
    };
    let has_snapshot = bool_field(after, "has_snapshot")?;
    let false_positive = bool_field(after, "false_positive")?;
    let started_at = match after.get("start_time") {
        Some(Value::Number(n)) => n.as_f64().and_then(clock::from_float_seconds),
        _ => None,
    };
    let alerts = if false_positive {
        Vec::new()
    } else {
        rules
            .matches(&object, &current_zones)
            .into_iter()
            .map(|(label, zone)| Alert {
                event_id: event_id::derive(&["frigate", &camera, &id, camera_label_word(label)]),
                label,
                zone,
                confidence: top_score,
            })
            .collect()
    };
    Ok(FrigateEvent {
        event_type,
        id,
        camera,
        object,
        sub_label,
        top_score,
        current_zones,
        has_snapshot,
        started_at,
        alerts,
    })
}

/// Remembers the last `capacity` alert event ids sent, so a Frigate event's stream of
/// updates gives one alert per label. Forgetting (restart, overflow) is safe: the id is
/// derived, so a repeat is recognised downstream by the router.
#[derive(Debug)]
pub struct AlertGate {
    seen: HashSet<String>,
    order: VecDeque<String>,
    capacity: usize,
}

impl AlertGate {
    pub fn new(capacity: usize) -> Self {
        Self {
            seen: HashSet::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// True the first time an alert id is seen.
    pub fn admit(&mut self, event_id: &str) -> bool {
        if self.seen.contains(event_id) {
            return false;
        }
        if self.order.len() >= self.capacity
            && let Some(old) = self.order.pop_front()
        {
            self.seen.remove(&old);
        }
        self.seen.insert(event_id.to_owned());
        self.order.push_back(event_id.to_owned());
        true
    }

    /// Lets an alert through again (its delivery to Kafka failed; the next update retries).
    pub fn forget(&mut self, event_id: &str) {
        if self.seen.remove(event_id) {
            self.order.retain(|e| e != event_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Frigate 0.14+ `frigate/events` message, shaped as its MQTT documentation shows.
    fn event(kind: &str, label: &str, zones: &[&str], top_score: f64) -> Vec<u8> {
        let zones = serde_json::to_string(zones).expect("zones");
        format!(
            r#"{{"type":"{kind}","before":{{"id":"1607123955.475377-mxklsc","camera":"gate_east","frame_time":1607123961.837752,"label":"{label}","sub_label":null,"top_score":0.5,"false_positive":false,"start_time":1607123955.475377,"end_time":null,"score":0.5,"box":[424,500,536,712],"area":23744,"ratio":2.113207,"region":[264,450,667,853],"current_zones":[],"entered_zones":[],"thumbnail":null,"has_snapshot":false,"has_clip":false,"active":true,"stationary":false,"motionless_count":0,"position_changes":2,"attributes":{{}}}},"after":{{"id":"1607123955.475377-mxklsc","camera":"gate_east","frame_time":1607123962.082975,"snapshot":{{"frame_time":1607123965.975463,"box":[415,489,528,700],"area":12728,"region":[260,446,660,846],"score":0.77546,"attributes":[]}},"label":"{label}","sub_label":["John Smith",0.79],"top_score":{top_score},"false_positive":false,"start_time":1607123955.475377,"end_time":null,"score":0.87890625,"box":[432,496,544,854],"area":40096,"ratio":1.251397,"region":[218,440,693,915],"current_zones":{zones},"entered_zones":{zones},"thumbnail":null,"has_snapshot":true,"has_clip":false,"active":true,"stationary":false,"motionless_count":0,"position_changes":2,"attributes":{{"face":0.86}},"current_attributes":[{{"label":"face","box":[442,506,534,524],"score":0.86}}]}}}}"#
        )
        .into_bytes()
    }

    fn labels(e: &FrigateEvent) -> Vec<CameraLabel> {
        e.alerts.iter().map(|a| a.label).collect()
    }

    #[test]
    fn fire_anywhere_is_a_fire_alert_with_its_score_and_fields() {
        let e = decode_event(&event("new", "fire", &[], 0.91), &CameraRules::default())
            .expect("decodes");
        assert_eq!(e.event_type, EventType::New);
        assert_eq!(e.id, "1607123955.475377-mxklsc");
        assert_eq!(e.camera, "gate_east");
        assert_eq!(e.sub_label.as_deref(), Some("John Smith"));
        assert!(e.has_snapshot);
        assert_eq!(e.started_at, Some(1_607_123_955_475));
        assert_eq!(labels(&e), [CameraLabel::Fire]);
        assert!((e.alerts[0].confidence - 0.91).abs() < 1e-6);
        assert_eq!(e.alerts[0].zone, "");
    }

    #[test]
    fn a_person_is_an_intrusion_only_inside_a_zone() {
        let rules = CameraRules::default();
        let outside = decode_event(&event("new", "person", &[], 0.9), &rules).expect("decodes");
        assert!(outside.alerts.is_empty());
        let inside =
            decode_event(&event("update", "person", &["yard"], 0.9), &rules).expect("decodes");
        assert_eq!(labels(&inside), [CameraLabel::Intrusion]);
        assert_eq!(inside.alerts[0].zone, "yard");
    }

    #[test]
    fn routine_objects_and_false_positives_give_no_alert() {
        let rules = CameraRules::default();
        let car = decode_event(&event("new", "car", &["driveway"], 0.9), &rules).expect("car");
        assert!(car.alerts.is_empty());
        let fp = String::from_utf8(event("new", "fire", &[], 0.9))
            .expect("utf8")
            .replace(
                r#""top_score":0.9,"false_positive":false"#,
                r#""top_score":0.9,"false_positive":true"#,
            );
        let fp = decode_event(fp.as_bytes(), &rules).expect("fp");
        assert!(fp.alerts.is_empty());
    }

    #[test]
    fn rules_are_configurable_by_zone() {
        let rules = CameraRules::parse(&[
            "person@gate=intrusion".into(),
            "person@*=loitering".into(),
            "smoke=fire".into(),
        ])
        .expect("rules");
        let at_gate = decode_event(&event("update", "person", &["road", "gate"], 0.8), &rules)
            .expect("decodes");
        assert_eq!(
            labels(&at_gate),
            [CameraLabel::Intrusion, CameraLabel::Loitering]
        );
        assert_eq!(at_gate.alerts[0].zone, "gate");
        assert!(CameraRules::parse(&["person=panic".into()]).is_err());
        assert!(CameraRules::parse(&["=fire".into()]).is_err());
        assert!(CameraRules::parse(&["fire".into()]).is_err());
    }

    #[test]
    fn one_frigate_event_gives_one_alert_per_label_across_its_updates() {
        let rules = CameraRules::default();
        let mut gate = AlertGate::new(100);
        let mut sent = Vec::new();
        for (kind, score) in [
            ("new", 0.7),
            ("update", 0.8),
            ("update", 0.95),
            ("end", 0.95),
        ] {
            let e = decode_event(&event(kind, "fire", &[], score), &rules).expect("decodes");
            for a in e.alerts {
                if gate.admit(&a.event_id) {
                    sent.push(a);
                }
            }
        }
        assert_eq!(sent.len(), 1);
        // Smoke in the same event is the same HelpGrid label: the same id.
        let smoke = decode_event(&event("update", "smoke", &[], 0.9), &rules).expect("smoke");
        assert_eq!(smoke.alerts[0].event_id, sent[0].event_id);
        // A person in a zone in the same event is another label: its own alert.
        let person =
            decode_event(&event("update", "person", &["yard"], 0.9), &rules).expect("person");
        assert!(gate.admit(&person.alerts[0].event_id));
    }

    #[test]
    fn the_gate_forgets_the_oldest_and_can_be_told_to_retry() {
        let mut gate = AlertGate::new(2);
        assert!(gate.admit("a"));
        assert!(gate.admit("b"));
        assert!(!gate.admit("a"));
        assert!(gate.admit("c"));
        assert!(gate.admit("a"), "a was the oldest and is forgotten");
        gate.forget("c");
        assert!(gate.admit("c"));
    }

    #[test]
    fn bad_input_gets_a_clear_reason() {
        let rules = CameraRules::default();
        let kind = |p: &str| {
            decode_event(p.as_bytes(), &rules)
                .map_err(|e| e.kind())
                .err()
        };
        assert_eq!(kind(""), Some("empty"));
        assert_eq!(kind("{"), Some("not_json"));
        assert_eq!(kind("[]"), Some("wrong_type"));
        assert_eq!(kind(r#"{"after":{}}"#), Some("missing_field"));
        assert_eq!(
            kind(r#"{"type":"moved","after":{}}"#),
            Some("unknown_value")
        );
        assert_eq!(kind(r#"{"type":"new"}"#), Some("missing_field"));
        assert_eq!(kind(r#"{"type":"new","after":[]}"#), Some("wrong_type"));
        let base = r#"{"type":"new","after":{"id":"1.2-abc","camera":"c","label":"fire","top_score":0.9}}"#;
        assert_eq!(kind(base), None);
        assert_eq!(
            kind(&base.replace(r#""camera":"c","#, "")),
            Some("missing_field")
        );
        assert_eq!(
            kind(&base.replace(r#""id":"1.2-abc""#, r#""id":7"#)),
            Some("wrong_type")
        );
        assert_eq!(kind(&base.replace("0.9", "9")), Some("wrong_type"));
        assert_eq!(kind(&base.replace("0.9", r#""high""#)), Some("wrong_type"));
        assert_eq!(
            kind(&base.replace(
                r#""top_score":0.9"#,
                r#""top_score":0.9,"current_zones":"yard""#
            )),
            Some("wrong_type")
        );
        assert_eq!(
            kind(&base.replace(
                r#""top_score":0.9"#,
                r#""top_score":0.9,"has_snapshot":"yes""#
            )),
            Some("wrong_type")
        );
        assert_eq!(
            kind(&base.replace(r#""top_score":0.9"#, r#""top_score":0.9,"sub_label":5"#)),
            Some("wrong_type")
        );
    }
}
