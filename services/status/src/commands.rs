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
/// Of a caller's own deadline (its `grpc-timeout`), the part left for the way here, the
/// answer's way back and the scheduling on either side: a fifth of the deadline, at least
/// `MIN_DEADLINE_MARGIN` and at most `MAX_DEADLINE_MARGIN`. The wait must end that much before
/// the caller's deadline, or the caller's own stack answers DEADLINE_EXCEEDED first and never
/// reads our UNAVAILABLE and its "retry with the same request_id".
const DEADLINE_MARGIN_SHARE: u32 = 5;
const MIN_DEADLINE_MARGIN: Duration = Duration::from_millis(100);
const MAX_DEADLINE_MARGIN: Duration = Duration::from_secs(1);
/// The shortest wait worth sending a command for. A command written with less would almost
/// surely time out after Kafka took it, leaving the caller unsure whether it applied; refused
/// before it is written, nothing is left to reconcile.
pub const MIN_COMMAND_WAIT: Duration = Duration::from_millis(100);

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
    #[error(
        "the call's deadline of {} ms leaves less than {} ms to send the command and hear the router; the command was NOT sent — call again with a deadline of at least {} ms",
        deadline.as_millis(),
        MIN_COMMAND_WAIT.as_millis(),
        shortest_deadline().as_millis()
    )]
    DeadlineTooShort { deadline: Duration },
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
            Self::DeadlineTooShort { .. } => "deadline_too_short",
        }
    }
}

/// How much of a caller's deadline is kept back (see `DEADLINE_MARGIN_SHARE`).
fn deadline_margin(deadline: Duration) -> Duration {
    (deadline / DEADLINE_MARGIN_SHARE).clamp(MIN_DEADLINE_MARGIN, MAX_DEADLINE_MARGIN)
}

/// The shortest caller deadline that leaves `MIN_COMMAND_WAIT` after its margin.
fn shortest_deadline() -> Duration {
    // With a 100 ms floor on the margin, any deadline under 500 ms keeps exactly the floor.
    MIN_COMMAND_WAIT + MIN_DEADLINE_MARGIN
}

/// How long a command may wait for the router: the configured timeout, cut to end a margin
/// before the caller's own deadline when it sent one; an error when that leaves less than
/// `MIN_COMMAND_WAIT` (the command is then not sent at all).
pub fn command_wait(
    configured: Duration,
    caller_deadline: Option<Duration>,
) -> Result<Duration, CommandError> {
    let Some(deadline) = caller_deadline else {
        return Ok(configured);
    };
    let wait = deadline.saturating_sub(deadline_margin(deadline));
    if wait < MIN_COMMAND_WAIT {
        return Err(CommandError::DeadlineTooShort { deadline });
    }
    Ok(wait.min(configured))
}

/// How long a retry may join an earlier attempt that Kafka confirmed but the router has not
/// answered (or whose answer came after its caller gave up). Past that a retry writes a new
/// record, so a record the router never answers (dead-lettered) costs at most this long.
const ATTEMPT_MEMORY: Duration = Duration::from_secs(60);
/// At most this many remembered attempts (the oldest go first).
const MAX_REMEMBERED_ATTEMPTS: usize = 100_000;

/// Commands waiting for their answer, by command id (the incident feed resolves them), and
/// the attempts a retry of the same request may join instead of writing another record.
///
/// Why join: while the router is behind (a broker failover, a restart), every attempt times
/// out and the client retries; each retry written to Kafka is one more record the router must
/// answer, so retries made the backlog they waited on grow (4.6 command records per request
/// in the rolling-restart fault run). A retry whose earlier attempt Kafka confirmed now waits
/// for that attempt's answer; an answer that came after its caller gave up is kept for the
/// retry.
#[derive(Debug, Default)]
pub struct PendingCommands {
    inner: Mutex<Pending>,
}

/// Where one waiting request gets its answer.
type AnswerTx = oneshot::Sender<Arc<IncidentEvent>>;

