//! Talking to the cluster: endpoints, connections, timeouts and error texts.
//!
//! etcdctl reports a failed request with the server's etcd error text (`etcdserver: key is
//! not provided`), with Go's `rpc error: code = ... desc = ...` for any other gRPC status,
//! and with `context deadline exceeded` when the command timeout passes. Scripts match on
//! these texts, so [`request_error`] reproduces them.

use std::future::Future;
use std::time::Duration;

use synod_api::EtcdError;
use synod_api::etcdserverpb::AuthenticateRequest;
use synod_api::etcdserverpb::auth_client::AuthClient;
use synod_api::etcdserverpb::cluster_client::ClusterClient;
use synod_api::etcdserverpb::kv_client::KvClient;
use synod_api::etcdserverpb::lease_client::LeaseClient;
use synod_api::etcdserverpb::maintenance_client::MaintenanceClient;
use synod_api::etcdserverpb::watch_client::WatchClient;
use synod_api::v3electionpb::election_client::ElectionClient;
use synod_api::v3lockpb::lock_client::LockClient;
use tokio::time::Instant;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

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
    /// TLS settings from --cacert, --cert and --key; `None` without --cacert.
    pub tls: Option<ClientTlsConfig>,
    /// --user and its password, for Authenticate.
    pub login: Option<(String, String)>,
}

impl ClientConfig {
    pub fn from_flags(flags: &GlobalFlags) -> Result<ClientConfig, CtlError> {
        let read = |path: &std::path::Path| {
            std::fs::read(path).map_err(|e| CtlError::bad_args(format!("read {}: {e}", path.display())))
        };
        let tls = match (&flags.cacert, &flags.cert, &flags.key) {
            (None, None, None) => None,
            (None, _, _) => {
                return Err(CtlError::bad_args(
                    "TLS needs --cacert: the CA the server's certificate is checked against",
                ));
            }
            (Some(ca), cert, key) => {
                let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca)?));
                if let (Some(cert), Some(key)) = (cert, key) {
                    tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
                }
                Some(tls)
            }
        };
        if !flags.insecure_transport && tls.is_none() {
            return Err(CtlError::bad_args("--insecure-transport=false needs --cacert"));
        }
        let login = match (&flags.user, &flags.password) {
            (None, _) => None,
            (Some(user), Some(password)) => Some((user.clone(), password.clone())),
            (Some(user), None) => match user.split_once(':') {
                Some((name, password)) => Some((name.to_string(), password.to_string())),
                None => {
                    return Err(CtlError::bad_args(
                        "--user needs a password: --user name:password or --password",
                    ));
                }
            },
        };
        Ok(ClientConfig {
            dial_timeout: flags.dial_timeout,
            command_timeout: flags.command_timeout,
            keepalive_time: flags.keepalive_time,
            keepalive_timeout: flags.keepalive_timeout,
            tls,
            login,
        })
    }
}

/// The URL tonic dials for an etcdctl endpoint: `host:port` means `http://host:port`, as in
/// etcdctl.
pub fn endpoint_url(endpoint: &str) -> Result<String, CtlError> {
    let endpoint = endpoint.trim();
    if endpoint.starts_with("unix:") || endpoint.starts_with("unixs://") {
        return Err(CtlError::bad_args(format!(
            "endpoint {endpoint}: unix socket endpoints are not supported by synodctl yet"
        )));
    }
    if endpoint.starts_with("http://") || endpoint.starts_with("https://") {
        return Ok(endpoint.to_string());
    }
    if endpoint.contains("://") {
        return Err(CtlError::bad_args(format!("endpoint {endpoint}: unknown URL scheme")));
    }
    Ok(format!("http://{endpoint}"))
}

/// Adds the token from Authenticate to every request, as etcd's clients do.
#[derive(Clone, Debug, Default)]
pub struct Token(Option<MetadataValue<Ascii>>);

impl Interceptor for Token {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = &self.0 {
            request.metadata_mut().insert("token", token.clone());
        }
        Ok(request)
    }
}

/// A channel whose requests carry the token.
pub type Transport = InterceptedService<Channel, Token>;

