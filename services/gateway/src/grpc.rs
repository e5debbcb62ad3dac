//! The admin-only `DeviceService` (register, update, disable, list, health). Every call needs
//! a bearer token of role admin (services/auth); writes go to the compacted devices topic and
//! answer once Kafka has them, so the registry every gateway follows is the only truth.

use crate::domain::registry::{DeviceTable, check_device};
use crate::health_watch::HealthWatch;
use crate::kafka;
use helpgrid_auth::{Role, TokenKey};
use helpgrid_common::kafka::KafkaArgs;
use helpgrid_proto::pb::device_service_server::DeviceService;
use helpgrid_proto::pb::{
    Device, DeviceHealth, DeviceHealthRequest, DisableDeviceRequest, ListDevicesRequest,
    ListDevicesResponse, MaintenanceReason, RegisterDeviceRequest,
};
use std::sync::{Arc, RwLock};
use tonic::{Request, Response, Status};

pub struct Devices {
    pub key: Arc<TokenKey>,
    pub kafka: KafkaArgs,
    pub topic: String,
    pub table: Arc<RwLock<DeviceTable>>,
    pub health: Arc<HealthWatch>,
}

impl Devices {
    fn admin<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let token = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| Status::unauthenticated("send `authorization: Bearer <admin token>`"))?;
        let identity = self
            .key
            .verify(token)
            .map_err(|e| Status::unauthenticated(format!("the token is not valid: {e}")))?;
        if identity.role != Role::Admin {
            return Err(Status::permission_denied(format!(
                "device administration needs the admin role; {} is {}",
                identity.subject, identity.role
            )));
        }
        Ok(())
    }

    async fn write(&self, device: Device) -> Result<Response<Device>, Status> {
        check_device(&device).map_err(Status::invalid_argument)?;
        kafka::write_devices(&self.kafka, &self.topic, std::slice::from_ref(&device))
            .await
            .map_err(|e| {
                Status::unavailable(format!("the registry could not be written: {e}; retry"))
            })?;
        tracing::info!(device = %device.device_id, enabled = device.enabled, "device registered");
        Ok(Response::new(device))
    }

    fn get(&self, device_id: &str) -> Result<Device, Status> {
        self.table
            .read()
            .ok()
            .and_then(|t| t.get(device_id).cloned())
            .ok_or_else(|| Status::not_found(format!("no device {device_id:?} is registered")))
    }
}

#[tonic::async_trait]
impl DeviceService for Devices {
    async fn register_device(
        &self,
        request: Request<RegisterDeviceRequest>,
    ) -> Result<Response<Device>, Status> {
        self.admin(&request)?;
        let device = request
            .into_inner()
            .device
            .ok_or_else(|| Status::invalid_argument("device is missing"))?;
        self.write(device).await
    }

    async fn update_device(
        &self,
        request: Request<RegisterDeviceRequest>,
    ) -> Result<Response<Device>, Status> {
        self.admin(&request)?;
        let device = request
            .into_inner()
            .device
            .ok_or_else(|| Status::invalid_argument("device is missing"))?;
        self.get(&device.device_id)?;
        self.write(device).await
    }

    async fn disable_device(
        &self,
        request: Request<DisableDeviceRequest>,
    ) -> Result<Response<Device>, Status> {
        self.admin(&request)?;
        let mut device = self.get(&request.into_inner().device_id)?;
        device.enabled = false;
        self.write(device).await
    }

    async fn list_devices(
        &self,
        request: Request<ListDevicesRequest>,
    ) -> Result<Response<ListDevicesResponse>, Status> {
        self.admin(&request)?;
        let grid = request.into_inner().grid_id;
        let mut devices: Vec<Device> = self
            .table
            .read()
            .map(|t| {
                t.all()
                    .filter(|d| grid.is_empty() || d.grid_id == grid)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        devices.sort_by(|a, b| a.device_id.cmp(&b.device_id));
        Ok(Response::new(ListDevicesResponse { devices }))
    }

    async fn get_device_health(
        &self,
        request: Request<DeviceHealthRequest>,
    ) -> Result<Response<DeviceHealth>, Status> {
        self.admin(&request)?;
        let device_id = request.into_inner().device_id;
        self.get(&device_id)?;
        let view = self
            .health
            .book
            .lock()
            .ok()
            .and_then(|b| b.view(&device_id));
        let (last_heard_ms, offline, battery, problem) = view.unwrap_or((0, false, None, None));
        Ok(Response::new(DeviceHealth {
            device_id,
            last_heard_ms,
            offline,
            battery_percent: battery.map(u32::from),
            open_problem: problem.unwrap_or(MaintenanceReason::Unspecified) as i32,
        }))
    }
}
