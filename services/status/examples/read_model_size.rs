//! What an open incident costs the status service's read model: resident memory per open
//! incident after restoring N snapshots from incident-state, plus the bounded Watch replay
//! log. A measurement, not a test: it prints figures.
//!
//!     cargo run --release -p helpgrid-status --example read_model_size -- 100000
//!
//! Memory does not depend on the build profile; times do (quote release builds only).

use helpgrid_common::time::to_timestamp;
use helpgrid_proto::pb::{
    Assignment, EscalationLevel, Incident, IncidentSource, IncidentState, PressKind, Priority,
    ResponderRole, Track,
};
use helpgrid_status::read_model::ReadModel;
use std::time::Instant;

const NOW: i64 = 1_760_000_000_000;

fn rss() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

/// An incident as the router writes it after opening and assigning.
fn incident(n: usize) -> Incident {
    let grid = format!("grid-{:05}", n % 13_000);
    let household = format!("{grid}-hh-{n:07}");
    Incident {
        incident_id: format!("inc-{n:08}-5b8e1c1e-0f7a-4c55-9d8e-2c41"),
        grid_id: grid.clone(),
        state: IncidentState::Assigned as i32,
        priority: Priority::Normal as i32,
        source: IncidentSource::Button as i32,
        device_id: format!("btn-{household}"),
        household_id: household,
        press_kind: PressKind::Help as i32,
        reported_at: Some(to_timestamp(NOW)),
        opened_at: Some(to_timestamp(NOW + n as i64)),
        last_event_at: Some(to_timestamp(NOW)),
        event_count: 1,
        recent_event_ids: vec![format!("{n:08}-5b8e1c1e-0f7a-4c55-9d8e-2c41")],
        assignments: vec![Assignment {
            track: Track::Community as i32,
            level: EscalationLevel::GridWorker as i32,
            responder_id: format!("w-{}", n % 13_000),
            responder_role: ResponderRole::GridWorker as i32,
            attempt: 1,
            assigned_at: Some(to_timestamp(NOW)),
            ack_deadline: Some(to_timestamp(NOW + 120_000)),
            ..Default::default()
        }],
        revision: 2,
        ..Default::default()
    }
}

fn main() {
    let open: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let before = rss();
    let started = Instant::now();
    let mut model = ReadModel::starting_at(&[0; 6], 10_000);
    for n in 0..open {
        model.restore_snapshot((n % 6) as i32, &incident(n));
    }
    let elapsed = started.elapsed();
    let after = rss();
    println!(
        "status read model: {} open incidents, RSS +{:.1} MiB, {:.0} bytes per open incident; restored in {:.2} s",
        model.incident_count(),
        (after - before) as f64 / 1_048_576.0,
        (after.saturating_sub(before)) as f64 / open as f64,
        elapsed.as_secs_f64()
    );
}
