//! What an open incident costs the router: resident memory per open incident in the desk, the
//! size of its incident-state record, and the pure restore path (decode snapshots → desk).
//! A measurement, not a test: it prints figures.
//!
//!     cargo run --release -p helpgrid-router --example state_size -- 774000
//!
//! Memory is the process's resident set (`/proc/self/statm`) before and after the desk is
//! filled through its ordinary path (`on_help_event`, whose outputs are dropped as the
//! pipeline drops them after producing): what the kernel charges, allocator overhead and
//! fragmentation included, not a sum of allocation sizes. It does not depend on the build
//! profile (the same allocations); times do, so quote them from a release build only.

use helpgrid_proto::pb::{ButtonPress, GeoPoint, Incident, PressKind, Responder, ResponderRole};
use helpgrid_router::domain::validate::{ValidBody, ValidHelpEvent};
use helpgrid_router::domain::{Desk, Policy, Roster};
use prost::Message;
use std::time::Instant;

const NOW: i64 = 1_760_000_000_000;
const GRIDS: usize = 13_000;

/// Resident set size of this process, in bytes (Linux).
fn rss() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

fn press(n: usize) -> ValidHelpEvent {
    let g = n % GRIDS;
    let grid = format!("grid-{g:05}");
    let household = format!("{grid}-hh-{n:07}");
    ValidHelpEvent {
        event_id: format!("{n:08}-5b8e1c1e-0f7a-4c55-9d8e-2c41"),
        occurred_at: NOW - 3,
        body: ValidBody::Press {
            press: ButtonPress {
                device_id: format!("btn-{household}"),
                household_id: household,
                grid_id: grid,
                kind: PressKind::Help as i32,
                location: Some(GeoPoint {
                    latitude: 32.684,
                    longitude: 109.029,
                }),
                battery_percent: 80,
            },
            kind: PressKind::Help,
        },
    }
}

fn main() {
    let open: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(774_000);
    let mut roster = Roster::default();
    for g in 0..GRIDS {
        roster.upsert(Responder {
            responder_id: format!("w-{g}"),
            display_name: "吴建国".into(),
            role: ResponderRole::GridWorker as i32,
            grid_ids: vec![format!("grid-{g:05}")],
            on_duty: true,
            last_location: None,
            location_updated_at: None,
        });
    }
    let before = rss();
    let mut desk = Desk::new(Policy::default());
    let mut snapshots: Vec<Vec<u8>> = Vec::new();
    let mut record_bytes = 0usize;
    for n in 0..open {
        let (_, out) = desk.on_help_event((n % 6) as i32, &press(n), &roster, NOW);
        if n < 1000
            && let Some(incident) = out.last().and_then(|o| o.event.incident.as_ref())
        {
            record_bytes += incident.encoded_len();
            snapshots.push(incident.encode_to_vec());
        }
    }
    let after = rss();
    let per_open = (after.saturating_sub(before)) as f64 / open as f64;
    println!(
        "router desk: {} open incidents, RSS +{:.1} MiB, {per_open:.0} bytes per open incident (process RSS {:.1} MiB)",
        desk.open_count(),
        (after - before) as f64 / 1_048_576.0,
        after as f64 / 1_048_576.0
    );
    println!(
        "incident-state record: {:.0} bytes per open incident (protobuf, first 1000)",
        record_bytes as f64 / snapshots.len().max(1) as f64
    );
    drop(desk);
    // The restore path: decode every snapshot and rebuild the desk (Kafka left out).
    let encoded: Vec<Vec<u8>> = (0..open)
        .map(|n| snapshots[n % snapshots.len()].clone())
        .collect();
    let started = Instant::now();
    let mut restored = Desk::new(Policy::default());
    for (n, bytes) in encoded.iter().enumerate() {
        if let Ok(mut incident) = Incident::decode(bytes.as_slice()) {
            incident.incident_id = format!("inc-{n}");
            restored.restore_incident((n % 6) as i32, &incident, NOW);
        }
    }
    println!(
        "restore (decode + desk): {open} snapshots in {:.2} s",
        started.elapsed().as_secs_f64()
    );
}
