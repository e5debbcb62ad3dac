//! Which incidents are meant for police: what a dispatch system subscribes to and may act on.

use helpgrid_proto::pb::{EscalationLevel, Incident, IncidentSource, Track};

/// Camera alerts, incidents with a police track, and incidents whose track climbed to a
/// patrol officer or the police desk. Once police-bound, an incident stays so: sources do
/// not change, tracks are never removed and levels only go up.
pub fn is_police_bound(incident: &Incident) -> bool {
    incident.source == IncidentSource::Camera as i32
        || incident.assignments.iter().any(|a| {
            a.track == Track::Police as i32
                || a.level == EscalationLevel::PatrolOfficer as i32
                || a.level == EscalationLevel::PoliceDesk as i32
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use helpgrid_proto::pb::Assignment;

    fn with(source: IncidentSource, track: Track, level: EscalationLevel) -> Incident {
        Incident {
            source: source as i32,
            assignments: vec![Assignment {
                track: track as i32,
                level: level as i32,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn camera_alerts_police_tracks_and_escalations_to_police_are_police_bound() {
        use EscalationLevel as L;
        use IncidentSource as S;
        assert!(is_police_bound(&with(
            S::Camera,
            Track::Police,
            L::PatrolOfficer
        )));
        assert!(is_police_bound(&with(
            S::Button,
            Track::Police,
            L::PatrolOfficer
        )));
        assert!(is_police_bound(&with(
            S::Button,
            Track::Community,
            L::PoliceDesk
        )));
        assert!(is_police_bound(&with(
            S::Button,
            Track::Community,
            L::PatrolOfficer
        )));
        assert!(!is_police_bound(&with(
            S::Button,
            Track::Community,
            L::GridSupervisor
        )));
    }
}
