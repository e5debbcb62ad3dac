//! Test support: real PostgreSQL (a fresh database per test), incident events as the router
//! writes them, and waiting on the archive.
#![allow(dead_code)]

use helpgrid_common::kafka::KafkaArgs;
use helpgrid_common::time::to_timestamp;
use helpgrid_proto::pb::{
    Acknowledged, Assignment, AttachKind, CameraLabel, Envelope, Escalated, EscalationLevel,
    EventAttached, Incident, IncidentClosed, IncidentEvent, IncidentOpened, IncidentSource,
    IncidentState, PressKind, Resolution, ResponderAssigned, Track, incident_event::Change,
};
use prost::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

pub fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/local/postgres.sh")
}

/// The PostgreSQL server for tests: `HELPGRID_TEST_POSTGRES` (a URL whose user may create
/// databases), else the local one from `deploy/local/postgres.sh`, started if needed.
pub fn server_url() -> String {
    if let Ok(url) = std::env::var("HELPGRID_TEST_POSTGRES") {
        return url;
    }
    let out = Command::new("bash")
        .arg(script())
        .arg("start")
        .output()
        .expect("run postgres.sh");
    assert!(
        out.status.success(),
        "postgres.sh start failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// `url` with its database replaced by `db`.
pub fn with_database(url: &str, db: &str) -> String {
    match url.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{db}"),
        None => panic!("not a postgres:// URL: {url}"),
    }
}

/// A new, empty database on `server`; returns its URL.
pub async fn fresh_database(server: &str) -> String {
    let name = format!("t_{}", &uuid::Uuid::new_v4().simple().to_string()[..16]);
    let client = helpgrid_archive::store::connect(server)
        .await
        .expect("connect to the test PostgreSQL");
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create a test database");
    with_database(server, &name)
}

/// A PostgreSQL of the test's own (to stop and start); removed when dropped.
pub struct OwnPostgres {
    dir: String,
    pub url: String,
}

impl OwnPostgres {
    pub fn start() -> Self {
        let dir = format!(
            "/tmp/helpgrid-postgres-own-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        );
        let mut own = Self {
            dir,
            url: String::new(),
        };
        own.url = own.run("start").trim().to_owned();
        own
    }

    pub fn run(&self, command: &str) -> String {
        let out = Command::new("bash")
            .arg(script())
            .arg(command)
            .env("HELPGRID_POSTGRES_DIR", &self.dir)
            .output()
            .expect("run postgres.sh");
        assert!(
            out.status.success(),
            "postgres.sh {command} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .args(["stop", "--clean"])
            .env("HELPGRID_POSTGRES_DIR", &self.dir)
            .output();
    }
}

fn envelope(id: String, at: i64) -> Option<Envelope> {
    Some(Envelope {
        event_id: id,
        occurred_at: Some(to_timestamp(at)),
        source: "router".into(),
        schema_version: 1,
    })
}

/// The events the router writes for one incident, in order: opened, assigned, (escalated on
/// every third), a repeat press on every fifth, acknowledged, closed (resolved, or a false
/// alarm on every fourth). `opened_at` in milliseconds; each step a minute later.
pub fn incident_story(n: usize, grid: &str, opened_at: i64) -> Vec<IncidentEvent> {
    let id = format!(
        "inc-{n:06}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..6]
    );
    let minute = 60_000;
    let mut incident = Incident {
        incident_id: id.clone(),
        grid_id: grid.into(),
        state: IncidentState::Assigned as i32,
        priority: 1,
        source: if n.is_multiple_of(7) {
            IncidentSource::Camera as i32
        } else {
            IncidentSource::Button as i32
        },
        household_id: format!("hh-{n}"),
        device_id: format!("dev-{n}"),
        press_kind: PressKind::Help as i32,
        camera_label: if n.is_multiple_of(7) {
            CameraLabel::Fire as i32
        } else {
            0
        },
        reported_at: Some(to_timestamp(opened_at)),
        opened_at: Some(to_timestamp(opened_at)),
        event_count: 1,
        revision: 1,
        ..Incident::default()
    };
    let mut events = Vec::new();
    let mut push = |incident: &Incident, change: Change, at: i64, k: usize| {
        events.push(IncidentEvent {
            envelope: envelope(format!("{id}-e{k}"), at),
            incident: Some(incident.clone()),
            cause_id: String::new(),
            change: Some(change),
        });
    };
    push(
        &incident,
        Change::Opened(IncidentOpened::default()),
        opened_at,
        1,
    );
    let mut assignment = Assignment {
        track: Track::Community as i32,
        level: EscalationLevel::GridWorker as i32,
        responder_id: format!("{grid}-w0"),
        responder_role: 1,
        attempt: 1,
        assigned_at: Some(to_timestamp(opened_at)),
        ..Assignment::default()
    };
    incident.assignments = vec![assignment.clone()];
    incident.revision = 2;
    push(
        &incident,
        Change::Assigned(ResponderAssigned {
            track: Track::Community as i32,
            responder_id: assignment.responder_id.clone(),
            level: assignment.level,
            ack_deadline: None,
        }),
        opened_at,
        2,
    );
    let mut k = 3;
    let mut t = opened_at;
    if n.is_multiple_of(3) {
        t += minute;
        assignment = Assignment {
            level: EscalationLevel::GridSupervisor as i32,
            responder_id: format!("{grid}-sup"),
            responder_role: 2,
            assigned_at: Some(to_timestamp(t)),
            ..assignment
        };
        incident.assignments = vec![assignment.clone()];
        incident.revision += 1;
        push(
            &incident,
            Change::Escalated(Escalated {
                track: Track::Community as i32,
                from_level: EscalationLevel::GridWorker as i32,
                to_level: EscalationLevel::GridSupervisor as i32,
                responder_id: assignment.responder_id.clone(),
                reason: "deadline".into(),
            }),
            t,
            k,
        );
        k += 1;
    }
    if n.is_multiple_of(5) {
        incident.event_count += 1;
        incident.revision += 1;
        push(
            &incident,
            Change::Attached(EventAttached {
                event_id: format!("{id}-press2"),
                kind: AttachKind::RepeatPress as i32,
                priority_before: 1,
                priority_after: 2,
            }),
            t,
            k,
        );
        k += 1;
    }
    t += 2 * minute;
    assignment.acknowledged_at = Some(to_timestamp(t));
    assignment.acknowledged_by = assignment.responder_id.clone();
    incident.assignments = vec![assignment.clone()];
    incident.acknowledged_at = Some(to_timestamp(t));
    incident.state = IncidentState::Acknowledged as i32;
    incident.revision += 1;
    push(
        &incident,
        Change::Acknowledged(Acknowledged {
            track: Track::Community as i32,
            responder_id: assignment.responder_id.clone(),
            acknowledged_by: assignment.responder_id.clone(),
        }),
        t,
        k,
    );
    k += 1;
    t += 10 * minute;
    incident.state = IncidentState::Closed as i32;
    incident.closed_at = Some(to_timestamp(t));
    incident.closed_by = assignment.responder_id.clone();
    incident.resolution = if n.is_multiple_of(4) {
        Resolution::FalseAlarm as i32
    } else {
        Resolution::Resolved as i32
    };
    incident.outcome = helpgrid_proto::outcome::outcome_of_resolution(
        Resolution::try_from(incident.resolution).unwrap_or_default(),
    ) as i32;
    incident.resolution_note = "吴某 helped".into();
    incident.revision += 1;
    push(
        &incident,
        Change::Closed(IncidentClosed {
            resolution: incident.resolution,
            note: incident.resolution_note.clone(),
            closed_by: incident.closed_by.clone(),
            outcome: incident.outcome,
        }),
        t,
        k,
    );
    events
}

/// Writes `events` keyed by grid, many in flight at once, each acknowledged by Kafka.
pub async fn produce(args: &KafkaArgs, topic: &str, events: &[IncidentEvent]) {
    let producer: FutureProducer = args
        .producer_config("archive-test")
        .create()
        .expect("producer");
    for chunk in events.chunks(2000) {
        let sends = chunk.iter().map(|event| {
            let key = event
                .incident
                .as_ref()
                .map(|i| i.grid_id.clone())
                .unwrap_or_default();
            let payload = event.encode_to_vec();
            let producer = producer.clone();
            let topic = topic.to_owned();
            async move {
                producer
                    .send(
                        FutureRecord::to(&topic).key(&key).payload(&payload),
                        Duration::from_secs(30),
                    )
                    .await
                    .map_err(|(e, _)| e)
                    .expect("delivered");
            }
        });
        futures::future::join_all(sends).await;
    }
}

/// Polls `query` (one bigint) until it returns `want`; panics after `limit`.
pub async fn wait_for_count(url: &str, query: &str, want: i64, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    let mut last = -1;
    loop {
        if let Ok(client) = helpgrid_archive::store::connect(url).await
            && let Ok(row) = client.query_one(query, &[]).await
        {
            last = row.get::<_, i64>(0);
            if last == want {
                return;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for `{query}` = {want}; last {last}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
