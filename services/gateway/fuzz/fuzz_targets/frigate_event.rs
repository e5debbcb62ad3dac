//! Any bytes on `frigate/events`: the decoder never panics; every alert it gives has a
//! HelpGrid label, a score in 0..1 and a derived id that a second decode reproduces, and the
//! gate lets each id through once.
#![no_main]

use helpgrid_gateway::domain::frigate::{AlertGate, CameraRules, decode_event};
use helpgrid_proto::pb::CameraLabel;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let rules = CameraRules::default();
    if let Ok(event) = decode_event(data, &rules) {
        let again = decode_event(data, &rules).expect("decoding is deterministic");
        let mut gate = AlertGate::new(16);
        for (a, b) in event.alerts.iter().zip(&again.alerts) {
            assert_eq!(a.event_id, b.event_id);
            assert_ne!(a.label, CameraLabel::Unspecified);
            assert!((0.0..=1.0).contains(&a.confidence));
            assert!(gate.admit(&a.event_id));
            assert!(!gate.admit(&a.event_id));
        }
    }
});
