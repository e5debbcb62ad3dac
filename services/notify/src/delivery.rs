//! Getting notifications to endpoints: per endpoint (subscription) a few ordered lanes,
//! bounded queues, retries with backoff and jitter inside the retry budget, a circuit
//! breaker, and the dead-letter topic when all that fails.
//!
//! Nothing here waits on another endpoint: the intake hands a notification to its lane
//! with `try_send` and never blocks; a full lane dead-letters the notification instead.
//! Every notification ends in exactly one [`Finished`] report (delivered or dead-lettered),
//! which is what lets the intake commit the event's offset. At shutdown unfinished
//! notifications report nothing: their events are read again by the next instance.
//!
//! A subscription with `batch_max` > 1 gets what queued on a lane while its previous
//! request was in flight in ONE request (a [`Post`] of several), never waiting to fill it:
//! under a flood one request carries many notifications (a request cost notify, and the
//! receiver, more CPU than building the notification), and a quiet endpoint still gets each
//! at once. A batch is retried, delivered or dead-lettered as a whole, in lane order.

use crate::dead_letter::{self, DeadLetter, Origin};
use crate::domain::breaker::{Breaker, BreakerPolicy, Permit};
use crate::domain::lanes::lane_of;
use crate::domain::retry::{Attempt, RetryPolicy, attempt_of_status};
use crate::domain::signature;
use crate::telemetry;
use helpgrid_common::time::{Millis, now_millis};
use rdkafka::producer::FutureProducer;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// `schema` of a batched request's body.
pub const BATCH_SCHEMA: &str = "helpgrid.notify.batch.v1";

/// One notification for one endpoint.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub subscription_id: Arc<str>,
    pub url: Arc<str>,
    pub secret: Arc<[u8]>,
    pub incident_id: String,
    pub kind: &'static str,
    pub idempotency_key: String,
    /// The rendered body, shared (not copied) by the request that carries it alone.
    pub body: bytes::Bytes,
    /// When the notified thing happened (event time, or the re-notification time).
    pub since: Millis,
    pub origin: Arc<Origin>,
    /// The subscription's `batch_max` when this was queued (at least 1).
    pub batch_max: usize,
}

/// A notification is done with: its event's offset may move past it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finished {
    pub partition: i32,
    pub offset: i64,
}

/// One request: a single notification with its own body, or several (same endpoint, lane
/// order) in a batch body.
#[derive(Debug)]
pub struct Post<'a> {
    pub deliveries: &'a [Delivery],
    pub body: bytes::Bytes,
}

impl<'a> Post<'a> {
    /// `deliveries` must be non-empty and of one endpoint.
    fn of(deliveries: &'a [Delivery]) -> Self {
        let body = match deliveries {
            [one] => one.body.clone(),
            many => bytes::Bytes::from(batch_body(many)),
        };
        Self { deliveries, body }
    }

    fn first(&self) -> &Delivery {
        &self.deliveries[0]
    }
}

/// `{"schema":"helpgrid.notify.batch.v1","count":N,"notifications":[<body>,…]}`: the
/// bodies are already JSON, so they are joined, not parsed again.
fn batch_body(deliveries: &[Delivery]) -> Vec<u8> {
    let head = format!(
        "{{\"schema\":\"{BATCH_SCHEMA}\",\"count\":{},\"notifications\":[",
        deliveries.len()
    );
    let size = head.len() + deliveries.iter().map(|d| d.body.len() + 1).sum::<usize>() + 2;
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(head.as_bytes());
    for (i, d) in deliveries.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&d.body);
    }
    out.extend_from_slice(b"]}");
    out
}

/// Sends one attempt. The HTTP implementation is [`HttpTransport`]; tests put a fake here to
/// check lanes, retries and the breaker on tokio's paused clock.
pub trait Transport: Send + Sync + 'static {
    fn post(&self, post: &Post<'_>, attempt: u32) -> impl Future<Output = Attempt> + Send;
}

/// POSTs the body with its signature, idempotency key and attempt number.
#[derive(Debug, Clone)]
pub struct HttpTransport {
    client: reqwest::Client,
}

