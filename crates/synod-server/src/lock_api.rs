//! etcd's Lock and Election services (`v3lockpb.Lock`, `v3electionpb.Election`), served as
//! etcd serves them: on the KV API, with etcd's keys. A lock or election `name` is a queue
//! of keys `name/<lease in hex>`, one per holder or candidate, each put with its lease; the
//! key created first holds the lock (leads), and the others wait, in the order their keys
//! were created, until every key created before theirs is gone: deleted by Unlock or
//! Resign, or by the expiry of its lease.
//!
//! **Fencing.** A holder's key's create revision is its fencing token: it is larger for every
//! later holder. A resource that remembers the largest token it has accepted and refuses
//! smaller ones cannot be written by a holder whose lease expired while it was paused (see
//! `docs/locks.md`). An election's `LeaderKey.rev` is that token; a lock's is the create
//! revision of the key Lock returns.
//!
//! Unlike etcd's servers, these keep no lease alive themselves (etcd #17470): the caller's
//! lease lives as long as the caller keeps it alive. A Lock or Campaign with lease 0 holds
//! its key until Unlock or Resign. A waiter whose key vanishes (its lease expired) fails
//! rather than being granted a lock it no longer holds (etcd #11456), and a waiter that is
//! cancelled gives up its place.

use std::pin::Pin;

use futures::{Stream, StreamExt as _};
use synod_api::EtcdError;
use synod_api::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use synod_api::etcdserverpb::range_request::{SortOrder, SortTarget};
use synod_api::etcdserverpb::watch_request::RequestUnion;
use synod_api::etcdserverpb::{
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, ResponseHeader, ResponseOp, TxnRequest,
    TxnResponse, WatchCreateRequest, WatchRequest, WatchResponse, request_op, response_op,
};
use synod_api::mvccpb::KeyValue;
use synod_api::mvccpb::event::EventType;
use synod_api::v3electionpb::{
    CampaignRequest, CampaignResponse, LeaderKey, LeaderRequest, LeaderResponse, ProclaimRequest,
    ProclaimResponse, ResignRequest, ResignResponse, election_server,
};
use synod_api::v3lockpb::{LockRequest, LockResponse, UnlockRequest, UnlockResponse, lock_server};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Status};

use crate::api::{Api, Reply, ServedByLearner};
use crate::auth::prefix_end;

/// The key `lease` holds in the lock or election `name`, as etcd names it. A call without
/// a lease gets a key of its own, named by a random number: etcd's servers give such a call
/// a lease of its own, so two calls without a lease never share a place in the queue.
fn holder_key(name: &[u8], lease: i64) -> Vec<u8> {
    let id = if lease == 0 { (synod_consensus::random_u64() >> 1) as i64 } else { lease };
    let mut key = queue_prefix(name);
    key.extend_from_slice(format!("{id:x}").as_bytes());
    key
}

/// The prefix of every key in the queue of `name`.
pub(crate) fn queue_prefix(name: &[u8]) -> Vec<u8> {
    let mut prefix = name.to_vec();
    prefix.push(b'/');
    prefix
}

fn created_at(key: &[u8], revision: i64) -> Compare {
    Compare {
        result: CompareResult::Equal as i32,
        target: CompareTarget::Create as i32,
        key: key.to_vec(),
        target_union: Some(TargetUnion::CreateRevision(revision)),
        ..Default::default()
    }
}

fn op(request: request_op::Request) -> RequestOp {
    RequestOp { request: Some(request) }
}

/// The kvs of the txn's `index`th response, which must be a range.
fn range_kvs(response: &mut TxnResponse, index: usize) -> Vec<KeyValue> {
    match response.responses.get_mut(index).and_then(|r: &mut ResponseOp| r.response.take()) {
        Some(response_op::Response::ResponseRange(range)) => range.kvs,
        _ => Vec::new(),
    }
}