#[derive(Debug, Default)]
struct Pending {
    /// command id -> (waiter number, where to send the answer).
    waiters: HashMap<String, Vec<(u64, AnswerTx)>>,
    next_waiter: u64,
    /// (incident id, request id) -> the latest attempt Kafka confirmed and the router had not
    /// answered while someone waited.
    attempts: HashMap<(String, String), Attempt>,
    /// command id -> its key in `attempts`.
    by_command: HashMap<String, (String, String)>,
    /// (when remembered, key) in order, to forget attempts past ATTEMPT_MEMORY.
    remembered: std::collections::VecDeque<(Instant, (String, String))>,
}

#[derive(Debug)]
struct Attempt {
    command_id: String,
    /// The command without its envelope: a retry joins only an attempt with the same content.
    content: Vec<u8>,
    at: Instant,
    /// The router's answer, if it came after the caller gave up.
    answer: Option<Arc<IncidentEvent>>,
}

/// What a retry finds of an earlier attempt.
enum Earlier {
    /// Its answer, which came after its caller gave up.
    Answered(Arc<IncidentEvent>),
    /// Still unanswered: wait for it with this.
    Waiting(Waiter),
}

impl PendingCommands {
    /// Hands `event` to the commands it answers, if any wait here; otherwise keeps it for a
    /// retry if it answers a remembered attempt.
    pub fn resolve(&self, event: &Arc<IncidentEvent>) {
        if event.cause_id.is_empty() {
            return;
        }
        let mut pending = self.lock();
        let waiters = pending.waiters.remove(&event.cause_id);
        let answered_someone = match waiters {
            Some(waiters) => {
                // A requester may have given up already; nothing to do for that one. Every
                // waiter gets the answer (no short-circuit).
                waiters
                    .into_iter()
                    .map(|(_, w)| w.send(Arc::clone(event)).is_ok())
                    .filter(|sent| *sent)
                    .count()
                    > 0
            }
            None => false,
        };
        if let Some(key) = pending.by_command.get(&event.cause_id).cloned() {
            if answered_someone {
                // Settled: a later retry writes anew and gets the incident as it is then.
                pending.remove_key(&key);
            } else if let Some(attempt) = pending.attempts.get_mut(&key) {
                attempt.answer = Some(Arc::clone(event));
            }
        }
    }

    fn register(self: &Arc<Self>, command_id: &str) -> Waiter {
        let mut pending = self.lock();
        self.register_locked(&mut pending, command_id)
    }

    fn register_locked(self: &Arc<Self>, pending: &mut Pending, command_id: &str) -> Waiter {
        let (tx, rx) = oneshot::channel();
        let number = pending.next_waiter;
        pending.next_waiter += 1;
        pending
            .waiters
            .entry(command_id.to_owned())
            .or_default()
            .push((number, tx));
        Waiter {
            pending: Arc::clone(self),
            command_id: command_id.to_owned(),
            number,
            answer: rx,
        }
    }

    /// The earlier attempt of the same request with the same content, if one is remembered:
    /// its late answer (taken, so it is served once), or a waiter for its answer.
    fn earlier(self: &Arc<Self>, key: &(String, String), content: &[u8]) -> Option<Earlier> {
        let mut pending = self.lock();
        pending.forget_old(Instant::now());
        let attempt = pending.attempts.get_mut(key)?;
        if attempt.content != content {
            return None;
        }
        if let Some(answer) = attempt.answer.take() {
            pending.remove_key(key);
            return Some(Earlier::Answered(answer));
        }
        let command_id = attempt.command_id.clone();
        Some(Earlier::Waiting(
            self.register_locked(&mut pending, &command_id),
        ))
    }

