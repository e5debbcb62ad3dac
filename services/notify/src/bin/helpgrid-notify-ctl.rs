//! Manage webhook subscriptions from a shell, where grpcurl is not at hand:
//!
//!   helpgrid-notify-ctl --addr http://127.0.0.1:50071 --token-file admin.token put \
//!     --id office-g1 --url http://127.0.0.1:8099/hook --secret-file hook.secret \
//!     --trigger assigned --trigger renotify --grid g1
//!   helpgrid-notify-ctl --token-file admin.token list
//!   helpgrid-notify-ctl --token-file admin.token delete --id office-g1

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use helpgrid_auth::Bearer;
use helpgrid_proto::pb::notify_service_client::NotifyServiceClient;
use helpgrid_proto::pb::{
    DeleteSubscriptionRequest, ListSubscriptionsRequest, NotifyTrigger, PutSubscriptionRequest,
    ResponderRole, Subscription, Track, WebhookTemplate,
};
use std::io::Write;
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "helpgrid-notify-ctl",
    version,
    about = "Manage helpgrid-notify webhook subscriptions"
)]
struct Args {
    /// helpgrid-notify's gRPC address.
    #[arg(
        long,
        env = "HELPGRID_NOTIFY_ADDR",
        default_value = "http://127.0.0.1:50071"
    )]
    addr: String,
    /// File with an admin token (helpgrid-token mint --role admin); none: no token sent.
    #[arg(long, env = "HELPGRID_NOTIFY_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Trigger {
    Opened,
    Assigned,
    Renotify,
    Reassigned,
    Escalated,
    Attached,
    Acknowledged,
    Closed,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Template {
    Generic,
    Wecom,
    Dingtalk,
    Feishu,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Role {
    GridWorker,
    GridSupervisor,
    PatrolOfficer,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Agency {
    Community,
    Police,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create or replace a subscription.
    Put {
        /// Subscription id: letters, digits, '-', '_', '.'.
        #[arg(long)]
        id: String,
        /// http:// or https:// URL the notifications are POSTed to.
        #[arg(long)]
        url: String,
        /// File with the HMAC secret (at least 16 bytes; surrounding whitespace ignored).
        #[arg(long)]
        secret_file: PathBuf,
        /// A change to notify (repeat the flag for several).
        #[arg(long = "trigger", value_enum, required = true)]
        triggers: Vec<Trigger>,
        /// Body shape: HelpGrid's generic JSON or an IM robot's text message.
        #[arg(long, value_enum, default_value_t = Template::Generic)]
        template: Template,
        /// Only notices about this responder (repeatable).
        #[arg(long = "responder")]
        responders: Vec<String>,
        /// Only incidents in this grid (repeatable).
        #[arg(long = "grid")]
        grids: Vec<String>,
        /// Only notices about a responder in this role (repeatable).
        #[arg(long = "role", value_enum)]
        roles: Vec<Role>,
        /// Only this agency's track (repeatable).
        #[arg(long = "track", value_enum)]
        tracks: Vec<Agency>,
        /// Free text for the admins.
        #[arg(long, default_value = "")]
        description: String,
        /// Most notifications per request (generic template; 1: one per request). notify
        /// sends what queued behind the previous request, never waiting to fill a batch.
        #[arg(long, default_value_t = 1)]
        batch_max: u32,
    },
    /// Print every subscription (secrets are never shown).
    List,
    /// Delete a subscription.
    Delete {
        /// Subscription id.
        #[arg(long)]
        id: String,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bearer = match &args.token_file {
        Some(path) => Bearer::new(
            &std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?,
        )?,
        None => Bearer::anonymous(),
    };
    let channel = tonic::transport::Channel::from_shared(args.addr.clone())?
        .connect()
        .await
        .with_context(|| format!("cannot connect to {}", args.addr))?;
    let mut client = NotifyServiceClient::with_interceptor(channel, bearer);
    let mut out = std::io::stdout().lock();
    match args.command {
        Command::Put {
            id,
            url,
            secret_file,
            triggers,
            template,
            responders,
            grids,
            roles,
            tracks,
            description,
            batch_max,
        } => {
            let secret = std::fs::read_to_string(&secret_file)
                .with_context(|| format!("cannot read {}", secret_file.display()))?;
            let subscription = Subscription {
                subscription_id: id,
                url,
                responder_ids: responders,
                grid_ids: grids,
                roles: roles
                    .into_iter()
                    .map(|r| match r {
                        Role::GridWorker => ResponderRole::GridWorker,
                        Role::GridSupervisor => ResponderRole::GridSupervisor,
                        Role::PatrolOfficer => ResponderRole::PatrolOfficer,
                    } as i32)
                    .collect(),
                tracks: tracks
                    .into_iter()
                    .map(|t| match t {
                        Agency::Community => Track::Community,
                        Agency::Police => Track::Police,
                    } as i32)
                    .collect(),
                triggers: triggers
                    .into_iter()
                    .map(|t| match t {
                        Trigger::Opened => NotifyTrigger::Opened,
                        Trigger::Assigned => NotifyTrigger::Assigned,
                        Trigger::Renotify => NotifyTrigger::Renotify,
                        Trigger::Reassigned => NotifyTrigger::Reassigned,
                        Trigger::Escalated => NotifyTrigger::Escalated,
                        Trigger::Attached => NotifyTrigger::Attached,
                        Trigger::Acknowledged => NotifyTrigger::Acknowledged,
                        Trigger::Closed => NotifyTrigger::Closed,
                    } as i32)
                    .collect(),
                template: match template {
                    Template::Generic => WebhookTemplate::Generic,
                    Template::Wecom => WebhookTemplate::WecomText,
                    Template::Dingtalk => WebhookTemplate::DingtalkText,
                    Template::Feishu => WebhookTemplate::FeishuText,
                } as i32,
                secret: secret.trim().to_owned(),
                description,
                batch_max,
                ..Subscription::default()
            };
            let stored = client
                .put_subscription(PutSubscriptionRequest {
                    subscription: Some(subscription),
                })
                .await?
                .into_inner();
            writeln!(out, "stored {} → {}", stored.subscription_id, stored.url)?;
        }
        Command::List => {
            let list = client
                .list_subscriptions(ListSubscriptionsRequest {})
                .await?
                .into_inner();
            for s in list.subscriptions {
                writeln!(out, "{s:?}")?;
            }
        }
        Command::Delete { id } => {
            let deleted = client
                .delete_subscription(DeleteSubscriptionRequest {
                    subscription_id: id.clone(),
                })
                .await?
                .into_inner();
            writeln!(
                out,
                "{id}: {}",
                if deleted.deleted {
                    "deleted"
                } else {
                    "not found"
                }
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_answers_version_and_every_flag_has_help() {
        use clap::CommandFactory;
        assert_eq!(
            helpgrid_common::cli::undocumented(&super::Args::command()),
            Vec::<String>::new()
        );
    }
}