/// A place in a queue: the key and its create revision (its place, and its fencing token).
struct Claim {
    key: Vec<u8>,
    revision: i64,
    /// The key's value when it existed already (the lease queued before).
    existing: Option<Vec<u8>>,
}

/// Gives up a place in a queue when the caller stops waiting for it (it was cancelled, or
/// failed), unless it was granted.
struct Abandon {
    api: Api,
    key: Vec<u8>,
    revision: i64,
    armed: bool,
}

impl Drop for Abandon {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (api, key, revision) = (self.api.clone(), std::mem::take(&mut self.key), self.revision);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(e) = api.delete_if_created(&key, revision).await {
                    tracing::warn!(key = %String::from_utf8_lossy(&key), error = %e.message(), "could not give up an abandoned place in a lock or election queue");
                }
            });
        }
    }
}

impl Api {
    /// Puts `key` with `value` on `lease` unless it exists, and returns its place.
    async fn claim(&self, key: Vec<u8>, lease: i64, value: Vec<u8>) -> Result<Claim, Status> {
        let put = PutRequest { key: key.clone(), value, lease, ..Default::default() };
        let get = RangeRequest { key: key.clone(), ..Default::default() };
        let request = TxnRequest {
            compare: vec![created_at(&key, 0)],
            success: vec![op(request_op::Request::RequestPut(put))],
            failure: vec![op(request_op::Request::RequestRange(get))],
        };
        let mut response = self.txn(request).await?;
        if response.succeeded {
            let revision = response.header.map_or(0, |h| h.revision);
            return Ok(Claim { key, revision, existing: None });
        }
        let kv =
            range_kvs(&mut response, 0).pop().ok_or_else(|| Status::internal("the claimed key vanished"))?;
        Ok(Claim { key, revision: kv.create_revision, existing: Some(kv.value) })
    }

    /// Waits until no key of the queue under `prefix` was created before `claim`'s, checked
    /// on this member's state after every apply. Fails with `expired` if the claim's key is
    /// gone meanwhile (its lease ended).
    async fn wait_turn(
        &self,
        prefix: &[u8],
        claim: &Claim,
        expired: EtcdError,
    ) -> Result<ResponseHeader, Status> {
        let mut applies = self.watch_hub().applies();
        // The first created key of the queue, and ours. (A count with a create-revision
        // filter would not do: etcd, and so synod, count before filtering.)
        let first = RangeRequest {
            key: prefix.to_vec(),
            range_end: prefix_end(prefix),
            limit: 1,
            sort_order: SortOrder::Ascend as i32,
            sort_target: SortTarget::Create as i32,
            keys_only: true,
            serializable: true,
            ..Default::default()
        };
        let mine = RangeRequest {
            key: claim.key.clone(),
            keys_only: true,
            serializable: true,
            ..Default::default()
        };
        let check = TxnRequest {
            success: vec![
                op(request_op::Request::RequestRange(first)),
                op(request_op::Request::RequestRange(mine)),
            ],
            ..Default::default()
        };
        loop {
            applies.borrow_and_update();
            let mut response = self.txn(check.clone()).await?;
            let first = range_kvs(&mut response, 0);
            let mine = range_kvs(&mut response, 1);
            if !mine.iter().any(|kv| kv.create_revision == claim.revision) {
                return Err(expired.into());
            }
            if first.iter().all(|kv| kv.create_revision == claim.revision) {
                return Ok(response.header.unwrap_or_default());
            }
            applies.changed().await.map_err(|_| Status::from(EtcdError::Stopped))?;
        }
    }

    /// Deletes `key` if it is still the one created at `revision`.
    async fn delete_if_created(&self, key: &[u8], revision: i64) -> Result<TxnResponse, Status> {
        let delete = DeleteRangeRequest { key: key.to_vec(), ..Default::default() };
        self.txn(TxnRequest {
            compare: vec![created_at(key, revision)],
            success: vec![op(request_op::Request::RequestDeleteRange(delete))],
            failure: Vec::new(),
        })
        .await
    }

