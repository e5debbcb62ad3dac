//! The incident state machine of one router instance: every incident of the partitions it
//! owns, the indexes derived from them, and the transitions.
//!
//! Each transition takes the incident out of the desk, changes it, records one
//! `IncidentEvent` per change (carrying the full incident as it is afterwards), and stores it
//! back. `store` is the only place the derived indexes (load, deadlines, dedup keys) change,
//! so they can never drift from the incidents.

use super::policy::{self, Policy};
use super::roster::Roster;
use super::validate::{ValidAction, ValidBody, ValidCommand, ValidHelpEvent};
use helpgrid_common::time::{Millis, from_timestamp, to_timestamp};
use helpgrid_proto::pb::{
    self, ActorRole, Assignment, AttachKind, Envelope, EscalationLevel, Incident, IncidentEvent,
    IncidentSource, IncidentState, PressKind, Priority, RejectReason, ResponderRole, Track,
    incident_event::Change,
};
use prost::Message as _;
use std::collections::{BTreeSet, HashSet, VecDeque};
use std::sync::Arc;

/// The desk's maps are looked up several times per event (id, dedup key, event id,
/// responder load) and hashed string keys showed in the router's profile (SipHash ≈ 2 %).
/// foldhash is the hasher hashbrown itself defaults to; it is still seeded per process, so
/// keys chosen by a device cannot be aimed at one bucket ahead of time.
pub(crate) type Map<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// Source name written in the envelope of every event the router emits.
pub const SOURCE: &str = "helpgrid-router";
/// How many source event ids an incident remembers for deduplication.
const RECENT_EVENT_IDS: usize = 16;
/// How many command ids answered without a change (`repeated` or `rejected`) an incident
/// remembers. A second copy of a command record arrives within seconds of the first (a
/// producer retry in a failover), and few retries of one request are in flight at once.
const REPEATED_COMMAND_IDS: usize = 8;
/// How many command ids rejected as `NOT_FOUND` the desk remembers (there is no incident to
/// remember them in). Such rejections are rare (a command for an incident closed past the
/// retention time), and a copy of a record follows the first within seconds.
const NOT_FOUND_COMMAND_IDS: usize = 1024;

/// An event to publish, with the partition it belongs to (the incident's own).
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    pub partition: i32,
    pub key: String,
    pub event: IncidentEvent,
    /// `event.incident` encoded, when the desk encoded it anyway to store it: the adapter
    /// writes the event around these bytes ([`helpgrid_proto::encode_incident_event`])
    /// instead of encoding the incident a second time.
    pub encoded_incident: Option<Box<[u8]>>,
}

/// What became of a help event, for counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HelpOutcome {
    Opened,
    Attached,
    /// The same event id was seen before (a redelivery or a device resending).
    Duplicate,
    /// A camera detection under the confidence threshold.
    BelowThreshold,
}

impl HelpOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            HelpOutcome::Opened => "opened",
            HelpOutcome::Attached => "attached",
            HelpOutcome::Duplicate => "duplicate",
            HelpOutcome::BelowThreshold => "below_threshold",
        }
    }
}

/// An incident at rest. The snapshot is kept encoded, exactly as its incident-state record
/// (≈ 250 bytes for an assigned press), and decoded only when a transition takes it out: a
/// decoded `Incident` holds some twenty heap strings and costs several times more. What the
/// lookups need without decoding sits beside it.
struct Tracked {
    record: Box<[u8]>,
    partition: i32,
    /// `IncidentSource` value, so the rare scans (maintenance) decode only their own kind.
    source: i32,
    open: bool,
}

impl Tracked {
    fn incident(&self) -> Incident {
        // The record was encoded by `store` from a valid `Incident`; decoding it cannot fail,
        // and if it ever did an empty incident would surface in the invariant check.
        Incident::decode(&*self.record).unwrap_or_default()
    }
}

/// Ids shared by the indexes: one allocation per incident however many indexes name it.
pub type Id = Arc<str>;

#[derive(Default)]
pub struct Desk {
    policy: Policy,
    incidents: Map<Id, Tracked>,
    /// responder id -> tracks of open incidents assigned to them.
    load: Map<String, u32>,
    /// (ack deadline, incident id) for every unacknowledged assignment.
    deadlines: BTreeSet<(Millis, Id)>,
    /// Grid ids, interned: ~13,000 grids repeat across every open incident.
    grids: Interner,
    /// (grid, household) -> the open button incidents of that household.
    open_by_household: OpenByKey<(u32, Box<str>)>,
    /// (camera, label) -> the open camera incidents for that detection (newest attaches).
    open_by_camera: OpenByKey<(Box<str>, i32)>,
    /// source event id -> incident, for the events attached to incidents still in memory.
    /// An incident's opening event needs no entry: its id is the incident's, `inc-<event id>`
    /// ([`opening_event_id`]), so a copy of it is recognised by the incident itself for as
    /// long as the incident is in memory. That spares the flood's typical incident, one press,
    /// an entry and its key (~90 bytes of the ~1 KiB an open incident costs).
    seen_events: Map<Box<str>, Id>,
    /// `inc-<event id>`, built here to look an opening up without allocating per event.
    opening_key: String,
    /// (closed at, incident id), to forget closed incidents after the retention time.
    closed: BTreeSet<(Millis, Id)>,
    /// (partition, incident id) of closed incidents forgotten since the adapter last asked:
    /// their incident-state records get a tombstone.
    forgotten: Vec<(i32, String)>,
    /// Command ids rejected as `NOT_FOUND` by this desk, so that a second copy of the record
    /// gets no second `<command_id>:rejected`. Memory only: the desk lives no longer than its
    /// pipeline, and a pipeline whose transaction fails is discarded with its desk, so every id
    /// here was answered in a transaction that committed or is still open.
    not_found: RecentIds,
}

/// The latest `NOT_FOUND_COMMAND_IDS` ids, oldest forgotten first.
#[derive(Default)]
struct RecentIds {
    order: VecDeque<Box<str>>,
    set: HashSet<Box<str>>,
}

impl RecentIds {
    /// Adds `id`; false if it was there already.
    fn insert(&mut self, id: &str) -> bool {
        if self.set.contains(id) {
            return false;
        }
        if self.order.len() >= NOT_FOUND_COMMAND_IDS
            && let Some(oldest) = self.order.pop_front()
        {
            self.set.remove(&oldest);
        }
        self.order.push_back(id.into());
        self.set.insert(id.into());
        true
    }
}

/// Strings that repeat (grid ids), stored once and named by number. Numbers are never
/// reused: the set of grids is small and fixed by the city, not by traffic.
#[derive(Default, Clone)]
struct Interner {
    numbers: Map<Box<str>, u32>,
}

impl Interner {
    fn number(&mut self, s: &str) -> u32 {
        if let Some(n) = self.numbers.get(s) {
            return *n;
        }
        let n = u32::try_from(self.numbers.len()).unwrap_or(u32::MAX);
        self.numbers.insert(s.into(), n);
        n
    }

    fn find(&self, s: &str) -> Option<u32> {
        self.numbers.get(s).copied()
    }
}

/// Collects the events of one transition on one incident.
struct Transition<'a> {
    incident: Incident,
    partition: i32,
    cause_id: &'a str,
    now: Millis,
    out: Vec<Output>,
    /// While an opening decides its first assignments: the changes, kept instead of
    /// recorded (no revision, no event), to be folded into the `opened` event.
    collect: Option<Vec<Change>>,
}

