//! The peer transport, client side: openraft's network traits over gRPC to the other
//! members' peer URLs.
//!
//! One lazily connected channel per member (tonic reconnects after failures, and openraft
//! backs off from members reported unreachable), a deadline on every call, message size
//! limits both ways, and snapshots streamed in bounded chunks. A leader replicates to each
//! follower on one long-lived stream (`StreamAppend`): its AppendEntries go one after the
//! other without waiting and the follower answers them in order, so a replicated write costs
//! no call set-up; the stream fails when an answer is overdue. Every request names the
//! cluster and the member it is meant for, so a member that is not who the sender thinks,
//! or belongs to another cluster, refuses it.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{FutureExt as _, Stream, StreamExt as _};

use openraft::base::{BoxFuture, BoxStream};
use openraft::errors::{NetworkError, RPCError, ReplicationClosed, StreamingError, Timeout, Unreachable};
use openraft::network::stream_append_sequential;
use openraft::network::{RPCOption, RPCTypes};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, StreamAppendResult, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::{OptionalSend, RaftNetworkFactory, RaftNetworkV2};
use synod_api::body::{BodyWatcher, WatchedBody};
use synod_api::synodpb as pb;
use synod_api::synodpb::raft_client::RaftClient;
use synod_base::GroupId;
use tonic::transport::{ClientTlsConfig, Endpoint};
use tower::ServiceExt as _;

use crate::codec;
use crate::disk_io::DiskIo;
use crate::observer::Observer;
use crate::removed::{REMOVED_MESSAGE, Removed};
use crate::state_machine::{SnapshotData, StateSnapshot};
use crate::types::{MemberNode, TypeConfig, Vote};

/// gRPC metadata naming the sender's cluster, the sender, and the intended receiver.
pub const CLUSTER_ID_HEADER: &str = "synod-cluster-id";
pub const FROM_HEADER: &str = "synod-from";
pub const TO_HEADER: &str = "synod-to";

/// Bytes per snapshot chunk: large enough to stream fast, small enough to bound memory.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1024 * 1024;
/// How soon a call that failed otherwise than by a refusal is tried again.
const REFUSAL_RETRY: Duration = Duration::from_millis(10);
/// Time to connect to a member before calling it unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// What the transport needs to know about this member and its limits.
#[derive(Clone, Debug)]
pub struct PeerIdentity {
    pub group: GroupId,
    pub member_id: u64,
    pub cluster_id: u64,
    /// The largest message a peer may send or receive.
    pub message_bytes_max: usize,
}

/// A connection to a member's peer service, in the shape tonic's generated client takes.
pub type PeerChannel = tower::util::BoxCloneSyncService<
    http::Request<tonic::body::Body>,
    http::Response<tonic::body::Body>,
    PeerError,
>;

/// Why a peer call failed below gRPC. A concrete type rather than `BoxError`, which
/// openraft's `Send` futures cannot carry; tonic still finds the cause (a refused
/// connection, a status) through `source`.
#[derive(Debug)]
pub struct PeerError(pub tower::BoxError);

impl std::fmt::Display for PeerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for PeerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

/// How a member reaches another member's peer URL: over gRPC in a server, through the
/// simulated network in synod-sim. The code above the channel is the same in both.
pub trait Dialer: Send + Sync + 'static {
    /// A lazily connected channel to member `target` at `url`.
    fn dial(&self, target: u64, url: &str) -> Result<PeerChannel, String>;

    /// Whether the channels carry long-lived streams, and so replication on one stream per
    /// follower. The simulator's network carries whole calls only; its members replicate
    /// with one call per AppendEntries.
    fn streams(&self) -> bool {
        true
    }
}

/// Dials over TCP with tonic: what a server runs with. `https` peer URLs are dialed over
/// TLS with `tls` (the peer CA, and this member's own certificate for peers that ask for
/// one); without it they cannot be reached.
#[derive(Clone, Debug, Default)]
pub struct GrpcDialer {
    pub tls: Option<ClientTlsConfig>,
}

