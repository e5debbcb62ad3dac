//! Every metric the router emits, named in one place, and the one function that turns an
//! emitted incident event into the lifecycle metrics.

use crate::domain::desk::HelpOutcome;
use crate::domain::validate::ValidAction;
use helpgrid_common::time::{Millis, from_timestamp};
use helpgrid_common::topics::Topics;
use helpgrid_proto::pb::{
    EscalationLevel, IncidentEvent, IncidentSource, RejectReason, incident_event::Change,
};
use metrics::{
    Counter, Histogram, counter, describe_counter, describe_gauge, describe_histogram, gauge,
    histogram,
};

pub const RECORDS_IN: &str = "helpgrid_router_records_in_total";
pub const HELP_EVENTS: &str = "helpgrid_router_help_events_total";
pub const HELP_EVENTS_FORWARDED: &str = "helpgrid_router_help_events_forwarded_total";
pub const COMMANDS_FORWARDED: &str = "helpgrid_router_commands_forwarded_total";
pub const INCIDENTS_OPENED: &str = "helpgrid_router_incidents_opened_total";
pub const TIME_TO_ASSIGN: &str = "helpgrid_router_time_to_assign_seconds";
pub const TIME_TO_ACKNOWLEDGE: &str = "helpgrid_router_time_to_acknowledge_seconds";
pub const TIME_TO_CLOSE: &str = "helpgrid_router_time_to_close_seconds";
pub const ESCALATIONS: &str = "helpgrid_router_escalations_total";
pub const REASSIGNMENTS: &str = "helpgrid_router_reassignments_total";
pub const COMMANDS: &str = "helpgrid_router_commands_total";
pub const COMMANDS_REJECTED: &str = "helpgrid_router_commands_rejected_total";
pub const COMMANDS_REPEATED: &str = "helpgrid_router_commands_repeated_total";
pub const DEAD_LETTERS: &str = "helpgrid_router_dead_letters_total";
pub const TRANSACTIONS: &str = "helpgrid_router_transactions_total";
pub const TRANSACTION_SECONDS: &str = "helpgrid_router_transaction_seconds";
pub const BATCH_RECORDS: &str = "helpgrid_router_batch_records";
pub const OPEN_INCIDENTS: &str = "helpgrid_router_open_incidents";
pub const ROSTER_RESPONDERS: &str = "helpgrid_router_roster_responders";
pub const ROSTER_INVALID: &str = "helpgrid_router_roster_invalid_total";
pub const REBALANCES: &str = "helpgrid_router_rebalances_total";
pub const RESTORED_EVENTS: &str = "helpgrid_router_restored_events_total";
pub const RESTORED_BYTES: &str = "helpgrid_router_restored_bytes_total";
pub const RESTORE_SECONDS: &str = "helpgrid_router_restore_seconds";
pub const RESTORED_FROM_CHECKPOINT: &str = "helpgrid_router_restored_from_checkpoint_total";
pub const CHECKPOINTS_REFUSED: &str = "helpgrid_router_checkpoints_refused_total";
pub const CHECKPOINTS_WRITTEN: &str = "helpgrid_router_checkpoints_written_total";
pub const CHECKPOINT_BYTES: &str = "helpgrid_router_checkpoint_bytes_total";
pub const CHECKPOINT_SECONDS: &str = "helpgrid_router_checkpoint_seconds";
pub const CONSUMER_LAG: &str = "helpgrid_router_consumer_lag";
pub const PIPELINE_RESTARTS: &str = "helpgrid_router_pipeline_restarts_total";

