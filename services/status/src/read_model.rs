//! The incidents as the router last described them, built from incident-events. Pure: the
//! feed hands it records, the gRPC layer asks it questions; no Kafka or gRPC in here.
//!
//! It keeps three things: the latest snapshot of every incident (and the partition its
//! events live in, where its commands must go), an index by opening time for newest-first
//! listing, and a bounded tail of the event log per partition so a Watch can replay from a
//! cursor.
//!
//! At start-up the snapshots come from incident-state ([`ReadModel::restore_snapshot`]), the
//! log tail from incident-events. Cursors are always incident-events offsets: restoring from
//! incident-state changes no offset, so a cursor stays valid across restarts as long as the
//! events after it are still in the tail this model holds (see [`ReplayGap`]).

use crate::cursor::Cursor;
use crate::police::is_police_bound;
use helpgrid_common::time::{Millis, from_timestamp};
use helpgrid_proto::pb::{Incident, IncidentEvent};
use prost::Message as _;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::ops::Bound;
use std::sync::Arc;

/// One event as it sits in the incident-events log.
#[derive(Debug, Clone)]
pub struct LoggedEvent {
    pub partition: i32,
    pub offset: i64,
    pub event: Arc<IncidentEvent>,
}

/// Where an incident's events are, so its commands can be sent to the router that owns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncidentHome {
    pub partition: i32,
    pub grid_id: String,
}

/// An incident at rest: its snapshot encoded as in incident-state (≈ 250 bytes for an
/// assigned press; a decoded `Incident` with its twenty-odd heap strings costs several times
/// that), decoded only for the few a request returns. Listing filters on the fields beside it.
#[derive(Debug)]
struct StoredIncident {
    record: Box<[u8]>,
    partition: i32,
    /// Interned grid id (see [`Grids`]).
    grid: u32,
    /// `IncidentState` value.
    state: i32,
    police_bound: bool,
    revision: u64,
    /// `opened_at` as indexed in `by_opened` (absent = 0), so the index entry can be found.
    opened_at: Millis,
    /// `closed_at` as indexed in `closed`.
    closed_at: Option<Millis>,
}

impl StoredIncident {
    fn incident(&self) -> Incident {
        // Encoded by `store_snapshot` from a valid `Incident`, or the bytes of one that were
        // just decoded as part of their event, so decoding does not fail.
        Incident::decode(&*self.record).unwrap_or_default()
    }
}

/// Ids shared by the indexes: one allocation per incident however many indexes name it.
type Id = Arc<str>;

/// Grid ids, interned: ~13,000 grids repeat across every incident. Never shrinks; the set of
/// grids is fixed by the city, not by traffic.
#[derive(Debug, Default)]
struct Grids {
    numbers: HashMap<Arc<str>, u32>,
    names: Vec<Arc<str>>,
}

impl Grids {
    fn number(&mut self, grid: &str) -> u32 {
        if let Some(n) = self.numbers.get(grid) {
            return *n;
        }
        let n = u32::try_from(self.names.len()).unwrap_or(u32::MAX);
        let name: Arc<str> = grid.into();
        self.names.push(Arc::clone(&name));
        self.numbers.insert(name, n);
        n
    }

    fn name(&self, n: u32) -> &str {
        self.names.get(n as usize).map_or("", |s| s)
    }
}

#[derive(Debug)]
pub struct ReadModel {
    incidents: HashMap<Id, StoredIncident>,
    grids: Grids,
    /// (opened_at, incident_id), iterated backwards for newest-first pages.
    by_opened: BTreeSet<(Millis, Id)>,
    /// Index = partition; the newest applied events in offset order, at most `replay_limit`.
    log: Vec<VecDeque<LoggedEvent>>,
    /// Index = partition; the log holds every event at or after this offset. Below it events
    /// were trimmed, deleted by retention, or never read (start-up reads only a tail).
    floor: Vec<i64>,
    /// Most events kept per partition for replay.
    replay_limit: usize,
    /// (closed_at, incident id) of closed incidents, oldest first, to forget them after
    /// `closed_window`: the model holds open incidents plus a bounded window of closed ones.
    closed: BTreeSet<(Millis, Id)>,
    closed_window: Millis,
    /// The newest event time applied: the model's clock for the closed window (pure, so the
    /// same log gives the same model).
    clock: Millis,
    /// Last offset seen per partition, decodable or not.
    position: Cursor,
}

