//! Reads the output topic (read_committed, as every consumer of HelpGrid does) and turns
//! what it sees into latencies and a reconciliation.
//!
//! For HelpGrid the output is `incident-events`: an `opened` change of `inc-<event id>`, its
//! first `assigned`, an `attached` change naming a repeat press, an `acknowledged`. For the
//! bare relay it is the help events themselves, copied. Latencies run from the moment the
//! generator handed the event to its producer to the moment the record is read here, on
//! the same clock.

use crate::load::generator::SendLog;
use crate::load::plan::Plan;
use hdrhistogram::Histogram;
use helpgrid_proto::pb::HelpEvent;
use prost::Message as _;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the output topic carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// HelpGrid's incident events.
    IncidentEvents,
    /// The relay's copies of the help events.
    Relayed,
}

/// Latencies in microseconds, 1 µs to 1 h, 3 significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3)
        .expect("1 µs .. 1 h with 3 significant digits is a valid histogram")
}

fn coarse_histogram() -> Histogram<u32> {
    Histogram::new_with_bounds(1, 3_600_000_000, 2)
        .expect("1 µs .. 1 h with 2 significant digits is a valid histogram")
}

/// Figures of one phase (a range of sequence numbers).
#[derive(Debug, Clone)]
pub struct PhaseStats {
    /// Events that must be opened or attached (all presses, cameras over the threshold).
    pub expected: u64,
    /// Of those, how many were.
    pub accounted: u64,
    pub opened: u64,
    pub attached: u64,
    /// Incidents of this phase that got a first responder (or went to the police desk).
    pub assigned: u64,
    pub acknowledged: u64,
    pub to_opened: Histogram<u64>,
    pub to_assigned: Histogram<u64>,
    pub to_attached: Histogram<u64>,
    pub to_acknowledged: Histogram<u64>,
    /// When the last event of the phase was accounted for and assigned.
    pub last_settled_us: u64,
}

impl PhaseStats {
    fn new(expected: u64) -> Self {
        Self {
            expected,
            accounted: 0,
            opened: 0,
            attached: 0,
            assigned: 0,
            acknowledged: 0,
            to_opened: latency_histogram(),
            to_assigned: latency_histogram(),
            to_attached: latency_histogram(),
            to_acknowledged: latency_histogram(),
            last_settled_us: 0,
        }
    }

    /// Everything of the phase has been accounted for and every incident it opened assigned.
    pub fn settled(&self) -> bool {
        self.accounted >= self.expected && self.assigned >= self.opened
    }
}

/// One second of the run, for the chart and the throughput series.
#[derive(Debug, Clone)]
pub struct Second {
    pub assigned: u64,
    pub output_records: u64,
    pub to_assigned: Histogram<u32>,
}

/// Everything observed so far. Shared with the progress printer through a mutex.
pub struct Observed {
    pub output: Output,
    pub phases: Vec<PhaseStats>,
    pub seconds: Vec<Second>,
    pub output_records: u64,
    pub changes: BTreeMap<&'static str, u64>,
    /// Assignments, reassignments and escalations to a person: messages a responder gets.
    pub notifications: u64,
    /// Records that did not decode, or named an event or incident not of this run.
    pub foreign_records: u64,
    /// Records whose envelope event id was seen before (a duplicate write).
    pub duplicate_event_ids: u64,
    /// Incident revisions out of order: a repeated revision is a duplicate, a skipped one lost.
    pub revisions_repeated: u64,
    pub revisions_skipped: u64,
    /// A second `assigned` change for the same incident and track.
    pub duplicate_assignments: u64,
    /// Per event: times it opened an incident (or was relayed), times attached.
    opened: Vec<u8>,
    attached: Vec<u8>,
    /// Per incident (by the opening event): tracks assigned (bit per track), flags, revision.
    tracks: Vec<u8>,
    flags: Vec<u8>,
    revision: Vec<u32>,
    seen_ids: HashSet<u128>,
}

const FIRST_ASSIGNED: u8 = 1;
const ACKNOWLEDGED: u8 = 2;

