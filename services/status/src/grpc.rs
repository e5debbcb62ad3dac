//! The tonic adapters: `IncidentService` and `RosterService`. Each handler validates its
//! request (`requests`), asks the read model, the roster or the command sender, and turns
//! the outcome into a response or a status (`errors`). Nothing else happens here.

use crate::commands::CommandSender;
use crate::errors::ApiError;
use crate::feed::SharedReadModel;
use crate::read_model::LoggedEvent;
use crate::requests;
use crate::roster::Roster;
use crate::telemetry;
use crate::watcher::{UpdateStream, start_watch};
use helpgrid_proto::pb::incident_service_server::IncidentService;
use helpgrid_proto::pb::roster_service_server::RosterService;
use helpgrid_proto::pb::{
    AcknowledgeRequest, CloseRequest, GetIncidentRequest, GetResponderRequest, Incident,
    ListIncidentsRequest, ListIncidentsResponse, ListRespondersRequest, ListRespondersResponse,
    Responder, SetDutyRequest, UpdateLocationRequest, UpsertResponderRequest,
    WatchIncidentsRequest,
};
use std::sync::Arc;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

/// Records the outcome of one call and turns it into what tonic sends.
fn answer<T>(method: &'static str, result: Result<T, ApiError>) -> Result<Response<T>, Status> {
    match result {
        Ok(value) => {
            telemetry::grpc_request(method, tonic::Code::Ok);
            Ok(Response::new(value))
        }
        Err(error) => {
            let status = Status::from(error);
            telemetry::grpc_request(method, status.code());
            tracing::debug!(method, code = ?status.code(), message = status.message(), "request failed");
            Err(status)
        }
    }
}

/// Refuses reads and writes until both feeds have caught up: before that an existing
/// incident or responder would look unknown.
fn ensure_ready(ready: &watch::Receiver<bool>) -> Result<(), ApiError> {
    if *ready.borrow() {
        Ok(())
    } else {
        Err(ApiError::NotReady)
    }
}

pub struct IncidentApi {
    pub read_model: SharedReadModel,
    pub live: broadcast::Sender<LoggedEvent>,
    pub commands: CommandSender,
    pub ready: watch::Receiver<bool>,
    /// Cancelled at shutdown: ends every Watch stream.
    pub shutdown: CancellationToken,
}

impl IncidentApi {
    fn get(&self, request: &GetIncidentRequest) -> Result<Incident, ApiError> {
        let incident_id = requests::id("incident_id", &request.incident_id)?;
        ensure_ready(&self.ready)?;
        self.read_model
            .read()
            .incident(&incident_id)
            .cloned()
            .ok_or(ApiError::IncidentNotFound { incident_id })
    }

    fn list(&self, request: &ListIncidentsRequest) -> Result<ListIncidentsResponse, ApiError> {
        let query = requests::list_query(request)?;
        ensure_ready(&self.ready)?;
        let page = self.read_model.read().list(&query);
        Ok(ListIncidentsResponse {
            incidents: page.incidents,
            next_page_token: page.next_page.map(|key| key.encode()).unwrap_or_default(),
            cursor: page.position.encode(),
        })
    }

    fn watch(&self, request: &WatchIncidentsRequest) -> Result<UpdateStream, ApiError> {
        let partitions = self.read_model.read().partitions();
        let request = requests::watch(request, partitions)?;
        ensure_ready(&self.ready)?;
        Ok(start_watch(
            self.read_model.clone(),
            &self.live,
            request,
            self.shutdown.clone(),
        ))
    }

    async fn command(
        &self,
        command: Result<requests::ValidCommand, requests::RequestError>,
    ) -> Result<Incident, ApiError> {
        let command = command?;
        ensure_ready(&self.ready)?;
        let home = self.read_model.read().home(&command.incident_id);
        let home = home.ok_or_else(|| ApiError::IncidentNotFound {
            incident_id: command.incident_id.clone(),
        })?;
        Ok(self
            .commands
            .send(
                &command.incident_id,
                &home,
                &command.actor_id,
                helpgrid_proto::pb::ActorRole::Unspecified,
                command.action,
            )
            .await?)
    }
}