impl HttpTransport {
    pub fn new(timeout: Duration) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .user_agent(concat!("helpgrid-notify/", env!("CARGO_PKG_VERSION")))
            // A webhook that redirects is misconfigured; following it could leak the body.
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(Duration::from_secs(60))
            .build()?;
        Ok(Self { client })
    }
}

impl Transport for HttpTransport {
    async fn post(&self, post: &Post<'_>, attempt: u32) -> Attempt {
        let first = post.first();
        let timestamp = (now_millis() / 1000).to_string();
        let signature = signature::sign(&first.secret, &timestamp, &post.body);
        let mut request = self
            .client
            .post(&*first.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(signature::TIMESTAMP_HEADER, &timestamp)
            .header(signature::SIGNATURE_HEADER, signature)
            .header(signature::ATTEMPT_HEADER, attempt.to_string());
        request = if let [one] = post.deliveries {
            request
                .header(signature::IDEMPOTENCY_HEADER, &one.idempotency_key)
                .header(signature::EVENT_HEADER, one.kind)
        } else {
            // Each notification in the body carries its own idempotency_key and kind.
            request
                .header(signature::EVENT_HEADER, "batch")
                .header(signature::BATCH_HEADER, post.deliveries.len().to_string())
        };
        match request.body(post.body.clone()).send().await {
            Ok(response) => attempt_of_status(response.status().as_u16()),
            Err(error) if error.is_builder() => Attempt::Refused(format!("bad request: {error}")),
            Err(error) if error.is_timeout() => Attempt::Failed("timed out".into()),
            Err(error) => Attempt::Failed(format!("{error}")),
        }
    }
}

/// Settings shared by every endpoint.
#[derive(Debug, Clone)]
pub struct DeliverySettings {
    pub retry: RetryPolicy,
    pub breaker: BreakerPolicy,
    pub lanes: usize,
    pub lane_capacity: usize,
    pub dead_letter_topic: String,
}

struct Endpoint {
    lanes: Vec<mpsc::Sender<Delivery>>,
    metrics: Arc<EndpointMetrics>,
    /// `helpgrid_notify_notifications_total` per kind, found on first use.
    notifications: Vec<(&'static str, metrics::Counter)>,
}

impl Endpoint {
    fn count_notification(&mut self, kind: &'static str) {
        if let Some((_, counter)) = self.notifications.iter().find(|(k, _)| *k == kind) {
            counter.increment(1);
            return;
        }
        let counter = metrics::counter!(telemetry::NOTIFICATIONS, "subscription" => self.metrics.subscription.to_string(), "kind" => kind);
        counter.increment(1);
        self.notifications.push((kind, counter));
    }
}

/// One endpoint's metric handles, looked up once: a lookup with a label costs a String and
/// a registry search, several per notification otherwise.
struct EndpointMetrics {
    subscription: Arc<str>,
    queued: metrics::Gauge,
    delivered: metrics::Counter,
    attempts_delivered: metrics::Counter,
    attempts_refused: metrics::Counter,
    attempts_failed: metrics::Counter,
    breaker_open: metrics::Gauge,
    breaker_opened: metrics::Counter,
    attempt_seconds: metrics::Histogram,
    delivery_seconds: metrics::Histogram,
    request_notifications: metrics::Histogram,
}

impl EndpointMetrics {
    fn new(subscription: &Arc<str>) -> Self {
        let id = subscription.to_string();
        telemetry::zero_dead_letters(&id);
        let attempts = |result: &'static str| metrics::counter!(telemetry::ATTEMPTS, "subscription" => id.clone(), "result" => result);
        Self {
            subscription: Arc::clone(subscription),
            queued: metrics::gauge!(telemetry::QUEUED, "subscription" => id.clone()),
            delivered: metrics::counter!(telemetry::DELIVERED, "subscription" => id.clone()),
            attempts_delivered: attempts("delivered"),
            attempts_refused: attempts("refused"),
            attempts_failed: attempts("failed"),
            breaker_open: metrics::gauge!(telemetry::BREAKER_OPEN, "subscription" => id.clone()),
            breaker_opened: metrics::counter!(telemetry::BREAKER_OPENED, "subscription" => id.clone()),
            attempt_seconds: metrics::histogram!(telemetry::ATTEMPT_SECONDS),
            delivery_seconds: metrics::histogram!(telemetry::DELIVERY_SECONDS),
            request_notifications: metrics::histogram!(
                telemetry::REQUEST_NOTIFICATIONS,
                "subscription" => id
            ),
        }
    }
}

/// Everything a lane needs; cloned into each lane task.
struct LaneContext<T> {
    transport: Arc<T>,
    breaker: Arc<Mutex<Breaker>>,
    retry: RetryPolicy,
    producer: FutureProducer,
    dead_letter_topic: String,
    finished: mpsc::UnboundedSender<Finished>,
    cancel: CancellationToken,
    metrics: Arc<EndpointMetrics>,
}

impl<T> Clone for LaneContext<T> {
    fn clone(&self) -> Self {
        Self {
            transport: Arc::clone(&self.transport),
            breaker: Arc::clone(&self.breaker),
            retry: self.retry.clone(),
            producer: self.producer.clone(),
            dead_letter_topic: self.dead_letter_topic.clone(),
            finished: self.finished.clone(),
            cancel: self.cancel.clone(),
            metrics: Arc::clone(&self.metrics),
        }
    }
}

/// Hands notifications to their endpoint's lanes (created on first use).
pub struct Dispatcher<T> {
    endpoints: HashMap<Arc<str>, Endpoint>,
    settings: DeliverySettings,
    transport: Arc<T>,
    producer: FutureProducer,
    finished: mpsc::UnboundedSender<Finished>,
    cancel: CancellationToken,
}

impl<T: Transport> Dispatcher<T> {
    pub fn new(
        settings: DeliverySettings,
        transport: T,
        producer: FutureProducer,
        finished: mpsc::UnboundedSender<Finished>,
        cancel: CancellationToken,
    ) -> Self {
        Self {
            endpoints: HashMap::new(),
            settings,
            transport: Arc::new(transport),
            producer,
            finished,
            cancel,
        }
    }

