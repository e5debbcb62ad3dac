//! Many WatchIncidents streams at once, as community consoles (a few grids each) and
//! integrations (every grid) hold them. Each measures, for the `assigned` changes it is
//! sent, the time from the press to the update reaching it.

use crate::city::City;
use crate::load::generator::SendLog;
use crate::load::observer::latency_histogram;
use crate::load::plan::Plan;
use hdrhistogram::Histogram;
use helpgrid_proto::pb::WatchIncidentsRequest;
use helpgrid_proto::pb::incident_service_client::IncidentServiceClient;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// Counters shared by every watcher, for progress lines.
#[derive(Default)]
pub struct WatchCounters {
    pub connected: AtomicU64,
    pub updates: AtomicU64,
    pub failed: AtomicU64,
}

/// What the watchers saw, merged.
pub struct WatchResult {
    pub watchers: usize,
    pub updates: u64,
    pub failed: u64,
    /// Press -> `assigned` update delivered to a watcher.
    pub to_delivered: Histogram<u64>,
}

pub struct Watchers {
    tasks: JoinSet<Histogram<u64>>,
    pub counters: Arc<WatchCounters>,
    watchers: usize,
}

impl Watchers {
    /// Opens `count` streams over `channels` (spread evenly). Every tenth watches all grids,
    /// the others one supervisor's community (`grids_per_beat` neighbouring grids).
    pub fn start(
        count: usize,
        channels: &[Channel],
        city: &City,
        grids_per_beat: usize,
        plan: Arc<Plan>,
        log: Arc<SendLog>,
        cancel: CancellationToken,
    ) -> Self {
        let counters = Arc::new(WatchCounters::default());
        let mut tasks = JoinSet::new();
        let beats: Vec<Vec<String>> = city
            .grids
            .chunks(grids_per_beat.max(1))
            .map(|b| b.iter().map(|g| g.id.clone()).collect())
            .collect();
        for i in 0..count {
            if channels.is_empty() || beats.is_empty() {
                break;
            }
            let grid_ids = if i % 10 == 0 {
                Vec::new()
            } else {
                beats[i % beats.len()].clone()
            };
            let client = IncidentServiceClient::new(channels[i % channels.len()].clone());
            tasks.spawn(watch(
                client,
                grid_ids,
                Arc::clone(&plan),
                Arc::clone(&log),
                Arc::clone(&counters),
                cancel.clone(),
            ));
        }
        Self {
            tasks,
            counters,
            watchers: count,
        }
    }

    /// Waits for every watcher to end (cancel them first) and merges their figures.
    pub async fn finish(mut self) -> WatchResult {
        let mut to_delivered = latency_histogram();
        while let Some(done) = self.tasks.join_next().await {
            if let Ok(h) = done {
                let _ = to_delivered.add(&h);
            }
        }
        WatchResult {
            watchers: self.watchers,
            updates: self.counters.updates.load(Ordering::Relaxed),
            failed: self.counters.failed.load(Ordering::Relaxed),
            to_delivered,
        }
    }
}

async fn watch(
    mut client: IncidentServiceClient<Channel>,
    grid_ids: Vec<String>,
    plan: Arc<Plan>,
    log: Arc<SendLog>,
    counters: Arc<WatchCounters>,
    cancel: CancellationToken,
) -> Histogram<u64> {
    let mut latencies = latency_histogram();
    let request = WatchIncidentsRequest {
        grid_ids,
        cursor: String::new(),
        include_rejections: false,
        // Read through `assignments()`, which takes either shape: the event as written.
        compact_openings: true,
    };
    let mut stream = match client.watch_incidents(request).await {
        Ok(response) => response.into_inner(),
        Err(status) => {
            tracing::warn!(code = ?status.code(), message = status.message(), "watch refused");
            counters.failed.fetch_add(1, Ordering::Relaxed);
            return latencies;
        }
    };
    counters.connected.fetch_add(1, Ordering::Relaxed);
    loop {
        let update = tokio::select! {
            () = cancel.cancelled() => break,
            update = stream.message() => update,
        };
        let event = match update {
            Ok(Some(update)) => update.event,
            Ok(None) => break,
            Err(status) => {
                tracing::warn!(code = ?status.code(), message = status.message(), "watch stream failed");
                counters.failed.fetch_add(1, Ordering::Relaxed);
                break;
            }
        };
        counters.updates.fetch_add(1, Ordering::Relaxed);
        let Some(event) = event else { continue };
        if event.assignments().is_empty() {
            continue;
        }
        let at = log.now_us();
        if let Some(sent) = event
            .incident
            .as_ref()
            .and_then(|i| plan.seq_of(&i.incident_id))
            .and_then(|seq| log.sent_at(seq))
        {
            latencies.saturating_record(at.saturating_sub(sent).max(1));
        }
    }
    latencies
}