impl Transition<'_> {
    fn record(&mut self, change: Change) {
        if let Some(changes) = &mut self.collect {
            changes.push(change);
            return;
        }
        self.next_revision();
        let incident = self.incident.clone();
        self.push(change, incident);
    }

    /// Records the transition's last change and ends it. The event takes the incident itself
    /// instead of a copy (a clone of the incident's every string, once per press), and the
    /// caller stores it from there ([`Desk::store_last`]).
    /// Only for a transition that records: an opening collects its first assignments, then
    /// records its one event with `collect` already taken.
    fn record_last(mut self, change: Change) -> Vec<Output> {
        debug_assert!(
            self.collect.is_none(),
            "record_last while collecting an opening"
        );
        self.next_revision();
        let incident = std::mem::take(&mut self.incident);
        self.push(change, incident);
        self.out
    }

    fn next_revision(&mut self) {
        self.incident.revision += 1;
        self.incident.state = derive_state(&self.incident) as i32;
    }

    fn push(&mut self, change: Change, incident: Incident) {
        let envelope = Envelope {
            event_id: format!("{}:{}", incident.incident_id, incident.revision),
            occurred_at: Some(to_timestamp(self.now)),
            source: SOURCE.to_owned(),
            schema_version: helpgrid_proto::SCHEMA_VERSION,
        };
        self.out.push(Output {
            encoded_incident: None,
            partition: self.partition,
            key: incident.grid_id.clone(),
            event: IncidentEvent {
                envelope: Some(envelope),
                incident: Some(incident),
                cause_id: self.cause_id.to_owned(),
                change: Some(change),
            },
        });
    }
}

/// The incident of `out`'s last output encoded, for the desk to keep: the output gets a copy
/// ([`Output::encoded_incident`]), so the adapter does not encode it again.
fn encode_last(out: &mut [Output]) -> Option<Box<[u8]>> {
    let last = out.last_mut()?;
    let record = last
        .event
        .incident
        .as_ref()?
        .encode_to_vec()
        .into_boxed_slice();
    last.encoded_incident = Some(record.clone());
    Some(record)
}

fn derive_state(incident: &Incident) -> IncidentState {
    if incident.closed_at.is_some() {
        IncidentState::Closed
    } else if incident
        .assignments
        .iter()
        .any(|a| a.acknowledged_at.is_some())
    {
        IncidentState::Acknowledged
    } else if incident
        .assignments
        .iter()
        .any(|a| !a.responder_id.is_empty())
    {
        IncidentState::Assigned
    } else {
        IncidentState::Waiting
    }
}

fn is_open(incident: &Incident) -> bool {
    incident.closed_at.is_none()
}

fn ladder(track: Track) -> &'static [EscalationLevel] {
    match track {
        Track::Police => &[EscalationLevel::PatrolOfficer, EscalationLevel::PoliceDesk],
        Track::Community | Track::Unspecified => &[
            EscalationLevel::GridWorker,
            EscalationLevel::GridSupervisor,
            EscalationLevel::PatrolOfficer,
            EscalationLevel::PoliceDesk,
        ],
    }
}

fn role_for(level: EscalationLevel) -> Option<ResponderRole> {
    match level {
        EscalationLevel::GridWorker => Some(ResponderRole::GridWorker),
        EscalationLevel::GridSupervisor => Some(ResponderRole::GridSupervisor),
        EscalationLevel::PatrolOfficer => Some(ResponderRole::PatrolOfficer),
        EscalationLevel::PoliceDesk | EscalationLevel::Unspecified => None,
    }
}

fn track_of(a: &Assignment) -> Track {
    Track::try_from(a.track).unwrap_or(Track::Community)
}

fn level_of(a: &Assignment) -> EscalationLevel {
    EscalationLevel::try_from(a.level).unwrap_or(EscalationLevel::Unspecified)
}

fn priority_of(incident: &Incident) -> Priority {
    Priority::try_from(incident.priority).unwrap_or(Priority::Normal)
}

fn reject(
    partition: i32,
    key: &str,
    incident: Option<&Incident>,
    command: &ValidCommand,
    reason: RejectReason,
    message: String,
    now: Millis,
) -> Output {
    Output {
        encoded_incident: None,
        partition,
        key: key.to_owned(),
        event: IncidentEvent {
            envelope: Some(Envelope {
                event_id: format!("{}:rejected", command.command_id),
                occurred_at: Some(to_timestamp(now)),
                source: SOURCE.to_owned(),
                schema_version: helpgrid_proto::SCHEMA_VERSION,
            }),
            incident: incident.cloned(),
            cause_id: command.command_id.clone(),
            change: Some(Change::Rejected(pb::CommandRejected {
                command_id: command.command_id.clone(),
                incident_id: command.incident_id.clone(),
                actor_id: command.actor_id.clone(),
                reason: reason as i32,
                message,
            })),
        },
    }
}

/// The answer to a retry of a command that was already applied: nothing changes, and the
/// sender learns it succeeded.
fn repeated(partition: i32, incident: &Incident, command: &ValidCommand, now: Millis) -> Output {
    Output {
        encoded_incident: None,
        partition,
        key: incident.grid_id.clone(),
        event: IncidentEvent {
            envelope: Some(Envelope {
                event_id: format!("{}:repeated", command.command_id),
                occurred_at: Some(to_timestamp(now)),
                source: SOURCE.to_owned(),
                schema_version: helpgrid_proto::SCHEMA_VERSION,
            }),
            incident: Some(incident.clone()),
            cause_id: command.command_id.clone(),
            change: Some(Change::Repeated(pb::CommandRepeated {
                command_id: command.command_id.clone(),
                request_id: command.request_id.clone(),
                actor_id: command.actor_id.clone(),
            })),
        },
    }
}

/// Remembers that `incident` answered `command` without a change (the latest
/// `REPEATED_COMMAND_IDS` only), so a second copy of its record is not answered again.
fn remember_answered(incident: &mut Incident, command: &ValidCommand) {
    incident
        .repeated_command_ids
        .push(command.command_id.clone());
    if incident.repeated_command_ids.len() > REPEATED_COMMAND_IDS {
        incident.repeated_command_ids.remove(0);
    }
}

/// Whether `command`'s request id already acted on `incident`: `None` if not (or it has
/// none), `Some(Ok)` for a true retry (same action, actor and content), `Some(Err)` for a
/// request id reused for something else.
fn earlier_request(incident: &Incident, command: &ValidCommand) -> Option<Result<(), Refusal>> {
    let id = command.request_id.as_str();
    if id.is_empty() {
        return None;
    }
    let acknowledged = incident.assignments.iter().find(|a| a.ack_request_id == id);
    let closed = incident.close_request_id == id;
    let helped = incident
        .assignments
        .iter()
        .find(|a| a.help_request_id == id);
    if acknowledged.is_none() && !closed && helped.is_none() {
        return None;
    }
    let same = match &command.action {
        ValidAction::Acknowledge => {
            acknowledged.is_some_and(|a| a.acknowledged_by == command.actor_id)
        }
        ValidAction::Escalate { .. } => {
            helped.is_some_and(|a| a.help_requested_by == command.actor_id)
        }
        ValidAction::Close {
            outcome,
            resolution,
            note,
        } => {
            closed
                && incident.closed_by == command.actor_id
                && incident.outcome == *outcome as i32
                && incident.resolution == *resolution as i32
                && incident.resolution_note == *note
        }
    };
    Some(if same {
        Ok(())
    } else {
        Err((
            RejectReason::Invalid,
            format!(
                "request id {id} was already used on incident {} for a different command; \
                 a retry must repeat the same request, a new request needs a new id",
                incident.incident_id
            ),
        ))
    })
}

