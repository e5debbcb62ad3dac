//! Responders as people: they watch the incident stream, acknowledge their assignments after
//! a while (some never do, so deadlines and reassignment happen), then close them. Patrol
//! officers take incidents that reached the police desk. Everything goes through the gRPC API.

use crate::city::City;
use crate::sim::{AuthedChannel, Credentials};
use crate::tally::Tally;
use helpgrid_proto::pb::incident_service_client::IncidentServiceClient;
use helpgrid_proto::pb::{
    AcknowledgeRequest, CloseRequest, GetIncidentRequest, Incident, IncidentEvent, IncidentOutcome,
    ResponderRole, WatchIncidentsRequest, incident_event::Change,
};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

#[derive(Debug, Clone, clap::Args)]
pub struct Behaviour {
    /// Shortest and longest time before a responder acknowledges, in seconds.
    #[arg(long, default_value_t = 1.0)]
    pub ack_after_min_s: f64,
    /// Latest a responder acknowledges, in seconds after the assignment.
    #[arg(long, default_value_t = 6.0)]
    pub ack_after_max_s: f64,
    /// Shortest and longest time on site before closing, in seconds.
    #[arg(long, default_value_t = 3.0)]
    pub close_after_min_s: f64,
    /// Latest a responder closes, in seconds after acknowledging.
    #[arg(long, default_value_t = 12.0)]
    pub close_after_max_s: f64,
    /// Share of assignments a responder misses (the deadline then reassigns them).
    #[arg(long, default_value_t = 0.1)]
    pub miss_ratio: f64,
}

pub struct Responders {
    pub city: Arc<City>,
    pub behaviour: Behaviour,
    /// Follows every incident, as a read-only console of the whole city.
    pub watcher: IncidentServiceClient<AuthedChannel>,
    /// Each responder acts over this channel with their own token.
    pub channel: Channel,
    pub credentials: Arc<Credentials>,
    pub tally: Arc<Mutex<Tally>>,
    pub seed: u64,
}

fn between(rng: &mut fastrand::Rng, min: f64, max: f64) -> Duration {
    Duration::from_secs_f64(min.max(0.0) + rng.f64() * (max - min).max(0.0))
}

impl Responders {
    /// Watches from now and answers until cancelled. Returns when the stream ends.
    pub async fn run(self, cancel: CancellationToken) -> Result<(), tonic::Status> {
        let mut watcher = self.watcher.clone();
        let mut stream = watcher
            .watch_incidents(WatchIncidentsRequest {
                grid_ids: vec![],
                cursor: String::new(),
                include_rejections: true,
                // Read through `assignments()`, which takes either shape: the event as written.
                compact_openings: true,
            })
            .await?
            .into_inner();
        let mut rng = fastrand::Rng::with_seed(self.seed ^ 0x5eed);
        loop {
            let update = tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                update = stream.message() => update?,
            };
            let Some(update) = update else { return Ok(()) };
            let Some(event) = update.event else { continue };
            if let Ok(mut t) = self.tally.lock() {
                t.observe(&event);
            }
            for (incident_id, responder_id, closes) in self.who_should_act(&event) {
                if rng.f64() < self.behaviour.miss_ratio {
                    continue;
                }
                let ack_after = between(
                    &mut rng,
                    self.behaviour.ack_after_min_s,
                    self.behaviour.ack_after_max_s,
                );
                let close_after = between(
                    &mut rng,
                    self.behaviour.close_after_min_s,
                    self.behaviour.close_after_max_s,
                );
                let outcome = if rng.f64() < 0.1 {
                    IncidentOutcome::FalseAlarm
                } else {
                    IncidentOutcome::ResolvedOnSpot
                };
                let bearer = match self.credentials.responder(&responder_id) {
                    Ok(bearer) => bearer,
                    Err(error) => {
                        tracing::warn!(%responder_id, %error, "cannot mint a token");
                        continue;
                    }
                };
                let client = IncidentServiceClient::with_interceptor(self.channel.clone(), bearer);
                tokio::spawn(respond(
                    client,
                    Arc::clone(&self.tally),
                    cancel.clone(),
                    incident_id,
                    responder_id,
                    ack_after,
                    closes.then_some((close_after, outcome)),
                ));
            }
        }
    }

    /// The responder who should now act on this event: the one just assigned, or for an
    /// incident at the police desk, a patrol officer of the grid. Where two responders go
    /// (a community and a police track), the one on the first track closes the incident.
    /// An "opened and assigned" event names everyone it assigned.
    fn who_should_act(&self, event: &IncidentEvent) -> Vec<(String, String, bool)> {
        let Some(incident) = event.incident.as_ref() else {
            return Vec::new();
        };
        let closes = |track: i32| {
            incident
                .assignments
                .first()
                .is_some_and(|a| a.track == track)
        };
        if matches!(event.change, Some(Change::Opened(_))) {
            return event
                .assignments()
                .iter()
                .map(|a| {
                    let id = incident.incident_id.clone();
                    (id, a.responder_id.clone(), closes(a.track))
                })
                .collect();
        }
        self.who_acts_on(event, incident)
            .map(|(track, responder)| (incident.incident_id.clone(), responder, closes(track)))
            .into_iter()
            .collect()
    }

    fn who_acts_on(&self, event: &IncidentEvent, incident: &Incident) -> Option<(i32, String)> {
        let (track, responder) = match event.change.as_ref()? {
            Change::Assigned(a) => (a.track, a.responder_id.clone()),
            Change::Reassigned(r) => (r.track, r.to_responder_id.clone()),
            Change::Escalated(e) if !e.responder_id.is_empty() => (e.track, e.responder_id.clone()),
            Change::Escalated(e) => (
                e.track,
                self.city
                    .responders
                    .iter()
                    .find(|r| {
                        r.role == ResponderRole::PatrolOfficer as i32
                            && r.grid_ids.contains(&incident.grid_id)
                    })?
                    .responder_id
                    .clone(),
            ),
            _ => return None,
        };
        Some((track, responder))
    }
}