    fn endpoint(&mut self, subscription_id: &Arc<str>) -> &mut Endpoint {
        self.endpoints
            .entry(Arc::clone(subscription_id))
            .or_insert_with(|| {
                let metrics = Arc::new(EndpointMetrics::new(subscription_id));
                let context = LaneContext {
                    transport: Arc::clone(&self.transport),
                    breaker: Arc::new(Mutex::new(Breaker::new(self.settings.breaker.clone()))),
                    retry: self.settings.retry.clone(),
                    producer: self.producer.clone(),
                    dead_letter_topic: self.settings.dead_letter_topic.clone(),
                    finished: self.finished.clone(),
                    cancel: self.cancel.clone(),
                    metrics: Arc::clone(&metrics),
                };
                let lanes = (0..self.settings.lanes.max(1))
                    .map(|_| {
                        let (tx, rx) = mpsc::channel(self.settings.lane_capacity.max(1));
                        tokio::spawn(run_lane(rx, context.clone()));
                        tx
                    })
                    .collect();
                Endpoint {
                    lanes,
                    metrics,
                    notifications: Vec::new(),
                }
            })
    }

    /// Queues `delivery` on its incident's lane; a full lane gets it dead-lettered
    /// (`queue_full`) in the background. Never waits.
    pub fn dispatch(&mut self, delivery: Delivery) {
        let subscription_id = Arc::clone(&delivery.subscription_id);
        let endpoint = self.endpoint(&subscription_id);
        endpoint.count_notification(delivery.kind);
        endpoint.metrics.queued.increment(1.0);
        let metrics = Arc::clone(&endpoint.metrics);
        let lane = &endpoint.lanes[lane_of(&delivery.incident_id, endpoint.lanes.len())];
        match lane.try_send(delivery) {
            Ok(()) => {}
            Err(
                mpsc::error::TrySendError::Full(delivery)
                | mpsc::error::TrySendError::Closed(delivery),
            ) => {
                tracing::warn!(subscription = %subscription_id, incident = %delivery.incident_id, "endpoint queue full; dead-lettering the notification");
                let producer = self.producer.clone();
                let topic = self.settings.dead_letter_topic.clone();
                let finished = self.finished.clone();
                let cancel = self.cancel.clone();
                tokio::spawn(async move {
                    conclude_dead(
                        &producer,
                        &topic,
                        &finished,
                        &cancel,
                        &metrics,
                        &delivery,
                        telemetry::DEAD_QUEUE_FULL,
                        "the endpoint's queue is full (it is too slow or down)".into(),
                        0,
                    )
                    .await;
                });
            }
        }
    }
}

/// Dead-letters `delivery` and reports it finished (unless shutdown came first).
#[allow(clippy::too_many_arguments)]
async fn conclude_dead(
    producer: &FutureProducer,
    topic: &str,
    finished: &mpsc::UnboundedSender<Finished>,
    cancel: &CancellationToken,
    metrics: &EndpointMetrics,
    delivery: &Delivery,
    kind: &'static str,
    reason: String,
    attempts: u32,
) {
    let letter = DeadLetter {
        origin: &delivery.origin,
        kind,
        reason,
        subscription_id: &delivery.subscription_id,
        idempotency_key: &delivery.idempotency_key,
        attempts,
    };
    if dead_letter::write(producer, topic, &letter, cancel).await {
        tracing::warn!(subscription = %delivery.subscription_id, key = %delivery.idempotency_key, kind, reason = %letter.reason, attempts, "notification dead-lettered");
        metrics::counter!(telemetry::DEAD_LETTERS, "subscription" => delivery.subscription_id.to_string(), "kind" => kind).increment(1);
        metrics.queued.decrement(1.0);
        let _ = finished.send(Finished {
            partition: delivery.origin.partition,
            offset: delivery.origin.offset,
        });
    }
}

async fn run_lane<T: Transport>(mut queue: mpsc::Receiver<Delivery>, context: LaneContext<T>) {
    let mut batch: Vec<Delivery> = Vec::new();
    loop {
        let first = tokio::select! {
            () = context.cancel.cancelled() => return,
            next = queue.recv() => match next {
                Some(delivery) => delivery,
                None => return,
            },
        };
        // What queued while the previous request was in flight goes along (up to the
        // subscription's batch_max); nothing waits for more.
        let max = first.batch_max.max(1);
        batch.push(first);
        while batch.len() < max {
            match queue.try_recv() {
                Ok(delivery) => batch.push(delivery),
                Err(_) => break,
            }
        }
        match deliver(&batch, &context).await {
            Some(Ok(())) => {
                let now = now_millis();
                for delivery in batch.drain(..) {
                    let waited = (now - delivery.since).max(0) as f64 / 1000.0;
                    context.metrics.delivery_seconds.record(waited);
                    context.metrics.delivered.increment(1);
                    context.metrics.queued.decrement(1.0);
                    let _ = context.finished.send(Finished {
                        partition: delivery.origin.partition,
                        offset: delivery.origin.offset,
                    });
                }
            }
            Some(Err((kind, reason, attempts))) => {
                for delivery in batch.drain(..) {
                    conclude_dead(
                        &context.producer,
                        &context.dead_letter_topic,
                        &context.finished,
                        &context.cancel,
                        &context.metrics,
                        &delivery,
                        kind,
                        reason.clone(),
                        attempts,
                    )
                    .await;
                }
            }
            None => return,
        }
    }
}

type Undeliverable = (&'static str, String, u32);

/// Tries until delivered, refused or out of budget; `None` on shutdown. `batch`: one
/// endpoint's notifications in lane order, sent as one request.
async fn deliver<T: Transport>(
    batch: &[Delivery],
    context: &LaneContext<T>,
) -> Option<Result<(), Undeliverable>> {
    let metrics = &context.metrics;
    let post = Post::of(batch);
    metrics.request_notifications.record(batch.len() as f64);
    let mut attempts = 0u32;
    loop {
        loop {
            let permit = context
                .breaker
                .lock()
                .map(|mut b| b.permit(Instant::now()))
                .unwrap_or(Permit::Attempt);
            match permit {
                Permit::Attempt => break,
                Permit::WaitUntil(at) => tokio::select! {
                    () = context.cancel.cancelled() => return None,
                    () = tokio::time::sleep_until(at) => {}
                },
            }
        }
        attempts += 1;
        let started = Instant::now();
        let result = tokio::select! {
            () = context.cancel.cancelled() => return None,
            result = context.transport.post(&post, attempts) => result,
        };
        metrics
            .attempt_seconds
            .record(started.elapsed().as_secs_f64());
        // The guard must not live across an await (it is not Send): update and let go.
        let opened = {
            let mut breaker = context
                .breaker
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match &result {
                Attempt::Delivered | Attempt::Refused(_) => {
                    breaker.on_success();
                    false
                }
                Attempt::Failed(_) => breaker.on_failure(Instant::now()),
            }
        };
        let subscription = &metrics.subscription;
        match result {
            Attempt::Delivered => {
                metrics.breaker_open.set(0.0);
                metrics.attempts_delivered.increment(1);
                tracing::debug!(subscription = %subscription, key = %post.first().idempotency_key, notifications = batch.len(), attempts, "delivered");
                return Some(Ok(()));
            }
            Attempt::Refused(reason) => {
                metrics.breaker_open.set(0.0);
                metrics.attempts_refused.increment(1);
                return Some(Err((
                    telemetry::DEAD_WEBHOOK_REFUSED,
                    format!("the endpoint refused the notification: {reason}"),
                    attempts,
                )));
            }
            Attempt::Failed(reason) => {
                metrics.attempts_failed.increment(1);
                if opened {
                    metrics.breaker_open.set(1.0);
                    metrics.breaker_opened.increment(1);
                    tracing::warn!(subscription = %subscription, %reason, "endpoint failing; circuit breaker open");
                }
                let Some(delay) = context.retry.delay_after(attempts, fastrand::f64()) else {
                    return Some(Err((
                        telemetry::DEAD_WEBHOOK_FAILED,
                        format!("retry budget spent after {attempts} attempts; last: {reason}"),
                        attempts,
                    )));
                };
                tracing::debug!(subscription = %subscription, key = %post.first().idempotency_key, notifications = batch.len(), attempts, %reason, ?delay, "attempt failed; retrying");
                tokio::select! {
                    () = context.cancel.cancelled() => return None,
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

impl<T> Dispatcher<T> {
    /// For work finished outside the lanes (dead letters of undecodable records).
    pub fn finished_sender(&self) -> mpsc::UnboundedSender<Finished> {
        self.finished.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// An endpoint on a script: records every attempt (key, attempt, when; a batch as its
    /// keys joined by '+') and the body of each request, and fails the first attempts of
    /// the keys it is told to, or everything until `up_at`. Each attempt takes `latency`.
    #[derive(Default)]
    struct Script {
        calls: Mutex<Vec<(String, u32, Instant)>>,
        bodies: Mutex<Vec<bytes::Bytes>>,
        failures: Mutex<HashMap<String, u32>>,
        up_at: Mutex<Option<Instant>>,
        latency: Duration,
    }

    struct Fake(Arc<Script>);

    impl Transport for Fake {
        fn post(&self, post: &Post<'_>, attempt: u32) -> impl Future<Output = Attempt> + Send {
            let script = Arc::clone(&self.0);
            let key = post
                .deliveries
                .iter()
                .map(|d| d.idempotency_key.as_str())
                .collect::<Vec<_>>()
                .join("+");
            let body = post.body.clone();
            async move {
                tokio::time::sleep(script.latency).await;
                let now = Instant::now();
                script
                    .calls
                    .lock()
                    .expect("calls")
                    .push((key.clone(), attempt, now));
                script.bodies.lock().expect("bodies").push(body);
                if script.up_at.lock().expect("up").is_some_and(|up| now < up) {
                    return Attempt::Failed("HTTP 503".into());
                }
                let mut failures = script.failures.lock().expect("failures");
                match failures.get_mut(&key) {
                    Some(left) if *left > 0 => {
                        *left -= 1;
                        Attempt::Failed("HTTP 500".into())
                    }
                    _ => Attempt::Delivered,
                }
            }
        }
    }

    fn delivery(incident: &str, key: &str, offset: i64) -> Delivery {
        Delivery {
            subscription_id: Arc::from("s"),
            url: Arc::from("http://127.0.0.1:9/"),
            secret: Arc::from(&b"0123456789abcdef"[..]),
            incident_id: incident.into(),
            kind: "assigned",
            idempotency_key: key.into(),
            body: bytes::Bytes::from_static(b"{}"),
            since: 0,
            batch_max: 1,
            origin: Arc::new(Origin {
                topic: "t".into(),
                partition: 0,
                offset,
                key: None,
                payload: None,
            }),
        }
    }

    fn dispatcher(
        script: &Arc<Script>,
        lanes: usize,
        breaker: BreakerPolicy,
    ) -> (Dispatcher<Fake>, mpsc::UnboundedReceiver<Finished>) {
        // Never contacted: dead letters are not part of these tests.
        let producer: FutureProducer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", "127.0.0.1:9")
            .create()
            .expect("producer");
        let (tx, rx) = mpsc::unbounded_channel();
        let settings = DeliverySettings {
            retry: RetryPolicy {
                initial: Duration::from_millis(100),
                max: Duration::from_secs(1),
                max_attempts: 10,
            },
            breaker,
            lanes,
            lane_capacity: 16,
            dead_letter_topic: "dl".into(),
        };
        let d = Dispatcher::new(
            settings,
            Fake(Arc::clone(script)),
            producer,
            tx,
            CancellationToken::new(),
        );
        (d, rx)
    }

    fn lenient() -> BreakerPolicy {
        BreakerPolicy {
            failures_to_open: 100,
            cooldown: Duration::from_secs(10),
        }
    }

    /// Two incident ids that take different lanes of 2.
    fn two_lanes() -> (&'static str, &'static str) {
        let ids = ["inc-a", "inc-b", "inc-c", "inc-d", "inc-e"];
        let first = ids[0];
        let other = ids
            .iter()
            .find(|id| lane_of(id, 2) != lane_of(first, 2))
            .expect("some id in the other lane");
        (first, other)
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_attempt_is_retried_with_growing_jittered_delays_and_the_same_key() {
        let script = Arc::new(Script::default());
        script.failures.lock().expect("f").insert("k1".into(), 3);
        let (mut d, mut finished) = dispatcher(&script, 1, lenient());
        let start = Instant::now();
        d.dispatch(delivery("inc-1", "k1", 7));
        let done = finished.recv().await.expect("finished");
        assert_eq!(
            done,
            Finished {
                partition: 0,
                offset: 7
            }
        );
        let calls = script.calls.lock().expect("calls").clone();
        assert_eq!(calls.iter().map(|c| c.1).collect::<Vec<_>>(), [1, 2, 3, 4]);
        assert!(calls.iter().all(|c| c.0 == "k1"));
        let gaps: Vec<Duration> = calls.windows(2).map(|w| w[1].2 - w[0].2).collect();
        // Equal jitter: delay n is in [base/2, base) with base 100 ms, 200 ms, 400 ms
        // (`retry::tests` pins those bounds). Tokio's timer ticks in whole milliseconds and a
        // sleep ends on the first tick at or after its deadline, so a delay of 99.6 ms is seen
        // as a 100 ms gap: the observed gap is in [base/2, base + 1 ms).
        let tick = Duration::from_millis(1);
        for (gap, base) in gaps.iter().zip([100u64, 200, 400]) {
            assert!(
                *gap >= Duration::from_millis(base / 2)
                    && *gap < Duration::from_millis(base) + tick,
                "gap {gap:?} for base {base} ms"
            );
        }
        assert_eq!(calls[0].2, start, "the first attempt goes out at once");
    }

    #[tokio::test(start_paused = true)]
    async fn a_later_notice_of_an_incident_waits_for_the_earlier_while_other_incidents_pass() {
        let script = Arc::new(Script::default());
        script.failures.lock().expect("f").insert("x1".into(), 2);
        let (mut d, mut finished) = dispatcher(&script, 2, lenient());
        let (x, y) = two_lanes();
        d.dispatch(delivery(x, "x1", 1));
        d.dispatch(delivery(x, "x2", 2));
        d.dispatch(delivery(y, "y1", 3));
        let mut order = Vec::new();
        for _ in 0..3 {
            order.push(finished.recv().await.expect("finished").offset);
        }
        assert_eq!(
            order,
            [3, 1, 2],
            "y passes the retried x1; x2 only after x1"
        );
        let calls = script.calls.lock().expect("calls").clone();
        let first_x2 = calls.iter().position(|c| c.0 == "x2").expect("x2 sent");
        let last_x1 = calls.iter().rposition(|c| c.0 == "x1").expect("x1 sent");
        assert!(last_x1 < first_x2, "{calls:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_breaker_holds_attempts_back_and_everything_arrives_once_the_endpoint_is_up() {
        let script = Arc::new(Script::default());
        let start = Instant::now();
        *script.up_at.lock().expect("up") = Some(start + Duration::from_secs(30));
        let (mut d, mut finished) = dispatcher(
            &script,
            2,
            BreakerPolicy {
                failures_to_open: 3,
                cooldown: Duration::from_secs(5),
            },
        );
        for i in 0..6 {
            d.dispatch(delivery(&format!("inc-{i}"), &format!("k{i}"), i));
        }
        let mut done = Vec::new();
        for _ in 0..6 {
            done.push(finished.recv().await.expect("finished").offset);
        }
        done.sort_unstable();
        assert_eq!(
            done,
            [0, 1, 2, 3, 4, 5],
            "nothing lost, nothing dead-lettered"
        );
        let calls = script.calls.lock().expect("calls").clone();
        let while_down = calls
            .iter()
            .filter(|c| c.2 < start + Duration::from_secs(30))
            .count();
        // Without the breaker the two lanes would have spent their whole budget of 10
        // attempts each in these 30 s; with it: 3 to open, then about one trial per 5 s.
        assert!(
            while_down <= 3 + 7,
            "{while_down} attempts while down: {calls:?}"
        );
        assert!(Instant::now() >= start + Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn what_queues_behind_a_request_goes_in_the_next_one_in_order_and_a_failed_batch_is_retried_whole()
     {
        let script = Arc::new(Script {
            latency: Duration::from_millis(20),
            ..Script::default()
        });
        script
            .failures
            .lock()
            .expect("f")
            .insert("k1+k2+k3".into(), 1);
        let (mut d, mut finished) = dispatcher(&script, 1, lenient());
        let start = Instant::now();
        let batched = |i: i64| Delivery {
            body: bytes::Bytes::from(format!("{{\"n\":{i}}}").into_bytes()),
            batch_max: 3,
            ..delivery("inc-1", &format!("k{i}"), i)
        };
        // The first goes alone at once (nothing to wait for); the next three queue behind it
        // and go as one batch of three (batch_max); the last alone.
        d.dispatch(batched(0));
        tokio::task::yield_now().await;
        for i in 1..5 {
            d.dispatch(batched(i));
        }
        let mut order = Vec::new();
        for _ in 0..5 {
            order.push(finished.recv().await.expect("finished").offset);
        }
        assert_eq!(order, [0, 1, 2, 3, 4], "lane order kept");
        let calls = script.calls.lock().expect("calls").clone();
        let keys: Vec<(&str, u32)> = calls.iter().map(|c| (c.0.as_str(), c.1)).collect();
        assert_eq!(
            keys,
            [("k0", 1), ("k1+k2+k3", 1), ("k1+k2+k3", 2), ("k4", 1)],
            "the failed batch is retried with the same notifications"
        );
        assert_eq!(
            calls[0].2,
            start + Duration::from_millis(20),
            "no wait to fill a batch"
        );
        let bodies = script.bodies.lock().expect("bodies").clone();
        assert_eq!(
            &bodies[0][..],
            b"{\"n\":0}",
            "a single notification is its own body"
        );
        let batch: serde_json::Value = serde_json::from_slice(&bodies[1]).expect("batch JSON");
        assert_eq!(batch["schema"], BATCH_SCHEMA);
        assert_eq!(batch["count"], 3);
        assert_eq!(
            batch["notifications"],
            serde_json::json!([{"n": 1}, {"n": 2}, {"n": 3}])
        );
    }
}