impl Desk {
    pub fn new(policy: Policy) -> Self {
        Self {
            policy,
            ..Self::default()
        }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The incident as it is now (decoded from its stored snapshot).
    pub fn get(&self, incident_id: &str) -> Option<Incident> {
        self.incidents.get(incident_id).map(Tracked::incident)
    }

    /// The incident's stored snapshot, encoded exactly as its incident-state record, and the
    /// partition it belongs to: the pipeline writes these bytes as they are rather than
    /// encoding the incident once more.
    pub fn snapshot(&self, incident_id: &str) -> Option<(i32, &[u8])> {
        self.incidents
            .get(incident_id)
            .map(|t| (t.partition, &*t.record))
    }

    /// Every incident in memory as (id, partition, stored snapshot): what incident-state
    /// holds for this desk's partitions, the content of a local checkpoint.
    pub fn records(&self) -> impl Iterator<Item = (&str, i32, &[u8])> {
        self.incidents
            .iter()
            .map(|(id, t)| (&**id, t.partition, &*t.record))
    }

    /// Incidents in memory (open, and closed within the retention time).
    pub fn len(&self) -> usize {
        self.incidents.len()
    }

    pub fn is_empty(&self) -> bool {
        self.incidents.is_empty()
    }

    pub fn open_count(&self) -> usize {
        self.incidents.len() - self.closed.len()
    }

    /// Open tracks assigned to a responder.
    pub fn load_of(&self, responder_id: &str) -> u32 {
        self.load.get(responder_id).copied().unwrap_or(0)
    }

    /// The earliest pending acknowledgement deadline, for the adapter's timer.
    pub fn next_deadline(&self) -> Option<Millis> {
        self.deadlines.first().map(|(at, _)| *at)
    }

    // ---- the derived indexes ------------------------------------------------------------

    fn index(&mut self, id: &Id, incident: &Incident, sign: i8) {
        let open = is_open(incident);
        for a in &incident.assignments {
            if open && !a.responder_id.is_empty() {
                if sign > 0 {
                    // Looked up before inserting: `entry` would allocate the key every time.
                    match self.load.get_mut(a.responder_id.as_str()) {
                        Some(load) => *load += 1,
                        None => {
                            self.load.insert(a.responder_id.clone(), 1);
                        }
                    }
                } else if let Some(load) = self.load.get_mut(&a.responder_id) {
                    *load = load.saturating_sub(1);
                    if *load == 0 {
                        self.load.remove(&a.responder_id);
                    }
                }
            }
            if let (true, Some(deadline)) = (open, from_timestamp(a.ack_deadline.as_ref())) {
                if sign > 0 {
                    self.deadlines.insert((deadline, Id::clone(id)));
                } else {
                    self.deadlines.remove(&(deadline, Id::clone(id)));
                }
            }
        }
        if open {
            let opened_at = from_timestamp(incident.opened_at.as_ref());
            match IncidentSource::try_from(incident.source) {
                Ok(IncidentSource::Button) => {
                    let grid = if sign > 0 {
                        Some(self.grids.number(&incident.grid_id))
                    } else {
                        self.grids.find(&incident.grid_id)
                    };
                    if let Some(grid) = grid {
                        let key = (grid, Box::from(incident.household_id.as_str()));
                        update_dedup_key(&mut self.open_by_household, key, opened_at, id, sign);
                    }
                }
                Ok(IncidentSource::Camera) => {
                    let key = (
                        Box::from(incident.camera_id.as_str()),
                        incident.camera_label,
                    );
                    update_dedup_key(&mut self.open_by_camera, key, opened_at, id, sign);
                }
                _ => {}
            }
        } else if let Some(closed_at) = from_timestamp(incident.closed_at.as_ref()) {
            if sign > 0 {
                self.closed.insert((closed_at, Id::clone(id)));
            } else {
                self.closed.remove(&(closed_at, Id::clone(id)));
            }
        }
        let opening = opening_event_id(&incident.incident_id);
        for event_id in &incident.recent_event_ids {
            if Some(event_id.as_str()) == opening {
                continue;
            }
            if sign > 0 {
                self.seen_events
                    .insert(event_id.as_str().into(), Id::clone(id));
            } else {
                self.seen_events.remove(event_id.as_str());
            }
        }
    }

    fn take(&mut self, incident_id: &str) -> Option<(Incident, i32)> {
        let (id, tracked) = self.incidents.remove_entry(incident_id)?;
        let incident = tracked.incident();
        self.index(&id, &incident, -1);
        Some((incident, tracked.partition))
    }

    fn store(&mut self, partition: i32, incident: Incident) {
        let record = incident.encode_to_vec().into_boxed_slice();
        self.store_record(partition, None, &incident, record);
    }

    /// Stores the incident as the last of `out` carries it (after [`Transition::record_last`]).
    /// The last output gets the encoded incident too ([`Output::encoded_incident`]).
    fn store_last(&mut self, partition: i32, out: &mut [Output]) {
        if let Some(record) = encode_last(out)
            && let Some(incident) = out.last().and_then(|o| o.event.incident.as_ref())
        {
            self.store_record(partition, None, incident, record);
        }
    }

    /// Stores `incident` whose encoded form is `record` (its id given when the caller already
    /// holds one, as the restore does).
    fn store_record(
        &mut self,
        partition: i32,
        id: Option<Id>,
        incident: &Incident,
        record: Box<[u8]>,
    ) {
        self.take(&incident.incident_id);
        let id: Id = id
            .filter(|id| **id == *incident.incident_id)
            .unwrap_or_else(|| incident.incident_id.as_str().into());
        self.index(&id, incident, 1);
        let tracked = Tracked {
            record,
            partition,
            source: incident.source,
            open: is_open(incident),
        };
        self.incidents.insert(id, tracked);
    }

    // ---- restore and rebalance ----------------------------------------------------------

    /// Rebuilds state from one incident event (the incident it carries).
    pub fn restore(&mut self, partition: i32, event: &IncidentEvent, now: Millis) {
        if let Some(incident) = event.incident.as_ref() {
            self.restore_incident(partition, incident, now);
        }
    }

    /// Rebuilds state from one snapshot (an incident-state record). Later revisions win, and
    /// of two with the same revision the later record (a `repeated` answer keeps the revision
    /// but adds to `repeated_command_ids`); closed incidents past the retention time are not
    /// kept.
    pub fn restore_incident(&mut self, partition: i32, incident: &Incident, now: Millis) {
        if self.keeps_restored(partition, incident, now) {
            self.store(partition, incident.clone());
        }
    }

    /// [`Self::restore_incident`] from an incident-state record as read: decoded once, and its
    /// bytes kept as they are (not encoded again), under `id`, the record's key. The restore
    /// hands over each incident's last record only, so this runs once per incident.
    pub fn restore_record(
        &mut self,
        partition: i32,
        id: Id,
        record: Box<[u8]>,
        now: Millis,
    ) -> Result<(), prost::DecodeError> {
        let incident = Incident::decode(&*record)?;
        if self.keeps_restored(partition, &incident, now) {
            self.store_record(partition, Some(id), &incident, record);
        }
        Ok(())
    }

    /// Whether a restored snapshot is kept: it is newer than what the desk holds, and not a
    /// closed incident past the retention time (that one is forgotten and tombstoned).
    fn keeps_restored(&mut self, partition: i32, incident: &Incident, now: Millis) -> bool {
        if let Some(existing) = self.get(&incident.incident_id)
            && existing.revision > incident.revision
        {
            return false;
        }
        if let Some(closed_at) = from_timestamp(incident.closed_at.as_ref())
            && closed_at + self.policy.closed_retention_ms < now
        {
            self.take(&incident.incident_id);
            // Its state record outlived the window (the router was down when it expired).
            self.forgotten
                .push((partition, incident.incident_id.clone()));
            return false;
        }
        true
    }

    /// Makes room for `additional` more incidents at once, before a restore of that many:
    /// the id map does not grow by doubling (and rehashing) through the restore.
    pub fn reserve(&mut self, additional: usize) {
        self.incidents.reserve(additional);
    }

    /// Whether closed incidents were forgotten whose tombstones are not taken yet: until they
    /// are written, the desk is not what incident-state will hold.
    pub fn has_pending_tombstones(&self) -> bool {
        !self.forgotten.is_empty()
    }

    /// Closed incidents forgotten since the last call, as (partition, incident id): the
    /// adapter writes a tombstone for each, in the same transaction as the batch.
    pub fn take_forgotten(&mut self) -> Vec<(i32, String)> {
        std::mem::take(&mut self.forgotten)
    }

    /// Forgets every incident of a partition this instance no longer owns.
    pub fn drop_partition(&mut self, partition: i32) {
        let ids: Vec<Id> = self
            .incidents
            .iter()
            .filter(|(_, t)| t.partition == partition)
            .map(|(id, _)| Id::clone(id))
            .collect();
        for id in ids {
            self.take(&id);
        }
        self.forgotten.retain(|(p, _)| *p != partition);
    }

    // ---- help events --------------------------------------------------------------------

    pub fn on_help_event(
        &mut self,
        partition: i32,
        event: &ValidHelpEvent,
        roster: &Roster,
        now: Millis,
    ) -> (HelpOutcome, Vec<Output>) {
        if self.has_seen(&event.event_id) {
            return (HelpOutcome::Duplicate, Vec::new());
        }
        match &event.body {
            ValidBody::Press { press, kind } => {
                let open = self.grids.find(&press.grid_id).and_then(|grid| {
                    let key = (grid, Box::from(press.household_id.as_str()));
                    newest_open(&self.open_by_household, &key)
                });
                if let Some(id) = open {
                    let out = self.attach(&id, event, AttachKind::RepeatPress, now);
                    return (HelpOutcome::Attached, out);
                }
                let (priority, tracks) = match kind {
                    PressKind::Urgent => (Priority::High, vec![Track::Community, Track::Police]),
                    PressKind::Medical => (Priority::High, vec![Track::Community]),
                    PressKind::Help | PressKind::Unspecified => {
                        (Priority::Normal, vec![Track::Community])
                    }
                };
                let incident = Incident {
                    source: IncidentSource::Button as i32,
                    grid_id: press.grid_id.clone(),
                    household_id: press.household_id.clone(),
                    device_id: press.device_id.clone(),
                    press_kind: *kind as i32,
                    location: press.location,
                    priority: priority as i32,
                    ..Incident::default()
                };
                (
                    HelpOutcome::Opened,
                    self.open(partition, incident, &tracks, event, roster, now),
                )
            }
            ValidBody::Maintenance {
                maintenance,
                reason,
            } => super::maintenance::on_device_maintenance(
                self,
                partition,
                event,
                maintenance,
                *reason,
                roster,
                now,
            ),
            ValidBody::Camera { alert, label } => {
                if alert.confidence < self.policy.camera_min_confidence {
                    return (HelpOutcome::BelowThreshold, Vec::new());
                }
                let key = (Box::from(alert.camera_id.as_str()), *label as i32);
                if let Some(id) = newest_open(&self.open_by_camera, &key) {
                    let last = self
                        .get(&id)
                        .and_then(|i| from_timestamp(i.last_event_at.as_ref()))
                        .unwrap_or(Millis::MIN);
                    if event.occurred_at.saturating_sub(last) <= self.policy.camera_dedup_window_ms
                    {
                        let out = self.attach(&id, event, AttachKind::RepeatDetection, now);
                        return (HelpOutcome::Attached, out);
                    }
                }
                let tracks = if policy::is_severe(*label) {
                    vec![Track::Police, Track::Community]
                } else {
                    vec![Track::Police]
                };
                let incident = Incident {
                    source: IncidentSource::Camera as i32,
                    grid_id: alert.grid_id.clone(),
                    camera_id: alert.camera_id.clone(),
                    camera_label: *label as i32,
                    camera_confidence: alert.confidence,
                    zone: alert.zone.clone(),
                    snapshot_ref: alert.snapshot_ref.clone(),
                    location: alert.location,
                    priority: policy::camera_priority(*label) as i32,
                    ..Incident::default()
                };
                (
                    HelpOutcome::Opened,
                    self.open(partition, incident, &tracks, event, roster, now),
                )
            }
        }
    }

    /// Whether the event is one an incident in memory holds: it opened one, or was attached to
    /// one among its latest [`RECENT_EVENT_IDS`].
    fn has_seen(&mut self, event_id: &str) -> bool {
        if self.seen_events.contains_key(event_id) {
            return true;
        }
        self.opening_key.clear();
        self.opening_key.push_str(INCIDENT_ID_PREFIX);
        self.opening_key.push_str(event_id);
        self.incidents.contains_key(self.opening_key.as_str())
    }

    /// The open incident of `source` that `matches`, if any (for rare inputs that need no
    /// index: only incidents of that source are decoded).
    pub(super) fn find_open(
        &self,
        source: IncidentSource,
        matches: impl Fn(&Incident) -> bool,
    ) -> Option<String> {
        self.incidents
            .values()
            .filter(|t| t.open && t.source == source as i32)
            .map(Tracked::incident)
            .find(|i| matches(i))
            .map(|i| i.incident_id)
    }

    pub(super) fn open(
        &mut self,
        partition: i32,
        mut incident: Incident,
        tracks: &[Track],
        event: &ValidHelpEvent,
        roster: &Roster,
        now: Millis,
    ) -> Vec<Output> {
        incident.incident_id = format!("{INCIDENT_ID_PREFIX}{}", event.event_id);
        incident.reported_at = Some(to_timestamp(event.occurred_at));
        incident.last_event_at = Some(to_timestamp(event.occurred_at));
        incident.opened_at = Some(to_timestamp(now));
        incident.event_count = 1;
        incident.recent_event_ids = vec![event.event_id.clone()];
        incident.assignments = tracks
            .iter()
            .map(|t| Assignment {
                track: *t as i32,
                ..Assignment::default()
            })
            .collect();
        // Usually every track gets someone at its first level: then the opening and those
        // assignments are ONE event (`IncidentOpened.assigned`), which halves what the flood
        // writes and what every reader of incident-events decodes. The assignments are
        // decided first on a copy; only if one of them had to escalate is the opening
        // replayed the long way (opened, then one event per track), so each event still
        // carries the incident exactly as that change left it.
        let fold = !self.policy.separate_assigned_events;
        // `place` changes only the assignments: they are all a replay needs put back.
        let fresh_assignments = fold.then(|| incident.assignments.clone());
        let mut tx = Transition {
            incident,
            partition,
            cause_id: &event.event_id,
            now,
            out: Vec::new(),
            collect: fold.then(|| Vec::with_capacity(tracks.len())),
        };
        if fold {
            for idx in 0..tracks.len() {
                self.place(&mut tx, idx, 0, roster, "new incident");
            }
        }
        let assigned: Option<Vec<pb::ResponderAssigned>> = tx.collect.take().and_then(|changes| {
            changes
                .into_iter()
                .map(|change| match change {
                    Change::Assigned(a) => Some(a),
                    _ => None,
                })
                .collect()
        });
        if let Some(assigned) = assigned {
            let mut out = tx.record_last(Change::Opened(pb::IncidentOpened { assigned }));
            self.store_last(partition, &mut out);
            return out;
        }
        if let Some(fresh) = fresh_assignments {
            tx.incident.assignments = fresh;
        }
        tx.record(Change::Opened(pb::IncidentOpened::default()));
        for idx in 0..tracks.len() {
            self.place(&mut tx, idx, 0, roster, "new incident");
        }
        let Transition { incident, out, .. } = tx;
        self.store(partition, incident);
        out
    }

    /// Adds a repeated press or detection to an open incident. Most of a burst's presses
    /// come here (a household pressing again), so the incident is changed where it is
    /// stored: an attachment moves only two of its index entries (the event id it adds and
    /// the one it forgets) and, when it raises the priority, its shortened deadlines. Taking
    /// the incident out of every index and putting it back (as other transitions do) was
    /// 40 % of the router's CPU in a burst of repeated presses.
    pub(super) fn attach(
        &mut self,
        incident_id: &str,
        event: &ValidHelpEvent,
        kind: AttachKind,
        now: Millis,
    ) -> Vec<Output> {
        let Some((id, tracked)) = self.incidents.get_key_value(incident_id) else {
            return Vec::new();
        };
        let id = Id::clone(id);
        let partition = tracked.partition;
        let mut tx = Transition {
            incident: tracked.incident(),
            partition,
            cause_id: &event.event_id,
            now,
            out: Vec::new(),
            collect: None,
        };
        let before = priority_of(&tx.incident);
        let after = if kind == AttachKind::RepeatPress {
            policy::raised(before)
        } else {
            before
        };
        let open = is_open(&tx.incident);
        let i = &mut tx.incident;
        i.priority = after as i32;
        i.event_count += 1;
        i.last_event_at = Some(to_timestamp(
            event
                .occurred_at
                .max(from_timestamp(i.last_event_at.as_ref()).unwrap_or(0)),
        ));
        i.recent_event_ids.push(event.event_id.clone());
        let forgotten_event =
            (i.recent_event_ids.len() > RECENT_EVENT_IDS).then(|| i.recent_event_ids.remove(0));
        if after != before {
            // Higher urgency shortens the time anyone still has to acknowledge.
            let shorter = now + self.policy.ack_deadline_ms(after);
            for a in &mut i.assignments {
                if let Some(d) = from_timestamp(a.ack_deadline.as_ref())
                    && d > shorter
                {
                    a.ack_deadline = Some(to_timestamp(shorter));
                    if open {
                        self.deadlines.remove(&(d, Id::clone(&id)));
                        self.deadlines.insert((shorter, Id::clone(&id)));
                    }
                }
            }
        }
        let mut out = tx.record_last(Change::Attached(pb::EventAttached {
            event_id: event.event_id.clone(),
            kind: kind as i32,
            priority_before: before as i32,
            priority_after: after as i32,
        }));
        // Nothing else an index holds changes: the responders, the open/closed state and the
        // dedup key (grid, household or camera, and the opening time) stay as they were.
        if let Some(forgotten) = forgotten_event {
            self.seen_events.remove(forgotten.as_str());
        }
        self.seen_events
            .insert(event.event_id.as_str().into(), Id::clone(&id));
        if let (Some(record), Some(tracked)) =
            (encode_last(&mut out), self.incidents.get_mut(incident_id))
        {
            tracked.record = record;
        }
        out
    }

    /// Finds a responder for track `idx` from ladder position `from` upwards and records
    /// the result: `Assigned` at the track's first level, `Escalated` above it (the police
    /// desk, with nobody assigned, when the roster has no one at all).
    fn place(&self, tx: &mut Transition<'_>, idx: usize, from: usize, roster: &Roster, why: &str) {
        let track = track_of(&tx.incident.assignments[idx]);
        let previous_level = level_of(&tx.incident.assignments[idx]);
        let steps = ladder(track);
        let mut skipped = Vec::new();
        let mut chosen = (EscalationLevel::PoliceDesk, None);
        for level in &steps[from.min(steps.len() - 1)..] {
            let Some(role) = role_for(*level) else { break };
            if let Some(r) = self.candidate(&tx.incident, idx, role, roster) {
                chosen = (*level, Some((r.responder_id.clone(), role)));
                break;
            }
            skipped.push(role.as_str_name());
        }
        let (level, who) = chosen;
        let deadline = tx.now + self.policy.ack_deadline_ms(priority_of(&tx.incident));
        let a = &mut tx.incident.assignments[idx];
        a.level = level as i32;
        a.attempt = 1;
        a.assigned_at = Some(to_timestamp(tx.now));
        match &who {
            Some((id, role)) => {
                a.responder_id = id.clone();
                a.responder_role = *role as i32;
                a.ack_deadline = Some(to_timestamp(deadline));
            }
            None => {
                a.responder_id.clear();
                a.responder_role = ResponderRole::Unspecified as i32;
                a.ack_deadline = None;
            }
        }
        let responder_id = a.responder_id.clone();
        let first = previous_level == EscalationLevel::Unspecified && level == steps[0];
        if first {
            tx.record(Change::Assigned(pb::ResponderAssigned {
                track: track as i32,
                responder_id,
                level: level as i32,
                ack_deadline: Some(to_timestamp(deadline)),
            }));
        } else {
            let from_level = if previous_level == EscalationLevel::Unspecified {
                steps[0]
            } else {
                previous_level
            };
            let reason = if skipped.is_empty() {
                why.to_owned()
            } else {
                format!(
                    "{why}; nobody on duty in grid {} as {}",
                    tx.incident.grid_id,
                    skipped.join(", ")
                )
            };
            tx.record(Change::Escalated(pb::Escalated {
                track: track as i32,
                from_level: from_level as i32,
                to_level: level as i32,
                responder_id,
                reason,
            }));
        }
    }

    /// The best responder with `role` for track `idx`: not someone who already let this
    /// track's deadline pass, and not someone already on another track of the incident.
    fn candidate<'r>(
        &self,
        incident: &Incident,
        idx: usize,
        role: ResponderRole,
        roster: &'r Roster,
    ) -> Option<&'r pb::Responder> {
        let mut excluded: HashSet<&str> = incident.assignments[idx]
            .timed_out_responder_ids
            .iter()
            .map(String::as_str)
            .collect();
        for (i, other) in incident.assignments.iter().enumerate() {
            if i != idx && !other.responder_id.is_empty() {
                excluded.insert(&other.responder_id);
            }
        }
        roster.best_candidate(
            role,
            &incident.grid_id,
            incident.location.as_ref(),
            &excluded,
            |id| self.load_of(id),
        )
    }

    // ---- time ---------------------------------------------------------------------------

    /// Fires every acknowledgement deadline due at `now` (reassign, or escalate), and
    /// forgets closed incidents past the retention time.
    pub fn on_tick(&mut self, roster: &Roster, now: Millis) -> Vec<Output> {
        let due: Vec<Id> = self
            .deadlines
            .iter()
            .take_while(|(at, _)| *at <= now)
            .map(|(_, id)| id.clone())
            .collect();
        let mut out = Vec::new();
        for id in due {
            let Some((incident, partition)) = self.take(&id) else {
                continue;
            };
            let mut tx = Transition {
                incident,
                partition,
                cause_id: "",
                now,
                out: Vec::new(),
                collect: None,
            };
            for idx in 0..tx.incident.assignments.len() {
                let a = &tx.incident.assignments[idx];
                if a.acknowledged_at.is_none()
                    && !a.responder_id.is_empty()
                    && from_timestamp(a.ack_deadline.as_ref()).is_some_and(|d| d <= now)
                {
                    self.expire(&mut tx, idx, roster);
                }
            }
            let Transition {
                incident,
                out: events,
                ..
            } = tx;
            self.store(partition, incident);
            out.extend(events);
        }
        self.evict_closed(now);
        out
    }

    fn expire(&self, tx: &mut Transition<'_>, idx: usize, roster: &Roster) {
        let a = &mut tx.incident.assignments[idx];
        let late = std::mem::take(&mut a.responder_id);
        a.timed_out_responder_ids.push(late.clone());
        a.ack_deadline = None;
        let level = level_of(a);
        let attempt = a.attempt;
        let track = track_of(a);
        let why = format!("{late} did not acknowledge in time");
        if attempt < self.policy.max_attempts_per_level
            && let Some(role) = role_for(level)
            && let Some(next) = self.candidate(&tx.incident, idx, role, roster)
        {
            let next = next.responder_id.clone();
            let deadline = tx.now + self.policy.ack_deadline_ms(priority_of(&tx.incident));
            let a = &mut tx.incident.assignments[idx];
            a.responder_id = next.clone();
            a.attempt = attempt + 1;
            a.assigned_at = Some(to_timestamp(tx.now));
            a.ack_deadline = Some(to_timestamp(deadline));
            tx.record(Change::Reassigned(pb::Reassigned {
                track: track as i32,
                from_responder_id: late,
                to_responder_id: next,
                ack_deadline: Some(to_timestamp(deadline)),
                reason: why,
            }));
            return;
        }
        let position = ladder(track).iter().position(|l| *l == level).unwrap_or(0);
        self.place(tx, idx, position + 1, roster, &why);
    }

    /// "I need help": the track's responder (the asker, or the one a supervisor or admin
    /// escalated) leaves the track and is not offered it again, and the track goes one step
    /// up the ladder at once, as a passed deadline would take it.
    fn escalate_by_hand(
        &self,
        tx: &mut Transition<'_>,
        idx: usize,
        actor: &str,
        note: &str,
        roster: &Roster,
    ) {
        let a = &mut tx.incident.assignments[idx];
        let responder = std::mem::take(&mut a.responder_id);
        if !responder.is_empty() {
            a.timed_out_responder_ids.push(responder.clone());
        }
        a.ack_deadline = None;
        a.acknowledged_at = None;
        a.acknowledged_by.clear();
        let (level, track) = (level_of(a), track_of(a));
        let asked = if responder == actor {
            format!("{actor} asked for help")
        } else {
            format!("{actor} escalated it")
        };
        let why = match note {
            "" => asked,
            note => format!("{asked}: {note}"),
        };
        let position = ladder(track).iter().position(|l| *l == level).unwrap_or(0);
        self.place(tx, idx, position + 1, roster, &why);
    }

    fn evict_closed(&mut self, now: Millis) {
        let retention = self.policy.closed_retention_ms;
        let expired: Vec<Id> = self
            .closed
            .iter()
            .take_while(|(at, _)| at.saturating_add(retention) < now)
            .map(|(_, id)| Id::clone(id))
            .collect();
        for id in expired {
            if let Some((_, partition)) = self.take(&id) {
                self.forgotten.push((partition, id.to_string()));
            }
        }
    }

    /// Recomputes every derived index from the incidents and compares: the check behind
    /// the randomised sequence tests and the fuzzer. `Err` names the first difference.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut fresh = Desk::new(self.policy.clone());
        // The same numbering, so the dedup keys compare equal.
        fresh.grids = self.grids.clone();
        for (id, t) in &self.incidents {
            let i = &t.incident();
            if **id != *i.incident_id {
                return Err(format!("incident {} stored under {id}", i.incident_id));
            }
            if t.open != is_open(i) || t.source != i.source {
                return Err(format!(
                    "{id}: stored open/source flags differ from the incident"
                ));
            }
            if i.state != derive_state(i) as i32 {
                return Err(format!(
                    "{id}: state {} but derived {:?}",
                    i.state,
                    derive_state(i)
                ));
            }
            let holders: Vec<&str> = i
                .assignments
                .iter()
                .map(|a| a.responder_id.as_str())
                .filter(|r| !r.is_empty())
                .collect();
            if holders.iter().collect::<HashSet<_>>().len() != holders.len() {
                return Err(format!("{id}: one responder holds two tracks: {holders:?}"));
            }
            for a in &i.assignments {
                let waiting =
                    is_open(i) && a.acknowledged_at.is_none() && !a.responder_id.is_empty();
                if waiting != a.ack_deadline.is_some() {
                    return Err(format!(
                        "{id}: deadline {:?} does not match the assignment {a:?}",
                        a.ack_deadline
                    ));
                }
            }
            fresh.index(id, i, 1);
        }
        if fresh.load != self.load {
            return Err(format!(
                "load {:?} but recomputed {:?}",
                self.load, fresh.load
            ));
        }
        if fresh.deadlines != self.deadlines {
            return Err(format!(
                "deadlines {:?} but recomputed {:?}",
                self.deadlines, fresh.deadlines
            ));
        }
        if fresh.open_by_household != self.open_by_household
            || fresh.open_by_camera != self.open_by_camera
        {
            return Err("dedup keys differ from the open incidents".into());
        }
        if fresh.seen_events != self.seen_events || fresh.closed != self.closed {
            return Err("seen events or closed set differ from the incidents".into());
        }
        Ok(())
    }

    // ---- commands -----------------------------------------------------------------------

    /// Applies an acknowledge or close command, or rejects it with a reason. Returns the
    /// reject reason (if any) for counting, and the events.
    pub fn on_command(
        &mut self,
        partition: i32,
        command: &ValidCommand,
        roster: &Roster,
        now: Millis,
    ) -> (Option<RejectReason>, Vec<Output>) {
        let Some(tracked) = self.incidents.get(command.incident_id.as_str()) else {
            if !self.not_found.insert(&command.command_id) {
                // A second copy of a record already answered NOT_FOUND (a producer retry in a
                // broker failover): its sender had its answer with the first copy.
                return (None, Vec::new());
            }
            let message = format!(
                "incident {} is not known to the router (never opened, or closed more than {} min ago)",
                command.incident_id,
                self.policy.closed_retention_ms / 60_000
            );
            let out = reject(
                partition,
                &command.grid_id,
                None,
                command,
                RejectReason::NotFound,
                message,
                now,
            );
            return (Some(RejectReason::NotFound), vec![out]);
        };
        let (incident, home) = (&tracked.incident(), tracked.partition);
        if incident.repeated_command_ids.contains(&command.command_id) {
            // A second copy of a command record this incident answered without a change (the
            // status service's producer wrote it twice): whoever waits for that command id had
            // its answer with the first copy, and a second one would repeat its event id.
            return (None, Vec::new());
        }
        match earlier_request(incident, command) {
            Some(Ok(())) => return (None, self.repeat(home, command, now)),
            Some(Err((reason, message))) => {
                return (
                    Some(reason),
                    self.reject_once(home, command, reason, message, now),
                );
            }
            None => {}
        }
        let decision = match &command.action {
            ValidAction::Acknowledge => acknowledge_decision(incident, command, roster),
            ValidAction::Close { .. } => close_decision(incident, command, roster),
            ValidAction::Escalate { .. } => escalate_decision(incident, command, roster),
        };
        let idx = match decision {
            Ok(idx) => idx,
            Err((reason, message)) => {
                return (
                    Some(reason),
                    self.reject_once(home, command, reason, message, now),
                );
            }
        };
        let Some((mut incident, home)) = self.take(&command.incident_id) else {
            return (None, Vec::new());
        };
        // Remembered in the state itself, so a retry is recognised after a restart too.
        match &command.action {
            ValidAction::Acknowledge => {
                if let Some(track) = incident.assignments.get_mut(idx) {
                    track.ack_request_id.clone_from(&command.request_id);
                }
            }
            ValidAction::Close { .. } => incident.close_request_id.clone_from(&command.request_id),
            ValidAction::Escalate { .. } => {
                if let Some(track) = incident.assignments.get_mut(idx) {
                    track.help_request_id.clone_from(&command.request_id);
                    track.help_requested_by.clone_from(&command.actor_id);
                }
            }
        }
        let mut tx = Transition {
            incident,
            partition: home,
            cause_id: &command.command_id,
            now,
            out: Vec::new(),
            collect: None,
        };
        match &command.action {
            ValidAction::Acknowledge => acknowledge(&mut tx, idx, &command.actor_id, roster),
            ValidAction::Close {
                outcome,
                resolution,
                note,
            } => close(&mut tx, *outcome, *resolution, note, &command.actor_id),
            ValidAction::Escalate { note } => {
                self.escalate_by_hand(&mut tx, idx, &command.actor_id, note, roster);
            }
        }
        let Transition { incident, out, .. } = tx;
        self.store(home, incident);
        (None, out)
    }

    /// Answers a retry of an applied command: `repeated`, once per command record. A copy of
    /// a command record already answered (the same command id: the status service's producer
    /// wrote it twice) gets nothing, so no event id is written twice; whoever waits for that
    /// command id had its answer with the first copy. The id is remembered in the incident
    /// (its snapshot is written with the answer), so a restart does not forget it.
    fn repeat(&mut self, home: i32, command: &ValidCommand, now: Millis) -> Vec<Output> {
        let Some((mut incident, home_now)) = self.take(&command.incident_id) else {
            return Vec::new();
        };
        debug_assert_eq!(home, home_now);
        remember_answered(&mut incident, command);
        let out = repeated(home_now, &incident, command, now);
        self.store(home_now, incident);
        vec![out]
    }

    /// Rejects a command on a known incident, once per command record: as with `repeat`, the
    /// command id is remembered in the incident (its snapshot is written with the rejection),
    /// so a second copy of the record gets nothing — not a second `<command_id>:rejected`,
    /// and not a later acceptance of a command its sender was told was refused.
    fn reject_once(
        &mut self,
        home: i32,
        command: &ValidCommand,
        reason: RejectReason,
        message: String,
        now: Millis,
    ) -> Vec<Output> {
        let Some((mut incident, home_now)) = self.take(&command.incident_id) else {
            return Vec::new();
        };
        debug_assert_eq!(home, home_now);
        remember_answered(&mut incident, command);
        let out = reject(
            home_now,
            &incident.grid_id,
            Some(&incident),
            command,
            reason,
            message,
            now,
        );
        self.store(home_now, incident);
        vec![out]
    }
}