#[tonic::async_trait]
impl IncidentService for IncidentApi {
    type WatchIncidentsStream = UpdateStream;

    async fn get_incident(
        &self,
        request: Request<GetIncidentRequest>,
    ) -> Result<Response<Incident>, Status> {
        answer("GetIncident", self.get(request.get_ref()))
    }

    async fn list_incidents(
        &self,
        request: Request<ListIncidentsRequest>,
    ) -> Result<Response<ListIncidentsResponse>, Status> {
        answer("ListIncidents", self.list(request.get_ref()))
    }

    async fn watch_incidents(
        &self,
        request: Request<WatchIncidentsRequest>,
    ) -> Result<Response<Self::WatchIncidentsStream>, Status> {
        answer("WatchIncidents", self.watch(request.get_ref()))
    }

    async fn acknowledge(
        &self,
        request: Request<AcknowledgeRequest>,
    ) -> Result<Response<Incident>, Status> {
        answer(
            "Acknowledge",
            self.command(requests::acknowledge(request.get_ref())).await,
        )
    }

    async fn close(&self, request: Request<CloseRequest>) -> Result<Response<Incident>, Status> {
        answer(
            "Close",
            self.command(requests::close(request.get_ref())).await,
        )
    }
}

pub struct RosterApi {
    pub roster: Arc<Roster>,
    pub ready: watch::Receiver<bool>,
}

impl RosterApi {
    async fn upsert(&self, request: &UpsertResponderRequest) -> Result<Responder, ApiError> {
        let responder = requests::upsert_responder(request)?;
        ensure_ready(&self.ready)?;
        Ok(self.roster.upsert(responder).await?)
    }

    fn get(&self, request: &GetResponderRequest) -> Result<Responder, ApiError> {
        let responder_id = requests::id("responder_id", &request.responder_id)?;
        ensure_ready(&self.ready)?;
        Ok(self.roster.get(&responder_id)?)
    }

    fn list(&self, request: &ListRespondersRequest) -> Result<ListRespondersResponse, ApiError> {
        let grid_id = match request.grid_id.as_str() {
            "" => None,
            grid_id => Some(requests::id("grid_id", grid_id)?),
        };
        ensure_ready(&self.ready)?;
        Ok(ListRespondersResponse {
            responders: self.roster.list(grid_id.as_deref(), request.on_duty_only),
        })
    }

    async fn change_duty(&self, request: &SetDutyRequest) -> Result<Responder, ApiError> {
        let responder_id = requests::id("responder_id", &request.responder_id)?;
        ensure_ready(&self.ready)?;
        Ok(self.roster.set_duty(&responder_id, request.on_duty).await?)
    }

    async fn record_location(
        &self,
        request: &UpdateLocationRequest,
    ) -> Result<Responder, ApiError> {
        let (responder_id, location) = requests::update_location(request)?;
        ensure_ready(&self.ready)?;
        Ok(self.roster.update_location(&responder_id, location).await?)
    }
}

#[tonic::async_trait]
impl RosterService for RosterApi {
    async fn upsert_responder(
        &self,
        request: Request<UpsertResponderRequest>,
    ) -> Result<Response<Responder>, Status> {
        answer("UpsertResponder", self.upsert(request.get_ref()).await)
    }

    async fn get_responder(
        &self,
        request: Request<GetResponderRequest>,
    ) -> Result<Response<Responder>, Status> {
        answer("GetResponder", self.get(request.get_ref()))
    }

    async fn list_responders(
        &self,
        request: Request<ListRespondersRequest>,
    ) -> Result<Response<ListRespondersResponse>, Status> {
        answer("ListResponders", self.list(request.get_ref()))
    }

    async fn set_duty(
        &self,
        request: Request<SetDutyRequest>,
    ) -> Result<Response<Responder>, Status> {
        answer("SetDuty", self.change_duty(request.get_ref()).await)
    }

    async fn update_location(
        &self,
        request: Request<UpdateLocationRequest>,
    ) -> Result<Response<Responder>, Status> {
        answer(
            "UpdateLocation",
            self.record_location(request.get_ref()).await,
        )
    }
}
