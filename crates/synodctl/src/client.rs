//! Talking to the cluster: endpoints, connections, timeouts and error texts.
//!
//! etcdctl reports a failed request with the server's etcd error text (`etcdserver: key is
//! not provided`), with Go's `rpc error: code = ... desc = ...` for any other gRPC status,
//! and with `context deadline exceeded` when the command timeout passes. Scripts match on
//! these texts, so [`request_error`] reproduces them.

use std::future::Future;
use std::time::Duration;

use synod_api::EtcdError;
use synod_api::etcdserverpb::cluster_client::ClusterClient;
use synod_api::etcdserverpb::kv_client::KvClient;
use synod_api::etcdserverpb::lease_client::LeaseClient;
use synod_api::etcdserverpb::maintenance_client::MaintenanceClient;
use synod_api::v3lockpb::lock_client::LockClient;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};

use crate::cli::GlobalFlags;
use crate::exit::CtlError;
use crate::limits::RESPONSE_BYTES_MAX;

/// Go's `context.DeadlineExceeded` text, which etcdctl prints when a timeout passes.
pub const DEADLINE_EXCEEDED: &str = "context deadline exceeded";

/// How long to wait before trying a refused endpoint again, within the dial timeout.
const REDIAL_PAUSE: Duration = Duration::from_millis(50);

/// Connection settings from the global flags.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    pub dial_timeout: Duration,
    pub command_timeout: Duration,
    pub keepalive_time: Duration,
    pub keepalive_timeout: Duration,
}

impl ClientConfig {
    pub fn from_flags(flags: &GlobalFlags) -> ClientConfig {
        ClientConfig {
            dial_timeout: flags.dial_timeout,
            command_timeout: flags.command_timeout,
            keepalive_time: flags.keepalive_time,
            keepalive_timeout: flags.keepalive_timeout,
        }
    }
}

/// The URL tonic dials for an etcdctl endpoint: `host:port` means `http://host:port`, as in
/// etcdctl. TLS is not supported yet, so `https://` is refused with a message saying so.
pub fn endpoint_url(endpoint: &str) -> Result<String, CtlError> {
    let endpoint = endpoint.trim();
    if endpoint.starts_with("https://") || endpoint.starts_with("unixs://") {
        return Err(CtlError::bad_args(format!(
            "endpoint {endpoint}: TLS is not supported by synodctl yet; use http:// endpoints"
        )));
    }
    if endpoint.starts_with("unix:") {
        return Err(CtlError::bad_args(format!(
            "endpoint {endpoint}: unix socket endpoints are not supported by synodctl yet"
        )));
    }
    if endpoint.starts_with("http://") {
        return Ok(endpoint.to_string());
    }
    if endpoint.contains("://") {
        return Err(CtlError::bad_args(format!("endpoint {endpoint}: unknown URL scheme")));
    }
    Ok(format!("http://{endpoint}"))
}

/// A connection to the cluster, with the command timeout applied to each request.
#[derive(Clone)]
pub struct Client {
    channel: Channel,
    command_timeout: Duration,
}

impl Client {
    /// Connects to the first of `endpoints` that answers, trying them in turn until the dial
    /// timeout passes (a member that is starting up refuses connections for a moment).
    pub async fn connect(endpoints: &[String], config: &ClientConfig) -> Result<Client, CtlError> {
        let mut targets = Vec::with_capacity(endpoints.len());
        for endpoint in endpoints {
            let url = endpoint_url(endpoint)?;
            let target = Endpoint::from_shared(url)
                .map_err(|e| CtlError::bad_args(format!("endpoint {endpoint}: {e}")))?
                .connect_timeout(config.dial_timeout)
                .http2_keep_alive_interval(config.keepalive_time)
                .keep_alive_timeout(config.keepalive_timeout);
            targets.push(target);
        }
        if targets.is_empty() {
            return Err(CtlError::bad_args("no endpoints given"));
        }
        let deadline = Instant::now() + config.dial_timeout;
        loop {
            for target in &targets {
                let remaining = deadline.saturating_duration_since(Instant::now());
                if let Ok(Ok(channel)) = tokio::time::timeout(remaining, target.connect()).await {
                    return Ok(Client { channel, command_timeout: config.command_timeout });
                }
            }
            if Instant::now() + REDIAL_PAUSE >= deadline {
                return Err(CtlError::request(DEADLINE_EXCEEDED));
            }
            tokio::time::sleep(REDIAL_PAUSE).await;
        }
    }

    pub fn kv(&self) -> KvClient<Channel> {
        KvClient::new(self.channel.clone()).max_decoding_message_size(RESPONSE_BYTES_MAX)
    }

    pub fn maintenance(&self) -> MaintenanceClient<Channel> {
        MaintenanceClient::new(self.channel.clone()).max_decoding_message_size(RESPONSE_BYTES_MAX)
    }

    pub fn lease(&self) -> LeaseClient<Channel> {
        LeaseClient::new(self.channel.clone())
    }

    pub fn lock(&self) -> LockClient<Channel> {
        LockClient::new(self.channel.clone())
    }

    pub fn cluster(&self) -> ClusterClient<Channel> {
        ClusterClient::new(self.channel.clone()).max_decoding_message_size(RESPONSE_BYTES_MAX)
    }

    /// Runs one request under the command timeout, as etcdctl's `commandCtx` does.
    pub async fn call<T>(
        &self,
        request: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, CtlError> {
        with_timeout(self.command_timeout, request).await
    }
}

/// Runs a request under `timeout`, mapping its failure to etcdctl's error text.
pub async fn with_timeout<T>(
    timeout: Duration,
    request: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, CtlError> {
    match tokio::time::timeout(timeout, request).await {
        Ok(Ok(response)) => Ok(response.into_inner()),
        Ok(Err(status)) => Err(CtlError::request(request_error(&status))),
        Err(_) => Err(CtlError::request(DEADLINE_EXCEEDED)),
    }
}

/// The text etcd's Go client gives a failed request: the etcd error text when the server
/// sent one of etcd's errors, else gRPC-Go's rendering of the status.
pub fn request_error(status: &tonic::Status) -> String {
    if let Some(error) = EtcdError::from_message(status.message()) {
        return error.message().to_string();
    }
    if status.code() == tonic::Code::DeadlineExceeded {
        return DEADLINE_EXCEEDED.to_string();
    }
    format!("rpc error: code = {} desc = {}", go_code_name(status.code()), status.message())
}

/// gRPC-Go's name for a status code (`codes.Code.String()`).
fn go_code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bare `host:port` endpoints get etcdctl's implied http scheme; TLS is refused clearly.
    #[test]
    fn endpoint_urls() {
        assert_eq!(endpoint_url("127.0.0.1:2379").unwrap(), "http://127.0.0.1:2379");
        assert_eq!(endpoint_url(" http://h:1 ").unwrap(), "http://h:1");
        let error = endpoint_url("https://h:1").unwrap_err();
        assert!(error.to_string().contains("TLS"), "{error}");
    }

    /// etcd errors print as their text; other statuses as gRPC-Go renders them.
    #[test]
    fn error_texts_match_the_go_client() {
        let status = tonic::Status::from(EtcdError::Compacted);
        assert_eq!(request_error(&status), "etcdserver: mvcc: required revision has been compacted");
        let status = tonic::Status::unimplemented("synod does not serve Hash yet");
        assert_eq!(
            request_error(&status),
            "rpc error: code = Unimplemented desc = synod does not serve Hash yet"
        );
        let status = tonic::Status::deadline_exceeded("anything");
        assert_eq!(request_error(&status), DEADLINE_EXCEEDED);
    }
}
