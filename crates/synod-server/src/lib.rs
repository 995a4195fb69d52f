//! synod-server: the `synod` process.
//!
//! It parses etcd's server flags ([`config`]), opens the data directory (synod-storage),
//! bootstraps, joins or restarts the member's consensus group (synod-consensus), and
//! serves etcd's gRPC services ([`api`]) and JSON gateway ([`gateway`]) on each client URL,
//! one port for both ([`serve`]), and the peer transport on each peer URL.
//!
//! This is the top of the dependency graph: nothing depends on it. Protocol semantics live
//! below it (synod-mvcc), replication in synod-consensus, everything on disk in
//! synod-storage.

pub mod api;
mod auth;
mod auth_api;
mod authority;
pub mod compactor;
pub mod config;
mod counter_api;
pub mod errors;
pub mod gateway;
pub mod identity;
pub mod lease;
mod lease_api;
mod lock_api;
pub mod log;
pub mod metrics;
mod pace;
pub mod probes;
mod rpc_metrics;
pub mod serve;
pub mod tls;
pub mod watch;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use prost::Message;
use synod_api::etcdserverpb::{
    auth_server::AuthServer, cluster_server::ClusterServer, kv_server::KvServer, lease_server::LeaseServer,
    maintenance_server::MaintenanceServer, watch_server::WatchServer,
};
use synod_api::synod::v1::counter_server::CounterServer;
use synod_api::synodpb::{Identity, RestoredCluster};
use synod_api::v3electionpb::election_server::ElectionServer;
use synod_api::v3lockpb::lock_server::LockServer;
use synod_base::{GroupId, limits};
use synod_consensus::{Bootstrap, Consensus, ConsensusOptions, DiskIo, GrpcDialer, MemberNode};
use synod_storage::{DataDir, LogStore, StateStore};
use tokio::net::TcpListener;

use crate::config::{ClusterState, Config, Url};
use crate::metrics::Metrics;

const IDENTITY_KEY: &str = "identity";

/// Runs a member until it is told to stop (SIGINT or SIGTERM) or hits a fatal failure.
pub async fn run(config: Config) -> anyhow::Result<()> {
    run_until(config, async {
        let signal = shutdown_signal().await;
        tracing::info!(signal, "stopping");
    })
    .await
}

