//! Incident commands: publish one to the partition that holds the incident (the router
//! instance owning it reads that partition), then wait for the router's answer — the one
//! incident event whose `cause_id` is the command's event id.
//!
//! The waiter is registered before the command is produced, so an answer that arrives
//! before the delivery report is not lost.

use crate::read_model::IncidentHome;
use crate::telemetry;
use helpgrid_common::envelope::new_envelope;
use helpgrid_common::time::now_millis;
use helpgrid_proto::pb::incident_command::Action;
use helpgrid_proto::pb::incident_event::Change;
use helpgrid_proto::pb::{
    AcknowledgeIncident, ActorRole, CloseIncident, EscalateIncident, Incident, IncidentCommand,
    IncidentEvent, IncidentOutcome, RejectReason, Resolution,
};
use prost::Message;
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// The `source` written in the envelope of every command.
pub const COMMAND_SOURCE: &str = "helpgrid-status";
/// How far past its deadline an exchange may end before it is logged as late (timer and
/// scheduling slack).
const LATE_MARGIN: Duration = Duration::from_millis(250);

#[derive(Debug, Clone, PartialEq)]
pub enum CommandAction {
    Acknowledge,
    /// "I need help": hand the caller's track up the ladder, with why.
    Escalate {
        note: String,
    },
    Close {
        outcome: IncidentOutcome,
        /// The outcome's resolution, or what a client written before outcomes sent.
        resolution: Resolution,
        note: String,
    },
}

impl CommandAction {
    fn name(&self) -> &'static str {
        match self {
            Self::Acknowledge => "acknowledge",
            Self::Close { .. } => "close",
            Self::Escalate { .. } => "escalate",
        }
    }

    fn into_proto(self) -> Action {
        match self {
            Self::Acknowledge => Action::Acknowledge(AcknowledgeIncident {}),
            Self::Escalate { note } => Action::Escalate(EscalateIncident { note }),
            Self::Close {
                outcome,
                resolution,
                note,
            } => Action::Close(CloseIncident {
                resolution: resolution as i32,
                note,
                outcome: outcome as i32,
            }),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("the router rejected the command ({reason:?}): {message}")]
    Rejected {
        reason: RejectReason,
        message: String,
    },
    #[error(
        "the router did not answer within {} ms (Kafka or the router is recovering); the command may or may not have been applied — retry with the same request_id: if it was applied, the retry answers OK and changes nothing",
        timeout.as_millis()
    )]
    NoAnswer { timeout: Duration },
    #[error(
        "could not publish the command to Kafka topic {topic} ({source}); it may or may not have reached Kafka — retry with the same request_id (a retry of an applied command answers OK and changes nothing)"
    )]
    Publish { topic: String, source: KafkaError },
    #[error(
        "Kafka did not confirm the command within {} ms (are the brokers reachable?); it may or may not have reached Kafka — retry with the same request_id (a retry of an applied command answers OK and changes nothing)",
        timeout.as_millis()
    )]
    NotPublished { timeout: Duration },
    #[error("the router answered command {command_id} without the incident; this is a router bug")]
    AnswerWithoutIncident { command_id: String },
}

impl CommandError {
    fn outcome(&self) -> &'static str {
        match self {
            Self::Rejected { reason, .. } => match reason {
                RejectReason::NotFound => "rejected_not_found",
                RejectReason::NotPermitted => "rejected_not_permitted",
                RejectReason::WrongState => "rejected_wrong_state",
                RejectReason::Invalid => "rejected_invalid",
                RejectReason::Unspecified => "rejected_unspecified",
            },
            Self::NoAnswer { .. } => "no_answer",
            Self::Publish { .. } | Self::NotPublished { .. } => "publish_failed",
            Self::AnswerWithoutIncident { .. } => "malformed_answer",
        }
    }
}

/// Commands waiting for their answer, by command id. The incident feed resolves them.
#[derive(Debug, Default)]
pub struct PendingCommands {
    waiters: Mutex<HashMap<String, oneshot::Sender<Arc<IncidentEvent>>>>,
}

