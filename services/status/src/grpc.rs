//! The tonic adapters: `IncidentService`, `DispatchService` and `RosterService`. Each handler
//! takes the caller the access layer admitted, validates its request (`requests`), lets
//! `access` say whether this caller may touch what it names, asks the read model, the roster or the command sender, and turns
//! the outcome into a response or a status (`errors`). Nothing else happens here.

use crate::access::{self, Caller};
use crate::cap::{self, CapSender};
use crate::commands::CommandSender;
use crate::errors::ApiError;
use crate::feed::SharedReadModel;
use crate::read_model::LoggedEvent;
use crate::requests;
use crate::roster::Roster;
use crate::telemetry;
use crate::watcher::{UpdateStream, start_watch_until_revoked};
use helpgrid_common::time::now_millis;
use helpgrid_proto::pb::dispatch_service_server::DispatchService;
use helpgrid_proto::pb::incident_service_server::IncidentService;
use helpgrid_proto::pb::roster_service_server::RosterService;
use helpgrid_proto::pb::{
    AcknowledgeRequest, CapAlert, CloseRequest, EscalateRequest, GetIncidentCapRequest,
    GetIncidentRequest, GetResponderRequest, Incident, ListIncidentsRequest, ListIncidentsResponse,
    ListRespondersRequest, ListRespondersResponse, Responder, SetDutyRequest,
    UpdateLocationRequest, UpsertResponderRequest, WatchIncidentsRequest,
    WatchPoliceIncidentsRequest,
};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

