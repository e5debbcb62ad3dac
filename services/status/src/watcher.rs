//! One WatchIncidents stream: replay from the read model's log after the client's cursor,
//! then forward live events — with no gap and no duplicate.
//!
//! The watcher subscribes to the live broadcast before it reads the log, so every event is in
//! the log, the broadcast, or both; it remembers per partition the last offset it passed on
//! and skips anything not after it. An "opened and assigned" record may go out as several
//! updates ([`crate::openings`]); the position then points inside the record, so a resume
//! continues with the update after the client's last one. A watcher that falls behind the
//! broadcast replays from the log again. A failed send means the client left; server shutdown
//! ends the stream with UNAVAILABLE so the client knows to resume with its last cursor.

use crate::cursor::Cursor;
use crate::errors::ApiError;
use crate::feed::SharedReadModel;
use crate::openings;
use crate::police::is_police_bound;
use crate::read_model::LoggedEvent;
use crate::telemetry;
use helpgrid_auth::TokenError;
use helpgrid_auth::revocation::RevocationWatch;
use helpgrid_proto::pb::incident_event::Change;
use helpgrid_proto::pb::{IncidentEvent, IncidentUpdate};
use std::collections::HashSet;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Status;

/// Events taken from the log per read-lock, so a long replay does not block the feed.
const REPLAY_BATCH: usize = 256;
/// Updates buffered per client before the watcher waits for it.
const STREAM_BUFFER: usize = 64;

/// Which events a watcher wants.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WatchFilter {
    /// Empty: all grids.
    pub grid_ids: HashSet<String>,
    pub include_rejections: bool,
    /// Only incidents meant for police (dispatch subscriptions).
    pub police_only: bool,
}

impl WatchFilter {
    pub fn matches(&self, event: &IncidentEvent) -> bool {
        // Answers to commands that changed nothing (refused, or a retry of one already
        // applied) only go to watchers that ask for them.
        if matches!(
            event.change,
            Some(Change::Rejected(_) | Change::Repeated(_))
        ) && !self.include_rejections
        {
            return false;
        }
        if self.police_only && !event.incident.as_ref().is_some_and(is_police_bound) {
            return false;
        }
        // A rejection of an unknown incident names no grid: only unfiltered watchers see it.
        self.grid_ids.is_empty()
            || event
                .incident
                .as_ref()
                .is_some_and(|i| self.grid_ids.contains(&i.grid_id))
    }
}

/// A validated WatchIncidents request.
#[derive(Debug, Clone, PartialEq)]
pub struct WatchRequest {
    pub filter: WatchFilter,
    /// `None`: from now on.
    pub resume_after: Option<Cursor>,
    /// "Opened and assigned" events as written (one update), instead of expanded into
    /// `opened` + one `assigned` per track (what clients written before them wait for).
    pub compact_openings: bool,
}

pub type UpdateStream = ReceiverStream<Result<IncidentUpdate, Status>>;

/// Starts a watcher task and returns the stream it feeds.
pub fn start_watch(
    read_model: SharedReadModel,
    live: &broadcast::Sender<LoggedEvent>,
    request: WatchRequest,
    shutdown: CancellationToken,
) -> UpdateStream {
    start_watch_until_revoked(read_model, live, request, shutdown, None)
}

/// [`start_watch`] for a caller whose sign-in may be revoked: the stream then ends with
/// UNAUTHENTICATED "token revoked" (a lost phone stops receiving at once, not at its next
/// reconnect).
pub fn start_watch_until_revoked(
    read_model: SharedReadModel,
    live: &broadcast::Sender<LoggedEvent>,
    request: WatchRequest,
    shutdown: CancellationToken,
    revocation: Option<RevocationWatch>,
) -> UpdateStream {
    // Subscribe first, then take the position: nothing applied in between can be missed.
    let live = live.subscribe();
    let resumed = request.resume_after.is_some();
    let sent = request
        .resume_after
        .unwrap_or_else(|| read_model.read().position());
    let (updates, stream) = mpsc::channel(STREAM_BUFFER);
    let watcher = Watcher {
        read_model,
        live,
        sent,
        filter: request.filter,
        compact_openings: request.compact_openings,
        updates,
        shutdown,
        revocation,
    };
    tokio::spawn(watcher.run(resumed));
    ReceiverStream::new(stream)
}