impl PendingCommands {
    /// Hands `event` to the command it answers, if one is waiting here.
    pub fn resolve(&self, event: &Arc<IncidentEvent>) {
        if event.cause_id.is_empty() {
            return;
        }
        let waiter = self.lock().remove(&event.cause_id);
        if let Some(waiter) = waiter {
            // The requester may have given up already; nothing to do then.
            let _ = waiter.send(Arc::clone(event));
        }
    }

    fn register(self: &Arc<Self>, command_id: &str) -> Waiter {
        let (tx, rx) = oneshot::channel();
        self.lock().insert(command_id.to_owned(), tx);
        Waiter {
            pending: Arc::clone(self),
            command_id: command_id.to_owned(),
            answer: rx,
        }
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, oneshot::Sender<Arc<IncidentEvent>>>> {
        // A panic elsewhere while holding this map leaves it consistent (single inserts/removes).
        self.waiters.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Removes its entry when dropped, so timed-out and abandoned requests leave nothing behind.
struct Waiter {
    pending: Arc<PendingCommands>,
    command_id: String,
    answer: oneshot::Receiver<Arc<IncidentEvent>>,
}

impl Drop for Waiter {
    fn drop(&mut self) {
        self.pending.lock().remove(&self.command_id);
    }
}

/// Publishes incident commands and waits for the router's answers.
#[derive(Clone)]
pub struct CommandSender {
    producer: FutureProducer,
    /// The incident-commands topic.
    topic: String,
    pending: Arc<PendingCommands>,
    /// How long a request waits for the router, publishing included.
    timeout: Duration,
}

impl CommandSender {
    pub fn new(
        producer: FutureProducer,
        topic: String,
        pending: Arc<PendingCommands>,
        timeout: Duration,
    ) -> Self {
        Self {
            producer,
            topic,
            pending,
            timeout,
        }
    }

    /// Sends `action` on behalf of `actor_id` and returns the incident as the router left it.
    pub async fn send(
        &self,
        incident_id: &str,
        home: &IncidentHome,
        actor_id: &str,
        actor_role: ActorRole,
        action: CommandAction,
        request_id: &str,
    ) -> Result<Incident, CommandError> {
        let action_name = action.name();
        let command = IncidentCommand {
            envelope: Some(new_envelope(COMMAND_SOURCE, now_millis())),
            incident_id: incident_id.to_owned(),
            grid_id: home.grid_id.clone(),
            actor_id: actor_id.to_owned(),
            actor_role: actor_role as i32,
            action: Some(action.into_proto()),
            request_id: request_id.to_owned(),
        };
        let command_id = command
            .envelope
            .as_ref()
            .map(|e| e.event_id.clone())
            .unwrap_or_default();
        let payload = command.encode_to_vec();
        let started = Instant::now();
        let mut waiter = self.pending.register(&command_id);
        // One deadline for the whole exchange, and two ways to miss it: Kafka did not confirm
        // the command, or the router did not answer. Either way the command may or may not
        // have been applied (a write whose acknowledgement was lost may still be in Kafka), so
        // both answer UNAVAILABLE and ask for a retry with the same request id, which the
        // router answers with success if the first attempt was applied.
        let deadline = tokio::time::Instant::now() + self.timeout;
        let record = FutureRecord::to(&self.topic)
            .partition(home.partition)
            .key(&home.grid_id)
            .payload(&payload);
        let publish = tokio::time::timeout_at(deadline, self.producer.send(record, self.timeout));
        tokio::pin!(publish);
        let answered = |answer: Result<Arc<IncidentEvent>, oneshot::error::RecvError>| match answer
        {
            Ok(answer) => {
                telemetry::command_answered_after(started.elapsed());
                outcome_of(&command_id, &answer)
            }
            Err(_) => Err(CommandError::NoAnswer {
                timeout: self.timeout,
            }),
        };
        let result = tokio::select! {
            // Kafka's confirmation can be lost (a leader failing over) while the command is
            // written and answered: the router's answer settles it.
            answer = &mut waiter.answer => answered(answer),
            published = &mut publish => match published {
                Err(_) => Err(CommandError::NotPublished {
                    timeout: self.timeout,
                }),
                Ok(Err((source, _))) => Err(CommandError::Publish {
                    topic: self.topic.clone(),
                    source,
                }),
                Ok(Ok(_)) => {
                    telemetry::command_sent(action_name);
                    match tokio::time::timeout_at(deadline, &mut waiter.answer).await {
                        Ok(answer) => answered(answer),
                        Err(_) => Err(CommandError::NoAnswer {
                            timeout: self.timeout,
                        }),
                    }
                }
            },
        };
        // took_ms: this service's own time for the exchange, to set against what a caller
        // measured (a gap between the two is spent outside the command: scheduling, network).
        let took_ms = started.elapsed().as_millis() as u64;
        if started.elapsed() > self.timeout + LATE_MARGIN {
            // Every wait above is bounded by the deadline: only a starved runtime (a blocked
            // worker thread, an overloaded machine) can get here.
            tracing::warn!(%command_id, incident_id, action = action_name, took_ms, timeout_ms = self.timeout.as_millis() as u64, "command answered past its deadline");
        }
        match &result {
            Ok(incident) => {
                telemetry::command_outcome("applied");
                tracing::info!(%command_id, incident_id, actor_id, action = action_name, revision = incident.revision, took_ms, "command applied");
            }
            Err(error) => {
                telemetry::command_outcome(error.outcome());
                tracing::info!(%command_id, incident_id, actor_id, action = action_name, %error, took_ms, "command not applied");
            }
        }
        result
    }
}

/// What the router's answer means for the requester.
fn outcome_of(command_id: &str, answer: &IncidentEvent) -> Result<Incident, CommandError> {
    if let Some(Change::Rejected(rejection)) = &answer.change {
        return Err(CommandError::Rejected {
            reason: RejectReason::try_from(rejection.reason).unwrap_or(RejectReason::Unspecified),
            message: rejection.message.clone(),
        });
    }
    answer
        .incident
        .clone()
        .ok_or_else(|| CommandError::AnswerWithoutIncident {
            command_id: command_id.to_owned(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use helpgrid_proto::pb::{Acknowledged, CommandRejected};

    #[test]
    fn an_acknowledged_answer_returns_the_incident_after_the_change() {
        let answer = IncidentEvent {
            incident: Some(Incident {
                incident_id: "i".into(),
                revision: 3,
                ..Default::default()
            }),
            change: Some(Change::Acknowledged(Acknowledged::default())),
            ..Default::default()
        };
        assert_eq!(outcome_of("c", &answer).ok().map(|i| i.revision), Some(3));
    }

    #[test]
    fn a_retry_of_an_applied_command_answers_with_the_incident_as_a_success() {
        let answer = IncidentEvent {
            incident: Some(Incident {
                incident_id: "i".into(),
                revision: 4,
                ..Default::default()
            }),
            change: Some(Change::Repeated(helpgrid_proto::pb::CommandRepeated {
                request_id: "r-1".into(),
                ..Default::default()
            })),
            ..Default::default()
        };
        assert_eq!(outcome_of("c", &answer).ok().map(|i| i.revision), Some(4));
    }

    #[test]
    fn a_rejection_carries_the_routers_reason_and_message() {
        let answer = IncidentEvent {
            incident: Some(Incident::default()),
            change: Some(Change::Rejected(CommandRejected {
                reason: RejectReason::WrongState as i32,
                message: "incident is closed".into(),
                ..Default::default()
            })),
            ..Default::default()
        };
        let error = outcome_of("c", &answer).err();
        assert!(matches!(
            error,
            Some(CommandError::Rejected { reason: RejectReason::WrongState, ref message }) if message == "incident is closed"
        ));
    }

    #[test]
    fn an_answer_is_delivered_once_and_a_dropped_waiter_leaves_nothing_behind() {
        let pending = Arc::new(PendingCommands::default());
        let mut waiter = pending.register("cmd-1");
        let answer = Arc::new(IncidentEvent {
            cause_id: "cmd-1".into(),
            ..Default::default()
        });
        pending.resolve(&answer);
        assert!(pending.lock().is_empty());
        assert!(waiter.answer.try_recv().is_ok());

        let abandoned = pending.register("cmd-2");
        drop(abandoned);
        assert!(pending.lock().is_empty());
    }
}
