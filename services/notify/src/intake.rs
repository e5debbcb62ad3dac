//! incident-events (read_committed, consumer group) → notices → endpoint lanes, and the
//! offsets committed behind them.
//!
//! The rule: a partition's offset is committed only past events whose every notification
//! is delivered or dead-lettered, and whose re-notification has fired or become moot. So
//! a crash repeats notifications (with the same idempotency key) but never loses one.

use crate::dead_letter::{self, DeadLetter, Origin};
use crate::delivery::{Delivery, Dispatcher, Finished, Transport};
use crate::domain::body::render;
use crate::domain::notice::{Notice, NoticeKind, notices_of};
use crate::domain::offsets::OffsetTracker;
use crate::domain::renotify::RenotifyPlan;
use crate::store::SubscriptionStore;
use crate::telemetry;
use helpgrid_common::time::{Millis, now_millis};
use helpgrid_proto::pb::IncidentEvent;
use prost::Message as _;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::FutureProducer;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Wall-clock milliseconds that follow tokio's clock, so tests can pause and advance it.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    wall: Millis,
    start: Instant,
}

impl Clock {
    pub fn new() -> Self {
        Self {
            wall: now_millis(),
            start: Instant::now(),
        }
    }

    pub fn now(&self) -> Millis {
        self.wall + self.start.elapsed().as_millis() as Millis
    }

