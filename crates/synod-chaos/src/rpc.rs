//! gRPC connections to the members, and the calls the harness itself makes besides the
//! workload: Status (health, leader), linearizable probes, HashKV.
//!
//! Every call is bounded by [`REQUEST_TIMEOUT`] twice: by tonic (which sends it as
//! `grpc-timeout`, so the server gives up too) and by a local timer, because a paused
//! member can hold a connection open without ever answering at the transport level.

use std::future::Future;
use std::time::Duration;

use anyhow::{Context, Result};
use synod_api::etcdserverpb::kv_client::KvClient;
use synod_api::etcdserverpb::maintenance_client::MaintenanceClient;
use synod_api::etcdserverpb::{HashKvRequest, HashKvResponse, RangeRequest, StatusRequest, StatusResponse};
use tonic::transport::{Channel, Endpoint};

/// How long one request may take before its outcome is unknown.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a (re)connection may take; a killed member refuses at once, a paused one hangs.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// A channel to `url` that connects on first use and reconnects after failures by itself,
/// so a member that is killed and restarted is reached again without help.
pub fn channel(url: &str) -> Result<Channel> {
    let endpoint = Endpoint::from_shared(url.to_string()).with_context(|| format!("parse the URL {url}"))?;
    Ok(endpoint.connect_timeout(CONNECT_TIMEOUT).timeout(REQUEST_TIMEOUT).connect_lazy())
}

/// Why a call got no reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallError {
    /// The request never left the client: no connection to the member could be made (a
    /// killed member refuses connections). It cannot have taken effect.
    NotSent(String),
    /// Anything else: a timeout, a lost connection, an error from the member. A write may
    /// still take effect.
    Unknown(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::NotSent(error) => write!(f, "not sent: {error}"),
            CallError::Unknown(error) => f.write_str(error),
        }
    }
}

/// Runs one call under [`REQUEST_TIMEOUT`].
///
/// Cancel safety: dropping the future abandons the request; its effect is then unknown.
pub async fn bounded<T>(
    call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, CallError> {
    match tokio::time::timeout(REQUEST_TIMEOUT + Duration::from_millis(100), call).await {
        Ok(Ok(response)) => Ok(response.into_inner()),
        Ok(Err(status)) => {
            let error = format!("{:?}: {}", status.code(), status.message());
            // tonic's channel sends a request only over an established connection; this
            // status is what it returns when establishing one failed (hyper's connector
            // error text), so no byte of the request was written.
            if status.code() == tonic::Code::Unavailable && status.message() == CONNECT_ERROR {
                Err(CallError::NotSent(error))
            } else {
                Err(CallError::Unknown(error))
            }
        }
        Err(_) => Err(CallError::Unknown(format!("timed out after {REQUEST_TIMEOUT:?}"))),
    }
}

/// The status message of a request that failed because no connection could be made.
const CONNECT_ERROR: &str = "tcp connect error";

/// A member's Status: its id (in the header), the leader it knows, its raft state.
pub async fn status(channel: &Channel) -> Result<StatusResponse, String> {
    bounded(MaintenanceClient::new(channel.clone()).status(StatusRequest {})).await.map_err(|e| e.to_string())
}

/// A linearizable read of one key, as a health probe: it succeeds only through a leader
/// that can confirm it still leads. Returns the store revision.
pub async fn linearizable_probe(channel: &Channel) -> Result<i64, String> {
    let request = RangeRequest { key: b"synod-chaos/probe".to_vec(), ..Default::default() };
    let response = bounded(KvClient::new(channel.clone()).range(request)).await.map_err(|e| e.to_string())?;
    Ok(response.header.map_or(0, |header| header.revision))
}

/// The hash of a member's key-value history up to `revision`.
pub async fn hash_kv(channel: &Channel, revision: i64) -> Result<HashKvResponse, String> {
    bounded(MaintenanceClient::new(channel.clone()).hash_kv(HashKvRequest { revision }))
        .await
        .map_err(|e| e.to_string())
}