impl GrpcDialer {
    /// The tonic endpoint for a peer URL, with TLS for `https`.
    pub fn endpoint(&self, url: &str) -> Result<Endpoint, String> {
        let endpoint = Endpoint::from_shared(url.to_string()).map_err(|e| e.to_string())?;
        if !url.starts_with("https://") {
            return Ok(endpoint);
        }
        let tls =
            self.tls.clone().ok_or("an https peer URL, but this member has no --peer-trusted-ca-file")?;
        endpoint.tls_config(tls).map_err(|e| e.to_string())
    }
}

impl Dialer for GrpcDialer {
    fn dial(&self, target: u64, url: &str) -> Result<PeerChannel, String> {
        let endpoint = self
            .endpoint(url)
            .map_err(|e| format!("member {target:x} peer URL {url}: {e}"))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5))
            .http2_adaptive_window(true);
        Ok(PeerChannel::new(endpoint.connect_lazy().map_err(|e| PeerError(e.into()))))
    }
}

/// A member's connection, with the peer URLs it was made for.
type Channels = HashMap<u64, (Vec<String>, PeerChannel)>;

/// Connections to the other members, shared by all of openraft's replication tasks.
#[derive(Clone)]
pub struct PeerNetwork {
    identity: PeerIdentity,
    channels: Arc<Mutex<Channels>>,
    /// Members the last call could not reach; logged once when they go and when they return.
    unreachable: Arc<Mutex<HashMap<u64, String>>>,
    removed: Removed,
    dialer: Arc<dyn Dialer>,
    disk_io: DiskIo,
    observer: Arc<dyn Observer>,
    /// The term of an election this member started because its leader's process was
    /// gone, and that leader: its vote requests say so (`failover`).
    campaign: Arc<Mutex<Option<(u64, u64)>>>,
    /// Members that answered a stream call with Unimplemented (an earlier synod, during a
    /// rolling upgrade), and when: they are sent unary calls for a while.
    streamless: Arc<Mutex<HashMap<u64, tokio::time::Instant>>>,
}

/// How long a member that could not take streams is sent unary calls before streams are
/// tried again (it may have been upgraded meanwhile).
const STREAMLESS_FOR: Duration = Duration::from_secs(60);