/// Runs a member until `stop` resolves or it hits a fatal failure. Tests use this to run a
/// member inside their own process; it needs a multi-threaded tokio runtime.
pub async fn run_until(config: Config, stop: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    if config.unsafe_local_reads {
        tracing::warn!(
            "--unsafe-local-reads is on: linearizable reads skip ReadIndex and may return stale data; \
             this exists only to test the test harnesses"
        );
    }
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
    let mut metrics_listeners = Vec::new();
    for url in &config.listen_metrics_urls {
        let listener =
            TcpListener::bind(url.bind_addr()).await.with_context(|| format!("listen on {url}"))?;
        metrics_listeners.push((url.clone(), listener));
    }

    // Certificates that do not load fail the start, before anything is served.
    let client_tls = config
        .client_tls
        .as_ref()
        .map(|files| {
            tls::acceptor(files).map(|acceptor| tls::Listener { acceptor, allowed_common_name: None })
        })
        .transpose()
        .context("client TLS")?;
    let peer_tls = config
        .peer_tls
        .as_ref()
        .map(|files| {
            let allowed_common_name = config.peer_cert_allowed_cn.clone();
            tls::acceptor(files).map(|acceptor| tls::Listener { acceptor, allowed_common_name })
        })
        .transpose()
        .context("peer TLS")?;
    // An https metrics URL serves the client certificate and asks for none: scrapers and
    // probes hold no client certificate (etcd applies its client certificate rule there;
    // docs/etcd-compat.md).
    let metrics_tls = config
        .metrics_tls
        .as_ref()
        .map(|files| {
            tls::acceptor(files).map(|acceptor| tls::Listener { acceptor, allowed_common_name: None })
        })
        .transpose()
        .context("metrics TLS")?;
    let dialer = GrpcDialer {
        tls: config.peer_tls.as_ref().map(tls::peer_client_config).transpose().context("peer TLS")?,
    };

    let data_dir =
        DataDir::open_with_log_in(&config.data_dir, config.wal_dir.as_deref()).context("open data dir")?;
    let state = Arc::new(StateStore::open(&data_dir.state_path(), GroupId::FIRST).context("open state")?);
    // A state that applied log entries came with a log; none where the log should be means
    // it is elsewhere (another --wal-dir), and a new one would give the old state a new
    // identity. Checked before a log is made. A restored snapshot has applied nothing.
    let log_path = data_dir.log_path();
    if !data_dir.has_log() && state.applied_index().0 > 0 {
        bail!(
            "the state in {} has applied log entries up to {}, but there is no log at {}: start with \
             the --wal-dir this member used before",
            state.path().display(),
            state.applied_index().0,
            log_path.display()
        );
    }
    let log = Arc::new(LogStore::open_in(&data_dir).context("open log")?);
    if config.force_new_cluster && log.meta(IDENTITY_KEY)?.is_none() {
        bail!(
            "--force-new-cluster restarts a member from its data dir, and {} holds no member",
            config.data_dir.display()
        );
    }
    let (identity, bootstrap) = identity_and_bootstrap(&config, &dialer, &log).await?;
    if config.force_new_cluster {
        force_new_cluster(&log, &state, &identity)?;
    }
    // Before the member takes part in consensus or serves anyone, as etcd runs it.
    if config.initial_corrupt_check {
        initial_corrupt_check(Arc::new(dialer.clone()), state.clone(), &identity).await?;
    }
    data_dir.sync().context("sync data dir")?;
    let metrics = Arc::new(Metrics::new(config.metrics));
    let consensus = Consensus::start(ConsensusOptions {
        group: GroupId::FIRST,
        member_id: identity.member_id,
        cluster_id: identity.cluster_id,
        name: identity.name.clone(),
        client_urls: config.advertise_client_urls.iter().map(Url::to_string).collect(),
        bootstrap,
        heartbeat_interval_ms: config.heartbeat_interval_ms,
        election_timeout_ms: config.election_timeout_ms,
        snapshot_count: config.snapshot_count,
        snapshot_catchup_entries: config.snapshot_catchup_entries,
        max_request_bytes: config.max_request_bytes,
        snapshot_dir: data_dir.root().join("member").join("snap"),
        // A snapshot is the state's live data, which the quota bounds; twice it leaves room
        // for framing. Without a quota the operator accepted unbounded state.
        snapshot_bytes_max: config.quota_backend_bytes.map_or(u64::MAX, |quota| quota.saturating_mul(2)),
        log,
        state: state.clone(),
        observer: metrics.clone(),
        probe_interval: Some(PEER_PROBE_INTERVAL),
        dialer: Arc::new(dialer),
        disk_io: DiskIo::Threads,
    })
    .await
    .context("start consensus")?;

    let api = api::Api::new(&config, consensus.clone(), state, metrics).context("start the API")?;
    let lessor = tokio::spawn(api.lessor().clone().run());
    let compactor = config
        .auto_compaction
        .map(|retention| tokio::spawn(compactor::run(consensus.clone(), api.state_handle(), retention)));
    let grpc_limit = (config.max_request_bytes + limits::GRPC_OVERHEAD_BYTES) as usize;
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter.set_service_status("", tonic_health::ServingStatus::NotServing).await;
    // systemd hears READY=1 once the member serves with a leader, as etcd's Type=notify
    // unit does; with no NOTIFY_SOCKET this does nothing.
    let ready: Box<dyn FnOnce() + Send> = Box::new(|| notify_service_manager(sd_notify::NotifyState::Ready));
    let grpc_health = tokio::spawn(probes::follow_leader(api.clone(), health_reporter, ready));
    let grpc = tonic::service::Routes::new(KvServer::new(api.clone()).max_decoding_message_size(grpc_limit))
        .add_service(MaintenanceServer::new(api.clone()).max_decoding_message_size(grpc_limit))
        .add_service(ClusterServer::new(api.clone()).max_decoding_message_size(grpc_limit))
        .add_service(WatchServer::new(api.clone()).max_decoding_message_size(grpc_limit))
        .add_service(LeaseServer::new(api.clone()).max_decoding_message_size(grpc_limit))
        .add_service(CounterServer::new(api.clone()).max_decoding_message_size(grpc_limit))
        .add_service(LockServer::new(api.clone()).max_decoding_message_size(grpc_limit))
        .add_service(ElectionServer::new(api.clone()).max_decoding_message_size(grpc_limit))
        .add_service(AuthServer::new(api.clone()).max_decoding_message_size(grpc_limit))
        .add_service(health_service)
        .prepare()
        .into_axum_router()
        .layer(rpc_metrics::RpcMetricsLayer::new(api.metrics_handle()));
    // JSON bodies carry bytes in base64 (4/3 larger) plus field names.
    let json_limit = grpc_limit / 3 * 4 + 64 * 1024;
    let app = grpc.merge(gateway::router(api.clone(), json_limit)).fallback(gateway::fallback);
    let peer_app = tonic::service::Routes::new(consensus.peer_service())
        .prepare()
        .into_axum_router()
        .route(
            "/version",
            axum::routing::get(|| async {
                axum::Json(serde_json::json!({ "etcdserver": api::ETCD_VERSION }))
            }),
        )
        .fallback(gateway::fallback)
        .layer(rpc_metrics::PeerBytesLayer {
            metrics: api.metrics_handle(),
            is_member: {
                let consensus = consensus.clone();
                Arc::new(move |id| consensus.is_member(id))
            },
        });

    let (stop_servers, stopping) = tokio::sync::watch::channel(false);
    let mut servers = Vec::new();
    for (url, listener) in peer_listeners {
        tracing::info!(address = %url, "listening for peers");
        servers.push(tokio::spawn(serve::serve(
            listener,
            peer_app.clone(),
            (serve::Port::Peer, serve::Http2::default()),
            if url.tls { peer_tls.clone() } else { None },
            stopping.clone(),
        )));
    }
    let metrics_app = probes::routes().with_state(api.clone()).fallback(gateway::fallback);
    let client_http2 = serve::Http2 {
        streams_max: config.streams_per_connection_max,
        keepalive_interval: config.keepalive_interval,
        keepalive_timeout: config.keepalive_timeout,
    };

    for (url, listener) in metrics_listeners {
        tracing::info!(address = %url, "serving metrics and health probes");
        servers.push(tokio::spawn(serve::serve(
            listener,
            metrics_app.clone(),
            (serve::Port::Metrics, serve::Http2::default()),
            if url.tls { metrics_tls.clone() } else { None },
            stopping.clone(),
        )));
    }
    for (url, listener) in client_listeners {
        tracing::info!(address = %url, "ready to serve client requests");
        servers.push(tokio::spawn(serve::serve(
            listener,
            app.clone(),
            (serve::Port::Client, client_http2),
            if url.tls { client_tls.clone() } else { None },
            stopping.clone(),
        )));
    }

    let mut failure = consensus.failure();
    let outcome = tokio::select! {
        () = stop => Ok(()),
        message = failed(&mut failure) => Err(anyhow::anyhow!("{message}")),
    };
    // Stopping: systemd hears it first; a leader hands its leadership over, as etcd does,
    // so that writes go on at once elsewhere; then the listeners close and the requests in
    // flight get their grace period to finish before consensus stops.
    notify_service_manager(sd_notify::NotifyState::Stopping);
    if outcome.is_ok()
        && let Some(leader) = consensus.hand_over_leadership().await
    {
        tracing::info!(new_leader = %format!("{leader:x}"), "handed the leadership over before stopping");
    }
    grpc_health.abort();
    lessor.abort();
    if let Some(compactor) = compactor {
        compactor.abort();
    }
    let _ = stop_servers.send(true);
    for server in servers {
        let _ = server.await;
    }
    consensus.shutdown().await;
    tracing::info!("stopped");
    outcome
}