pub fn describe() {
    describe_counter!(
        RESTORED_FROM_CHECKPOINT,
        "incident-state records a restore took from local checkpoints instead of Kafka"
    );
    describe_counter!(
        CHECKPOINTS_REFUSED,
        "Local checkpoints not used by a restore, by reason (stale, corrupt, other_identity, out_of_range, io)"
    );
    describe_counter!(
        CHECKPOINTS_WRITTEN,
        "Partition checkpoints written to the state folder, by result"
    );
    describe_counter!(CHECKPOINT_BYTES, "Bytes of partition checkpoints written");
    describe_histogram!(
        CHECKPOINT_SECONDS,
        metrics::Unit::Seconds,
        "Time to write one round of partition checkpoints (encode, write, fsync, rename)"
    );
    describe_counter!(RECORDS_IN, "Records consumed, by topic");
    describe_counter!(
        HELP_EVENTS,
        "Valid help events, by outcome (opened, attached, duplicate, below_threshold)"
    );
    describe_counter!(
        HELP_EVENTS_FORWARDED,
        "Help events that arrived on another partition than their grid's and were re-published there"
    );
    describe_counter!(
        COMMANDS_FORWARDED,
        "Commands that arrived on another partition than their grid's and were re-published there"
    );
    describe_counter!(INCIDENTS_OPENED, "Incidents opened, by source");
    describe_histogram!(
        TIME_TO_ASSIGN,
        metrics::Unit::Seconds,
        "From the press or detection to the first assignment"
    );
    describe_histogram!(
        TIME_TO_ACKNOWLEDGE,
        metrics::Unit::Seconds,
        "From opening to the first acknowledgement"
    );
    describe_histogram!(
        TIME_TO_CLOSE,
        metrics::Unit::Seconds,
        "From opening to closing"
    );
    describe_counter!(ESCALATIONS, "Escalations, by level reached");
    describe_counter!(
        REASSIGNMENTS,
        "Reassignments after a missed acknowledgement deadline"
    );
    describe_counter!(COMMANDS, "Valid commands, by action");
    describe_counter!(COMMANDS_REJECTED, "Commands rejected, by reason");
    describe_counter!(
        COMMANDS_REPEATED,
        "Retries of commands already applied (same request id): answered, nothing changed"
    );
    describe_counter!(
        DEAD_LETTERS,
        "Records sent to the dead-letter topic, by topic and kind"
    );
    describe_counter!(TRANSACTIONS, "Kafka transactions, by result");
    describe_histogram!(
        TRANSACTION_SECONDS,
        metrics::Unit::Seconds,
        "Time to produce and commit one transaction"
    );
    describe_histogram!(BATCH_RECORDS, "Input records per transaction");
    describe_gauge!(OPEN_INCIDENTS, "Open incidents owned by this instance");
    describe_gauge!(ROSTER_RESPONDERS, "Responders on the roster");
    describe_counter!(ROSTER_INVALID, "Roster records that could not be used");
    describe_counter!(REBALANCES, "Consumer group rebalances, by kind");
    describe_counter!(
        RESTORED_EVENTS,
        "incident-state records (snapshots and tombstones) read back to rebuild state"
    );
    describe_counter!(
        RESTORED_BYTES,
        metrics::Unit::Bytes,
        "Bytes of incident-state record values read back to rebuild state"
    );
    describe_histogram!(
        RESTORE_SECONDS,
        metrics::Unit::Seconds,
        "Time to rebuild the state of newly assigned partitions from incident-state"
    );
    describe_gauge!(
        CONSUMER_LAG,
        "Records behind the end of each input partition"
    );
    describe_counter!(PIPELINE_RESTARTS, "Pipeline restarts after a Kafka error");
    // Counters the alerts read with increase()/rate() are reported at 0 from the start: a
    // series born at 1 shows no increase to Prometheus, so HelpGridEscalatedToPoliceDesk
    // would miss the first escalation (and HelpGridRouterRestarting the first restart).
    // increment(0), not absolute(0): a second describe() in one process resets nothing.
    for level in (1..).map_while(|n| EscalationLevel::try_from(n).ok()) {
        counter!(ESCALATIONS, "level" => level.as_str_name()).increment(0);
    }
    counter!(REASSIGNMENTS).increment(0);
    counter!(PIPELINE_RESTARTS).increment(0);
}

fn seconds_between(from: Option<Millis>, to: Millis) -> Option<f64> {
    from.map(|f| ((to - f).max(0) as f64) / 1000.0)
}