impl PeerNetwork {
    pub(crate) fn new(
        identity: PeerIdentity,
        removed: Removed,
        dialer: Arc<dyn Dialer>,
        disk_io: DiskIo,
        observer: Arc<dyn Observer>,
    ) -> PeerNetwork {
        PeerNetwork {
            identity,
            channels: Arc::new(Mutex::new(HashMap::new())),
            unreachable: Arc::new(Mutex::new(HashMap::new())),
            removed,
            dialer,
            disk_io,
            observer,
            campaign: Arc::new(Mutex::new(None)),
            streamless: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Whether traffic to member `target` may use long-lived streams: the dialer carries
    /// them (see [`Dialer::streams`]) and `target` did not lately refuse one.
    pub(crate) fn streams_to(&self, target: u64) -> bool {
        if !self.dialer.streams() {
            return false;
        }
        let mut streamless = self.streamless.lock().unwrap_or_else(|p| p.into_inner());
        match streamless.get(&target) {
            Some(since) if since.elapsed() < STREAMLESS_FOR => false,
            Some(_) => {
                streamless.remove(&target);
                true
            }
            None => true,
        }
    }

    /// Notes that `target` answered a stream call with `status`: when that says it has no
    /// such call, it is sent unary calls for a while. Returns whether it did.
    pub(crate) fn note_stream_refusal(&self, target: u64, status: &tonic::Status) -> bool {
        if status.code() != tonic::Code::Unimplemented {
            return false;
        }
        tracing::info!(peer = %format!("{target:x}"), "the peer takes no streams (an earlier synod?); sending it unary calls");
        self.streamless.lock().unwrap_or_else(|p| p.into_inner()).insert(target, tokio::time::Instant::now());
        true
    }

    /// Marks the election at `term` as started because `leader` is gone.
    pub(crate) fn campaign_for(&self, term: u64, leader: u64) {
        *self.campaign.lock().unwrap_or_else(|p| p.into_inner()) = Some((term, leader));
    }

    /// The leader found gone that an election at `term` replaces, or 0.
    fn gone_leader(&self, term: u64) -> u64 {
        match *self.campaign.lock().unwrap_or_else(|p| p.into_inner()) {
            Some((campaign, leader)) if campaign == term => leader,
            _ => 0,
        }
    }

    /// Whether member `target` looks gone: its peer URL refuses connections within
    /// `within`. A member that answers, or is merely silent, is not gone: silence may be a
    /// partition, which the election timeout handles. A process being killed closes its
    /// connections before its listening socket, so a call may first fail otherwise (reset
    /// during the handshake): those are tried again until `within` runs out.
    pub(crate) async fn refuses(&self, target: u64, peer_urls: &[String], within: Duration) -> bool {
        let Some(url) = peer_urls.first() else { return false };
        let deadline = tokio::time::Instant::now() + within;
        loop {
            // A connection of its own: the shared one may still look open after the peer
            // went, and a call on it fails in other ways than a refusal.
            let Ok(channel) = self.dialer.dial(target, url) else { return false };
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let request = self.request(target, pb::ClusterInfoRequest {}, left);
            let outcome = tokio::time::timeout(left, RaftClient::new(channel).cluster_info(request)).await;
            match outcome {
                Ok(Err(status)) if refused(&status) => return true,
                Ok(Err(_)) if tokio::time::Instant::now() + REFUSAL_RETRY < deadline => {
                    tokio::time::sleep(REFUSAL_RETRY).await;
                }
                _ => return false,
            }
        }
    }

    /// One ClusterInfo call to `target`, the cheapest question a member answers, within
    /// `timeout`: how etcd's prober measures a peer's round trip.
    pub(crate) async fn probe(
        &self,
        target: u64,
        peer_urls: &[String],
        timeout: Duration,
    ) -> Result<(), String> {
        let mut client = self.client(target, peer_urls)?;
        let request = self.request(target, pb::ClusterInfoRequest {}, timeout);
        match tokio::time::timeout(timeout, client.cluster_info(request)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(status)) => Err(status.message().to_string()),
            Err(_) => Err(format!("no answer within {timeout:?}")),
        }
    }

    /// `channel` with its request bytes counted as sent to `target` and its response bytes
    /// as received from it.
    fn counted(&self, target: u64, channel: PeerChannel) -> PeerChannel {
        let (sent, received) = (self.observer.clone(), self.observer.clone());
        let service = tower::ServiceBuilder::new()
            .map_request(move |request: http::Request<tonic::body::Body>| {
                let observer = sent.clone();
                request.map(|body| {
                    tonic::body::Body::new(WatchedBody::new(
                        body,
                        Counted { report: move |n| observer.peer_sent(target, n), bytes: 0 },
                    ))
                })
            })
            .map_response(move |response: http::Response<tonic::body::Body>| {
                let observer = received.clone();
                response.map(|body| {
                    tonic::body::Body::new(WatchedBody::new(
                        body,
                        Counted { report: move |n| observer.peer_received(target, n), bytes: 0 },
                    ))
                })
            })
            .service(channel);
        PeerChannel::new(service)
    }

    /// Records the outcome of a call to `target`, logging only changes, so a member that is
    /// down costs two log lines rather than one per heartbeat.
    fn record_reachability(&self, target: u64, failure: Option<&RPCError<TypeConfig>>) {
        let mut unreachable = self.unreachable.lock().unwrap_or_else(|p| p.into_inner());
        if failure.is_some() {
            self.observer.peer_send_failed(target);
        }
        match failure {
            Some(RPCError::Unreachable(_) | RPCError::Timeout(_)) => {
                if let std::collections::hash_map::Entry::Vacant(entry) = unreachable.entry(target) {
                    let error = failure.map(ToString::to_string).unwrap_or_default();
                    tracing::warn!(peer = %format!("{target:x}"), %error, "peer is unreachable");
                    entry.insert(error);
                }
            }
            Some(_) => {}
            None => {
                if unreachable.remove(&target).is_some() {
                    tracing::info!(peer = %format!("{target:x}"), "peer is reachable again");
                }
            }
        }
    }

    pub fn identity(&self) -> &PeerIdentity {
        &self.identity
    }

    /// A client for member `target` at the first of its peer URLs, reusing the connection.
    pub fn client(&self, target: u64, peer_urls: &[String]) -> Result<RaftClient<PeerChannel>, String> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        let channel = match channels.get(&target) {
            Some((urls, channel)) if urls == peer_urls => channel.clone(),
            _ => {
                let channel = self.connect(target, peer_urls)?;
                channels.insert(target, (peer_urls.to_vec(), channel.clone()));
                channel
            }
        };
        Ok(self.raft_client(channel))
    }