/// The open incidents sharing a dedup key, oldest first (by opening time, then id). Usually
/// one; two when a camera fires again after the window while the first incident is still
/// open. New detections attach to the newest. A sorted Vec, not a BTreeSet: a one-entry
/// BTreeSet allocates a whole B-tree node (hundreds of bytes), and this map holds an entry for
/// every open incident.
type OpenByKey<K> = Map<K, Vec<(Option<Millis>, Id)>>;

/// An incident's id is its opening event's id after this prefix.
const INCIDENT_ID_PREFIX: &str = "inc-";

/// The id of the event that opened the incident `incident_id`.
fn opening_event_id(incident_id: &str) -> Option<&str> {
    incident_id.strip_prefix(INCIDENT_ID_PREFIX)
}

fn update_dedup_key<K: std::hash::Hash + Eq>(
    map: &mut OpenByKey<K>,
    key: K,
    opened_at: Option<Millis>,
    id: &Id,
    sign: i8,
) {
    let entry = (opened_at, Id::clone(id));
    if sign > 0 {
        // Room for one: nearly every key has one open incident, and a Vec's first push
        // would otherwise allocate room for four (96 bytes more per open incident).
        let open = map.entry(key).or_insert_with(|| Vec::with_capacity(1));
        if let Err(at) = open.binary_search(&entry) {
            open.insert(at, entry);
        }
    } else if let Some(open) = map.get_mut(&key) {
        if let Ok(at) = open.binary_search(&entry) {
            open.remove(at);
        }
        if open.is_empty() {
            map.remove(&key);
        }
    }
}

