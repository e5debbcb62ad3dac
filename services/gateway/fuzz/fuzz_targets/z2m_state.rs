//! Any bytes on a Zigbee2MQTT device topic (live or retained) and as an availability
//! payload: the decoders never panic, a retained message never yields a press, and a press
//! always has a kind.
#![no_main]

use helpgrid_gateway::domain::decode_availability;
use helpgrid_gateway::domain::z2m::{ActionMap, decode_state};
use helpgrid_proto::pb::PressKind;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let actions = ActionMap::default();
    if let Ok(report) = decode_state(data, false, &actions)
        && let Some(press) = report.press
    {
        assert_ne!(press.kind, PressKind::Unspecified);
        assert!(report.battery_percent.is_none_or(|b| b <= 100));
    }
    if let Ok(report) = decode_state(data, true, &actions) {
        assert!(report.press.is_none(), "a retained message replayed a press");
    }
    let _ = decode_availability(data);
});
