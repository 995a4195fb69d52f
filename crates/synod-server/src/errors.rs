//! How failures inside the server reach clients: as etcd's gRPC statuses, and on the JSON
//! gateway as grpc-gateway's HTTP statuses and error bodies.
//!
//! The etcd error texts themselves live in `synod_api::etcd_error`; this module only maps
//! synod's internal failures onto them.

use http::StatusCode;
use synod_api::EtcdError;
use synod_storage::StorageError;
use tonic::{Code, Status};

use synod_consensus::ConsensusError;

pub fn consensus(error: ConsensusError) -> Status {
    match error {
        ConsensusError::NoLeader => EtcdError::NoLeader.into(),
        ConsensusError::LeaderChanged => EtcdError::LeaderChanged.into(),
        ConsensusError::Timeout => EtcdError::Timeout.into(),
        ConsensusError::TooManyRequests => EtcdError::TooManyRequests.into(),
        ConsensusError::NotLeader => EtcdError::NotLeader.into(),
        ConsensusError::Stopped => EtcdError::Stopped.into(),
        ConsensusError::Etcd(e) => e.into(),
        // etcd answers a server that cannot serve any more with "server stopped".
        ConsensusError::Failed(message) => {
            tracing::error!(error = %message, "consensus failure");
            EtcdError::Stopped.into()
        }
    }
}

pub fn storage(error: StorageError) -> Status {
    if error.is_corruption() {
        tracing::error!(error = %error, "corrupt data; refusing the request");
        return EtcdError::Corrupt.into();
    }
    tracing::error!(error = %error, "storage failure");
    Status::new(Code::Unknown, format!("synod: storage failure: {error}"))
}

/// An outcome that does not match the command proposed: a bug, reported as such.
pub fn unexpected(what: &str) -> Status {
    tracing::error!("unexpected outcome for {what}");
    Status::internal(format!("synod: unexpected outcome for {what}"))
}

/// The HTTP status grpc-gateway (v1, as in etcd 3.4 and 3.5) gives a gRPC code.
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::REQUEST_TIMEOUT,
        Code::Unknown => StatusCode::INTERNAL_SERVER_ERROR,
        Code::InvalidArgument => StatusCode::BAD_REQUEST,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::FailedPrecondition => StatusCode::BAD_REQUEST,
        Code::Aborted => StatusCode::CONFLICT,
        Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The JSON body grpc-gateway sends for an error.
pub fn http_body(status: &Status) -> serde_json::Value {
    serde_json::json!({
        "error": status.message(),
        "code": status.code() as i32,
        "message": status.message(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Clients see etcd's texts for the consensus failures they retry on.
    #[test]
    fn consensus_errors_use_etcd_texts() {
        assert_eq!(consensus(ConsensusError::Timeout).message(), "etcdserver: request timed out");
        assert_eq!(consensus(ConsensusError::NoLeader).message(), "etcdserver: no leader");
        assert_eq!(consensus(ConsensusError::NoLeader).code(), Code::Unavailable);
        assert_eq!(consensus(ConsensusError::LeaderChanged).message(), "etcdserver: leader changed");
        assert_eq!(consensus(ConsensusError::TooManyRequests).message(), "etcdserver: too many requests");
        assert_eq!(consensus(ConsensusError::TooManyRequests).code(), Code::ResourceExhausted);
        assert_eq!(consensus(ConsensusError::Stopped).code(), Code::Unavailable);
    }

    /// Corruption is etcd's DataLoss error, never a silent answer.
    #[test]
    fn corruption_is_data_loss() {
        let status = storage(StorageError::Corrupt { what: "x".into(), detail: "y".into() });
        assert_eq!(status.code(), Code::DataLoss);
        assert_eq!(status.message(), "etcdserver: corrupt cluster");
    }

    /// The gateway maps codes as grpc-gateway does for the errors etcd clients meet.
    #[test]
    fn gateway_codes() {
        assert_eq!(http_status(Code::InvalidArgument), StatusCode::BAD_REQUEST);
        assert_eq!(http_status(Code::OutOfRange), StatusCode::BAD_REQUEST);
        assert_eq!(http_status(Code::ResourceExhausted), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(http_status(Code::Unavailable), StatusCode::SERVICE_UNAVAILABLE);
    }
}
