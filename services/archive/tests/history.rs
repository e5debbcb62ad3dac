//! History and reports over gRPC: the real archive process on a socket, real PostgreSQL and
//! Kafka, tokens from helpgrid-auth.

mod support;

use helpgrid_archive::config::ArchiveConfig;
use helpgrid_archive::{Listeners, rollup, run};
use helpgrid_auth::{Bearer, Role, TokenKey};
use helpgrid_common::time::{now_millis, to_timestamp};
use helpgrid_common::topics::{Topics, ensure_topics};
use helpgrid_proto::pb::history_service_client::HistoryServiceClient;
use helpgrid_proto::pb::report_service_client::ReportServiceClient;
use helpgrid_proto::pb::{
    EscalationLevel, GetIncidentHistoryRequest, IncidentEvent, IncidentOutcome, IncidentState,
    ListHistoryRequest, ReportBucket, ReportRequest,
};
use helpgrid_testkit::kafka_args;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use support::{fresh_database, incident_story, produce, server_url, wait_for_count};
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

const DAY: i64 = 86_400_000;
const MINUTE: i64 = 60_000;
/// Incidents in the test: n = 0..COUNT, grid g-(n % 4), opened START + n hours.
const COUNT: usize = 48;

/// The test city: two towns of one county, a community of two grids in each.
const AREAS: &str = "area_id,parent_id,level,name
ankang,,city,安康市
hanbin,ankang,county,汉滨区
town-1,hanbin,town,老城街道
town-2,hanbin,town,新城街道
comm-1,town-1,community,西城社区
comm-2,town-2,community,东坝社区
g-0,comm-1,grid,网格0
g-1,comm-1,grid,网格1
g-2,comm-2,grid,网格2
g-3,comm-2,grid,网格3
";

struct Served {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    addr: String,
    page: String,
    key: Arc<TokenKey>,
    start: i64,
    events: Vec<IncidentEvent>,
}

async fn serve_archive() -> Served {
    helpgrid_common::telemetry::init_tracing();
    let kafka = kafka_args();
    let topics = Topics::with_prefix(&kafka.topic_prefix);
    ensure_topics(&kafka, &topics).await.expect("topics");
    let url = fresh_database(&server_url()).await;
    // Midnight UTC ten days ago, so the day buckets are predictable.
    let start = (now_millis() / DAY - 10) * DAY;
    let events: Vec<IncidentEvent> = (0..COUNT)
        .flat_map(|n| incident_story(n, &format!("g-{}", n % 4), start + n as i64 * 60 * MINUTE))
        .collect();
    produce(&kafka, &topics.incident_events, &events).await;
    let key = Arc::new(TokenKey::from_secret(b"archive-test-key-archive-test-key").expect("key"));
    let mut config = ArchiveConfig::new(kafka, url.clone());
    config.token_key = Some(Arc::clone(&key));
    config.areas = helpgrid_archive::areas::parse_csv(AREAS).expect("areas");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = format!("http://{}", listener.local_addr().expect("addr"));
    let http = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let page = format!("http://{}", http.local_addr().expect("addr"));
    let stop = CancellationToken::new();
    let task = tokio::spawn(run(
        config,
        Listeners {
            grpc: Some(listener),
            http: Some(http),
            ..Listeners::default()
        },
        None,
        stop.clone().cancelled_owned(),
    ));
    wait_for_count(
        &url,
        "SELECT count(*) FROM incident_events",
        events.len() as i64,
        Duration::from_secs(60),
    )
    .await;
    Served {
        stop,
        task,
        addr,
        page,
        key,
        start,
        events,
    }
}

impl Served {
    fn raw_token(&self, role: Role, grids: &[&str]) -> String {
        let grids: Vec<String> = grids.iter().map(|g| (*g).to_owned()).collect();
        self.key
            .mint("tester", role, &grids, Duration::from_secs(300))
            .expect("mint")
    }

    fn token(&self, role: Role, grids: &[&str]) -> Bearer {
        Bearer::new(&self.raw_token(role, grids)).expect("bearer")
    }