    /// A client on a new connection of its own to `target`, closed when the client goes.
    fn dedicated_client(&self, target: u64, peer_urls: &[String]) -> Result<RaftClient<PeerChannel>, String> {
        Ok(self.raft_client(self.connect(target, peer_urls)?))
    }

    fn connect(&self, target: u64, peer_urls: &[String]) -> Result<PeerChannel, String> {
        let url = peer_urls.first().ok_or_else(|| format!("member {target:x} has no peer URL"))?;
        Ok(self.counted(target, self.dialer.dial(target, url)?))
    }

    fn raft_client(&self, channel: PeerChannel) -> RaftClient<PeerChannel> {
        RaftClient::new(channel)
            .max_decoding_message_size(self.identity.message_bytes_max)
            .max_encoding_message_size(self.identity.message_bytes_max)
    }

    /// Wraps `message` in a request addressed to `target`, with a deadline.
    pub fn request<T>(&self, target: u64, message: T, deadline: Duration) -> tonic::Request<T> {
        let mut request = self.addressed(target, message);
        request.set_timeout(deadline);
        request
    }

    /// Wraps `message` in a request addressed to `target`, without a deadline: for a stream
    /// that lives as long as there is something to send on it.
    pub(crate) fn addressed<T>(&self, target: u64, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        let metadata = request.metadata_mut();
        metadata.insert(
            CLUSTER_ID_HEADER,
            format!("{:x}", self.identity.cluster_id).parse().expect("hex is ASCII"),
        );
        metadata.insert(FROM_HEADER, format!("{:x}", self.identity.member_id).parse().expect("hex is ASCII"));
        metadata.insert(TO_HEADER, format!("{target:x}").parse().expect("hex is ASCII"));
        request
    }

    /// What a failed call to `target` means to openraft; a refusal because this member was
    /// removed stops it.
    fn failure(&self, status: &tonic::Status) -> RPCError<TypeConfig> {
        if status.message() == REMOVED_MESSAGE {
            self.removed.this_member_removed();
        }
        status_error(status)
    }
}

impl RaftNetworkFactory<TypeConfig> for PeerNetwork {
    type Network = PeerClient;

    async fn new_client(&mut self, target: u64, node: &MemberNode) -> PeerClient {
        PeerClient { target, network: self.clone(), client: self.client(target, &node.peer_urls) }
    }

    /// A snapshot transfer gets a connection of its own: on the shared one, chunks that the
    /// receiver's import has not caught up with hold the connection's HTTP/2 window, and
    /// the appends and heartbeats behind them would wait.
    async fn new_snapshot_client(&mut self, target: u64, node: &MemberNode) -> PeerClient {
        PeerClient { target, network: self.clone(), client: self.dedicated_client(target, &node.peer_urls) }
    }
}

/// openraft's connection to one member.
pub struct PeerClient {
    target: u64,
    network: PeerNetwork,
    client: Result<RaftClient<PeerChannel>, String>,
}

