//! The peer transport, server side: the `synodpb.Raft` gRPC service on the peer URL.
//!
//! It refuses requests from another cluster, from a removed member, or meant for another
//! member, decodes them
//! (malformed messages are errors, never panics), and hands them to openraft or to the
//! facade (forwarded writes, read indexes, membership changes, cluster info).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use openraft::errors::RaftError;
use openraft::raft::StreamAppendError;
use openraft::storage::Snapshot;
use synod_api::synodpb::{self as pb, raft_server};
use synod_base::limits;
use synod_storage::PreparedState;
use tokio::time::Instant;
use tonic::{Request, Response, Status, Streaming};

use crate::codec;
use crate::consensus::{Consensus, FORWARD_BATCH_MAX, Inner, MemberChange, applied_to_result, error_text};
use crate::disk_io::DiskIo;
use crate::network::{CLUSTER_ID_HEADER, FROM_HEADER, TO_HEADER};
use crate::removed::REMOVED_MESSAGE;
use crate::state_machine::{Received, SnapshotData};

pub struct PeerService {
    inner: Arc<Inner>,
}

impl PeerService {
    pub(crate) fn new(inner: Arc<Inner>) -> PeerService {
        PeerService { inner }
    }

    fn consensus(&self) -> Consensus {
        Consensus { inner: self.inner.clone() }
    }

    /// Refuses a request from another cluster, or meant for another member.
    fn check<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let header = |name: &str| -> Option<u64> {
            request
                .metadata()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| u64::from_str_radix(v, 16).ok())
        };
        match header(CLUSTER_ID_HEADER) {
            Some(cluster) if cluster == self.inner.cluster_id => {}
            Some(cluster) => {
                return Err(Status::failed_precondition(format!(
                    "etcdserver: cluster ID mismatch: this member is in cluster {:x}, the request comes from cluster {cluster:x}",
                    self.inner.cluster_id
                )));
            }
            None => return Err(Status::failed_precondition("request without a cluster id")),
        }
        match header(FROM_HEADER) {
            Some(from) if self.inner.removed.contains(from) => {
                return Err(Status::failed_precondition(REMOVED_MESSAGE));
            }
            Some(_) => {}
            None => return Err(Status::failed_precondition("request without a sending member")),
        }
        match header(TO_HEADER) {
            Some(to) if to == self.inner.member_id => Ok(()),
            Some(to) => Err(Status::failed_precondition(format!(
                "this is member {:x}, not member {to:x}",
                self.inner.member_id
            ))),
            None => Err(Status::failed_precondition("request without a target member")),
        }
    }

    /// Builds the state a snapshot stream carries beside this member's own as the stream
    /// arrives, at most `snapshot_bytes_max` bytes, checking every frame: a damaged or cut
    /// stream is refused (the leader tries again later) before openraft lets go of this
    /// member's state for it, and leaves nothing behind.
    async fn receive_snapshot(
        &self,
        first: pb::SnapshotChunk,
        chunks: &mut Streaming<pb::SnapshotChunk>,
    ) -> Result<PreparedState, Status> {
        let state = self.inner.state.clone();
        // A fault of this member's own is not the stream's.
        state.current_revision().map_err(|e| Status::unavailable(format!("cannot take a snapshot: {e}")))?;
        let limit = self.inner.snapshot_bytes_max;
        let started = std::time::Instant::now();
        let (received, prepared) = match self.inner.disk_io {
            DiskIo::Threads => {
                let (data, arriving) = tokio::sync::mpsc::channel(SNAPSHOT_CHUNKS_AHEAD);
                let preparing = tokio::task::spawn_blocking(move || {
                    state.prepare_import(&mut ChunkReader { arriving, chunk: Vec::new(), read: 0 })
                });
                // The sender goes with `feed`, when it returns: the import then reads the
                // stream's end.
                let fed = feed(first, chunks, limit, move |chunk| {
                    let data = data.clone();
                    async move { data.send(chunk).await.is_ok() }
                })
                .await;
                let prepared =
                    preparing.await.map_err(|e| Status::internal(format!("prepare the snapshot: {e}")))?;
                (fed, prepared)
            }
            // The simulator's states are small, and nothing may run on another thread there.
            DiskIo::Inline => {
                let mut stream = Vec::new();
                let fed = feed(first, chunks, limit, |chunk| {
                    stream.extend_from_slice(&chunk);
                    std::future::ready(true)
                })
                .await;
                (fed, state.prepare_import(&mut stream.as_slice()))
            }
        };
        // A transfer that failed explains itself better than the import it cut short.
        let received = received?;
        let (prepared, summary) = prepared.map_err(|error| {
            tracing::warn!(%error, "refused a snapshot");
            if error.is_corruption() {
                Status::data_loss(format!("the snapshot stream is damaged: {error}"))
            } else {
                Status::internal(format!("prepare the snapshot: {error}"))
            }
        })?;
        tracing::info!(
            bytes = received,
            records = summary.records,
            secs = started.elapsed().as_secs_f64(),
            "received a snapshot"
        );
        Ok(prepared)
    }

    /// The member a request comes from (checked by `check`).
    fn sender<T>(request: &Request<T>) -> u64 {
        request
            .metadata()
            .get(FROM_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| u64::from_str_radix(v, 16).ok())
            .unwrap_or(0)
    }

    fn check_group(&self, group: u64) -> Result<(), Status> {
        check_group(group, self.inner.group.0)
    }
}