fn newest_open<K: std::hash::Hash + Eq>(map: &OpenByKey<K>, key: &K) -> Option<String> {
    map.get(key)
        .and_then(|set| set.last())
        .map(|(_, id)| id.to_string())
}

type Refusal = (RejectReason, String);

fn supervises(roster: &Roster, actor: &str, incident: &Incident) -> bool {
    roster.covers(actor, ResponderRole::GridSupervisor, &incident.grid_id)
}

/// A track meant for police: the police track, or any track that climbed to a patrol
/// officer or the police desk. What a dispatch identity may take.
fn is_police_bound(a: &Assignment) -> bool {
    track_of(a) == Track::Police
        || matches!(
            level_of(a),
            EscalationLevel::PatrolOfficer | EscalationLevel::PoliceDesk
        )
}

/// Refuses roles that never act on incidents (consoles read, admins keep the roster).
fn refuse_non_actors(command: &ValidCommand, verb: &str) -> Result<(), Refusal> {
    match command.actor_role {
        ActorRole::Console | ActorRole::Admin => Err((
            RejectReason::NotPermitted,
            format!(
                "{} acts as {}, which may not {verb} incidents",
                command.actor_id,
                command.actor_role.as_str_name()
            ),
        )),
        ActorRole::Unspecified
        | ActorRole::Responder
        | ActorRole::Supervisor
        | ActorRole::Dispatch => Ok(()),
    }
}

