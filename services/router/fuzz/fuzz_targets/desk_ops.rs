//! The incident state machine under any sequence of presses, detections, commands from
//! anyone, and time passing: no panic, and the derived indexes always match the incidents.
#![no_main]

use helpgrid_proto::pb::{self, ActorRole, CameraLabel, PressKind, Resolution, Responder, ResponderRole};
use helpgrid_router::domain::validate::{ValidAction, ValidBody, ValidCommand, ValidHelpEvent};
use helpgrid_router::domain::{Desk, Policy, Roster};
use libfuzzer_sys::fuzz_target;

const T0: i64 = 1_780_000_000_000;

fn roster() -> Roster {
    let mut roster = Roster::default();
    let people = [
        ("w1", ResponderRole::GridWorker, vec!["g1"]),
        ("w2", ResponderRole::GridWorker, vec!["g1", "g2"]),
        ("sup", ResponderRole::GridSupervisor, vec!["g1", "g2"]),
        ("cop", ResponderRole::PatrolOfficer, vec!["g1", "g2"]),
    ];
    for (id, role, grids) in people {
        roster.upsert(Responder {
            responder_id: id.into(),
            role: role as i32,
            grid_ids: grids.into_iter().map(String::from).collect(),
            on_duty: true,
            ..Responder::default()
        });
    }
    roster
}

fuzz_target!(|data: &[u8]| {
    let roster = roster();
    let policy = Policy { ack_deadline_normal_ms: 3_000, ack_deadline_high_ms: 2_000, ack_deadline_critical_ms: 1_000, camera_dedup_window_ms: 5_000, closed_retention_ms: 20_000, ..Policy::default() };
    let mut desk = Desk::new(policy);
    let mut now = T0;
    let mut incidents: Vec<String> = Vec::new();
    let actors = ["w1", "w2", "sup", "cop", "stranger"];
    for (step, op) in data.chunks(3).enumerate() {
        let (a, b, c) = (op[0], op.get(1).copied().unwrap_or(0), op.get(2).copied().unwrap_or(0));
        now += i64::from(c) * 100;
        let id = format!("e{step}");
        let grid = if b & 1 == 0 { "g1" } else { "g2" };
        match a % 6 {
            0 | 1 => {
                let kind = [PressKind::Help, PressKind::Urgent, PressKind::Medical][usize::from(b / 2) % 3];
                let press = pb::ButtonPress { grid_id: grid.into(), household_id: format!("h{}", b % 5), device_id: "d".into(), kind: kind as i32, ..Default::default() };
                let event = ValidHelpEvent { event_id: id, occurred_at: now, body: ValidBody::Press { press, kind } };
                let (_, out) = desk.on_help_event(0, &event, &roster, now);
                incidents.extend(out.iter().filter_map(|o| o.event.incident.as_ref().map(|i| i.incident_id.clone())));
            }
            2 => {
                let label = [CameraLabel::Loitering, CameraLabel::Fire, CameraLabel::Crowd][usize::from(b / 2) % 3];
                let alert = pb::CameraAlert { camera_id: format!("c{}", b % 3), grid_id: grid.into(), label: label as i32, confidence: f32::from(c) / 255.0, ..Default::default() };
                let event = ValidHelpEvent { event_id: id, occurred_at: now, body: ValidBody::Camera { alert, label } };
                let (_, out) = desk.on_help_event(0, &event, &roster, now);
                incidents.extend(out.iter().filter_map(|o| o.event.incident.as_ref().map(|i| i.incident_id.clone())));
            }
            3 | 4 if !incidents.is_empty() => {
                let target = incidents[usize::from(b) % incidents.len()].clone();
                let action = if a % 6 == 3 { ValidAction::Acknowledge } else { ValidAction::Close { outcome: pb::IncidentOutcome::ResolvedOnSpot, resolution: Resolution::Resolved, note: String::new() } };
                let command = ValidCommand {
                    command_id: id,
                    incident_id: target,
                    grid_id: grid.into(),
                    actor_id: actors[usize::from(c) % actors.len()].into(),
                    actor_role: ActorRole::Unspecified,
                    action,
                };
                desk.on_command(0, &command, &roster, now);
            }
            _ => {
                desk.on_tick(&roster, now);
            }
        }
        if let Err(problem) = desk.check_invariants() {
            panic!("step {step}: {problem}");
        }
    }
});