fn check_group(group: u64, here: u64) -> Result<(), Status> {
    if group != here {
        return Err(Status::not_found(format!("no consensus group {group} here")));
    }
    Ok(())
}

/// Forwarded batches a leader works on at once for one follower's stream: the follower
/// sends at most `FORWARD_CALLS_MAX` at a time.
const FORWARD_STREAM_BATCHES: usize = 8;

/// Proposes a follower's forwarded writes on this member, which should lead, and answers
/// each with its outcome and log index.
async fn answer_forward(
    consensus: Consensus,
    message: pb::ForwardRequest,
) -> Result<pb::ForwardResponse, Status> {
    check_group(message.group_id, consensus.inner.group.0)?;
    if message.commands.is_empty() {
        return Err(Status::invalid_argument("forward without a command"));
    }
    if message.commands.len() > FORWARD_BATCH_MAX {
        return Err(Status::invalid_argument(format!(
            "forward of {} commands; at most {FORWARD_BATCH_MAX} go in one call",
            message.commands.len()
        )));
    }
    let proposals = message.commands.into_iter().map(|command| consensus.propose_on_leader(command));
    let outcomes = futures::future::join_all(proposals)
        .await
        .into_iter()
        .map(|outcome| match outcome {
            Ok((index, outcome)) => pb::ForwardOutcome {
                index,
                result: Some(match outcome {
                    Some(applied) => applied_to_result(&applied),
                    None => pb::ApplyResult { result: Some(pb::apply_result::Result::Nothing(pb::Blank {})) },
                }),
                error: String::new(),
                leader_id: consensus.inner.member_id,
            },
            Err(e) => pb::ForwardOutcome {
                error: error_text(&e),
                leader_id: consensus.status().leader.unwrap_or(0),
                ..Default::default()
            },
        })
        .collect();
    Ok(pb::ForwardResponse { outcomes, batch: 0 })
}

/// An AppendEntries for `group`, decoded and checked.
fn decode_append(
    message: pb::AppendEntriesRequest,
    group: u64,
) -> Result<openraft::raft::AppendEntriesRequest<crate::types::TypeConfig>, Status> {
    check_group(message.group_id, group)?;
    let rpc = codec::append_request_from(message).map_err(bad_message)?;
    codec::check_append(&rpc).map_err(bad_message)?;
    Ok(rpc)
}

fn bad_message(error: codec::CodecError) -> Status {
    Status::invalid_argument(error.to_string())
}

fn fatal<E: std::error::Error>(error: RaftError<crate::types::TypeConfig, E>) -> Status {
    Status::unavailable(format!("consensus stopped: {error}"))
}

#[tonic::async_trait]
impl raft_server::Raft for PeerService {
    async fn append_entries(
        &self,
        request: Request<pb::AppendEntriesRequest>,
    ) -> Result<Response<pb::AppendEntriesResponse>, Status> {
        self.check(&request)?;
        let rpc = decode_append(request.into_inner(), self.inner.group.0)?;
        let leader = rpc.vote.leader_id().node_id;
        let response = self.inner.raft.append_entries(rpc).await.map_err(fatal)?;
        if !matches!(response, openraft::raft::AppendEntriesResponse::HigherVote(_)) {
            self.inner.heard_from_leader(leader);
        }
        Ok(Response::new(codec::append_response(&response)))
    }