/// What the tally reads of an `IncidentEvent` (helpgrid.v1, incidents.proto), under the same
/// field numbers. Everything else (the incident's grid, household, assignments, event ids,
/// times; the changes' details) is skipped as prost skips unknown fields: undecoded and not
/// allocated. The reader sees every record of the run on the cores it measures, and the full
/// `Incident` was most of what a record cost it to decode.
mod lean {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct IncidentEvent {
        #[prost(message, optional, tag = "1")]
        pub envelope: Option<Envelope>,
        #[prost(message, optional, tag = "2")]
        pub incident: Option<Incident>,
        #[prost(oneof = "Change", tags = "10, 11, 12, 13, 14, 15, 16, 17, 68")]
        pub change: Option<Change>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Envelope {
        #[prost(string, tag = "1")]
        pub event_id: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Incident {
        #[prost(string, tag = "1")]
        pub incident_id: String,
        #[prost(uint64, tag = "26")]
        pub revision: u64,
    }

    /// `IncidentOpened`: the assignments of "opened and assigned" as one event.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Opened {
        #[prost(message, repeated, tag = "120")]
        pub assigned: Vec<Track>,
    }

    /// `ResponderAssigned`, `Escalated`: the track, and who was assigned.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Track {
        #[prost(int32, tag = "1")]
        pub track: i32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Escalated {
        #[prost(string, tag = "4")]
        pub responder_id: String,
    }

    /// `EventAttached`: the help event attached.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Attached {
        #[prost(string, tag = "1")]
        pub event_id: String,
    }

    /// A change whose details the tally does not read.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Skipped {}

    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Change {
        #[prost(message, tag = "10")]
        Opened(Opened),
        #[prost(message, tag = "11")]
        Assigned(Track),
        #[prost(message, tag = "12")]
        Attached(Attached),
        #[prost(message, tag = "13")]
        Acknowledged(Skipped),
        #[prost(message, tag = "14")]
        Reassigned(Skipped),
        #[prost(message, tag = "15")]
        Escalated(Escalated),
        #[prost(message, tag = "16")]
        Closed(Skipped),
        #[prost(message, tag = "17")]
        Rejected(Skipped),
        #[prost(message, tag = "68")]
        Repeated(Skipped),
    }

    impl Change {
        /// As `helpgrid_proto`'s `Change::name`.
        pub fn name(&self) -> &'static str {
            match self {
                Change::Opened(_) => "opened",
                Change::Assigned(_) => "assigned",
                Change::Attached(_) => "attached",
                Change::Acknowledged(_) => "acknowledged",
                Change::Reassigned(_) => "reassigned",
                Change::Escalated(_) => "escalated",
                Change::Closed(_) => "closed",
                Change::Rejected(_) => "rejected",
                Change::Repeated(_) => "repeated",
            }
        }
    }
}

use lean::{Change, IncidentEvent};

/// A compact key for an event id: the UUID's 128 bits, or a hash for anything else.
fn id_key(id: &str) -> u128 {
    let mut v: u128 = 0;
    let mut digits = 0;
    for c in id.chars().filter(|c| *c != '-') {
        match c.to_digit(16) {
            Some(d) if digits < 32 => {
                v = (v << 4) | u128::from(d);
                digits += 1;
            }
            _ => {
                digits = 33;
                break;
            }
        }
    }
    if digits == 32 {
        return v;
    }
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    id.hash(&mut h);
    u128::from(h.finish()) | (1 << 127)
}

impl Observed {
    pub fn new(output: Output, plan: &Plan, min_confidence: f32) -> Self {
        let n = plan.events.len();
        let phases = plan
            .phases
            .iter()
            .map(|p| {
                let expected = p
                    .range
                    .clone()
                    .filter(|s| {
                        output == Output::Relayed
                            || plan.events[*s as usize].must_be_accounted(min_confidence)
                    })
                    .count();
                PhaseStats::new(expected as u64)
            })
            .collect();
        Self {
            output,
            phases,
            seconds: Vec::new(),
            output_records: 0,
            changes: BTreeMap::new(),
            notifications: 0,
            foreign_records: 0,
            duplicate_event_ids: 0,
            revisions_repeated: 0,
            revisions_skipped: 0,
            duplicate_assignments: 0,
            opened: vec![0; n],
            attached: vec![0; n],
            tracks: vec![0; n],
            flags: vec![0; n],
            revision: vec![0; n],
            seen_ids: HashSet::new(),
        }
    }

    fn second(&mut self, at_us: u64) -> &mut Second {
        let s = (at_us / 1_000_000) as usize;
        while self.seconds.len() <= s {
            self.seconds.push(Second {
                assigned: 0,
                output_records: 0,
                to_assigned: coarse_histogram(),
            });
        }
        &mut self.seconds[s]
    }