/// Why a stream ended.
#[derive(Debug)]
enum Ended {
    ClientLeft,
    ShuttingDown,
    FeedStopped,
    /// The events after the watcher's cursor are no longer held (it fell too far behind).
    Gap,
    /// The caller's sign-in was revoked.
    Revoked,
}

struct Watcher {
    read_model: SharedReadModel,
    live: broadcast::Receiver<LoggedEvent>,
    /// Last offset passed on (or skipped by the filter) per partition, or the last update
    /// of a record passed on in part.
    sent: Cursor,
    filter: WatchFilter,
    compact_openings: bool,
    updates: mpsc::Sender<Result<IncidentUpdate, Status>>,
    shutdown: CancellationToken,
    /// The caller's sign-in, watched for a revocation (`None`: authentication off).
    revocation: Option<RevocationWatch>,
}

/// Resolves when the watched sign-in is revoked; never without one.
async fn revoked(revocation: &mut Option<RevocationWatch>) {
    match revocation {
        Some(revocation) => revocation.revoked().await,
        None => std::future::pending().await,
    }
}

impl Watcher {
    async fn run(mut self, resumed: bool) {
        telemetry::watcher_connected();
        tracing::debug!(cursor = %self.sent, resumed, "watcher started");
        let ended = self.stream(resumed).await;
        if let Ended::ShuttingDown = ended {
            // Best effort: a client whose buffer is full just sees the stream end.
            let _ = self.updates.try_send(Err(ApiError::ShuttingDown.into()));
        }
        if let Ended::Revoked = ended {
            let _ = self.updates.try_send(Err(Status::unauthenticated(
                TokenError::Revoked.to_string(),
            )));
        }
        tracing::debug!(cursor = %self.sent, ?ended, "watcher ended");
        telemetry::watcher_disconnected();
    }

    async fn stream(&mut self, resumed: bool) -> Ended {
        if resumed {
            telemetry::watch_replay("resume");
            if let Err(ended) = self.replay().await {
                return ended;
            }
        }
        loop {
            let received = tokio::select! {
                biased;
                () = self.shutdown.cancelled() => return Ended::ShuttingDown,
                () = revoked(&mut self.revocation) => return Ended::Revoked,
                () = self.updates.closed() => return Ended::ClientLeft,
                received = self.live.recv() => received,
            };
            let delivered = match received {
                Ok(logged) => self.deliver(logged).await,
                Err(RecvError::Lagged(missed)) => {
                    tracing::info!(missed, cursor = %self.sent, "watcher fell behind; replaying from the log");
                    telemetry::watch_replay("lagged");
                    self.replay().await
                }
                Err(RecvError::Closed) => Err(Ended::FeedStopped),
            };
            if let Err(ended) = delivered {
                return ended;
            }
        }
    }

    /// Delivers everything in the log after `sent`.
    async fn replay(&mut self) -> Result<(), Ended> {
        loop {
            let replayable = self
                .read_model
                .read()
                .events_after(&self.sent, REPLAY_BATCH);
            let batch = match replayable {
                Ok(batch) => batch,
                Err(gap) => {
                    tracing::info!(%gap, "watcher cannot replay; ending its stream");
                    // Best effort: the client learns why and how to go on.
                    let _ = self.updates.try_send(Err(ApiError::ReplayGap(gap).into()));
                    return Err(Ended::Gap);
                }
            };
            let complete = batch.len() < REPLAY_BATCH;
            for logged in batch {
                self.deliver(logged).await?;
            }
            if complete {
                return Ok(());
            }
        }
    }

    async fn deliver(&mut self, logged: LoggedEvent) -> Result<(), Ended> {
        let (partition, offset) = (logged.partition, logged.offset);
        if !self.sent.is_before(partition, offset) {
            return Ok(());
        }
        if !self.filter.matches(&logged.event) {
            self.sent.advance(partition, offset);
            return Ok(());
        }
        let count = openings::update_count(&logged.event, self.compact_openings);
        // A record sent as one update and marked as delivered in part was cut short by a
        // stream that expanded it: this client now wants it compact, so it gets it whole.
        let first = if count > 1 {
            self.sent.next_update(partition, offset)
        } else {
            0
        };
        for index in first..count {
            if index + 1 == count {
                self.sent.advance(partition, offset);
            } else {
                self.sent.advance_within(partition, offset, index);
            }
            let update = IncidentUpdate {
                cursor: self.sent.encode(),
                event: Some(openings::update(
                    &logged.event,
                    self.compact_openings,
                    index,
                )),
            };
            self.send(update).await?;
        }
        Ok(())
    }