    /// Takes a place in the queue for `name` and waits for its turn. The work runs in a
    /// task of its own, so that a caller that goes away cannot leave a place behind: the
    /// claim is always written to the end (a dropped proposal may still apply), and a place
    /// whose caller left, before or after its turn came, is given up.
    async fn queue(
        &self,
        name: &[u8],
        lease: i64,
        value: Vec<u8>,
        expired: EtcdError,
    ) -> Result<(Claim, ResponseHeader), Status> {
        let (mut answer, outcome) = oneshot::channel();
        let api = self.clone();
        let key = holder_key(name, lease);
        let prefix = queue_prefix(name);
        // The claim and proclaim are the caller's writes: they carry its user into the log.
        tokio::spawn(crate::auth::carried(async move {
            let claim = match api.claim(key, lease, value.clone()).await {
                Ok(claim) => claim,
                Err(status) => {
                    let _ = answer.send(Err(status));
                    return;
                }
            };
            let mut abandon = Abandon {
                api: api.clone(),
                key: claim.key.clone(),
                revision: claim.revision,
                armed: claim.existing.is_none(),
            };
            // Waiting in line, for synod_lock_waiters: the lock's or the election's queue.
            let service = match expired {
                EtcdError::ElectionSessionExpired => "election",
                _ => "lock",
            };
            let waiting = crate::metrics::InFlight::new(
                api.metrics().lock_waiters.get_or_create(&vec![("queue", service.to_string())]).clone(),
            );
            let waited = tokio::select! {
                waited = api.take_turn(&prefix, &claim, lease, value, expired) => waited,
                // The caller left: dropping `abandon` gives the place up.
                () = answer.closed() => return,
            };
            drop(waiting);
            match waited {
                Ok(header) => {
                    if answer.send(Ok((claim, header))).is_ok() {
                        abandon.armed = false;
                    }
                }
                Err(status) => {
                    let _ = answer.send(Err(status));
                }
            }
        }));
        outcome.await.unwrap_or_else(|_| Err(EtcdError::Stopped.into()))
    }

    /// Proclaims `value` if a place held from before has another (as etcd's Campaign does),
    /// then waits for the place's turn.
    async fn take_turn(
        &self,
        prefix: &[u8],
        claim: &Claim,
        lease: i64,
        value: Vec<u8>,
        expired: EtcdError,
    ) -> Result<ResponseHeader, Status> {
        if claim.existing.as_ref().is_some_and(|existing| *existing != value) {
            self.proclaim_as(&claim.key, claim.revision, lease, value).await?;
        }
        self.wait_turn(prefix, claim, expired).await
    }

    pub async fn lock(&self, request: LockRequest) -> Result<LockResponse, Status> {
        let (claim, header) =
            self.queue(&request.name, request.lease, Vec::new(), EtcdError::LockSessionExpired).await?;
        Ok(LockResponse { header: Some(self.header(header.revision)), key: claim.key })
    }

    pub async fn unlock(&self, request: UnlockRequest) -> Result<UnlockResponse, Status> {
        let response =
            self.delete_range(DeleteRangeRequest { key: request.key, ..Default::default() }).await?;
        Ok(UnlockResponse { header: response.header })
    }

    pub async fn campaign(&self, request: CampaignRequest) -> Result<CampaignResponse, Status> {
        let (claim, header) = self
            .queue(&request.name, request.lease, request.value, EtcdError::ElectionSessionExpired)
            .await?;
        let leader =
            LeaderKey { name: request.name, key: claim.key, rev: claim.revision, lease: request.lease };
        Ok(CampaignResponse { header: Some(self.header(header.revision)), leader: Some(leader) })
    }