/// Lifecycle metrics of one emitted event, measured against `now`.
pub fn record_incident_event(event: &IncidentEvent, now: Millis) {
    let incident = event.incident.as_ref();
    let opened_at = incident.and_then(|i| from_timestamp(i.opened_at.as_ref()));
    match event.change.as_ref() {
        Some(Change::Opened(_)) => {
            let source = incident
                .and_then(|i| IncidentSource::try_from(i.source).ok())
                .map_or("unknown", |s| s.as_str_name());
            counter!(INCIDENTS_OPENED, "source" => source).increment(1);
        }
        Some(Change::Escalated(e)) => {
            let level =
                EscalationLevel::try_from(e.to_level).map_or("unknown", |l| l.as_str_name());
            counter!(ESCALATIONS, "level" => level).increment(1);
        }
        Some(Change::Reassigned(_)) => counter!(REASSIGNMENTS).increment(1),
        Some(Change::Acknowledged(_)) => {
            if let Some(s) = seconds_between(opened_at, now) {
                histogram!(TIME_TO_ACKNOWLEDGE).record(s);
            }
        }
        Some(Change::Closed(_)) => {
            if let Some(s) = seconds_between(opened_at, now) {
                histogram!(TIME_TO_CLOSE).record(s);
            }
        }
        Some(Change::Rejected(r)) => {
            let reason = RejectReason::try_from(r.reason).map_or("unknown", |r| r.as_str_name());
            counter!(COMMANDS_REJECTED, "reason" => reason).increment(1);
        }
        Some(Change::Repeated(_)) => counter!(COMMANDS_REPEATED).increment(1),
        Some(Change::Assigned(_) | Change::Attached(_)) | None => {}
    }
    // An `assigned`, or an `opened` carrying its first assignments: one figure per track.
    if !event.assignments().is_empty() {
        let reported = incident.and_then(|i| from_timestamp(i.reported_at.as_ref()));
        if let Some(s) = seconds_between(reported, now) {
            let time_to_assign = histogram!(TIME_TO_ASSIGN);
            for _ in event.assignments() {
                time_to_assign.record(s);
            }
        }
    }
}

thread_local! {
    /// The open incidents this thread's pipeline last reported (see [`set_open_incidents`]).
    static OPEN_HERE: std::cell::Cell<f64> = const { std::cell::Cell::new(0.0) };
}

/// The open incidents of the calling pipeline's desk. An instance may run several pipelines,
/// each on its own thread (the rebalance callbacks run inside its consumer's poll, on the same
/// thread): the gauge is their sum, so each pipeline adds the change of its own count. A
/// restarted pipeline runs on its predecessor's thread and replaces its count.
pub fn set_open_incidents(n: usize) {
    let n = n as f64;
    let before = OPEN_HERE.with(|here| here.replace(n));
    if n != before {
        gauge!(OPEN_INCIDENTS).increment(n - before);
    }
}

/// The metrics the pipeline touches for every record and every press, registered once per
/// pipeline: looking each one up by name and labels per record (and allocating the topic
/// label) is work the router repeated some 800,000 times in a city flood.
pub struct PipelineCounters {
    help_events_in: Counter,
    commands_in: Counter,
    /// Indexed like `HelpOutcome` (opened, attached, duplicate, below_threshold).
    help_outcomes: [Counter; 4],
    /// acknowledge, close, escalate.
    commands: [Counter; 3],
    opened_button: Counter,
    time_to_assign: Histogram,
}

impl PipelineCounters {
    pub fn new(topics: &Topics) -> Self {
        let outcome = |o: HelpOutcome| counter!(HELP_EVENTS, "outcome" => o.as_str());
        Self {
            help_events_in: counter!(RECORDS_IN, "topic" => topics.help_events.clone()),
            commands_in: counter!(RECORDS_IN, "topic" => topics.incident_commands.clone()),
            help_outcomes: [
                outcome(HelpOutcome::Opened),
                outcome(HelpOutcome::Attached),
                outcome(HelpOutcome::Duplicate),
                outcome(HelpOutcome::BelowThreshold),
            ],
            commands: [
                counter!(COMMANDS, "action" => "acknowledge"),
                counter!(COMMANDS, "action" => "close"),
                counter!(COMMANDS, "action" => "escalate"),
            ],
            opened_button: counter!(INCIDENTS_OPENED, "source" => IncidentSource::Button.as_str_name()),
            time_to_assign: histogram!(TIME_TO_ASSIGN),
        }
    }

    /// One record consumed from help-events (`help`) or incident-commands.
    pub fn record_in(&self, help: bool) {
        if help {
            self.help_events_in.increment(1);
        } else {
            self.commands_in.increment(1);
        }
    }

    pub fn help_event(&self, outcome: HelpOutcome) {
        let i = match outcome {
            HelpOutcome::Opened => 0,
            HelpOutcome::Attached => 1,
            HelpOutcome::Duplicate => 2,
            HelpOutcome::BelowThreshold => 3,
        };
        self.help_outcomes[i].increment(1);
    }

