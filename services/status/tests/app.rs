//! The responder app against a real broker, the real router and the real status service:
//! its HTTP API with a plain HTTP client (sign-in links, CSRF, foreign incidents, outcomes,
//! retries), and the page in a real headless Chromium with a phone's viewport (390×844):
//! sign in by link, a press appears, Acknowledge, Close with an outcome, survive a restart of
//! the status service, go off duty. Saves screenshots to target/artifacts/responder-app*.png
//! (and to docs/ with HELPGRID_REGENERATE_DOCS=1).
#![allow(clippy::unwrap_used)]

mod support;

use helpgrid_auth::{Claims, ISSUER, Role};
use helpgrid_proto::pb::{
    EscalationLevel, GetIncidentRequest, GetResponderRequest, IncidentOutcome, IncidentState,
    PressKind, Resolution, ResponderRole, UpsertResponderRequest,
};
use helpgrid_status::app::view::{Household, Households};
use helpgrid_testkit::Publisher;
use helpgrid_testkit::browser::{Browser, free_port};
use helpgrid_testkit::records::{press, responder, roster_record};
use prost::Message as _;
use serde_json::Value;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{TestKafka, TestService, start_router, test_key, token, wait_incident, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One answer of the app's HTTP server.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: String,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    /// The `name=value` the answer sets as a cookie.
    fn cookie(&self) -> Option<String> {
        self.headers
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("set-cookie: "))
            .and_then(|l| l["set-cookie: ".len()..].split(';').next())
            .map(str::to_owned)
    }

    fn has_header_text(&self, text: &str) -> bool {
        self.headers
            .to_ascii_lowercase()
            .contains(&text.to_ascii_lowercase())
    }
}