    async fn proclaim_as(
        &self,
        key: &[u8],
        revision: i64,
        lease: i64,
        value: Vec<u8>,
    ) -> Result<ResponseHeader, Status> {
        let put = PutRequest { key: key.to_vec(), value, lease, ..Default::default() };
        let response = self
            .txn(TxnRequest {
                compare: vec![created_at(key, revision)],
                success: vec![op(request_op::Request::RequestPut(put))],
                failure: Vec::new(),
            })
            .await?;
        if !response.succeeded {
            return Err(EtcdError::ElectionNotLeader.into());
        }
        Ok(response.header.unwrap_or_default())
    }

    pub async fn proclaim(&self, request: ProclaimRequest) -> Result<ProclaimResponse, Status> {
        let leader = request.leader.ok_or(EtcdError::ElectionMissingLeaderKey)?;
        let header = self.proclaim_as(&leader.key, leader.rev, leader.lease, request.value).await?;
        Ok(ProclaimResponse { header: Some(header) })
    }

    /// The leader's key of election `name`: the queue's first created, read linearizably.
    async fn first_in_queue(
        &self,
        name: &[u8],
        serializable: bool,
    ) -> Result<(ResponseHeader, Option<KeyValue>), Status> {
        let prefix = queue_prefix(name);
        let response = self
            .range(RangeRequest {
                range_end: prefix_end(&prefix),
                key: prefix,
                limit: 1,
                sort_order: SortOrder::Ascend as i32,
                sort_target: SortTarget::Create as i32,
                serializable,
                ..Default::default()
            })
            .await?;
        Ok((response.header.unwrap_or_default(), response.kvs.into_iter().next()))
    }

    pub async fn leader(&self, request: LeaderRequest) -> Result<LeaderResponse, Status> {
        match self.first_in_queue(&request.name, false).await? {
            (header, Some(kv)) => Ok(LeaderResponse { header: Some(header), kv: Some(kv) }),
            (_, None) => Err(EtcdError::ElectionNoLeader.into()),
        }
    }

    pub async fn resign(&self, request: ResignRequest) -> Result<ResignResponse, Status> {
        let leader = request.leader.ok_or(EtcdError::ElectionMissingLeaderKey)?;
        let response = self.delete_if_created(&leader.key, leader.rev).await?;
        Ok(ResignResponse { header: response.header })
    }

    /// Follows election `name` as etcd's `Election.Observe` does: the leader's key as it is
    /// now (or, while nobody leads, the first key put in the queue), then every put to that
    /// key until it is deleted, then the next leader's, and so on.
    pub(crate) fn observe_stream(&self, name: Vec<u8>) -> mpsc::Receiver<Result<LeaderResponse, Status>> {
        let (tx, rx) = mpsc::channel(16);
        let api = self.clone();
        tokio::spawn(async move {
            if let Err(status) = api.follow_leaders(&name, &tx).await {
                let _ = tx.send(Err(status)).await;
            }
        });
        rx
    }

