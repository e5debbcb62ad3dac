//! The admin-only DeviceService over a real socket, with tokens from services/auth: admins
//! register, update, disable and list; anyone else is refused with the right status.

mod support;

use helpgrid_auth::{Role, TokenKey};
use helpgrid_gateway::config::GatewayConfig;
use helpgrid_proto::pb::device_service_client::DeviceServiceClient;
use helpgrid_proto::pb::{
    DeviceHealthRequest, DeviceKind, DisableDeviceRequest, ListDevicesRequest, MaintenanceReason,
    RegisterDeviceRequest,
};
use std::sync::Arc;
use std::time::Duration;
use support::*;
use tonic::Code;

const SECRET: &[u8] = b"device-service-test-secret-of-32-bytes-at-least";

fn token(key: &TokenKey, role: Role) -> String {
    key.mint("someone", role, &["*".to_owned()], Duration::from_secs(600))
        .expect("token")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_admins_manage_devices_and_changes_reach_the_registry() {
    let (args, _topics) = setup(vec![], &[]).await;
    let key = TokenKey::from_secret(SECRET).expect("key");
    let mut config = GatewayConfig::new(args.clone());
    config.grpc = Some((
        "127.0.0.1:0".parse().expect("addr"),
        Arc::new(TokenKey::from_secret(SECRET).expect("key")),
    ));
    let gateway = RunningGateway::start(config).await;
    let addr = gateway.bound.grpc.expect("grpc address");
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let as_role = |role: Option<Role>| {
        let bearer = match role {
            Some(r) => helpgrid_auth::Bearer::new(&token(&key, r)).expect("bearer"),
            None => helpgrid_auth::Bearer::anonymous(),
        };
        DeviceServiceClient::with_interceptor(channel.clone(), bearer)
    };
    let mut admin = as_role(Some(Role::Admin));
    let device = button("btn-9", "h-9", "g9", DeviceKind::ZigbeeButton);

    let refused = as_role(Some(Role::Supervisor))
        .register_device(RegisterDeviceRequest {
            device: Some(device.clone()),
        })
        .await
        .expect_err("a supervisor may not");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let refused = as_role(None)
        .list_devices(ListDevicesRequest::default())
        .await
        .expect_err("anonymous may not");
    assert_eq!(refused.code(), Code::Unauthenticated);
    let mut bad = device.clone();
    bad.household_id.clear();
    let refused = admin
        .register_device(RegisterDeviceRequest { device: Some(bad) })
        .await
        .expect_err("a button without a household");
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused.message().contains("household_id"),
        "{}",
        refused.message()
    );
    let refused = admin
        .disable_device(DisableDeviceRequest {
            device_id: "nobody".into(),
        })
        .await
        .expect_err("unknown device");
    assert_eq!(refused.code(), Code::NotFound);

    admin
        .register_device(RegisterDeviceRequest {
            device: Some(device.clone()),
        })
        .await
        .expect("registered");
    // The gateway's own registry follows the topic: the device shows up, then is disabled.
    let deadline = tokio::time::Instant::now() + helpgrid_testkit::WAIT;
    loop {
        let listed = admin
            .list_devices(ListDevicesRequest {
                grid_id: "g9".into(),
            })
            .await
            .expect("list")
            .into_inner()
            .devices;
        if listed.iter().any(|d| d.device_id == "btn-9") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never listed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let disabled = admin
        .disable_device(DisableDeviceRequest {
            device_id: "btn-9".into(),
        })
        .await
        .expect("disabled")
        .into_inner();
    assert!(!disabled.enabled);
    let health = admin
        .get_device_health(DeviceHealthRequest {
            device_id: "btn-9".into(),
        })
        .await
        .expect("health")
        .into_inner();
    assert_eq!(health.open_problem, MaintenanceReason::Unspecified as i32);
    assert_eq!(health.battery_percent, None);
    loop {
        let listed = admin
            .list_devices(ListDevicesRequest::default())
            .await
            .expect("list")
            .into_inner()
            .devices;
        if listed.iter().any(|d| d.device_id == "btn-9" && !d.enabled) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never disabled");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    gateway.stop().await;
}