/// Which track the actor acknowledges: their own; for a supervisor of the grid, the first
/// unacknowledged one; for a patrol officer of the grid, one waiting at the police desk; for a
/// dispatch identity, the first unacknowledged police-bound one. The role the status service
/// authenticated narrows what the roster allows: a responder token gets no supervisor rights.
fn acknowledge_decision(
    incident: &Incident,
    command: &ValidCommand,
    roster: &Roster,
) -> Result<usize, Refusal> {
    let actor = command.actor_id.as_str();
    if !is_open(incident) {
        return Err((
            RejectReason::WrongState,
            format!("incident {} is already closed", incident.incident_id),
        ));
    }
    refuse_non_actors(command, "acknowledge")?;
    let tracks = &incident.assignments;
    if let Some(idx) = tracks.iter().position(|a| a.responder_id == actor) {
        if tracks[idx].acknowledged_at.is_some() {
            return Err((
                RejectReason::WrongState,
                format!(
                    "{actor} has already acknowledged incident {}",
                    incident.incident_id
                ),
            ));
        }
        return Ok(idx);
    }
    let waiting = |a: &Assignment| a.acknowledged_at.is_none();
    if command.actor_role == ActorRole::Dispatch {
        if let Some(idx) = tracks.iter().position(|a| waiting(a) && is_police_bound(a)) {
            return Ok(idx);
        }
        let (reason, why) = if tracks.iter().any(is_police_bound) {
            (RejectReason::WrongState, "is already acknowledged")
        } else {
            (RejectReason::NotPermitted, "is not meant for police")
        };
        return Err((reason, format!("incident {} {why}", incident.incident_id)));
    }
    let may_supervise = matches!(
        command.actor_role,
        ActorRole::Supervisor | ActorRole::Unspecified
    );
    if may_supervise && supervises(roster, actor, incident) {
        return tracks.iter().position(waiting).ok_or_else(|| {
            (
                RejectReason::WrongState,
                format!(
                    "every assignment of incident {} is already acknowledged",
                    incident.incident_id
                ),
            )
        });
    }
    if roster.covers(actor, ResponderRole::PatrolOfficer, &incident.grid_id)
        && let Some(idx) = tracks
            .iter()
            .position(|a| waiting(a) && level_of(a) == EscalationLevel::PoliceDesk)
    {
        return Ok(idx);
    }
    Err((
        RejectReason::NotPermitted,
        format!(
            "{actor} is not assigned to incident {} and does not supervise grid {}",
            incident.incident_id, incident.grid_id
        ),
    ))
}