    async fn history(
        &self,
        bearer: Bearer,
    ) -> HistoryServiceClient<InterceptedService<Channel, Bearer>> {
        let channel = Channel::from_shared(self.addr.clone())
            .expect("uri")
            .connect()
            .await
            .expect("connect");
        HistoryServiceClient::with_interceptor(channel, bearer)
    }

    async fn reports(
        &self,
        bearer: Bearer,
    ) -> ReportServiceClient<InterceptedService<Channel, Bearer>> {
        let channel = Channel::from_shared(self.addr.clone())
            .expect("uri")
            .connect()
            .await
            .expect("connect");
        ReportServiceClient::with_interceptor(channel, bearer)
    }

    fn all_time(&self) -> ListHistoryRequest {
        ListHistoryRequest {
            from: Some(to_timestamp(self.start - DAY)),
            to: Some(to_timestamp(now_millis() + DAY)),
            ..ListHistoryRequest::default()
        }
    }

    async fn stop(self) {
        self.stop.cancel();
        self.task.await.expect("join").expect("archive ran");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_pages_filters_scopes_and_audit_trails() {
    let served = serve_archive().await;
    let mut console = served
        .history(served.token(Role::Console, &["g-0", "g-1"]))
        .await;

    // Paging through the caller's grids: every incident of g-0 and g-1 once, newest first.
    let mut seen = Vec::new();
    let mut request = served.all_time();
    request.page_size = 7;
    loop {
        let page = console
            .list_incidents(request.clone())
            .await
            .expect("list")
            .into_inner();
        assert!(page.incidents.len() <= 7);
        for a in &page.incidents {
            let i = a.incident.as_ref().expect("incident");
            assert!(i.grid_id == "g-0" || i.grid_id == "g-1", "{}", i.grid_id);
            seen.push((
                i.opened_at.as_ref().expect("opened").seconds,
                i.incident_id.clone(),
            ));
        }
        if page.next_page_token.is_empty() {
            break;
        }
        request.page_token = page.next_page_token;
    }
    assert_eq!(seen.len(), COUNT / 2);
    let unique: HashSet<&String> = seen.iter().map(|(_, id)| id).collect();
    assert_eq!(unique.len(), COUNT / 2, "no incident twice across pages");
    assert!(seen.windows(2).all(|w| w[0] >= w[1]), "newest first");

    // Filters: one grid, closed as false alarms (every fourth incident: all in g-0).
    let mut request = served.all_time();
    request.area_id = "g-0".into();
    request.resolution = 3;
    let false_alarms = console
        .list_incidents(request)
        .await
        .expect("list")
        .into_inner();
    assert_eq!(false_alarms.incidents.len(), COUNT / 4);
    // The same by outcome.
    let mut request = served.all_time();
    request.area_id = "g-0".into();
    request.outcome = IncidentOutcome::FalseAlarm as i32;
    let by_outcome = console
        .list_incidents(request)
        .await
        .expect("list")
        .into_inner();
    assert_eq!(by_outcome.incidents.len(), COUNT / 4);
    assert!(by_outcome.incidents.iter().all(|a| {
        a.incident
            .as_ref()
            .is_some_and(|i| i.outcome == IncidentOutcome::FalseAlarm as i32)
    }));
    let mut request = served.all_time();
    request.outcome = 99;
    let refused = console.list_incidents(request).await.expect_err("refused");
    assert_eq!(refused.code(), Code::InvalidArgument);
    let mut request = served.all_time();
    request.camera_label = 4; // fire: n.is_multiple_of(7), in g-0 or g-1 when n % 4 < 2
    let fires = console
        .list_incidents(request)
        .await
        .expect("list")
        .into_inner();
    let want = (0..COUNT)
        .filter(|n| n.is_multiple_of(7) && n % 4 < 2)
        .count();
    assert_eq!(fires.incidents.len(), want);

    // Out of scope, bad range, wrong role, no token.
    let mut request = served.all_time();
    request.area_id = "g-3".into();
    let refused = console.list_incidents(request).await.expect_err("refused");
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert!(
        refused.message().contains("area g-3 is outside your grids"),
        "{}",
        refused.message()
    );
    let mut request = served.all_time();
    request.to = request.from;
    let refused = console.list_incidents(request).await.expect_err("refused");
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(refused.message().contains("`from` must be before `to`"));
    let mut responder = served
        .history(served.token(Role::Responder, &["g-0"]))
        .await;
    let refused = responder
        .list_incidents(served.all_time())
        .await
        .expect_err("refused");
    assert_eq!(refused.code(), Code::PermissionDenied);
    let mut anonymous = served.history(Bearer::anonymous()).await;
    let refused = anonymous
        .list_incidents(served.all_time())
        .await
        .expect_err("refused");
    assert_eq!(refused.code(), Code::Unauthenticated);

    // The audit trail of one incident is every event, in order, as the router wrote it.
    let first = served.events[0]
        .incident
        .as_ref()
        .expect("incident")
        .incident_id
        .clone();
    let history = console
        .get_incident_history(GetIncidentHistoryRequest {
            incident_id: first.clone(),
        })
        .await
        .expect("history")
        .into_inner();
    let wanted: Vec<&IncidentEvent> = served
        .events
        .iter()
        .filter(|e| e.incident.as_ref().is_some_and(|i| i.incident_id == first))
        .collect();
    assert_eq!(history.events.iter().collect::<Vec<_>>(), wanted);
    let archived = history.incident.expect("incident");
    assert_eq!(
        archived.incident.as_ref().map(|i| i.state),
        Some(IncidentState::Closed as i32)
    );
    assert_eq!(
        archived.settled_level,
        EscalationLevel::GridSupervisor as i32
    );
    assert_eq!((archived.escalations, archived.repeat_presses), (1, 1));
    let g3 = served
        .events
        .iter()
        .filter_map(|e| e.incident.as_ref())
        .find(|i| i.grid_id == "g-3")
        .expect("an incident in g-3")
        .incident_id
        .clone();
    let refused = console
        .get_incident_history(GetIncidentHistoryRequest { incident_id: g3 })
        .await
        .expect_err("refused");
    assert_eq!(refused.code(), Code::PermissionDenied);
    let missing = console
        .get_incident_history(GetIncidentHistoryRequest {
            incident_id: "no-such".into(),
        })
        .await
        .expect_err("missing");
    assert_eq!(missing.code(), Code::NotFound);

    // Tokens scoped by area level: a town's token reads its community's grids (g-0, g-1)
    // and nothing of the other town; the county's token reads both towns.
    let mut town = served
        .history(served.token(Role::Supervisor, &["town-1"]))
        .await;
    let mut all = served.all_time();
    all.page_size = 1000;
    let listed = town
        .list_incidents(all.clone())
        .await
        .expect("list")
        .into_inner()
        .incidents;
    assert_eq!(listed.len(), COUNT / 2);
    assert!(listed.iter().all(|a| {
        a.incident
            .as_ref()
            .is_some_and(|i| i.grid_id == "g-0" || i.grid_id == "g-1")
    }));
    let mut other_town = all.clone();
    other_town.area_id = "town-2".into();
    let refused = town.list_incidents(other_town).await.expect_err("refused");
    assert_eq!(refused.code(), Code::PermissionDenied);
    let g3 = served
        .events
        .iter()
        .filter_map(|e| e.incident.as_ref())
        .find(|i| i.grid_id == "g-3")
        .expect("an incident in g-3")
        .incident_id
        .clone();
    let refused = town
        .get_incident_history(GetIncidentHistoryRequest {
            incident_id: g3.clone(),
        })
        .await
        .expect_err("refused");
    assert_eq!(refused.code(), Code::PermissionDenied);
    let mut county = served
        .history(served.token(Role::Console, &["hanbin"]))
        .await;
    let listed = county
        .list_incidents(all)
        .await
        .expect("list")
        .into_inner()
        .incidents;
    assert_eq!(listed.len(), COUNT);
    assert!(
        county
            .get_incident_history(GetIncidentHistoryRequest { incident_id: g3 })
            .await
            .is_ok()
    );
    let mut town_reports = served
        .reports(served.token(Role::Supervisor, &["town-1"]))
        .await;
    let report = town_reports
        .get_report(ReportRequest {
            from: Some(to_timestamp(served.start)),
            to: Some(to_timestamp(served.start + 3 * DAY)),
            area_id: String::new(),
            bucket: ReportBucket::Day as i32,
        })
        .await
        .expect("report")
        .into_inner();
    assert_eq!(report.total.expect("total").requests, COUNT as u64 / 2);
    let refused = town_reports
        .get_report(ReportRequest {
            from: Some(to_timestamp(served.start)),
            to: Some(to_timestamp(served.start + 3 * DAY)),
            area_id: "hanbin".into(),
            bucket: ReportBucket::Day as i32,
        })
        .await
        .expect_err("refused");
    assert_eq!(refused.code(), Code::PermissionDenied);
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_counts_what_happened_by_the_published_definitions() {
    let served = serve_archive().await;
    let mut admin = served.reports(served.token(Role::Admin, &["*"])).await;
    let report = admin
        .get_report(ReportRequest {
            from: Some(to_timestamp(served.start)),
            to: Some(to_timestamp(served.start + 3 * DAY)),
            area_id: String::new(),
            bucket: ReportBucket::Day as i32,
        })
        .await
        .expect("report")
        .into_inner();
    let total = report.total.expect("total");
    let n = || 0..COUNT;
    assert_eq!(total.requests, COUNT as u64);
    assert_eq!(
        total.camera_requests,
        n().filter(|n| n.is_multiple_of(7)).count() as u64
    );
    assert_eq!(total.closed, COUNT as u64);
    let resolved = n().filter(|n| !n.is_multiple_of(4)).count() as u64;
    assert_eq!(total.resolved, resolved);
    assert!((total.resolution_rate - resolved as f64 / COUNT as f64).abs() < 1e-9);
    assert_eq!(
        total.escalations,
        n().filter(|n| n.is_multiple_of(3)).count() as u64
    );
    assert_eq!(
        total.repeat_presses,
        n().filter(|n| n.is_multiple_of(5)).count() as u64
    );
    // Acknowledged 2 minutes after opening, 3 when escalated first (16 of 48): p50 2 min,
    // p90 3 min. Closed 10 minutes after that. Reported as the upper bound of the histogram
    // bucket holding the value (README, "Report definitions"): at most 12.5 % above it.
    let reported = |minutes: i64| rollup::upper_bound(rollup::bucket(minutes * MINUTE));
    assert_eq!(
        (total.ack_p50_ms, total.ack_p90_ms),
        (reported(2), reported(3))
    );
    assert_eq!(
        (total.close_p50_ms, total.close_p90_ms),
        (reported(12), reported(13))
    );
    assert!(reported(2) >= 2 * MINUTE as u64 && reported(2) < 135_000);
    let supervisor = total
        .settled_at
        .iter()
        .find(|l| l.level == EscalationLevel::GridSupervisor as i32)
        .expect("supervisor share");
    assert_eq!(supervisor.settled, 16);
    assert!((supervisor.share - 16.0 / 48.0).abs() < 1e-9);
    // Outcomes: every fourth a false alarm, the rest resolved on the spot; every outcome is
    // listed, zeros included, and only the resolving ones count as resolved.
    let ended = |o: IncidentOutcome| {
        total
            .by_outcome
            .iter()
            .find(|c| c.outcome == o as i32)
            .map(|c| c.closed)
    };
    let false_alarms = n().filter(|n| n.is_multiple_of(4)).count() as u64;
    assert_eq!(ended(IncidentOutcome::FalseAlarm), Some(false_alarms));
    assert_eq!(
        ended(IncidentOutcome::ResolvedOnSpot),
        Some(COUNT as u64 - false_alarms)
    );
    assert_eq!(ended(IncidentOutcome::Mediated), Some(0));
    assert_eq!(total.by_outcome.len(), 6);
    assert_eq!(total.resolved, COUNT as u64 - false_alarms);
    // One incident an hour from midnight: 24 on each of two days.
    let per_day: Vec<u64> = report
        .series
        .iter()
        .map(|p| p.figures.as_ref().map_or(0, |f| f.requests))
        .collect();
    assert_eq!(per_day, [24, 24]);
    assert_eq!(
        report.series[0].start.as_ref().map(|t| t.seconds * 1000),
        Some(served.start)
    );

    // A console of two grids gets their figures only; a period too long is refused.
    let mut console = served
        .reports(served.token(Role::Console, &["g-0", "g-1"]))
        .await;
    let scoped = console
        .get_report(ReportRequest {
            from: Some(to_timestamp(served.start)),
            to: Some(to_timestamp(served.start + 3 * DAY)),
            ..ReportRequest::default()
        })
        .await
        .expect("report")
        .into_inner();
    assert_eq!(scoped.total.map(|t| t.requests), Some(COUNT as u64 / 2));

    // Any administrative level: a town covers its communities' grids; a county reaching
    // outside the console's grids is refused.
    let town = |area: &str| ReportRequest {
        from: Some(to_timestamp(served.start)),
        to: Some(to_timestamp(served.start + 3 * DAY)),
        area_id: area.into(),
        bucket: ReportBucket::Month as i32,
    };
    let by_town = console
        .get_report(town("town-1"))
        .await
        .expect("report")
        .into_inner();
    assert_eq!(by_town.total.map(|t| t.requests), Some(COUNT as u64 / 2));
    let county = admin
        .get_report(town("hanbin"))
        .await
        .expect("report")
        .into_inner();
    assert_eq!(county.total.map(|t| t.requests), Some(COUNT as u64));
    let refused = console
        .get_report(town("hanbin"))
        .await
        .expect_err("refused");
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert!(
        refused
            .message()
            .contains("area hanbin is outside your grids")
    );
    let refused = console
        .get_report(ReportRequest {
            from: Some(to_timestamp(0)),
            to: Some(to_timestamp(now_millis())),
            ..ReportRequest::default()
        })
        .await
        .expect_err("refused");
    assert_eq!(refused.code(), Code::InvalidArgument);
    served.stop().await;
}

/// `curl` (a client we did not write): status code and body.
fn curl(url: &str, token: Option<&str>) -> (u16, String) {
    let mut command = std::process::Command::new("curl");
    command.args(["-s", "-w", "\n%{http_code}"]);
    if let Some(token) = token {
        command.args(["-H", &format!("authorization: Bearer {token}")]);
    }
    let out = command.arg(url).output().expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').expect("status line");
    (code.trim().parse().expect("status code"), body.to_owned())
}

fn date(ms: i64) -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "-d", &format!("@{}", ms / 1000), "+%F"])
        .output()
        .expect("date");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_page_draws_its_charts_in_chromium_and_the_csv_exports_with_curl() {
    let served = serve_archive().await;
    let (from, to) = (date(served.start), date(served.start + DAY));
    let query = format!("from={from}&to={to}&bucket=day");
    let console = served.raw_token(Role::Console, &["g-0", "g-1"]);

    // CSV with curl: a row per day, then the total of the console's two grids.
    let (code, csv) = curl(
        &format!("{}/reports/export.csv?{query}", served.page),
        Some(&console),
    );
    assert_eq!(code, 200, "{csv}");
    let lines: Vec<&str> = csv.lines().collect();
    assert!(lines[0].starts_with("bucket_start,requests,button,camera,closed,resolved,"));
    assert_eq!(lines.len(), 4, "header, two days, total: {csv}");
    assert!(lines[1].starts_with(&format!("{from},12,")), "{}", lines[1]);
    assert!(lines[3].starts_with("total,24,"), "{}", lines[3]);
    assert!(
        !csv.contains("hh-") && !csv.contains("dev-"),
        "no personal data in a report"
    );
    let (code, body) = curl(&format!("{}/reports/export.csv?{query}", served.page), None);
    assert_eq!(code, 401, "{body}");
    let (code, body) = curl(
        &format!("{}/reports/export.csv?from=yesterday&to={to}", served.page),
        Some(&console),
    );
    assert_eq!((code, body.contains("YYYY-MM-DD")), (400, true), "{body}");
    let (code, body) = curl(
        &format!("{}/reports/data.json?{query}&area=g-3", served.page),
        Some(&console),
    );
    assert_eq!(
        (code, body.contains("outside your grids")),
        (403, true),
        "{body}"
    );

    // The page in a real headless Chromium: the token goes to a cookie, the charts are SVG.
    let browser = helpgrid_testkit::browser::Browser::start().await;
    let admin = served.raw_token(Role::Admin, &["*"]);
    browser
        .open(&format!("{}/reports?token={admin}&{query}", served.page))
        .await;
    browser
        .wait_for(
            "the report to load",
            "return document.body.dataset.loaded || null;",
            |v| v.as_str() == Some("48"),
        )
        .await;
    let url = browser.eval("return location.href;").await;
    assert!(
        !url.as_str().unwrap_or_default().contains("token="),
        "the token left the address bar: {url}"
    );
    let bars = browser
        .eval("return document.querySelectorAll('#c-requests rect').length;")
        .await;
    assert_eq!(bars.as_i64(), Some(6), "three bars for each of two days");
    let lines = browser
        .eval("return document.querySelectorAll('#c-times polyline').length;")
        .await;
    assert_eq!(lines.as_i64(), Some(4));
    let rate = browser
        .eval("return document.getElementById('t-rate').textContent;")
        .await;
    assert_eq!(rate.as_str(), Some("75.00 %"));
    // Outcomes: one row each; every fourth incident a false alarm (12 of 48).
    let outcomes = browser
        .eval(
            "return [...document.querySelectorAll('#outcomes tr[data-outcome]')]\
             .map(r => r.dataset.outcome + '=' + r.cells[1].textContent).join(' ');",
        )
        .await;
    assert_eq!(
        outcomes.as_str(),
        Some(
            "resolved_on_spot=36 mediated=0 referred_to_town=0 referred_to_police=0 \
             false_alarm=12 nobody_there=0"
        )
    );
    let text = browser.eval("return document.body.innerText;").await;
    let text = text.as_str().unwrap_or_default();
    assert!(
        !text.contains("hh-") && !text.contains("吴某"),
        "no personal data on the page"
    );
    let screenshot = browser.screenshot_png().await;
    assert!(screenshot.starts_with(b"\x89PNG"), "a PNG screenshot");
    let artifacts =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/artifacts");
    std::fs::create_dir_all(&artifacts).expect("artifacts folder");
    std::fs::write(artifacts.join("report-page.png"), &screenshot).expect("save screenshot");
    browser.quit().await;
    served.stop().await;
}

/// The stock client, pinned (the same as the status service's stock-client test).
const GRPCIO: &[&str] = &["grpcio==1.85.1", "grpcio-reflection==1.85.1"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpcio_finds_the_archive_by_reflection_v1alpha_and_gets_unimplemented_for_an_unknown_method()
 {
    let python = tokio::task::spawn_blocking(|| helpgrid_testkit::python::venv("grpcio", GRPCIO));
    let served = serve_archive().await;
    let python = python.await.expect("venv");
    let script = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/clients/grpcio_reflection.py");
    let address = served.addr.trim_start_matches("http://").to_owned();
    let out = tokio::task::spawn_blocking(move || {
        helpgrid_testkit::python::run_script(&python, &script, &[&address])
    })
    .await
    .expect("script");
    // The script exits non-zero on a failed check; these lines say each one ran.
    for line in [
        "ok: reflection v1alpha lists the services",
        "ok: methods: ",
        "ok: unknown method: StatusCode.UNIMPLEMENTED",
    ] {
        assert!(out.contains(line), "missing {line:?} in:\n{out}");
    }
    served.stop().await;
}
