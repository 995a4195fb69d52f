//! Serving one listener: HTTP/1.1 and HTTP/2 (h2c, for gRPC) on the same port, as etcd
//! serves gRPC and its JSON gateway together.
//!
//! What clients send passes through `AuthorityRewrite` before hyper parses it, so that
//! etcdctl's `:authority` values, which etcd accepts and h2 does not, reach synod too. The
//! peer port serves synod members only and skips it.
//!
//! On an `https` URL every connection first completes a TLS handshake (`tls`), within
//! [`HANDSHAKE_TIMEOUT`]: a plaintext client fails at once (its first bytes are not a TLS
//! record), and one that sends nothing cannot hold a connection open.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use synod_base::limits;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::ServiceExt as _;

use crate::authority::AuthorityRewrite;
use crate::pace::Pace;
use crate::tls::{self, ClientIdentity, common_name};

/// How long in-flight requests get to finish once shutdown starts.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Which port a listener serves. Only the client port gets the `:authority` shim: peers are
/// synod members, whose requests h2 accepts as they are, and replication traffic should not
/// pay for it; the metrics port serves plain HTTP scrapes and probes.
#[derive(Clone, Copy, Debug)]
pub enum Port {
    Client,
    Peer,
    Metrics,
}

/// The HTTP/2 settings of a listener (etcd's `--max-concurrent-streams` and
/// `--grpc-keepalive-*` on the client port).
#[derive(Clone, Copy, Debug)]
pub struct Http2 {
    /// Streams one connection may have open at once; more wait for the client's turn.
    pub streams_max: u32,
    /// How often an idle connection is pinged (`None`: never), and how long its answer may
    /// take before the connection is closed.
    pub keepalive_interval: Option<Duration>,
    pub keepalive_timeout: Duration,
}

impl Default for Http2 {
    /// What peer and metrics ports use: the stream bound, and no pings of the server's own
    /// (members ping each other with heartbeats).
    fn default() -> Self {
        Http2 {
            streams_max: limits::STREAMS_PER_CONNECTION_MAX,
            keepalive_interval: None,
            keepalive_timeout: Duration::from_secs(20),
        }
    }
}

/// Accepts connections on `listener` and serves `app` on each, over TLS when `tls` is set,
/// until `shutdown` turns true; then lets the requests in flight finish, for up to
/// [`SHUTDOWN_GRACE`].
pub async fn serve(
    listener: TcpListener,
    app: Router,
    (port, http2): (Port, Http2),
    tls: Option<tls::Listener>,
    mut shutdown: watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(http2.keepalive_interval)
        .keep_alive_timeout(http2.keepalive_timeout)
        .max_concurrent_streams(http2.streams_max)
        .max_pending_accept_reset_streams(limits::HTTP2_RESETS_MAX)
        .max_local_error_reset_streams(limits::HTTP2_RESETS_MAX)
        .adaptive_window(true);
    let connections = Arc::new(Semaphore::new(match port {
        Port::Client => limits::CLIENT_CONNECTIONS_MAX,
        Port::Peer => limits::PEER_CONNECTIONS_MAX,
        Port::Metrics => limits::METRICS_CONNECTIONS_MAX,
    }));
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(error) => {
                        // Usually out of file descriptors: back off instead of spinning.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(permit) = connections.clone().try_acquire_owned() else {
                    tracing::warn!(?port, "too many connections; closing a new one");
                    continue;
                };
                // Small replies must not wait for Nagle's algorithm.
                let _ = stream.set_nodelay(true);
                let connection = Connection { builder: builder.clone(), watcher: graceful.watcher(), port };
                tokio::spawn(connection.serve(stream, tls.clone(), app.clone(), permit));
            }
            _ = stopped(&mut shutdown) => break,
        }
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(SHUTDOWN_GRACE) => tracing::warn!("connections still open at shutdown; closing them"),
    }
}

/// What serving one accepted connection needs.
struct Connection {
    builder: auto::Builder<TokioExecutor>,
    watcher: Watcher,
    port: Port,
}

impl Connection {
    /// Serves the connection until it closes: the TLS handshake first if there is one, then
    /// HTTP/1.1 or HTTP/2, with the client's requests paced. `_permit` holds its place
    /// among the member's connections.
    async fn serve(
        self,
        stream: TcpStream,
        tls: Option<tls::Listener>,
        app: Router,
        _permit: OwnedSemaphorePermit,
    ) {
        let Some(tls) = tls else {
            return self.serve_http(stream, app, None).await;
        };
        let handshake = Duration::from_millis(limits::TLS_HANDSHAKE_TIMEOUT_MS);
        let stream = match tokio::time::timeout(handshake, tls.acceptor.accept(stream)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => return tracing::debug!(%error, "TLS handshake failed"),
            Err(_) => return tracing::debug!("TLS handshake timed out"),
        };
        let identity = stream.get_ref().1.peer_certificates().and_then(|c| c.first()).and_then(common_name);
        if let Some(allowed) = &tls.allowed_common_name
            && identity.as_ref() != Some(allowed)
        {
            let port = self.port;
            return tracing::warn!(?identity, %allowed, ?port, "refused a certificate with another common name");
        }
        self.serve_http(stream, app, identity.map(ClientIdentity)).await
    }

    /// Serves HTTP on the connection. Each request goes to `app` (shared, not rebuilt per
    /// connection) with the connection's verified client identity, if any; a client's
    /// requests are paced per connection, members' are not.
    async fn serve_http<S>(self, stream: S, app: Router, identity: Option<ClientIdentity>)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let pace = match self.port {
            Port::Client | Port::Metrics => {
                Some(Arc::new(tokio::sync::Mutex::new(Pace::new(limits::CONNECTION_REQUESTS_PER_SECOND))))
            }
            Port::Peer => None,
        };
        let service = tower::service_fn(move |mut request: http::Request<hyper::body::Incoming>| {
            let (app, pace) = (app.clone(), pace.clone());
            if let Some(identity) = &identity {
                request.extensions_mut().insert(identity.clone());
            }
            async move {
                if let Some(pace) = pace {
                    pace.lock().await.wait().await;
                }
                app.oneshot(request).await
            }
        });
        let outcome = match self.port {
            // etcdctl sends `:authority` values h2 rejects; the shim replaces them.
            Port::Client => self.run(AuthorityRewrite::new(stream), service).await,
            Port::Peer | Port::Metrics => self.run(stream, service).await,
        };
        if let Err(error) = outcome {
            tracing::debug!(%error, "connection ended with an error");
        }
    }

    async fn run<S, H>(self, stream: S, service: H) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        H: tower::Service<
                http::Request<hyper::body::Incoming>,
                Response = axum::response::Response,
                Error = std::convert::Infallible,
            > + Clone
            + Send
            + 'static,
        H::Future: Send + 'static,
    {
        let service = TowerToHyperService::new(service);
        let connection = self.builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
        self.watcher.watch(connection.into_owned()).await
    }
}

/// Resolves once `shutdown` turns true (or its sender is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}