fn close(
    tx: &mut Transition<'_>,
    outcome: pb::IncidentOutcome,
    resolution: pb::Resolution,
    note: &str,
    actor: &str,
) {
    let i = &mut tx.incident;
    i.closed_at = Some(to_timestamp(tx.now));
    i.outcome = outcome as i32;
    i.resolution = resolution as i32;
    i.resolution_note = note.to_owned();
    i.closed_by = actor.to_owned();
    for a in &mut i.assignments {
        a.ack_deadline = None;
    }
    tx.record(Change::Closed(pb::IncidentClosed {
        resolution: resolution as i32,
        note: note.to_owned(),
        closed_by: actor.to_owned(),
        outcome: outcome as i32,
    }));
}

fn acknowledge(tx: &mut Transition<'_>, idx: usize, actor: &str, roster: &Roster) {
    let now = tx.now;
    let a = &mut tx.incident.assignments[idx];
    if a.responder_id.is_empty() {
        // Taken from the police desk: whoever takes it becomes the responder.
        a.responder_id = actor.to_owned();
        a.responder_role = roster.get(actor).map_or(0, |r| r.role);
    }
    a.acknowledged_at = Some(to_timestamp(now));
    a.acknowledged_by = actor.to_owned();
    a.ack_deadline = None;
    let change = pb::Acknowledged {
        track: a.track,
        responder_id: a.responder_id.clone(),
        acknowledged_by: actor.to_owned(),
    };
    if tx.incident.acknowledged_at.is_none() {
        tx.incident.acknowledged_at = Some(to_timestamp(now));
    }
    tx.record(Change::Acknowledged(change));
}