/// A resume cursor older than what the model can replay: the events right after it are gone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the cursor is older than this service can replay: partition {partition} resumes after      offset {cursor_offset} but the events kept start at offset {floor} (older ones were trimmed      or deleted by retention); call ListIncidents for the current state and watch from its cursor"
)]
pub struct ReplayGap {
    pub partition: i32,
    pub cursor_offset: i64,
    pub floor: i64,
}

/// A validated ListIncidents request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IncidentQuery {
    /// Empty: all grids.
    pub grid_ids: HashSet<String>,
    /// `IncidentState` values; empty: all states.
    pub states: HashSet<i32>,
    /// Exclusive bounds on `opened_at`.
    pub opened_after: Option<Millis>,
    pub opened_before: Option<Millis>,
    pub page_size: usize,
    /// Continue after this entry (from the previous page's token).
    pub page_after: Option<PageKey>,
    /// Only incidents meant for police (dispatch callers).
    pub police_only: bool,
}

#[derive(Debug)]
pub struct IncidentPage {
    pub incidents: Vec<Incident>,
    /// Present when more incidents match.
    pub next_page: Option<PageKey>,
    /// The read model's position when the page was taken.
    pub position: Cursor,
}

/// The last entry of a page: listing resumes strictly after (older than) it, so incidents
/// opened meanwhile neither shift nor repeat later pages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageKey {
    opened_at: Millis,
    incident_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "page_token is not one this service issued; pass next_page_token back unchanged, or leave it empty for the first page"
)]
pub struct PageTokenError;

const PAGE_TOKEN_PREFIX: &str = "p1:";

impl PageKey {
    pub fn encode(&self) -> String {
        format!("{PAGE_TOKEN_PREFIX}{}:{}", self.opened_at, self.incident_id)
    }

    pub fn decode(token: &str) -> Result<Self, PageTokenError> {
        let body = token
            .strip_prefix(PAGE_TOKEN_PREFIX)
            .ok_or(PageTokenError)?;
        let (opened_at, incident_id) = body.split_once(':').ok_or(PageTokenError)?;
        let opened_at = opened_at.parse::<Millis>().map_err(|_| PageTokenError)?;
        if incident_id.is_empty() {
            return Err(PageTokenError);
        }
        Ok(Self {
            opened_at,
            incident_id: incident_id.to_owned(),
        })
    }
}

impl ReadModel {
    /// A model that reads every partition from offset 0 and keeps all events for replay.
    pub fn new(partitions: usize) -> Self {
        Self::starting_at(&vec![0; partitions], usize::MAX)
    }

    /// Forget closed incidents once the log's clock is `window` past their closing.
    pub fn with_closed_window(mut self, window: Millis) -> Self {
        self.closed_window = window.max(0);
        self
    }

    /// A model whose log of partition p starts at `starts[p]` (the offsets its feed reads
    /// from) and keeps at most `replay_limit` events per partition.
    pub fn starting_at(starts: &[i64], replay_limit: usize) -> Self {
        let mut position = Cursor::beginning(starts.len());
        for (partition, start) in starts.iter().enumerate() {
            if let Ok(partition) = i32::try_from(partition) {
                position.advance(partition, start - 1);
            }
        }
        Self {
            incidents: HashMap::new(),
            grids: Grids::default(),
            by_opened: BTreeSet::new(),
            log: vec![VecDeque::new(); starts.len()],
            floor: starts.to_vec(),
            replay_limit: replay_limit.max(1),
            closed: BTreeSet::new(),
            closed_window: Millis::MAX,
            clock: Millis::MIN,
            position,
        }
    }

    /// Takes an incident's latest snapshot from incident-state (at start-up, before the log).
    pub fn restore_snapshot(&mut self, partition: i32, incident: &Incident) {
        self.store_snapshot(partition, incident, None);
    }

