//! An incident as an OASIS Common Alerting Protocol 1.2 alert, the XML many agencies'
//! systems ingest. Pure: the incident and the sending time in, the document out.
//!
//! Mapping: the alert's `identifier` is `<incident id>.r<revision>`, so every state of the
//! incident is its own message; `incidents` names the incident, tying them together. Open
//! incidents are `Alert`s, closed ones `Update`s with urgency `Past`. The area is the grid
//! (a geocode) and, when the source reported one, a 100 m circle around the location —
//! police must know where to go, so a CAP alert is for restricted distribution only.

use helpgrid_common::time::{Millis, from_timestamp};
use helpgrid_proto::pb::{
    CameraLabel, EscalationLevel, Incident, IncidentOutcome, IncidentSource, IncidentState,
    PressKind, Priority, Track,
};
use std::fmt::Write;

/// What the alert says about its sender and where it may go.
#[derive(Debug, Clone, PartialEq)]
pub struct CapSender {
    /// CAP `sender`: identifies the originator (no spaces, commas or `<`/`&`).
    pub sender: String,
    /// CAP `restriction`: who may receive it.
    pub restriction: String,
}

impl Default for CapSender {
    fn default() -> Self {
        Self {
            sender: "helpgrid".into(),
            restriction: "community responders and police dispatch only".into(),
        }
    }
}

/// Renders `incident` as a CAP 1.2 `<alert>` sent at `sent`.
pub fn render(incident: &Incident, from: &CapSender, sent: Millis) -> String {
    let closed = incident.state == IncidentState::Closed as i32;
    let mut xml = String::with_capacity(2048);
    xml.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    xml.push_str("<alert xmlns=\"urn:oasis:names:tc:emergency:cap:1.2\">\n");
    element(
        &mut xml,
        1,
        "identifier",
        &format!("{}.r{}", incident.incident_id, incident.revision),
    );
    element(&mut xml, 1, "sender", &from.sender);
    element(&mut xml, 1, "sent", &cap_time(sent));
    element(&mut xml, 1, "status", "Actual");
    element(
        &mut xml,
        1,
        "msgType",
        if closed { "Update" } else { "Alert" },
    );
    element(&mut xml, 1, "source", "HelpGrid");
    element(&mut xml, 1, "scope", "Restricted");
    element(&mut xml, 1, "restriction", &from.restriction);
    element(&mut xml, 1, "incidents", &incident.incident_id);
    xml.push_str("  <info>\n");
    element(&mut xml, 2, "language", "en-US");
    for category in categories(incident) {
        element(&mut xml, 2, "category", category);
    }
    element(&mut xml, 2, "event", &event_name(incident));
    element(
        &mut xml,
        2,
        "responseType",
        if closed { "AllClear" } else { "Execute" },
    );
    let (urgency, severity) = urgency_and_severity(incident, closed);
    element(&mut xml, 2, "urgency", urgency);
    element(&mut xml, 2, "severity", severity);
    element(&mut xml, 2, "certainty", certainty(incident));
    if let Some(onset) = from_timestamp(incident.reported_at.as_ref()) {
        element(&mut xml, 2, "onset", &cap_time(onset));
    }
    element(&mut xml, 2, "senderName", "HelpGrid community help routing");
    element(&mut xml, 2, "headline", &headline(incident));
    element(&mut xml, 2, "description", &description(incident));
    parameter(&mut xml, "incidentState", state_name(incident.state));
    parameter(&mut xml, "revision", &incident.revision.to_string());
    if closed {
        // The stable enum name (README "Outcome codes"), so receivers can count by it.
        let outcome = incident.effective_outcome();
        if outcome != IncidentOutcome::Unspecified {
            parameter(&mut xml, "outcome", outcome.as_str_name());
        }
    }
    for assignment in &incident.assignments {
        let track = match Track::try_from(assignment.track) {
            Ok(Track::Police) => "police",
            _ => "community",
        };
        let level =
            EscalationLevel::try_from(assignment.level).map_or("unknown", |l| l.as_str_name());
        parameter(&mut xml, &format!("{track}Track"), level);
    }
    xml.push_str("    <area>\n");
    element(
        &mut xml,
        3,
        "areaDesc",
        &format!("HelpGrid grid {}", incident.grid_id),
    );
    if let Some(at) = &incident.location {
        // CAP circle: "lat,lon radius" with the radius in kilometres.
        element(
            &mut xml,
            3,
            "circle",
            &format!("{:.5},{:.5} 0.1", at.latitude, at.longitude),
        );
    }
    xml.push_str("      <geocode>\n");
    element(&mut xml, 4, "valueName", "helpgrid:grid");
    element(&mut xml, 4, "value", &incident.grid_id);
    xml.push_str("      </geocode>\n");
    xml.push_str("    </area>\n");
    xml.push_str("  </info>\n");
    xml.push_str("</alert>\n");
    xml
}

