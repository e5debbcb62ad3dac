//! Re-notify an assignee who has not acknowledged by half of their acknowledgement deadline
//! (half of the time between the assignment and the deadline). The deadline is the one the
//! router stored in the incident, so the plan needs no clock of its own: a later event of
//! the incident that acknowledges, closes, reassigns or changes the deadline cancels it.
//!
//! Each planned re-notification holds a piece of work `H` (the consumer offset of the event
//! that planned it), handed back when it fires or is cancelled.

use super::notice::{Notice, NoticeKind};
use helpgrid_common::time::{Millis, from_timestamp};
use helpgrid_proto::pb::IncidentState;
use std::collections::HashMap;

#[derive(Debug, Clone)]
struct Planned<H> {
    at: Millis,
    deadline: Millis,
    notice: Notice,
    hold: H,
}

#[derive(Debug)]
pub struct RenotifyPlan<H> {
    by_incident: HashMap<String, Vec<Planned<H>>>,
}

impl<H> Default for RenotifyPlan<H> {
    fn default() -> Self {
        Self {
            by_incident: HashMap::new(),
        }
    }
}

/// What observing one notice changed.
#[derive(Debug, PartialEq)]
pub struct Observed<H> {
    /// Holds of re-notifications this notice made moot.
    pub cancelled: Vec<H>,
    /// The notice's own hold when it planned nothing (when it did, the plan keeps it).
    pub unused: Option<H>,
}

/// Whether the re-notification is still due in the incident as `notice` shows it: the same
/// responder holds the same track, has not acknowledged, under the same deadline.
fn still_due(planned: &Notice, deadline: Millis, latest: &Notice) -> bool {
    let Some(track) = planned.track() else {
        return false;
    };
    let Some(responder) = planned.responder_id() else {
        return false;
    };
    latest.incident.state != IncidentState::Closed as i32
        && latest.incident.assignments.iter().any(|a| {
            a.track == track as i32
                && a.responder_id == responder
                && a.acknowledged_at.is_none()
                && from_timestamp(a.ack_deadline.as_ref()) == Some(deadline)
        })
}

impl<H> RenotifyPlan<H> {
    /// Takes in the incident's latest notice: cancels what it made moot, and plans a
    /// re-notification if it assigned someone with a deadline still ahead at `now`.
    pub fn observe(&mut self, notice: &Notice, hold: H, now: Millis) -> Observed<H> {
        let mut cancelled = Vec::new();
        if let Some(list) = self.by_incident.get_mut(&notice.incident.incident_id) {
            let (keep, drop): (Vec<_>, Vec<_>) = std::mem::take(list)
                .into_iter()
                .partition(|p| still_due(&p.notice, p.deadline, notice));
            *list = keep;
            cancelled.extend(drop.into_iter().map(|p| p.hold));
            if list.is_empty() {
                self.by_incident.remove(&notice.incident.incident_id);
            }
        }
        let assigns = matches!(
            notice.kind,
            NoticeKind::Assigned | NoticeKind::Reassigned | NoticeKind::Escalated
        );
        let plan = match (assigns, notice.responder_id(), notice.ack_deadline) {
            (true, Some(_), Some(deadline))
                if now < deadline && still_due(notice, deadline, notice) =>
            {
                let assigned_at = notice
                    .track()
                    .and_then(|track| {
                        notice
                            .incident
                            .assignments
                            .iter()
                            .find(|a| a.track == track as i32)
                    })
                    .and_then(|a| from_timestamp(a.assigned_at.as_ref()))
                    .unwrap_or(notice.occurred_at);
                Some(assigned_at + (deadline - assigned_at).max(0) / 2)
            }
            _ => None,
        };
        let Some(at) = plan else {
            return Observed {
                cancelled,
                unused: Some(hold),
            };
        };
        let mut renotice = notice.clone();
        renotice.kind = NoticeKind::Renotify;
        // The notice's own key, not the event id: one event can assign two tracks.
        renotice.idempotency_key = format!("{}:renotify", notice.idempotency_key);
        self.by_incident
            .entry(notice.incident.incident_id.clone())
            .or_default()
            .push(Planned {
                at,
                deadline: notice.ack_deadline.unwrap_or(at),
                notice: renotice,
                hold,
            });
        Observed {
            cancelled,
            unused: None,
        }
    }