    /// [`Self::restore_snapshot`] from an incident-state record as read: decoded once, its
    /// bytes kept as they are (not encoded again).
    pub fn restore_record(
        &mut self,
        partition: i32,
        record: &[u8],
    ) -> Result<(), prost::DecodeError> {
        let incident = Incident::decode(record)?;
        self.store_snapshot(partition, &incident, Some(record));
        Ok(())
    }

    /// Makes room for `additional` more incidents at once, before a restore of that many.
    pub fn reserve(&mut self, additional: usize) {
        self.incidents.reserve(additional);
    }

    /// Drops an incident whose incident-state record is a tombstone.
    pub fn forget(&mut self, incident_id: &str) {
        if let Some((id, stored)) = self.incidents.remove_entry(incident_id) {
            self.unindex(id, &stored);
        }
    }

    fn unindex(&mut self, id: Id, stored: &StoredIncident) {
        if let Some(closed_at) = stored.closed_at {
            self.closed.remove(&(closed_at, Id::clone(&id)));
        }
        self.by_opened.remove(&(stored.opened_at, id));
    }

    /// Closed incidents in memory (the rest is open).
    pub fn closed_count(&self) -> usize {
        self.closed.len()
    }

    fn forget_closed_past_window(&mut self) {
        while let Some((closed_at, id)) = self.closed.first().cloned() {
            if closed_at.saturating_add(self.closed_window) >= self.clock {
                break;
            }
            self.forget(&id);
        }
    }

    /// Applies the event read at (`partition`, `offset`). Returns it as logged, or `None` when
    /// it was not new (an offset already applied, or a partition this model was not built for).
    pub fn apply(
        &mut self,
        partition: i32,
        offset: i64,
        event: IncidentEvent,
    ) -> Option<LoggedEvent> {
        self.apply_with_record(partition, offset, event, None)
    }

    /// As [`ReadModel::apply`], with the event's incident also as the bytes it arrived in
    /// ([`helpgrid_proto::encoded_incident`] of the payload): stored as they are instead of encoding the
    /// decoded incident again, which was a third of the feed's work per event.
    pub fn apply_with_record(
        &mut self,
        partition: i32,
        offset: i64,
        event: IncidentEvent,
        record: Option<&[u8]>,
    ) -> Option<LoggedEvent> {
        let index = usize::try_from(partition).ok()?;
        let log = self.log.get_mut(index)?;
        if !self.position.is_before(partition, offset) {
            return None;
        }
        self.position.advance(partition, offset);
        let event = Arc::new(event);
        let logged = LoggedEvent {
            partition,
            offset,
            event: Arc::clone(&event),
        };
        log.push_back(logged.clone());
        while log.len() > self.replay_limit {
            if let Some(dropped) = log.pop_front() {
                self.floor[index] = dropped.offset + 1;
            }
        }
        if let Some(incident) = &event.incident {
            self.store_snapshot(partition, incident, record);
        }
        if let Some(at) = event
            .envelope
            .as_ref()
            .and_then(|e| from_timestamp(e.occurred_at.as_ref()))
            && at > self.clock
        {
            self.clock = at;
            self.forget_closed_past_window();
        }
        Some(logged)
    }

    /// Moves past a record that could not be decoded, so positions stay truthful.
    pub fn skip(&mut self, partition: i32, offset: i64) {
        self.position.advance(partition, offset);
    }

    /// Keeps the newest revision only: a snapshot older than the stored one changes nothing.
    fn store_snapshot(&mut self, partition: i32, incident: &Incident, record: Option<&[u8]>) {
        let opened_at = from_timestamp(incident.opened_at.as_ref()).unwrap_or(0);
        let closed_at = from_timestamp(incident.closed_at.as_ref());
        let fresh = |grids: &mut Grids| StoredIncident {
            record: record.map_or_else(|| incident.encode_to_vec().into_boxed_slice(), Box::from),
            partition,
            grid: grids.number(&incident.grid_id),
            state: incident.state,
            police_bound: is_police_bound(incident),
            revision: incident.revision,
            opened_at,
            closed_at,
        };
        if let Some(stored) = self.incidents.get_mut(incident.incident_id.as_str()) {
            if stored.revision >= incident.revision {
                return;
            }
            // Most events change an incident without moving it in the ordered indexes (its
            // opening time never changes; its closing time once): it is then updated where it
            // is, not taken out of both indexes and put back.
            if stored.opened_at == opened_at && stored.closed_at == closed_at {
                *stored = fresh(&mut self.grids);
                return;
            }
        }
        if let Some((id, stored)) = self.incidents.remove_entry(incident.incident_id.as_str()) {
            self.unindex(id, &stored);
        }
        let id: Id = incident.incident_id.as_str().into();
        if let Some(closed_at) = closed_at {
            self.closed.insert((closed_at, Id::clone(&id)));
        }
        self.by_opened.insert((opened_at, Id::clone(&id)));
        let stored = fresh(&mut self.grids);
        self.incidents.insert(id, stored);
    }

