//! Zigbee2MQTT button messages.
//!
//! A device's state arrives on `<base>/<friendly_name>` as one JSON object: `action` when a
//! button was pressed (`single`, `double`, `long`, `hold`, … and vendor variants such as
//! `button_1_single`, `single_left`, `on_press`), plus readings like `battery` (percent),
//! `voltage`, `linkquality` (0..255) and, when the hub is configured with
//! `advanced.last_seen`, `last_seen` (ISO 8601 or epoch milliseconds).
//!
//! A *retained* state message is history the broker replays on (re)subscribe: its readings
//! count for health, its `action` never becomes a press.

use super::{DecodeError, clock, parse_json};
use helpgrid_common::time::Millis;
use helpgrid_proto::pb::PressKind;
use serde_json::Value;
use std::collections::HashMap;

/// Which actions are presses and of what kind; which are only the tail of a press.
#[derive(Debug, Clone, PartialEq)]
pub struct ActionMap {
    kinds: HashMap<String, PressKind>,
    ignored: Vec<String>,
}

impl Default for ActionMap {
    /// single → help, long/hold → urgent, double → medical; the usual vendor spellings of
    /// each; `release` (the end of a hold) and the empty action that Home Assistant's legacy
    /// action sensor publishes after each press are not presses.
    fn default() -> Self {
        let mut map = Self {
            kinds: HashMap::new(),
            ignored: vec!["release".into(), "".into()],
        };
        for (action, kind) in [
            ("single", PressKind::Help),
            ("click", PressKind::Help),
            ("press", PressKind::Help),
            ("short", PressKind::Help),
            ("on", PressKind::Help),
            ("double", PressKind::Medical),
            ("long", PressKind::Urgent),
            ("hold", PressKind::Urgent),
            ("triple", PressKind::Urgent),
            ("quadruple", PressKind::Urgent),
            ("many", PressKind::Urgent),
            ("sos", PressKind::Urgent),
            ("emergency", PressKind::Urgent),
        ] {
            map.kinds.insert(action.into(), kind);
        }
        map
    }
}

/// Words in vendor action names that only say which button or how it is held, never the kind
/// (`button_1_single`, `single_left`, `on_press`, `long_press`).
const NOISE: &[&str] = &[
    "button", "left", "right", "top", "bottom", "middle", "center",
];

impl ActionMap {
    /// Overrides (or adds) one action → kind entry, e.g. from `--action single=help`.
    pub fn set(&mut self, action: &str, kind: PressKind) {
        self.kinds.insert(action.to_ascii_lowercase(), kind);
    }

    /// Parses `action=help|urgent|medical|ignore`.
    pub fn apply_rule(&mut self, rule: &str) -> Result<(), String> {
        let (action, kind) = rule
            .split_once('=')
            .ok_or_else(|| format!("expected action=kind, got {rule:?}"))?;
        let action = action.trim().to_ascii_lowercase();
        match kind.trim().to_ascii_lowercase().as_str() {
            "ignore" => {
                self.kinds.remove(&action);
                self.ignored.push(action);
            }
            other => {
                let kind = press_kind_from_word(other).ok_or_else(|| {
                    format!("unknown press kind {other:?} (help, urgent, medical or ignore)")
                })?;
                self.ignored.retain(|a| *a != action);
                self.kinds.insert(action, kind);
            }
        }
        Ok(())
    }

    /// What an action means: `Ok(Some(kind))` a press, `Ok(None)` not a press, `Err` unknown.
    pub fn classify(&self, action: &str) -> Result<Option<PressKind>, UnknownAction> {
        let action = action.trim().to_ascii_lowercase();
        if self.ignored.contains(&action) {
            return Ok(None);
        }
        if let Some(kind) = self.kinds.get(&action) {
            return Ok(Some(*kind));
        }
        let tokens: Vec<&str> = action
            .split(['_', '-', ' '])
            .filter(|t| {
                !t.is_empty() && !NOISE.contains(t) && !t.bytes().all(|b| b.is_ascii_digit())
            })
            .collect();
        // `hold_release`, `on_press_release`: the end of a press already reported.
        if tokens
            .iter()
            .any(|t| self.ignored.iter().any(|i| !i.is_empty() && i == t))
        {
            return Ok(None);
        }
        // The strongest kind named: `on_hold` is a hold even though `on` alone is a press.
        tokens
            .iter()
            .filter_map(|t| self.kinds.get(*t).copied())
            .max_by_key(|k| severity(*k))
            .map(Some)
            .ok_or(UnknownAction)
    }
}

/// An action neither mapped nor ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownAction;

fn severity(kind: PressKind) -> u8 {
    match kind {
        PressKind::Unspecified => 0,
        PressKind::Help => 1,
        PressKind::Medical => 2,
        PressKind::Urgent => 3,
    }
}

