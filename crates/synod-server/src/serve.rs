//! Serving one listener: HTTP/1.1 and HTTP/2 (h2c, for gRPC) on the same port, as etcd
//! serves gRPC and its JSON gateway together.
//!
//! What clients send passes through `AuthorityRewrite` before hyper parses it, so that
//! etcdctl's `:authority` values, which etcd accepts and h2 does not, reach synod too. The
//! peer port serves synod members only and skips it.

use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::authority::AuthorityRewrite;

/// Streams one HTTP/2 connection may have open at once; more wait for the client's turn
/// rather than taking unbounded server memory.
const STREAMS_PER_CONNECTION_MAX: u32 = 1024;

/// How long in-flight requests get to finish once shutdown starts.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Which port a listener serves. Only the client port gets the `:authority` shim: peers are
/// synod members, whose requests h2 accepts as they are, and replication traffic should not
/// pay for it.
#[derive(Clone, Copy, Debug)]
pub enum Port {
    Client,
    Peer,
}

/// Accepts connections on `listener` and serves `app` on each, until `shutdown` turns true.
pub async fn serve(listener: TcpListener, app: Router, port: Port, mut shutdown: watch::Receiver<bool>) {
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http2().max_concurrent_streams(STREAMS_PER_CONNECTION_MAX).adaptive_window(true);
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
                // Small replies must not wait for Nagle's algorithm.
                let _ = stream.set_nodelay(true);
                let service = TowerToHyperService::new(app.clone());
                match port {
                    // etcdctl sends `:authority` values h2 rejects; the shim replaces them.
                    Port::Client => spawn_connection(&builder, &graceful, AuthorityRewrite::new(stream), service),
                    Port::Peer => spawn_connection(&builder, &graceful, stream, service),
                }
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

/// Serves one accepted connection on a task of its own, watched for graceful shutdown.
fn spawn_connection<S>(
    builder: &auto::Builder<TokioExecutor>,
    graceful: &GracefulShutdown,
    stream: S,
    service: TowerToHyperService<Router>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned();
    let connection = graceful.watch(connection);
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "connection ended with an error");
        }
    });
}

/// Resolves once `shutdown` turns true (or its sender is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}