    async fn send(&mut self, update: IncidentUpdate) -> Result<(), Ended> {
        tokio::select! {
            biased;
            () = self.shutdown.cancelled() => Err(Ended::ShuttingDown),
            () = revoked(&mut self.revocation) => Err(Ended::Revoked),
            sent = self.updates.send(Ok(update)) => {
                sent.map_err(|_| Ended::ClientLeft)?;
                telemetry::watch_event_sent();
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use helpgrid_proto::pb::{Acknowledged, CommandRejected, Incident};
    use std::sync::Arc;
    use tokio_stream::StreamExt;

    fn event(grid: Option<&str>, change: Change) -> IncidentEvent {
        IncidentEvent {
            incident: grid.map(|g| Incident {
                incident_id: format!("in-{g}"),
                grid_id: g.into(),
                revision: 1,
                ..Default::default()
            }),
            change: Some(change),
            ..Default::default()
        }
    }

    #[test]
    fn rejections_are_filtered_unless_asked_for() {
        let rejection = event(Some("g1"), Change::Rejected(CommandRejected::default()));
        let unknown_incident = event(None, Change::Rejected(CommandRejected::default()));
        assert!(!WatchFilter::default().matches(&rejection));
        let audit = WatchFilter {
            include_rejections: true,
            ..Default::default()
        };
        assert!(audit.matches(&rejection));
        assert!(audit.matches(&unknown_incident));
        let audit_g1 = WatchFilter {
            grid_ids: HashSet::from(["g1".to_owned()]),
            include_rejections: true,
            ..Default::default()
        };
        assert!(audit_g1.matches(&rejection));
        assert!(!audit_g1.matches(&unknown_incident));
    }

    #[test]
    fn grid_filter_keeps_only_those_grids() {
        let filter = WatchFilter {
            grid_ids: HashSet::from(["g1".to_owned()]),
            ..Default::default()
        };
        assert!(filter.matches(&event(
            Some("g1"),
            Change::Acknowledged(Acknowledged::default())
        )));
        assert!(!filter.matches(&event(
            Some("g2"),
            Change::Acknowledged(Acknowledged::default())
        )));
    }

    fn logged(partition: i32, offset: i64, grid: &str) -> LoggedEvent {
        LoggedEvent {
            partition,
            offset,
            event: Arc::new(event(
                Some(grid),
                Change::Acknowledged(Acknowledged::default()),
            )),
        }
    }

    async fn next_offsets(stream: &mut UpdateStream, count: usize) -> Vec<String> {
        let mut cursors = Vec::new();
        for _ in 0..count {
            match tokio::time::timeout(std::time::Duration::from_secs(5), stream.next()).await {
                Ok(Some(Ok(update))) => cursors.push(update.cursor),
                other => panic!("expected an update, got {other:?}"),
            }
        }
        cursors
    }

    #[tokio::test]
    async fn replay_then_live_without_duplicates_even_when_the_broadcast_repeats_logged_events() {
        let read_model = SharedReadModel::new(2);
        let (live, _keep) = broadcast::channel(16);
        for (p, o) in [(0, 0), (1, 0), (0, 1)] {
            apply(&read_model, logged(p, o, "g"));
        }
        let mut resume = Cursor::beginning(2);
        resume.advance(0, 0);
        let request = WatchRequest {
            filter: WatchFilter::default(),
            resume_after: Some(resume),
            compact_openings: false,
        };
        let mut stream = start_watch(read_model.clone(), &live, request, CancellationToken::new());
        assert_eq!(next_offsets(&mut stream, 2).await, ["v1:1,-1", "v1:1,0"]);
        // Already replayed: a late broadcast of the same event must not be sent twice.
        let _ = live.send(logged(0, 1, "g"));
        apply(&read_model, logged(1, 3, "g"));
        let _ = live.send(logged(1, 3, "g"));
        assert_eq!(next_offsets(&mut stream, 1).await, ["v1:1,3"]);
    }

    #[tokio::test]
    async fn a_lagging_watcher_replays_from_the_log_instead_of_missing_events() {
        let read_model = SharedReadModel::new(1);
        let (live, _keep) = broadcast::channel(2);
        let request = WatchRequest {
            filter: WatchFilter::default(),
            resume_after: None,
            compact_openings: false,
        };
        let mut stream = start_watch(read_model.clone(), &live, request, CancellationToken::new());
        // More events than the broadcast holds, before the watcher reads any.
        for offset in 0..10 {
            apply(&read_model, logged(0, offset, "g"));
            let _ = live.send(logged(0, offset, "g"));
        }
        let cursors = next_offsets(&mut stream, 10).await;
        let expected: Vec<String> = (0..10).map(|o| format!("v1:{o}")).collect();
        assert_eq!(cursors, expected);
        // The broadcast still holds the last events; they must not come a second time.
        apply(&read_model, logged(0, 10, "g"));
        let _ = live.send(logged(0, 10, "g"));
        assert_eq!(next_offsets(&mut stream, 1).await, ["v1:10"]);
    }

    #[tokio::test]
    async fn an_opened_and_assigned_record_is_sent_in_parts_and_resumed_inside_it() {
        use helpgrid_proto::pb::{IncidentOpened, ResponderAssigned};
        let read_model = SharedReadModel::new(1);
        let (live, _keep) = broadcast::channel(16);
        let assigned = |track| ResponderAssigned {
            track,
            ..Default::default()
        };
        let opening = LoggedEvent {
            partition: 0,
            offset: 0,
            event: Arc::new(event(
                Some("g"),
                Change::Opened(IncidentOpened {
                    assigned: vec![assigned(1), assigned(2)],
                }),
            )),
        };
        apply(&read_model, opening);
        apply(&read_model, logged(0, 1, "g"));
        let watch_from = |cursor: &str, compact_openings| {
            let request = WatchRequest {
                filter: WatchFilter::default(),
                resume_after: Some(Cursor::decode(cursor, 1).expect("cursor")),
                compact_openings,
            };
            start_watch(read_model.clone(), &live, request, CancellationToken::new())
        };
        let mut expanded = watch_from("v1:-1", false);
        assert_eq!(
            next_offsets(&mut expanded, 4).await,
            ["v2:0.0", "v2:0.1", "v1:0", "v1:1"]
        );
        for (cursor, rest) in [
            ("v2:0.0", vec!["v2:0.1", "v1:0", "v1:1"]),
            ("v2:0.1", vec!["v1:0", "v1:1"]),
            ("v1:0", vec!["v1:1"]),
        ] {
            let mut resumed = watch_from(cursor, false);
            assert_eq!(
                next_offsets(&mut resumed, rest.len()).await,
                rest,
                "after {cursor}"
            );
        }
        let mut compact = watch_from("v1:-1", true);
        assert_eq!(next_offsets(&mut compact, 2).await, ["v1:0", "v1:1"]);
    }

    #[tokio::test]
    async fn shutdown_ends_the_stream_with_unavailable() {
        let read_model = SharedReadModel::new(1);
        let (live, _keep) = broadcast::channel(2);
        let shutdown = CancellationToken::new();
        let request = WatchRequest {
            filter: WatchFilter::default(),
            resume_after: None,
            compact_openings: false,
        };
        let mut stream = start_watch(read_model, &live, request, shutdown.clone());
        shutdown.cancel();
        let ended = tokio::time::timeout(std::time::Duration::from_secs(5), stream.next()).await;
        assert!(
            matches!(ended, Ok(Some(Err(ref status))) if status.code() == tonic::Code::Unavailable)
        );
        let closed = tokio::time::timeout(std::time::Duration::from_secs(5), stream.next()).await;
        assert!(matches!(closed, Ok(None)));
    }

    fn apply(read_model: &SharedReadModel, logged: LoggedEvent) {
        read_model
            .write()
            .apply(logged.partition, logged.offset, (*logged.event).clone());
    }
}
