//! Tokens scoped by area level and the console by level, over the real server and broker: a
//! county's token lists, reads and watches the incidents of its towns' grids and is refused
//! the next county's; the console shows a town by community with live counts, and refuses an
//! area outside the token.
#![allow(clippy::unwrap_used)]

mod support;

use helpgrid_auth::Role;
use helpgrid_auth::areas::{AreaTree, parse_csv};
use helpgrid_proto::pb::{GetIncidentRequest, ListIncidentsRequest, WatchIncidentsRequest};
use helpgrid_status::config::StatusConfig;
use serde_json::Value;
use std::time::Duration;
use support::{TestKafka, assigned_incident, next_update, opened_event, test_key, token, within};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tonic::Code;

const T0: i64 = 1_764_000_000_000;

/// city → county-1 (town-1: comm-a with g-1, g-2; town-2: comm-b with g-3),
///        county-2 (town-3: comm-c with g-4).
const REGISTRY: &str = "area_id,parent_id,level,name\n\
    city,,city,City\n\
    county-1,city,county,County One\n\
    county-2,city,county,County Two\n\
    town-1,county-1,town,Town One\n\
    town-2,county-1,town,Town Two\n\
    town-3,county-2,town,Town Three\n\
    comm-a,town-1,community,Alpha\n\
    comm-b,town-2,community,Beta\n\
    comm-c,town-3,community,Gamma\n\
    g-1,comm-a,grid,G1\n\
    g-2,comm-a,grid,G2\n\
    g-3,comm-b,grid,G3\n\
    g-4,comm-c,grid,G4\n";

fn registry() -> AreaTree {
    AreaTree::from_areas(&parse_csv(REGISTRY).unwrap())
}