/// The member's identity and how its consensus group starts: from its data directory if it
/// has one (the bootstrap flags are then not used, as in etcd), else from the flags: a new
/// cluster, or joining an existing one that already lists this member.
async fn identity_and_bootstrap(
    config: &Config,
    dialer: &GrpcDialer,
    log: &LogStore,
) -> anyhow::Result<(Identity, Bootstrap)> {
    if let Some(bytes) = log.meta(IDENTITY_KEY)? {
        let identity = Identity::decode(bytes.as_slice()).context("decode the member identity")?;
        tracing::info!(
            member_id = %format!("{:x}", identity.member_id),
            cluster_id = %format!("{:x}", identity.cluster_id),
            name = %identity.name,
            "restarting member from its data dir; the --initial-cluster flags are not used"
        );
        check_peers_agree(config, dialer, &identity).await?;
        return Ok((identity, Bootstrap::Existing));
    }
    let restored;
    let config = match log.meta(synod_storage::RESTORED_CLUSTER_META)? {
        Some(bytes) => {
            let record = RestoredCluster::decode(bytes.as_slice()).context("decode the restored cluster")?;
            restored = config
                .with_restored_cluster(&record)
                .map_err(|e| anyhow::anyhow!("the cluster snapshot restore recorded: {e}"))?;
            if restored.name != config.name {
                tracing::warn!(
                    name = %config.name,
                    restored_name = %restored.name,
                    "the data dir was restored for another member name; starting as that member"
                );
            }
            tracing::info!(
                initial_cluster = %record.initial_cluster,
                initial_cluster_token = %record.initial_cluster_token,
                "starting a new cluster as snapshot restore recorded it; the --initial-cluster flags are not used"
            );
            &restored
        }
        None => config,
    };
    let (identity, bootstrap) = match config.initial_cluster_state {
        ClusterState::New => {
            let identity = identity::bootstrap(config);
            refuse_if_bootstrapped(config, dialer, identity.member_id).await?;
            let mut members = BTreeMap::new();
            for member in &config.initial_cluster {
                let id = identity::member_id(&member.peer_urls, &config.initial_cluster_token).0;
                let client_urls = if id == identity.member_id {
                    config.advertise_client_urls.iter().map(Url::to_string).collect()
                } else {
                    Vec::new()
                };
                let node = MemberNode {
                    name: member.name.clone(),
                    peer_urls: member.peer_urls.iter().map(Url::to_string).collect(),
                    client_urls,
                };
                if members.insert(id, node).is_some() {
                    bail!("--initial-cluster lists two members with the same peer URLs");
                }
            }
            (identity, Bootstrap::New(members))
        }
        ClusterState::Existing => (join(config, dialer).await?, Bootstrap::Existing),
    };
    log.put_meta(IDENTITY_KEY, &identity.encode_to_vec()).context("store the member identity")?;
    tracing::info!(
        member_id = %format!("{:x}", identity.member_id),
        cluster_id = %format!("{:x}", identity.cluster_id),
        name = %identity.name,
        state = ?config.initial_cluster_state,
        "bootstrapped member"
    );
    Ok((identity, bootstrap))
}

