//! `helpgrid-dispatch-example`: a police dispatch (CAD) integration to start from.
//!
//! It follows `DispatchService/WatchPoliceIncidents` with a dispatch token, prints each
//! update, and keeps the cursor of the last update it handled in a file — so after a crash,
//! a restart of either side, or a network cut it resumes exactly after that update: nothing
//! missed, nothing twice. Optionally it prints each new incident as a CAP 1.2 alert, and takes
//! incidents waiting at the police desk (Acknowledge as the dispatch identity).
//!
//!   helpgrid-token mint --key-file .helpgrid/auth.key --subject cad-110 --role dispatch --grid '*' > cad.token
//!   helpgrid-dispatch-example --status-addr http://127.0.0.1:50051 --token-file cad.token --cap

use anyhow::Context;
use clap::Parser;
use helpgrid_auth::Bearer;
use helpgrid_proto::pb::dispatch_service_client::DispatchServiceClient;
use helpgrid_proto::pb::incident_event::Change;
use helpgrid_proto::pb::incident_service_client::IncidentServiceClient;
use helpgrid_proto::pb::{
    AcknowledgeRequest, EscalationLevel, GetIncidentCapRequest, IncidentUpdate,
    WatchPoliceIncidentsRequest,
};
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

#[derive(Debug, clap::Parser)]
#[command(name = "helpgrid-dispatch-example", version)]
struct Args {
    /// The status service (https://… when it serves TLS).
    #[arg(
        long,
        env = "HELPGRID_STATUS_ADDR",
        default_value = "http://127.0.0.1:50051"
    )]
    status_addr: String,
    /// A file holding the dispatch token (`helpgrid-token mint --role dispatch …`).
    #[arg(long, env = "HELPGRID_DISPATCH_TOKEN_FILE")]
    token_file: PathBuf,
    /// Where the cursor of the last handled update is kept between runs.
    #[arg(long, default_value = "dispatch.cursor")]
    cursor_file: PathBuf,
    /// PEM CA certificate to trust for https:// (e.g. the status service's self-signed cert).
    #[arg(long)]
    ca_cert: Option<PathBuf>,
    /// Only these grids (repeatable); default: every grid the token covers.
    #[arg(long = "grid")]
    grids: Vec<String>,
    /// Print each newly opened incident as a CAP 1.2 alert.
    #[arg(long)]
    cap: bool,
    /// Acknowledge incidents waiting at the police desk, as the dispatch identity.
    #[arg(long)]
    take_police_desk: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let token = std::fs::read_to_string(&args.token_file)
        .with_context(|| format!("cannot read {}", args.token_file.display()))?;
    let bearer = Bearer::new(&token)?;
    let mut endpoint =
        Endpoint::from_shared(args.status_addr.clone())?.connect_timeout(Duration::from_secs(5));
    if let Some(ca) = &args.ca_cert {
        let pem = std::fs::read(ca).with_context(|| format!("cannot read {}", ca.display()))?;
        endpoint = endpoint
            .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)))?;
    }
    let channel = endpoint.connect_lazy();
    let mut dispatch = DispatchServiceClient::with_interceptor(channel.clone(), bearer.clone());
    let mut incidents = IncidentServiceClient::with_interceptor(channel, bearer);
    loop {
        let cursor = std::fs::read_to_string(&args.cursor_file).unwrap_or_default();
        say(&format!("subscribing (cursor {:?})", cursor.trim()));
        let request = WatchPoliceIncidentsRequest {
            grid_ids: args.grids.clone(),
            cursor: cursor.trim().to_owned(),
            // The shape every CAD written before IncidentOpened.assigned knows: an opening
            // comes as `opened`, then one `assigned` per track.
            compact_openings: false,
        };
        let stream = dispatch.watch_police_incidents(request).await;
        let mut stream = match stream {
            Ok(stream) => stream.into_inner(),
            Err(status) if is_final(&status) => anyhow::bail!("refused: {status}"),
            Err(status) => {
                say(&format!("not reachable ({}); retrying", status.message()));
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        loop {
            match stream.message().await {
                Ok(Some(update)) => {
                    handle(&args, &update, &mut dispatch, &mut incidents).await;
                    // Only once handled: a crash before this line sees the update again.
                    save_cursor(&args.cursor_file, &update.cursor)?;
                }
                Ok(None) => break,
                Err(status) => {
                    say(&format!("stream ended ({}); resuming", status.message()));
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn handle(
    args: &Args,
    update: &IncidentUpdate,
    dispatch: &mut DispatchServiceClient<
        tonic::service::interceptor::InterceptedService<Channel, Bearer>,
    >,
    incidents: &mut IncidentServiceClient<
        tonic::service::interceptor::InterceptedService<Channel, Bearer>,
    >,
) {
    let Some(event) = &update.event else { return };
    let Some(incident) = &event.incident else {
        return;
    };
    let change = match &event.change {
        Some(Change::Opened(o)) if !o.assigned.is_empty() => "opened+assigned",
        Some(Change::Opened(_)) => "opened",
        Some(Change::Assigned(_)) => "assigned",
        Some(Change::Attached(_)) => "attached",
        Some(Change::Acknowledged(_)) => "acknowledged",
        Some(Change::Reassigned(_)) => "reassigned",
        Some(Change::Escalated(_)) => "escalated",
        Some(Change::Closed(_)) => "closed",
        _ => "other",
    };
    say(&format!(
        "{change:<15} {} grid {} revision {}",
        incident.incident_id, incident.grid_id, incident.revision
    ));
    if args.cap
        && matches!(
            event.change,
            Some(Change::Opened(_)) | Some(Change::Escalated(_))
        )
    {
        let request = GetIncidentCapRequest {
            incident_id: incident.incident_id.clone(),
        };
        match dispatch.get_incident_cap(request).await {
            Ok(alert) => say(&alert.into_inner().xml),
            Err(status) => say(&format!("no CAP alert: {}", status.message())),
        }
    }
    let at_police_desk = incident
        .assignments
        .iter()
        .any(|a| a.level == EscalationLevel::PoliceDesk as i32 && a.acknowledged_at.is_none());
    if args.take_police_desk && at_police_desk {
        let request = AcknowledgeRequest {
            incident_id: incident.incident_id.clone(),
            responder_id: String::new(),
            request_id: String::new(),
        };
        match incidents.acknowledge(request).await {
            Ok(_) => say(&format!(
                "took {} from the police desk",
                incident.incident_id
            )),
            Err(status) => say(&format!(
                "could not take {}: {}",
                incident.incident_id,
                status.message()
            )),
        }
    }
}

/// Refusals that retrying will not change.
fn is_final(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unauthenticated | tonic::Code::PermissionDenied | tonic::Code::InvalidArgument
    )
}

fn save_cursor(path: &PathBuf, cursor: &str) -> anyhow::Result<()> {
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, cursor)?;
    std::fs::rename(&temporary, path)?;
    Ok(())
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_answers_version_and_every_flag_has_help() {
        use clap::CommandFactory;
        assert_eq!(
            helpgrid_common::cli::undocumented(&Args::command()),
            Vec::<String>::new()
        );
    }
}
