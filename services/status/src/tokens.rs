//! `TokenService`: an admin revokes a subject's tokens over gRPC (a lost phone), as
//! `helpgrid-token revoke` does from a shell: the same compacted revocations record, which
//! every verifier follows. The call answers once the record is written and this instance
//! has applied it, so the admin's next call here already sees it.

use crate::access::{self, Caller, Gate};
use crate::errors::ApiError;
use crate::grpc::answer;
use crate::requests;
use helpgrid_common::kafka::KafkaArgs;
use helpgrid_common::time::{now_millis, to_timestamp};
use helpgrid_proto::pb::token_service_server::TokenService;
use helpgrid_proto::pb::{RevokeTokensRequest, TokenRevocation};
use std::time::Duration;
use tonic::{Request, Response, Status};

/// Longest reason kept on the record.
pub const MAX_REASON_LEN: usize = 500;
/// How long the call waits for this instance's follower to apply the record it wrote.
const APPLIED_WITHIN: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct TokenApi {
    pub kafka: KafkaArgs,
    pub gate: Gate,
}

impl TokenApi {
    async fn revoke(
        &self,
        caller: &Caller,
        request: &RevokeTokensRequest,
    ) -> Result<TokenRevocation, ApiError> {
        let subject = requests::id("subject", &request.subject)?;
        if request.reason.chars().count() > MAX_REASON_LEN {
            return Err(requests::RequestError::TooLong {
                field: "reason",
                max: MAX_REASON_LEN,
            }
            .into());
        }
        let Some(key) = self.gate.key() else {
            return Err(ApiError::AuthOff);
        };
        let revoked_by = caller
            .identity()
            .map(|i| i.subject.clone())
            .unwrap_or_default();
        let now = now_millis();
        helpgrid_auth::follower::publish_revocation(
            &self.kafka,
            &subject,
            now,
            &request.reason,
            &revoked_by,
        )
        .await
        .map_err(|error| ApiError::Revocation(error.to_string()))?;
        // The record's `not_before` is in whole seconds: a token issued the second before
        // is refused once this instance has read it.
        let probe = u64::try_from(now / 1000).unwrap_or(0).saturating_sub(1);
        let applied = tokio::time::timeout(APPLIED_WITHIN, async {
            while !key.revocations().is_revoked(&subject, probe) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        if applied.is_err() {
            // Written: every verifier applies it once it reads it. Say so, not fail.
            tracing::warn!(subject = %subject, "revocation written but not yet applied here");
        }
        tracing::info!(subject = %subject, revoked_by = %revoked_by, reason = %request.reason, "tokens revoked");
        Ok(TokenRevocation {
            envelope: None,
            subject,
            not_before: Some(to_timestamp(now)),
            reason: request.reason.clone(),
            revoked_by,
        })
    }
}

#[tonic::async_trait]
impl TokenService for TokenApi {
    async fn revoke_tokens(
        &self,
        request: Request<RevokeTokensRequest>,
    ) -> Result<Response<TokenRevocation>, Status> {
        let result = match access::caller_of(&request) {
            Ok(caller) => self.revoke(&caller, request.get_ref()).await,
            Err(error) => Err(error.into()),
        };
        answer("RevokeTokens", result)
    }
}