/// A plain HTTP/1.1 exchange (a fresh connection, closed after the answer).
async fn http(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Answer {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    within("the answer", stream.read_to_end(&mut raw))
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    Answer {
        status: head[9..12].parse().unwrap(),
        headers: head.to_owned(),
        body: body.to_owned(),
    }
}

/// A sign-in link token for `subject`, valid `ttl_s` from now (what `helpgrid-token mint
/// --ttl-s` makes).
fn link_token(subject: &str, role: Role, grids: &[&str], ttl_s: u64) -> String {
    let grids: Vec<String> = grids.iter().map(|g| (*g).to_owned()).collect();
    test_key()
        .mint(subject, role, &grids, Duration::from_secs(ttl_s))
        .unwrap()
}

/// The tap on the link page: POSTs the link as the page's form does.
async fn redeem(port: u16, link: &str) -> Answer {
    let origin = format!("http://127.0.0.1:{port}");
    http(
        port,
        "POST",
        "/app/signin",
        &[("Origin", &origin)],
        &format!("link={link}"),
    )
    .await
}

/// Signs in by link; returns the session cookie and the CSRF token.
async fn sign_in_by_link(port: u16, subject: &str) -> (String, String) {
    let link = link_token(subject, Role::Responder, &["grid-0001"], 600);
    let answer = redeem(port, &link).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let cookie = answer.cookie().expect("a session cookie");
    let me = http(port, "GET", "/app/api/me", &[("Cookie", &cookie)], "").await;
    assert_eq!(me.status, 200, "{me:?}");
    let csrf = me.json()["csrf"].as_str().unwrap().to_owned();
    (cookie, csrf)
}

fn households() -> Households {
    Households::from([(
        "hh-0001-07".to_owned(),
        Household {
            contact_name: "吴秀兰".into(),
            contact_phone: "13800138000".into(),
            address: "安澜社区3栋2单元501".into(),
        },
    )])
}

async fn upsert(service: &TestService, id: &str, role: ResponderRole, name: &str) {
    let mut r = responder(id, role, &["grid-0001"], None);
    r.display_name = name.into();
    service
        .roster()
        .upsert_responder(UpsertResponderRequest { responder: Some(r) })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_api_refuses_bad_links_foreign_incidents_missing_outcomes_and_cross_site_posts() {
    let kafka = Arc::new(TestKafka::new().await);
    let port = free_port();
    let service = kafka
        .start_app_service(Duration::from_secs(10), port, households())
        .await;
    upsert(&service, "w-1", ResponderRole::GridWorker, "吴建国").await;
    upsert(&service, "w-2", ResponderRole::GridWorker, "李娜").await;
    upsert(&service, "s-1", ResponderRole::GridSupervisor, "王芳").await;
    let (router_stop, router) = start_router(&kafka.args);
    Publisher::new(&kafka.args)
        .send(
            &kafka.topics.help_events,
            "grid-0001",
            &press("hh-0001-07", "grid-0001", PressKind::Help),
        )
        .await;
    // Equal load: the router breaks the tie by id, so w-1 gets it.
    let incident = wait_incident(&service, "the press assigned", "hh-0001-07", |i| {
        i.assignments
            .first()
            .is_some_and(|a| a.responder_id == "w-1")
    })
    .await;
    let id = incident.incident_id.clone();

    // Links: once only; tampered, expired, long-lived and console links are refused with a
    // page that says why.
    let link = link_token("w-2", Role::Responder, &["grid-0001"], 600);
    // Opening the link (as a chat app's preview does) uses nothing up; the tap does.
    for _ in 0..2 {
        let page = http(port, "GET", &format!("/app/signin?link={link}"), &[], "").await;
        assert_eq!(page.status, 200);
        assert!(page.body.contains("signin-link") && page.cookie().is_none());
    }
    let first = redeem(port, &link).await;
    assert_eq!(first.status, 200);
    let session = first.cookie().unwrap();
    assert!(first.has_header_text("HttpOnly") && first.has_header_text("SameSite=Strict"));
    assert!(
        !session.contains(&link),
        "the session is a new token, not the link"
    );
    let again = http(port, "GET", &format!("/app/signin?link={link}"), &[], "").await;
    assert_eq!(again.status, 401);
    assert!(again.body.contains("already been used"), "{}", again.body);
    let twice = redeem(port, &link).await;
    assert_eq!(twice.status, 401, "{twice:?}");
    assert!(twice.cookie().is_none());
    let elsewhere = http(
        port,
        "POST",
        "/app/signin",
        &[("Origin", "https://evil.example")],
        &format!(
            "link={}",
            link_token("w-2", Role::Responder, &["grid-0001"], 600)
        ),
    )
    .await;
    assert_eq!(elsewhere.status, 403, "another site cannot sign anyone in");
    let mut tampered = link_token("w-2", Role::Responder, &["grid-0001"], 600);
    tampered.pop();
    tampered.push('x');
    let forged = http(
        port,
        "GET",
        &format!("/app/signin?link={tampered}"),
        &[],
        "",
    )
    .await;
    assert_eq!(forged.status, 401);
    assert!(
        forged.body.contains("sign-in link:") && forged.body.contains("signature"),
        "{}",
        forged.body
    );
    let now = helpgrid_common::time::now_millis() as u64 / 1000;
    let expired = test_key()
        .sign(&Claims {
            iss: ISSUER.into(),
            sub: "w-2".into(),
            role: Role::Responder,
            grids: vec!["grid-0001".into()],
            iat: now - 1200,
            exp: now - 600,
        })
        .unwrap();
    let stale = http(port, "GET", &format!("/app/signin?link={expired}"), &[], "").await;
    assert_eq!(stale.status, 401);
    assert!(stale.body.contains("expired"), "{}", stale.body);
    let shift = link_token("w-2", Role::Responder, &["grid-0001"], 12 * 3600);
    let long = http(port, "GET", &format!("/app/signin?link={shift}"), &[], "").await;
    assert_eq!(long.status, 401);
    assert!(long.body.contains("not a sign-in link"), "{}", long.body);
    let console = link_token("office", Role::Console, &["grid-0001"], 600);
    let wrong = http(port, "GET", &format!("/app/signin?link={console}"), &[], "").await;
    assert_eq!(wrong.status, 403);

    // w-2 may not act on w-1's incident.
    let me = http(port, "GET", "/app/api/me", &[("Cookie", &session)], "").await;
    let csrf = me.json()["csrf"].as_str().unwrap().to_owned();
    let ack_path = format!("/app/api/incidents/{id}/acknowledge");
    let foreign = http(
        port,
        "POST",
        &ack_path,
        &[("Cookie", &session), ("x-csrf-token", &csrf)],
        r#"{"request_id":"w2-1"}"#,
    )
    .await;
    assert_eq!(foreign.status, 403, "{foreign:?}");
    assert!(
        foreign.json()["error"]
            .as_str()
            .unwrap()
            .contains("not assigned to you"),
        "{foreign:?}"
    );

    // CSRF: a cookie alone does not make a POST; nor does another site's page.
    let (w1, w1_csrf) = sign_in_by_link(port, "w-1").await;
    let no_csrf = http(port, "POST", &ack_path, &[("Cookie", &w1)], "{}").await;
    assert_eq!(no_csrf.status, 403, "{no_csrf:?}");
    let cross_site = http(
        port,
        "POST",
        &ack_path,
        &[
            ("Cookie", &w1),
            ("x-csrf-token", &w1_csrf),
            ("Origin", "https://evil.example"),
        ],
        "{}",
    )
    .await;
    assert_eq!(cross_site.status, 403, "{cross_site:?}");

    let post = |path: String, body: &'static str| {
        let w1 = w1.clone();
        let w1_csrf = w1_csrf.clone();
        async move {
            http(
                port,
                "POST",
                &path,
                &[
                    ("Cookie", &w1),
                    ("x-csrf-token", &w1_csrf),
                    ("Origin", &format!("http://127.0.0.1:{port}")),
                ],
                body,
            )
            .await
        }
    };
    let acked = post(ack_path.clone(), r#"{"request_id":"phone-1"}"#).await;
    assert_eq!(acked.status, 200, "{acked:?}");
    assert_eq!(acked.json()["acknowledged"], true);
    assert_eq!(
        acked.json()["household"]["contact_phone"],
        "13800138000",
        "the assigned responder sees the household in full"
    );
    let retried = post(ack_path.clone(), r#"{"request_id":"phone-1"}"#).await;
    assert_eq!(
        retried.status, 200,
        "a retry of an applied command succeeds"
    );
    assert_eq!(retried.json()["revision"], acked.json()["revision"]);

    let close_path = format!("/app/api/incidents/{id}/close");
    let no_outcome = post(close_path.clone(), r#"{"request_id":"phone-2"}"#).await;
    assert_eq!(no_outcome.status, 400);
    assert!(
        no_outcome.body.contains("outcome is required"),
        "{no_outcome:?}"
    );
    let nonsense = post(
        close_path.clone(),
        r#"{"request_id":"phone-2","outcome":"fixed"}"#,
    )
    .await;
    assert_eq!(nonsense.status, 400);
    assert!(
        nonsense.body.contains("nobody_there"),
        "lists the codes: {nonsense:?}"
    );
    let reused = post(
        close_path.clone(),
        r#"{"request_id":"phone-1","outcome":"mediated"}"#,
    )
    .await;
    assert_eq!(reused.status, 400, "{reused:?}");
    assert!(reused.body.contains("different command"), "{reused:?}");
    let closed = post(
        close_path.clone(),
        r#"{"request_id":"phone-2","outcome":"mediated","note":"neighbours reconciled"}"#,
    )
    .await;
    assert_eq!(closed.status, 200, "{closed:?}");
    assert_eq!(closed.json()["outcome"], "mediated");
    let replayed = post(
        close_path.clone(),
        r#"{"request_id":"phone-2","outcome":"false_alarm","note":"neighbours reconciled"}"#,
    )
    .await;
    assert_eq!(replayed.status, 400, "same id, other body: {replayed:?}");
    let got = service
        .incidents()
        .get_incident(GetIncidentRequest {
            incident_id: id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (got.state, got.outcome, got.resolution),
        (
            IncidentState::Closed as i32,
            IncidentOutcome::Mediated as i32,
            Resolution::Resolved as i32
        )
    );

    // "I need help": w-1 hands the next press up the ladder at once; the supervisor has it.
    Publisher::new(&kafka.args)
        .send(
            &kafka.topics.help_events,
            "grid-0001",
            &press("hh-0001-08", "grid-0001", PressKind::Help),
        )
        .await;
    let second = wait_incident(&service, "the second press assigned", "hh-0001-08", |i| {
        i.assignments
            .first()
            .is_some_and(|a| a.responder_id == "w-1")
    })
    .await;
    let help_path = format!("/app/api/incidents/{}/help", second.incident_id);
    let body = r#"{"request_id":"phone-3","note":"two men fighting"}"#;
    let helped = post(help_path.clone(), body).await;
    assert_eq!(helped.status, 200, "{helped:?}");
    assert_eq!(helped.json()["mine"], false, "the track left w-1");
    let again = post(help_path, body).await;
    assert_eq!(again.status, 200, "a retry succeeds: {again:?}");
    assert_eq!(again.json()["revision"], helped.json()["revision"]);
    let escalated = service
        .incidents()
        .get_incident(GetIncidentRequest {
            incident_id: second.incident_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            escalated.assignments[0].responder_id.as_str(),
            escalated.assignments[0].level
        ),
        ("s-1", EscalationLevel::GridSupervisor as i32)
    );

    // A script with a bearer token needs no CSRF token (no cookie to ride on).
    let bearer = format!("Bearer {}", token("w-1", Role::Responder, &["grid-0001"]));
    let duty = http(
        port,
        "POST",
        "/app/api/duty",
        &[("Authorization", &bearer)],
        r#"{"on_duty":false}"#,
    )
    .await;
    assert_eq!(duty.status, 200, "{duty:?}");
    assert_eq!(duty.json()["on_duty"], false);

    service.stop().await.unwrap();
    router_stop.cancel();
    within("the router to stop", router).await.unwrap().unwrap();
}

/// The page's cards: id, state, and the card's text.
const CARDS: &str = "return [...document.querySelectorAll('#cards .card')].map(c => \
    ({ id: c.dataset.incident, state: c.dataset.state, text: c.innerText }));";

fn card_of<'a>(cards: &'a Value, id: &str) -> Option<&'a Value> {
    cards.as_array()?.iter().find(|c| c["id"] == id)
}

/// Saves a screenshot to target/artifacts, and to docs/ with HELPGRID_REGENERATE_DOCS=1.
async fn save_screenshot(browser: &Browser, name: &str) {
    let png = browser.screenshot_png().await;
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let artifacts = root.join("target/artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    std::fs::write(artifacts.join(name), &png).unwrap();
    if std::env::var("HELPGRID_REGENERATE_DOCS").as_deref() == Ok("1") {
        std::fs::write(root.join("docs").join(name), &png).unwrap();
    }
}

async fn wait_sent(browser: &Browser, count: u64) {
    browser
        .wait_for(
            "the queued action to be sent",
            "return window.helpgridApp;",
            |v| v["sent"].as_u64() == Some(count) && v["failed"] == 0,
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_responder_signs_in_by_link_on_a_phone_acknowledges_closes_and_goes_off_duty() {
    let kafka = Arc::new(TestKafka::new().await);
    let port = free_port();
    let service = kafka
        .start_app_service(Duration::from_secs(10), port, households())
        .await;
    upsert(&service, "w-42", ResponderRole::GridWorker, "吴建国").await;
    upsert(&service, "sup-1", ResponderRole::GridSupervisor, "李娜").await;
    let (router_stop, router) = start_router(&kafka.args);
    let publisher = Publisher::new(&kafka.args);
    let topics = kafka.topics.clone();

    let browser = Browser::with_viewport(390, 844).await;
    let link = link_token("w-42", Role::Responder, &["grid-0001"], 600);
    browser
        .open(&format!("http://127.0.0.1:{port}/app/signin?link={link}"))
        .await;
    browser
        .eval("document.getElementById('signin-link').click(); return true;")
        .await;
    browser
        .wait_for(
            "the app to go live",
            // Null while the "signed in" page moves on to the app.
            "const link = document.getElementById('link'); return link && link.className;",
            |v| v.as_str() == Some("link live"),
        )
        .await;
    let page = browser
        .eval("return [location.pathname, document.cookie, innerWidth, innerHeight];")
        .await;
    assert_eq!(page[0], "/app/", "the link left the address bar: {page}");
    assert!(
        !page[1].as_str().unwrap().contains("helpgrid_app"),
        "the session cookie is HttpOnly: {page}"
    );
    assert_eq!((page[2].as_i64(), page[3].as_i64()), (Some(390), Some(844)));

    // A press on the real broker appears on the phone within a second.
    let pressed = Instant::now();
    publisher
        .send(
            &topics.help_events,
            "grid-0001",
            &press("hh-0001-07", "grid-0001", PressKind::Medical),
        )
        .await;
    let cards = browser
        .wait_for("the press on the phone", CARDS, |cards| {
            cards.as_array().is_some_and(|c| !c.is_empty())
        })
        .await;
    let on_the_page = pressed.elapsed();
    let card = cards[0].clone();
    let first_id = card["id"].as_str().unwrap().to_owned();
    let text = card["text"].as_str().unwrap();
    eprintln!("press → on the phone: {on_the_page:?}");
    assert!(
        on_the_page < Duration::from_secs(1),
        "the press took {on_the_page:?} to reach the page"
    );
    for shown in [
        "医疗 Medical",
        "13800138000",
        "安澜社区3栋2单元501",
        "确认接单 Acknowledge",
    ] {
        assert!(
            text.contains(shown),
            "{shown} missing from the card: {text}"
        );
    }
    let alerts = browser.eval("return window.helpgridApp.alerts;").await;
    assert_eq!(alerts, 1, "one new assignment, announced once");
    let countdown = browser
        .eval("return document.querySelector('.countdown').textContent;")
        .await;
    assert!(
        countdown.as_str().unwrap().contains(':'),
        "the deadline counts down: {countdown}"
    );
    save_screenshot(&browser, "responder-app.png").await;

    // Acknowledge with the big button, then Close with an outcome and a note.
    browser
        .eval("document.querySelector('[data-action=acknowledge]').click(); return true;")
        .await;
    browser
        .wait_for("the card to show acknowledged", CARDS, |cards| {
            card_of(cards, &first_id).is_some_and(|c| c["state"] == "acknowledged")
        })
        .await;
    wait_sent(&browser, 1).await;
    browser
        .eval("document.querySelector('[data-action=close]').click(); return true;")
        .await;
    browser
        .eval(
            "document.querySelector('input[name=outcome][value=referred_to_town]').click(); \
             document.getElementById('close-note').value = '已上报街道 handed to the street office'; \
             return true;",
        )
        .await;
    save_screenshot(&browser, "responder-app-close.png").await;
    browser
        .eval("document.getElementById('close-submit').click(); return true;")
        .await;
    browser
        .wait_for("the closed card to leave the list", CARDS, |cards| {
            card_of(cards, &first_id).is_none()
        })
        .await;
    wait_sent(&browser, 2).await;
    let closed = service
        .incidents()
        .get_incident(GetIncidentRequest {
            incident_id: first_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(closed.outcome, IncidentOutcome::ReferredToTown as i32);
    assert_eq!(
        closed.resolution_note,
        "已上报街道 handed to the street office"
    );

    // The status service restarts; meanwhile the household presses again. The same page (no
    // reload) resumes from its cursor: the new assignment, once, nothing lost.
    browser
        .eval("window.sameDocument = true; return true;")
        .await;
    service.stop().await.unwrap();
    publisher
        .send(
            &topics.help_events,
            "grid-0001",
            &press("hh-0001-07", "grid-0001", PressKind::Help),
        )
        .await;
    let restarted = kafka
        .start_app_service(Duration::from_secs(10), port, households())
        .await;
    let cards = browser
        .wait_for("the press made during the restart", CARDS, |cards| {
            cards.as_array().is_some_and(|c| c.len() == 1)
        })
        .await;
    let second_id = cards[0]["id"].as_str().unwrap().to_owned();
    assert_ne!(second_id, first_id);
    assert_eq!(
        browser.eval("return window.sameDocument === true;").await,
        Value::Bool(true),
        "the page was not reloaded"
    );
    let stream = browser.eval("return window.helpgridApp;").await;
    assert_eq!(stream["repeats"], 0, "no update arrived twice: {stream}");
    assert_eq!(stream["snapshots"], 1, "resumed by cursor: {stream}");
    assert_eq!(
        stream["alerts"], 2,
        "the second assignment was announced: {stream}"
    );

    // Off duty: the next press goes to the supervisor, not to this phone.
    browser
        .eval("document.getElementById('duty').click(); return true;")
        .await;
    wait_sent(&browser, 3).await;
    within("the roster to say off duty", async {
        loop {
            let r = restarted
                .roster()
                .get_responder(GetResponderRequest {
                    responder_id: "w-42".into(),
                })
                .await
                .unwrap()
                .into_inner();
            if !r.on_duty {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    // The router reads the roster through its own consumer, so the status service's answer
    // says nothing about the router. A probe responder, written after the off-duty record to
    // the same roster partition (Kafka keeps a partition's order) and alone in a grid of its
    // own, gets a probe press only once the router has read past the off-duty record. (A
    // probe press the router decided before that went to the police desk: press again.)
    let partition =
        helpgrid_common::partition::grid_partition("w-42", support::PARTITIONS as usize);
    let probe = roster_record(responder(
        "probe-w42",
        ResponderRole::GridWorker,
        &["grid-probe"],
        None,
    ));
    kafka
        .publish_raw(
            &topics.roster,
            partition,
            "probe-w42",
            &probe.encode_to_vec(),
        )
        .await;
    within(
        "the router to read the roster past the off-duty record",
        async {
            for n in 0.. {
                let household = format!("hh-probe-{n:02}");
                publisher
                    .send(
                        &topics.help_events,
                        "grid-probe",
                        &press(&household, "grid-probe", PressKind::Help),
                    )
                    .await;
                let decided = wait_incident(&restarted, "a probe press decided", &household, |i| {
                    !i.assignments.is_empty()
                })
                .await;
                if decided
                    .assignments
                    .iter()
                    .any(|a| a.responder_id == "probe-w42")
                {
                    break;
                }
            }
        },
    )
    .await;
    publisher
        .send(
            &topics.help_events,
            "grid-0001",
            &press("hh-0001-09", "grid-0001", PressKind::Help),
        )
        .await;
    let third = wait_incident(
        &restarted,
        "the off-duty press assigned",
        "hh-0001-09",
        |i| i.assignments.iter().any(|a| !a.responder_id.is_empty()),
    )
    .await;
    assert!(
        third.assignments.iter().all(|a| a.responder_id != "w-42"),
        "an off-duty responder got an assignment: {third:?}"
    );
    // Acknowledging the second card is a later event of the same grid (same partition): once
    // the page shows it, it has passed the third incident's events.
    browser
        .eval("document.querySelector('[data-action=acknowledge]').click(); return true;")
        .await;
    let cards = browser
        .wait_for("the second card acknowledged", CARDS, |cards| {
            card_of(cards, &second_id).is_some_and(|c| c["state"] == "acknowledged")
        })
        .await;
    assert_eq!(
        cards.as_array().map(Vec::len),
        Some(1),
        "the off-duty press is not on the phone: {cards}"
    );
    let stream = browser.eval("return window.helpgridApp;").await;
    assert_eq!(stream["repeats"], 0, "{stream}");
    assert_eq!(stream["alerts"], 2, "{stream}");

    browser.quit().await;
    restarted.stop().await.unwrap();
    router_stop.cancel();
    within("the router to stop", router).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_worker_keeps_the_app_shell_only_and_the_page_opens_with_the_server_down() {
    let kafka = Arc::new(TestKafka::new().await);
    let port = free_port();
    let service = kafka
        .start_app_service(Duration::from_secs(10), port, households())
        .await;
    let browser = Browser::with_viewport(390, 844).await;
    let url = format!("http://127.0.0.1:{port}/app/");
    browser.open(&url).await;
    browser
        .wait_for(
            "the service worker to control the page",
            "const c = navigator.serviceWorker.controller; return c ? c.scriptURL : null;",
            |v| v.as_str().is_some_and(|s| s.ends_with("/app/sw.js")),
        )
        .await;
    browser
        .eval(
            "window.shell = null; caches.keys().then(names => Promise.all(names.map(n => \
             caches.open(n).then(c => c.keys()).then(k => k.map(r => n + ' ' + new URL(r.url).pathname))))) \
             .then(all => { window.shell = all.flat().sort(); }); return true;",
        )
        .await;
    let cached = browser
        .wait_for("the cache to be read", "return window.shell;", |v| {
            v.is_array()
        })
        .await;
    // The page's own files and nothing else: no API answer, no event stream, no sign-in.
    assert_eq!(
        cached,
        serde_json::json!([
            "helpgrid-app-shell-v1 /app/",
            "helpgrid-app-shell-v1 /app/app.css",
            "helpgrid-app-shell-v1 /app/app.js",
            "helpgrid-app-shell-v1 /app/icon.svg",
            "helpgrid-app-shell-v1 /app/manifest.webmanifest",
        ])
    );

    // The server goes away (as the network does in a stairwell): the page still opens.
    service.stop().await.unwrap();
    browser.open(&url).await;
    let opened = browser
        .wait_for(
            "the page from the cache",
            "return document.getElementById('signin') ? document.title : null;",
            |v| v.is_string(),
        )
        .await;
    assert_eq!(opened, "HelpGrid 网格员 · Responder");
    // The API is not answered from any cache.
    browser
        .eval(
            "window.me = null; fetch('/app/api/me').then(r => { window.me = 'HTTP ' + r.status; }, \
             () => { window.me = 'no network'; }); return true;",
        )
        .await;
    let me = browser
        .wait_for("the API call to end", "return window.me;", |v| {
            v.is_string()
        })
        .await;
    assert_eq!(me, "no network");
    browser.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_in_link_signs_in_once_across_instances_even_tapped_at_two_at_once() {
    let kafka = Arc::new(TestKafka::new().await);
    let (port_a, port_b) = (free_port(), free_port());
    let (a, b) = tokio::join!(
        kafka.start_app_service(Duration::from_secs(10), port_a, households()),
        kafka.start_app_service(Duration::from_secs(10), port_b, households()),
    );
    // Used at A, then tapped at B (behind a load balancer, a copied link): refused at B.
    let link = link_token("w-7", Role::Responder, &["grid-0001"], 600);
    let first = redeem(port_a, &link).await;
    assert_eq!(first.status, 200, "{first:?}");
    let copied = redeem(port_b, &link).await;
    assert_eq!(copied.status, 401, "{copied:?}");
    assert!(copied.body.contains("already been used"), "{}", copied.body);
    // B's link page says so too, before anyone taps (B has read A's use by now).
    let page = http(port_b, "GET", &format!("/app/signin?link={link}"), &[], "").await;
    assert_eq!(page.status, 401, "{page:?}");

    // Two taps of one link at two instances at the same moment: exactly one signs in.
    for round in 0..3 {
        let link = link_token(&format!("w-8{round}"), Role::Responder, &["grid-0001"], 600);
        let (at_a, at_b) = tokio::join!(redeem(port_a, &link), redeem(port_b, &link));
        let mut statuses = [at_a.status, at_b.status];
        statuses.sort_unstable();
        assert_eq!(statuses, [200, 401], "round {round}: {at_a:?} {at_b:?}");
        let signed_in = if at_a.status == 200 { &at_a } else { &at_b };
        assert!(signed_in.cookie().is_some(), "{signed_in:?}");
    }
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}
