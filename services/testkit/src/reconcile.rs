//! Reconciliation of what went in with what came out, read back from Kafka: the check the
//! fault suite runs after crashes, rebalances and restarts.
//!
//! - every accepted help event is part of exactly one incident (opened it, or attached);
//! - no incident event is written twice, and each incident's revisions run 1, 2, 3… with
//!   no gap and no repeat (a doubled decision shows up as a repeated revision);
//! - every track holds at most one responder, and nobody holds two tracks of one incident;
//! - no acknowledgement deadline is left pending long after it fell due (timers survive).

use helpgrid_common::time::{Millis, from_timestamp};
use helpgrid_proto::pb::{IncidentEvent, incident_event::Change};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub accepted_events: usize,
    pub incident_events: usize,
    pub incidents: usize,
    /// Accepted help events found in no incident.
    pub lost: Vec<String>,
    /// Help events found in more than one incident, or twice in one.
    pub doubled: Vec<String>,
    /// Incident event ids written more than once.
    pub duplicate_event_ids: Vec<String>,
    /// Incidents whose revisions are not 1..=n exactly once each.
    pub revision_faults: Vec<String>,
    /// Incidents whose last snapshot gives one responder two tracks.
    pub assignment_faults: Vec<String>,
    /// Incidents whose last snapshot still waits on a deadline that passed before `now - grace`.
    pub overdue_deadlines: Vec<String>,
}

impl Report {
    pub fn is_clean(&self) -> bool {
        self.lost.is_empty()
            && self.doubled.is_empty()
            && self.duplicate_event_ids.is_empty()
            && self.revision_faults.is_empty()
            && self.assignment_faults.is_empty()
            && self.overdue_deadlines.is_empty()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn first(v: &[String]) -> String {
            let shown: Vec<&str> = v.iter().take(5).map(String::as_str).collect();
            format!("{} {:?}", v.len(), shown)
        }
        write!(
            f,
            "accepted {} → incidents {} ({} events) | lost {} | doubled {} | duplicate event ids {} | revision faults {} | assignment faults {} | overdue deadlines {}",
            self.accepted_events,
            self.incidents,
            self.incident_events,
            first(&self.lost),
            first(&self.doubled),
            first(&self.duplicate_event_ids),
            first(&self.revision_faults),
            first(&self.assignment_faults),
            first(&self.overdue_deadlines),
        )
    }
}

/// The help event ids an incident event accounts for.
pub fn accounted_event_id(event: &IncidentEvent) -> Option<String> {
    match event.change.as_ref() {
        Some(Change::Opened(_)) => event
            .incident
            .as_ref()
            .and_then(|i| i.recent_event_ids.first().cloned()),
        Some(Change::Attached(a)) => Some(a.event_id.clone()),
        _ => None,
    }
}