impl PeerClient {
    fn client(&self) -> Result<RaftClient<PeerChannel>, RPCError<TypeConfig>> {
        self.client.clone().map_err(|e| RPCError::Unreachable(Unreachable::from_string(e)))
    }

    /// Runs a unary call with `option`'s deadline and maps transport failures to what
    /// openraft expects: a timeout, an unreachable member (back off), or a network error.
    async fn call<T, F>(
        &self,
        action: RPCTypes,
        option: &RPCOption,
        call: F,
    ) -> Result<T, RPCError<TypeConfig>>
    where
        F: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let deadline = option.soft_ttl();
        let outcome = match tokio::time::timeout(deadline, call).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(self.network.failure(&status)),
            Err(_) => Err(RPCError::Timeout(Timeout {
                action,
                id: self.network.identity.member_id,
                target: self.target,
                timeout: deadline,
            })),
        };
        self.network.record_reachability(self.target, outcome.as_ref().err());
        outcome
    }
}

fn status_error(status: &tonic::Status) -> RPCError<TypeConfig> {
    let message = format!("{}: {}", status.code(), status.message());
    match status.code() {
        // Connection refused, reset, or the member refusing to talk to us: back off.
        tonic::Code::Unavailable | tonic::Code::FailedPrecondition | tonic::Code::Unimplemented => {
            RPCError::Unreachable(Unreachable::from_string(message))
        }
        _ => RPCError::Network(NetworkError::from_string(message)),
    }
}

/// Whether a call failed because nothing listens at the address.
fn refused(status: &tonic::Status) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(error) = cause {
        if error
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused)
        {
            return true;
        }
        cause = error.source();
    }
    false
}

fn decode_error(error: codec::CodecError) -> RPCError<TypeConfig> {
    RPCError::Network(NetworkError::new(&error))
}

