//! What an open incident costs the status service's read model: resident memory per open
//! incident after restoring N snapshots from incident-state, then the bounded Watch replay
//! log filled to its limit (a fixed cost, whatever the number of incidents). A measurement,
//! not a test: it prints figures.
//!
//!     cargo run --release -p helpgrid-status --example read_model_size -- 774000
//!
//! Memory is the process's resident set (`/proc/self/statm`), allocator overhead and
//! fragmentation included. It does not depend on the build profile; times do (quote release
//! builds only).

use helpgrid_common::time::to_timestamp;
use helpgrid_proto::pb::{
    Assignment, Envelope, EscalationLevel, Incident, IncidentEvent, IncidentOpened, IncidentSource,
    IncidentState, PressKind, Priority, ResponderRole, Track, incident_event::Change,
};
use helpgrid_status::read_model::ReadModel;
use std::time::Instant;

const NOW: i64 = 1_760_000_000_000;
const PARTITIONS: usize = 6;
/// The status service's default `--watch-replay-events` (per partition).
const REPLAY_LIMIT: usize = 10_000;

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
        .unwrap_or(774_000);
    let before = rss();
    let started = Instant::now();
    let mut model = ReadModel::starting_at(&[0; PARTITIONS], REPLAY_LIMIT);
    for n in 0..open {
        model.restore_snapshot((n % PARTITIONS) as i32, &incident(n));
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
    // The Watch replay log at its limit: the newest events of the same incidents (the next
    // revision of each), as the feed applies them after the restore.
    for (k, n) in (0..PARTITIONS * REPLAY_LIMIT).enumerate() {
        let n = n % open.max(1);
        let mut next = incident(n);
        next.revision += 1;
        let event = IncidentEvent {
            envelope: Some(Envelope {
                event_id: format!("{}:{}", next.incident_id, next.revision),
                occurred_at: Some(to_timestamp(NOW)),
                source: "helpgrid-router".into(),
                schema_version: 1,
            }),
            incident: Some(next),
            cause_id: String::new(),
            change: Some(Change::Opened(IncidentOpened::default())),
        };
        model.apply((n % PARTITIONS) as i32, k as i64, event);
    }
    let with_log = rss();
    println!(
        "with the Watch replay log full ({PARTITIONS} x {REPLAY_LIMIT} events): RSS +{:.1} MiB more; {:.0} bytes per open incident in all (process RSS {:.1} MiB)",
        (with_log.saturating_sub(after)) as f64 / 1_048_576.0,
        (with_log.saturating_sub(before)) as f64 / open as f64,
        with_log as f64 / 1_048_576.0
    );
}
