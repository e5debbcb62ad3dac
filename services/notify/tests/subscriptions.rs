//! The subscription API over a real socket: admins only, bad subscriptions explained, the
//! secret never shown, every instance sees every subscription (compacted topic), and stock
//! clients work: gRPC reflection, and Python's grpcio with its defaults.
//! Needs HELPGRID_TEST_KAFKA (scripts/test sets it).

mod support;

use helpgrid_auth::Role;
use helpgrid_proto::pb::notify_service_client::NotifyServiceClient;
use helpgrid_proto::pb::{
    DeleteSubscriptionRequest, GetSubscriptionRequest, ListSubscriptionsRequest, NotifyTrigger,
    PutSubscriptionRequest,
};
use helpgrid_testkit::WAIT;
use std::time::{Duration, Instant};
use support::{Notify, setup, subscription};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_manage_subscriptions_that_every_instance_sees() {
    let s = setup(vec![]).await;
    let first = Notify::start(&s.args, "api-1", &[]).await;
    let second = Notify::start(&s.args, "api-2", &[]).await;
    let sub = subscription(
        "sms-gw",
        "https://sms.example/hook",
        &[NotifyTrigger::Assigned],
    );

    // No token, a responder's token, a console's: refused with the right codes.
    let channel = tonic::transport::Channel::from_shared(first.grpc.clone())
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let anonymous = NotifyServiceClient::new(channel)
        .list_subscriptions(ListSubscriptionsRequest {})
        .await
        .expect_err("no token");
    assert_eq!(anonymous.code(), Code::Unauthenticated);
    assert!(
        anonymous.message().contains("authorization: Bearer"),
        "{}",
        anonymous.message()
    );
    for role in [Role::Responder, Role::Console, Role::Supervisor] {
        let denied = first
            .client(role)
            .await
            .put_subscription(PutSubscriptionRequest {
                subscription: Some(sub.clone()),
            })
            .await
            .expect_err("not an admin");
        assert_eq!(denied.code(), Code::PermissionDenied, "{role}");
    }

    let mut admin = first.client(Role::Admin).await;
    let mut short = sub.clone();
    short.secret = "short".into();
    let invalid = admin
        .put_subscription(PutSubscriptionRequest {
            subscription: Some(short),
        })
        .await
        .expect_err("short secret");
    assert_eq!(invalid.code(), Code::InvalidArgument);
    assert!(
        invalid.message().contains("at least 16 bytes"),
        "{}",
        invalid.message()
    );
    let mut bad_url = sub.clone();
    bad_url.url = "sms.example/hook".into();
    let invalid = admin
        .put_subscription(PutSubscriptionRequest {
            subscription: Some(bad_url),
        })
        .await
        .expect_err("relative url");
    assert_eq!(invalid.code(), Code::InvalidArgument);
    assert!(
        invalid.message().contains("http:// or https://"),
        "{}",
        invalid.message()
    );

    let stored = admin
        .put_subscription(PutSubscriptionRequest {
            subscription: Some(sub.clone()),
        })
        .await
        .expect("put")
        .into_inner();
    assert_eq!(stored.secret, "", "the secret is write-only");
    assert!(stored.has_secret);
    assert!(stored.updated_at.is_some());
    assert_eq!(stored.url, sub.url);

    // The other instance learns it from the compacted topic.
    let mut other = second.client(Role::Admin).await;
    let deadline = Instant::now() + WAIT;
    loop {
        match other
            .get_subscription(GetSubscriptionRequest {
                subscription_id: "sms-gw".into(),
            })
            .await
        {
            Ok(found) => {
                assert_eq!(found.into_inner(), stored);
                break;
            }
            Err(status) if status.code() == Code::NotFound && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(status) => panic!("the second instance never saw the subscription: {status}"),
        }
    }

    let deleted = admin
        .delete_subscription(DeleteSubscriptionRequest {
            subscription_id: "sms-gw".into(),
        })
        .await
        .expect("delete")
        .into_inner();
    assert!(deleted.deleted);
    let gone = admin
        .get_subscription(GetSubscriptionRequest {
            subscription_id: "sms-gw".into(),
        })
        .await
        .expect_err("deleted");
    assert_eq!(gone.code(), Code::NotFound);
    let deadline = Instant::now() + WAIT;
    while !other
        .list_subscriptions(ListSubscriptionsRequest {})
        .await
        .expect("list")
        .into_inner()
        .subscriptions
        .is_empty()
    {
        assert!(
            Instant::now() < deadline,
            "the delete never reached the second instance"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    first.process.terminate(WAIT);
    second.process.terminate(WAIT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_clients_find_and_call_the_api() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let s = setup(vec![]).await;
    let notify = Notify::start(&s.args, "stock", &[]).await;

    // Reflection (what grpcurl and Postman use): the service is listed without a token.
    let channel = tonic::transport::Channel::from_shared(notify.grpc.clone())
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection")
        .into_inner();
    let listed = match responses
        .message()
        .await
        .expect("response")
        .and_then(|r| r.message_response)
    {
        Some(MessageResponse::ListServicesResponse(list)) => {
            list.service.into_iter().map(|s| s.name).collect::<Vec<_>>()
        }
        other => panic!("unexpected reflection answer {other:?}"),
    };
    assert!(
        listed.contains(&"helpgrid.v1.NotifyService".to_owned()),
        "{listed:?}"
    );
    // And through reflection v1alpha, which older grpcurl, grpc_cli, Postman, Evans and
    // Python's grpcio-reflection ask for.
    {
        use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
        use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
        let channel = tonic::transport::Channel::from_shared(notify.grpc.clone())
            .expect("uri")
            .connect()
            .await
            .expect("connect");
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let answer = ServerReflectionClient::new(channel)
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .expect("reflection v1alpha")
            .into_inner()
            .message()
            .await
            .expect("response")
            .and_then(|r| r.message_response);
        let listed: Vec<String> = match answer {
            Some(MessageResponse::ListServicesResponse(list)) => {
                list.service.into_iter().map(|s| s.name).collect()
            }
            other => panic!("unexpected reflection v1alpha answer {other:?}"),
        };
        assert!(
            listed.contains(&"helpgrid.v1.NotifyService".to_owned()),
            "{listed:?}"
        );
    }

    // Python's grpcio (C core), messages built from the published descriptors.
    let dir = std::env::temp_dir().join(format!(
        "helpgrid-notify-py-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).expect("dir");
    let descriptors = dir.join("helpgrid.fds");
    std::fs::write(&descriptors, helpgrid_proto::FILE_DESCRIPTOR_SET).expect("descriptors");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/grpc_client.py");
    let output = tokio::process::Command::new("/usr/bin/python3")
        .arg(script)
        .arg(notify.grpc.trim_start_matches("http://"))
        .arg(&descriptors)
        .arg(notify.token(Role::Admin))
        .arg(notify.token(Role::Responder))
        .output()
        .await
        .expect("run python3 (Debian's python3-grpcio and python3-protobuf)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "python client failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        [
            "put py-hook has_secret=True secret=''",
            "list ['py-hook']",
            "responder PERMISSION_DENIED",
            "bad INVALID_ARGUMENT",
            "unknown admin UNIMPLEMENTED",
            "unknown anonymous UNIMPLEMENTED",
        ]
    );
    let mut admin = notify.client(Role::Admin).await;
    let seen = admin
        .get_subscription(GetSubscriptionRequest {
            subscription_id: "py-hook".into(),
        })
        .await
        .expect("the python client's subscription")
        .into_inner();
    assert_eq!(
        seen.triggers,
        [NotifyTrigger::Assigned as i32, NotifyTrigger::Closed as i32]
    );
    notify.process.terminate(WAIT);
}
