//! What a responder's phone shows of an incident, and to whom. Pure.
//!
//! - [`follows`]: whether a viewer's stream carries an incident's changes at all. For a
//!   responder it is "has this incident ever involved me" (assigned, acknowledged, let the
//!   deadline pass, closed it) or, for a patrol officer, "it reached the police desk in my
//!   grids". Both only ever become true as an incident changes, never false again, so a page
//!   never holds a card whose later changes it would not receive.
//! - [`may_see_household`]: the household's details (id, address, contact, location, map
//!   link) in full only for the responder assigned now and the grid's supervisors;
//!   everyone else gets them masked.
//! - [`assignment_view`]: the JSON the page draws, built field by field.

use crate::console::view::{self, mask_name, outcome_code, priority, state};
use helpgrid_auth::{Identity, Role, Scope};
use helpgrid_common::time::{Millis, from_timestamp};
use helpgrid_proto::pb::{
    Assignment, CameraLabel, EscalationLevel, Incident, IncidentSource, IncidentState, PressKind,
};
use serde::Serialize;
use std::collections::HashMap;

/// Who looks at the app.
#[derive(Debug, Clone, PartialEq)]
pub struct Viewer {
    pub subject: String,
    pub role: Role,
    pub scope: Scope,
    /// A patrol officer (by the roster) may take incidents waiting at the police desk.
    pub patrol: bool,
}

impl Viewer {
    pub fn new(identity: &Identity, patrol: bool) -> Self {
        Self {
            subject: identity.subject.clone(),
            role: identity.role,
            scope: identity.scope.clone(),
            patrol,
        }
    }

    fn supervises(&self, incident: &Incident) -> bool {
        self.role == Role::Supervisor && self.scope.covers(&incident.grid_id)
    }
}

/// A household's details from the directory (`--households-file`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Household {
    pub contact_name: String,
    pub contact_phone: String,
    pub address: String,
}

/// Household id → details; empty when no directory is configured.
pub type Households = HashMap<String, Household>;

fn at_police_desk(a: &Assignment) -> bool {
    a.level == EscalationLevel::PoliceDesk as i32
}

fn assigned_to(incident: &Incident, who: &str) -> bool {
    incident.assignments.iter().any(|a| a.responder_id == who)
}

/// Whether `viewer`'s stream carries this incident (see the module comment).
pub fn follows(viewer: &Viewer, incident: &Incident) -> bool {
    if viewer.supervises(incident) {
        return true;
    }
    if !viewer.scope.covers(&incident.grid_id) {
        return false;
    }
    let me = viewer.subject.as_str();
    let involved = incident.closed_by == me
        || incident.assignments.iter().any(|a| {
            a.responder_id == me
                || a.acknowledged_by == me
                || a.timed_out_responder_ids.iter().any(|t| t == me)
        });
    involved || (viewer.patrol && incident.assignments.iter().any(at_police_desk))
}

