//! Errors to gRPC statuses, in one place: which code each failure gets and what it says.

use shardci_proto::convert::WireError;
use shardci_scheduling::schedule::{SessionError, SubmitError};
use tonic::Status;

use super::commands::ShuttingDown;
use super::sources::SourceError;

impl From<ShuttingDown> for Status {
    fn from(e: ShuttingDown) -> Self {
        Status::unavailable(e.to_string())
    }
}

impl From<SourceError> for Status {
    fn from(e: SourceError) -> Self {
        match e {
            SourceError::Io(e) => Status::internal(format!("failed to store the bundle: {e}")),
            SourceError::TooLarge(_) => Status::resource_exhausted(e.to_string()),
            SourceError::Shared(_) => Status::unavailable(e.to_string()),
            other => Status::invalid_argument(other.to_string()),
        }
    }
}

/// A message that does not make sense.
pub(crate) fn invalid(e: WireError) -> Status {
    Status::invalid_argument(e.to_string())
}

/// A session message from a session that is no longer current.
pub(crate) fn session(e: SessionError) -> Status {
    match e {
        SessionError::AlreadyConnected { .. } => Status::already_exists(e.to_string()),
        _ => Status::failed_precondition(e.to_string()),
    }
}

/// A refused submission.
pub(crate) fn submit(e: SubmitError) -> Status {
    match e {
        busy @ SubmitError::Busy { .. } => {
            let mut status = Status::resource_exhausted(busy.to_string());
            // A hint for clients: try again after this long.
            if let Ok(value) = "30000".parse() {
                status.metadata_mut().insert("retry-after-ms", value);
            }
            status
        }
        SubmitError::Duplicate(id) => Status::already_exists(format!("run {id} exists")),
        SubmitError::Invalid(message) => {
            Status::invalid_argument(format!("invalid plan: {message}"))
        }
    }
}