/// The first `snapshot` event of the console stream at `path`, or the HTTP status if refused.
async fn console_snapshot(port: u16, path: &str, token: &str) -> Result<Value, u16> {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut reader = BufReader::new(stream);
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\r\n");
    reader
        .get_mut()
        .write_all(request.as_bytes())
        .await
        .unwrap();
    let mut line = String::new();
    reader.read_line(&mut line).await.unwrap();
    let status: u16 = line[9..12].parse().unwrap();
    if status != 200 {
        return Err(status);
    }
    let mut snapshot = false;
    loop {
        line.clear();
        assert!(
            reader.read_line(&mut line).await.unwrap() > 0,
            "stream ended"
        );
        if line.trim_end() == "event: snapshot" {
            snapshot = true;
        } else if snapshot && let Some(data) = line.strip_prefix("data: ") {
            return Ok(serde_json::from_str(data).unwrap());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_county_token_sees_its_towns_grids_and_the_console_shows_a_town_by_community() {
    let kafka = TestKafka::new().await;
    let console_port = helpgrid_testkit::browser::free_port();
    let config = StatusConfig::new(kafka.args.clone())
        .with_auth(test_key())
        .with_areas(registry());
    let service = kafka.start_configured(config, Some(console_port)).await;
    let county = token("county-1 office", Role::Console, &["county-1"]);
    let mut incidents = service.incidents_as(&county);
    let mut watch = incidents
        .watch_incidents(WatchIncidentsRequest::default())
        .await
        .unwrap()
        .into_inner();

    for (id, grid, partition) in [("in-1", "g-1", 0), ("in-3", "g-3", 1), ("in-4", "g-4", 2)] {
        kafka
            .publish_event(
                partition,
                &opened_event(&assigned_incident(id, grid, "r1", T0)),
            )
            .await;
    }
    // The watch without grids covers the token's: in-1 and in-3 arrive, in-4 never does.
    let mut seen = Vec::new();
    for _ in 0..2 {
        let update = next_update(&mut watch).await;
        seen.push(update.event.and_then(|e| e.incident).unwrap().incident_id);
    }
    seen.sort();
    assert_eq!(seen, ["in-1", "in-3"]);
    assert!(
        tokio::time::timeout(Duration::from_millis(500), watch.message())
            .await
            .is_err(),
        "no event of county-2 reaches a county-1 token"
    );

    let listed: Vec<String> = within("the read model to hold both", async {
        loop {
            let page = incidents
                .list_incidents(ListIncidentsRequest::default())
                .await
                .unwrap()
                .into_inner();
            let mut ids: Vec<String> = page.incidents.into_iter().map(|i| i.incident_id).collect();
            ids.sort();
            if ids.len() >= 2 {
                return ids;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert_eq!(listed, ["in-1", "in-3"]);
    let other = incidents
        .get_incident(GetIncidentRequest {
            incident_id: "in-4".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(other.code(), Code::PermissionDenied, "{other:?}");
    let outside = incidents
        .list_incidents(ListIncidentsRequest {
            grid_ids: vec!["g-4".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(outside.code(), Code::PermissionDenied, "{outside:?}");
    // A town's token sees only that town.
    let town = token("town-2 office", Role::Console, &["town-2"]);
    let read = service
        .incidents_as(&town)
        .get_incident(GetIncidentRequest {
            incident_id: "in-1".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(read.code(), Code::PermissionDenied);

    // The console: county-1 by town, and town-1 by community, each child with its counts.
    let by_town = console_snapshot(console_port, "/console/events?area=county-1", &county)
        .await
        .unwrap();
    let breakdown = &by_town["breakdown"];
    assert_eq!(breakdown["name"], "County One");
    assert_eq!(breakdown["child_level"], "town");
    let counts: Vec<(String, u64)> = breakdown["children"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_owned(),
                c["open"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        counts,
        [("Town One".to_owned(), 1), ("Town Two".to_owned(), 1)]
    );
    let by_community = console_snapshot(console_port, "/console/events?area=town-1", &county)
        .await
        .unwrap();
    assert_eq!(by_community["breakdown"]["child_level"], "community");
    assert_eq!(
        by_community["breakdown"]["children"][0]["grids"],
        serde_json::json!(["g-1", "g-2"])
    );
    assert_eq!(by_community["incidents"].as_array().unwrap().len(), 1);
    assert_eq!(
        console_snapshot(console_port, "/console/events?area=county-2", &county).await,
        Err(403),
        "an area outside the token is refused"
    );
    assert_eq!(
        console_snapshot(console_port, "/console/events?area=%3Cscript%3E", &county).await,
        Err(400)
    );
    // The city's token shows the city by county.
    let city = token("city centre", Role::Console, &["city"]);
    let whole = console_snapshot(console_port, "/console/events?area=city", &city)
        .await
        .unwrap();
    let open: Vec<u64> = whole["breakdown"]["children"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["open"].as_u64().unwrap())
        .collect();
    assert_eq!(open, [2, 1], "County One, County Two");

    // The page itself, in Chromium: the county's screen has one row per town, and a press in
    // the second town while it is open moves that town's count live.
    let browser = helpgrid_testkit::browser::Browser::start().await;
    browser
        .open(&format!(
            "http://127.0.0.1:{console_port}/console/?token={county}&area=county-1"
        ))
        .await;
    const PER_TOWN: &str = "return [...document.querySelectorAll('#grid-rows tr')]\
        .map(r => [...r.cells].map(c => c.textContent).join('|')).join(' ; ');";
    browser
        .wait_for("a row per town", PER_TOWN, |v| {
            v.as_str()
                .is_some_and(|t| t.contains("Town One|") && t.contains("Town Two|"))
        })
        .await;
    let title = browser
        .eval("return document.getElementById('grids').textContent;")
        .await;
    assert_eq!(title.as_str(), Some("County One · county → town"));
    kafka
        .publish_event(
            1,
            &opened_event(&assigned_incident("in-5", "g-3", "r1", T0)),
        )
        .await;
    // Columns: area, today, open, closed. Town Two now has two open incidents.
    let rows = browser
        .wait_for("Town Two's count to move", PER_TOWN, |v| {
            v.as_str().is_some_and(|t| t.contains("Town Two|0|2|0"))
        })
        .await;
    assert!(
        rows.as_str().is_some_and(|t| t.contains("Town One|0|1|0")),
        "{rows}"
    );
    browser.quit().await;
    service.stop().await.unwrap();
}