fn element(xml: &mut String, depth: usize, name: &str, text: &str) {
    let _ = writeln!(
        xml,
        "{:indent$}<{name}>{}</{name}>",
        "",
        escape(text),
        indent = depth * 2
    );
}

fn parameter(xml: &mut String, name: &str, value: &str) {
    xml.push_str("    <parameter>\n");
    element(xml, 3, "valueName", name);
    element(xml, 3, "value", value);
    xml.push_str("    </parameter>\n");
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Control characters are not allowed in XML 1.0.
            c if c.is_control() && !matches!(c, '\n' | '\t') => {}
            c => out.push(c),
        }
    }
    out
}

/// CAP's date-time: seconds, and an explicit offset (`Z` is not allowed).
fn cap_time(at: Millis) -> String {
    let secs = at.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}+00:00",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn label(incident: &Incident) -> CameraLabel {
    CameraLabel::try_from(incident.camera_label).unwrap_or(CameraLabel::Unspecified)
}

fn is_camera(incident: &Incident) -> bool {
    incident.source == IncidentSource::Camera as i32
}

fn categories(incident: &Incident) -> Vec<&'static str> {
    if is_camera(incident) {
        match label(incident) {
            CameraLabel::Fire => vec!["Fire", "Safety"],
            CameraLabel::Fall => vec!["Health", "Rescue"],
            _ => vec!["Security"],
        }
    } else {
        match PressKind::try_from(incident.press_kind) {
            Ok(PressKind::Medical) => vec!["Health"],
            Ok(PressKind::Urgent) => vec!["Safety", "Security"],
            _ => vec!["Safety"],
        }
    }
}

fn event_name(incident: &Incident) -> String {
    if is_camera(incident) {
        let label = match label(incident) {
            CameraLabel::Intrusion => "intrusion",
            CameraLabel::Fight => "fight",
            CameraLabel::Fall => "fall",
            CameraLabel::Fire => "fire",
            CameraLabel::Crowd => "crowd",
            CameraLabel::Loitering => "loitering",
            CameraLabel::Unspecified => "unclassified event",
        };
        format!("Camera alert: {label}")
    } else {
        match PressKind::try_from(incident.press_kind) {
            Ok(PressKind::Urgent) => "Urgent help request".into(),
            Ok(PressKind::Medical) => "Medical help request".into(),
            _ => "Help request".into(),
        }
    }
}

fn urgency_and_severity(incident: &Incident, closed: bool) -> (&'static str, &'static str) {
    let severity = match Priority::try_from(incident.priority) {
        Ok(Priority::Critical) => "Severe",
        Ok(Priority::High) => "Moderate",
        Ok(Priority::Normal) => "Minor",
        _ => "Unknown",
    };
    let urgency = match Priority::try_from(incident.priority) {
        _ if closed => "Past",
        Ok(Priority::Critical | Priority::High) => "Immediate",
        _ => "Expected",
    };
    (urgency, severity)
}

fn certainty(incident: &Incident) -> &'static str {
    if !is_camera(incident) {
        // A person pressed the button: the request itself is observed.
        "Observed"
    } else if incident.camera_confidence >= 0.8 {
        "Likely"
    } else {
        "Possible"
    }
}

fn headline(incident: &Incident) -> String {
    let place = if is_camera(incident) {
        format!("camera {}", incident.camera_id)
    } else {
        format!("household {}", incident.household_id)
    };
    format!(
        "{} from {place}, grid {}",
        event_name(incident),
        incident.grid_id
    )
}

fn state_name(state: i32) -> &'static str {
    match IncidentState::try_from(state) {
        Ok(IncidentState::Waiting) => "waiting",
        Ok(IncidentState::Assigned) => "assigned",
        Ok(IncidentState::Acknowledged) => "acknowledged",
        Ok(IncidentState::Closed) => "closed",
        _ => "unknown",
    }
}

fn outcome_words(outcome: IncidentOutcome) -> Option<&'static str> {
    Some(match outcome {
        IncidentOutcome::Unspecified => return None,
        IncidentOutcome::ResolvedOnSpot => "resolved on the spot",
        IncidentOutcome::Mediated => "mediated",
        IncidentOutcome::ReferredToTown => "referred up to the town",
        IncidentOutcome::ReferredToPolice => "referred to the police",
        IncidentOutcome::FalseAlarm => "false alarm",
        IncidentOutcome::NobodyThere => "nobody there",
    })
}