    /// The earliest planned time, to sleep until.
    pub fn next_due(&self) -> Option<Millis> {
        self.by_incident.values().flatten().map(|p| p.at).min()
    }

    /// Re-notifications due at `now`, with their holds; they leave the plan.
    pub fn take_due(&mut self, now: Millis) -> Vec<(Notice, H)> {
        let mut due = Vec::new();
        self.by_incident.retain(|_, list| {
            let (fire, keep): (Vec<_>, Vec<_>) =
                std::mem::take(list).into_iter().partition(|p| p.at <= now);
            *list = keep;
            due.extend(fire.into_iter().map(|p| (p.notice, p.hold)));
            !list.is_empty()
        });
        due.sort_by_key(|(n, _)| (n.occurred_at, n.idempotency_key.clone()));
        due
    }

    pub fn len(&self) -> usize {
        self.by_incident.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.by_incident.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::notice::notice_of;
    use crate::domain::notice::tests::assigned_event;
    use helpgrid_common::time::to_timestamp;
    use helpgrid_proto::pb::{Acknowledged, IncidentEvent, Track, incident_event::Change};

    fn acked(mut assigned: IncidentEvent) -> IncidentEvent {
        let incident = assigned.incident.as_mut().expect("incident");
        incident.state = IncidentState::Acknowledged as i32;
        incident.assignments[0].acknowledged_at = Some(to_timestamp(20_000));
        incident.assignments[0].ack_deadline = None;
        assigned.envelope.as_mut().expect("envelope").event_id = "ack".into();
        assigned.change = Some(Change::Acknowledged(Acknowledged {
            track: Track::Community as i32,
            responder_id: "w-1".into(),
            acknowledged_by: "w-1".into(),
        }));
        assigned
    }

    #[test]
    fn an_unacknowledged_assignee_is_renotified_at_half_the_deadline_once() {
        let mut plan = RenotifyPlan::default();
        let n = notice_of(&assigned_event("e1", "i1", "w-1", 10_000, 70_000)).expect("notice");
        let observed = plan.observe(&n, 7, 10_000);
        assert_eq!(observed.unused, None, "the hold stays with the plan");
        assert_eq!(plan.next_due(), Some(40_000));
        assert!(plan.take_due(39_999).is_empty());
        let due = plan.take_due(40_000);
        assert_eq!(due.len(), 1);
        let (renotice, hold) = &due[0];
        assert_eq!(*hold, 7);
        assert_eq!(renotice.kind, NoticeKind::Renotify);
        assert_eq!(renotice.idempotency_key, "e1:renotify");
        assert_eq!(renotice.responder_id(), Some("w-1"));
        assert!(plan.take_due(100_000).is_empty(), "only once");
        assert!(plan.is_empty());
    }

    #[test]
    fn an_acknowledgement_before_half_time_cancels_the_renotification() {
        let mut plan = RenotifyPlan::default();
        let assigned = assigned_event("e1", "i1", "w-1", 10_000, 70_000);
        plan.observe(&notice_of(&assigned).expect("notice"), 1, 10_000);
        let ack = notice_of(&acked(assigned)).expect("notice");
        let observed = plan.observe(&ack, 2, 20_000);
        assert_eq!(observed.cancelled, [1]);
        assert_eq!(observed.unused, Some(2));
        assert!(plan.take_due(100_000).is_empty());
    }

    #[test]
    fn a_reassignment_replaces_the_plan_for_the_new_assignee() {
        let mut plan = RenotifyPlan::default();
        plan.observe(
            &notice_of(&assigned_event("e1", "i1", "w-1", 0, 60_000)).expect("notice"),
            1,
            0,
        );
        let second = notice_of(&assigned_event("e2", "i1", "w-2", 60_000, 120_000)).expect("n");
        let observed = plan.observe(&second, 2, 60_000);
        assert_eq!(observed.cancelled, [1]);
        let due = plan.take_due(90_000);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].0.responder_id(), Some("w-2"));
    }

    #[test]
    fn an_assignment_read_after_its_deadline_plans_nothing() {
        let mut plan = RenotifyPlan::default();
        let n = notice_of(&assigned_event("e1", "i1", "w-1", 0, 60_000)).expect("notice");
        let observed = plan.observe(&n, 1, 60_000);
        assert_eq!(observed.unused, Some(1));
        assert!(plan.is_empty());
    }
}