    type StreamAppendStream = futures::stream::BoxStream<'static, Result<pb::AppendResult, Status>>;

    async fn stream_append(
        &self,
        request: Request<Streaming<pb::AppendEntriesRequest>>,
    ) -> Result<Response<Self::StreamAppendStream>, Status> {
        self.check(&request)?;
        let leader = Self::sender(&request);
        let group = self.inner.group.0;
        // Why the leader's side ended, when it did not end cleanly: the last answer.
        let ended = Arc::new(std::sync::Mutex::new(None::<Status>));
        let (inner, ended_by) = (self.inner.clone(), ended.clone());
        let requests = futures::stream::unfold(Some(request.into_inner()), move |state| {
            let (inner, ended_by) = (inner.clone(), ended_by.clone());
            async move {
                let mut incoming = state?;
                let failure = match incoming.message().await {
                    Ok(Some(message)) => match decode_append(message, group) {
                        Ok(rpc) => return Some((rpc, Some(incoming))),
                        Err(status) => status,
                    },
                    Ok(None) => return None,
                    Err(status) => {
                        // Broken rather than closed: the leader's process may be gone.
                        crate::failover::check_leader(inner, leader);
                        status
                    }
                };
                *ended_by.lock().unwrap_or_else(|p| p.into_inner()) = Some(failure);
                None
            }
        });
        let inner = self.inner.clone();
        let answers = self.inner.raft.stream_append(requests).map(move |result| match result {
            Ok(result) => {
                if !matches!(result, Err(StreamAppendError::HigherVote(_))) {
                    inner.heard_from_leader(leader);
                }
                Ok(codec::append_result(&result))
            }
            Err(fatal) => Err(Status::unavailable(format!("consensus stopped: {fatal}"))),
        });
        let last =
            futures::stream::once(async move { ended.lock().unwrap_or_else(|p| p.into_inner()).take() })
                .filter_map(|failure| async move { failure.map(Err) });
        Ok(Response::new(answers.chain(last).boxed()))
    }

    async fn leader_gone(
        &self,
        request: Request<pb::LeaderGoneRequest>,
    ) -> Result<Response<pb::LeaderGoneResponse>, Status> {
        self.check(&request)?;
        let message = request.into_inner();
        self.check_group(message.group_id)?;
        Ok(Response::new(crate::failover::answer(&self.inner, message.leader, message.term).await))
    }

    async fn vote(&self, request: Request<pb::VoteRequest>) -> Result<Response<pb::VoteResponse>, Status> {
        self.check(&request)?;
        let message = request.into_inner();
        self.check_group(message.group_id)?;
        let mut rpc = codec::vote_request_from(&message).map_err(bad_message)?;
        if crate::failover::may_pass_lease(&self.inner, message.gone_leader, rpc.vote.leader_id().term) {
            rpc.leadership_transfer = true;
        }
        let response = self.inner.raft.vote(rpc).await.map_err(fatal)?;
        Ok(Response::new(codec::vote_response(&response)))
    }

    async fn pre_vote(
        &self,
        request: Request<pb::VoteRequest>,
    ) -> Result<Response<pb::VoteResponse>, Status> {
        self.check(&request)?;
        let message = request.into_inner();
        self.check_group(message.group_id)?;
        let rpc = codec::vote_request_from(&message).map_err(bad_message)?;
        let response = self.inner.raft.pre_vote(rpc).await.map_err(fatal)?;
        Ok(Response::new(codec::vote_response(&response)))
    }

    async fn transfer_leader(
        &self,
        request: Request<pb::TransferLeaderRequest>,
    ) -> Result<Response<pb::TransferLeaderResponse>, Status> {
        self.check(&request)?;
        let message = request.into_inner();
        self.check_group(message.group_id)?;
        let rpc = codec::transfer_request_from(&message).map_err(bad_message)?;
        let response = self
            .inner
            .raft
            .handle_transfer_leader(rpc)
            .await
            .map_err(|e| Status::unavailable(format!("consensus stopped: {e}")))?;
        Ok(Response::new(codec::transfer_response(&response)))
    }