fn description(incident: &Incident) -> String {
    let mut text = format!(
        "Incident {} is {} (priority {}).",
        incident.incident_id,
        state_name(incident.state),
        match Priority::try_from(incident.priority) {
            Ok(Priority::Critical) => "critical",
            Ok(Priority::High) => "high",
            Ok(Priority::Normal) => "normal",
            _ => "unknown",
        }
    );
    if is_camera(incident) && !incident.zone.is_empty() {
        let _ = write!(
            text,
            " Zone {}, detector confidence {:.2}.",
            incident.zone, incident.camera_confidence
        );
    }
    if incident.event_count > 1 {
        let _ = write!(text, " Reported {} times.", incident.event_count);
    }
    for a in &incident.assignments {
        let who = if a.responder_id.is_empty() {
            "waiting at the police desk".to_owned()
        } else if a.acknowledged_at.is_some() {
            format!("acknowledged by {}", a.responder_id)
        } else {
            format!("assigned to {}", a.responder_id)
        };
        let track = if a.track == Track::Police as i32 {
            "Police"
        } else {
            "Community"
        };
        let _ = write!(text, " {track} track: {who}.");
    }
    if let Some(outcome) = outcome_words(incident.effective_outcome()) {
        let _ = write!(text, " Outcome: {outcome}.");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use helpgrid_common::time::to_timestamp;
    use helpgrid_proto::pb::{Assignment, GeoPoint};

    #[test]
    fn cap_times_have_seconds_and_an_explicit_offset() {
        assert_eq!(cap_time(0), "1970-01-01T00:00:00+00:00");
        assert_eq!(cap_time(1_780_000_000_999), "2026-05-28T20:26:40+00:00");
        assert_eq!(cap_time(951_782_400_000), "2000-02-29T00:00:00+00:00");
    }

    #[test]
    fn a_camera_fight_is_an_immediate_severe_security_alert_with_a_circle_and_the_grid() {
        let incident = Incident {
            incident_id: "inc-1".into(),
            grid_id: "grid-0001".into(),
            state: IncidentState::Assigned as i32,
            priority: Priority::Critical as i32,
            source: IncidentSource::Camera as i32,
            camera_id: "cam-7".into(),
            camera_label: CameraLabel::Fight as i32,
            camera_confidence: 0.93,
            zone: "gate <east> & co".into(),
            location: Some(GeoPoint {
                latitude: 32.68,
                longitude: 109.02,
            }),
            reported_at: Some(to_timestamp(1_780_000_000_000)),
            assignments: vec![Assignment {
                track: Track::Police as i32,
                level: EscalationLevel::PatrolOfficer as i32,
                responder_id: "cop-1".into(),
                ..Default::default()
            }],
            revision: 2,
            ..Default::default()
        };
        let xml = render(&incident, &CapSender::default(), 1_780_000_001_000);
        for expected in [
            "<identifier>inc-1.r2</identifier>",
            "<msgType>Alert</msgType>",
            "<category>Security</category>",
            "<event>Camera alert: fight</event>",
            "<urgency>Immediate</urgency>",
            "<severity>Severe</severity>",
            "<certainty>Likely</certainty>",
            "<circle>32.68000,109.02000 0.1</circle>",
            "<value>grid-0001</value>",
            "gate &lt;east&gt; &amp; co",
        ] {
            assert!(xml.contains(expected), "{expected} missing in\n{xml}");
        }
    }

    #[test]
    fn a_closed_incident_is_a_past_update_carrying_its_outcome() {
        let incident = Incident {
            incident_id: "inc-2".into(),
            grid_id: "grid-0001".into(),
            state: IncidentState::Closed as i32,
            priority: Priority::High as i32,
            source: IncidentSource::Button as i32,
            household_id: "hh-1".into(),
            outcome: IncidentOutcome::Mediated as i32,
            resolution: helpgrid_proto::pb::Resolution::Resolved as i32,
            revision: 5,
            ..Default::default()
        };
        let xml = render(&incident, &CapSender::default(), 1_780_000_001_000);
        for expected in [
            "<msgType>Update</msgType>",
            "<urgency>Past</urgency>",
            "<valueName>outcome</valueName>",
            "<value>INCIDENT_OUTCOME_MEDIATED</value>",
            "Outcome: mediated.",
        ] {
            assert!(xml.contains(expected), "{expected} missing in\n{xml}");
        }
        let open = Incident {
            state: IncidentState::Assigned as i32,
            outcome: 0,
            resolution: 0,
            ..incident
        };
        let xml = render(&open, &CapSender::default(), 1_780_000_001_000);
        assert!(!xml.contains("outcome"), "{xml}");
    }
}