    /// The incident as last described (decoded from its stored snapshot).
    pub fn incident(&self, incident_id: &str) -> Option<Incident> {
        self.incidents
            .get(incident_id)
            .map(StoredIncident::incident)
    }

    pub fn home(&self, incident_id: &str) -> Option<IncidentHome> {
        self.incidents.get(incident_id).map(|s| IncidentHome {
            partition: s.partition,
            grid_id: self.grids.name(s.grid).to_owned(),
        })
    }

    pub fn incident_count(&self) -> usize {
        self.incidents.len()
    }

    /// Everything applied so far, as a cursor: a Watch from here sees only later events.
    pub fn position(&self) -> Cursor {
        self.position.clone()
    }

    pub fn partitions(&self) -> usize {
        self.log.len()
    }

    /// Newest first by `opened_at` (then incident id, descending).
    pub fn list(&self, query: &IncidentQuery) -> IncidentPage {
        let mut upper = Bound::Unbounded;
        if let Some(before) = query.opened_before {
            // (before, "") is the smallest key opened at `before`: everything below is earlier.
            upper = Bound::Excluded((before, Id::from("")));
        }
        if let Some(key) = &query.page_after {
            let page_bound = (key.opened_at, Id::from(key.incident_id.as_str()));
            let tighter = match &upper {
                Bound::Excluded(b) => page_bound < *b,
                _ => true,
            };
            if tighter {
                upper = Bound::Excluded(page_bound);
            }
        }
        let mut matching = self
            .by_opened
            .range((Bound::Unbounded, upper))
            .rev()
            .take_while(|(opened_at, _)| query.opened_after.is_none_or(|after| *opened_at > after))
            .filter_map(|(_, id)| self.incidents.get(id).map(|s| (id, s)))
            .filter(|(_, s)| {
                query.grid_ids.is_empty() || query.grid_ids.contains(self.grids.name(s.grid))
            })
            .filter(|(_, s)| query.states.is_empty() || query.states.contains(&s.state))
            .filter(|(_, s)| !query.police_only || s.police_bound);
        let incidents: Vec<(&Id, &StoredIncident)> =
            matching.by_ref().take(query.page_size).collect();
        let next_page = match (matching.next(), incidents.last()) {
            (Some(_), Some((id, last))) => Some(PageKey {
                opened_at: last.opened_at,
                incident_id: id.to_string(),
            }),
            _ => None,
        };
        IncidentPage {
            incidents: incidents.into_iter().map(|(_, s)| s.incident()).collect(),
            next_page,
            position: self.position(),
        }
    }

    /// Whether every event after `cursor` is still here to replay.
    pub fn check_replayable(&self, cursor: &Cursor) -> Result<(), ReplayGap> {
        for (partition, floor) in self.floor.iter().enumerate() {
            let Ok(partition) = i32::try_from(partition) else {
                break;
            };
            let cursor_offset = cursor.last_delivered(partition);
            if cursor_offset < floor - 1 {
                return Err(ReplayGap {
                    partition,
                    cursor_offset,
                    floor: *floor,
                });
            }
        }
        Ok(())
    }