    async fn install_snapshot(
        &self,
        request: Request<Streaming<pb::SnapshotChunk>>,
    ) -> Result<Response<pb::SnapshotResponse>, Status> {
        self.check(&request)?;
        let mut chunks = request.into_inner();
        let first =
            chunks.next().await.ok_or_else(|| Status::invalid_argument("empty snapshot stream"))??;
        self.check_group(first.group_id)?;
        let vote = codec::vote_from(first.vote.as_ref()).map_err(bad_message)?;
        let meta = first.meta.as_ref().ok_or_else(|| Status::invalid_argument("snapshot without meta"))?;
        let meta = codec::snapshot_meta_from(meta).map_err(bad_message)?;
        codec::check_snapshot_meta(&vote, &meta).map_err(bad_message)?;
        let prepared = self.receive_snapshot(first, &mut chunks).await?;
        let received = Received::new(prepared, self.inner.disk_io);
        let snapshot = Snapshot { meta, snapshot: SnapshotData::Received(received) };
        // openraft answers once the state machine has installed the snapshot (or decided it
        // needs none, and dropped it); the install runs on its own task so that it finishes
        // even if the sender goes away.
        let raft = self.inner.raft.clone();
        let install = tokio::spawn(async move { raft.install_full_snapshot(vote, snapshot).await });
        let response = install
            .await
            .map_err(|e| Status::internal(format!("install the snapshot: {e}")))?
            .map_err(|e| Status::unavailable(format!("consensus stopped: {e}")))?;
        Ok(Response::new(pb::SnapshotResponse { vote: Some(codec::vote(&response.vote)) }))
    }

    async fn forward(
        &self,
        request: Request<pb::ForwardRequest>,
    ) -> Result<Response<pb::ForwardResponse>, Status> {
        self.check(&request)?;
        Ok(Response::new(answer_forward(self.consensus(), request.into_inner()).await?))
    }

    type ForwardStreamStream = futures::stream::BoxStream<'static, Result<pb::ForwardResponse, Status>>;

    async fn forward_stream(
        &self,
        request: Request<Streaming<pb::ForwardRequest>>,
    ) -> Result<Response<Self::ForwardStreamStream>, Status> {
        self.check(&request)?;
        let consensus = self.consensus();
        // Batches are answered as they finish; a few at a time, so a follower that sends
        // without reading answers is held back by the stream's flow control.
        let answers = request
            .into_inner()
            .map(move |message| {
                let consensus = consensus.clone();
                async move {
                    let message = message?;
                    let batch = message.batch;
                    let mut response = answer_forward(consensus, message).await?;
                    response.batch = batch;
                    Ok(response)
                }
            })
            .buffer_unordered(FORWARD_STREAM_BATCHES);
        Ok(Response::new(answers.boxed()))
    }

    async fn read_index(
        &self,
        request: Request<pb::ReadIndexRequest>,
    ) -> Result<Response<pb::ReadIndexResponse>, Status> {
        self.check(&request)?;
        self.check_group(request.get_ref().group_id)?;
        let consensus = self.consensus();
        let response = match consensus.read_index_on_leader().await {
            Ok(read) => pb::ReadIndexResponse {
                read_log_id: codec::opt_log_id(read.as_ref()),
                leader_id: self.inner.member_id,
                ..Default::default()
            },
            Err(e) => pb::ReadIndexResponse {
                error: error_text(&e),
                leader_id: consensus.status().leader.unwrap_or(0),
                ..Default::default()
            },
        };
        Ok(Response::new(response))
    }

    async fn cluster_info(
        &self,
        _request: Request<pb::ClusterInfoRequest>,
    ) -> Result<Response<pb::ClusterInfoResponse>, Status> {
        // Asked by members that are about to join and do not know the cluster id yet.
        Ok(Response::new(self.consensus().cluster_info()))
    }

