//! The tonic services: check the caller, check the request, ask [`crate::queries`].

use crate::access::Gate;
use crate::areas::AreaTree;
use crate::queries::{self, Db};
use crate::requests::{history_query, report_query};
use crate::telemetry;
use helpgrid_proto::pb::history_service_server::HistoryService;
use helpgrid_proto::pb::report_service_server::ReportService;
use helpgrid_proto::pb::{
    GetIncidentHistoryRequest, IncidentHistory, ListHistoryRequest, ListHistoryResponse, Report,
    ReportRequest,
};
use std::sync::Arc;
use tokio::sync::RwLock;
use tonic::{Request, Response, Status};

/// What both services share.
#[derive(Debug, Clone)]
pub struct Archive {
    pub db: Arc<Db>,
    pub gate: Gate,
    /// The area registry, reloaded as it changes.
    pub areas: Arc<RwLock<AreaTree>>,
}

fn answered<T>(method: &'static str, result: Result<T, Status>) -> Result<Response<T>, Status> {
    telemetry::grpc_answered(
        method,
        result
            .as_ref()
            .map_or_else(Status::code, |_| tonic::Code::Ok),
    );
    result.map(Response::new)
}

#[tonic::async_trait]
impl HistoryService for Archive {
    async fn list_incidents(
        &self,
        request: Request<ListHistoryRequest>,
    ) -> Result<Response<ListHistoryResponse>, Status> {
        let result = async {
            let caller = self.gate.admit_grpc(request.metadata())?;
            let query = history_query(request.get_ref())?;
            let grids = caller.grids_for(&query.area, &*self.areas.read().await)?;
            let db = self.db.client().await?;
            let (incidents, next) = queries::list_incidents(&db, &query, &grids).await?;
            Ok(ListHistoryResponse {
                incidents,
                next_page_token: next.map(|c| c.encode()).unwrap_or_default(),
            })
        }
        .await;
        answered("ListIncidents", result)
    }

    async fn get_incident_history(
        &self,
        request: Request<GetIncidentHistoryRequest>,
    ) -> Result<Response<IncidentHistory>, Status> {
        let result = async {
            let caller = self.gate.admit_grpc(request.metadata())?;
            let id = request.get_ref().incident_id.trim();
            if id.is_empty() {
                return Err(Status::invalid_argument("`incident_id` is required"));
            }
            let db = self.db.client().await?;
            let areas = self.areas.read().await;
            let (incident, events) =
                queries::incident_history(&db, id, |grid| caller.covers(grid, &areas)).await?;
            Ok(IncidentHistory {
                incident: Some(incident),
                events,
            })
        }
        .await;
        answered("GetIncidentHistory", result)
    }
}

#[tonic::async_trait]
impl ReportService for Archive {
    async fn get_report(
        &self,
        request: Request<ReportRequest>,
    ) -> Result<Response<Report>, Status> {
        let result = async {
            let caller = self.gate.admit_grpc(request.metadata())?;
            let query = report_query(request.get_ref())?;
            let areas = self.areas.read().await;
            let grids = caller.grids_for(&query.area, &areas)?;
            let db = self.db.client().await?;
            Ok(queries::report(&db, &query, &grids, &areas).await?)
        }
        .await;
        answered("GetReport", result)
    }
}