    /// Remembers a confirmed attempt, unless the router answered it already (its answer can
    /// come before Kafka's confirmation).
    fn confirmed(&self, key: (String, String), command_id: &str, content: Vec<u8>) {
        let now = Instant::now();
        let mut pending = self.lock();
        if !pending.waiters.contains_key(command_id) {
            return;
        }
        pending.forget_old(now);
        pending.remove_key(&key);
        pending
            .by_command
            .insert(command_id.to_owned(), key.clone());
        pending.attempts.insert(
            key.clone(),
            Attempt {
                command_id: command_id.to_owned(),
                content,
                at: now,
                answer: None,
            },
        );
        pending.remembered.push_back((now, key));
        while pending.remembered.len() > MAX_REMEMBERED_ATTEMPTS {
            if let Some((at, old)) = pending.remembered.pop_front() {
                pending.remove_attempt_from(&old, at);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        // A panic elsewhere while holding this lock leaves it consistent (single inserts/removes).
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Pending {
    fn forget_old(&mut self, now: Instant) {
        while let Some((at, _)) = self.remembered.front() {
            if now.duration_since(*at) < ATTEMPT_MEMORY {
                break;
            }
            if let Some((at, key)) = self.remembered.pop_front() {
                self.remove_attempt_from(&key, at);
            }
        }
    }

    /// Forgets the attempt under `key` if it is the one remembered at `at` (a newer attempt of
    /// the same request stays).
    fn remove_attempt_from(&mut self, key: &(String, String), at: Instant) {
        if self.attempts.get(key).is_some_and(|a| a.at == at) {
            self.remove_key(key);
        }
    }

    fn remove_key(&mut self, key: &(String, String)) {
        if let Some(attempt) = self.attempts.remove(key) {
            self.by_command.remove(&attempt.command_id);
        }
    }
}

/// Removes its entry when dropped, so timed-out and abandoned requests leave nothing behind.
struct Waiter {
    pending: Arc<PendingCommands>,
    command_id: String,
    number: u64,
    answer: oneshot::Receiver<Arc<IncidentEvent>>,
}

impl Drop for Waiter {
    fn drop(&mut self) {
        let mut pending = self.pending.lock();
        if let Some(waiters) = pending.waiters.get_mut(&self.command_id) {
            waiters.retain(|(n, _)| *n != self.number);
            if waiters.is_empty() {
                pending.waiters.remove(&self.command_id);
            }
        }
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

    /// This sender with its wait bounded by the caller's deadline (see [`command_wait`]), or
    /// the refusal of a deadline too short to send anything.
    pub fn within(&self, caller_deadline: Option<Duration>) -> Result<Self, CommandError> {
        match command_wait(self.timeout, caller_deadline) {
            Ok(timeout) if timeout == self.timeout => Ok(self.clone()),
            Ok(timeout) => Ok(Self {
                timeout,
                ..self.clone()
            }),
            Err(error) => {
                telemetry::command_outcome(error.outcome());
                tracing::info!(%error, "command refused before sending");
                Err(error)
            }
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
        let deadline = tokio::time::Instant::now() + self.timeout;
        // A retry of a request whose earlier attempt Kafka confirmed joins that attempt (see
        // `PendingCommands`) instead of writing one more record for the router to answer.
        let request =
            (!request_id.is_empty()).then(|| (incident_id.to_owned(), request_id.to_owned()));
        let content = IncidentCommand {
            envelope: None,
            ..command
        }
        .encode_to_vec();
        let earlier = request
            .as_ref()
            .and_then(|key| self.pending.earlier(key, &content));
        let (command_id, result) = match earlier {
            Some(Earlier::Answered(answer)) => {
                telemetry::command_answered_after(started.elapsed());
                (
                    answer.cause_id.clone(),
                    outcome_of(&answer.cause_id, &answer),
                )
            }
            Some(Earlier::Waiting(mut waiter)) => {
                let joined = waiter.command_id.clone();
                let result = match tokio::time::timeout_at(deadline, &mut waiter.answer).await {
                    Ok(Ok(answer)) => {
                        telemetry::command_answered_after(started.elapsed());
                        outcome_of(&joined, &answer)
                    }
                    Ok(Err(_)) | Err(_) => Err(CommandError::NoAnswer {
                        timeout: self.timeout,
                    }),
                };
                (joined, result)
            }
            None => {
                let attempt = Attempted {
                    command_id: &command_id,
                    home,
                    payload: &payload,
                    deadline,
                    started,
                    action_name,
                    remember: request.map(|key| (key, content)),
                };
                let result = self.publish_and_wait(attempt).await;
                (command_id, result)
            }
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

    /// Writes a new attempt and waits for the router's answer or the deadline.
    async fn publish_and_wait(&self, attempt: Attempted<'_>) -> Result<Incident, CommandError> {
        let Attempted {
            command_id,
            home,
            payload,
            deadline,
            started,
            action_name,
            remember,
        } = attempt;
        let mut waiter = self.pending.register(command_id);
        // One deadline for the whole exchange, and two ways to miss it: Kafka did not confirm
        // the command, or the router did not answer. Either way the command may or may not
        // have been applied (a write whose acknowledgement was lost may still be in Kafka), so
        // both answer UNAVAILABLE and ask for a retry with the same request id, which the
        // router answers with success if the first attempt was applied.
        let record = FutureRecord::to(&self.topic)
            .partition(home.partition)
            .key(&home.grid_id)
            .payload(payload);
        let publish = tokio::time::timeout_at(deadline, self.producer.send(record, self.timeout));
        tokio::pin!(publish);
        let answered = |answer: Result<Arc<IncidentEvent>, oneshot::error::RecvError>| match answer
        {
            Ok(answer) => {
                telemetry::command_answered_after(started.elapsed());
                outcome_of(command_id, &answer)
            }
            Err(_) => Err(CommandError::NoAnswer {
                timeout: self.timeout,
            }),
        };
        tokio::select! {
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
                    if let Some((key, content)) = remember {
                        // In Kafka now: the router will answer it, so a retry joins it.
                        self.pending.confirmed(key, command_id, content);
                    }
                    match tokio::time::timeout_at(deadline, &mut waiter.answer).await {
                        Ok(answer) => answered(answer),
                        Err(_) => Err(CommandError::NoAnswer {
                            timeout: self.timeout,
                        }),
                    }
                }
            },
        }
    }
}

/// One new attempt of a command, for `CommandSender::publish_and_wait`.
struct Attempted<'a> {
    command_id: &'a str,
    home: &'a IncidentHome,
    payload: &'a [u8],
    deadline: tokio::time::Instant,
    started: Instant,
    action_name: &'static str,
    /// The request (incident id, request id) and the command's content, to remember the
    /// attempt once Kafka confirms it.
    remember: Option<((String, String), Vec<u8>)>,
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
        assert!(pending.lock().waiters.is_empty());
        assert!(waiter.answer.try_recv().is_ok());

        let abandoned = pending.register("cmd-2");
        drop(abandoned);
        assert!(pending.lock().waiters.is_empty());
    }

    #[test]
    fn without_a_caller_deadline_a_command_waits_the_configured_timeout() {
        let configured = Duration::from_secs(5);
        assert_eq!(command_wait(configured, None).ok(), Some(configured));
    }

    #[test]
    fn a_caller_deadline_shorter_than_the_timeout_bounds_the_wait_with_a_margin() {
        let configured = Duration::from_secs(5);
        let waits = [
            // a fifth of the deadline is kept back ...
            (Duration::from_secs(2), Duration::from_millis(1_600)),
            (Duration::from_secs(5), Duration::from_secs(4)),
            // ... at least 100 ms ...
            (Duration::from_millis(300), Duration::from_millis(200)),
            (Duration::from_millis(200), Duration::from_millis(100)),
            // ... and at most 1 s; never longer than the configured timeout.
            (Duration::from_secs(6), Duration::from_secs(5)),
            (Duration::from_secs(30), Duration::from_secs(5)),
        ];
        for (deadline, wait) in waits {
            assert_eq!(
                command_wait(configured, Some(deadline)).ok(),
                Some(wait),
                "deadline {deadline:?}"
            );
        }
        assert_eq!(
            command_wait(Duration::from_secs(60), Some(Duration::from_secs(30))).ok(),
            Some(Duration::from_secs(29))
        );
    }

    #[test]
    fn a_deadline_too_short_to_send_is_refused_and_says_the_command_was_not_sent() {
        for deadline in [Duration::ZERO, Duration::from_millis(199)] {
            let error = command_wait(Duration::from_secs(5), Some(deadline)).err();
            assert!(
                matches!(error, Some(CommandError::DeadlineTooShort { deadline: d }) if d == deadline),
                "{deadline:?}: {error:?}"
            );
        }
        let message = CommandError::DeadlineTooShort {
            deadline: Duration::from_millis(150),
        }
        .to_string();
        assert!(
            message.contains("deadline of 150 ms")
                && message.contains("NOT sent")
                && message.contains("at least 200 ms"),
            "{message}"
        );
    }

    fn key() -> (String, String) {
        ("inc-1".into(), "req-1".into())
    }

    fn answer_to(command_id: &str, revision: u64) -> Arc<IncidentEvent> {
        Arc::new(IncidentEvent {
            cause_id: command_id.into(),
            incident: Some(Incident {
                incident_id: "inc-1".into(),
                revision,
                ..Default::default()
            }),
            change: Some(Change::Acknowledged(Acknowledged::default())),
            ..Default::default()
        })
    }

    /// The first attempt's caller gave up before the router answered; the retry gets that
    /// answer instead of writing another record.
    #[test]
    fn a_retry_gets_the_answer_that_came_after_the_first_attempt_gave_up() {
        let pending = Arc::new(PendingCommands::default());
        let first = pending.register("cmd-1");
        pending.confirmed(key(), "cmd-1", b"ack".to_vec());
        drop(first);
        pending.resolve(&answer_to("cmd-1", 3));
        let Some(Earlier::Answered(answer)) = pending.earlier(&key(), b"ack") else {
            panic!("the late answer is kept for the retry");
        };
        assert_eq!(answer.cause_id, "cmd-1");
        assert!(
            pending.earlier(&key(), b"ack").is_none(),
            "served once: a later retry writes anew"
        );
        assert!(pending.lock().by_command.is_empty());
    }

    #[test]
    fn a_retry_while_the_first_attempt_is_unanswered_waits_for_its_answer() {
        let pending = Arc::new(PendingCommands::default());
        let mut first = pending.register("cmd-1");
        pending.confirmed(key(), "cmd-1", b"ack".to_vec());
        let Some(Earlier::Waiting(mut retry)) = pending.earlier(&key(), b"ack") else {
            panic!("the retry joins the unanswered attempt");
        };
        pending.resolve(&answer_to("cmd-1", 3));
        assert!(first.answer.try_recv().is_ok());
        assert!(retry.answer.try_recv().is_ok());
        // Answered while someone waited: settled, nothing kept.
        assert!(pending.earlier(&key(), b"ack").is_none());
        assert!(pending.lock().attempts.is_empty());
    }

    #[test]
    fn only_the_same_content_joins_and_an_attempt_answered_before_kafka_confirmed_is_not_kept() {
        let pending = Arc::new(PendingCommands::default());
        let first = pending.register("cmd-1");
        pending.confirmed(key(), "cmd-1", b"ack".to_vec());
        assert!(
            pending.earlier(&key(), b"close").is_none(),
            "a request id reused for something else is not a retry"
        );
        drop(first);

        // The router's answer can come before Kafka's confirmation.
        let second = pending.register("cmd-2");
        pending.resolve(&answer_to("cmd-2", 4));
        pending.confirmed(("inc-1".into(), "req-2".into()), "cmd-2", b"ack".to_vec());
        drop(second);
        assert!(
            pending
                .earlier(&("inc-1".into(), "req-2".into()), b"ack")
                .is_none()
        );
    }

    #[test]
    fn remembered_attempts_are_forgotten_after_a_while() {
        let pending = Arc::new(PendingCommands::default());
        let first = pending.register("cmd-1");
        pending.confirmed(key(), "cmd-1", b"ack".to_vec());
        drop(first);
        let later = Instant::now() + ATTEMPT_MEMORY + Duration::from_secs(1);
        pending.lock().forget_old(later);
        assert!(pending.lock().attempts.is_empty());
        assert!(pending.lock().by_command.is_empty());
        assert!(pending.earlier(&key(), b"ack").is_none());
    }
}
