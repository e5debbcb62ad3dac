//! Any bytes on the roster topic: decoding never panics, and an accepted record can go into
//! the roster table and be removed again.
#![no_main]

use helpgrid_router::domain::Roster;
use helpgrid_router::domain::validate::decode_roster_record;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some(responder)) = decode_roster_record(Some(data)) {
        let mut roster = Roster::default();
        let id = responder.responder_id.clone();
        roster.upsert(responder.clone());
        roster.upsert(responder);
        assert_eq!(roster.len(), 1);
        roster.remove(&id);
        assert!(roster.is_empty());
    }
});