/// A connection to the cluster, with the command timeout applied to each request.
#[derive(Clone)]
pub struct Client {
    channel: Channel,
    token: Token,
    command_timeout: Duration,
}

impl Client {
    /// Connects to the first of `endpoints` that answers, trying them in turn until the dial
    /// timeout passes (a member that is starting up refuses connections for a moment).
    pub async fn connect(endpoints: &[String], config: &ClientConfig) -> Result<Client, CtlError> {
        let mut targets = Vec::with_capacity(endpoints.len());
        for endpoint in endpoints {
            let url = endpoint_url(endpoint)?;
            let mut target = Endpoint::from_shared(url.clone())
                .map_err(|e| CtlError::bad_args(format!("endpoint {endpoint}: {e}")))?
                .connect_timeout(config.dial_timeout)
                .http2_keep_alive_interval(config.keepalive_time)
                .keep_alive_timeout(config.keepalive_timeout);
            if url.starts_with("https://") {
                let tls = config.tls.clone().ok_or_else(|| {
                    CtlError::bad_args(format!(
                        "endpoint {endpoint} uses TLS: give the server's CA with --cacert"
                    ))
                })?;
                target = target
                    .tls_config(tls)
                    .map_err(|e| CtlError::bad_args(format!("endpoint {endpoint}: {e}")))?;
            }
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
                    let client =
                        Client { channel, token: Token::default(), command_timeout: config.command_timeout };
                    return client.login(config).await;
                }
            }
            if Instant::now() + REDIAL_PAUSE >= deadline {
                return Err(CtlError::request(DEADLINE_EXCEEDED));
            }
            tokio::time::sleep(REDIAL_PAUSE).await;
        }
    }

    /// Authenticates with --user, as etcdctl does before its command; the token then goes
    /// with every request.
    async fn login(mut self, config: &ClientConfig) -> Result<Client, CtlError> {
        let Some((name, password)) = config.login.clone() else { return Ok(self) };
        let mut auth = AuthClient::new(self.channel.clone());
        let reply = self.call(auth.authenticate(AuthenticateRequest { name, password })).await?;
        let token =
            reply.token.parse().map_err(|_| CtlError::request("the server sent a malformed token"))?;
        self.token = Token(Some(token));
        Ok(self)
    }

    fn transport(&self) -> Transport {
        InterceptedService::new(self.channel.clone(), self.token.clone())
    }

    pub fn kv(&self) -> KvClient<Transport> {
        KvClient::new(self.transport()).max_decoding_message_size(RESPONSE_BYTES_MAX)
    }

    pub fn maintenance(&self) -> MaintenanceClient<Transport> {
        MaintenanceClient::new(self.transport()).max_decoding_message_size(RESPONSE_BYTES_MAX)
    }

    pub fn election(&self) -> ElectionClient<Transport> {
        ElectionClient::new(self.transport())
    }

    pub fn auth(&self) -> AuthClient<Transport> {
        AuthClient::new(self.transport())
    }

    pub fn watch(&self) -> WatchClient<Transport> {
        WatchClient::new(self.transport()).max_decoding_message_size(RESPONSE_BYTES_MAX)
    }

    pub fn lease(&self) -> LeaseClient<Transport> {
        LeaseClient::new(self.transport())
    }

    pub fn lock(&self) -> LockClient<Transport> {
        LockClient::new(self.transport())
    }

    pub fn cluster(&self) -> ClusterClient<Transport> {
        ClusterClient::new(self.transport()).max_decoding_message_size(RESPONSE_BYTES_MAX)
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

    /// Bare `host:port` endpoints get etcdctl's implied http scheme; unix sockets are
    /// refused clearly.
    #[test]
    fn endpoint_urls() {
        assert_eq!(endpoint_url("127.0.0.1:2379").unwrap(), "http://127.0.0.1:2379");
        assert_eq!(endpoint_url(" http://h:1 ").unwrap(), "http://h:1");
        assert_eq!(endpoint_url("https://h:1").unwrap(), "https://h:1");
        let error = endpoint_url("unix:///tmp/s").unwrap_err();
        assert!(error.to_string().contains("unix"), "{error}");
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
