//! helpgrid-notify SIGKILLed while it retries a failing endpoint: after the restart every
//! notification still arrives, once in effect (the same idempotency key as before the
//! crash), in order per incident. The real binary, the real router, a real HTTP receiver.
//! Needs HELPGRID_TEST_KAFKA (scripts/test sets it).

mod support;

use helpgrid_proto::pb::incident_event::Change;
use helpgrid_proto::pb::{IncidentEvent, NotifyTrigger, PressKind, ResponderRole};
use helpgrid_testkit::WAIT;
use helpgrid_testkit::records::{press, responder};
use std::collections::{BTreeSet, HashMap};
use support::{
    Mode, Notify, Receiver, RunningRouter, calm_policy, incident_of, keys_of, setup, subscription,
};

/// A retry budget that outlasts the outage and the crash: nothing is dead-lettered.
const PATIENT: &[(&str, &str)] = &[("HELPGRID_NOTIFY_RETRY_ATTEMPTS", "50")];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_killed_while_retrying_delivers_everything_once_in_effect_in_order_after_restart() {
    let mut s = setup(vec![responder(
        "w-1",
        ResponderRole::GridWorker,
        &["g1"],
        None,
    )])
    .await;
    let receiver = Receiver::start(Mode::Down).await;
    let notify = Notify::start(&s.args, "crash", PATIENT).await;
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

    for household in ["h-1", "h-2", "h-1"] {
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
        .wait_until("two incidents, one repeat", |ev| {
            ev.iter()
                .filter(|e| matches!(e.change, Some(Change::Opened(_))))
                .count()
                >= 2
                && ev
                    .iter()
                    .any(|e| matches!(e.change, Some(Change::Attached(_))))
        })
        .await;
    let expected: Vec<&IncidentEvent> = events.iter().filter(|e| wanted(e)).collect();
    let kinds = ["opened", "assigned", "attached"];
    let expected_keys = keys_of(expected.iter().copied(), &kinds);

    // Mid-retry: the endpoint has refused the same notification at least twice.
    let before = receiver
        .wait_until("retries of a failing notification", WAIT, |seen| {
            seen.iter().any(|r| r.attempt == "2")
        })
        .await;
    let retried_key = before
        .iter()
        .find(|r| r.attempt == "2")
        .map(|r| r.key.clone())
        .expect("a retried key");
    assert!(before.iter().all(|r| !r.accepted()));
    notify.process.kill();
    let seen_at_kill = receiver.seen().len();

    receiver.set_mode(Mode::Accept);
    let restarted = Notify::start(&s.args, "crash", PATIENT).await;
    let seen = receiver
        .wait_until("every notification after the restart", WAIT, |seen| {
            let accepted: BTreeSet<&str> = seen
                .iter()
                .filter(|r| r.accepted())
                .map(|r| r.key.as_str())
                .collect();
            expected_keys
                .iter()
                .all(|key| accepted.contains(key.as_str()))
        })
        .await;
    let after_restart = &seen[seen_at_kill..];

    // Once in effect: every notification accepted, under the key it had before the crash,
    // and nothing accepted that was not an incident event of the subscription.
    let accepted: Vec<_> = after_restart.iter().filter(|r| r.accepted()).collect();
    let keys: BTreeSet<String> = accepted.iter().map(|r| r.key.clone()).collect();
    let want: BTreeSet<String> = expected_keys.iter().cloned().collect();
    assert_eq!(keys, want, "each notification accepted, no stranger");
    assert!(
        accepted.iter().any(|r| r.key == retried_key),
        "the notification being retried at the kill arrived under the same idempotency key"
    );
    for r in &accepted {
        assert_eq!(r.json()["idempotency_key"], r.key.as_str());
    }
    eprintln!(
        "after the restart: {} accepted deliveries for {} notifications",
        accepted.len(),
        want.len()
    );

    // In order per incident: the first acceptance of each key follows the incident's events.
    let position: HashMap<String, usize> = keys_of(&events, &kinds)
        .into_iter()
        .enumerate()
        .map(|(i, key)| (key, i))
        .collect();
    let incidents: BTreeSet<String> = expected.iter().map(|e| incident_of(e)).collect();
    for incident in incidents {
        let mut first_seen = Vec::new();
        for r in &accepted {
            if r.json()["incident"]["incident_id"] == incident.as_str()
                && !first_seen.contains(&position[&r.key])
            {
                first_seen.push(position[&r.key]);
            }
        }
        let mut sorted = first_seen.clone();
        sorted.sort_unstable();
        assert_eq!(
            first_seen, sorted,
            "incident {incident} delivered out of order"
        );
    }
    router.stop().await;
    restarted.process.terminate(WAIT);
}