    pub fn instant_at(&self, at: Millis) -> Instant {
        self.start + Duration::from_millis((at - self.wall).max(0) as u64)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// Partitions taken away by a rebalance, for the loop to forget.
#[derive(Default)]
pub struct IntakeContext {
    revoked: Mutex<Revoked>,
}

#[derive(Default)]
struct Revoked {
    partitions: Vec<i32>,
    /// Every partition: rdkafka answers a rebalance error by dropping the whole assignment.
    all: bool,
}

impl IntakeContext {
    /// Forgets in `tracker` what rebalances took away since the last call: offsets of
    /// partitions another instance may own now are not this one's to commit.
    fn forget_revoked(&self, tracker: &mut OffsetTracker) {
        let revoked = std::mem::take(
            &mut *self
                .revoked
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        if revoked.all {
            tracker.forget_all();
        }
        for partition in revoked.partitions {
            tracker.forget(partition);
        }
    }
}

impl ClientContext for IntakeContext {}

impl ConsumerContext for IntakeContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let mut revoked = self
            .revoked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match rebalance {
            Rebalance::Revoke(list) => revoked
                .partitions
                .extend(list.elements().iter().map(|e| e.partition())),
            Rebalance::Error(error) => {
                tracing::warn!(%error, "rebalance error: every partition given up");
                revoked.all = true;
            }
            Rebalance::Assign(_) => {}
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error("cannot create the Kafka consumer: {0}")]
    Client(KafkaError),
}

/// Where an event's work is counted: its (partition, offset).
type Hold = (i32, i64);

/// `helpgrid_notify_events_in_total` per change, each handle found once: a lookup with a
/// label costs a registry search per event otherwise.
#[derive(Default)]
struct EventsIn(Vec<(&'static str, metrics::Counter)>);

impl EventsIn {
    fn count(&mut self, change: &'static str) {
        if let Some((_, counter)) = self.0.iter().find(|(c, _)| *c == change) {
            counter.increment(1);
            return;
        }
        let counter = metrics::counter!(telemetry::EVENTS_IN, "change" => change);
        counter.increment(1);
        self.0.push((change, counter));
    }
}

pub struct Intake<T: Transport> {
    pub store: Arc<SubscriptionStore>,
    pub dispatcher: Dispatcher<T>,
    pub finished: mpsc::UnboundedReceiver<Finished>,
    pub dead_letter_producer: FutureProducer,
    pub dead_letter_topic: String,
    pub topic: String,
    pub commit_interval: Duration,
    pub clock: Clock,
    tracker: OffsetTracker,
    plan: RenotifyPlan<Hold>,
    events_in: EventsIn,
}

impl<T: Transport> Intake<T> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Arc<SubscriptionStore>,
        dispatcher: Dispatcher<T>,
        finished: mpsc::UnboundedReceiver<Finished>,
        dead_letter_producer: FutureProducer,
        dead_letter_topic: String,
        topic: String,
        commit_interval: Duration,
        clock: Clock,
    ) -> Self {
        Self {
            store,
            dispatcher,
            finished,
            dead_letter_producer,
            dead_letter_topic,
            topic,
            commit_interval,
            clock,
            tracker: OffsetTracker::default(),
            plan: RenotifyPlan::default(),
            events_in: EventsIn::default(),
        }
    }

    /// Consumes until `cancel` fires, then commits what is finished.
    pub async fn run(
        mut self,
        consumer: StreamConsumer<IntakeContext>,
        cancel: CancellationToken,
    ) -> Result<(), IntakeError> {
        consumer
            .subscribe(&[&self.topic])
            .map_err(IntakeError::Client)?;
        let mut commit_tick = tokio::time::interval(self.commit_interval);
        commit_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let renotify_at = self.plan.next_due().map(|at| self.clock.instant_at(at));
            tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                Some(done) = self.finished.recv() => {
                    self.tracker.finish(done.partition, done.offset);
                    while let Ok(done) = self.finished.try_recv() {
                        self.tracker.finish(done.partition, done.offset);
                    }
                }
                _ = commit_tick.tick() => self.commit(&consumer, CommitMode::Async),
                () = sleep_until_opt(renotify_at) => self.fire_renotifications(),
                received = consumer.recv() => match received {
                    Ok(message) => self.take_in(&message, &cancel),
                    Err(error) => {
                        tracing::warn!(%error, "consumer error");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        }
        while let Ok(done) = self.finished.try_recv() {
            self.tracker.finish(done.partition, done.offset);
        }
        self.commit(&consumer, CommitMode::Sync);
        tracing::info!(
            unfinished = self.tracker.pending(),
            "intake stopped; unfinished notifications will be sent again by the next instance"
        );
        Ok(())
    }

    fn commit(&mut self, consumer: &StreamConsumer<IntakeContext>, mode: CommitMode) {
        consumer.context().forget_revoked(&mut self.tracker);
        metrics::gauge!(telemetry::UNFINISHED).set(self.tracker.pending() as f64);
        metrics::gauge!(telemetry::RENOTIFY_PLANNED).set(self.plan.len() as f64);
        let ready = self.tracker.committable();
        if ready.is_empty() {
            return;
        }
        let mut list = TopicPartitionList::new();
        for (partition, next) in &ready {
            if let Err(error) =
                list.add_partition_offset(&self.topic, *partition, Offset::Offset(*next))
            {
                tracing::warn!(%error, partition, "cannot name an offset to commit");
            }
        }
        if let Err(error) = consumer.commit(&list, mode) {
            // Not fatal: a later commit covers it; a crash before then repeats notifications.
            tracing::warn!(%error, "offset commit failed");
        }
    }

    fn take_in(&mut self, message: &impl Message, cancel: &CancellationToken) {
        let (partition, offset) = (message.partition(), message.offset());
        // The record's copy, kept with its notifications for a dead letter: made only for an
        // event that goes somewhere (most events notify nobody).
        let origin_of = || {
            Arc::new(Origin {
                topic: message.topic().to_owned(),
                partition,
                offset,
                key: message.key().map(<[u8]>::to_vec),
                payload: message.payload().map(Arc::from),
            })
        };
        let event = match IncidentEvent::decode(message.payload().unwrap_or_default()) {
            Ok(event) => event,
            Err(error) => {
                let origin = origin_of();
                self.events_in.count("undecodable");
                tracing::warn!(partition, offset, %error, "undecodable incident event dead-lettered");
                self.tracker.begin(partition, offset, 1);
                let producer = self.dead_letter_producer.clone();
                let topic = self.dead_letter_topic.clone();
                let cancel = cancel.clone();
                let finished = self.dispatcher_finished();
                tokio::spawn(async move {
                    let letter = DeadLetter {
                        origin: &origin,
                        kind: telemetry::DEAD_UNDECODABLE,
                        reason: format!("not an IncidentEvent: {error}"),
                        subscription_id: "",
                        idempotency_key: "",
                        attempts: 0,
                    };
                    if dead_letter::write(&producer, &topic, &letter, &cancel).await {
                        metrics::counter!(telemetry::DEAD_LETTERS, "subscription" => "", "kind" => telemetry::DEAD_UNDECODABLE).increment(1);
                        let _ = finished.send(Finished { partition, offset });
                    }
                });
                return;
            }
        };
        let change = event.change.as_ref().map_or("none", |c| c.name());
        self.events_in.count(change);
        // Usually one notice; an "opened and assigned" event gives one per assignment too.
        let notices = notices_of(&event);
        let now = self.clock.now();
        // The record's offset is done when every delivery and every planned
        // re-notification of every notice it gave is: count them all before any finishes.
        let mut pending = 0;
        let mut cancelled = Vec::new();
        let mut work = Vec::with_capacity(notices.len());
        for notice in notices {
            let observed = if self.store.wants(NoticeKind::Renotify) {
                self.plan.observe(&notice, (partition, offset), now)
            } else {
                crate::domain::renotify::Observed {
                    cancelled: Vec::new(),
                    unused: Some((partition, offset)),
                }
            };
            pending += usize::from(observed.unused.is_none());
            cancelled.extend(observed.cancelled);
            let subscriptions = self.store.matching(&notice);
            pending += subscriptions.len();
            work.push((notice, subscriptions));
        }
        self.tracker.begin(partition, offset, pending);
        for (p, o) in cancelled {
            self.tracker.finish(p, o);
        }
        let mut shared_origin = None;
        for (notice, subscriptions) in work {
            if !subscriptions.is_empty() {
                let origin = shared_origin.get_or_insert_with(&origin_of);
                self.dispatch(&notice, &subscriptions, origin, notice.occurred_at);
            }
        }
    }

    fn dispatcher_finished(&self) -> mpsc::UnboundedSender<Finished> {
        self.dispatcher.finished_sender()
    }

    fn dispatch(
        &mut self,
        notice: &Notice,
        subscriptions: &[Arc<crate::domain::subscription::Subscription>],
        origin: &Arc<Origin>,
        since: Millis,
    ) {
        for subscription in subscriptions {
            let body = render(subscription.template, notice, &subscription.id);
            self.dispatcher.dispatch(Delivery {
                subscription_id: Arc::clone(&subscription.id),
                url: Arc::clone(&subscription.url),
                secret: Arc::clone(&subscription.secret),
                incident_id: notice.incident.incident_id.clone(),
                kind: notice.kind.as_str(),
                idempotency_key: notice.idempotency_key.clone(),
                // The rendered Vec becomes the body without a copy.
                body: bytes::Bytes::from(body),
                since,
                origin: Arc::clone(origin),
                batch_max: subscription.batch_max as usize,
            });
        }
    }

    fn fire_renotifications(&mut self) {
        let now = self.clock.now();
        for (notice, (partition, offset)) in self.plan.take_due(now) {
            let subscriptions = self.store.matching(&notice);
            tracing::info!(incident = %notice.incident.incident_id, responder = notice.responder_id().unwrap_or(""), endpoints = subscriptions.len(), "re-notifying an assignee who has not acknowledged");
            self.tracker.add(partition, offset, subscriptions.len());
            // The original record is the origin: a dead letter names the event that assigned.
            let origin = Arc::new(Origin {
                topic: self.topic.clone(),
                partition,
                offset,
                key: Some(notice.incident.grid_id.clone().into_bytes()),
                payload: None,
            });
            self.dispatch(&notice, &subscriptions, &origin, now);
            self.tracker.finish(partition, offset);
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::ClientConfig;
    use rdkafka::error::RDKafkaErrorCode;

    /// A consumer with the intake's context that never reaches a broker (none listens on
    /// port 1), and a tracker with unfinished work on partitions 0 and 1.
    fn consumer_and_tracker() -> (BaseConsumer<IntakeContext>, OffsetTracker) {
        let consumer = ClientConfig::new()
            .set("bootstrap.servers", "127.0.0.1:1")
            .set("group.id", "intake-test")
            .create_with_context(IntakeContext::default())
            .expect("a consumer needs no broker to be created");
        let mut tracker = OffsetTracker::default();
        tracker.begin(0, 10, 1);
        tracker.begin(1, 20, 1);
        (consumer, tracker)
    }

    #[test]
    fn a_revocation_forgets_the_revoked_partitions_only() {
        let (consumer, mut tracker) = consumer_and_tracker();
        let mut list = TopicPartitionList::new();
        list.add_partition("events", 0);
        consumer
            .context()
            .pre_rebalance(&consumer, &Rebalance::Revoke(&list));
        consumer.context().forget_revoked(&mut tracker);
        assert_eq!(tracker.pending(), 1);
        // Partition 1's work, once finished, is still committed; partition 0 is not ours.
        tracker.finish(1, 20);
        tracker.finish(0, 10);
        assert_eq!(tracker.committable(), vec![(1, 21)]);
    }

    #[test]
    fn a_rebalance_error_forgets_every_partition_as_rdkafka_unassigns_them_all() {
        let (consumer, mut tracker) = consumer_and_tracker();
        let error = KafkaError::Rebalance(RDKafkaErrorCode::Fail);
        consumer
            .context()
            .pre_rebalance(&consumer, &Rebalance::Error(error));
        consumer.context().forget_revoked(&mut tracker);
        assert_eq!(tracker.pending(), 0);
        tracker.finish(0, 10);
        tracker.finish(1, 20);
        assert!(tracker.committable().is_empty());
        // Taken once: the next call forgets nothing more.
        tracker.begin(0, 30, 1);
        consumer.context().forget_revoked(&mut tracker);
        assert_eq!(tracker.pending(), 1);
    }
}