/// Who may escalate by hand: the responder assigned to a track now ("I need help"); a
/// supervisor of the grid, or an admin, the first track still below the police desk. The
/// role the status service authenticated narrows what the roster allows, as for acknowledge.
fn escalate_decision(
    incident: &Incident,
    command: &ValidCommand,
    roster: &Roster,
) -> Result<usize, Refusal> {
    let actor = command.actor_id.as_str();
    if !is_open(incident) {
        return Err((
            RejectReason::WrongState,
            format!("incident {} is already closed", incident.incident_id),
        ));
    }
    // Admins keep the roster and do not acknowledge or close, but may push a stuck incident
    // up the ladder.
    let admin = command.actor_role == ActorRole::Admin;
    if !admin {
        refuse_non_actors(command, "escalate")?;
    }
    let own = incident
        .assignments
        .iter()
        .position(|a| a.responder_id == actor);
    let may_supervise = admin
        || (matches!(
            command.actor_role,
            ActorRole::Supervisor | ActorRole::Unspecified
        ) && supervises(roster, actor, incident));
    let idx = match own {
        Some(idx) => idx,
        None if may_supervise => incident
            .assignments
            .iter()
            .position(|a| level_of(a) != EscalationLevel::PoliceDesk)
            .ok_or_else(|| {
                (
                    RejectReason::WrongState,
                    format!(
                        "every track of incident {} is already at the police desk, the top of the ladder",
                        incident.incident_id
                    ),
                )
            })?,
        None => {
            return Err((
                RejectReason::NotPermitted,
                format!(
                    "{actor} is not assigned to incident {} and does not supervise grid {}; only its responder, the grid's supervisors or an admin can escalate it",
                    incident.incident_id, incident.grid_id
                ),
            ));
        }
    };
    if level_of(&incident.assignments[idx]) == EscalationLevel::PoliceDesk {
        return Err((
            RejectReason::WrongState,
            format!(
                "incident {} is already at the police desk, the top of the ladder",
                incident.incident_id
            ),
        ));
    }
    Ok(idx)
}

/// Whether the actor may close: an assigned responder, a supervisor of the grid, or a
/// dispatch identity for an incident meant for police — and only after someone acknowledged
/// (an incident nobody has seen must not vanish).
fn close_decision(
    incident: &Incident,
    command: &ValidCommand,
    roster: &Roster,
) -> Result<usize, Refusal> {
    let actor = command.actor_id.as_str();
    if !is_open(incident) {
        return Err((
            RejectReason::WrongState,
            format!("incident {} is already closed", incident.incident_id),
        ));
    }
    refuse_non_actors(command, "close")?;
    let tracks = &incident.assignments;
    let allowed = match command.actor_role {
        ActorRole::Dispatch => tracks
            .iter()
            .position(|a| a.responder_id == actor)
            .or_else(|| tracks.iter().position(is_police_bound)),
        ActorRole::Responder => tracks.iter().position(|a| a.responder_id == actor),
        ActorRole::Supervisor | ActorRole::Unspecified | ActorRole::Console | ActorRole::Admin => {
            tracks
                .iter()
                .position(|a| a.responder_id == actor)
                .or_else(|| supervises(roster, actor, incident).then_some(0))
        }
    };
    let Some(idx) = allowed else {
        let why = if command.actor_role == ActorRole::Dispatch {
            format!("incident {} is not meant for police", incident.incident_id)
        } else {
            format!(
                "{actor} is not assigned to incident {} and does not supervise grid {}",
                incident.incident_id, incident.grid_id
            )
        };
        return Err((RejectReason::NotPermitted, why));
    };
    if incident.acknowledged_at.is_none() {
        return Err((
            RejectReason::WrongState,
            format!(
                "incident {} must be acknowledged before it is closed",
                incident.incident_id
            ),
        ));
    }
    Ok(idx)
}

#[cfg(test)]
#[path = "desk_tests.rs"]
mod tests;