    async fn follow_leaders(
        &self,
        name: &[u8],
        tx: &mpsc::Sender<Result<LeaderResponse, Status>>,
    ) -> Result<(), Status> {
        let prefix = queue_prefix(name);
        loop {
            let (header, first) = self.first_in_queue(name, false).await?;
            let (mut header, kv) = match first {
                Some(kv) => (header, kv),
                None => {
                    let mut puts = self.internal_watch(prefix.clone(), prefix_end(&prefix), header.revision);
                    loop {
                        let Some(response) = next_event(&mut puts, tx).await? else { return Ok(()) };
                        let put = response.events.into_iter().find(|e| e.r#type == EventType::Put as i32);
                        if let Some(kv) = put.and_then(|e| e.kv) {
                            let mut header = response.header.unwrap_or_default();
                            header.revision = kv.mod_revision;
                            break (header, kv);
                        }
                    }
                }
            };
            let key = kv.key.clone();
            let from = header.revision + 1;
            header = self.header(header.revision);
            if tx.send(Ok(LeaderResponse { header: Some(header), kv: Some(kv) })).await.is_err() {
                return Ok(());
            }
            let mut changes = self.internal_watch(key, Vec::new(), from);
            'leader: loop {
                let Some(response) = next_event(&mut changes, tx).await? else { return Ok(()) };
                for event in response.events {
                    if event.r#type == EventType::Delete as i32 {
                        break 'leader;
                    }
                    let reply = LeaderResponse { header: response.header, kv: event.kv };
                    if tx.send(Ok(reply)).await.is_err() {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// A watch of `key..range_end` from revision `from`, served like a client's, for as
    /// long as the receiver is kept.
    fn internal_watch(
        &self,
        key: Vec<u8>,
        range_end: Vec<u8>,
        from: i64,
    ) -> mpsc::Receiver<Result<WatchResponse, Status>> {
        let create = WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                key,
                range_end,
                start_revision: from,
                ..Default::default()
            })),
        };
        // The request stream stays open: a watch stream ends when its requests do.
        let requests = futures::stream::iter([Ok(create)]).chain(futures::stream::pending());
        self.watch_stream(Box::pin(requests), None)
    }
}

/// The next response of an internal watch, or `None` once the observer has gone (then the
/// watch ends with it). A watch the member cancelled (its revision was compacted) is an
/// error for the observer, not a silent end.
async fn next_event(
    watch: &mut mpsc::Receiver<Result<WatchResponse, Status>>,
    observer: &mpsc::Sender<Result<LeaderResponse, Status>>,
) -> Result<Option<WatchResponse>, Status> {
    let response = tokio::select! {
        response = watch.recv() => response,
        () = observer.closed() => return Ok(None),
    };
    let response = response.ok_or_else(|| Status::from(EtcdError::Stopped))??;
    if response.canceled {
        let error =
            if response.compact_revision > 0 { EtcdError::Compacted } else { EtcdError::WatchCanceled };
        return Err(error.into());
    }
    Ok(Some(response))
}

impl ServedByLearner for LockRequest {}
impl ServedByLearner for UnlockRequest {}
impl ServedByLearner for CampaignRequest {}
impl ServedByLearner for ProclaimRequest {}
impl ServedByLearner for LeaderRequest {}
impl ServedByLearner for ResignRequest {}

#[tonic::async_trait]
impl lock_server::Lock for Api {
    async fn lock(&self, request: Request<LockRequest>) -> Reply<LockResponse> {
        self.unary(request, |r| Api::lock(self, r)).await
    }

    async fn unlock(&self, request: Request<UnlockRequest>) -> Reply<UnlockResponse> {
        self.unary(request, |r| Api::unlock(self, r)).await
    }
}

#[tonic::async_trait]
impl election_server::Election for Api {
    type ObserveStream = Pin<Box<dyn Stream<Item = Result<LeaderResponse, Status>> + Send>>;

    async fn campaign(&self, request: Request<CampaignRequest>) -> Reply<CampaignResponse> {
        self.unary(request, |r| Api::campaign(self, r)).await
    }

    async fn proclaim(&self, request: Request<ProclaimRequest>) -> Reply<ProclaimResponse> {
        self.unary(request, |r| Api::proclaim(self, r)).await
    }

    async fn leader(&self, request: Request<LeaderRequest>) -> Reply<LeaderResponse> {
        self.unary(request, |r| Api::leader(self, r)).await
    }

    async fn observe(&self, request: Request<LeaderRequest>) -> Reply<Self::ObserveStream> {
        self.admit(request.get_ref(), &crate::auth::Credentials::from(&request))?;
        let responses = ReceiverStream::new(self.observe_stream(request.into_inner().name));
        Ok(tonic::Response::new(Box::pin(responses)))
    }

    async fn resign(&self, request: Request<ResignRequest>) -> Reply<ResignResponse> {
        self.unary(request, |r| Api::resign(self, r)).await
    }
}