/// Checks `events` (everything on incident-events, any order across partitions, in order
/// within each) against the ids of the help events that were accepted.
pub fn reconcile(
    accepted: &[String],
    events: &[IncidentEvent],
    now: Millis,
    grace_ms: Millis,
) -> Report {
    let mut report = Report {
        accepted_events: accepted.len(),
        incident_events: events.len(),
        ..Report::default()
    };
    let mut seen_ids = HashSet::new();
    let mut accounted: HashMap<String, usize> = HashMap::new();
    let mut revisions: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut last = HashMap::new();
    for event in events {
        if let Some(envelope) = event.envelope.as_ref()
            && !seen_ids.insert(envelope.event_id.clone())
        {
            report.duplicate_event_ids.push(envelope.event_id.clone());
        }
        if let Some(id) = accounted_event_id(event) {
            *accounted.entry(id).or_default() += 1;
        }
        if let Some(incident) = event.incident.as_ref()
            && !matches!(
                event.change,
                Some(Change::Rejected(_) | Change::Repeated(_))
            )
        {
            revisions
                .entry(incident.incident_id.clone())
                .or_default()
                .push(incident.revision);
            last.insert(incident.incident_id.clone(), incident.clone());
        }
    }
    for id in accepted {
        match accounted.get(id).copied().unwrap_or(0) {
            0 => report.lost.push(id.clone()),
            1 => {}
            _ => report.doubled.push(id.clone()),
        }
    }
    let accepted_set: HashSet<&String> = accepted.iter().collect();
    for (id, n) in &accounted {
        if *n > 1 && !accepted_set.contains(id) {
            report.doubled.push(id.clone());
        }
    }
    report.incidents = revisions.len();
    for (incident_id, mut revs) in revisions {
        revs.sort_unstable();
        if revs.iter().enumerate().any(|(i, r)| *r != i as u64 + 1) {
            report
                .revision_faults
                .push(format!("{incident_id}: {revs:?}"));
        }
    }
    for (incident_id, incident) in &last {
        let holders: Vec<&str> = incident
            .assignments
            .iter()
            .map(|a| a.responder_id.as_str())
            .filter(|r| !r.is_empty())
            .collect();
        let distinct: HashSet<&str> = holders.iter().copied().collect();
        if distinct.len() != holders.len() {
            report.assignment_faults.push(incident_id.clone());
        }
        if incident.closed_at.is_none()
            && incident.assignments.iter().any(|a| {
                a.acknowledged_at.is_none()
                    && from_timestamp(a.ack_deadline.as_ref()).is_some_and(|d| d + grace_ms < now)
            })
        {
            report.overdue_deadlines.push(incident_id.clone());
        }
    }
    report.lost.sort();
    report.doubled.sort();
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use helpgrid_common::time::to_timestamp;
    use helpgrid_proto::pb::{Assignment, Envelope, EventAttached, Incident, IncidentOpened};

    fn event(incident: &str, revision: u64, change: Change, first_event: &str) -> IncidentEvent {
        IncidentEvent {
            envelope: Some(Envelope {
                event_id: format!("{incident}:{revision}"),
                ..Envelope::default()
            }),
            incident: Some(Incident {
                incident_id: incident.into(),
                revision,
                recent_event_ids: vec![first_event.into()],
                ..Incident::default()
            }),
            cause_id: String::new(),
            change: Some(change),
        }
    }

    fn opened(incident: &str, first_event: &str) -> IncidentEvent {
        event(
            incident,
            1,
            Change::Opened(IncidentOpened::default()),
            first_event,
        )
    }

    fn attached(incident: &str, revision: u64, id: &str) -> IncidentEvent {
        event(
            incident,
            revision,
            Change::Attached(EventAttached {
                event_id: id.into(),
                ..EventAttached::default()
            }),
            "x",
        )
    }

    #[test]
    fn a_clean_log_reconciles() {
        let log = vec![
            opened("i1", "e1"),
            attached("i1", 2, "e2"),
            opened("i2", "e3"),
        ];
        let report = reconcile(&["e1".into(), "e2".into(), "e3".into()], &log, 0, 0);
        assert!(report.is_clean(), "{report}");
        assert_eq!(report.incidents, 2);
    }

    #[test]
    fn a_missing_event_is_lost_and_a_repeated_one_is_doubled() {
        let log = vec![opened("i1", "e1"), opened("i2", "e1")];
        let report = reconcile(&["e1".into(), "e2".into()], &log, 0, 0);
        assert_eq!(report.lost, ["e2"]);
        assert_eq!(report.doubled, ["e1"]);
    }

    #[test]
    fn a_repeated_revision_is_both_a_duplicate_id_and_a_revision_fault() {
        let log = vec![
            opened("i1", "e1"),
            attached("i1", 2, "e2"),
            attached("i1", 2, "e2"),
        ];
        let report = reconcile(&["e1".into(), "e2".into()], &log, 0, 0);
        assert_eq!(report.duplicate_event_ids, ["i1:2"]);
        assert_eq!(report.revision_faults.len(), 1);
        assert_eq!(report.doubled, ["e2"]);
    }

    #[test]
    fn a_deadline_left_pending_past_the_grace_time_is_overdue() {
        let mut e = opened("i1", "e1");
        if let Some(i) = e.incident.as_mut() {
            i.assignments.push(Assignment {
                responder_id: "w1".into(),
                ack_deadline: Some(to_timestamp(1_000)),
                ..Assignment::default()
            });
        }
        let log = vec![e];
        assert!(reconcile(&["e1".into()], &log, 5_000, 5_000).is_clean());
        assert_eq!(
            reconcile(&["e1".into()], &log, 6_001, 5_000).overdue_deadlines,
            ["i1"]
        );
    }

    #[test]
    fn one_responder_on_two_tracks_is_an_assignment_fault() {
        let mut e = opened("i1", "e1");
        if let Some(i) = e.incident.as_mut() {
            for _ in 0..2 {
                i.assignments.push(Assignment {
                    responder_id: "w1".into(),
                    ..Assignment::default()
                });
            }
        }
        assert_eq!(
            reconcile(&["e1".into()], &[e], 0, 0).assignment_faults,
            ["i1"]
        );
    }
}
