//! HelpGrid gateway: what real buttons and cameras send, turned into help events.
//!
//! - [`domain`]: the device payloads (Zigbee2MQTT, Frigate, signed HTTP), the registry and
//!   derived event ids. Pure, unit-tested, fuzzed.
//!
//! A Zigbee2MQTT press travels: MQTT `<base>/<friendly_name>` → [`domain::z2m::decode_state`]
//! → registry lookup → [`domain::intake::press_event`] → Kafka `help-events`, keyed by grid.

pub mod domain;
