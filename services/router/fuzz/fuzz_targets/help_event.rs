//! Any bytes on the help-events topic: decoding and validation never panic, and what they
//! accept is fit for the desk (which must then keep its indexes consistent).
#![no_main]

use helpgrid_router::domain::validate::{MAX_ID_LEN, decode_help_event};
use helpgrid_router::domain::{Desk, Policy, Roster};
use libfuzzer_sys::fuzz_target;

const NOW: i64 = 1_780_000_000_000;

fuzz_target!(|data: &[u8]| {
    if let Ok(event) = decode_help_event(Some(data), NOW) {
        assert!(!event.event_id.is_empty() && event.event_id.len() <= MAX_ID_LEN);
        assert!(!event.grid_id().is_empty());
        let mut desk = Desk::new(Policy::default());
        desk.on_help_event(0, &event, &Roster::default(), NOW);
        desk.on_help_event(0, &event, &Roster::default(), NOW + 1);
        desk.on_tick(&Roster::default(), NOW + 10_000_000);
        if let Err(problem) = desk.check_invariants() {
            panic!("{problem}");
        }
    }
});
