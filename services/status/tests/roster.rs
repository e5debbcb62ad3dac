//! RosterService against a real broker: writes land on the roster topic as full records and
//! read back through this and later instances.
#![allow(clippy::unwrap_used)]

mod support;

use helpgrid_common::reader::{Feed, follow};
use helpgrid_proto::pb::{
    GeoPoint, GetResponderRequest, ListRespondersRequest, Responder, ResponderRole, RosterRecord,
    SetDutyRequest, UpdateLocationRequest, UpsertResponderRequest,
};
use prost::Message;
use std::collections::HashMap;
use std::time::Duration;
use support::{TestKafka, within};
use tokio_util::sync::CancellationToken;
use tonic::Code;

fn grid_worker(id: &str, grids: &[&str]) -> Responder {
    Responder {
        responder_id: id.into(),
        display_name: "吴某".into(),
        role: ResponderRole::GridWorker as i32,
        grid_ids: grids.iter().map(|g| (*g).to_owned()).collect(),
        on_duty: false,
        ..Default::default()
    }
}

/// The roster topic read as a table, the way the router reads it.
async fn roster_topic_table(kafka: &TestKafka) -> HashMap<String, RosterRecord> {
    let stop = CancellationToken::new();
    let mut feed = follow(
        &kafka.args,
        "status-test-roster-check",
        &kafka.topics.roster,
        stop.clone(),
    )
    .await
    .unwrap();
    let mut table = HashMap::new();
    while let Some(Feed::Record(record)) = within("the roster topic", feed.recv()).await {
        let key = String::from_utf8(record.key.unwrap()).unwrap();
        table.insert(
            key,
            RosterRecord::decode(record.payload.unwrap().as_slice()).unwrap(),
        );
    }
    stop.cancel();
    table
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upsert_get_list_set_duty_and_update_location_round_trip_through_the_roster_topic() {
    let kafka = TestKafka::new().await;
    let service = kafka.start_service(Duration::from_secs(10)).await;
    let mut roster = service.roster();

    let written = roster
        .upsert_responder(UpsertResponderRequest {
            responder: Some(grid_worker("r1", &["g1", "g2"])),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(written, grid_worker("r1", &["g1", "g2"]));
    roster
        .upsert_responder(UpsertResponderRequest {
            responder: Some(grid_worker("r2", &["g2"])),
        })
        .await
        .unwrap();

    // Read-your-writes: the table has read the record back before Upsert answered.
    let got = roster
        .get_responder(GetResponderRequest {
            responder_id: "r1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, written);
    let ids = |list: Vec<Responder>| list.into_iter().map(|r| r.responder_id).collect::<Vec<_>>();
    let in_g1 = roster
        .list_responders(ListRespondersRequest {
            grid_id: "g1".into(),
            on_duty_only: false,
        })
        .await
        .unwrap();
    assert_eq!(ids(in_g1.into_inner().responders), ["r1"]);
    let all = roster
        .list_responders(ListRespondersRequest::default())
        .await
        .unwrap();
    assert_eq!(ids(all.into_inner().responders), ["r1", "r2"]);
    let on_duty = roster
        .list_responders(ListRespondersRequest {
            grid_id: String::new(),
            on_duty_only: true,
        })
        .await
        .unwrap();
    assert!(on_duty.into_inner().responders.is_empty());

    let on = roster
        .set_duty(SetDutyRequest {
            responder_id: "r1".into(),
            on_duty: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        on,
        Responder {
            on_duty: true,
            ..written.clone()
        }
    );
    let on_duty = roster
        .list_responders(ListRespondersRequest {
            grid_id: "g2".into(),
            on_duty_only: true,
        })
        .await
        .unwrap();
    assert_eq!(ids(on_duty.into_inner().responders), ["r1"]);

    let here = GeoPoint {
        latitude: 32.68,
        longitude: 109.03,
    };
    let moved = roster
        .update_location(UpdateLocationRequest {
            responder_id: "r1".into(),
            location: Some(here),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(moved.last_location, Some(here));
    assert!(moved.location_updated_at.is_some());
    assert!(moved.on_duty, "a location update keeps the duty change");
    let got = roster
        .get_responder(GetResponderRequest {
            responder_id: "r1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, moved);

    // The topic holds the full latest record, as the router will read it.
    let table = roster_topic_table(&kafka).await;
    let record = &table["r1"];
    assert_eq!(record.responder.as_ref(), Some(&moved));
    assert_eq!(
        record.envelope.as_ref().map(|e| e.source.as_str()),
        Some("helpgrid-status")
    );
    assert_eq!(
        table["r2"].responder.as_ref().map(|r| r.grid_ids.clone()),
        Some(vec!["g2".to_owned()])
    );

    // A fresh instance rebuilds the same table from the topic.
    service.stop().await.unwrap();
    let restarted = kafka.start_service(Duration::from_secs(10)).await;
    let got = restarted
        .roster()
        .get_responder(GetResponderRequest {
            responder_id: "r1".into(),
        })
        .await
        .unwrap();
    assert_eq!(got.into_inner(), moved);
    restarted.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_responders_are_not_found_and_invalid_writes_are_refused_without_publishing() {
    let kafka = TestKafka::new().await;
    let service = kafka.start_service(Duration::from_secs(10)).await;
    let mut roster = service.roster();

    let missing = roster
        .set_duty(SetDutyRequest {
            responder_id: "ghost".into(),
            on_duty: true,
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    assert!(missing.message().contains("ghost"), "{}", missing.message());
    let missing = roster
        .get_responder(GetResponderRequest {
            responder_id: "ghost".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    let moved = UpdateLocationRequest {
        responder_id: "ghost".into(),
        location: Some(GeoPoint::default()),
    };
    assert_eq!(
        roster.update_location(moved).await.unwrap_err().code(),
        Code::NotFound
    );

    let no_role = Responder {
        role: ResponderRole::Unspecified as i32,
        ..grid_worker("r1", &["g1"])
    };
    let refused = roster
        .upsert_responder(UpsertResponderRequest {
            responder: Some(no_role),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused.message().contains("responder.role"),
        "{}",
        refused.message()
    );
    let no_grids = grid_worker("r1", &[]);
    let refused = roster
        .upsert_responder(UpsertResponderRequest {
            responder: Some(no_grids),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    let long_id = grid_worker(&"r".repeat(129), &["g1"]);
    assert_eq!(
        roster
            .upsert_responder(UpsertResponderRequest {
                responder: Some(long_id)
            })
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
    let off_the_map = UpdateLocationRequest {
        responder_id: "r1".into(),
        location: Some(GeoPoint {
            latitude: 120.0,
            longitude: 0.0,
        }),
    };
    assert_eq!(
        roster
            .update_location(off_the_map)
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );

    assert_eq!(
        kafka.records_in(&kafka.topics.roster),
        0,
        "nothing may be published for refused writes"
    );
    service.stop().await.unwrap();
}