    pub fn command(&self, action: &ValidAction) {
        let i = match action {
            ValidAction::Acknowledge => 0,
            ValidAction::Close { .. } => 1,
            ValidAction::Escalate { .. } => 2,
        };
        self.commands[i].increment(1);
    }

    /// As [`record_incident_event`], with the two changes every press makes (a button
    /// incident opened, a first assignment) counted through the handles.
    pub fn record_incident_event(&self, event: &IncidentEvent, now: Millis) {
        let incident = event.incident.as_ref();
        match event.change.as_ref() {
            Some(Change::Opened(_))
                if incident.is_some_and(|i| i.source == IncidentSource::Button as i32) =>
            {
                self.opened_button.increment(1);
            }
            Some(Change::Assigned(_)) => {}
            _ => return record_incident_event(event, now),
        }
        // An `assigned`, or an `opened` carrying its first assignments: one figure per track.
        let reported = incident.and_then(|i| from_timestamp(i.reported_at.as_ref()));
        if let Some(s) = seconds_between(reported, now) {
            for _ in event.assignments() {
                self.time_to_assign.record(s);
            }
        }
    }
}

pub const INPUT_AGE: &str = "helpgrid_router_input_age_seconds";
pub const DECIDE_SECONDS: &str = "helpgrid_router_decide_seconds";
pub const TRANSACTION_STEP_SECONDS: &str = "helpgrid_router_transaction_step_seconds";
pub const COMMIT_WAIT_SECONDS: &str = "helpgrid_router_commit_wait_seconds";

/// Where a press's time goes inside the router, per turn of the pipeline: how old a help
/// event is when the pipeline takes it (its record timestamp to the poll: the producer's
/// linger, the broker, the fetch, and the transaction this pipeline was busy with), the
/// decision, and each step of the transaction. Registered once per pipeline.
pub struct TurnTimes {
    input_age: Histogram,
    decide: Histogram,
    /// produce (begin and every send), offsets, deliver, commit.
    steps: [Histogram; 4],
    commit_wait: Histogram,
}

/// The steps of one transaction, timed by the pipeline.
#[derive(Debug, Clone, Copy, Default)]
pub struct StepTimes {
    pub produce: std::time::Duration,
    pub offsets: std::time::Duration,
    pub deliver: std::time::Duration,
    pub commit: std::time::Duration,
}

impl TurnTimes {
    pub fn new() -> Self {
        describe_histogram!(
            INPUT_AGE,
            metrics::Unit::Seconds,
            "Age of a help event (its record timestamp) when the pipeline takes it"
        );
        describe_histogram!(
            DECIDE_SECONDS,
            metrics::Unit::Seconds,
            "From a batch's poll to the start of its transaction (the desk's decisions)"
        );
        describe_histogram!(
            TRANSACTION_STEP_SECONDS,
            metrics::Unit::Seconds,
            "Time of each step of a transaction: produce (begin and sends), offsets \
             (AddOffsetsToTxn and TxnOffsetCommit), deliver (the produce requests answered), \
             commit (EndTxn)"
        );
        describe_histogram!(
            COMMIT_WAIT_SECONDS,
            metrics::Unit::Seconds,
            "Time the pipeline waited for a commit running on its own thread (with \
             --overlap-commits: the batch before's, while the next one is already produced)"
        );
        let step = |s: &'static str| histogram!(TRANSACTION_STEP_SECONDS, "step" => s);
        Self {
            input_age: histogram!(INPUT_AGE),
            decide: histogram!(DECIDE_SECONDS),
            steps: [
                step("produce"),
                step("offsets"),
                step("deliver"),
                step("commit"),
            ],
            commit_wait: histogram!(COMMIT_WAIT_SECONDS),
        }
    }

    /// A help event whose record was written at `written` (ms), taken at `now`.
    pub fn input(&self, written: Millis, now: Millis) {
        self.input_age
            .record(((now - written).max(0) as f64) / 1000.0);
    }

    pub fn decided(&self, took: std::time::Duration) {
        self.decide.record(took.as_secs_f64());
    }

    pub fn waited_for_commit(&self, took: std::time::Duration) {
        self.commit_wait.record(took.as_secs_f64());
    }

    pub fn transaction(&self, t: &StepTimes) {
        for (h, d) in self
            .steps
            .iter()
            .zip([t.produce, t.offsets, t.deliver, t.commit])
        {
            h.record(d.as_secs_f64());
        }
    }
}

impl Default for TurnTimes {
    fn default() -> Self {
        Self::new()
    }
}