    fn latency(log: &SendLog, seq: u64, at_us: u64) -> Option<u64> {
        log.sent_at(seq)
            .map(|sent| at_us.saturating_sub(sent).max(1))
    }

    /// Counts a first assignment (or arrival at the police desk) of the incident `seq` opened.
    /// A responder assigned on `track` at its first level.
    fn assigned(&mut self, plan: &Plan, log: &SendLog, seq: u64, track: i32, at_us: u64) {
        let i = seq as usize;
        self.notifications += 1;
        let bit = 1u8 << (track.clamp(0, 7) as u8);
        if self.tracks[i] & bit != 0 {
            self.duplicate_assignments += 1;
        }
        self.tracks[i] |= bit;
        self.first_assignment(plan, log, seq, at_us);
    }

    fn first_assignment(&mut self, plan: &Plan, log: &SendLog, seq: u64, at_us: u64) {
        let i = seq as usize;
        if self.flags[i] & FIRST_ASSIGNED != 0 {
            return;
        }
        self.flags[i] |= FIRST_ASSIGNED;
        let latency = Self::latency(log, seq, at_us);
        if let Some(p) = plan.phase_of(seq) {
            let phase = &mut self.phases[p];
            phase.assigned += 1;
            if let Some(l) = latency {
                phase.to_assigned.saturating_record(l);
            }
            if phase.settled() {
                phase.last_settled_us = at_us;
            }
            if plan.phases[p].warm_up {
                return;
            }
        }
        let second = self.second(at_us);
        second.assigned += 1;
        if let Some(l) = latency {
            second.to_assigned.saturating_record(l);
        }
    }

    fn accounted(&mut self, plan: &Plan, log: &SendLog, seq: u64, at_us: u64, opened: bool) {
        let Some(p) = plan.phase_of(seq) else { return };
        let latency = Self::latency(log, seq, at_us);
        let phase = &mut self.phases[p];
        phase.accounted += 1;
        if opened {
            phase.opened += 1;
            if let Some(l) = latency {
                phase.to_opened.saturating_record(l);
            }
        } else {
            phase.attached += 1;
            if let Some(l) = latency {
                phase.to_attached.saturating_record(l);
            }
        }
        if phase.settled() {
            phase.last_settled_us = at_us;
        }
    }

    fn relayed(&mut self, plan: &Plan, log: &SendLog, payload: &[u8], at_us: u64) {
        let Some(seq) = HelpEvent::decode(payload)
            .ok()
            .and_then(|e| e.envelope)
            .and_then(|e| plan.seq_of(&e.event_id))
        else {
            self.foreign_records += 1;
            return;
        };
        let i = seq as usize;
        self.opened[i] = self.opened[i].saturating_add(1);
        if self.opened[i] > 1 {
            self.duplicate_event_ids += 1;
            return;
        }
        self.accounted(plan, log, seq, at_us, true);
        // For the relay, "assigned" is "copied to the output": same clock, same chart.
        self.first_assignment(plan, log, seq, at_us);
    }

    fn incident_event(&mut self, plan: &Plan, log: &SendLog, payload: &[u8], at_us: u64) {
        let Ok(event) = IncidentEvent::decode(payload) else {
            self.foreign_records += 1;
            return;
        };
        if let Some(envelope) = &event.envelope
            && !self.seen_ids.insert(id_key(&envelope.event_id))
        {
            self.duplicate_event_ids += 1;
            return;
        }
        let Some(change) = event.change.as_ref() else {
            return;
        };
        *self.changes.entry(change.name()).or_default() += 1;
        let Some(incident) = event.incident.as_ref() else {
            return;
        };
        let Some(seq) = plan.seq_of(&incident.incident_id) else {
            self.foreign_records += 1;
            return;
        };
        let i = seq as usize;
        let expected_revision = u64::from(self.revision[i]) + 1;
        if incident.revision < expected_revision {
            self.revisions_repeated += 1;
            return;
        }
        if incident.revision > expected_revision {
            self.revisions_skipped += incident.revision - expected_revision;
        }
        self.revision[i] = incident.revision as u32;
        match change {
            Change::Opened(o) => {
                self.opened[i] = self.opened[i].saturating_add(1);
                if self.opened[i] == 1 && self.attached[i] == 0 {
                    self.accounted(plan, log, seq, at_us, true);
                }
                // "Opened and assigned" in one event: each assignment counts as `assigned`.
                for a in &o.assigned {
                    self.assigned(plan, log, seq, a.track, at_us);
                }
            }
            Change::Attached(a) => {
                if let Some(source) = plan.seq_of(&a.event_id) {
                    let s = source as usize;
                    self.attached[s] = self.attached[s].saturating_add(1);
                    if self.attached[s] == 1 && self.opened[s] == 0 {
                        self.accounted(plan, log, source, at_us, false);
                    }
                }
            }
            Change::Assigned(a) => self.assigned(plan, log, seq, a.track, at_us),
            Change::Escalated(e) => {
                if !e.responder_id.is_empty() {
                    self.notifications += 1;
                }
                self.first_assignment(plan, log, seq, at_us);
            }
            Change::Reassigned(_) => self.notifications += 1,
            Change::Acknowledged(_) => {
                if self.flags[i] & ACKNOWLEDGED == 0 {
                    self.flags[i] |= ACKNOWLEDGED;
                    if let Some(p) = plan.phase_of(seq) {
                        let latency = Self::latency(log, seq, at_us);
                        let phase = &mut self.phases[p];
                        phase.acknowledged += 1;
                        if let Some(l) = latency {
                            phase.to_acknowledged.saturating_record(l);
                        }
                    }
                }
            }
            Change::Closed(_) | Change::Rejected(_) | Change::Repeated(_) => {}
        }
    }

