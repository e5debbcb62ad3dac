//! What the simulated city saw, counted from the same incident events a console receives.

use hdrhistogram::Histogram;
use helpgrid_common::time::{Millis, from_timestamp};
use helpgrid_proto::pb::{IncidentEvent, incident_event::Change};
use std::collections::HashSet;
use std::fmt;

#[derive(Debug)]
pub struct Tally {
    pub presses_sent: u64,
    pub alerts_sent: u64,
    pub opened: u64,
    /// Of `opened`: maintenance incidents (devices the gateway reports unhealthy).
    pub maintenance: u64,
    pub attached: u64,
    pub assigned: u64,
    pub reassigned: u64,
    pub escalated: u64,
    pub acknowledged: u64,
    pub closed: u64,
    pub rejected: u64,
    /// Calls the simulated responders made that the API refused or failed.
    pub api_refusals: u64,
    /// Milliseconds from the press/detection to the first responder assigned.
    pub time_to_assign_ms: Histogram<u64>,
    /// Milliseconds from opening to the first acknowledgement.
    pub time_to_ack_ms: Histogram<u64>,
    first_assignment_seen: HashSet<String>,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000, 3)
        .expect("1 ms .. 1 h with 3 significant digits is a valid histogram")
}

impl Default for Tally {
    fn default() -> Self {
        Self {
            presses_sent: 0,
            alerts_sent: 0,
            opened: 0,
            maintenance: 0,
            attached: 0,
            assigned: 0,
            reassigned: 0,
            escalated: 0,
            acknowledged: 0,
            closed: 0,
            rejected: 0,
            api_refusals: 0,
            time_to_assign_ms: histogram(),
            time_to_ack_ms: histogram(),
            first_assignment_seen: HashSet::new(),
        }
    }
}

fn record(h: &mut Histogram<u64>, from: Option<Millis>, to: Option<Millis>) {
    if let (Some(from), Some(to)) = (from, to) {
        h.saturating_record((to - from).max(1) as u64);
    }
}

impl Tally {
    pub fn observe(&mut self, event: &IncidentEvent) {
        let Some(incident) = event.incident.as_ref() else {
            if matches!(event.change, Some(Change::Rejected(_))) {
                self.rejected += 1;
            }
            return;
        };
        let at = from_timestamp(event.envelope.as_ref().and_then(|e| e.occurred_at.as_ref()));
        let first_assignment = |tally: &mut Tally, responder: &str| {
            if !responder.is_empty()
                && tally
                    .first_assignment_seen
                    .insert(incident.incident_id.clone())
            {
                record(
                    &mut tally.time_to_assign_ms,
                    from_timestamp(incident.reported_at.as_ref()),
                    at,
                );
            }
        };
        match event.change.as_ref() {
            Some(Change::Opened(o)) => {
                self.opened += 1;
                if incident.source == helpgrid_proto::pb::IncidentSource::DeviceHealth as i32 {
                    self.maintenance += 1;
                }
                // "Opened and assigned" in one event: each assignment counts as `assigned`.
                for a in &o.assigned {
                    self.assigned += 1;
                    first_assignment(self, &a.responder_id);
                }
            }
            Some(Change::Attached(_)) => self.attached += 1,
            Some(Change::Assigned(a)) => {
                self.assigned += 1;
                first_assignment(self, &a.responder_id);
            }
            Some(Change::Reassigned(_)) => self.reassigned += 1,
            Some(Change::Escalated(e)) => {
                self.escalated += 1;
                first_assignment(self, &e.responder_id);
            }
            Some(Change::Acknowledged(_)) => {
                self.acknowledged += 1;
                if incident
                    .assignments
                    .iter()
                    .filter(|a| a.acknowledged_at.is_some())
                    .count()
                    == 1
                {
                    record(
                        &mut self.time_to_ack_ms,
                        from_timestamp(incident.opened_at.as_ref()),
                        at,
                    );
                }
            }
            Some(Change::Closed(_)) => {
                self.closed += 1;
                self.first_assignment_seen.remove(&incident.incident_id);
            }
            Some(Change::Rejected(_)) => self.rejected += 1,
            Some(Change::Repeated(_)) => {}
            None => {}
        }
    }
}

fn ms(h: &Histogram<u64>, q: f64) -> String {
    if h.is_empty() {
        return "-".into();
    }
    let v = h.value_at_quantile(q);
    if v >= 10_000 {
        format!("{:.1}s", v as f64 / 1000.0)
    } else {
        format!("{v}ms")
    }
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "presses {} alerts {} | opened {} (maintenance {}) attached {} assigned {} acknowledged {} closed {} reassigned {} escalated {} rejected {} | time to assign p50 {} p99 {} max {} | time to ack p50 {} p99 {}",
            self.presses_sent,
            self.alerts_sent,
            self.opened,
            self.maintenance,
            self.attached,
            self.assigned,
            self.acknowledged,
            self.closed,
            self.reassigned,
            self.escalated,
            self.rejected,
            ms(&self.time_to_assign_ms, 0.5),
            ms(&self.time_to_assign_ms, 0.99),
            ms(&self.time_to_assign_ms, 1.0),
            ms(&self.time_to_ack_ms, 0.5),
            ms(&self.time_to_ack_ms, 0.99),
        )
    }
}