/// The household in full: the responder assigned now, and the grid's supervisors.
pub fn may_see_household(viewer: &Viewer, incident: &Incident) -> bool {
    viewer.supervises(incident) || assigned_to(incident, &viewer.subject)
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HouseholdView {
    /// Masked (`hh-0…07`) unless the viewer may see it in full.
    pub id: String,
    pub masked: bool,
    pub address: String,
    pub contact_name: String,
    pub contact_phone: String,
    /// Where to go; only in full.
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AssignmentView {
    pub id: String,
    pub revision: u64,
    pub grid: String,
    pub state: &'static str,
    pub priority: &'static str,
    /// "help", "urgent", "medical", or the camera's label ("fight", …).
    pub kind: &'static str,
    /// "button", "camera" or "device" (a maintenance job).
    pub source: &'static str,
    /// Camera post and zone for camera alerts and camera maintenance jobs; empty when there
    /// is a household (see `household`).
    pub place: String,
    pub opened_at: Option<Millis>,
    /// The viewer's own acknowledgement deadline (or, for a supervisor, the earliest).
    pub deadline: Option<Millis>,
    pub reports: u32,
    /// The page shows the card: open and the viewer's to act on.
    pub show: bool,
    /// Assigned to the viewer now.
    pub mine: bool,
    pub acknowledged: bool,
    pub can_acknowledge: bool,
    pub can_close: bool,
    /// "I need help": the viewer's own track can go up the ladder.
    pub can_ask_help: bool,
    /// The viewer's track's level ("grid_worker", "grid_supervisor", …).
    pub level: &'static str,
    pub household: Option<HouseholdView>,
    pub outcome: Option<&'static str>,
}

fn mask_id(id: &str) -> String {
    let chars: Vec<char> = id.chars().collect();
    if chars.len() <= 4 {
        return "…".into();
    }
    let head: String = chars[..3].iter().collect();
    let tail: String = chars[chars.len() - 2..].iter().collect();
    format!("{head}…{tail}")
}

/// 13800138000 → 138****8000; short numbers keep only their last two digits.
fn mask_phone(phone: &str) -> String {
    let chars: Vec<char> = phone.chars().collect();
    match chars.len() {
        0 => String::new(),
        n if n >= 11 => {
            let head: String = chars[..3].iter().collect();
            let tail: String = chars[n - 4..].iter().collect();
            format!("{head}****{tail}")
        }
        n => format!(
            "{}{}",
            "*".repeat(n.saturating_sub(2)),
            chars[n.saturating_sub(2)..].iter().collect::<String>()
        ),
    }
}

/// The first part of an address (community and building), never the door.
fn mask_address(address: &str) -> String {
    let kept: String = address.chars().take(4).collect();
    if kept.is_empty() {
        kept
    } else {
        format!("{kept}…")
    }
}

fn household_view(incident: &Incident, full: bool, directory: &Households) -> HouseholdView {
    let entry = directory
        .get(&incident.household_id)
        .cloned()
        .unwrap_or_default();
    if full {
        HouseholdView {
            id: incident.household_id.clone(),
            masked: false,
            address: entry.address,
            contact_name: entry.contact_name,
            contact_phone: entry.contact_phone,
            latitude: incident.location.as_ref().map(|l| l.latitude),
            longitude: incident.location.as_ref().map(|l| l.longitude),
        }
    } else {
        HouseholdView {
            id: mask_id(&incident.household_id),
            masked: true,
            address: mask_address(&entry.address),
            contact_name: mask_name(&entry.contact_name),
            contact_phone: mask_phone(&entry.contact_phone),
            latitude: None,
            longitude: None,
        }
    }
}

fn kind(incident: &Incident) -> &'static str {
    if incident.source == IncidentSource::Camera as i32 {
        match CameraLabel::try_from(incident.camera_label) {
            Ok(CameraLabel::Intrusion) => "intrusion",
            Ok(CameraLabel::Fight) => "fight",
            Ok(CameraLabel::Fall) => "fall",
            Ok(CameraLabel::Fire) => "fire",
            Ok(CameraLabel::Crowd) => "crowd",
            Ok(CameraLabel::Loitering) => "loitering",
            _ => "camera",
        }
    } else if incident.source == IncidentSource::DeviceHealth as i32 {
        "maintenance"
    } else {
        match PressKind::try_from(incident.press_kind) {
            Ok(PressKind::Urgent) => "urgent",
            Ok(PressKind::Medical) => "medical",
            _ => "help",
        }
    }
}

fn level_name(level: i32) -> &'static str {
    match EscalationLevel::try_from(level) {
        Ok(EscalationLevel::GridWorker) => "grid_worker",
        Ok(EscalationLevel::GridSupervisor) => "grid_supervisor",
        Ok(EscalationLevel::PatrolOfficer) => "patrol_officer",
        Ok(EscalationLevel::PoliceDesk) => "police_desk",
        _ => "",
    }
}

