//! Any bytes on the incident-commands topic: decoding and validation never panic.
#![no_main]

use helpgrid_router::domain::validate::{MAX_ID_LEN, decode_command};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(command) = decode_command(Some(data), 1_780_000_000_000) {
        assert!(!command.incident_id.is_empty() && command.incident_id.len() <= MAX_ID_LEN);
        assert!(!command.actor_id.is_empty());
    }
});
