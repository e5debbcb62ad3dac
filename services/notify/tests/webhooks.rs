//! helpgrid-notify end to end: a press goes through the real router, the incident event
//! through the real notify binary, and the webhook to a real HTTP receiver this test runs.
//! Needs HELPGRID_TEST_KAFKA (scripts/test sets it).

mod support;

use helpgrid_common::reader::{self, Feed};
use helpgrid_notify::domain::signature::verify;
use helpgrid_proto::pb::incident_event::Change;
use helpgrid_proto::pb::{IncidentEvent, NotifyTrigger, PressKind, ResponderRole};
use helpgrid_testkit::records::{press, responder};
use helpgrid_testkit::{WAIT, of_incident};
use std::collections::HashMap;
use std::time::Duration;
use support::{
    Mode, Notify, Receiver, RunningRouter, SECRET, calm_policy, event_id, incident_of, keys_of,
    setup, subscription,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_fails_the_first_attempts_gets_the_assignment_once_in_effect_signed() {
    let mut s = setup(vec![responder(
        "w-1",
        ResponderRole::GridWorker,
        &["g1"],
        None,
    )])
    .await;
    let receiver = Receiver::start(Mode::FailNext(2)).await;
    let notify = Notify::start(&s.args, "retry", &[]).await;
    let mut sub = subscription("w1-phone", &receiver.url, &[NotifyTrigger::Assigned]);
    sub.responder_ids = vec!["w-1".into()];
    notify.subscribe(sub).await;
    let router = RunningRouter::start(&s.args, calm_policy());

    s.publisher
        .send(
            &s.topics.help_events,
            "g1",
            &press("h-1", "g1", PressKind::Help),
        )
        .await;
    let events = s
        .log
        .wait_until("the assignment", |ev| {
            ev.iter().any(|e| !e.assignments().is_empty())
        })
        .await;
    let assigned = events
        .iter()
        .find(|e| !e.assignments().is_empty())
        .expect("assigned");
    let seen = receiver
        .wait_until("an accepted notification", WAIT, |seen| {
            seen.iter().any(|r| r.accepted())
        })
        .await;
    assert_eq!(
        seen.iter()
            .map(|r| (r.status, r.attempt.as_str()))
            .collect::<Vec<_>>(),
        [(500, "1"), (500, "2"), (200, "3")]
    );
    for r in &seen {
        assert_eq!(
            r.key,
            keys_of([assigned], &["assigned"])[0],
            "the same idempotency key on every attempt"
        );
        assert!(
            verify(SECRET.as_bytes(), &r.timestamp, &r.body, &r.signature),
            "signature of attempt {}",
            r.attempt
        );
        assert!(!verify(
            b"some-other-secret-xx",
            &r.timestamp,
            &r.body,
            &r.signature
        ));
        let body = r.json();
        assert_eq!(body["kind"], "assigned");
        assert_eq!(body["idempotency_key"], r.key.as_str());
        assert_eq!(body["responder"]["responder_id"], "w-1");
        assert_eq!(
            body["incident"]["incident_id"],
            incident_of(assigned).as_str()
        );
    }
    // Nothing more arrives: once accepted, the notification is done.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(receiver.seen().len(), 3);
    assert_eq!(
        notify
            .metric(
                "helpgrid_notify_delivered_total",
                &[("subscription", "w1-phone")]
            )
            .await,
        1.0
    );
    router.stop().await;
    notify.process.terminate(WAIT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_down_for_a_while_gets_everything_after_in_order_per_incident() {
    let mut s = setup(vec![responder(
        "w-1",
        ResponderRole::GridWorker,
        &["g1"],
        None,
    )])
    .await;
    let receiver = Receiver::start(Mode::Down).await;
    // A budget that outlasts the outage: the breaker holds attempts back meanwhile.
    let notify = Notify::start(&s.args, "down", &[("HELPGRID_NOTIFY_RETRY_ATTEMPTS", "20")]).await;
    let mut sub = subscription(
        "office",
        &receiver.url,
        &[
            NotifyTrigger::Opened,
            NotifyTrigger::Assigned,
            NotifyTrigger::Attached,
        ],
    );
    sub.grid_ids = vec!["g1".into()];
    notify.subscribe(sub).await;
    let router = RunningRouter::start(&s.args, calm_policy());

    for household in ["h-1", "h-2", "h-1", "h-2", "h-1"] {
        s.publisher
            .send(
                &s.topics.help_events,
                "g1",
                &press(household, "g1", PressKind::Help),
            )
            .await;
    }
    let wanted = |e: &IncidentEvent| {
        matches!(
            e.change,
            Some(Change::Opened(_) | Change::Assigned(_) | Change::Attached(_))
        )
    };
    let events = s
        .log
        .wait_until("two incidents with their repeats", |ev| {
            ev.iter()
                .filter(|e| matches!(e.change, Some(Change::Attached(_))))
                .count()
                >= 3
                && ev
                    .iter()
                    .filter(|e| matches!(e.change, Some(Change::Opened(_))))
                    .count()
                    >= 2
        })
        .await;
    let expected: Vec<&IncidentEvent> = events.iter().filter(|e| wanted(e)).collect();
    let kinds = ["opened", "assigned", "attached"];
    let expected_keys = keys_of(expected.iter().copied(), &kinds);
    receiver
        .wait_until("attempts while down", WAIT, |seen| seen.len() >= 3)
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    receiver.set_mode(Mode::Accept);

    let seen = receiver
        .wait_until("every notification after the outage", WAIT, |seen| {
            seen.iter().filter(|r| r.accepted()).count() >= expected_keys.len()
        })
        .await;
    let accepted: Vec<_> = seen.iter().filter(|r| r.accepted()).collect();
    let mut keys: Vec<&str> = accepted.iter().map(|r| r.key.as_str()).collect();
    keys.sort_unstable();
    let mut want = expected_keys.clone();
    want.sort_unstable();
    assert_eq!(keys, want, "each notification accepted exactly once");
    // Per incident, accepted in the order of the incident's events.
    let position: HashMap<String, usize> = keys_of(&events, &kinds)
        .into_iter()
        .enumerate()
        .map(|(i, key)| (key, i))
        .collect();
    let mut incidents: Vec<String> = expected.iter().map(|e| incident_of(e)).collect();
    incidents.dedup();
    for incident in incidents {
        let order: Vec<usize> = accepted
            .iter()
            .filter(|r| r.json()["incident"]["incident_id"] == incident.as_str())
            .map(|r| position[&r.key])
            .collect();
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(order, sorted, "incident {incident} delivered out of order");
        assert_eq!(
            order.len(),
            keys_of(of_incident(&events, &incident), &kinds).len()
        );
    }
    assert!(
        notify
            .metric(
                "helpgrid_notify_breaker_opened_total",
                &[("subscription", "office")]
            )
            .await
            >= 1.0,
        "the outage opened the breaker"
    );
    router.stop().await;
    notify.process.terminate(WAIT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_behind_a_slow_endpoint_arrives_batched_signed_once_each_and_in_order() {
    let mut s = setup(vec![responder(
        "w-1",
        ResponderRole::GridWorker,
        &["g1"],
        None,
    )])
    .await;
    // Down first, so the notifications queue behind the first request; one lane, so they
    // all queue behind it.
    let receiver = Receiver::start(Mode::Down).await;
    let notify = Notify::start(
        &s.args,
        "batch",
        &[
            ("HELPGRID_NOTIFY_RETRY_ATTEMPTS", "20"),
            ("HELPGRID_NOTIFY_LANES", "1"),
        ],
    )
    .await;
    let mut sub = subscription(
        "sms-gateway",
        &receiver.url,
        &[NotifyTrigger::Opened, NotifyTrigger::Assigned],
    );
    sub.batch_max = 4;
    notify.subscribe(sub).await;
    let router = RunningRouter::start(&s.args, calm_policy());

    let households: Vec<String> = (1..=5).map(|i| format!("h-{i}")).collect();
    for household in &households {
        s.publisher
            .send(
                &s.topics.help_events,
                "g1",
                &press(household, "g1", PressKind::Help),
            )
            .await;
    }
    let wanted =
        |e: &IncidentEvent| matches!(e.change, Some(Change::Opened(_) | Change::Assigned(_)));
    let events = s
        .log
        .wait_until("five incidents opened and assigned", |ev| {
            keys_of(ev, &["opened", "assigned"]).len() >= 10
        })
        .await;
    let kinds = ["opened", "assigned"];
    let expected = keys_of(events.iter().filter(|e| wanted(e)), &kinds);
    receiver
        .wait_until("attempts while down", WAIT, |seen| seen.len() >= 2)
        .await;
    receiver.set_mode(Mode::Accept);
    let seen = receiver
        .wait_until("every notification", WAIT, |seen| {
            seen.iter()
                .filter(|r| r.accepted())
                .map(|r| r.notifications().len())
                .sum::<usize>()
                >= expected.len()
        })
        .await;
    let accepted: Vec<_> = seen.iter().filter(|r| r.accepted()).collect();
    for r in &accepted {
        assert!(
            verify(SECRET.as_bytes(), &r.timestamp, &r.body, &r.signature),
            "the signature covers the whole request"
        );
        let n = r.notifications().len();
        assert!(n <= 4, "batch_max 4, got {n}");
        if n > 1 {
            assert_eq!(r.batch, n.to_string(), "x-helpgrid-batch names the count");
            assert_eq!(r.event, "batch");
            assert_eq!(r.key, "", "a batch has no request-wide idempotency key");
            assert_eq!(r.json()["schema"], "helpgrid.notify.batch.v1");
            assert_eq!(r.json()["count"], n);
        }
    }
    assert!(
        accepted.iter().any(|r| r.notifications().len() > 1),
        "the backlog went in batches: {:?}",
        accepted
            .iter()
            .map(|r| r.notifications().len())
            .collect::<Vec<_>>()
    );
    // Every notification once, each incident's in the order of its events.
    let received: Vec<serde_json::Value> =
        accepted.iter().flat_map(|r| r.notifications()).collect();
    let keys: Vec<String> = received
        .iter()
        .map(|n| n["idempotency_key"].as_str().expect("key").to_owned())
        .collect();
    let mut sorted = keys.clone();
    sorted.sort_unstable();
    let mut want = expected.clone();
    want.sort_unstable();
    assert_eq!(sorted, want, "each notification accepted exactly once");
    let position: HashMap<String, usize> = keys_of(&events, &kinds)
        .into_iter()
        .enumerate()
        .map(|(i, key)| (key, i))
        .collect();
    for incident in events.iter().filter(|e| wanted(e)).map(incident_of) {
        let order: Vec<usize> = received
            .iter()
            .filter(|n| n["incident"]["incident_id"] == incident.as_str())
            .map(|n| position[n["idempotency_key"].as_str().expect("key")])
            .collect();
        assert!(
            order.is_sorted(),
            "incident {incident} out of order: {order:?}"
        );
        assert_eq!(order.len(), 2, "opened and assigned of {incident}");
    }
    router.stop().await;
    notify.process.terminate(WAIT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanently_failing_endpoint_is_dead_lettered_and_counted_while_another_keeps_receiving()
{
    let mut s = setup(vec![responder(
        "w-1",
        ResponderRole::GridWorker,
        &["g1"],
        None,
    )])
    .await;
    let broken = Receiver::start(Mode::Down).await;
    let healthy = Receiver::start(Mode::Accept).await;
    let notify = Notify::start(&s.args, "dlq", &[]).await;
    notify
        .subscribe(subscription(
            "broken",
            &broken.url,
            &[NotifyTrigger::Opened],
        ))
        .await;
    notify
        .subscribe(subscription(
            "healthy",
            &healthy.url,
            &[NotifyTrigger::Opened],
        ))
        .await;
    let cancel = tokio_util::sync::CancellationToken::new();
    let mut dead_letters = reader::follow(
        &s.args,
        "helpgrid-test-dlq",
        &s.topics.dead_letters,
        cancel.clone(),
    )
    .await
    .expect("follow dead letters");
    let router = RunningRouter::start(&s.args, calm_policy());

    let mut opened_ids = Vec::new();
    for (i, household) in ["h-1", "h-2", "h-3"].iter().enumerate() {
        s.publisher
            .send(
                &s.topics.help_events,
                "g1",
                &press(household, "g1", PressKind::Help),
            )
            .await;
        let events = s
            .log
            .wait_until("the incident opened", |ev| {
                ev.iter()
                    .filter(|e| matches!(e.change, Some(Change::Opened(_))))
                    .count()
                    > i
            })
            .await;
        let opened = events
            .iter()
            .filter(|e| matches!(e.change, Some(Change::Opened(_))))
            .nth(i)
            .expect("opened");
        opened_ids.push(event_id(opened));
        // The healthy endpoint gets it promptly, whatever the broken one is going through.
        healthy
            .wait_until(
                "the healthy endpoint's copy",
                Duration::from_secs(3),
                |seen| {
                    seen.iter()
                        .any(|r| r.accepted() && r.key == event_id(opened))
                },
            )
            .await;
    }

    let mut letters = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while letters.len() < 3 {
        match tokio::time::timeout_at(deadline, dead_letters.recv()).await {
            Ok(Some(Feed::Record(record))) => letters.push(record),
            Ok(Some(Feed::CaughtUp)) => {}
            other => panic!("dead letters: got {} then {other:?}", letters.len()),
        }
    }
    let header = |record: &helpgrid_common::reader::Record, name: &str| {
        record
            .headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default()
    };
    let mut keys: Vec<String> = Vec::new();
    for letter in &letters {
        assert_eq!(header(letter, "helpgrid.dlq.kind"), "webhook_failed");
        assert_eq!(header(letter, "helpgrid.dlq.notify.subscription"), "broken");
        assert_eq!(
            header(letter, "helpgrid.dlq.origin.topic"),
            s.topics.incident_events
        );
        assert!(
            header(letter, "helpgrid.dlq.reason").contains("HTTP 503"),
            "{}",
            header(letter, "helpgrid.dlq.reason")
        );
        keys.push(header(letter, "helpgrid.dlq.notify.idempotency_key"));
        let original = <IncidentEvent as prost::Message>::decode(
            letter.payload.as_deref().expect("the original record"),
        )
        .expect("an incident event");
        assert_eq!(event_id(&original), *keys.last().expect("key"));
    }
    keys.sort_unstable();
    opened_ids.sort_unstable();
    assert_eq!(keys, opened_ids);
    assert!(broken.seen().iter().all(|r| !r.accepted()));
    assert_eq!(
        notify
            .metric_reaching(
                "helpgrid_notify_dead_letters_total",
                &[("subscription", "broken"), ("kind", "webhook_failed")],
                3.0
            )
            .await,
        3.0
    );
    assert_eq!(
        notify
            .metric_reaching(
                "helpgrid_notify_delivered_total",
                &[("subscription", "healthy")],
                3.0
            )
            .await,
        3.0
    );
    cancel.cancel();
    router.stop().await;
    notify.process.terminate(WAIT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_assignee_who_has_not_acknowledged_is_renotified_at_half_the_deadline() {
    let s = setup(vec![responder(
        "w-1",
        ResponderRole::GridWorker,
        &["g1"],
        None,
    )])
    .await;
    let receiver = Receiver::start(Mode::Accept).await;
    let notify = Notify::start(&s.args, "renotify", &[]).await;
    let mut sub = subscription(
        "w1-phone",
        &receiver.url,
        &[NotifyTrigger::Assigned, NotifyTrigger::Renotify],
    );
    sub.responder_ids = vec!["w-1".into()];
    notify.subscribe(sub).await;
    let deadline_ms = 3_000;
    let router = RunningRouter::start(&s.args, calm_policy().with_ack_deadline_ms(deadline_ms));
    s.publisher
        .send(
            &s.topics.help_events,
            "g1",
            &press("h-1", "g1", PressKind::Help),
        )
        .await;
    let seen = receiver
        .wait_until("the assignment and its re-notification", WAIT, |seen| {
            seen.len() >= 2
        })
        .await;
    let (assigned, renotify) = (&seen[0], &seen[1]);
    assert_eq!(assigned.event, "assigned");
    assert_eq!(renotify.event, "renotify");
    assert_eq!(renotify.key, format!("{}:renotify", assigned.key));
    let (a, r) = (assigned.json(), renotify.json());
    assert_eq!(r["kind"], "renotify");
    assert_eq!(r["responder"]["responder_id"], "w-1");
    assert_eq!(r["ack_deadline"], a["ack_deadline"]);
    // From the assignment's own time (in the body), not from when its webhook arrived: on
    // a loaded machine that arrival can itself be late, which made the gap look short.
    let assigned_at: prost_types::Timestamp = a["occurred_at"]
        .as_str()
        .expect("occurred_at")
        .parse()
        .expect("an RFC 3339 time");
    let assigned_at =
        std::time::UNIX_EPOCH + Duration::new(assigned_at.seconds as u64, assigned_at.nanos as u32);
    let gap = renotify
        .wall
        .duration_since(assigned_at)
        .expect("re-notified after the assignment");
    // notify plans on its own clock (wall at start + monotonic since): 100 ms for the two
    // clocks to differ.
    assert!(
        gap >= Duration::from_millis(1_400) && gap < Duration::from_millis(3_000),
        "re-notified {gap:?} after the assignment; half the deadline is 1.5 s"
    );
    router.stop().await;
    notify.process.terminate(WAIT);
}