impl RaftNetworkV2<TypeConfig> for PeerClient {
    type SnapshotData = SnapshotData;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let mut client = self.client()?;
        let message = codec::append_request(&rpc, self.network.identity.group.0);
        let request = self.network.request(self.target, message, option.soft_ttl());
        let response = self.call(RPCTypes::AppendEntries, &option, client.append_entries(request)).await?;
        codec::append_response_from(response).map_err(decode_error)
    }

    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<
        's,
        Result<
            BoxStream<'s, Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>>,
            RPCError<TypeConfig>,
        >,
    >
    where
        S: Stream<Item = AppendEntriesRequest<TypeConfig>> + OptionalSend + Unpin + 'static,
    {
        if !self.network.streams_to(self.target) {
            return stream_append_sequential(self, input, option);
        }
        Box::pin(async move {
            let mut client = self.client()?;
            let group = self.network.identity.group.0;
            // Requests sent and not answered yet: while there are some, an answer is due
            // within the deadline; an idle stream waits as long as it must.
            let unanswered = Arc::new(AtomicUsize::new(0));
            let sent = unanswered.clone();
            let requests = input.map(move |rpc| {
                sent.fetch_add(1, Ordering::Relaxed);
                codec::append_request(&rpc, group)
            });
            let request = self.network.addressed(self.target, requests);
            let (network, target) = (self.network.clone(), self.target);
            let opening = client.stream_append(request).map(move |opened| {
                if let Err(status) = &opened {
                    network.note_stream_refusal(target, status);
                }
                opened
            });
            let answers = self.call(RPCTypes::AppendEntries, &option, opening).await?;
            let (network, target, deadline) = (self.network.clone(), self.target, option.soft_ttl());
            let results = futures::stream::unfold(Some((answers, unanswered)), move |state| {
                let network = network.clone();
                async move {
                    let (mut answers, unanswered) = state?;
                    loop {
                        let awaited = unanswered.load(Ordering::Relaxed);
                        let failure = match tokio::time::timeout(deadline, answers.message()).await {
                            Ok(Ok(Some(answer))) => {
                                unanswered.fetch_sub(1, Ordering::Relaxed);
                                network.record_reachability(target, None);
                                let result = codec::append_result_from(answer).map_err(decode_error);
                                // The follower ends the stream after a refusal; so does this side.
                                let go_on = matches!(result, Ok(Ok(_)));
                                return Some((result, go_on.then_some((answers, unanswered))));
                            }
                            Ok(Ok(None)) => return None,
                            Ok(Err(status)) => network.failure(&status),
                            // Nothing was due: an idle stream.
                            Err(_) if awaited == 0 => continue,
                            Err(_) => RPCError::Timeout(Timeout {
                                action: RPCTypes::AppendEntries,
                                id: network.identity.member_id,
                                target,
                                timeout: deadline,
                            }),
                        };
                        network.record_reachability(target, Some(&failure));
                        return Some((Err(failure), None));
                    }
                }
            });
            Ok(Box::pin(results) as BoxStream<'s, _>)
        })
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let mut client = self.client()?;
        let gone_leader = self.network.gone_leader(rpc.vote.leader_id().term);
        let message = codec::vote_request(&rpc, self.network.identity.group.0, gone_leader);
        let request = self.network.request(self.target, message, option.soft_ttl());
        let response = self.call(RPCTypes::Vote, &option, client.vote(request)).await?;
        codec::vote_response_from(&response).map_err(decode_error)
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let mut client = self.client()?;
        let message = codec::vote_request(&rpc, self.network.identity.group.0, 0);
        let request = self.network.request(self.target, message, option.soft_ttl());
        let response = self.call(RPCTypes::Vote, &option, client.pre_vote(request)).await?;
        codec::vote_response_from(&response).map_err(decode_error)
    }

    async fn transfer_leader(
        &mut self,
        rpc: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        let mut client = self.client()?;
        let message = codec::transfer_request(&rpc, self.network.identity.group.0);
        let request = self.network.request(self.target, message, option.soft_ttl());
        let response = self.call(RPCTypes::TransferLeader, &option, client.transfer_leader(request)).await?;
        codec::transfer_response_from(&response).map_err(decode_error)
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: StateSnapshot,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let mut client = self.client()?;
        let group = self.network.identity.group.0;
        let meta = codec::snapshot_meta(&snapshot.meta);
        let started = std::time::Instant::now();
        let size = match &snapshot.snapshot {
            SnapshotData::View(view) => view.size_bytes(),
            SnapshotData::Received(_) => 0,
        };
        // A generous bound for the whole transfer: 10 s per 64 MiB and a minute on top.
        let deadline = Duration::from_secs(60 + 10 * size / (64 * 1024 * 1024));
        let (chunks, stream) = tokio::sync::mpsc::channel::<pb::SnapshotChunk>(4);
        let first = pb::SnapshotChunk {
            group_id: group,
            vote: Some(codec::vote(&vote)),
            meta: Some(meta),
            ..Default::default()
        };
        let reader = send_snapshot_data(snapshot.snapshot, first, chunks, self.network.disk_io);
        let request =
            self.network.request(self.target, tokio_stream::wrappers::ReceiverStream::new(stream), deadline);
        let transfer = async {
            match tokio::time::timeout(deadline, client.install_snapshot(request)).await {
                Ok(Ok(response)) => Ok(response.into_inner()),
                Ok(Err(status)) => Err(StreamingError::from(status_error(&status))),
                Err(_) => Err(StreamingError::Timeout(Timeout {
                    action: RPCTypes::InstallSnapshot,
                    id: self.network.identity.member_id,
                    target: self.target,
                    timeout: deadline,
                })),
            }
        };
        // Biased, like every select on the simulator's path: tokio's random branch order
        // would make runs differ.
        let response = tokio::select! {
            biased;
            response = transfer => response?,
            closed = cancel => return Err(StreamingError::Closed(closed)),
        };
        match reader.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(StreamingError::from(RPCError::Network(NetworkError::new(&e)))),
            Err(e) => return Err(StreamingError::from(RPCError::Network(NetworkError::new(&e)))),
        }
        let vote =
            codec::vote_from(response.vote.as_ref()).map_err(|e| StreamingError::from(decode_error(e)))?;
        tracing::info!(
            peer = %format!("{:x}", self.target),
            secs = started.elapsed().as_secs_f64(),
            "sent a snapshot"
        );
        Ok(SnapshotResponse::new(vote))
    }
}