    async fn member_change(
        &self,
        request: Request<pb::MemberChangeRequest>,
    ) -> Result<Response<pb::MemberChangeResponse>, Status> {
        use pb::member_change_request::Change;
        self.check(&request)?;
        let message = request.into_inner();
        self.check_group(message.group_id)?;
        let change = match message
            .change
            .ok_or_else(|| Status::invalid_argument("member change without a change"))?
        {
            Change::Add(add) => MemberChange::Add { peer_urls: add.peer_urls, is_learner: add.is_learner },
            Change::Remove(id) => MemberChange::Remove(id),
            Change::Promote(id) => MemberChange::Promote(id),
            Change::Update(update) => MemberChange::Update { id: update.id, peer_urls: update.peer_urls },
        };
        let consensus = self.consensus();
        let deadline = Instant::now() + Duration::from_millis(limits::REQUEST_TIMEOUT_MS);
        let response = match consensus.change_on_leader(change, deadline).await {
            Ok((added, index)) => pb::MemberChangeResponse {
                member_id: added.unwrap_or(0),
                index: index.unwrap_or(0),
                leader_id: self.inner.member_id,
                ..Default::default()
            },
            Err(e) => pb::MemberChangeResponse {
                error: error_text(&e),
                leader_id: consensus.status().leader.unwrap_or(0),
                ..Default::default()
            },
        };
        Ok(Response::new(response))
    }

    async fn hash_kv(
        &self,
        request: Request<pb::HashKvRequest>,
    ) -> Result<Response<pb::HashKvResponse>, Status> {
        self.check(&request)?;
        let message = request.into_inner();
        self.check_group(message.group_id)?;
        let state = self.inner.state.clone();
        let hashed = self
            .consensus()
            .disk_io()
            .run(move || state.hash_kv(message.revision).map_err(std::io::Error::other))
            .await
            .map_err(|e| Status::internal(format!("hash the keyspace: {e}")))?;
        let response = match hashed {
            Ok((hash, compact_revision, _)) => {
                pb::HashKvResponse { hash, compact_revision, ..Default::default() }
            }
            Err(error) => pb::HashKvResponse { error: error.message().to_string(), ..Default::default() },
        };
        Ok(Response::new(response))
    }

    async fn leader_call(
        &self,
        request: Request<pb::LeaderCallRequest>,
    ) -> Result<Response<pb::LeaderCallResponse>, Status> {
        self.check(&request)?;
        let message = request.into_inner();
        self.check_group(message.group_id)?;
        let call = message.call.ok_or_else(|| Status::invalid_argument("leader call without a call"))?;
        let consensus = self.consensus();
        let response = match consensus.call_here(call).await {
            Ok(reply) => pb::LeaderCallResponse {
                reply: Some(reply),
                leader_id: self.inner.member_id,
                ..Default::default()
            },
            Err(e) => pb::LeaderCallResponse {
                error: error_text(&e),
                leader_id: consensus.status().leader.unwrap_or(0),
                ..Default::default()
            },
        };
        Ok(Response::new(response))
    }
}

/// Chunks of an incoming snapshot the network may get ahead of its import by.
const SNAPSHOT_CHUNKS_AHEAD: usize = 4;

/// Hands a snapshot stream's data to `take`, chunk by chunk from `first` to the one marked
/// done, and returns how many bytes it carried. Stops when `take` says it wants no more
/// (its reader failed, and says why).
async fn feed<F: std::future::Future<Output = bool>>(
    first: pb::SnapshotChunk,
    chunks: &mut Streaming<pb::SnapshotChunk>,
    limit: u64,
    mut take: impl FnMut(Vec<u8>) -> F,
) -> Result<u64, Status> {
    let mut received = 0u64;
    let mut chunk = first;
    loop {
        received += chunk.data.len() as u64;
        if received > limit {
            return Err(Status::resource_exhausted(format!("a snapshot larger than {limit} bytes")));
        }
        if !take(std::mem::take(&mut chunk.data)).await || chunk.done {
            return Ok(received);
        }
        chunk = match chunks.next().await {
            Some(next) => next?,
            None => return Err(Status::invalid_argument("snapshot stream ended early")),
        };
    }
}

/// A blocking reader over the chunks of a snapshot stream as they arrive.
struct ChunkReader {
    arriving: tokio::sync::mpsc::Receiver<Vec<u8>>,
    chunk: Vec<u8>,
    read: usize,
}

impl std::io::Read for ChunkReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.read == self.chunk.len() {
            match self.arriving.blocking_recv() {
                Some(chunk) => (self.chunk, self.read) = (chunk, 0),
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.chunk.len() - self.read);
        out[..n].copy_from_slice(&self.chunk[self.read..self.read + n]);
        self.read += n;
        Ok(n)
    }
}
