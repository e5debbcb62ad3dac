//! The subscription API (admins only): requests validated once here, failures mapped to
//! gRPC status codes here.

use crate::domain::subscription::{Subscription, valid_id};
use crate::store::SubscriptionStore;
use helpgrid_auth::{Role, TokenKey};
use helpgrid_proto::pb;
use helpgrid_proto::pb::notify_service_server::NotifyService;
use std::sync::Arc;
use tonic::{Request, Response, Status};

#[derive(Clone)]
pub struct NotifyApi {
    pub store: Arc<SubscriptionStore>,
    /// Checked in each method rather than as a tonic interceptor: an interceptor runs before
    /// the method is looked up, so a method the service does not offer answered
    /// UNAUTHENTICATED to a caller without a token instead of UNIMPLEMENTED, the code clients
    /// fall back on.
    pub admin: AdminOnly,
}

fn id_of(id: &str) -> Result<&str, Status> {
    if valid_id(id) {
        Ok(id)
    } else {
        Err(Status::invalid_argument(format!(
            "subscription_id {id:?} must be 1 to 64 letters, digits, '-', '_' or '.'"
        )))
    }
}

#[tonic::async_trait]
impl NotifyService for NotifyApi {
    async fn put_subscription(
        &self,
        request: Request<pb::PutSubscriptionRequest>,
    ) -> Result<Response<pb::Subscription>, Status> {
        self.admin.check(request.metadata())?;
        let sent = request
            .into_inner()
            .subscription
            .ok_or_else(|| Status::invalid_argument("subscription is missing"))?;
        let subscription = Subscription::from_pb(&sent)
            .map_err(|invalid| Status::invalid_argument(invalid.to_string()))?;
        let stored = self
            .store
            .put(subscription)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        tracing::info!(subscription = %stored.id, url = %stored.url, "subscription written");
        Ok(Response::new(stored.to_pb(false)))
    }

    async fn get_subscription(
        &self,
        request: Request<pb::GetSubscriptionRequest>,
    ) -> Result<Response<pb::Subscription>, Status> {
        self.admin.check(request.metadata())?;
        let request = request.into_inner();
        let id = id_of(&request.subscription_id)?;
        self.store
            .get(id)
            .map(|s| Response::new(s.to_pb(false)))
            .ok_or_else(|| Status::not_found(format!("no subscription {id:?}")))
    }

    async fn list_subscriptions(
        &self,
        request: Request<pb::ListSubscriptionsRequest>,
    ) -> Result<Response<pb::ListSubscriptionsResponse>, Status> {
        self.admin.check(request.metadata())?;
        Ok(Response::new(pb::ListSubscriptionsResponse {
            subscriptions: self.store.list().iter().map(|s| s.to_pb(false)).collect(),
        }))
    }

    async fn delete_subscription(
        &self,
        request: Request<pb::DeleteSubscriptionRequest>,
    ) -> Result<Response<pb::DeleteSubscriptionResponse>, Status> {
        self.admin.check(request.metadata())?;
        let request = request.into_inner();
        let id = id_of(&request.subscription_id)?;
        let deleted = self
            .store
            .delete(id)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        tracing::info!(subscription = %id, deleted, "subscription deleted");
        Ok(Response::new(pb::DeleteSubscriptionResponse { deleted }))
    }
}

/// Admits admin tokens only; with no key (authentication off) everyone.
#[derive(Clone)]
pub struct AdminOnly {
    pub key: Option<Arc<TokenKey>>,
}

impl AdminOnly {
    /// Ok for an admin's token (or with authentication off); the refusal otherwise.
    pub fn check(&self, metadata: &tonic::metadata::MetadataMap) -> Result<(), Status> {
        let Some(key) = &self.key else {
            return Ok(());
        };
        let token = metadata
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .ok_or_else(|| {
                Status::unauthenticated(
                    "no bearer token: send the header `authorization: Bearer <admin token>`",
                )
            })?;
        let identity = key
            .verify(token.trim())
            .map_err(|e| Status::unauthenticated(e.to_string()))?;
        if identity.role != Role::Admin {
            return Err(Status::permission_denied(format!(
                "subscriptions are managed by admins; this token's role is {}",
                identity.role
            )));
        }
        Ok(())
    }
}