fn other_peer_urls(config: &Config) -> Vec<String> {
    let own: Vec<String> = config.initial_advertise_peer_urls.iter().map(Url::to_string).collect();
    config
        .initial_cluster
        .iter()
        .flat_map(|m| m.peer_urls.iter().map(Url::to_string))
        .filter(|url| !own.contains(url))
        .collect()
}

/// Joins an existing cluster: asks the other members listed in --initial-cluster for the
/// cluster id and membership, and finds this member in it by its peer URLs (it must have
/// been added with MemberAdd first, as in etcd).
async fn join(config: &Config, dialer: &GrpcDialer) -> anyhow::Result<Identity> {
    let peers = other_peer_urls(config);
    if peers.is_empty() {
        bail!("--initial-cluster-state=existing needs --initial-cluster to list the members to join");
    }
    let (cluster_id, members) = synod_consensus::discover_cluster(dialer, &peers, Duration::from_secs(5))
        .await
        .map_err(|e| anyhow::anyhow!("could not reach the cluster to join: {e}"))?;
    let own: Vec<String> = config.initial_advertise_peer_urls.iter().map(Url::to_string).collect();
    let member = members.iter().find(|m| m.peer_urls.iter().any(|u| own.contains(u))).ok_or_else(|| {
        anyhow::anyhow!(
            "cluster {cluster_id:x} has no member with peer URLs {}; add this member first (etcdctl member add)",
            own.join(",")
        )
    })?;
    if member.started {
        bail!(
            "member {:x} already started in cluster {cluster_id:x} and its data dir is gone; \
             to rejoin with an empty data dir, remove it (etcdctl member remove {:x}) and add it again",
            member.id,
            member.id
        );
    }
    Ok(Identity { cluster_id, member_id: member.id, name: config.name.clone(), peer_urls: own })
}