/// `help`, `urgent`, `medical` (the words the configuration and the HTTP API use).
pub fn press_kind_from_word(word: &str) -> Option<PressKind> {
    match word {
        "help" => Some(PressKind::Help),
        "urgent" => Some(PressKind::Urgent),
        "medical" => Some(PressKind::Medical),
        _ => None,
    }
}

/// A press found in a state message.
#[derive(Debug, Clone, PartialEq)]
pub struct Press {
    pub kind: PressKind,
    /// The action as the hub sent it (part of the event id).
    pub action: String,
}

/// One decoded state message.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StateReport {
    /// Present only for a live (not retained) message whose action is a press.
    pub press: Option<Press>,
    pub battery_percent: Option<u8>,
    pub linkquality: Option<u8>,
    /// `last_seen` as sent (part of the event id) and as milliseconds.
    pub last_seen: Option<(String, Millis)>,
}

/// Decodes `<base>/<friendly_name>`. `retained` is the MQTT retain flag of the delivery.
pub fn decode_state(
    payload: &[u8],
    retained: bool,
    actions: &ActionMap,
) -> Result<StateReport, DecodeError> {
    let Value::Object(map) = parse_json(payload)? else {
        return Err(DecodeError::WrongType {
            field: "state message",
            expected: "a JSON object",
        });
    };
    let mut report = StateReport::default();
    match map.get("battery") {
        None | Some(Value::Null) => {}
        Some(Value::Number(n)) => {
            let pct =
                n.as_f64()
                    .filter(|p| (0.0..=100.0).contains(p))
                    .ok_or(DecodeError::WrongType {
                        field: "battery",
                        expected: "a percentage 0..100",
                    })?;
            report.battery_percent = Some(pct.round() as u8);
        }
        Some(_) => {
            return Err(DecodeError::WrongType {
                field: "battery",
                expected: "a number",
            });
        }
    }
    match map.get("linkquality") {
        None | Some(Value::Null) => {}
        Some(Value::Number(n)) => {
            let lq = n
                .as_u64()
                .filter(|q| *q <= 255)
                .ok_or(DecodeError::WrongType {
                    field: "linkquality",
                    expected: "an integer 0..255",
                })?;
            report.linkquality = Some(lq as u8);
        }
        Some(_) => {
            return Err(DecodeError::WrongType {
                field: "linkquality",
                expected: "a number",
            });
        }
    }
    report.last_seen = match map.get("last_seen") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => {
            let ms = n
                .as_i64()
                .filter(|ms| *ms > 0)
                .ok_or(DecodeError::WrongType {
                    field: "last_seen",
                    expected: "epoch milliseconds",
                })?;
            Some((ms.to_string(), ms))
        }
        Some(Value::String(s)) => {
            let ms = clock::parse_rfc3339(s).ok_or(DecodeError::WrongType {
                field: "last_seen",
                expected: "an ISO 8601 date-time",
            })?;
            Some((s.clone(), ms))
        }
        Some(_) => {
            return Err(DecodeError::WrongType {
                field: "last_seen",
                expected: "a date-time or epoch milliseconds",
            });
        }
    };
    let action = match map.get("action") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(_) => {
            return Err(DecodeError::WrongType {
                field: "action",
                expected: "a string",
            });
        }
    };
    if let Some(action) = action
        && !retained
    {
        let kind = actions
            .classify(action)
            .map_err(|UnknownAction| DecodeError::Unknown {
                field: "action",
                value: action.to_owned(),
            })?;
        report.press = kind.map(|kind| Press {
            kind,
            action: action.to_owned(),
        });
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What an Aqara WXKG11LM behind Zigbee2MQTT publishes on a single click (with
    /// `advanced.last_seen: ISO_8601`).
    const AQARA_SINGLE: &[u8] = br#"{"action":"single","battery":100,"device_temperature":30,"linkquality":102,"power_outage_count":6,"voltage":3025,"last_seen":"2026-11-29T21:38:56.796Z"}"#;

    fn decode(payload: &[u8]) -> Result<StateReport, DecodeError> {
        decode_state(payload, false, &ActionMap::default())
    }

    fn kind_of(action: &str) -> Option<PressKind> {
        let payload = format!(r#"{{"action":"{action}","linkquality":90}}"#);
        decode(payload.as_bytes())
            .expect("decodes")
            .press
            .map(|p| p.kind)
    }

    #[test]
    fn a_single_click_is_a_help_press_with_its_readings() {
        let r = decode(AQARA_SINGLE).expect("decodes");
        assert_eq!(
            r.press,
            Some(Press {
                kind: PressKind::Help,
                action: "single".into()
            })
        );
        assert_eq!(r.battery_percent, Some(100));
        assert_eq!(r.linkquality, Some(102));
        assert_eq!(
            r.last_seen,
            Some(("2026-11-29T21:38:56.796Z".into(), 1_795_988_336_796))
        );
    }

    #[test]
    fn default_mapping_long_and_hold_are_urgent_double_is_medical() {
        assert_eq!(kind_of("single"), Some(PressKind::Help));
        assert_eq!(kind_of("long"), Some(PressKind::Urgent));
        assert_eq!(kind_of("hold"), Some(PressKind::Urgent));
        assert_eq!(kind_of("double"), Some(PressKind::Medical));
    }

    #[test]
    fn vendor_variants_map_by_their_kind_word() {
        // Multi-button remotes, Hue/IKEA-style names, Sonoff/Tuya spellings.
        assert_eq!(kind_of("button_1_single"), Some(PressKind::Help));
        assert_eq!(kind_of("1_double"), Some(PressKind::Medical));
        assert_eq!(kind_of("single_left"), Some(PressKind::Help));
        assert_eq!(kind_of("on_press"), Some(PressKind::Help));
        assert_eq!(kind_of("on_hold"), Some(PressKind::Urgent));
        assert_eq!(kind_of("long_press"), Some(PressKind::Urgent));
        assert_eq!(kind_of("SINGLE"), Some(PressKind::Help));
    }

    #[test]
    fn release_and_the_empty_action_are_not_presses() {
        assert_eq!(kind_of("release"), None);
        assert_eq!(kind_of("hold_release"), None);
        assert_eq!(kind_of("on_press_release"), None);
        assert_eq!(kind_of(""), None);
    }

    #[test]
    fn an_unknown_action_is_refused_with_its_name() {
        let err = decode(br#"{"action":"rotate_right"}"#).expect_err("refused");
        assert_eq!(
            err,
            DecodeError::Unknown {
                field: "action",
                value: "rotate_right".into()
            }
        );
    }

    #[test]
    fn a_retained_message_never_replays_a_press_but_its_readings_count() {
        let r = decode_state(AQARA_SINGLE, true, &ActionMap::default()).expect("decodes");
        assert_eq!(r.press, None);
        assert_eq!(r.battery_percent, Some(100));
        // Even an action HelpGrid does not know is harmless when retained.
        assert!(decode_state(br#"{"action":"rotate"}"#, true, &ActionMap::default()).is_ok());
    }

    #[test]
    fn readings_without_an_action_are_a_heartbeat() {
        let r = decode(br#"{"battery":7,"linkquality":40,"voltage":2600}"#).expect("decodes");
        assert_eq!(r.press, None);
        assert_eq!(r.battery_percent, Some(7));
    }

    #[test]
    fn epoch_last_seen_is_milliseconds() {
        let r = decode(br#"{"action":"single","last_seen":1764452336796}"#).expect("decodes");
        assert_eq!(
            r.last_seen,
            Some(("1764452336796".into(), 1_764_452_336_796))
        );
    }

    #[test]
    fn the_mapping_is_configurable() {
        let mut map = ActionMap::default();
        map.apply_rule("double=urgent").expect("rule");
        map.apply_rule("single=ignore").expect("rule");
        map.apply_rule("arrow_left_click=medical").expect("rule");
        let d = |a: &str| {
            decode_state(format!(r#"{{"action":"{a}"}}"#).as_bytes(), false, &map)
                .expect("decodes")
                .press
                .map(|p| p.kind)
        };
        assert_eq!(d("double"), Some(PressKind::Urgent));
        assert_eq!(d("single"), None);
        assert_eq!(d("arrow_left_click"), Some(PressKind::Medical));
        assert!(map.apply_rule("single=panic").is_err());
        assert!(map.apply_rule("single").is_err());
    }

    #[test]
    fn bad_input_gets_a_clear_reason() {
        let kind = |p: &[u8]| decode(p).map_err(|e| e.kind()).err();
        assert_eq!(kind(b""), Some("empty"));
        assert_eq!(kind(b"single"), Some("not_json"));
        assert_eq!(kind(br#"{"action":"single""#), Some("not_json"));
        assert_eq!(kind(br#"["single"]"#), Some("wrong_type"));
        assert_eq!(kind(br#"{"action":1}"#), Some("wrong_type"));
        assert_eq!(
            kind(br#"{"action":"single","battery":"full"}"#),
            Some("wrong_type")
        );
        assert_eq!(kind(br#"{"battery":140}"#), Some("wrong_type"));
        assert_eq!(kind(br#"{"linkquality":-3}"#), Some("wrong_type"));
        assert_eq!(
            kind(br#"{"action":"single","last_seen":"soon"}"#),
            Some("wrong_type")
        );
        assert_eq!(kind(br#"{"last_seen":true}"#), Some("wrong_type"));
        let mut big = br#"{"action":"single","pad":""#.to_vec();
        big.extend(std::iter::repeat_n(b'x', super::super::MAX_PAYLOAD_BYTES));
        big.extend(br#""}"#);
        assert_eq!(kind(&big), Some("too_large"));
    }
}
