//! synod-server: the `synod` process.
//!
//! It parses etcd's server flags ([`config`]), opens the data directory (synod-storage),
//! starts the consensus facade ([`node`]), and serves etcd's gRPC services ([`api`]) and
//! JSON gateway ([`gateway`]) on each client URL, one port for both ([`serve`]).
//!
//! This is the top of the dependency graph: nothing depends on it. Protocol semantics live
//! below it (synod-mvcc), and so does everything on disk (synod-storage).

pub mod api;
pub mod config;
pub mod errors;
pub mod gateway;
pub mod identity;
pub mod metrics;
pub mod node;
pub mod serve;

use std::sync::Arc;

use anyhow::{Context, bail};
use prost::Message;
use synod_api::etcdserverpb::{
    cluster_server::ClusterServer, kv_server::KvServer, maintenance_server::MaintenanceServer,
};
use synod_api::synodpb::Identity;
use synod_base::{GroupId, limits};
use synod_storage::{DataDir, LogStore, StateStore};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::{ClusterState, Config};
use crate::metrics::Metrics;
use crate::node::Node;

const IDENTITY_KEY: &str = "identity";

/// Runs a member until it is told to stop (SIGINT or SIGTERM) or hits a storage failure.
pub async fn run(config: Config) -> anyhow::Result<()> {
    run_until(config, async {
        let signal = shutdown_signal().await;
        tracing::info!(signal, "stopping");
    })
    .await
}

/// Runs a member until `stop` resolves or it hits a storage failure. Tests use this to run
/// a member inside their own process.
pub async fn run_until(config: Config, stop: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
    // Listen first, as etcd does: a port in use fails the start before any data is touched.
    let mut client_listeners = Vec::new();
    for url in &config.listen_client_urls {
        let listener =
            TcpListener::bind(url.bind_addr()).await.with_context(|| format!("listen on {url}"))?;
        client_listeners.push((url.clone(), listener));
    }
    let mut peer_listeners = Vec::new();
    for url in &config.listen_peer_urls {
        let listener =
            TcpListener::bind(url.bind_addr()).await.with_context(|| format!("listen on {url}"))?;
        peer_listeners.push((url.clone(), listener));
    }

    let data_dir = DataDir::open(&config.data_dir).context("open data dir")?;
    let log = LogStore::open(&data_dir.log_path()).context("open log")?;
    let identity = load_or_bootstrap_identity(&config, &log)?;
    let state = Arc::new(StateStore::open(&data_dir.state_path(), GroupId::FIRST).context("open state")?);
    data_dir.sync().context("sync data dir")?;
    let metrics = Arc::new(Metrics::new());
    let node = Arc::new(Node::start(identity, log, state.clone(), metrics.clone(), config.snapshot_count)?);
    tracing::info!(
        heartbeat_interval_ms = config.heartbeat_interval_ms,
        election_timeout_ms = config.election_timeout_ms,
        "election timing takes effect once the member has peers"
    );

    let api = api::Api::new(&config, node.clone(), state, metrics);
    let grpc_limit = (config.max_request_bytes + limits::GRPC_OVERHEAD_BYTES) as usize;
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter.set_service_status("", tonic_health::ServingStatus::Serving).await;
    let grpc = tonic::service::Routes::new(KvServer::new(api.clone()).max_decoding_message_size(grpc_limit))
        .add_service(MaintenanceServer::new(api.clone()).max_decoding_message_size(grpc_limit))
        .add_service(ClusterServer::new(api.clone()).max_decoding_message_size(grpc_limit))
        .add_service(health_service)
        .prepare()
        .into_axum_router();
    // JSON bodies carry bytes in base64 (4/3 larger) plus field names.
    let json_limit = grpc_limit / 3 * 4 + 64 * 1024;
    let app = grpc.merge(gateway::router(api.clone(), json_limit)).fallback(gateway::fallback);
    let peer_app = axum::Router::new().route(
        "/version",
        axum::routing::get(|| async { axum::Json(serde_json::json!({ "etcdserver": api::ETCD_VERSION })) }),
    );

    let (stop_servers, stopping) = watch::channel(false);
    let mut servers = Vec::new();
    for (url, listener) in client_listeners {
        tracing::info!(address = %url, "ready to serve client requests");
        servers.push(tokio::spawn(serve::serve(listener, app.clone(), stopping.clone())));
    }
    for (url, listener) in peer_listeners {
        tracing::info!(address = %url, "listening for peers");
        servers.push(tokio::spawn(serve::serve(listener, peer_app.clone(), stopping.clone())));
    }

    let mut failure = node.failure();
    let outcome = tokio::select! {
        () = stop => Ok(()),
        message = failed(&mut failure) => Err(anyhow::anyhow!("storage failure: {message}")),
    };
    let _ = stop_servers.send(true);
    for server in servers {
        let _ = server.await;
    }
    tokio::task::spawn_blocking(move || node.shutdown()).await.context("shut down")?;
    tracing::info!("stopped");
    outcome
}

/// The member's identity from its data directory, or a new one from the flags.
fn load_or_bootstrap_identity(config: &Config, log: &LogStore) -> anyhow::Result<Identity> {
    if let Some(bytes) = log.meta(IDENTITY_KEY)? {
        let identity = Identity::decode(bytes.as_slice()).context("decode the member identity")?;
        tracing::info!(
            member_id = %format!("{:x}", identity.member_id),
            cluster_id = %format!("{:x}", identity.cluster_id),
            name = %identity.name,
            "restarting member from its data dir; the --initial-cluster flags are not used"
        );
        return Ok(identity);
    }
    if config.initial_cluster.len() > 1 {
        bail!(
            "--initial-cluster lists {} members, but this synod runs single-member clusters only; multi-member replication is not built yet",
            config.initial_cluster.len()
        );
    }
    if config.initial_cluster_state == ClusterState::Existing {
        bail!(
            "--initial-cluster-state=existing needs a cluster to join, and this synod runs single-member clusters only"
        );
    }
    let identity = identity::bootstrap(config);
    log.put_meta(IDENTITY_KEY, &identity.encode_to_vec()).context("store the member identity")?;
    tracing::info!(
        member_id = %format!("{:x}", identity.member_id),
        cluster_id = %format!("{:x}", identity.cluster_id),
        name = %identity.name,
        "bootstrapped a new single-member cluster"
    );
    Ok(identity)
}

/// Resolves with the failure message once the member hits a storage failure.
async fn failed(failure: &mut watch::Receiver<Option<String>>) -> String {
    match failure.wait_for(Option::is_some).await {
        Ok(message) => message.clone().unwrap_or_default(),
        // The node is gone without reporting a failure; nothing will arrive.
        Err(_) => std::future::pending().await,
    }
}

async fn shutdown_signal() -> &'static str {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler cannot fail on Unix");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = terminate.recv() => "SIGTERM",
    }
}