/// What the other members in `--initial-cluster` say of their cluster, if any answers.
/// Best effort, as in etcd: peers that are down (all of a new cluster starting, or all but
/// this member restarting) are no reason not to start.
async fn running_cluster(
    config: &Config,
    dialer: &GrpcDialer,
) -> Option<(u64, Vec<synod_consensus::MemberInfo>)> {
    let peers = other_peer_urls(config);
    if peers.is_empty() {
        return None;
    }
    synod_consensus::discover_cluster(dialer, &peers, PEER_PROBE_TIMEOUT).await.ok()
}

/// How often each peer is probed for the round-trip histogram, as etcd's prober does
/// (its read timeout less a second).
const PEER_PROBE_INTERVAL: Duration = Duration::from_secs(4);

/// How long a starting member waits for each peer it asks about the cluster.
const PEER_PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Refuses to bootstrap a member the running cluster already knows as started: its data
/// dir was lost, and a member that forgot its log and votes could help elect a leader that
/// lacks committed writes. etcd refuses the same start with the same words.
async fn refuse_if_bootstrapped(config: &Config, dialer: &GrpcDialer, member_id: u64) -> anyhow::Result<()> {
    if let Some((_, members)) = running_cluster(config, dialer).await
        && members.iter().any(|m| m.id == member_id && m.started)
    {
        bail!("member {member_id:x} has already been bootstrapped");
    }
    Ok(())
}

/// Refuses to start on a data dir of another cluster than the one its peers form: a member
/// pointed at the wrong directory must not join with someone else's data.
async fn check_peers_agree(config: &Config, dialer: &GrpcDialer, identity: &Identity) -> anyhow::Result<()> {
    if let Some((cluster_id, _)) = running_cluster(config, dialer).await
        && cluster_id != identity.cluster_id
    {
        bail!(
            "the data dir belongs to cluster {:x}, but the members at {} form cluster {cluster_id:x}",
            identity.cluster_id,
            other_peer_urls(config).join(",")
        );
    }
    Ok(())
}

/// etcd's `--force-new-cluster`: the member restarts from its data dir as the only member
/// of its cluster (synod-consensus rewrites the stored membership before consensus starts).
fn force_new_cluster(log: &LogStore, state: &StateStore, identity: &Identity) -> anyhow::Result<()> {
    let forced = synod_consensus::force_new_cluster(log, state, GroupId::FIRST, identity.member_id)
        .map_err(|e| anyhow::anyhow!("--force-new-cluster: {e}"))?;
    let removed: Vec<String> = forced.removed.iter().map(|id| format!("{id:x}")).collect();
    tracing::warn!(
        member_id = %format!("{:x}", identity.member_id),
        removed = %removed.join(","),
        index = forced.index,
        "forcing a new cluster: this member is now its only member; add the others back with \
         `etcdctl member add`, and restart without --force-new-cluster"
    );
    Ok(())
}