async fn respond(
    mut client: IncidentServiceClient<AuthedChannel>,
    tally: Arc<Mutex<Tally>>,
    cancel: CancellationToken,
    incident_id: String,
    responder_id: String,
    ack_after: Duration,
    close: Option<(Duration, IncidentOutcome)>,
) {
    let refused = |status: tonic::Status| {
        // Expected now and then: the deadline passed and the incident went to someone else.
        tracing::debug!(code = ?status.code(), message = status.message(), "simulated responder refused");
        if let Ok(mut t) = tally.lock() {
            t.api_refusals += 1;
        }
    };
    tokio::select! { () = cancel.cancelled() => return, () = tokio::time::sleep(ack_after) => {} }
    let ack = AcknowledgeRequest {
        incident_id: incident_id.clone(),
        responder_id: responder_id.clone(),
        request_id: format!("{:032x}", fastrand::u128(..)),
    };
    if let Err(status) = client.acknowledge(ack).await {
        return refused(status);
    }
    let Some((close_after, outcome)) = close else {
        return;
    };
    tokio::select! { () = cancel.cancelled() => return, () = tokio::time::sleep(close_after) => {} }
    // Where a second responder is on the way too (urgent presses, fire, fall, fight), the one
    // who closes waits until both have acknowledged: closing under the other's feet would
    // leave them a refused acknowledgement. Bounded, so a responder who never answers does
    // not hold the incident open for ever.
    for _ in 0..300 {
        let incident = client
            .get_incident(GetIncidentRequest {
                incident_id: incident_id.clone(),
            })
            .await;
        match incident {
            Ok(i)
                if i.get_ref()
                    .assignments
                    .iter()
                    .any(|a| a.acknowledged_at.is_none()) => {}
            _ => break,
        }
        tokio::select! { () = cancel.cancelled() => return, () = tokio::time::sleep(Duration::from_millis(100)) => {} }
    }
    let close = CloseRequest {
        incident_id,
        responder_id,
        outcome: outcome as i32,
        resolution: 0,
        note: "visited; resolved on site".into(),
        request_id: format!("{:032x}", fastrand::u128(..)),
    };
    if let Err(status) = client.close(close).await {
        refused(status);
    }
}