/// Writes a snapshot's data to `chunks` in chunks of [`SNAPSHOT_CHUNK_BYTES`], the first
/// being `first` (which names the snapshot), the last marked done; a view of the state is
/// exported as it goes. Ends early, with an error, if the transfer stops reading.
fn send_snapshot_data(
    data: SnapshotData,
    first: pb::SnapshotChunk,
    chunks: tokio::sync::mpsc::Sender<pb::SnapshotChunk>,
    disk_io: DiskIo,
) -> tokio::task::JoinHandle<std::io::Result<()>> {
    let write = move |out: &mut dyn std::io::Write| -> std::io::Result<()> {
        match data {
            SnapshotData::View(view) => view.export(out).map(drop).map_err(std::io::Error::other),
            // openraft sends what the state machine gives it, always a view of the state.
            SnapshotData::Received(_) => {
                Err(std::io::Error::other("a received snapshot is installed, not sent on"))
            }
        }
    };
    match disk_io {
        DiskIo::Threads => tokio::task::spawn_blocking(move || {
            let mut out = ChunkWriter { next: first, chunks };
            write(&mut out)?;
            out.finish()
        }),
        // The simulator's states are small, and nothing may run on another thread there.
        DiskIo::Inline => tokio::spawn(async move {
            let mut data = Vec::new();
            write(&mut data)?;
            let group_id = first.group_id;
            let mut next = first;
            let mut pieces = data.chunks(SNAPSHOT_CHUNK_BYTES).peekable();
            loop {
                next.data = pieces.next().unwrap_or_default().to_vec();
                next.done = pieces.peek().is_none();
                let done = next.done;
                let following = pb::SnapshotChunk { group_id, ..Default::default() };
                chunks.send(std::mem::replace(&mut next, following)).await.map_err(|_| transfer_stopped())?;
                if done {
                    return Ok(());
                }
            }
        }),
    }
}

fn transfer_stopped() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the snapshot transfer stopped")
}

/// A blocking writer that cuts what it is given into snapshot chunks.
struct ChunkWriter {
    next: pb::SnapshotChunk,
    chunks: tokio::sync::mpsc::Sender<pb::SnapshotChunk>,
}

impl ChunkWriter {
    fn send(&mut self, done: bool) -> std::io::Result<()> {
        let following = pb::SnapshotChunk {
            group_id: self.next.group_id,
            data: Vec::with_capacity(SNAPSHOT_CHUNK_BYTES),
            ..Default::default()
        };
        let mut chunk = std::mem::replace(&mut self.next, following);
        chunk.done = done;
        self.chunks.blocking_send(chunk).map_err(|_| transfer_stopped())
    }

    /// Sends what is left as the last chunk; the stream ends as the writer goes.
    fn finish(mut self) -> std::io::Result<()> {
        self.send(true)
    }
}

impl std::io::Write for ChunkWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let room = SNAPSHOT_CHUNK_BYTES - self.next.data.len();
        let taken = bytes.len().min(room);
        self.next.data.extend_from_slice(&bytes[..taken]);
        if self.next.data.len() == SNAPSHOT_CHUNK_BYTES {
            self.send(false)?;
        }
        Ok(taken)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Counts the bytes of a body's data frames, reported once at its end.
struct Counted<F: Fn(u64)> {
    report: F,
    bytes: u64,
}

impl<F: Fn(u64) + Send + 'static> BodyWatcher for Counted<F> {
    fn data(&mut self, chunk: &[u8]) {
        self.bytes += chunk.len() as u64;
    }

    fn end(&mut self) {
        if self.bytes > 0 {
            (self.report)(std::mem::take(&mut self.bytes));
        }
    }
}