/// How long the initial corruption check waits for each peer's hash.
const CORRUPT_CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// etcd's `--experimental-initial-corrupt-check`: before taking part, asks every peer
/// for its hash of the keyspace at this member's revision, and refuses to start if one with
/// the same compaction revision disagrees. Peers that cannot answer (down, compacted past
/// the revision, or behind it) are skipped with a warning, as in etcd.
async fn initial_corrupt_check(
    dialer: Arc<GrpcDialer>,
    state: Arc<StateStore>,
    identity: &Identity,
) -> anyhow::Result<()> {
    let revision = state.current_revision().context("read the current revision")?;
    // Hashing reads the whole keyspace: off the async threads.
    let hashing = state.clone();
    let hashed = tokio::task::spawn_blocking(move || hashing.hash_kv(revision))
        .await
        .context("hash the keyspace")?
        .context("hash the keyspace")?;
    let (hash, compact_revision, _) = match hashed {
        Ok(hashed) => hashed,
        Err(error) => bail!("initial corruption check: hash the keyspace at {revision}: {}", error.message()),
    };
    tracing::info!(revision, hash, compact_revision, "starting initial corruption check");
    let mut mismatches = Vec::new();
    let ids = (GroupId::FIRST, identity.cluster_id, identity.member_id);
    let answers = synod_consensus::peer_hashes(dialer, &state, ids, revision, CORRUPT_CHECK_TIMEOUT)
        .await
        .map_err(|e| anyhow::anyhow!("initial corruption check: {e}"))?;
    for (peer, answer) in answers {
        let peer = format!("{peer:x}");
        match answer {
            Ok((_, peer_compact)) if peer_compact != compact_revision => tracing::warn!(
                %peer, revision, compact_revision, peer_compact_revision = peer_compact,
                "cannot compare the hash with a peer compacted elsewhere"
            ),
            Ok((peer_hash, _)) if peer_hash != hash => {
                tracing::error!(%peer, revision, hash, peer_hash, "found data inconsistency with a peer");
                mismatches.push(peer);
            }
            Ok(_) => tracing::info!(%peer, revision, hash, "hash matches the peer's"),
            Err(error) => {
                tracing::warn!(%peer, revision, %error, "cannot fetch the hash from a peer; skipped")
            }
        }
    }
    if !mismatches.is_empty() {
        bail!(
            "initial corruption check: this member's data differs from its peers' ({}) at revision {revision}: \
             found data inconsistency with peers",
            mismatches.join(", ")
        );
    }
    tracing::info!(revision, hash, "initial corruption checking passed; no corruption");
    Ok(())
}

/// Tells the service manager (systemd's `NOTIFY_SOCKET`) about the member's state. Without
/// a service manager there is no socket and nothing to do; one that cannot be reached is
/// logged, since the unit will then time out.
fn notify_service_manager(state: sd_notify::NotifyState) {
    let what = format!("{state}");
    match sd_notify::notify(&[state]) {
        Ok(()) => tracing::debug!(state = %what.trim(), "notified the service manager"),
        Err(error) => tracing::warn!(%error, state = %what.trim(), "could not notify the service manager"),
    }
}

/// Resolves with the failure message once the member hits a fatal failure.
async fn failed(failure: &mut tokio::sync::watch::Receiver<Option<String>>) -> String {
    match failure.wait_for(Option::is_some).await {
        Ok(message) => message.clone().unwrap_or_default(),
        // The consensus group is gone without reporting a failure; nothing will arrive.
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