    fn record(&mut self, plan: &Plan, log: &SendLog, payload: &[u8], at_us: u64) {
        self.output_records += 1;
        self.second(at_us).output_records += 1;
        match self.output {
            Output::IncidentEvents => self.incident_event(plan, log, payload, at_us),
            Output::Relayed => self.relayed(plan, log, payload, at_us),
        }
    }

    /// Events sent that were never accounted for, and events accounted for more than once.
    pub fn reconcile(&self, plan: &Plan, log: &SendLog, min_confidence: f32) -> Reconciliation {
        let mut r = Reconciliation::default();
        for (i, planned) in plan.events.iter().enumerate() {
            if log.sent_at(i as u64).is_none() {
                continue;
            }
            r.sent += 1;
            let must = self.output == Output::Relayed || planned.must_be_accounted(min_confidence);
            let times = u32::from(self.opened[i]) + u32::from(self.attached[i]);
            match (must, times) {
                (true, 0) => r.lost += 1,
                (true, 1) => r.accounted += 1,
                (false, 0) => r.ignored_as_expected += 1,
                (false, _) => r.wrongly_acted_on += 1,
                (true, _) => r.accounted_twice += 1,
            }
            if self.opened[i] > 0 && self.flags[i] & FIRST_ASSIGNED == 0 {
                r.opened_never_assigned += 1;
            }
        }
        r.duplicate_event_ids = self.duplicate_event_ids;
        r.duplicate_assignments = self.duplicate_assignments;
        r.revisions_repeated = self.revisions_repeated;
        r.revisions_skipped = self.revisions_skipped;
        r.foreign_records = self.foreign_records;
        r
    }
}

/// The end-of-run check: every event accounted for exactly once, nothing doubled.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reconciliation {
    pub sent: u64,
    pub accounted: u64,
    /// Camera detections under the threshold that (rightly) opened nothing.
    pub ignored_as_expected: u64,
    pub lost: u64,
    pub accounted_twice: u64,
    pub wrongly_acted_on: u64,
    pub opened_never_assigned: u64,
    pub duplicate_event_ids: u64,
    pub duplicate_assignments: u64,
    pub revisions_repeated: u64,
    pub revisions_skipped: u64,
    pub foreign_records: u64,
}

impl Reconciliation {
    pub fn clean(&self) -> bool {
        self.lost == 0
            && self.accounted_twice == 0
            && self.wrongly_acted_on == 0
            && self.opened_never_assigned == 0
            && self.duplicate_event_ids == 0
            && self.duplicate_assignments == 0
            && self.revisions_repeated == 0
            && self.revisions_skipped == 0
            && self.foreign_records == 0
    }
}