/// The page's card for `incident` as `viewer` may see it.
pub fn assignment_view(
    viewer: &Viewer,
    incident: &Incident,
    directory: &Households,
) -> AssignmentView {
    let open = incident.state != IncidentState::Closed as i32;
    let me = viewer.subject.as_str();
    let own = incident.assignments.iter().find(|a| a.responder_id == me);
    let supervisor = viewer.supervises(incident);
    let waiting_at_desk = incident
        .assignments
        .iter()
        .find(|a| at_police_desk(a) && a.responder_id.is_empty());
    let mine = own.is_some();
    let acknowledged = own.is_some_and(|a| a.acknowledged_at.is_some());
    let unacknowledged = |a: &&Assignment| a.acknowledged_at.is_none();
    let can_acknowledge = open
        && (own.is_some_and(|a| a.acknowledged_at.is_none())
            || (supervisor && incident.assignments.iter().any(|a| unacknowledged(&a)))
            || (viewer.patrol && waiting_at_desk.is_some()));
    let can_close = open && incident.acknowledged_at.is_some() && (mine || supervisor);
    let deadline = match own {
        Some(a) => from_timestamp(a.ack_deadline.as_ref()),
        None if supervisor => incident
            .assignments
            .iter()
            .filter_map(|a| from_timestamp(a.ack_deadline.as_ref()))
            .min(),
        None => None,
    };
    let track = own
        .or(waiting_at_desk)
        .or_else(|| incident.assignments.first());
    // A household has its own (masked or full) block below; anything else is named by its post.
    let place = if incident.household_id.is_empty() {
        view::place(incident)
    } else {
        String::new()
    };
    let household = (!incident.household_id.is_empty())
        .then(|| household_view(incident, may_see_household(viewer, incident), directory));
    AssignmentView {
        id: incident.incident_id.clone(),
        revision: incident.revision,
        grid: incident.grid_id.clone(),
        state: state(incident),
        priority: priority(incident),
        kind: kind(incident),
        source: view::source_name(incident),
        place,
        opened_at: from_timestamp(incident.opened_at.as_ref()),
        deadline,
        reports: incident.event_count,
        show: open && (mine || supervisor || (viewer.patrol && waiting_at_desk.is_some())),
        mine: open && mine,
        acknowledged,
        can_acknowledge,
        can_close,
        can_ask_help: open && own.is_some_and(|a| a.level != EscalationLevel::PoliceDesk as i32),
        level: track.map_or("", |a| level_name(a.level)),
        household,
        outcome: outcome_code(incident),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use helpgrid_common::time::to_timestamp;
    use helpgrid_proto::pb::{GeoPoint, ResponderRole, Track};
    use std::collections::BTreeSet;

    fn viewer(subject: &str, role: Role, patrol: bool) -> Viewer {
        Viewer {
            subject: subject.into(),
            role,
            scope: Scope::Grids(BTreeSet::from(["g1".to_owned()])),
            patrol,
        }
    }

    fn incident_for(responder: &str) -> Incident {
        Incident {
            incident_id: "inc-1".into(),
            grid_id: "g1".into(),
            state: IncidentState::Assigned as i32,
            source: IncidentSource::Button as i32,
            press_kind: PressKind::Medical as i32,
            household_id: "hh-0001-07".into(),
            location: Some(GeoPoint {
                latitude: 32.6812,
                longitude: 109.0213,
            }),
            assignments: vec![Assignment {
                track: Track::Community as i32,
                level: EscalationLevel::GridWorker as i32,
                responder_id: responder.into(),
                responder_role: ResponderRole::GridWorker as i32,
                ack_deadline: Some(to_timestamp(61_000)),
                ..Default::default()
            }],
            revision: 2,
            ..Default::default()
        }
    }

    fn directory() -> Households {
        Households::from([(
            "hh-0001-07".to_owned(),
            Household {
                contact_name: "吴建国".into(),
                contact_phone: "13800138000".into(),
                address: "安澜社区3栋2单元501".into(),
            },
        )])
    }

    #[test]
    fn the_assigned_responder_sees_the_household_in_full_with_their_deadline() {
        let view = assignment_view(
            &viewer("w1", Role::Responder, false),
            &incident_for("w1"),
            &directory(),
        );
        assert!(view.show && view.mine && view.can_acknowledge && !view.can_close);
        assert_eq!(view.deadline, Some(61_000));
        let household = view.household.expect("a household");
        assert!(!household.masked);
        assert_eq!(household.contact_phone, "13800138000");
        assert_eq!(household.address, "安澜社区3栋2单元501");
        assert_eq!(household.latitude, Some(32.6812));
    }

    #[test]
    fn a_responder_who_was_reassigned_away_gets_the_change_but_only_masked() {
        let mut incident = incident_for("w2");
        incident.assignments[0]
            .timed_out_responder_ids
            .push("w1".into());
        let me = viewer("w1", Role::Responder, false);
        assert!(follows(&me, &incident), "the page must learn it is gone");
        let view = assignment_view(&me, &incident, &directory());
        assert!(!view.show && !view.mine && !view.can_acknowledge);
        let json = serde_json::to_string(&view).expect("json");
        for secret in [
            "吴建国",
            "13800138000",
            "3栋2单元501",
            "32.68",
            "hh-0001-07",
        ] {
            assert!(!json.contains(secret), "{secret} leaked: {json}");
        }
        assert!(
            json.contains("138****8000") && json.contains("吴某"),
            "{json}"
        );
    }

    #[test]
    fn a_responder_never_involved_does_not_follow_and_a_supervisor_of_the_grid_does() {
        let incident = incident_for("w2");
        assert!(!follows(&viewer("w1", Role::Responder, false), &incident));
        let supervisor = viewer("s1", Role::Supervisor, false);
        assert!(follows(&supervisor, &incident));
        let view = assignment_view(&supervisor, &incident, &directory());
        assert!(view.show && !view.mine && view.can_acknowledge);
        assert_eq!(view.household.map(|h| h.masked), Some(false));
        let elsewhere = Incident {
            grid_id: "g9".into(),
            ..incident
        };
        assert!(!follows(&supervisor, &elsewhere));
    }

    #[test]
    fn a_patrol_officer_sees_the_police_desk_masked_and_may_take_it() {
        let mut incident = incident_for("");
        incident.assignments[0].level = EscalationLevel::PoliceDesk as i32;
        incident.state = IncidentState::Waiting as i32;
        let officer = viewer("cop", Role::Responder, true);
        assert!(follows(&officer, &incident));
        assert!(!follows(&viewer("w1", Role::Responder, false), &incident));
        let view = assignment_view(&officer, &incident, &directory());
        assert!(view.show && view.can_acknowledge && !view.mine);
        assert_eq!(view.household.map(|h| h.masked), Some(true));
        assert_eq!(view.level, "police_desk");
    }

    #[test]
    fn a_closed_incident_is_hidden_and_carries_its_outcome() {
        let mut incident = incident_for("w1");
        incident.state = IncidentState::Closed as i32;
        incident.closed_by = "w1".into();
        incident.outcome = helpgrid_proto::pb::IncidentOutcome::NobodyThere as i32;
        let view = assignment_view(
            &viewer("w1", Role::Responder, false),
            &incident,
            &directory(),
        );
        assert!(!view.show && !view.can_acknowledge && !view.can_close);
        assert_eq!(view.outcome, Some("nobody_there"));
    }

    #[test]
    fn masks_keep_little() {
        assert_eq!(mask_id("hh-0001-07"), "hh-…07");
        assert_eq!(mask_phone("13800138000"), "138****8000");
        assert_eq!(mask_phone("110"), "*10");
        assert_eq!(mask_address("安澜社区3栋2单元501"), "安澜社区…");
        assert_eq!(mask_address(""), "");
    }
}