/// Records the outcome of one call and turns it into what tonic sends.
pub(crate) fn answer<T>(
    method: &'static str,
    result: Result<T, ApiError>,
) -> Result<Response<T>, Status> {
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

#[derive(Clone)]
pub struct IncidentApi {
    pub read_model: SharedReadModel,
    pub live: broadcast::Sender<LoggedEvent>,
    pub commands: CommandSender,
    pub ready: watch::Receiver<bool>,
    /// Cancelled at shutdown: ends every Watch stream.
    pub shutdown: CancellationToken,
    /// How CAP alerts name their sender.
    pub cap_sender: Arc<CapSender>,
}

impl IncidentApi {
    fn get(&self, caller: &Caller, request: &GetIncidentRequest) -> Result<Incident, ApiError> {
        let incident_id = requests::id("incident_id", &request.incident_id)?;
        ensure_ready(&self.ready)?;
        let incident = self
            .read_model
            .read()
            .incident(&incident_id)
            .ok_or(ApiError::IncidentNotFound { incident_id })?;
        caller.may_read(&incident)?;
        Ok(incident)
    }

    fn list(
        &self,
        caller: &Caller,
        request: &ListIncidentsRequest,
    ) -> Result<ListIncidentsResponse, ApiError> {
        let mut query = requests::list_query(request)?;
        query.grid_ids = caller.grid_filter(query.grid_ids)?;
        query.police_only = caller.police_only();
        ensure_ready(&self.ready)?;
        let page = self.read_model.read().list(&query);
        Ok(ListIncidentsResponse {
            incidents: page.incidents,
            next_page_token: page.next_page.map(|key| key.encode()).unwrap_or_default(),
            cursor: page.position.encode(),
        })
    }

    fn watch(
        &self,
        caller: &Caller,
        request: &WatchIncidentsRequest,
        police_only: bool,
    ) -> Result<UpdateStream, ApiError> {
        let partitions = self.read_model.read().partitions();
        let mut request = requests::watch(request, partitions)?;
        request.filter.grid_ids = caller.grid_filter(request.filter.grid_ids)?;
        request.filter.police_only = police_only || caller.police_only();
        ensure_ready(&self.ready)?;
        if let Some(cursor) = &request.resume_after {
            self.read_model.read().check_replayable(cursor)?;
        }
        Ok(start_watch_until_revoked(
            self.read_model.clone(),
            &self.live,
            request,
            self.shutdown.clone(),
            caller.revocation_watch(),
        ))
    }

    /// Validates and sends a command for `caller`; the app and the gRPC API share it.
    pub(crate) async fn command(
        &self,
        caller: &Caller,
        command: Result<requests::ValidCommand, requests::RequestError>,
    ) -> Result<Incident, ApiError> {
        self.command_within(caller, command, None).await
    }

    /// [`Self::command`] for a caller that sent a deadline: the wait ends before it, so the
    /// caller reads UNAVAILABLE and its retry hint, not its own stack's DEADLINE_EXCEEDED.
    async fn command_within(
        &self,
        caller: &Caller,
        command: Result<requests::ValidCommand, requests::RequestError>,
        caller_deadline: Option<Duration>,
    ) -> Result<Incident, ApiError> {
        let command = command?;
        ensure_ready(&self.ready)?;
        let (home, incident) = {
            let model = self.read_model.read();
            (
                model.home(&command.incident_id),
                model.incident(&command.incident_id),
            )
        };
        let (Some(home), Some(incident)) = (home, incident) else {
            return Err(ApiError::IncidentNotFound {
                incident_id: command.incident_id,
            });
        };
        caller.may_command(&incident)?;
        Ok(self
            .commands
            .within(caller_deadline)?
            .send(
                &command.incident_id,
                &home,
                &command.actor_id,
                caller.actor_role(),
                command.action,
                &command.request_id,
            )
            .await?)
    }

    fn cap(&self, caller: &Caller, request: &GetIncidentCapRequest) -> Result<CapAlert, ApiError> {
        let incident = self.get(
            caller,
            &GetIncidentRequest {
                incident_id: request.incident_id.clone(),
            },
        )?;
        Ok(CapAlert {
            xml: cap::render(&incident, &self.cap_sender, now_millis()),
            incident_id: incident.incident_id,
        })
    }
}

/// The caller the access layer admitted, or the refusal.
fn caller<T>(request: &Request<T>) -> Result<Caller, ApiError> {
    Ok(access::caller_of(request)?)
}

/// The deadline the caller sent (`grpc-timeout`: at most 8 digits and a unit, H M S m u n),
/// counted from now. A header that does not parse counts as none, as tonic's own server
/// treats it.
fn caller_deadline<T>(request: &Request<T>) -> Option<Duration> {
    parse_grpc_timeout(request.metadata().get("grpc-timeout")?.to_str().ok()?)
}

fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let split = value.len().checked_sub(1)?;
    let (digits, unit) = (value.get(..split)?, value.get(split..)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3_600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[tonic::async_trait]
impl IncidentService for IncidentApi {
    type WatchIncidentsStream = UpdateStream;

    async fn get_incident(
        &self,
        request: Request<GetIncidentRequest>,
    ) -> Result<Response<Incident>, Status> {
        let result = caller(&request).and_then(|c| self.get(&c, request.get_ref()));
        answer("GetIncident", result)
    }

    async fn list_incidents(
        &self,
        request: Request<ListIncidentsRequest>,
    ) -> Result<Response<ListIncidentsResponse>, Status> {
        let result = caller(&request).and_then(|c| self.list(&c, request.get_ref()));
        answer("ListIncidents", result)
    }

    async fn watch_incidents(
        &self,
        request: Request<WatchIncidentsRequest>,
    ) -> Result<Response<Self::WatchIncidentsStream>, Status> {
        let result = caller(&request).and_then(|c| self.watch(&c, request.get_ref(), false));
        answer("WatchIncidents", result)
    }

    async fn acknowledge(
        &self,
        request: Request<AcknowledgeRequest>,
    ) -> Result<Response<Incident>, Status> {
        let result = async {
            let caller = caller(&request)?;
            let deadline = caller_deadline(&request);
            let mut request = request.into_inner();
            request.responder_id = caller.actor_id(&request.responder_id)?;
            self.command_within(&caller, requests::acknowledge(&request), deadline)
                .await
        };
        answer("Acknowledge", result.await)
    }

    async fn close(&self, request: Request<CloseRequest>) -> Result<Response<Incident>, Status> {
        let result = async {
            let caller = caller(&request)?;
            let deadline = caller_deadline(&request);
            let mut request = request.into_inner();
            request.responder_id = caller.actor_id(&request.responder_id)?;
            self.command_within(&caller, requests::close(&request), deadline)
                .await
        };
        answer("Close", result.await)
    }

    async fn escalate(
        &self,
        request: Request<EscalateRequest>,
    ) -> Result<Response<Incident>, Status> {
        let result = async {
            let caller = caller(&request)?;
            let deadline = caller_deadline(&request);
            let request = request.into_inner();
            let actor = caller.actor_id(&request.responder_id)?;
            let command = requests::escalate(
                &request.incident_id,
                &actor,
                &request.note,
                &request.request_id,
            );
            self.command_within(&caller, command, deadline).await
        };
        answer("Escalate", result.await)
    }
}

/// The dispatch API: the same read model and watch machinery, kept to police-bound incidents.
pub struct DispatchApi(pub IncidentApi);

#[tonic::async_trait]
impl DispatchService for DispatchApi {
    type WatchPoliceIncidentsStream = UpdateStream;

    async fn watch_police_incidents(
        &self,
        request: Request<WatchPoliceIncidentsRequest>,
    ) -> Result<Response<Self::WatchPoliceIncidentsStream>, Status> {
        let result = caller(&request).and_then(|c| {
            let request = request.get_ref();
            let watch = WatchIncidentsRequest {
                grid_ids: request.grid_ids.clone(),
                cursor: request.cursor.clone(),
                include_rejections: false,
                compact_openings: request.compact_openings,
            };
            self.0.watch(&c, &watch, true)
        });
        answer("WatchPoliceIncidents", result)
    }

    async fn get_incident_cap(
        &self,
        request: Request<GetIncidentCapRequest>,
    ) -> Result<Response<CapAlert>, Status> {
        let result = caller(&request).and_then(|c| self.0.cap(&c, request.get_ref()));
        answer("GetIncidentCap", result)
    }
}

#[derive(Clone)]
pub struct RosterApi {
    pub roster: Arc<Roster>,
    pub ready: watch::Receiver<bool>,
}

impl RosterApi {
    async fn upsert(
        &self,
        caller: &Caller,
        request: &UpsertResponderRequest,
    ) -> Result<Responder, ApiError> {
        let responder = requests::upsert_responder(request)?;
        caller.may_write_roster(&responder)?;
        ensure_ready(&self.ready)?;
        Ok(self.roster.upsert(responder).await?)
    }

    fn get(&self, caller: &Caller, request: &GetResponderRequest) -> Result<Responder, ApiError> {
        let responder_id = requests::id("responder_id", &request.responder_id)?;
        ensure_ready(&self.ready)?;
        let responder = self.roster.get(&responder_id)?;
        caller.may_read_responder(&responder)?;
        Ok(responder)
    }

    fn list(
        &self,
        caller: &Caller,
        request: &ListRespondersRequest,
    ) -> Result<ListRespondersResponse, ApiError> {
        let grid_id = match request.grid_id.as_str() {
            "" => None,
            grid_id => Some(requests::id("grid_id", grid_id)?),
        };
        caller.may_list_grid(grid_id.as_deref())?;
        ensure_ready(&self.ready)?;
        let mut responders = self.roster.list(grid_id.as_deref(), request.on_duty_only);
        responders.retain(|r| caller.sees_responder(r));
        Ok(ListRespondersResponse { responders })
    }

    pub(crate) async fn change_duty(
        &self,
        caller: &Caller,
        request: &SetDutyRequest,
    ) -> Result<Responder, ApiError> {
        let responder_id = requests::id("responder_id", &request.responder_id)?;
        ensure_ready(&self.ready)?;
        caller.may_update_responder(&self.roster.get(&responder_id)?)?;
        Ok(self.roster.set_duty(&responder_id, request.on_duty).await?)
    }

    pub(crate) async fn record_location(
        &self,
        caller: &Caller,
        request: &UpdateLocationRequest,
    ) -> Result<Responder, ApiError> {
        let (responder_id, location) = requests::update_location(request)?;
        ensure_ready(&self.ready)?;
        caller.may_update_responder(&self.roster.get(&responder_id)?)?;
        Ok(self.roster.update_location(&responder_id, location).await?)
    }
}

#[tonic::async_trait]
impl RosterService for RosterApi {
    async fn upsert_responder(
        &self,
        request: Request<UpsertResponderRequest>,
    ) -> Result<Response<Responder>, Status> {
        let result = match caller(&request) {
            Ok(c) => self.upsert(&c, request.get_ref()).await,
            Err(error) => Err(error),
        };
        answer("UpsertResponder", result)
    }

    async fn get_responder(
        &self,
        request: Request<GetResponderRequest>,
    ) -> Result<Response<Responder>, Status> {
        let result = caller(&request).and_then(|c| self.get(&c, request.get_ref()));
        answer("GetResponder", result)
    }

    async fn list_responders(
        &self,
        request: Request<ListRespondersRequest>,
    ) -> Result<Response<ListRespondersResponse>, Status> {
        let result = caller(&request).and_then(|c| self.list(&c, request.get_ref()));
        answer("ListResponders", result)
    }

    async fn set_duty(
        &self,
        request: Request<SetDutyRequest>,
    ) -> Result<Response<Responder>, Status> {
        let result = match caller(&request) {
            Ok(c) => self.change_duty(&c, request.get_ref()).await,
            Err(error) => Err(error),
        };
        answer("SetDuty", result)
    }

    async fn update_location(
        &self,
        request: Request<UpdateLocationRequest>,
    ) -> Result<Response<Responder>, Status> {
        let result = match caller(&request) {
            Ok(c) => self.record_location(&c, request.get_ref()).await,
            Err(error) => Err(error),
        };
        answer("UpdateLocation", result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_headers_parse_in_every_unit_and_bad_ones_count_as_none() {
        let cases = [
            ("5S", Some(Duration::from_secs(5))),
            ("1500m", Some(Duration::from_millis(1_500))),
            ("2M", Some(Duration::from_secs(120))),
            ("1H", Some(Duration::from_secs(3_600))),
            ("250000u", Some(Duration::from_millis(250))),
            ("99999999n", Some(Duration::from_nanos(99_999_999))),
            ("0m", Some(Duration::ZERO)),
            ("", None),
            ("S", None),
            ("5", None),
            ("5s", None),
            ("-5S", None),
            ("+5S", None),
            ("123456789m", None),
            ("1.5S", None),
        ];
        for (value, want) in cases {
            assert_eq!(parse_grpc_timeout(value), want, "{value:?}");
        }
    }

    #[test]
    fn the_deadline_a_client_sets_is_read_from_its_request() {
        let mut request = Request::new(());
        assert_eq!(caller_deadline(&request), None);
        request.set_timeout(Duration::from_millis(750));
        assert_eq!(caller_deadline(&request), Some(Duration::from_millis(750)));
    }
}