/// Follows every partition of `topic` from the beginning in a thread of its own.
pub fn start(
    config: &ClientConfig,
    topic: &str,
    plan: Arc<Plan>,
    log: Arc<SendLog>,
    observed: Arc<Mutex<Observed>>,
    stop: Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<()>, KafkaError> {
    let consumer: BaseConsumer = config.create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(30))?;
    let mut assignment = TopicPartitionList::new();
    for t in metadata.topics() {
        for p in t.partitions() {
            assignment.add_partition_offset(topic, p.id(), Offset::Beginning)?;
        }
    }
    if assignment.count() == 0 {
        return Err(KafkaError::MetadataFetch(
            rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition,
        ));
    }
    consumer.assign(&assignment)?;
    Ok(std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(message)) => {
                    let at = log.now_us();
                    if let Ok(mut o) = observed.lock() {
                        o.record(&plan, &log, message.payload().unwrap_or_default(), at);
                    }
                }
                Some(Err(KafkaError::PartitionEOF(_))) | None => {}
                Some(Err(error)) => tracing::warn!(%error, "reading the output topic"),
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use helpgrid_proto::pb;

    fn full(change: pb::incident_event::Change) -> pb::IncidentEvent {
        pb::IncidentEvent {
            envelope: Some(pb::Envelope {
                event_id: "inc-t-7:2".into(),
                source: "router".into(),
                ..Default::default()
            }),
            incident: Some(pb::Incident {
                incident_id: "inc-t-7".into(),
                grid_id: "g1".into(),
                household_id: "h1".into(),
                revision: 2,
                assignments: vec![pb::Assignment {
                    responder_id: "w1".into(),
                    ..Default::default()
                }],
                recent_event_ids: vec!["t-7".into(), "t-9".into()],
                ..Default::default()
            }),
            cause_id: "t-9".into(),
            change: Some(change),
        }
    }

    /// The lean messages name the fields of incidents.proto: a record the router writes
    /// reads back with the same ids, revision, change and assignments.
    #[test]
    fn the_lean_reader_sees_what_the_full_decode_sees() {
        use pb::incident_event::Change as C;
        let assigned = |track: pb::Track| pb::ResponderAssigned {
            track: track as i32,
            responder_id: "w1".into(),
            ..Default::default()
        };
        let cases = [
            C::Opened(pb::IncidentOpened {
                assigned: vec![assigned(pb::Track::Community), assigned(pb::Track::Police)],
            }),
            C::Assigned(assigned(pb::Track::Police)),
            C::Attached(pb::EventAttached {
                event_id: "t-9".into(),
                ..Default::default()
            }),
            C::Escalated(pb::Escalated {
                responder_id: "sup".into(),
                reason: "deadline".into(),
                ..Default::default()
            }),
            C::Acknowledged(pb::Acknowledged::default()),
            C::Closed(pb::IncidentClosed::default()),
        ];
        for change in cases {
            let event = full(change.clone());
            let lean = IncidentEvent::decode(event.encode_to_vec().as_slice()).expect("decodes");
            assert_eq!(lean.envelope.expect("envelope").event_id, "inc-t-7:2");
            let incident = lean.incident.expect("incident");
            assert_eq!(
                (incident.incident_id.as_str(), incident.revision),
                ("inc-t-7", 2)
            );
            let got = lean.change.expect("change");
            assert_eq!(got.name(), change.name());
            match (got, change) {
                (Change::Opened(o), C::Opened(f)) => {
                    let tracks: Vec<i32> = o.assigned.iter().map(|a| a.track).collect();
                    let want: Vec<i32> = f.assigned.iter().map(|a| a.track).collect();
                    assert_eq!(tracks, want);
                }
                (Change::Assigned(a), C::Assigned(f)) => assert_eq!(a.track, f.track),
                (Change::Attached(a), C::Attached(f)) => assert_eq!(a.event_id, f.event_id),
                (Change::Escalated(e), C::Escalated(f)) => {
                    assert_eq!(e.responder_id, f.responder_id)
                }
                (Change::Acknowledged(_), C::Acknowledged(_))
                | (Change::Closed(_), C::Closed(_)) => {}
                (got, want) => panic!("{} read as {}", want.name(), got.name()),
            }
        }
    }

    #[test]
    fn a_uuid_keys_by_its_bits_and_anything_else_by_a_hash() {
        assert_eq!(
            id_key("00000000-0000-0000-0000-00000000002a"),
            42,
            "a UUID is its 128 bits"
        );
        let other = id_key("inc-t-7:2");
        assert_ne!(other & (1 << 127), 0, "a non-UUID is marked as a hash");
        assert_ne!(other, id_key("inc-t-7:3"));
        assert_ne!(
            id_key("0000000000000000000000000000002a0"),
            42,
            "33 digits is no UUID"
        );
    }
}