    /// Up to `limit` logged events after `cursor`, partition by partition, each partition in
    /// offset order; an error when some of them are no longer held.
    pub fn events_after(
        &self,
        cursor: &Cursor,
        limit: usize,
    ) -> Result<Vec<LoggedEvent>, ReplayGap> {
        self.check_replayable(cursor)?;
        let mut events = Vec::new();
        for (partition, log) in self.log.iter().enumerate() {
            let Ok(partition) = i32::try_from(partition) else {
                break;
            };
            let delivered = cursor.last_delivered(partition);
            let start = log.partition_point(|e| e.offset <= delivered);
            let room = limit.saturating_sub(events.len());
            events.extend(log.range(start..).take(room).cloned());
            if events.len() >= limit {
                break;
            }
        }
        Ok(events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use helpgrid_common::time::to_timestamp;
    use helpgrid_proto::encoded_incident;
    use helpgrid_proto::pb::{
        CommandRejected, IncidentState, RejectReason, incident_event::Change,
    };

    fn incident(
        id: &str,
        grid: &str,
        opened_at: Millis,
        revision: u64,
        state: IncidentState,
    ) -> Incident {
        Incident {
            incident_id: id.into(),
            grid_id: grid.into(),
            state: state as i32,
            opened_at: Some(to_timestamp(opened_at)),
            revision,
            ..Default::default()
        }
    }

    fn event(incident: Incident) -> IncidentEvent {
        IncidentEvent {
            incident: Some(incident),
            ..Default::default()
        }
    }

    fn query(page_size: usize) -> IncidentQuery {
        IncidentQuery {
            page_size,
            ..Default::default()
        }
    }

    fn ids(page: &IncidentPage) -> Vec<&str> {
        page.incidents
            .iter()
            .map(|i| i.incident_id.as_str())
            .collect()
    }

    #[test]
    fn latest_revision_wins_and_an_older_one_arriving_later_is_ignored() {
        let mut model = ReadModel::new(2);
        model.apply(
            1,
            0,
            event(incident("a", "g1", 100, 2, IncidentState::Acknowledged)),
        );
        model.apply(
            1,
            1,
            event(incident("a", "g1", 100, 1, IncidentState::Assigned)),
        );
        let stored = model.incident("a").map(|i| (i.revision, i.state));
        assert_eq!(stored, Some((2, IncidentState::Acknowledged as i32)));
        assert_eq!(
            model.home("a"),
            Some(IncidentHome {
                partition: 1,
                grid_id: "g1".into()
            })
        );
        assert_eq!(model.incident_count(), 1);
    }

    #[test]
    fn a_later_revision_replaces_what_listing_filters_on_and_keeps_one_entry() {
        let mut model = ReadModel::new(1);
        model.apply(
            0,
            0,
            event(incident("a", "g1", 10, 1, IncidentState::Assigned)),
        );
        // Same opening time: updated where it is stored.
        model.apply(
            0,
            1,
            event(incident("a", "g1", 10, 2, IncidentState::Acknowledged)),
        );
        let state = |s: IncidentState| IncidentQuery {
            states: HashSet::from([s as i32]),
            ..query(10)
        };
        assert_eq!(ids(&model.list(&query(10))), ["a"]);
        assert!(ids(&model.list(&state(IncidentState::Assigned))).is_empty());
        assert_eq!(ids(&model.list(&state(IncidentState::Acknowledged))), ["a"]);
        // A closing moves it into the closed index: forgotten once the window has passed.
        let mut closed = incident("a", "g1", 10, 3, IncidentState::Closed);
        closed.closed_at = Some(to_timestamp(50));
        let mut model = model.with_closed_window(100);
        model.apply(0, 2, event(closed));
        assert_eq!(model.closed_count(), 1);
        assert_eq!(ids(&model.list(&state(IncidentState::Closed))), ["a"]);
        let mut at_200 = event(incident("b", "g1", 200, 1, IncidentState::Assigned));
        at_200.envelope = Some(helpgrid_proto::pb::Envelope {
            occurred_at: Some(to_timestamp(200)),
            ..Default::default()
        });
        model.apply(0, 3, at_200);
        assert_eq!(model.closed_count(), 0);
        assert_eq!(ids(&model.list(&query(10))), ["b"]);
    }

    #[test]
    fn an_offset_applied_twice_is_not_logged_twice() {
        let mut model = ReadModel::new(1);
        assert!(
            model
                .apply(
                    0,
                    5,
                    event(incident("a", "g", 1, 1, IncidentState::Waiting))
                )
                .is_some()
        );
        assert!(
            model
                .apply(
                    0,
                    5,
                    event(incident("a", "g", 1, 1, IncidentState::Waiting))
                )
                .is_none()
        );
        assert!(
            model
                .apply(
                    3,
                    0,
                    event(incident("b", "g", 1, 1, IncidentState::Waiting))
                )
                .is_none()
        );
        assert_eq!(
            model
                .events_after(&Cursor::beginning(1), 10)
                .map(|e| e.len()),
            Ok(1)
        );
    }

    #[test]
    fn rejection_without_an_incident_is_logged_but_changes_no_incident() {
        let mut model = ReadModel::new(1);
        let rejection = IncidentEvent {
            change: Some(Change::Rejected(CommandRejected {
                reason: RejectReason::NotFound as i32,
                ..Default::default()
            })),
            ..Default::default()
        };
        assert!(model.apply(0, 0, rejection).is_some());
        assert_eq!(model.incident_count(), 0);
        assert_eq!(model.position().encode(), "v1:0");
    }

    #[test]
    fn list_is_newest_first_and_pages_without_repeats_or_gaps() {
        let mut model = ReadModel::new(1);
        for (offset, (id, opened)) in [("a", 10), ("b", 30), ("c", 20), ("d", 30), ("e", 5)]
            .into_iter()
            .enumerate()
        {
            model.apply(
                0,
                offset as i64,
                event(incident(id, "g", opened, 1, IncidentState::Assigned)),
            );
        }
        let first = model.list(&query(2));
        assert_eq!(ids(&first), ["d", "b"]);
        let second = model.list(&IncidentQuery {
            page_after: first.next_page.clone(),
            ..query(2)
        });
        assert_eq!(ids(&second), ["c", "a"]);
        let third = model.list(&IncidentQuery {
            page_after: second.next_page.clone(),
            ..query(2)
        });
        assert_eq!(ids(&third), ["e"]);
        assert_eq!(third.next_page, None);
    }

    #[test]
    fn a_full_last_page_has_no_next_page_token() {
        let mut model = ReadModel::new(1);
        model.apply(
            0,
            0,
            event(incident("a", "g", 1, 1, IncidentState::Assigned)),
        );
        model.apply(
            0,
            1,
            event(incident("b", "g", 2, 1, IncidentState::Assigned)),
        );
        assert_eq!(model.list(&query(2)).next_page, None);
    }

    #[test]
    fn list_filters_by_grid_state_and_exclusive_opening_bounds() {
        let mut model = ReadModel::new(1);
        model.apply(
            0,
            0,
            event(incident("a", "g1", 10, 1, IncidentState::Assigned)),
        );
        model.apply(
            0,
            1,
            event(incident("b", "g2", 20, 1, IncidentState::Assigned)),
        );
        model.apply(
            0,
            2,
            event(incident("c", "g1", 30, 1, IncidentState::Closed)),
        );
        model.apply(
            0,
            3,
            event(incident("d", "g1", 40, 1, IncidentState::Assigned)),
        );
        let by_grid = IncidentQuery {
            grid_ids: HashSet::from(["g1".to_owned()]),
            ..query(10)
        };
        assert_eq!(ids(&model.list(&by_grid)), ["d", "c", "a"]);
        let open_in_g1 = IncidentQuery {
            states: HashSet::from([IncidentState::Assigned as i32]),
            ..by_grid
        };
        assert_eq!(ids(&model.list(&open_in_g1)), ["d", "a"]);
        let window = IncidentQuery {
            opened_after: Some(10),
            opened_before: Some(40),
            ..query(10)
        };
        assert_eq!(ids(&model.list(&window)), ["c", "b"]);
    }

    #[test]
    fn list_reports_the_position_it_was_taken_at() {
        let mut model = ReadModel::new(2);
        model.apply(
            1,
            4,
            event(incident("a", "g", 1, 1, IncidentState::Assigned)),
        );
        model.skip(0, 2);
        assert_eq!(model.list(&query(10)).position.encode(), "v1:2,4");
    }

    #[test]
    fn replay_after_a_cursor_returns_only_later_events_in_offset_order() {
        let mut model = ReadModel::new(2);
        model.apply(
            0,
            0,
            event(incident("a", "g", 1, 1, IncidentState::Assigned)),
        );
        model.apply(
            1,
            0,
            event(incident("b", "h", 1, 1, IncidentState::Assigned)),
        );
        model.apply(
            0,
            2,
            event(incident("a", "g", 1, 2, IncidentState::Acknowledged)),
        );
        model.apply(1, 1, event(incident("b", "h", 1, 2, IncidentState::Closed)));
        let mut cursor = Cursor::beginning(2);
        cursor.advance(0, 0);
        let replay: Vec<(i32, i64)> = model
            .events_after(&cursor, 10)
            .unwrap_or_default()
            .iter()
            .map(|e| (e.partition, e.offset))
            .collect();
        assert_eq!(replay, [(0, 2), (1, 0), (1, 1)]);
        let limited: Vec<(i32, i64)> = model
            .events_after(&cursor, 2)
            .unwrap_or_default()
            .iter()
            .map(|e| (e.partition, e.offset))
            .collect();
        assert_eq!(limited, [(0, 2), (1, 0)]);
        assert!(
            model
                .events_after(&model.position(), 10)
                .is_ok_and(|e| e.is_empty())
        );
    }

    #[test]
    fn a_model_restored_from_state_replays_only_after_its_start_and_refuses_older_cursors() {
        let mut model = ReadModel::starting_at(&[40, 0], 100);
        model.restore_snapshot(0, &incident("a", "g", 1, 7, IncidentState::Assigned));
        // The snapshot from incident-state is newer than the tail event that follows.
        model.apply(
            0,
            40,
            event(incident("a", "g", 1, 6, IncidentState::Waiting)),
        );
        model.apply(
            0,
            41,
            event(incident("a", "g", 1, 8, IncidentState::Acknowledged)),
        );
        assert_eq!(model.incident("a").map(|i| i.revision), Some(8));
        assert_eq!(model.position().encode(), "v1:41,-1");
        let from_start = Cursor::decode("v1:39,-1", 2).expect("cursor");
        let offsets: Vec<i64> = model
            .events_after(&from_start, 10)
            .unwrap_or_default()
            .iter()
            .map(|e| e.offset)
            .collect();
        assert_eq!(offsets, [40, 41]);
        let too_old = Cursor::decode("v1:38,-1", 2).expect("cursor");
        assert_eq!(
            model.events_after(&too_old, 10).map(|e| e.len()),
            Err(ReplayGap {
                partition: 0,
                cursor_offset: 38,
                floor: 40
            })
        );
        model.forget("a");
        assert_eq!(model.incident_count(), 0);
        assert!(ids(&model.list(&query(10))).is_empty());
    }

    #[test]
    fn a_record_restored_as_read_is_kept_byte_for_byte_and_listed_like_a_snapshot() {
        let a = incident("a", "g", 1, 7, IncidentState::Assigned);
        let record = a.encode_to_vec().into_boxed_slice();
        let mut model = ReadModel::starting_at(&[0, 0], 100);
        model.reserve(2);
        model.restore_record(1, &record).expect("a valid record");
        assert_eq!(model.incident("a"), Some(a.clone()));
        assert_eq!(
            model.home("a").map(|h| h.partition),
            Some(1),
            "commands go to the record's partition"
        );
        assert_eq!(ids(&model.list(&query(10))), ["a"]);
        assert_eq!(
            model.incidents.get("a").map(|s| s.record.clone()),
            Some(record)
        );
        // An older revision read later changes nothing; garbage is refused.
        let older = incident("a", "g", 1, 6, IncidentState::Waiting).encode_to_vec();
        model.restore_record(1, &older).expect("a valid record");
        assert_eq!(model.incident("a").map(|i| i.revision), Some(7));
        assert!(model.restore_record(0, &[0xffu8, 0xff]).is_err());
        assert_eq!(model.incident_count(), 1);
    }

    #[test]
    fn closed_incidents_are_forgotten_once_the_log_moves_past_their_window() {
        let mut model = ReadModel::starting_at(&[0], 100).with_closed_window(1_000);
        let at = |millis: Millis, incident: Incident| IncidentEvent {
            envelope: Some(helpgrid_proto::pb::Envelope {
                occurred_at: Some(to_timestamp(millis)),
                ..Default::default()
            }),
            incident: Some(incident),
            ..Default::default()
        };
        let mut closed = incident("a", "g", 1, 2, IncidentState::Closed);
        closed.closed_at = Some(to_timestamp(5_000));
        model.apply(0, 0, at(5_000, closed));
        model.apply(
            0,
            1,
            at(5_500, incident("b", "g", 2, 1, IncidentState::Assigned)),
        );
        assert_eq!((model.incident_count(), model.closed_count()), (2, 1));
        // One second after "a" closed it is still there; past that, only the open one stays.
        model.apply(
            0,
            2,
            at(6_000, incident("b", "g", 2, 2, IncidentState::Assigned)),
        );
        assert!(model.incident("a").is_some());
        model.apply(
            0,
            3,
            at(6_001, incident("b", "g", 2, 3, IncidentState::Acknowledged)),
        );
        assert!(model.incident("a").is_none());
        assert_eq!((model.incident_count(), model.closed_count()), (1, 0));
        assert_eq!(ids(&model.list(&query(10))), ["b"]);
    }

    #[test]
    fn the_replay_log_keeps_the_newest_events_and_moves_its_floor() {
        let mut model = ReadModel::starting_at(&[0], 3);
        for offset in 0..5 {
            model.apply(
                0,
                offset,
                event(incident(
                    "a",
                    "g",
                    1,
                    offset as u64 + 1,
                    IncidentState::Assigned,
                )),
            );
        }
        let after_one = Cursor::decode("v1:1", 1).expect("cursor");
        let offsets: Vec<i64> = model
            .events_after(&after_one, 10)
            .unwrap_or_default()
            .iter()
            .map(|e| e.offset)
            .collect();
        assert_eq!(offsets, [2, 3, 4]);
        let after_zero = Cursor::decode("v1:0", 1).expect("cursor");
        assert!(model.check_replayable(&after_zero).is_err());
    }

    #[test]
    fn page_tokens_round_trip_and_garbage_is_rejected() {
        let key = PageKey {
            opened_at: -5,
            incident_id: "in:1".into(),
        };
        assert_eq!(PageKey::decode(&key.encode()), Ok(key));
        for bad in ["", "p1:", "p1:12", "p1:x:id", "p1:12:", "p2:1:a", "zzz"] {
            assert_eq!(PageKey::decode(bad), Err(PageTokenError), "{bad}");
        }
    }

    #[test]
    fn the_incident_is_stored_as_the_bytes_it_arrived_in() {
        let mut e = event(incident("inc-1", "g1", 1, 3, IncidentState::Assigned));
        e.cause_id = "press-1".into();
        let payload = e.encode_to_vec();
        let raw = encoded_incident(&payload).expect("the incident field");
        assert_eq!(raw, e.incident.as_ref().expect("incident").encode_to_vec());
        let mut model = ReadModel::new(1);
        model
            .apply_with_record(0, 0, e.clone(), Some(raw))
            .expect("new event");
        assert_eq!(model.incident("inc-1"), e.incident);
    }

    #[test]
    fn an_event_without_one_incident_field_gives_no_record() {
        let no_incident = IncidentEvent {
            cause_id: "cmd-1".into(),
            ..IncidentEvent::default()
        };
        assert_eq!(encoded_incident(&no_incident.encode_to_vec()), None);
        // Two incident fields: protobuf merges them, so neither alone is the incident.
        let one = event(incident("inc-1", "g1", 1, 3, IncidentState::Assigned)).encode_to_vec();
        let twice = [one.as_slice(), one.as_slice()].concat();
        assert_eq!(encoded_incident(&twice), None);
        // Cut short inside the incident's bytes.
        assert_eq!(encoded_incident(&one[..one.len() - 3]), None);
    }
}
