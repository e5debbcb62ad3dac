//! Everything a request can fail with, and — in this one place — the gRPC status each
//! failure becomes.

use crate::access::AccessError;
use crate::commands::CommandError;
use crate::read_model::ReplayGap;
use crate::requests::RequestError;
use crate::roster::RosterError;
use helpgrid_proto::pb::RejectReason;
use tonic::{Code, Status};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Invalid(#[from] RequestError),
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error(
        "the status service is still loading incidents and the roster from Kafka; retry in a few seconds"
    )]
    NotReady,
    #[error(
        "incident {incident_id:?} does not exist (or is not yet visible here); check the id with ListIncidents"
    )]
    IncidentNotFound { incident_id: String },
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error(transparent)]
    Roster(#[from] RosterError),
    #[error(
        "the status service is shutting down; reconnect and resume with the cursor of the last update"
    )]
    ShuttingDown,
    #[error(transparent)]
    ReplayGap(#[from] ReplayGap),
    #[error(
        "authentication is off (--insecure-no-auth): there are no tokens to revoke; run the status service with --auth-key-file"
    )]
    AuthOff,
    #[error("{0}; the revocation may not be written: retry (revoking again is harmless)")]
    Revocation(String),
}

impl ApiError {
    pub fn code(&self) -> Code {
        match self {
            Self::Invalid(_) => Code::InvalidArgument,
            Self::Access(error) => error.code(),
            Self::NotReady | Self::ShuttingDown => Code::Unavailable,
            Self::IncidentNotFound { .. } => Code::NotFound,
            Self::ReplayGap(_) => Code::OutOfRange,
            Self::AuthOff => Code::FailedPrecondition,
            Self::Revocation(_) => Code::Unavailable,
            Self::Command(error) => match error {
                CommandError::Rejected { reason, .. } => match reason {
                    RejectReason::NotFound => Code::NotFound,
                    RejectReason::NotPermitted => Code::PermissionDenied,
                    RejectReason::WrongState => Code::FailedPrecondition,
                    RejectReason::Invalid => Code::InvalidArgument,
                    // A reason this build does not know (a newer router): say what happened.
                    RejectReason::Unspecified => Code::Unknown,
                },
                // Retry-safe with the same request id: the router answers a retry of an
                // applied command with success.
                CommandError::NoAnswer { .. }
                | CommandError::Publish { .. }
                | CommandError::NotPublished { .. } => Code::Unavailable,
                CommandError::AnswerWithoutIncident { .. } => Code::Internal,
                // Nothing was sent: the caller's deadline was over before a command could be
                // written and answered. The code its own stack would have given, with a
                // message that says the command did not go out.
                CommandError::DeadlineTooShort { .. } => Code::DeadlineExceeded,
            },
            Self::Roster(error) => match error {
                RosterError::NotFound { .. } => Code::NotFound,
                RosterError::Publish { .. } => Code::Unavailable,
            },
        }
    }

    /// The text the caller reads. A rejection is told in the router's own words: it knows why.
    fn message(&self) -> String {
        match self {
            Self::Command(CommandError::Rejected { message, .. }) if !message.is_empty() => {
                message.clone()
            }
            other => other.to_string(),
        }
    }
}

impl From<ApiError> for Status {
    fn from(error: ApiError) -> Self {
        Status::new(error.code(), error.message())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn rejected(reason: RejectReason, message: &str) -> ApiError {
        ApiError::Command(CommandError::Rejected {
            reason,
            message: message.into(),
        })
    }

    #[test]
    fn router_rejections_map_to_the_matching_grpc_codes_with_the_routers_message() {
        let cases = [
            (RejectReason::NotPermitted, Code::PermissionDenied),
            (RejectReason::WrongState, Code::FailedPrecondition),
            (RejectReason::NotFound, Code::NotFound),
            (RejectReason::Invalid, Code::InvalidArgument),
            (RejectReason::Unspecified, Code::Unknown),
        ];
        for (reason, code) in cases {
            let status = Status::from(rejected(reason, "r7 is not assigned to this incident"));
            assert_eq!(status.code(), code, "{reason:?}");
            assert_eq!(status.message(), "r7 is not assigned to this incident");
        }
    }

    #[test]
    fn a_rejection_without_a_message_still_says_what_happened() {
        let status = Status::from(rejected(RejectReason::WrongState, ""));
        assert!(
            status.message().contains("rejected"),
            "{}",
            status.message()
        );
    }

    #[test]
    fn no_answer_is_unavailable_and_asks_for_a_retry_with_the_same_request_id() {
        let status = Status::from(ApiError::Command(CommandError::NoAnswer {
            timeout: Duration::from_millis(250),
        }));
        assert_eq!(status.code(), Code::Unavailable);
        assert!(
            status
                .message()
                .starts_with("the router did not answer within 250 ms")
                && status.message().contains("retry with the same request_id"),
            "{}",
            status.message()
        );
    }

    #[test]
    fn bad_requests_are_invalid_argument_and_unknown_things_not_found() {
        let invalid = Status::from(ApiError::Invalid(RequestError::Missing {
            field: "location",
        }));
        assert_eq!(
            (invalid.code(), invalid.message()),
            (Code::InvalidArgument, "location is required")
        );
        let missing = Status::from(ApiError::IncidentNotFound {
            incident_id: "in-1".into(),
        });
        assert_eq!(missing.code(), Code::NotFound);
        let responder = Status::from(ApiError::Roster(RosterError::NotFound {
            responder_id: "r".into(),
        }));
        assert_eq!(responder.code(), Code::NotFound);
        assert_eq!(Status::from(ApiError::NotReady).code(), Code::Unavailable);
    }

    #[test]
    fn a_deadline_too_short_to_send_a_command_is_deadline_exceeded() {
        let status = Status::from(ApiError::Command(CommandError::DeadlineTooShort {
            deadline: Duration::from_millis(50),
        }));
        assert_eq!(status.code(), Code::DeadlineExceeded);
        assert!(
            status.message().contains("NOT sent"),
            "{}",
            status.message()
        );
    }

    #[test]
    fn kafka_produce_failures_are_unavailable() {
        let error = CommandError::Publish {
            topic: "t".into(),
            source: rdkafka::error::KafkaError::Canceled,
        };
        assert_eq!(
            Status::from(ApiError::Command(error)).code(),
            Code::Unavailable
        );
    }
}
